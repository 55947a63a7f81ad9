"""Attach: bring the agent into a process that was started without it.

The injector is the C client's (``hotpatch -p PID attach``, cli/attach.c): it holds the
process with ptrace, restores every register, extended state, signal mask and errno, and
rewinds interrupted system calls exactly as the kernel would. Doing that again in ctypes
would be a second injector to get right and keep right, so this module runs the C client
and reads its one JSON line. The client is found, in order, at ``$HOTPATCH_CLI``, next to
this package's install (``<prefix>/bin/hotpatch``, or ``build/bin/hotpatch`` of the source
tree this package lives in), then on ``PATH``.

``detach`` is an ordinary request (``Client.detach()``).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from . import errors


def find_injector() -> str:
    """The path of the C client that performs attach; UsageError when none is found."""
    env = os.environ.get("HOTPATCH_CLI")
    if env:
        return env
    here = Path(__file__).resolve().parent
    for candidate in (Path(sys.prefix) / "bin" / "hotpatch",
                      here.parent.parent / "build" / "bin" / "hotpatch"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("hotpatch")
    if found:
        return found
    raise errors.UsageError("attach needs the C client 'hotpatch' (set HOTPATCH_CLI to its "
                            "path, or put it on PATH)")


def attach(pid: int, timeout: Optional[float] = None) -> dict[str, Any]:
    """Attaches the agent to process ``pid`` and returns what the injector reports: ``pid``,
    ``library``, ``restarted`` (the library was mapped: its agent was started again),
    ``memfd`` (a container's copy), ``thread``, ``thread_was``, ``socket``, ``pause_ms`` (the
    longest any thread was held) and ``attach_ms``.

    Raises RefusedError when attach was refused or the agent already serves (exit status 1),
    UnreachableError when the process is not there or exited meanwhile (2)."""
    argv = [find_injector(), "-p", str(int(pid)), "--json"]
    if timeout is not None:
        argv += ["--timeout", str(max(1, int(timeout * 1000)))]
    argv.append("attach")
    run = subprocess.run(argv, capture_output=True, timeout=60)
    try:
        reply = json.loads(run.stdout.decode("utf-8", "replace").splitlines()[-1])
    except (IndexError, ValueError):
        reply = {}
    message = reply.get("error") or run.stderr.decode("utf-8", "replace").strip().removeprefix(
        "hotpatch: ") or f"attach exited with status {run.returncode}"
    if run.returncode == 0 and reply.get("ok") is True:
        return reply
    if run.returncode == 1:
        raise errors.RefusedError(message, reply, "attach")
    raise errors.UnreachableError(message)
