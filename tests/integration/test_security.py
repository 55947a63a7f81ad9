"""The agent against another local user: every attack is run for real, as a second user.

Two unprivileged users take part (created by scripts/deps.sh as root): hotpatch-t1, the
attacker, and hotpatch-t2, a bystander. The target processes run as root, as in production
incidents. Each test reproduces one class of attack and proves it is refused or harmless:

  - the file checked is the file loaded: a symlink swap race run for 500 loads, a dangling
    link, a magic /proc link to a deleted file, a path only dlopen's $LIB expansion resolves,
    bare names, descriptors sent with the wrong request;
  - a planted /tmp/PID.socket of every kind, before start and in the window after an exec,
    cannot keep the process from serving (a private fallback directory is used instead);
  - a setuid-root program ignores a hostile HOTPATCH_* environment;
  - log and audit files never follow links nor append to another user's file;
  - one user cannot exhaust the host's descriptors through the agent (ulimit -n 256);
  - the audit trail cannot be forged or cut, and refusals are recorded;
  - refusals come in the form the request asks for; HOTPATCH_ALLOW_UIDS and
    HOTPATCH_ALLOW_GROUP let the listed users in, and only them;
  - a program's string cannot drive a terminal through the agent's messages and tables.
"""
import ctypes
import grp
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, LIB, PRELOAD, agent_answers, cli, nc, preload_env

PYTHON = "/usr/bin/python3"           # Debian's: reachable by every user (a pyenv one is not)
ATTACKER, BYSTANDER = "hotpatch-t1", "hotpatch-t2"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as two users")


def user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pytest.fail(f"test user {name} is missing: run scripts/deps.sh as root")


def as_user(name, argv, **kw):
    """Runs argv as the user `name` (no supplementary groups)."""
    u = user(name)
    return subprocess.run(["setpriv", f"--reuid={u.pw_uid}", f"--regid={u.pw_gid}",
                           "--clear-groups", *map(str, argv)], capture_output=True,
                          timeout=kw.pop("timeout", 60), **kw)


def start_as_user(name, argv, **kw):
    u = user(name)
    return subprocess.Popen(["setpriv", f"--reuid={u.pw_uid}", f"--regid={u.pw_gid}",
                             "--clear-groups", *map(str, argv)], **kw)


def owned_dir(tmp_path, name, owner, mode=0o755):
    d = tmp_path / name
    d.mkdir()
    u = user(owner)
    os.chown(d, u.pw_uid, u.pw_gid)
    os.chmod(d, mode)
    return d


@pytest.fixture
def public_tmp(tmp_path):
    """tmp_path made reachable by the test users (pytest creates it 0700)."""
    for p in [tmp_path, *tmp_path.parents]:
        if str(p) in ("/", "/tmp"):
            break
        os.chmod(p, os.stat(p).st_mode | 0o755)
    return tmp_path


def build_library(path, marker):
    """A shared library whose constructor creates `marker`: proof that it ran."""
    src = path.with_suffix(".c")
    src.write_text('#include <fcntl.h>\n#include <unistd.h>\n'
                   '__attribute__((constructor)) static void ran(void) {\n'
                   f'  int fd = open("{marker}", O_CREAT | O_WRONLY, 0644);\n'
                   '  if (fd >= 0) close(fd);\n}\n')
    subprocess.run(["cc", "-shared", "-fPIC", "-o", path, src], check=True)
    return path


def listening_paths(pid):
    """The paths of the Unix sockets that process pid itself listens on."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    paths = []
    with open(f"/proc/{pid}/net/unix") as f:
        next(f)
        for line in f:
            cols = line.split()
            if len(cols) >= 8 and cols[3] == "00010000" and cols[6] in inodes:
                paths.append(cols[7])
    return paths


def wait_for(predicate, timeout=10, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


def fallback_socket(pid):
    return wait_for(lambda: [p for p in listening_paths(pid)
                             if p.startswith(f"/tmp/hotpatch-{pid}.") and p.endswith("/socket")],
                    what=f"the private socket of {pid}")[0]


def request(path, line, fds=(), timeout=5):
    """Sends one line (with descriptors attached) and returns the whole reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        data = line.encode() + b"\n"
        if fds:
            socket.send_fds(s, [data], list(fds))
        else:
            s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks).decode(errors="replace")
            chunks.append(chunk)
    finally:
        s.close()


# ---- the file checked is the file loaded -----------------------------------------------------

