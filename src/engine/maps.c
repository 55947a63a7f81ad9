/*
 * maps.c — /proc/self/maps, read without malloc.
 *
 * The engine asks where code and stacks are while other threads are parked, and a parked thread
 * may hold the allocator's lock, so the text is read into one static buffer with plain
 * system-call wrappers and parsed in place. The buffer is owned by the engine lock: every
 * caller holds it. A map larger than the buffer is treated as unreadable rather than cut.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "maps.h"

/* The last text read; owned by the engine lock. */
static char maps_text[1 << 20];

/* The line of text whose range holds addr: its bounds and its "rwxp" field; false when none. */
static bool find_line(const char *text, uintptr_t addr, uintptr_t *lo, uintptr_t *hi,
                      const char **perms)
{
    for (const char *line = text; *line;) {
        char *end;
        *lo = strtoull(line, &end, 16);
        *hi = strtoull(end + 1, &end, 16);
        if (addr >= *lo && addr < *hi) {
            *perms = end + 1;
            return true;
        }
        const char *next = strchr(line, '\n');
        if (!next)
            break;
        line = next + 1;
    }
    return false;
}

bool hp_maps_find(const char *text, uintptr_t addr, struct hp_mapping *out)
{
    const char *perms;
    if (!find_line(text, addr, &out->start, &out->end, &perms))
        return false;
    out->readable = perms[0] == 'r';
    return true;
}

static bool read_maps(void)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    size_t used = 0;
    ssize_t n;
    while (used < sizeof maps_text - 1 &&
           (n = read(fd, maps_text + used, sizeof maps_text - 1 - used)) > 0)
        used += (size_t)n;
    close(fd);
    maps_text[used] = '\0';
    return used > 0 && used < sizeof maps_text - 1;
}

int hp_maps_protection(uintptr_t addr)
{
    uintptr_t lo, hi;
    const char *perms;
    if (!read_maps() || !find_line(maps_text, addr, &lo, &hi, &perms))
        return -1;
    return (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
           (perms[2] == 'x' ? PROT_EXEC : 0);
}

const char *hp_maps_text(void)
{
    return read_maps() ? maps_text : NULL;
}
