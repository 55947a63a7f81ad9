/*
 * stop.c — stopping every other thread of the process for a moment, to prove where they
 * are.
 *
 * The engine needs this around every code write (no thread may run while bytes change, nor be
 * paused between two of the instructions being overwritten), and before a library is unmapped
 * (no thread may still run in it or return into it).
 *
 * How: the caller sends a real-time signal to each thread listed in /proc/self/task with
 * rt_tgsigqueueinfo, carrying a generation number. The handler records the interrupted
 * registers and stack pointer in a static slot, counts itself in, and parks on a futex until
 * the caller releases that generation — and only then: there is no timeout after which a
 * parked thread leaves on its own. The caller re-reads the task list until no thread it did
 * not signal has appeared (a thread created just before its parent parked). A thread that does
 * not answer within the timeout (it blocks the signal, or is stopped by a debugger) makes the
 * stop fail with its tid: the caller refuses rather than guess.
 *
 * The signal: the highest real-time signal whose disposition is SIG_DFL, checked at every stop.
 * Our handler is installed only for the duration of a stop; afterwards the disposition is set
 * to SIG_IGN (which discards a signal still pending in a thread that never answered, so it
 * cannot kill the process later) and then restored to what the program had.
 *
 * While the threads are parked, one of them may hold a libc lock (malloc, stdio, the loader's).
 * So between stop and resume the caller must not allocate or use stdio; this file reads
 * /proc/self/maps with open/read into a static buffer and keeps states in static slots.
 *
 * State (all static, owned by the engine and used under its lock, except what the handler
 * touches, which is atomic): the slots, the generation counters, the chosen signal.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "maps.h"
#include "arch/arch.h"

#define MAX_THREADS 1024

static struct hp_thread_state slots[MAX_THREADS];
static atomic_int next_slot;       /* handler: index of the next free slot */
static atomic_int arrived;         /* handler: slots completely written */
static atomic_int active_gen;      /* generation being stopped now; 0 = none */
static atomic_int released_gen;    /* futex word: generations <= this one may leave */
static atomic_int inflight;        /* threads inside the handler */
static int generation;             /* last generation used (engine lock) */
static pid_t signaled[MAX_THREADS];/* tids signaled in the current stop (engine lock) */
static size_t n_signaled;
static int stop_signal;            /* chosen signal (engine lock) */
static bool need_drain;            /* the last stop failed: a late thread may still be inside */
static struct sigaction saved_action;

