/*
 * elf.h — reading the ELF file of a loaded object: its symbols (with their versions), its
 * sections and its load headers. Shared by symbols.c (names -> addresses) and branch_proof.c
 * (what may branch where). Not installed; not for use while threads are stopped (mmap of the
 * file, open, fstat).
 */
#ifndef HOTPATCH_ELF_H
#define HOTPATCH_ELF_H

#include <link.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* An ELF file mapped read-only, and the identity of that file. */
struct hp_elf {
    const uint8_t *data;
    size_t size;
    dev_t dev;
    ino_t ino;
    int64_t mtime_ns;
    const ElfW(Ehdr) *eh;
    const ElfW(Shdr) *sh;            /* section headers, NULL when the file has none */
    size_t shnum;
};

/* Maps the regular file at path (non-blocking open: never a FIFO or a device). */
bool hp_elf_open(const char *path, struct hp_elf *f);
void hp_elf_close(struct hp_elf *f);
/* True when the file's PT_LOAD headers equal the loaded object's: the file that was loaded. */
bool hp_elf_matches(const struct hp_elf *f, const ElfW(Phdr) *phdr, ElfW(Half) phnum);
/* True when the file has a .symtab (an unstripped object: local functions are named). */
bool hp_elf_has_symtab(const struct hp_elf *f);
/* The section i, or NULL when out of range or its bytes lie outside the file. */
const ElfW(Shdr) *hp_elf_section(const struct hp_elf *f, size_t i);
/* The file bytes of the loaded range [vaddr, vaddr+len) (link-time addresses), NULL when not
 * all in the file (bss, or out of any PT_LOAD). */
const uint8_t *hp_elf_bytes_at(const struct hp_elf *f, uint64_t vaddr, size_t len);

/* One defined symbol of .symtab or .dynsym. */
struct hp_elf_symbol {
    const ElfW(Sym) *sym;
    const char *name;                /* without any @VERSION */
    size_t name_len;
    const char *version;             /* "" when unversioned */
    size_t version_len;
    bool hidden;                     /* a non-default version (NAME@V rather than NAME@@V) */
    bool dynamic;                    /* from .dynsym */
};
/* Visits every defined symbol (any type but STT_TLS) of .symtab and .dynsym until visit
 * returns true. */
void hp_elf_each_symbol(const struct hp_elf *f,
                        bool (*visit)(const struct hp_elf_symbol *s, void *ctx), void *ctx);
/* The same, thread-locals (STT_TLS, whose st_value is no address) included: for a search that
 * must name them to refuse them. */
void hp_elf_each_symbol_with_tls(const struct hp_elf *f,
                                 bool (*visit)(const struct hp_elf_symbol *s, void *ctx),
                                 void *ctx);

/* ---- the loaded objects (dl_iterate_phdr; takes the loader's lock) ---------------------------- */

#define HP_MAX_PHDRS 24

/* One object as the loader reports it. */
struct hp_loaded_object {
    char path[512];                  /* file to read ("/proc/self/exe" for the executable) */
    char shown[512];                 /* how messages name it: its file name */
    uintptr_t base;                  /* dlpi_addr */
    /* A copy of its program headers, taken under the loader's lock: the loader's own lie in
     * the object's mapping, which the program may unmap (dlclose) the moment the lock is
     * released. An object with more than HP_MAX_PHDRS has phnum 0 (it matches no file). */
    ElfW(Phdr) phdr[HP_MAX_PHDRS];
    ElfW(Half) phnum;
    bool is_main;
};

/* Calls visit for every loaded object until it returns true. */
void hp_each_loaded_object(bool (*visit)(const struct hp_loaded_object *o, void *ctx),
                           void *ctx);
/* The loaded object whose PT_LOAD segments hold addr; false when none does. */
bool hp_loaded_object_at(uintptr_t addr, struct hp_loaded_object *out);
/* True when a PT_LOAD segment of o holds addr. */
bool hp_loaded_object_contains(const struct hp_loaded_object *o, uintptr_t addr);

#endif /* HOTPATCH_ELF_H */
