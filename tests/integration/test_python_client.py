"""Integration tests of the Python client (python/hotpatch) against real example servers.

What is proved here, and how:

* The Python CLI (`python3 -m hotpatch`) is byte-identical to the C CLI: every case runs both
  and compares stdout, stderr and the exit code. Commands that change a process run on two
  twin servers (same binary, same start, address randomisation off with `setarch -R` so a
  `lib load` base address is the same), the C client driving one and the Python client the
  other, step by step. Error paths (no agent, no process, foreign socket, refused command,
  bad options, bad replies, timeouts, no permission) run both clients on the same target.
* The `Client` API drives every command family that exists on the agent (var, lib, help,
  version) on real servers, raises the documented exception for every failure, survives the
  agent ending an idle session, and reports an agent killed mid-session.
* For command families still being built elsewhere (func, gflags, glog), a small fake agent
  in this file records the request lines and answers canned protocol replies: the helpers and
  both CLIs must send exactly the words of the protocol (and identical bytes from C and
  Python, quoting included).
* The package installs offline into a fresh virtual environment and its console script works.

The security pass (finding the agent by its listening socket, verifying it, sending `lib load`'s
library as a descriptor, escaping for terminals) is tested in test_python_security.py; the
cases here whose text the spec fixes are checked against the spec's text (security_texts.py)
and against the C client, byte for byte.

Needs HOTPATCH_BUILD_DIR (set by CTest) and python/ on PYTHONPATH (also set by CTest).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("HOTPATCH_BUILD_DIR", REPO / "build")).resolve()
BIN = BUILD / "bin"
C_CLI = BIN / "hotpatch"
PYTHON_DIR = REPO / "python"
sys.path.insert(0, str(PYTHON_DIR))

import hotpatch  # noqa: E402
import security_texts as spec  # noqa: E402
from conftest import agent_answers  # noqa: E402
from hotpatch.client import build_request, quote_word  # noqa: E402

LIBM = next(p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6",
                        "/lib/aarch64-linux-gnu/libm.so.6", "/lib64/libm.so.6")
            if os.path.exists(p))

# Both clients see the same environment; build/bin first on PATH lets the Python client name
# the same preload library as the C client in its "nothing listens there" hint.
CLIENT_ENV = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}",
                  PYTHONPATH=str(PYTHON_DIR))


# ---- running the two clients ----------------------------------------------------------------------

def _as_user(user):
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []


def run_c(*args, cwd=None, timeout=20, user=None):
    """The C client, with argv[0] = "hotpatch" (getopt names argv[0] in its messages)."""
    words = [os.fsencode(str(a)) for a in args]
    if user:
        argv, exe = [*_as_user(user), str(C_CLI), *words], None
    else:
        argv, exe = [b"hotpatch", *words], str(C_CLI)
    r = subprocess.run(argv, executable=exe, capture_output=True, env=CLIENT_ENV, cwd=cwd,
                       timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def run_py(*args, cwd=None, timeout=20, user=None):
    """The Python client as `python3 -m hotpatch` (which names itself "hotpatch")."""
    argv = [*_as_user(user), sys.executable, "-m", "hotpatch", *[os.fsencode(str(a)) for a in args]]
    r = subprocess.run(argv, capture_output=True, env=CLIENT_ENV, cwd=cwd, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def assert_same(*args, cwd=None, user=None):
    """Runs both clients with the same arguments; they must agree byte for byte."""
    c = run_c(*args, cwd=cwd, user=user)
    py = run_py(*args, cwd=cwd, user=user)
    assert py == c, f"args={args!r:.300}\n C: {c!r:.600}\n Py: {py!r:.600}"
    return c


def assert_as_specified(expected, *args, cwd=None, user=None):
    """A case whose text the security spec fixes: both clients print exactly that."""
    py = assert_same(*args, cwd=cwd, user=user)
    assert py == expected, f"args={args!r:.300}\n both: {py!r:.600}"
    return py


# ---- real servers -----------------------------------------------------------------------------------

class Server:
    """A running example server, its pid and its socket."""

    def __init__(self, binary="simple_server", env=None, no_aslr=False, interval_ms=50):
        argv = [str(BIN / binary), "--interval-ms", str(interval_ms)]
        if no_aslr:
            argv = ["setarch", os.uname().machine, "-R", *argv]
        self.popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, env=dict(os.environ, **(env or {})))
        self.pid = self.popen.pid
        self.socket = (env or {}).get("HOTPATCH_SOCKET", f"/tmp/{self.pid}.socket")
        # Wait for the agent to answer, not for the path to exist: a killed process whose pid
        # was reused may have left a stale socket file at the same path.
        deadline = time.time() + 10
        while not self._answers():
            if self.popen.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"{binary} did not start its agent at {self.socket}")
            time.sleep(0.01)

    def _answers(self):
        return agent_answers(self.socket)

    def stop(self):
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        if self.socket.startswith("/tmp/") and os.path.exists(self.socket):
            os.unlink(self.socket)  # a killed agent leaves its socket behind


@pytest.fixture
def servers():
    started = []

    def start(*args, **kwargs):
        s = Server(*args, **kwargs)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(params=["simple_server", "simple_server_cpp"])
def server(request, servers):
    return servers(request.param)


# ---- a fake agent for families not yet on the agent, and for hostile replies ------------------------

class FakeAgent:
    """A Unix socket server that records every request line and answers with `answer(line)`
    (bytes to send, or None to close without answering). Serves sessions and one-shots."""

    def __init__(self, path, answer):
        self.path, self.answer, self.lines = str(path), answer, []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn):
        conn.settimeout(10)
        buf = b""
        with conn:
            while self.running:
                while b"\n" not in buf:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buf += chunk
                line, buf = buf.split(b"\n", 1)
                self.lines.append(line)
                out = self.answer(line)
                if out is None:
                    return
                try:
                    conn.sendall(out)
                except OSError:
                    return
                if line != b"session" and not self._in_session(line):
                    return

    def _in_session(self, line):
        return bool(self.lines) and self.lines[0] == b"session" and line != b"quit"

    def close(self):
        self.running = False
        self.listener.close()
        self.thread.join(2)


def canned(line):
    """Protocol replies for any request: echoes the words back in a JSON reply."""
    words = line.split(b" ")
    if words[0] == b"json":
        words = words[1:]
    if words == [b"session"]:
        return b'{"ok":true,"protocol":1,"message":"session started","text":"session started\\n"}\n'
    if words == [b"quit"]:
        return b'{"ok":true,"message":"bye","text":"bye\\n"}\n'
    request = line.decode("utf-8", "replace")
    if words[-1:] == [b"list"]:
        return (json.dumps({"ok": True, "items": [{"request": request}], "text": request + "\n"})
                + "\n").encode()
    if words[1:2] == [b"get"]:
        return (json.dumps({"ok": True, "value": request, "text": request + "\n"}) + "\n").encode()
    return (json.dumps({"ok": True, "message": request, "request": request,
                        "text": request + "\n"}) + "\n").encode()


@pytest.fixture
def fake(tmp_path):
    agents = []

    def start(answer=canned, name="fake.socket"):
        agent = FakeAgent(tmp_path / name, answer)
        agents.append(agent)
        return agent

    yield start
    for a in agents:
        a.close()


# ==== the CLI: identical to the C client ==========================================================

def test_help_and_version_are_identical():
    for args in (["-h"], ["--help"], ["-V"], ["--version"], ["--vers"]):
        rc, out, err = assert_same(*args)
        assert rc == 0 and out and not err
    assert run_py("-V")[1] == f"hotpatch {hotpatch.__version__} (protocol 1)\n".encode()


def test_read_commands_are_identical(server):
    p = server.pid
    for args in (["var", "list"], ["-j", "var", "list"], ["--json", "var", "get", "age"],
                 ["json", "var", "get", "user_name"], ["var", "get", "int", "age"],
                 ["var", "get", "string", "user_name"], ["lib", "list"], ["help"],
                 ["help", "var"], ["-j", "help", "lib"], ["version"], ["-t", "5000", "version"],
                 ["--timeout=5000", "var", "list"], ["--", "var", "get", "age"]):
        rc, out, err = assert_same("-p", p, *args)
        assert rc == 0 and out and not err, args
    rc, out, _ = assert_same("-s", server.socket, "var", "get", "age")
    assert (rc, out) == (0, b"10\n")


def test_refusals_are_identical(server):
    p = server.pid
    for args in (["var", "get", "nosuch"], ["var", "set", "age", "abc"],
                 ["var", "set", "age", "99999999999"], ["var", "get", "string", "age"],
                 ["var", "get", "age", "extra"], ["var"], ["var", "frob"], ["lib", "unload", "x"],
                 ["lib", "load", "bad name!", LIBM], ["lib", "load", "x", "nosuch.so.7"],
                 ["gflags", "list"], ["func", "rollback", "nosuch"], ["glog", "get", "v"], ["-j", "nope"],
                 ["var", "get", "\xe9\udcff"], ["var", "set", "age", ""]):
        rc, out, err = assert_same("-p", p, *args)
        assert rc == 1, args
        if "-j" in args:
            assert json.loads(out)["ok"] is False and not err
        else:
            assert not out and err.startswith(b"error: "), args
    assert b"this process has no gflags" in run_py("-p", p, "gflags", "list")[2]
    # A library that cannot be opened is refused by the client now (it sends the file itself).
    assert_as_specified((2, b"", spec.cannot_open("/nonexistent/lib.so")),
                        "-p", p, "lib", "load", "x", "/nonexistent/lib.so")


def _without_pid(result, pid):
    """A twin's output with the "pid" member the client adds to JSON made the same."""
    rc, out, err = result
    return rc, out.replace(b'"pid":%d}' % pid, b'"pid":PID}'), err


