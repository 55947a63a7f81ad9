/*
 * patch.c — the `patch` command family: a whole fix, from one checked file, in one step.
 *
 *   patch apply [--check] PATH   reads the patch's metadata from the file (patch_file.c),
 *                                checks everything — the build-id of the object it was built
 *                                for, that every target and import resolves and every target
 *                                is patchable, that the name is free — and only then loads the
 *                                file and installs every replacement in one stop of the threads
 *                                (the engine's hp_patch_upgrade_all). --check stops before
 *                                loading: nothing runs, nothing changes.
 *   patch revert NAME            takes every replacement of the patch out in one stop, then
 *                                unloads the file when the engine's unload check allows it
 *                                (else keeps it mapped and says so in `patch list`)
 *   patch list                   name, description, file, when and by whom applied, functions
 *
 * The order matters for safety: a refused patch never runs a line of its code, because
 * nothing is loaded before every check passed; and imports are filled in after the load but
 * before the replacements are installed, so no replacement can run with an unset import.
 *
 * Applied patches are kept in a list owned by this file; every handler runs on the agent's
 * thread, so it needs no lock.
 */
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "engine/engine.h"

struct applied_patch {
    struct hp_patch_file meta;
    char path[512];
    long long applied_ms;
    uid_t uid;
    void *handle;                /* NULL once unloaded */
    uintptr_t base;
    struct hp_held_file file;
    bool reverted;               /* out of every function, but still mapped */
    char kept_why[HP_ERROR_MAX]; /* why it could not be unloaded yet */
    size_t n;
    void *entries[HP_PATCH_MAX_FUNCTIONS];
    void *tops[HP_PATCH_MAX_FUNCTIONS];
    struct applied_patch *next;
};

/* The applied patches, newest first; agent thread. */
static struct applied_patch *patches;

static struct applied_patch *find_patch(const char *name)
{
    for (struct applied_patch *p = patches; p; p = p->next)
        if (strcmp(p->meta.name, name) == 0)
            return p;
    return NULL;
}

bool hp_patch_is_applied(const char *name)
{
    const struct applied_patch *ap = find_patch(name);
    return ap && !ap->reverted;
}

/* ---- checks before anything is loaded ---------------------------------------------------- */

static bool build_ids_match(const struct hp_patch_file *meta, struct hp_reply *reply)
{
    for (size_t i = 0; i < meta->n_build_ids; i++) {
        const char *object = meta->build_ids[i].a, *want = meta->build_ids[i].b;
        const char *shown = *object ? object : "the main program";
        char have[160];
        int rc = hp_loaded_build_id(object, have, sizeof have);
        if (rc == -ENOENT) {
            hp_reply_error(reply, "patch %s was built for %s, which is not in this process",
                           meta->name, shown);
            return false;
        }
        if (rc == -ENODATA) {
            hp_reply_error(reply, "patch %s was built for %s with build-id %s, but this "
                           "process's %s has no build-id", meta->name, shown, want, shown);
            return false;
        }
        if (strcasecmp(have, want) != 0) {
            hp_reply_error(reply, "patch %s was built for %s with build-id %s, but this process "
                           "runs %s with build-id %s", meta->name, shown, want, shown, have);
            return false;
        }
    }
    return true;
}

/* Resolves every target and checks that each is patchable; fills targets[]. */
static bool targets_patchable(const struct hp_patch_file *meta, struct hp_symbol *targets,
                              struct hp_reply *reply)
{
    char why[HP_ERROR_MAX];
    for (size_t i = 0; i < meta->n_replaces; i++) {
        const char *name = meta->replaces[i].a;
        if (hp_func_resolve(name, &targets[i], why, sizeof why) != 0) {
            hp_reply_error(reply, "patch %s: target %s: %s", meta->name, name, why);
            return false;
        }
        for (size_t j = 0; j < i; j++)
            if (targets[j].address == targets[i].address) {
                hp_reply_error(reply, "patch %s replaces one function twice (%s and %s): one "
                               "HOTPATCH_REPLACE per function", meta->name, meta->replaces[j].a,
                               name);
                return false;
            }
        struct hp_patch_target t = {name, targets[i].address, targets[i].size};
        if (hp_patch_check_target(&t, why, sizeof why) != 0) {
            hp_reply_error(reply, "patch %s: target %s cannot be patched: %s", meta->name, name,
                           why);
            return false;
        }
    }
    return true;
}

