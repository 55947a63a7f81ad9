"""exec leaves no socket file behind (src/agent/exec.c), on real processes.

tests/programs/execer links libhotpatch, starts its agent and then runs exec commands read from
its stdin: every exec function of the C library, into coreutils' sleep (so the process lives on
with the same pid and can be inspected), into files that cannot be executed (the exec fails and
the agent must listen again), from a vfork child and from a forked child whose own agent has
started. The prebuilt programs under LD_PRELOAD are bash's `exec` builtin and Python's os.execv.
"""
import os
import shutil
import signal
import stat

import pytest

from conftest import BIN, cli, retry_cli
from test_preload import preload_env, wait_for

EXECER = BIN / "execer"
SLEEP = os.path.realpath(shutil.which("sleep"))
TRUE = os.path.realpath(shutil.which("true"))
BASH = shutil.which("bash")
PYTHON = "/usr/bin/python3"

FUNCTIONS = ["execve", "execv", "execvp", "execvpe", "execl", "execlp", "execle", "fexecve",
             "execveat"]
SEARCH_PATH = {"execvp", "execvpe", "execlp"}          # given a bare name, they search PATH
GIVE_ENVIRONMENT = {"execve", "execvpe", "execle", "fexecve", "execveat"}

sanitized = pytest.mark.skipif(bool(os.environ.get("HOTPATCH_SANITIZE")),
                               reason="sanitizer builds give forked children no agent (agent.c)")