def test_changes_are_identical_step_by_step(servers, tmp_path):
    """The C client drives one twin, the Python client the other; every step must print the
    same and leave the twins in the same state."""
    twin_c = servers(no_aslr=True)
    twin_py = servers(no_aslr=True)
    (tmp_path / "sub").mkdir()
    os.symlink(LIBM, tmp_path / "libm-link.so")
    steps = [
        ["var", "set", "age", "42"],
        ["var", "set", "int", "age", "-5"],
        ["var", "set", "age", "0x10"],
        ["-j", "var", "set", "user_name", "Ada Lovelace"],
        ["var", "set", "user_name", 'say "hi" \\ back\tslash'],
        ["var", "set", "user_name", "it's"],
        ["var", "set", "user_name", "\u00e9t\u00e9 \u2603"],
        ["var", "list"],
        ["lib", "load", "m", LIBM],
        ["-j", "lib", "load", "m2", "libm.so.6"],
        ["lib", "load", "rel", "../libm-link.so"],       # relative: made absolute, link resolved
        ["lib", "list"],
        ["-j", "lib", "list"],
        ["lib", "load", "m", LIBM],                       # refused: name in use
        ["lib", "unload", "m"],
        ["lib", "unload", "m2"],
        ["lib", "unload", "rel"],
        ["lib", "list"],
        ["var", "list"],
    ]
    for step in steps:
        c = _without_pid(run_c("-p", twin_c.pid, *step, cwd=tmp_path / "sub"), twin_c.pid)
        py = _without_pid(run_py("-p", twin_py.pid, *step, cwd=tmp_path / "sub"), twin_py.pid)
        assert py == c, f"step {step}\n C: {c!r}\n Py: {py!r}"
    listing = run_py("-p", twin_py.pid, "-j", "var", "list")[1]
    values = {i["name"]: i["value"] for i in json.loads(listing)["items"]}
    assert values["age"] == 16 and values["user_name"] == "\u00e9t\u00e9 \u2603"
    assert run_py("-p", twin_py.pid, "lib", "list")[0] == 0


