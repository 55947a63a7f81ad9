"""The C client's own security checks (cli/verify.c, cli/terminal.c), against real processes.

What is proved here, and how:

* With -p the client finds the agent among the listening sockets the process holds, so a
  socket planted at /tmp/PID.socket, or one left by an earlier process with the same pid, is
  never sent a byte; it checks the peer's uid and the process's identity before sending.
* With -s the server must run as root, as the caller, or as the uid named by --trust-peer.
* `lib load` passes the library itself as an SCM_RIGHTS descriptor.
* Text written to a terminal is escaped; --raw, a pipe and --json are left alone.

Impostors and fake agents are small Python processes (FAKE_AGENT) that listen where they are
told, as the user they are told, and record on their stdout every connection: the bytes
received and the descriptors passed with them (as device and inode). "Never sent a request"
means no connection carried a byte. Tests that switch users or steer pids need root and the
users hotpatch-t1 and hotpatch-t2 (scripts/deps.sh makes them). The pid-reuse test writes
/proc/sys/kernel/ns_last_pid; CTest runs it on its own (-k pid_reuse, RESOURCE_LOCK ns_last_pid).
"""
import json
import os
import pty
import pwd
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tty

import pytest

from conftest import BIN, HOTPATCH, REPO, cli

T1, T2 = "hotpatch-t1", "hotpatch-t2"


def _user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


needs_root_and_users = pytest.mark.skipif(
    os.geteuid() != 0 or not _user(T1) or not _user(T2),
    reason="needs root and the users hotpatch-t1 and hotpatch-t2 (scripts/deps.sh)")


def as_user(name):
    return ["setpriv", f"--reuid={name}", f"--regid={name}", "--clear-groups"]


def cli_as(user, *args):
    return subprocess.run([*as_user(user), str(HOTPATCH), *[str(a) for a in args]],
                          capture_output=True, text=True, timeout=15, cwd="/")


def start_hint():
    return ("hotpatch: no agent is listening there. Start the program linked with libhotpatch "
            "(calling hotpatch_start()),\n          or run it as: "
            f"LD_PRELOAD={BIN.parent / 'lib' / 'libhotpatch_preload.so'} PROGRAM ...\n")


def no_agent(pid):
    return (f"hotpatch: process {pid} has no agent: none of its listening sockets is "
            f"/tmp/{pid}.socket or /tmp/hotpatch-{pid}.*/socket\n") + start_hint()


# ---- fake agents and impostors ---------------------------------------------------------------------

FAKE_AGENT = r'''
import json, os, selectors, signal, socket, sys, threading, time
cfg = json.loads(sys.argv[1])
pid = os.getpid()
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})
printing = threading.Lock()

def say(**members):
    with printing:
        print(json.dumps(members), flush=True)

if cfg.get("listen_as"):                 # listen with this effective uid (saved uid stays root)
    uid, gid = cfg["listen_as"]
    os.setgroups([]); os.setegid(gid); os.seteuid(uid)
listeners = []
for p in cfg["paths"]:
    path = p.replace("{pid}", str(pid))
    if cfg.get("mkdir"):
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    os.chmod(path, 0o666)
    s.listen(cfg.get("backlog", 16))
    listeners.append((s, path))
if cfg.get("become"):                    # then run as this user for good
    uid, gid = cfg["become"]
    os.seteuid(0); os.setgroups([]); os.setresgid(gid, gid, gid); os.setresuid(uid, uid, uid)
if cfg.get("hand_over") and os.fork():   # the listener's creator exits, a child serves it
    os._exit(0)
say(ready=True, server=os.getpid())
later = cfg.get("hand_over_on_signal")   # "stay" or "exit": on SIGUSR1, a child takes over
if later:
    signal.sigwait({signal.SIGUSR1})
    if os.fork():
        for s, _ in listeners:
            s.close()
        if later == "exit":
            os._exit(0)
        while True:
            time.sleep(3600)
    say(server=os.getpid())
    if later == "exit":
        signal.sigwait({signal.SIGUSR2})  # serve once the test has given the pid away
replies = {k: bytes.fromhex(v) for k, v in cfg["replies"].items()}

def talk(conn, path):
    conn.settimeout(5)
    data, fds = b"", []
    try:
        while b"\n" not in data:
            msg, got, _, _ = socket.recv_fds(conn, 65536, 8)
            fds += got
            if not msg:
                break
            data += msg
    except OSError:
        pass
    stats = [[os.fstat(f).st_dev, os.fstat(f).st_ino] for f in fds]
    for f in fds:
        os.close(f)
    say(path=path, request=data.decode("utf-8", "replace"), fds=stats)
    line = data.split(b"\n")[0].decode("utf-8", "replace")
    text = "fake agent at " + path + "\n"
    default = (json.dumps({"ok": True, "message": text[:-1], "text": text}) + "\n").encode()
    try:
        conn.sendall(replies.get(line, default))
    except OSError:
        pass
    conn.close()

sel = selectors.DefaultSelector()
for s, path in listeners:
    sel.register(s, selectors.EVENT_READ, path)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        threading.Thread(target=talk, args=(conn, key.data), daemon=True).start()
'''