/* Resolves every import of the process; fills addresses[]. */
static bool imports_resolve(const struct hp_patch_file *meta, void **addresses,
                            struct hp_reply *reply)
{
    char why[HP_ERROR_MAX];
    for (size_t i = 0; i < meta->n_imports; i++) {
        const char *symbol = meta->imports[i].a;
        struct hp_symbol sym;
        if (hp_symbol_resolve_any(symbol, &sym, why, sizeof why) != 0) {
            hp_reply_error(reply, "patch %s: import %s does not resolve: %s", meta->name, symbol,
                           why);
            return false;
        }
        addresses[i] = sym.address;
    }
    return true;
}

/* ---- patch apply ----------------------------------------------------------------------------- */

struct plan {
    struct hp_symbol targets[HP_PATCH_MAX_FUNCTIONS];
    void *imports[HP_PATCH_MAX_FUNCTIONS];
    struct hp_patch_change changes[HP_PATCH_MAX_FUNCTIONS];
};

/* After loading: the replacements' and the import slots' addresses in the patch. */
static bool find_in_patch(const struct applied_patch *ap, struct plan *plan, void ***slots,
                          struct hp_reply *reply)
{
    const struct hp_patch_file *meta = &ap->meta;
    for (size_t i = 0; i < meta->n_replaces; i++) {
        void *fn = dlsym(ap->handle, meta->replaces[i].b);
        if (!fn) {
            hp_reply_error(reply, "patch %s has no function %s (its replacement for %s must not "
                           "be static)", meta->name, meta->replaces[i].b, meta->replaces[i].a);
            return false;
        }
        plan->changes[i] = (struct hp_patch_change){
            {meta->replaces[i].a, plan->targets[i].address, plan->targets[i].size},
            {meta->name, meta->replaces[i].b, fn}};
    }
    for (size_t i = 0; i < meta->n_imports; i++) {
        slots[i] = dlsym(ap->handle, meta->imports[i].b);
        if (!slots[i]) {
            hp_reply_error(reply, "patch %s has no import slot %s", meta->name,
                           meta->imports[i].b);
            return false;
        }
    }
    return true;
}

static void unload(struct applied_patch *ap)
{
    if (ap->handle)
        dlclose(ap->handle);
    ap->handle = NULL;
    hp_lib_release_file(&ap->file);
    ap->file.fd = -1;
}

static uintptr_t base_of(void *handle)
{
    struct link_map *map = NULL;
    return dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map ? map->l_addr : 0;
}

/* Unloads the patch when the engine's unload check allows it; else says why in kept_why. */
static int unload_when_safe(struct applied_patch *ap)
{
    struct hp_range ranges[16];
    size_t n = hp_symbol_object_ranges(ap->base, ranges, HP_ARRAY_SIZE(ranges));
    if (hp_patch_library_busy(ap->meta.name, ranges, n, ap->kept_why, sizeof ap->kept_why) != 0) {
        /* The engine's advice is the lib family's, which does not know patches. */
        char *lib_advice = strstr(ap->kept_why, "; 'lib unload --retire ");
        if (lib_advice)
            *lib_advice = '\0';
        return -EBUSY;
    }
    unload(ap);
    return 0;
}

/* A patch refused after it was loaded (its constructors have run, and may have started
 * threads or left callbacks in its code): unloaded only when the engine's unload check
 * allows it, else left mapped for good, so that nothing of it can run in freed memory. */
static void unload_refused(struct applied_patch *ap)
{
    if (unload_when_safe(ap) == 0)
        return;
    hp_log("patch %s was refused after loading and stays mapped: %s", ap->meta.name,
           ap->kept_why);
    ap->handle = NULL;                         /* never closed: its code may still run */
    hp_lib_release_file(&ap->file);
    ap->file.fd = -1;
}

static void reply_applied(const struct applied_patch *ap, bool check_only, struct hp_reply *reply)
{
    hp_reply_field(reply, "name", ap->meta.name, HP_JSON_STRING);
    hp_reply_field(reply, "description", ap->meta.description, HP_JSON_STRING);
    char count[16];
    snprintf(count, sizeof count, "%zu", ap->meta.n_replaces);
    hp_reply_field(reply, "functions", count, HP_JSON_NUMBER);
    hp_reply_field(reply, "checked_only", check_only ? "true" : "false", HP_JSON_BOOL);
    if (check_only)
        hp_reply_message(reply, "patch %s can be applied: %zu function%s, every check passed; "
                         "nothing was loaded or changed", ap->meta.name, ap->meta.n_replaces,
                         ap->meta.n_replaces == 1 ? "" : "s");
    else
        hp_reply_message(reply, "applied patch %s (%s): %zu function%s replaced in one step",
                         ap->meta.name, ap->meta.description, ap->meta.n_replaces,
                         ap->meta.n_replaces == 1 ? "" : "s");
}