def test_usage_errors_are_identical(server):
    p = str(server.pid)
    cases = [
        [], ["var", "list"], ["-p", p], ["-p", p, "json"], ["-p"], ["--pid"], ["-x"],
        ["--bogus"], ["--bogus=1"], ["--json=1"], ["--=x"], ["-p", "abc", "var", "list"],
        ["-p", "0", "var", "list"], ["-p", "-3", "var", "list"], ["-p", "99999999999", "x"],
        ["-p", " 12x", "x"], ["-p", p, "-s", server.socket, "var", "list"],
        ["-p", p, "-t", "0", "var", "list"], ["-p", p, "-t", "x", "var", "list"],
        ["-p", p, "--timeout", "3600001", "x"], ["-jx", "-p", p, "var", "list"],
        ["-p", p, "var", "set", "user_name", "two\nlines"],
        ["-p", p, "json", "var", "set", "user_name", "cr\r"],
        ["-p", p, "var", "set", "user_name", "x" * 5000, "more"],
        ["-\u00e9"], ["-x", "-h"],
        # The security pass's options: glibc's messages name them in the C client's order.
        ["--t", "5"], ["--t=5"], ["--tr", "x"], ["--trust-peer"], ["--raw=1"], ["--r=x"],
        ["--trust-peer", "12abc", "-s", server.socket, "version"],
        ["--trust-peer=", "-s", server.socket, "version"],
        ["--raw", "-p", p], ["--trust-peer", "0", "-p", p, "-s", server.socket, "version"],
        # The operators' options: pid lists, --pgrep, --all, --jobs, ps and help.
        ["-p", p + ",", "version"], ["-p", "1,,2", "version"], ["-p", p + ",x", "version"],
        ["-p", p, "--pgrep", "x", "-s", server.socket, "version"], ["--all", "-s", "/x", "v"],
        ["--jobs", "0", "-p", p, "version"], ["--jobs", "65", "ps"], ["--jobs=x", "ps"],
        ["--p", "1"], ["--j", "ps"], ["--pgrep"], ["--pgrep", "a(", "version"],
        ["--prune", "-p", p, "version"], ["ps", "extra"], ["ps", "-p", p], ["ps", "--all"],
        ["ps", "-s", server.socket], ["ps", "-x"], ["help", "var", "more"], ["help", "nosuch"],
        ["--pgrep", "no process has this command line at all", "version"],
    ]
    for args in cases:
        rc, out, err = assert_same(*args)
        assert rc == 2 and not out and err, args
    # Options act in order: -h answers before a later bad option is seen.
    assert assert_same("-h", "-x")[0] == 0
    # Options end at the first command word: -5 is a value, not an option.
    assert run_c("-p", p, "var", "set", "age", "-5") == (0, b"age = -5 (was 10)\n", b"")
    assert run_py("-p", p, "var", "set", "age", "-5") == (0, b"age = -5 (was -5)\n", b"")
    # Options may be clustered and attached.
    assert assert_same("-jp" + p, "var", "get", "age")[0] == 0
    assert assert_same("--pid=" + p, "--js", "var", "get", "age")[0] == 0


