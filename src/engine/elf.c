/*
 * elf.c — the ELF file of a loaded object, read from disk: symbols with their versions,
 * sections, load headers.
 *
 * Why from the file: the loader maps only the loaded segments; .symtab (the names of static
 * functions and of gcc's .cold pieces), the section headers and the version definitions are
 * only in the file. The file is opened non-blocking and must be a regular file (a name such as
 * /proc/self/fd/N may by now name a FIFO of the program's); callers check with hp_elf_matches
 * that it is still the file that was loaded.
 *
 * Symbol versions: glibc defines some names more than once (pthread_kill@GLIBC_2.2.5 and
 * pthread_kill@@GLIBC_2.34). In .dynsym the version comes from .gnu.version (the hidden bit
 * marks the non-default ones) and .gnu.version_d; in .symtab the linker writes it into the
 * name. Either way a visitor sees the bare name, the version and whether it is the default.
 *
 * Every offset read from the file is bounds-checked: a truncated or hostile file is skipped,
 * never read out of bounds. No state.
 */
#include <elf.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "elf.h"

static bool in_file(const struct hp_elf *f, uint64_t off, uint64_t len)
{
    return off <= f->size && len <= f->size - off;
}

static bool check_header(struct hp_elf *f)
{
    const ElfW(Ehdr) *eh = (const void *)f->data;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64)
        return false;
    f->eh = eh;
    f->sh = NULL;
    f->shnum = 0;
    if (eh->e_shoff && eh->e_shentsize == sizeof(ElfW(Shdr)) &&
        in_file(f, eh->e_shoff, (uint64_t)eh->e_shnum * sizeof(ElfW(Shdr)))) {
        f->sh = (const void *)(f->data + eh->e_shoff);
        f->shnum = eh->e_shnum;
    }
    return true;
}

bool hp_elf_open(const char *path, struct hp_elf *f)
{
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
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    f->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    if (!check_header(f)) {
        munmap(data, f->size);
        return false;
    }
    return true;
}

void hp_elf_close(struct hp_elf *f)
{
    munmap((void *)f->data, f->size);
    f->data = NULL;
}

static const ElfW(Phdr) *program_headers(const struct hp_elf *f)
{
    const ElfW(Ehdr) *eh = f->eh;
    if (eh->e_phentsize != sizeof(ElfW(Phdr)) ||
        !in_file(f, eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(ElfW(Phdr))))
        return NULL;
    return (const void *)(f->data + eh->e_phoff);
}

bool hp_elf_matches(const struct hp_elf *f, const ElfW(Phdr) *phdr, ElfW(Half) phnum)
{
    const ElfW(Phdr) *ph = program_headers(f);
    if (!ph || f->eh->e_phnum != phnum)
        return false;
    for (ElfW(Half) i = 0; i < phnum; i++) {
        if (ph[i].p_type != phdr[i].p_type)
            return false;
        if (ph[i].p_type == PT_LOAD &&
            (ph[i].p_vaddr != phdr[i].p_vaddr || ph[i].p_memsz != phdr[i].p_memsz))
            return false;
    }
    return true;
}

const ElfW(Shdr) *hp_elf_section(const struct hp_elf *f, size_t i)
{
    if (i >= f->shnum)
        return NULL;
    const ElfW(Shdr) *s = &f->sh[i];
    if (s->sh_type != SHT_NOBITS && !in_file(f, s->sh_offset, s->sh_size))
        return NULL;
    return s;
}

bool hp_elf_has_symtab(const struct hp_elf *f)
{
    for (size_t i = 0; i < f->shnum; i++) {
        const ElfW(Shdr) *s = hp_elf_section(f, i);
        if (s && s->sh_type == SHT_SYMTAB && s->sh_size > 0)
            return true;
    }
    return false;
}

