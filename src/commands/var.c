/*
 * var.c — the `var` command family: list, get and set registered variables, and globals that
 * nobody registered, reached by symbol.
 *
 * The registry does the typed work (parse, range, validator, atomic store); this file turns
 * words into registry calls and registry answers into replies. TYPE is optional in get and set
 * because the registry knows each variable's type; when given and wrong the command is refused,
 * never reinterpreted.
 *
 * Globals by symbol: `var get TYPE SYMBOL` and `var set TYPE SYMBOL VALUE` where SYMBOL is no
 * registered name. The grammar stays unambiguous because a registered name always wins: with
 * TYPE, a registered NAME is the registered variable (and TYPE must be its type); any other word
 * is looked up in the symbol tables (engine's hp_symbol_resolve_data: NAME or OBJECT:NAME, static
 * variables too). Without TYPE only registered names are reached: the agent knows no type for a
 * bare symbol, and guessing one would reinterpret memory. A symbol is refused, with the reason,
 * when its st_size is not TYPE's size, when it is not aligned to that size (the one load or
 * store could tear), when any of its bytes is not readable (get) or writable (set) in
 * /proc/self/maps (.rodata, RELRO after relocation), and when it is a function or thread-local.
 * Loads and stores are single __atomic accesses of the type's width (value.c), as for registered
 * scalars; there is no validator and no change callback: the program never asked for them.
 *
 * The globals reached so far are remembered with the value first seen (`diff`); history gets
 * them through the protocol like any change ("var SYMBOL"). That list is owned by this file and
 * touched on the agent's thread only.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "commands.h"
#include "engine/engine.h"

/* How a formatted value of `type` appears in JSON. */
static enum hp_json_kind json_kind_of(enum hotpatch_type type, const char *text)
{
    if (type == HOTPATCH_TYPE_STRING)
        return HP_JSON_STRING;
    if (type == HOTPATCH_TYPE_BOOL)
        return HP_JSON_BOOL;
    /* nan and inf have no JSON number form: they travel as strings. */
    if ((type == HOTPATCH_TYPE_FLOAT || type == HOTPATCH_TYPE_DOUBLE) &&
        !isfinite(strtod(text, NULL)))
        return HP_JSON_STRING;
    return HP_JSON_NUMBER;
}

/* Reads the optional TYPE word; false (and an error) when it is not a type name. */
static bool parse_type_word(const char *word, enum hotpatch_type *type, struct hp_reply *reply)
{
    *type = hp_type_from_name(word);
    if (*type)
        return true;
    hp_reply_error(reply, "unknown type '%.64s'; types: %s", word, hp_type_names());
    return false;
}

static void add_variable_item(const struct hp_variable_view *v, void *ctx)
{
    struct hp_reply *reply = ctx;
    hp_reply_item_begin(reply);
    hp_reply_item_str(reply, "name", v->name);
    hp_reply_item_str(reply, "type", hp_type_name(v->type));
    hp_reply_item(reply, "value", v->value, json_kind_of(v->type, v->value));
}

static void cmd_var_list(const struct hp_request *req, struct hp_reply *reply)
{
    (void)req;
    hp_reply_list(reply, "no variables are registered");
    hp_registry_each_variable(add_variable_item, reply);
}

/* ---- globals by symbol ------------------------------------------------------------------ */

#define MAX_SEEN_SYMBOLS 64

/* A global reached by symbol, and the value the agent first saw there (for diff). */
struct seen_symbol {
    char spec[HP_NAME_MAX + 1];
    enum hotpatch_type type;
    void *address;
    char first[64];
};

/* The globals reached by symbol so far; agent thread. */
static struct seen_symbol seen[MAX_SEEN_SYMBOLS];
static size_t seen_count;

static void remember_first_value(const char *spec, enum hotpatch_type type, void *address,
                                 const char *value)
{
    for (size_t i = 0; i < seen_count; i++)
        if (seen[i].address == address && seen[i].type == type)
            return;
    if (seen_count == MAX_SEEN_SYMBOLS || strlen(spec) >= sizeof seen[0].spec)
        return;                         /* best effort, as for registered variables */
    struct seen_symbol *s = &seen[seen_count++];
    snprintf(s->spec, sizeof s->spec, "%s", spec);
    s->type = type;
    s->address = address;
    snprintf(s->first, sizeof s->first, "%s", value);
}

