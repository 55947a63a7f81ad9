"""Patch files on real processes: checked against the build, applied and reverted whole."""
import json
import os
import re
import subprocess

import pytest

from conftest import BIN, REPO, cli, nc

INCLUDE = REPO / "include"


def build_patch(tmp_path, name, source):
    c = tmp_path / f"{name}.c"
    c.write_text('#include "hotpatch_patch.h"\n' + source)
    so = tmp_path / f"{name}.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", f"-I{INCLUDE}", c, "-o", so], check=True)
    return so


def build_id(path):
    out = subprocess.run(["readelf", "-n", path], capture_output=True, text=True).stdout
    return next(l.split()[-1] for l in out.splitlines() if "Build ID" in l)


def add_func_now(server):
    start = len(server.lines)
    i = server.wait_output(r"add_func\(1, 2\)=", start=start)
    i = server.wait_output(r"add_func\(1, 2\)=", start=i + 1)
    return int(server.lines[i].rsplit("=", 1)[1])


FIX = """
HOTPATCH_PATCH_INFO("fix-1", "add_func adds ten thousand");
int add_func_fixed(int a, int b) { return a + b + 10000; }
HOTPATCH_REPLACE("add_func", add_func_fixed);
"""


def test_apply_check_list_revert(server, tmp_path):
    fix = build_patch(tmp_path, "fix", FIX)
    r = cli("-p", server.pid, "patch", "apply", "--check", fix)
    assert r.returncode == 0 and "every check passed; nothing was loaded" in r.stdout
    assert str(fix) not in open(f"/proc/{server.pid}/maps").read()
    assert add_func_now(server) == 3
    r = cli("-p", server.pid, "patch", "apply", fix)
    assert r.returncode == 0 and r.stdout.startswith("applied patch fix-1 (add_func adds")
    assert add_func_now(server) == 10003
    listing = json.loads(cli("-j", "-p", server.pid, "patch", "list").stdout)["items"]
    assert [(p["name"], p["state"], p["functions"], p["uid"]) for p in listing] == \
        [("fix-1", "applied", "add_func", 0)]
    funcs = json.loads(cli("-j", "-p", server.pid, "func", "list").stdout)["items"]
    assert next(f for f in funcs if f["name"] == "add_func")["installed"] == "fix-1:add_func_fixed"
    r = cli("-p", server.pid, "patch", "apply", fix)
    assert r.returncode == 1 and "a patch named fix-1 is already applied" in r.stderr
    r = cli("-p", server.pid, "patch", "revert", "fix-1")
    assert r.returncode == 0 and "and it is unloaded" in r.stdout, r.stdout
    assert add_func_now(server) == 3
    assert str(fix) not in open(f"/proc/{server.pid}/maps").read()
    assert cli("-p", server.pid, "patch", "list").stdout.startswith("no patches are applied")


def marker_source(tmp_path, info, extra):
    marker = tmp_path / "constructor-ran"
    return marker, f"""
#include <fcntl.h>
#include <unistd.h>
HOTPATCH_PATCH_INFO({info});
__attribute__((constructor)) static void ran(void) {{ close(open("{marker}", O_CREAT | O_WRONLY, 0644)); }}
{extra}
"""


def test_a_patch_for_another_build_never_runs(server, tmp_path):
    marker, src = marker_source(tmp_path, '"other", "for another build"', """
HOTPATCH_TARGET_BUILD_ID("", "0123456789abcdef0123456789abcdef01234567");
int f(int a, int b) { return 0; }
HOTPATCH_REPLACE("add_func", f);
""")
    r = cli("-p", server.pid, "patch", "apply", build_patch(tmp_path, "other", src))
    mine = build_id(BIN / "simple_server")
    assert r.returncode == 1
    assert r.stderr == (f"error: patch other was built for the main program with build-id "
                        f"0123456789abcdef0123456789abcdef01234567, but this process runs the "
                        f"main program with build-id {mine}\n")
    assert not marker.exists()
    assert add_func_now(server) == 3


