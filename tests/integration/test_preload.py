"""The preload agent end to end: prebuilt programs that know nothing about hotpatch.

Every test starts a real program with LD_PRELOAD=build/lib/libhotpatch_preload.so and drives it
through the real CLI or `nc -U`. Changes to gflags and glog are checked by their effect on the
program's own log output (glog writes to stderr), not by reading the value back. The C program
used is coreutils' `sleep`, a binary nobody built for this; the third-party gflags program is
RocksDB's db_bench from Debian's rocksdb-tools (skipped, with the reason, when not installed).
"""
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import BIN, LIB, PRELOAD, REPO, cli, nc, preload_env, sanitizer_runtime

ADAPTER = LIB / "libhotpatch_gflags.so"
PREBUILT = BIN / "prebuilt_server"
SLEEP = shutil.which("sleep")
DB_BENCH = shutil.which("db_bench")


def mapped_objects(pid):
    paths = set()
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5].startswith("/"):
                paths.add(fields[5])
    return paths


def agent_threads(pid):
    comms = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            comms.append(Path(f"/proc/{pid}/task/{task}/comm").read_text().strip())
        except OSError:
            pass
    return comms.count("hotpatch")


def wait_for(predicate, timeout=10, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


# ---- prebuilt_server's log lines --------------------------------------------------------------

LOG_LINE = re.compile(r"^([IWE])\d{8} [\d:.]+ +\d+ prebuilt_server\.cc:\d+\] (?:\S+ )?"
                      r"tick (\d+) (INFO|WARNING|ERROR|VLOG1|VLOG2)$")


def logged(proc):
    """{tick: set of kinds} for every glog line of prebuilt_server seen so far."""
    seen = {}
    for line in list(proc.err_lines):
        m = LOG_LINE.match(line)
        if m:
            seen.setdefault(int(m.group(2)), set()).add(m.group(3))
    return seen


def last_tick(proc):
    ticks = [int(l.split()[1]) for l in list(proc.lines) if re.fullmatch(r"tick \d+", l)]
    return max(ticks, default=0)


def kinds_after_change(proc, ticks=2):
    """The log kinds of `ticks` whole ticks that certainly began after the change just made.

    A tick may already be under way when a command returns, and the output reader may lag one
    tick behind; ticks from last seen + 2 on started after the reply.
    """
    first = last_tick(proc) + 2
    proc.wait_output(rf"^tick {first + ticks}$", timeout=15)
    seen = logged(proc)
    return [seen.get(t, set()) for t in range(first, first + ticks)]


SANITIZER_REPORT = re.compile(r"(Address|Thread|Leak|UndefinedBehavior)Sanitizer|runtime error:")


@pytest.fixture
def prebuilt(spawn):
    p = spawn([PREBUILT, "--interval_ms", "60"], env=preload_env())
    p.wait_output(r"^tick 2$")
    yield p
    p.stop()
    p.wait_exit()
    reports = [l for l in p.err_lines if SANITIZER_REPORT.search(l)]
    assert not reports, reports


# ---- the shared object itself -------------------------------------------------------------------

def public_api():
    header = (REPO / "include" / "hotpatch.h").read_text()
    return set(re.findall(r"HOTPATCH_API\s+[\w\s\*]+?\b(hotpatch_\w+)\s*\(", header))


def dynamic_symbols(path):
    out = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def needed(path):
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)


# The C library's exec functions, which the agent wraps so exec leaves no socket (src/agent/exec.c).
EXEC_FUNCTIONS = {"execve", "execv", "execvp", "execvpe", "execl", "execlp", "execle", "fexecve",
                  "execveat"}
# The attach injector's entry (src/preload/preload.c): the loader thread looks it up by name.
ATTACH_ENTRY = {"hotpatch_attach_start"}


def test_preload_exports_exactly_the_public_api_and_the_exec_wrappers():
    api = public_api()
    assert {"hotpatch_start", "hotpatch_stop", "hotpatch_register_typed"} <= api
    exported = {s for s in dynamic_symbols(PRELOAD) if not s.startswith("__")}
    assert exported == api | EXEC_FUNCTIONS | ATTACH_ENTRY