static long futex(atomic_int *word, int op, int val, const struct timespec *timeout)
{
    return syscall(SYS_futex, word, op, val, timeout, NULL, 0);
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static pid_t current_tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/* ---- the handler (runs in the stopped threads) --------------------------------------------- */

static void record_state(const void *ucontext)
{
    int idx = atomic_fetch_add(&next_slot, 1);
    if (idx >= MAX_THREADS)
        return;
    struct hp_thread_state *s = &slots[idx];
    stack_t ss;
    s->tid = current_tid();
    s->pc = hp_arch_context_pc(ucontext);
    s->sp = hp_arch_context_sp(ucontext);
    s->n_regs = hp_arch_context_regs(ucontext, s->regs, (int)(sizeof s->regs / sizeof s->regs[0]));
    s->on_altstack = sigaltstack(NULL, &ss) == 0 && (ss.ss_flags & SS_ONSTACK);
    atomic_fetch_add(&arrived, 1);
    futex(&arrived, FUTEX_WAKE_PRIVATE, 1, NULL);
}

/*
 * A parked thread leaves only when the engine releases its generation: no timeout. A thread
 * that left on its own (after a SIGSTOP, a debugger, a long preemption) could run the bytes the
 * engine is writing at that very moment. The engine always releases (every path of
 * hp_threads_stop and hp_threads_resume does), and it never waits for anything a parked thread
 * holds between stop and resume (no malloc, no stdio, no locks), so waiting cannot deadlock.
 */
static void park(int gen)
{
    for (;;) {
        int released = atomic_load(&released_gen);
        if (released >= gen)
            return;
        futex(&released_gen, FUTEX_WAIT_PRIVATE, released, NULL);
    }
}

static void stop_handler(int sig, siginfo_t *info, void *ucontext)
{
    (void)sig;
    int saved_errno = errno;
    atomic_fetch_add(&inflight, 1);
    int gen = info->si_value.sival_int;
    if (info->si_code == SI_QUEUE && info->si_pid == getpid() && gen != 0 &&
        gen == atomic_load(&active_gen)) {
        record_state(ucontext);
        park(gen);
    }
    atomic_fetch_sub(&inflight, 1);
    errno = saved_errno;
}

/* ---- choosing and installing the signal ------------------------------------------------------ */

static bool signal_is_free(int sig)
{
    struct sigaction sa;
    return sigaction(sig, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) &&
           sa.sa_handler == SIG_DFL;
}

static int choose_signal(char *why, size_t why_cap)
{
    if (stop_signal && signal_is_free(stop_signal))
        return 0;
    for (int sig = SIGRTMAX; sig >= SIGRTMIN + 4; sig--) {
        if (signal_is_free(sig)) {
            stop_signal = sig;
            return 0;
        }
    }
    snprintf(why, why_cap, "no free real-time signal to stop the threads with (all have "
                           "handlers)");
    return -1;
}

static int install_handler(char *why, size_t why_cap)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = stop_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    /* Block everything while parked: no handler of the program runs (and touches its locks or
     * the code being written) in a thread that is supposed to be frozen. */
    sigfillset(&sa.sa_mask);
    if (sigaction(stop_signal, &sa, &saved_action) != 0) {
        snprintf(why, why_cap, "cannot install the stop signal handler: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* SIG_IGN first discards a copy still pending in a thread that never answered. */
static void uninstall_handler(void)
{
    struct sigaction ignore;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    sigaction(stop_signal, &ignore, NULL);
    sigaction(stop_signal, &saved_action, NULL);
}

/* ---- signaling the threads -------------------------------------------------------------------- */

static bool was_signaled(pid_t tid)
{
    for (size_t i = 0; i < n_signaled; i++)
        if (signaled[i] == tid)
            return true;
    return false;
}

static int send_stop(pid_t tid, int gen)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    info.si_signo = stop_signal;
    info.si_code = SI_QUEUE;
    info.si_pid = getpid();
    info.si_uid = getuid();
    info.si_value.sival_int = gen;
    return (int)syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, stop_signal, &info);
}

/*
 * Signals every thread of /proc/self/task not yet signaled (except the caller). Returns how many
 * were newly signaled, or -1 with a reason. Uses getdents64 on a raw descriptor: no malloc.
 */
static int signal_new_threads(int gen, char *why, size_t why_cap)
{
    int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, why_cap, "cannot list threads: /proc/self/task: %s", strerror(errno));
        return -1;
    }
    pid_t self = current_tid();
    int added = 0;
    char buf[4096];
    long n;
    while ((n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
        for (long off = 0; off < n;) {
            struct {
                unsigned long long ino;
                long long off;
                unsigned short reclen;
                unsigned char type;
                char name[];
            } *d = (void *)(buf + off);
            off += d->reclen;
            pid_t tid = (pid_t)atoi(d->name);
            if (tid <= 0 || tid == self || was_signaled(tid))
                continue;
            if (n_signaled >= MAX_THREADS) {
                close(fd);
                snprintf(why, why_cap, "more than %d threads: too many to stop", MAX_THREADS);
                return -1;
            }
            if (send_stop(tid, gen) != 0)
                continue;  /* the thread has exited */
            signaled[n_signaled++] = tid;
            added++;
        }
    }
    close(fd);
    return added;
}

static bool thread_has_arrived(pid_t tid)
{
    int count = atomic_load(&arrived);
    for (int i = 0; i < count && i < MAX_THREADS; i++)
        if (slots[i].tid == tid)
            return true;
    return false;
}

static bool thread_exists(pid_t tid)
{
    return syscall(SYS_tgkill, getpid(), tid, 0) == 0;
}

/* The first signaled thread that neither arrived nor exited; 0 when none. */
static pid_t first_missing(void)
{
    for (size_t i = 0; i < n_signaled; i++) {
        pid_t tid = signaled[i];
        if (!thread_has_arrived(tid) && thread_exists(tid))
            return tid;
    }
    return 0;
}

static void wait_arrivals(long long deadline)
{
    struct timespec slice = {0, 2 * 1000 * 1000};
    for (;;) {
        int count = atomic_load(&arrived);
        if (first_missing() == 0 || now_ns() > deadline)
            return;
        futex(&arrived, FUTEX_WAIT_PRIVATE, count, &slice);
    }
}

static bool drain_previous_handlers(long long deadline)
{
    while (atomic_load(&inflight) != 0) {
        if (now_ns() > deadline)
            return false;
        sched_yield();
    }
    return true;
}

static void release_generation(int gen)
{
    atomic_store(&active_gen, 0);
    atomic_store(&released_gen, gen);
    futex(&released_gen, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL);
    uninstall_handler();
}

static bool read_sigblk(pid_t tid, unsigned long long *mask);

static void describe_missing(pid_t tid, char *why, size_t why_cap)
{
    unsigned long long mask;
    if (read_sigblk(tid, &mask) && (mask & (1ULL << (stop_signal - 1))))
        snprintf(why, why_cap, "thread %d blocks signal %d, so it cannot be stopped to check "
                 "where it is", tid, stop_signal);
    else
        snprintf(why, why_cap, "thread %d did not answer the stop signal in time (stopped by "
                 "a debugger, or starved of CPU)", tid);
}

