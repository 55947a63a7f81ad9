"""The client messages of the security pass (spec-security-clients.md, section 3), for tests.

Both CLIs must print exactly these (the tests check the Python CLI and the C CLI against them).
"""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("HOTPATCH_BUILD_DIR", REPO / "build")).resolve()
C_CLI = BUILD / "bin" / "hotpatch"
#: The preload library the "no agent" hint names when build/bin is first on PATH.
PRELOAD = BUILD / "lib" / "libhotpatch_preload.so"


def _lines(*lines):
    return "".join(f"hotpatch: {line}\n" for line in lines).encode()


def startup_hint():
    return ("no agent is listening there. Start the program linked with libhotpatch "
            f"(calling hotpatch_start()),\n          or run it as: LD_PRELOAD={PRELOAD} "
            "PROGRAM ...")


def no_process(pid):                                                  # E1
    return _lines(f"no process {pid} is running")


def cannot_verify(pid, reason="Permission denied"):                   # E2
    return _lines(f"cannot verify the agent of process {pid}: cannot read /proc/{pid}/fd "
                  f"({reason}); run as root or as the user that owns the process")


def no_agent(pid):                                                    # E3
    return _lines(f"process {pid} has no agent: none of its listening sockets is "
                  f"/tmp/{pid}.socket or /tmp/hotpatch-{pid}.*/socket", startup_hint())


def other_process(path, served_by, pid):                              # E4
    return _lines(f"refusing to talk to {path}: it is served by process {served_by}, not by "
                  f"process {pid} (a stale or foreign socket)")


def wrong_uid_for_process(path, uid, pid, process_uid):               # E5
    return _lines(f"refusing to talk to {path}: its server runs as uid {uid}, but process "
                  f"{pid} runs as uid {process_uid} (only root or uid {process_uid} may "
                  "serve it)")


def untrusted_uid(path, uid, caller):                                 # E6
    return _lines(f"refusing to talk to {path}: its server runs as uid {uid}, not as root or "
                  f"as you (uid {caller}); pass --trust-peer {uid} to allow it")


def pid_reused(pid):                                                  # E7
    return _lines(f"process {pid} changed while connecting (it exited and its pid was "
                  "reused); try again")


def not_held(path, pid):                                              # E8
    return _lines(f"refusing to talk to {path}: process {pid} does not hold that listening "
                  "socket (a socket handed over by another process)")


def cannot_open(path, reason="No such file or directory"):           # lib load
    return _lines(f"cannot open {path}: {reason}")


def bad_trust_peer(value):                                           # --trust-peer
    return _lines(f"invalid --trust-peer '{value}': expected a uid or a user name")
