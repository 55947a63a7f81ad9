"""The hotpatch client: finding an agent, forming request lines, and talking to it.

Two ways to talk, both over the agent's Unix socket (docs/protocol.md):

* :func:`exchange_once` sends one ``json ...`` request on a fresh connection and returns the
  raw reply, exactly as the C client (``cli/hotpatch.c``) does; the CLI uses it, so the agent
  sees the same traffic from either client.
* :class:`Client` opens one ``session`` connection and sends many requests over it, one JSON
  line per reply; scripts use it through :meth:`Client.request` and the typed helpers.

Everything that must match the C client byte for byte (quoting, the length limit, making a
``lib load`` path absolute and sending the library as a descriptor, the explanation when
nothing answers) lives here once and is shared by both; finding the agent of a pid and
checking the server before anything is sent live in :mod:`hotpatch.verify`. Words and lines
are handled as bytes, like the C client handles ``char *``, so arguments that are not UTF-8
reach the agent unchanged (and are refused there, with the agent's message).
"""

from __future__ import annotations

import errno as errno_mod
import json
import os
import select
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

from . import errors, stale, verify

__all__ = [
    "Client",
    "Reply",
    "Word",
    "LINE_LIMIT",
    "REPLY_LIMIT",
    "build_request",
    "exchange_once",
    "open_agent",
    "open_library",
    "prepare_request",
    "format_value",
    "parse_reply",
    "quote_word",
    "socket_path_for_pid",
]

#: The agent's request limit in bytes (docs/protocol.md); the C client's buffer is one larger.
LINE_LIMIT = 4096
#: The C client refuses to buffer a reply larger than this; so does this one.
REPLY_LIMIT = 8 << 20
#: PATH_MAX on Linux: the longest path the C client's buffers hold.
_PATH_MAX = 4096
#: sizeof(struct sockaddr_un.sun_path) on Linux.
_SUN_PATH = 108

#: A command word: text, or bytes passed through unchanged.
Word = Union[str, bytes]


# ---- forming request lines ----------------------------------------------------------------------

def _to_bytes(word: Word) -> bytes:
    return word if isinstance(word, bytes) else os.fsencode(word)


def _needs_quotes(word: bytes) -> bool:
    return not word or any(c in word for c in b" \t\"'\\")


def quote_word(word: Word) -> bytes:
    """Returns ``word`` as the C client writes it into a request line: unchanged, or in double
    quotes with ``"`` and ``\\`` escaped when it is empty or holds a space, tab, quote or
    backslash."""
    raw = _to_bytes(word)
    if not _needs_quotes(raw):
        return raw
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _append_word(line: bytearray, word: bytes, cap: int) -> bool:
    """Appends ``word`` to ``line`` the way the C client's append_word() does into a buffer of
    ``cap`` bytes (room for the terminating NUL included): quoted when needed, and only whole.
    Returns False, leaving ``line`` unchanged, when the word does not fit, so the agent never
    receives a value cut short.
    """
    quote = _needs_quotes(word)
    body = bytearray()
    for c in word:
        if quote and c in (0x22, 0x5C):
            body.append(0x5C)
        body.append(c)
    piece = (b" " if line else b"") + (b'"' + body + b'"' if quote else body)
    if len(line) + len(piece) + 1 > cap:
        return False
    line += piece
    return True


def _absolute_library_path(path: bytes) -> bytes:
    """The C client's rule for ``lib load NAME PATH``: an absolute path is kept; a bare file
    name that does not exist here is kept (the dynamic loader searches for it, ``libm.so.6``);
    anything else is resolved against our working directory (symbolic links resolved when the
    file exists), because the agent would resolve it against the target's."""
    if path.startswith(b"/"):
        return path
    if b"/" not in path and not os.path.exists(path):
        return path
    try:
        resolved = os.path.realpath(path, strict=True)
        if len(resolved) < _PATH_MAX:
            return resolved
    except (OSError, ValueError):
        pass
    while path.startswith(b"./"):
        path = path[2:]
    try:
        cwd = os.getcwdb()
    except OSError:
        return path
    joined = cwd + b"/" + path
    return joined if len(joined) < _PATH_MAX else path


