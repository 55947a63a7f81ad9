"""The bash completion (build/completion/hotpatch), driven the way bash drives it.

Each case starts a clean `bash --norc`, sources the script, reads the completion function that
`complete -p hotpatch` names, fills COMP_WORDS/COMP_CWORD/COMP_LINE as readline would for a
line with the cursor at its end, calls the function and reads COMPREPLY (whose candidates the
script makes with compgen). The live names come from real agents: simple_server (variables,
functions, a library loaded here) and prebuilt_server under the preload agent (gflags, glog).
"""
import json
import os
import shlex
import socket
import subprocess
import time

import pytest

from conftest import BIN, BUILD, HOTPATCH, cli, preload_env

COMPLETION = BUILD / "completion" / "hotpatch"

DRIVER = r"""
source "$1" || exit 3
spec=$(complete -p hotpatch) || exit 4
printf 'SPEC %s\n' "$spec"
func=${spec#*-F }
func=${func%% *}
eval "COMP_WORDS=($2)"
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE=$3
COMP_POINT=${#COMP_LINE}
"$func" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf 'WORD %s\n' "${COMPREPLY[@]}"
"""


def complete(line, env=None):
    """The candidates bash would offer for `line` (program first; a trailing space starts a
    new, empty word), with the build's CLI as the program. As readline does (COMP_WORDBREAKS),
    an "=" is a word of its own: --pid=1 is --pid, =, 1."""
    words = []
    for token in line.split(" "):
        parts = token.split("=")
        words.extend(w for n, part in enumerate(parts) for w in ((["="] if n else []) + [part])
                     if w or n == len(parts) - 1)
    words[0] = str(HOTPATCH)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HOTPATCH_")}
    full_env.update(env or {})
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", DRIVER, "drive", str(COMPLETION),
                        " ".join(shlex.quote(w) for w in words), " ".join(words)],
                       capture_output=True, text=True, timeout=30, env=full_env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "SPEC complete -F _hotpatch hotpatch", lines[0]
    return sorted({w[5:] for w in lines[1:] if w.startswith("WORD ") and w[5:]})


@pytest.fixture(scope="module")
def table():
    """The agent's commands, as the build's table tool prints them."""
    rows = subprocess.run([str(BIN / "hotpatch_commands"), "tsv"], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    return [row.split("\t") for row in rows]


def test_options(table):
    usage = cli("--help").stdout
    assert complete("hotpatch --js") == ["--json"]
    assert complete("hotpatch --j") == ["--jobs", "--json"]
    offered = complete("hotpatch -")
    for option in ("-p", "--pid", "--pgrep", "--all", "-s", "--socket", "--json", "--raw",
                   "--timeout", "--jobs", "--trust-peer", "--help", "--version"):
        assert option in usage and option in offered, option


def test_families_and_verbs_come_from_the_table(table):
    families = sorted({row[0] for row in table})
    # Besides the agent's commands, the client's own: ps without a target, attach with one.
    assert complete("hotpatch ") == sorted(families + ["ps"])
    assert complete("hotpatch -p 1 ") == sorted(families + ["attach"])
    assert complete("hotpatch -p1 at") == ["attach"]
    assert complete("hotpatch --pgrep my_server ") == sorted(families + ["attach"])
    assert complete("hotpatch --all --jobs 4 ") == sorted(families + ["attach"])
    assert complete("hotpatch --pgrep my_server var s") == ["set"]
    assert complete("hotpatch --json json ") == sorted(families + ["ps"])
    for family in {row[0] for row in table if row[1] != "-"}:
        verbs = sorted(row[1] for row in table if row[0] == family)
        assert complete(f"hotpatch -p 1 {family} ") == verbs, family
    assert complete("hotpatch -p 1 var s") == ["set"]
    assert complete("hotpatch help ") == families


def test_live_variable_functions_and_library_names(server):
    pid = server.pid
    types = complete("hotpatch var get ")
    assert "int" in types and "string" in types and "age" not in types   # no agent named
    names = {"age", "timeout_ms", "user_name"}
    assert names <= set(complete(f"hotpatch -p {pid} var get "))
    assert set(types) <= set(complete(f"hotpatch -p {pid} var get "))
    assert complete(f"hotpatch -p {pid} var get int ") == sorted(names)
    assert complete(f"hotpatch -p{pid} var set us") == ["user_name", "ushort"]  # a name, a TYPE
    assert complete(f"hotpatch --pid={pid} var set string us") == ["user_name"]
    assert complete(f"hotpatch -p {pid} var set age ") == []                  # VALUE
    assert complete(f"hotpatch -p {pid} func rollback ") == ["add_func"]
    assert complete(f"hotpatch -p {pid} func upgrade ") == []                 # no library yet
    libm = "/lib/x86_64-linux-gnu/libm.so.6"
    assert cli("-p", pid, "lib", "load", "mathlib", libm).returncode == 0
    assert complete(f"hotpatch -p {pid} lib unload ") == ["mathlib"]
    assert complete(f"hotpatch -p {pid} func upgrade ") == ["mathlib"]
    assert complete(f"hotpatch -p {pid} func upgrade mathlib a") == ["add_func"]
    assert complete(f"hotpatch -s {server.socket} var get t") == ["timeout_ms"]
    assert complete(f"hotpatch -p {pid} lib load x /lib/x86_64-linux-gnu/libm.so.") == [libm]
    assert complete(f"hotpatch -p {pid} lib load ") == []                     # a new name


def test_the_pid_itself(server):
    """Processes with an agent socket; other tests' programs may come and go meanwhile."""
    assert str(server.pid) in complete("hotpatch -p ")
    prefix = str(server.pid)[:-1]
    offered = complete(f"hotpatch -p {prefix}")
    assert str(server.pid) in offered and all(p.startswith(prefix) for p in offered)
    assert complete("hotpatch -p 99999999") == []


def test_live_gflags_and_glog_names(spawn):
    prebuilt = spawn([BIN / "prebuilt_server", "--interval_ms", "100"], env=preload_env())
    # The preload agent answers before the program's own flags are registered: wait for main.
    prebuilt.wait_output(r"tick")
    flags = {item["name"] for item in
             json.loads(cli("-j", "-p", prebuilt.pid, "gflags", "list").stdout)["items"]}
    assert not {"interval_ms", "greeting", "minloglevel"} - flags, sorted(flags)
    assert set(complete(f"hotpatch -p {prebuilt.pid} gflags get ")) == flags
    assert complete(f"hotpatch -p {prebuilt.pid} gflags set interv") == ["interval_ms"]
    assert complete(f"hotpatch -p {prebuilt.pid} glog set minl") == ["minloglevel"]


def test_a_silent_agent_costs_only_the_timeout(tmp_path):
    """An agent that accepts and never answers: the names are given up after the timeout and
    the rest of the candidates are still offered."""
    path = str(tmp_path / "silent.socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    try:
        start = time.monotonic()
        offered = complete(f"hotpatch -s {path} var get ", env={"HOTPATCH_COMPLETE_TIMEOUT_MS": "300"})
        elapsed = time.monotonic() - start
    finally:
        listener.close()
    assert "int" in offered and "age" not in offered
    assert 0.3 <= elapsed < 3, elapsed


def test_no_agent_at_all():
    start = time.monotonic()
    assert "int" in complete("hotpatch -p 999999999 var get ")
    assert complete("hotpatch -p 999999999 func rollback ") == []
    assert time.monotonic() - start < 3