def test_the_right_build_id_is_accepted_by_file_name(server, tmp_path):
    mine = build_id(BIN / "simple_server")
    so = build_patch(tmp_path, "mine", f"""
HOTPATCH_PATCH_INFO("mine", "built for this very binary");
HOTPATCH_TARGET_BUILD_ID("simple_server", "{mine}");
int g(int a, int b) {{ return a * b + 500; }}
HOTPATCH_REPLACE("add_func", g);
""")
    assert cli("-p", server.pid, "patch", "apply", so).returncode == 0
    assert add_func_now(server) == 502
    assert cli("-p", server.pid, "patch", "revert", "mine").returncode == 0


def server_line(server):
    """The next whole line simple_server prints: (age as shown, add_func(1, 2))."""
    start = len(server.lines)
    i = server.wait_output(r"add_func\(1, 2\)=", start=start)
    i = server.wait_output(r"add_func\(1, 2\)=", start=i + 1)
    m = re.search(r"age=(\d+) add_func\(1, 2\)=(\d+)", server.lines[i])
    return int(m.group(1)), int(m.group(2))


THREE = """
int a(int x, int y) { return 1; }
int b(int years) { return 2; }
int c(void) { return 3; }
HOTPATCH_REPLACE("add_func", a);
HOTPATCH_REPLACE("simple_server:shown_age", b);
HOTPATCH_REPLACE("%s", c);
"""


def assert_untouched(p):
    assert server_line(p) == (10, 3)
    funcs = json.loads(cli("-j", "-p", p.pid, "func", "list").stdout)["items"]
    assert [(f["name"], f["depth"]) for f in funcs] == [("add_func", 0)]
    assert cli("-p", p.pid, "patch", "list").stdout.startswith("no patches are applied")


def test_a_missing_third_target_changes_nothing(spawn, tmp_path):
    p = spawn([BIN / "simple_server", "--interval-ms", "50"])
    marker, src = marker_source(tmp_path, '"three", "the third target does not exist"',
                                THREE % "no_such_function_anywhere")
    so = build_patch(tmp_path, "three", src)
    for check in ([], ["--check"]):
        r = cli("-p", p.pid, "patch", "apply", *check, so)
        assert r.returncode == 1
        assert r.stderr == ("error: patch three: target no_such_function_anywhere: unknown "
                            "function no_such_function_anywhere: not registered and not in the "
                            "symbol tables of the executable or any loaded library\n")
    assert not marker.exists()
    assert_untouched(p)


def test_a_three_function_patch_for_another_build_changes_nothing(spawn, tmp_path):
    p = spawn([BIN / "simple_server", "--interval-ms", "50"])
    marker, src = marker_source(tmp_path, '"other3", "for another build"', THREE % "main" +
                                'HOTPATCH_TARGET_BUILD_ID("simple_server", "00ff");\n')
    r = cli("-p", p.pid, "patch", "apply", build_patch(tmp_path, "other3", src))
    assert r.returncode == 1
    assert r.stderr == (f"error: patch other3 was built for simple_server with build-id 00ff, but "
                        f"this process runs simple_server with build-id "
                        f"{build_id(BIN / 'simple_server')}\n")
    assert not marker.exists()
    assert_untouched(p)


def test_a_target_object_not_in_the_process(server, tmp_path):
    marker, src = marker_source(tmp_path, '"elsewhere", "for a library not loaded"', """
HOTPATCH_TARGET_BUILD_ID("libnot_loaded_here.so.1", "00ff");
int f(int a, int b) { return 0; }
HOTPATCH_REPLACE("add_func", f);
""")
    r = cli("-p", server.pid, "patch", "apply", "--check", build_patch(tmp_path, "else", src))
    assert r.returncode == 1 and r.stderr == ("error: patch elsewhere was built for "
                                              "libnot_loaded_here.so.1, which is not in this "
                                              "process\n")
    assert not marker.exists()


def test_untrusted_files_are_refused_whichever_way_they_come(server, tmp_path):
    so = build_patch(tmp_path, "fix", FIX)
    os.chmod(so, 0o666)
    r = cli("-p", server.pid, "patch", "apply", so)            # sent as a descriptor
    assert r.returncode == 1 and "is writable by every user" in r.stderr, r.stderr
    assert "is writable by every user" in nc(server.socket, f"patch apply {so}\n")  # by path
    os.chmod(so, 0o644)
    link = tmp_path / "link.so"
    link.symlink_to(so)
    os.chmod(tmp_path, 0o777)                 # a link in a directory anyone may write
    try:
        reply = nc(server.socket, f"patch apply {link}\n")
    finally:
        os.chmod(tmp_path, 0o755)
    assert reply.startswith("error: refusing to load"), reply
    assert add_func_now(server) == 3


