/*
 * maps.c — /proc/self/maps, read without malloc and without the C library, of any size.
 *
 * The engine asks where code and stacks are while other threads are parked. A parked thread
 * may hold the allocator's lock, and the program may have patched `open` or `read` itself, so
 * everything here uses raw system calls (arch/x86_64_syscall.h) and parses the text with its
 * own few loops (no strtoull, no strchr): every function lives in the stopped window's section.
 *
 * Two ways to read, neither with a size limit (a server with tens of thousands of mappings has
 * a map of several MiB; a fixed 1 MiB buffer once made every function "not mapped"):
 *   - streaming (hp_maps_each, hp_maps_lookup, hp_maps_protection): the file is read in chunks
 *     into a buffer on the caller's stack and parsed line by line; no shared state, so these
 *     are reentrant and need no lock;
 *   - whole text (hp_maps_text), for callers that walk the lines themselves: one buffer mapped
 *     with mmap (a system call, not the allocator) and doubled and re-read whenever the map
 *     does not fit. The buffer is owned by the engine lock.
 * A line longer than the chunk buffer (a path of thousands of bytes) is parsed from its start,
 * where all the fields but the path are, and the rest of it is skipped.
 */
#include <fcntl.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "engine.h"
#include "maps.h"
#include "arch/x86_64_syscall.h"

#define CHUNK 4096

/* ---- parsing, without the C library ------------------------------------------------------------ */

HP_STOPPED_WINDOW static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads a hex number at *p (up to end) and moves *p past it. */
HP_STOPPED_WINDOW static uint64_t parse_hex(const char **p, const char *end)
{
    uint64_t v = 0;
    int d;
    while (*p < end && (d = hex_digit(**p)) >= 0) {
        v = v << 4 | (uint64_t)d;
        (*p)++;
    }
    return v;
}

HP_STOPPED_WINDOW static uint64_t parse_dec(const char **p, const char *end)
{
    uint64_t v = 0;
    while (*p < end && **p >= '0' && **p <= '9') {
        v = v * 10 + (uint64_t)(**p - '0');
        (*p)++;
    }
    return v;
}

HP_STOPPED_WINDOW static void skip_char(const char **p, const char *end)
{
    if (*p < end)
        (*p)++;
}

/* "start-end perms offset major:minor inode path": every field but the path. */
HP_STOPPED_WINDOW static bool parse_line(const char *p, const char *end, struct hp_mapping *m)
{
    const char *first = p;
    m->start = (uintptr_t)parse_hex(&p, end);
    if (p == first || p >= end || *p != '-')
        return false;
    skip_char(&p, end);
    m->end = (uintptr_t)parse_hex(&p, end);
    skip_char(&p, end);
    if (end - p < 4)
        return false;
    m->readable = p[0] == 'r';
    m->prot = (p[0] == 'r' ? PROT_READ : 0) | (p[1] == 'w' ? PROT_WRITE : 0) |
              (p[2] == 'x' ? PROT_EXEC : 0);
    p += 4;
    skip_char(&p, end);
    m->offset = parse_hex(&p, end);
    skip_char(&p, end);
    m->dev_major = (unsigned)parse_hex(&p, end);
    skip_char(&p, end);
    m->dev_minor = (unsigned)parse_hex(&p, end);
    skip_char(&p, end);
    m->inode = parse_dec(&p, end);
    return true;
}

/* The first '\n' in [p, end), or end. */
HP_STOPPED_WINDOW static const char *line_end(const char *p, const char *end)
{
    while (p < end && *p != '\n')
        p++;
    return p;
}

/* ---- streaming ------------------------------------------------------------------------------------ */

/* A chunked reader of /proc/self/maps. The buffer lives on the caller's stack. */
struct reader {
    int fd;
    size_t have;               /* bytes in buf */
    size_t pos;                /* the next line starts here */
    bool skipping;             /* discarding the rest of an over-long line */
    bool eof, failed;
    char buf[CHUNK];
};

HP_STOPPED_WINDOW static int open_maps(void)
{
    long fd = hp_sys3(SYS_open, (long)"/proc/self/maps", O_RDONLY | O_CLOEXEC, 0);
    return fd < 0 ? -1 : (int)fd;
}

HP_STOPPED_WINDOW static void close_fd(int fd)
{
    hp_sys3(SYS_close, fd, 0, 0);
}

/* Moves the unparsed tail [from, have) to the front. A volatile copy: a compiler must not turn
 * it into a call to memmove. */
HP_STOPPED_WINDOW static void keep_tail(struct reader *r, size_t from)
{
    volatile char *dst = r->buf;
    for (size_t i = from; i < r->have; i++)
        *dst++ = r->buf[i];
    r->have -= from;
}

HP_STOPPED_WINDOW static void open_reader(struct reader *r)
{
    r->fd = open_maps();
    r->have = r->pos = 0;
    r->skipping = r->eof = false;
    r->failed = r->fd < 0;
}

