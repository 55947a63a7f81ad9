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
import stat as stat_mod
import struct
from dataclasses import dataclass
from typing import Iterator, Optional, Union

from . import errors, unix_diag

__all__ = [
    "Process",
    "check_path_peer",
    "check_process_peer",
    "environment_socket",
    "find_agent",
    "parse_uid",
    "peer_credentials",
    "read_process",
    "open_agent_file",
    "recheck_process",
    "startup_hint",
]

#: PATH_MAX on Linux: the longest HOTPATCH_SOCKET taken from a process's environment.
_PATH_MAX = 4096
#: The bytes of each /proc file read, as the C client reads them (cli/verify.c: its buffer
#: sizes less the terminating NUL): the first 64 KiB of /proc/PID/environ, all of the small
#: /proc/PID/stat and /proc/PID/status.
_ENVIRON_LIMIT = (1 << 16) - 1
_STAT_LIMIT = 4096 - 1
_STATUS_LIMIT = 16384 - 1
#: Field 22 of /proc/PID/stat (start time), counting from 1; fields from 3 follow the last ")".
_STARTTIME_FIELD = 22
#: A line of /proc/PID/net/unix kept: at most this many bytes before its newline (the C
#: client's 512-byte buffer); longer lines are skipped whole. A real line is ~60 bytes and a
#: path of at most 108.
_NET_UNIX_LINE = 510
#: The Flags and St columns of a listening socket (__SO_ACCEPTCON, SS_UNCONNECTED).
_FLAG_LISTENING = 0x10000
_STATE_UNCONNECTED = 1
#: Lines of /proc/PID/net/unix and socket descriptors of one process looked at, at most.
_UNIX_LINES_LIMIT = 1 << 22
_FD_LIMIT = 1 << 20
_SOCKET_LINK = re.compile(r"socket:\[([0-9]+)\]")
#: struct ucred: pid_t pid, uid_t uid, gid_t gid.
_UCRED = struct.Struct("iII")
_ULONG_MAX = (1 << 64) - 1


@dataclass(frozen=True)
class Process:
    """What is known of process ``pid`` before connecting: its start time (clock ticks after
    boot, field 22 of /proc/PID/stat) tells this process from a later one with the same pid;
    ``uid`` is its real uid, the only uid besides root that may serve its agent."""

    pid: int
    start_time: int
    uid: int
    #: The pid the process knows itself by, in its own pid namespace (last of NSpid), which
    #: its agent names its sockets with; 0 means the same as ``pid``.
    ns_pid: int = 0
    #: "" when the process sees paths as we do, else "/proc/PID/root": a process in another
    #: mount namespace (a container) or a chroot, whose socket is reached through it.
    root: str = ""

    @property
    def own_pid(self) -> int:
        """The pid in the process's own namespace."""
        return self.ns_pid or self.pid


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


def _unreadable(pid: int, what: str, err: int) -> errors.UnreachableError:
    """A /proc file of ``pid`` could not be read: the process is gone (E1), or we may not look
    at it (E2, naming the file and the error), as the C client's say_unreadable() says."""
    if err in (errno_mod.ENOENT, errno_mod.ESRCH):
        return _no_process(pid)
    return _cannot_read(pid, what, err)


def _errno(e: OSError) -> int:
    return e.errno or errno_mod.EIO


def _strtoul(text: bytes, pos: int, base: int) -> Optional[tuple[int, int]]:
    """C's strtoul(text + pos, &end, base): (value, end), or None where the C client sees an
    error (no digits, or ERANGE). Leading white space, a sign and, in base 16, ``0x`` are
    taken as strtoul takes them; a minus sign negates modulo 2**64."""
    i = pos
    while i < len(text) and text[i] in b" \t\n\v\f\r":
        i += 1
    negative = False
    if i < len(text) and text[i] in b"+-":
        negative = text[i] == 0x2D
        i += 1
    digits = b"0123456789abcdefABCDEF"[:10 if base == 10 else 22]
    if (base == 16 and text[i:i + 2] in (b"0x", b"0X") and i + 2 < len(text)
            and text[i + 2] in digits):
        i += 2
    j = i
    while j < len(text) and text[j] in digits:
        j += 1
    if j == i:
        return None
    value = int(text[i:j], base)
    if value > _ULONG_MAX:
        return None
    return ((-value) & _ULONG_MAX if negative else value), j