class Fake:
    """A fake agent or impostor: listens on each of `paths` ("{pid}" = its own pid)."""

    def __init__(self, paths, user=None, env=None, replies=None, **config):
        config.update(paths=paths, replies={k: v.hex() for k, v in (replies or {}).items()})
        argv = [sys.executable, "-c", FAKE_AGENT, json.dumps(config)]
        self.popen = subprocess.Popen([*(as_user(user) if user else []), *argv], cwd="/",
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=dict(os.environ, **(env or {})))
        self.pid = self.popen.pid
        self.paths = [p.replace("{pid}", str(self.pid)) for p in paths]
        self.made_dirs = bool(config.get("mkdir"))
        self.lines = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self.wait_for(lambda line: "ready" in line):
            self.stop()
            raise RuntimeError(f"the fake agent did not start: {self.popen.stderr.read()!r}")
        if config.get("hand_over"):
            self.popen.wait(10)     # its pid is free now; a child holds the listener

    def _read(self):
        for raw_line in self.popen.stdout:
            with self._cond:
                self.lines.append(json.loads(raw_line))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, predicate, timeout=10):
        with self._cond:
            return self._cond.wait_for(
                lambda: any(predicate(l) for l in self.lines) or not self._reader.is_alive(),
                timeout) and any(predicate(l) for l in self.lines)

    def servers(self):
        with self._cond:
            return {l["server"] for l in self.lines if "server" in l}

    def records(self):
        """Stops the fake and returns what it recorded, one dict per connection."""
        self.stop()
        return [l for l in self.lines if "request" in l]

    def requests(self):
        return [r["request"] for r in self.records() if r["request"] or r["fds"]]

    def stop(self):
        while self._reader.is_alive():   # every process of the fake holds its stdout
            for pid in {self.pid} | self.servers():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._reader.join(1)
        self.popen.wait(10)
        for path in self.paths:
            if os.path.lexists(path):
                os.unlink(path)
            if self.made_dirs:
                try:
                    os.removedirs(os.path.dirname(path))
                except OSError:
                    pass


@pytest.fixture
def fakes():
    started = []

    def start(*args, **kwargs):
        f = Fake(*args, **kwargs)
        started.append(f)
        return f

    yield start
    for f in started:
        f.stop()


@pytest.fixture
def root_sleeper():
    p = subprocess.Popen(["sleep", "60"])
    yield p
    p.kill()
    p.wait()


def reply(**members):
    return (json.dumps(members) + "\n").encode()


def peer_pid(path):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        return struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
    finally:
        s.close()


# ---- 1. finding the agent by the listening socket the process holds ----------------------------

@needs_root_and_users
def test_planted_socket_of_a_root_process_is_never_sent_a_request(fakes, root_sleeper):
    victim = root_sleeper.pid
    impostor = fakes([f"/tmp/{victim}.socket"], user=T1)
    r = cli("-p", victim, "var", "get", "age")
    assert (r.returncode, r.stdout, r.stderr) == (2, "", no_agent(victim))
    assert impostor.records() == []          # not even a connection


