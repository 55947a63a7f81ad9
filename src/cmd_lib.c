/*
 * cmd_lib.c — the `lib` command family: load, list and unload shared libraries by name.
 *
 * A library is loaded with RTLD_NOW (every symbol resolved up front, so a missing symbol is a
 * load error now rather than a crash later) and RTLD_LOCAL (its symbols never interpose the
 * program's). The operator names it; the name is how `func upgrade` finds it later.
 *
 * Unloading is the dangerous direction: dlclose unmaps code, and a thread still running that
 * code would crash the host. So before dlclose every subsystem that can hold a library's code
 * is asked (hp_library_busy), and any doubt refuses the unload.
 */
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

int hp_library_busy(const struct hp_library_view *lib, char *why, size_t why_cap)
{
    /* The only way code of a loaded library runs on its own is through an installed function
     * patch, or a thread still inside after a rollback; the patch engine answers for both. */
    return hp_func_library_busy(lib, why, why_cap);
}

static void add_library_item(const struct hp_library_view *l, void *ctx)
{
    struct hp_reply *reply = ctx;
    hp_reply_item_begin(reply);
    hp_reply_item_str(reply, "name", l->name);
    hp_reply_item_str(reply, "path", l->path);
    hp_reply_item_ptr(reply, "base", (const void *)l->base);
}

static void cmd_lib_list(const struct hp_request *req, struct hp_reply *reply)
{
    (void)req;
    hp_reply_list(reply, "no libraries are loaded (load one with 'lib load NAME PATH')");
    hp_registry_each_library(add_library_item, reply);
}

/* Refuses a relative path with a directory part: the agent's cwd is not the operator's. */
static bool path_acceptable(const char *path, struct hp_reply *reply)
{
    if (path[0] == '\0') {
        hp_reply_error(reply, "empty library path; give an absolute path to a .so file");
        return false;
    }
    if (path[0] != '/' && strchr(path, '/')) {
        char cwd[512];
        if (!getcwd(cwd, sizeof cwd))
            snprintf(cwd, sizeof cwd, "unknown");
        hp_reply_error(reply, "relative path '%.256s' would be resolved against the process's "
                       "working directory (%s); give an absolute path", path, cwd);
        return false;
    }
    return true;
}

static void cmd_lib_load(const struct hp_request *req, struct hp_reply *reply)
{
    const char *name = req->argv[0], *path = req->argv[1];
    struct hp_library_view existing;
    if (!hp_name_valid(name)) {
        hp_reply_error(reply, "invalid library name '%.64s': use 1 to %d of A-Z a-z 0-9 _ . : -",
                       name, HP_NAME_MAX);
        return;
    }
    if (hp_registry_find_library(name, &existing) == 0) {
        hp_reply_error(reply, "a library is already loaded as '%s' (%.256s); unload it first or "
                       "choose another name", name, existing.path);
        return;
    }
    if (!path_acceptable(path, reply))
        return;

    dlerror();
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *err = dlerror();
        hp_reply_error(reply, "cannot load '%.256s': %s", path, err ? err : "dlopen failed");
        return;
    }
    struct link_map *map = NULL;
    uintptr_t base = dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map ? map->l_addr : 0;
    int rc = hp_registry_add_library(name, path, handle, base);
    if (rc != 0) {
        dlclose(handle);
        hp_reply_error(reply, "cannot record library '%s': %s", name, strerror(-rc));
        return;
    }
    hp_reply_field(reply, "name", name, HP_JSON_STRING);
    hp_reply_field(reply, "path", path, HP_JSON_STRING);
    char base_text[32];
    snprintf(base_text, sizeof base_text, "%p", (void *)base);
    hp_reply_field(reply, "base", base_text, HP_JSON_STRING);
    hp_reply_message(reply, "loaded %s from %s at %s", name, path, base_text);
}

static void cmd_lib_unload(const struct hp_request *req, struct hp_reply *reply)
{
    const char *name = req->argv[0];
    struct hp_library_view lib;
    if (hp_registry_find_library(name, &lib) != 0) {
        hp_reply_error(reply, "no library loaded as '%.128s' (see 'lib list')", name);
        return;
    }
    char why[HP_ERROR_MAX] = "";
    if (hp_library_busy(&lib, why, sizeof why) != 0) {
        hp_reply_error(reply, "cannot unload %s: %s", name, why[0] ? why : "it may be in use");
        return;
    }
    dlerror();
    if (dlclose(lib.handle) != 0) {
        const char *err = dlerror();
        hp_reply_error(reply, "cannot unload %s: %s", name, err ? err : "dlclose failed");
        return;
    }
    void *handle;
    hp_registry_remove_library(name, &handle);
    hp_reply_message(reply, "unloaded %s", name);
}

const struct hp_command hp_lib_commands[] = {
    {"lib", "list", 0, 0, cmd_lib_list, "lib list", "list libraries loaded with 'lib load'", 0},
    {"lib", "load", 2, 2, cmd_lib_load, "lib load NAME PATH",
     "load the shared library at PATH (absolute) under NAME", HP_CMD_MUTATES},
    {"lib", "unload", 1, 1, cmd_lib_unload, "lib unload NAME",
     "unload a library (refused while its code may be in use)", HP_CMD_MUTATES},
    {0},
};
