/*
 * branch_proof.c — no code of an object may branch into the bytes a patch overwrites: the
 * proof, and the per-object index that makes it cheap.
 *
 * Why the whole object: the jump written at a function's site replaces its first instructions,
 * and any branch that lands strictly inside them executes the middle of the jump. The function
 * itself is not the only code that may do so. gcc -O2 splits the unlikely path of a retry
 * loop into `f.cold`, which ends with `jmp f+3` (f+7 with -fcf-protection); hand-written
 * assembly has second entry points (`outer+2`) and branches from one routine into another
 * (OpenSSL's bn_mul_mont jumps to bn_mulx4x_mont+3). So the first patch of a function in an
 * object builds an index of every address the object's code may transfer control to, and a
 * site is refused when one lies strictly inside it (or inside the instruction the jump cuts).
 *
 * The index, built from the object's file (elf.c), not from memory (so that our own jumps at
 * other sites never disturb it):
 *   - every executable section is swept linearly (arch/x86_64_decode.c), restarting at every
 *     symbol start of .symtab and .dynsym (so data in .text can never carry a misreading into
 *     the next function); without .symtab (a stripped object) the sweep is the same, resync
 *     points come from .dynsym only, and the local functions and .cold pieces are still
 *     decoded, because the sweep covers every byte of the section, not just named functions;
 *   - direct jmp/jcc/call/loop/jrcxz/xbegin targets;
 *   - code addresses the code materializes: RIP-relative lea (computed gotos, code pointers)
 *     and, in a non-PIC executable, immediates;
 *   - jump tables: every data address a lea computes is read as gcc's and clang's table of
 *     32-bit offsets from that address, entry by entry while the entries land in code, up to the
 *     next data address the object names (an instruction's operand, a data symbol, a
 *     relocation) and at most 4096 entries; `jmp *table(,%reg,8)` as a table of absolute
 *     addresses. Not only where an indirect jmp follows: the lea and the jmp may be split by
 *     a symbol, and on libc, libstdc++ and libcrypto this refuses no more functions;
 *   - code pointers in data: RELATIVE/IRELATIVE relocations and relocations against the
 *     object's own symbols; in a non-PIC executable every aligned word of its data segments;
 *   - every symbol start (of any type: FUNC, NOTYPE labels, local or global).
 * What cannot be proven, and is accepted: an indirect branch to an address computed in a way
 * none of the above sees (arithmetic on code addresses, addresses read from files or
 * received from other objects). A compiler does not produce those; assembly that does is
 * outside what this proves (docs/protocol.md says so).
 *
 * The cache: one index per object, keyed by load base and file identity (device, inode, size,
 * modification time). An entry is dropped when the loader's counters show objects were loaded
 * or unloaded and its object is no longer at its base with the same file; a reload of the very
 * same file at the same base keeps it (same bytes, same proof). Cost, measured on this machine:
 * libc (1.4 MB of code) indexes in about 0.15 s; each further patch in it costs a file open
 * and a binary search. Engine lock; allocates; never with threads stopped.
 */
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "branch_proof.h"
#include "elf.h"
#include "maps.h"
#include "arch/arch.h"

#define MAX_CODE_RANGES 64
#define MAX_TABLE_ENTRIES 4096

/* Why an address is in the index. */
enum ref_kind { REF_BRANCH, REF_ADDRESS, REF_TABLE, REF_DATA };

/* One address control may reach (to), and what names it (from), as offsets from the base. */
struct ref {
    uint32_t to, from;
    uint8_t kind;
};

struct code_range {
    uintptr_t start, end;           /* run-time addresses */
};

struct object_index {
    struct object_index *next;
    uintptr_t base;
    dev_t dev;
    ino_t ino;
    size_t size;
    int64_t mtime_ns;
    char path[512];
    char shown[256];
    struct code_range code[MAX_CODE_RANGES];
    size_t n_code;
    struct ref *refs;               /* sorted by to */
    size_t n_refs;
    uint32_t *starts;               /* symbol starts, sorted */
    size_t n_starts;
    bool has_symtab;
    long undecodable;               /* bytes the sweep could not read */
};

