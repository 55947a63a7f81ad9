/*
 * gflags_loader.c — does this process have gflags (and glog)? If so, load the C++ adapter.
 *
 * The rule that shapes this file: looking must not change the process. A C program started with
 * the preload agent must never gain libstdc++, gflags or glog in its memory map because someone
 * typed `gflags list`. So detection uses only dlsym(RTLD_DEFAULT, <gflags' mangled symbol>),
 * which finds the program's gflags whether it is Debian's libgflags.so or a copy linked into
 * the executable and exported, and loads nothing. Only when gflags is there is
 * libhotpatch_gflags.so dlopened (RTLD_NOW, so every symbol it needs binds to the program's
 * gflags right away or the load fails cleanly; RTLD_LOCAL, so none of its symbols interposes
 * the program's; RTLD_NODELETE, because its function pointers are kept for the life of the
 * process).
 *
 * Where the adapter is: $HOTPATCH_GFLAGS_ADAPTER if set; else next to the object this code is
 * linked into (build/lib/ for libhotpatch.so and libhotpatch_preload.so; the installed preload
 * agent, which shares the private directory LIBDIR/hotpatch/ with it); else in hotpatch/ below
 * it (the installed libhotpatch.so in LIBDIR, so any install prefix works); else ../lib/ from it
 * (an executable in build/bin/ that links libhotpatch.a); else the configured private
 * directory.
 *
 * State: the loaded adapter is owned by this file and guarded by loader_lock, which is held
 * only while loading (commands run on the agent thread, but unit tests and a future second
 * caller must not race a half-filled table). A failed detection is not remembered: the program
 * may load gflags later (a plugin), and the next command looks again.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gflags_adapter.h"
#include "agent/agent.h"

#ifndef HOTPATCH_INSTALL_LIBDIR
#define HOTPATCH_INSTALL_LIBDIR "/usr/local/lib/hotpatch"
#endif
#ifndef HOTPATCH_PRIVATE_SUBDIR
#define HOTPATCH_PRIVATE_SUBDIR "hotpatch"
#endif

/* `void google::GetAllFlags(std::vector<google::CommandLineFlagInfo>*)`, the call the adapter
 * depends on most; Debian builds gflags in namespace google. */
static const char gflags_probe_symbol[] =
    "_ZN6google11GetAllFlagsEPSt6vectorINS_19CommandLineFlagInfoESaIS1_EE";
/* `int google::SetVLOGLevel(const char*, int)`: present exactly when glog is. */
static const char glog_probe_symbol[] = "_ZN6google12SetVLOGLevelEPKci";

static pthread_mutex_t loader_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hp_gflags_adapter loaded;      /* guarded by loader_lock */
static bool is_loaded;                       /* guarded by loader_lock */

bool hp_process_has_glog(void)
{
    return dlsym(RTLD_DEFAULT, glog_probe_symbol) != NULL;
}

/* ---- when gflags is not reachable, say why ------------------------------------------------- */

struct mapped_search {
    const char *needle;
    char path[PATH_MAX];
};

static int find_mapped_object(struct dl_phdr_info *info, size_t size, void *ctx)
{
    (void)size;
    struct mapped_search *s = ctx;
    if (!info->dlpi_name || !strstr(info->dlpi_name, s->needle))
        return 0;
    snprintf(s->path, sizeof s->path, "%s", info->dlpi_name);
    return 1;
}

static void explain_missing_gflags(char *why, size_t why_cap)
{
    struct mapped_search s = {.needle = "libgflags"};
    if (dl_iterate_phdr(find_mapped_object, &s))
        snprintf(why, why_cap, "this process has no gflags reachable by the agent (%s is loaded "
                 "privately, with RTLD_LOCAL, or in a namespace other than google)", s.path);
    else
        snprintf(why, why_cap, "this process has no gflags");
}

/* ---- finding the adapter file -------------------------------------------------------------- */

/* The directory of the object this function is linked into, or false. */
static bool own_directory(char *dir, size_t cap)
{
    Dl_info info;
    if (!dladdr((void *)own_directory, &info) || !info.dli_fname || !*info.dli_fname)
        return false;
    char *resolved = realpath(info.dli_fname, NULL);
    if (!resolved)
        return false;
    char *slash = strrchr(resolved, '/');
    bool ok = slash && (size_t)(slash - resolved) < cap;
    if (ok)
        snprintf(dir, cap, "%.*s", (int)(slash - resolved), resolved);
    free(resolved);
    return ok;
}

/* Fills path with the first candidate that exists; else false, with the places tried in why. */
static bool find_adapter(char *path, size_t cap, char *why, size_t why_cap)
{
    const char *env = hp_env("HOTPATCH_GFLAGS_ADAPTER");
    if (env && *env) {
        snprintf(path, cap, "%s", env);
        if (access(path, R_OK) == 0)
            return true;
        snprintf(why, why_cap, "HOTPATCH_GFLAGS_ADAPTER=%.200s: %s", env, strerror(errno));
        return false;
    }
    char dir[PATH_MAX] = "";
    bool have_dir = own_directory(dir, sizeof dir);
    const char *candidates[4][2] = {
        {have_dir ? dir : NULL, "/" HP_GFLAGS_ADAPTER_FILE},
        {have_dir ? dir : NULL, "/" HOTPATCH_PRIVATE_SUBDIR "/" HP_GFLAGS_ADAPTER_FILE},
        {have_dir ? dir : NULL, "/../lib/" HP_GFLAGS_ADAPTER_FILE},
        {HOTPATCH_INSTALL_LIBDIR, "/" HP_GFLAGS_ADAPTER_FILE},
    };
    for (size_t i = 0; i < HP_ARRAY_SIZE(candidates); i++) {
        if (!candidates[i][0])
            continue;
        int n = snprintf(path, cap, "%s%s", candidates[i][0], candidates[i][1]);
        if (n > 0 && (size_t)n < cap && access(path, R_OK) == 0)
            return true;
    }
    snprintf(why, why_cap, "this process has gflags, but the agent's gflags adapter %s was not "
             "found next to the agent (%.200s) nor in %s; set HOTPATCH_GFLAGS_ADAPTER to its "
             "path", HP_GFLAGS_ADAPTER_FILE, have_dir ? dir : "unknown directory",
             HOTPATCH_INSTALL_LIBDIR);
    return false;
}