/* The type names of `size` bytes, for a refusal that says what would be accepted. */
static void types_of_size(size_t size, char *out, size_t cap)
{
    static const enum hotpatch_type scalars[] = {
        HOTPATCH_TYPE_BOOL, HOTPATCH_TYPE_SCHAR, HOTPATCH_TYPE_UCHAR, HOTPATCH_TYPE_SHORT,
        HOTPATCH_TYPE_USHORT, HOTPATCH_TYPE_INT, HOTPATCH_TYPE_UINT, HOTPATCH_TYPE_LONG,
        HOTPATCH_TYPE_ULONG, HOTPATCH_TYPE_LLONG, HOTPATCH_TYPE_ULLONG, HOTPATCH_TYPE_FLOAT,
        HOTPATCH_TYPE_DOUBLE};
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < HP_ARRAY_SIZE(scalars) && used < cap; i++)
        if (hp_type_size(scalars[i]) == size)
            used += (size_t)snprintf(out + used, cap - used, "%s%s", used ? ", " : "",
                                     hp_type_name(scalars[i]));
}

/* Resolves SYMBOL for TYPE and checks that one access of TYPE's width there is sound: same
 * size, aligned, and mapped readable (and writable when `writing`). */
static bool symbol_reachable(const char *spec, enum hotpatch_type type, bool writing,
                             struct hp_symbol *sym, struct hp_reply *reply)
{
    char why[HP_ERROR_MAX];
    if (type == HOTPATCH_TYPE_STRING) {
        hp_reply_error(reply, "no variable named '%.128s' is registered, and a symbol is reached "
                       "only as a scalar type (bool, schar, uchar, short, ushort, int, uint, "
                       "long, ulong, llong, ullong, float, double), not string", spec);
        return false;
    }
    if (hp_data_resolve(spec, sym, why, sizeof why) != 0) {
        hp_reply_error(reply, "%s", why);
        return false;
    }
    size_t size = hp_type_size(type);
    if (sym->size != size) {
        char fits[128];
        types_of_size(sym->size, fits, sizeof fits);
        hp_reply_error(reply, "%s is %zu bytes (its st_size), but %s is %zu; %s%s", spec,
                       sym->size, hp_type_name(type), size, fits[0] ? "types of that size: " :
                       "no type has that size", fits);
        return false;
    }
    if ((uintptr_t)sym->address % size != 0) {
        hp_reply_error(reply, "%s at %p is not aligned to its %zu bytes: one access could tear, "
                       "so it is refused", spec, sym->address, size);
        return false;
    }
    int prot = hp_memory_protection((uintptr_t)sym->address, size);
    if (prot < 0 || !(prot & PROT_READ)) {
        hp_reply_error(reply, "%s at %p is not in readable memory", spec, sym->address);
        return false;
    }
    if (writing && !(prot & PROT_WRITE)) {
        hp_reply_error(reply, "%s at %p is in read-only memory (a const, .rodata or RELRO); it "
                       "cannot be set", spec, sym->address);
        return false;
    }
    return true;
}

static void get_symbol(const char *spec, enum hotpatch_type type, struct hp_reply *reply)
{
    struct hp_symbol sym;
    if (!symbol_reachable(spec, type, false, &sym, reply))
        return;
    union hp_scalar v;
    char text[64];
    hp_load_scalar(type, sym.address, &v);
    hp_format_scalar(type, &v, text, sizeof text);
    remember_first_value(spec, type, sym.address, text);
    hp_reply_value(reply, text, json_kind_of(type, text));
}

static void set_symbol(const char *spec, enum hotpatch_type type, const char *text,
                       struct hp_reply *reply)
{
    struct hp_symbol sym;
    char why[HP_ERROR_MAX];
    union hp_scalar old, fresh;
    if (!symbol_reachable(spec, type, true, &sym, reply))
        return;
    if (hp_parse_scalar(type, text, &fresh, why, sizeof why) != 0) {
        hp_reply_error(reply, "%s", why);
        return;
    }
    char old_text[64], new_text[64];
    hp_load_scalar(type, sym.address, &old);
    hp_format_scalar(type, &old, old_text, sizeof old_text);
    remember_first_value(spec, type, sym.address, old_text);
    hp_store_scalar(type, sym.address, &fresh);
    hp_format_scalar(type, &fresh, new_text, sizeof new_text);
    hp_reply_field(reply, "name", spec, HP_JSON_STRING);
    hp_reply_field(reply, "old", old_text, json_kind_of(type, old_text));
    hp_reply_field(reply, "value", new_text, json_kind_of(type, new_text));
    hp_reply_field(reply, "symbol", "true", HP_JSON_BOOL);
    hp_reply_message(reply, "%s = %s (was %s)", spec, new_text, old_text);
}

