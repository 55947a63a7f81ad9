"""Escaping the agent's plain text before it reaches a terminal.

Why: the text a CLI prints comes from the process it talks to (a variable's value, a library
path, an error naming what was sent), and a terminal obeys control sequences in what it
prints. A value such as ``"\\x1b]0;owned\\x07"`` would retitle the window, others can move the
cursor, rewrite earlier lines or, on some terminals, answer back into the shell; a C1 control
(U+009B is CSI) does the same in UTF-8 terminals; a newline inside a value could forge a line
that looks like the client's own. So when plain output goes to a terminal (and ``--raw`` is
not given) both CLIs show such bytes as visible escapes, by the same rules (the shared spec):

* bytes 0x00-0x1F except the line-structure ``\\n``, and 0x7F: ``\\e`` (ESC), ``\\t``, ``\\r``,
  else ``\\xNN`` (lowercase hex);
* C1 controls U+0080-U+009F (UTF-8 ``C2 80``-``C2 9F``): ``\\u0080``-``\\u009f``;
* bytes that are not valid UTF-8: ``\\xNN``, one per byte;
* a bare value (the reply's string ``value`` is its ``text`` without the final newline): its
  own newlines too (``\\n``); the final newline stays.

Everything else (printable ASCII, valid UTF-8 from U+00A0, backslash) is unchanged. Output that
is not a terminal, ``--json`` and ``--raw`` are exactly as the agent sent them; the Python API
returns data and escapes nothing.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

__all__ = ["escape", "is_bare_value"]

#: What is escaped: C0 controls but newline, DEL, C1 controls, and the stand-ins Python's
#: ``surrogateescape`` gives to bytes that are not valid UTF-8 (U+DC80-U+DCFF).
_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\udc80-\udcff]")
#: The same, newline included: for the inside of a bare value.
_UNSAFE_IN_VALUE = re.compile("[\x00-\x1f\x7f-\x9f\udc80-\udcff]")
_NAMED = {"\x1b": "\\e", "\t": "\\t", "\r": "\\r", "\n": "\\n"}


def _escape_one(match: "re.Match[str]") -> str:
    code = ord(match.group())
    if code >= 0xDC80:
        return f"\\x{code - 0xDC00:02x}"  # an undecodable byte, shown as that byte
    if 0x80 <= code <= 0x9F:
        return f"\\u{code:04x}"
    return _NAMED.get(match.group(), f"\\x{code:02x}")


def _escape_text(data: bytes, newlines: bool) -> bytes:
    # Decoding with surrogateescape gives every byte that is not part of a valid UTF-8
    # sequence its own stand-in, so escaping those is escaping exactly the invalid bytes.
    text = data.decode("utf-8", "surrogateescape")
    pattern = _UNSAFE_IN_VALUE if newlines else _UNSAFE
    return pattern.sub(_escape_one, text).encode("utf-8")


def is_bare_value(reply: Mapping[str, Any]) -> bool:
    """True when the reply is one value shown as is: a string ``value`` whose ``text`` is
    that value and a newline. Its newlines are then part of the value, not line structure."""
    value, text = reply.get("value"), reply.get("text")
    return isinstance(value, str) and isinstance(text, str) and text == value + "\n"


def escape(data: bytes, bare_value: bool = False) -> bytes:
    """``data`` (the reply's text as the C client would write it) made safe for a terminal by
    the rules above; with ``bare_value``, newlines are escaped too except a final one."""
    if not bare_value:
        return _escape_text(data, newlines=False)
    if data.endswith(b"\n"):
        return _escape_text(data[:-1], newlines=True) + b"\n"
    return _escape_text(data, newlines=True)
