/*
 * symbols.c — name -> function address and size, for the func commands.
 *
 * FUNC is looked up in the symbol tables of the executable and of every object the loader has
 * mapped (the caller looks at its own registered names first), found through
 * dl_iterate_phdr. Each object's file is read (mmap, read-only) and both .dynsym and .symtab
 * are searched, so a `static` function of an unstripped binary is found too; the file's
 * PT_LOAD headers must match the mapped ones, so a file replaced on disk since it was loaded
 * is not trusted. Only defined STT_FUNC symbols count; an IFUNC is refused (its symbol is the
 * resolver, not the code that runs).
 *
 * Ambiguity: a name defined at different addresses by several objects (or twice in one, as two
 * static functions) is refused with the qualified forms that would work: `object:name`, where
 * object is the file name (libfoo.so.1, simple_server), a path suffix, or an alias the caller
 * passes in (the name a library was loaded under with `lib load`). Aliased libraries hold
 * replacements, so an unqualified name that also matches elsewhere ignores them.
 *
 * Sizes matter to the engine (the jump must fit): they come from st_size of the symbol that
 * starts at the address. One caller at a time (the agent thread); no state is kept between calls.
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
#include "maps.h"

#define MAX_MATCHES 8

/* One mapped object as dl_iterate_phdr reports it. */
struct object {
    char path[512];            /* file to read ("/proc/self/exe" for the executable) */
    char shown[512];           /* how messages name it */
    uintptr_t base;            /* dlpi_addr */
    const ElfW(Phdr) *phdr;
    ElfW(Half) phnum;
    bool is_main;
};

/* An ELF file mapped read-only for its symbol tables. */
struct elf_file {
    const uint8_t *data;
    size_t size;
};

struct match {
    uintptr_t address;
    size_t size;
    bool ifunc;
    struct object object;
    char name[256];
};

/* ---- reading ELF files ------------------------------------------------------------------- */

static bool open_elf(const char *path, struct elf_file *f)
{
    /* Non-blocking and regular files only: a name such as /proc/self/fd/N (a library loaded
     * through its descriptor) may by now name a FIFO or a device of the program's. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return false;
    struct stat st;
    bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
              (size_t)st.st_size >= sizeof(ElfW(Ehdr));
    void *data = ok ? mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    close(fd);
    if (data == MAP_FAILED)
        return false;
    f->data = data;
    f->size = (size_t)st.st_size;
    const ElfW(Ehdr) *eh = data;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_shoff == 0 || eh->e_shoff + (size_t)eh->e_shnum * sizeof(ElfW(Shdr)) > f->size) {
        munmap(data, f->size);
        return false;
    }
    return true;
}

static void close_elf(struct elf_file *f)
{
    munmap((void *)f->data, f->size);
}

/* The file's PT_LOAD headers equal the mapped object's: it is the file that was loaded. */
static bool file_matches_object(const struct elf_file *f, const struct object *o)
{
    const ElfW(Ehdr) *eh = (const void *)f->data;
    if (eh->e_phoff + (size_t)eh->e_phnum * sizeof(ElfW(Phdr)) > f->size || eh->e_phnum != o->phnum)
        return false;
    const ElfW(Phdr) *ph = (const void *)(f->data + eh->e_phoff);
    for (ElfW(Half) i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type != o->phdr[i].p_type)
            return false;
        if (ph[i].p_type == PT_LOAD &&
            (ph[i].p_vaddr != o->phdr[i].p_vaddr || ph[i].p_memsz != o->phdr[i].p_memsz))
            return false;
    }
    return true;
}

typedef bool (*symbol_visitor)(const ElfW(Sym) *sym, const char *name, void *ctx);

