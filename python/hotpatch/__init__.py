"""hotpatch — the Python client of the hotpatch agent (standard library only).

Scripts use :class:`Client`, which keeps one session connection open for many requests::

    import hotpatch

    with hotpatch.Client(pid=1234) as agent:
        print(agent.var_get("age"))            # 10
        agent.var_set("user_name", "Ada Lovelace")
        try:
            agent.var_set("age", "abc")
        except hotpatch.RefusedError as e:
            print("refused:", e.message)

Many processes at once: ``hotpatch.Fleet(pgrep="my_server").call("gflags", "set", "v", 1)``
returns how each answered (``.exit_code`` as the CLI's); ``hotpatch.list_agents()`` lists every
agent as ``hotpatch ps --json`` does, and ``hotpatch.prune()`` removes stale socket files.

A process started without the agent gets one with ``hotpatch.attach(pid)`` (which runs the C
client's injector, see :mod:`hotpatch.attach`); ``Client.detach()`` stops it again.

The command line is ``python3 -m hotpatch -p PID COMMAND...`` (or the ``hotpatch`` console
script after ``pip install``), identical in options, output and exit codes to the C client.
The protocol is described in the project's docs/protocol.md.
"""

from .errors import (
    ConnectionError,
    DisconnectedError,
    Error,
    LibraryOpenError,
    ProtocolError,
    RefusedError,
    UnreachableError,
    UsageError,
    VerificationError,
)

#: The client's version; the C client of the same release reports the same one.
__version__ = "0.2.0"
#: The protocol version this client speaks.
PROTOCOL_VERSION = 1

from .attach import attach  # noqa: E402
from .client import Client, Reply, build_request, quote_word, socket_path_for_pid  # noqa: E402
from .discovery import list_agents  # noqa: E402
from .fleet import Fleet, FleetResult, TargetResult  # noqa: E402
from .stale import prune  # noqa: E402

__all__ = [
    "attach",
    "Client",
    "Reply",
    "Fleet",
    "FleetResult",
    "TargetResult",
    "list_agents",
    "prune",
    "Error",
    "UsageError",
    "LibraryOpenError",
    "ConnectionError",
    "UnreachableError",
    "VerificationError",
    "DisconnectedError",
    "ProtocolError",
    "RefusedError",
    "build_request",
    "quote_word",
    "socket_path_for_pid",
    "PROTOCOL_VERSION",
    "__version__",
]
