/*
 * stop.c — stopping every other thread of the process for a moment, to prove where they are.
 *
 * The engine needs this around every code write (no thread may run while bytes change, nor be
 * paused between two of the instructions being overwritten), and before a library is unmapped
 * (no thread may still run in it or return into it). The promise is that the program cannot
 * tell a stop happened: no EINTR, no early return from a sleep, no signal lost or added, no
 * mask or disposition changed, no thread frozen beyond the write itself.
 *
 * Two methods, chosen per stop (hp_threads_stop_method() says which one is in use):
 *
 * 1. ptrace from a helper (ptrace_stop.c), the primary stop. The helper is a separate thread
 *    group sharing our memory, made with a raw clone(CLONE_VM | CLONE_FS | CLONE_FILES |
 *    CLONE_UNTRACED) and no exit signal:
 *    - not fork(): no at-fork handler of the program runs, nothing is copied, the helper sees
 *      the threads' stacks and our arrays directly; no exit signal, so the program gets no
 *      SIGCHLD and its plain waitpid() never reaps it (we reap it with __WCLONE);
 *    - a separate thread group, because ptrace refuses to attach to one's own group;
 *    - it PTRACE_SEIZEs and PTRACE_INTERRUPTs every thread of /proc/PID/task but the caller,
 *      then lists the directory again until a listing finds no thread it does not hold while
 *      every thread it holds is stopped (no stopped thread can create another, so that listing
 *      is final); each listing is linear in the number of threads (a hash of the tids);
 *    - a stop by PTRACE_INTERRUPT needs no signal: a thread that blocks every signal stops as
 *      well, nothing is queued, no handler of ours exists, no mask or disposition changes;
 *    - the registers come from PTRACE_GETREGSET: the real ones, with no signal frame to read
 *      (so a thread running a handler on an alternate stack is seen as it is);
 *    - system calls: the interrupt makes a blocked call return to user mode. The kernel itself
 *      restarts, when no handler runs, every call that ended with -ERESTARTSYS, -ERESTARTNOINTR,
 *      -ERESTARTNOHAND or -ERESTART_RESTARTBLOCK (read, futex, accept, wait4, poll, select,
 *      pause, nanosleep and clock_nanosleep with their remaining time...), exactly as after
 *      SIGSTOP/SIGCONT. What it does not restart is what returns -EINTR itself after any stop
 *      (signal(7), "Interruption of system calls ... by stop signals"): epoll_wait/epoll_pwait
 *      (/2), semop/semtimedop, rt_sigtimedwait, io_getevents, and socket calls with
 *      SO_RCVTIMEO/SO_SNDTIMEO. For those the helper puts the kernel's -ERESTARTNOHAND in rax
 *      before it lets the thread go, and the kernel's restart code, which runs after the stop,
 *      decides: the call runs again (program counter back over the 2-byte `syscall`, rax =
 *      orig_rax) unless a handler runs first, in which case it fails with EINTR as the
 *      program's own signal would have made it, in the one thread that takes the signal
 *      (arch/x86_64_restart.c has the list and the details). Calls that are not safe to run
 *      twice (close, connect, io_uring_enter...) keep their EINTR. A restarted timed wait
 *      starts its timeout afresh: it can end later, never earlier;
 *    - a signal that arrives while the helper holds a thread is reported to the helper
 *      (signal-delivery-stop) and handed back, unchanged, when it lets the thread go: none is
 *      lost or added, and a group stop (SIGSTOP) stays in force;
 *    - the helper runs only code of the section hotpatch_stopped (raw system calls, no libc,
 *      no thread pointer: it shares the creating thread's TLS), blocks every signal and can
 *      dump no core. When the helper dies (killed, a seccomp filter) the kernel lets every
 *      thread it held go;
 *    - one helper serves a burst of stops: it sleeps on a futex between them and exits after a
 *      second without one (a new helper waited milliseconds for a CPU behind the program's
 *      busy threads; a woken one, with the 0.1 ms slice it asks for, preempts them). It is
 *      cloned through an intermediate that exits at once, so that init adopts it and reaps it:
 *      it is never a zombie among the program's children (in a process that is itself a child
 *      subreaper, which would adopt it and get SIGCHLD, it stays a direct child that exits
 *      after each stop and is reaped with __WCLONE). While it holds threads it checks every
 *      100 ms that the process is still there with the same memory (kill 0, kcmp), and a fork
 *      child never uses its parent's helper;
 *    - hp_threads_resume only tells the helper to let the threads go (those blocked in system
 *      calls first, running ones last); the next stop waits for it or, when it is still at it,
 *      hands it the next stop directly. Handing a call back costs one PTRACE_SETREGSET;
 *    - a thread that does not stop in time (vfork's parent waits unwakeably): the helper gives
 *      up at four fifths of the deadline, lets the stopped threads go with their calls handed
 *      back, and exits so that the kernel lets the still-seized ones go (PTRACE_DETACH needs a
 *      stop). Killing it at the deadline, the last resort, would leave the EINTRs in place;
 *    - waiting is per tid (wait4(tid, WNOHANG), yielding, then napping 50 us, up to the
 *      helper's deadline): wait4(-1) walks every tracee on each call. The closing
 *      listing is skipped when the kernel's thread count is the caller plus the threads held.
 *    When ptrace cannot work, the helper says why and the signal stop is used: Yama
 *    ptrace_scope 1 is met with prctl(PR_SET_PTRACER, helper) for the stop (Yama cannot tell
 *    us an exception the program set itself, which this replaces; Yama drops ours when the
 *    helper exits), scope 2 needs CAP_SYS_PTRACE, scope 3 never works; a process that is
 *    being debugged (TracerPid), that made itself undumpable, or whose LSM refuses, gets the
 *    signal stop. Under ThreadSanitizer the signal stop is used: a thread stopped anywhere may
 *    hold TSan's internal locks, which the engine's instrumented code takes while it writes.
 *
 * 2. The signal stop (signal_stop.c), repaired: a real-time signal that no thread blocks, no
 *    thread has pending and the program has no handler for, chosen by reading every thread's
 *    SigBlk/SigPnd before anyone is stopped; a thread that blocks every real-time signal makes
 *    the stop refused before any thread is stopped (no one is frozen for it). The handler parks
 *    the thread on a futex and records its interrupted context. What it cannot avoid: a handler
 *    runs, so calls that the kernel restarts only for SA_RESTART handlers or never (poll,
 *    select, nanosleep, sleep(), pause, epoll_wait, sigtimedwait, semop...) may return EINTR
 *    or early in the threads that were blocked in them; and a signalfd or sigwait that takes
 *    every signal sees our signal once.
 *
 * Failures: every failure is an error with a reason (out->why) and leaves no thread stopped.
 * A thread that does not stop within the timeout (uninterruptible sleep, a vfork parent)
 * fails the stop with its tid and state; the timeout is at least 0.2 ms per thread.
 *
 * What runs in the window: every function called between hp_threads_stop's return and
 * hp_threads_resume's is HP_STOPPED_WINDOW code (the scan and its callbacks, the code write,
 * the maps reader, the helper); the callers' own straight-line code around those calls (in
 * patch.c) calls nothing else. The vfork child of a thread blocked in vfork shares our memory
 * and is not stopped: it runs until it execs (posix_spawn's child code) and is assumed not to
 * run a function being patched.
 *
 * Memory: the per-thread arrays are mmap'ed and grow with mremap, so there is no thread limit
 * and nothing is allocated while a thread may hold malloc's lock. Everything that runs while
 * threads are stopped (the helper, the scan, the resume) is in the section hotpatch_stopped
 * (HP_STOPPED_WINDOW) and uses raw system calls (tests/stopped_window_check.py).
 *
 * State: the arrays, the chosen method and the reasons, owned by the engine lock (patch.c):
 * one stop at a time.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>

#include "base/base.h"
#include "engine.h"
#include "stop_internal.h"
#include "arch/arch.h"
#include "arch/x86_64_syscall.h"

/* ---- per-thread arrays ------------------------------------------------------------------- */