/* Engine lock. */
static struct object_index *cache;
static unsigned long long seen_adds, seen_subs;
static struct hp_branch_proof_stats stats;

/* ---- small helpers ------------------------------------------------------------------------------ */

static bool in_code(const struct object_index *ix, uintptr_t a)
{
    for (size_t i = 0; i < ix->n_code; i++)
        if (a >= ix->code[i].start && a < ix->code[i].end)
            return true;
    return false;
}

static const struct code_range *range_of(const struct object_index *ix, uintptr_t a)
{
    for (size_t i = 0; i < ix->n_code; i++)
        if (a >= ix->code[i].start && a < ix->code[i].end)
            return &ix->code[i];
    return NULL;
}

static int compare_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int compare_ref(const void *a, const void *b)
{
    const struct ref *x = a, *y = b;
    return x->to < y->to ? -1 : x->to > y->to;
}

/* Index of the first element >= key in a sorted array of n (ref targets or starts). */
static size_t lower_bound_ref(const struct ref *r, size_t n, uint32_t key)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r[mid].to < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static size_t lower_bound_u32(const uint32_t *a, size_t n, uint32_t key)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void free_index(struct object_index *ix)
{
    free(ix->refs);
    free(ix->starts);
    /* Its code ranges are addresses in the object: left in freed memory they would read as
     * live references to an unload's scan. */
    explicit_bzero(ix, sizeof *ix);
    free(ix);
}

/* ---- building an index --------------------------------------------------------------------------- */

/* A jump table candidate: a data address a lea computes. */
struct table {
    uintptr_t at, from;
    bool absolute;
};

struct builder {
    struct object_index *ix;
    const struct hp_elf *f;
    struct ref *refs;
    size_t n_refs, cap_refs;
    uintptr_t *bounds;              /* every data address the object names: tables end there */
    size_t n_bounds, cap_bounds;
    struct table *tables;
    size_t n_tables, cap_tables;
    bool oom;
    bool is_exec_file;              /* ET_EXEC: absolute addresses in code and data */
};

/* Appends to a growable array; false (and b->oom) when out of memory. */
static bool grow(struct builder *b, void **items, size_t *count, size_t *cap, size_t size)
{
    if (*count < *cap)
        return true;
    size_t n = *cap ? *cap * 2 : 1024;
    void *grown = realloc(*items, n * size);
    if (!grown) {
        b->oom = true;
        return false;
    }
    *items = grown;
    *cap = n;
    return true;
}

static void add_bound(struct builder *b, uintptr_t at)
{
    if (grow(b, (void **)&b->bounds, &b->n_bounds, &b->cap_bounds, sizeof *b->bounds))
        b->bounds[b->n_bounds++] = at;
}

static void add_ref(struct builder *b, uintptr_t to, uintptr_t from, enum ref_kind kind)
{
    if (!in_code(b->ix, to) ||
        !grow(b, (void **)&b->refs, &b->n_refs, &b->cap_refs, sizeof *b->refs))
        return;
    b->refs[b->n_refs++] = (struct ref){(uint32_t)(to - b->ix->base),
                                        (uint32_t)(from - b->ix->base), (uint8_t)kind};
}

static void note_table(struct builder *b, uintptr_t at, uintptr_t from, bool absolute)
{
    add_bound(b, at);
    if (grow(b, (void **)&b->tables, &b->n_tables, &b->cap_tables, sizeof *b->tables))
        b->tables[b->n_tables++] = (struct table){at, from, absolute};
}

static void on_code_ref(void *ctx, enum hp_code_ref kind, uintptr_t from, uintptr_t to)
{
    struct builder *b = ctx;
    switch (kind) {
    case HP_REF_BRANCH:
        add_ref(b, to, from, REF_BRANCH);
        break;
    case HP_REF_LEA:
        if (in_code(b->ix, to))
            add_ref(b, to, from, REF_ADDRESS);
        else
            note_table(b, to, from, false);
        break;
    case HP_REF_IMM:
        if (b->is_exec_file)
            add_ref(b, to, from, REF_ADDRESS);
        break;
    case HP_REF_RIP:
        add_bound(b, to);
        break;
    case HP_REF_ABS_TABLE:
        note_table(b, to, from, true);
        break;
    case HP_REF_INDIRECT:
        break;                  /* its targets are what the tables and pointers say */
    case HP_REF_UNDECODABLE:
        b->ix->undecodable++;
        break;
    }
}