def test_preload_is_c_only_and_adapter_binds_to_the_programs_gflags():
    assert not [n for n in needed(PRELOAD) if "stdc++" in n or "gflags" in n or "glog" in n]
    adapter_needs = needed(ADAPTER)
    assert not [n for n in adapter_needs if "gflags" in n or "glog" in n], adapter_needs
    assert {s for s in dynamic_symbols(ADAPTER) if not s.startswith("__")} == {
        "hp_gflags_adapter_abi", "hp_gflags_adapter_each", "hp_gflags_adapter_get",
        "hp_gflags_adapter_set", "hp_glog_adapter_set_vlog"}


def test_prebuilt_server_contains_no_hotpatch():
    assert not [n for n in needed(PREBUILT) if "hotpatch" in n]
    symbols = subprocess.run(["nm", "-C", str(PREBUILT)], capture_output=True, text=True).stdout
    assert "hotpatch" not in symbols


# ---- gflags and glog, by their effect on the program's log ------------------------------------

def test_minloglevel_through_cli_stops_info_and_warning_not_error(prebuilt):
    before = kinds_after_change(prebuilt)
    assert all({"INFO", "WARNING", "ERROR"} <= k for k in before), before

    r = cli("-p", prebuilt.pid, "gflags", "set", "minloglevel", "2")
    assert (r.returncode, r.stdout) == (0, "minloglevel = 2 (was 0)\n"), r.stderr
    after = kinds_after_change(prebuilt, ticks=3)
    assert all(k == {"ERROR"} for k in after), after

    r = cli("-p", prebuilt.pid, "gflags", "set", "minloglevel", "0")
    assert r.returncode == 0
    again = kinds_after_change(prebuilt)
    assert all({"INFO", "WARNING", "ERROR"} <= k for k in again), again


def test_glog_severity_by_name_through_nc(prebuilt):
    assert nc(prebuilt.socket, "glog set minloglevel WARNING\n") == \
        "minloglevel = WARNING (1) (was INFO (0))\n"
    assert nc(prebuilt.socket, "glog get minloglevel\n") == "WARNING (1)\n"
    reply = json.loads(nc(prebuilt.socket, "json glog get minloglevel\n"))
    assert (reply["ok"], reply["value"], reply["severity"]) == (True, 1, "WARNING")
    after = kinds_after_change(prebuilt)
    assert all(k == {"WARNING", "ERROR"} for k in after), after


def test_v_and_vmodule_turn_vlog_on(prebuilt):
    assert not any(k & {"VLOG1", "VLOG2"} for k in kinds_after_change(prebuilt))

    assert nc(prebuilt.socket, "glog set v 1\n") == "v = 1 (was 0)\n"
    assert all("VLOG1" in k and "VLOG2" not in k for k in kinds_after_change(prebuilt))

    r = cli("-p", prebuilt.pid, "glog", "vmodule", "prebuilt_server", "2")
    assert (r.returncode, r.stdout) == (0, "vmodule prebuilt_server=2 (was 1)\n"), r.stderr
    assert all({"VLOG1", "VLOG2"} <= k for k in kinds_after_change(prebuilt))
    assert nc(prebuilt.socket, "glog get vmodule\n") == "prebuilt_server=2\n"

    # v no longer matters for this file: its vmodule level wins.
    assert nc(prebuilt.socket, "glog set v 0\n") == "v = 0 (was 1)\n"
    assert all({"VLOG1", "VLOG2"} <= k for k in kinds_after_change(prebuilt))
    nc(prebuilt.socket, "glog vmodule prebuilt_server 0\n")
    assert not any(k & {"VLOG1", "VLOG2"} for k in kinds_after_change(prebuilt))


def test_a_flag_the_program_reads_live(prebuilt):
    assert nc(prebuilt.socket, 'gflags set greeting "good evening"\n') == \
        "greeting = good evening (was hello)\n"
    first = last_tick(prebuilt) + 2
    prebuilt.wait_output(rf"^tick {first}$")
    wait_for(lambda: any(f"good evening tick {first} INFO" in l for l in prebuilt.err_lines),
             what="the new greeting in the INFO line")


