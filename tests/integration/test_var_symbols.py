"""Globals nobody registered, reached by symbol: `var get TYPE SYMBOL`, `var set TYPE SYMBOL V`.

globals_host (tests/programs/globals_host.c) registers nothing; its own code prints its
statics on "print", so every set is checked by what the program itself reads.
"""
import json
import re

import pytest

from conftest import BIN, cli, nc


@pytest.fixture
def host(spawn):
    return spawn([BIN / "globals_host"], stdin_pipe=True)


def printed(host):
    """The program's own view of its globals, as a dict of name -> text."""
    start = len(host.lines)
    host.send("print\n")
    i = host.wait_output(r"^b1=", start=start)
    return dict(kv.split("=", 1) for kv in host.lines[i].split())


def ok(host, *words):
    r = cli("-p", host.pid, *words)
    assert r.returncode == 0, r.stderr
    return r.stdout


def refused(host, *words):
    r = cli("-p", host.pid, *words)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r
    return r.stderr


def test_statics_of_each_size_are_read_and_set(host):
    assert ok(host, "var", "get", "bool", "flag_b1") == "true\n"
    assert ok(host, "var", "get", "int", "count_i4") == "40\n"
    assert ok(host, "var", "get", "long", "total_l8") == "8000000000\n"
    assert ok(host, "var", "get", "double", "ratio_d8") == "0.25\n"
    assert ok(host, "var", "get", "float", "scale_f4") == "1.5\n"
    assert ok(host, "var", "set", "bool", "flag_b1", "false") == "flag_b1 = false (was true)\n"
    assert ok(host, "var", "set", "int", "count_i4", "-7") == "count_i4 = -7 (was 40)\n"
    assert ok(host, "var", "set", "long", "total_l8", "-9000000000") == \
        "total_l8 = -9000000000 (was 8000000000)\n"
    assert ok(host, "var", "set", "double", "ratio_d8", "0.1") == "ratio_d8 = 0.1 (was 0.25)\n"
    assert ok(host, "var", "set", "float", "scale_f4", "2.5") == "scale_f4 = 2.5 (was 1.5)\n"
    seen = printed(host)
    assert (seen["b1"], seen["i4"], seen["l8"], seen["d8"], seen["f4"]) == \
        ("0", "-7", "-9000000000", "0.10000000000000001", "2.5")
    # The 1- and 2-byte integers: one store of their own width, ranges of their own type.
    assert ok(host, "var", "get", "short", "half_s2") == "2\n"
    assert ok(host, "var", "get", "uchar", "level_u1") == "200\n"
    assert ok(host, "var", "get", "schar", "delta_c1") == "-3\n"
    assert ok(host, "var", "set", "short", "half_s2", "-30000") == "half_s2 = -30000 (was 2)\n"
    assert ok(host, "var", "set", "uint8", "level_u1", "255") == "level_u1 = 255 (was 200)\n"
    assert ok(host, "var", "set", "schar", "delta_c1", "-128") == "delta_c1 = -128 (was -3)\n"
    assert "out of range for ushort: expected 0 to 65535" in \
        refused(host, "var", "set", "ushort", "half_s2", "65536")
    assert "out of range for schar: expected -128 to 127" in \
        refused(host, "var", "set", "schar", "delta_c1", "128")
    seen = printed(host)
    assert (seen["s2"], seen["u1"], seen["c1"]) == ("-30000", "255", "-128")
    assert ok(host, "var", "get", "ushort", "half_s2") == f"{2**16 - 30000}\n"
    assert ok(host, "var", "get", "uchar", "delta_c1") == "128\n"
    # Same size, other type: the bytes are the symbol's, reinterpreted only as asked.
    assert ok(host, "var", "get", "uint", "count_i4") == f"{2**32 - 7}\n"


def test_json_history_and_diff(host):
    r = json.loads(ok(host, "--json", "var", "set", "int", "globals_host:count_i4", "41"))
    assert (r["ok"], r["name"], r["old"], r["value"], r["symbol"]) == \
        (True, "globals_host:count_i4", 40, 41, True)
    history = json.loads(ok(host, "--json", "history"))["items"]
    assert (history[-1]["request"], history[-1]["result"], history[-1]["old"],
            history[-1]["new"]) == ("json var set int globals_host:count_i4 41", "ok", "40", "41")
    diff = json.loads(ok(host, "--json", "diff"))["items"]
    assert [(d["name"], d["first"], d["now"], d["changed_by"]) for d in diff] == \
        [("globals_host:count_i4", "40", "41", "agent")]
    assert nc(host.socket, "var get int count_i4\n") == "41\n"