def _file_word(raw: Sequence[bytes]) -> int:
    """The index of the word that names a file to send as a descriptor, as in the C client:
    PATH of ``lib load NAME PATH`` and of ``patch apply [--check] PATH``; -1 otherwise."""
    if len(raw) >= 4 and raw[0] == b"lib" and raw[1] == b"load":
        return 3
    if len(raw) < 3 or raw[0] != b"patch" or raw[1] != b"apply":
        return -1
    if len(raw) == 3:
        return 2
    return 3 if len(raw) == 4 and raw[2] == b"--check" else -1


def _sends_descriptor(path: bytes) -> bool:
    """Whether ``lib load`` sends PATH as an open descriptor: always, except for a bare file
    name that does not exist here (``libm.so.6``), which only the target's dynamic loader can
    find, so it goes as a name and the agent applies its own rules."""
    return b"/" in path or os.path.exists(path)


@dataclass(frozen=True)
class Request:
    """One request line formed from command words: ``line`` (without its newline),
    ``json_word`` (the words began with ``json``), and ``library``: for ``lib load`` and
    ``patch apply``, the path of the file to send as a descriptor along with the line (None
    otherwise)."""

    line: bytes
    json_word: bool
    library: Optional[bytes] = None


def prepare_request(words: Sequence[Word], prefix: bytes = b"json") -> Request:
    """Forms one request line from command words exactly as the C client does.

    A leading word ``json`` is dropped and reported (``json_word``, the C client's
    ``--json``); ``lib load NAME PATH`` and ``patch apply [--check] PATH`` get an absolute
    PATH, which is also the file to send as a descriptor (see :func:`open_library`); words are quoted when needed. ``prefix``
    starts the line (``json`` for a one-shot request, empty inside a session). Raises
    :class:`hotpatch.UsageError` for no command, a word with a line break, or a line longer
    than the agent accepts.
    """
    raw = [_to_bytes(w) for w in words]
    json_word = bool(raw) and raw[0] == b"json"
    if json_word:
        raw = raw[1:]
    if not raw:
        raise errors.UsageError("no command given")
    line = bytearray(prefix)
    library = None
    file_word = _file_word(raw)
    for i, word in enumerate(raw):
        if b"\r" in word or b"\n" in word:
            raise errors.UsageError(
                f"argument {i + 1} contains a line break; a request is one line")
        if i == file_word and _sends_descriptor(word):
            word = library = _absolute_library_path(word)
        if not _append_word(line, word, LINE_LIMIT + 1):
            raise errors.UsageError(
                f"the request is longer than the agent's limit of {LINE_LIMIT} bytes")
    return Request(bytes(line), json_word, library)


def build_request(words: Sequence[Word], prefix: bytes = b"json") -> tuple[bytes, bool]:
    """:func:`prepare_request` as (line, json_word), for callers that send no descriptor."""
    request = prepare_request(words, prefix)
    return request.line, request.json_word


def open_library(path: bytes) -> int:
    """Opens the library ``lib load`` sends (read-only, close-on-exec, following symbolic
    links as this process sees them) and returns the descriptor. The agent loads that very
    file, so what is loaded is what the operator named here, whatever the target's mount
    namespace, working directory or permissions. As in the C client the open itself does
    not block (``O_NONBLOCK``, cleared afterwards: a FIFO named as a library cannot hang the
    client) and takes no controlling terminal. Raises :class:`LibraryOpenError`
    (``cannot open PATH: REASON``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        err = e.errno or errno_mod.EIO
        shown = os.fsdecode(path)
        raise errors.LibraryOpenError(shown, err,
                                      f"cannot open {shown}: {os.strerror(err)}") from None
    try:
        os.set_blocking(fd, True)
    except OSError:
        pass  # as the C client: the descriptor is still the file opened
    return fd


def format_value(value: Any) -> str:
    """Renders a Python value as the agent reads it: ``True`` -> ``true``, floats with the
    fewest digits that read back the same (``repr``), everything else with ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


# ---- finding and reaching the agent ---------------------------------------------------------------

