"""The core agent end to end: real example processes, the real CLI, nc and raw sockets."""
import json
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

from conftest import BIN, cli, nc, raw, read_until_closed, retry_cli, session, open_fds


sanitized = pytest.mark.skipif(bool(os.environ.get("HOTPATCH_SANITIZE")),
                               reason="sanitizer builds give forked children no agent (agent.c)")
# TSan defers asynchronous signals, so the thread stop that proves no thread runs in a library
# cannot work there and `lib unload` is always refused; and a program that dup2()s over the
# agent's descriptors is, to TSan, a data race by the program (which it is, deliberately).
not_under_tsan = pytest.mark.skipif(os.environ.get("HOTPATCH_SANITIZE") == "thread",
                                    reason="needs signals TSan defers, or races TSan reports")


# ---- var through the CLI ------------------------------------------------------------------

def test_var_list_get_set_through_cli(server):
    r = cli("-p", server.pid, "var", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "VALUE"]
    assert ["age", "int", "10"] in [l.split() for l in lines]
    assert ["user_name", "string", "myname"] in [l.split() for l in lines]

    assert cli("-p", server.pid, "var", "get", "int", "age").stdout == "10\n"
    assert cli("-p", server.pid, "var", "get", "age").stdout == "10\n"

    r = cli("-p", server.pid, "var", "set", "age", "42")
    assert (r.returncode, r.stdout) == (0, "age = 42 (was 10)\n")
    server.wait_output(r"age=42 ")

    r = cli("-p", server.pid, "var", "set", "string", "user_name", "Ada Lovelace")
    assert r.returncode == 0
    server.wait_output(r"user_name=Ada Lovelace age=42")
    assert cli("-p", server.pid, "var", "get", "user_name").stdout == "Ada Lovelace\n"


def test_cpp_server_std_string_and_numbers(spawn):
    p = spawn([BIN / "simple_server_cpp", "--interval-ms", "50"])
    p.wait_output(r"user_name=myname age=10 add_func\(1, 2\)=3")
    assert cli("-p", p.pid, "var", "set", "user_name", "a much longer name than before " * 3).returncode == 0
    assert cli("-p", p.pid, "var", "set", "int", "age", "-7").returncode == 0
    p.wait_output(r"user_name=(a much longer name than before ){3} age=-7")
    assert cli("-p", p.pid, "var", "get", "string", "user_name").stdout.startswith("a much longer")


@pytest.mark.parametrize("args, message", [
    (["var", "set", "age", "abc"],
     "error: 'abc' is not a valid int: expected a whole number from -2147483648 to 2147483647"),
    (["var", "set", "age", "99999999999"],
     "error: 99999999999 is out of range for int: expected -2147483648 to 2147483647"),
    (["var", "set", "string", "age", "x"], "error: variable 'age' has type int, not string"),
    (["var", "get", "double", "user_name"], "error: variable 'user_name' has type string, not double"),
    (["var", "get", "nobody"], "error: no variable named 'nobody' (see 'var list')"),
    (["var", "set", "nobody", "1"], "error: no variable named 'nobody' (see 'var list')"),
    (["var", "set", "timeout_ms", "0"],
     "error: timeout_ms must be between 1 and 60000 milliseconds, not 0"),
    (["var", "set", "user_name", "x" * 64], "error: value is 64 bytes; user_name holds at most 63"),
    (["var", "get", "integer", "age"], "error: unknown type 'integer'; types: bool, schar, "
                                         "uchar, short, ushort, int, uint,"),
    (["var", "get"], "error: missing argument; usage: var get [TYPE] NAME"),
    (["var", "set", "age", "1", "2", "3"], "error: too many arguments (1 extra); usage: var set"),
    (["var"], "error: 'var' needs a subcommand: list, get, set"),
    (["var", "fly"], "error: unknown var subcommand 'fly'; accepted: list, get, set"),
    (["frobnicate"], "error: unknown command 'frobnicate'; commands: help, version, session, quit, detach, var, lib"),
])
def test_refusals_are_one_line_and_change_nothing(server, args, message):
    before = cli("-p", server.pid, "json", "var", "list").stdout
    r = cli("-p", server.pid, *args)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith(message), r.stderr
    assert r.stderr.count("\n") == 1
    assert cli("-p", server.pid, "json", "var", "list").stdout == before