def test_refusals_name_the_cause(server, tmp_path):
    libm = "/lib/x86_64-linux-gnu/libm.so.6"
    r = cli("-p", server.pid, "patch", "apply", libm)
    assert r.returncode == 1 and "no hotpatch metadata" in r.stderr
    unnamed = build_patch(tmp_path, "unnamed", "int f(int a, int b) { return 0; }\n"
                                               'HOTPATCH_REPLACE("add_func", f);\n')
    assert "has no HOTPATCH_PATCH_INFO" in cli("-p", server.pid, "patch", "apply", unnamed).stderr
    imp = build_patch(tmp_path, "imp", 'HOTPATCH_PATCH_INFO("imp", "x");\n'
                                       'HOTPATCH_IMPORT(int, nothing, "no_such_symbol_here");\n'
                                       'int f(int a, int b) { return *nothing; }\n'
                                       'HOTPATCH_REPLACE("add_func", f);\n')
    assert "import no_such_symbol_here does not resolve" in \
        cli("-p", server.pid, "patch", "apply", imp).stderr
    os.chmod(imp, 0o666)
    assert "is writable by every user" in nc(server.socket, f"patch apply {imp}\n")
    assert "no patch named 'nope'" in cli("-p", server.pid, "patch", "revert", "nope").stderr


def test_revert_order_is_enforced(server, tmp_path):
    first = build_patch(tmp_path, "first", 'HOTPATCH_PATCH_INFO("first", "1");\n'
                                           'int f1(int a, int b) { return 1000; }\n'
                                           'HOTPATCH_REPLACE("add_func", f1);\n')
    second = build_patch(tmp_path, "second", 'HOTPATCH_PATCH_INFO("second", "2");\n'
                                             'int f2(int a, int b) { return 2000; }\n'
                                             'HOTPATCH_REPLACE("add_func", f2);\n')
    assert cli("-p", server.pid, "patch", "apply", first).returncode == 0
    assert cli("-p", server.pid, "patch", "apply", second).returncode == 0
    assert add_func_now(server) == 2000
    r = cli("-p", server.pid, "patch", "revert", "first")
    assert r.returncode == 1
    assert r.stderr == ("error: cannot revert first: patch second replaced add_func after it; "
                        "'patch revert second' first\n")
    assert add_func_now(server) == 2000
    assert cli("-p", server.pid, "patch", "revert", "second").returncode == 0
    assert add_func_now(server) == 1000
    assert cli("-p", server.pid, "patch", "revert", "first").returncode == 0
    assert add_func_now(server) == 3


# Every way a patch's own symbols can be wrong is refused from the file, before loading: a
# refusal after the load would come after its constructors ran (and a constructor that starts
# a thread in the patch's code would crash the process when the refused patch is unloaded).
SYMBOL_CASES = [
    ("static", 'static int f(int a, int b) { return a + b + 1; }\n'
               'HOTPATCH_REPLACE("add_func", f);\n',
     "it defines no function f, the replacement for add_func (it must be a function of the "
     "patch itself, not static)"),
    ("libc", 'HOTPATCH_REPLACE("add_func", abs);\n',
     "it defines no function abs, the replacement for add_func (it must be a function of the "
     "patch itself, not static)"),
    ("data", 'int f = 1;\nHOTPATCH_REPLACE("add_func", f);\n',
     "its f, the replacement for add_func, is not a function"),
    ("twice", 'int f(int a, int b) { return a + b + 1; }\n'
              'HOTPATCH_REPLACE("add_func", f);\nHOTPATCH_REPLACE("simple_server:add_func", f);\n',
     None),
]