struct hp_stop_arrays hp_stop_arrays;

HP_STOPPED_WINDOW static void *grow_mapping(void *old, size_t old_size, size_t new_size)
{
    long p;
    if (old)
        p = hp_sys4(SYS_mremap, (long)old, (long)old_size, (long)new_size, MREMAP_MAYMOVE);
    else
        p = hp_sys6(SYS_mmap, 0, (long)new_size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return hp_sys_failed(p) ? NULL : (void *)p;
}

HP_STOPPED_WINDOW static size_t page_round(size_t n)
{
    return (n + 4095) & ~(size_t)4095;
}

HP_STOPPED_WINDOW static void set_insert(struct hp_tid_slot *set, size_t cap, pid_t tid,
                                         size_t index)
{
    size_t i = ((uint32_t)tid * 2654435761u) & (cap - 1);
    while (set[i].tid != 0 && set[i].tid != tid)
        i = (i + 1) & (cap - 1);
    set[i].tid = tid;
    set[i].index = (uint32_t)index;
}

HP_STOPPED_WINDOW bool hp_stop_reserve(size_t n)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    if (n <= a->cap)
        return true;
    size_t cap = a->cap ? a->cap : 256;
    while (cap < n)
        cap *= 2;
    void *states = grow_mapping(a->states, page_round(a->cap * sizeof *a->states),
                                page_round(cap * sizeof *a->states));
    if (!states)
        return false;
    a->states = states;
    void *traced = grow_mapping(a->traced, page_round(a->cap * sizeof *a->traced),
                                page_round(cap * sizeof *a->traced));
    if (!traced)
        return false;
    a->traced = traced;
    size_t set_cap = 4 * cap;
    struct hp_tid_slot *set = grow_mapping(NULL, 0, page_round(set_cap * sizeof *set));
    if (!set)
        return false;
    if (a->tid_set)
        hp_sys2(SYS_munmap, (long)a->tid_set, (long)page_round(a->set_cap * sizeof *set));
    for (size_t i = 0; i < a->count; i++)
        set_insert(set, set_cap, a->traced[i].tid, i);
    a->tid_set = set;
    a->set_cap = set_cap;
    a->cap = cap;
    return true;
}

