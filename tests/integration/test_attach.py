"""`hotpatch -p PID attach` and `detach`, on real processes started with nothing.

Targets: tests/programs/attach_target.c (counts EINTRs, early returns, errno changes, signals
and heap corruption, and reports them on stdin's `report`), /bin/sleep, the static
static_sleeper, the C++ prebuilt_server (gflags + glog) and Debian's db_bench. Every refusal is
checked to leave the process as it was: the same memory map, threads, descriptors and, per
thread, the same signal mask and dispositions.
"""
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, LIB, REPO, agent_answers, cli

TARGET = BIN / "attach_target"
STATIC = BIN / "static_sleeper"
PREBUILT = BIN / "prebuilt_server"
PATCH1 = LIB / "libadd_func_patch1.so"
DB_BENCH = shutil.which("db_bench")
SLEEP = shutil.which("sleep")
T1, T2 = "hotpatch-t1", "hotpatch-t2"
PYTHON = "/usr/bin/python3"


def have_user(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def attach(pid, *extra):
    return cli("-p", pid, *extra, "attach", timeout=30)


def attach_ok(pid):
    r = attach(pid, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def detach_ok(pid):
    r = cli("-p", pid, "detach")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("detached:")


def agent_copies(pid):
    """How many times the preload agent's code is mapped (1 after any number of attaches)."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sum(1 for l in lines if "libhotpatch_preload" in l and " r-xp " in l)


def threads(pid):
    return sorted(os.listdir(f"/proc/{pid}/task"))


def settled_threads(pid, expected):
    """The thread count once the loader thread (which ends after attach returns) has gone."""
    deadline = time.time() + 5
    while len(threads(pid)) != expected and time.time() < deadline:
        time.sleep(0.01)
    return len(threads(pid))


def snapshot(pid):
    """What a refused attach must leave exactly as it was."""
    per_thread = {}
    for tid in threads(pid):
        status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        per_thread[tid] = re.findall(r"^(Sig(?:Blk|Ign|Cgt)):\s*(\S+)$", status, re.M)
    fds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return {"maps": Path(f"/proc/{pid}/maps").read_text(), "threads": per_thread, "fds": fds}


LIBM = "/lib/x86_64-linux-gnu/libm.so.6"


def whole_command_set(pid, gflags=False, glog=False, add_func=False, engine_stops=True):
    """var, lib, func, gflags and glog on an attached agent, each as the target allows.
    engine_stops=False leaves out what stops the threads with the engine (lib unload's check,
    func upgrade): under a steady stream of signals that stop shows an EINTR of its own."""
    assert cli("-p", pid, "var", "list").returncode == 0
    assert cli("-p", pid, "lib", "load", "m", LIBM).returncode == 0
    assert "m" in cli("-p", pid, "lib", "list").stdout
    unload = ("lib", "unload", "m") if engine_stops else ("lib", "unload", "--retire", "m")
    assert cli("-p", pid, *unload).returncode == 0
    r = cli("-p", pid, "gflags", "list")
    assert (r.returncode == 0 and r.stdout) if gflags else \
        r.stderr.startswith("error: this process has no gflags")
    r = cli("-p", pid, "glog", "list")
    assert (r.returncode == 0 and "minloglevel" in r.stdout) if glog else r.returncode == 1
    if add_func:
        assert cli("-p", pid, "lib", "load", "p1", PATCH1).returncode == 0
        assert cli("-p", pid, "func", "upgrade", "p1", "add_func").returncode == 0
        assert cli("-p", pid, "func", "rollback", "add_func").returncode == 0
        assert cli("-p", pid, "lib", "unload", "--retire", "p1").returncode == 0  # refscan may refuse a plain unload


def report(proc):
    start = len(proc.lines)
    proc.send("report\n")
    i = proc.wait_output(r"^report ", start=start)
    return dict(kv.split("=") for kv in proc.lines[i].split()[1:])


def assert_untouched(counts):
    assert counts["eintr"] == "0" and counts["early"] == "0", counts   # "at" names the call
    assert counts["errno"] == "0" and counts["corrupt"] == "0", counts
    assert counts["sent"] == counts["received"], counts


@pytest.fixture
def target(spawn):
    def start(*args):
        p = spawn([TARGET, *args], wait_socket=False, stdin_pipe=True)
        p.wait_output(r"^ready$")
        return p
    return start


# ---- the core path ------------------------------------------------------------------------------

def test_a_sleeping_program_gets_an_agent_every_command_works_and_detach_reattach(spawn):
    p = spawn([SLEEP, "600"], wait_socket=False)
    time.sleep(0.1)
    r = attach(p.pid)
    assert r.returncode == 0, r.stderr
    assert re.match(rf"attached to process {p.pid}: loaded the agent \S+libhotpatch_preload.so; "
                    rf"thread {p.pid} \(in clock_nanosleep\)", r.stdout)
    assert re.search(r"target paused at most [\d.]+ ms; attach took [\d.]+ ms", r.stdout)
    assert agent_answers(f"/tmp/{p.pid}.socket")
    status = json.loads(cli("-p", p.pid, "--json", "status").stdout)
    assert status["started"] == "attached"
    whole_command_set(p.pid)
    # One new thread (the agent's) and the socket: nothing else of the injector stays.
    assert settled_threads(p.pid, 2) == 2
    detach_ok(p.pid)
    assert not os.path.exists(f"/tmp/{p.pid}.socket")
    assert settled_threads(p.pid, 1) == 1
    again = attach_ok(p.pid)
    assert again["restarted"] is True and again["pid"] == p.pid
    assert agent_copies(p.pid) == 1
    assert cli("-p", p.pid, "version").returncode == 0
    assert p.alive()


def test_attach_twice_says_already_serving(spawn):
    p = spawn([SLEEP, "600"], wait_socket=False)
    time.sleep(0.1)
    attach_ok(p.pid)
    r = attach(p.pid)
    assert r.returncode == 1
    assert f"process {p.pid} already has an agent serving on /tmp/{p.pid}.socket" in r.stderr
    r = attach(p.pid, "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["ok"] is False


def test_detach_works_in_a_preloaded_process_and_attach_restarts_it(spawn):
    from conftest import preload_env
    p = spawn([BIN / "simple_server", "--interval-ms", "50"], env=preload_env())
    detach_ok(p.pid)
    assert not os.path.exists(p.socket)
    r = attach_ok(p.pid)
    assert r["restarted"] is True
    assert cli("-p", p.pid, "var", "get", "age").stdout == "10\n"
    assert agent_copies(p.pid) == 1


def test_a_program_with_its_own_exported_agent_gets_that_one_restarted(spawn):
    p = spawn([BIN / "simple_server_static_exported", "--interval-ms", "50"])
    detach_ok(p.pid)
    r = attach_ok(p.pid)
    assert r["restarted"] is True and r["library"].endswith("simple_server_static_exported")
    assert json.loads(cli("-p", p.pid, "--json", "status").stdout)["started"] == "linked"
    assert cli("-p", p.pid, "var", "get", "age").stdout == "10\n"
    assert agent_copies(p.pid) == 0              # no second agent beside the program's own


# ---- targets that must see nothing --------------------------------------------------------------

def test_blocked_threads_see_no_eintr_no_early_return_no_errno_change(target):
    p = target("--blockers", "--threads", "4")
    for _ in range(3):
        attach_ok(p.pid)
        detach_ok(p.pid)
    attach_ok(p.pid)
    whole_command_set(p.pid, add_func=True)
    time.sleep(1.2)                  # every sleeper has finished a whole round since
    assert_untouched(report(p))


def test_sixty_four_threads(target):
    p = target("--threads", "64")
    assert len(threads(p.pid)) == 65
    attach_ok(p.pid)
    assert settled_threads(p.pid, 66) == 66
    whole_command_set(p.pid, add_func=True)
    assert_untouched(report(p))


def test_a_steady_stream_of_signals_loses_none_and_adds_none(target):
    p = target("--signals", "--blockers")
    for _ in range(5):
        attach_ok(p.pid)
        detach_ok(p.pid)
    attach_ok(p.pid)
    # Nothing that stops the threads with the engine here: with signals always queued for the
    # process, the engine's own stop leaves an EINTR that is the engine's, not attach's.
    whole_command_set(p.pid, engine_stops=False)
    time.sleep(0.5)
    counts = report(p)
    assert int(counts["sent"]) > 100
    assert_untouched(counts)


def test_threads_in_malloc_in_a_tight_loop(target):
    p = target("--malloc", "4")
    for _ in range(3):
        attach_ok(p.pid)
        detach_ok(p.pid)
    attach_ok(p.pid)
    whole_command_set(p.pid, add_func=True)
    assert_untouched(report(p))


def test_a_static_function_is_upgraded_after_attach(target):
    p = target("--blockers")
    attach_ok(p.pid)
    assert cli("-p", p.pid, "lib", "load", "p1", PATCH1).returncode == 0
    r = cli("-p", p.pid, "func", "upgrade", "p1", "add_func")
    assert r.returncode == 0, r.stderr
    counts = report(p)
    assert counts["add"] == "102"
    assert cli("-p", p.pid, "func", "rollback", "add_func").returncode == 0
    assert report(p)["add"] == "3"
    assert_untouched(report(p))


def test_a_thread_blocked_inside_a_signal_handler_is_never_used(target):
    p = target("--in-handler")
    handler_thread = [t for t in threads(p.pid) if int(t) != p.pid]
    assert len(handler_thread) == 1
    status = Path(f"/proc/{p.pid}/task/{handler_thread[0]}/syscall").read_text().split()
    assert status[0] == "0"          # read: it would qualify but for the signal frame
    r = attach_ok(p.pid)
    assert r["thread"] == p.pid and r["thread_was"] == "read"
    assert_untouched(report(p))


STALE_RESTORER = r"""
#include <signal.h>
#include <string.h>
#include <unistd.h>
static void on_usr1(int sig) { (void)sig; }
/* sigaction leaves __restore_rt's address in a structure on this frame's stack ... */
__attribute__((noinline)) static void setup(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, 0);
}
/* ... which this frame's uninitialised buffer then covers: a stale word, not a frame. */
__attribute__((noinline)) static void serve(void)
{
    char buf[4096];
    for (;;)
        if (read(0, buf, sizeof buf) <= 0)
            pause();
}
int main(void) { setup(); serve(); }
"""


def test_a_stale_restorer_word_on_the_stack_is_no_signal_frame(spawn, tmp_path):
    source = tmp_path / "stale.c"
    source.write_text(STALE_RESTORER)
    program = tmp_path / "stale"
    subprocess.run(["cc", "-O2", source, "-o", program], check=True)
    p = spawn([program], wait_socket=False, stdin_pipe=True)
    time.sleep(0.2)
    r = cli("-p", p.pid, "attach")
    assert r.returncode == 0, r.stderr
    assert "(in read)" in r.stdout


DATA_ON_STDERR = r"""
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    (void)argc;
    close(0), close(1), close(2);               /* a daemon: no standard streams ... */
    for (int i = 0; i < 3; i++)                 /* ... and its data files take 0, 1 and 2 */
        if (open(argv[1], O_RDWR) < 0)
            return 1;
    pwrite(2, "RECORD1\n", 8, 0);
    for (;;)
        pause();
}
"""


def test_an_attached_agent_never_writes_into_a_data_file_on_descriptor_2(spawn, tmp_path):
    source, program, data = tmp_path / "daemon.c", tmp_path / "daemon", tmp_path / "data"
    source.write_text(DATA_ON_STDERR)
    subprocess.run(["cc", "-O2", source, "-o", program], check=True)
    data.write_bytes(b"")
    p = spawn([program, data], wait_socket=False)
    time.sleep(0.2)
    attach_ok(p.pid)
    lib = LIB / "libadd_func_patch1.so"
    assert cli("-p", p.pid, "lib", "load", "p1", lib).returncode == 0   # audited: logs a line
    assert cli("-p", p.pid, "lib", "unload", "--retire", "p1").returncode == 0
    detach_ok(p.pid)
    assert data.read_bytes() == b"RECORD1\n"


OWN_MALLOC = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
/* An interposed allocator with a lock of its own, held while it works. */
static volatile int lock;
static void *(*next_malloc)(size_t);
void *malloc(size_t n)
{
    if (!next_malloc)
        next_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    while (__atomic_exchange_n(&lock, 1, __ATOMIC_ACQUIRE))
        ;
    for (volatile int i = 0; i < 2000; i++)
        ;
    void *p = next_malloc(n);
    __atomic_store_n(&lock, 0, __ATOMIC_RELEASE);
    return p;
}
"""