@pytest.mark.parametrize("name,body,reason", SYMBOL_CASES, ids=[c[0] for c in SYMBOL_CASES])
def test_a_patch_whose_own_symbols_are_wrong_never_runs(spawn, tmp_path, name, body, reason):
    p = spawn([BIN / "simple_server", "--interval-ms", "50"])
    marker, src = marker_source(tmp_path, f'"sym-{name}", "x"', "#include <stdlib.h>\n" + body)
    so = build_patch(tmp_path, name, src)
    for check in (["--check"], []):
        r = cli("-p", p.pid, "patch", "apply", *check, so)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        if reason:
            assert r.stderr == f"error: patch sym-{name}: {reason}\n"
        else:                             # the records' order is the linker's
            assert re.fullmatch(rf"error: patch sym-{name} replaces one function twice "
                                r"\((add_func and simple_server:add_func|simple_server:add_func "
                                r"and add_func)\): one HOTPATCH_REPLACE per function\n",
                                r.stderr), r.stderr
    assert not marker.exists()
    assert_untouched(p)


def test_an_import_slot_that_is_no_pointer_variable_never_runs(spawn, tmp_path):
    p = spawn([BIN / "simple_server", "--interval-ms", "50"])
    marker, src = marker_source(tmp_path, '"slot", "x"', """
int (*const slot)(int, int) = 0;              /* read-only: the agent could not fill it */
HOTPATCH_PATCH_RECORD(HOTPATCH_PATCH_KIND_IMPORT, "add_func", "slot");
int f(int a, int b) { return a + b + 1; }
HOTPATCH_REPLACE("add_func", f);
""")
    r = cli("-p", p.pid, "patch", "apply", build_patch(tmp_path, "slot", src))
    assert r.returncode == 1
    assert r.stderr == ("error: patch slot: it has no import slot slot for add_func (the "
                        "writable pointer variable HOTPATCH_IMPORT defines)\n")
    assert not marker.exists()
    assert_untouched(p)


def test_one_function_of_a_patch_cannot_be_rolled_back_alone(server, tmp_path):
    two = build_patch(tmp_path, "two", """
HOTPATCH_PATCH_INFO("two", "two functions");
int a(int x, int y) { return 1000; }
int b(int years) { return 99; }
HOTPATCH_REPLACE("add_func", a);
HOTPATCH_REPLACE("shown_age", b);
""")
    assert cli("-p", server.pid, "patch", "apply", two).returncode == 0
    r = cli("-p", server.pid, "func", "rollback", "add_func")
    assert (r.returncode, r.stderr) == (1, "error: cannot roll back add_func alone: patch two "
                                           "installed it with its other functions; 'patch "
                                           "revert two' takes the whole patch out in one step\n")
    assert add_func_now(server) == 1000
    r = cli("-p", server.pid, "patch", "revert", "two")
    assert r.returncode == 0, r.stderr
    assert add_func_now(server) == 3


def test_a_patch_of_a_patchs_function_is_reverted_in_order(server, tmp_path):
    """Patch c replaces a function inside patch a: c must go first, then a; if a cannot be
    unloaded yet, the reply says how to try again (not a lib command: a is a patch)."""
    a = build_patch(tmp_path, "stacka", """
HOTPATCH_PATCH_INFO("stack-a", "a");
__attribute__((noinline)) int fa(int x, int y) { __asm__ volatile(""); return x * 100 + y; }
int a_add(int x, int y) { return fa(x, y); }
HOTPATCH_REPLACE("add_func", a_add);
""")
    c = build_patch(tmp_path, "stackc", """
HOTPATCH_PATCH_INFO("stack-c", "c");
int fc(int x, int y) { return 7; }
HOTPATCH_REPLACE("fa", fc);
""")
    assert cli("-p", server.pid, "patch", "apply", a).returncode == 0
    assert add_func_now(server) == 102
    assert cli("-p", server.pid, "patch", "apply", c).returncode == 0
    assert add_func_now(server) == 7
    r = cli("-j", "-p", server.pid, "patch", "revert", "stack-c")
    assert r.returncode == 0 and json.loads(r.stdout)["unloaded"], r.stdout
    r = cli("-j", "-p", server.pid, "patch", "revert", "stack-a")
    assert r.returncode == 0, r.stdout
    assert add_func_now(server) == 3
    reply = json.loads(r.stdout)
    if not reply["unloaded"]:                 # a word may still point into it: kept, and said so
        assert "'patch revert stack-a' tries the unload again" in reply["message"], reply
        assert "lib unload" not in reply["message"]
        r = cli("-p", server.pid, "patch", "apply", a)
        assert r.stderr == ("error: patch stack-a is reverted but still mapped (see 'patch "
                            "list'); 'patch revert stack-a' tries to unload it\n")