HP_STOPPED_WINDOW bool hp_stop_set_add(pid_t tid, size_t index)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    size_t i = ((uint32_t)tid * 2654435761u) & (a->set_cap - 1);
    while (a->tid_set[i].tid != 0) {
        if (a->tid_set[i].tid == tid)
            return false;
        i = (i + 1) & (a->set_cap - 1);
    }
    a->tid_set[i].tid = tid;
    a->tid_set[i].index = (uint32_t)index;
    return true;
}

HP_STOPPED_WINDOW long hp_stop_index_of(pid_t tid)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    if (!a->tid_set)
        return -1;
    size_t i = ((uint32_t)tid * 2654435761u) & (a->set_cap - 1);
    while (a->tid_set[i].tid != 0) {
        if (a->tid_set[i].tid == tid)
            return a->tid_set[i].index;
        i = (i + 1) & (a->set_cap - 1);
    }
    return -1;
}

HP_STOPPED_WINDOW void hp_stop_clear(void)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    if (a->tid_set)
        hp_raw_fill(a->tid_set, 0, a->set_cap * sizeof *a->tid_set);
    a->count = 0;
}

/* ---- raw helpers ---------------------------------------------------------------------------- */

HP_STOPPED_WINDOW long long hp_stop_now_ns(void)
{
    struct timespec ts = {0, 0};
    hp_sys2(SYS_clock_gettime, CLOCK_MONOTONIC, (long)&ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

HP_STOPPED_WINDOW void hp_stop_sleep_ns(long ns)
{
    struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
    hp_sys2(SYS_nanosleep, (long)&ts, 0);
}

HP_STOPPED_WINDOW long hp_stop_read_file(const char *path, char *buf, size_t cap)
{
    long fd = hp_sys4(SYS_openat, AT_FDCWD, (long)path, O_RDONLY | O_CLOEXEC, 0);
    if (hp_sys_failed(fd))
        return fd;
    size_t used = 0;
    while (used + 1 < cap) {
        long n = hp_sys3(SYS_read, fd, (long)(buf + used), (long)(cap - 1 - used));
        if (n == -EINTR)
            continue;
        if (hp_sys_failed(n)) {
            hp_sys1(SYS_close, fd);
            return n;
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    hp_sys1(SYS_close, fd);
    buf[used] = '\0';
    return (long)used;
}

/* Start of the value after "\nNAME:" and its blanks, or NULL. */
HP_STOPPED_WINDOW static const char *status_field(const char *text, const char *name)
{
    for (const char *p = text; *p; p++) {
        if (p != text && p[-1] != '\n')
            continue;
        size_t i = 0;
        while (name[i] && p[i] == name[i])
            i++;
        if (name[i] || p[i] != ':')
            continue;
        p += i + 1;
        while (*p == ' ' || *p == '\t')
            p++;
        return p;
    }
    return NULL;
}

HP_STOPPED_WINDOW bool hp_stop_status_hex(const char *text, const char *name,
                                          unsigned long long *out)
{
    const char *p = status_field(text, name);
    if (!p)
        return false;
    unsigned long long v = 0;
    int digits = 0;
    for (;; p++, digits++) {
        int d;
        if (*p >= '0' && *p <= '9')
            d = *p - '0';
        else if (*p >= 'a' && *p <= 'f')
            d = *p - 'a' + 10;
        else if (*p >= 'A' && *p <= 'F')
            d = *p - 'A' + 10;
        else
            break;
        v = v << 4 | (unsigned)d;
    }
    *out = v;
    return digits > 0;
}

HP_STOPPED_WINDOW bool hp_stop_status_dec(const char *text, const char *name, long *out)
{
    const char *p = status_field(text, name);
    if (!p)
        return false;
    bool neg = *p == '-';
    p += neg;
    long v = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++)
        v = v * 10 + (*p - '0');
    *out = neg ? -v : v;
    return digits > 0;
}

HP_STOPPED_WINDOW void hp_stop_proc_path(char *buf, size_t cap, pid_t pid, pid_t tid,
                                         const char *leaf)
{
    if (tid)
        hp_stop_fmt(buf, cap, "/proc/%d/task/%d/%s", pid, tid, leaf);
    else
        hp_stop_fmt(buf, cap, "/proc/%d/%s", pid, leaf);
}

HP_STOPPED_WINDOW char hp_stop_task_state(pid_t pid, pid_t tid)
{
    char path[64], buf[512];
    hp_stop_proc_path(path, sizeof path, pid, tid, "stat");
    if (hp_stop_read_file(path, buf, sizeof buf) <= 0)
        return 0;
    /* "tid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'. */
    const char *close = NULL;
    for (const char *p = buf; *p; p++)
        if (*p == ')')
            close = p;
    return close && close[1] == ' ' ? close[2] : 0;
}

HP_STOPPED_WINDOW bool hp_stop_task_is_io_worker(pid_t pid, pid_t tid)
{
    char path[64], buf[512];
    hp_stop_proc_path(path, sizeof path, pid, tid, "stat");
    if (hp_stop_read_file(path, buf, sizeof buf) <= 0)
        return false;
    const char *p = NULL;
    for (const char *q = buf; *q; q++)
        if (*q == ')')
            p = q;
    if (!p)
        return false;
    /* ") S ppid pgrp session tty_nr tpgid flags": flags is the sixth field after the state. */
    int field = 0;
    for (p++; *p && field < 6; p++)
        if (*p == ' ')
            field++;
    unsigned long flags = 0;
    for (; *p >= '0' && *p <= '9'; p++)
        flags = flags * 10 + (unsigned long)(*p - '0');
    return flags & 0x10;   /* PF_IO_WORKER */
}

/* ---- a tiny formatter ------------------------------------------------------------------------ */

struct fmt_out {
    char *buf;
    size_t cap, used;
};

HP_STOPPED_WINDOW static void put_char(struct fmt_out *o, char c)
{
    if (o->used + 1 < o->cap)
        o->buf[o->used++] = c;
}

HP_STOPPED_WINDOW static void put_unsigned(struct fmt_out *o, unsigned long long v, unsigned base,
                                           bool alt)
{
    char digits[24];
    int n = 0;
    if (alt && base == 16) {
        put_char(o, '0');
        put_char(o, 'x');
    }
    do {
        unsigned d = (unsigned)(v % base);
        digits[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v);
    while (n)
        put_char(o, digits[--n]);
}

HP_STOPPED_WINDOW void hp_stop_vfmt(char *buf, size_t cap, const char *fmt, va_list ap)
{
    struct fmt_out o = {buf, cap, 0};
    if (cap == 0)
        return;
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put_char(&o, *p);
            continue;
        }
        p++;
        bool alt = false, lng = false, size = false;
        if (*p == '#')
            alt = true, p++;
        if (*p == 'l')
            lng = true, p++;
        if (*p == 'l')
            p++;
        if (*p == 'z')
            size = true, p++;
        switch (*p) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            for (s = s ? s : "(null)"; *s; s++)
                put_char(&o, *s);
            break;
        }
        case 'c':
            put_char(&o, (char)va_arg(ap, int));
            break;
        case 'd': {
            long long v = lng ? va_arg(ap, long) : va_arg(ap, int);
            if (v < 0) {
                put_char(&o, '-');
                put_unsigned(&o, (unsigned long long)-(v + 1) + 1, 10, false);
            } else {
                put_unsigned(&o, (unsigned long long)v, 10, false);
            }
            break;
        }
        case 'u':
        case 'x': {
            unsigned long long v = size  ? va_arg(ap, size_t)
                                   : lng ? va_arg(ap, unsigned long)
                                         : va_arg(ap, unsigned);
            put_unsigned(&o, v, *p == 'x' ? 16 : 10, alt);
            break;
        }
        case 'p': {
            void *ptr = va_arg(ap, void *);
            put_unsigned(&o, (uintptr_t)ptr, 16, true);
            break;
        }
        case '%':
            put_char(&o, '%');
            break;
        case '\0':
            p--;
            break;
        default:
            put_char(&o, '?');
        }
    }
    o.buf[o.used] = '\0';
}

