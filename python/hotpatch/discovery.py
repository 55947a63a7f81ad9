"""Finding every agent the caller may reach, and ``hotpatch ps``'s listing of them — by the C
client's rules and in its words (cli/ps.c), so both clients list the same agents the same way.

An agent is found as ``-p`` finds one (:func:`hotpatch.verify.locate_agent`): a listening
socket the process itself holds at one of the agent's names (in a container, through
``/proc/PID/root``). Each is then asked ``status`` only after the same verification as any
request, several at once.

Cells that come from a process (its command line, a socket path it chose) are escaped as the
reply text is on a terminal, always, so a cell is one line and cannot drive the terminal; the
command is cut to 120 bytes in the table (at a character boundary), whole in the JSON line.
"""

from __future__ import annotations

import os
import pwd
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

from . import creply, errors, terminal, verify
from .targets import TARGETS_LIMIT, all_pids, command_line

__all__ = ["Agent", "find_agents", "list_agents"]

_COMMAND_SHOWN = 120
_HEADERS = (b"PID", b"USER", b"STARTED", b"UPTIME", b"CHANGES", b"PATCHED", b"VERSION",
            b"SOCKET", b"COMMAND")


@dataclass(frozen=True)
class Agent:
    """A process with an agent socket: the process as read, the path its agent is reached
    at, and its command line (arguments joined by spaces)."""

    process: verify.Process
    socket_path: bytes
    command: bytes


def find_agents() -> list[Agent]:
    """Every process the caller may look into that holds an agent socket, in pid order."""
    found = []
    me = os.getpid()
    for pid in all_pids():
        if pid == me:
            continue
        try:
            process = verify.identify(pid)
            bound = verify.locate_agent(process)
        except verify._Unreadable:
            continue
        if bound is None:
            continue
        try:
            command = command_line(pid)
        except OSError:
            command = b""
        if len(found) >= TARGETS_LIMIT:
            raise errors.UsageError(f"too many processes: at most {TARGETS_LIMIT}")
        found.append(Agent(process, os.fsencode(process.root) + bound, command))
    return found


# ---- asking each --------------------------------------------------------------------------------

def ask_status(pid: int, timeout: float) -> tuple[int, bytes, bytes]:
    """``json status`` to the verified agent of ``pid``, as the C client's child does it:
    (exit status, the reply line, the client's messages)."""
    from .client import exchange_once
    try:
        raw = exchange_once(None, b"json status", pid, timeout)
    except errors.Error as e:
        lines = [e.message, *(e.hints if isinstance(e, errors.UnreachableError) else ())]
        return 2, b"", b"".join(b"hotpatch: " + os.fsencode(line) + b"\n" for line in lines)
    reply = creply.as_c_string(raw)
    ok = creply.member_bool(reply, b"ok")
    if ok is None or creply.member_string(reply, b"text") is None:
        return 2, b"", b"hotpatch: the agent's reply is not valid: " + reply[:200] + b"\n"
    return (0 if ok else 1), reply, b""


def escape_cell(data: bytes) -> bytes:
    """cli/terminal.c's escape_cell(): escaped for a terminal, every newline as ``\\n``."""
    return b"\\n".join(terminal.escape(piece) for piece in data.split(b"\n"))