ALLOCATING = r"""
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static void *sleeper(void *arg) { (void)arg; for (;;) sleep(1); return NULL; }
int main(int argc, char **argv)
{
    pthread_t t;
    if (argc > 1 && strcmp(argv[1], "--sleeper") == 0)
        pthread_create(&t, NULL, sleeper, NULL);
    for (;;)
        free(malloc(32));
}
"""


def test_a_program_with_its_own_malloc_is_attached_only_through_a_blocked_thread(spawn,
                                                                                 tmp_path):
    """pthread_create allocates with the program's malloc; a thread spinning in the program's
    own code may hold that allocator's lock, so it is never used: the busy program is refused
    (and keeps running), the same with a sleeping thread is attached through that thread."""
    for name, text in (("own_malloc.c", OWN_MALLOC), ("allocating.c", ALLOCATING)):
        (tmp_path / name).write_text(text)
    lib, program = tmp_path / "libown_malloc.so", tmp_path / "allocating"
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", tmp_path / "own_malloc.c", "-o", lib,
                    "-ldl"], check=True)
    subprocess.run(["cc", "-O2", tmp_path / "allocating.c", "-o", program, "-lpthread"],
                   check=True)
    env = {"LD_PRELOAD": str(lib)}
    busy = spawn([program], env=env, wait_socket=False)
    time.sleep(0.2)
    r = cli("-p", busy.pid, "attach")
    assert r.returncode == 1 and "its own malloc" in r.stderr, r.stderr
    assert busy.popen.poll() is None
    sleeping = spawn([program, "--sleeper"], env=env, wait_socket=False)
    time.sleep(0.2)
    r = cli("-p", sleeping.pid, "attach")
    assert r.returncode == 0 and "(in clock_nanosleep)" in r.stdout, r.stderr + r.stdout