def exe(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def proc_strings(pid, name):
    with open(f"/proc/{pid}/{name}", "rb") as f:
        return [s.decode() for s in f.read().split(b"\0") if s]


@pytest.fixture
def execer(spawn):
    p = spawn([EXECER], env={"EXECER_PASSED": "inherited"}, stdin_pipe=True)
    p.wait_output(r"^ready$")
    return p


def replaced_by_sleep(pid):
    """True once pid runs sleep: /proc shows the new exe a moment before its new arguments."""
    try:
        return exe(pid) == SLEEP and proc_strings(pid, "cmdline")[-1:] == ["30"]
    except OSError:
        return False


def exec_into_sleep(p, how):
    """Has execer replace itself with `sleep 30` using `how`; returns once it has."""
    program = "sleep" if how in SEARCH_PATH else SLEEP
    p.send(f"{how} {program} 30\n")
    wait_for(lambda: replaced_by_sleep(p.pid), timeout=10, what=f"{how} to replace the process")
    return program


@pytest.fixture
def not_executable(tmp_path):
    path = tmp_path / "not-executable"
    path.write_text("#!/bin/sh\n")
    path.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    return path


@pytest.mark.parametrize("how", FUNCTIONS)
def test_exec_removes_the_socket_file(execer, how):
    assert os.path.exists(execer.socket)
    program = exec_into_sleep(execer, how)
    assert execer.alive()
    assert not os.path.exists(execer.socket)
    # The wrapper passed everything through: arguments and the environment.
    assert proc_strings(execer.pid, "cmdline") == [program, "30"]
    given = how if how in GIVE_ENVIRONMENT else "inherited"
    assert f"EXECER_PASSED={given}" in proc_strings(execer.pid, "environ")
    r = cli("-p", execer.pid, "version")
    assert r.returncode != 0 and "no agent" in r.stderr, r.stderr


@pytest.mark.parametrize("how", FUNCTIONS)
def test_failed_exec_keeps_the_agent_and_the_next_exec_still_cleans_up(execer, how,
                                                                         not_executable):
    assert cli("-p", execer.pid, "var", "set", "value", "7").returncode == 0
    execer.send(f"{how} {not_executable} 1\n")
    execer.wait_output(rf"^failed {how} EACCES$")  # errno came through the wrapper untouched
    r = retry_cli("-p", execer.pid, "var", "get", "value", seconds=3)
    assert r.stdout == "7\n", r.stderr
    assert os.path.exists(execer.socket)
    complaints = [l for l in execer.err_lines if l.startswith("hotpatch[") and " audit " not in l]
    assert not complaints
    exec_into_sleep(execer, how)
    assert not os.path.exists(execer.socket)


def test_many_failed_execs_in_a_row(execer, not_executable):
    for i in range(20):
        execer.send(f"execv {not_executable}\n")
    wait_for(lambda: sum(l == "failed execv EACCES" for l in list(execer.lines)) == 20,
             what="20 failed execs")
    r = retry_cli("-p", execer.pid, "var", "get", "value", seconds=3)
    assert r.stdout == "1\n", r.stderr


def test_concurrent_failing_execs_while_clients_connect(execer, not_executable):
    """8 threads x 5000 failing execs at once, clients connecting all along (each may find the
    file hidden): afterwards the agent answers, and the next exec still removes the file."""
    execer.send(f"storm 8 5000 {not_executable}\n")
    while not any(l.startswith("storm ") for l in list(execer.lines)):
        cli("-p", execer.pid, "var", "get", "value")
    assert execer.lines[execer.wait_output(r"^storm \d+$")] == "storm 40000"
    r = retry_cli("-p", execer.pid, "var", "get", "value", seconds=3)
    assert r.stdout == "1\n", r.stderr
    exec_into_sleep(execer, "execv")
    assert not os.path.exists(execer.socket)


def test_exec_from_a_change_callback_on_the_agents_own_thread(execer, not_executable):
    r = cli("-p", execer.pid, "var", "set", "exec_on_set", str(not_executable))
    assert r.returncode == 0, r.stderr
    execer.wait_output(r"^failed callback EACCES$")
    r = retry_cli("-p", execer.pid, "var", "get", "value", seconds=3)
    assert r.stdout == "1\n", r.stderr
    r = cli("-p", execer.pid, "var", "set", "exec_on_set", SLEEP)
    assert r.returncode != 0  # the process was replaced before it could answer
    wait_for(lambda: exe(execer.pid) == SLEEP, what="the callback to exec")
    assert not os.path.exists(execer.socket)
    # The new image has the program's signal mask, not the agent thread's (which blocks all).
    with open(f"/proc/{execer.pid}/status") as f:
        status = dict(l.split(":\t", 1) for l in f.read().splitlines() if ":\t" in l)
    assert int(status["SigBlk"], 16) == 0, status["SigBlk"]


def test_a_vfork_child_exec_leaves_the_parents_socket_alone(execer):
    execer.send(f"vfork {TRUE}\n")
    execer.wait_output(r"^vforked 0$")
    assert os.path.exists(execer.socket)
    assert cli("-p", execer.pid, "var", "get", "value").stdout == "1\n"


@sanitized
def test_a_forked_child_that_execs_after_its_agent_started_removes_its_socket(execer):
    execer.send(f"fork 1500 {SLEEP} 30\n")
    child = int(execer.lines[execer.wait_output(r"^forked \d+$")].split()[1])
    try:
        child_socket = f"/tmp/{child}.socket"
        r = retry_cli("-p", child, "var", "get", "value")
        assert r.stdout == "1\n", r.stderr
        assert os.path.exists(child_socket)
        wait_for(lambda: exe(child) == SLEEP, what="the child to exec")
        assert not os.path.exists(child_socket)
        assert cli("-p", execer.pid, "var", "get", "value").stdout == "1\n"
    finally:
        os.kill(child, signal.SIGKILL)


# ---- prebuilt programs under the preload agent ---------------------------------------------

def test_bash_exec_builtin_under_the_preload_agent(spawn):
    """bash's `exec` with LD_PRELOAD unset: the new image has no agent and no file is left."""
    p = spawn([BASH, "-c", f"read line; unset LD_PRELOAD; exec {SLEEP} 30"], env=preload_env(),
              stdin_pipe=True)
    assert cli("-p", p.pid, "version").returncode == 0
    p.send("go\n")
    wait_for(lambda: exe(p.pid) == SLEEP, what="bash to exec sleep")
    assert not os.path.exists(p.socket)


def test_exec_under_the_preload_agent_hands_the_path_to_the_new_image(spawn):
    """Python's os.execv, LD_PRELOAD kept: the new image's own agent serves the same path."""
    code = f"import os, sys; sys.stdin.readline(); os.execv({SLEEP!r}, ['sleep', '30'])"
    p = spawn([PYTHON, "-c", code], env=preload_env(), stdin_pipe=True)
    p.send("go\n")
    wait_for(lambda: exe(p.pid) == SLEEP, what="python to exec sleep")
    r = retry_cli("-p", p.pid, "lib", "list")
    assert r.returncode == 0, r.stderr
    assert not [l for l in p.err_lines if "stale" in l], p.err_lines  # the file was removed