def test_validator_accepts_values_in_range(server):
    r = cli("-p", server.pid, "var", "set", "timeout_ms", "2500")
    assert (r.returncode, r.stdout) == (0, "timeout_ms = 2500 (was 1000)\n")


# ---- JSON -----------------------------------------------------------------------------------

def test_json_replies_are_typed_and_carry_text(server):
    r = cli("--json", "-p", server.pid, "var", "get", "age")
    assert r.returncode == 0
    # The client adds which process answered.
    assert json.loads(r.stdout) == {"ok": True, "value": 10, "text": "10\n", "pid": server.pid}

    reply = json.loads(cli("-j", "-p", server.pid, "var", "list").stdout)
    assert {"name": "age", "type": "int", "value": 10} in reply["items"]
    assert {"name": "user_name", "type": "string", "value": "myname"} in reply["items"]

    reply = json.loads(cli("-p", server.pid, "json", "var", "set", "age", "11").stdout)
    assert reply["ok"] and reply["old"] == 10 and reply["value"] == 11 and reply["name"] == "age"

    r = cli("--json", "-p", server.pid, "var", "set", "age", "x")
    assert r.returncode == 1
    reply = json.loads(r.stdout)
    assert reply["ok"] is False and reply["error"].startswith("'x' is not a valid int")

    reply = json.loads(nc(server.socket, "json version\n"))
    assert reply["protocol"] == 1 and {"var", "lib", "json", "session"} <= set(reply["capabilities"])


# ---- nc and raw sockets ---------------------------------------------------------------------

def test_nc_one_request_prints_and_returns(server):
    assert nc(server.socket, "var get int age\n") == "10\n"
    assert nc(server.socket, "var set string user_name \"from nc\"\n") == \
        "user_name = from nc (was myname)\n"
    assert nc(server.socket, "var get string user_name\n") == "from nc\n"
    assert nc(server.socket, "help\n").startswith("hotpatch 0.2.0, protocol 1. Commands:\n")
    assert nc(server.socket, "version\n").startswith("hotpatch 0.2.0 protocol 1\n")
    assert nc(server.socket, "bogus words\n").startswith("error: unknown command 'bogus'")


def test_help_lists_every_command_with_its_usage(server):
    text = cli("-p", server.pid, "help").stdout
    for usage in ["help [FAMILY]", "version", "session", "quit", "var list", "var get [TYPE] NAME",
                  "var set [TYPE] NAME VALUE", "lib list", "lib load NAME PATH", "lib unload [--retire] NAME"]:
        assert f"  {usage} " in text
    assert "lib load" not in cli("-p", server.pid, "help", "var").stdout


def test_only_the_first_line_is_served_without_session(server):
    assert raw(server.socket, b"var get age\nvar set age 99\n") == b"10\n"
    assert cli("-p", server.pid, "var", "get", "age").stdout == "10\n"


def test_session_serves_many_requests_on_one_connection(server):
    s = session(server.socket)
    try:
        assert s.opened["ok"] and s.opened["protocol"] == 1
        for i in range(50):
            assert s.send(f"var set age {i}")["value"] == i
            assert s.send("var get age") == {"ok": True, "value": i, "text": f"{i}\n"}
        assert s.send("var get nothing")["ok"] is False
        assert s.send("json var get age")["value"] == 49
        assert s.send("session")["error"] == "already in a session; send 'quit' to end it"
        assert s.send("quit")["message"] == "bye"
        with pytest.raises(EOFError):
            s.read()
    finally:
        s.close()


def test_session_pipelined_requests_are_answered_in_order(server):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(server.socket)
    s.sendall(b"session\n" + b"".join(f"var set age {i}\n".encode() for i in range(100)) + b"quit\n")
    data = read_until_closed(s)
    s.close()
    replies = [json.loads(l) for l in data.splitlines()]
    assert len(replies) == 102
    assert [r["value"] for r in replies[1:101]] == list(range(100))


def test_overlong_line_is_refused(server):
    reply = raw(server.socket, b"var set user_name " + b"x" * 5000 + b"\n")
    assert reply == b"error: request line longer than 4096 bytes; nothing was done\n"
    assert cli("-p", server.pid, "var", "get", "user_name").stdout == "myname\n"


