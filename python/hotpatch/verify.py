"""Finding the agent of a process by the socket it listens on, and checking the server at the
other end before anything is sent.

Why: a socket path is only a name. ``/tmp/PID.socket`` can be planted by anyone before the
process starts, left behind by a dead process whose pid was reused, or handed over to another
process; a request sent there may carry a library to load or a value to set. So the client
trusts the object, not the name (docs/security.md):

* :func:`find_agent` reads which listening sockets process PID holds (``/proc/PID/fd`` and
  ``/proc/PID/net/unix``) and picks the agent's among them: the ``HOTPATCH_SOCKET`` of its
  environment, ``/tmp/PID.socket``, or the agent's private fallback
  ``/tmp/hotpatch-PID.XXXXXX/socket``. A file at a known name that PID does not hold is ignored.
* :func:`check_process_peer` (after ``connect``) requires ``SO_PEERCRED`` to name PID and root
  or PID's uid; :func:`recheck_process` then requires that PID still holds the path's
  listening socket and has the start time read before connecting (its pid was not reused).
* :func:`check_path_peer` (``-s PATH``) requires root or the caller's own uid, unless the
  caller names the server's uid (``--trust-peer``), or is root.

Every failure raises :class:`hotpatch.VerificationError` (or :class:`UnreachableError` when
there is no process or no agent) with the exact text the C client prints; nothing has been sent
by then. The messages are the shared spec's and must stay identical to ``cli/hotpatch.c``.
Reads of ``/proc`` are bounded; nothing here blocks.
"""

from __future__ import annotations

import errno as errno_mod
import os
import pwd
import re
import shutil
import socket
import struct
from dataclasses import dataclass
from typing import Iterator, Optional, Union

from . import errors

__all__ = [
    "Process",
    "check_path_peer",
    "check_process_peer",
    "environment_socket",
    "find_agent",
    "parse_uid",
    "peer_credentials",
    "read_process",
    "recheck_process",
    "startup_hint",
]

#: PATH_MAX on Linux: the longest HOTPATCH_SOCKET taken from a process's environment.
_PATH_MAX = 4096
#: The first 64 KiB of /proc/PID/environ are read, as the C client reads them.
_ENVIRON_LIMIT = (1 << 16) - 1
#: /proc/PID/stat and /proc/PID/status are a few hundred bytes; these bounds are generous.
_STAT_LIMIT = 4096
_STATUS_LIMIT = 1 << 16
#: A line of /proc/PID/net/unix is at most ~200 bytes (sun_path is 108); longer ones are skipped.
_NET_UNIX_LINE = 1024
#: The Flags and St columns of a listening socket (__SO_ACCEPTCON, SS_UNCONNECTED).
_LISTENING_FLAGS = b"00010000"
_LISTENING_STATE = b"01"
#: Num RefCount Protocol Flags Type St Inode Path (the path is the rest of the line).
_NET_UNIX_ENTRY = re.compile(
    rb"[0-9a-fA-F]+: [0-9a-fA-F]{8} [0-9a-fA-F]{8} ([0-9a-fA-F]{8}) [0-9a-fA-F]{4} "
    rb"([0-9a-fA-F]{2}) +([0-9]+) (.+)\n")
_SOCKET_LINK = re.compile(r"socket:\[([0-9]+)\]")
#: struct ucred: pid_t pid, uid_t uid, gid_t gid.
_UCRED = struct.Struct("iII")


@dataclass(frozen=True)
class Process:
    """What is known of process ``pid`` before connecting: its start time (clock ticks after
    boot, field 22 of /proc/PID/stat) tells this process from a later one with the same pid;
    ``uid`` is its real uid, the only uid besides root that may serve its agent."""

    pid: int
    start_time: int
    uid: int


# ---- reading /proc, bounded -----------------------------------------------------------------------

