/*
 * registry.c — the named things an operator can reach: variables, functions, libraries.
 *
 * Three small tables, each an array kept sorted by name (lookups are binary searches, listings
 * come out in order without sorting). One mutex, registry_lock, guards all three; the agent
 * holds it for the whole of a read or a set (parse, validate, store, notify), so a set never
 * interleaves with a registration, an unregistration or hotpatch_get_string(). Program threads
 * take it only in the registration API, which is not a hot path.
 *
 * Numeric and bool variables are read and written with single atomic loads and stores of the
 * type's width (value.c), so the program may read them at any time without the lock. Strings
 * in a program's buffer cannot be replaced atomically; the public header says so and offers
 * hotpatch_get_string() for readers that need a consistent copy.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

struct variable {
    char name[HP_NAME_MAX + 1];
    enum hotpatch_type type;
    void *addr;                              /* numeric, bool, string buffer */
    size_t capacity;                         /* string buffer bytes, NUL included */
    struct hotpatch_string_accessor accessor; /* custom strings: get != NULL */
    hotpatch_validator validate;
    hotpatch_on_change on_change;
    void *user;
    char *first;                             /* its value when the agent first saw it (diff) */
};

struct function {
    char name[HP_NAME_MAX + 1];
    void *address;
};

struct library {
    char name[HP_NAME_MAX + 1];
    char *path;
    void *handle;
    uintptr_t base;
    struct hp_held_file file;
};

/* A growable array of pointers to entries, sorted by the name each entry starts with. */
struct table {
    void **entries;
    size_t count, capacity;
};

/* Owned by this file; every access holds registry_lock. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct table variables, functions, libraries;

/* Every entry type begins with its name, so a table can search any of them. */
static const char *entry_name(const void *entry)
{
    return (const char *)entry;
}

