/*
 * func.c — the `func` command family: list, upgrade, rollback.
 *
 *   func list                        every registered or patched function: its address, what
 *                                    runs now (library:symbol and address), the depth of its
 *                                    version stack and how the jump gets there
 *   func upgrade LIB FUNC [SYMBOL]   replace FUNC by SYMBOL (default: FUNC's name) exported by
 *                                    the library loaded as LIB
 *   func rollback FUNC               one version back (versions stack)
 *
 * This file only translates between words and the engine: names are resolved here against the
 * registry first, then by the engine's symbols.c (ELF symbol tables, OBJECT:NAME for ambiguous
 * names, the names given to `lib load` as aliases); every safety decision is the engine's. Every failure is one error line and changes nothing.
 * It also answers the `lib unload` question for the engine (hp_func_library_busy).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "engine/engine.h"

/* ---- resolving names ------------------------------------------------------------------------ */

/* The names given to `lib load`, as the engine's aliases. */
struct alias_list {
    struct hp_symbol_alias *items;
    size_t count, capacity;
    bool failed;
};

static void collect_alias(const struct hp_library_view *l, void *ctx)
{
    struct alias_list *list = ctx;
    if (list->count == list->capacity) {
        size_t cap = list->capacity ? list->capacity * 2 : 16;
        struct hp_symbol_alias *grown = realloc(list->items, cap * sizeof *grown);
        if (!grown) {
            list->failed = true;
            return;
        }
        list->items = grown;
        list->capacity = cap;
    }
    list->items[list->count++] = (struct hp_symbol_alias){l->name, l->base};
}

typedef int (*resolver)(const char *spec, const struct hp_symbol_scope *scope,
                        struct hp_symbol *out, char *why, size_t why_cap);

/* Resolves spec with the engine, the names given to `lib load` as its aliases. */
static int resolve_with_aliases(resolver resolve, const char *spec, struct hp_symbol *out,
                                char *why, size_t why_cap)
{
    /* The views' names stay valid: only this thread (the agent's) removes libraries. */
    struct alias_list aliases = {0};
    hp_registry_each_library(collect_alias, &aliases);
    if (aliases.failed) {
        free(aliases.items);
        snprintf(why, why_cap, "out of memory");
        return -ENOMEM;
    }
    struct hp_symbol_scope scope = {aliases.items, aliases.count};
    int rc = resolve(spec, &scope, out, why, why_cap);
    free(aliases.items);
    return rc;
}

int hp_func_resolve(const char *func, struct hp_symbol *out, char *why, size_t why_cap)
{
    void *registered = func ? hp_registry_find_function(func) : NULL;
    if (registered && strlen(func) < sizeof out->name) {
        memset(out, 0, sizeof *out);
        out->address = registered;
        out->registered = true;
        snprintf(out->name, sizeof out->name, "%s", func);
        hp_symbol_describe(out);
        return 0;
    }
    return resolve_with_aliases(hp_symbol_resolve, func, out, why, why_cap);
}

int hp_data_resolve(const char *variable, struct hp_symbol *out, char *why, size_t why_cap)
{
    return resolve_with_aliases(hp_symbol_resolve_data, variable, out, why, why_cap);
}

/*
 * Resolves SYMBOL as a patch's import: a function as func commands resolve it, else a variable
 * of the process's symbol tables (static ones too). A name neither resolves gets the variable
 * search's reason when the function search only found nothing.
 */
int hp_symbol_resolve_any(const char *symbol, struct hp_symbol *out, char *why, size_t why_cap)
{
    char fn_why[HP_ERROR_MAX];
    int fn_rc = hp_func_resolve(symbol, out, fn_why, sizeof fn_why);
    if (fn_rc == 0)
        return 0;
    int rc = hp_data_resolve(symbol, out, why, why_cap);
    if (rc == 0 || fn_rc == -ENOENT)
        return rc;
    snprintf(why, why_cap, "%s", fn_why);
    return fn_rc;
}

/* ---- func list ------------------------------------------------------------------------------ */

struct list_ctx {
    struct hp_reply *reply;
};

static void add_common_fields(struct hp_reply *reply, const char *name, const void *address)
{
    hp_reply_item_begin(reply);
    hp_reply_item_str(reply, "name", name);
    hp_reply_item_ptr(reply, "address", address);
}

