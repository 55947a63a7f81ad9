/*
 * maps.c — /proc/self/maps, read without malloc or libc.
 *
 * The engine asks where code and stacks are while other threads are stopped, and a stopped
 * thread may hold the allocator's lock or be inside a libc function that a patch replaced, so
 * everything here is HP_STOPPED_WINDOW code with raw system calls. The text is read into an
 * mmap'ed buffer that doubles until the whole map fits (a process with 10,000 threads has a
 * map of several MiB; a map is never cut, and never "not mapped" for being large).
 *
 * hp_maps_protection asks the kernel about one address with the PROCMAP_QUERY ioctl of
 * /proc/self/maps (Linux 6.11) when it has it: its cost does not grow with the map. Older
 * kernels get the text, parsed in place.
 *
 * The buffer is owned by the engine lock: every caller holds it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "maps.h"
#include "stopped_window.h"
#include "arch/x86_64_syscall.h"

/* The last text read; owned by the engine lock. */
static char *maps_text;
static size_t maps_cap;
static bool query_unsupported;

/* The kernel's struct procmap_query (include/uapi/linux/fs.h, Linux 6.11). */
struct procmap_query {
    uint64_t size, query_flags, query_addr, vma_start, vma_end, vma_flags, vma_page_size,
        vma_offset, inode;
    uint32_t dev_major, dev_minor, vma_name_size, build_id_size;
    uint64_t vma_name_addr, build_id_addr;
};
#define HP_PROCMAP_QUERY _IOWR('f', 17, struct procmap_query)
#define HP_VMA_READABLE 0x01
#define HP_VMA_WRITABLE 0x02
#define HP_VMA_EXECUTABLE 0x04

HP_STOPPED_WINDOW static uintptr_t parse_hex(const char **p)
{
    uintptr_t v = 0;
    for (;; (*p)++) {
        char c = **p;
        if (c >= '0' && c <= '9')
            v = v << 4 | (uintptr_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v = v << 4 | (uintptr_t)(c - 'a' + 10);
        else
            return v;
    }
}

/* The line of text whose range holds addr: its bounds and its "rwxp" field; false when none. */
HP_STOPPED_WINDOW static bool find_line(const char *text, uintptr_t addr, uintptr_t *lo,
                                        uintptr_t *hi, const char **perms)
{
    for (const char *line = text; *line;) {
        const char *p = line;
        *lo = parse_hex(&p);
        if (*p == '-')
            p++;
        *hi = parse_hex(&p);
        if (addr >= *lo && addr < *hi) {
            *perms = *p == ' ' ? p + 1 : p;
            return true;
        }
        while (*p && *p != '\n')
            p++;
        if (!*p)
            break;
        line = p + 1;
    }
    return false;
}

HP_STOPPED_WINDOW bool hp_maps_find(const char *text, uintptr_t addr, struct hp_mapping *out)
{
    const char *perms;
    if (!find_line(text, addr, &out->start, &out->end, &perms))
        return false;
    out->readable = perms[0] == 'r';
    return true;
}

/* Reads the whole of /proc/self/maps; false when it cannot. */
HP_STOPPED_WINDOW static bool read_maps(void)
{
    if (!maps_text) {
        long p = hp_sys6(SYS_mmap, 0, 1 << 20, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (hp_sys_failed(p))
            return false;
        maps_text = (char *)p;
        maps_cap = 1 << 20;
    }
    for (;;) {
        long fd = hp_sys4(SYS_openat, AT_FDCWD, (long)"/proc/self/maps", O_RDONLY | O_CLOEXEC, 0);
        if (hp_sys_failed(fd))
            return false;
        size_t used = 0;
        long n = 0;
        while (used + 1 < maps_cap) {
            n = hp_sys3(SYS_read, fd, (long)(maps_text + used), (long)(maps_cap - 1 - used));
            if (n == -EINTR)
                continue;
            if (n <= 0)
                break;
            used += (size_t)n;
        }
        hp_sys1(SYS_close, fd);
        if (n < 0)
            return false;
        maps_text[used] = '\0';
        if (used + 1 < maps_cap)
            return used > 0;
        /* It did not fit: a larger buffer, and read it again from the start. */
        long p = hp_sys4(SYS_mremap, (long)maps_text, (long)maps_cap, (long)(2 * maps_cap),
                         MREMAP_MAYMOVE);
        if (hp_sys_failed(p))
            return false;
        maps_text = (char *)p;
        maps_cap *= 2;
    }
}

/* PROCMAP_QUERY: 1 with *prot, 0 when addr is not mapped, -1 when the kernel cannot say. */
HP_STOPPED_WINDOW static int query_protection(uintptr_t addr, int *prot)
{
    if (query_unsupported)
        return -1;
    long fd = hp_sys4(SYS_openat, AT_FDCWD, (long)"/proc/self/maps", O_RDONLY | O_CLOEXEC, 0);
    if (hp_sys_failed(fd))
        return -1;
    struct procmap_query q;
    hp_raw_fill(&q, 0, sizeof q);
    q.size = sizeof q;
    q.query_addr = addr;
    long rc = hp_sys3(SYS_ioctl, fd, (long)HP_PROCMAP_QUERY, (long)&q);
    hp_sys1(SYS_close, fd);
    if (rc == -ENOENT)
        return 0;
    if (rc != 0) {
        query_unsupported = rc == -ENOTTY || rc == -EINVAL;
        return -1;
    }
    if (addr < q.vma_start)
        return 0;
    *prot = (q.vma_flags & HP_VMA_READABLE ? PROT_READ : 0) |
            (q.vma_flags & HP_VMA_WRITABLE ? PROT_WRITE : 0) |
            (q.vma_flags & HP_VMA_EXECUTABLE ? PROT_EXEC : 0);
    return 1;
}

HP_STOPPED_WINDOW int hp_maps_protection(uintptr_t addr)
{
    int prot = 0;
    int found = query_protection(addr, &prot);
    if (found >= 0)
        return found ? prot : -1;
    uintptr_t lo, hi;
    const char *perms;
    if (!read_maps() || !find_line(maps_text, addr, &lo, &hi, &perms))
        return -1;
    return (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
           (perms[2] == 'x' ? PROT_EXEC : 0);
}

HP_STOPPED_WINDOW const char *hp_maps_text(void)
{
    return read_maps() ? maps_text : NULL;
}