def test_malformed_metadata_is_refused_with_what_is_accepted(server, tmp_path):
    fn = 'int f(int a, int b) { return a + b + 1; }\nHOTPATCH_REPLACE("add_func", f);\n'
    cases = [
        ('HOTPATCH_PATCH_INFO("hexless", "x");\nHOTPATCH_TARGET_BUILD_ID("", "zz");\n',
         "its build-id for the main program ('zz') is not 2 to 128 hex digits, an even number "
         "of them"),
        ('HOTPATCH_PATCH_INFO("odd", "x");\nHOTPATCH_TARGET_BUILD_ID("simple_server", "abc");\n',
         "its build-id for simple_server ('abc') is not 2 to 128 hex digits"),
        ('HOTPATCH_PATCH_INFO("ctl", "bell\\a here");\n',
         "its description is not plain text (UTF-8 without control characters)"),
        ('HOTPATCH_PATCH_INFO("many", "x");\n' +
         "".join(f'HOTPATCH_TARGET_BUILD_ID("lib{i}.so", "00ff");\n' for i in range(9)),
         "it names more than 8 build-ids"),
    ]
    for i, (meta, reason) in enumerate(cases):
        so = build_patch(tmp_path, f"bad{i}", meta + fn)
        r = cli("-p", server.pid, "patch", "apply", "--check", so)
        assert r.returncode == 1 and r.stderr.startswith(f"error: refusing to apply {so}: ") \
            and reason in r.stderr and r.stderr.count("\n") == 1, r.stderr
    so = build_patch(tmp_path, "fix", FIX)
    r = cli("-p", server.pid, "patch", "apply", so, "--check")
    assert (r.returncode, r.stderr) == (1, f"error: --check goes before '{so}', not after it\n")
    assert add_func_now(server) == 3


def test_the_executable_may_be_named_by_its_full_path(server, tmp_path):
    exe = str(BIN / "simple_server")
    so = build_patch(tmp_path, "full", f'HOTPATCH_PATCH_INFO("full", "x");\n'
                     f'HOTPATCH_TARGET_BUILD_ID("{exe}", "{build_id(exe)}");\n' +
                     'int f(int a, int b) { return 5; }\nHOTPATCH_REPLACE("add_func", f);\n')
    r = cli("-p", server.pid, "patch", "apply", "--check", so)
    assert r.returncode == 0, r.stderr


def ticket(host):
    start = len(host.lines)
    host.send("tick\n")
    i = host.wait_output(r"^ticket=", start=start)
    return tuple(int(kv.split("=")[1]) for kv in host.lines[i].split())


def test_a_patch_imports_a_static_counter_and_increments_it(spawn, tmp_path):
    """globals_host's next_ticket() increments its static `tickets`; the patch imports that
    very counter (a static int, found in .symtab) and adds 1000 to it. The program's own code
    reads the counter after each call, so the effect is the program's, not the patch's."""
    host = spawn([BIN / "globals_host"], stdin_pipe=True)
    assert ticket(host) == (1, 1)
    so = build_patch(tmp_path, "tickets", """
HOTPATCH_PATCH_INFO("tickets", "next_ticket jumps by a thousand");
HOTPATCH_IMPORT(int, tickets, "globals_host:tickets");
HOTPATCH_IMPORT(int, count, "count_i4");
int next_ticket_fixed(void) { *tickets += 1000; *count += 1; return *tickets; }
HOTPATCH_REPLACE("next_ticket", next_ticket_fixed);
""")
    r = cli("-p", host.pid, "patch", "apply", so)
    assert r.returncode == 0, r.stderr
    assert ticket(host) == (1001, 1001)
    assert ticket(host) == (2001, 2001)
    assert cli("-p", host.pid, "var", "get", "int", "count_i4").stdout == "42\n"
    assert cli("-p", host.pid, "patch", "revert", "tickets").returncode == 0
    assert ticket(host) == (2002, 2002)


