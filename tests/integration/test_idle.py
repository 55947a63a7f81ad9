"""The preload agent's idle cost (issue 11): the x86-64 decoder (capstone) is not mapped into a
program until the first patch needs it.

coreutils' `sleep` runs with the preload agent. The check is exact, not a size: its
/proc/PID/maps names no libcapstone while the agent serves commands that need no decoding,
and does once `func upgrade` has patched a function (libc's llabs, which sleep never calls,
replaced by libm's fabs). bench/idle_rss.sh measures the memory itself.
"""
import shutil
import subprocess
import time

from conftest import cli, preload_env, spawn  # noqa: F401  (spawn is a fixture)

SLEEP = shutil.which("sleep")
LIBM = "/lib/x86_64-linux-gnu/libm.so.6"


def capstone_mapped(pid):
    with open(f"/proc/{pid}/maps") as f:
        return "libcapstone" in f.read()


def private_kib(pid):
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def test_decoder_mapped_only_after_the_first_patch(spawn, tmp_path):
    sock = str(tmp_path / "idle.socket")
    p = spawn([SLEEP, "60"], env=preload_env(HOTPATCH_SOCKET=sock), socket=sock)
    for command in (["version"], ["func", "list"], ["var", "list"],
                    ["lib", "load", "m", LIBM], ["lib", "list"]):
        r = cli("-s", sock, *command)
        assert r.returncode == 0, r.stderr
    time.sleep(0.2)
    assert not capstone_mapped(p.pid)
    idle = private_kib(p.pid)

    r = cli("-s", sock, "func", "upgrade", "m", "libc.so.6:llabs", "fabs")
    assert r.returncode == 0, r.stderr
    assert capstone_mapped(p.pid)
    print(f"sleep with the agent: {idle} KiB private idle, {private_kib(p.pid)} KiB after a patch")
    r = cli("-s", sock, "func", "rollback", "libc.so.6:llabs")
    assert r.returncode == 0, r.stderr