def _read_bounded(path: str, limit: int) -> bytes:
    """At most ``limit`` bytes of a /proc file (several reads: a proc file may come in pieces)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks, size = [], 0
        while size < limit:
            chunk = os.read(fd, limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _no_process(pid: int) -> errors.UnreachableError:
    return errors.UnreachableError(f"no process {pid} is running")


def _cannot_read(pid: int, what: str, err: int) -> errors.VerificationError:
    return errors.VerificationError(
        f"cannot verify the agent of process {pid}: cannot read /proc/{pid}/{what} "
        f"({os.strerror(err)}); run as root or as the user that owns the process")


def start_time(pid: int) -> Optional[int]:
    """Field 22 of /proc/PID/stat, or None when the process is gone. Parsed after the last
    ``)``, since the command name in parentheses may itself hold spaces and parentheses."""
    try:
        stat = _read_bounded(f"/proc/{pid}/stat", _STAT_LIMIT)
    except OSError:
        return None
    fields = stat.rpartition(b")")[2].split()
    try:
        return int(fields[19])  # fields[0] is field 3 (state)
    except (IndexError, ValueError):
        return None


def real_uid(pid: int) -> Optional[int]:
    """The first number of the ``Uid:`` line of /proc/PID/status (the real uid), or None."""
    try:
        status = _read_bounded(f"/proc/{pid}/status", _STATUS_LIMIT)
    except OSError:
        return None
    for line in status.split(b"\n"):
        if line.startswith(b"Uid:"):
            words = line.split()
            return int(words[1]) if len(words) > 1 and words[1].isdigit() else None
    return None


def read_process(pid: int) -> Process:
    """The start time and real uid of ``pid``, read before connecting. Raises
    :class:`UnreachableError` (``no process PID is running``) when there is none."""
    started, uid = start_time(pid), real_uid(pid)
    if started is None or uid is None:
        raise _no_process(pid)
    return Process(pid, started, uid)


def socket_inodes(pid: int) -> frozenset[int]:
    """The inodes of every socket ``pid`` holds (``socket:[INODE]`` links in /proc/PID/fd).
    Reading another user's descriptors needs root or that user: refused otherwise, since
    without them a planted socket cannot be told from the agent's."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError as e:
        if e.errno == errno_mod.ENOENT:
            raise _no_process(pid) from None
        raise _cannot_read(pid, "fd", e.errno or errno_mod.EIO) from None
    inodes = set()
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:
            continue  # closed while we looked
        except OSError as e:
            raise _cannot_read(pid, "fd", e.errno or errno_mod.EIO) from None
        match = _SOCKET_LINK.fullmatch(target)
        if match:
            inodes.add(int(match.group(1)))
    return frozenset(inodes)


def _net_unix_lines(pid: int) -> Iterator[bytes]:
    """The lines of /proc/PID/net/unix (the sockets of PID's network namespace), read one
    bounded line at a time: the table may be large, and only a few entries are kept."""
    try:
        f = open(f"/proc/{pid}/net/unix", "rb")
    except OSError as e:
        if e.errno == errno_mod.ENOENT:
            raise _no_process(pid) from None
        raise _cannot_read(pid, "net/unix", e.errno or errno_mod.EIO) from None
    with f:
        while True:
            line = f.readline(_NET_UNIX_LINE)
            if not line:
                return
            if not line.endswith(b"\n"):  # not a kernel line: skip to the next newline
                while line and not line.endswith(b"\n"):
                    line = f.readline(_NET_UNIX_LINE)
                continue
            yield line


def listening_sockets(pid: int) -> Iterator[tuple[int, bytes]]:
    """(inode, path) of every listening Unix socket with a path in PID's network namespace,
    in the kernel's order."""
    for line in _net_unix_lines(pid):
        entry = _NET_UNIX_ENTRY.fullmatch(line)
        if entry and entry.group(1) == _LISTENING_FLAGS and entry.group(2) == _LISTENING_STATE:
            yield int(entry.group(3)), entry.group(4)


