/*
 * refscan.c — before a library is unmapped: does any word of the process's writable memory
 * still point into its code?
 *
 * The registers and live stack frames of every thread are checked by the thread stop
 * (stop.c). That misses code addresses kept elsewhere: a ucontext coroutine suspended inside
 * the library (its stack is a heap or mmap block that no thread is running on), a thread
 * interrupted on an alternate signal stack, a callback or a TSD destructor stored in the heap or
 * in another object's data. Any of them would jump into unmapped memory later. So, with every
 * other thread stopped (the memory cannot change under the scan), every readable and writable
 * mapping is read through process_vm_readv — a page that vanished is an error code, never a
 * fault — and each aligned 8-byte word is compared with the library's executable ranges. The
 * C library mangles the code pointers it keeps for atexit handlers and in jmp_bufs (XOR with
 * the thread's pointer guard, then a rotation), so each word is also compared demangled.
 *
 * What is not scanned, and why:
 *   - the library's own mappings (it may point into itself);
 *   - below the stack pointer of a thread whose stack it is (dead frames; the 128-byte red
 *     zone of a stopped thread is scanned);
 *   - the scanning thread's own stack: it runs hotpatch's code, whose frames hold the very
 *     ranges being checked (the agent's thread is checked with the others by the thread stop);
 *   - device mappings (/dev/..., other than /dev/shm and /dev/zero): reading them may have
 *     effects on the device;
 *   - the thread stop's own memory (hp_threads_owned_ranges): its copies of the registers of
 *     the threads it stopped;
 *   - in a sanitizer build, nothing at all: the runtime records the return addresses of
 *     every allocation's stack in its own memory (and reserves terabytes of shadow), so a
 *     conservative scan there would refuse every unload. Sanitizer builds test everything
 *     else; the scan itself is tested by the production build.
 * Only code addresses count: the loader's own records point into the library's headers and
 * data until dlclose clears them, and are no hazard.
 *
 * Bounds (documented in docs/protocol.md, `lib unload`): at most SCAN_MAX_BYTES of memory and
 * SCAN_MAX_NS of time; past either the scan stops and the caller refuses, saying which. The
 * threads stay stopped for the whole scan, so the bound is also the longest pause it causes.
 *
 * Runs while other threads are stopped: only raw system calls (arch/x86_64_syscall.h) and this
 * file's own parsing, one static buffer, no malloc.
 * Engine lock.
 */
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "maps.h"
#include "arch/x86_64_syscall.h"

#define SCAN_MAX_BYTES ((unsigned long long)HP_SCAN_MAX_MIB << 20)
#define SCAN_MAX_NS ((long long)HP_SCAN_MAX_MS * 1000000ll)
#define CHUNK (64 * 1024)

/* The scan's read buffer; engine lock. (Static: no malloc while threads are stopped.) */
static uintptr_t chunk[CHUNK / sizeof(uintptr_t)];

struct map_line {
    uintptr_t start, end;
    bool readable, writable, executable;
    const char *path;                   /* "" for anonymous; not NUL-terminated: ends at '\n' */
};

HP_STOPPED_WINDOW static long long monotonic_ns(void)
{
    struct timespec ts;
    hp_sys2(SYS_clock_gettime, CLOCK_MONOTONIC, (long)&ts);
    return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

HP_STOPPED_WINDOW static const char *parse_hex(const char *p, uintptr_t *out)
{
    uintptr_t v = 0;
    for (;; p++) {
        unsigned d = (*p >= '0' && *p <= '9') ? (unsigned)(*p - '0')
                   : (*p >= 'a' && *p <= 'f') ? (unsigned)(*p - 'a' + 10) : 16;
        if (d == 16)
            break;
        v = v * 16 + d;
    }
    *out = v;
    return p;
}

HP_STOPPED_WINDOW static const char *skip_field(const char *p)
{
    while (*p && *p != ' ' && *p != '\n')
        p++;
    while (*p == ' ')
        p++;
    return p;
}

/* Parses one line of /proc/self/maps; returns the next line, or NULL at the end. */
HP_STOPPED_WINDOW static const char *parse_line(const char *p, struct map_line *m)
{
    if (!*p)
        return NULL;
    p = parse_hex(p, &m->start);
    p = parse_hex(p + 1, &m->end);
    p++;
    m->readable = p[0] == 'r';
    m->writable = p[1] == 'w';
    m->executable = p[2] == 'x';
    for (int field = 0; field < 4; field++)   /* perms, offset, dev, inode */
        p = skip_field(p);
    m->path = p;
    while (*p && *p != '\n')
        p++;
    return *p ? p + 1 : p;
}

HP_STOPPED_WINDOW static bool path_starts(const char *path, const char *prefix)
{
    for (; *prefix; path++, prefix++)
        if (*path != *prefix)
            return false;
    return true;
}

HP_STOPPED_WINDOW static bool is_device(const char *path)
{
    return path_starts(path, "/dev/") && !path_starts(path, "/dev/shm/") &&
           !path_starts(path, "/dev/zero");
}

HP_STOPPED_WINDOW static bool in_ranges(uintptr_t a, const struct hp_range *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a >= r[i].start && a < r[i].end)
            return true;
    return false;
}

