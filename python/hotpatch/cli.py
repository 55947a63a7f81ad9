"""The ``hotpatch`` command line, in Python: the same options, output and exit codes as the C
client (``cli/hotpatch.c``), so scripts can use either.

    python3 -m hotpatch -p PID var get age        (or the ``hotpatch`` console script)

Like the C client it sends one ``json ...`` request per run and prints the reply's ``text``
(stdout when the agent did it, stderr when it refused) or, with ``--json``, the JSON line.
Exit status: 0 done, 1 refused by the agent, 2 usage error or agent unreachable.

Like the C client it checks the agent before sending anything (``hotpatch.verify``), sends
the file of ``lib load`` and ``patch apply`` as a descriptor, and escapes control characters
in text printed to a terminal unless ``--raw`` is given (``hotpatch.terminal``). It reads the reply as the C
client does (``hotpatch.creply``, a port of ``cli/json.c``), not with ``json``, so that a
foreign server's odd reply is accepted, refused and shown exactly as the C client shows it.

Options are parsed by a small copy of glibc's ``getopt_long`` in its ``+`` mode (options
stop at the first command word, so ``var set x -5`` keeps its ``-5``), including long-option
prefixes (``--js``), ``--opt=value`` and the same error messages, because the goal is that
both clients behave identically for every command line. Everything is handled as bytes, as
``argv`` is in C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import BinaryIO, Optional, Sequence

from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

from . import __version__, creply, discovery, errors, fleet, helpdata, stale, targets, terminal, \
    verify
from .attach import find_injector
from .client import exchange_once, open_library, prepare_request

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_TROUBLE = 2

USAGE = (
    "usage: hotpatch [-p PID[,PID...] | --pgrep PATTERN | --all | -s SOCKET] [--json] [--raw]\n"
    "                [--timeout MS] [--jobs N] [--trust-peer UID] COMMAND [ARG...]\n"
    "       hotpatch ps [--json] [--prune]\n"
    "       hotpatch help [FAMILY]\n"
    "\n"
    "Talks to the hotpatch agent inside running processes.\n"
    "\n"
    "  -p, --pid PID       the process; its agent is the listening socket it holds at its\n"
    "                      HOTPATCH_SOCKET (%p = pid), /tmp/PID.socket or\n"
    "                      /tmp/hotpatch-PID.*/socket, checked to be served by PID (a\n"
    "                      process in a container: through /proc/PID/root, by the pid it\n"
    "                      has there); PID,PID... or -p again name more processes\n"
    "  --pgrep PATTERN     every process whose command line matches PATTERN (an extended\n"
    "                      regular expression, as pgrep -f), but this client and its parents\n"
    "  --all               every process that has an agent (what 'hotpatch ps' lists)\n"
    "  -s, --socket PATH   talk to the agent socket at PATH (served by root or by you)\n"
    "  --trust-peer UID    with -s: also accept a server running as UID (number or name)\n"
    "  -j, --json          print the agent's JSON reply (one line; a \"pid\" member is added\n"
    "                      for a process, and one that cannot be reached gets a line too)\n"
    "  --raw               print the agent's text as sent even to a terminal, where control\n"
    "                      characters are otherwise shown escaped (\\e, \\x07, \\u009b)\n"
    "  -t, --timeout MS    give up after MS milliseconds (default 10000)\n"
    "  --jobs N            talk to at most N processes at once (default %d, at most %d)\n"
    "  -h, --help          this text;  -V, --version  the client's version\n"
    "\n"
    "With more than one process the command runs on all of them in parallel, and each line\n"
    "of plain output (stdout and stderr) starts with \"PID: \".\n"
    "\n"
    "  ps                  the processes that have an agent: pid, user, how the agent was\n"
    "                      started, uptime, changes, patched functions, version, socket,\n"
    "                      command (--json: one object per line)\n"
    "  ps --prune          remove the stale socket files you own in /tmp (nothing listens)\n"
    "  help [FAMILY]       without -p or -s: the agent's command list, from this build\n"
    "  -p PID attach       bring the agent into a process started without it (ptrace; the\n"
    "                      program sees one new thread and the socket); detach stops it\n"
    "\n"
    "Commands (the agent's 'help' lists all of them):\n"
    "  var list | var get [TYPE] NAME | var set [TYPE] NAME VALUE\n"
    "                      (with TYPE, NAME may be any global's symbol: OBJECT:NAME)\n"
    "  lib list | lib load NAME PATH | lib unload NAME   (lib load sends the file itself)\n"
    "  func list | func upgrade LIB FUNC [SYMBOL] | func rollback FUNC\n"
    "  patch list | patch apply [--check] PATH | patch revert NAME   (apply sends the file)\n"
    "  gflags list | gflags get NAME | gflags set NAME VALUE\n"
    "  glog list | glog get NAME | glog set NAME VALUE | glog vmodule PATTERN LEVEL\n"
    "  status | history | diff | detach | help [FAMILY] | version\n"
    "\n"
    "Exit status: 0 done, 1 refused (by the agent, or attach), 2 usage error or agent or\n"
    "process unreachable; with several processes: 2 when any was unreachable or none\n"
    "matched, else 1 when any refused.\n"
    "Example: hotpatch -p 1234 var set age 42;  hotpatch --pgrep my_server gflags set v 1\n"
).replace("%d", "8", 1).replace("%d", "64", 1)

# (long name, short letter or None, takes an argument) — the C client's option table, in its
# order (the order shows in the "ambiguous" message of a long-option prefix such as --t).
_OPTIONS = (
    (b"pid", b"p", True),
    (b"socket", b"s", True),
    (b"json", b"j", False),
    (b"timeout", b"t", True),
    (b"help", b"h", False),
    (b"version", b"V", False),
    (b"raw", None, False),
    (b"trust-peer", None, True),
    (b"pgrep", None, True),
    (b"all", None, False),
    (b"jobs", None, True),
    (b"prune", None, False),
)


class _Stop(Exception):
    """Ends the run with an exit status (after whatever was printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Stream:
    """One of stdout and stderr as a byte stream, failing as C's stdio fails: a write that
    cannot be done (closed descriptor, full disk, a reader that went away while SIGPIPE is
    ignored) is dropped and changes nothing, neither the exit status nor what else is
    printed. Absent (None: the descriptor was closed when Python started), it drops all."""

    def __init__(self, stream: Optional[BinaryIO]) -> None:
        self.stream = stream
        self.tty = _isatty(stream) if stream is not None else False

    def write(self, data: bytes) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(data)
        except OSError:
            self._give_up()

    def flush(self) -> None:
        if self.stream is None:
            return
        try:
            self.stream.flush()
        except OSError:
            self._give_up()

    def _give_up(self) -> None:
        # What is still buffered must not fail again (or print a traceback) when the
        # interpreter flushes at exit: the descriptor now leads to /dev/null.
        stream, self.stream = self.stream, None
        try:
            fd = stream.fileno() if stream is not None else -1
            if fd >= 0:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass


class _Output:
    """stdout and stderr as byte streams, so replies pass through byte for byte, and whether
    each is a terminal (plain text printed there is escaped unless --raw)."""

    def __init__(self, out: Optional[BinaryIO], err: Optional[BinaryIO]) -> None:
        self.out, self.err = _Stream(out), _Stream(err)
        self.out_tty, self.err_tty = self.out.tty, self.err.tty

    def fail(self, message: str) -> _Stop:
        self.err.write(b"hotpatch: " + os.fsencode(message) + b"\n")
        return _Stop(EXIT_TROUBLE)


def _isatty(stream: BinaryIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _parse_long(text: bytes, low: int, high: int) -> Optional[int]:
    """strtol(text, &end, 10) accepting only a whole string, within [low, high]."""
    i = 0
    while i < len(text) and text[i] in b" \t\n\v\f\r":
        i += 1
    j = i
    if j < len(text) and text[j] in b"+-":
        j += 1
    digits = text[j:]
    if not digits or not digits.isdigit():
        return None
    value = int(text[i:])
    if value < low or value > high or abs(value) > (1 << 63):
        return None
    return value


class _Getopt:
    """glibc getopt_long(argc, argv, "+p:s:jt:hV", longopts) over byte arguments."""

    def __init__(self, prog: bytes, args: Sequence[bytes], io: _Output) -> None:
        self.prog, self.args, self.io = prog, list(args), io
        self.index = 0          # optind - 1
        self.cluster = b""      # the rest of a short-option cluster being read

    def _error(self, message: bytes) -> str:
        self.io.err.write(self.prog + b": " + message + b"\n")
        return "?"

    def next(self) -> Optional[tuple[str, Optional[bytes]]]:
        """The next (letter, argument), ("?", None) after a printed error, or None at the end."""
        if not self.cluster:
            if self.index >= len(self.args):
                return None
            arg = self.args[self.index]
            if arg == b"--":
                self.index += 1
                return None
            if not arg.startswith(b"-") or arg == b"-":
                return None
            if arg.startswith(b"--"):
                self.index += 1
                return self._long(arg[2:])
            self.cluster = arg[1:]
            self.index += 1
        return self._short()

    def _long(self, body: bytes) -> tuple[str, Optional[bytes]]:
        name, eq, value = body.partition(b"=")
        exact = [o for o in _OPTIONS if o[0] == name]
        found = exact or [o for o in _OPTIONS if o[0].startswith(name)]
        if not found:
            return self._error(b"unrecognized option '--" + body + b"'"), None
        if len(found) > 1:
            choices = b"".join(b" '--" + o[0] + b"'" for o in found)
            return self._error(b"option '--" + body + b"' is ambiguous; possibilities:"
                               + choices), None
        long_name, letter, takes = found[0]
        key = (letter or long_name).decode()  # long-only options are known by their name
        if eq:
            if not takes:
                return self._error(b"option '--" + long_name
                                   + b"' doesn't allow an argument"), None
            return key, value
        if takes:
            if self.index >= len(self.args):
                return self._error(b"option '--" + long_name + b"' requires an argument"), None
            self.index += 1
            return key, self.args[self.index - 1]
        return key, None

    def _short(self) -> tuple[str, Optional[bytes]]:
        c, self.cluster = self.cluster[:1], self.cluster[1:]
        spec = [o for o in _OPTIONS if o[1] == c]
        if not spec:
            return self._error(b"invalid option -- '" + c + b"'"), None
        letter, takes = c.decode(), spec[0][2]
        if not takes:
            return letter, None
        if self.cluster:
            value, self.cluster = self.cluster, b""
            return letter, value
        if self.index >= len(self.args):
            return self._error(b"option requires an argument -- '" + c + b"'"), None
        self.index += 1
        return letter, self.args[self.index - 1]


class _Options:
    """What the command line asked for."""

    def __init__(self) -> None:
        self.pids: list[int] = []          # -p, in the order given
        self.pgrep: Optional[bytes] = None
        self.all = False
        self.jobs = fleet.JOBS_DEFAULT
        self.prune = False
        self.socket_path: Optional[bytes] = None
        self.as_json = False
        self.raw = False
        self.trust_peer: Optional[int] = None
        self.timeout_ms = 10000
        self.words: list[bytes] = []


    def names_processes(self) -> bool:
        return bool(self.pids) or self.pgrep is not None or self.all


def _parse_options(prog: bytes, args: Sequence[bytes], io: _Output,
                   o: Optional[_Options] = None) -> tuple[_Options, int]:
    """Parses options into ``o`` (a new one by default); returns it and the index of the first
    word that is not an option."""
    o = o or _Options()
    getopt = _Getopt(prog, args, io)
    while (opt := getopt.next()) is not None:
        letter, value = opt
        if letter == "p":
            assert value is not None
            try:
                targets.parse_pid_argument(value, o.pids)
            except errors.UsageError as e:
                raise io.fail(e.message) from None
        elif letter == "pgrep":
            o.pgrep = value
        elif letter == "all":
            o.all = True
        elif letter == "prune":
            o.prune = True
        elif letter == "jobs":
            assert value is not None
            jobs = _parse_long(value, 1, fleet.JOBS_LIMIT)
            if jobs is None:
                raise io.fail(f"invalid --jobs '{os.fsdecode(value)}': expected a number from "
                              f"1 to {fleet.JOBS_LIMIT}")
            o.jobs = jobs
        elif letter == "s":
            o.socket_path = value
        elif letter == "j":
            o.as_json = True
        elif letter == "t":
            assert value is not None
            parsed = _parse_long(value, 1, 3600000)
            if parsed is None:
                raise io.fail(f"invalid timeout '{os.fsdecode(value)}': expected milliseconds "
                              "from 1 to 3600000")
            o.timeout_ms = parsed
        elif letter == "trust-peer":
            assert value is not None
            try:
                o.trust_peer = verify.parse_uid(value)
            except errors.UsageError:
                raise io.fail(f"invalid --trust-peer '{os.fsdecode(value)}': expected a uid "
                              "or a user name") from None
        elif letter == "raw":
            o.raw = True
        elif letter == "h":
            io.out.write(USAGE.encode())
            raise _Stop(EXIT_OK)
        elif letter == "V":
            io.out.write(f"hotpatch {__version__} (protocol 1)\n".encode())
            raise _Stop(EXIT_OK)
        else:
            io.err.write(USAGE.encode())
            raise _Stop(EXIT_TROUBLE)
    o.words = list(args[getopt.index:])
    return o, getopt.index


def _report(io: _Output, error: errors.Error) -> int:
    """Prints a client-side failure as the C client does: ``hotpatch: `` and the message,
    then each explanation line."""
    lines = [error.message]
    if isinstance(error, errors.UnreachableError):
        lines += list(error.hints)
    for line in lines:
        io.err.write(b"hotpatch: " + os.fsencode(line) + b"\n")
    return error.exit_code


def _unreached(pid: int, message: str) -> bytes:
    """With --json, the line of a process that gave no reply: why, and its pid."""
    why = os.fsencode(message).split(b"\n", 1)[0]
    return b'{"ok":false,"reached":false,"error":' + creply.write_string(why) + b',"pid":%d}\n' % pid


def _with_pid(reply: bytes, pid: int) -> bytes:
    """The reply with ``"pid":PID`` added last, before its closing brace (a JSON reader that
    keeps the last of two members of one name, as most do, then reads the client's)."""
    close = reply.rfind(b"}")
    if close < 0:
        return reply
    before = close
    while before > 0 and reply[before - 1] in b" \t\r\n":
        before -= 1
    empty = before > 0 and reply[before - 1] == ord("{")
    return reply[:close] + (b"" if empty else b",") + b'"pid":%d' % pid + reply[close:]


def _print_text(io: _Output, o: _Options, ok: bool, text: bytes, reply: bytes) -> None:
    """The reply's plain text on stdout (done) or stderr (refused), escaped for a terminal
    unless --raw: the text comes from the process and must not drive the operator's tty.
    Escaped, it is shown whole (a NUL inside shows as \\x00); otherwise it is written up to
    a NUL byte, as the C client's fputs() writes it."""
    stream, tty = (io.out, io.out_tty) if ok else (io.err, io.err_tty)
    if tty and not o.raw:
        value = creply.member_string(reply, b"value")
        stream.write(terminal.escape(text, value is not None and text == value + b"\n"))
    else:
        stream.write(creply.as_c_string(text))


def _one(io: _Output, o: _Options, as_json: bool, line: bytes, fd: Optional[int],
         pid: Optional[int]) -> int:
    """One request to one target (a process, or the socket of -s), printed as the C client's
    exchange() prints it; the exit status."""
    path = os.fsdecode(o.socket_path) if o.socket_path is not None else None
    try:
        raw = exchange_once(path, line, pid, o.timeout_ms / 1000, trust_peer=o.trust_peer,
                            fd=fd)
    except errors.Error as e:
        code = _report(io, e)
        if as_json and pid and code == EXIT_TROUBLE:
            io.out.write(_unreached(pid, e.message))
        return code
    # Read as the C client reads it (hotpatch.creply): a C string, ok and text looked up
    # member by member; anything else in the reply is not checked.
    reply = creply.as_c_string(raw)
    ok, text = creply.member_bool(reply, b"ok"), creply.member_string(reply, b"text")
    if ok is None or text is None:
        message = b"the agent's reply is not valid: " + reply[:200]
        io.err.write(b"hotpatch: " + message + b"\n")
        if as_json and pid:
            io.out.write(_unreached(pid, os.fsdecode(message)))
        return EXIT_TROUBLE
    if as_json:
        io.out.write(_with_pid(reply, pid) if pid else reply)
    else:
        _print_text(io, o, ok, text, reply)
    return EXIT_OK if ok else EXIT_REFUSED


def _capture(io: _Output) -> _Output:
    """Output kept in memory for one of many targets, escaped as the real output would be."""
    captured = _Output(BytesIO(), BytesIO())
    captured.out_tty, captured.err_tty = io.out_tty, io.err_tty
    return captured


def _many(io: _Output, o: _Options, as_json: bool, line: bytes, fd: Optional[int],
          pids: list[int]) -> int:
    """The request on every process, at most --jobs at once; each one's output in pid-list
    order, every line "PID: " first (but the JSON lines, whose "pid" says whose they are)."""
    def run(pid: int) -> tuple[int, bytes, bytes]:
        captured = _capture(io)
        code = _one(captured, o, as_json, line, fd, pid)
        assert captured.out.stream is not None and captured.err.stream is not None
        return code, captured.out.stream.getvalue(), captured.err.stream.getvalue()

    status = EXIT_OK
    with ThreadPoolExecutor(max_workers=min(o.jobs, len(pids))) as pool:
        for pid, (code, out, err) in zip(pids, pool.map(run, pids)):
            io.out.write(out if as_json else discovery.prefixed(pid, out))
            io.err.write(discovery.prefixed(pid, err))
            status = fleet.combine_status(status, code)
    return status


def _command(io: _Output, o: _Options) -> int:
    if o.names_processes() == (o.socket_path is not None):
        io.err.write(b"hotpatch: give exactly one of -p PID (or --pgrep, --all) or -s SOCKET\n")
        io.err.write(USAGE.encode())
        return EXIT_TROUBLE
    if o.prune:
        raise io.fail("--prune goes with ps: hotpatch ps --prune")
    if not o.words or (o.words[0] == b"json" and len(o.words) == 1):
        io.err.write(USAGE.encode())
        return EXIT_TROUBLE
    try:
        request = prepare_request(o.words)
        as_json = o.as_json or request.json_word
        fd = open_library(request.library) if request.library is not None else None
    except errors.Error as e:
        return _report(io, e)
    try:
        if o.socket_path is not None:
            return _one(io, o, as_json, request.line, fd, None)
        try:
            pids = targets.select_targets(o.pids, o.pgrep, o.all)
        except errors.Error as e:
            return _report(io, e)
        if not pids:
            raise io.fail(f"no process matches --pgrep '{os.fsdecode(o.pgrep)}'"
                          if o.pgrep is not None else "no process has an agent")
        if len(pids) == 1:
            return _one(io, o, as_json, request.line, fd, pids[0])
        return _many(io, o, as_json, request.line, fd, pids)
    finally:
        if fd is not None:
            os.close(fd)


def _ps(prog: bytes, words: Sequence[bytes], io: _Output, o: _Options) -> int:
    """``hotpatch ps [OPTIONS]``: its options may follow the word too."""
    o, index = _parse_options(prog, words[1:], io, o)
    if index < len(words) - 1:
        raise io.fail(f"ps takes no arguments, not '{os.fsdecode(words[1 + index])}'")
    if o.names_processes() or o.socket_path is not None:
        raise io.fail("ps lists every agent: it takes no -p, --pgrep, --all or -s")
    if o.prune:
        return _prune(io, o)
    try:
        agents = discovery.find_agents()
    except errors.Error as e:
        return _report(io, e)
    rows = discovery.ask_all(agents, o.jobs, o.timeout_ms / 1000)
    for row in rows:
        io.err.write(row.stderr)
    if o.as_json:
        io.out.write(b"".join(row.json + b"\n" for row in rows))
    else:
        io.out.write(discovery.table(rows))
    return EXIT_OK if all(row.ok for row in rows) else EXIT_TROUBLE


def _prune(io: _Output, o: _Options) -> int:
    failed = []

    def fail(message: str) -> None:
        failed.append(message)
        io.err.write(b"hotpatch: " + os.fsencode(message) + b"\n")

    def report(path: bytes, directory: Optional[bytes]) -> None:
        io.out.write(stale.removal_line(path, directory, o.as_json))

    try:
        stale.prune(report, fail)
    except OSError as e:
        raise io.fail(f"cannot read /tmp: {os.strerror(e.errno or 0)}") from None
    return EXIT_TROUBLE if failed else EXIT_OK


def _help(words: Sequence[bytes], io: _Output, o: _Options) -> int:
    """``hotpatch help [FAMILY]`` without an agent: the agent's own answer, from this build."""
    if len(words) > 2:
        raise io.fail("too many arguments: usage: hotpatch help [FAMILY]")
    family = os.fsdecode(words[1]) if len(words) == 2 else None
    try:
        entry = helpdata.help_entry(family)
    except (OSError, ValueError, KeyError) as e:
        raise io.fail(str(e)) from None
    if entry is None:
        raise io.fail(f"no commands in family '{family or ''}'; 'hotpatch help' lists them all")
    io.out.write((entry["json"] if o.as_json else entry["text"]).encode("utf-8",
                                                                          "surrogateescape"))
    return EXIT_OK


def _attach(prog: bytes, args: Sequence[bytes], io: _Output) -> int:
    """``-p PID attach``: the C client's injector does it (hotpatch/attach.py says why), with
    the same arguments, so its output and exit status are the C client's own."""
    try:
        injector = find_injector()
    except errors.Error as e:
        return _report(io, e)
    run = subprocess.run([injector, *args], capture_output=True)
    io.out.write(run.stdout)
    io.err.write(run.stderr)
    return run.returncode


def _run(prog: bytes, args: Sequence[bytes], io: _Output) -> int:
    o, _ = _parse_options(prog, args, io)
    if o.words and o.words[0] == b"attach":
        return _attach(prog, args, io)
    bare = not o.names_processes() and o.socket_path is None and bool(o.words)
    if bare and o.words[0] == b"ps":
        return _ps(prog, o.words, io, o)
    if bare and o.words[0] == b"help" and not o.prune:
        return _help(o.words, io, o)
    return _command(io, o)


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Runs the CLI with ``argv`` (default ``sys.argv[1:]``) and returns the exit status.

    ``prog`` is the name in option-parsing errors (glibc prints the C client's ``argv[0]``):
    the console script passes its own path, ``python3 -m hotpatch`` uses ``hotpatch``.
    """
    args = [os.fsencode(a) for a in (sys.argv[1:] if argv is None else argv)]
    io = _Output(_binary(sys.stdout), _binary(sys.stderr))
    try:
        code = _run(os.fsencode(prog or "hotpatch"), args, io)
    except _Stop as stop:
        code = stop.code
    io.out.flush()
    io.err.flush()
    return code


def _binary(stream: Optional[object]) -> Optional[BinaryIO]:
    """The byte stream under sys.stdout or sys.stderr (None when that descriptor was closed)."""
    return getattr(stream, "buffer", None) if stream is not None else None


def _as_a_program() -> None:
    """The entry points run as the C client runs: with SIGPIPE at its default, so that
    writing to a reader that went away ends the process by that signal (status 141 in a
    shell), where Python would ignore it and get an error instead."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def console_main() -> int:
    """Entry point of the installed ``hotpatch`` console script."""
    _as_a_program()
    return main(prog=sys.argv[0])