/* Reads the jump table t: entries while they land in code, up to the next data address the
 * object names (gcc and clang tables have no symbol, but whatever follows a table is named by
 * some instruction or symbol), at most MAX_TABLE_ENTRIES. */
static void read_table(struct builder *b, const struct table *t)
{
    size_t entry = t->absolute ? 8 : 4;
    size_t k = 0, lo = 0, hi = b->n_bounds;
    while (lo < hi) {                        /* first bound > t->at */
        size_t mid = lo + (hi - lo) / 2;
        if (b->bounds[mid] <= t->at)
            lo = mid + 1;
        else
            hi = mid;
    }
    uintptr_t end = lo < b->n_bounds ? b->bounds[lo] : UINTPTR_MAX;
    for (uintptr_t at = t->at; k < MAX_TABLE_ENTRIES && at + entry <= end; k++, at += entry) {
        const uint8_t *bytes = hp_elf_bytes_at(b->f, at - b->ix->base, entry);
        if (!bytes)
            return;
        uintptr_t to;
        if (t->absolute) {
            uint64_t v;
            memcpy(&v, bytes, 8);
            to = (uintptr_t)v + b->ix->base;
        } else {
            int32_t v;
            memcpy(&v, bytes, 4);
            to = t->at + (uintptr_t)(intptr_t)v;
        }
        if (!in_code(b->ix, to))
            return;
        add_ref(b, to, at, REF_TABLE);
    }
}

static int compare_uptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* Once every data address is known: the tables. */
static void read_tables(struct builder *b)
{
    if (b->n_bounds)
        qsort(b->bounds, b->n_bounds, sizeof *b->bounds, compare_uptr);
    for (size_t i = 0; i < b->n_tables; i++)
        read_table(b, &b->tables[i]);
}

/* Data symbols end tables too. */
static bool add_data_symbol(const struct hp_elf_symbol *s, void *ctx)
{
    struct builder *b = ctx;
    if (ELF64_ST_TYPE(s->sym->st_info) == STT_OBJECT)
        add_bound(b, b->ix->base + s->sym->st_value);
    return false;
}

/* Sweeps one code range [start, end) whose bytes are `bytes`, restarting at each symbol. */
static int sweep_range(struct builder *b, uintptr_t start, uintptr_t end, const uint8_t *bytes,
                       char *why, size_t why_cap)
{
    struct object_index *ix = b->ix;
    size_t s = lower_bound_u32(ix->starts, ix->n_starts, (uint32_t)(start - ix->base));
    for (uintptr_t at = start; at < end;) {
        uintptr_t next = end;
        while (s < ix->n_starts && ix->base + ix->starts[s] <= at)
            s++;
        if (s < ix->n_starts && ix->base + ix->starts[s] < end)
            next = ix->base + ix->starts[s];
        long rc = hp_arch_sweep(bytes + (at - start), next - at, at, on_code_ref, b, why,
                                why_cap);
        if (rc < 0)
            return (int)rc;
        at = next;
    }
    return 0;
}

/* The executable sections (or, without section headers, the executable segments). */
static void find_code(struct object_index *ix, const struct hp_elf *f)
{
    for (size_t i = 0; i < f->shnum && ix->n_code < MAX_CODE_RANGES; i++) {
        const ElfW(Shdr) *s = hp_elf_section(f, i);
        if (s && s->sh_type == SHT_PROGBITS && (s->sh_flags & SHF_EXECINSTR) && s->sh_size &&
            (s->sh_flags & SHF_ALLOC))
            ix->code[ix->n_code++] = (struct code_range){ix->base + s->sh_addr,
                                                         ix->base + s->sh_addr + s->sh_size};
    }
    if (ix->n_code > 0)
        return;
    const ElfW(Phdr) *ph = (const void *)(f->data + f->eh->e_phoff);
    for (ElfW(Half) i = 0; i < f->eh->e_phnum && ix->n_code < MAX_CODE_RANGES; i++)
        if (ph[i].p_type == PT_LOAD && (ph[i].p_flags & PF_X) && ph[i].p_filesz)
            ix->code[ix->n_code++] = (struct code_range){ix->base + ph[i].p_vaddr,
                                                         ix->base + ph[i].p_vaddr +
                                                             ph[i].p_filesz};
}