def socket_path_for_pid(pid: int) -> str:
    """The name the agent of ``pid`` is first expected at: the ``HOTPATCH_SOCKET`` in its
    environment when that is readable and set (``%p`` replaced by the pid), else
    ``/tmp/PID.socket``. A name only: the client talks to the socket the process actually
    listens on (:func:`hotpatch.verify.find_agent`), which may be its private fallback."""
    return verify.environment_socket(pid) or f"/tmp/{pid}.socket"


def _process_exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _unreachable(path: str, pid: Optional[int], err: int) -> errors.UnreachableError:
    message = f"cannot connect to {path}: {os.strerror(err)}"
    if pid and not _process_exists(pid):
        hint = f"no process {pid} is running"
    elif err in (errno_mod.EACCES, errno_mod.EPERM):
        hint = "run as root or as the user that owns the process"
    elif err == errno_mod.ECONNREFUSED and not pid and stale.is_stale_socket_file(path):
        hint = _stale_hint(path)
    else:
        hint = verify.startup_hint()
    return errors.UnreachableError(message, path, [hint], err)


def _stale_hint(path: str) -> str:
    """What a refused socket file nothing listens on is, as the C client's explain_stale()
    says it: a standard name of a dead pid, or just a stale file."""
    raw = os.fsencode(path)
    digits = raw[5:len(raw) - 7] if raw.startswith(b"/tmp/") and raw.endswith(b".socket") else b""
    if (digits and len(digits) <= 9 and digits.isdigit() and int(digits)
            and not _process_exists(int(digits))):
        return f"process {int(digits)} is not running (stale socket file {path})"
    return f"{path} is a stale socket file (nothing listens on it)"


def _set_timeouts(sock: socket.socket, timeout: Optional[float]) -> None:
    """Per-call send/receive timeouts on a blocking socket (SO_RCVTIMEO/SO_SNDTIMEO), as the C
    client sets them: every wait is bounded, and a blocking connect is bounded too."""
    if timeout is None:
        return
    micros = max(1, int(round(timeout * 1_000_000)))
    tv = struct.pack("@ll", micros // 1_000_000, micros % 1_000_000)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def connect(path: str, pid: Optional[int] = None,
            timeout: Optional[float] = 10.0, via: Optional[str] = None) -> socket.socket:
    """Connects to the socket at ``path`` (through ``via`` when given: the ``/proc/self/fd/N``
    of that file held open) and checks nothing (see :func:`open_agent`); ``pid`` only shapes
    the explanation when the connect fails. Raises :class:`hotpatch.UnreachableError` with the
    C client's explanation."""
    raw_path = os.fsencode(path)
    target = os.fsencode(via) if via is not None else raw_path
    if len(raw_path) >= _SUN_PATH or len(target) >= _SUN_PATH:
        raise errors.UnreachableError(f"socket path too long: {path}", path)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    except OSError as e:
        raise errors.UnreachableError(f"socket: {os.strerror(e.errno or 0)}", path) from None
    try:
        _set_timeouts(sock, timeout)
        # The C client passes the whole sockaddr_un; an empty path is then the abstract name of
        # 108 NUL bytes, which nothing serves. Do the same rather than let Python autobind.
        sock.connect(target if target else b"\0" * _SUN_PATH)
    except OSError as e:
        sock.close()
        if e.errno in (errno_mod.EAGAIN, errno_mod.EWOULDBLOCK) and timeout is not None:
            # A Unix socket's connect waits while the listener's backlog is full, for at most
            # SO_SNDTIMEO: the agent is there but has not accepted.
            raise errors.UnreachableError(
                f"timed out after {int(round(timeout * 1000))} ms connecting to {path}: the "
                "agent did not accept the connection (its backlog is full; it may be busy or "
                "stuck); try again, or raise --timeout", path) from None
        raise _unreachable(path, pid, e.errno or errno_mod.EIO) from None
    return sock


