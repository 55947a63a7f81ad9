"""Which Unix socket is bound to a given file, asked of the kernel (sock_diag) — as the C
client's cli/unix_diag.c.

Why not /proc/net/unix alone: it names a socket by the path its process passed to ``bind()``,
and a network namespace is shared by every mount namespace in it. Two containers that each
bind /tmp/5.socket in a /tmp of their own show two sockets of one name, so a name cannot tell
which socket a file belongs to. The kernel's unix_diag reports, for each bound socket, the
device and inode of its file: that ties a socket to the very file the client looked at.

A netlink socket answers for the network namespace it was made in. For a process in another
one (a container, a pod whose containers share one), the calling thread enters that namespace
for the ``socket()`` call alone, which needs CAP_SYS_ADMIN over it (root has it). Where that is
refused, or the kernel has no unix_diag, :class:`OSError` is raised and the callers fall back
to names. The kernel reports the inode in 32 bits: a file matches when its device and the low 32 bits of its inode
do. One dump, bounded (``_MESSAGES_LIMIT`` sockets), each read timing out after a second.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import socket
import struct

__all__ = ["socket_at_path", "socket_of_file"]

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_UDIAG_SHOW_VFS = 0x2
_UNIX_DIAG_VFS = 1
_TCP_LISTEN = 10
_MESSAGES_LIMIT = 1 << 22
_DATAGRAM_LIMIT = 65536
_CLONE_NEWNET = 0x40000000

_HEADER = struct.Struct("=IHHII")          # struct nlmsghdr
_REQUEST = struct.Struct("=BBHIII8s")      # struct unix_diag_req (cookie: 8 bytes)
_MESSAGE = struct.Struct("=BBBBI8s")       # struct unix_diag_msg
_ATTRIBUTE = struct.Struct("=HH")          # struct rtattr
_VFS = struct.Struct("=II")                # struct unix_diag_vfs: inode, device


def _kernel_device(dev: int) -> int:
    """The device as the kernel keeps it (MAJOR << 20 | MINOR), which unix_diag reports."""
    return ((os.major(dev) << 20) | (os.minor(dev) & 0xFFFFF)) & 0xFFFFFFFF


def _align(n: int) -> int:
    return (n + 3) & ~3


def _file_of(body: bytes) -> "tuple[int, int] | None":
    """(inode, device) of one socket's UNIX_DIAG_VFS attribute, or None when it has none."""
    pos = _MESSAGE.size
    while pos + _ATTRIBUTE.size <= len(body):
        length, kind = _ATTRIBUTE.unpack_from(body, pos)
        if length < _ATTRIBUTE.size or pos + length > len(body):
            return None
        if kind == _UNIX_DIAG_VFS and length - _ATTRIBUTE.size >= _VFS.size:
            return _VFS.unpack_from(body, pos + _ATTRIBUTE.size)
        pos += _align(length)
    return None


def _search_datagram(data: bytes, wanted: "set[tuple[int, int]]",
                     seen: list[int]) -> "int | None":
    """The socket inode found in one datagram, 0 when the dump ended without it, None when
    more is to be read. Raises OSError for a kernel error or a reply that cannot be read."""
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, kind, _, _, _ = _HEADER.unpack_from(data, pos)
        if length < _HEADER.size or pos + length > len(data):
            raise OSError(errno_mod.EPROTO, "unreadable sock_diag reply")
        body = data[pos + _HEADER.size:pos + length]
        if kind == _NLMSG_DONE:
            return 0
        if kind == _NLMSG_ERROR:
            error = struct.unpack_from("=i", body)[0] if len(body) >= 4 else 0
            raise OSError(-error if error < 0 else errno_mod.EPROTO, "sock_diag refused")
        if kind != _SOCK_DIAG_BY_FAMILY or len(body) < _MESSAGE.size:
            raise OSError(errno_mod.EPROTO, "unreadable sock_diag reply")
        seen[0] += 1
        if seen[0] > _MESSAGES_LIMIT:
            raise OSError(errno_mod.E2BIG, "too many sockets")
        if _file_of(body) in wanted:
            return _MESSAGE.unpack_from(body)[4]
        pos += _align(length)
    return None


def _setns(fd: int) -> None:
    """setns(fd, CLONE_NEWNET) for the calling thread (os.setns is Python 3.12's)."""
    if hasattr(os, "setns"):
        os.setns(fd, _CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _same_object(a: int, b: int) -> bool:
    x, y = os.fstat(a), os.fstat(b)
    return (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)


def _diag_socket(pid: int) -> socket.socket:
    """A sock_diag socket of ``pid``'s network namespace (0: the caller's)."""
    def plain() -> socket.socket:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
    if not pid:
        return plain()
    theirs = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        ours = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _same_object(theirs, ours):
                return plain()
            _setns(theirs)
            try:
                return plain()
            finally:
                # Going back cannot fail for a caller that could enter (the same capability
                # over its own namespace); if it did, the error is raised from here.
                _setns(ours)
        finally:
            os.close(ours)
    finally:
        os.close(theirs)


def socket_of_file(st: os.stat_result, listening_only: bool, pid: int = 0,
                   directory: "os.stat_result | None" = None) -> int:
    """The inode of the socket of ``pid``'s network namespace (0: the caller's) bound to the
    file ``st`` (an lstat) describes, in the directory ``directory`` (a stat) describes — only
    among listening sockets when ``listening_only`` — or 0 when no socket is bound to it.
    Raises OSError when the kernel cannot be asked (the namespace cannot be entered, no
    unix_diag, no answer within a second, a reply that cannot be read)."""
    states = 1 << _TCP_LISTEN if listening_only else 0xFFFFFFFF
    request = _REQUEST.pack(socket.AF_UNIX, 0, 0, states, 0, _UDIAG_SHOW_VFS, b"\0" * 8)
    header = _HEADER.pack(_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY,
                          _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
    ino = st.st_ino & 0xFFFFFFFF
    wanted = {(ino, _kernel_device(st.st_dev))}
    if directory is not None:
        wanted.add((ino, _kernel_device(directory.st_dev)))
    seen = [0]
    with _diag_socket(pid) as s:
        s.settimeout(1.0)
        s.sendto(header + request, (0, 0))
        while True:
            data = s.recv(_DATAGRAM_LIMIT)
            if not data:
                raise OSError(errno_mod.EPROTO, "sock_diag closed")
            found = _search_datagram(data, wanted, seen)
            if found is not None:
                return found


def socket_at_path(path: "str | bytes", listening_only: bool, pid: int = 0) -> int:
    """:func:`socket_of_file` for the file at ``path``, which it lstat()s (its directory
    stat()ed). Raises OSError also when ``path`` cannot be looked at."""
    raw = os.fsencode(path)
    st = os.lstat(raw)
    parent = os.path.dirname(raw) or b"."
    try:
        directory: "os.stat_result | None" = os.stat(parent)
    except OSError:
        directory = None
    return socket_of_file(st, listening_only, pid, directory)