const uint8_t *hp_elf_bytes_at(const struct hp_elf *f, uint64_t vaddr, size_t len)
{
    const ElfW(Phdr) *ph = program_headers(f);
    for (ElfW(Half) i = 0; ph && i < f->eh->e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD || vaddr < ph[i].p_vaddr ||
            vaddr - ph[i].p_vaddr > ph[i].p_filesz || len > ph[i].p_filesz - (vaddr - ph[i].p_vaddr))
            continue;
        uint64_t off = ph[i].p_offset + (vaddr - ph[i].p_vaddr);
        return in_file(f, off, len) ? f->data + off : NULL;
    }
    return NULL;
}

/* ---- symbols and their versions ----------------------------------------------------------- */

/* A string table: its bytes, NUL-terminated at the end (else unusable). */
struct strtab {
    const char *names;
    size_t size;
};

static bool string_table(const struct hp_elf *f, size_t index, struct strtab *t)
{
    const ElfW(Shdr) *s = hp_elf_section(f, index);
    if (!s || s->sh_type != SHT_STRTAB || s->sh_size == 0)
        return false;
    t->names = (const char *)f->data + s->sh_offset;
    t->size = s->sh_size;
    return t->names[t->size - 1] == '\0';
}

static const char *string_at(const struct strtab *t, size_t off)
{
    return off < t->size ? t->names + off : NULL;
}

/* The version tables of .dynsym: .gnu.version (one half-word per symbol) and the names of
 * .gnu.version_d. */
struct versions {
    const ElfW(Half) *versym;
    size_t count;
    const ElfW(Shdr) *verdef;
    struct strtab names;
};

static void find_versions(const struct hp_elf *f, size_t dynsym_index, struct versions *v)
{
    memset(v, 0, sizeof *v);
    for (size_t i = 0; i < f->shnum; i++) {
        const ElfW(Shdr) *s = hp_elf_section(f, i);
        if (!s)
            continue;
        if (s->sh_type == SHT_GNU_versym && s->sh_link == dynsym_index) {
            v->versym = (const void *)(f->data + s->sh_offset);
            v->count = s->sh_size / sizeof(ElfW(Half));
        } else if (s->sh_type == SHT_GNU_verdef && string_table(f, s->sh_link, &v->names)) {
            v->verdef = s;
        }
    }
}

/* The name of version definition `index`, or "" when it is not defined here. */
static const char *version_name(const struct hp_elf *f, const struct versions *v, unsigned index)
{
    if (!v->verdef || index < 2)
        return "";
    uint64_t off = v->verdef->sh_offset, end = off + v->verdef->sh_size;
    for (unsigned n = 0; n < v->verdef->sh_info && in_file(f, off, sizeof(ElfW(Verdef))) &&
                         off + sizeof(ElfW(Verdef)) <= end; n++) {
        const ElfW(Verdef) *d = (const void *)(f->data + off);
        if (d->vd_ndx == index && d->vd_cnt > 0 &&
            in_file(f, off + d->vd_aux, sizeof(ElfW(Verdaux)))) {
            const ElfW(Verdaux) *a = (const void *)(f->data + off + d->vd_aux);
            const char *name = string_at(&v->names, a->vda_name);
            return name ? name : "";
        }
        if (d->vd_next == 0)
            break;
        off += d->vd_next;
    }
    return "";
}

/* Splits a .symtab name "name@@V" / "name@V" into its parts. */
static void split_versioned_name(struct hp_elf_symbol *s)
{
    const char *at = strchr(s->name, '@');
    s->name_len = at ? (size_t)(at - s->name) : strlen(s->name);
    s->version = "";
    s->version_len = 0;
    s->hidden = false;
    if (!at)
        return;
    s->hidden = at[1] != '@';
    s->version = at + (s->hidden ? 1 : 2);
    s->version_len = strlen(s->version);
}

