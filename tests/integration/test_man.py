"""The man pages say what the programs do: every command the agent's `help` lists is in
hotpatch(1) and hotpatch-protocol(7), every option of `hotpatch --help` is in hotpatch(1), and
every public function and macro of the headers is in libhotpatch(3).

The pages are rendered to plain text as man would show them (groff, wide lines so that nothing
is broken across lines) and searched with whitespace collapsed.
"""
import json
import os
import re
import subprocess

import pytest

from conftest import BUILD, REPO, cli

MAN = BUILD / "man"
GROFF = os.environ.get("HOTPATCH_GROFF", "groff")


def rendered(page):
    r = subprocess.run([GROFF, "-k", "-t", "-man", "-Tascii", "-P-cbou", "-rLL=400n", str(MAN / page)],
                       capture_output=True, text=True, check=True)
    return " ".join(r.stdout.split())


def section(text, title, next_title):
    start = text.index(f" {title} ")
    return text[start:text.index(f" {next_title} ", start)]


@pytest.fixture(scope="module")
def hotpatch_1():
    return rendered("hotpatch.1")


def test_every_command_of_help_is_in_hotpatch_1_and_the_protocol_page(server, hotpatch_1):
    reply = json.loads(cli("-j", "-p", server.pid, "help").stdout)
    usages = [" ".join(item["usage"].split()) for item in reply["items"]]
    assert len(usages) >= 10
    commands = section(hotpatch_1, "COMMANDS", "EXIT STATUS")
    missing = [u for u in usages if u not in commands]
    assert not missing, f"commands missing from hotpatch(1): {missing}"
    protocol = rendered("hotpatch-protocol.7")
    assert not [u for u in usages if u not in protocol]


def test_every_option_of_the_cli_is_in_hotpatch_1(hotpatch_1):
    usage = cli("--help").stdout
    options = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", usage.split("Commands")[0]))
    assert {"-p", "--pid", "--json", "--raw", "--trust-peer", "--timeout"} <= options
    documented = section(hotpatch_1, "OPTIONS", "COMMANDS")
    missing = sorted(o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])",
                                                         documented))
    assert not missing, f"options of hotpatch --help missing from hotpatch(1) OPTIONS: {missing}"


def test_the_version_is_the_build_s(hotpatch_1):
    version = cli("--version").stdout.split()[1]
    assert f"hotpatch {version}" in hotpatch_1


def test_every_public_function_and_macro_is_in_libhotpatch_3():
    page = rendered("libhotpatch.3")
    c_header = (REPO / "include" / "hotpatch.h").read_text()
    names = set(re.findall(r"HOTPATCH_API[^;]*?\b(hotpatch_\w+)\s*\(", c_header))
    names |= set(re.findall(r"^#define (hotpatch_\w+)\(", c_header, re.M))
    cxx = (REPO / "include" / "hotpatch.hpp").read_text()
    cxx = re.sub(r"namespace detail \{.*?\} // namespace detail", "", cxx, flags=re.S)
    names |= {"hotpatch::" + n for n in re.findall(r"inline [^{;(]*?\b(\w+)\s*\(", cxx)}
    assert len(names) >= 15
    missing = sorted(n for n in names if f"{n}()" not in page)
    assert not missing, f"missing from libhotpatch(3): {missing}"