def test_many_targets_and_offline_help_are_identical(servers):
    """Several pids: the same prefixed lines, JSON lines with their pid, and exit status."""
    one, two = servers(), servers()
    gone = 2147483646
    for args in (["-p", f"{one.pid},{two.pid}", "var", "get", "age"],
                 ["-p", one.pid, "-p", f"{two.pid},{gone}", "var", "list"],
                 ["--json", "-p", f"{one.pid},{gone},{two.pid}", "var", "get", "user_name"],
                 ["-p", f"{one.pid},{two.pid}", "var", "get", "nosuch"],
                 ["-p", f"{one.pid},{two.pid}", "--jobs", "1", "help", "lib"],
                 ["-p", f"{one.pid},{one.pid}", "version"], ["-p", gone, "--json", "version"],
                 ["help"], ["help", "func"], ["-j", "help", "gflags"], ["help", "status"]):
        rc, out, err = assert_same(*args)
        assert rc in (0, 1, 2), args
    rc, out, err = assert_same("-p", f"{one.pid},{gone}", "var", "get", "age")
    assert (rc, out) == (2, f"{one.pid}: 10\n".encode())
    assert err == f"{gone}: hotpatch: no process {gone} is running\n".encode()
    rc, out, _ = assert_same("-p", f"{one.pid},{two.pid}", "var", "get", "nosuch")
    assert rc == 1 and out == b""


def test_line_limit_matches_the_c_client(fake):
    """Around the 4096-byte limit both clients send the same requests and refuse the same
    ones, whole: neither ever sends a word cut short."""
    agent = fake()
    for n in range(4080, 4100):
        word = "a" * n
        agent.lines.clear()
        c = run_c("-s", agent.path, "x", word)
        c_sent = list(agent.lines)
        agent.lines.clear()
        py = run_py("-s", agent.path, "x", word)
        py_sent = list(agent.lines)
        assert py == c and py_sent == c_sent, n
        assert c_sent in ([], [b"json x " + word.encode()]), n
        if not c_sent:
            assert c[0] == 2
            assert c[2] == b"hotpatch: the request is longer than the agent's limit of 4096 bytes\n"


def test_unreachable_errors_are_identical(tmp_path, servers):
    # No process at all (the pid is beyond the kernel's pid_max).
    assert_as_specified((2, b"", spec.no_process(2147483646)), "-p", "2147483646", "var", "list")
    # A process without an agent (this test's own pid): the hint names the preload library.
    rc, out, err = assert_as_specified((2, b"", spec.no_agent(os.getpid())),
                                       "-p", os.getpid(), "var", "list")
    assert b"LD_PRELOAD=" + str(BUILD).encode() + b"/lib/libhotpatch_preload.so" in err
    # A socket path where nothing is.
    rc, _, err = assert_same("-s", tmp_path / "none.socket", "version")
    assert rc == 2 and b"No such file or directory" in err
    # A stale socket file (its process is gone): connection refused.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "stale.socket"))
    stale.close()
    rc, _, err = assert_same("-s", tmp_path / "stale.socket", "version")
    assert rc == 2 and b"Connection refused" in err
    # Paths the kernel cannot take.
    assert assert_same("-s", "/tmp/" + "x" * 120, "version")[0] == 2
    assert assert_same("-s", "", "version")[0] == 2
    # A name pointing at another process's socket: the process holds no such listening
    # socket, so the name is ignored (test_python_security.py has the SO_PEERCRED refusals).
    srv = servers()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        os.symlink(srv.socket, f"/tmp/{sleeper.pid}.socket")
        assert_as_specified((2, b"", spec.no_agent(sleeper.pid)), "-p", sleeper.pid, "var", "list")
    finally:
        os.unlink(f"/tmp/{sleeper.pid}.socket")
        sleeper.kill()
        sleeper.wait()
    # HOTPATCH_SOCKET in the target's environment is where both clients look.
    custom = str(tmp_path / "custom.socket")
    srv2 = servers(env={"HOTPATCH_SOCKET": custom})
    assert assert_same("-p", srv2.pid, "var", "get", "age") == (0, b"10\n", b"")


