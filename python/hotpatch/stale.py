"""Socket files that no process listens on any more, in the standard locations: /tmp/PID.socket
and the agent's private /tmp/hotpatch-PID.XXXXXX/socket — as the C client's cli/stale.c.

A process killed by a signal leaves its socket file behind. The clients never connect to one,
but the files pile up, and an operator who names a dead pid should hear "not running (stale
socket file ...)" rather than how to start an agent. :func:`prune` (``hotpatch ps --prune``)
removes them: only files the caller owns, only when nothing listens on them, and only the very
file that was checked (device and inode compared right before ``unlink``, through descriptors;
/tmp is sticky, so another user cannot swap a file the caller owns).

"Nothing listens": a file is stale when no socket of the caller's network namespace is bound
to it, and, before removing it, a ``connect()`` to it is refused (which also covers a listener
in another network namespace that shares this /tmp). "Bound to it" is asked of the kernel by the
file's device and inode (:mod:`hotpatch.unix_diag`), not by its name: another mount namespace
may have a live socket of the same name in a /tmp of its own. Where the kernel cannot say, the
name is used, which errs on the side of keeping a file.
"""

from __future__ import annotations

import errno as errno_mod
import os
import socket
import stat
from typing import Callable, Optional

from . import creply, unix_diag, verify

__all__ = ["find_stale_socket_of_pid", "is_private_fallback", "is_stale_socket_file", "prune"]

_TMP_ENTRIES_LIMIT = 65536
_SUN_PATH = 108


def is_private_fallback(path: bytes, pid: int) -> bool:
    """``/tmp/hotpatch-PID.X/socket`` (X not empty, without a slash)."""
    return verify._is_fallback(path, pid)


def _bound_in_our_namespace(path: bytes, st: os.stat_result,
                            directory: Optional[os.stat_result]) -> bool:
    """A socket of the caller's network namespace is bound to the socket file at ``path``,
    which ``st`` (in ``directory``) describes. By the file's identity (unix_diag), so that a
    live socket of the same name in another mount namespace does not keep a stale file here: a
    match is bound, and no match is unbound only when the dump showed sockets on this
    filesystem at all (else it may report its devices otherwise, a btrfs subvolume). By name
    when the identity cannot decide. An unreadable table counts as bound (nothing is called
    stale then)."""
    try:
        matches = unix_diag.sockets_of_file(st, listening_only=False, directory=directory)
        if matches.count or matches.device_seen:
            return matches.count != 0
    except OSError:
        pass
    try:
        return any(p == path for _, _, p in verify.unix_sockets(0))
    except OSError:
        return True


def is_stale_socket_file(path: "str | bytes") -> bool:
    """``path`` is a socket file (a link is not followed) no socket here is bound to."""
    raw = os.fsencode(path)
    try:
        st = os.lstat(raw)
    except OSError:
        return False
    return stat.S_ISSOCK(st.st_mode) and not _bound_in_our_namespace(
        raw, st, unix_diag.directory_of(raw))


def _tmp_names(prefix: bytes) -> list[bytes]:
    names = []
    with os.scandir(b"/tmp") as entries:
        for entry in entries:
            if len(names) >= _TMP_ENTRIES_LIMIT:
                break
            if entry.name.startswith(prefix):
                names.append(entry.name)
    return sorted(names)


def find_stale_socket_of_pid(pid: int) -> Optional[bytes]:
    """The first stale socket file of ``pid``: /tmp/PID.socket, then the private directories
    in name order; None when there is none."""
    default = f"/tmp/{pid}.socket".encode()
    if is_stale_socket_file(default):
        return default
    try:
        names = _tmp_names(f"hotpatch-{pid}.".encode())
    except OSError:
        return None
    for name in names:
        path = b"/tmp/" + name + b"/socket"
        if is_private_fallback(path, pid) and is_stale_socket_file(path):
            return path
    return None


# ---- pruning ---------------------------------------------------------------------------------------

def _is_pid_socket_name(name: bytes) -> bool:
    digits = len(name) - len(name.lstrip(b"0123456789"))
    return digits > 0 and name[digits:] == b".socket"


def _is_private_dir_name(name: bytes) -> bool:
    if not name.startswith(b"hotpatch-"):
        return False
    rest = name[9:]
    digits = len(rest) - len(rest.lstrip(b"0123456789"))
    return digits > 0 and rest[digits:digits + 1] == b"." and len(rest) > digits + 1