def start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat. Parsed after the last ``)``, since the command name in
    parentheses may itself hold spaces and parentheses. Raises OSError (``EINVAL`` when the
    file does not read as a stat line)."""
    stat = _read_bounded(f"/proc/{pid}/stat", _STAT_LIMIT).split(b"\0", 1)[0]
    close = stat.rfind(b")")
    if close < 0:
        raise OSError(errno_mod.EINVAL, os.strerror(errno_mod.EINVAL))
    p = close + 1
    for _ in range(3, _STARTTIME_FIELD):  # the space before each next field, as C's strchr
        p = stat.find(b" ", p + 1)
        if p < 0:
            raise OSError(errno_mod.EINVAL, os.strerror(errno_mod.EINVAL))
    parsed = _strtoul(stat, p, 10)
    if parsed is None:
        raise OSError(errno_mod.EINVAL, os.strerror(errno_mod.EINVAL))
    return parsed[0]


def real_uid(pid: int) -> int:
    """The first number of the ``Uid:`` line of /proc/PID/status (the real uid). Raises
    OSError (``EINVAL`` when there is no such line or number)."""
    status = _read_bounded(f"/proc/{pid}/status", _STATUS_LIMIT).split(b"\0", 1)[0]
    return _uid_of_status(status)


def _uid_of_status(status: bytes) -> int:
    if status.startswith(b"Uid:"):
        at = 4
    else:
        at = status.find(b"\nUid:")
        at = at + 5 if at >= 0 else -1
    parsed = _strtoul(status, at, 10) if at >= 0 else None
    if parsed is None or parsed[0] > 0xFFFFFFFF:
        raise OSError(errno_mod.EINVAL, os.strerror(errno_mod.EINVAL))
    return parsed[0]


def status_ids(pid: int) -> tuple[int, int, int]:
    """(real uid, pid in its own namespace, parent pid) from /proc/PID/status, read as the C
    client's proc_status() reads them: the namespace pid is the last number of ``NSpid:``
    (the pid itself when the kernel has no such line), the parent the number after ``PPid:``.
    Raises OSError."""
    status = _read_bounded(f"/proc/{pid}/status", _STATUS_LIMIT).split(b"\0", 1)[0]
    uid = _uid_of_status(status)
    ns_pid = -1
    line = _status_line(status, b"NSpid:")
    if line is not None:
        for word in line.split(b"\n", 1)[0].split():
            parsed = _strtoul(word, 0, 10)
            if parsed is None or parsed[1] != len(word):
                break
            if 0 < parsed[0] < (1 << 63):
                ns_pid = parsed[0]
    ppid_line = _status_line(status, b"PPid:")
    ppid = 0
    if ppid_line is not None:
        parsed = _strtoul(ppid_line, 0, 10)
        ppid = parsed[0] if parsed is not None else 0
    return uid, ns_pid if ns_pid > 0 else pid, ppid


def _status_line(status: bytes, key: bytes) -> Optional[bytes]:
    """What follows ``key`` on the line of /proc/PID/status that starts with it, to the end."""
    if status.startswith(key):
        return status[len(key):]
    at = status.find(b"\n" + key)
    return status[at + 1 + len(key):] if at >= 0 else None


def _same_as_ours(pid: int, what: str) -> bool:
    try:
        theirs, ours = os.stat(f"/proc/{pid}/{what}"), os.stat(f"/proc/self/{what}")
    except OSError:
        return True
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def root_is_ours(pid: int) -> bool:
    """Whether ``pid`` sees paths as we do: the same root directory in the same mount
    namespace (another namespace may show the same root with other mounts on it, such as a
    tmpfs of its own on /tmp). An error reads as "ours"."""
    return _same_as_ours(pid, "root") and _same_as_ours(pid, "ns/mnt")


def identify(pid: int) -> Process:
    """The identity of ``pid`` without a word: raises ``(file, OSError)`` as
    :class:`_Unreadable`."""
    try:
        started = start_time(pid)
    except OSError as e:
        raise _Unreadable("stat", e) from None
    try:
        uid, ns_pid, _ = status_ids(pid)
    except OSError as e:
        raise _Unreadable("status", e) from None
    root = "" if root_is_ours(pid) else f"/proc/{pid}/root"
    return Process(pid, started, uid, ns_pid, root)


def read_process(pid: int) -> Process:
    """The start time, real uid, namespace pid and root of ``pid``, read before connecting.
    Raises :class:`UnreachableError` (``no process PID is running``, or ``process PID is not
    running (stale socket file PATH)`` when it left one) when there is none, or
    :class:`VerificationError` when its stat or status cannot be read."""
    try:
        return identify(pid)
    except _Unreadable as e:
        err = _errno(e.error)
        if err in (errno_mod.ENOENT, errno_mod.ESRCH):
            from . import stale  # stale reads /proc through this module
            found = stale.find_stale_socket_of_pid(pid)
            if found is not None:
                raise errors.UnreachableError(
                    f"process {pid} is not running (stale socket file {os.fsdecode(found)})"
                ) from None
        raise _unreadable(pid, e.what, err) from None


def socket_inodes(pid: int) -> frozenset[int]:
    """The inodes of every socket ``pid`` holds (``socket:[INODE]`` links in /proc/PID/fd).
    Reading another user's descriptors needs root or that user: refused otherwise, since
    without them a planted socket cannot be told from the agent's. Raises OSError when the
    directory cannot be read; a descriptor whose link cannot be read is passed over."""
    inodes: set[int] = set()
    seen = 0
    with os.scandir(f"/proc/{pid}/fd") as entries:
        for entry in entries:
            if seen >= _FD_LIMIT:
                break
            try:
                target = os.readlink(f"/proc/{pid}/fd/{entry.name}")
            except OSError:
                continue  # closed while we looked
            match = _SOCKET_LINK.fullmatch(target)
            if match:
                inodes.add(int(match.group(1)))
                seen += 1
    return frozenset(inodes)


def _net_unix_lines(pid: int) -> Iterator[bytes]:
    """The lines of /proc/PID/net/unix (the sockets of PID's network namespace), without their
    newline, read one bounded line at a time: the table may be large, and only a few entries
    are kept. A line longer than the bound is skipped whole. Raises OSError when the file
    cannot be opened."""
    with open(f"/proc/{pid or 'self'}/net/unix", "rb") as f:
        for _ in range(_UNIX_LINES_LIMIT):
            while True:
                line = f.readline(_NET_UNIX_LINE + 1)
                if not line:
                    return
                if line.endswith(b"\n"):
                    line = line[:-1]
                    break
                if len(line) <= _NET_UNIX_LINE:
                    break  # the last line, without a newline
                while line and not line.endswith(b"\n"):
                    line = f.readline(_NET_UNIX_LINE + 1)
            yield line


def _parse_unix_line(line: bytes) -> Optional[tuple[int, bool, bytes]]:
    """One line of /proc/PID/net/unix (unix(7)), as the C client's parse_unix_line() reads it:
    "Num: RefCount Protocol Flags Type St Inode Path". (inode, listening, path) when the socket
    is bound to a path, else None."""
    line = line.split(b"\0", 1)[0]
    p = line.find(b":")
    if p < 0:
        return None
    p += 1
    numbers = []
    for base in (16, 16, 16, 16, 16, 10):   # RefCount Protocol Flags Type St Inode
        if line[p:p + 1] != b" ":
            return None
        while line[p:p + 1] == b" ":
            p += 1
        parsed = _strtoul(line, p, base)
        if parsed is None:
            return None
        value, p = parsed
        numbers.append(value)
    _, _, flags, _, state, inode = numbers
    if line[p:p + 1] != b" " or len(line) == p + 1:
        return None
    return inode, flags == _FLAG_LISTENING and state == _STATE_UNCONNECTED, line[p + 1:]


def unix_sockets(pid: int) -> Iterator[tuple[int, bool, bytes]]:
    """(inode, listening, path) of every Unix socket with a path in PID's network namespace
    (pid 0: the caller's), in the kernel's order. Raises OSError when the table cannot be
    read."""
    for line in _net_unix_lines(pid):
        entry = _parse_unix_line(line)
        if entry is not None:
            yield entry


def listening_sockets(pid: int) -> Iterator[tuple[int, bytes]]:
    """(inode, path) of every listening Unix socket with a path in PID's network namespace,
    in the kernel's order. Raises OSError when the table cannot be read."""
    for inode, listening, path in unix_sockets(pid):
        if listening:
            yield inode, path


# ---- choosing the agent's socket --------------------------------------------------------------------

def environment_socket(pid: int, own_pid: Optional[int] = None) -> Optional[str]:
    """The ``HOTPATCH_SOCKET`` in the environment of ``pid`` with ``%p`` replaced by the pid
    the process knows itself by (``own_pid``, as the agent expands it), or None when the
    environment is unreadable or has none (one whose expansion is not shorter than PATH_MAX is
    passed over). Reads at most the first 64 KiB, as the C client does."""
    try:
        env = _read_bounded(f"/proc/{pid}/environ", _ENVIRON_LIMIT)
    except OSError:
        return None
    for entry in env.split(b"\0"):
        if entry.startswith(b"HOTPATCH_SOCKET=") and len(entry) > 16:
            value = entry[16:].replace(b"%p", str(own_pid or pid).encode())
            if len(value) < _PATH_MAX:
                return os.fsdecode(value)
    return None


def _is_fallback(path: bytes, pid: int) -> bool:
    """True for ``/tmp/hotpatch-PID.X/socket`` (X not empty, without a slash): where the agent
    serves when ``/tmp/PID.socket`` is taken by something the process does not own."""
    prefix = f"/tmp/hotpatch-{pid}.".encode()
    if not path.startswith(prefix):
        return False
    rest = path[len(prefix):]
    slash = rest.find(b"/")
    return slash > 0 and rest[slash:] == b"/socket"


_RANK_ENVIRONMENT, _RANK_DEFAULT, _RANK_FALLBACK, _RANK_NONE = range(4)


def locate_agent(process: Process) -> Optional[bytes]:
    """The name the agent of ``process`` is bound to (as /proc/PID/net/unix shows it, in the
    process's mount namespace): the first, in this order, of its HOTPATCH_SOCKET expansion,
    /tmp/NSPID.socket and a /tmp/hotpatch-NSPID.X/socket (the first of those in the kernel's
    table) that is a listening socket the process holds; None when it holds none. Raises
    :class:`_Unreadable` when /proc cannot be read."""
    pid, own = process.pid, process.own_pid
    try:
        held = socket_inodes(pid)
    except OSError as e:
        raise _Unreadable("fd", e) from None
    environment = environment_socket(pid, own)
    wanted = {os.fsencode(environment): _RANK_ENVIRONMENT} if environment is not None else {}
    wanted.setdefault(f"/tmp/{own}.socket".encode(), _RANK_DEFAULT)
    best_rank, best = _RANK_NONE, b""
    if held:  # with no socket held there is nothing to look for
        try:
            for inode, path in listening_sockets(pid):
                if inode not in held:
                    continue  # a name anyone may have bound: only the process's own count
                rank = wanted.get(path, _RANK_FALLBACK if _is_fallback(path, own) else _RANK_NONE)
                if rank < best_rank and len(path) < _PATH_MAX:
                    best_rank, best = rank, path
                if best_rank == _RANK_ENVIRONMENT:
                    break
        except OSError as e:
            raise _Unreadable("net/unix", e) from None
    if best_rank == _RANK_NONE or len(os.fsencode(process.root) + best) >= _PATH_MAX:
        return None
    return best


def _no_agent(process: Process) -> errors.UnreachableError:
    own = process.own_pid
    hints = []
    default = f"/tmp/{own}.socket"
    if not process.root:
        from . import stale
        if stale.is_stale_socket_file(default):
            hints.append(f"{default} is a stale socket file (nothing listens on it); "
                         "'hotpatch ps --prune' removes it")
    hints.append(startup_hint())
    return errors.UnreachableError(
        f"process {process.pid} has no agent: none of its listening sockets is "
        f"/tmp/{own}.socket or /tmp/hotpatch-{own}.*/socket", None, hints)


def find_agent(pid: int) -> tuple[str, Process]:
    """The socket path of the agent of ``pid`` (its bound name, reached through
    ``/proc/PID/root`` for a process in another mount namespace), found by the listening
    sockets it holds (see :func:`locate_agent`), and the :class:`Process` read before looking.
    Raises :class:`UnreachableError` (no process; no agent, with the start-up hint) or
    :class:`VerificationError` (/proc unreadable)."""
    process = read_process(pid)
    try:
        bound = locate_agent(process)
    except _Unreadable as e:
        raise _unreadable(pid, e.what, _errno(e.error)) from None
    if bound is None:
        raise _no_agent(process)
    return process.root + os.fsdecode(bound), process


# ---- checking the server after connect ----------------------------------------------------------------

def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the server (``SO_PEERCRED``: who called ``listen``). Raises OSError."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return _UCRED.unpack(raw)


def _credentials(sock: socket.socket, path: str) -> tuple[int, int, int]:
    try:
        return peer_credentials(sock)
    except OSError as e:
        raise errors.VerificationError(
            f"refusing to talk to {path}: cannot read its server's credentials "
            f"({os.strerror(_errno(e))})", path) from None


def check_process_peer(sock: socket.socket, path: str, process: Process) -> None:
    """The server must be process ``pid`` itself, running as root or as the process's uid."""
    pid, uid, _ = _credentials(sock, path)
    if pid != process.pid:
        raise errors.VerificationError(
            f"refusing to talk to {path}: it is served by process {pid}, not by process "
            f"{process.pid} (a stale or foreign socket)", path)
    if uid not in (0, process.uid):
        raise errors.VerificationError(
            f"refusing to talk to {path}: its server runs as uid {uid}, but process "
            f"{process.pid} runs as uid {process.uid} (only root or uid {process.uid} may "
            "serve it)", path)


class _Unreadable(Exception):
    """A /proc file of the re-check could not be read (reported after the start time)."""

    def __init__(self, what: str, error: OSError) -> None:
        super().__init__(what, error)
        self.what, self.error = what, error


def _held_by_name(pid: int, held: frozenset[int], bound: bytes) -> bool:
    """By name, where unix_diag cannot be asked: ``pid`` holds a listening socket bound to
    ``bound`` and no other listening socket carries that name (the file, which connect()
    follows, belongs to the later of two). In a network namespace that mount namespaces share,
    a name may also be another container's, which this cannot tell."""
    found = False
    try:
        for inode, name in listening_sockets(pid):
            if name == bound:
                if inode not in held:
                    return False
                found = True
    except OSError as e:
        raise _Unreadable("net/unix", e) from None
    return found


def open_agent_file(path: str) -> tuple[int, os.stat_result]:
    """The agent's socket file, held open so that the client connects to the very file it then
    checks: opened O_PATH with a final symbolic link not followed, and connected to through
    ``/proc/self/fd/N`` (as the C client's open_agent_file()). Returns the descriptor and its
    fstat. Raises OSError when it cannot be opened, and :class:`VerificationError` when the
    file is not a socket."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat_mod.S_ISSOCK(st.st_mode):
        os.close(fd)
        raise errors.VerificationError(
            f"refusing to talk to {path}: it is not a socket (a link or another file was put in "
            "its place)", path)
    return fd, st


def _held_by_identity(matches: "unix_diag.Matches", held: frozenset[int]) -> bool:
    """The listeners unix_diag tied to the file are all held (several match only when inodes
    above 2**32 or an overlay's layers collide; then all must be the process's own)."""
    return matches.count <= unix_diag.MATCHES_MAX and all(i in held for i in matches.inodes)


def _still_holds(pid: int, path: str, bound: bytes, st: os.stat_result) -> bool:
    """Whether ``pid`` holds the listening socket bound to the very file the client connected
    to (``st``, held open since before the connect): unix_diag, asked in the process's network
    namespace, names that socket by the file's device and inode. When it names none (no
    unix_diag, a namespace that cannot be entered, a filesystem whose devices it reports
    otherwise), names decide (``bound``, :func:`_held_by_name`). Raises :class:`_Unreadable`
    when /proc cannot be read."""
    try:
        held = socket_inodes(pid)
    except OSError as e:
        raise _Unreadable("fd", e) from None
    if not held:
        return False
    try:
        matches = unix_diag.sockets_of_file(st, listening_only=True, pid=pid,
                                            directory=unix_diag.directory_of(path))
    except OSError:
        matches = unix_diag.Matches()
    if matches.count:
        return _held_by_identity(matches, held)
    return _held_by_name(pid, held, bound)


def recheck_process(path: str, process: Process, st: os.stat_result) -> None:
    """After connecting through the file ``st`` describes (:func:`open_agent_file`): the
    listening socket bound to it is one the process holds, and the process is still the one
    read before (same start time: its pid was not reused meanwhile). The first check is what ties the connection to
    the process: SO_PEERCRED names whoever called ``listen``, and that pid may since have
    exited and been reused, its socket kept by another process; two listeners can also carry
    one name (the file belongs to the later). The start time is read last, so that a pid
    reused during the other checks is named as such (E7) rather than as what they saw."""
    unreadable = None
    try:
        bound = os.fsencode(path)[len(os.fsencode(process.root)):]
        held_now = _still_holds(process.pid, path, bound, st)
    except _Unreadable as e:
        unreadable, held_now = e, False
    try:
        now = start_time(process.pid)
    except OSError as e:
        raise _unreadable(process.pid, "stat", _errno(e)) from None
    if now != process.start_time:
        raise errors.VerificationError(
            f"process {process.pid} changed while connecting (it exited and its pid was "
            "reused); try again", path)
    if unreadable is not None:
        raise _unreadable(process.pid, unreadable.what, _errno(unreadable.error))
    if not held_now:
        raise errors.VerificationError(
            f"refusing to talk to {path}: process {process.pid} does not hold that listening "
            "socket (a socket handed over by another process)", path)


def check_path_peer(sock: socket.socket, path: str, trust_peer: Optional[int] = None) -> None:
    """``-s PATH``: the server must run as root or as the caller (``geteuid()``), or as the
    uid the caller trusts by name; a root caller may talk to anyone (it could ptrace them)."""
    _, uid, _ = _credentials(sock, path)
    me = os.geteuid()
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