void hp_var_each_symbol(hp_symbol_value_visitor visit, void *ctx)
{
    for (size_t i = 0; i < seen_count; i++) {
        struct hp_symbol sym;
        char why[HP_ERROR_MAX];
        size_t size = hp_type_size(seen[i].type);
        /* Only while the name still leads to the same readable bytes (a library may be gone). */
        if (hp_data_resolve(seen[i].spec, &sym, why, sizeof why) != 0 ||
            sym.address != seen[i].address || sym.size != size ||
            hp_memory_protection((uintptr_t)sym.address, size) < 0)
            continue;
        union hp_scalar v;
        char now[64];
        hp_load_scalar(seen[i].type, sym.address, &v);
        hp_format_scalar(seen[i].type, &v, now, sizeof now);
        visit(seen[i].spec, seen[i].first, now, ctx);
    }
}

/* ---- the commands ---------------------------------------------------------------------- */

static void say_unregistered(const char *name, const char *usage, struct hp_reply *reply)
{
    hp_reply_error(reply, "no variable named '%.128s' (see 'var list'); a global nobody "
                   "registered is reached by symbol with its type: %s", name, usage);
}

static void cmd_var_get(const struct hp_request *req, struct hp_reply *reply)
{
    enum hotpatch_type want = 0;
    if (req->argc == 2 && !parse_type_word(req->argv[0], &want, reply))
        return;
    const char *name = req->argv[req->argc - 1];
    struct hp_variable_view *view = malloc(sizeof *view);
    if (!view) {
        hp_reply_error(reply, "out of memory");
        return;
    }
    int rc = hp_registry_get_variable(name, want, view);
    if (rc == -ENOENT && want)
        get_symbol(name, want, reply);
    else if (rc == -ENOENT)
        say_unregistered(name, "var get TYPE SYMBOL", reply);
    else if (rc == -EPROTOTYPE)
        hp_reply_error(reply, "variable '%s' has type %s, not %s", name, hp_type_name(view->type),
                       hp_type_name(want));
    else
        hp_reply_value(reply, view->value, json_kind_of(view->type, view->value));
    free(view);
}

static void cmd_var_set(const struct hp_request *req, struct hp_reply *reply)
{
    enum hotpatch_type want = 0;
    if (req->argc == 3 && !parse_type_word(req->argv[0], &want, reply))
        return;
    const char *name = req->argv[req->argc - 2];
    const char *text = req->argv[req->argc - 1];

    char *old_value = malloc(HP_LINE_MAX), *new_value = malloc(HP_LINE_MAX);
    char why[HP_ERROR_MAX];
    enum hotpatch_type type = 0;
    int rc = 0;
    if (!old_value || !new_value) {
        hp_reply_error(reply, "out of memory");
    } else if ((rc = hp_registry_set_variable(name, want, text, &type, old_value, new_value,
                                              HP_LINE_MAX, why, sizeof why)) == -ENOENT) {
        if (want)
            set_symbol(name, want, text, reply);
        else
            say_unregistered(name, "var set TYPE SYMBOL VALUE", reply);
    } else if (rc != 0) {
        hp_reply_error(reply, "%s", why);
    } else {
        hp_reply_field(reply, "name", name, HP_JSON_STRING);
        hp_reply_field(reply, "old", old_value, json_kind_of(type, old_value));
        hp_reply_field(reply, "value", new_value, json_kind_of(type, new_value));
        hp_reply_message(reply, "%s = %s (was %s)", name, new_value, old_value);
    }
    free(old_value);
    free(new_value);
}

const struct hp_command hp_var_commands[] = {
    {"var", "list", 0, 0, cmd_var_list, "var list",
     "list registered variables with their types and values", 0},
    {"var", "get", 1, 2, cmd_var_get, "var get [TYPE] NAME",
     "print a variable's value; with TYPE, NAME may also be any global's symbol (OBJECT:NAME)",
     0},
    {"var", "set", 2, 3, cmd_var_set, "var set [TYPE] NAME VALUE",
     "set a variable (checked against its type, range and validator); with TYPE, NAME may also "
     "be any global's symbol (OBJECT:NAME; TYPE's size, one atomic store)", HP_CMD_MUTATES},
    {0},
};
