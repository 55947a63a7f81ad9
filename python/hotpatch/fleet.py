"""Many processes at once: :class:`Fleet` sends one request to every process it selects, in
parallel (bounded), and says how each answered — the API behind the CLI's ``-p PID,PID...``,
``--pgrep`` and ``--all``, with the same selection, order and exit status.

    import hotpatch
    results = hotpatch.Fleet(pgrep="my_server").call("gflags", "set", "v", 1)
    for r in results:
        print(r.pid, "done" if r.ok else (r.error or r.reply.error))
    raise SystemExit(results.exit_code)   # 2 any unreachable or none, else 1 any refused, else 0

Each target is verified as :class:`hotpatch.Client` verifies its agent, on a connection of its
own (one request each: a fleet is driven once, not held open).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

from . import errors, targets
from .client import Reply, Word, exchange_once, format_value, open_library, parse_reply, \
    prepare_request

__all__ = ["Fleet", "FleetResult", "TargetResult", "JOBS_DEFAULT", "JOBS_LIMIT"]

JOBS_DEFAULT = 8
JOBS_LIMIT = 64


@dataclass(frozen=True)
class TargetResult:
    """How one process answered: ``reply`` (its :class:`Reply`) when it answered, else
    ``error`` (the :class:`hotpatch.Error` that kept the request from it)."""

    pid: int
    reply: Optional[Reply] = None
    error: Optional[errors.Error] = None

    @property
    def reached(self) -> bool:
        """The agent answered (done or refused)."""
        return self.reply is not None

    @property
    def ok(self) -> bool:
        """The agent did it."""
        return self.reply is not None and self.reply.ok

    @property
    def exit_code(self) -> int:
        """0 done, 1 refused, 2 not reached (the CLI's status for this one process)."""
        return 0 if self.ok else 1 if self.reached else 2


class FleetResult(list):  # type: ignore[type-arg]
    """The :class:`TargetResult` of every selected process, in selection order."""

    @property
    def exit_code(self) -> int:
        """As the CLI: 2 when any process was not reached or none was selected, else 1 when
        any refused, else 0."""
        if not self:
            return 2
        return max(r.exit_code for r in self)


def combine_status(so_far: int, status: int) -> int:
    """The exit status of many (cli/fleet.c's combine_status())."""
    if status not in (0, 1):
        status = 2
    return max(so_far, status)


class Fleet:
    """The processes selected by ``pids``, ``pgrep`` (an extended regular expression matched
    against each command line, as ``pgrep -f``) and ``all`` (every process with an agent), in
    that order and without repeats; resolved anew at each request, since processes come and
    go. ``jobs`` bounds how many are talked to at once; ``timeout`` (seconds) bounds each wait."""

    def __init__(self, pids: Iterable[int] = (), pgrep: Optional[str] = None, all: bool = False,
                 jobs: int = JOBS_DEFAULT, timeout: Optional[float] = 10.0) -> None:
        self.pids = [int(p) for p in pids]
        if any(p < 1 for p in self.pids):
            raise errors.UsageError("invalid pid: expected process ids such as 1234")
        if not 1 <= jobs <= JOBS_LIMIT:
            raise errors.UsageError(f"invalid jobs {jobs!r}: expected 1 to {JOBS_LIMIT}")
        self.pgrep, self.all, self.jobs, self.timeout = pgrep, all, jobs, timeout

    def targets(self) -> list[int]:
        """The processes selected now."""
        return targets.select_targets(self.pids, self.pgrep, self.all)

    def request(self, line: Word) -> FleetResult:
        """Sends one request line as typed to every selected process."""
        raw = line if isinstance(line, bytes) else os.fsencode(line)
        return self._run(b"json " + raw, None)

    def call(self, *words: Any) -> FleetResult:
        """Like :meth:`request`, from separate words quoted as the CLI quotes them; ``lib
        load NAME PATH`` sends the library itself to each process."""
        texts: list[Union[str, bytes]] = [w if isinstance(w, (str, bytes)) else format_value(w)
                                          for w in words]
        prepared = prepare_request(texts)
        return self._run(prepared.line, prepared.library)

    def _run(self, line: bytes, library: Optional[bytes]) -> FleetResult:
        fd = open_library(library) if library is not None else None
        try:
            pids = self.targets()
            if not pids:
                return FleetResult()
            with ThreadPoolExecutor(max_workers=min(self.jobs, len(pids))) as pool:
                return FleetResult(pool.map(lambda pid: self._one(pid, line, fd), pids))
        finally:
            if fd is not None:
                os.close(fd)

    def _one(self, pid: int, line: bytes, fd: Optional[int]) -> TargetResult:
        try:
            raw = exchange_once(None, line, pid, self.timeout, fd=fd)
            return TargetResult(pid, reply=parse_reply(raw))
        except errors.Error as e:
            return TargetResult(pid, error=e)