/* Loads the checked descriptor, fills the imports, installs every replacement in one stop and
 * records the patch. fd is taken in every case. False (with the reply's error) when the patch
 * is not applied; it is then unloaded again. */
static bool load_and_install(const struct hp_request *req, struct applied_patch *ap,
                             struct plan *plan, int fd, const char *path, struct hp_reply *reply)
{
    void **slots[HP_PATCH_MAX_FUNCTIONS];
    char why[HP_ERROR_MAX];
    ap->handle = hp_lib_dlopen_held(fd, path, &ap->file, reply);
    if (!ap->handle)
        return false;
    ap->base = base_of(ap->handle);
    if (!find_in_patch(ap, plan, slots, reply)) {
        unload_refused(ap);
        return false;
    }
    for (size_t i = 0; i < ap->meta.n_imports; i++)
        *slots[i] = plan->imports[i];        /* before any replacement can run */
    if (hp_patch_upgrade_all(plan->changes, ap->meta.n_replaces, why, sizeof why) != 0) {
        hp_reply_error(reply, "patch %s not applied: %s", ap->meta.name, why);
        unload_refused(ap);
        return false;
    }
    snprintf(ap->path, sizeof ap->path, "%s", path);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ap->applied_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    ap->uid = req->peer ? req->peer->uid : (uid_t)-1;
    ap->n = ap->meta.n_replaces;
    for (size_t i = 0; i < ap->n; i++) {
        ap->entries[i] = plan->changes[i].target.entry;
        ap->tops[i] = plan->changes[i].origin.address;
    }
    ap->next = patches;
    patches = ap;
    reply_applied(ap, false, reply);
    return true;
}

static void apply(const struct hp_request *req, const char *path, bool check_only,
                  struct hp_reply *reply)
{
    struct applied_patch *ap = calloc(1, sizeof *ap);
    struct plan *plan = calloc(1, sizeof *plan);
    char why[HP_ERROR_MAX];
    const struct applied_patch *same = NULL;   /* an applied patch of the file's name */
    int fd = ap && plan ? hp_lib_open_checked(req, path, reply) : -1;
    if (!ap || !plan) {
        hp_reply_error(reply, "out of memory");
    } else if (fd >= 0 && hp_patch_file_read(fd, &ap->meta, why, sizeof why) != 0) {
        hp_reply_error(reply, "refusing to apply %.256s: %s", path, why);
    } else if (fd >= 0 && (same = find_patch(ap->meta.name)) && same->reverted) {
        hp_reply_error(reply, "patch %s is reverted but still mapped (see 'patch list'); "
                       "'patch revert %s' tries to unload it", ap->meta.name, ap->meta.name);
    } else if (fd >= 0 && same) {
        hp_reply_error(reply, "a patch named %s is already applied (see 'patch list'); revert "
                       "it first", ap->meta.name);
    } else if (fd >= 0 && hp_patch_file_check_symbols(fd, &ap->meta, why, sizeof why) != 0) {
        hp_reply_error(reply, "patch %s: %s", ap->meta.name, why);
    } else if (fd >= 0 && build_ids_match(&ap->meta, reply) &&
               targets_patchable(&ap->meta, plan->targets, reply) &&
               imports_resolve(&ap->meta, plan->imports, reply)) {
        if (check_only) {
            reply_applied(ap, true, reply);
        } else {
            bool applied = load_and_install(req, ap, plan, fd, path, reply);
            fd = -1;                        /* ap->file's now, or closed by a failed load */
            if (applied)
                ap = NULL;                  /* kept in the list of applied patches */
        }
    }
    if (fd >= 0)
        close(fd);
    if (ap)
        hp_patch_file_free(&ap->meta);
    free(ap);
    /* The plan holds the replacements' addresses: left in freed memory they would look like
     * live references to the unload scan when the patch is reverted. */
    if (plan)
        explicit_bzero(plan, sizeof *plan);
    free(plan);
}

static void cmd_patch_apply(const struct hp_request *req, struct hp_reply *reply)
{
    bool check_only;
    if (!hp_request_option(req, "--check", &check_only, reply))
        return;
    apply(req, req->argv[check_only ? 1 : 0], check_only, reply);
}

/* ---- patch revert ---------------------------------------------------------------------------- */

struct top_owner {
    char name[128];
};

static void remember_top(const struct hp_patch_view *v, void *ctx)
{
    struct top_owner *o = ctx;
    snprintf(o->name, sizeof o->name, "%s", v->top.library);
}

/* The patch (or library) whose version runs now at entry; "" for the original code. */
static void owner_of_top(void *entry, struct top_owner *out)
{
    out->name[0] = '\0';
    hp_patch_find(entry, remember_top, out);
}

