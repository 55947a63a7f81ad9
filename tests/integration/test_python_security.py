"""The client side of the security pass, in the Python client (spec-security-clients.md).

What is proved here, with real processes, real users (hotpatch-t1, hotpatch-t2) and real
sockets; an impostor records what it received, which must be nothing whenever it is refused:

* discovery by listening socket: the agent's private /tmp/hotpatch-PID.*/socket is found; a
  socket file at /tmp/PID.socket that PID does not hold is ignored; HOTPATCH_SOCKET is taken
  only if PID listens there;
* verification before sending: another process serving the name (E4), a server of another uid
  than the process's (E5), /proc/PID/fd unreadable (E2), the process changing while connecting
  (E7), `-s` to another user's server (E6) and --trust-peer accepting it;
* pid reuse (tests named *ns_last_pid*, a CTest test of their own with RESOURCE_LOCK
  ns_last_pid): a listener whose creator exited and whose pid was given to a root process
  (/proc/sys/kernel/ns_last_pid) is never sent a request (E3, E5, E8);
* lib load sends the library as an SCM_RIGHTS descriptor on the first byte (the fake agent
  fstat()s what it receives), even a file the agent could not open by path; and the real
  agent, where it takes descriptors (skipped on an agent that loads by name), loads a library
  its process could not open;
* plain output to a terminal is escaped (a pty), --raw and pipes are unchanged.

Every expected message is the spec's text (security_texts.py), and every case runs the C client
too, which must give the same bytes (the C CLI is canonical).
"""
import json
import os
import pty
import pwd
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

import pytest

import security_texts as spec

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BUILD = spec.BUILD


def _package_dir():
    """The hotpatch package under test: the first PYTHONPATH entry that holds one (CTest sets
    this tree's python/; another one runs these tests against another version), else ours."""
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry and (Path(entry) / "hotpatch" / "__init__.py").is_file():
            return Path(entry).resolve()
    return REPO / "python"


PYTHON_DIR = _package_dir()
FAKE_AGENT = HERE / "fake_agent.py"
sys.path.insert(0, str(PYTHON_DIR))

import hotpatch  # noqa: E402

CLIENT_ENV = dict(os.environ, PATH=f"{BUILD / 'bin'}:{os.environ.get('PATH', '')}",
                  PYTHONPATH=str(PYTHON_DIR))
T1, T2 = "hotpatch-t1", "hotpatch-t2"
NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (other users, pid reuse)")


def uid_of(user):
    return pwd.getpwnam(user).pw_uid


def as_user(user):
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []


# ---- running the clients ------------------------------------------------------------------------

