/*
 * symbols.c — name -> function address and size, for the func commands.
 *
 * FUNC is looked up in the symbol tables of the executable and of every object the loader has
 * mapped (the caller looks at its own registered names first), found through
 * dl_iterate_phdr. Each object's file is read (elf.c) and both .dynsym and .symtab are
 * searched, so a `static` function of an unstripped binary is found too; the file's PT_LOAD
 * headers must match the mapped ones, so a file replaced on disk since it was loaded is not
 * trusted. Only defined STT_FUNC symbols count; an IFUNC is refused (its symbol is the
 * resolver, not the code that runs).
 *
 * Forms: NAME, OBJECT:NAME, and either with @VERSION or @@VERSION after NAME. OBJECT is the
 * file name (libfoo.so.1, simple_server), a path suffix, a full path (compared by device and
 * inode, so /usr/lib/x86_64-linux-gnu/libc.so.6 names the libc the loader found as
 * /lib/x86_64-linux-gnu/libc.so.6), or an alias the caller passes in (the name a library was
 * loaded under with `lib load`). Aliased libraries hold replacements, so an unqualified name
 * that also matches elsewhere ignores them.
 *
 * Versions: an object may define a name several times, once per symbol version (glibc's
 * pthread_kill@GLIBC_2.2.5 and pthread_kill@@GLIBC_2.34). A plain NAME means what the linker
 * would bind a new program to: the default version (@@, or an unversioned definition); the
 * older ones are reached as NAME@VERSION. Only definitions at different addresses that no
 * such rule separates (two static functions of one name, one name in two objects) are
 * ambiguous, and the refusal lists the qualified forms that would work.
 *
 * Sizes matter to the engine (the jump must fit): they come from st_size of the symbol that
 * starts at the address. One caller at a time (the agent thread); no state is kept between calls.
 *
 * Variables (hp_symbol_resolve_data, for `var get TYPE SYMBOL` and a patch's imports) are found
 * the same way among the data symbols: STT_OBJECT, STT_COMMON, and STT_NOTYPE when sized. A
 * thread-local (STT_TLS: its st_value is an offset in each thread's block, not an address) and
 * a name that only a function has are refused with their reason. An exported variable may be
 * defined twice (the executable's copy relocation of a library's variable, or one object
 * interposing another's): the definition the loader binds the process to (dlsym's answer) is the
 * live one, and the shadowed copies do not make the name ambiguous. OBJECT "" names the main
 * program, in both forms.
 */
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "engine.h"
#include "elf.h"
#include "maps.h"

#define MAX_MATCHES 8

typedef struct hp_loaded_object object_t;

struct match {
    uintptr_t address;
    size_t size;
    unsigned type;              /* STT_* */
    bool ifunc;
    bool dynamic;               /* exported (in .dynsym) */
    bool hidden;                /* a non-default version of its name */
    object_t object;
    char name[256];
    char version[64];
};

/* The loaded objects, copied out of the loader's list (their phdr pointers stay valid while
 * the objects stay loaded: this thread does not unload them meanwhile). */
struct object_list {
    object_t items[256];
    size_t count;
};

static bool add_object(const struct hp_loaded_object *o, void *ctx)
{
    struct object_list *list = ctx;
    if (list->count == sizeof list->items / sizeof list->items[0])
        return true;
    list->items[list->count++] = *o;
    return false;
}

static void list_objects(struct object_list *list)
{
    list->count = 0;
    hp_each_loaded_object(add_object, list);
}

/* True when the object at base is one of the caller's named libraries (`lib load`). */
static const struct hp_symbol_alias *alias_at(const struct hp_symbol_scope *scope, uintptr_t base)
{
    for (size_t i = 0; scope && i < scope->count; i++)
        if (scope->aliases[i].base == base)
            return &scope->aliases[i];
    return NULL;
}

/* The same file as path: same device and inode (a full path through another directory
 * name, such as /usr/lib for /lib on a merged-/usr system). */
static bool same_file(const char *path, const struct stat *want)
{
    struct stat st;
    return stat(path, &st) == 0 && st.st_dev == want->st_dev && st.st_ino == want->st_ino;
}

