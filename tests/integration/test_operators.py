"""The operators' tools (issue 14), on real processes: `hotpatch ps` and `ps --prune`, many
targets (-p PID,PID..., --pgrep, --all) with a refusal and an unreachable target, containers
reached by their host pid, and the offline help — each run by both clients, which must print
the same bytes and exit with the same status.

Why a private namespace: ps, --pgrep, --all and --prune look at every process and at /tmp, so
the other tests that CTest runs beside these would change what they see. CTest runs this file
inside `unshare --pid --mount --fork --mount-proc` with a tmpfs of its own on /tmp
(HOTPATCH_PRIVATE_NS=1): every process and socket file here is this file's own.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, LIB, agent_answers, preload_env

REPO = Path(__file__).resolve().parents[2]
C_CLI = BIN / "hotpatch"
PYTHON_DIR = REPO / "python"
sys.path.insert(0, str(PYTHON_DIR))
import hotpatch  # noqa: E402

CLIENT_ENV = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}",
                  PYTHONPATH=str(PYTHON_DIR))
SLEEP = shutil.which("sleep")

pytestmark = pytest.mark.skipif(os.environ.get("HOTPATCH_PRIVATE_NS") != "1",
                                reason="needs the private namespaces CTest runs it in")


def run_c(*args, user=None):
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
    if user:
        r = subprocess.run([*prefix, str(C_CLI), *map(str, args)], capture_output=True,
                           env=CLIENT_ENV, timeout=60)
    else:
        r = subprocess.run(["hotpatch", *map(str, args)], executable=str(C_CLI),
                           capture_output=True, env=CLIENT_ENV, timeout=60)
    return r.returncode, r.stdout, r.stderr


def run_py(*args, user=None):
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
    r = subprocess.run([*prefix, sys.executable, "-m", "hotpatch", *map(str, args)],
                       capture_output=True, env=CLIENT_ENV, timeout=60)
    return r.returncode, r.stdout, r.stderr


def both(*args, mask=None, user=None, reset=()):
    """Runs both clients; they must agree byte for byte (after `mask`, for uptimes). A command
    that changes the processes in `reset` runs on them with age back at 10 each time."""
    for pid in reset:
        run_c("-p", pid, "var", "set", "age", "10")
    c = run_c(*args, user=user)
    for pid in reset:
        run_c("-p", pid, "var", "set", "age", "10")
    py = run_py(*args, user=user)
    if mask:
        c, py = mask(c), mask(py)
    assert py == c, f"args={args!r}\n C: {c!r}\n Py: {py!r}"
    return c


def without_uptime(result):
    """ps output with its uptimes made equal (the clients run a moment apart)."""
    rc, out, err = result
    out = re.sub(rb'"uptime_s":\d+', b'"uptime_s":0', out)
    out = re.sub(rb"(?m)^(\d+ +\S+ +\S+ +)\S+( *)", lambda m: m.group(1) + b"T" +
                 b" " * (len(m.group(0)) - len(m.group(1)) - 1), out)
    return rc, out, err


def status_without_uptime(result):
    """status output with its uptime made equal (the clients ask a moment apart, and a second
    may begin between them)."""
    rc, out, err = result
    out = re.sub(rb'"uptime_s":\d+', b'"uptime_s":0', out)
    return rc, re.sub(rb"\bup \d+ s\b", b"up 0 s", out), err


class Process:
    def __init__(self, argv, env=None, socket_path=None, wait=True):
        self.popen = subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                      env=dict(os.environ, **(env or {})))
        self.pid = self.popen.pid
        self.socket = socket_path or f"/tmp/{self.pid}.socket"
        deadline = time.time() + 10
        while wait and not agent_answers(self.socket):
            assert self.popen.poll() is None and time.time() < deadline, argv
            time.sleep(0.01)

    def stop(self):
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        if os.path.lexists(self.socket):
            os.unlink(self.socket)


@pytest.fixture
def procs():
    started = []

    def start(argv, **kwargs):
        p = Process(argv, **kwargs)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def server(procs, interval="1000", env=None):
    return procs([BIN / "simple_server", "--interval-ms", interval], env=env)


def stale_socket(path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()        # bound, never listened on, closed: what a killed agent leaves


# ==== ps =============================================================================================

def test_ps_lists_every_agent_linked_and_preloaded_with_its_status(procs):
    linked = server(procs)
    preloaded = procs([SLEEP, "3600"], env=preload_env())
    stale_socket("/tmp/99999.socket")   # no process listens: not listed
    assert run_c("-p", linked.pid, "var", "set", "age", "5")[0] == 0
    run_c("-p", linked.pid, "lib", "load", "p1", LIB / "libadd_func_patch1.so")
    # A TSan build cannot stop threads, so there the upgrade is refused (and still a change).
    patched = int(run_c("-p", linked.pid, "func", "upgrade", "p1", "add_func")[0] == 0)
    rc, out, err = both("ps", "--json", mask=without_uptime)
    assert (rc, err) == (0, b"")
    rows = {r["pid"]: r for r in map(json.loads, out.splitlines())}
    assert set(rows) == {linked.pid, preloaded.pid}
    one, two = rows[linked.pid], rows[preloaded.pid]
    assert (one["started"], one["changes"], one["patched_functions"]) == ("linked", 3, patched)
    assert (two["started"], two["changes"], two["patched_functions"]) == ("preload", 0, 0)
    assert one["socket"] == linked.socket and one["user"] == "root" and one["ok"] is True
    assert one["command"] == f"{BIN}/simple_server --interval-ms 1000"
    assert two["command"] == f"{SLEEP} 3600" and one["version"] == hotpatch.__version__
    rc, out, err = both("ps", mask=without_uptime)
    lines = out.decode().splitlines()
    assert rc == 0 and lines[0].split() == ["PID", "USER", "STARTED", "UPTIME", "CHANGES",
                                            "PATCHED", "VERSION", "SOCKET", "COMMAND"]
    assert lines[1].split()[:3] == [str(linked.pid), "root", "linked"]
    assert lines[1].split()[4:8] == ["3", str(patched), hotpatch.__version__, linked.socket]
    assert lines[2].split()[2] == "preload" and len(lines) == 3
    # Options may come before or after the word.
    assert both("--json", "ps", mask=without_uptime)[1].count(b"\n") == 2
    os.unlink("/tmp/99999.socket")


def test_a_stale_socket_file_is_named_instead_of_the_start_up_hint():
    stale_socket("/tmp/99998.socket")
    os.mkdir("/tmp/hotpatch-99997.x1")
    stale_socket("/tmp/hotpatch-99997.x1/socket")
    try:
        assert both("-p", "99998", "version") == (2, b"", b"hotpatch: process 99998 is not "
                                                  b"running (stale socket file /tmp/99998.socket)\n")
        assert both("-p", "99997", "version")[2] == (
            b"hotpatch: process 99997 is not running (stale socket file "
            b"/tmp/hotpatch-99997.x1/socket)\n")
        rc, _, err = both("-s", "/tmp/99998.socket", "version")
        assert rc == 2 and err.endswith(b"hotpatch: process 99998 is not running (stale socket "
                                        b"file /tmp/99998.socket)\n")
        assert b"LD_PRELOAD" not in err
    finally:
        os.unlink("/tmp/99998.socket")
        shutil.rmtree("/tmp/hotpatch-99997.x1")


def test_ps_says_which_agent_did_not_answer(procs):
    quiet = server(procs)
    os.kill(quiet.pid, 19)                       # SIGSTOP: its agent cannot answer
    deadline = time.time() + 10                  # the stop takes effect asynchronously
    while time.time() < deadline and open(f"/proc/{quiet.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "T":
        time.sleep(0.01)
    try:
        rc, out, err = both("-t", "300", "ps", "--json")
    finally:
        os.kill(quiet.pid, 18)
    row = json.loads(out)
    assert rc == 2 and row["ok"] is False and "timed out" in row["error"]
    assert err == f"{quiet.pid}: hotpatch: no reply from {quiet.socket}: timed out waiting for the reply\n".encode()


# ==== ps --prune =====================================================================================

def _plant_prune_cases(live_socket):
    stale_socket("/tmp/4242.socket")                       # ours, stale: removed
    os.mkdir("/tmp/hotpatch-4243.ab12")
    stale_socket("/tmp/hotpatch-4243.ab12/socket")         # ours, stale: removed with its dir
    os.mkdir("/tmp/hotpatch-4244.cd34")
    stale_socket("/tmp/hotpatch-4244.cd34/socket")
    Path("/tmp/hotpatch-4244.cd34/other").write_text("x")  # the directory holds more: kept
    stale_socket("/tmp/4245.socket")
    os.chown("/tmp/4245.socket", 65534, 65534)             # another user's: kept
    Path("/tmp/4246.socket").write_text("not a socket")    # not a socket: kept
    stale_socket("/tmp/elsewhere.sock")
    os.symlink("/tmp/elsewhere.sock", "/tmp/4247.socket")  # a link: kept (never followed)
    stale_socket("/tmp/unrelated.socket")                  # not a standard name: kept
    assert os.path.exists(live_socket)


def _cleanup_prune_cases():
    for path in ("/tmp/4242.socket", "/tmp/4245.socket", "/tmp/4246.socket", "/tmp/4247.socket",
                 "/tmp/elsewhere.sock", "/tmp/unrelated.socket"):
        if os.path.lexists(path):
            os.unlink(path)
    for d in ("/tmp/hotpatch-4243.ab12", "/tmp/hotpatch-4244.cd34"):
        shutil.rmtree(d, ignore_errors=True)


def test_prune_removes_only_stale_socket_files_of_the_caller(procs):
    live = server(procs)
    expected = (b"removed /tmp/4242.socket\n"
                b"removed /tmp/hotpatch-4243.ab12/socket and its directory\n"
                b"removed /tmp/hotpatch-4244.cd34/socket\n")
    for run in (run_c, run_py):
        _plant_prune_cases(live.socket)
        try:
            assert run("ps", "--prune") == (0, expected, b""), run
            assert not os.path.lexists("/tmp/4242.socket")
            assert not os.path.exists("/tmp/hotpatch-4243.ab12")
            assert os.listdir("/tmp/hotpatch-4244.cd34") == ["other"]
            for kept in ("/tmp/4245.socket", "/tmp/4246.socket", "/tmp/4247.socket",
                         "/tmp/elsewhere.sock", "/tmp/unrelated.socket"):
                assert os.path.lexists(kept), kept
            assert agent_answers(live.socket)
            assert run("ps", "--prune") == (0, b"", b"")     # nothing left to remove
        finally:
            _cleanup_prune_cases()
    outputs = []
    for run in (run_c, run_py):
        _plant_prune_cases(live.socket)
        try:
            outputs.append(run("--json", "ps", "--prune"))
        finally:
            _cleanup_prune_cases()
    rc, out, _ = outputs[0]
    assert outputs[1] == outputs[0] and rc == 0 and json.loads(out.splitlines()[1]) == {
        "removed": "/tmp/hotpatch-4243.ab12/socket", "directory": "/tmp/hotpatch-4243.ab12"}


def test_prune_as_another_user_leaves_roots_files_alone():
    theirs, mine = "/tmp/4250.socket", "/tmp/4251.socket"
    for run in (run_c, run_py):
        stale_socket(theirs)
        stale_socket(mine)
        os.chown(mine, 65534, 65534)
        try:
            assert run("ps", "--prune", user=65534) == (0, b"removed /tmp/4251.socket\n", b"")
            assert os.path.lexists(theirs) and not os.path.lexists(mine)
        finally:
            for p in (theirs, mine):
                if os.path.lexists(p):
                    os.unlink(p)


# ==== many targets ===================================================================================

@pytest.fixture
def three(procs):
    """An agent that does it, one that refuses (read-only) and a process with no agent."""
    ok = server(procs, "997")
    refuses = server(procs, "998", env={"HOTPATCH_READ_ONLY": "1"})
    no_agent = procs([SLEEP, "3599"], wait=False)
    return ok, refuses, no_agent


def test_many_pids_run_in_parallel_and_report_each(three):
    ok, refuses, none = three
    rc, out, err = both("-p", f"{ok.pid},{refuses.pid}", "-p", none.pid, "var", "set", "age", "7",
                        reset=[ok.pid])
    assert rc == 2
    assert out == f"{ok.pid}: age = 7 (was 10)\n".encode()
    lines = err.decode().splitlines()
    assert lines[0] == (f"{refuses.pid}: error: the agent is read-only (HOTPATCH_READ_ONLY is set); "
                        "'var set' would change the process")
    assert lines[1] == (f"{none.pid}: hotpatch: process {none.pid} has no agent: none of its "
                        f"listening sockets is /tmp/{none.pid}.socket or "
                        f"/tmp/hotpatch-{none.pid}.*/socket")
    assert all(line.startswith(f"{none.pid}: ") for line in lines[1:])
    # Without the unreachable one: 1, a refusal. Every one done: 0. The same pid twice is one.
    assert both("-p", ok.pid, "-p", refuses.pid, "var", "set", "age", "8", reset=[ok.pid])[0] == 1
    run_c("-p", ok.pid, "var", "set", "age", "8")
    assert both("-p", f"{ok.pid},{refuses.pid}", "var", "get", "age") == (
        0, f"{ok.pid}: 8\n{refuses.pid}: 10\n".encode(), b"")
    assert both("-p", f"{ok.pid},{ok.pid}", "var", "get", "age") == (0, b"8\n", b"")
    assert both("--jobs", "1", "-p", f"{ok.pid},{refuses.pid}", "var", "get", "age")[1] == \
        f"{ok.pid}: 8\n{refuses.pid}: 10\n".encode()
    # --json: one line per target, each with the pid; the unreachable one says why.
    rc, out, err = both("--json", "-p", f"{ok.pid},{refuses.pid},{none.pid}", "var", "get", "age")
    rows = [json.loads(line) for line in out.splitlines()]
    assert rc == 2 and [r["pid"] for r in rows] == [ok.pid, refuses.pid, none.pid]
    assert rows[0]["value"] == 8 and rows[1]["ok"] and rows[2]["reached"] is False
    assert rows[2]["error"].startswith(f"process {none.pid} has no agent")
    assert err.startswith(f"{none.pid}: hotpatch: process {none.pid} has no agent".encode())


def test_pgrep_and_all_select_processes(three):
    ok, refuses, none = three
    run_c("-p", ok.pid, "var", "set", "age", "10")
    rc, out, err = both("--pgrep", "interval-ms 99[78]|sleep 3599", "var", "set", "age", "9",
                        reset=[ok.pid])
    assert rc == 2 and out == f"{ok.pid}: age = 9 (was 10)\n".encode()
    assert err.decode().splitlines()[0].startswith(f"{refuses.pid}: error: the agent is read-only")
    assert f"{none.pid}: hotpatch: process {none.pid} has no agent" in err.decode()
    assert both("--pgrep", "interval-ms 99[78]", "var", "set", "age", "9", reset=[ok.pid])[0] == 1
    run_c("-p", ok.pid, "var", "set", "age", "9")
    assert both("--pgrep", "interval-ms 997", "var", "get", "age") == (0, b"9\n", b"")
    assert both("--pgrep", "no such program", "version") == (
        2, b"", b"hotpatch: no process matches --pgrep 'no such program'\n")
    assert both("--pgrep", "a(", "version")[0] == 2
    rc, out, _ = both("--all", "--json", "var", "get", "age")
    assert rc == 0 and [json.loads(line)["pid"] for line in out.splitlines()] == [ok.pid,
                                                                                 refuses.pid]
    # The Python API has the same selection and exit status.
    results = hotpatch.Fleet(pgrep="interval-ms 99[78]|sleep 3599").call("var", "set", "age", 3)
    assert [r.pid for r in results] == [ok.pid, refuses.pid, none.pid]
    assert [r.exit_code for r in results] == [0, 1, 2] and results.exit_code == 2
    assert "read-only" in results[1].reply.error and "no agent" in results[2].error.message
    assert hotpatch.Fleet([ok.pid], all=True).call("var", "get", "age").exit_code == 0
    assert hotpatch.Fleet(pgrep="nothing at all").call("version").exit_code == 2


# ==== containers =====================================================================================

def _container(tmp_path):
    """simple_server in pid and mount namespaces of its own, with a /tmp of its own."""
    private_tmp = Path(__file__).parent / "private_tmp.sh"   # keeps a checkout under /tmp
    outer = subprocess.Popen(["unshare", "--pid", "--mount", "--fork", private_tmp,
                              str(Path(__file__).resolve().parents[2]), str(BIN.parent), "--",
                              BIN / "simple_server", "--interval-ms", "1000"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        children = Path(f"/proc/{outer.pid}/task/{outer.pid}/children").read_text().split()
        if children and agent_answers(f"/proc/{children[0]}/root/tmp/1.socket"):
            return outer, int(children[0])
        time.sleep(0.02)
    outer.kill()
    raise TimeoutError("the container's agent did not start")


def test_a_process_in_a_container_is_reached_by_its_host_pid(tmp_path):
    outer, pid = _container(tmp_path)
    try:
        assert "NSpid:\t%d\t1" % pid in Path(f"/proc/{pid}/status").read_text()
        assert both("-p", pid, "var", "get", "age") == (0, b"10\n", b"")
        assert both("-p", pid, "var", "set", "age", "11", reset=[pid]) == (
            0, b"age = 11 (was 10)\n", b"")
        run_c("-p", pid, "var", "set", "age", "11")
        rc, out, _ = both("-p", pid, "--json", "status", mask=status_without_uptime)
        status = json.loads(out)   # the client's pid (the host's) is the member read last
        assert rc == 0 and status["pid"] == pid and status["socket"] == "/tmp/1.socket"
        rc, out, _ = both("ps", "--json", mask=without_uptime)
        row = next(r for r in map(json.loads, out.splitlines()) if r["pid"] == pid)
        assert row["socket"] == f"/proc/{pid}/root/tmp/1.socket" and row["ns_pid"] == 1
        assert row["changes"] == 5
        # The socket the container's agent holds is the one reached: a socket at the host's
        # /tmp/1.socket (here: nothing listens) is never taken for it.
        stale_socket("/tmp/1.socket")
        try:
            assert both("-p", pid, "var", "get", "age") == (0, b"11\n", b"")
        finally:
            os.unlink("/tmp/1.socket")
    finally:
        os.kill(pid, 9)
        outer.wait(10)


def test_containers_whose_agents_bind_one_socket_name_are_each_reached(tmp_path):
    """Every container's first process is pid 1 in its namespace, so their agents all bind
    /tmp/1.socket, each in a /tmp of its own but in one network namespace: /proc/net/unix shows
    several listeners of that name. Each is told from the others by its file, not its name."""
    started = [_container(tmp_path) for _ in range(2)]
    try:
        pids = [pid for _, pid in started]
        names = [line for line in Path("/proc/net/unix").read_text().splitlines()
                 if line.endswith(" /tmp/1.socket")]
        assert len(names) >= 2
        for value, pid in enumerate(pids, 20):
            assert run_c("-p", pid, "var", "set", "age", value)[0] == 0
        for value, pid in enumerate(pids, 20):
            assert both("-p", pid, "var", "get", "age") == (0, b"%d\n" % value, b"")
        rc, out, err = both("ps", "--json", mask=without_uptime)
        assert (rc, err) == (0, b"")
        assert set(pids) <= {json.loads(line)["pid"] for line in out.splitlines()}
    finally:
        for outer, pid in started:
            os.kill(pid, 9)
            outer.wait(10)


def _descendants(root, comm):
    """The pids of root's descendants whose command is comm, found through PPid."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            parents[int(entry.name)] = (int(fields[1]), name)
    found = []
    for pid, (ppid, name) in parents.items():
        ancestor = ppid
        while ancestor and ancestor != root:
            ancestor = parents.get(ancestor, (0, ""))[0]
        if ancestor == root and name == comm:
            found.append(pid)
    return sorted(found)