/* ---- loading ------------------------------------------------------------------------------- */

static void *required_symbol(void *handle, const char *name, const char *path, char *why,
                             size_t why_cap)
{
    void *sym = dlsym(handle, name);
    if (!sym)
        snprintf(why, why_cap, "gflags adapter %.200s lacks %s; it does not belong to this "
                 "agent", path, name);
    return sym;
}

/* dlopen of the adapter through the trusted walk (agent/trust.c), as `lib load` does: the file
 * checked is the file loaded. The descriptor stays open for the life of the process, as the
 * adapter does (RTLD_NODELETE), so the loader's name for it keeps naming it. */
static void *open_adapter(const char *path, char *why, size_t why_cap)
{
    char reason[HP_ERROR_MAX];
    int fd = hp_trust_open(path, O_RDONLY | O_NONBLOCK, 0, HP_LINKS_TRUSTED, reason,
                           sizeof reason);
    if (fd >= 0 && hp_trust_check_file(fd, path, false, reason, sizeof reason) != 0) {
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        snprintf(why, why_cap, "refusing to load the gflags adapter: %.300s", reason);
        return NULL;
    }
    char by_fd[64];
    snprintf(by_fd, sizeof by_fd, "/proc/self/fd/%d", fd);
    dlerror();
    void *handle = dlopen(by_fd, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!handle) {
        const char *err = dlerror();
        snprintf(why, why_cap, "cannot load the gflags adapter %.200s: %.300s", path,
                 err ? err : "dlopen failed");
        close(fd);
    }
    return handle;
}

static bool load_adapter(char *why, size_t why_cap)
{
    char path[PATH_MAX];
    if (!find_adapter(path, sizeof path, why, why_cap))
        return false;
    void *handle = open_adapter(path, why, why_cap);
    if (!handle)
        return false;
    hp_gflags_adapter_abi_fn abi;
    struct hp_gflags_adapter a;
    *(void **)&abi = required_symbol(handle, "hp_gflags_adapter_abi", path, why, why_cap);
    *(void **)&a.each = required_symbol(handle, "hp_gflags_adapter_each", path, why, why_cap);
    *(void **)&a.get = required_symbol(handle, "hp_gflags_adapter_get", path, why, why_cap);
    *(void **)&a.set = required_symbol(handle, "hp_gflags_adapter_set", path, why, why_cap);
    *(void **)&a.set_vlog = required_symbol(handle, "hp_glog_adapter_set_vlog", path, why,
                                            why_cap);
    if (!abi || !a.each || !a.get || !a.set || !a.set_vlog)
        return false;
    if (abi() != HP_GFLAGS_ADAPTER_ABI) {
        snprintf(why, why_cap, "gflags adapter %.200s speaks ABI %d, this agent %d; install "
                 "matching versions", path, abi(), HP_GFLAGS_ADAPTER_ABI);
        return false;
    }
    loaded = a;
    is_loaded = true;
    return true;
}

/* ---- the flags as first seen (for diff) ------------------------------------------------------ */

/* Every flag's value when the adapter was loaded, the first time the agent read the flags;
 * sorted by name as gflags lists them. Guarded by loader_lock; written once. */
struct first_flag {
    char *name, *value;
};
static struct first_flag *first_flags;
static size_t n_first_flags, cap_first_flags;

static void remember_flag(const struct hp_gflag *flag, void *ctx)
{
    (void)ctx;
    if (n_first_flags == cap_first_flags) {
        size_t cap = cap_first_flags ? cap_first_flags * 2 : 64;
        struct first_flag *grown = realloc(first_flags, cap * sizeof *grown);
        if (!grown)
            return;
        first_flags = grown;
        cap_first_flags = cap;
    }
    char *name = strdup(flag->name), *value = strdup(flag->value);
    if (!name || !value) {
        free(name);
        free(value);
        return;
    }
    first_flags[n_first_flags++] = (struct first_flag){name, value};
}

static int compare_first(const void *key, const void *entry)
{
    return strcmp(key, ((const struct first_flag *)entry)->name);
}

const char *hp_gflags_first_value(const char *name)
{
    pthread_mutex_lock(&loader_lock);
    const struct first_flag *f =
        first_flags ? bsearch(name, first_flags, n_first_flags, sizeof *first_flags, compare_first)
                    : NULL;
    const char *value = f ? f->value : NULL;
    pthread_mutex_unlock(&loader_lock);
    return value;
}

const struct hp_gflags_adapter *hp_gflags_adapter(char *why, size_t why_cap)
{
    pthread_mutex_lock(&loader_lock);
    const struct hp_gflags_adapter *result = NULL;
    if (is_loaded) {
        result = &loaded;
    } else if (!dlsym(RTLD_DEFAULT, gflags_probe_symbol)) {
        explain_missing_gflags(why, why_cap);
    } else if (load_adapter(why, why_cap)) {
        result = &loaded;
        char ignored[HP_ERROR_MAX];
        loaded.each(false, remember_flag, NULL, ignored, sizeof ignored);
    }
    pthread_mutex_unlock(&loader_lock);
    return result;
}