def test_refusals_are_one_line_and_change_nothing(prebuilt):
    cases = [
        (["gflags", "set", "no_such_flag", "1"], "error: no gflags flag named 'no_such_flag'"),
        (["gflags", "set", "interval_ms", "abc"],
         "error: illegal value 'abc' specified for int32 flag 'interval_ms': expected a whole"),
        (["gflags", "set", "interval_ms", "5"],
         "error: failed validation of new value '5' for flag 'interval_ms': the program's "
         "validator refused it; the flag keeps 60"),
        (["gflags", "set", "verbose_stats", "maybe"],
         "error: illegal value 'maybe' specified for bool flag 'verbose_stats'"),
        (["glog", "set", "minloglevel", "9"],
         "error: '9' is not a glog severity for minloglevel: expected INFO, WARNING, ERROR, "
         "FATAL or 0-3"),
        (["glog", "set", "interval_ms", "100"],
         "error: 'interval_ms' is not one of glog's settings (it is a gflags flag"),
        (["glog", "set", "vmodule", "x=1"], "error: glog reads vmodule only at start"),
        (["gflags", "get"], "error: missing argument"),
    ]
    for args, expected in cases:
        r = cli("-p", prebuilt.pid, *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert r.stdout == ""
        assert r.stderr.startswith(expected), (args, r.stderr)
        assert len(r.stderr.splitlines()) == 1, r.stderr
    assert nc(prebuilt.socket, "gflags set port 70000\n").startswith(
        "error: failed validation of new value '70000' for flag 'port'")

    for name, value in (("interval_ms", "60"), ("verbose_stats", "false"), ("port", "8080"),
                        ("minloglevel", "0")):
        assert nc(prebuilt.socket, f"gflags get {name}\n") == f"{value}\n"
    assert all({"INFO", "WARNING", "ERROR"} <= k for k in kinds_after_change(prebuilt))


def test_gflags_list_plain_and_json(prebuilt):
    r = cli("-p", prebuilt.pid, "gflags", "list")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "VALUE", "DEFAULT", "DESCRIPTION"]
    row = next(l for l in lines if l.startswith("interval_ms "))
    assert row.split()[:4] == ["interval_ms", "int32", "60", "1000"]
    assert row.endswith("milliseconds between ticks (10 to 60000)")

    reply = json.loads(cli("-j", "-p", prebuilt.pid, "gflags", "list").stdout)
    items = {item["name"]: item for item in reply["items"]}
    assert items["interval_ms"] == {"name": "interval_ms", "type": "int32", "value": 60,
                                    "default": 1000,
                                    "description": "milliseconds between ticks (10 to 60000)"}
    assert items["verbose_stats"]["value"] is False
    assert items["sample_ratio"]["value"] == 0.25
    assert items["greeting"]["value"] == "hello"
    assert "minloglevel" in items and "flagfile" in items

    glog = json.loads(nc(prebuilt.socket, "json glog list\n"))
    names = {item["name"] for item in glog["items"]}
    assert {"minloglevel", "v", "vmodule", "stderrthreshold", "logtostderr", "alsologtostderr",
            "colorlogtostderr", "log_prefix", "log_dir",
            # flags glog defines but does not export from libglog.so
            "logemaillevel", "symbolize_stacktrace", "drop_log_memory"} <= names
    assert len(names) >= 20
    assert not names & {"interval_ms", "flagfile", "port", "help", "greeting"}
    severities = {item["name"]: item.get("severity") for item in glog["items"]}
    assert severities["minloglevel"] == "INFO" and severities["stderrthreshold"] == "ERROR"
    assert severities["logemaillevel"] == "none" and severities["v"] is None