def test_imports_that_are_no_variable_are_refused(spawn, tmp_path):
    host = spawn([BIN / "globals_host"], stdin_pipe=True)
    marker, src = marker_source(tmp_path, '"tlsimport", "imports a thread-local"', """
HOTPATCH_IMPORT(int, t, "per_thread_tls");
int f(void) { return *t; }
HOTPATCH_REPLACE("next_ticket", f);
""")
    r = cli("-p", host.pid, "patch", "apply", build_patch(tmp_path, "tlsimport", src))
    assert r.returncode == 1
    assert r.stderr == ("error: patch tlsimport: import per_thread_tls does not resolve: "
                        "per_thread_tls is thread-local (STT_TLS): every thread has its own "
                        "copy, so there is no one address to reach\n")
    assert not marker.exists()
    assert ticket(host) == (1, 1)


PYTHON_DIR = REPO / "python"


def unseen_by_the_agent(tmp_path, so, *command):
    """Runs command in a mount namespace of its own where `hidden/` under tmp_path is a fresh
    tmpfs holding a copy of the patch: the client sees hidden/fix.so, the agent (outside)
    sees an empty directory. {} in command is the patch's path there."""
    hidden = tmp_path / "hidden"
    hidden.mkdir(exist_ok=True)
    path = hidden / so.name
    script = f'mount -t tmpfs tmpfs "{hidden}" && cp "{so}" "{path}" && exec "$@"'
    argv = [str(a).replace("{}", str(path)) for a in command]
    env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR))
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                           "sh", *argv], capture_output=True, text=True, timeout=30, env=env), path


def test_both_clients_send_the_patch_file_itself(server, tmp_path):
    so = build_patch(tmp_path, "fix", FIX)
    # The agent cannot open that path itself: the premise of the test.
    r, path = unseen_by_the_agent(tmp_path, so, "true")
    assert r.returncode == 0, r.stderr
    assert not path.exists()
    assert "refusing to load" in nc(server.socket, f"patch apply --check {path}\n")
    hp = BIN / "hotpatch"
    r, _ = unseen_by_the_agent(tmp_path, so, hp, "-p", server.pid, "patch", "apply", "--check",
                               "{}")
    assert r.returncode == 0 and "every check passed" in r.stdout, r.stderr
    r, _ = unseen_by_the_agent(tmp_path, so, hp, "-p", server.pid, "patch", "apply", "{}")
    assert r.returncode == 0 and r.stdout.startswith("applied patch fix-1"), r.stderr
    assert add_func_now(server) == 10003
    listing = json.loads(cli("-j", "-p", server.pid, "patch", "list").stdout)["items"]
    assert listing[0]["file"] == str(path)
    assert cli("-p", server.pid, "patch", "revert", "fix-1").returncode == 0
    # The Python client's command line, then its API.
    r, _ = unseen_by_the_agent(tmp_path, so, "/usr/bin/python3", "-m", "hotpatch", "-p",
                               server.pid, "patch", "apply", "--check", "{}")
    assert r.returncode == 0 and "every check passed" in r.stdout, r.stderr
    r, _ = unseen_by_the_agent(tmp_path, so, "/usr/bin/python3", "-m", "hotpatch", "-p",
                               server.pid, "patch", "apply", "{}")
    assert r.returncode == 0 and r.stdout.startswith("applied patch fix-1"), r.stderr
    assert add_func_now(server) == 10003
    assert cli("-p", server.pid, "patch", "revert", "fix-1").returncode == 0
    api = ("import sys, hotpatch\n"
           "with hotpatch.Client(pid=int(sys.argv[1])) as agent:\n"
           "    print(agent.patch_apply(sys.argv[2], check=True)['checked_only'])\n"
           "    print(agent.patch_apply(sys.argv[2])['name'])\n")
    r, _ = unseen_by_the_agent(tmp_path, so, "/usr/bin/python3", "-c", api, server.pid, "{}")
    assert (r.returncode, r.stdout) == (0, "True\nfix-1\n"), r.stderr
    assert add_func_now(server) == 10003
    assert cli("-p", server.pid, "patch", "revert", "fix-1").returncode == 0