struct start_list {
    struct object_index *ix;
    uint32_t *items;
    size_t count, cap;
    bool oom;
};

static bool add_start(const struct hp_elf_symbol *s, void *ctx)
{
    struct start_list *l = ctx;
    uintptr_t a = l->ix->base + s->sym->st_value;
    if (!in_code(l->ix, a))
        return false;
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        uint32_t *grown = realloc(l->items, cap * sizeof *grown);
        if (!grown) {
            l->oom = true;
            return true;
        }
        l->items = grown;
        l->cap = cap;
    }
    l->items[l->count++] = (uint32_t)(a - l->ix->base);
    return false;
}

static bool collect_starts(struct object_index *ix, const struct hp_elf *f)
{
    struct start_list l = {ix, NULL, 0, 0, false};
    hp_elf_each_symbol(f, add_start, &l);
    if (l.oom) {
        free(l.items);
        return false;
    }
    if (l.count)
        qsort(l.items, l.count, sizeof *l.items, compare_u32);
    size_t kept = 0;
    for (size_t i = 0; i < l.count; i++)
        if (kept == 0 || l.items[kept - 1] != l.items[i])
            l.items[kept++] = l.items[i];
    ix->starts = l.items;
    ix->n_starts = kept;
    return true;
}

/* Code pointers in data, through the relocations that put them there. */
static void scan_relocations(struct builder *b)
{
    const struct hp_elf *f = b->f;
    for (size_t i = 0; i < f->shnum; i++) {
        const ElfW(Shdr) *s = hp_elf_section(f, i);
        if (!s || s->sh_type != SHT_RELA || s->sh_entsize != sizeof(ElfW(Rela)))
            continue;
        const ElfW(Shdr) *symtab = hp_elf_section(f, s->sh_link);
        const ElfW(Rela) *r = (const void *)(f->data + s->sh_offset);
        for (size_t k = 0; k < s->sh_size / sizeof *r; k++) {
            unsigned type = ELF64_R_TYPE(r[k].r_info);
            uintptr_t place = b->ix->base + r[k].r_offset, value;
            add_bound(b, place);
            if (type == R_X86_64_RELATIVE || type == R_X86_64_IRELATIVE) {
                value = b->ix->base + (uintptr_t)r[k].r_addend;
            } else if ((type == R_X86_64_64 || type == R_X86_64_GLOB_DAT) && symtab &&
                       symtab->sh_entsize == sizeof(ElfW(Sym)) &&
                       ELF64_R_SYM(r[k].r_info) < symtab->sh_size / sizeof(ElfW(Sym))) {
                const ElfW(Sym) *sym = (const ElfW(Sym) *)(f->data + symtab->sh_offset) +
                                       ELF64_R_SYM(r[k].r_info);
                if (sym->st_shndx == SHN_UNDEF)
                    continue;
                value = b->ix->base + sym->st_value + (uintptr_t)r[k].r_addend;
            } else {
                continue;
            }
            add_ref(b, value, place, REF_DATA);
        }
    }
}

/* A non-PIC executable has no relocations for its code pointers: every aligned word of its
 * data segments that looks like a code address counts. */
static void scan_exec_data(struct builder *b)
{
    const struct hp_elf *f = b->f;
    const ElfW(Phdr) *ph = (const void *)(f->data + f->eh->e_phoff);
    for (ElfW(Half) i = 0; i < f->eh->e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD || (ph[i].p_flags & PF_X))
            continue;
        const uint8_t *bytes = hp_elf_bytes_at(f, ph[i].p_vaddr, ph[i].p_filesz);
        for (size_t off = (8 - ph[i].p_vaddr % 8) % 8; bytes && off + 8 <= ph[i].p_filesz;
             off += 8) {
            uint64_t v;
            memcpy(&v, bytes + off, 8);
            add_ref(b, (uintptr_t)v, ph[i].p_vaddr + off, REF_DATA);
        }
    }
}