def test_agent_in_its_private_fallback_directory_is_found(fakes):
    agent = fakes(["/tmp/hotpatch-{pid}.abc123/socket"], mkdir=True)
    r = cli("-p", agent.pid, "version")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"fake agent at {agent.paths[0]}\n", "")
    assert agent.requests() == ["json version\n"]


def test_listening_sockets_are_chosen_in_the_documented_order(fakes):
    env_path = "/tmp/hotpatch-env-{pid}.sock"
    paths = ["/tmp/hotpatch-{pid}.zz9/socket", "/tmp/{pid}.socket", env_path]
    agent = fakes(paths, mkdir=True, env={"HOTPATCH_SOCKET": "/tmp/hotpatch-env-%p.sock"})
    assert cli("-p", agent.pid, "version").stdout == f"fake agent at {agent.paths[2]}\n"
    agent = fakes(paths[:2], mkdir=True)
    assert cli("-p", agent.pid, "version").stdout == f"fake agent at {agent.paths[1]}\n"
    # Names that only look like the fallback: two directory levels, another pid's prefix.
    agent = fakes(["/tmp/hotpatch-{pid}.abc/def/socket", "/tmp/hotpatch-{pid}0.abc/socket"],
                  mkdir=True)
    r = cli("-p", agent.pid, "version")
    assert (r.returncode, r.stderr) == (2, no_agent(agent.pid))
    assert agent.records() == []


@needs_root_and_users
def test_pid_reuse_listener_handed_over_before_its_pid_went_to_a_root_process(fakes):
    """An impostor process binds /tmp/ITSPID.socket, hands the listener to a child and exits;
    its pid then goes to a root process. The socket still reports the old pid as its server
    (SO_PEERCRED), so a pid check alone would accept it."""
    for _ in range(5):
        impostor = fakes(["/tmp/{pid}.socket"], user=T1, hand_over=True)
        victim = take_pid(impostor.pid, ["sleep", "60"])
        if victim:
            break
        impostor.stop()
    else:
        pytest.skip("could not make a process reuse the impostor's pid")
    try:
        pid = impostor.pid
        r = cli("-p", pid, "var", "get", "age")
        assert (r.returncode, r.stdout, r.stderr) == (2, "", no_agent(pid))
        assert peer_pid(impostor.paths[0]) == pid   # what a pid check alone would have trusted
        assert impostor.requests() == []
    finally:
        victim.kill()
        victim.wait()


@needs_root_and_users
def test_pid_reuse_while_the_client_connects_is_noticed(fakes):
    """The process the client found exits while the client waits in connect(), and its pid
    goes to another process before the connection completes."""
    agent = fakes(["/tmp/{pid}.socket"], backlog=0, hand_over_on_signal="exit")
    pid = agent.pid
    with connect_blocked(agent.paths[0], "-p", pid, "var", "get", "age") as client:
        os.kill(pid, signal.SIGUSR1)             # a child takes the listener; pid exits
        agent.popen.wait(10)
        victim = take_pid(pid, ["sleep", "60"])
        if not victim:
            pytest.skip("could not make a process reuse the agent's pid")
        try:
            # The child announces itself once it has taken over; under load that line may come
            # after the parent's exit, and a signal sent before it would reach no one.
            assert agent.wait_for(lambda line: line.get("server") not in (None, pid))
            for server in agent.servers() - {pid}:
                os.kill(server, signal.SIGUSR2)  # the child starts accepting
            out, err = client.communicate(timeout=15)
        finally:
            victim.kill()
            victim.wait()
    assert (client.returncode, out, err) == (
        2, "", f"hotpatch: process {pid} changed while connecting (it exited and its pid was "
               "reused); try again\n")
    assert agent.requests() == []


def take_pid(pid, argv, attempts=300):
    """Starts argv with exactly this pid (root writes the previous pid to ns_last_pid)."""
    for _ in range(attempts):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        p = subprocess.Popen(argv)
        if p.pid == pid:
            return p
        p.kill()
        p.wait()
        if os.path.exists(f"/proc/{pid}"):
            return None                  # another process took it first
    return None


