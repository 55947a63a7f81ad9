"""The members of a reply read exactly as the C client reads them (``cli/json.c``), for the
CLI, whose output must be the C client's byte for byte.

Why a second reader: the C client does not parse the whole reply. It walks the top-level
members of the object up to the one it wants (the first of duplicated names wins, members
after it are never looked at, other values are only skipped, numbers loosely), and decodes a
string's escapes into bytes its own way (a lone surrogate escape becomes three bytes, an
escaped ``\\u0000`` a NUL byte inside the string; bytes that are not UTF-8 pass through). Python's
``json`` gives other answers for some of the replies a foreign server may send (it rejects a
reply the C client accepts, and maps escapes to text, not to those bytes), so the CLI reads
``ok``, ``text`` and ``value`` here, over the reply as a C string (up to its first NUL byte).
The API keeps parsing the whole reply with ``json`` (:func:`hotpatch.client.parse_reply`).
"""

from __future__ import annotations

from typing import Optional

__all__ = ["as_c_string", "member_bool", "member_integer", "member_string", "write_string"]

#: Nesting deeper than this is malformed (json.c's MAX_DEPTH).
_MAX_DEPTH = 64
_SPACE = b" \t\n\r"
_HEX = b"0123456789abcdefABCDEF"
_SIMPLE = {ord('"'): b'"', ord("\\"): b"\\", ord("/"): b"/", ord("b"): b"\b",
           ord("f"): b"\f", ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t"}
_NUMBER = frozenset(b"0123456789.eE+-")
#: find_member's results, as json.c returns them.
FOUND, MISSING, MALFORMED = 0, -1, -2


def as_c_string(raw: bytes) -> bytes:
    """The reply as the C client holds it: a C string, which ends at the first NUL byte."""
    return raw.split(b"\0", 1)[0]


class _Reader:
    """json.c's struct reader over a C string ``s``; ``at(i)`` is 0 past its end, like the
    terminating NUL."""

    def __init__(self, s: bytes) -> None:
        self.s, self.p = s, 0

    def at(self, i: int) -> int:
        return self.s[i] if i < len(self.s) else 0

    def skip_space(self) -> None:
        while self.at(self.p) in _SPACE and self.at(self.p):
            self.p += 1

    def read_hex4(self, i: int) -> Optional[int]:
        value = 0
        for k in range(4):
            c = self.at(i + k)
            if not c or c not in _HEX:
                return None
            value = value * 16 + int(chr(c), 16)
        return value

    def read_string(self, copy: bool) -> Optional[bytes]:
        """The string at p, unescaped (b"" when not ``copy``), p past it; None if malformed."""
        if self.at(self.p) != 0x22:
            return None
        self.p += 1
        out = bytearray()
        while self.at(self.p) and self.at(self.p) != 0x22:
            c = self.at(self.p)
            self.p += 1
            if c < 0x20:
                return None
            if c != 0x5C:
                out.append(c)
                continue
            e = self.at(self.p)
            self.p += 1
            if e and e in _SIMPLE:
                out += _SIMPLE[e]
            elif e == ord("u"):
                cp = self.read_hex4(self.p)
                if cp is None:
                    return None
                self.p += 4
                if 0xD800 <= cp <= 0xDBFF and self.at(self.p) == 0x5C and \
                        self.at(self.p + 1) == ord("u"):
                    low = self.read_hex4(self.p + 2)
                    if low is None:
                        return None
                    if 0xDC00 <= low <= 0xDFFF:
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
                        self.p += 6
                out += _put_utf8(cp)
            else:
                return None
        if self.at(self.p) != 0x22:
            return None
        self.p += 1
        return bytes(out) if copy else b""

    def skip_container(self, depth: int, close: int, keyed: bool) -> bool:
        self.p += 1
        self.skip_space()
        if self.at(self.p) == close:
            self.p += 1
            return True
        while True:
            self.skip_space()
            if keyed:
                if self.read_string(False) is None:
                    return False
                self.skip_space()
                colon = self.at(self.p)
                self.p += 1
                if colon != ord(":"):
                    return False
            if not self.skip_value(depth + 1):
                return False
            self.skip_space()
            if self.at(self.p) == ord(","):
                self.p += 1
                continue
            if self.at(self.p) != close:
                return False
            self.p += 1
            return True

    def skip_literal(self, word: bytes) -> bool:
        if self.s[self.p:self.p + len(word)] != word:
            return False
        self.p += len(word)
        return True

    def skip_number(self) -> bool:
        start = self.p
        if self.at(self.p) == ord("-"):
            self.p += 1
        while self.at(self.p) in _NUMBER and self.at(self.p):
            self.p += 1
        return self.p > start

    def skip_value(self, depth: int) -> bool:
        if depth > _MAX_DEPTH:
            return False
        self.skip_space()
        c = self.at(self.p)
        if c == ord("{"):
            return self.skip_container(depth, ord("}"), True)
        if c == ord("["):
            return self.skip_container(depth, ord("]"), False)
        if c == 0x22:
            return self.read_string(False) is not None
        if c == ord("t"):
            return self.skip_literal(b"true")
        if c == ord("f"):
            return self.skip_literal(b"false")
        if c == ord("n"):
            return self.skip_literal(b"null")
        return self.skip_number()

    def find_member(self, key: bytes) -> int:
        """Positions p at the value of top-level member ``key``."""
        self.skip_space()
        if self.at(self.p) != ord("{"):
            return MALFORMED
        self.p += 1
        self.skip_space()
        if self.at(self.p) == ord("}"):
            return MISSING
        while True:
            self.skip_space()
            name = self.read_string(True)
            if name is None:
                return MALFORMED
            self.skip_space()
            colon = self.at(self.p)
            self.p += 1
            if colon != ord(":"):
                return MALFORMED
            self.skip_space()
            if as_c_string(name) == key:   # strcmp: a name ends at a NUL it holds
                return FOUND
            if not self.skip_value(1):
                return MALFORMED
            self.skip_space()
            if self.at(self.p) == ord(","):
                self.p += 1
                continue
            return MISSING if self.at(self.p) == ord("}") else MALFORMED


def _put_utf8(cp: int) -> bytes:
    """json.c's put_utf8(): any code point below 0x110000, surrogates included, as UTF-8."""
    if cp < 0x80:
        return bytes([cp])
    if cp < 0x800:
        return bytes([0xC0 | (cp >> 6), 0x80 | (cp & 0x3F)])
    if cp < 0x10000:
        return bytes([0xE0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3F), 0x80 | (cp & 0x3F)])
    return bytes([0xF0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3F), 0x80 | ((cp >> 6) & 0x3F),
                  0x80 | (cp & 0x3F)])