def test_program_output_is_untouched(prebuilt):
    for line in ("gflags list", "glog list", "gflags set minloglevel 1", "glog vmodule x 1",
                 "gflags set minloglevel 0", "gflags set nope 1"):
        nc(prebuilt.socket, line + "\n")
    kinds_after_change(prebuilt)
    ticks = [l for l in list(prebuilt.lines)]
    assert ticks == [f"tick {i}" for i in range(1, len(ticks) + 1)]
    # The agent's only lines are the audit records of the changes (on stderr by default).
    assert not [l for l in prebuilt.err_lines if l.startswith("hotpatch") and
                not re.match(r"hotpatch\[\d+\]: audit ", l)]


def test_stdout_is_byte_identical_with_and_without_the_agent():
    plain = subprocess.run([str(PREBUILT), "--max_ticks", "5", "--interval_ms", "10"],
                           capture_output=True, timeout=30)
    env = dict(os.environ, **preload_env())
    preloaded = subprocess.run([str(PREBUILT), "--max_ticks", "5", "--interval_ms", "10"],
                               capture_output=True, timeout=30, env=env)
    assert plain.returncode == preloaded.returncode == 0
    assert preloaded.stdout == plain.stdout == b"".join(b"tick %d\n" % i for i in range(1, 6))

    seq = subprocess.run(["seq", "1", "50000"], capture_output=True, timeout=30)
    seq_pre = subprocess.run(["seq", "1", "50000"], capture_output=True, timeout=30, env=env)
    assert seq_pre.stdout == seq.stdout
    assert seq_pre.stderr == b""  # nothing on stderr either when all goes well


# ---- a C program ---------------------------------------------------------------------------------

@pytest.fixture
def c_program(spawn):
    return spawn([SLEEP, "60"], env=preload_env())


def test_c_program_has_no_gflags_and_gains_no_cplusplus(c_program):
    pid = c_program.pid
    r = cli("-p", pid, "gflags", "list")
    assert (r.returncode, r.stderr) == (1, "error: this process has no gflags\n")
    assert nc(c_program.socket, "gflags set minloglevel 2\n") == \
        "error: this process has no gflags\n"
    assert nc(c_program.socket, "glog vmodule x 1\n") == "error: this process has no glog\n"
    assert json.loads(nc(c_program.socket, "json gflags get v\n")) == {
        "ok": False, "error": "this process has no gflags",
        "text": "error: this process has no gflags\n"}
    assert cli("-p", pid, "version").returncode == 0

    objects = mapped_objects(pid)
    assert str(PRELOAD.resolve()) in objects
    unwanted = {o for o in objects if re.search(r"libstdc\+\+|libgflags|libglog|hotpatch_gflags", o)}
    assert not unwanted - sanitizer_baseline(), unwanted
    assert agent_threads(pid) == 1


def sanitizer_baseline():
    """What a sanitizer build's runtime maps by itself into `sleep` (libasan needs libstdc++);
    empty in an ordinary build."""
    out = subprocess.run(["ldd", str(PRELOAD)], capture_output=True, text=True).stdout
    runtimes = re.findall(r"lib(?:a|t|ub)san\.so\S* => (\S+)", out)
    if not runtimes:
        return set()
    p = subprocess.Popen([SLEEP, "30"], env=dict(os.environ, LD_PRELOAD=":".join(runtimes)))
    try:
        time.sleep(0.3)
        return mapped_objects(p.pid)
    finally:
        p.kill()
        p.wait()


def test_off_switch(spawn):
    p = spawn([SLEEP, "60"], env=preload_env(HOTPATCH_DISABLE="1"), wait_socket=False)
    wait_for(lambda: str(PRELOAD.resolve()) in mapped_objects(p.pid), what="the preload mapped")
    time.sleep(0.3)
    assert agent_threads(p.pid) == 0
    assert not os.path.exists(p.socket)
    assert p.alive()


def test_socket_path_and_log_destination(spawn, tmp_path):
    sock = f"/tmp/hp-preload-{uuid.uuid4().hex[:8]}.socket"
    log = tmp_path / "agent.log"
    p = spawn([PREBUILT, "--interval_ms", "60"],
              env=preload_env(HOTPATCH_SOCKET=sock, HOTPATCH_LOG=str(log)), socket=sock)
    assert not os.path.exists(f"/tmp/{p.pid}.socket")
    assert cli("-s", sock, "gflags", "set", "minloglevel", "1").returncode == 0
    text = wait_for(lambda: log.exists() and log.read_text(), what="the agent's log file")
    assert re.search(rf'^hotpatch\[{p.pid}\]: audit \{{.*"phase":"end".*'
                     r'"request":"json gflags set minloglevel 1","result":"ok"\}$', text, re.M), text
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    kinds_after_change(p)
    assert not [l for l in p.err_lines if l.startswith("hotpatch[")]


