/*
 * lib.c — the `lib` command family: load, list and unload shared libraries by name.
 *
 * A library is loaded with RTLD_NOW (every symbol resolved up front, so a missing symbol is a
 * load error now rather than a crash later) and RTLD_LOCAL (its symbols never interpose the
 * program's). The operator names it; the name is how `func upgrade` finds it later.
 *
 * Loading runs the library's constructors inside the process, so the file must be one that only
 * root or the process's own user could have written, and the file loaded must be the file that
 * was checked. PATH is opened once by the trusted walk (agent/trust.c: every directory and link
 * on the way owned by root or the process's uid, no link in /proc), the open file is checked
 * (regular, owned by root or the process's uid, writable by no one else), and that descriptor is
 * what dlopen loads, as /proc/self/fd/N: nothing is resolved by name twice, and dlopen's own
 * rewriting of names ($ORIGIN, library-path search) never applies. A bare name is refused.
 * Clients send the file itself with the request (SCM_RIGHTS): it is then the file the operator
 * opened in the operator's own namespace, and only the descriptor checks apply.
 *
 * Unloading is the dangerous direction: dlclose unmaps code, and a thread still running that
 * code would crash the host. So before dlclose every subsystem that can hold a library's code
 * is asked (hp_library_busy), and any doubt refuses the unload.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
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

/* Refuses what the trusted walk cannot take: a bare name (the loader would search the process's
 * library path, which may hold '.' or a writable directory) and a relative path (the agent's
 * working directory is not the operator's). */
static bool path_acceptable(const char *path, struct hp_reply *reply)
{
    if (path[0] == '\0') {
        hp_reply_error(reply, "empty library path; give an absolute path to a .so file");
        return false;
    }
    if (!strchr(path, '/')) {
        hp_reply_error(reply, "'%.200s' is a bare name, which the loader would search for along "
                       "the process's library path; give an absolute path (such as "
                       "/usr/lib/x86_64-linux-gnu/%.100s)", path, path);
        return false;
    }
    if (path[0] != '/') {
        char cwd[512];
        if (!getcwd(cwd, sizeof cwd))
            snprintf(cwd, sizeof cwd, "unknown");
        hp_reply_error(reply, "relative path '%.256s' would be resolved against the process's "
                       "working directory (%s); give an absolute path", path, cwd);
        return false;
    }
    return true;
}

/* The one optional leading option of a command: *given when the request has two words and
 * the first is `option`. False, with the reply's error set, for anything else in its place. */
bool hp_request_option(const struct hp_request *req, const char *option, bool *given,
                       struct hp_reply *reply)
{
    *given = req->argc >= 2;
    if (!*given || strcmp(req->argv[0], option) == 0)
        return true;
    if (strcmp(req->argv[1], option) == 0)
        hp_reply_error(reply, "%s goes before '%.256s', not after it", option, req->argv[0]);
    else
        hp_reply_error(reply, "unknown option '%.64s'; the only option here is %s",
                       req->argv[0], option);
    return false;
}

/*
 * The descriptor of the file to load, checked: the one the client sent (the operator opened it
 * in the operator's own namespace), or PATH opened by the trusted walk. A new descriptor the
 * caller owns, or -1 with the reply's error set.
 */

int hp_lib_open_checked(const struct hp_request *req, const char *path, struct hp_reply *reply)
{
    char why[HP_ERROR_MAX];
    int fd;
    if (req->fd >= 0) {
        fd = fcntl(req->fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0) {
            hp_reply_error(reply, "cannot keep the descriptor sent for %.256s: %s", path,
                           strerror(errno));
            return -1;
        }
    } else {
        if (!path_acceptable(path, reply))
            return -1;
        fd = hp_trust_open(path, O_RDONLY | O_NONBLOCK, 0, HP_LINKS_TRUSTED, why, sizeof why);
        if (fd < 0) {
            hp_reply_error(reply, "refusing to load %.256s: %s", path, why);
            return -1;
        }
    }
    char shown[PATH_MAX + 32];
    snprintf(shown, sizeof shown, "%s%s", path, req->fd >= 0 ? " (sent by the client)" : "");
    if (hp_trust_check_file(fd, shown, false, why, sizeof why) != 0) {
        close(fd);
        hp_reply_error(reply, "refusing to load %.256s: %s", path, why);
        return -1;
    }
    return fd;
}