def member_bool(reply: bytes, key: bytes) -> Optional[bool]:
    """json_member_bool(): the boolean top-level member ``key`` of the reply (a C string),
    or None when it is missing, of another type, or the reply is malformed before it."""
    r = _Reader(as_c_string(reply))
    if r.find_member(key) != FOUND:
        return None
    if r.skip_literal(b"true"):
        return True
    if r.skip_literal(b"false"):
        return False
    return None


def member_string(reply: bytes, key: bytes) -> Optional[bytes]:
    """json_member_string_with_length(): the string top-level member ``key``, unescaped to
    bytes (NUL bytes from ``\\u0000`` included), or None."""
    r = _Reader(as_c_string(reply))
    if r.find_member(key) != FOUND:
        return None
    return r.read_string(True)


def member_integer(reply: bytes, key: bytes) -> Optional[int]:
    """json_member_integer(): the top-level member ``key`` when it is a whole number (an
    optional minus, digits, no fraction or exponent) within a C ``long long``, else None."""
    r = _Reader(as_c_string(reply))
    if r.find_member(key) != FOUND:
        return None
    start = r.p
    if r.at(r.p) == ord("-"):
        r.p += 1
    digits = r.p
    while r.at(r.p) and chr(r.at(r.p)).isdigit() and r.at(r.p) < 0x80:
        r.p += 1
    if r.p == digits or r.at(r.p) in (ord("."), ord("e"), ord("E")):
        return None
    value = int(r.s[start:r.p])
    if not -(1 << 63) <= value < (1 << 63):
        return None
    return value


def _utf8_sequence_length(s: bytes, i: int) -> int:
    """cli/terminal.c's utf8_sequence_length(): the length of the valid UTF-8 sequence of two
    or more bytes at s[i], or 0 (RFC 3629: no overlong forms, surrogates, nor above U+10FFFF)."""
    lead = s[i]
    low, high = 0x80, 0xBF
    if 0xC2 <= lead <= 0xDF:
        n = 2
    elif 0xE0 <= lead <= 0xEF:
        n = 3
    elif 0xF0 <= lead <= 0xF4:
        n = 4
    else:
        return 0
    if lead == 0xE0:
        low = 0xA0
    elif lead == 0xED:
        high = 0x9F
    elif lead == 0xF0:
        low = 0x90
    elif lead == 0xF4:
        high = 0x8F
    if len(s) - i < n or not low <= s[i + 1] <= high:
        return 0
    if any(not 0x80 <= s[i + k] <= 0xBF for k in range(2, n)):
        return 0
    return n


def write_string(data: bytes) -> bytes:
    """json.c's json_write_string(): ``data`` as a JSON string, as the C client writes the
    strings of the lines it makes itself (``ps --json``, a target it could not reach): ``"``
    and ``\\`` escaped, bytes below 0x20 and 0x7F as ``\\u00XX``, valid UTF-8 as it is, and
    each byte that is not valid UTF-8 as ``\\ufffd``."""
    out = bytearray(b'"')
    i = 0
    while i < len(data):
        c = data[i]
        if c in (0x22, 0x5C):
            out += b"\\" + bytes([c])
            i += 1
        elif c < 0x20 or c == 0x7F:
            out += b"\\u%04x" % c
            i += 1
        elif c < 0x80:
            out.append(c)
            i += 1
        else:
            n = _utf8_sequence_length(data, i)
            out += data[i:i + n] if n else b"\\ufffd"
            i += n or 1
    out += b'"'
    return bytes(out)