def test_containers_of_a_pod_in_another_network_namespace_are_each_reached(tmp_path):
    """A pod: containers with pid and mount namespaces of their own, sharing one network
    namespace that is not ours. Their agents all bind /tmp/1.socket; the check asks that
    namespace's sock_diag which of them holds the file reached."""
    private_tmp = Path(__file__).parent / "private_tmp.sh"
    container = (f"unshare --pid --mount --fork {private_tmp} {REPO} {BIN.parent} -- "
                 f"{BIN / 'simple_server'} --interval-ms 1000")
    pod = subprocess.Popen(["unshare", "--net", "--fork", "sh", "-c",
                            f"{container} & {container} & wait"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        pids = []
        while time.time() < deadline:
            pids = _descendants(pod.pid, "simple_server")
            if len(pids) == 2 and all(agent_answers(f"/proc/{p}/root/tmp/1.socket")
                                      for p in pids):
                break
            time.sleep(0.02)
        assert len(pids) == 2
        assert os.stat(f"/proc/{pids[0]}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
        for value, pid in enumerate(pids, 30):
            assert run_c("-p", pid, "var", "set", "age", value)[0] == 0
        for value, pid in enumerate(pids, 30):
            assert both("-p", pid, "var", "get", "age") == (0, b"%d\n" % value, b"")
    finally:
        for pid in _descendants(pod.pid, "simple_server"):
            os.kill(pid, 9)
        pod.kill()
        pod.wait(10)


NAMESAKE = """
import os, socket, sys, time
os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True)
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen()
print("ready", flush=True)
time.sleep(60)
"""


def _namesake(path):
    """A live listener bound to `path` in a mount namespace of its own with a private /tmp:
    another container's socket that happens to carry the name."""
    p = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                          'mount -t tmpfs none /tmp && exec "$0" -c "$1" "$2"', sys.executable,
                          NAMESAKE, path], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n"
    return p


def test_a_live_namesake_in_another_mount_namespace_neither_blocks_nor_keeps_a_socket(procs):
    agent = server(procs)
    namesakes = [_namesake(agent.socket), _namesake("/tmp/4242.socket")]
    try:
        # The agent is reached although another socket of its name listens elsewhere.
        assert both("-p", agent.pid, "var", "get", "age") == (0, b"10\n", b"")
        # A stale file here is stale, whatever listens under its name in another namespace.
        for run in (run_c, run_py):
            stale_socket("/tmp/4242.socket")
            assert run("ps", "--prune") == (0, b"removed /tmp/4242.socket\n", b""), run
            assert not os.path.lexists("/tmp/4242.socket")
    finally:
        for p in namesakes:
            p.kill()
            p.wait()


def test_an_agent_on_an_overlay_is_told_from_its_namesake_by_its_file(procs, tmp_path):
    """An overlay whose upper layer is another filesystem reports the layer's device for a
    file and its own for a directory, and sock_diag the overlay's: the file is still matched
    (by its directory's device), so a namesake elsewhere does not get the agent refused."""
    base = Path("/tmp/overlay-case")
    layers = base / "layers"
    for d in (base / "lower", base / "merged", layers):
        d.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "none", str(layers)], check=True)
    try:
        (layers / "upper").mkdir()
        (layers / "work").mkdir()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={base / 'lower'},upperdir={layers / 'upper'},"
                        f"workdir={layers / 'work'}", str(base / "merged")], check=True)
        path = str(base / "merged" / "agent.socket")
        agent = procs([BIN / "simple_server", "--interval-ms", "1000"],
                      env={"HOTPATCH_SOCKET": path}, socket_path=path)
        assert os.lstat(path).st_dev != os.stat(base / "merged").st_dev   # the case itself
        namesake = _namesake(path)
        try:
            assert both("-p", agent.pid, "var", "get", "age") == (0, b"10\n", b"")
        finally:
            namesake.kill()
            namesake.wait()
        agent.stop()
    finally:
        subprocess.run(["umount", str(base / "merged")])
        subprocess.run(["umount", str(layers)])
        shutil.rmtree(base, ignore_errors=True)


# ==== offline help ===================================================================================

def test_offline_help_is_the_agents_own(procs):
    agent = server(procs)
    for args in (["help"], ["help", "var"], ["help", "status"], ["--json", "help", "lib"]):
        offline = both(*args)
        assert offline[0] == 0 and offline[2] == b""
        live = run_c("-p", agent.pid, *args)
        assert offline[1] == live[1].replace(b',"pid":%d}' % agent.pid, b"}"), args
    assert both("help", "nosuch") == (2, b"", b"hotpatch: no commands in family 'nosuch'; "
                                      b"'hotpatch help' lists them all\n")
    assert both("help", "var", "extra")[0] == 2