int hp_threads_stop(struct hp_stopped *out, int timeout_ms)
{
    memset(out, 0, sizeof *out);
    long long deadline = now_ns() + (long long)timeout_ms * 1000000;
    /* After a successful stop every signaled thread has recorded its state and is leaving;
     * it touches nothing but `inflight` any more, so only a failed stop needs draining. */
    if (need_drain && !drain_previous_handlers(deadline)) {
        snprintf(out->why, sizeof out->why, "a thread is still leaving the previous stop");
        return -1;
    }
    need_drain = false;
    if (choose_signal(out->why, sizeof out->why) != 0 ||
        install_handler(out->why, sizeof out->why) != 0)
        return -1;
    int gen = ++generation;
    atomic_store(&next_slot, 0);
    atomic_store(&arrived, 0);
    n_signaled = 0;
    atomic_store(&active_gen, gen);
    int added;
    do {
        added = signal_new_threads(gen, out->why, sizeof out->why);
        if (added > 0)
            wait_arrivals(deadline);
    } while (added > 0 && first_missing() == 0);
    pid_t missing = added < 0 ? 0 : first_missing();
    if (added < 0 || missing != 0) {
        release_generation(gen);
        need_drain = true;
        if (missing) {
            out->missing = missing;
            describe_missing(missing, out->why, sizeof out->why);
        }
        return -1;
    }
    out->threads = slots;
    out->count = (size_t)atomic_load(&arrived);
    return 0;
}

void hp_threads_resume(struct hp_stopped *s)
{
    if (s->threads)
        release_generation(generation);
    /* The recorded registers hold code addresses; left behind they would look like live
     * references to the unload scan (refscan.c). */
    for (size_t i = 0; s->threads && i < s->count; i++)
        s->threads[i] = (struct hp_thread_state){0};
    s->threads = NULL;
    s->count = 0;
}

/* ---- blocked signals ------------------------------------------------------------------------- */

/* Reads the "SigBlk:" mask of a thread from /proc/self/task/TID/status; false on failure. */
static bool read_sigblk(pid_t tid, unsigned long long *mask)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    const char *line = strstr(buf, "\nSigBlk:");
    return line && sscanf(line + 8, "%llx", mask) == 1;
}

/* ---- scanning the stopped threads -------------------------------------------------------------- */

/* A conservative scan reads whole stacks of parked threads, red zones and sanitizer poison
 * included: sanitizers must not instrument this one read. */
__attribute__((no_sanitize("address", "thread"))) static uintptr_t read_word(const uintptr_t *w)
{
    return *(const volatile uintptr_t *)w;
}

static int scan_thread(const char *maps, const struct hp_thread_state *t,
                       int (*scan)(void *, pid_t, uintptr_t, bool), void *ctx, char *why,
                       size_t why_cap)
{
    int rc = scan(ctx, t->tid, t->pc, true);
    for (int r = 0; rc == 0 && r < t->n_regs; r++)
        rc = scan(ctx, t->tid, t->regs[r], false);
    if (rc != 0)
        return rc;
    if (t->on_altstack) {
        snprintf(why, why_cap, "thread %d is in a signal handler on an alternate stack; its "
                 "stack cannot be scanned", t->tid);
        return -1;
    }
    struct hp_mapping m;
    uintptr_t from = t->sp >= 128 ? t->sp - 128 : 0;
    if (!hp_maps_find(maps, t->sp, &m) || !m.readable) {
        snprintf(why, why_cap, "the stack of thread %d (sp %#lx) is not a readable mapping",
                 t->tid, (unsigned long)t->sp);
        return -1;
    }
    if (from < m.start)
        from = m.start;
    from &= ~(uintptr_t)7;
    for (const uintptr_t *w = (const uintptr_t *)from; rc == 0 && (uintptr_t)w < m.end; w++)
        rc = scan(ctx, t->tid, read_word(w), false);
    return rc;
}

int hp_threads_scan(const struct hp_stopped *s, int (*scan)(void *ctx, pid_t tid, uintptr_t word,
                                                            bool is_pc),
                    void *ctx, char *why, size_t why_cap)
{
    const char *maps = hp_maps_text();
    if (!maps) {
        snprintf(why, why_cap, "cannot read /proc/self/maps to find the threads' stacks");
        return -1;
    }
    for (size_t i = 0; i < s->count; i++) {
        int rc = scan_thread(maps, &s->threads[i], scan, ctx, why, why_cap);
        if (rc != 0)
            return rc;
    }
    return 0;
}
