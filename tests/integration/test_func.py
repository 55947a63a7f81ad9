"""The func commands end to end on a running simple_server: through the CLI and the socket.

simple_server prints `add_func(1, 2)=N` every 50 ms; the example patch libraries make it 102
(libadd_func_patch1.so: a*b+100) and 202 (libadd_func_patch2.so: a*b+200). Every step is
checked in the program's own output, not only in the agent's reply.
"""
import json
import os

import pytest

from conftest import LIB, cli, nc, session

P1 = LIB / "libadd_func_patch1.so"
P2 = LIB / "libadd_func_patch2.so"
LIBM = next(p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6")
            if os.path.exists(p))


def ok(server, *args):
    r = cli("-p", server.pid, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def refused(server, *args):
    r = cli("-p", server.pid, *args)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
    return r.stderr


def shows(server, value):
    """Waits for a line printed after now that shows add_func(1, 2)=value."""
    start = len(server.lines)
    server.wait_output(rf"add_func\(1, 2\)={value}$", timeout=10, start=start)
    # and the next line too: the result is stable, not a passing mix-up
    nxt = server.wait_output(r"add_func", timeout=10, start=len(server.lines))
    assert server.lines[nxt].endswith(f"={value}")


def func_list(server):
    return {i["name"]: i for i in json.loads(cli("-j", "-p", server.pid, "func", "list").stdout)["items"]}


def test_upgrade_stack_rollback_unload(server):
    shows(server, 3)
    ok(server, "lib", "load", "p1", P1)
    ok(server, "lib", "load", "p2", P2)
    out = ok(server, "func", "upgrade", "p1", "add_func")
    assert "upgraded add_func" in out and "version 1" in out
    shows(server, 102)
    ok(server, "func", "upgrade", "p2", "add_func")
    shows(server, 202)
    item = func_list(server)["add_func"]
    assert item["depth"] == 2 and item["installed"] == "p2:add_func"
    assert item["jump"] in ("direct", "relay")

    # both libraries hold a version (installed or stacked): unload refused, nothing changes
    assert "installed" in refused(server, "lib", "unload", "p2")
    assert "stacked" in refused(server, "lib", "unload", "p1")
    shows(server, 202)

    out = ok(server, "func", "rollback", "add_func")
    assert "p1:add_func runs now" in out
    shows(server, 102)
    ok(server, "lib", "unload", "p2")  # nothing of p2 installed, no thread inside
    ok(server, "func", "rollback", "add_func")
    shows(server, 3)
    assert func_list(server)["add_func"]["depth"] == 0
    ok(server, "lib", "unload", "p1")
    assert "nothing to roll back" in refused(server, "func", "rollback", "add_func")
    shows(server, 3)


def test_symbol_argument_and_qualified_name(server):
    ok(server, "lib", "load", "p2", P2)
    ok(server, "func", "upgrade", "p2", "simple_server:add_func", "add_func_v2")
    shows(server, 202)
    item = func_list(server)["simple_server:add_func"]
    assert item["installed"] == "p2:add_func_v2"
    ok(server, "func", "rollback", "simple_server:add_func")
    shows(server, 3)


@pytest.mark.parametrize("args, message", [
    (["func", "upgrade", "p1", "no_such_function"], "unknown function no_such_function"),
    (["func", "upgrade", "p1", "add_func", "no_such_symbol"], "no function no_such_symbol"),
    (["func", "upgrade", "nolib", "add_func"], "no library loaded as 'nolib'"),
    (["func", "upgrade", "m", "add_func", "signgam"], "not in executable memory"),
    (["func", "upgrade", "p1", "nosuchobj.so:add_func"], "no loaded object is called"),
    (["func", "rollback", "add_func"], "nothing to roll back"),
    (["func", "rollback", "no_such_function"], "unknown function no_such_function"),
    (["func", "upgrade", "p1"], "usage: func upgrade LIB FUNC [SYMBOL]"),
    (["func", "rollback", "a", "b"], "usage: func rollback FUNC"),
])
def test_errors_are_one_line_and_change_nothing(server, args, message):
    ok(server, "lib", "load", "p1", P1)
    ok(server, "lib", "load", "m", LIBM)
    before = func_list(server)
    out = refused(server, *args)
    assert message in out, out
    assert func_list(server) == before
    shows(server, 3)


def test_socket_json_and_session(server):
    assert "loaded p1" in nc(server.socket, f"lib load p1 {P1}\n")
    reply = json.loads(nc(server.socket, "json func upgrade p1 add_func\n"))
    assert reply["ok"] and reply["function"] == "add_func" and reply["depth"] == 1
    shows(server, 102)
    s = session(server.socket)
    try:
        r = s.send("lib unload p1")
        assert not r["ok"] and "installed" in r["error"]
        items = s.send("func list")["items"]
        assert [i for i in items if i["name"] == "add_func"][0]["installed"] == "p1:add_func"
        r = s.send("func rollback add_func")
        assert r["ok"] and r["installed"] == "original" and r["depth"] == 0
        assert s.send("lib unload p1")["ok"]
    finally:
        s.close()
    shows(server, 3)
    assert "func upgrade LIB FUNC [SYMBOL]" in nc(server.socket, "help func\n")


# ---- hotpatch never patches itself ----------------------------------------------------------------

@pytest.mark.parametrize("target", ["libhotpatch.so.0:hotpatch_running",
                                    "libhotpatch.so.0:hp_patch_upgrade", "hotpatch_start"])
def test_hotpatch_code_is_never_a_target(server, target):
    ok(server, "lib", "load", "p1", P1)
    out = refused(server, "func", "upgrade", "p1", target, "add_func")
    assert "which never patches itself" in out and "hotpatch's own code" in out, out
    ok(server, "func", "upgrade", "p1", "add_func")     # the engine still writes code afterwards
    shows(server, 102)


def test_hotpatch_code_is_never_a_replacement(server):
    ok(server, "lib", "load", "hp", LIB / "libhotpatch.so.0")
    out = refused(server, "func", "upgrade", "hp", "add_func", "hotpatch_running")
    assert "the replacement hotpatch_running" in out and "hotpatch's own code" in out, out
    shows(server, 3)


def test_a_static_copy_of_hotpatch_is_refused_inside_the_executable(spawn):
    from conftest import BIN
    p = spawn([BIN / "simple_server_static_exported", "--interval-ms", "50"])
    ok(p, "lib", "load", "p1", P1)
    out = refused(p, "func", "upgrade", "p1", "simple_server_static_exported:hotpatch_running",
                  "add_func")
    assert "hotpatch's own code" in out, out
    out = refused(p, "func", "upgrade", "p1", "simple_server_static_exported:hp_handle_line",
                  "add_func")
    assert "hotpatch's own code" in out, out
    ok(p, "func", "upgrade", "p1", "add_func")           # the program's own code still is fine


def test_retire_forgets_a_library_and_keeps_it_mapped(server):
    ok(server, "lib", "load", "p1", P1)
    ok(server, "func", "upgrade", "p1", "add_func")
    shows(server, 102)
    out = ok(server, "lib", "unload", "--retire", "p1")
    assert out.startswith("retired p1: forgotten, and left mapped at 0x"), out
    shows(server, 102)                        # the installed version keeps running
    assert "libadd_func_patch1.so" in open(f"/proc/{server.pid}/maps").read()
    assert "p1" not in cli("-p", server.pid, "lib", "list").stdout
    ok(server, "func", "rollback", "add_func")
    shows(server, 3)
    ok(server, "lib", "load", "p1", P1)       # the name is free again
    assert "unknown option '--force'; the only option here is --retire" in refused(server, "lib", "unload", "--force", "p1")