def _connect_refused(path: bytes) -> bool:
    """A non-blocking connect() to ``path`` is refused (a full backlog counts as listening)."""
    if len(path) >= _SUN_PATH:
        return False
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    except OSError:
        return False
    try:
        s.connect(path)
        return False
    except OSError as e:
        return e.errno == errno_mod.ECONNREFUSED
    finally:
        s.close()


def _lstat_at(dirfd: int, name: bytes) -> Optional[os.stat_result]:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError:
        return None


def _stale_and_ours(dirfd: int, name: bytes, path: bytes) -> Optional[os.stat_result]:
    st = _lstat_at(dirfd, name)
    if st is None or not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
        return None
    try:
        directory: Optional[os.stat_result] = os.fstat(dirfd)
    except OSError:
        directory = None
    if _bound_in_our_namespace(path, st, directory) or not _connect_refused(path):
        return None
    return st


def _unchanged(dirfd: int, name: bytes, checked: os.stat_result) -> bool:
    now = _lstat_at(dirfd, name)
    return (now is not None and (now.st_dev, now.st_ino, now.st_uid) ==
            (checked.st_dev, checked.st_ino, checked.st_uid)
            and stat.S_IFMT(now.st_mode) == stat.S_IFMT(checked.st_mode))


class _Pruner:
    """One pass over /tmp; ``report(path, directory)`` is told of each removal and
    ``fail(message)`` of each failure."""

    def __init__(self, report: Callable[[bytes, Optional[bytes]], None],
                 fail: Callable[[str], None]) -> None:
        self.report, self.fail = report, fail

    def _remove(self, dirfd: int, name: bytes, path: bytes, st: os.stat_result) -> bool:
        if not _unchanged(dirfd, name, st):
            return True  # replaced meanwhile: not the file checked, left alone
        try:
            os.unlink(name, dir_fd=dirfd)
            return True
        except OSError as e:
            self.fail(f"cannot remove {os.fsdecode(path)}: {os.strerror(e.errno or errno_mod.EIO)}")
            return False

    def file(self, tmpfd: int, name: bytes) -> bool:
        path = b"/tmp/" + name
        st = _stale_and_ours(tmpfd, name, path)
        if st is None:
            return True
        ok = self._remove(tmpfd, name, path, st)
        if ok and not _unchanged(tmpfd, name, st):
            self.report(path, None)
        return ok

    def private_dir(self, tmpfd: int, name: bytes) -> bool:
        try:
            dirfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=tmpfd)
        except OSError:
            return True
        try:
            directory = b"/tmp/" + name
            path = directory + b"/socket"
            dir_st = os.fstat(dirfd)
            st = _stale_and_ours(dirfd, b"socket", path) if dir_st.st_uid == os.geteuid() else None
            if st is None:
                return True
            ok = self._remove(dirfd, b"socket", path, st)
            dir_gone = False
            if ok and _unchanged(tmpfd, name, dir_st):
                try:
                    os.rmdir(name, dir_fd=tmpfd)
                    dir_gone = True
                except OSError:
                    pass  # it holds something else: kept
            if ok and not _unchanged(dirfd, b"socket", st):
                self.report(path, directory if dir_gone else None)
            return ok
        finally:
            os.close(dirfd)


def prune(report: Optional[Callable[[bytes, Optional[bytes]], None]] = None,
          fail: Optional[Callable[[str], None]] = None) -> list[bytes]:
    """Removes the stale socket files the caller owns in /tmp (and the private directory of
    one) and returns their paths. ``report(path, directory)`` is called for each (directory
    is the removed private directory, or None); ``fail(message)`` for each that could not be
    removed. Raises OSError when /tmp cannot be read."""
    removed: list[bytes] = []

    def note(path: bytes, directory: Optional[bytes]) -> None:
        removed.append(path)
        if report is not None:
            report(path, directory)

    pruner = _Pruner(note, fail or (lambda message: None))
    names = _tmp_names(b"")
    tmpfd = os.open(b"/tmp", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in names:
            if _is_pid_socket_name(name):
                pruner.file(tmpfd, name)
            elif _is_private_dir_name(name):
                pruner.private_dir(tmpfd, name)
    finally:
        os.close(tmpfd)
    return removed


def removal_line(path: bytes, directory: Optional[bytes], as_json: bool) -> bytes:
    """What ``hotpatch ps --prune`` prints for one removal, as the C client prints it."""
    if not as_json:
        return b"removed " + path + (b" and its directory" if directory else b"") + b"\n"
    line = b'{"removed":' + creply.write_string(path)
    if directory:
        line += b',"directory":' + creply.write_string(directory)
    return line + b"}\n"