static void unlink_patch(struct applied_patch *ap)
{
    for (struct applied_patch **p = &patches; *p; p = &(*p)->next)
        if (*p == ap) {
            *p = ap->next;
            break;
        }
    hp_patch_file_free(&ap->meta);
    free(ap);
}

static void cmd_patch_revert(const struct hp_request *req, struct hp_reply *reply)
{
    const char *name = req->argv[0];
    struct applied_patch *ap = find_patch(name);
    if (!ap) {
        hp_reply_error(reply, "no patch named '%.64s' is applied (see 'patch list')", name);
        return;
    }
    char why[HP_ERROR_MAX];
    if (!ap->reverted) {
        int rc = hp_patch_rollback_all(ap->entries, (const void *const *)ap->tops, ap->n, why,
                                       sizeof why);
        if (rc == -EBUSY) {
            for (size_t i = 0; i < ap->n; i++) {
                struct top_owner later;
                owner_of_top(ap->entries[i], &later);
                if (later.name[0] && strcmp(later.name, name) != 0 && find_patch(later.name)) {
                    hp_reply_error(reply, "cannot revert %s: patch %s replaced %s after it; "
                                   "'patch revert %s' first", name, later.name,
                                   ap->meta.replaces[i].a, later.name);
                    return;
                }
                if (later.name[0] && strcmp(later.name, name) != 0) {
                    hp_reply_error(reply, "cannot revert %s: %s (loaded with 'lib load') "
                                   "upgraded %s after it; 'func rollback %s' first", name,
                                   later.name, ap->meta.replaces[i].a, ap->meta.replaces[i].a);
                    return;
                }
            }
        }
        if (rc != 0) {
            hp_reply_error(reply, "cannot revert %s: %s; nothing changed", name, why);
            return;
        }
        ap->reverted = true;
        explicit_bzero(ap->tops, sizeof ap->tops);   /* not a reference the unload scan must see */
    }
    hp_reply_field(reply, "name", name, HP_JSON_STRING);
    if (unload_when_safe(ap) != 0) {
        hp_reply_field(reply, "unloaded", "false", HP_JSON_BOOL);
        hp_reply_message(reply, "reverted %s: its %zu function%s run the code below it again; "
                         "kept mapped for now (%s; none of its functions is installed; 'patch "
                         "revert %s' tries the unload again)", name, ap->n,
                         ap->n == 1 ? "" : "s", ap->kept_why, name);
        return;
    }
    hp_reply_field(reply, "unloaded", "true", HP_JSON_BOOL);
    hp_reply_message(reply, "reverted %s: its %zu function%s run the code below it again, and "
                     "it is unloaded", name, ap->n, ap->n == 1 ? "" : "s");
    unlink_patch(ap);
}

/* ---- patch list ------------------------------------------------------------------------------ */

static void format_time(long long ms, char *out, size_t cap)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void cmd_patch_list(const struct hp_request *req, struct hp_reply *reply)
{
    (void)req;
    hp_reply_list(reply, "no patches are applied (apply one with 'patch apply PATH')");
    for (const struct applied_patch *ap = patches; ap; ap = ap->next) {
        char when[40], functions[1024] = "";
        format_time(ap->applied_ms, when, sizeof when);
        size_t used = 0;
        for (size_t i = 0; i < ap->meta.n_replaces && used < sizeof functions; i++)
            used += (size_t)snprintf(functions + used, sizeof functions - used, "%s%s",
                                     i ? "," : "", ap->meta.replaces[i].a);
        hp_reply_item_begin(reply);
        hp_reply_item_str(reply, "name", ap->meta.name);
        hp_reply_item_str(reply, "state", ap->reverted ? "reverted, still mapped" : "applied");
        hp_reply_item_str(reply, "applied", when);
        hp_reply_item_int(reply, "uid", (long long)ap->uid);
        hp_reply_item_str(reply, "functions", functions);
        hp_reply_item_str(reply, "file", ap->path);
        hp_reply_item_str(reply, "description", ap->meta.description);
    }
}

const struct hp_command hp_patch_commands[] = {
    {"patch", "list", 0, 0, cmd_patch_list, "patch list",
     "applied patches: name, state, when, by whom, functions, file, description", 0},
    {"patch", "apply", 1, 2, cmd_patch_apply, "patch apply [--check] PATH",
     "check a patch file and install all its functions in one step (--check: only check)",
     HP_CMD_MUTATES | HP_CMD_TAKES_FD},
    {"patch", "revert", 1, 1, cmd_patch_revert, "patch revert NAME",
     "take all of a patch's functions out in one step, then unload it when safe",
     HP_CMD_MUTATES},
    {0},
};