static void add_patched_item(const struct hp_patch_view *v, void *ctx)
{
    struct hp_reply *reply = ctx;
    char installed[400];
    if (v->depth == 0)
        snprintf(installed, sizeof installed, "original");
    else
        snprintf(installed, sizeof installed, "%s:%s", v->top.library, v->top.symbol);
    add_common_fields(reply, v->name, v->entry);
    hp_reply_item_str(reply, "installed", installed);
    hp_reply_item_ptr(reply, "installed_address", v->top.address);
    hp_reply_item_int(reply, "depth", v->depth);
    hp_reply_item_str(reply, "jump", v->depth == 0 ? "none" : v->via_relay ? "relay" : "direct");
}

static void ignore_view(const struct hp_patch_view *v, void *ctx)
{
    (void)v;
    (void)ctx;
}

static void add_registered_item(const struct hp_function_view *f, void *ctx)
{
    struct hp_reply *reply = ctx;
    if (hp_patch_find(f->address, ignore_view, NULL))
        return;  /* listed with its patch state */
    add_common_fields(reply, f->name, f->address);
    hp_reply_item_str(reply, "installed", "original");
    hp_reply_item_ptr(reply, "installed_address", f->address);
    hp_reply_item_int(reply, "depth", 0);
    hp_reply_item_str(reply, "jump", "none");
}

static void cmd_func_list(const struct hp_request *req, struct hp_reply *reply)
{
    (void)req;
    hp_reply_list(reply, "no functions are registered or patched (any function the symbol "
                         "tables name can still be upgraded)");
    hp_patch_each(add_patched_item, reply);
    hp_registry_each_function(add_registered_item, reply);
}

/* ---- func upgrade ---------------------------------------------------------------------------- */

/* The bare name of FUNC, without an OBJECT: qualifier. */
static const char *bare_name(const char *func)
{
    const char *colon = strrchr(func, ':');
    return colon ? colon + 1 : func;
}

static bool resolve_function(const char *func, struct hp_symbol *sym, struct hp_reply *reply)
{
    char why[HP_ERROR_MAX] = "";
    if (hp_func_resolve(func, sym, why, sizeof why) == 0)
        return true;
    hp_reply_error(reply, "%s", why);
    return false;
}

static bool find_library(const char *name, struct hp_library_view *lib, struct hp_reply *reply)
{
    if (hp_registry_find_library(name, lib) == 0)
        return true;
    hp_reply_error(reply, "no library loaded as '%.128s' (load it with 'lib load %.128s PATH'; "
                   "see 'lib list')", name, name);
    return false;
}

struct upgrade_result {
    int depth;
    bool via_relay;
};

static void read_result(const struct hp_patch_view *v, void *ctx)
{
    struct upgrade_result *r = ctx;
    r->depth = v->depth;
    r->via_relay = v->via_relay;
}

static void cmd_func_upgrade(const struct hp_request *req, struct hp_reply *reply)
{
    const char *lib_name = req->argv[0], *func = req->argv[1];
    const char *symbol = req->argc > 2 ? req->argv[2] : bare_name(func);
    struct hp_library_view lib;
    struct hp_symbol target, repl;
    char why[HP_ERROR_MAX] = "";
    if (!find_library(lib_name, &lib, reply) || !resolve_function(func, &target, reply))
        return;
    if (hp_symbol_in_library(lib.handle, symbol, &repl, why, sizeof why) != 0) {
        hp_reply_error(reply, "%.128s: no function %.200s in it (%s)", lib_name, symbol, why);
        return;
    }
    struct hp_patch_target t = {func, target.address, target.size};
    struct hp_patch_origin o = {lib_name, symbol, repl.address};
    if (hp_patch_upgrade(&t, &o, why, sizeof why) != 0) {
        hp_reply_error(reply, "cannot upgrade %s: %s", func, why);
        return;
    }
    struct upgrade_result r = {0, false};
    hp_patch_find(target.address, read_result, &r);
    char depth[16];
    snprintf(depth, sizeof depth, "%d", r.depth);
    hp_reply_field(reply, "function", func, HP_JSON_STRING);
    hp_reply_field(reply, "library", lib_name, HP_JSON_STRING);
    hp_reply_field(reply, "symbol", symbol, HP_JSON_STRING);
    hp_reply_field(reply, "depth", depth, HP_JSON_NUMBER);
    hp_reply_field(reply, "jump", r.via_relay ? "relay" : "direct", HP_JSON_STRING);
    hp_reply_message(reply, "upgraded %s (%p) to %s:%s (%p), version %d, %s jump", func,
                     target.address, lib_name, symbol, repl.address, r.depth,
                     r.via_relay ? "relay" : "direct");
}

