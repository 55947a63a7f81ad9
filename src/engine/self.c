/*
 * self.c — where hotpatch's own code is, so that the engine never patches itself.
 *
 * A jump written into the code that stops threads, writes code or serves the socket would make
 * every later patch impossible, or worse; a replacement inside it would run hotpatch's code
 * where the program expects its own. So every target and every replacement is checked against
 * hotpatch's code, wherever it was linked:
 *   - in a program linked with libhotpatch.a, hotpatch's code sits inside the executable. The
 *     build moves it into sections of its own (cmake/own_code_section.sh and HP_STOPPED_WINDOW),
 *     and the linker publishes their bounds as __start_/__stop_ symbols;
 *   - libhotpatch.so, the preload agent and the gflags bridge are whole objects of hotpatch's:
 *     the object this code lives in, and every loaded object whose file name starts with
 *     "libhotpatch", are refused entirely (a name is enough here: refusing is always safe).
 *
 * No state; engine lock (dl_iterate_phdr takes the loader's lock, so never with threads
 * stopped).
 */
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <string.h>

#include "engine.h"

/* Bounds of hotpatch's code sections in the object this file is linked into (weak: a build
 * without them has none, and the whole-object rule still applies to shared objects). */
extern const char __start_hotpatch_text[] __attribute__((weak, visibility("hidden")));
extern const char __stop_hotpatch_text[] __attribute__((weak, visibility("hidden")));
extern const char __start_hotpatch_stopped[] __attribute__((weak, visibility("hidden")));
extern const char __stop_hotpatch_stopped[] __attribute__((weak, visibility("hidden")));

static bool within(const void *addr, const char *start, const char *stop)
{
    return start && stop && (const char *)addr >= start && (const char *)addr < stop;
}

struct object_query {
    uintptr_t addr;
    uintptr_t own_base;          /* load base of the object this file is in */
    bool own_is_main;
    bool found;
    char name[256];
};

static bool object_holds(const struct dl_phdr_info *info, uintptr_t addr)
{
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && addr >= lo && addr < lo + ph->p_memsz)
            return true;
    }
    return false;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static int visit_object(struct dl_phdr_info *info, size_t size, void *ctx)
{
    (void)size;
    struct object_query *q = ctx;
    if (!object_holds(info, q->addr))
        return 0;
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    bool ours = strncmp(base_name(name), "libhotpatch", 11) == 0 ||
                (!q->own_is_main && info->dlpi_addr == q->own_base);
    if (ours) {
        q->found = true;
        snprintf(q->name, sizeof q->name, "%s", *name ? base_name(name) : "the program");
    }
    return 1;
}

bool hp_engine_owns(const void *addr, char *what, size_t what_cap)
{
    if (within(addr, __start_hotpatch_text, __stop_hotpatch_text) ||
        within(addr, __start_hotpatch_stopped, __stop_hotpatch_stopped)) {
        snprintf(what, what_cap, "hotpatch's own code");
        return true;
    }
    Dl_info self;
    struct link_map *map = NULL;
    struct object_query q = {(uintptr_t)addr, 0, true, false, ""};
    if (dladdr1((void *)hp_engine_owns, &self, (void **)&map, RTLD_DL_LINKMAP) && map) {
        q.own_base = map->l_addr;
        q.own_is_main = !map->l_name || map->l_name[0] == '\0';
    }
    dl_iterate_phdr(visit_object, &q);
    if (q.found)
        snprintf(what, what_cap, "hotpatch's own code (%s)", q.name);
    return q.found;
}