def test_log_none_is_silent(spawn):
    p = spawn([PREBUILT, "--interval_ms", "60"], env=preload_env(HOTPATCH_LOG="none"))
    assert nc(p.socket, "gflags set minloglevel 1\n").startswith("minloglevel = 1")
    kinds_after_change(p)
    assert not [l for l in p.err_lines if l.startswith("hotpatch[")]


# ---- a program that links libhotpatch itself ---------------------------------------------------

def test_one_agent_when_the_program_links_libhotpatch(spawn):
    p = spawn([BIN / "simple_server", "--interval-ms", "50"], env=preload_env())
    p.wait_output(r"age=10")
    assert agent_threads(p.pid) == 1
    # The program's own registrations landed in the one agent that serves.
    r = cli("-p", p.pid, "var", "set", "age", "33")
    assert r.returncode == 0, r.stderr
    p.wait_output(r"age=33")
    assert nc(p.socket, "gflags list\n") == "error: this process has no gflags\n"


def test_preload_stands_aside_for_a_programs_own_exported_agent(spawn):
    p = spawn([BIN / "simple_server_static_exported", "--interval-ms", "50"], env=preload_env())
    p.wait_output(r"age=10")
    assert agent_threads(p.pid) == 1
    exe = str((BIN / "simple_server_static_exported").resolve())
    p.wait_error(r"preload agent not started: .*simple_server_static_exported has its "
                 r"own hotpatch agent")
    r = cli("-p", p.pid, "var", "set", "age", "34")
    assert r.returncode == 0, r.stderr
    p.wait_output(r"age=34")
    assert exe in mapped_objects(p.pid)


# ---- a third-party prebuilt binary from Debian ---------------------------------------------------

@pytest.mark.skipif(DB_BENCH is None, reason="db_bench not installed: apt-get install rocksdb-tools")
def test_debian_db_bench_under_the_agent(spawn, tmp_path):
    """RocksDB's db_bench (Debian's rocksdb-tools) uses Debian's libgflags.so.2.2."""
    p = spawn([DB_BENCH, "--benchmarks=fillrandom", "--num=100000000",
               "--benchmark_write_rate_limit=20000", f"--db={tmp_path / 'db'}"],
              env=preload_env())
    pid = p.pid
    # The agent answers from before main; db_bench has parsed its command line once num is set.
    wait_for(lambda: nc(p.socket, "gflags get num\n") == "100000000\n", what="db_bench's flags")
    reply = json.loads(cli("-j", "-p", pid, "gflags", "list").stdout)
    names = {item["name"] for item in reply["items"]}
    assert {"num", "benchmarks", "readwritepercent", "db"} <= names and len(names) > 200

    r = cli("-p", pid, "gflags", "set", "num", "lots")
    assert r.stderr.startswith("error: illegal value 'lots' specified for int64 flag 'num'")
    r = cli("-p", pid, "gflags", "set", "readwritepercent", "150")
    assert r.returncode == 1
    assert r.stderr.startswith("error: failed validation of new value '150' for flag "
                               "'readwritepercent'")
    assert nc(p.socket, "gflags get readwritepercent\n") == "90\n"
    assert cli("-p", pid, "gflags", "set", "readwritepercent", "50").stdout == \
        "readwritepercent = 50 (was 90)\n"
    assert nc(p.socket, "gflags get readwritepercent\n") == "50\n"
    assert nc(p.socket, "glog list\n") == "error: this process has no glog\n"

    gflags_copies = [o for o in mapped_objects(pid) if "libgflags" in o]
    assert len(gflags_copies) == 1, gflags_copies
    assert agent_threads(pid) == 1
    assert p.alive()