def test_object_name_forms_and_ambiguity(host):
    why = refused(host, "var", "get", "int", "dup_name")
    assert "dup_name is ambiguous: defined at globals_host:dup_name" in why
    assert "libglobals_lib.so:dup_name" in why and "name one as OBJECT:dup_name" in why
    assert ok(host, "var", "get", "int", "globals_host:dup_name") == "1\n"
    assert ok(host, "var", "get", "int", ":dup_name") == "1\n"          # "" is the program
    assert ok(host, "var", "get", "int", f"{BIN / 'globals_host'}:dup_name") == "1\n"
    assert ok(host, "var", "get", "int", "libglobals_lib.so:dup_name") == "2\n"
    ok(host, "var", "set", "int", "libglobals_lib.so:dup_name", "22")
    seen = printed(host)
    assert (seen["dup"], seen["libdup"]) == ("1", "22")
    assert "no loaded object is called nolib.so" in \
        refused(host, "var", "get", "int", "nolib.so:dup_name")


def test_an_exported_variable_is_its_live_definition(host):
    """The program uses the library's variable: its copy (or the library's own, through the
    GOT) is the one set, and the other is not an ambiguity."""
    ok(host, "var", "set", "int", "lib_exported", "9")
    assert printed(host)["lib"] == "9"


def test_refusals_say_why_and_change_nothing(host):
    before = printed(host)
    assert re.fullmatch(r"error: limit_ro at 0x[0-9a-f]+ is in read-only memory \(a const, "
                        r"\.rodata or RELRO\); it cannot be set\n",
                        refused(host, "var", "set", "int", "limit_ro", "8"))
    assert ok(host, "var", "get", "int", "limit_ro") == "7\n"           # reading is fine
    assert "is in read-only memory" in refused(host, "var", "set", "long", "pointer_relro", "0")
    assert re.fullmatch(r"error: odd_word at 0x[0-9a-f]+ is not aligned to its 4 bytes: one "
                        r"access could tear, so it is refused\n",
                        refused(host, "var", "get", "int", "odd_word"))
    assert "not aligned" in refused(host, "var", "set", "int", "odd_word", "1")
    assert refused(host, "var", "set", "long", "count_i4", "1") == \
        ("error: count_i4 is 4 bytes (its st_size), but long is 8; types of that size: int, "
         "uint, float\n")
    assert "bool is 1" in refused(host, "var", "get", "bool", "count_i4")
    assert refused(host, "var", "set", "int", "half_s2", "1") == \
        ("error: half_s2 is 2 bytes (its st_size), but int is 4; types of that size: short, "
         "ushort\n")
    assert refused(host, "var", "get", "llong", "pair_16") == \
        "error: pair_16 is 16 bytes (its st_size), but llong is 8; no type has that size\n"
    assert "thread-local (STT_TLS)" in refused(host, "var", "get", "int", "per_thread_tls")
    assert "next_ticket is a function, not a variable" in \
        refused(host, "var", "set", "int", "next_ticket", "1")
    assert "unknown variable no_such_global" in refused(host, "var", "get", "int",
                                                        "no_such_global")
    assert "not string" in refused(host, "var", "set", "string", "count_i4", "x")
    assert "is not a valid int" in refused(host, "var", "set", "int", "count_i4", "4x")
    assert "unknown type 'int128'" in refused(host, "var", "get", "int128", "count_i4")
    # Without TYPE only registered names are reached, and the error says how to reach a symbol.
    assert refused(host, "var", "get", "count_i4") == \
        ("error: no variable named 'count_i4' (see 'var list'); a global nobody registered is "
         "reached by symbol with its type: var get TYPE SYMBOL\n")
    assert "var set TYPE SYMBOL VALUE" in refused(host, "var", "set", "count_i4", "1")
    assert printed(host) == before


def test_a_registered_name_keeps_precedence(server):
    """simple_server registers `age` (a static int): TYPE NAME reaches the registered variable,
    with its validator and type check, never the symbol behind it."""
    r = cli("-p", server.pid, "var", "get", "long", "age")
    assert r.returncode == 1 and r.stderr == "error: variable 'age' has type int, not long\n"
    assert cli("-p", server.pid, "var", "set", "int", "age", "11").stdout == "age = 11 (was 10)\n"
    assert cli("-p", server.pid, "var", "get", "int", "age").stdout == "11\n"


def test_the_python_client_reaches_symbols(host):
    import sys
    from conftest import REPO
    sys.path.insert(0, str(REPO / "python"))
    import hotpatch
    with hotpatch.Client(pid=host.pid) as agent:
        assert agent.var_get("count_i4", "int") == 40
        assert agent.var_set("globals_host:total_l8", 5, "long")["old"] == 8000000000
        assert agent.var_get("ratio_d8", "double") == 0.25
        with pytest.raises(hotpatch.RefusedError, match="not aligned"):
            agent.var_get("odd_word", "int")
    assert printed(host)["l8"] == "5"
