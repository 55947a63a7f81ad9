/*
 * hotpatch_patch.h — for authors of patch files: one C file that fixes a running program.
 *
 * A patch is a shared library whose metadata says what it is and what it replaces. The agent
 * reads that metadata from the file before loading it (`patch apply PATH`), checks it against
 * the running process, and only then loads the file and installs every replacement at once,
 * in one stop of the threads: the process never runs a mix of old and new functions, and a
 * patch built for another binary never runs a line (not even a constructor).
 *
 *     #include "hotpatch_patch.h"
 *
 *     HOTPATCH_PATCH_INFO("fix-1234", "add_func overflowed on large inputs");
 *     HOTPATCH_TARGET_BUILD_ID("simple_server", "3f1c...");   // usually added by CMake
 *     HOTPATCH_IMPORT(long, calls, "request_count");           // the program's static counter
 *
 *     int add_func_fixed(int a, int b)
 *     {
 *         (*calls)++;
 *         return (int)(((long)a + b) % 1000003);
 *     }
 *     HOTPATCH_REPLACE("add_func", add_func_fixed);
 *
 * Build it with CMake, which also embeds the target's build-id (read when the patch is built):
 *     find_package(hotpatch 0.2 REQUIRED)
 *     hotpatch_add_patch(fix_1234 SOURCES fix.c FOR simple_server)   # a target or a path
 * and apply it with `hotpatch -p PID patch apply build/fix_1234.so`.
 *
 * Without CMake:
 *     server=/path/to/server
 *     id=$(readelf -n "$server" | sed -n 's/.*Build ID: //p')
 *     printf '#include "hotpatch_patch.h"\nHOTPATCH_TARGET_BUILD_ID("%s", "%s");\n' \
 *         "$(basename "$server")" "$id" > build_id.c
 *     cc -shared -fPIC -O2 $(pkg-config --cflags hotpatch) fix.c build_id.c -o fix.so
 *
 * (without build_id.c, and the lines that make it, the patch checks no build-id).
 *
 * The macros (each may appear at file scope; INFO exactly once):
 *   HOTPATCH_PATCH_INFO(name, description)   the patch's name (unique in a process; 1-63 of
 *                                            A-Z a-z 0-9 _ . -) and the one-line fix
 *   HOTPATCH_REPLACE(target, replacement)    the function `target` of the process (a
 *                                            registered name, a symbol, or OBJECT:NAME; static
 *                                            functions too) is replaced by `replacement`, a
 *                                            function of this file with the same signature
 *   HOTPATCH_IMPORT(type, local, symbol)     defines `type *local`, set to the address of the
 *                                            process's `symbol` (a variable or a function,
 *                                            static ones too; NAME or OBJECT:NAME, "" for the
 *                                            main program) before any replacement can run. The
 *                                            patch's constructors run before that (at load):
 *                                            they must not read imports. A thread-local
 *                                            variable cannot be imported (it has no one
 *                                            address)
 *   HOTPATCH_TARGET_BUILD_ID(object, hex)    the patch was built for `object` (the executable's
 *                                            file name as in /proc/PID/exe, "" for the main
 *                                            program, or a library's file name) whose GNU
 *                                            build-id is `hex`; without it nothing is checked
 *
 * The records live in the section "hotpatch_patch", one fixed-size record each, with no
 * pointers (nothing to relocate), so the agent can read them from the file itself.
 */
#ifndef HOTPATCH_PATCH_H
#define HOTPATCH_PATCH_H

#include <stdint.h>

#define HOTPATCH_PATCH_MAGIC 0x31525048u      /* "HPR1" */
#define HOTPATCH_PATCH_TEXT 256               /* bytes of each string field, NUL included */

enum hotpatch_patch_kind {
    HOTPATCH_PATCH_KIND_INFO = 1,             /* a = name, b = description */
    HOTPATCH_PATCH_KIND_REPLACE = 2,          /* a = target, b = replacement's symbol */
    HOTPATCH_PATCH_KIND_IMPORT = 3,           /* a = the process's symbol, b = local's symbol */
    HOTPATCH_PATCH_KIND_BUILD_ID = 4,         /* a = object, b = hex build-id */
};

struct hotpatch_patch_record {
    uint32_t magic;
    uint32_t kind;
    char a[HOTPATCH_PATCH_TEXT];
    char b[HOTPATCH_PATCH_TEXT];
};

#define HOTPATCH_PATCH_CAT2(x, y) x##y
#define HOTPATCH_PATCH_CAT(x, y) HOTPATCH_PATCH_CAT2(x, y)
#define HOTPATCH_PATCH_RECORD(kind, a, b)                                                     \
    __attribute__((used, section("hotpatch_patch"), aligned(8))) static const struct        \
        hotpatch_patch_record HOTPATCH_PATCH_CAT(hotpatch_patch_record_, __COUNTER__) = {   \
            HOTPATCH_PATCH_MAGIC, (kind), a, b}

#define HOTPATCH_PATCH_INFO(name, description)                                                \
    HOTPATCH_PATCH_RECORD(HOTPATCH_PATCH_KIND_INFO, name, description)

/* The replacement must have external linkage so the agent can find it after loading. */
#define HOTPATCH_REPLACE(target, replacement)                                                 \
    HOTPATCH_PATCH_RECORD(HOTPATCH_PATCH_KIND_REPLACE, target, #replacement)

#define HOTPATCH_IMPORT(type, local, symbol)                                                  \
    __attribute__((visibility("default"))) type *local;                                    \
    HOTPATCH_PATCH_RECORD(HOTPATCH_PATCH_KIND_IMPORT, symbol, #local)

#define HOTPATCH_TARGET_BUILD_ID(object, hex)                                                 \
    HOTPATCH_PATCH_RECORD(HOTPATCH_PATCH_KIND_BUILD_ID, object, hex)

#endif /* HOTPATCH_PATCH_H */