def test_socket_pattern_in_the_environment_is_expanded_like_the_agent_does(tmp_path):
    pattern = str(tmp_path / "agent-%p.sock")
    proc = subprocess.Popen([BIN / "simple_server", "--interval-ms", "100"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, HOTPATCH_SOCKET=pattern))
    try:
        path = pattern.replace("%p", str(proc.pid))
        for _ in range(200):
            if os.path.exists(path):
                break
            time.sleep(0.01)
        assert assert_same("-p", proc.pid, "var", "get", "age") == (0, b"10\n", b"")
        with hotpatch.Client(pid=proc.pid) as client:
            assert client.request("var get age") == 10
    finally:
        proc.terminate()
        proc.wait()


def test_permission_denied_is_identical(server, tmp_path):
    """A user other than root and the owner can neither check the process nor open the 0600
    socket."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the clients as another user")
    assert_as_specified((2, b"", spec.cannot_verify(server.pid)),
                        "-p", server.pid, "var", "list", user=65534, cwd="/")
    rc, out, err = assert_same("-s", server.socket, "var", "list", user=65534, cwd="/")
    assert rc == 2 and b"Permission denied" in err and b"run as root" in err


def test_bad_replies_and_timeouts_are_identical(fake):
    replies = {
        "garbage.socket": lambda line: b"this is not json\n",
        "plain.socket": lambda line: b"error: too many connections; try again later\n",
        "nook.socket": lambda line: b'{"text":"x\\n"}\n',
        "notext.socket": lambda line: b'{"ok":true}\n',
        "array.socket": lambda line: b'[1,2]\n',
        "nan.socket": lambda line: b'{"ok":true,"value":NaN,"text":"x\\n"}\n',
        "long.socket": lambda line: b"z" * 300 + b"\n",
        "noeol.socket": lambda line: b'{"ok":true,"text":"no newline\\n"}',
        "dup.socket": lambda line: b'{"ok":false,"ok":true,"text":"first wins\\n","error":"e"}\n',
        "nul.socket": lambda line: b'{"ok":true,"text":"a\\u0000b\\n"}\n',
        "closed.socket": lambda line: None,
        # The C client reads members one by one and never looks past ok and text: these are
        # accepted, and printed as it prints them (a raw NUL byte ends the reply).
        "tail.socket": lambda line: b'{"ok":true,"text":"x\\n","z":}\n',
        "number.socket": lambda line: b'{"ok":true,"n":1.2.3,"text":"y\\n"}\n',
        "after.socket": lambda line: b'{"ok":false,"text":"e\\n"} trailing\n',
        "rawnul.socket": lambda line: b'{"ok":true,"text":"a\\n"}\0{"x":1}\n',
        "lone.socket": lambda line: b'{"ok":true,"text":"\\udc80\\ud800\\u0041\\n"}\n',
        "nameNUL.socket": lambda line: b'{"ok\\u0000x":true,"text":"q\\n"}\n',
        "deep.socket": lambda line: b'{"ok":true,"a":' + b"[" * 70 + b"]" * 70 + b',"text":"q\\n"}\n',
        "badok.socket": lambda line: b'{"ok":tru,"text":"q\\n"}\n',
    }
    for name, answer in replies.items():
        agent = fake(answer, name)
        for args in (["version"], ["-j", "version"]):
            rc, out, err = assert_same("-s", agent.path, *args)
            assert rc in (0, 1, 2), name
        if name in ("garbage.socket", "plain.socket", "nook.socket", "notext.socket",
                    "array.socket", "nan.socket", "long.socket", "closed.socket",
                    "deep.socket", "badok.socket"):
            assert rc == 2 and err.startswith(b"hotpatch: "), name
        else:
            assert rc in (0, 1), name
    silent = fake(lambda line: (time.sleep(2), b"")[1], "silent.socket")
    rc, _, err = assert_same("-s", silent.path, "-t", "200", "version")
    assert rc == 2 and err.endswith(b": timed out waiting for the reply\n")


def _with_output(tmp_path, redirect, cli, *args):
    """Runs a client through bash with its output redirected (`>&-`, `>/dev/full`, a pipe
    whose reader is gone): (its exit status as the shell sees it, what reached stdout and
    stderr)."""
    exe = str(C_CLI) if cli is run_c else f"{sys.executable} -m hotpatch"
    status = tmp_path / "status"
    script = f'{exe} "$@" {redirect}; echo "${{PIPESTATUS[0]}}" >{status}'
    r = subprocess.run(["bash", "-c", script, "bash", *map(str, args)], capture_output=True,
                       env=CLIENT_ENV, stdin=subprocess.DEVNULL, timeout=20)
    return status.read_bytes(), r.stdout, r.stderr


def test_output_failures_are_identical(fake, tmp_path):
    """Output that cannot be written is dropped, as C's stdio drops it (the exit status is
    kept), and a reader that went away ends the client by SIGPIPE (141), as it ends the C
    client."""
    slow = fake(lambda line: (time.sleep(0.3), canned(line))[1], "slow.socket")
    gone = "| (exec 0<&-; sleep 1)"
    cases = [(">&-", ["-h"]), (">/dev/full", ["-h"]), ("2>&-", ["-x"]), ("2>/dev/full", ["-x"]),
             (">&- 2>&-", ["-x"]), (">/dev/full", ["-s", slow.path, "var", "list"]),
             (gone, ["-s", slow.path, "var", "list"])]
    for redirect, args in cases:
        c = _with_output(tmp_path, redirect, run_c, *args)
        py = _with_output(tmp_path, redirect, run_py, *args)
        assert py == c, (redirect, args, c, py)
    assert _with_output(tmp_path, gone, run_py, "-s", slow.path, "var", "list")[0] == b"141\n"
    assert _with_output(tmp_path, ">/dev/full", run_py, "-h")[0] == b"0\n"


def test_cli_sends_exactly_the_c_clients_bytes(fake, tmp_path):
    """Quoting, json prefix and lib load paths: both clients put the same bytes on the wire."""
    agent = fake()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "patch.so").write_bytes(b"")
    words = [
        ["func", "upgrade", "p1", "add_func"], ["func", "upgrade", "p1", "add_func", "add_v2"],
        ["func", "rollback", "add_func"], ["func", "list"], ["gflags", "list"],
        ["gflags", "get", "v"], ["gflags", "set", "minloglevel", "2"],
        ["glog", "list"], ["glog", "get", "minloglevel"], ["glog", "set", "minloglevel", "WARNING"],
        ["glog", "vmodule", "server*", "3"], ["json", "gflags", "list"],
        ["var", "set", "s", ""], ["var", "set", "s", "a b"], ["var", "set", "s", 'q"uo\\te'],
        ["var", "set", "s", "it's"], ["var", "set", "s", "tab\there"], ["x", "\xe9\udcff"],
        ["lib", "load", "p", "d/patch.so"], ["lib", "load", "p", "./d/patch.so"],
        ["lib", "load", "p", "libm.so.6"], ["lib", "load", "p", LIBM],
    ]
    for w in words:
        agent.lines.clear()
        c = run_c("-s", agent.path, *w, cwd=tmp_path)
        c_sent = list(agent.lines)
        agent.lines.clear()
        py = run_py("-s", agent.path, *w, cwd=tmp_path)
        assert (py, list(agent.lines)) == (c, c_sent), w
        assert len(c_sent) == 1 and c_sent[0].startswith(b"json ")
    # A FIFO named as the library: opened without blocking, sent like any file.
    os.mkfifo(tmp_path / "d" / "fifo.so")
    for c_or_py in (run_c, run_py):
        agent.lines.clear()
        assert c_or_py("-s", agent.path, "lib", "load", "p", "d/fifo.so", cwd=tmp_path)[0] == 0
        assert agent.lines == [b"json lib load p " + str(tmp_path / "d" / "fifo.so").encode()]
    agent.lines.clear()
    run_py("-s", agent.path, "lib", "load", "p", "d/patch.so", cwd=tmp_path)
    assert agent.lines == [b"json lib load p " + str(tmp_path / "d" / "patch.so").encode()]
    # A library that cannot be opened here is refused before anything is sent.
    for path, shown in (("d/missing.so", tmp_path / "d" / "missing.so"), ("/abs/x.so", "/abs/x.so"),
                        ("../x.so", f"{tmp_path}/../x.so")):
        agent.lines.clear()
        assert_as_specified((2, b"", spec.cannot_open(shown)),
                            "-s", agent.path, "lib", "load", "p", path, cwd=tmp_path)
        assert agent.lines == []


# ==== the API ======================================================================================

def test_api_drives_variables_and_libraries(server):
    with hotpatch.Client(server.pid) as agent:
        assert agent.connected
        rows = {r["name"]: (r["type"], r["value"]) for r in agent.var_list()}
        assert rows["age"] == ("int", 10) and rows["user_name"] == ("string", "myname")
        assert agent.var_get("age") == 10
        assert agent.request("var get age") == 10
        assert agent.var_get("user_name", type="string") == "myname"
        changed = agent.var_set("age", 42)
        assert (changed["old"], changed["value"], changed["message"]) == (10, 42, "age = 42 (was 10)")
        assert agent.var_set("user_name", "Ada Lovelace")["value"] == "Ada Lovelace"
        assert agent.request('var get user_name') == "Ada Lovelace"
        assert agent.var_set("age", -7, type="int")["value"] == -7
        assert agent.request('var set user_name "a \\"b\\""')["value"] == 'a "b"'
        assert agent.call("var", "set", "user_name", 'it\'s "x"')["value"] == 'it\'s "x"'
        assert agent.var_get("user_name") == 'it\'s "x"'
        loaded = agent.lib_load("m", LIBM)
        assert loaded["name"] == "m" and loaded["path"] == LIBM and loaded["base"].startswith("0x")
        assert agent.lib_list() == [{"name": "m", "path": LIBM, "base": loaded["base"]}]
        assert agent.lib_unload("m")["message"] == "unloaded m"
        assert agent.lib_list() == []
        assert "var" in agent.version()["capabilities"]
        assert {r["usage"] for r in agent.help("var")} >= {"var list", "var get [TYPE] NAME"}
        reply = agent.send("var get nosuch", check=False)
        assert not reply.ok and reply.text.startswith("error: ") and "nosuch" in reply.error
    assert not agent.connected
    # The same values through the C client: the API changed the real process.
    assert run_c("-p", server.pid, "var", "get", "age")[1] == b"-7\n"


def test_one_connection_serves_many_requests(server):
    with hotpatch.Client(server.pid) as agent:
        first = agent._sock
        for i in range(200):
            agent.var_set("age", i)
            assert agent.var_get("age") == i
        assert agent._sock is first
    fds = os.listdir(f"/proc/{server.pid}/fd")
    assert len(fds) < 20  # no connection was left open in the agent


def test_api_refusals_raise_refused_error_with_the_agents_message(server):
    agent = hotpatch.Client(socket_path=server.socket)
    with pytest.raises(hotpatch.RefusedError) as e:
        agent.var_set("age", "abc")
    assert e.value.message == ("'abc' is not a valid int: expected a whole number from "
                               "-2147483648 to 2147483647")
    assert e.value.exit_code == 1 and e.value.request == "var set age abc"
    assert e.value.text == "error: " + e.value.message + "\n"
    for call, words, reason in ((agent.gflags_list, (), "this process has no gflags"),
                                (agent.glog_vmodule, ("x*", 2), "this process has no glog")):
        with pytest.raises(hotpatch.RefusedError, match=reason):
            call(*words)
    with pytest.raises(hotpatch.RefusedError, match="nothing to roll back"):
        agent.func_rollback("add_func")
    with pytest.raises(hotpatch.RefusedError, match="variable 'age' has type int, not string"):
        agent.var_get("age", type="string")
    with pytest.raises(hotpatch.Error):           # every failure is a hotpatch.Error
        agent.request("var get")
    assert agent.var_get("age") == 10              # refusals changed nothing, session goes on
    agent.close()


def test_api_usage_errors():
    with pytest.raises(hotpatch.UsageError):
        hotpatch.Client()
    with pytest.raises(hotpatch.UsageError):
        hotpatch.Client(pid=1, socket_path="/tmp/x")
    with pytest.raises(hotpatch.UsageError):
        hotpatch.Client(pid=0)
    client = hotpatch.Client(socket_path="/nonexistent.socket")
    with pytest.raises(hotpatch.UsageError, match="line break"):
        client.request("var get age\nvar get age")
    with pytest.raises(hotpatch.UsageError, match="line break"):
        client.var_set("user_name", "a\nb")
    with pytest.raises(hotpatch.UsageError, match="limit of 4096"):
        client.var_set("user_name", "x" * 5000)
    with pytest.raises(hotpatch.UsageError, match="close"):
        client.request("quit")
    assert not client.connected                  # none of these touched the socket


def test_api_unreachable_agent():
    with pytest.raises(hotpatch.UnreachableError) as e:
        hotpatch.Client(pid=2147483646).var_list()
    assert "no process 2147483646 is running" in str(e.value)
    assert isinstance(e.value, hotpatch.ConnectionError) and e.value.exit_code == 2
    with pytest.raises(hotpatch.UnreachableError, match="No such file"):
        hotpatch.Client(socket_path="/tmp/hotpatch-no-such.socket", connect=True)


def test_api_agent_killed_mid_session(servers):
    srv = servers()
    agent = hotpatch.Client(srv.pid)
    assert agent.var_get("age") == 10
    srv.popen.kill()
    srv.popen.wait()
    with pytest.raises(hotpatch.UnreachableError) as e:
        agent.var_get("age")                     # the dead session is noticed before sending
    # Killed, it left its socket file: the error names it.
    assert f"process {srv.pid} is not running (stale socket file /tmp/{srv.pid}.socket)" in str(e.value)
    assert not agent.connected


def test_api_agent_dying_while_a_request_is_in_flight(fake):
    def answer(line):
        if line == b"session":
            return canned(line)
        return None                              # the "agent" dies without answering
    agent_socket = fake(answer)
    client = hotpatch.Client(socket_path=agent_socket.path)
    with pytest.raises(hotpatch.DisconnectedError, match="may or may not have been carried out"):
        client.var_set("age", 1)
    assert not client.connected
    agent_socket.close()
    os.unlink(agent_socket.path)
    with pytest.raises(hotpatch.UnreachableError):
        client.var_get("age")                    # reconnecting finds no agent: a clear error


def test_api_timeout_and_stopped_agent(servers):
    srv = servers()
    agent = hotpatch.Client(srv.pid, timeout=0.3)
    assert agent.var_get("age") == 10
    os.kill(srv.pid, signal.SIGSTOP)
    while open(f"/proc/{srv.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "T":
        time.sleep(0.01)                         # the signal is delivered asynchronously
    try:
        start = time.monotonic()
        with pytest.raises(hotpatch.DisconnectedError, match="timed out"):
            agent.var_get("age")
        assert time.monotonic() - start < 3
    finally:
        os.kill(srv.pid, signal.SIGCONT)
    assert agent.var_get("age") == 10            # a new session once the agent answers again


def test_api_reconnects_after_the_agent_ends_an_idle_session(servers):
    srv = servers(env={"HOTPATCH_SESSION_TIMEOUT_MS": "300"})
    with hotpatch.Client(srv.pid) as agent:
        agent.var_set("age", 5)
        first = agent._sock
        time.sleep(0.8)                          # the agent closes the idle session
        assert agent.var_get("age") == 5         # transparently a new session
        assert agent._sock is not first


def test_api_protocol_errors(fake):
    bad = fake(lambda line: canned(line) if line == b"session" else b"nonsense\n")
    client = hotpatch.Client(socket_path=bad.path)
    with pytest.raises(hotpatch.ProtocolError, match="not valid: nonsense"):
        client.var_list()
    refuse = fake(lambda line: b"error: too many connections; try again later\n", "busy.socket")
    with pytest.raises(hotpatch.UnreachableError, match="too many connections"):
        hotpatch.Client(socket_path=refuse.path).var_list()


def test_api_helpers_send_the_protocols_words(fake):
    """func, gflags and glog are being built on the agent: the helpers must send these words."""
    agent = fake()
    with hotpatch.Client(socket_path=agent.path) as c:
        assert c.func_list() == [{"request": "func list"}]
        c.func_upgrade("p1", "add_func")
        c.func_upgrade("p1", "add_func", "add_func_v2")
        c.func_rollback("add_func")
        assert c.gflags_list() == [{"request": "gflags list"}]
        assert c.gflags_get("v") == "gflags get v"
        c.gflags_set("minloglevel", 2)
        c.gflags_set("log_prefix", False)
        c.gflags_set("ratio", 0.1)
        c.glog_list()
        assert c.glog_get("minloglevel") == "glog get minloglevel"
        c.glog_set("minloglevel", "WARNING")
        c.glog_vmodule("server*", 3)
        c.var_set("user_name", "two words", type="string")
        c.lib_load("p", "libm.so.6")
        c.help("func")
        c.version()
    assert agent.lines == [
        b"session", b"func list", b"func upgrade p1 add_func",
        b"func upgrade p1 add_func add_func_v2", b"func rollback add_func", b"gflags list",
        b"gflags get v", b"gflags set minloglevel 2", b"gflags set log_prefix false",
        b"gflags set ratio 0.1", b"glog list", b"glog get minloglevel",
        b"glog set minloglevel WARNING", b"glog vmodule server* 3",
        b'var set string user_name "two words"', b"lib load p libm.so.6", b"help func",
        b"version", b"quit"]


def test_quoting_matches_the_protocol_tokenizer():
    assert quote_word("plain") == b"plain"
    assert quote_word("") == b'""'
    assert quote_word("a b") == b'"a b"'
    assert quote_word('a"b\\c') == b'"a\\"b\\\\c"'
    assert quote_word("it's") == b'"it\'s"'
    line, as_json = build_request(["json", "var", "set", "x", "a b"])
    assert (line, as_json) == (b'json var set x "a b"', True)


# ==== installing offline ============================================================================

def test_offline_install_in_a_fresh_venv(tmp_path, server):
    """The README's recipe: a venv with the system site packages (Debian's setuptools and
    wheel), then pip without index or build isolation; the console script is the CLI."""
    src = tmp_path / "src"
    shutil.copytree(PYTHON_DIR, src, ignore=shutil.ignore_patterns("__pycache__", "build",
                                                                   "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index",
                        "--no-build-isolation", str(src)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    script = venv / "bin" / "hotpatch"
    r = subprocess.run([str(script), "-p", str(server.pid), "var", "get", "age"],
                       capture_output=True, text=True, env=env, timeout=20)
    assert (r.returncode, r.stdout, r.stderr) == (0, "10\n", "")
    r = subprocess.run([str(venv / "bin" / "python"), "-c",
                        "import hotpatch, sys; c = hotpatch.Client(int(sys.argv[1]));"
                        "print(c.var_get('user_name'), hotpatch.__file__)", str(server.pid)],
                       capture_output=True, text=True, env=env, timeout=20, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    name, path = r.stdout.split()
    assert name == "myname" and path.startswith(str(venv))