/* True when `object` (the part before ':') names o; by_path is its stat when it is a path. */
static bool object_named(const object_t *o, const char *object, const struct stat *by_path,
                         const struct hp_symbol_scope *scope)
{
    if (!object[0])
        return o->is_main;
    if (strcmp(o->shown, object) == 0)
        return true;
    for (size_t i = 0; scope && i < scope->count; i++)
        if (strcmp(scope->aliases[i].name, object) == 0 && scope->aliases[i].base == o->base &&
            !o->is_main)
            return true;
    if (by_path && same_file(o->path, by_path))
        return true;
    size_t lp = strlen(o->path), lo = strlen(object);
    return !o->is_main && lo < lp && strcmp(o->path + lp - lo, object) == 0 &&
           o->path[lp - lo - 1] == '/';
}

/* ---- finding by name ------------------------------------------------------------------------ */

/* NAME, NAME@VERSION or NAME@@VERSION, of a function or of a variable. */
struct wanted {
    bool data;                  /* variables (and, to refuse them, functions of that name) */
    const char *name;
    size_t name_len;
    const char *version;        /* NULL: any version */
    bool default_only;          /* @@: the default version only */
};

static void parse_wanted(const char *text, bool data, struct wanted *w)
{
    const char *at = strchr(text, '@');
    w->data = data;
    w->name = text;
    w->name_len = at ? (size_t)(at - text) : strlen(text);
    w->version = NULL;
    w->default_only = false;
    if (at) {
        w->default_only = at[1] == '@';
        w->version = at + (w->default_only ? 2 : 1);
    }
}

static bool is_function_type(unsigned type)
{
    return type == STT_FUNC || type == STT_GNU_IFUNC;
}

/* The kinds of symbol a search looks at: functions; or for variables every data kind, and
 * functions too so that a function's name is refused as one rather than as unknown. */
static bool type_wanted(const ElfW(Sym) *sym, bool data)
{
    unsigned type = ELF64_ST_TYPE(sym->st_info);
    if (is_function_type(type))
        return true;
    if (!data)
        return false;
    return type == STT_OBJECT || type == STT_COMMON || type == STT_TLS ||
           (type == STT_NOTYPE && sym->st_size > 0);
}

static bool symbol_wanted(const struct hp_elf_symbol *s, const struct wanted *w)
{
    if (!type_wanted(s->sym, w->data) || s->name_len != w->name_len ||
        memcmp(s->name, w->name, w->name_len) != 0)
        return false;
    if (!w->version)
        return true;
    return s->version_len == strlen(w->version) &&
           memcmp(s->version, w->version, s->version_len) == 0 && !(w->default_only && s->hidden);
}

struct name_search {
    struct wanted want;
    const object_t *object;
    struct match *matches;
    size_t count;
};

static void record_match(struct match *m, const struct hp_elf_symbol *s, uintptr_t address,
                         const object_t *o)
{
    m->address = address;
    m->size = s->sym->st_size;
    m->type = ELF64_ST_TYPE(s->sym->st_info);
    m->ifunc = m->type == STT_GNU_IFUNC;
    m->dynamic = s->dynamic;
    m->hidden = s->hidden;
    m->object = *o;
    snprintf(m->name, sizeof m->name, "%.*s", (int)s->name_len, s->name);
    snprintf(m->version, sizeof m->version, "%.*s", (int)s->version_len, s->version);
}

static bool add_if_named(const struct hp_elf_symbol *sym, void *ctx)
{
    struct name_search *s = ctx;
    if (!symbol_wanted(sym, &s->want))
        return false;
    uintptr_t address = s->object->base + sym->sym->st_value;
    for (size_t i = 0; i < s->count; i++) {
        if (s->matches[i].address != address)
            continue;
        /* The same function in .dynsym and .symtab, or under two versions: it is the default
         * when either entry says so. */
        s->matches[i].hidden = s->matches[i].hidden && sym->hidden;
        s->matches[i].dynamic |= sym->dynamic;
        if (!s->matches[i].version[0] || (!sym->hidden && sym->version_len))
            snprintf(s->matches[i].version, sizeof s->matches[i].version, "%.*s",
                     (int)sym->version_len, sym->version);
        return false;
    }
    if (s->count == MAX_MATCHES)
        return true;
    record_match(&s->matches[s->count++], sym, address, s->object);
    return false;
}

/* Within one object, a default definition wins over the non-default versions of its name. */
static size_t prefer_default_versions(struct match *m, size_t from, size_t count)
{
    bool any_default = false;
    for (size_t i = from; i < count; i++)
        any_default |= !m[i].hidden;
    if (!any_default)
        return count;
    size_t kept = from;
    for (size_t i = from; i < count; i++)
        if (!m[i].hidden)
            m[kept++] = m[i];
    return kept;
}