HP_STOPPED_WINDOW void hp_stop_fmt(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    hp_stop_vfmt(buf, cap, fmt, ap);
    va_end(ap);
}

/* ---- listing the threads ---------------------------------------------------------------------- */

struct linux_dirent64 {
    unsigned long long d_ino;
    long long d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

HP_STOPPED_WINDOW int hp_stop_add_tid(pid_t tid)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    if (!hp_stop_reserve(a->count + 1))
        return -ENOMEM;
    if (!hp_stop_set_add(tid, a->count))
        return 0;
    hp_raw_fill(&a->states[a->count], 0, sizeof a->states[0]);
    hp_raw_fill(&a->traced[a->count], 0, sizeof a->traced[0]);
    a->states[a->count].tid = tid;
    a->traced[a->count].tid = tid;
    a->count++;
    return 1;
}

HP_STOPPED_WINDOW long hp_stop_list_new(pid_t pid, pid_t skip)
{
    char path[48];
    hp_stop_proc_path(path, sizeof path, pid, 0, "task");
    long fd = hp_sys4(SYS_openat, AT_FDCWD, (long)path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (hp_sys_failed(fd))
        return fd;
    long added = 0;
    char buf[8192] __attribute__((aligned(8)));
    for (;;) {
        long n = hp_sys3(SYS_getdents64, fd, (long)buf, sizeof buf);
        if (n == -EINTR)
            continue;
        if (hp_sys_failed(n)) {
            hp_sys1(SYS_close, fd);
            return n;
        }
        if (n == 0)
            break;
        for (long off = 0; off < n;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
            off += d->d_reclen;
            long tid = 0;
            const char *c = d->d_name;
            for (; *c >= '0' && *c <= '9'; c++)
                tid = tid * 10 + (*c - '0');
            if (*c || tid <= 0 || tid == skip)
                continue;
            int rc = hp_stop_add_tid((pid_t)tid);
            if (rc < 0) {
                hp_sys1(SYS_close, fd);
                return rc;
            }
            added += rc;
        }
    }
    hp_sys1(SYS_close, fd);
    return added;
}

/* ---- choosing the method ------------------------------------------------------------------------ */

enum method { METHOD_AUTO, METHOD_PTRACE, METHOD_SIGNAL };

static enum method wanted = METHOD_AUTO;   /* HOTPATCH_STOP or hp_threads_stop_prefer */
static bool wanted_read;
static char ptrace_refused[200];           /* why ptrace was given up for good ("" = it was not) */
static char ptrace_not_now[200];           /* why this stop is not a ptrace stop ("" = it is) */
static const char *last_method = "none";   /* the method of the last successful stop */
static int active;                         /* the method holding the threads now, or 0 */

#if defined(__SANITIZE_THREAD__)
#define HP_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HP_UNDER_TSAN 1
#endif
#endif
#ifndef HP_UNDER_TSAN
#define HP_UNDER_TSAN 0
#endif

/* A program built with TSan that links an uninstrumented libhotpatch still has its runtime. */
extern void __tsan_init(void) __attribute__((weak));

static void read_wanted(void)
{
    if (wanted_read)
        return;
    wanted_read = true;
    const char *v = hp_env("HOTPATCH_STOP");
    if (v && strcmp(v, "ptrace") == 0)
        wanted = METHOD_PTRACE;
    else if (v && strcmp(v, "signal") == 0)
        wanted = METHOD_SIGNAL;
}

int hp_threads_stop_prefer(const char *method)
{
    wanted_read = true;
    if (!method || strcmp(method, "auto") == 0)
        wanted = METHOD_AUTO;
    else if (strcmp(method, "ptrace") == 0)
        wanted = METHOD_PTRACE;
    else if (strcmp(method, "signal") == 0)
        wanted = METHOD_SIGNAL;
    else
        return -EINVAL;
    return 0;
}

/* Why the ptrace stop is not used, or NULL when it is. */
static const char *ptrace_excluded(void)
{
    read_wanted();
    if (wanted == METHOD_SIGNAL)
        return "the signal stop was asked for (HOTPATCH_STOP=signal)";
    if (HP_UNDER_TSAN || __tsan_init)
        return "ThreadSanitizer: a thread stopped anywhere may hold its locks";
    if (ptrace_refused[0])
        return ptrace_refused;
    return hp_ptrace_unusable();
}

const char *hp_threads_stop_method(void)
{
    return ptrace_excluded() ? "signal" : "ptrace";
}

const char *hp_threads_stop_fallback_reason(void)
{
    const char *why = ptrace_excluded();
    return why ? why : ptrace_not_now;
}

int hp_threads_stop(struct hp_stopped *out, int timeout_ms)
{
    memset(out, 0, sizeof *out);
    if (active) {
        snprintf(out->why, sizeof out->why, "the threads are stopped already");
        return -1;
    }
    const char *excluded = ptrace_excluded();
    ptrace_not_now[0] = '\0';
    if (!excluded) {
        enum hp_stop_failure kind = HP_STOP_FAIL_NONE;
        if (hp_ptrace_stop(out, timeout_ms, &kind) == 0) {
            active = METHOD_PTRACE;
            last_method = "ptrace";
            return 0;
        }
        if (kind == HP_STOP_FAIL_BUSY || wanted == METHOD_PTRACE)
            return -1;
        if (kind == HP_STOP_FAIL_REFUSED) {
            snprintf(ptrace_refused, sizeof ptrace_refused, "%s", out->why);
            hp_log("the thread stop falls back to signals from now on: %s", out->why);
        } else {
            snprintf(ptrace_not_now, sizeof ptrace_not_now, "%s", out->why);
        }
        memset(out, 0, sizeof *out);
    }
    hp_ptrace_quiesce();           /* no thread may still be held by the helper */
    if (hp_signal_stop(out, timeout_ms) != 0)
        return -1;
    active = METHOD_SIGNAL;
    last_method = "signal";
    return 0;
}

HP_STOPPED_WINDOW void hp_threads_resume(struct hp_stopped *s)
{
    /* The recorded registers hold code addresses; left behind they would look like live
     * references to the unload scan (refscan.c). */
    for (size_t i = 0; s->threads && i < s->count; i++)
        hp_raw_fill(&s->threads[i], 0, sizeof s->threads[i]);
    if (active == METHOD_PTRACE)
        hp_ptrace_resume();
    else if (active == METHOD_SIGNAL)
        hp_signal_resume();
    active = 0;
    s->threads = NULL;
    s->count = 0;
}

/* ---- scanning the stopped threads ---------------------------------------------------------------- */

/*
 * The stack of a stopped thread is the mapping that holds its stack pointer. Found with the
 * PROCMAP_QUERY ioctl of /proc/self/maps (Linux 6.11) when the kernel has it: one call per
 * thread; else from the text of /proc/self/maps, parsed once per scan into a sorted array
 * (binary search per thread): linear in threads and mappings either way.
 */
struct procmap_query {
    uint64_t size, query_flags, query_addr, vma_start, vma_end, vma_flags, vma_page_size,
        vma_offset, inode;
    uint32_t dev_major, dev_minor, vma_name_size, build_id_size;
    uint64_t vma_name_addr, build_id_addr;
};
#define HP_PROCMAP_QUERY _IOWR('f', 17, struct procmap_query)
#define HP_PROCMAP_READABLE 0x01

struct map_range {
    uintptr_t start, end;
    bool readable;
};

static struct {
    char *text;                 /* /proc/self/maps, mmap'ed, grown as needed */
    size_t text_cap;
    struct map_range *ranges;   /* parsed from it, mmap'ed */
    size_t ranges_cap, n_ranges;
    long query_fd;              /* /proc/self/maps for PROCMAP_QUERY, or -1 */
    bool query_unsupported;
} scan_maps = {.query_fd = -1};

HP_STOPPED_WINDOW static bool load_maps_text(void)
{
    for (;;) {
        if (scan_maps.text_cap == 0) {
            scan_maps.text = grow_mapping(NULL, 0, 1 << 20);
            if (!scan_maps.text)
                return false;
            scan_maps.text_cap = 1 << 20;
        }
        long n = hp_stop_read_file("/proc/self/maps", scan_maps.text, scan_maps.text_cap);
        if (n < 0)
            return false;
        if ((size_t)n + 1 < scan_maps.text_cap)
            return true;
        char *grown = grow_mapping(scan_maps.text, scan_maps.text_cap, 2 * scan_maps.text_cap);
        if (!grown)
            return false;
        scan_maps.text = grown;
        scan_maps.text_cap *= 2;
    }
}

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

HP_STOPPED_WINDOW static bool parse_maps(void)
{
    if (!load_maps_text())
        return false;
    scan_maps.n_ranges = 0;
    for (const char *p = scan_maps.text; *p;) {
        if (scan_maps.n_ranges == scan_maps.ranges_cap) {
            size_t cap = scan_maps.ranges_cap ? 2 * scan_maps.ranges_cap : 4096;
            struct map_range *r = grow_mapping(scan_maps.ranges,
                                               page_round(scan_maps.ranges_cap * sizeof *r),
                                               page_round(cap * sizeof *r));
            if (!r)
                return false;
            scan_maps.ranges = r;
            scan_maps.ranges_cap = cap;
        }
        struct map_range *r = &scan_maps.ranges[scan_maps.n_ranges++];
        r->start = parse_hex(&p);
        if (*p == '-')
            p++;
        r->end = parse_hex(&p);
        r->readable = p[0] == ' ' && p[1] == 'r';
        while (*p && *p != '\n')
            p++;
        if (*p)
            p++;
    }
    return true;
}

/* The readable mapping holding addr: true with its bounds. */
HP_STOPPED_WINDOW static bool find_mapping(uintptr_t addr, uintptr_t *start, uintptr_t *end,
                                           bool *readable)
{
    if (!scan_maps.query_unsupported && scan_maps.query_fd >= 0) {
        struct procmap_query q;
        hp_raw_fill(&q, 0, sizeof q);
        q.size = sizeof q;
        q.query_addr = addr;
        long rc = hp_sys3(SYS_ioctl, scan_maps.query_fd, (long)HP_PROCMAP_QUERY, (long)&q);
        if (rc == 0) {
            *start = q.vma_start;
            *end = q.vma_end;
            *readable = q.vma_flags & HP_PROCMAP_READABLE;
            return addr >= q.vma_start;
        }
        if (rc == -ENOENT)
            return false;
        scan_maps.query_unsupported = true;   /* ENOTTY, EINVAL: an older kernel */
        if (!parse_maps())
            return false;
    }
    size_t lo = 0, hi = scan_maps.n_ranges;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct map_range *r = &scan_maps.ranges[mid];
        if (addr < r->start)
            hi = mid;
        else if (addr >= r->end)
            lo = mid + 1;
        else {
            *start = r->start;
            *end = r->end;
            *readable = r->readable;
            return true;
        }
    }
    return false;
}

