"""The rooms of src/ include only downwards: no room includes a header of a room above it.

base <- engine (with engine/arch) <- agent <- commands <- preload, where commands may also use
the gflags bridge's header (preload/gflags_adapter.h), which includes no room at all. A room's
own files include each other freely. Run by CTest (layout_rooms).
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"

# What each room may include besides itself.
ALLOWED = {
    "base": set(),
    "engine/arch": {"base", "engine"},       # ARCH_MAY_USE only (checked below)
    "engine": {"base", "engine/arch"},
    "agent": {"base"},
    "commands": {"base", "agent", "engine", "engine/arch", "preload"},
    "preload": {"base", "agent"},
}
BRIDGE = "preload/gflags_adapter.h"          # the one header of preload that commands may use

# What arch/ may use of the engine: the maps reader and the stopped window's mark.
ARCH_MAY_USE = {"engine/maps.h", "engine/stopped_window.h"}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def room_of(path):
    rel = path.relative_to(SRC).as_posix()
    return "engine/arch" if rel.startswith("engine/arch/") else rel.split("/")[0]


def resolve(source, name):
    local = source.parent / name
    if local.exists():
        return local
    rooted = SRC / name
    return rooted if rooted.exists() else None


def main():
    problems = []
    for source in sorted(SRC.rglob("*")):
        if source.suffix not in {".c", ".cc", ".h"}:
            continue
        room = room_of(source)
        for name in INCLUDE.findall(source.read_text()):
            target = resolve(source, name)
            if target is None:
                continue                      # a public header (include/) or a system one
            other = room_of(target)
            rel = target.relative_to(SRC).as_posix()
            if other == room:
                continue
            if other not in ALLOWED[room]:
                problems.append(f"{source.relative_to(SRC)} ({room}) includes {rel} ({other})")
            elif room == "commands" and other == "preload" and rel != BRIDGE:
                problems.append(f"{source.relative_to(SRC)} includes {rel}: only {BRIDGE}")
            elif room == "engine/arch" and other == "engine" and rel not in ARCH_MAY_USE:
                problems.append(f"{source.relative_to(SRC)} includes {rel}: arch may use only "
                                + " and ".join(sorted(ARCH_MAY_USE)))
    if bridge_includes_rooms():
        problems.append(f"{BRIDGE} includes a room's header; it must stay standalone")
    for p in problems:
        print("layout:", p)
    print(f"{0 if problems else 1} passed, {1 if problems else 0} failed")
    return 1 if problems else 0


def bridge_includes_rooms():
    text = (SRC / BRIDGE).read_text()
    return any(resolve(SRC / BRIDGE, n) for n in INCLUDE.findall(text))


if __name__ == "__main__":
    sys.exit(main())