/* Reads the next chunk after the unparsed tail. */
HP_STOPPED_WINDOW static void fill(struct reader *r)
{
    keep_tail(r, r->pos);
    r->pos = 0;
    for (;;) {
        long n = hp_sys3(SYS_read, r->fd, (long)(r->buf + r->have),
                         (long)(sizeof r->buf - r->have));
        if (n == -4 /* EINTR */)
            continue;
        if (n < 0)
            r->failed = true;
        else if (n == 0)
            r->eof = true;
        else
            r->have += (size_t)n;
        return;
    }
}

/*
 * The next mapping: 1 with *m filled, 0 at the end, -1 when the map cannot be read. A line
 * longer than the buffer is parsed from its start (where every field but the path is) and its
 * rest skipped. No callback, so that the stopped window makes no indirect call.
 */
HP_STOPPED_WINDOW static int next_mapping(struct reader *r, struct hp_mapping *m)
{
    while (!r->failed) {
        const char *p = r->buf + r->pos, *end = r->buf + r->have;
        const char *eol = p < end ? line_end(p, end) : end;
        bool whole = eol < end || (r->eof && p < end) ||
                     (r->pos == 0 && r->have == sizeof r->buf);
        if (!whole) {
            if (r->eof)
                return 0;
            fill(r);
            continue;
        }
        bool skip = r->skipping;
        r->skipping = eol == end && !r->eof;     /* cut by the buffer: skip its remainder */
        r->pos = eol < end ? (size_t)(eol + 1 - r->buf) : r->have;
        if (!skip && parse_line(p, eol, m))
            return 1;
    }
    return -1;
}

int hp_maps_each(int (*visit)(void *ctx, const struct hp_mapping *m), void *ctx)
{
    struct reader r;
    open_reader(&r);
    struct hp_mapping m;
    int rc = 0, got;
    while (rc == 0 && (got = next_mapping(&r, &m)) == 1)
        rc = visit(ctx, &m);
    if (rc == 0 && got < 0)
        rc = -1;
    if (r.fd >= 0)
        close_fd(r.fd);
    return rc;
}

HP_STOPPED_WINDOW bool hp_maps_lookup(uintptr_t addr, struct hp_mapping *out)
{
    struct reader r;
    open_reader(&r);
    struct hp_mapping m;
    bool found = false;
    while (!found && next_mapping(&r, &m) == 1) {
        if (m.start > addr)
            break;                               /* sorted by address: past it, unmapped */
        found = addr < m.end;
    }
    if (found)
        *out = m;
    if (r.fd >= 0)
        close_fd(r.fd);
    return found;
}

HP_STOPPED_WINDOW int hp_maps_protection(uintptr_t addr)
{
    struct hp_mapping m;
    return hp_maps_lookup(addr, &m) ? m.prot : -1;
}

/* ---- the whole text ---------------------------------------------------------------------------- */

/* The buffer hp_maps_text returns; engine lock. */
static char *text;
static size_t text_cap;

HP_STOPPED_WINDOW static bool grow_text(size_t cap)
{
    long mem = hp_sys6(SYS_mmap, 0, (long)cap, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem < 0 && mem > -4096)
        return false;
    if (text)
        hp_sys3(SYS_munmap, (long)text, (long)text_cap, 0);
    text = (char *)mem;
    text_cap = cap;
    return true;
}

/* Reads the whole map into text; 1 done, 0 it did not fit, -1 error. */
HP_STOPPED_WINDOW static int read_whole(void)
{
    int fd = open_maps();
    if (fd < 0)
        return -1;
    size_t used = 0;
    long n = 0;
    while (used < text_cap - 1) {
        n = hp_sys3(SYS_read, fd, (long)(text + used), (long)(text_cap - 1 - used));
        if (n == -4 /* EINTR */)
            continue;
        if (n <= 0)
            break;
        used += (size_t)n;
    }
    close_fd(fd);
    text[used] = '\0';
    if (n < 0 || used == 0)
        return -1;
    return used < text_cap - 1 ? 1 : 0;
}

HP_STOPPED_WINDOW const char *hp_maps_text(void)
{
    if (!text && !grow_text((size_t)1 << 16))
        return NULL;
    for (;;) {
        int rc = read_whole();
        if (rc > 0)
            return text;
        if (rc < 0 || text_cap >= ((size_t)1 << 34) || !grow_text(text_cap * 2))
            return NULL;
    }
}

HP_STOPPED_WINDOW bool hp_maps_find(const char *maps, uintptr_t addr, struct hp_mapping *out)
{
    const char *p = maps;
    while (*p) {
        const char *eol = p;
        while (*eol && *eol != '\n')
            eol++;
        if (parse_line(p, eol, out) && addr >= out->start && addr < out->end)
            return true;
        if (!*eol)
            break;
        p = eol + 1;
    }
    return false;
}
