"""Which Unix sockets are bound to a given file, asked of the kernel (sock_diag) — as the C
client's cli/unix_diag.c.

Why not /proc/net/unix alone: it names a socket by the path its process passed to ``bind()``,
and a network namespace is shared by every mount namespace in it. Two containers that each
bind /tmp/5.socket in a /tmp of their own show two sockets of one name, so a name cannot tell
which socket a file belongs to. The kernel's unix_diag reports, for each bound socket, the
device and inode of its file: that ties a socket to the very file the client holds open.

A netlink socket answers for the network namespace it was made in. For a process in another
one (a container, a pod whose containers share one), a short-lived thread enters that
namespace, makes the socket and ends, so no thread of the caller is ever left in the target's
namespace (going back could be refused). Entering needs CAP_SYS_ADMIN over it (root has it).
The socket is connected to the kernel, so no process can forge a reply. Where the kernel cannot
be asked, :class:`OSError` is raised and the callers fall back to names.

The kernel reports the inode in 32 bits, and the device of the filesystem the file was bound
through, which stat() does not always give for the file itself: an overlay whose upper layer is
another filesystem reports the layer's device for a file but its own for a directory. So a
socket matches a file when the low 32 bits of the inode agree and its device is the file's or
its directory's. That can match more than one socket, so every match is reported and the
callers require all of them to agree. Where nothing matches because the filesystem reports its
devices otherwise (a btrfs subvolume), ``device_seen`` stays false and the callers fall back
to names. One dump, bounded (``_MESSAGES_LIMIT`` sockets), each read timing out after a second.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["Matches", "directory_of", "sockets_of_file"]

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_UDIAG_SHOW_VFS = 0x2
_UNIX_DIAG_VFS = 1
_TCP_LISTEN = 10
_SEQUENCE = 0x68707464                     # the only sequence a reply may carry (the C one's)
_MESSAGES_LIMIT = 1 << 22
_DATAGRAM_LIMIT = 65536
_CLONE_NEWNET = 0x40000000
MATCHES_MAX = 8                            # inodes kept; more are only counted (as in C)

_HEADER = struct.Struct("=IHHII")          # struct nlmsghdr
_REQUEST = struct.Struct("=BBHIII8s")      # struct unix_diag_req (cookie: 8 bytes)
_MESSAGE = struct.Struct("=BBBBI8s")       # struct unix_diag_msg
_ATTRIBUTE = struct.Struct("=HH")          # struct rtattr
_VFS = struct.Struct("=II")                # struct unix_diag_vfs: inode, device


@dataclass
class Matches:
    """What a search found: the matching sockets' inodes (at most ``MATCHES_MAX`` kept), how
    many matched, and whether any socket of the dump is on the file's or directory's device."""
    inodes: list[int] = field(default_factory=list)
    count: int = 0
    device_seen: bool = False


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


def _carried_error(kind: int, body: bytes) -> int:
    """The errno an NLMSG_ERROR or NLMSG_DONE carries, 0 when none."""
    if len(body) < 4:
        return errno_mod.EPROTO if kind == _NLMSG_ERROR else 0
    error = struct.unpack_from("=i", body)[0]
    if error < 0:
        return -error
    return errno_mod.EPROTO if kind == _NLMSG_ERROR else 0


def _search_datagram(data: bytes, inode: int, devices: "set[int]", out: Matches,
                     seen: list[int]) -> bool:
    """Looks at one datagram of the dump; True when the dump is over. Raises OSError for a
    kernel error or a reply that cannot be read."""
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, kind, _, sequence, _ = _HEADER.unpack_from(data, pos)
        if length < _HEADER.size or pos + length > len(data) or sequence != _SEQUENCE:
            raise OSError(errno_mod.EPROTO, "unreadable sock_diag reply")
        body = data[pos + _HEADER.size:pos + length]
        if kind in (_NLMSG_DONE, _NLMSG_ERROR):
            error = _carried_error(kind, body)
            if error:
                raise OSError(error, os.strerror(error))
            return True
        if kind != _SOCK_DIAG_BY_FAMILY or len(body) < _MESSAGE.size:
            raise OSError(errno_mod.EPROTO, "unreadable sock_diag reply")
        seen[0] += 1
        if seen[0] > _MESSAGES_LIMIT:
            raise OSError(errno_mod.E2BIG, "too many sockets")
        vfs = _file_of(body)
        if vfs is not None and vfs[1] in devices:
            out.device_seen = True
            if vfs[0] == inode:
                if out.count < MATCHES_MAX:
                    out.inodes.append(_MESSAGE.unpack_from(body)[4])
                out.count += 1
        pos += _align(length)
    if pos < len(data):            # bytes left that are no whole message
        raise OSError(errno_mod.EPROTO, "unreadable sock_diag reply")
    return False


def _setns(fd: int) -> None:
    """setns(fd, CLONE_NEWNET) for the calling thread (os.setns is Python 3.12's)."""
    if hasattr(os, "setns"):
        os.setns(fd, _CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _plain_socket() -> socket.socket:
    """A sock_diag socket of the calling thread's namespace, connected to the kernel (port 0)
    so that no other sender can reach it."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
    try:
        s.connect((0, 0))
        s.settimeout(1.0)
    except BaseException:
        s.close()
        raise
    return s


def _same_object(a: int, b: int) -> bool:
    x, y = os.fstat(a), os.fstat(b)
    return (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)


def _open_in_namespace(namespace_fd: int) -> socket.socket:
    """The socket, made by a thread that enters the namespace and ends there."""
    result: list = []

    def visit() -> None:
        try:
            _setns(namespace_fd)
            result.append(_plain_socket())
        except OSError as e:
            result.append(e)
    thread = threading.Thread(target=visit, name="hotpatch-unix-diag", daemon=True)
    thread.start()
    thread.join()
    if not result:
        raise OSError(errno_mod.EAGAIN, "the namespace thread did not finish")
    if isinstance(result[0], OSError):
        raise result[0]
    return result[0]


def _diag_socket(pid: int) -> socket.socket:
    """A sock_diag socket of ``pid``'s network namespace (0: the caller's)."""
    if not pid:
        return _plain_socket()
    theirs = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        ours = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _same_object(theirs, ours):
                return _plain_socket()
        finally:
            os.close(ours)
        return _open_in_namespace(theirs)
    finally:
        os.close(theirs)


def sockets_of_file(st: os.stat_result, listening_only: bool, pid: int = 0,
                    directory: Optional[os.stat_result] = None) -> Matches:
    """The sockets of ``pid``'s network namespace (0: the caller's) bound to the file ``st``
    (an fstat or lstat) describes, in the directory ``directory`` (a stat) describes — only
    listening sockets when ``listening_only``. Raises OSError when the kernel cannot be asked
    (the namespace cannot be entered, no unix_diag, no answer within a second, a reply that
    cannot be read)."""
    states = 1 << _TCP_LISTEN if listening_only else 0xFFFFFFFF
    request = _REQUEST.pack(socket.AF_UNIX, 0, 0, states, 0, _UDIAG_SHOW_VFS, b"\0" * 8)
    header = _HEADER.pack(_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY,
                          _NLM_F_REQUEST | _NLM_F_DUMP, _SEQUENCE, 0)
    devices = {_kernel_device(st.st_dev)}
    if directory is not None:
        devices.add(_kernel_device(directory.st_dev))
    out, seen = Matches(), [0]
    with _diag_socket(pid) as s:
        s.send(header + request)
        while True:
            data = s.recv(_DATAGRAM_LIMIT)
            if not data:
                raise OSError(errno_mod.EPROTO, "sock_diag closed")
            if _search_datagram(data, st.st_ino & 0xFFFFFFFF, devices, out, seen):
                return out


def directory_of(path: "str | bytes") -> Optional[os.stat_result]:
    """The directory that ``path`` names a file in, stat()ed; None when it cannot be."""
    parent = os.path.dirname(os.fsencode(path)) or b"."
    try:
        return os.stat(parent)
    except OSError:
        return None