static void sort_refs(struct object_index *ix, struct builder *b)
{
    if (b->n_refs)
        qsort(b->refs, b->n_refs, sizeof *b->refs, compare_ref);
    size_t kept = 0;
    for (size_t i = 0; i < b->n_refs; i++)
        if (kept == 0 || b->refs[kept - 1].to != b->refs[i].to)
            b->refs[kept++] = b->refs[i];
    ix->refs = b->refs;
    ix->n_refs = kept;
}

/* The object's extent fits the 32-bit offsets of the index. */
static bool fits_offsets(const struct object_index *ix)
{
    for (size_t i = 0; i < ix->n_code; i++)
        if (ix->code[i].end - ix->base > UINT32_MAX)
            return false;
    return true;
}

static int sweep_code(struct builder *b, char *why, size_t why_cap)
{
    const struct hp_elf *f = b->f;
    struct object_index *ix = b->ix;
    for (size_t i = 0; i < ix->n_code; i++) {
        const struct code_range *r = &ix->code[i];
        const uint8_t *bytes = hp_elf_bytes_at(f, r->start - ix->base, r->end - r->start);
        if (!bytes) {
            snprintf(why, why_cap, "the code of %s at +%#lx is not in its file", ix->shown,
                     (unsigned long)(r->start - ix->base));
            return -EINVAL;
        }
        int rc = sweep_range(b, r->start, r->end, bytes, why, why_cap);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static struct object_index *build_index(const struct hp_loaded_object *o, const struct hp_elf *f,
                                        char *why, size_t why_cap)
{
    struct object_index *ix = calloc(1, sizeof *ix);
    if (!ix) {
        snprintf(why, why_cap, "out of memory");
        return NULL;
    }
    ix->base = o->base;
    ix->dev = f->dev;
    ix->ino = f->ino;
    ix->size = f->size;
    ix->mtime_ns = f->mtime_ns;
    snprintf(ix->path, sizeof ix->path, "%s", o->path);
    snprintf(ix->shown, sizeof ix->shown, "%.250s", o->shown);
    ix->has_symtab = hp_elf_has_symtab(f);
    find_code(ix, f);
    struct builder b = {.ix = ix, .f = f, .is_exec_file = f->eh->e_type == ET_EXEC};
    int rc = 0;
    if (!fits_offsets(ix)) {
        snprintf(why, why_cap, "%s spans more than 4 GiB of code: too large to index", o->shown);
        rc = -E2BIG;
    } else if (!collect_starts(ix, f)) {
        rc = -ENOMEM;
    } else if ((rc = sweep_code(&b, why, why_cap)) == 0) {
        scan_relocations(&b);
        hp_elf_each_symbol(f, add_data_symbol, &b);
        read_tables(&b);
        if (b.is_exec_file)
            scan_exec_data(&b);
    }
    free(b.bounds);
    free(b.tables);
    if (rc == 0 && b.oom)
        rc = -ENOMEM;
    if (rc == -ENOMEM)
        snprintf(why, why_cap, "out of memory while indexing the code of %s", o->shown);
    if (rc != 0) {
        free(b.refs);
        free_index(ix);
        return NULL;
    }
    sort_refs(ix, &b);
    return ix;
}

/* ---- the cache ---------------------------------------------------------------------------------- */

struct loader_counts {
    unsigned long long adds, subs;
};

static int read_counts(struct dl_phdr_info *info, size_t size, void *ctx)
{
    struct loader_counts *c = ctx;
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
        c->adds = info->dlpi_adds;
        c->subs = info->dlpi_subs;
    }
    return 1;
}

struct base_query {
    uintptr_t base;
    bool found;
};

static bool at_base(const struct hp_loaded_object *o, void *ctx)
{
    struct base_query *q = ctx;
    q->found |= o->base == q->base;
    return q->found;
}

/* An entry stays while an object is loaded at its base from the same file. */
static bool still_valid(const struct object_index *ix)
{
    struct base_query q = {ix->base, false};
    hp_each_loaded_object(at_base, &q);
    struct stat st;
    return q.found && stat(ix->path, &st) == 0 && st.st_dev == ix->dev && st.st_ino == ix->ino &&
           (size_t)st.st_size == ix->size &&
           (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec == ix->mtime_ns;
}

/* Drops, zeroed, every cached index that `drop` picks. */
static void drop_where(bool (*drop)(const struct object_index *ix, const void *ctx),
                       const void *ctx)
{
    for (struct object_index **p = &cache; *p;) {
        if (!drop(*p, ctx)) {
            p = &(*p)->next;
            continue;
        }
        struct object_index *gone = *p;
        *p = gone->next;
        free_index(gone);
        stats.dropped++;
        stats.cached--;
    }
}

static bool gone_or_changed(const struct object_index *ix, const void *ctx)
{
    (void)ctx;
    return !still_valid(ix);
}

/* When objects were loaded or unloaded since the last look, drops the entries whose object
 * is gone or whose file changed. */
static void revalidate_cache(void)
{
    struct loader_counts c = {0, 0};
    dl_iterate_phdr(read_counts, &c);
    if (c.adds == seen_adds && c.subs == seen_subs)
        return;
    seen_adds = c.adds;
    seen_subs = c.subs;
    drop_where(gone_or_changed, NULL);
}

struct address_range {
    uintptr_t start, end;
};

static bool based_in(const struct object_index *ix, const void *ctx)
{
    const struct address_range *r = ctx;
    return ix->base >= r->start && ix->base < r->end;
}

void hp_branch_proof_forget(uintptr_t start, uintptr_t end)
{
    struct address_range range = {start, end};
    drop_where(based_in, &range);
}

static bool same_identity(const struct object_index *ix, uintptr_t base, const struct hp_elf *f)
{
    return ix->base == base && ix->dev == f->dev && ix->ino == f->ino && ix->size == f->size &&
           ix->mtime_ns == f->mtime_ns;
}

/* The index for o (its file open in f): cached, or built and cached. */
static struct object_index *index_for(const struct hp_loaded_object *o, const struct hp_elf *f,
                                      char *why, size_t why_cap)
{
    revalidate_cache();
    for (struct object_index **p = &cache; *p; p = &(*p)->next) {
        if (same_identity(*p, o->base, f)) {
            stats.reused++;
            return *p;
        }
        if ((*p)->base == o->base) {           /* another file at that base now */
            struct object_index *gone = *p;
            *p = gone->next;
            free_index(gone);
            stats.dropped++;
            stats.cached--;
            break;
        }
    }
    struct object_index *ix = build_index(o, f, why, why_cap);
    if (!ix)
        return NULL;
    ix->next = cache;
    cache = ix;
    stats.built++;
    stats.cached++;
    return ix;
}

/* ---- naming places in refusals ------------------------------------------------------------------- */

struct nearest {
    uintptr_t base, addr;
    uintptr_t best;
    size_t best_size;
    char name[200];
};

static bool closer_symbol(const struct hp_elf_symbol *s, void *ctx)
{
    struct nearest *n = ctx;
    uintptr_t a = n->base + s->sym->st_value;
    if (a <= n->addr && (a > n->best || !n->name[0]) && s->name_len > 0) {
        n->best = a;
        n->best_size = s->sym->st_size;
        snprintf(n->name, sizeof n->name, "%.*s", (int)s->name_len, s->name);
    }
    return false;
}

/* "name+0x3" for the symbol that covers addr (or a label just below it), else
 * "object+0x1067": in a stripped object the nearest exported name may be far away. */
static void place_name(const struct object_index *ix, const struct hp_elf *f, uintptr_t addr,
                       char *out, size_t cap)
{
    struct nearest n = {ix->base, addr, 0, 0, ""};
    hp_elf_each_symbol(f, closer_symbol, &n);
    /* A symbol covers its size and the alignment padding after it. */
    bool covers = n.name[0] && (n.best_size ? addr - n.best < n.best_size + 16 : addr - n.best < 256);
    if (covers)
        snprintf(out, cap, "%.180s+%#lx", n.name, (unsigned long)(addr - n.best));
    else
        snprintf(out, cap, "%.180s+%#lx", ix->shown, (unsigned long)(addr - ix->base));
}

static void describe_ref(const struct object_index *ix, const struct hp_elf *f,
                         const struct ref *r, const char *name, uintptr_t site, uintptr_t cut_end,
                         char *why, size_t why_cap)
{
    char from[256], to[256];
    place_name(ix, f, ix->base + r->from, from, sizeof from);
    place_name(ix, f, ix->base + r->to, to, sizeof to);
    const char *what = r->kind == REF_BRANCH    ? "the branch at %s targets %s"
                       : r->kind == REF_ADDRESS ? "the code at %s takes the address %s"
                       : r->kind == REF_TABLE   ? "a jump table entry at %s targets %s"
                                                : "a code pointer in the data at %s points to %s";
    char head[600];
    snprintf(head, sizeof head, what, from, to);
    snprintf(why, why_cap, "%s cannot be patched safely: %s (%s), inside the %lu bytes the "
             "jump would overwrite", name, head, ix->shown, (unsigned long)(cut_end - site));
}

struct starts_at_query {
    uintptr_t base, addr;
    char name[200];
};

static bool named_at(const struct hp_elf_symbol *s, void *ctx)
{
    struct starts_at_query *q = ctx;
    if (q->base + s->sym->st_value != q->addr || s->name_len == 0)
        return false;
    snprintf(q->name, sizeof q->name, "%.*s", (int)s->name_len, s->name);
    return true;
}

/* ---- the proof ------------------------------------------------------------------------------------ */

struct function_query {
    uintptr_t base, addr;
    size_t size;
    bool found;
};

static bool function_of_size_at(const struct hp_elf_symbol *s, void *ctx)
{
    struct function_query *q = ctx;
    int type = ELF64_ST_TYPE(s->sym->st_info);
    q->found = (type == STT_FUNC || type == STT_NOTYPE) && s->sym->st_shndx != SHN_UNDEF &&
               q->base + s->sym->st_value == q->addr && s->sym->st_size == q->size;
    return q->found;
}

/* The caller resolved the function (entry and size) before the engine could pin its object: a
 * plugin unloaded and replaced by another at the same address in between would put other code
 * there, maybe the middle of another function. The file mapped there now must still define a
 * function of that size at that address. */
static int still_the_function(const struct object_index *ix, const struct hp_elf *f,
                              const char *name, uintptr_t entry, size_t size, char *why,
                              size_t why_cap)
{
    struct function_query q = {ix->base, entry, size, false};
    hp_elf_each_symbol(f, function_of_size_at, &q);
    if (q.found)
        return 0;
    snprintf(why, why_cap, "%s: no function of %zu bytes starts at %#lx in %s any more (the "
             "library was unloaded and another loaded there since the name was looked up?); "
             "nothing changed, try again", name, size, (unsigned long)entry, ix->shown);
    return -ESTALE;
}

/* The end of the bytes after entry that the function may use as padding: the next symbol
 * start, or the end of its section. */
static uintptr_t padding_limit(const struct object_index *ix, uintptr_t entry)
{
    const struct code_range *r = range_of(ix, entry);
    size_t i = lower_bound_u32(ix->starts, ix->n_starts, (uint32_t)(entry - ix->base) + 1);
    uintptr_t next = i < ix->n_starts ? ix->base + ix->starts[i] : r->end;
    return next < r->end ? next : r->end;
}

/* The bytes in memory are the file's: what the index was built from is what runs. */
static int memory_is_file(const struct object_index *ix, const struct hp_elf *f,
                          const char *name, uintptr_t from, uintptr_t to, char *why,
                          size_t why_cap)
{
    const uint8_t *bytes = hp_elf_bytes_at(f, from - ix->base, to - from);
    if (bytes && memcmp(bytes, (const void *)from, to - from) == 0)
        return 0;
    snprintf(why, why_cap, "%s cannot be patched safely: its code in memory differs from its "
             "file %s (changed since it was loaded?), so the file cannot prove where branches "
             "go", name, ix->path);
    return -EINVAL;
}

/* Nothing indexed and no symbol start lies in (site, cut_end). */
static int nothing_lands_inside(const struct object_index *ix, const struct hp_elf *f,
                                const char *name, uintptr_t entry, uintptr_t site,
                                uintptr_t cut_end, char *why, size_t why_cap)
{
    uint32_t lo = (uint32_t)(site - ix->base) + 1, hi = (uint32_t)(cut_end - ix->base);
    size_t i = lower_bound_ref(ix->refs, ix->n_refs, lo);
    if (i < ix->n_refs && ix->refs[i].to < hi) {
        describe_ref(ix, f, &ix->refs[i], name, site, cut_end, why, why_cap);
        return -EINVAL;
    }
    i = lower_bound_u32(ix->starts, ix->n_starts, lo);
    if (i < ix->n_starts && ix->starts[i] < hi) {
        struct starts_at_query q = {ix->base, ix->base + ix->starts[i], ""};
        hp_elf_each_symbol(f, named_at, &q);
        snprintf(why, why_cap, "%s cannot be patched safely: the symbol %s starts at +%#lx, "
                 "inside the %lu bytes the jump would overwrite (another entry point)", name,
                 q.name, (unsigned long)(q.addr - entry),
                 (unsigned long)(cut_end - site));
        return -EINVAL;
    }
    return 0;
}

/* The object that holds entry, its file (the one mapped there) and its index. */
static struct object_index *object_of(const char *name, uintptr_t entry, struct hp_elf *f,
                                      char *why, size_t why_cap)
{
    struct hp_loaded_object o;
    if (!hp_loaded_object_at(entry, &o)) {
        snprintf(why, why_cap, "%s (%#lx) is not in any loaded object, so no symbol table "
                 "bounds the code that might branch into it", name, (unsigned long)entry);
        return NULL;
    }
    struct hp_mapping m;
    if (!hp_elf_open(o.path, f)) {
        snprintf(why, why_cap, "cannot read the file of %s (%s) to prove that no other code "
                 "branches into %s", o.shown, o.path, name);
        return NULL;
    }
    if (!hp_elf_matches(f, o.phdr, o.phnum) || !hp_maps_lookup(entry, &m) ||
        m.inode != (uint64_t)f->ino || m.dev_major != major(f->dev) ||
        m.dev_minor != minor(f->dev)) {
        hp_elf_close(f);
        snprintf(why, why_cap, "the file %s is not the one mapped for %s (replaced on disk "
                 "since it was loaded?): cannot prove that no code branches into %s", o.path,
                 o.shown, name);
        return NULL;
    }
    struct object_index *ix = index_for(&o, f, why, why_cap);
    if (!ix)
        hp_elf_close(f);
    return ix;
}

int hp_branch_proof(const char *name, const uint8_t *entry, size_t size, size_t skip, size_t len,
                    char *why, size_t why_cap)
{
    struct hp_elf f;
    struct object_index *ix = object_of(name, (uintptr_t)entry, &f, why, why_cap);
    if (!ix)
        return -EINVAL;
    int rc = still_the_function(ix, &f, name, (uintptr_t)entry, size, why, why_cap);
    uintptr_t site = (uintptr_t)entry + skip, cut_end = 0;
    if (rc == 0 && !range_of(ix, (uintptr_t)entry)) {
        snprintf(why, why_cap, "%s is not in an executable section of %s", name, ix->shown);
        rc = -EINVAL;
    }
    uintptr_t limit = rc == 0 ? padding_limit(ix, (uintptr_t)entry) : 0;
    if (rc == 0) {
        /* The body, and for a tiny function the padding the jump will cover. */
        uintptr_t to = (uintptr_t)entry + size;
        uintptr_t pad_to = site + HP_SITE_MAX < limit ? site + HP_SITE_MAX : limit;
        rc = memory_is_file(ix, &f, name, (uintptr_t)entry, pad_to > to ? pad_to : to, why,
                            why_cap);
    }
    if (rc == 0)
        rc = hp_arch_check_function(name, entry, size, (const uint8_t *)site, len,
                                    (const uint8_t *)limit, &cut_end, why, why_cap);
    if (rc == 0)
        rc = nothing_lands_inside(ix, &f, name, (uintptr_t)entry, site, cut_end, why, why_cap);
    hp_elf_close(&f);
    return rc;
}

void hp_branch_proof_get_stats(struct hp_branch_proof_stats *out)
{
    *out = stats;
}