def open_agent(pid: Optional[int] = None, socket_path: Optional[str] = None,
               timeout: Optional[float] = 10.0,
               trust_peer: Optional[int] = None) -> tuple[socket.socket, str]:
    """Connects to a verified agent and returns the socket and its path; nothing has been
    sent on it yet.

    With ``pid``: the agent's socket is found among the listening sockets the process holds,
    and the server must be that process (pid, uid, and unchanged since before connecting).
    With ``socket_path``: the server must run as root or as this user, or as ``trust_peer``.
    Raises :class:`UnreachableError` or its subclass :class:`VerificationError`.
    """
    if pid is None:
        path = os.fspath(socket_path or "")
        sock = connect(path, pid, timeout)
        try:
            verify.check_path_peer(sock, path, trust_peer)
        except BaseException:
            sock.close()
            raise
        return sock, path
    path, process = verify.find_agent(pid)
    try:
        file_fd, st = verify.open_agent_file(path)
    except OSError as e:
        raise _unreachable(path, pid, e.errno or errno_mod.EIO) from None
    try:
        sock = connect(path, pid, timeout, via=f"/proc/self/fd/{file_fd}")
        try:
            verify.check_process_peer(sock, path, process)
            verify.recheck_process(path, process, st)
        except BaseException:
            sock.close()
            raise
    finally:
        os.close(file_fd)
    return sock, path


def send_line(sock: socket.socket, data: bytes, fd: Optional[int] = None) -> None:
    """Sends ``data`` whole. With ``fd``, the first ``sendmsg`` carries that descriptor
    (``SCM_RIGHTS``), attached to the first byte, so the agent receives it with the start of
    the line it belongs to. Raises OSError."""
    sent = 0
    if fd is not None:
        while True:
            try:
                sent = socket.send_fds(sock, [data], [fd], socket.MSG_NOSIGNAL)
                break
            except InterruptedError:
                continue
    if sent < len(data):
        sock.sendall(data[sent:], socket.MSG_NOSIGNAL)


def _recv_error(e: OSError) -> str:
    if e.errno in (errno_mod.EAGAIN, errno_mod.EWOULDBLOCK) or isinstance(e, socket.timeout):
        return "timed out waiting for the reply"
    return os.strerror(e.errno or errno_mod.EIO)


def read_reply_once(sock: socket.socket) -> bytes:
    """Reads until the first newline or EOF as the C client's read_reply() does, returning
    every byte received. Raises :class:`hotpatch.DisconnectedError` (timeout, error, nothing
    before EOF) or :class:`hotpatch.ProtocolError` (larger than :data:`REPLY_LIMIT`)."""
    buf = bytearray()
    cap = 4096
    while True:
        if len(buf) + 1 >= cap:
            if cap >= REPLY_LIMIT:
                raise errors.ProtocolError("the reply is larger than the client accepts",
                                           bytes(buf[:200]))
            cap *= 2
        try:
            chunk = sock.recv(cap - len(buf) - 1)
        except InterruptedError:
            continue
        except OSError as e:
            raise errors.DisconnectedError(_recv_error(e)) from None
        buf += chunk
        if not chunk or b"\n" in chunk:
            if not buf:
                raise errors.DisconnectedError("the agent closed the connection without answering")
            return bytes(buf)


def exchange_once(path: Optional[str], line: bytes, pid: Optional[int] = None,
                  timeout: Optional[float] = 10.0, *, trust_peer: Optional[int] = None,
                  fd: Optional[int] = None) -> bytes:
    """Sends one request ``line`` (without its newline) on a new connection and returns the
    raw reply bytes, as the C client does: to the verified agent of ``pid`` (``path`` is then
    ignored) or to the socket at ``path`` (see :func:`open_agent`), with the descriptor ``fd``
    attached when given (``lib load``). Errors carry the C client's wording; a failed read is
    reported as ``no reply from PATH: WHY``."""
    sock, path = open_agent(pid, None if pid is not None else path, timeout, trust_peer)
    with sock:
        try:
            send_line(sock, line + b"\n", fd)
        except OSError as e:
            raise errors.DisconnectedError(
                f"cannot send the request: {os.strerror(e.errno or errno_mod.EIO)}", path) from None
        try:
            return read_reply_once(sock)
        except errors.DisconnectedError as e:
            raise errors.DisconnectedError(f"no reply from {path}: {e.message}", path) from None
        except errors.ProtocolError as e:
            raise errors.ProtocolError(f"no reply from {path}: {e.message}", e.reply) from None


# ---- replies --------------------------------------------------------------------------------------

def _reject_constant(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # The C client reads the first of duplicated members; so does this one.
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_first_wins, parse_constant=_reject_constant)


