/*
 * patch_file.c — reading a patch file's metadata from its descriptor, before it is loaded.
 *
 * A patch (include/hotpatch_patch.h) is a shared library whose section "hotpatch_patch" holds
 * fixed-size records: its name and description, the functions it replaces, the symbols of the
 * process it imports, the build-id of the object it was built for. Loading a library runs its
 * constructors, so everything that can refuse a patch is decided from these records first,
 * read from the very descriptor that will be loaded: the ELF header, the section headers and
 * the section-name table are read with pread(2) and checked against the file's size before any
 * of them is trusted.
 *
 * It also reads the GNU build-id of an object already loaded in the process, from its
 * PT_NOTE segments in memory (the loader mapped them; nothing is read from a path).
 *
 * No state. Agent thread.
 */
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "hotpatch_patch.h"

#define MAX_RECORDS 256

static bool read_exact(int fd, void *buf, size_t len, off_t at)
{
    ssize_t n = pread(fd, buf, len, at);
    return n == (ssize_t)len;
}

static bool within(unsigned long long offset, unsigned long long size, unsigned long long file)
{
    return offset <= file && size <= file - offset;
}

/* Reads and checks the ELF header and the section headers (*sh, e_shnum of them, to free). */
static int read_section_headers(int fd, off_t file_size, ElfW(Ehdr) *eh, ElfW(Shdr) **sh,
                                char *why, size_t why_cap)
{
    *sh = NULL;
    if (!read_exact(fd, eh, sizeof *eh, 0) || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
        eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_shentsize != sizeof(ElfW(Shdr)) ||
        eh->e_type != ET_DYN) {
        snprintf(why, why_cap, "not a 64-bit ELF shared library");
        return -EINVAL;
    }
    if (eh->e_shnum == 0 || eh->e_shstrndx >= eh->e_shnum ||
        !within(eh->e_shoff, (unsigned long long)eh->e_shnum * sizeof(ElfW(Shdr)),
                (unsigned long long)file_size)) {
        snprintf(why, why_cap, "its section headers are missing or lie outside the file");
        return -EINVAL;
    }
    *sh = calloc(eh->e_shnum, sizeof **sh);
    if (!*sh) {
        snprintf(why, why_cap, "out of memory");
        return -ENOMEM;
    }
    if (!read_exact(fd, *sh, eh->e_shnum * sizeof **sh, (off_t)eh->e_shoff)) {
        snprintf(why, why_cap, "cannot read its section headers");
        free(*sh);
        *sh = NULL;
        return -EIO;
    }
    return 0;
}

/* Reads a whole section (at most `limit` bytes) into a new buffer, NUL-terminated. */
static char *read_section(int fd, off_t file_size, const ElfW(Shdr) *section, size_t limit)
{
    if (section->sh_type == SHT_NOBITS || section->sh_size == 0 || section->sh_size > limit ||
        !within(section->sh_offset, section->sh_size, (unsigned long long)file_size))
        return NULL;
    char *bytes = malloc(section->sh_size + 1);
    if (bytes && !read_exact(fd, bytes, section->sh_size, (off_t)section->sh_offset)) {
        free(bytes);
        return NULL;
    }
    if (bytes)
        bytes[section->sh_size] = '\0';
    return bytes;
}

/* Finds the section named `name`: its offset and size in the file. */
static int find_section(int fd, off_t file_size, const char *name, ElfW(Off) *offset,
                        ElfW(Xword) *size, char *why, size_t why_cap)
{
    ElfW(Ehdr) eh;
    ElfW(Shdr) *sh;
    int rc = read_section_headers(fd, file_size, &eh, &sh, why, why_cap);
    if (rc != 0)
        return rc;
    const ElfW(Shdr) *strtab = &sh[eh.e_shstrndx];
    char *names = read_section(fd, file_size, strtab, (size_t)file_size);
    if (!names) {
        snprintf(why, why_cap, "cannot read its section names");
        free(sh);
        return -EIO;
    }
    rc = -ENOENT;
    for (size_t i = 0; i < eh.e_shnum; i++) {
        if (sh[i].sh_name >= strtab->sh_size || strcmp(names + sh[i].sh_name, name) != 0)
            continue;
        if (sh[i].sh_type == SHT_NOBITS ||
            !within(sh[i].sh_offset, sh[i].sh_size, (unsigned long long)file_size)) {
            snprintf(why, why_cap, "its %s section lies outside the file", name);
            rc = -EINVAL;
            goto out;
        }
        *offset = sh[i].sh_offset;
        *size = sh[i].sh_size;
        rc = 0;
        goto out;
    }
    snprintf(why, why_cap, "no hotpatch metadata (no %s section): build it with "
             "hotpatch_patch.h's HOTPATCH_PATCH_INFO and HOTPATCH_REPLACE", name);
out:
    free(names);
    free(sh);
    return rc;
}

