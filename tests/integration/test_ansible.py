"""examples/ansible/set_flag.yml, run for real with Debian's ansible-core against localhost
(connection: local) over three real processes: two agents that take the change and one that
refuses it (read-only). One play run, because ansible's start-up is slow.

CTest runs it in pid and mount namespaces of its own (as test_operators.py), so --pgrep sees
only these processes.
"""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, agent_answers

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "examples" / "ansible" / "set_flag.yml"

pytestmark = [
    pytest.mark.skipif(os.environ.get("HOTPATCH_PRIVATE_NS") != "1",
                       reason="needs the private namespaces CTest runs it in"),
    pytest.mark.skipif(shutil.which("ansible-playbook") is None,
                       reason="ansible-core is not installed (scripts/deps.sh installs it)"),
]


def start(env=None):
    p = subprocess.Popen([str(BIN / "simple_server"), "--interval-ms", "4321"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=dict(os.environ, **(env or {})))
    deadline = time.time() + 10
    while not agent_answers(f"/tmp/{p.pid}.socket"):
        assert p.poll() is None and time.time() < deadline
        time.sleep(0.01)
    return p


def test_the_playbook_sets_the_flag_everywhere_reports_each_pid_and_fails_on_a_refusal(tmp_path):
    procs = [start(), start(), start({"HOTPATCH_READ_ONLY": "1"})]
    try:
        # The pattern goes in a file: on a command line, ansible's own processes would match.
        extra = tmp_path / "vars.yml"
        extra.write_text(f"hotpatch: {BIN}/hotpatch\nhotpatch_match: 'simple_server --interval-ms 4321'\n"
                         "hotpatch_family: var\nhotpatch_name: age\nhotpatch_value: 42\n")
        env = dict(os.environ, ANSIBLE_HOME=str(tmp_path / "ansible"),
                   ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
                   ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"),
                   ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0",
                   ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3")
        r = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local",
                            str(PLAYBOOK), "-e", f"@{extra}"], capture_output=True, text=True,
                           env=env, timeout=300)
        out = r.stdout + r.stderr
        print(out)
        assert r.returncode != 0, out                      # the refusal fails the play
        ok, ok2, refuses = procs
        for p in (ok, ok2):
            assert f"pid {p.pid}: done: age = 42 (was 10)" in out, out
        assert (f"pid {refuses.pid}: refused: the agent is read-only (HOTPATCH_READ_ONLY is set)"
                in out), out
        assert "hotpatch exited 1 (a process refused)" in out, out
        for p, age in ((ok, "42"), (ok2, "42"), (refuses, "10")):
            got = subprocess.run([str(BIN / "hotpatch"), "-p", str(p.pid), "var", "get", "age"],
                                 capture_output=True, text=True, timeout=20).stdout
            assert got == age + "\n"
    finally:
        for p in procs:
            p.kill()
            p.wait()