@dataclass(frozen=True)
class Reply:
    """One reply of the agent, parsed.

    ``ok`` says whether the command was done; ``text`` is the plain form exactly as ``nc``
    prints it; ``data`` is the whole JSON object (``value``, ``items``, ``message``, ``error``
    and per-command members); ``raw`` the bytes received.
    """

    ok: bool
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    raw: bytes = b""

    @property
    def error(self) -> Optional[str]:
        """The agent's error text when refused (the plain form without ``error: ``)."""
        value = self.data.get("error")
        return value if isinstance(value, str) else None

    @property
    def result(self) -> Any:
        """What :meth:`Client.request` returns: ``items`` (a list of row dicts) when present;
        else ``value`` when the reply reads one value (it has no ``message``); else the whole
        reply dict (a change such as ``var set`` with ``old`` and ``value``, ``version``, ...)."""
        if "items" in self.data:
            return self.data["items"]
        if "value" in self.data and "message" not in self.data:
            return self.data["value"]
        return self.data


def parse_reply(raw: bytes) -> Reply:
    """Parses one reply as the C client does: a JSON object (anything after it is ignored)
    with a boolean ``ok`` and a string ``text``; a NUL byte ends the reply as it ends a C
    string. Raises :class:`hotpatch.ProtocolError` (``the agent's reply is not valid: ...``)."""
    raw = raw.split(b"\0", 1)[0]
    text = raw.decode("utf-8", "surrogateescape")
    try:
        start = len(text) - len(text.lstrip(" \t\n\r"))
        data, _ = _DECODER.raw_decode(text, start)
    except ValueError:
        data = None
    if (not isinstance(data, dict) or not isinstance(data.get("ok"), bool)
            or not isinstance(data.get("text"), str)):
        shown = raw[:200].decode("utf-8", "replace")
        raise errors.ProtocolError(f"the agent's reply is not valid: {shown}", raw)
    return Reply(ok=data["ok"], text=data["text"], data=data, raw=raw)


# ---- the session client -------------------------------------------------------------------------