static bool terminated(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

/* A GNU build-id as text: an even number of hex digits, 1 to 64 bytes. */
static bool valid_build_id(const char *hex)
{
    size_t n = strlen(hex);
    return n >= 2 && n <= 128 && n % 2 == 0 && strspn(hex, "0123456789abcdefABCDEF") == n;
}

/* Text a reply may show as it is: UTF-8 without control characters. */
static bool printable_text(const char *s)
{
    size_t bad;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return hp_utf8_valid(s, strlen(s), &bad);
}

/* Checks one record and adds it to the description. */
static int take_record(const struct hotpatch_patch_record *r, struct hp_patch_file *out,
                       char *why, size_t why_cap)
{
    if (r->magic != HOTPATCH_PATCH_MAGIC || !terminated(r->a, sizeof r->a) ||
        !terminated(r->b, sizeof r->b)) {
        snprintf(why, why_cap, "its metadata is damaged (a record has a bad magic number or an "
                 "unterminated string)");
        return -EINVAL;
    }
    switch (r->kind) {
    case HOTPATCH_PATCH_KIND_INFO:
        if (out->name[0]) {
            snprintf(why, why_cap, "it names itself twice ('%s' and '%s'): one "
                     "HOTPATCH_PATCH_INFO per patch", out->name, r->a);
            return -EINVAL;
        }
        if (strlen(r->a) >= sizeof out->name) {
            snprintf(why, why_cap, "its name '%.64s...' is longer than 63 bytes", r->a);
            return -EINVAL;
        }
        if (!printable_text(r->b)) {
            snprintf(why, why_cap, "its description is not plain text (UTF-8 without control "
                     "characters)");
            return -EINVAL;
        }
        memcpy(out->name, r->a, strlen(r->a) + 1);
        snprintf(out->description, sizeof out->description, "%s", r->b);
        return 0;
    case HOTPATCH_PATCH_KIND_REPLACE:
        if (out->n_replaces == HP_PATCH_MAX_FUNCTIONS)
            break;
        out->replaces[out->n_replaces++] = (struct hp_patch_pair){r->a, r->b};
        return 0;
    case HOTPATCH_PATCH_KIND_IMPORT:
        if (out->n_imports == HP_PATCH_MAX_FUNCTIONS)
            break;
        out->imports[out->n_imports++] = (struct hp_patch_pair){r->a, r->b};
        return 0;
    case HOTPATCH_PATCH_KIND_BUILD_ID:
        if (out->n_build_ids == HP_PATCH_MAX_BUILD_IDS) {
            snprintf(why, why_cap, "it names more than %d build-ids", HP_PATCH_MAX_BUILD_IDS);
            return -E2BIG;
        }
        if (!valid_build_id(r->b)) {
            snprintf(why, why_cap, "its build-id for %s ('%.80s') is not 2 to 128 hex digits, "
                     "an even number of them", *r->a ? r->a : "the main program", r->b);
            return -EINVAL;
        }
        out->build_ids[out->n_build_ids++] = (struct hp_patch_pair){r->a, r->b};
        return 0;
    default:
        snprintf(why, why_cap, "its metadata has a record of unknown kind %u (made by a newer "
                 "hotpatch_patch.h?)", r->kind);
        return -EINVAL;
    }
    snprintf(why, why_cap, "it has more than %d %s records", HP_PATCH_MAX_FUNCTIONS,
             r->kind == HOTPATCH_PATCH_KIND_REPLACE ? "HOTPATCH_REPLACE" : "HOTPATCH_IMPORT");
    return -E2BIG;
}

static bool valid_patch_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 63)
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.' || *p == '-'))
            return false;
    return true;
}