def held_listeners(pid: int, held: frozenset[int]) -> list[tuple[int, bytes]]:
    """The listening sockets with a path that ``pid`` holds. A socket has one line in the
    table, so an inode seen on two lines is dropped: a path with a newline in it can forge a
    line, and a forged line must not lend the agent's inode to another path."""
    seen: dict[int, list[bytes]] = {}
    for inode, path in listening_sockets(pid):
        if inode in held:
            seen.setdefault(inode, []).append(path)
    return [(inode, paths[0]) for inode, paths in seen.items() if len(paths) == 1]


# ---- choosing the agent's socket --------------------------------------------------------------------

def environment_socket(pid: int) -> Optional[str]:
    """The ``HOTPATCH_SOCKET`` in the environment of ``pid`` with ``%p`` replaced by the pid
    (as the agent expands it), or None when the environment is unreadable or has none (or it
    is not shorter than PATH_MAX). Reads at most the first 64 KiB, as the C client does."""
    try:
        env = _read_bounded(f"/proc/{pid}/environ", _ENVIRON_LIMIT)
    except OSError:
        return None
    for entry in env.split(b"\0"):
        if entry.startswith(b"HOTPATCH_SOCKET=") and len(entry) > 16:
            value = entry[16:].replace(b"%p", str(pid).encode())
            return os.fsdecode(value) if len(value) < _PATH_MAX else None
    return None


def _is_fallback(path: bytes, pid: int) -> bool:
    """True for ``/tmp/hotpatch-PID.*/socket`` (one directory level): where the agent serves
    when ``/tmp/PID.socket`` is taken by something the process does not own."""
    prefix, suffix = f"/tmp/hotpatch-{pid}.".encode(), b"/socket"
    if len(path) < len(prefix) + len(suffix):
        return False
    if not path.startswith(prefix) or not path.endswith(suffix):
        return False
    return b"/" not in path[len(prefix):len(path) - len(suffix)]


def _choose(pid: int, listeners: list[tuple[int, bytes]]) -> Optional[str]:
    """The first of the HOTPATCH_SOCKET expansion, /tmp/PID.socket and a fallback path that is
    a listening socket PID holds."""
    paths = [path for _, path in listeners]
    for name in (environment_socket(pid), f"/tmp/{pid}.socket"):
        if name is not None and os.fsencode(name) in paths:
            return name
    for path in paths:
        if _is_fallback(path, pid):
            return os.fsdecode(path)
    return None


def find_agent(pid: int) -> tuple[str, Process]:
    """The socket path of the agent of ``pid``, found by the listening sockets it holds, and
    the :class:`Process` read before looking. Raises :class:`UnreachableError` (no process;
    no agent, with the start-up hint) or :class:`VerificationError` (/proc unreadable)."""
    process = read_process(pid)
    held = socket_inodes(pid)
    path = _choose(pid, held_listeners(pid, held))
    if path is None:
        raise errors.UnreachableError(
            f"process {pid} has no agent: none of its listening sockets is /tmp/{pid}.socket "
            f"or /tmp/hotpatch-{pid}.*/socket", None, [startup_hint()])
    return path, process


# ---- checking the server after connect ----------------------------------------------------------------

def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the server (``SO_PEERCRED``: who called ``listen``), or -1s."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        return _UCRED.unpack(raw)
    except (OSError, struct.error):
        return -1, -1, -1


def check_process_peer(sock: socket.socket, path: str, process: Process) -> None:
    """The server must be process ``pid`` itself, running as root or as the process's uid."""
    pid, uid, _ = peer_credentials(sock)
    if pid != process.pid:
        raise errors.VerificationError(
            f"refusing to talk to {path}: it is served by process {pid}, not by process "
            f"{process.pid} (a stale or foreign socket)", path)
    if uid not in (0, process.uid):
        raise errors.VerificationError(
            f"refusing to talk to {path}: its server runs as uid {uid}, but process "
            f"{process.pid} runs as uid {process.uid} (only root or uid {process.uid} may "
            "serve it)", path)