# ---- 2. verifying the peer before sending ------------------------------------------------------

@needs_root_and_users
def test_process_of_another_user_cannot_be_verified(root_sleeper):
    pid = root_sleeper.pid
    r = cli_as(T2, "-p", pid, "var", "list")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (f"hotpatch: cannot verify the agent of process {pid}: cannot read "
                        f"/proc/{pid}/fd (Permission denied); run as root or as the user that "
                        "owns the process\n")


def test_listener_handed_over_while_the_client_connects_is_refused(fakes):
    agent = fakes(["/tmp/{pid}.socket"], backlog=0, hand_over_on_signal="stay")
    with connect_blocked(agent.paths[0], "-p", agent.pid, "var", "get", "age") as client:
        os.kill(agent.pid, signal.SIGUSR1)       # a child takes the listener over and serves
        out, err = client.communicate(timeout=15)
    assert (client.returncode, out, err) == (
        2, "", f"hotpatch: refusing to talk to {agent.paths[0]}: process {agent.pid} does not "
               "hold that listening socket (a socket handed over by another process)\n")
    assert agent.requests() == []


@pytest.mark.parametrize("client", ["c", "python"])
def test_a_link_put_in_place_of_the_agents_socket_file_is_not_followed(fakes, client):
    """The client holds the agent's socket file open (a final link not followed) and connects
    through it: a link put in the file's place, even to a socket the process does hold, is
    refused before anything is sent."""
    agent = fakes(["/tmp/{pid}.socket", "/tmp/hotpatch-{pid}.x/socket"], mkdir=True)
    path, other = agent.paths
    os.unlink(path)
    os.symlink(other, path)
    program = [str(HOTPATCH)] if client == "c" else [sys.executable, "-m", "hotpatch"]
    r = subprocess.run([*program, "-p", str(agent.pid), "var", "get", "age"], text=True,
                       capture_output=True, timeout=30,
                       env=dict(os.environ, PYTHONPATH=str(REPO / "python")))
    assert (r.returncode, r.stdout, r.stderr) == (
        2, "", f"hotpatch: refusing to talk to {path}: it is not a socket (a link or another "
               "file was put in its place)\n")
    assert agent.requests() == []


@pytest.mark.parametrize("client", ["c", "python"])
def test_an_agent_that_never_accepts_times_out_with_a_clear_reason(fakes, client):
    agent = fakes(["/tmp/{pid}.socket"], backlog=0, hand_over_on_signal="stay")
    program = [str(HOTPATCH)] if client == "c" else [sys.executable, "-m", "hotpatch"]
    with connect_blocked(agent.paths[0], "-t", "300", "-p", agent.pid, "var", "get", "age",
                         program=program) as running:
        out, err = running.communicate(timeout=15)
    assert (running.returncode, out, err) == (
        2, "", f"hotpatch: timed out after 300 ms connecting to {agent.paths[0]}: the agent did "
               "not accept the connection (its backlog is full; it may be busy or stuck); try "
               "again, or raise --timeout\n")
    assert agent.requests() == []


class connect_blocked:
    """Runs the CLI while a connection fills the listener's backlog (0), so the CLI, once it
    has made its socket (it has found the agent), waits in connect() until the listener
    accepts; the test changes the world meanwhile."""

    def __init__(self, path, *args, program=None):
        self.filler = socket.socket(socket.AF_UNIX)
        self.filler.connect(path)
        env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
        self.client = subprocess.Popen([*(program or [str(HOTPATCH)]), *[str(a) for a in args]],
                                       text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       env=env)
        deadline = time.time() + 10
        while not self._has_socket() and self.client.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        assert self._has_socket(), self.client.communicate(timeout=5)

    def _has_socket(self):
        fd_dir = f"/proc/{self.client.pid}/fd"
        try:
            return any(os.readlink(f"{fd_dir}/{fd}").startswith("socket:")
                       for fd in os.listdir(fd_dir))
        except OSError:
            return False

    def __enter__(self):
        return self.client

    def __exit__(self, *exc):
        self.filler.close()
        if self.client.poll() is None:
            self.client.kill()
            self.client.communicate()