def test_a_single_threaded_busy_loop(spawn):
    p = spawn([TARGET, "--busy"], wait_socket=False)
    p.wait_output(r"^ready$")
    r = attach_ok(p.pid)
    assert r["thread_was"] == "program code"
    whole_command_set(p.pid)
    assert cli("-p", p.pid, "lib", "load", "p1", PATCH1).returncode == 0
    assert cli("-p", p.pid, "func", "upgrade", "p1", "add_func").returncode == 0
    i = p.wait_output(r"^add_func\(1, 2\)=102 ")
    assert p.lines[i].endswith("errno=0")


def test_prebuilt_gflags_glog_program_started_with_nothing(spawn):
    p = spawn([PREBUILT, "--interval_ms", "60"], wait_socket=False)
    p.wait_output(r"^tick 2$")
    attach_ok(p.pid)
    r = cli("-p", p.pid, "gflags", "set", "greeting", "good evening")
    assert r.stdout == "greeting = good evening (was hello)\n", r.stderr
    deadline = time.time() + 10
    while not any("good evening tick" in l for l in p.err_lines) and time.time() < deadline:
        time.sleep(0.05)
    assert any("good evening tick" in l for l in p.err_lines)
    whole_command_set(p.pid, gflags=True, glog=True)
    assert cli("-p", p.pid, "glog", "set", "minloglevel", "2").returncode == 0
    assert cli("-p", p.pid, "glog", "get", "minloglevel").stdout == "ERROR (2)\n"