def recheck_process(path: str, process: Process) -> None:
    """After connecting: the process is still the one read before (same start time: its pid
    was not reused meanwhile), and every listening socket named ``path`` is one it holds.
    The second check is what ties the connection to the process: SO_PEERCRED names whoever
    called ``listen``, and that pid may since have exited and been reused, its socket kept by
    another process; two listeners can also carry one name (the file belongs to the later)."""
    now = start_time(process.pid)
    if now is None:
        raise _no_process(process.pid)
    if now != process.start_time:
        raise errors.VerificationError(
            f"process {process.pid} changed while connecting (it exited and its pid was "
            "reused); try again", path)
    held = socket_inodes(process.pid)
    raw = os.fsencode(path)
    named = [inode for inode, name in listening_sockets(process.pid) if name == raw]
    if not named or any(inode not in held for inode in named):
        raise errors.VerificationError(
            f"refusing to talk to {path}: process {process.pid} does not hold that listening "
            "socket (a socket handed over by another process)", path)


def check_path_peer(sock: socket.socket, path: str, trust_peer: Optional[int] = None) -> None:
    """``-s PATH``: the server must run as root or as the caller (``geteuid()``), or as the
    uid the caller trusts by name; a root caller may talk to anyone (it could ptrace them)."""
    me = os.geteuid()
    _, uid, _ = peer_credentials(sock)
    if me == 0 or uid in (0, me) or (trust_peer is not None and uid == trust_peer):
        return
    raise errors.VerificationError(
        f"refusing to talk to {path}: its server runs as uid {uid}, not as root or as you "
        f"(uid {me}); pass --trust-peer {uid} to allow it", path)


def parse_uid(value: Union[int, str, bytes]) -> int:
    """A uid given as a number or a user name (``--trust-peer``), by the C client's rule:
    text that starts with a digit must be a whole decimal uid below 2**32 - 1 (``12abc`` is
    refused, not looked up as a name); any other text is a user name. Raises
    :class:`hotpatch.UsageError` for anything else."""
    if isinstance(value, bool):
        raise errors.UsageError(f"invalid uid {value!r}: expected a uid or a user name")
    if isinstance(value, int):
        if 0 <= value < (1 << 32) - 1:
            return value
        raise errors.UsageError(f"invalid uid {value}: expected a uid or a user name")
    text = os.fsdecode(value)
    if text[:1] in tuple("0123456789"):
        if text.isascii() and text.isdigit():
            return parse_uid(int(text))
    elif text:
        try:
            return pwd.getpwnam(text).pw_uid
        except (KeyError, ValueError, UnicodeEncodeError):
            pass
    raise errors.UsageError(f"invalid uid '{text}': expected a uid or a user name")


# ---- the hint when nothing answers --------------------------------------------------------------------

def _preload_library() -> str:
    """Where the preload agent is. The C client derives it from its own location
    (<prefix>/bin/hotpatch -> <prefix>/lib/libhotpatch_preload.so); this client does the same
    from the C client found on PATH, else names the bare file."""
    exe = shutil.which("hotpatch")
    if exe:
        real = os.path.realpath(exe)
        try:
            with open(real, "rb") as f:
                is_elf = f.read(4) == b"\x7fELF"
        except OSError:
            is_elf = False
        if is_elf:
            prefix = os.path.dirname(os.path.dirname(real))
            return f"{prefix}/lib/libhotpatch_preload.so"
    return "libhotpatch_preload.so"


def startup_hint() -> str:
    """How to give a program an agent: the C client's explanation, two lines."""
    return ("no agent is listening there. Start the program linked with libhotpatch "
            "(calling hotpatch_start()),\n          or run it as: "
            f"LD_PRELOAD={_preload_library()} PROGRAM ...")