static bool visit_table(const struct hp_elf *f, size_t index, bool with_tls,
                        bool (*visit)(const struct hp_elf_symbol *, void *), void *ctx)
{
    const ElfW(Shdr) *s = hp_elf_section(f, index);
    struct strtab names;
    if (!s || s->sh_entsize != sizeof(ElfW(Sym)) || !string_table(f, s->sh_link, &names))
        return false;
    bool dynamic = s->sh_type == SHT_DYNSYM;
    struct versions v;
    if (dynamic)
        find_versions(f, index, &v);
    const ElfW(Sym) *syms = (const void *)(f->data + s->sh_offset);
    size_t count = s->sh_size / sizeof(ElfW(Sym));
    for (size_t i = 1; i < count; i++) {
        struct hp_elf_symbol sym = {&syms[i], string_at(&names, syms[i].st_name), 0, "", 0,
                                    false, dynamic};
        unsigned type = ELF64_ST_TYPE(syms[i].st_info);
        if (syms[i].st_shndx == SHN_UNDEF || !sym.name || type == STT_SECTION ||
            type == STT_FILE || (type == STT_TLS && !with_tls))
            continue;
        split_versioned_name(&sym);
        if (dynamic && v.versym && i < v.count) {
            sym.hidden = (v.versym[i] & 0x8000) != 0;
            sym.version = version_name(f, &v, v.versym[i] & 0x7fff);
            sym.version_len = strlen(sym.version);
        }
        if (visit(&sym, ctx))
            return true;
    }
    return false;
}

static void each_symbol(const struct hp_elf *f, bool with_tls,
                        bool (*visit)(const struct hp_elf_symbol *s, void *ctx), void *ctx)
{
    for (size_t i = 0; i < f->shnum; i++) {
        const ElfW(Shdr) *s = hp_elf_section(f, i);
        if (s && (s->sh_type == SHT_SYMTAB || s->sh_type == SHT_DYNSYM) &&
            visit_table(f, i, with_tls, visit, ctx))
            return;
    }
}

void hp_elf_each_symbol(const struct hp_elf *f,
                        bool (*visit)(const struct hp_elf_symbol *s, void *ctx), void *ctx)
{
    each_symbol(f, false, visit, ctx);
}

void hp_elf_each_symbol_with_tls(const struct hp_elf *f,
                                 bool (*visit)(const struct hp_elf_symbol *s, void *ctx),
                                 void *ctx)
{
    each_symbol(f, true, visit, ctx);
}

/* ---- the loaded objects ------------------------------------------------------------------------ */

static void name_object(struct hp_loaded_object *o, const char *dlpi_name)
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

struct each_object {
    bool (*visit)(const struct hp_loaded_object *o, void *ctx);
    void *ctx;
};

static int visit_object(struct dl_phdr_info *info, size_t size, void *ctx)
{
    (void)size;
    struct each_object *e = ctx;
    struct hp_loaded_object o;
    name_object(&o, info->dlpi_name);
    o.base = info->dlpi_addr;
    o.phnum = info->dlpi_phnum <= HP_MAX_PHDRS ? info->dlpi_phnum : 0;
    memcpy(o.phdr, info->dlpi_phdr, o.phnum * sizeof o.phdr[0]);
    return e->visit(&o, e->ctx) ? 1 : 0;
}

void hp_each_loaded_object(bool (*visit)(const struct hp_loaded_object *o, void *ctx),
                           void *ctx)
{
    struct each_object e = {visit, ctx};
    dl_iterate_phdr(visit_object, &e);
}

bool hp_loaded_object_contains(const struct hp_loaded_object *o, uintptr_t addr)
{
    for (ElfW(Half) i = 0; i < o->phnum; i++) {
        const ElfW(Phdr) *ph = &o->phdr[i];
        uintptr_t lo = o->base + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && addr >= lo && addr - lo < ph->p_memsz)
            return true;
    }
    return false;
}

struct object_query {
    uintptr_t addr;
    struct hp_loaded_object *out;
    bool found;
};

static bool holds_addr(const struct hp_loaded_object *o, void *ctx)
{
    struct object_query *q = ctx;
    if (!hp_loaded_object_contains(o, q->addr))
        return false;
    *q->out = *o;
    q->found = true;
    return true;
}

bool hp_loaded_object_at(uintptr_t addr, struct hp_loaded_object *out)
{
    struct object_query q = {addr, out, false};
    hp_each_loaded_object(holds_addr, &q);
    return q.found;
}