int hp_patch_file_read(int fd, struct hp_patch_file *out, char *why, size_t why_cap)
{
    memset(out, 0, sizeof *out);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, why_cap, "cannot read it: %s", strerror(errno));
        return -errno;
    }
    ElfW(Off) offset;
    ElfW(Xword) size;
    int rc = find_section(fd, st.st_size, "hotpatch_patch", &offset, &size, why, why_cap);
    if (rc != 0)
        return rc;
    const size_t record = sizeof(struct hotpatch_patch_record);
    if (size % record != 0 || size / record > MAX_RECORDS || size == 0) {
        snprintf(why, why_cap, "its metadata section has a size (%lu bytes) that is not a whole "
                 "number of records (at most %d)", (unsigned long)size, MAX_RECORDS);
        return -EINVAL;
    }
    out->records = malloc(size);
    if (!out->records) {
        snprintf(why, why_cap, "out of memory");
        return -ENOMEM;
    }
    if (!read_exact(fd, out->records, size, (off_t)offset)) {
        snprintf(why, why_cap, "cannot read its metadata section");
        hp_patch_file_free(out);
        return -EIO;
    }
    for (size_t i = 0; rc == 0 && i < size / record; i++)
        rc = take_record(&out->records[i], out, why, why_cap);
    if (rc == 0 && !out->name[0]) {
        snprintf(why, why_cap, "it has no HOTPATCH_PATCH_INFO (a patch needs a name)");
        rc = -EINVAL;
    } else if (rc == 0 && !valid_patch_name(out->name)) {
        snprintf(why, why_cap, "its name '%.64s' is not 1 to 63 of A-Z a-z 0-9 _ . -",
                 out->name);
        rc = -EINVAL;
    } else if (rc == 0 && out->n_replaces == 0) {
        snprintf(why, why_cap, "patch %s replaces nothing (no HOTPATCH_REPLACE)", out->name);
        rc = -EINVAL;
    }
    if (rc != 0)
        hp_patch_file_free(out);
    return rc;
}

void hp_patch_file_free(struct hp_patch_file *f)
{
    free(f->records);
    f->records = NULL;
}

/* ---- the patch's own symbols, before it is loaded ----------------------------------------- */

#define SYMBOLS_LIMIT (64u << 20)   /* bytes of .dynsym and of its names read, at most */

struct own_symbols {
    const ElfW(Sym) *symbols;
    size_t count;
    const char *names;
    size_t names_size;
    const ElfW(Shdr) *sections;
    size_t n_sections;
};

/* The definition of `name` in the patch's own dynamic symbol table (not a dependency's: the
 * loader would find those too), or NULL. */
static const ElfW(Sym) *own_definition(const struct own_symbols *o, const char *name)
{
    for (size_t i = 1; i < o->count; i++) {
        const ElfW(Sym) *sym = &o->symbols[i];
        unsigned bind = ELF64_ST_BIND(sym->st_info);
        unsigned visibility = ELF64_ST_VISIBILITY(sym->st_other);
        if (sym->st_shndx == SHN_UNDEF || sym->st_shndx >= o->n_sections ||
            sym->st_name >= o->names_size || (bind != STB_GLOBAL && bind != STB_WEAK) ||
            (visibility != STV_DEFAULT && visibility != STV_PROTECTED))
            continue;
        if (strcmp(o->names + sym->st_name, name) == 0)
            return sym;
    }
    return NULL;
}

static int check_replacements(const struct own_symbols *o, const struct hp_patch_file *meta,
                              char *why, size_t why_cap)
{
    for (size_t i = 0; i < meta->n_replaces; i++) {
        const char *target = meta->replaces[i].a, *replacement = meta->replaces[i].b;
        const ElfW(Sym) *sym = own_definition(o, replacement);
        if (!sym) {
            snprintf(why, why_cap, "it defines no function %s, the replacement for %s (it "
                     "must be a function of the patch itself, not static)", replacement, target);
            return -ENOENT;
        }
        if (ELF64_ST_TYPE(sym->st_info) != STT_FUNC) {
            snprintf(why, why_cap, "its %s, the replacement for %s, is not a function",
                     replacement, target);
            return -EINVAL;
        }
    }
    return 0;
}

static int check_import_slots(const struct own_symbols *o, const struct hp_patch_file *meta,
                              char *why, size_t why_cap)
{
    for (size_t i = 0; i < meta->n_imports; i++) {
        const char *symbol = meta->imports[i].a, *slot = meta->imports[i].b;
        const ElfW(Sym) *sym = own_definition(o, slot);
        if (!sym || ELF64_ST_TYPE(sym->st_info) != STT_OBJECT || sym->st_size != sizeof(void *) ||
            !(o->sections[sym->st_shndx].sh_flags & SHF_WRITE)) {
            snprintf(why, why_cap, "it has no import slot %s for %s (the writable pointer "
                     "variable HOTPATCH_IMPORT defines)", slot, symbol);
            return -ENOENT;
        }
    }
    return 0;
}