/* Visits the defined function symbols of .symtab and .dynsym; stops when visit returns true. */
static void each_function_symbol(const struct elf_file *f, symbol_visitor visit, void *ctx)
{
    const ElfW(Ehdr) *eh = (const void *)f->data;
    const ElfW(Shdr) *sh = (const void *)(f->data + eh->e_shoff);
    for (ElfW(Half) i = 0; i < eh->e_shnum; i++) {
        if ((sh[i].sh_type != SHT_SYMTAB && sh[i].sh_type != SHT_DYNSYM) ||
            sh[i].sh_link >= eh->e_shnum || sh[i].sh_entsize != sizeof(ElfW(Sym)))
            continue;
        const ElfW(Shdr) *strtab = &sh[sh[i].sh_link];
        if (sh[i].sh_offset + sh[i].sh_size > f->size ||
            strtab->sh_offset + strtab->sh_size > f->size || strtab->sh_size == 0)
            continue;
        const ElfW(Sym) *syms = (const void *)(f->data + sh[i].sh_offset);
        const char *names = (const char *)f->data + strtab->sh_offset;
        size_t count = sh[i].sh_size / sizeof(ElfW(Sym));
        for (size_t s = 0; s < count; s++) {
            unsigned type = ELF64_ST_TYPE(syms[s].st_info);
            if ((type != STT_FUNC && type != STT_GNU_IFUNC) || syms[s].st_shndx == SHN_UNDEF ||
                syms[s].st_name >= strtab->sh_size)
                continue;
            if (names[strtab->sh_size - 1] != '\0')
                break;
            if (visit(&syms[s], names + syms[s].st_name, ctx))
                return;
        }
    }
}

/* ---- the loaded objects ------------------------------------------------------------------- */

struct object_list {
    struct object items[256];
    size_t count;
};

static void name_object(struct object *o, const char *dlpi_name)
{
    o->is_main = dlpi_name == NULL || dlpi_name[0] == '\0';
    if (o->is_main) {
        snprintf(o->path, sizeof o->path, "/proc/self/exe");
        char exe[512];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        exe[n > 0 ? n : 0] = '\0';
        const char *slash = strrchr(exe, '/');
        snprintf(o->shown, sizeof o->shown, "%s", slash ? slash + 1 : exe);
    } else {
        snprintf(o->path, sizeof o->path, "%s", dlpi_name);
        const char *slash = strrchr(dlpi_name, '/');
        snprintf(o->shown, sizeof o->shown, "%s", slash ? slash + 1 : dlpi_name);
    }
}

static int collect_object(struct dl_phdr_info *info, size_t size, void *ctx)
{
    (void)size;
    struct object_list *list = ctx;
    if (list->count == sizeof list->items / sizeof list->items[0])
        return 1;
    struct object *o = &list->items[list->count++];
    memset(o, 0, sizeof *o);
    name_object(o, info->dlpi_name);
    o->base = info->dlpi_addr;
    o->phdr = info->dlpi_phdr;
    o->phnum = info->dlpi_phnum;
    return 0;
}

static void list_objects(struct object_list *list)
{
    list->count = 0;
    dl_iterate_phdr(collect_object, list);
}

static bool object_contains(const struct object *o, uintptr_t a)
{
    for (ElfW(Half) i = 0; i < o->phnum; i++) {
        const ElfW(Phdr) *ph = &o->phdr[i];
        uintptr_t lo = o->base + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && a >= lo && a < lo + ph->p_memsz)
            return true;
    }
    return false;
}

/* True when the object at base is one of the caller's named libraries (`lib load`). */
static const struct hp_symbol_alias *alias_at(const struct hp_symbol_scope *scope, uintptr_t base)
{
    for (size_t i = 0; scope && i < scope->count; i++)
        if (scope->aliases[i].base == base)
            return &scope->aliases[i];
    return NULL;
}

/* True when `object` (the part before ':') names o. */
static bool object_named(const struct object *o, const char *object,
                         const struct hp_symbol_scope *scope)
{
    if (strcmp(o->shown, object) == 0)
        return true;
    for (size_t i = 0; scope && i < scope->count; i++)
        if (strcmp(scope->aliases[i].name, object) == 0 && scope->aliases[i].base == o->base &&
            !o->is_main)
            return true;
    size_t lp = strlen(o->path), lo = strlen(object);
    return !o->is_main && lo < lp && strcmp(o->path + lp - lo, object) == 0 &&
           o->path[lp - lo - 1] == '/';
}

/* ---- finding by name ------------------------------------------------------------------------ */

struct name_search {
    const char *name;
    const struct object *object;
    struct match *matches;
    size_t count;
};

static bool add_if_named(const ElfW(Sym) *sym, const char *name, void *ctx)
{
    struct name_search *s = ctx;
    if (strcmp(name, s->name) != 0)
        return false;
    uintptr_t address = s->object->base + sym->st_value;
    for (size_t i = 0; i < s->count; i++)
        if (s->matches[i].address == address)
            return false;  /* the same function in .dynsym and .symtab */
    if (s->count == MAX_MATCHES)
        return true;
    struct match *m = &s->matches[s->count++];
    m->address = address;
    m->size = sym->st_size;
    m->ifunc = ELF64_ST_TYPE(sym->st_info) == STT_GNU_IFUNC;
    m->object = *s->object;
    snprintf(m->name, sizeof m->name, "%s", name);
    return false;
}