@needs_root_and_users
def test_listener_created_as_another_uid_than_the_process_runs_as_is_refused(fakes):
    t1, t2 = _user(T1), _user(T2)
    agent = fakes(["/tmp/{pid}.socket"], listen_as=[t1.pw_uid, t1.pw_gid],
                  become=[t2.pw_uid, t2.pw_gid])
    r = cli("-p", agent.pid, "var", "get", "age")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (f"hotpatch: refusing to talk to /tmp/{agent.pid}.socket: its server runs "
                        f"as uid {t1.pw_uid}, but process {agent.pid} runs as uid {t2.pw_uid} "
                        f"(only root or uid {t2.pw_uid} may serve it)\n")
    assert agent.requests() == []


@needs_root_and_users
def test_socket_served_by_another_uid_needs_trust_peer(fakes):
    t1, t2 = _user(T1), _user(T2)
    agent = fakes(["/tmp/hotpatch-trust-{pid}/agent.socket"], user=T1, mkdir=True)
    path = agent.paths[0]
    r = cli_as(T2, "-s", path, "version")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (f"hotpatch: refusing to talk to {path}: its server runs as uid "
                        f"{t1.pw_uid}, not as root or as you (uid {t2.pw_uid}); pass --trust-peer "
                        f"{t1.pw_uid} to allow it\n")
    assert cli_as(T2, "-s", path, "--trust-peer", T2, "version").returncode == 2
    answered = f"fake agent at {path}\n"
    assert cli_as(T2, "-s", path, "--trust-peer", T1, "version").stdout == answered
    assert cli_as(T2, "--trust-peer", t1.pw_uid, "-s", path, "version").stdout == answered
    assert cli("-s", path, "version").stdout == answered          # root accepts any server
    r = cli("-s", path, "--trust-peer", "no-such-user-here", "version")
    assert (r.returncode, r.stderr) == (2, "hotpatch: invalid --trust-peer 'no-such-user-here': "
                                           "expected a uid or a user name\n")
    assert agent.requests() == ["json version\n"] * 3


def test_help_lists_the_security_options():
    out = cli("--help").stdout
    assert "--trust-peer UID" in out and "--raw" in out


# ---- 3. lib load passes the file ----------------------------------------------------------------