def test_line_at_the_limit_is_accepted(server):
    line = b"var get " + b"a" * (4096 - 8)
    assert len(line) == 4096
    assert raw(server.socket, line + b"\n").startswith(b"error: no variable named 'aaaa")


@pytest.mark.parametrize("data, expected", [
    (b"var get \xff\xfe\n", b"error: request is not valid UTF-8 (byte 0xff at offset 8); send text\n"),
    (b"\x00\x01\x02garbage\n", b"error: request contains control character 0x00 at offset 0"),
    (b"var set age \x1b[31m5\n", b"error: request contains control character 0x1b at offset 12"),
    (b"\n", b"error: empty request; send 'help' for the commands\n"),
    (b"var set age \"5\n", b"error: unterminated \" quote in the request\n"),
    (b"json \xc0\xaf\n", b'{"ok":false,"error":"request is not valid UTF-8'),
])
def test_garbage_gets_an_error_line(server, data, expected):
    assert raw(server.socket, data).startswith(expected)
    assert server.alive()


def test_random_bytes_never_hurt_the_process(server):
    rnd = __import__("random").Random(1234)
    for _ in range(200):
        blob = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 600)))
        reply = raw(server.socket, blob + b"\n", timeout=5)
        assert reply.startswith(b"error: ") or reply.startswith(b"{\"ok\":"), reply
    assert cli("-p", server.pid, "var", "get", "age").stdout == "10\n"
    assert server.alive()


def test_request_without_newline_is_not_executed(server):
    reply = raw(server.socket, b"var set age 12", shut_write=True)
    assert reply == b"error: request ended without a newline; nothing was done\n"
    assert cli("-p", server.pid, "var", "get", "age").stdout == "10\n"


def test_client_disconnecting_mid_line_changes_nothing(server):
    fds = open_fds(server.pid)
    for _ in range(50):
        s = socket.socket(socket.AF_UNIX)
        s.connect(server.socket)
        s.sendall(b"var set age 7")
        s.close()
    assert cli("-p", server.pid, "var", "get", "age").stdout == "10\n"
    assert open_fds(server.pid, expect=fds) == fds


def test_silent_client_times_out_and_does_not_block_others(spawn):
    p = spawn([BIN / "simple_server", "--interval-ms", "50"], env={"HOTPATCH_IDLE_TIMEOUT_MS": "500"})
    silent = socket.socket(socket.AF_UNIX)
    silent.settimeout(5)
    silent.connect(p.socket)
    silent.sendall(b"var get a")  # half a line, then nothing
    start = time.time()
    assert cli("-p", p.pid, "var", "get", "age").stdout == "10\n"
    assert time.time() - start < 1.0
    assert silent.recv(4096) == b"error: timed out waiting for a complete request line\n"
    assert silent.recv(4096) == b""
    silent.close()


def test_two_hundred_concurrent_clients(server):
    results = [None] * 200
    barrier = threading.Barrier(200)

    def worker(i):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(20)
        s.connect(server.socket)
        barrier.wait()
        s.sendall(b"json var get age\n" if i % 2 else b"var list\n")
        results[i] = read_until_closed(s)
        s.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for i, data in enumerate(results):
        if i % 2:
            assert json.loads(data)["value"] == 10
        else:
            assert data.startswith(b"NAME ") and b"user_name" in data


def test_client_that_never_reads_its_reply_is_dropped(spawn):
    p = spawn([BIN / "simple_server", "--interval-ms", "50"], env={"HOTPATCH_WRITE_TIMEOUT_MS": "300"})
    s = socket.socket(socket.AF_UNIX)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(p.socket)
    s.sendall(b"session\n" + b"help\n" * 2000)  # replies pile up unread
    time.sleep(1.0)
    assert cli("-p", p.pid, "var", "get", "age").stdout == "10\n"
    s.close()


# ---- security ------------------------------------------------------------------------------------