def run_py(*args, user=None, cwd=None, timeout=20):
    argv = [*as_user(user), sys.executable, "-m", "hotpatch", *[os.fsencode(str(a)) for a in args]]
    r = subprocess.run(argv, capture_output=True, env=CLIENT_ENV, cwd=cwd or "/", timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def run_c(*args, user=None, cwd=None, timeout=20):
    argv = [*as_user(user), str(spec.C_CLI), *[os.fsencode(str(a)) for a in args]]
    r = subprocess.run(argv, capture_output=True, env=CLIENT_ENV, cwd=cwd or "/", timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def check(expected, *args, user=None, cwd=None):
    """The Python CLI gives `expected` (rc, stdout, stderr), and so does the C CLI."""
    py = run_py(*args, user=user, cwd=cwd)
    assert py == expected, f"args={args!r}\n Py: {py!r}"
    assert run_c(*args, user=user, cwd=cwd) == expected, f"C differs, args={args!r}"
    return py


def refused(message):
    return 2, b"", message


# ---- fake agents in processes of their own ------------------------------------------------------

class FakeAgent:
    """tests/integration/fake_agent.py running (as `user`, or root), with its record file."""

    def __init__(self, workdir, *paths, user=None, extra=(), env=None):
        self.record = Path(tempfile.mkstemp(dir=workdir, prefix="record-")[1])
        os.chmod(self.record, 0o666)
        argv = [*as_user(user), sys.executable, str(FAKE_AGENT), "--record", str(self.record),
                *[a for p in paths for a in ("--path", str(p))], *extra]
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, env=dict(os.environ, **(env or {})))
        ready = _read_line(self.popen.stdout, 10)
        assert ready.startswith(b"ready "), (ready, self.popen.stderr.read())
        pids = [int(w) for w in ready.split()[1:]]
        self.pid, self.child = pids[0], (pids[1] if len(pids) > 1 else None)
        self.paths = [str(p).replace("%p", str(self.pid)) for p in paths]

    def connections(self):
        """What each connection brought: [{"path": ..., "chunks": [{"data", "fds"}]}]."""
        time.sleep(0.2)  # the agent records a connection once the client has closed it
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def received(self):
        return "".join(c["data"] for conn in self.connections() for c in conn["chunks"])

    def stop(self):
        for pid in (self.child, self.pid):
            if pid:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        self.popen.wait(10)
        for path in self.paths:
            if os.path.lexists(path):
                os.unlink(path)
            if path.startswith("/tmp/hotpatch-"):
                shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _read_line(stream, timeout):
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else b""


@pytest.fixture
def workdir():
    """A directory every test user can reach (pytest's tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="hp-sec-"))
    os.chmod(path, 0o1777)  # like /tmp: agents of other users bind their sockets here
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agents(workdir):
    started = []

    def start(*paths, **kwargs):
        agent = FakeAgent(workdir, *paths, **kwargs)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


@pytest.fixture
def sleeper():
    """A root process with no agent at all."""
    p = subprocess.Popen(["sleep", "60"])
    yield p
    p.kill()
    p.wait()


def ok_reply(request):
    return 0, f"{request}\n".encode(), b""


# ==== finding the agent by its listening socket ==================================================

def test_the_agents_private_fallback_directory_is_found(agents):
    agent = agents("/tmp/hotpatch-%p.abc123/socket", extra=["--mkdir"])
    check(ok_reply("json version"), "-p", agent.pid, "version")
    with hotpatch.Client(pid=agent.pid) as client:
        assert client.version()["message"] == "version"
        assert client.socket_path == f"/tmp/hotpatch-{agent.pid}.abc123/socket"
    assert [c["path"] for c in agent.connections()] == [agent.paths[0]] * 3


def test_a_planted_socket_file_is_ignored(agents, sleeper, workdir):
    # An agent that moved to its fallback because /tmp/PID.socket was taken: the planted
    # name (an impostor of another user) is never talked to.
    agent = agents("/tmp/hotpatch-%p.k2Jq9Z/socket", extra=["--mkdir"])
    impostor = agents(f"/tmp/{agent.pid}.socket", user=T1)
    check(ok_reply("json var list"), "-p", agent.pid, "var", "list")
    assert impostor.connections() == [] and agent.received().startswith("json var list\n")
    # A process with no agent and a planted name: no agent, and nothing connects to the name.
    planted = agents(f"/tmp/{sleeper.pid}.socket", user=T1)
    check(refused(spec.no_agent(sleeper.pid)), "-p", sleeper.pid, "var", "list")
    with pytest.raises(hotpatch.UnreachableError) as e:
        hotpatch.Client(pid=sleeper.pid).var_list()
    assert not isinstance(e.value, hotpatch.VerificationError)
    assert planted.connections() == []


def test_hotpatch_socket_counts_only_where_the_process_listens(agents, workdir):
    # HOTPATCH_SOCKET names a path the process does not listen on: its /tmp/PID.socket is used.
    env = {"HOTPATCH_SOCKET": str(workdir / "elsewhere-%p.socket")}
    agent = agents("/tmp/%p.socket", env=env)
    check(ok_reply("json var list"), "-p", agent.pid, "var", "list")
    # Listening on all three: HOTPATCH_SOCKET first, then /tmp/PID.socket, then the fallback.
    env = {"HOTPATCH_SOCKET": str(workdir / "mine-%p.socket")}
    three = agents("/tmp/hotpatch-%p.zz/socket", "/tmp/%p.socket", workdir / "mine-%p.socket",
                   env=env, extra=["--mkdir"])
    check(ok_reply("json version"), "-p", three.pid, "version")
    assert {c["path"] for c in three.connections()} == {str(workdir / f"mine-{three.pid}.socket")}


# ==== verifying the server before sending ========================================================

def test_a_listener_inherited_by_another_process_is_refused(agents, workdir):
    """A child holds its parent's listener (HOTPATCH_SOCKET without %p): -p CHILD finds the
    socket, but its server is the parent (E4)."""
    path = str(workdir / "shared.socket")
    agent = agents(path, env={"HOTPATCH_SOCKET": path}, extra=["--child-holds"])
    check(refused(spec.other_process(path, agent.pid, agent.child)),
          "-p", agent.child, "var", "list")
    with pytest.raises(hotpatch.VerificationError) as e:
        hotpatch.Client(pid=agent.child).var_list()
    assert str(e.value) == spec.other_process(path, agent.pid, agent.child).decode()[10:-1]
    assert isinstance(e.value, hotpatch.ConnectionError) and e.value.exit_code == 2
    assert agent.connections() == [{"path": path, "chunks": [{"data": "", "fds": []}]}] * 3


def test_a_server_of_another_uid_than_the_process_is_refused(agents):
    """SO_PEERCRED gives the effective uid at listen(), /proc the real uid: they differ."""
    t1, t2 = uid_of(T1), uid_of(T2)
    agent = agents("/tmp/%p.socket", extra=["--ruid", str(t1), "--euid", str(t2)])
    path = agent.paths[0]
    check(refused(spec.wrong_uid_for_process(path, t2, agent.pid, t1)),
          "-p", agent.pid, "var", "list")
    with pytest.raises(hotpatch.VerificationError, match=f"runs as uid {t2}, but process"):
        hotpatch.Client(pid=agent.pid).var_list()
    assert agent.received() == ""
    # The process's own uid is fine, for root and for that user.
    own = agents("/tmp/%p.socket", user=T1, extra=["--chmod", "777"])
    check(ok_reply("json var list"), "-p", own.pid, "var", "list")
    check(ok_reply("json var list"), "-p", own.pid, "var", "list", user=T1)


def test_a_process_of_another_user_cannot_be_verified(sleeper, agents):
    check(refused(spec.cannot_verify(sleeper.pid)), "-p", sleeper.pid, "var", "list", user=T1)
    own = agents("/tmp/%p.socket", user=T1)
    check(ok_reply("json version"), "-p", own.pid, "version", user=T1)


def test_a_process_that_changes_while_connecting_is_refused(agents):
    """The start time is read before connecting and after; a change means the pid was reused
    (forced here by making the second reading differ)."""
    agent = agents("/tmp/%p.socket")
    code = ("import sys, hotpatch.verify as v, hotpatch.cli as cli\n"
            "real, calls = v.start_time, []\n"
            "def changed(pid):\n"
            "    calls.append(pid)\n"
            "    return real(pid) + (len(calls) > 1)\n"
            "v.start_time = changed\n"
            "sys.exit(cli.main(sys.argv[1:]))\n")
    r = subprocess.run([sys.executable, "-c", code, "-p", str(agent.pid), "var", "list"],
                       capture_output=True, env=CLIENT_ENV, timeout=20)
    assert (r.returncode, r.stdout, r.stderr) == refused(spec.pid_reused(agent.pid))
    assert agent.received() == ""


def test_a_socket_path_of_another_user_needs_trust_peer(agents, workdir):
    t1, t2 = uid_of(T1), uid_of(T2)
    agent = agents(workdir / "t2.socket", user=T2, extra=["--chmod", "777"])
    path = agent.paths[0]
    check(refused(spec.untrusted_uid(path, t2, t1)), "-s", path, "var", "list", user=T1)
    check(refused(spec.untrusted_uid(path, t2, t1)),
          "--trust-peer", T1, "-s", path, "var", "list", user=T1)
    assert agent.received() == ""
    check(ok_reply("json var list"), "--trust-peer", t2, "-s", path, "var", "list", user=T1)
    check(ok_reply("json var list"), "--trust-peer=" + T2, "-s", path, "var", "list", user=T1)
    check(ok_reply("json var list"), "-s", path, "var", "list", user=T2)   # your own uid
    check(ok_reply("json var list"), "-s", path, "var", "list")             # root: anyone
    # The API: the same rule, trust_peer as a uid or a user name.
    code = ("import sys, hotpatch\n"
            "try:\n"
            "    hotpatch.Client(socket_path=sys.argv[1]).version()\n"
            "except hotpatch.VerificationError as e:\n"
            "    print('refused:', e)\n"
            "print(hotpatch.Client(socket_path=sys.argv[1], trust_peer=sys.argv[2]).version()['ok'])\n")
    r = subprocess.run([*as_user(T1), sys.executable, "-c", code, path, T2], capture_output=True,
                       text=True, env=CLIENT_ENV, cwd="/", timeout=20)
    assert r.stdout == f"refused: {spec.untrusted_uid(path, t2, t1).decode()[10:]}True\n", r.stderr


def test_trust_peer_values_are_checked():
    # A name must exist; text that starts with a digit must be a whole uid below 2**32 - 1.
    for bad in ("no-such-user-here", "", "12abc", "0x10", "4294967295", "99999999999999999999",
                "-1", " 1"):
        check(refused(spec.bad_trust_peer(bad)), "--trust-peer", bad, "-s", "/tmp/x", "version")
    check(refused(spec.bad_trust_peer("x")), "--trust-peer=x", "-s", "/tmp/x", "version")
    for bad in ("no-such-user-here", -1, True, 2**32):
        with pytest.raises(hotpatch.UsageError):
            hotpatch.Client(socket_path="/tmp/x", trust_peer=bad)
    with pytest.raises(hotpatch.UsageError, match="trust_peer goes with socket_path"):
        hotpatch.Client(pid=1, trust_peer=0)
    assert hotpatch.Client(socket_path="/tmp/x", trust_peer="root").trust_peer == 0


def test_help_lists_the_new_options():
    rc, out, err = run_py("--help")
    assert rc == 0 and b"--trust-peer UID" in out and b"--raw" in out and not err
    assert run_c("--help") == (rc, out, err)


# ==== lib load sends the library itself ==========================================================

def test_lib_load_sends_the_library_as_a_descriptor(agents, workdir):
    secret = workdir / "root-only"
    secret.mkdir(mode=0o700)
    library = secret / "libpatch.so"
    library.write_bytes(b"\x7fELF-not-really")
    os.symlink(library, secret / "link.so")
    agent = agents("/tmp/%p.socket", user=T1)   # the agent cannot open the file by path
    st = library.stat()
    expect_fd = {"dev": st.st_dev, "ino": st.st_ino, "head": "\x7fELF-not-really"}

    def first_chunks():
        return [conn["chunks"][0] for conn in agent.connections()]

    for word in ("libpatch.so", "./link.so", str(library)):
        agent.record.write_text("")
        line = f"json lib load p {library}"
        check(ok_reply(line), "-p", agent.pid, "lib", "load", "p", word, cwd=secret)
        # One descriptor, on the first chunk, with the line it belongs to.
        assert first_chunks() == [{"data": line + "\n", "fds": [expect_fd]}] * 2
    # A bare name that is no file here goes as a name, with no descriptor.
    agent.record.write_text("")
    check(ok_reply("json lib load m libm.so.6"), "-p", agent.pid, "lib", "load", "m", "libm.so.6")
    assert all(c["fds"] == [] for c in first_chunks())
    # A file that cannot be opened here: nothing is sent.
    agent.record.write_text("")
    check(refused(spec.cannot_open(secret / "missing.so")),
          "-p", agent.pid, "lib", "load", "p", "./missing.so", cwd=secret)
    check(refused(spec.cannot_open(library, "Permission denied")),
          "-s", agent.paths[0], "lib", "load", "p", library, user=T1)
    assert agent.connections() == []
    # The API: Client.lib_load() sends the descriptor inside the session.
    with hotpatch.Client(pid=agent.pid) as client:
        assert client.lib_load("p", library)["message"] == f"lib load p {library}"
        with pytest.raises(hotpatch.LibraryOpenError, match="cannot open .*missing.so: No such"):
            client.lib_load("q", secret / "missing.so")
    [session] = agent.connections()
    sent = [c for c in session["chunks"] if c["data"].startswith("lib load")]
    assert sent == [{"data": f"lib load p {library}\n", "fds": [expect_fd]}]


def _agent_takes_descriptors(path):
    """Whether the agent at `path` reads descriptors sent with a request: one that does
    refuses a descriptor that comes with `version`; one that does not answers as usual."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, open(os.devnull) as null:
        s.settimeout(5)
        s.connect(path)
        socket.send_fds(s, [b"json version\n"], [null.fileno()])
        reply = s.recv(65536)
    return b"descriptor" in reply and b'"ok":false' in reply


def test_the_agent_loads_a_library_its_process_could_not_open(workdir):
    """The real agent of a process run as hotpatch-t1 loads a library in a directory only
    root can enter: only the descriptor the client sends can reach it."""
    secret = workdir / "root-only-lib"
    secret.mkdir(mode=0o700)
    libm = next(p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6",
                            "/lib/aarch64-linux-gnu/libm.so.6", "/lib64/libm.so.6")
                if os.path.exists(p))
    library = secret / "libm-copy.so"
    shutil.copyfile(libm, library)
    os.chmod(library, 0o644)
    p = subprocess.Popen([*as_user(T1), str(BUILD / "bin" / "simple_server"), "--interval-ms",
                          "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        path = f"/tmp/{p.pid}.socket"
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not _agent_takes_descriptors(path):
            pytest.skip("this build's agent loads lib load's PATH by name (no descriptors yet)")
        rc, out, err = run_py("-p", p.pid, "lib", "load", "m", library)
        assert (rc, err) == (0, b"") and out.startswith(f"loaded m from {library} at 0x".encode())
        with hotpatch.Client(pid=p.pid) as client:
            assert client.lib_load("m2", library)["path"] == str(library)
            assert [row["name"] for row in client.lib_list()] == ["m", "m2"]
    finally:
        p.kill()
        p.wait()
        if os.path.lexists(f"/tmp/{p.pid}.socket"):
            os.unlink(f"/tmp/{p.pid}.socket")


# ==== terminal safety ============================================================================

REPLIES = {
    b"json var get osc": {"ok": True, "value": "\x1b]0;owned\x07", "text": "\x1b]0;owned\x07\n"},
    b"json var get csi": {"ok": True, "value": "\u009b31mred", "text": "\u009b31mred\n"},
    b"json var get lines": {"ok": True, "value": "a\nb", "text": "a\nb\n"},
    b"json var list": {"ok": True, "items": [],
                       "text": "NAME\tVALUE\nx\t\x1b[2J\x7f\r\u00e9 \u2603 \\ ok\n"},
    b"json var set x y": {"ok": False, "error": "no \x1b[5m", "text": "error: no \x1b[5m\n"},
    b"json var get nul": {"ok": True, "value": "a\u0000b", "text": "a\u0000b\n"},
    b"json var get lone": {"ok": True, "value": "\udc80", "text": "\udc80\n"},
}
# Bytes that are not UTF-8 inside the JSON string (the agent never sends them; a foreign
# server may), each shown as \xNN; a valid four-byte character stays.
BAD_UTF8 = (b'{"ok":true,"message":"m","text":"\xff \xc0\x80 \xed\xa0\x80 \xe2\x82 '
            b'\xf0\x9f\x98\x80\\n"}\n')
ESCAPED = {
    ("var", "get", "osc"): (0, b"\\e]0;owned\\x07\n", b""),
    ("var", "get", "csi"): (0, b"\\u009b31mred\n", b""),
    ("var", "get", "lines"): (0, b"a\\nb\n", b""),
    ("var", "list"): (0, "NAME\\tVALUE\nx\\t\\e[2J\\x7f\\r\u00e9 \u2603 \\ ok\n".encode(), b""),
    ("var", "set", "x", "y"): (1, b"", b"error: no \\e[5m\n"),
    # A NUL inside a value is shown, not taken as its end; a lone surrogate escape is the
    # three bytes the C client's reader makes of it, which are not UTF-8.
    ("var", "get", "nul"): (0, b"a\\x00b\n", b""),
    ("var", "get", "lone"): (0, b"\\xed\\xb2\\x80\n", b""),
    ("version",): (0, b"\\xff \\xc0\\x80 \\xed\\xa0\\x80 \\xe2\\x82 \xf0\x9f\x98\x80\n", b""),
}


class ThreadAgent:
    """A one-shot agent in this process answering REPLIES (for -s: root talks to anyone)."""

    def __init__(self, path):
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                line = conn.recv(4096).split(b"\n")[0]
                reply = REPLIES.get(line)
                conn.sendall(BAD_UTF8 if reply is None else (json.dumps(reply) + "\n").encode())

    def close(self):
        self.running = False
        self.thread.join(2)
        self.listener.close()


def on_terminal(cli, *args):
    """Runs a CLI with stdout and stderr on two pseudo-terminals (raw mode: no \\r added);
    returns (rc, what the stdout terminal showed, what the stderr one showed)."""
    masters, slaves = zip(*(pty.openpty() for _ in range(2)))
    for fd in slaves:
        tty.setraw(fd)
    argv = ([sys.executable, "-m", "hotpatch"] if cli == "py" else [str(spec.C_CLI)])
    p = subprocess.Popen([*argv, *args], stdin=subprocess.DEVNULL, stdout=slaves[0],
                         stderr=slaves[1], env=CLIENT_ENV)
    for fd in slaves:
        os.close(fd)
    shown = {fd: b"" for fd in masters}
    open_fds, deadline = set(masters), time.monotonic() + 20
    while open_fds and time.monotonic() < deadline:
        ready, _, _ = select.select(list(open_fds), [], [], 0.1)
        for fd in ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:   # EIO: the other side is closed
                chunk = b""
            if chunk:
                shown[fd] += chunk
            else:
                open_fds.discard(fd)
    rc = p.wait(10)
    for fd in masters:
        os.close(fd)
    return rc, shown[masters[0]], shown[masters[1]]


@pytest.fixture
def escaping_agent(workdir):
    agent = ThreadAgent(workdir / "escapes.socket")
    yield str(workdir / "escapes.socket")
    agent.close()


def test_plain_output_to_a_terminal_is_escaped(escaping_agent):
    for words, expected in ESCAPED.items():
        assert on_terminal("py", "-s", escaping_agent, *words) == expected, words
        assert on_terminal("c", "-s", escaping_agent, *words) == expected, words


def test_raw_pipes_and_json_are_unchanged(escaping_agent):
    osc = b"\x1b]0;owned\x07\n"
    assert on_terminal("py", "--raw", "-s", escaping_agent, "var", "get", "osc") == (0, osc, b"")
    assert run_py("-s", escaping_agent, "var", "get", "osc") == (0, osc, b"")
    assert run_py("--raw", "-s", escaping_agent, "var", "get", "osc") == (0, osc, b"")
    line = (json.dumps(REPLIES[b"json var get osc"]) + "\n").encode()
    assert on_terminal("py", "-j", "-s", escaping_agent, "var", "get", "osc") == (0, line, b"")
    assert on_terminal("py", "--raw", "-s", escaping_agent, "var", "set", "x", "y") == (
        1, b"", b"error: no \x1b[5m\n")
    for args in (["--raw", "-s", escaping_agent, "var", "get", "osc"],
                 ["-j", "-s", escaping_agent, "var", "get", "osc"],
                 ["--raw", "-s", escaping_agent, "var", "set", "x", "y"]):
        assert on_terminal("c", *args) == on_terminal("py", *args)
    # Not a terminal: the text up to a NUL byte, as fputs() writes it; on one, all of it.
    assert run_py("-s", escaping_agent, "var", "get", "nul") == (0, b"a", b"")
    assert run_c("-s", escaping_agent, "var", "get", "nul") == (0, b"a", b"")


def test_escape_rules_byte_by_byte():
    from hotpatch.terminal import escape
    named = {0x1B: b"\\e", 0x09: b"\\t", 0x0D: b"\\r", 0x0A: b"\n"}
    for b in range(0x80):
        shown = escape(bytes([b]))
        if b < 0x20 or b == 0x7F:
            assert shown == named.get(b, b"\\x%02x" % b), b
        else:
            assert shown == bytes([b]), b
    for second in range(0x80, 0xC0):
        want = b"\\u00%02x" % second if second < 0xA0 else bytes([0xC2, second])
        assert escape(bytes([0xC2, second])) == want
    assert escape(b"a\nb\n", bare_value=True) == b"a\\nb\n"
    assert escape(b"\xf4\x90\x80\x80 \xe0\x80\xaf") == b"\\xf4\\x90\\x80\\x80 \\xe0\\x80\\xaf"


# ==== pid reuse (CTest python_security_pid_reuse, RESOURCE_LOCK ns_last_pid) ======================

def _hand_over_listener(user):
    """An impostor (as `user`) listens on /tmp/ITSPID.socket, hands the listener to this test
    and exits: SO_PEERCRED of that socket will name a pid that no longer runs. Returns the
    pid and the listener (the test reads what the socket receives)."""
    mine, theirs = socket.socketpair()
    p = subprocess.Popen([*as_user(user), sys.executable, str(FAKE_AGENT), "--path",
                          "/tmp/%p.socket", "--hand-to", str(theirs.fileno())],
                         pass_fds=[theirs.fileno()], stdout=subprocess.DEVNULL)
    theirs.close()
    mine.settimeout(10)
    _, fds, _, _ = socket.recv_fds(mine, 16, 1)
    mine.close()
    assert p.wait(10) == 0 and len(fds) == 1
    return p.pid, socket.socket(fileno=fds[0])


def _start_as_pid(pid, argv, pass_fds=()):
    """Starts argv as process `pid` (free since its impostor exited) by setting the last pid
    handed out; None when some other fork took it first."""
    with open(NS_LAST_PID, "w") as f:
        f.write(str(pid - 1))
    p = subprocess.Popen(argv, pass_fds=pass_fds)
    if p.pid == pid:
        return p
    p.kill()
    p.wait()
    return None


def _received(listener):
    """Everything sent to the listener by clients that connected (each closed by now)."""
    listener.setblocking(False)
    data = b""
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return data
        with conn:
            conn.settimeout(2)
            try:
                while chunk := conn.recv(4096):
                    data += chunk
            except OSError:
                pass


@pytest.fixture
def reused_pid():
    """reused_pid(user, holds, rename) -> (pid, impostor listener): a root `sleep` that got
    the pid of an impostor that listened on /tmp/PID.socket and exited. `holds`: the root
    process holds the impostor's listener; `rename`: it holds a listener of its own that
    was bound at /tmp/PID.socket but whose file was replaced by the impostor's again."""
    cleanup = []

    def make(user, holds=False, rename=False):
        for _ in range(50):
            pid, impostor = _hand_over_listener(user)
            path = f"/tmp/{pid}.socket"
            cleanup.append(lambda path=path: [os.unlink(p) for p in (path, path + ".own")
                                              if os.path.lexists(p)])
            cleanup.append(impostor.close)
            fds = [impostor.fileno()] if holds else []
            if rename:
                os.rename(path, path + ".impostor")
                own = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                own.bind(path)
                own.listen(4)
                os.rename(path, path + ".own")
                os.rename(path + ".impostor", path)
                cleanup.append(own.close)
                fds = [own.fileno()]
            holder = _start_as_pid(pid, ["sleep", "60"], pass_fds=fds)
            if holder is not None:
                cleanup.append(lambda h=holder: (h.kill(), h.wait()))
                return pid, impostor
        pytest.fail("could not get a pid reused through ns_last_pid in 50 tries")

    yield make
    for step in reversed(cleanup):
        step()


def test_ns_last_pid_a_planted_listener_of_a_reused_pid_is_never_sent_a_request(reused_pid):
    pid, impostor = reused_pid(T1)
    check(refused(spec.no_agent(pid)), "-t", "1000", "-p", pid, "var", "list")
    with pytest.raises(hotpatch.UnreachableError, match="has no agent"):
        hotpatch.Client(pid=pid, timeout=1).var_list()
    assert _received(impostor) == b""


def test_ns_last_pid_a_reused_pid_holding_a_foreign_listener_is_refused(reused_pid):
    pid, impostor = reused_pid(T1, holds=True)
    path = f"/tmp/{pid}.socket"
    check(refused(spec.wrong_uid_for_process(path, uid_of(T1), pid, 0)),
          "-t", "1000", "-p", pid, "var", "list")
    with pytest.raises(hotpatch.VerificationError):
        hotpatch.Client(pid=pid, timeout=1).var_list()
    assert _received(impostor) == b""


def test_ns_last_pid_a_name_whose_listener_the_process_does_not_hold_is_refused(reused_pid):
    """A root impostor (so its uid passes) whose pid was reused: the process holds a listener
    bound at /tmp/PID.socket, but the file there now leads to the impostor's (E8)."""
    pid, impostor = reused_pid(None, rename=True)
    path = f"/tmp/{pid}.socket"
    check(refused(spec.not_held(path, pid)), "-t", "1000", "-p", pid, "var", "list")
    with pytest.raises(hotpatch.VerificationError, match="does not hold that listening socket"):
        hotpatch.Client(pid=pid, timeout=1).var_list()
    assert _received(impostor) == b""


def test_unix_diag_names_the_socket_bound_to_a_file_by_its_identity(tmp_path):
    """hotpatch.unix_diag, the piece both checks above rest on: a file is tied to the socket
    bound to it (the inode /proc/PID/fd links show), listening or not as asked; a file no
    socket is bound to any more, and a file of the same name elsewhere, are tied to none."""
    from hotpatch import unix_diag

    def found(st, listening):
        m = unix_diag.sockets_of_file(st, listening_only=listening,
                                      directory=os.stat(tmp_path))
        assert m.count == len(m.inodes) and m.device_seen
        return m.inodes
    path = tmp_path / "s.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    own = os.fstat(s.fileno()).st_ino
    st = os.lstat(path)
    assert found(st, False) == [own]
    assert found(st, True) == []                      # bound, not listening
    s.listen()
    assert found(st, True) == [own]
    other = tmp_path / "other.sock"
    t = socket.socket(socket.AF_UNIX)
    t.bind(str(other))
    assert found(os.lstat(other), False) == [os.fstat(t.fileno()).st_ino]
    s.close()
    assert found(st, False) == []                     # the file is stale now
    t.close()
