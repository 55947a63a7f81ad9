/*
 * target_image.c — what the attach injector reads of the target's memory map and of the
 * objects mapped there: where libc, libdl, the dynamic loader and (after an earlier attach or
 * a preload) the agent library are, the executable (which may export an agent of its own), and
 * the run-time addresses of their dynamic symbols.
 *
 * Why from the mapped file and not from our own libc: the target may run another libc (a
 * container's, or an older build still mapped after an upgrade on disk). The file is opened
 * through /proc/PID/map_files/START-END, which is the very object mapped even when its path
 * was replaced or is in another mount namespace; /proc/PID/root/PATH is the fallback. Only the
 * section headers, .dynsym, its string table and .gnu.version are read; a symbol's default
 * version (no VERSYM_HIDDEN bit) is the one taken, as the dynamic linker would bind it.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inject.h"

#define MAPS_LINE 8192

/* The last path component. */
static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Which object a mapping's path belongs to, or NULL. */
static struct mapped_object *object_for(struct target_image *img, const char *path,
                                        const char *exe)
{
    const char *name = base_name(path);
    if (exe[0] && strcmp(path, exe) == 0)
        return &img->exe;
    if (starts_with(name, "libc.so.6") || (starts_with(name, "libc-2.") && strstr(name, ".so")))
        return &img->libc;
    if (starts_with(name, "ld-linux") || starts_with(name, "ld-2."))
        return &img->loader;
    if (starts_with(name, "libdl.so") || starts_with(name, "libdl-2."))
        return &img->libdl;
    if (starts_with(name, "libhotpatch_preload") || strstr(path, "memfd:hotpatch_preload"))
        return &img->preload;
    if (starts_with(name, "libhotpatch.so"))
        return &img->linked;
    return NULL;
}

static void note_mapping(struct mapped_object *o, const char *path, uintptr_t start,
                         uintptr_t end, unsigned long long offset, bool exec)
{
    if (!o->found) {
        if (offset != 0)
            return;                  /* an object starts with its offset-0 mapping */
        snprintf(o->path, sizeof o->path, "%s", path);
        o->start = start;
        o->first_end = end;
        o->found = true;
    } else if (strcmp(o->path, path) != 0) {
        return;                      /* a second copy: the first one counts */
    }
    if (end > o->end)
        o->end = end;
    if (exec && !o->text_start) {
        o->text_start = start;
        o->text_end = end;
    }
}

/* Whether the object mapped from `file` at start (its first mapping ends at end) defines
 * malloc in its dynamic symbols: then the program's malloc is its own (jemalloc, tcmalloc,
 * an LD_PRELOADed allocator), and glibc's pthread_create allocates with it. */
static bool exports_malloc(pid_t pid, const char *file, uintptr_t start, uintptr_t end)
{
    struct mapped_object o = {.start = start, .first_end = end, .end = end, .found = true};
    snprintf(o.path, sizeof o.path, "%s", file);
    return resolve_symbol(pid, &o, "malloc") != 0;
}

int read_target_image(pid_t pid, struct target_image *img, char *why)
{
    memset(img, 0, sizeof *img);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *f = fopen(path, "re");
    if (!f) {
        int err = errno;
        snprintf(why, WHY_CAP, "cannot read %s: %s", path, strerror(err));
        return -err;
    }
    char *line = malloc(MAPS_LINE);
    if (!line) {
        fclose(f);
        return -ENOMEM;
    }
    char exe[4096] = "", link[64];
    snprintf(link, sizeof link, "/proc/%d/exe", pid);
    ssize_t n = readlink(link, exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = 0;
    while (fgets(line, MAPS_LINE, f)) {
        unsigned long start, end;
        unsigned long long offset;
        char perms[8];
        int at = 0;
        if (sscanf(line, "%lx-%lx %7s %llx %*s %*s%n", &start, &end, perms, &offset, &at) < 4)
            continue;
        char *file = line + at;
        while (*file == ' ')
            file++;
        file[strcspn(file, "\n")] = 0;
        if (!*file)
            continue;
        struct mapped_object *o = object_for(img, file, exe);
        if (o)
            note_mapping(o, file, start, end, offset, perms[2] == 'x');
        if ((!o || o == &img->exe) && offset == 0 && file[0] == '/' && !img->own_malloc)
            img->own_malloc = exports_malloc(pid, file, start, end);
    }
    free(line);
    fclose(f);
    /* A preloaded agent serves even where the program links libhotpatch.so (it comes first in
     * symbol lookup): it is the one to restart. */
    img->agent_is_preload = img->preload.found;
    img->agent = img->preload.found ? img->preload : img->linked;
    return 0;
}

bool in_runtime_code(const struct target_image *img, uintptr_t pc)
{
    const struct mapped_object *objs[] = {&img->libc, &img->loader, &img->libdl};
    for (size_t i = 0; i < 3; i++)
        if (objs[i]->found && pc >= objs[i]->start && pc < objs[i]->end)
            return true;
    return false;
}

/* ---- symbols ------------------------------------------------------------------------------- */

static int open_mapped_file(pid_t pid, const struct mapped_object *o)
{
    char path[4200];
    snprintf(path, sizeof path, "/proc/%d/map_files/%lx-%lx", pid, (unsigned long)o->start,
             (unsigned long)o->first_end);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0)
        return fd;
    snprintf(path, sizeof path, "/proc/%d/root%s", pid, o->path);
    return open(path, O_RDONLY | O_CLOEXEC);
}

