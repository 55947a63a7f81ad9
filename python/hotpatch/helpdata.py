"""The offline help: ``hotpatch help [FAMILY]`` without ``-p`` or ``-s``.

The command list must never be copied by hand, so it is the agent's own answer to ``help``,
written at build time by the C build (cli/gen_help.c, which links the dispatch table) into
``share/hotpatch/help.json`` beside the C client (``build/share/hotpatch/help.json`` in the
build tree, ``PREFIX/share/hotpatch/help.json`` once installed). This module finds that file:
in the package itself when a build put it there, else beside the C client found on PATH (as the
start-up hint finds the preload library).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Optional

__all__ = ["help_entry", "help_file"]


def help_file() -> Optional[str]:
    """The path of help.json, or None when none is installed."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "help.json")
    if os.path.isfile(here):
        return here
    exe = shutil.which("hotpatch")
    if exe:
        prefix = os.path.dirname(os.path.dirname(os.path.realpath(exe)))
        candidate = os.path.join(prefix, "share", "hotpatch", "help.json")
        if os.path.isfile(candidate):
            return candidate
    return None


def help_entry(family: Optional[str]) -> Optional[dict[str, str]]:
    """The entry of ``family`` (None: every command): ``text`` and ``json`` as the agent
    answers; None when no such family. Raises OSError or ValueError when there is no help
    file or it cannot be read."""
    path = help_file()
    if path is None:
        raise OSError("the offline command list is not installed (share/hotpatch/help.json, "
                      "written by the C client's build)")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    for entry in data["help"]:
        if entry["family"] == (family or ""):
            return entry
    return None