HP_STOPPED_WINDOW static bool open_maps_for_scan(void)
{
    scan_maps.query_fd = -1;
    if (!scan_maps.query_unsupported) {
        long fd = hp_sys4(SYS_openat, AT_FDCWD, (long)"/proc/self/maps", O_RDONLY | O_CLOEXEC,
                          0);
        if (!hp_sys_failed(fd)) {
            scan_maps.query_fd = fd;
            return true;
        }
    }
    scan_maps.query_unsupported = true;
    return parse_maps();
}

HP_STOPPED_WINDOW static void close_maps_for_scan(void)
{
    if (scan_maps.query_fd >= 0)
        hp_sys1(SYS_close, scan_maps.query_fd);
    scan_maps.query_fd = -1;
}

/* A conservative scan reads whole stacks of stopped threads, red zones and sanitizer poison
 * included: uninstrumented (HP_STOPPED_WINDOW), one volatile load per word. */
HP_STOPPED_WINDOW static int scan_thread(const struct hp_thread_state *t,
                                         int (*scan)(void *, pid_t, uintptr_t, bool), void *ctx,
                                         char *why, size_t why_cap)
{
    int rc = scan(ctx, t->tid, t->pc, true);
    for (int r = 0; rc == 0 && r < t->n_regs; r++)
        rc = scan(ctx, t->tid, t->regs[r], false);
    if (rc != 0)
        return rc;
    if (t->on_altstack) {
        hp_stop_fmt(why, why_cap, "thread %d is in a signal handler on an alternate stack, "
                    "where its own stack cannot be found; try again", t->tid);
        return -EAGAIN;
    }
    uintptr_t start, end;
    bool readable;
    if (!find_mapping(t->sp, &start, &end, &readable) || !readable) {
        hp_stop_fmt(why, why_cap, "the stack of thread %d (sp %#lx) is not a readable mapping",
                    t->tid, (unsigned long)t->sp);
        return -1;
    }
    uintptr_t from = t->sp >= 128 ? t->sp - 128 : 0;
    if (from < start)
        from = start;
    from &= ~(uintptr_t)7;
    for (const volatile uintptr_t *w = (const uintptr_t *)from; rc == 0 && (uintptr_t)w < end;
         w++)
        rc = scan(ctx, t->tid, *w, false);
    return rc;
}