static size_t search_object(const struct object *o, const char *name, struct match *matches,
                            size_t count)
{
    struct elf_file f;
    if (!open_elf(o->path, &f))
        return count;
    if (file_matches_object(&f, o)) {
        struct name_search s = {name, o, matches, count};
        each_function_symbol(&f, add_if_named, &s);
        count = s.count;
    }
    close_elf(&f);
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
        len += snprintf(why + len, why_cap - (size_t)len, "%s %s:%s (%#lx)", i ? "," : "",
                        m[i].object.shown, name, (unsigned long)m[i].address);
    if (len > 0 && (size_t)len < why_cap)
        snprintf(why + len, why_cap - (size_t)len, "; name one as OBJECT:%s", name);
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

static int resolve_in_objects(const char *object, const char *name,
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
    size_t count = 0, objects_named = 0;
    for (size_t i = 0; i < list->count; i++) {
        if (object && !object_named(&list->items[i], object, scope))
            continue;
        objects_named++;
        count = search_object(&list->items[i], name, matches, count);
    }
    if (object && objects_named == 0) {
        snprintf(why, why_cap, "no loaded object is called %s (use a file name such as "
                 "libfoo.so, the executable's name, or a name given to 'lib load')", object);
        rc = -ENOENT;
    } else if (count == 0) {
        snprintf(why, why_cap, "unknown function %s%s%s: not registered and not in the symbol "
                 "tables of %s", object ? object : "", object ? ":" : "", name,
                 object ? object : "the executable or any loaded library");
        rc = -ENOENT;
    } else if (!object && (count = prefer_program_objects(matches, count, scope)) > 1) {
        explain_ambiguity(name, matches, count, why, why_cap);
        rc = -EEXIST;
    } else if (count > 1) {
        explain_ambiguity(name, matches, count, why, why_cap);
        rc = -EEXIST;
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

int hp_symbol_resolve(const char *func, const struct hp_symbol_scope *scope,
                      struct hp_symbol *out, char *why, size_t why_cap)
{
    if (!func || !func[0] || strlen(func) >= sizeof out->name) {
        snprintf(why, why_cap, "bad function name: expected NAME or OBJECT:NAME");
        return -EINVAL;
    }
    char buf[512];
    snprintf(buf, sizeof buf, "%s", func);
    char *colon = strrchr(buf, ':');
    if (colon && (colon == buf || colon[1] == '\0')) {
        snprintf(why, why_cap, "bad function name '%s': expected NAME or OBJECT:NAME", func);
        return -EINVAL;
    }
    if (colon)
        *colon = '\0';
    return resolve_in_objects(colon ? buf : NULL, colon ? colon + 1 : buf, scope, out, why,
                              why_cap);
}

/* ---- finding by address --------------------------------------------------------------------- */

struct address_search {
    uintptr_t address;
    const struct object *object;
    size_t size;
    bool found;
    char name[256];
};

static bool starts_at(const ElfW(Sym) *sym, const char *name, void *ctx)
{
    struct address_search *s = ctx;
    if (s->object->base + sym->st_value != s->address || sym->st_size == 0)
        return false;
    s->size = sym->st_size;
    s->found = true;
    snprintf(s->name, sizeof s->name, "%s", name);
    return true;
}

void hp_symbol_describe(struct hp_symbol *out)
{
    int prot = hp_maps_protection((uintptr_t)out->address);
    out->executable = prot > 0 && (prot & PROT_EXEC);
    struct object_list *list = malloc(sizeof *list);
    if (!list)
        return;
    list_objects(list);
    for (size_t i = 0; i < list->count; i++) {
        const struct object *o = &list->items[i];
        if (!object_contains(o, (uintptr_t)out->address))
            continue;
        snprintf(out->object, sizeof out->object, "%s", o->is_main ? "" : o->path);
        struct elf_file f;
        if (!open_elf(o->path, &f))
            break;
        struct address_search s = {(uintptr_t)out->address, o, 0, false, ""};
        if (file_matches_object(&f, o))
            each_function_symbol(&f, starts_at, &s);
        close_elf(&f);
        if (s.found) {
            out->size = s.size;
            if (!out->name[0])
                snprintf(out->name, sizeof out->name, "%s", s.name);
        }
        break;
    }
    free(list);
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