@pytest.mark.skipif(not DB_BENCH, reason="needs Debian's rocksdb-tools (db_bench)")
def test_db_bench_started_plainly(spawn, tmp_path):
    p = spawn([DB_BENCH, "--benchmarks=fillrandom", "--num=100000000",
               "--benchmark_write_rate_limit=20000", f"--db={tmp_path / 'db'}"],
              wait_socket=False)
    time.sleep(0.5)
    attach_ok(p.pid)
    assert cli("-p", p.pid, "gflags", "get", "num").stdout == "100000000\n"
    assert cli("-p", p.pid, "gflags", "set", "readwritepercent", "50").returncode == 0
    whole_command_set(p.pid, gflags=True)
    assert p.alive()


# ---- refusals leave the process exactly as it was -----------------------------------------------

def refused(pid, pattern, status=1):
    before = snapshot(pid)
    r = attach(pid)
    assert r.returncode == status, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]), r.stderr
    time.sleep(0.05)
    assert snapshot(pid) == before
    return lines[0]


def test_a_statically_linked_program_is_refused(spawn):
    p = spawn([STATIC], wait_socket=False)
    p.wait_output(r"^ready$")
    refused(p.pid, r"no glibc dynamic loader .* statically linked")


def test_a_process_under_strace_is_refused_naming_the_tracer(target):
    if not shutil.which("strace"):
        pytest.skip("needs strace")
    p = target()
    tracer = subprocess.Popen(["strace", "-q", "-o", "/dev/null", "-p", str(p.pid)])
    try:
        deadline = time.time() + 10
        while "TracerPid:\t0" in Path(f"/proc/{p.pid}/status").read_text():
            assert time.time() < deadline
            time.sleep(0.02)
        refused(p.pid, rf"already traced by process {tracer.pid} \(strace\)")
    finally:
        tracer.terminate()
        tracer.wait(10)


