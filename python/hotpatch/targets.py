"""Which processes a command goes to — ``-p PID[,PID...]`` (repeatable), ``--pgrep PATTERN``
and ``--all`` — by the C client's rules (cli/targets.c), so both clients pick the same
processes in the same order.

The order is part of the output (results come back in it): the pids given, in the order
given, then the processes ``--pgrep`` matches and ``--all``'s agents, each in increasing pid
order, without repeats. ``--pgrep`` matches like ``pgrep -f``: PATTERN is a POSIX extended
regular expression searched in the command line (arguments joined by spaces). It is matched
by the C library's own ``regcomp``/``regexec`` (through ctypes, in the C locale), so the two
clients cannot disagree on what a pattern means. It selects processes the caller may look
into (``/proc/PID/fd`` readable), never the client itself or the processes it runs under
(the shell that started it has the pattern in its command line too).
"""

from __future__ import annotations

import ctypes
import os
from typing import Iterable, Optional

from . import errors, verify

__all__ = ["TARGETS_LIMIT", "all_pids", "matching_processes", "parse_pid_argument",
           "select_targets"]

TARGETS_LIMIT = 65536
_CMDLINE_LIMIT = 4096 - 1
_ANCESTORS_LIMIT = 4096
_INT_MAX = 2**31 - 1
#: glibc's REG_EXTENDED and REG_NOSUB, and LC_ALL_MASK.
_REG_EXTENDED, _REG_NOSUB = 1, 8
_LC_ALL_MASK = 0x1FBF
#: Room for a regex_t (64 bytes on glibc's 64-bit targets) with a wide margin.
_REGEX_T_SIZE = 256


def _strtol_whole(text: bytes, low: int, high: int) -> Optional[int]:
    """strtol over the whole text within [low, high], as the C client reads a pid."""
    i = 0
    while i < len(text) and text[i] in b" \t\n\v\f\r":
        i += 1
    j = i + (1 if i < len(text) and text[i] in b"+-" else 0)
    digits = text[j:]
    if not digits or not digits.isdigit():
        return None
    value = int(text[i:])
    return value if low <= value <= high else None


def parse_pid_argument(text: bytes, pids: list[int]) -> None:
    """Adds the pids of one ``-p`` argument (``1234`` or ``12,34``) to ``pids`` (no
    repeats). Raises :class:`UsageError` with the C client's message for a bad one."""
    for element in text.split(b","):
        pid = _strtol_whole(element, 1, _INT_MAX)
        if pid is None:
            raise errors.UsageError(f"invalid pid '{os.fsdecode(element)}': expected a "
                                    "process id such as 1234")
        if pid not in pids:
            if len(pids) >= TARGETS_LIMIT:
                raise errors.UsageError(f"too many processes: at most {TARGETS_LIMIT}")
            pids.append(pid)


def all_pids() -> list[int]:
    """Every pid in /proc, in increasing order."""
    pids = []
    for name in os.listdir("/proc"):
        if name[:1].isdigit() and name.isdigit() and name.isascii() and int(name) > 0:
            pids.append(int(name))
    return sorted(pids)


def command_line(pid: int) -> bytes:
    """The command line, arguments joined by spaces, as the C client reads it (at most 4095
    bytes); empty for a kernel thread or a zombie. Raises OSError."""
    data = verify._read_bounded(f"/proc/{pid}/cmdline", _CMDLINE_LIMIT).rstrip(b"\0")
    return data.replace(b"\0", b" ")


def _ancestors() -> set[int]:
    """This client and the processes it runs under."""
    skip, pid = set(), os.getpid()
    for _ in range(_ANCESTORS_LIMIT):
        if pid <= 0:
            break
        skip.add(pid)
        try:
            _, _, ppid = verify.status_ids(pid)
        except OSError:
            break
        if ppid == pid:
            break
        pid = ppid
    return skip


class _Regex:
    """A POSIX extended regular expression compiled by the C library, in the C locale."""

    def __init__(self, pattern: bytes) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.newlocale.restype = ctypes.c_void_p
        self.libc.newlocale.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]
        self.libc.uselocale.restype = ctypes.c_void_p
        self.libc.uselocale.argtypes = [ctypes.c_void_p]
        self.libc.freelocale.argtypes = [ctypes.c_void_p]
        self.libc.regerror.restype = ctypes.c_size_t
        self.buffer = ctypes.create_string_buffer(_REGEX_T_SIZE)
        self.compiled = False
        with self._c_locale():
            rc = self.libc.regcomp(self.buffer, ctypes.c_char_p(pattern),
                                   _REG_EXTENDED | _REG_NOSUB)
            if rc != 0:
                why = ctypes.create_string_buffer(256)
                self.libc.regerror(rc, self.buffer, why, ctypes.c_size_t(256))
                self.libc.regfree(self.buffer)
                raise errors.UsageError(
                    f"invalid --pgrep pattern '{os.fsdecode(pattern)}': "
                    f"{os.fsdecode(why.value)}")
        self.compiled = True

    def _c_locale(self) -> "_Locale":
        return _Locale(self.libc)

    def search(self, text: bytes) -> bool:
        with self._c_locale():
            return self.libc.regexec(self.buffer, ctypes.c_char_p(text), ctypes.c_size_t(0),
                                     None, 0) == 0

    def close(self) -> None:
        if self.compiled:
            self.libc.regfree(self.buffer)
            self.compiled = False


class _Locale:
    """The C locale for this thread while inside (uselocale), as the C client runs."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self.libc, self.locale, self.previous = libc, None, None

    def __enter__(self) -> "_Locale":
        self.locale = self.libc.newlocale(_LC_ALL_MASK, b"C", None)
        if self.locale:
            self.previous = self.libc.uselocale(self.locale)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.locale:
            self.libc.uselocale(self.previous)
            self.libc.freelocale(self.locale)


def matching_processes(pattern: "str | bytes") -> list[int]:
    """The processes ``--pgrep PATTERN`` selects, in increasing pid order. Raises
    :class:`UsageError` for a pattern the C library refuses."""
    raw = os.fsencode(pattern)
    if b"\0" in raw:
        raise errors.UsageError("invalid --pgrep pattern: it contains a NUL byte")
    regex = _Regex(raw)
    try:
        skip = _ancestors()
        found = []
        for pid in all_pids():
            if pid in skip:
                continue
            try:
                line = command_line(pid)
            except OSError:
                continue
            if not line or not regex.search(line):
                continue
            if not os.access(f"/proc/{pid}/fd", os.R_OK | os.X_OK):
                continue
            if len(found) >= TARGETS_LIMIT:
                raise errors.UsageError(f"too many processes: at most {TARGETS_LIMIT}")
            found.append(pid)
        return found
    finally:
        regex.close()


def select_targets(pids: Iterable[int] = (), pgrep: "Optional[str | bytes]" = None,
                   all: bool = False) -> list[int]:
    """The processes a command goes to, in the clients' order (see above); may be empty."""
    from . import discovery
    chosen: list[int] = []
    for group in (list(pids), matching_processes(pgrep) if pgrep is not None else [],
                  [a.process.pid for a in discovery.find_agents()] if all else []):
        for pid in group:
            if pid not in chosen:
                if len(chosen) >= TARGETS_LIMIT:
                    raise errors.UsageError(f"too many processes: at most {TARGETS_LIMIT}")
                chosen.append(pid)
    return chosen
