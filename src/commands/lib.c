/*
 * lib.c — the `lib` command family: load, list and unload shared libraries by name.
 *
 * A library is loaded with RTLD_NOW (every symbol resolved up front, so a missing symbol is a
 * load error now rather than a crash later) and RTLD_LOCAL (its symbols never interpose the
 * program's). The operator names it; the name is how `func upgrade` finds it later.
 *
 * Loading runs the library's constructors inside the process, so the file must be one that only
 * root or the process's own user could have written: the file and every directory above it
 * (symlinks resolved) must be owned by root or the process's uid and not writable by anyone
 * else — a directory writable by others is accepted only with the sticky bit, which stops them
 * replacing files they do not own. A bare soname (no '/') is searched by the dynamic loader in
 * the system's library directories and is not checked here.
 *
 * Unloading is the dangerous direction: dlclose unmaps code, and a thread still running that
 * code would crash the host. So before dlclose every subsystem that can hold a library's code
 * is asked (hp_library_busy), and any doubt refuses the unload.
 */
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"

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

static bool trusted_owner(uid_t uid)
{
    return uid == 0 || uid == geteuid();
}

/* Checks one path component; false with a reason when someone else could change it. */
static bool component_trusted(const char *path, const char *file, char *why, size_t cap)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(why, cap, "cannot check %s: %s", path, strerror(errno));
        return false;
    }
    bool is_dir = S_ISDIR(st.st_mode);
    const char *what = is_dir ? "directory" : "file";
    if (!trusted_owner(st.st_uid)) {
        snprintf(why, cap, "refusing to load %s: %s %s is owned by uid %ld; it must be owned by "
                 "root or uid %ld", file, what, path, (long)st.st_uid, (long)geteuid());
        return false;
    }
    bool others_write = (st.st_mode & (S_IWGRP | S_IWOTH)) != 0;
    if (others_write && !(is_dir && (st.st_mode & S_ISVTX))) {
        snprintf(why, cap, "refusing to load %s: %s %s is writable by %s (mode %04o); only root "
                 "or uid %ld may be able to change it", file, what, path,
                 (st.st_mode & S_IWOTH) ? "every user" : "its group", (unsigned)(st.st_mode & 07777),
                 (long)geteuid());
        return false;
    }
    return true;
}

/* The file and each directory above it (after resolving symlinks) must be trusted. */
static bool library_file_trusted(const char *path, char *why, size_t cap)
{
    char real[PATH_MAX];
    if (!realpath(path, real) && errno == ENOENT)
        return true; /* nothing to trust: dlopen reports the missing file in its own words */
    if (!realpath(path, real)) {
        snprintf(why, cap, "cannot load '%.256s': %s", path, strerror(errno));
        return false;
    }
    char prefix[PATH_MAX];
    size_t len = strlen(real);
    for (size_t i = len; i > 0; i--) {
        if (i != len && real[i] != '/')
            continue;
        memcpy(prefix, real, i);
        prefix[i] = '\0';
        if (!component_trusted(prefix, path, why, cap))
            return false;
    }
    return component_trusted("/", path, why, cap);
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
    char why[HP_ERROR_MAX];
    if (strchr(path, '/') && !library_file_trusted(path, why, sizeof why)) {
        hp_reply_error(reply, "%s", why);
        return;
    }

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