def test_a_relative_patch_path_is_the_clients(server, tmp_path):
    so = build_patch(tmp_path, "fix", FIX)
    r = cli("-p", server.pid, "patch", "apply", "--check", so.name, cwd=tmp_path)
    assert r.returncode == 0 and "every check passed" in r.stdout, r.stderr
    r = subprocess.run(["/usr/bin/python3", "-m", "hotpatch", "-p", str(server.pid), "patch",
                        "apply", "--check", so.name], cwd=tmp_path, capture_output=True,
                       text=True, timeout=30, env=dict(os.environ, PYTHONPATH=str(PYTHON_DIR)))
    assert r.returncode == 0 and "every check passed" in r.stdout, r.stderr


def test_hotpatch_add_patch_for_a_path_and_another_build(spawn, tmp_path):
    """The CMake helper with FOR a path: the build-id read at build time is the file's; a patch
    built for one program is refused by another with both ids named, and never runs."""
    host = spawn([BIN / "globals_host"], stdin_pipe=True)
    (tmp_path / "fix.c").write_text("""
#include <fcntl.h>
#include <unistd.h>
#include "hotpatch_patch.h"
HOTPATCH_PATCH_INFO(PATCH_NAME, "next_ticket says 77");
__attribute__((constructor)) static void ran(void) { close(open(MARKER, O_CREAT | O_WRONLY, 0644)); }
int next_ticket_77(void) { return 77; }
HOTPATCH_REPLACE("next_ticket", next_ticket_77);
""")
    (tmp_path / "CMakeLists.txt").write_text(f"""
cmake_minimum_required(VERSION 3.20)
project(patches C)
include({REPO}/cmake/scripts/hotpatch_add_patch.cmake)
hotpatch_add_patch(for_host SOURCES fix.c FOR {BIN / 'globals_host'})
target_compile_definitions(for_host PRIVATE PATCH_NAME="for-host" MARKER="{tmp_path}/ran-host")
hotpatch_add_patch(for_other SOURCES fix.c FOR {BIN / 'simple_server'} OBJECT "")
target_compile_definitions(for_other PRIVATE PATCH_NAME="for-other" MARKER="{tmp_path}/ran-other")
""")
    out = tmp_path / "out"
    for cmd in (["cmake", "-S", tmp_path, "-B", out], ["cmake", "--build", out]):
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
    r = cli("-p", host.pid, "patch", "apply", out / "for_other.so")
    assert r.returncode == 1
    assert r.stderr == (f"error: patch for-other was built for the main program with build-id "
                        f"{build_id(BIN / 'simple_server')}, but this process runs the main "
                        f"program with build-id {build_id(BIN / 'globals_host')}\n")
    assert not (tmp_path / "ran-other").exists()
    assert ticket(host) == (1, 1)
    r = cli("-p", host.pid, "patch", "apply", out / "for_host.so")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ran-host").exists()
    assert ticket(host) == (77, 1)


def test_the_documented_gcc_line(spawn, tmp_path):
    """The README's and hotpatch_patch.h's commands for people without CMake, as written there
    (with this checkout's include directory for $(pkg-config --cflags hotpatch))."""
    host = spawn([BIN / "globals_host"], stdin_pipe=True)
    (tmp_path / "fix.c").write_text('#include "hotpatch_patch.h"\n'
                                    'HOTPATCH_PATCH_INFO("by-hand", "built with two commands");\n'
                                    'int next_ticket_5(void) { return 5; }\n'
                                    'HOTPATCH_REPLACE("next_ticket", next_ticket_5);\n')
    header = (INCLUDE / "hotpatch_patch.h").read_text()
    block = header.split("Without CMake:\n", 1)[1].split("\n *\n", 1)[0]
    lines = [l[len(" *     "):] for l in block.splitlines()]
    script = "\n".join(lines).replace("$(pkg-config --cflags hotpatch)", f"-I{INCLUDE}")
    script = script.replace("/path/to/server", str(BIN / "globals_host"))
    readme = (REPO / "README.md").read_text()
    assert "\n".join(lines) in readme
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "fix.so").exists()
    assert "HOTPATCH_TARGET_BUILD_ID(\"globals_host\"" in (tmp_path / "build_id.c").read_text()
    assert cli("-p", host.pid, "patch", "apply", tmp_path / "fix.so").returncode == 0
    assert ticket(host) == (5, 0)