SWAPPER = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
a, b, stop = sys.argv[1].encode(), sys.argv[2].encode(), sys.argv[3]
while not os.path.exists(stop):
    libc.syscall(316, AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)   # renameat2
"""


def test_a_swapped_symlink_never_loads_the_other_users_library(spawn, public_tmp):
    server = spawn([BIN / "simple_server", "--interval-ms", "1000"])
    mine = public_tmp / "root-owned"
    mine.mkdir()
    good = shutil.copy(LIB / "libadd_func_patch1.so", mine / "libgood.so")
    evil_dir = owned_dir(public_tmp, "evil", ATTACKER)
    marker = evil_dir / "constructor-ran"
    evil = build_library(evil_dir / "libevil.so", marker)
    u = user(ATTACKER)
    os.chown(evil, u.pw_uid, u.pw_gid)
    # In /tmp itself (sticky, everyone may create names): the attacker's two links, swapped
    # with renameat2(RENAME_EXCHANGE) as fast as it can.
    tag = os.urandom(4).hex()
    link, other = f"/tmp/hp-race-{tag}.so", f"/tmp/hp-race-{tag}.other"
    stop = public_tmp / "stop"
    as_user(ATTACKER, ["ln", "-s", good, link])
    as_user(ATTACKER, ["ln", "-s", evil, other])
    swapper = start_as_user(ATTACKER, [PYTHON, "-c", SWAPPER, link, other, stop])
    replies = []
    try:
        for i in range(500):
            reply = nc(server.socket, f"lib load r{i} {link}\n")
            replies.append(reply)
            if reply.startswith("loaded"):
                nc(server.socket, f"lib unload r{i}\n")
        for i in range(100):   # the CLI opens the path itself and sends the descriptor
            r = cli("-p", server.pid, "lib", "load", f"c{i}", link)
            assert r.returncode == 0 or "owned by uid" in r.stderr, r.stderr
    finally:
        stop.touch()
        try:
            swapper.wait(10)
        except subprocess.TimeoutExpired:   # a starved swapper on a loaded machine: end it
            swapper.kill()
            swapper.wait()
        for p in (link, other):
            if os.path.lexists(p):
                os.unlink(p)
    assert not marker.exists(), "the attacker's constructor ran inside the root process"
    # Through the agent's own walk, the attacker's link is never followed at all.
    assert all(f"symbolic link {link} is owned by uid {u.pw_uid}" in r or "No such file" in r
               for r in replies), [r for r in replies if "symbolic link" not in r][:3]
    assert server.alive()


def test_dangling_links_and_magic_links_are_refused(spawn, public_tmp):
    server = spawn([BIN / "simple_server", "--interval-ms", "1000"])
    evil_dir = owned_dir(public_tmp, "evil", ATTACKER)
    marker = evil_dir / "constructor-ran"
    u = user(ATTACKER)
    # A dangling link of the attacker's: refused for its owner, not merely "not found".
    dangling = f"/tmp/hp-dangling-{os.urandom(4).hex()}.so"
    as_user(ATTACKER, ["ln", "-s", evil_dir / "later.so", dangling])
    try:
        reply = nc(server.socket, f"lib load d {dangling}\n")
        assert reply == (f"error: refusing to load {dangling}: symbolic link {dangling} is owned by "
                         f"uid {u.pw_uid}; it must be owned by root or the process's user\n")
    finally:
        os.unlink(dangling)
    # A magic link: a process holds the attacker's library open and it is deleted;
    # /proc/PID/fd/N still opens the deleted file, though no path names it any more.
    evil = build_library(evil_dir / "libevil.so", marker)
    os.chown(evil, u.pw_uid, u.pw_gid)
    holder_code = ("import os, sys, time\n"
                   f"fd = os.open('{evil}', os.O_RDONLY)\n"
                   "print(fd, flush=True)\ntime.sleep(30)\n")
    holders = [start_as_user(ATTACKER, [PYTHON, "-c", holder_code], stdout=subprocess.PIPE,
                             text=True),
               subprocess.Popen([PYTHON, "-c", holder_code], stdout=subprocess.PIPE, text=True)]
    try:
        fds = [int(h.stdout.readline()) for h in holders]
        os.unlink(evil)
        for h, fd in zip(holders, fds):
            magic = f"/proc/{h.pid}/fd/{fd}"
            reply = nc(server.socket, f"lib load m {magic}\n")
            assert reply.startswith(f"error: refusing to load {magic}: "), reply
        assert "is a link in /proc" in reply   # the root-owned holder: only the link rule is left
        reply = nc(server.socket, "lib load s /proc/self/exe\n")
        assert reply == ("error: refusing to load /proc/self/exe: /proc/self is a link in /proc; "
                         "such links name open files, not paths, and are never followed\n")
    finally:
        for h in holders:
            h.kill()
            h.wait()
    assert not marker.exists()


def test_a_path_only_dlopen_expansion_resolves_is_taken_literally(spawn, public_tmp):
    server = spawn([BIN / "simple_server", "--interval-ms", "1000"])
    evil_dir = owned_dir(public_tmp, "expand", ATTACKER)
    marker = evil_dir / "constructor-ran"
    u = user(ATTACKER)
    for sub in ("lib/x86_64-linux-gnu", "lib64", "x86_64", "haswell"):   # $LIB and $PLATFORM
        d = evil_dir / sub
        d.mkdir(parents=True, exist_ok=True)
        lib = build_library(d / "libevil.so", marker)
        for p in (lib, d, d.parent):
            os.chown(p, u.pw_uid, u.pw_gid)
    for token in ("$LIB", "$PLATFORM", "${LIB}"):
        reply = nc(server.socket, f"lib load e {evil_dir}/{token}/libevil.so\n")
        assert reply.startswith("error: refusing to load"), reply
    assert not marker.exists()


def test_bare_names_are_refused(server):
    reply = nc(server.socket, "lib load m libm.so.6\n")
    assert reply.startswith("error: 'libm.so.6' is a bare name") and "absolute path" in reply


def test_a_descriptor_is_loaded_only_by_lib_load_and_only_if_trusted(spawn, public_tmp):
    server = spawn([BIN / "simple_server", "--interval-ms", "1000"])
    good = os.open(LIB / "libadd_func_patch1.so", os.O_RDONLY)
    try:
        reply = request(server.socket, "var list", [good])
        assert reply == "error: 'var list' takes no file descriptor (only 'lib load' and 'patch apply' do); send " \
                        "the request without one\n"
        reply = request(server.socket, "lib load p1 /shown/name.so", [good, good])
        assert reply.startswith("error: more than one file descriptor came with the request")
        reply = request(server.socket, "json lib load p1 /shown/name.so", [good])
        assert json.loads(reply)["ok"] and json.loads(reply)["path"] == "/shown/name.so"
    finally:
        os.close(good)
    evil_dir = owned_dir(public_tmp, "evil", ATTACKER)
    marker = evil_dir / "constructor-ran"
    evil = build_library(evil_dir / "libevil.so", marker)
    u = user(ATTACKER)
    os.chown(evil, u.pw_uid, u.pw_gid)
    fd = os.open(evil, os.O_RDONLY)
    try:
        reply = request(server.socket, "lib load e /looks/fine.so", [fd])
        assert reply == (f"error: refusing to load /looks/fine.so: file /looks/fine.so (sent by the "
                         f"client) is owned by uid {u.pw_uid}; it must be owned by root or uid 0\n")
    finally:
        os.close(fd)
    assert not marker.exists()


# ---- a planted name cannot silence the agent -----------------------------------------------------

def plant(kind, path):
    """Has the attacker create `path` as a file, directory, symlink or a socket of its own."""
    code = {
        "file": f"open('{path}', 'w').write('mine')",
        "directory": f"import os; os.mkdir('{path}')",
        "symlink": f"import os; os.symlink('/etc/passwd', '{path}')",
        "stale socket": f"import socket; socket.socket(socket.AF_UNIX).bind('{path}')",
    }
    if kind == "live socket":
        return start_as_user(ATTACKER, [PYTHON, "-c",
                                        "import socket, time\n"
                                        "s = socket.socket(socket.AF_UNIX)\n"
                                        f"s.bind('{path}'); s.listen(8)\n"
                                        "print('listening', flush=True)\ntime.sleep(60)\n"],
                             stdout=subprocess.PIPE, text=True)
    r = as_user(ATTACKER, [PYTHON, "-c", code[kind]])
    assert r.returncode == 0, r.stderr
    return None


def identity(path):
    st = os.lstat(path)
    return (st.st_dev, st.st_ino, stat.S_IFMT(st.st_mode), st.st_uid)


@pytest.mark.parametrize("kind", ["file", "directory", "symlink", "stale socket", "live socket"])
def test_a_planted_socket_name_cannot_keep_the_agent_from_serving(spawn, kind):
    # sh waits for a line, then execs the program: its pid is known before the agent starts.
    p = spawn(["sh", "-c", f"read go; exec {BIN / 'simple_server'} --interval-ms 1000"],
              wait_socket=False, stdin_pipe=True)
    name = f"/tmp/{p.pid}.socket"
    holder = plant(kind, name)
    if holder:
        holder.stdout.readline()
    before = identity(name)
    try:
        p.send("go\n")
        path = fallback_socket(p.pid)
        assert agent_answers(path)
        assert request(path, "var get age") == "10\n"
        assert identity(name) == before, "the agent touched the planted name"
        p.wait_error(re.escape(f"{name} is taken") + ".*" + re.escape(path))
        mode = stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)
        assert mode == 0o700 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert cli("-p", p.pid, "var", "get", "age").stdout == "10\n"
        p.popen.terminate()         # simple_server exits normally on SIGTERM
        p.wait_exit()
        assert not os.path.exists(os.path.dirname(path)), "the private directory is left behind"
        assert identity(name) == before
    finally:
        if holder:
            holder.kill()
            holder.wait()
        if os.path.isdir(name) and not os.path.islink(name):
            os.rmdir(name)
        elif os.path.lexists(name):
            os.unlink(name)


def test_a_name_planted_in_the_window_after_exec_cannot_silence_the_agent(spawn):
    env = preload_env()
    # The preloaded shell has an agent at /tmp/PID.socket; it execs an image without the agent
    # (the window), which waits for a line and then execs a preloaded `sleep`.
    inner = f"read go; exec env LD_PRELOAD={env['LD_PRELOAD']} sleep 60"
    p = spawn(["sh", "-c", f"exec env -u LD_PRELOAD sh -c '{inner}'"],
              env=env, wait_socket=False, stdin_pipe=True)
    name = f"/tmp/{p.pid}.socket"
    def in_the_window():       # the inner shell: no agent, and no preload in its environment
        try:
            inner = (os.readlink(f"/proc/{p.pid}/exe").endswith("sh") and
                     b"LD_PRELOAD=" not in open(f"/proc/{p.pid}/environ", "rb").read())
        except OSError:
            return False
        return inner and not os.path.exists(name)
    wait_for(in_the_window, what="the window after exec")
    plant("file", name)
    try:
        p.send("go\n")
        path = fallback_socket(p.pid)
        assert request(path, "version").startswith("hotpatch ")
        assert open(name).read() == "mine"
    finally:
        os.unlink(name)


# ---- setuid programs ---------------------------------------------------------------------------

def test_a_setuid_program_ignores_a_hostile_environment(public_tmp):
    suid_dir = public_tmp / "suid"
    suid_dir.mkdir()
    program = shutil.copy(BIN / "simple_server", suid_dir / "simple_server")
    os.chmod(program, 0o4755)
    victim = f"/tmp/hp-victim-{os.urandom(4).hex()}.socket"
    s = socket.socket(socket.AF_UNIX)
    s.bind(victim)          # a stale root-owned socket the attacker would like removed
    s.close()
    before = identity(victim)
    tag = os.urandom(4).hex()
    env = {"PATH": "/usr/bin:/bin", "HOTPATCH_SOCKET": victim,
           "HOTPATCH_AUDIT": f"file:/etc/hp-audit-{tag}", "HOTPATCH_ALLOW_UIDS": ATTACKER}
    u = user(ATTACKER)
    proc = subprocess.Popen(["setpriv", f"--reuid={u.pw_uid}", f"--regid={u.pw_gid}",
                             "--clear-groups", program, "--interval-ms", "100"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        path = f"/tmp/{proc.pid}.socket"
        wait_for(lambda: os.path.exists(path), what="the setuid program's socket")
        st = os.stat(path)
        assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600
        assert identity(victim) == before, "the setuid program replaced root's socket"
        assert request(path, "var set age 3") == "age = 3 (was 10)\n"
        assert not os.path.exists(f"/etc/hp-audit-{tag}")
        r = as_user(ATTACKER, ["nc", "-U", path], input=b"var get age\n")
        assert b"3" not in r.stdout     # HOTPATCH_ALLOW_UIDS was ignored too
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        os.unlink(victim)
    assert "ignoring every HOTPATCH_* variable" in err


# ---- log and audit files -------------------------------------------------------------------------

def test_log_and_audit_files_never_follow_links_nor_append_to_other_users_files(spawn,
                                                                               public_tmp):
    tag = os.urandom(4).hex()
    victim = Path(f"/etc/hp-victim-{tag}")
    victim.write_text("root's\n")
    victim.chmod(0o644)
    log_link = f"/tmp/hp-log-{tag}"                    # the attacker's link to root's file
    as_user(ATTACKER, ["ln", "-s", victim, log_link])
    foreign_audit = f"/tmp/hp-audit-{tag}"             # a file the attacker created
    as_user(ATTACKER, [PYTHON, "-c", f"open('{foreign_audit}', 'w')"])
    dir_link = f"/tmp/hp-dir-{tag}"                    # a link in a directory component
    as_user(ATTACKER, ["ln", "-s", "/etc", dir_link])
    try:
        cases = [
            {"HOTPATCH_LOG": log_link},
            {"HOTPATCH_AUDIT": f"file:{foreign_audit}"},
            {"HOTPATCH_AUDIT": f"file:{dir_link}/hp-audit-{tag}"},
            {"HOTPATCH_AUDIT": f"file:{log_link}"},
        ]
        for env in cases:
            # A program without an agent of its own: the preload agent's log and audit apply.
            p = spawn(["sleep", "60"], env=preload_env(**env))
            assert nc(p.socket, "lib load x /nonexistent/x.so\n").startswith("error:")  # audited
            p.stop()
            assert victim.read_text() == "root's\n", env
            assert os.path.getsize(foreign_audit) == 0, env
            assert not os.path.exists(f"/etc/hp-audit-{tag}"), env
            assert any("refused" in l or "cannot write the audit file" in l
                       for l in p.err_lines), (env, p.err_lines)
    finally:
        for f in (log_link, foreign_audit, dir_link, victim, f"/etc/hp-audit-{tag}"):
            if os.path.lexists(f):
                os.unlink(f)


# ---- descriptors ---------------------------------------------------------------------------------

HOG = r"""
import socket, sys, time
held, refused = [], 0
for i in range(300):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    try:
        s.connect(sys.argv[1])
    except OSError:
        break
    s.sendall(b"session\n")
    reply = s.recv(4096)
    if b'"ok":true' in reply:
        held.append(s)
    else:
        refused += 1
        s.close()