struct elf_view {
    const uint8_t *data;
    size_t size;
};

static const Elf64_Shdr *section(const struct elf_view *e, size_t i)
{
    const Elf64_Ehdr *h = (const Elf64_Ehdr *)e->data;
    size_t at = h->e_shoff + i * sizeof(Elf64_Shdr);
    if (i >= h->e_shnum || at + sizeof(Elf64_Shdr) > e->size)
        return NULL;
    return (const Elf64_Shdr *)(e->data + at);
}

static bool fits(const struct elf_view *e, const Elf64_Shdr *s)
{
    return s && s->sh_offset <= e->size && s->sh_size <= e->size - s->sh_offset;
}

/* The lowest PT_LOAD address, page-aligned down: the load bias is start - this. */
static uintptr_t first_load_vaddr(const struct elf_view *e)
{
    const Elf64_Ehdr *h = (const Elf64_Ehdr *)e->data;
    uintptr_t low = UINTPTR_MAX;
    for (size_t i = 0; i < h->e_phnum; i++) {
        size_t at = h->e_phoff + i * sizeof(Elf64_Phdr);
        if (at + sizeof(Elf64_Phdr) > e->size)
            break;
        const Elf64_Phdr *p = (const Elf64_Phdr *)(e->data + at);
        if (p->p_type == PT_LOAD && p->p_vaddr < low)
            low = p->p_vaddr;
    }
    return low == UINTPTR_MAX ? 0 : low & ~(uintptr_t)0xfff;
}

static uintptr_t find_dynsym(const struct elf_view *e, const char *name)
{
    const Elf64_Ehdr *h = (const Elf64_Ehdr *)e->data;
    const Elf64_Shdr *dynsym = NULL, *versym = NULL;
    for (size_t i = 0; i < h->e_shnum; i++) {
        const Elf64_Shdr *s = section(e, i);
        if (s && s->sh_type == SHT_DYNSYM)
            dynsym = s;
        if (s && s->sh_type == SHT_GNU_versym)
            versym = s;
    }
    if (!fits(e, dynsym) || dynsym->sh_entsize != sizeof(Elf64_Sym))
        return 0;
    const Elf64_Shdr *strtab = section(e, dynsym->sh_link);
    if (!fits(e, strtab))
        return 0;
    if (!fits(e, versym))
        versym = NULL;
    const Elf64_Sym *syms = (const Elf64_Sym *)(e->data + dynsym->sh_offset);
    const char *strs = (const char *)(e->data + strtab->sh_offset);
    size_t n = dynsym->sh_size / sizeof(Elf64_Sym);
    uintptr_t fallback = 0;
    for (size_t i = 0; i < n; i++) {
        const Elf64_Sym *s = &syms[i];
        if (s->st_shndx == SHN_UNDEF || s->st_name >= strtab->sh_size ||
            (ELF64_ST_TYPE(s->st_info) != STT_FUNC && ELF64_ST_TYPE(s->st_info) != STT_GNU_IFUNC))
            continue;
        const char *sname = strs + s->st_name;
        if (strnlen(sname, strtab->sh_size - s->st_name) == strtab->sh_size - s->st_name ||
            strcmp(sname, name) != 0)
            continue;
        if (ELF64_ST_TYPE(s->st_info) == STT_GNU_IFUNC)
            continue;                /* a resolver, not the function: never needed here */
        bool hidden = versym && i * 2 + 2 <= versym->sh_size &&
                      (((const uint16_t *)(e->data + versym->sh_offset))[i] & 0x8000);
        if (!hidden)
            return s->st_value;
        fallback = s->st_value;
    }
    return fallback;
}

uintptr_t resolve_symbol(pid_t pid, const struct mapped_object *o, const char *name)
{
    if (!o->found)
        return 0;
    int fd = open_mapped_file(pid, o);
    if (fd < 0)
        return 0;
    struct stat st;
    uintptr_t addr = 0;
    if (fstat(fd, &st) == 0 && st.st_size >= (off_t)sizeof(Elf64_Ehdr)) {
        void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map != MAP_FAILED) {
            struct elf_view e = {map, (size_t)st.st_size};
            const Elf64_Ehdr *h = map;
            if (memcmp(h->e_ident, ELFMAG, SELFMAG) == 0 && h->e_ident[EI_CLASS] == ELFCLASS64) {
                uintptr_t value = find_dynsym(&e, name);
                if (value)
                    addr = o->start - first_load_vaddr(&e) + value;
            }
            munmap(map, (size_t)st.st_size);
        }
    }
    close(fd);
    return addr;
}