static size_t search_object(const object_t *o, const struct wanted *want, struct match *matches,
                            size_t count)
{
    struct hp_elf f;
    if (!hp_elf_open(o->path, &f))
        return count;
    if (hp_elf_matches(&f, o->phdr, o->phnum)) {
        struct name_search s = {*want, o, matches, count};
        if (want->data)
            hp_elf_each_symbol_with_tls(&f, add_if_named, &s);
        else
            hp_elf_each_symbol(&f, add_if_named, &s);
        count = prefer_default_versions(matches, count, s.count);
    }
    hp_elf_close(&f);
    return count;
}

/* Keeps the matches outside the caller's named libraries, when there are any. */
static size_t prefer_program_objects(struct match *m, size_t count,
                                     const struct hp_symbol_scope *scope)
{
    size_t kept = 0;
    for (size_t i = 0; i < count; i++)
        if (!alias_at(scope, m[i].object.base))
            m[kept++] = m[i];
    return kept ? kept : count;
}

static void explain_ambiguity(const char *name, const struct match *m, size_t count, char *why,
                              size_t why_cap)
{
    int len = snprintf(why, why_cap, "%s is ambiguous: defined at", name);
    for (size_t i = 0; i < count && len > 0 && (size_t)len < why_cap; i++)
        len += snprintf(why + len, why_cap - (size_t)len, "%s %s:%s%s%s (%#lx)", i ? "," : "",
                        m[i].object.shown, m[i].name, m[i].version[0] ? "@" : "",
                        m[i].version, (unsigned long)m[i].address);
    if (len > 0 && (size_t)len < why_cap)
        snprintf(why + len, why_cap - (size_t)len, "; name one as OBJECT:%s or %s@VERSION", name,
                 name);
}

static void fill_symbol(const struct match *m, struct hp_symbol *out)
{
    memset(out, 0, sizeof *out);
    out->address = (void *)m->address;
    out->size = m->size;
    snprintf(out->name, sizeof out->name, "%s", m->name);
    snprintf(out->object, sizeof out->object, "%s", m->object.is_main ? "" : m->object.path);
    int prot = hp_maps_protection(m->address);
    out->executable = prot > 0 && (prot & PROT_EXEC);
}

/* Searches every object that `object` names (all when NULL); counts them in *named. */
static size_t search_objects(const struct object_list *list, const char *object,
                             const struct hp_symbol_scope *scope, const struct wanted *want,
                             struct match *matches, size_t *named)
{
    struct stat by_path;
    bool is_path = object && strchr(object, '/') && stat(object, &by_path) == 0;
    size_t count = 0;
    *named = 0;
    for (size_t i = 0; i < list->count; i++) {
        if (object && !object_named(&list->items[i], object, is_path ? &by_path : NULL, scope))
            continue;
        (*named)++;
        count = search_object(&list->items[i], want, matches, count);
    }
    return count;
}

/* For a variable: the data definitions only, when a function has the name too (it is then
 * not what was meant); and of several exported definitions, the one the loader binds the
 * process to, when it is among them (the others are shadowed copies). */
static size_t keep_live_data(const char *name, struct match *m, size_t count)
{
    size_t data = 0;
    for (size_t i = 0; i < count; i++)
        if (!is_function_type(m[i].type))
            m[data++] = m[i];
    if (data == 0)
        return 1;                      /* only functions: the first is refused as one */
    size_t exported = 0;
    for (size_t i = 0; i < data; i++)
        exported += m[i].dynamic;
    void *bound = exported > 1 ? dlsym(RTLD_DEFAULT, name) : NULL;
    bool bound_among = false;
    for (size_t i = 0; bound && i < data; i++)
        bound_among |= m[i].dynamic && m[i].address == (uintptr_t)bound;
    if (!bound_among)
        return data;
    size_t kept = 0;
    for (size_t i = 0; i < data; i++)
        if (!m[i].dynamic || m[i].address == (uintptr_t)bound)
            m[kept++] = m[i];
    return kept;
}

