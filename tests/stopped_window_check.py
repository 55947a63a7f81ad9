"""The code that runs while other threads are stopped calls nothing outside its own section.

Every function marked HP_STOPPED_WINDOW (src/engine/stopped_window.h) lives in the section
hotpatch_stopped. While the threads are stopped, one of them may hold any lock (malloc's,
stdio's, the loader's) or be inside any function a patch replaced, so that code may call only
other code of the section, and the kernel through inline `syscall` instructions: no PLT, no GOT,
no libc, no sanitizer or stack-protector runtime.

This disassembles the section of the built libraries (objdump -d) and checks every call and
jump:
  - in libhotpatch.so: a direct target must lie inside the section; nothing goes through the
    PLT (no `@plt` target);
  - in libhotpatch.a: every call or jump that needs a relocation names a symbol defined in the
    section of some member of the archive (a local target needs none and must be in the section);
  - an indirect call or jump (through a register or memory) is allowed only where it is the
    documented callback of hp_threads_scan (INDIRECT_ALLOWED); jump tables are compiled out
    (-fno-jump-tables for the engine's stop files, cmake/patch.cmake).
It also requires the section to exist and to hold the entry points of the stop.

Usage: stopped_window_check.py LIBHOTPATCH.so LIBHOTPATCH.a   (run by CTest)
"""
import re
import subprocess
import sys

SECTION = "hotpatch_stopped"
# Functions whose one indirect call is the scan callback (a HP_STOPPED_WINDOW function of the
# caller, documented in engine.h); the compiler may inline scan_thread into hp_threads_scan.
INDIRECT_ALLOWED = {"scan_thread", "hp_threads_scan"}
REQUIRED = {"hp_threads_scan", "hp_threads_resume", "hp_ptrace_resume", "hp_signal_resume",
            "hp_stop_helper_entry", "hp_arch_clone_helper", "hp_arch_poke_stopped",
            "hp_maps_protection"}

FUNC = re.compile(r"^([0-9a-f]+) <([^>]+)>:$")
INSN = re.compile(r"^\s*([0-9a-f]+):\s+(.*)$")
BRANCH = re.compile(r"^(?:notrack\s+|bnd\s+)?(call|jmp|j[a-z]{1,4}|loop[a-z]*)\s+(.*)$")
RELOC = re.compile(r"^\s*[0-9a-f]+:\s+(R_X86_64_\S+)\s+(\S+)")


def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def section_range(lib):
    for line in run("objdump", "-h", lib).splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == SECTION:
            start = int(parts[3], 16)
            return start, start + int(parts[2], 16)
    return None


def strip_comment(op):
    return op.split("#")[0].strip()


def check_shared(lib, problems):
    rng = section_range(lib)
    if rng is None:
        problems.append(f"{lib}: no section {SECTION}")
        return set()
    start, end = rng
    func, seen = None, set()
    for line in run("objdump", "-d", "--no-show-raw-insn", "-j", SECTION, lib).splitlines():
        m = FUNC.match(line)
        if m:
            func = m.group(2)
            seen.add(func)
            continue
        m = INSN.match(line)
        if not m or func is None:
            continue
        b = BRANCH.match(m.group(2).strip())
        if not b:
            continue
        target = strip_comment(b.group(2))
        where = f"{lib}: {func}+{m.group(1)}: {m.group(2).strip()}"
        if "@plt" in target:
            problems.append(f"{where}: goes through the PLT")
        elif target.startswith("*"):
            if func not in INDIRECT_ALLOWED or b.group(1) != "call":
                problems.append(f"{where}: an indirect branch")
        else:
            t = re.match(r"([0-9a-f]+)", target)
            if not t or not start <= int(t.group(1), 16) < end:
                problems.append(f"{where}: leaves the section")
    return seen


def archive_section_symbols(lib):
    """Symbols defined in the section by any member of the archive."""
    defined = set()
    for line in run("objdump", "-t", lib).splitlines():
        parts = line.split()
        if len(parts) >= 5 and SECTION in parts:
            defined.add(parts[-1])
    return defined


def check_static(lib, problems):
    defined = archive_section_symbols(lib)
    if not defined:
        problems.append(f"{lib}: no symbol in section {SECTION}")
        return set()
    func, member, pending, seen = None, None, None, set()
    text = run("objdump", "-dr", "--no-show-raw-insn", "-j", SECTION, lib)

    for line in text.splitlines():
        if "file format" in line:
            member = line.split(":")[0]
            continue
        m = FUNC.match(line)
        if m:
            func = m.group(2)
            seen.add(func)
            pending = None
            continue
        r = RELOC.match(line)
        if r and pending is not None:
            kind, sym = r.group(1), re.split(r"[-+]", r.group(2))[0]
            where = pending[0]
            if "GOT" in kind:
                problems.append(f"{where}: through the GOT ({kind} {sym})")
            elif sym not in defined and sym != SECTION and not sym.startswith(".L"):
                problems.append(f"{where}: calls {sym}, which is outside the section")
            pending = None
            continue
        m = INSN.match(line)
        if not m or func is None:
            continue
        pending = None
        b = BRANCH.match(m.group(2).strip())
        if not b:
            continue
        target = strip_comment(b.group(2))
        where = f"{lib}({member}): {func}+{m.group(1)}: {m.group(2).strip()}"
        if target.startswith("*"):
            if func not in INDIRECT_ALLOWED or b.group(1) != "call":
                problems.append(f"{where}: an indirect branch")
            continue
        pending = (where, target)    # a relocation on the next line names the target
    return seen


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    problems = []
    seen_so = check_shared(sys.argv[1], problems)
    seen_a = check_static(sys.argv[2], problems)
    for lib, seen in ((sys.argv[1], seen_so), (sys.argv[2], seen_a)):
        missing = REQUIRED - seen
        if missing:
            problems.append(f"{lib}: not in {SECTION}: {', '.join(sorted(missing))}")
    for p in problems:
        print("stopped window:", p)
    n = len(seen_so | seen_a)
    print(f"{n} functions in {SECTION}; {len(problems)} problem(s)")
    print(f"{0 if problems else 1} passed, {1 if problems else 0} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