/* Index of name, or of where it would be inserted (*found says which). */
static size_t table_search(const struct table *t, const char *name, bool *found)
{
    size_t lo = 0, hi = t->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(entry_name(t->entries[mid]), name);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

/* fork(): the registry lock is taken before the fork and released on both sides after it, so
 * the child never inherits a lock held by a thread it does not have, nor a table mid-update.
 * The hooks are registered on first use (base/atfork.c says why not from a constructor). */
static void lock_before_fork(void)
{
    pthread_mutex_lock(&registry_lock);
}

static void unlock_after_fork(void)
{
    pthread_mutex_unlock(&registry_lock);
}

static void register_fork_hooks(void)
{
    static const struct hp_fork_hooks hooks = {lock_before_fork, unlock_after_fork,
                                               unlock_after_fork};
    hp_atfork_register(HP_FORK_REGISTRY, &hooks);
}

/* Takes the registry lock, registering the fork hooks on first use. */
static void lock_registry(void)
{
    static pthread_once_t fork_hooks_once = PTHREAD_ONCE_INIT;
    pthread_once(&fork_hooks_once, register_fork_hooks);
    pthread_mutex_lock(&registry_lock);
}

static void *table_find(const struct table *t, const char *name)
{
    bool found;
    size_t i = table_search(t, name, &found);
    return found ? t->entries[i] : NULL;
}

/* Inserts entry (whose name is unique in t) in order. 0, -EEXIST or -ENOMEM. */
static int table_insert(struct table *t, void *entry)
{
    bool found;
    size_t at = table_search(t, entry_name(entry), &found);
    if (found)
        return -EEXIST;
    if (t->count == t->capacity) {
        size_t cap = t->capacity ? t->capacity * 2 : 16;
        void **grown = realloc(t->entries, cap * sizeof *grown);
        if (!grown)
            return -ENOMEM;
        t->entries = grown;
        t->capacity = cap;
    }
    memmove(&t->entries[at + 1], &t->entries[at], (t->count - at) * sizeof *t->entries);
    t->entries[at] = entry;
    t->count++;
    return 0;
}

/* Removes and returns the entry named name, or NULL. */
static void *table_remove(struct table *t, const char *name)
{
    bool found;
    size_t at = table_search(t, name, &found);
    if (!found)
        return NULL;
    void *entry = t->entries[at];
    memmove(&t->entries[at], &t->entries[at + 1], (t->count - at - 1) * sizeof *t->entries);
    t->count--;
    return entry;
}

static void remember_first_value_locked(struct variable *v, bool at_registration);

static int insert_locked(struct table *t, void *entry)
{
    lock_registry();
    int rc = table_insert(t, entry);
    if (rc == 0 && t == &variables)
        remember_first_value_locked(entry, true);
    pthread_mutex_unlock(&registry_lock);
    if (rc != 0)
        free(entry);
    return rc;
}

/* ---- registration (public API) ------------------------------------------------------------- */

static struct variable *new_variable(const char *name, enum hotpatch_type type)
{
    if (!name || !hp_name_valid(name))
        return NULL;
    struct variable *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    memcpy(v->name, name, strlen(name) + 1);
    v->type = type;
    return v;
}

HOTPATCH_API int hotpatch_register_typed(const char *name, enum hotpatch_type type, void *addr,
                                         hotpatch_validator validate,
                                         hotpatch_on_change on_change, void *user)
{
    size_t size = hp_type_size(type);
    if (!name || !hp_name_valid(name) || !addr || size == 0 || (uintptr_t)addr % size != 0)
        return -EINVAL;
    struct variable *v = new_variable(name, type);
    if (!v)
        return -ENOMEM;
    v->addr = addr;
    v->validate = validate;
    v->on_change = on_change;
    v->user = user;
    return insert_locked(&variables, v);
}

HOTPATCH_API int hotpatch_register_string_checked(const char *name, char *buf, size_t cap,
                                                  hotpatch_validator validate,
                                                  hotpatch_on_change on_change, void *user)
{
    if (!name || !hp_name_valid(name) || !buf || cap < 1)
        return -EINVAL;
    struct variable *v = new_variable(name, HOTPATCH_TYPE_STRING);
    if (!v)
        return -ENOMEM;
    v->addr = buf;
    v->capacity = cap;
    v->validate = validate;
    v->on_change = on_change;
    v->user = user;
    return insert_locked(&variables, v);
}

HOTPATCH_API int hotpatch_register_string(const char *name, char *buf, size_t cap)
{
    return hotpatch_register_string_checked(name, buf, cap, NULL, NULL, NULL);
}

HOTPATCH_API int hotpatch_register_string_accessor(const char *name,
                                                   const struct hotpatch_string_accessor *acc)
{
    if (!name || !hp_name_valid(name) || !acc || !acc->get || !acc->set)
        return -EINVAL;
    struct variable *v = new_variable(name, HOTPATCH_TYPE_STRING);
    if (!v)
        return -ENOMEM;
    v->accessor = *acc;
    return insert_locked(&variables, v);
}

HOTPATCH_API int hotpatch_register_function(const char *name, void *fn)
{
    if (!name || !hp_name_valid(name) || !fn)
        return -EINVAL;
    struct function *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    memcpy(f->name, name, strlen(name) + 1);
    f->address = fn;
    return insert_locked(&functions, f);
}

HOTPATCH_API int hotpatch_unregister(const char *name)
{
    if (!name)
        return -EINVAL;
    lock_registry();
    struct variable *v = table_remove(&variables, name);
    void *entry = v ? (void *)v : table_remove(&functions, name);
    pthread_mutex_unlock(&registry_lock);
    if (v)
        free(v->first);
    free(entry);
    return entry ? 0 : -ENOENT;
}

/* Reads a string variable into out; returns its length or -ENAMETOOLONG (truncated copy). */
static int read_string_locked(const struct variable *v, char *out, size_t cap)
{
    if (v->accessor.get)
        return v->accessor.get(v->accessor.user, out, cap);
    const char *buf = v->addr;
    size_t len = strnlen(buf, v->capacity);
    if (len >= cap) {
        memcpy(out, buf, cap - 1);
        out[cap - 1] = '\0';
        return -ENAMETOOLONG;
    }
    memcpy(out, buf, len);
    out[len] = '\0';
    return (int)len;
}

HOTPATCH_API int hotpatch_get_string(const char *name, char *out, size_t cap)
{
    if (!name || !out || cap == 0)
        return -EINVAL;
    lock_registry();
    const struct variable *v = table_find(&variables, name);
    int rc = (v && v->type == HOTPATCH_TYPE_STRING) ? read_string_locked(v, out, cap) : -ENOENT;
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

/* ---- variables (agent side) ---------------------------------------------------------------- */

static void format_value_locked(const struct variable *v, char *out, size_t cap)
{
    if (v->type == HOTPATCH_TYPE_STRING) {
        if (read_string_locked(v, out, cap) < 0)
            out[0] = '\0';
        return;
    }
    union hp_scalar s;
    hp_load_scalar(v->type, v->addr, &s);
    hp_format_scalar(v->type, &s, out, cap);
}

/*
 * The value a variable had when the agent first saw it, for `diff`: at registration, or for a
 * string with an accessor (which the program may not be ready to answer yet), at its first
 * read by the agent. Memory for it is best effort: without it, diff just omits the variable.
 */
static void remember_first_value_locked(struct variable *v, bool at_registration)
{
    if (v->first || (at_registration && v->accessor.get))
        return;
    char *text = malloc(HP_LINE_MAX);
    if (!text)
        return;
    format_value_locked(v, text, HP_LINE_MAX);
    v->first = realloc(text, strlen(text) + 1);
    if (!v->first)
        v->first = text;
}

static void view_variable_locked(struct variable *v, struct hp_variable_view *view)
{
    remember_first_value_locked(v, false);
    view->name = v->name;
    view->first = v->first;
    view->type = v->type;
    view->capacity = v->capacity;
    view->has_validator = v->validate != NULL;
    format_value_locked(v, view->value, sizeof view->value);
}

void hp_registry_each_variable(hp_variable_visitor visit, void *ctx)
{
    /* The view is large (it carries a value buffer); one is reused for every visit. */
    struct hp_variable_view *view = malloc(sizeof *view);
    if (!view)
        return;
    lock_registry();
    for (size_t i = 0; i < variables.count; i++) {
        view_variable_locked(variables.entries[i], view);
        visit(view, ctx);
    }
    pthread_mutex_unlock(&registry_lock);
    free(view);
}

int hp_registry_get_variable(const char *name, enum hotpatch_type want_type,
                             struct hp_variable_view *view)
{
    lock_registry();
    struct variable *v = table_find(&variables, name);
    int rc = 0;
    if (!v) {
        rc = -ENOENT;
    } else if (want_type && want_type != v->type) {
        view->type = v->type;
        rc = -EPROTOTYPE;
    } else {
        view_variable_locked(v, view);
    }
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

static int set_string_locked(struct variable *v, const char *text, char *old_value,
                             char *new_value, size_t value_cap, char *why, size_t why_cap)
{
    size_t len = strlen(text);
    read_string_locked(v, old_value, value_cap);
    if (v->accessor.set) {
        why[0] = '\0';
        if (v->accessor.set(v->accessor.user, text, why, why_cap) != 0) {
            if (!why[0])
                snprintf(why, why_cap, "%s refused the value", v->name);
            return -EPERM;
        }
        read_string_locked(v, new_value, value_cap);
        return 0;
    }
    if (len >= v->capacity) {
        snprintf(why, why_cap, "value is %zu bytes; %s holds at most %zu", len, v->name,
                 v->capacity - 1);
        return -ERANGE;
    }
    if (v->validate) {
        why[0] = '\0';
        if (v->validate(v->name, text, why, why_cap, v->user) != 0) {
            if (!why[0])
                snprintf(why, why_cap, "the validator of %s refused the value", v->name);
            return -EPERM;
        }
    }
    char *buf = v->addr;
    memcpy(buf, text, len + 1);
    read_string_locked(v, new_value, value_cap);
    if (v->on_change)
        v->on_change(v->name, old_value, buf, v->user);
    return 0;
}

static int set_scalar_locked(struct variable *v, const char *text, char *old_value,
                             char *new_value, size_t value_cap, char *why, size_t why_cap)
{
    union hp_scalar old, fresh;
    if (hp_parse_scalar(v->type, text, &fresh, why, why_cap) != 0)
        return -EINVAL;
    if (v->validate) {
        why[0] = '\0';
        if (v->validate(v->name, &fresh, why, why_cap, v->user) != 0) {
            if (!why[0])
                snprintf(why, why_cap, "the validator of %s refused %s", v->name, text);
            return -EPERM;
        }
    }
    hp_load_scalar(v->type, v->addr, &old);
    hp_store_scalar(v->type, v->addr, &fresh);
    hp_format_scalar(v->type, &old, old_value, value_cap);
    hp_format_scalar(v->type, &fresh, new_value, value_cap);
    if (v->on_change)
        v->on_change(v->name, &old, &fresh, v->user);
    return 0;
}

int hp_registry_set_variable(const char *name, enum hotpatch_type want_type, const char *text,
                             enum hotpatch_type *type, char *old_value, char *new_value,
                             size_t value_cap, char *why, size_t why_cap)
{
    lock_registry();
    struct variable *v = table_find(&variables, name);
    int rc;
    if (!v) {
        snprintf(why, why_cap, "no variable named '%s' (see 'var list')", name);
        rc = -ENOENT;
    } else if (want_type && want_type != v->type) {
        snprintf(why, why_cap, "variable '%s' has type %s, not %s", name, hp_type_name(v->type),
                 hp_type_name(want_type));
        rc = -EPROTOTYPE;
    } else if ((*type = v->type) == HOTPATCH_TYPE_STRING) {
        rc = set_string_locked(v, text, old_value, new_value, value_cap, why, why_cap);
    } else {
        rc = set_scalar_locked(v, text, old_value, new_value, value_cap, why, why_cap);
    }
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

/* ---- functions ----------------------------------------------------------------------------- */

void hp_registry_each_function(hp_function_visitor visit, void *ctx)
{
    lock_registry();
    for (size_t i = 0; i < functions.count; i++) {
        const struct function *f = functions.entries[i];
        struct hp_function_view view = {f->name, f->address};
        visit(&view, ctx);
    }
    pthread_mutex_unlock(&registry_lock);
}

void *hp_registry_find_function(const char *name)
{
    lock_registry();
    const struct function *f = table_find(&functions, name);
    void *address = f ? f->address : NULL;
    pthread_mutex_unlock(&registry_lock);
    return address;
}

/* ---- libraries ----------------------------------------------------------------------------- */

static void view_library(const struct library *l, struct hp_library_view *view)
{
    view->name = l->name;
    view->path = l->path;
    view->handle = l->handle;
    view->base = l->base;
    view->file = l->file;
}

void hp_registry_each_library(hp_library_visitor visit, void *ctx)
{
    lock_registry();
    for (size_t i = 0; i < libraries.count; i++) {
        struct hp_library_view view;
        view_library(libraries.entries[i], &view);
        visit(&view, ctx);
    }
    pthread_mutex_unlock(&registry_lock);
}

int hp_registry_add_library(const char *name, const char *path, void *handle, uintptr_t base,
                            const struct hp_held_file *file)
{
    if (!hp_name_valid(name))
        return -EINVAL;
    struct library *l = calloc(1, sizeof *l);
    char *path_copy = strdup(path);
    if (!l || !path_copy) {
        free(l);
        free(path_copy);
        return -ENOMEM;
    }
    memcpy(l->name, name, strlen(name) + 1);
    l->path = path_copy;
    l->handle = handle;
    l->base = base;
    l->file = file ? *file : (struct hp_held_file){.fd = -1};
    lock_registry();
    int rc = table_insert(&libraries, l);
    pthread_mutex_unlock(&registry_lock);
    if (rc != 0) {
        free(path_copy);
        free(l);
    }
    return rc;
}

void hp_registry_counts(struct hp_registry_counts *out)
{
    lock_registry();
    out->variables = variables.count;
    out->functions = functions.count;
    out->libraries = libraries.count;
    pthread_mutex_unlock(&registry_lock);
}

size_t hp_registry_held_files(void)
{
    lock_registry();
    size_t n = 0;
    for (size_t i = 0; i < libraries.count; i++)
        n += ((const struct library *)libraries.entries[i])->file.fd >= 0;
    pthread_mutex_unlock(&registry_lock);
    return n;
}

int hp_registry_find_library(const char *name, struct hp_library_view *out)
{
    lock_registry();
    const struct library *l = table_find(&libraries, name);
    if (l)
        view_library(l, out);
    pthread_mutex_unlock(&registry_lock);
    return l ? 0 : -ENOENT;
}

int hp_registry_remove_library(const char *name, void **handle, struct hp_held_file *file)
{
    lock_registry();
    struct library *l = table_remove(&libraries, name);
    pthread_mutex_unlock(&registry_lock);
    if (!l)
        return -ENOENT;
    *handle = l->handle;
    if (file)
        *file = l->file;
    free(l->path);
    free(l);
    return 0;
}