/* A variable's own refusals: a function, a thread-local. 0 when it is an addressable one. */
static int refuse_non_variable(const char *name, const struct match *m, char *why,
                               size_t why_cap)
{
    if (is_function_type(m->type)) {
        snprintf(why, why_cap, "%s is a function, not a variable (the func commands change "
                 "functions)", name);
        return -EINVAL;
    }
    if (m->type == STT_TLS) {
        snprintf(why, why_cap, "%s is thread-local (STT_TLS): every thread has its own copy, so "
                 "there is no one address to reach", name);
        return -EINVAL;
    }
    if (m->size == 0) {
        snprintf(why, why_cap, "%s has no size in the symbol tables (st_size 0)", name);
        return -EINVAL;
    }
    return 0;
}

static void say_unknown(const char *object, const char *name, bool data, char *why,
                        size_t why_cap)
{
    snprintf(why, why_cap, "unknown %s %s%s%s: not registered and not in the symbol tables of "
             "%s", data ? "variable" : "function", object ? object : "", object ? ":" : "", name,
             object ? (*object ? object : "the main program")
                    : "the executable or any loaded library");
}

static int resolve_in_objects(const char *object, const char *name, bool data,
                              const struct hp_symbol_scope *scope, struct hp_symbol *out,
                              char *why, size_t why_cap)
{
    struct object_list *list = malloc(sizeof *list);
    struct match *matches = calloc(MAX_MATCHES, sizeof *matches);
    int rc = 0;
    if (!list || !matches) {
        snprintf(why, why_cap, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    list_objects(list);
    struct wanted want;
    parse_wanted(name, data, &want);
    size_t objects_named;
    size_t count = search_objects(list, object, scope, &want, matches, &objects_named);
    if (data && count > 0)
        count = keep_live_data(name, matches, count);
    if (object && objects_named == 0) {
        snprintf(why, why_cap, "no loaded object is called %s (use a file name such as "
                 "libfoo.so, a full path, the executable's name or \"\" for it, or a name "
                 "given to 'lib load')", object);
        rc = -ENOENT;
    } else if (count == 0) {
        say_unknown(object, name, data, why, why_cap);
        rc = -ENOENT;
    } else if (!object && (count = prefer_program_objects(matches, count, scope)) > 1) {
        explain_ambiguity(name, matches, count, why, why_cap);
        rc = -EEXIST;
    } else if (count > 1) {
        explain_ambiguity(name, matches, count, why, why_cap);
        rc = -EEXIST;
    } else if (data) {
        rc = refuse_non_variable(name, &matches[0], why, why_cap);
        if (rc == 0)
            fill_symbol(&matches[0], out);
    } else if (matches[0].ifunc) {
        snprintf(why, why_cap, "%s is an IFUNC (its symbol is a resolver); name the "
                 "implementation it selects instead", name);
        rc = -EINVAL;
    } else {
        fill_symbol(&matches[0], out);
    }
out:
    free(list);
    free(matches);
    return rc;
}

/* NAME, NAME@VERSION or NAME@@VERSION, each part non-empty. */
static bool valid_name(const char *name)
{
    const char *at = strchr(name, '@');
    if (!name[0] || at == name)
        return false;
    return !at || at[at[1] == '@' ? 2 : 1] != '\0';
}

static int resolve_spec(const char *spec, bool data, const struct hp_symbol_scope *scope,
                        struct hp_symbol *out, char *why, size_t why_cap)
{
    const char *what = data ? "variable" : "function";
    if (!spec || !spec[0] || strlen(spec) >= sizeof out->name) {
        snprintf(why, why_cap, "bad %s name: expected NAME or OBJECT:NAME", what);
        return -EINVAL;
    }
    char buf[512];
    snprintf(buf, sizeof buf, "%s", spec);
    char *colon = strrchr(buf, ':');
    const char *name = colon ? colon + 1 : buf;
    if (!valid_name(name)) {
        snprintf(why, why_cap, "bad %s name '%s': expected NAME or OBJECT:NAME (OBJECT \"\" is "
                 "the main program), with @VERSION or @@VERSION after NAME for a versioned "
                 "symbol", what, spec);
        return -EINVAL;
    }
    if (colon)
        *colon = '\0';
    return resolve_in_objects(colon ? buf : NULL, name, data, scope, out, why, why_cap);
}

int hp_symbol_resolve(const char *func, const struct hp_symbol_scope *scope,
                      struct hp_symbol *out, char *why, size_t why_cap)
{
    return resolve_spec(func, false, scope, out, why, why_cap);
}

int hp_symbol_resolve_data(const char *variable, const struct hp_symbol_scope *scope,
                           struct hp_symbol *out, char *why, size_t why_cap)
{
    return resolve_spec(variable, true, scope, out, why, why_cap);
}

int hp_memory_protection(uintptr_t address, size_t len)
{
    int prot = PROT_READ | PROT_WRITE | PROT_EXEC;
    uintptr_t at = address, end = address + (len ? len : 1);
    if (end < address)
        return -1;
    while (at < end) {
        struct hp_mapping m;
        if (!hp_maps_lookup(at, &m))
            return -1;
        prot &= m.prot;
        at = m.end;
    }
    return prot;
}

/* ---- finding by address --------------------------------------------------------------------- */

struct address_search {
    uintptr_t address;
    const object_t *object;
    size_t size;
    bool found;
    char name[256];
};

static bool starts_at(const struct hp_elf_symbol *sym, void *ctx)
{
    struct address_search *s = ctx;
    unsigned type = ELF64_ST_TYPE(sym->sym->st_info);
    if ((type != STT_FUNC && type != STT_GNU_IFUNC) ||
        s->object->base + sym->sym->st_value != s->address || sym->sym->st_size == 0)
        return false;
    s->size = sym->sym->st_size;
    s->found = true;
    snprintf(s->name, sizeof s->name, "%.*s", (int)sym->name_len, sym->name);
    return true;
}

void hp_symbol_describe(struct hp_symbol *out)
{
    int prot = hp_maps_protection((uintptr_t)out->address);
    out->executable = prot > 0 && (prot & PROT_EXEC);
    object_t o;
    if (!hp_loaded_object_at((uintptr_t)out->address, &o))
        return;
    snprintf(out->object, sizeof out->object, "%s", o.is_main ? "" : o.path);
    struct hp_elf f;
    if (!hp_elf_open(o.path, &f))
        return;
    struct address_search s = {(uintptr_t)out->address, &o, 0, false, ""};
    if (hp_elf_matches(&f, o.phdr, o.phnum))
        hp_elf_each_symbol(&f, starts_at, &s);
    hp_elf_close(&f);
    if (s.found) {
        out->size = s.size;
        if (!out->name[0])
            snprintf(out->name, sizeof out->name, "%s", s.name);
    }
}

int hp_symbol_in_library(void *handle, const char *name, struct hp_symbol *out, char *why,
                         size_t why_cap)
{
    struct link_map *lib = NULL;
    if (dlinfo(handle, RTLD_DI_LINKMAP, &lib) != 0 || !lib) {
        snprintf(why, why_cap, "the library handle is not valid");
        return -EINVAL;
    }
    dlerror();
    void *address = dlsym(handle, name);
    Dl_info info;
    struct link_map *owner = NULL;
    if (!address || !dladdr1(address, &info, (void **)&owner, RTLD_DL_LINKMAP) || owner != lib) {
        snprintf(why, why_cap, "%s does not define %s", lib->l_name, name);
        return -ENOENT;
    }
    memset(out, 0, sizeof *out);
    out->address = address;
    snprintf(out->name, sizeof out->name, "%s", name);
    hp_symbol_describe(out);
    return 0;
}

/* ---- ranges of an object ------------------------------------------------------------------- */

struct range_query {
    uintptr_t base;
    struct hp_range *ranges;
    size_t cap, count;
};

static int collect_ranges(struct dl_phdr_info *info, size_t size, void *ctx)
{
    (void)size;
    struct range_query *q = ctx;
    if (info->dlpi_addr != q->base || !info->dlpi_name || !info->dlpi_name[0])
        return 0;
    long page = sysconf(_SC_PAGESIZE);
    for (ElfW(Half) i = 0; i < info->dlpi_phnum && q->count < q->cap; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        uintptr_t hi = lo + ph->p_memsz;
        q->ranges[q->count].start = lo & ~(uintptr_t)(page - 1);
        q->ranges[q->count].end = (hi + (uintptr_t)page - 1) & ~(uintptr_t)(page - 1);
        q->count++;
    }
    return 1;
}

size_t hp_symbol_object_ranges(uintptr_t base, struct hp_range *ranges, size_t cap)
{
    struct range_query q = {base, ranges, cap, 0};
    dl_iterate_phdr(collect_ranges, &q);
    return q.count;
}