print(len(held), refused, flush=True)
time.sleep(30)
"""


def test_one_user_cannot_exhaust_the_hosts_descriptors(spawn):
    p = spawn(["prlimit", "--nofile=256:256", "--", BIN / "hostile_host"],
              env={"HOTPATCH_ALLOW_UIDS": ATTACKER}, stdin_pipe=True)
    p.wait_output("^ready$")
    os.chmod(p.socket, 0o666)         # the kernel lets anyone knock; the agent still decides
    hog = start_as_user(ATTACKER, [PYTHON, "-c", HOG, p.socket], stdout=subprocess.PIPE,
                        text=True)
    try:
        held, refused = map(int, hog.stdout.readline().split())
        budget = 256 // 8
        assert 0 < held <= budget // 2, (held, refused)
        assert refused >= 300 - budget
        p.send("open 210\n")          # 256 - stdio - the agent's whole budget, with room to spare
        p.wait_output("^opened 210$")
        assert cli("-p", p.pid, "var", "get", "age").stdout == "10\n"   # root still gets in
    finally:
        hog.kill()
        hog.wait()


# ---- the audit trail -----------------------------------------------------------------------------

def test_the_audit_trail_cannot_be_forged_or_cut(spawn, public_tmp):
    log = public_tmp / "audit.jsonl"
    p = spawn([BIN / "simple_server", "--interval-ms", "1000"],
              env={"HOTPATCH_AUDIT": f"file:{log}", "HOTPATCH_ALLOW_UIDS": ATTACKER})
    forged = 'x" result=ok uid=0 pid=1 phase=end ' + "A" * 900
    line = f"var set string user_name '{forged}'"
    nc(p.socket, line + "\n")
    os.chmod(p.socket, 0o666)
    as_user(BYSTANDER, ["nc", "-U", p.socket], input=b"lib load x /tmp/x.so\n")
    records = [json.loads(l) for l in log.read_text().splitlines()]
    begin, end, refused = records
    assert begin["phase"] == "begin" and begin["request"] == line and begin["uid"] == 0
    assert end["phase"] == "end" and end["request"] == line and len(line) > 900
    assert set(end) == {"time", "process", "phase", "uid", "pid", "request", "result", "error"} or \
        set(end) == {"time", "process", "phase", "uid", "pid", "request", "result"}
    assert refused["phase"] == "refused" and refused["uid"] == user(BYSTANDER).pw_uid
    assert refused["request"] == "lib load x /tmp/x.so"
    assert refused["error"].startswith("permission denied")


def test_a_command_that_takes_the_host_down_still_leaves_its_record(spawn, public_tmp):
    log = public_tmp / "audit.jsonl"
    p = spawn([BIN / "hostile_host"], env={"HOTPATCH_AUDIT": f"file:{log}"}, stdin_pipe=True)
    nc(p.socket, "var set crash 1\n")       # its change callback aborts the process
    assert p.wait_exit() == -6
    records = [json.loads(l) for l in log.read_text().splitlines()]
    assert [(r["phase"], r["request"]) for r in records] == [("begin", "var set crash 1")]


# ---- who may connect -----------------------------------------------------------------------------

def test_refusals_come_in_the_form_the_request_asks_for(spawn):
    p = spawn([BIN / "simple_server", "--interval-ms", "1000"])
    os.chmod(p.socket, 0o666)
    uid = user(BYSTANDER).pw_uid
    expected = f"permission denied: uid {uid} may not control this process (allowed: root, uid 0)"
    for line, form in (("var list", "plain"), ("json var list", "json"), ("session", "json")):
        r = as_user(BYSTANDER, ["nc", "-U", p.socket], input=(line + "\n").encode())
        if form == "json":
            reply = json.loads(r.stdout)
            assert reply["ok"] is False and reply["error"] == expected
        else:
            assert r.stdout.decode() == f"error: {expected}\n"
    # A client that sends nothing still gets the one plain line, at once.
    t0 = time.time()
    r = as_user(BYSTANDER, [PYTHON, "-c",
                            "import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
                            f"s.connect('{p.socket}')\nsys.stdout.write(s.recv(4096).decode())"])
    assert r.stdout.decode() == f"error: {expected}\n" and time.time() - t0 < 5


def test_allow_uids_and_allow_group_let_exactly_those_users_connect(spawn):
    t1, t2 = user(ATTACKER), user(BYSTANDER)
    p = spawn([BIN / "simple_server", "--interval-ms", "1000"],
              env={"HOTPATCH_ALLOW_UIDS": ATTACKER})
    assert stat.S_IMODE(os.stat(p.socket).st_mode) & 0o007 == 0
    r = as_user(ATTACKER, ["nc", "-U", p.socket], input=b"var get age\n")
    assert r.stdout == b"10\n", r.stderr
    r = as_user(BYSTANDER, ["nc", "-U", p.socket], input=b"var get age\n")
    assert b"10" not in r.stdout and b"Permission denied" in r.stderr

    group = grp.getgrgid(t2.pw_gid).gr_name
    q = spawn([BIN / "simple_server", "--interval-ms", "1000"],
              env={"HOTPATCH_ALLOW_GROUP": group})
    st = os.stat(q.socket)
    assert st.st_gid == t2.pw_gid and stat.S_IMODE(st.st_mode) == 0o660
    r = as_user(BYSTANDER, ["nc", "-U", q.socket], input=b"var get age\n")
    assert r.stdout == b"10\n", r.stderr
    r = as_user(ATTACKER, ["nc", "-U", q.socket], input=b"var get age\n")
    assert b"10" not in r.stdout
    assert t1.pw_uid != t2.pw_uid


# ---- terminal safety of the agent's own lines ----------------------------------------------------

def test_a_programs_string_cannot_forge_lines_or_drive_a_terminal(spawn):
    p = spawn([BIN / "hostile_host"], stdin_pipe=True)
    listing = nc(p.socket, "var list\n")
    assert "\x1b" not in listing and "\x07" not in listing and "\u009b" not in listing
    assert len(listing.splitlines()) == 4                   # header, age, banner, crash
    reply = nc(p.socket, "var set banner plain\n")
    assert reply.count("\n") == 1 and "\x1b" not in reply and "\u009b" not in reply
    assert reply == ("banner = plain (was \\e]0;owned\\x07\\nerror: forged line \\u009b31mred)\n")