def test_lib_load_passes_the_library_as_a_descriptor(fakes, tmp_path):
    agent = fakes(["/tmp/{pid}.socket"])
    (tmp_path / "lib").mkdir()
    library = tmp_path / "lib" / "libfake.so"
    library.write_bytes(b"\x7fELF not really")
    (tmp_path / "link.so").symlink_to(library)
    real = os.path.realpath(library)
    st = os.stat(library)
    for word in ("lib/libfake.so", "link.so", real):
        r = cli("-p", agent.pid, "lib", "load", "p", word, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    assert cli("-p", agent.pid, "lib", "load", "m", "libm.so.6", cwd=tmp_path).returncode == 0
    r = cli("-p", agent.pid, "lib", "load", "x", "/nonexistent/libx.so")
    assert (r.returncode, r.stderr) == (2, "hotpatch: cannot open /nonexistent/libx.so: No such "
                                           "file or directory\n")
    got = [(r["request"], r["fds"]) for r in agent.records()]
    by_file = (f"json lib load p {real}\n", [[st.st_dev, st.st_ino]])
    assert got == [by_file, by_file, by_file, ("json lib load m libm.so.6\n", [])]


# ---- 4. what reaches the operator's terminal ----------------------------------------------------

def on_terminal(*args, stream="stdout"):
    """Runs the CLI with `stream` on a pseudo-terminal in raw mode (so the terminal adds no
    \\r) and the other stream on a pipe. Returns (exit status, terminal bytes, pipe bytes)."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, stream: slave}
    p = subprocess.Popen([str(HOTPATCH), *[str(a) for a in args]], stdin=subprocess.DEVNULL,
                         **pipes)
    os.close(slave)
    seen = b""
    while select.select([master], [], [], 10)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:                  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    other = (p.stderr if stream == "stdout" else p.stdout).read()
    return p.wait(10), seen, other


ESC = "\x1b]0;owned\x07"
CANNED = {
    "json var get esc": reply(ok=True, value=ESC, text=ESC + "\n"),
    "json var get c1": reply(ok=True, value="\u009b", text="\u009b\n"),
    "json var get lines": reply(ok=True, value="a\nb", text="a\nb\n"),
    "json var set s a": reply(ok=True, name="s", old="x", value="a\nb",
                              text="s = a\nb (was x)\n"),
    "json var list": reply(ok=True, items=[], text="NAME  VALUE\ns     \u009b\u00e9\n"),
    "json var get bytes": b'{"ok":true,"text":"x\xffy\\u007f\\u0000z\\r\\t\xe2\x82 '
                          b'\xc3\xa9\xe2\x98\x83 \\\\ \xed\xa0\x80 \xf4\x90\x80\x80\\n"}\n',
    "json var set s b": reply(ok=False, error="bad \x1b[31m", text="error: bad \x1b[31m\n"),
}


def test_plain_text_on_a_terminal_is_escaped(fakes):
    path = fakes(["/tmp/hotpatch-tty-{pid}.sock"], replies=CANNED).paths[0]
    seen = {w: on_terminal("-s", path, "var", "get", w)[:2] for w in ("esc", "c1", "lines", "bytes")}
    assert seen == {
        "esc": (0, b"\\e]0;owned\\x07\n"),
        "c1": (0, b"\\u009b\n"),
        "lines": (0, b"a\\nb\n"),          # a value cannot forge a second line
        "bytes": (0, b"x\\xffy\\x7f\\x00z\\r\\t\\xe2\\x82 \xc3\xa9\xe2\x98\x83 \\ "
                     b"\\xed\\xa0\\x80 \\xf4\\x90\\x80\\x80\n"),
    }
    # Not a bare value: the text's own lines stay lines.
    assert on_terminal("-s", path, "var", "set", "s", "a")[:2] == (0, b"s = a\nb (was x)\n")
    assert on_terminal("-s", path, "var", "list")[:2] == (0, b"NAME  VALUE\ns     \\u009b\xc3\xa9\n")
    # A refusal goes to stderr: escaped when that is the terminal.
    assert on_terminal("-s", path, "var", "set", "s", "b", stream="stderr")[:2] == (
        1, b"error: bad \\e[31m\n")


def test_raw_pipe_and_json_are_left_alone(fakes):
    path = fakes(["/tmp/hotpatch-tty-{pid}.sock"], replies=CANNED).paths[0]
    assert on_terminal("--raw", "-s", path, "var", "get", "esc")[:2] == (0, ESC.encode() + b"\n")
    r = subprocess.run([str(HOTPATCH), "-s", path, "var", "get", "esc"], capture_output=True)
    assert (r.returncode, r.stdout) == (0, ESC.encode() + b"\n")
    rc, seen, _ = on_terminal("--json", "-s", path, "var", "get", "esc")
    assert (rc, seen) == (0, CANNED["json var get esc"])
    assert on_terminal("--raw", "-s", path, "var", "set", "s", "b", stream="stderr")[:2] == (
        1, b"error: bad \x1b[31m\n")


def test_real_agent_values_are_escaped_on_a_terminal(spawn):
    server = spawn([BIN / "simple_server", "--interval-ms", "50"])
    rc, seen, _ = on_terminal("-p", server.pid, "var", "set", "user_name", "x\u009by")
    assert (rc, seen) == (0, b"user_name = x\\u009by (was myname)\n")
    assert on_terminal("-p", server.pid, "var", "get", "user_name")[:2] == (0, b"x\\u009by\n")
    assert cli("-p", server.pid, "var", "get", "user_name").stdout == "x\u009by\n"