HP_STOPPED_WINDOW int hp_threads_scan(const struct hp_stopped *s,
                                      int (*scan)(void *ctx, pid_t tid, uintptr_t word,
                                                  bool is_pc),
                                      void *ctx, char *why, size_t why_cap)
{
    if (!open_maps_for_scan()) {
        hp_stop_fmt(why, why_cap, "cannot read /proc/self/maps to find the threads' stacks");
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < s->count; i++)
        rc = scan_thread(&s->threads[i], scan, ctx, why, why_cap);
    close_maps_for_scan();
    return rc;
}

HP_STOPPED_WINDOW size_t hp_threads_owned_ranges(struct hp_range *out, size_t cap)
{
    const struct hp_stop_arrays *a = &hp_stop_arrays;
    size_t n = 0;
    const struct {
        const void *p;
        size_t size;
    } blocks[] = {
        {a->states, page_round(a->cap * sizeof *a->states)},
        {a->traced, page_round(a->cap * sizeof *a->traced)},
        {a->tid_set, page_round(a->set_cap * sizeof *a->tid_set)},
        {scan_maps.text, scan_maps.text_cap},
        {scan_maps.ranges, page_round(scan_maps.ranges_cap * sizeof *scan_maps.ranges)},
    };
    for (size_t i = 0; i < HP_ARRAY_SIZE(blocks) && n < cap; i++)
        if (blocks[i].p && blocks[i].size)
            out[n++] = (struct hp_range){(uintptr_t)blocks[i].p,
                                         (uintptr_t)blocks[i].p + blocks[i].size};
    return n + hp_ptrace_owned_ranges(out + n, cap - n);
}
