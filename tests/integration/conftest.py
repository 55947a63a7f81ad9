"""Shared helpers for the integration tests: start real example processes, talk to their agent.

Every test here runs real binaries from the build directory (HOTPATCH_BUILD_DIR, default
./build) and real sockets. Helpers:

  spawn(argv, env=None, socket=None) -> Proc   start a program and wait for its agent socket
                                               (stdin_pipe=True: Proc.send(text) writes stdin)
  Proc.wait_output(regex, timeout)             wait for a line of the program's stdout
  cli(*args, timeout=10) -> CompletedProcess   run build/bin/hotpatch
  retry_cli(*args, seconds=5)                  the same, until it succeeds or time runs out
  nc(socket, text) -> str                      send text with `nc -U`, return what it printed
  raw(socket, data, ...) -> bytes              send bytes on a raw socket, return the reply
  session(socket) -> Session                   a persistent JSON session (send() -> dict)
"""
import json
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("HOTPATCH_BUILD_DIR", REPO / "build")).resolve()
BIN = BUILD / "bin"
LIB = BUILD / "lib"
HOTPATCH = BIN / "hotpatch"
PRELOAD = LIB / "libhotpatch_preload.so"


def agent_answers(path, timeout=2.0):
    """True when an agent answers `version` at path (a stale socket file does not)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(b"version\n")
        return s.recv(64).startswith(b"hotpatch ")
    except OSError:
        return False
    finally:
        s.close()


def sanitizer_runtime():
    """In a sanitizer build the preload .so needs its runtime loaded first."""
    out = subprocess.run(["ldd", str(PRELOAD)], capture_output=True, text=True).stdout
    m = re.search(r"(lib[at]san\.so\S*) => (\S+)", out)
    return m.group(2) if m else None


def preload_env(**extra):
    runtime = sanitizer_runtime()
    env = {"LD_PRELOAD": f"{runtime}:{PRELOAD}" if runtime else str(PRELOAD)}
    if runtime and "asan" in runtime:
        # The agent's process may be any program: its leaks are not this test's subject.
        env["ASAN_OPTIONS"] = "detect_leaks=0"
    if runtime and "tsan" in runtime:
        env["TSAN_OPTIONS"] = f"suppressions={Path(__file__).parent / 'tsan_preload.supp'}"
    env.update(extra)
    return env



class Proc:
    """A running program whose stdout lines are collected in the background."""

    def __init__(self, argv, env=None, socket_path=None, wait_socket=True, stdin_pipe=False):
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.popen = subprocess.Popen(
            [str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL, env=full_env)
        self.pid = self.popen.pid
        self.socket = socket_path or f"/tmp/{self.pid}.socket"
        self.lines = []
        self.err_lines = []
        self._cond = threading.Condition()
        self._pumps = [threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
                       for stream, sink in ((self.popen.stdout, self.lines),
                                            (self.popen.stderr, self.err_lines))]
        for t in self._pumps:
            t.start()
        if wait_socket:
            self.wait_socket()

    def _pump(self, stream, sink):
        for raw_line in stream:
            with self._cond:
                sink.append(raw_line.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()

    def wait_socket(self, timeout=10):
        """Waits until the agent accepts connections (a stale file at the path does not)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self._accepts():
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"process exited early: {self.err_lines}")
            time.sleep(0.01)
        raise TimeoutError(f"no socket at {self.socket}")

    def _accepts(self):
        return agent_answers(self.socket)

    def wait_output(self, pattern, timeout=10, start=0):
        """Waits for a stdout line (from index `start`) matching pattern; returns its index."""
        return self._wait_line(self.lines, pattern, timeout, start)

    def wait_error(self, pattern, timeout=10, start=0):
        """The same for stderr. stdout and stderr are read by two threads, so a stderr line
        written before a stdout line may still be unread when that stdout line is seen."""
        return self._wait_line(self.err_lines, pattern, timeout, start)

    def _wait_line(self, sink, pattern, timeout, start):
        rx = re.compile(pattern)
        deadline = time.time() + timeout
        with self._cond:
            while True:
                for i in range(start, len(sink)):
                    if rx.search(sink[i]):
                        return i
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError(f"no line matching {pattern!r}; last: {sink[-3:]}")
                self._cond.wait(left)

    def wait_exit(self, timeout=10):
        """Waits for the process to exit and for all of its output to be collected."""
        code = self.popen.wait(timeout)
        for t in self._pumps:
            t.join(timeout)
        return code

    def alive(self):
        return self.popen.poll() is None

    def send(self, text):
        """Writes text to the program's stdin (spawned with stdin_pipe=True)."""
        self.popen.stdin.write(text.encode())
        self.popen.stdin.flush()

    def stop(self):
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.socket.startswith("/tmp/") and os.path.exists(self.socket):
            try:
                os.unlink(self.socket)  # SIGTERM leaves the socket of a killed process behind
            except OSError:
                pass


@pytest.fixture
def spawn():
    procs = []

    def _spawn(argv, env=None, socket=None, wait_socket=True, stdin_pipe=False):
        p = Proc(argv, env, socket, wait_socket, stdin_pipe)
        procs.append(p)
        return p

    yield _spawn
    for p in procs:
        p.stop()


@pytest.fixture
def server(spawn):
    """simple_server printing every 50 ms."""
    return spawn([BIN / "simple_server", "--interval-ms", "50"])


def cli(*args, timeout=15, env=None, cwd=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([str(HOTPATCH), *[str(a) for a in args]], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=cwd)


def retry_cli(*args, seconds=5):
    """Runs the CLI until it succeeds (an agent that is still starting) or time runs out."""
    deadline = time.time() + seconds
    while True:
        r = cli(*args)
        if r.returncode == 0 or time.time() > deadline:
            return r
        time.sleep(0.1)


def nc(socket_path, text, timeout=10):
    r = subprocess.run(["nc", "-U", socket_path], input=text.encode(), capture_output=True,
                       timeout=timeout)
    return r.stdout.decode(errors="replace")


def read_until_closed(sock):
    """Everything the server sends until it closes the connection."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def raw(socket_path, data, timeout=5.0, shut_write=False):
    """Sends bytes, reads until the server closes (or timeout); returns what came back."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(socket_path)
    try:
        if data:
            s.sendall(data)
        if shut_write:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        s.close()


class Session:
    def __init__(self, socket_path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(socket_path)
        self.buf = b""
        self.opened = self.send("session")

    def send(self, line):
        self.sock.sendall(line.encode() + b"\n")
        return self.read()

    def read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("session closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def close(self):
        self.sock.close()


def session(socket_path):
    return Session(socket_path)


def open_fds(pid, settle=0.3, timeout=5.0, expect=None):
    """The process's open descriptor count once it has stopped changing for `settle` seconds
    (connections the agent is still closing are not counted as leaks). With `expect`, waits up
    to `timeout` for the count to come back to that value."""
    deadline = time.time() + timeout
    last, since = None, time.time()
    while True:
        n = len(os.listdir(f"/proc/{pid}/fd"))
        if n != last:
            last, since = n, time.time()
        if (expect is None or n == expect) and time.time() - since >= settle:
            return n
        if time.time() > deadline:
            return n
        time.sleep(0.02)
