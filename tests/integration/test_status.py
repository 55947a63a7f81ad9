"""status, history and diff: what the agent can say about the process, on real processes."""
import json

from conftest import BIN, LIB, cli, nc, preload_env, session


def j(p, *words):
    r = cli("-j", "-p", p.pid, *words)
    return json.loads(r.stdout)


def test_status_says_what_the_agent_is_and_holds(spawn):
    p = spawn([BIN / "simple_server", "--interval-ms", "1000"])
    s = j(p, "status")
    assert s["ok"] and s["started"] == "linked" and s["pid"] == p.pid
    assert s["socket"] == p.socket and s["protocol"] == 1
    assert s["variables"] == 3 and s["functions"] == 1 and s["libraries"] == 0
    assert s["patched_functions"] == 0 and s["changes"] == 0 and s["uptime_s"] >= 0
    assert s["stop"] in ("ptrace", "signal")
    cli("-p", p.pid, "lib", "load", "p1", LIB / "libadd_func_patch1.so")
    # A TSan build cannot stop threads, so there the upgrade is refused (and still a change).
    patched = int(cli("-p", p.pid, "func", "upgrade", "p1", "add_func").returncode == 0)
    s = j(p, "status")
    assert s["libraries"] == 1 and s["patched_functions"] == patched and s["changes"] == 2
    plain = cli("-p", p.pid, "status").stdout
    assert plain.startswith("hotpatch ") and "linked agent in process" in plain


def test_status_knows_the_preload_agent(spawn):
    p = spawn(["sleep", "60"], env=preload_env())
    assert j(p, "status")["started"] == "preload"


def test_history_records_every_change_with_its_peer_and_outcome(spawn):
    p = spawn([BIN / "simple_server", "--interval-ms", "1000"])
    assert j(p, "history")["items"] == []
    cli("-p", p.pid, "var", "set", "age", "5")
    cli("-p", p.pid, "var", "set", "age", "x")
    cli("-p", p.pid, "var", "get", "age")                     # not a change
    h = j(p, "history")
    assert [i["request"] for i in h["items"]] == ["json var set age 5", "json var set age x"]
    done, refused = h["items"]
    assert done["result"] == "ok" and done["old"] == "10" and done["new"] == "5"
    assert done["uid"] == 0 and done["pid"] > 0 and done["seq"] == 1
    assert refused["result"] == "refused" and "not a valid int" in refused["outcome"]
    assert h["dropped"] == 0


def test_history_keeps_the_last_thousand(spawn):
    p = spawn([BIN / "simple_server", "--interval-ms", "1000"])
    s = session(p.socket)
    try:
        for i in range(1005):
            assert s.send(f"var set age {i}")["ok"]
        h = s.send("history")
    finally:
        s.close()
    assert len(h["items"]) == 1000 and h["dropped"] == 5
    assert h["items"][0]["new"] == "5" and h["items"][-1]["new"] == "1004"
    assert h["items"][-1]["seq"] == 1005


def test_diff_tells_the_agents_changes_from_the_programs(spawn):
    p = spawn([BIN / "hostile_host"], stdin_pipe=True)
    p.wait_output("^ready$")
    assert j(p, "diff")["items"] == []
    cli("-p", p.pid, "var", "set", "crash", "2")
    items = {i["name"]: i for i in j(p, "diff")["items"]}
    assert items["crash"] == {"kind": "var", "name": "crash", "first": "0", "now": "2",
                              "changed_by": "agent"}
    p.send("age 33\n")                        # the program changes its own variable
    p.wait_output("^age 33$")
    items = {i["name"]: i for i in j(p, "diff")["items"]}
    assert items["age"]["changed_by"] == "program" and items["age"]["now"] == "33"
    cli("-p", p.pid, "var", "set", "age", "10")   # back where it started: no difference
    assert "age" not in {i["name"] for i in j(p, "diff")["items"]}


def test_diff_covers_gflags(spawn):
    p = spawn([BIN / "prebuilt_server", "--interval_ms", "100"], env=preload_env())
    assert nc(p.socket, "gflags set minloglevel 1\n").startswith("minloglevel = 1")
    items = {i["name"]: i for i in j(p, "diff")["items"]}
    assert items["minloglevel"]["kind"] == "flag"
    assert items["minloglevel"]["first"] == "0" and items["minloglevel"]["now"] == "1"
    assert items["minloglevel"]["changed_by"] == "agent"


def test_the_python_api_reads_status_history_and_diff(spawn):
    import sys
    sys.path.insert(0, str(__import__("conftest").REPO / "python"))
    import hotpatch
    p = spawn([BIN / "simple_server", "--interval-ms", "1000"])
    with hotpatch.Client(pid=p.pid) as agent:
        agent.var_set("age", 12)
        assert agent.status()["changes"] == 1
        assert [c["request"] for c in agent.history()] == ["var set age 12"]
        assert [(d["name"], d["changed_by"]) for d in agent.diff()] == [("age", "agent")]
        assert agent.patch_list() == []