int hp_patch_file_check_symbols(int fd, const struct hp_patch_file *meta, char *why,
                                size_t why_cap)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, why_cap, "cannot read it: %s", strerror(errno));
        return -errno;
    }
    ElfW(Ehdr) eh;
    ElfW(Shdr) *sh;
    int rc = read_section_headers(fd, st.st_size, &eh, &sh, why, why_cap);
    if (rc != 0)
        return rc;
    const ElfW(Shdr) *dynsym = NULL;
    for (size_t i = 0; i < eh.e_shnum && !dynsym; i++)
        if (sh[i].sh_type == SHT_DYNSYM && sh[i].sh_link < eh.e_shnum &&
            sh[i].sh_entsize == sizeof(ElfW(Sym)))
            dynsym = &sh[i];
    char *symbols = dynsym ? read_section(fd, st.st_size, dynsym, SYMBOLS_LIMIT) : NULL;
    char *names = dynsym ? read_section(fd, st.st_size, &sh[dynsym->sh_link], SYMBOLS_LIMIT)
                         : NULL;
    if (!symbols || !names) {
        snprintf(why, why_cap, "its dynamic symbol table cannot be read (build it as a shared "
                 "library: -shared -fPIC)");
        rc = -EINVAL;
    } else {
        struct own_symbols o = {(const ElfW(Sym) *)(void *)symbols,
                                dynsym->sh_size / sizeof(ElfW(Sym)), names,
                                sh[dynsym->sh_link].sh_size, sh, eh.e_shnum};
        rc = check_replacements(&o, meta, why, why_cap);
        if (rc == 0)
            rc = check_import_slots(&o, meta, why, why_cap);
    }
    free(symbols);
    free(names);
    free(sh);
    return rc;
}

/* ---- build-ids of loaded objects ------------------------------------------------------------ */

struct build_id_query {
    const char *object;          /* "" for the main program, else a file name */
    char hex[2 * 64 + 1];
    bool found_object;
    bool has_id;
};

static const char *file_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static bool names_object(const struct dl_phdr_info *info, const char *object)
{
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    if (!*name) {                                /* the main program */
        if (!*object)
            return true;
        char exe[4096];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n <= 0)
            return false;
        exe[n] = '\0';
        return strcmp(file_name(exe), object) == 0 || strcmp(exe, object) == 0; /* or its path */
    }
    return *object && (strcmp(name, object) == 0 || strcmp(file_name(name), object) == 0);
}


/* The NT_GNU_BUILD_ID note in one PT_NOTE segment, as hex. */
static bool note_build_id(uintptr_t base, const ElfW(Phdr) *ph, char *hex, size_t cap)
{
    const uint8_t *p = (const uint8_t *)(base + ph->p_vaddr), *end = p + ph->p_memsz;
    while ((size_t)(end - p) >= sizeof(ElfW(Nhdr))) {
        const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
        /* Sizes are compared with what is left, never added to a pointer first: a damaged
         * note must end the walk, not point past the segment. */
        size_t name_size = ((size_t)nh->n_namesz + 3) & ~(size_t)3;
        size_t desc_size = ((size_t)nh->n_descsz + 3) & ~(size_t)3;
        const uint8_t *name = p + sizeof *nh;
        size_t left = (size_t)(end - name);
        if (name_size > left || desc_size > left - name_size)
            return false;
        const uint8_t *desc = name + name_size;
        if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && memcmp(name, "GNU", 4) == 0 &&
            nh->n_descsz * 2 + 1 <= cap) {
            for (size_t i = 0; i < nh->n_descsz; i++)
                snprintf(hex + 2 * i, 3, "%02x", desc[i]);
            return true;
        }
        p = desc + desc_size;
    }
    return false;
}

static int visit_for_build_id(struct dl_phdr_info *info, size_t size, void *ctx)
{
    (void)size;
    struct build_id_query *q = ctx;
    if (!names_object(info, q->object))
        return 0;
    q->found_object = true;
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_NOTE &&
            note_build_id(info->dlpi_addr, &info->dlpi_phdr[i], q->hex, sizeof q->hex)) {
            q->has_id = true;
            break;
        }
    return 1;
}

int hp_loaded_build_id(const char *object, char *hex, size_t cap)
{
    struct build_id_query q = {object, "", false, false};
    dl_iterate_phdr(visit_for_build_id, &q);
    if (!q.found_object)
        return -ENOENT;
    if (!q.has_id)
        return -ENODATA;
    snprintf(hex, cap, "%s", q.hex);
    return 0;
}