def test_a_seccomp_filter_that_fails_a_needed_call_is_refused(target):
    p = target("--seccomp-deny-memfd")
    refused(p.pid, r"seccomp filter would fail it with an errno on memfd_create")


def test_a_filter_failing_clone3_with_enosys_is_no_obstacle(target):
    """glibc creates threads with clone when clone3 fails with ENOSYS (older container
    profiles do that), so such a filter does not refuse the attach."""
    p = target("--seccomp-enosys-clone3", "--blockers")
    attach_ok(p.pid)
    assert cli("-p", p.pid, "var", "list").returncode == 0
    assert_untouched(report(p))


def test_no_safe_thread_is_refused_after_about_a_second(spawn):
    p = spawn([TARGET, "--no-safe-point"], wait_socket=False)
    p.wait_output(r"^ready$")
    refused(p.pid, r"no thread came to a safe point")


def test_a_stopped_process_is_refused(target):
    p = target()
    os.kill(p.pid, signal.SIGSTOP)
    deadline = time.time() + 10
    while "State:\tT" not in Path(f"/proc/{p.pid}/status").read_text():
        assert time.time() < deadline
        time.sleep(0.01)
    try:
        refused(p.pid, r"it is stopped \(state T\); let it run again with kill -CONT")
    finally:
        os.kill(p.pid, signal.SIGCONT)
    assert_untouched(report(p))


def test_a_zombie_is_not_attached_to():
    child = subprocess.Popen(["true"])
    deadline = time.time() + 10
    while "State:\tZ" not in Path(f"/proc/{child.pid}/status").read_text():
        assert time.time() < deadline
        time.sleep(0.01)
    try:
        r = attach(child.pid)
        assert r.returncode == 2
        assert f"process {child.pid} has exited (a zombie" in r.stderr
    finally:
        child.wait()