class Client:
    """A connection to the hotpatch agent of one process, reused for many requests.

    ``Client(pid=1234)`` talks to the agent of process 1234: the socket it listens on (its
    ``HOTPATCH_SOCKET``, ``/tmp/1234.socket`` or its private ``/tmp/hotpatch-1234.*/socket``),
    served by that very process, as root or as its uid (see :mod:`hotpatch.verify`).
    ``Client(socket_path="/run/app.sock")`` talks to the socket at that path if its server runs
    as root or as you, or as ``trust_peer`` (a uid or a user name). Every connect checks this
    before sending anything, and raises :class:`VerificationError` when the check fails.
    ``timeout`` (in seconds, ``None`` for no limit) bounds the connect and each wait for a
    reply.

    The connection is a protocol ``session``, opened by the first request (or by
    :meth:`connect`). If the agent ends the session while idle (its idle timeout, or a
    restart), the next request opens a new one transparently: nothing had been sent, so that
    is safe. If the connection breaks while a request is in flight, :class:`DisconnectedError`
    says so (the request may or may not have been done) and the next request reconnects,
    raising :class:`UnreachableError` if the agent is gone.

    Use it as a context manager to close the session (``quit``) at the end::

        with hotpatch.Client(pid) as agent:
            agent.var_set("age", 42)
            print(agent.var_get("age"))
    """

    def __init__(self, pid: Optional[int] = None, socket_path: Optional[str] = None,
                 timeout: Optional[float] = 10.0, *, connect: bool = False,
                 trust_peer: Optional[Union[int, str]] = None) -> None:
        if (pid is None) == (socket_path is None):
            raise errors.UsageError("give exactly one of pid or socket_path")
        if trust_peer is not None and pid is not None:
            raise errors.UsageError("trust_peer goes with socket_path: the agent of a pid must "
                                    "run as root or as the process's uid")
        if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid < 1):
            raise errors.UsageError(f"invalid pid {pid!r}: expected a process id such as 1234")
        if timeout is not None and timeout <= 0:
            raise errors.UsageError(f"invalid timeout {timeout!r}: expected seconds above 0")
        self.pid: Optional[int] = pid
        self._socket_path: Optional[str] = os.fspath(socket_path) if socket_path else None
        self.trust_peer: Optional[int] = (verify.parse_uid(trust_peer)
                                          if trust_peer is not None else None)
        self.timeout: Optional[float] = timeout
        self._path: Optional[str] = None  # the socket of the current (or last) connection
        self._sock: Optional[socket.socket] = None
        self._buf = b""
        if connect:
            self.connect()

    # -- connection life cycle --

    @property
    def socket_path(self) -> str:
        """The socket this client talks to. For a pid it is found again at each connect: the
        one of the current or last connection, or before the first the name it is expected
        at (:func:`socket_path_for_pid`)."""
        if self._socket_path is not None:
            return self._socket_path
        if self._path is not None:
            return self._path
        assert self.pid is not None
        return socket_path_for_pid(self.pid)

    @property
    def connected(self) -> bool:
        """True while a session connection is open."""
        return self._sock is not None

    def connect(self) -> None:
        """Opens the session now (requests open it on demand). Raises
        :class:`UnreachableError` when the agent cannot be reached or refuses the session."""
        if self._sock is not None:
            return
        sock, path = open_agent(self.pid, self._socket_path, self.timeout, self.trust_peer)
        self._sock, self._buf, self._path = sock, b"", path
        try:
            reply = self._exchange(b"session", "session")
        except errors.Error as e:
            self._drop()
            if isinstance(e, errors.UnreachableError):
                raise
            raise errors.UnreachableError(f"cannot start a session on {path}: {e.message}",
                                          path) from None
        if not reply.ok:
            self._drop()
            raise errors.UnreachableError(
                f"the agent at {path} refused the session: {reply.error}", path)

    def close(self) -> None:
        """Ends the session (``quit``, best effort) and closes the connection. The client may
        be used again afterwards: the next request opens a new session."""
        if self._sock is None:
            return
        try:
            if not self._session_ended():
                self._sock.sendall(b"quit\n", socket.MSG_NOSIGNAL)
                self._read_line("quit")
        except errors.Error:
            pass
        except OSError:
            pass
        finally:
            self._drop()

    def __enter__(self) -> "Client":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.close()

    def __repr__(self) -> str:
        target = f"pid={self.pid}" if self.pid is not None else f"socket_path={self._socket_path!r}"
        return f"hotpatch.Client({target}, connected={self.connected})"

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._buf = None, b""

    def _session_ended(self) -> bool:
        """True when the agent has closed the idle session or sent an unrequested line (its
        idle-timeout notice): the connection cannot serve another request."""
        assert self._sock is not None
        if self._buf:
            return True
        readable, _, _ = select.select([self._sock], [], [], 0)
        return bool(readable)

    # -- one exchange --

    def _read_line(self, request: str) -> bytes:
        assert self._sock is not None
        while b"\n" not in self._buf:
            if len(self._buf) >= REPLY_LIMIT:
                self._drop()
                raise errors.ProtocolError("the reply is larger than the client accepts")
            try:
                chunk = self._sock.recv(65536)
            except InterruptedError:
                continue
            except OSError as e:
                why = _recv_error(e)
                self._drop()
                raise errors.DisconnectedError(
                    f"{why} from {self.socket_path} to {request!r}; it may or may not have been "
                    "carried out", self.socket_path) from None
            if not chunk:
                self._drop()
                gone = (f" (process {self.pid} is no longer running)"
                        if self.pid and not _process_exists(self.pid) else "")
                raise errors.DisconnectedError(
                    f"the agent at {self.socket_path} closed the connection before answering "
                    f"{request!r}{gone}; it may or may not have been carried out",
                    self.socket_path)
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line + b"\n"

    def _exchange(self, line: bytes, request: str, fd: Optional[int] = None) -> Reply:
        assert self._sock is not None
        try:
            send_line(self._sock, line + b"\n", fd)
        except OSError as e:
            self._drop()
            raise errors.DisconnectedError(
                f"cannot send {request!r} to {self.socket_path}: "
                f"{os.strerror(e.errno or errno_mod.EIO)}", self.socket_path) from None
        raw = self._read_line(request)
        try:
            return parse_reply(raw)
        except errors.ProtocolError:
            self._drop()
            raise

    def send(self, line: Word, *, check: bool = True) -> Reply:
        """Sends one request line as typed (``'var set user_name "Ada Lovelace"'``) and returns
        the :class:`Reply`. With ``check`` (the default) a refusal raises
        :class:`RefusedError` carrying the agent's message. The line goes as it is: a
        ``lib load`` typed here sends its path only; :meth:`lib_load` sends the library."""
        return self._send(line, check)

    def _send(self, line: Word, check: bool, library: Optional[bytes] = None) -> Reply:
        """:meth:`send`, with the library (a path) opened and attached as a descriptor."""
        raw = _to_bytes(line).rstrip(b"\r\n")
        if b"\n" in raw or b"\r" in raw:
            raise errors.UsageError("a request is one line; it contains a line break")
        if len(raw) > LINE_LIMIT:
            raise errors.UsageError(
                f"the request is longer than the agent's limit of {LINE_LIMIT} bytes")
        request = raw.decode("utf-8", "replace")
        if raw.split(None, 1)[:1] == [b"quit"]:
            raise errors.UsageError("use close() to end the session")
        fd = open_library(library) if library is not None else None
        try:
            if self._sock is not None and self._session_ended():
                self._drop()  # the agent ended the idle session: nothing was sent, start anew
            self.connect()
            reply = self._exchange(raw, request, fd)
        finally:
            if fd is not None:
                os.close(fd)
        if check and not reply.ok:
            raise errors.RefusedError(reply.error or reply.text.strip(), reply.data, request)
        return reply

    def request(self, line: Word) -> Any:
        """Sends one request line and returns its result (see :attr:`Reply.result`): the value
        for ``var get``, the list of rows for a ``list``, the reply dict for a change. Raises
        :class:`RefusedError` with the agent's message when refused."""
        return self.send(line).result

    def call(self, *words: Any) -> Any:
        """Like :meth:`request`, from separate words, each quoted as the C client quotes it
        (so values may hold spaces); non-string words are formatted by :func:`format_value`.
        ``lib load NAME PATH`` and ``patch apply [--check] PATH`` get an absolute PATH and send
        the file itself as an open descriptor, as the C client does (:class:`LibraryOpenError` if it cannot be opened)."""
        texts = [w if isinstance(w, (str, bytes)) else format_value(w) for w in words]
        prepared = prepare_request(texts, prefix=b"")
        line = b"json " + prepared.line if prepared.json_word else prepared.line
        return self._send(line, True, prepared.library).result

    # -- typed helpers: each sends the words of one command --

    def help(self, family: Optional[str] = None) -> list[dict[str, Any]]:
        """``help [FAMILY]``: the commands, as rows with ``usage``, ``summary``, ``mutates``."""
        return self.call("help", *([family] if family else []))

    def version(self) -> dict[str, Any]:
        """``version``: the reply with ``version``, ``protocol`` and ``capabilities``."""
        return self.call("version")

    def var_list(self) -> list[dict[str, Any]]:
        """``var list``: rows with ``name``, ``type`` and ``value``."""
        return self.call("var", "list")

    def var_get(self, name: str, type: Optional[str] = None) -> Any:
        """``var get [TYPE] NAME``: the value (int, float, bool or str, as the agent types it).
        With ``type``, the agent refuses a variable of another type; and a name nobody registered
        is then a global's symbol (``NAME`` or ``OBJECT:NAME``, static ones too), read as that
        type (its size must be the symbol's)."""
        return self.call("var", "get", *([type] if type else []), name)

    def var_set(self, name: str, value: Any, type: Optional[str] = None) -> dict[str, Any]:
        """``var set [TYPE] NAME VALUE``: sets the variable; returns the reply with ``name``,
        ``old``, ``value`` and ``message``. ``value`` may be a str, int, float or bool. With
        ``type``, a name nobody registered is a global's symbol, set with one atomic store."""
        return self.call("var", "set", *([type] if type else []), name, value)

    def lib_list(self) -> list[dict[str, Any]]:
        """``lib list``: rows with ``name``, ``path`` and ``base``."""
        return self.call("lib", "list")

    def lib_load(self, name: str, path: Union[str, "os.PathLike[str]"]) -> dict[str, Any]:
        """``lib load NAME PATH``: loads the library; returns the reply with ``name``,
        ``path``, ``base`` and ``message``. The file is opened here and sent as a descriptor,
        which the agent loads, so it is this very file whatever the target can see; PATH (made
        absolute here) is then only its name. A bare name that is no file here
        (``libm.so.6``) is sent as a name. Raises :class:`LibraryOpenError` if the file
        cannot be opened."""
        return self.call("lib", "load", name, os.fspath(path))

    def lib_unload(self, name: str, retire: bool = False) -> dict[str, Any]:
        """``lib unload [--retire] NAME``: unloads the library (or, with ``retire``, forgets it
        and leaves it mapped); returns the reply (``message``)."""
        return self.call("lib", "unload", *(["--retire"] if retire else []), name)

    def status(self) -> dict[str, Any]:
        """``status``: the agent's version, how it started, socket, pid, uptime and counts."""
        return self.call("status")

    def detach(self) -> dict[str, Any]:
        """``detach``: the agent stops serving and removes its socket (the library stays; a
        later ``hotpatch.attach(pid)`` starts it again). The connection closes after it."""
        return self.call("detach")

    def history(self) -> list[dict[str, Any]]:
        """``history``: every change made through the agent since it started, oldest first."""
        return self.call("history")

    def diff(self) -> list[dict[str, Any]]:
        """``diff``: the variables and flags that differ from their first-seen values."""
        return self.call("diff")

    def patch_list(self) -> list[dict[str, Any]]:
        """``patch list``: the applied patches, one row each."""
        return self.call("patch", "list")

    def patch_apply(self, path: Union[str, "os.PathLike[str]"],
                    check: bool = False) -> dict[str, Any]:
        """``patch apply [--check] PATH``: checks the patch file and installs all its functions
        in one step (``check``: only checks); returns the reply. The file is opened here and
        sent as a descriptor, as for :meth:`lib_load`, so a path the target cannot see (another
        mount namespace, a private /tmp) still works; a relative PATH is made absolute here.
        Raises :class:`LibraryOpenError` if the file cannot be opened."""
        return self.call("patch", "apply", *(["--check"] if check else []), os.fspath(path))

    def patch_revert(self, name: str) -> dict[str, Any]:
        """``patch revert NAME``: takes all of a patch's functions out in one step."""
        return self.call("patch", "revert", name)

    def func_list(self) -> list[dict[str, Any]]:
        """``func list``: the registered and upgraded functions, one row each."""
        return self.call("func", "list")

    def func_upgrade(self, lib: str, func: str, symbol: Optional[str] = None) -> dict[str, Any]:
        """``func upgrade LIB FUNC [SYMBOL]``: replaces FUNC with SYMBOL (default: FUNC) from
        the library loaded as LIB; returns the reply."""
        return self.call("func", "upgrade", lib, func, *([symbol] if symbol else []))

    def func_rollback(self, func: str) -> dict[str, Any]:
        """``func rollback FUNC``: goes one version back; returns the reply."""
        return self.call("func", "rollback", func)

    def gflags_list(self) -> list[dict[str, Any]]:
        """``gflags list``: the process's gflags flags, one row each."""
        return self.call("gflags", "list")

    def gflags_get(self, name: str) -> Any:
        """``gflags get NAME``: the flag's value."""
        return self.call("gflags", "get", name)

    def gflags_set(self, name: str, value: Any) -> dict[str, Any]:
        """``gflags set NAME VALUE``: sets the flag; returns the reply."""
        return self.call("gflags", "set", name, value)

    def glog_list(self) -> list[dict[str, Any]]:
        """``glog list``: the logging properties, one row each."""
        return self.call("glog", "list")

    def glog_get(self, name: str) -> Any:
        """``glog get NAME``: one logging property's value."""
        return self.call("glog", "get", name)

    def glog_set(self, name: str, value: Any) -> dict[str, Any]:
        """``glog set NAME VALUE``: sets a logging property (``minloglevel WARNING``)."""
        return self.call("glog", "set", name, value)

    def glog_vmodule(self, pattern: str, level: int) -> dict[str, Any]:
        """``glog vmodule PATTERN LEVEL``: sets the verbose level of the matching modules."""
        return self.call("glog", "vmodule", pattern, level)