/* ---- func rollback ---------------------------------------------------------------------------- */

static void note_top_library(const struct hp_patch_view *v, void *ctx)
{
    snprintf(ctx, 128, "%s", v->depth ? v->top.library : "");
}

/* A version a patch installed goes out only with the whole patch: rolling back one of its
 * functions would leave the process running half of it. True when it said so. */
static bool refuse_half_a_patch(const char *func, void *entry, struct hp_reply *reply)
{
    char top[128] = "";
    if (!entry || !hp_patch_find(entry, note_top_library, top) || !top[0] ||
        !hp_patch_is_applied(top))
        return false;
    hp_reply_error(reply, "cannot roll back %s alone: patch %s installed it with its other "
                   "functions; 'patch revert %s' takes the whole patch out in one step", func,
                   top, top);
    return true;
}

static void cmd_func_rollback(const struct hp_request *req, struct hp_reply *reply)
{
    const char *func = req->argv[0];
    struct hp_symbol target;
    char why[HP_ERROR_MAX] = "", lib[128], symbol[256];
    int depth = 0;
    memset(&target, 0, sizeof target);
    /* FUNC is found by the name its upgrade was given, else by its resolved address. When it
     * resolves to nothing the engine's answer still names it (unknown or nothing installed). */
    int resolved = hp_func_resolve(func, &target, why, sizeof why);
    if (resolved != 0 && resolved != -ENOENT) {
        hp_reply_error(reply, "%s", why);
        return;
    }
    if (resolved == 0 && refuse_half_a_patch(func, target.address, reply))
        return;
    char unknown[HP_ERROR_MAX];
    snprintf(unknown, sizeof unknown, "%s", why);
    why[0] = '\0';
    int rc = hp_patch_rollback(func, target.address, lib, sizeof lib, symbol, sizeof symbol,
                               &depth, why, sizeof why);
    if (rc == -ENOENT && resolved == -ENOENT) {
        hp_reply_error(reply, "cannot roll back %s: %s", func, unknown);
        return;
    }
    if (rc != 0) {
        hp_reply_error(reply, "cannot roll back %s: %s", func, why);
        return;
    }
    char depth_text[16];
    snprintf(depth_text, sizeof depth_text, "%d", depth);
    hp_reply_field(reply, "function", func, HP_JSON_STRING);
    hp_reply_field(reply, "depth", depth_text, HP_JSON_NUMBER);
    hp_reply_field(reply, "installed", depth ? lib : "original", HP_JSON_STRING);
    if (depth)
        hp_reply_message(reply, "rolled back %s: %s:%s runs now (version %d)", func, lib, symbol,
                         depth);
    else
        hp_reply_message(reply, "rolled back %s: the original code runs now", func);
}

/* ---- lib unload ---------------------------------------------------------------------------------- */

int hp_func_library_busy(const struct hp_library_view *lib, char *why, size_t why_cap)
{
    struct hp_range ranges[32];
    size_t n = hp_symbol_object_ranges(lib->base, ranges, HP_ARRAY_SIZE(ranges));
    if (n == 0) {
        snprintf(why, why_cap, "its mappings were not found (base %p), so it cannot be proven "
                 "unused", (void *)lib->base);
        return -EBUSY;
    }
    return hp_patch_library_busy(lib->name, ranges, n, why, why_cap);
}

const struct hp_command hp_func_commands[] = {
    {"func", "list", 0, 0, cmd_func_list, "func list",
     "list registered and patched functions: address, installed version, stack depth", 0},
    {"func", "upgrade", 2, 3, cmd_func_upgrade, "func upgrade LIB FUNC [SYMBOL]",
     "replace FUNC by SYMBOL (default FUNC) from the library loaded as LIB", HP_CMD_MUTATES},
    {"func", "rollback", 1, 1, cmd_func_rollback, "func rollback FUNC",
     "go back one version of FUNC (to the original after the last one)", HP_CMD_MUTATES},
    {0},
};