def test_socket_is_mode_0600_and_owned_by_the_process_user(server):
    st = os.lstat(server.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid")
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@needs_root
def test_other_user_cannot_connect_to_the_socket(server):
    r = subprocess.run(AS_NOBODY + ["nc", "-U", server.socket], input=b"var get age\n",
                       capture_output=True, timeout=10)
    assert b"10" not in r.stdout
    assert b"Permission denied" in r.stderr


@needs_root
def test_other_user_is_refused_by_peer_credentials(spawn, tmp_path):
    # Open the file mode so the kernel lets nobody connect; SO_PEERCRED must still refuse.
    p = spawn([BIN / "simple_server", "--interval-ms", "50"])
    os.chmod(p.socket, 0o666)
    r = subprocess.run(AS_NOBODY + ["nc", "-U", p.socket], input=b"var set age 1\n",
                       capture_output=True, timeout=10)
    assert r.stdout == (b"error: permission denied: uid 65534 may not control this process "
                        b"(allowed: root, uid 0)\n")
    assert cli("-p", p.pid, "var", "get", "age").stdout == "10\n"
    p.wait_error(r"refused connection from uid 65534")


AUDIT_LOG_LINE = re.compile(r'^hotpatch\[(\d+)\]: audit (\{.*\})$')
AUDIT_TIME = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$')


def audit_records(lines):
    """The JSON audit records among an agent's log lines."""
    found = [AUDIT_LOG_LINE.match(l) for l in lines if " audit " in l]
    assert all(found), lines
    return [json.loads(m.group(2)) for m in found]


def test_mutations_are_audited_before_and_after_with_time_peer_and_result(server):
    assert cli("-p", server.pid, "var", "set", "age", "5").returncode == 0
    assert cli("-p", server.pid, "var", "set", "age", "x").returncode == 1
    assert cli("-p", server.pid, "var", "get", "age").returncode == 0
    time.sleep(0.1)
    records = audit_records(server.err_lines)
    assert [r["phase"] for r in records] == ["begin", "end", "begin", "end"]
    begin, ok, _, refused = records
    assert begin["process"] == server.pid and begin["uid"] == os.geteuid()
    assert AUDIT_TIME.match(begin["time"]) and "result" not in begin
    assert ok["request"] == "json var set age 5" and ok["result"] == "ok" and "error" not in ok
    assert refused["result"] == "refused" and refused["error"].startswith("'x' is not a valid int")


def test_audit_to_a_file(spawn, tmp_path):
    log = tmp_path / "audit.log"
    p = spawn([BIN / "simple_server", "--interval-ms", "50"], env={"HOTPATCH_AUDIT": f"file:{log}"})
    assert cli("-p", p.pid, "var", "set", "age", "6").returncode == 0
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not a library")
    assert cli("-p", p.pid, "lib", "load", "x", junk).returncode == 1
    records = [json.loads(l) for l in log.read_text().splitlines()]
    assert [r["phase"] for r in records] == ["begin", "end", "begin", "end"]
    assert records[3]["request"] == f"json lib load x {junk}"
    assert records[3]["result"] == "refused" and "cannot load" in records[3]["error"]
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert not any(" audit " in l for l in p.err_lines)


def test_audit_to_syslog(spawn):
    if os.path.exists("/dev/log"):
        pytest.skip("a system logger owns /dev/log; not intercepting it")
    collector = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    collector.bind("/dev/log")
    collector.settimeout(5)
    try:
        p = spawn([BIN / "simple_server", "--interval-ms", "50"], env={"HOTPATCH_AUDIT": "syslog"})
        assert cli("-p", p.pid, "var", "set", "age", "8").returncode == 0
        message = collector.recv(4096).decode()
        assert f"hotpatch[{p.pid}]: audit {{" in message
        record = json.loads(message[message.index("{"):])
        assert record["request"] == "json var set age 8" and record["phase"] == "begin"
    finally:
        collector.close()
        os.unlink("/dev/log")


def test_read_only_agent_refuses_every_mutation(spawn):
    p = spawn([BIN / "simple_server", "--interval-ms", "50"], env={"HOTPATCH_READ_ONLY": "1"})
    assert cli("-p", p.pid, "var", "get", "age").stdout == "10\n"
    for args in (["var", "set", "age", "1"], ["lib", "load", "m", "libm.so.6"], ["lib", "unload", "m"]):
        r = cli("-p", p.pid, *args)
        assert r.returncode == 1
        assert r.stderr.startswith("error: the agent is read-only (HOTPATCH_READ_ONLY is set); "
                                   f"'{args[0]} {args[1]}' would change the process")
    assert cli("-p", p.pid, "var", "get", "age").stdout == "10\n"
    assert cli("-p", p.pid, "lib", "list").stdout.startswith("no libraries")


@needs_root
def test_allowed_users_are_configurable(spawn):
    allowed = spawn([BIN / "simple_server", "--interval-ms", "50"],
                    env={"HOTPATCH_ALLOW_UIDS": "nobody,4242"})
    os.chmod(allowed.socket, 0o666)
    r = subprocess.run(AS_NOBODY + ["nc", "-U", allowed.socket], input=b"var set age 3\n",
                       capture_output=True, timeout=10)
    assert r.stdout == b"age = 3 (was 10)\n"
    assert cli("-p", allowed.pid, "var", "get", "age").stdout == "3\n"  # root still allowed

    others = spawn([BIN / "simple_server", "--interval-ms", "50"], env={"HOTPATCH_ALLOW_UIDS": "4242"})
    os.chmod(others.socket, 0o666)
    r = subprocess.run(AS_NOBODY + ["nc", "-U", others.socket], input=b"var get age\n",
                       capture_output=True, timeout=10)
    assert r.stdout == (b"error: permission denied: uid 65534 may not control this process "
                        b"(allowed: root, uid 4242)\n")


# ---- socket file life cycle ----------------------------------------------------------------------

def test_socket_removed_on_normal_exit(spawn):
    p = spawn([BIN / "simple_server", "--interval-ms", "10", "--count", "30"])
    assert p.wait_exit() == 0
    assert not os.path.exists(p.socket)


def test_stale_socket_is_replaced_and_foreign_files_are_kept(spawn, tmp_path):
    stale = str(tmp_path / "stale.socket")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()  # bound, never listening: nobody answers
    p = spawn([BIN / "simple_server", "--interval-ms", "50"], env={"HOTPATCH_SOCKET": stale},
              socket=stale)
    assert cli("-s", stale, "var", "get", "age").stdout == "10\n"
    p.wait_error(r"replacing stale socket")

    regular = tmp_path / "not-a-socket"
    regular.write_text("precious")
    q = spawn([BIN / "simple_server", "--interval-ms", "50", "--count", "3"],
              env={"HOTPATCH_SOCKET": str(regular)}, socket=str(regular), wait_socket=False)
    q.wait_exit()
    assert regular.read_text() == "precious"
    q.wait_error(re.escape(f"{regular} is taken (a file that is not a socket is there); serving "
                           f"on /tmp/hotpatch-{q.pid}."))

    live = spawn([BIN / "simple_server", "--interval-ms", "50", "--count", "3"],
                 env={"HOTPATCH_SOCKET": stale}, socket=stale, wait_socket=False)
    live.wait_exit()
    live.wait_error(r"another agent answers there")
    assert cli("-s", stale, "var", "get", "age").stdout == "10\n"


# ---- the CLI itself --------------------------------------------------------------------------------

def test_cli_help_version_and_usage_errors():
    r = cli("--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: hotpatch [-p PID[,PID...] | --pgrep PATTERN")
    r = cli("--version")
    assert r.returncode == 0 and r.stdout == "hotpatch 0.2.0 (protocol 1)\n"
    assert cli("var", "list").returncode == 2
    assert "exactly one of -p PID (or --pgrep, --all) or -s SOCKET" in cli("var", "list").stderr
    r = cli("-p", "abc", "var", "list")
    assert r.returncode == 2 and "invalid pid 'abc'" in r.stderr
    r = cli("-p", "1", "-s", "/tmp/x", "var", "list")
    assert r.returncode == 2
    r = cli("-p", "1")
    assert r.returncode == 2 and "usage:" in r.stderr


def test_cli_negative_values_are_not_options(server):
    r = cli("-p", server.pid, "var", "set", "age", "-5")
    assert (r.returncode, r.stdout) == (0, "age = -5 (was 10)\n")


def test_cli_when_nothing_listens(spawn):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        r = cli("-p", sleeper.pid, "var", "list")
        assert r.returncode == 2
        assert "no agent is listening there" in r.stderr
        assert "LD_PRELOAD=" in r.stderr and "libhotpatch_preload.so" in r.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    r = cli("-p", "4194304", "var", "list")
    assert r.returncode == 2 and "no process 4194304 is running" in r.stderr


def test_cli_ignores_a_socket_at_the_processs_name_that_another_process_serves(spawn):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        path = f"/tmp/{sleeper.pid}.socket"
        impostor = spawn([BIN / "simple_server", "--interval-ms", "50"],
                         env={"HOTPATCH_SOCKET": path}, socket=path)
        r = cli("-p", sleeper.pid, "var", "get", "age")
        assert r.returncode == 2
        assert r.stderr.startswith(f"hotpatch: process {sleeper.pid} has no agent: none of its "
                                   f"listening sockets is {path} or ")
        assert cli("-p", impostor.pid, "var", "get", "age").stdout == "10\n"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_cli_finds_the_socket_from_the_process_environment(spawn, tmp_path):
    path = str(tmp_path / "custom.socket")
    p = spawn([BIN / "simple_server", "--interval-ms", "50"], env={"HOTPATCH_SOCKET": path},
              socket=path)
    assert cli("-p", p.pid, "var", "get", "age").stdout == "10\n"
    assert cli("-s", path, "var", "get", "age").stdout == "10\n"


# ---- lib -----------------------------------------------------------------------------------------

@not_under_tsan
def test_lib_load_list_unload(server, tmp_path):
    libm = subprocess.run(["sh", "-c", "ldconfig -p | awk '/libm.so.6 .*x86-64/ {print $NF; exit}'"],
                          capture_output=True, text=True).stdout.strip()
    r = cli("-p", server.pid, "lib", "load", "m", libm)
    assert r.returncode == 0 and r.stdout.startswith(f"loaded m from {libm} at 0x")
    listing = cli("-p", server.pid, "lib", "list").stdout.splitlines()
    assert listing[0].split() == ["NAME", "PATH", "BASE"]
    assert listing[1].split()[:2] == ["m", libm]
    reply = json.loads(cli("-j", "-p", server.pid, "lib", "list").stdout)
    assert reply["items"][0]["name"] == "m"

    r = cli("-p", server.pid, "lib", "load", "m", libm)
    assert r.returncode == 1 and "a library is already loaded as 'm'" in r.stderr
    assert cli("-p", server.pid, "lib", "unload", "m").stdout == "unloaded m\n"
    assert cli("-p", server.pid, "lib", "list").stdout.startswith("no libraries are loaded")
    r = cli("-p", server.pid, "lib", "unload", "m")
    assert r.returncode == 1 and r.stderr == "error: no library loaded as 'm' (see 'lib list')\n"


def test_lib_load_errors_name_the_cause(server, tmp_path):
    # The CLI opens the file itself (it passes the descriptor); the agent's own error shows
    # when the request comes by name alone.
    r = cli("-p", server.pid, "lib", "load", "x", "/nonexistent/libx.so")
    assert (r.returncode, r.stderr) == (2, "hotpatch: cannot open /nonexistent/libx.so: No such "
                                           "file or directory\n")
    assert nc(server.socket, "lib load x /nonexistent/libx.so\n") == (
        "error: refusing to load /nonexistent/libx.so: cannot open /nonexistent: No such file or "
        "directory\n")
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not an ELF file at all" * 100)
    r = cli("-p", server.pid, "lib", "load", "junk", junk)
    assert r.returncode == 1 and "invalid ELF header" in r.stderr
    r = cli("-p", server.pid, "lib", "load", "bad name", junk)
    assert r.returncode == 1 and "invalid library name 'bad name'" in r.stderr
    assert nc(server.socket, "lib load rel some/dir/lib.so\n").startswith(
        "error: relative path 'some/dir/lib.so' would be resolved against the process's working directory")
    assert cli("-p", server.pid, "lib", "list").stdout.startswith("no libraries are loaded")


def test_lib_load_refuses_files_others_could_have_written(server, tmp_path):
    libm = subprocess.run(["sh", "-c", "ldconfig -p | awk '/libm.so.6 .*x86-64/ {print $NF; exit}'"],
                          capture_output=True, text=True).stdout.strip()
    lib = tmp_path / "libshared.so"
    lib.write_bytes(open(libm, "rb").read())
    os.chmod(lib, 0o666)

    def by_path(name, path):   # the agent opens PATH itself: the directory rules apply too
        return nc(server.socket, f"lib load {name} {path}\n")

    assert by_path("w", lib) == (f"error: refusing to load {lib}: file {lib} is writable by every "
                                 f"user (mode 0666); only root or uid {os.geteuid()} may be able to "
                                 "change it\n")
    r = cli("-p", server.pid, "lib", "load", "w", lib)   # the CLI sends the file itself
    assert r.returncode == 1
    assert r.stderr == (f"error: refusing to load {lib}: file {lib} (sent by the client) is "
                        f"writable by every user (mode 0666); only root or uid {os.geteuid()} may "
                        "be able to change it\n")
    os.chmod(lib, 0o664)
    assert "is writable by its group (mode 0664)" in by_path("w", lib)
    assert "is writable by its group (mode 0664)" in cli("-p", server.pid, "lib", "load", "w", lib).stderr
    os.chmod(lib, 0o644)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    (open_dir / "lib.so").write_bytes(lib.read_bytes())
    assert f"directory {open_dir} is writable by every user (mode 0777)" in by_path("w", open_dir / "lib.so")
    os.chmod(open_dir, 0o1777)  # sticky: others cannot replace our file
    assert by_path("sticky", open_dir / "lib.so").startswith("loaded sticky")
    link = tmp_path / "link.so"
    link.symlink_to(open_dir / "lib.so")
    os.chmod(open_dir, 0o777)
    assert "is writable by every user" in by_path("via_link", link)
    if os.geteuid() == 0:
        os.chown(lib, 65534, 65534)
        assert f"file {lib} is owned by uid 65534; it must be owned by root or uid 0" in by_path("f", lib)
        r = cli("-p", server.pid, "lib", "load", "foreign", lib)
        assert f"file {lib} (sent by the client) is owned by uid 65534; it must be owned by root " \
               "or uid 0" in r.stderr
    assert [l.split()[0] for l in cli("-p", server.pid, "lib", "list").stdout.splitlines()] == ["NAME", "sticky"]


def test_cli_makes_relative_library_paths_absolute(server, tmp_path):
    libm = subprocess.run(["sh", "-c", "ldconfig -p | awk '/libm.so.6 .*x86-64/ {print $NF; exit}'"],
                          capture_output=True, text=True).stdout.strip()
    local = tmp_path / "libcopy.so"
    local.write_bytes(open(libm, "rb").read())
    r = cli("-p", server.pid, "lib", "load", "copy", "libcopy.so", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"from {local}" in r.stdout
    r = cli("-p", server.pid, "lib", "load", "copy2", "./libcopy.so", cwd=tmp_path)
    assert r.returncode == 0 and f"from {local}" in r.stdout


def test_process_keeps_running_after_all_of_this(server):
    server.wait_output(r"user_name=myname age=10 add_func\(1, 2\)=3")
    assert server.alive()


@pytest.mark.parametrize("program", ["simple_server", "simple_server_cpp"])
def test_examples_stop_cleanly_on_sigterm_and_remove_their_socket(spawn, program):
    p = spawn([BIN / program, "--interval-ms", "50"])
    p.wait_output(r"age=10")
    p.popen.terminate()
    assert p.wait_exit() == 0
    assert not os.path.exists(p.socket)




@sanitized
def test_fork_child_gets_its_own_agent_and_parent_keeps_its_own(spawn):
    p = spawn([BIN / "forker", "serve"])
    p.wait_output(r"parent-serving")
    child_pid = int(p.lines[p.wait_output(r"^child \d+")].split()[1])
    child_socket = f"/tmp/{child_pid}.socket"
    r = retry_cli("-p", child_pid, "var", "get", "value")
    assert r.stdout == "1\n", r.stderr
    assert cli("-p", p.pid, "var", "set", "value", "5").returncode == 0
    assert cli("-p", child_pid, "var", "get", "value").stdout == "1\n"
    assert cli("-p", child_pid, "var", "set", "value", "2").returncode == 0
    p.wait_output(r"child-exited 0")
    assert not os.path.exists(child_socket)
    assert os.path.exists(p.socket)
    assert cli("-p", p.pid, "var", "get", "value").stdout == "5\n"


def test_fork_then_exec_leaves_no_socket(spawn):
    p = spawn([BIN / "forker", "exec"])
    child_pid = int(p.lines[p.wait_output(r"^parent-serving \d+")].split()[1])
    child_socket = f"/tmp/{child_pid}.socket"
    deadline = time.time() + 0.8
    while time.time() < deadline:  # the exec'd child (sleep 1) lives on with the same pid
        assert not os.path.exists(child_socket)
        time.sleep(0.05)
    p.wait_output(r"child-exited 0")
    assert not os.path.exists(child_socket)
    assert cli("-p", p.pid, "var", "get", "value").stdout == "1\n"


def test_fork_agent_can_be_turned_off(spawn):
    p = spawn([BIN / "forker", "serve"], env={"HOTPATCH_FORK_AGENT": "0"})
    child_pid = int(p.lines[p.wait_output(r"^child \d+")].split()[1])
    time.sleep(0.5)
    assert not os.path.exists(f"/tmp/{child_pid}.socket")
    os.kill(child_pid, signal.SIGKILL)


@sanitized
def test_socket_path_pattern_gives_each_process_its_own(spawn, tmp_path):
    pattern = str(tmp_path / "agent-%p.sock")
    p = spawn([BIN / "forker", "serve"], env={"HOTPATCH_SOCKET": pattern},
              socket=pattern.replace("%p", "{}"), wait_socket=False)
    p.socket = pattern.replace("%p", str(p.pid))
    p.wait_socket()
    child_pid = int(p.lines[p.wait_output(r"^child \d+")].split()[1])
    r = retry_cli("-p", child_pid, "var", "set", "value", "2")
    assert r.returncode == 0, r.stderr
    assert os.path.exists(p.socket)


@not_under_tsan
def test_agent_survives_the_program_closing_its_descriptors(spawn):
    p = spawn([BIN / "fdchaos", "close"])
    p.wait_output(r"trampled")
    r = retry_cli("-p", p.pid, "var", "set", "value", "7")
    assert r.returncode == 0, r.stderr
    p.wait_output(r"value=7")
    p.wait_error(r"listening again on")


@not_under_tsan
def test_agent_never_touches_descriptors_the_program_dup2ed_over(spawn, tmp_path):
    victim = tmp_path / "program-file"
    victim.write_bytes(b"")
    p = spawn([BIN / "fdchaos", "dup2", victim])
    p.wait_output(r"trampled")
    r = retry_cli("-p", p.pid, "var", "set", "value", "9")
    assert r.returncode == 0, r.stderr
    p.wait_output(r"value=9")
    assert victim.read_bytes() == b""  # nothing of the agent's went into the program's file
    p.popen.terminate()
    assert p.wait_exit() == 0, p.err_lines
    assert victim.read_bytes() == b""
    assert not os.path.exists(p.socket)


def _signal_masks(pid):
    masks = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("SigCgt", "SigIgn", "SigBlk"):
                masks[key] = line.split()[1]
    return masks


def test_agent_never_changes_the_programs_signal_dispositions(server):
    before = _signal_masks(server.pid)
    assert int(before["SigCgt"], 16) & (1 << (signal.SIGTERM - 1))  # the program's own handler
    cli("-p", server.pid, "var", "set", "age", "1")
    cli("-p", server.pid, "lib", "load", "m", "/lib/x86_64-linux-gnu/libm.so.6")
    cli("-p", server.pid, "lib", "unload", "m")
    raw(server.socket, b"\xff" * 5000)
    nc(server.socket, "help\n")
    after = _signal_masks(server.pid)
    assert before["SigCgt"] == after["SigCgt"] and before["SigIgn"] == after["SigIgn"]


def test_cli_refuses_a_request_over_the_line_limit_instead_of_cutting_it(server):
    r = cli("-p", server.pid, "var", "set", "user_name", "x" * 5000)
    assert r.returncode == 2
    assert r.stderr == "hotpatch: the request is longer than the agent's limit of 4096 bytes\n"
    assert cli("-p", server.pid, "var", "get", "user_name").stdout == "myname\n"
    r = cli("-p", server.pid, "var", "get", "y" * (4096 - len("json var get ")))
    assert r.returncode == 1 and "no variable named" in r.stderr
    r = cli("-p", server.pid, "var", "get", "y" * (4097 - len("json var get ")))
    assert r.returncode == 2