HP_STOPPED_WINDOW static bool overlaps_ranges(uintptr_t lo, uintptr_t hi, const struct hp_range *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lo < r[i].end && hi > r[i].start)
            return true;
    return false;
}

/* The C library's pointer guard (glibc: tcbhead_t.pointer_guard at %fs:0x30). */
HP_STOPPED_WINDOW static uintptr_t pointer_guard(void)
{
    uintptr_t guard;
    __asm__("mov %%fs:0x30, %0" : "=r"(guard));
    return guard;
}

HP_STOPPED_WINDOW static uintptr_t demangle(uintptr_t w, uintptr_t guard)
{
    w = (w >> 0x11) | (w << (64 - 0x11));
    return w ^ guard;
}

struct scan {
    const struct hp_range *owned;        /* the engine's own memory */
    size_t n_owned;
    const struct hp_range *code;         /* the library's executable ranges */
    size_t n_code;
    const struct hp_range *all;          /* every range of the library */
    size_t n_all;
    uintptr_t guard;
    unsigned long long bytes;
    long long deadline;
    struct hp_reference *found;
};

/* The lowest address to scan in [m->start, m->end): above the stack pointer of a thread whose
 * stack this is (red zone included), else the start. */
HP_STOPPED_WINDOW static uintptr_t live_start(const struct map_line *m, const struct hp_stopped *s)
{
    uintptr_t from = m->start;
    for (size_t i = 0; i < s->count; i++) {
        uintptr_t sp = s->threads[i].sp;
        if (sp >= m->start && sp < m->end && !s->threads[i].on_altstack)
            from = sp >= m->start + 128 ? sp - 128 : m->start;
    }
    return from & ~(uintptr_t)7;
}

/* 1 found, 0 clean, -1 bound reached. */
HP_STOPPED_WINDOW static int scan_range(struct scan *sc, uintptr_t from, uintptr_t to)
{
    while (from < to) {
        size_t len = to - from < CHUNK ? to - from : CHUNK;
        struct iovec local = {chunk, len}, remote = {(void *)from, len};
        long got = hp_sys6(SYS_process_vm_readv, hp_sys0(SYS_getpid), (long)&local, 1,
                           (long)&remote, 1, 0);
        if (got <= 0)
            return 0;                    /* vanished or unreadable: nothing there to run */
        size_t words = (size_t)got / sizeof(uintptr_t);
        for (size_t i = 0; i < words; i++) {
            uintptr_t w = chunk[i];
            bool raw = in_ranges(w, sc->code, sc->n_code);
            if (raw || in_ranges(demangle(w, sc->guard), sc->code, sc->n_code)) {
                sc->found->at = from + i * sizeof(uintptr_t);
                sc->found->value = raw ? w : demangle(w, sc->guard);
                sc->found->mangled = !raw;
                return 1;
            }
        }
        sc->bytes += (unsigned long long)got;
        from += (uintptr_t)got;
        if (sc->bytes > SCAN_MAX_BYTES || monotonic_ns() > sc->deadline)
            return -1;
    }
    return 0;
}

HP_STOPPED_WINDOW static bool worth_scanning(const struct map_line *m, const struct scan *sc,
                                             uintptr_t own_sp)
{
    bool own_stack = own_sp >= m->start && own_sp < m->end;
    return m->readable && m->writable && !own_stack && !is_device(m->path) &&
           !overlaps_ranges(m->start, m->end, sc->all, sc->n_all) &&
           !overlaps_ranges(m->start, m->end, sc->owned, sc->n_owned);
}

HP_STOPPED_WINDOW int hp_scan_references(const struct hp_stopped *stopped,
                                          const struct hp_range *ranges, size_t n_ranges,
                                          struct hp_reference *found)
{
    found->at = found->value = 0;
    found->mangled = false;
    found->scanned = 0;
    found->unreadable_maps = false;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    (void)stopped, (void)ranges, (void)n_ranges;
    return 0;      /* see the top of the file: the runtime's own records would refuse all */
#endif
    const char *maps = hp_maps_text();
    if (!maps) {
        found->unreadable_maps = true;
        return -1;
    }
    struct hp_range owned[16];
    size_t n_owned = hp_threads_owned_ranges(owned, 16);
    /* The library's executable ranges: the code that must not be reachable. */
    struct hp_range code[32];
    size_t n_code = 0;
    struct map_line m;
    for (const char *p = maps; (p = parse_line(p, &m)) != NULL;)
        if (m.executable && n_code < 32 && overlaps_ranges(m.start, m.end, ranges, n_ranges))
            code[n_code++] = (struct hp_range){m.start, m.end};
    struct scan sc = {owned, n_owned, code, n_code, ranges, n_ranges, pointer_guard(), 0,
                      monotonic_ns() + SCAN_MAX_NS, found};
    uintptr_t own_sp = (uintptr_t)__builtin_frame_address(0);
    for (const char *p = maps; (p = parse_line(p, &m)) != NULL;) {
        if (!worth_scanning(&m, &sc, own_sp))
            continue;
        int rc = scan_range(&sc, live_start(&m, stopped), m.end);
        if (rc != 0) {
            found->scanned = sc.bytes;
            return rc;
        }
    }
    found->scanned = sc.bytes;
    return 0;
}
