"""Exceptions raised by the hotpatch Python client.

Every failure is a subclass of :class:`hotpatch.Error`, so a script can catch all of them with
one ``except``, or tell them apart by class. The classes follow the C client's exit codes,
which is why each carries ``exit_code``: the CLI turns an exception into the exit status
without a second table.

    Error
    ├── UsageError          the request cannot be formed (bad options or arguments)     exit 2
    │   └── LibraryOpenError    ``lib load``: the library cannot be opened here
    ├── ConnectionError     talking to the agent failed                                  exit 2
    │   ├── UnreachableError    no such process, no agent, or could not connect
    │   │   └── VerificationError   the server is not the agent it should be: nothing was sent
    │   └── DisconnectedError   the connection broke, or no reply came in time
    ├── ProtocolError       the agent answered something that is not a valid reply       exit 2
    └── RefusedError        the agent answered ``"ok": false``; carries its message      exit 1

``hotpatch.ConnectionError`` is deliberately not the builtin ``ConnectionError`` (an
``OSError``): these errors are about the agent, and the builtin would drag ``errno``
semantics in. Refer to it as ``hotpatch.ConnectionError``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

__all__ = [
    "Error",
    "UsageError",
    "LibraryOpenError",
    "ConnectionError",
    "UnreachableError",
    "VerificationError",
    "DisconnectedError",
    "ProtocolError",
    "RefusedError",
]


class Error(Exception):
    """Base class of every error of the hotpatch client.

    ``str(err)`` is one line saying what went wrong. ``exit_code`` is the C client's exit
    status for the same failure (1 refused by the agent, 2 anything else).
    """

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message: str = message


class UsageError(Error, ValueError):
    """The request could not be formed: a bad option, a missing command, a word with a line
    break, a request longer than the agent accepts, or an argument a helper cannot send."""


class LibraryOpenError(UsageError):
    """``lib load NAME PATH``: the library could not be opened here. The client sends the
    library itself (an open descriptor), so a file the client cannot open is refused before
    anything is sent. ``path`` is the path tried, ``errno`` the open error."""

    def __init__(self, path: str, errno: int, message: str) -> None:
        super().__init__(message)
        self.path: str = path
        self.errno: int = errno


class ConnectionError(Error):  # noqa: A001 - hotpatch.ConnectionError on purpose (see above)
    """Talking to the agent failed (see the subclasses). ``socket_path`` is the socket used."""

    def __init__(self, message: str, socket_path: Optional[str] = None) -> None:
        super().__init__(message)
        self.socket_path: Optional[str] = socket_path


class UnreachableError(ConnectionError):
    """No connection could be made: no such process, the process holds no agent socket, no
    agent listens on the socket, or no permission; or (the subclass
    :class:`VerificationError`) the server failed the checks made before sending.

    ``hints`` holds the explanation lines the C client prints after the first one (for
    example how to start an agent); ``errno`` is the connect error, when there was one.
    """

    def __init__(
        self,
        message: str,
        socket_path: Optional[str] = None,
        hints: Sequence[str] = (),
        errno: Optional[int] = None,
    ) -> None:
        super().__init__(message, socket_path)
        self.hints: tuple[str, ...] = tuple(hints)
        self.errno: Optional[int] = errno

    def __str__(self) -> str:
        return "\n".join((self.message, *self.hints))


class VerificationError(UnreachableError):
    """The server at the socket is not the agent it must be, so nothing was sent: it is
    served by another process or another uid than allowed, the process holds no such listening
    socket, its pid was reused while connecting, or ``/proc`` could not be read to check.
    A subclass of :class:`UnreachableError`, so code that catches that keeps working."""


class DisconnectedError(ConnectionError):
    """The connection broke after it was made: the agent closed it or died, the send failed,
    or no reply came within the timeout. A request sent before the break may or may not have
    been carried out; the message says which request was in flight."""


class ProtocolError(Error):
    """The agent's reply is not a valid protocol reply (not a JSON object with ``ok`` and
    ``text``, or larger than the client accepts). ``reply`` holds the raw bytes received."""

    def __init__(self, message: str, reply: bytes = b"") -> None:
        super().__init__(message)
        self.reply: bytes = reply


class RefusedError(Error):
    """The agent refused the request (``"ok": false``).

    ``message`` (and ``str(err)``) is the agent's error text, without the ``error: `` prefix;
    ``reply`` is the whole JSON reply; ``request`` the line that was sent.
    """

    exit_code = 1

    def __init__(self, message: str, reply: Optional[Mapping[str, Any]] = None,
                 request: Optional[str] = None) -> None:
        super().__init__(message)
        self.reply: dict[str, Any] = dict(reply or {})
        self.request: Optional[str] = request

    @property
    def text(self) -> str:
        """The plain form of the refusal, exactly as ``nc`` prints it (``error: ...\\n``)."""
        text = self.reply.get("text")
        return text if isinstance(text, str) else f"error: {self.message}\n"