void hp_lib_release_file(const struct hp_held_file *file)
{
    struct stat st;
    if (file->fd >= 0 && fstat(file->fd, &st) == 0 && st.st_dev == file->dev &&
        st.st_ino == file->ino)
        close(file->fd);
}

void *hp_lib_dlopen_held(int fd, const char *path, struct hp_held_file *file,
                         struct hp_reply *reply)
{
    /* The very file checked is loaded: through its descriptor, never by its name again. The
     * descriptor stays open while the library is loaded, so the loader's name for it keeps
     * naming it (the symbol tables are read from there). */
    struct stat st;
    if (fstat(fd, &st) != 0)
        st = (struct stat){0};
    *file = (struct hp_held_file){fd, st.st_dev, st.st_ino};
    char by_fd[64];
    snprintf(by_fd, sizeof by_fd, "/proc/self/fd/%d", fd);
    dlerror();
    void *handle = dlopen(by_fd, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *err = dlerror();
        hp_lib_release_file(file);
        hp_reply_error(reply, "cannot load '%.256s': %s", path, err ? err : "dlopen failed");
    }
    return handle;
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
    int fd = hp_lib_open_checked(req, path, reply);
    if (fd < 0)
        return;
    struct hp_held_file file;
    void *handle = hp_lib_dlopen_held(fd, path, &file, reply);
    if (!handle)
        return;
    struct link_map *map = NULL;
    uintptr_t base = dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map ? map->l_addr : 0;
    int rc = hp_registry_add_library(name, path, handle, base, &file);
    if (rc != 0) {
        dlclose(handle);
        hp_lib_release_file(&file);
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

/* `lib unload --retire NAME`: the name is forgotten, the code stays mapped for good. For a
 * library the unload check cannot clear (a pointer into it somewhere, a scan past its bound):
 * nothing can ever jump into unmapped code, and the name can be used again. */
static void retire_library(const char *name, const struct hp_library_view *lib,
                           struct hp_reply *reply)
{
    void *handle;
    struct hp_held_file file;
    hp_registry_remove_library(name, &handle, &file);
    hp_lib_release_file(&file);
    char base[32];
    snprintf(base, sizeof base, "%p", (void *)lib->base);
    hp_reply_field(reply, "name", name, HP_JSON_STRING);
    hp_reply_field(reply, "base", base, HP_JSON_STRING);
    hp_reply_field(reply, "retired", "true", HP_JSON_BOOL);
    hp_reply_message(reply, "retired %s: forgotten, and left mapped at %s until the process "
                     "exits", name, base);
}

static void cmd_lib_unload(const struct hp_request *req, struct hp_reply *reply)
{
    bool retire;
    if (!hp_request_option(req, "--retire", &retire, reply))
        return;
    const char *name = req->argv[retire ? 1 : 0];
    struct hp_library_view lib;
    if (hp_registry_find_library(name, &lib) != 0) {
        hp_reply_error(reply, "no library loaded as '%.128s' (see 'lib list')", name);
        return;
    }
    if (retire) {
        retire_library(name, &lib, reply);
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
    struct hp_held_file file;
    hp_registry_remove_library(name, &handle, &file);
    hp_lib_release_file(&file);
    hp_reply_message(reply, "unloaded %s", name);
}

const struct hp_command hp_lib_commands[] = {
    {"lib", "list", 0, 0, cmd_lib_list, "lib list", "list libraries loaded with 'lib load'", 0},
    {"lib", "load", 2, 2, cmd_lib_load, "lib load NAME PATH",
     "load the shared library at PATH (absolute; or the file sent with the request) under NAME",
     HP_CMD_MUTATES | HP_CMD_TAKES_FD},
    {"lib", "unload", 1, 2, cmd_lib_unload, "lib unload [--retire] NAME",
     "unload a library (refused while its code may be in use; --retire forgets it, mapped)",
     HP_CMD_MUTATES},
    {0},
};