def test_exec_after_attach_leaves_a_stale_socket_that_the_next_attach_replaces(spawn):
    """docs/attach.md, "Limits": an attached agent has no exec wrappers."""
    p = spawn(["sh", "-c", f"read line; exec {SLEEP} 600"], wait_socket=False, stdin_pipe=True)
    time.sleep(0.1)
    attach_ok(p.pid)
    socket_file = f"/tmp/{p.pid}.socket"
    assert agent_answers(socket_file)
    p.send("go\n")
    deadline = time.time() + 10
    while Path(f"/proc/{p.pid}/comm").read_text().strip() != "sleep":
        assert time.time() < deadline
        time.sleep(0.01)
    assert os.path.exists(socket_file) and not agent_answers(socket_file)
    r = cli("-p", p.pid, "status")
    assert r.returncode == 2 and "has no agent" in r.stderr      # never taken for an agent
    assert attach_ok(p.pid)["restarted"] is False                 # a new image: a new agent
    assert agent_answers(socket_file)


def test_a_target_that_exits_during_attach(spawn):
    p = spawn([TARGET, "--no-safe-point"], wait_socket=False)
    p.wait_output(r"^ready$")
    attacher = subprocess.Popen([str(BIN / "hotpatch"), "-p", str(p.pid), "attach"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)                  # it is retrying: no thread is at a safe point
    p.popen.kill()
    out, err = attacher.communicate(timeout=30)
    assert attacher.returncode == 2, err
    assert re.search(rf"process {p.pid} (exited during attach|is not running|has exited)", err)


@pytest.mark.skipif(os.geteuid() != 0 or not have_user(T1), reason="needs root and hotpatch-t1")
def test_another_users_process_is_refused(spawn):
    p = spawn([SLEEP, "600"], wait_socket=False)
    time.sleep(0.1)
    before = snapshot(p.pid)
    r = subprocess.run(["setpriv", "--reuid", T1, "--regid", T1, "--clear-groups",
                        str(BIN / "hotpatch"), "-p", str(p.pid), "attach"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r.stderr
    assert "it is another user's process (uid 0)" in r.stderr and "CAP_SYS_PTRACE" in r.stderr
    assert snapshot(p.pid) == before


@pytest.mark.skipif(os.geteuid() != 0 or not have_user(T1), reason="needs root and hotpatch-t1")
def test_a_user_attaches_to_its_own_process_without_any_capability(spawn):
    """Tracing one's own process needs no privilege where Yama allows it (this kernel has no
    Yama): the attach, the commands and detach all run as that user."""
    as_t1 = ["setpriv", "--reuid", T1, "--regid", T1, "--clear-groups"]
    p = spawn([*as_t1, SLEEP, "600"], wait_socket=False)
    time.sleep(0.1)

    def run(*args):
        return subprocess.run([*as_t1, str(BIN / "hotpatch"), "-p", str(p.pid), *args],
                              capture_output=True, text=True, timeout=30)
    r = run("attach")
    assert r.returncode == 0, r.stderr
    assert f"attached to process {p.pid}" in r.stdout
    r = run("status")
    assert r.returncode == 0 and "attached agent" in r.stdout, r.stderr
    assert run("detach").returncode == 0
    assert not os.path.exists(f"/tmp/{p.pid}.socket")


NOT_DUMPABLE = """
import ctypes, sys, time
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)      # PR_SET_DUMPABLE 0
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(os.geteuid() != 0 or not have_user(T1) or not have_user(T2),
                    reason="needs root, hotpatch-t1 and hotpatch-t2")
def test_without_cap_sys_ptrace_another_group_or_a_non_dumpable_process_is_refused(spawn):
    """The kernel asks more than the uid of a tracer without CAP_SYS_PTRACE: the gids, and a
    dumpable target. Each is refused up front, with its reason, and the target untouched;
    root attaches to the non-dumpable one."""
    as_t1 = ["setpriv", "--reuid", T1, "--regid", T1, "--clear-groups"]
    other_group = spawn(["setpriv", "--reuid", T1, "--regid", T2, "--clear-groups", SLEEP,
                         "600"], wait_socket=False)
    hidden = spawn([*as_t1, PYTHON, "-c", NOT_DUMPABLE], wait_socket=False, stdin_pipe=True)
    hidden.wait_output(r"^ready$")
    for p, reason in ((other_group, "it runs as group"), (hidden, "it is not dumpable")):
        before = snapshot(p.pid)
        r = subprocess.run([*as_t1, str(BIN / "hotpatch"), "-p", str(p.pid), "attach"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1, r.stderr
        assert r.stderr.count("\n") == 1 and reason in r.stderr, r.stderr
        assert "CAP_SYS_PTRACE" in r.stderr
        assert snapshot(p.pid) == before
    r = cli("-p", hidden.pid, "attach")
    assert r.returncode == 0, r.stderr


# ---- containers -----------------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")
def test_a_process_in_a_container_gets_the_agent_from_a_memfd():
    private_tmp = Path(__file__).parent / "private_tmp.sh"
    outer = subprocess.Popen(["unshare", "--pid", "--mount", "--fork", private_tmp, str(REPO),
                              str(BIN.parent), "--", SLEEP, "600"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        pid = None
        while time.time() < deadline and not pid:
            children = Path(f"/proc/{outer.pid}/task/{outer.pid}/children").read_text().split()
            if children and Path(f"/proc/{children[0]}/comm").read_text().strip() == "sleep":
                pid = int(children[0])
            time.sleep(0.02)
        assert pid
        r = attach_ok(pid)
        assert r["memfd"] is True
        assert r["socket"] == f"/proc/{pid}/root/tmp/1.socket"
        assert cli("-p", pid, "version").returncode == 0
        assert any("memfd:hotpatch_preload" in l
                   for l in Path(f"/proc/{pid}/maps").read_text().splitlines())
        # The memfd was closed by the loader: only the mapping holds the copy.
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        assert not any("memfd" in l for l in links), links
        detach_ok(pid)
        assert attach_ok(pid)["restarted"] is True
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
        outer.kill()
        outer.wait(10)


# ---- stress -------------------------------------------------------------------------------------

def test_attach_and_detach_200_times_to_a_busy_16_thread_program(target):
    p = target("--malloc", "8", "--threads", "8")
    for i in range(200):
        r = attach(p.pid, "--json")
        assert r.returncode == 0, (i, r.stderr)
        detach_ok(p.pid)
    assert p.alive()
    assert agent_copies(p.pid) == 1
    assert settled_threads(p.pid, 17) == 17
    assert_untouched(report(p))


# ---- the Python client ----------------------------------------------------------------------------

def test_python_attach_and_detach(spawn):
    sys.path.insert(0, str(REPO / "python"))
    import hotpatch
    p = spawn([SLEEP, "600"], wait_socket=False)
    time.sleep(0.1)
    env = {"HOTPATCH_CLI": str(BIN / "hotpatch")}
    os.environ.update(env)
    r = hotpatch.attach(p.pid)
    assert r["ok"] is True and r["pid"] == p.pid and r["thread_was"] == "clock_nanosleep"
    with pytest.raises(hotpatch.RefusedError, match="already has an agent serving"):
        hotpatch.attach(p.pid)
    with hotpatch.Client(pid=p.pid) as agent:
        assert agent.detach()["socket"] == f"/tmp/{p.pid}.socket"
    assert not os.path.exists(f"/tmp/{p.pid}.socket")
    # python3 -m hotpatch -p PID attach: the same injector, the same output and status.
    run = subprocess.run([sys.executable, "-m", "hotpatch", "-p", str(p.pid), "--json", "attach"],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(REPO / "python")))
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["restarted"] is True
    run = subprocess.run([sys.executable, "-m", "hotpatch", "-p", str(p.pid), "attach"],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(REPO / "python")))
    assert run.returncode == 1 and "already has an agent serving" in run.stderr
    with pytest.raises(hotpatch.UnreachableError):
        hotpatch.attach(2 ** 22 + 1)