def _uptime(s: int) -> bytes:
    if s < 60:
        return b"%ds" % s
    if s < 3600:
        return b"%dm%02ds" % (s // 60, s % 60)
    if s < 86400:
        return b"%dh%02dm" % (s // 3600, s % 3600 // 60)
    return b"%dd%02dh" % (s // 86400, s % 86400 // 3600)


def _user(uid: int) -> bytes:
    try:
        name = pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        name = ""
    return os.fsencode(name) if name else str(uid).encode()


def _command_cell(command: bytes) -> bytes:
    n = len(command)
    if n > _COMMAND_SHOWN:
        n = _COMMAND_SHOWN
        while n > 0 and command[n] & 0xC0 == 0x80:
            n -= 1
    return escape_cell(command[:n])


def _c_string(reply: bytes, key: bytes) -> Optional[bytes]:
    value = creply.member_string(reply, key)
    return creply.as_c_string(value) if value is not None else None


def _status_fields(reply: bytes) -> Optional[tuple[bytes, bytes, int, int, int]]:
    if creply.member_bool(reply, b"ok") is not True:
        return None
    version, started = _c_string(reply, b"version"), _c_string(reply, b"started")
    uptime, changes, patched = (creply.member_integer(reply, k)
                                for k in (b"uptime_s", b"changes", b"patched_functions"))
    if version is None or started is None or None in (uptime, changes, patched):
        return None
    return version, started, uptime, changes, patched  # type: ignore[return-value]


def _failure(status: int, out: bytes, err: bytes) -> bytes:
    if status != 2:
        text = _c_string(out, b"error")
        if text is None:
            text = _c_string(out, b"text")
        if text is not None:
            return text.split(b"\n", 1)[0]
    if err.startswith(b"hotpatch: "):
        err = err[10:]
    return err.split(b"\n", 1)[0]


@dataclass
class Row:
    """One agent of the listing: its table cells, its JSON line and what goes to stderr."""

    cells: list[bytes]
    json: bytes
    stderr: bytes
    ok: bool


def make_row(agent: Agent, status: int, out: bytes, err: bytes) -> Row:
    """The row of one agent from its answer to ``status`` (cli/ps.c's got_status())."""
    p = agent.process
    user = _user(p.uid)
    head = (b'{"pid":%d,"ns_pid":%d,"user":' % (p.pid, p.own_pid) + creply.write_string(user)
            + b',"uid":%d,"command":' % p.uid + creply.write_string(agent.command)
            + b',"socket":' + creply.write_string(agent.socket_path))
    fields = _status_fields(out) if status == 0 else None
    cells = [str(p.pid).encode(), escape_cell(user)] + [b""] * 5 + [
        escape_cell(agent.socket_path), _command_cell(agent.command)]
    if fields is not None:
        version, started, uptime, changes, patched = fields
        cells[2:7] = [escape_cell(started), _uptime(uptime), str(changes).encode(),
                      str(patched).encode(), escape_cell(version)]
        line = (head + b',"ok":true,"version":' + creply.write_string(version)
                + b',"started":' + creply.write_string(started)
                + b',"uptime_s":%d,"changes":%d,"patched_functions":%d}' % (uptime, changes,
                                                                            patched))
        return Row(cells, line, b"", True)
    cells[2:7] = [b"-"] * 5
    error = _failure(status, out, err)
    line = head + b',"ok":false,"error":' + creply.write_string(error) + b"}"
    stderr = prefixed(p.pid, err) if status == 2 else b"%d: error: " % p.pid + error + b"\n"
    return Row(cells, line, stderr, False)


def prefixed(pid: int, text: bytes) -> bytes:
    """cli/fleet.c's write_prefixed(): each line with ``PID: `` before it (a last line without
    its newline gets one)."""
    out = bytearray()
    i = 0
    while i < len(text):
        nl = text.find(b"\n", i)
        end = nl if nl >= 0 else len(text)
        out += b"%d: " % pid + text[i:end] + b"\n"
        i = end + 1
    return bytes(out)


def table(rows: list[Row]) -> bytes:
    """The listing as the C client prints it: columns as wide as their widest cell, two
    spaces apart, the last one unpadded."""
    width = [max([len(h)] + [len(r.cells[c]) for r in rows]) for c, h in enumerate(_HEADERS)]
    out = bytearray()
    for cells in [list(_HEADERS)] + [r.cells for r in rows]:
        for c, cell in enumerate(cells):
            out += cell + b"\n" if c == len(cells) - 1 else cell.ljust(width[c]) + b"  "
    return bytes(out)


def ask_all(agents: list[Agent], jobs: int = 8, timeout: float = 10.0) -> list[Row]:
    """Asks every agent ``status``, at most ``jobs`` at once; the rows in agent order."""
    if not agents:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(agents)))) as pool:
        answers = list(pool.map(lambda a: ask_status(a.process.pid, timeout), agents))
    return [make_row(a, *answer) for a, answer in zip(agents, answers)]


def list_agents(jobs: int = 8, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every agent the caller may reach, as ``hotpatch ps --json`` lists them: dicts with
    ``pid``, ``ns_pid``, ``user``, ``uid``, ``command``, ``socket``, ``ok`` and, from the
    agent's ``status``, ``version``, ``started``, ``uptime_s``, ``changes`` and
    ``patched_functions`` (or ``error`` when it could not be asked)."""
    import json
    rows = ask_all(find_agents(), jobs, timeout)
    return [json.loads(r.json.decode("utf-8", "replace")) for r in rows]
