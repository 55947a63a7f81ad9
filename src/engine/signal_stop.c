/*
 * signal_stop.c — the fallback thread stop: a real-time signal whose handler parks the thread
 * (used where ptrace is refused; stop.c explains when and what it cannot avoid).
 *
 * Choosing the signal, before any thread is stopped: every thread's /proc/self/task/TID/status
 * is read once; the signal is the highest real-time one that no thread blocks (SigBlk), none
 * has pending (SigPnd, ShdPnd) and the program has no handler for (SIG_DFL: a signal of that
 * number sent by the program would have ended the process). So a signalfd or sigwait reader
 * that blocks a signal never gets ours, and nothing of the program's can be queued on it. A
 * thread that blocks every candidate (Node's watchdog blocks everything) makes the stop
 * refused right there, after a few short re-reads (a thread inside pthread_create blocks
 * everything for a moment): no thread was stopped for it, none is frozen.
 *
 * Sending: rt_tgsigqueueinfo to each thread with sival_ptr = generation << 32 | index; the
 * handler (SA_SIGINFO | SA_RESTART, every signal blocked while it runs) checks that the signal
 * is ours and current, writes states[index] (the interrupted registers from its ucontext, and
 * whether it runs on a sigaltstack), marks itself arrived and parks on a futex until the
 * engine releases that generation; there is no timeout after which a parked thread leaves.
 * New threads are found by listing /proc/self/task again until a listing is unchanged. While
 * waiting, a thread that has not arrived is checked: one that exited is dropped, one that
 * blocks the signal now fails the stop at once (the others are released, not kept waiting).
 *
 * After a successful stop every signaled thread has taken its signal, so the program's
 * disposition is put back at once. After a failed one a late signal may still be pending in a
 * thread that blocks it: the handler stays installed (it does nothing for a stale generation)
 * until no thread has the signal pending, checked at every later stop; SIG_IGN is never used
 * to discard it, which could discard a signal of the program's.
 *
 * Everything the handler and the stopped window run is HP_STOPPED_WINDOW code with raw system
 * calls. State: the chosen signal, the generation counters and the saved disposition (engine
 * lock); what the handler touches is atomic.
 */
#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <unistd.h>

#include "engine.h"
#include "stop_internal.h"
#include "arch/arch.h"
#include "arch/x86_64_syscall.h"

/* The kernel's struct sigaction for rt_sigaction (glibc's has a larger mask). */
struct kernel_sigaction {
    void *handler;
    unsigned long flags;
    void (*restorer)(void);
    unsigned long mask;
};

static atomic_int active_gen;      /* generation being stopped now; 0 = none */
static atomic_int released_gen;    /* futex word: generations <= this one may leave */
static atomic_int arrived;         /* futex word: threads parked in this generation */
static atomic_int inflight;        /* threads inside the handler */
static int generation;
static int stop_signal;            /* the signal of the current stop */
static int lingering;              /* a failed stop's signal whose handler is still installed */
static struct sigaction saved_action, lingering_action;
static size_t n_signaled;          /* entries [0, n_signaled) were signaled */
static size_t n_gone;              /* of them, exited before arriving */

#define ATTEMPTS_BEFORE_REFUSING 5

/* ---- the handler (runs in the stopped threads) ------------------------------------------------ */

HP_STOPPED_WINDOW static void park(int gen)
{
    for (;;) {
        int released = atomic_load(&released_gen);
        if (released >= gen)
            return;
        hp_sys4(SYS_futex, (long)&released_gen, FUTEX_WAIT_PRIVATE, released, 0);
    }
}

HP_STOPPED_WINDOW static void stop_handler(int sig, siginfo_t *info, void *ucontext)
{
    (void)sig;
    atomic_fetch_add(&inflight, 1);
    uintptr_t value = (uintptr_t)info->si_value.sival_ptr;
    int gen = (int)(value >> 32);
    size_t index = (uint32_t)value;
    if (info->si_code == SI_QUEUE && info->si_pid == hp_sys0(SYS_getpid) && gen != 0 &&
        gen == atomic_load(&active_gen) && index < n_signaled) {
        struct hp_thread_state *s = &hp_stop_arrays.states[index];
        stack_t ss;
        s->n_regs = hp_arch_ucontext_to_state(ucontext, &s->pc, &s->sp, s->regs,
                                              (int)(sizeof s->regs / sizeof s->regs[0]));
        s->on_altstack = hp_sys2(SYS_sigaltstack, 0, (long)&ss) == 0 && (ss.ss_flags & SS_ONSTACK);
        __atomic_store_n(&hp_stop_arrays.traced[index].status, HP_TRACED_STOPPED,
                         __ATOMIC_RELEASE);
        atomic_fetch_add(&arrived, 1);
        hp_sys3(SYS_futex, (long)&arrived, FUTEX_WAKE_PRIVATE, 1);
        park(gen);
    }
    atomic_fetch_sub(&inflight, 1);
}

/* ---- masks, read before anyone is stopped ------------------------------------------------------ */

/* Blocked and pending signals of one thread; false when it has gone. */
HP_STOPPED_WINDOW static bool thread_masks(pid_t tid, unsigned long long *blocked,
                                           unsigned long long *pending)
{
    char path[64], text[4096];
    hp_stop_proc_path(path, sizeof path, (pid_t)hp_sys0(SYS_getpid), tid, "status");
    if (hp_stop_read_file(path, text, sizeof text) <= 0)
        return false;
    unsigned long long pnd = 0, shd = 0;
    hp_stop_status_hex(text, "SigPnd", &pnd);
    hp_stop_status_hex(text, "ShdPnd", &shd);
    *pending = pnd | shd;
    return hp_stop_status_hex(text, "SigBlk", blocked);
}

/* True when the thread has exited (or is a zombie leader, which runs nothing). */
static bool thread_gone(pid_t pid, pid_t tid)
{
    if (hp_sys3(SYS_tgkill, pid, tid, 0) != 0)
        return true;
    char st = hp_stop_task_state(pid, tid);
    return st == 'Z' || st == 'X' || st == 0;
}

static bool handler_free(int sig)
{
    struct sigaction sa;
    return sigaction(sig, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) &&
           sa.sa_handler == SIG_DFL;
}

static unsigned long long bit(int sig)
{
    return 1ULL << (sig - 1);
}

/* Candidates: real-time signals without a handler (glibc keeps the first ones). */
static unsigned long long candidates(void)
{
    unsigned long long c = 0;
    for (int sig = SIGRTMIN + 4; sig <= SIGRTMAX; sig++)
        if (sig == lingering || handler_free(sig))
            c |= bit(sig);
    if (lingering)
        c &= ~bit(lingering);     /* a late signal of a failed stop may still come */
    return c;
}

/*
 * Lists the threads into the arrays and picks the signal. 0; or -1 with out->why (a thread
 * blocks every candidate: after re-reading its mask a few times).
 */
static int choose_signal(struct hp_stopped *out)
{
    pid_t self = (pid_t)hp_sys0(SYS_gettid);
    for (int attempt = 0;; attempt++) {
        hp_stop_clear();
        long n = hp_stop_list_new((pid_t)hp_sys0(SYS_getpid), self);
        if (n < 0) {
            snprintf(out->why, sizeof out->why, "cannot list the threads: /proc/self/task: %s",
                     strerror((int)-n));
            return -1;
        }
        unsigned long long usable = candidates();
        pid_t culprit = 0;
        for (size_t i = 0; i < hp_stop_arrays.count; i++) {
            struct hp_traced *t = &hp_stop_arrays.traced[i];
            unsigned long long blk, pnd;
            if (!thread_masks(t->tid, &blk, &pnd) ||
                hp_stop_task_is_io_worker((pid_t)hp_sys0(SYS_getpid), t->tid)) {
                t->status = HP_TRACED_GONE;
                continue;
            }
            if ((usable & ~blk & ~pnd) == 0) {
                if (thread_gone((pid_t)hp_sys0(SYS_getpid), t->tid)) {
                    t->status = HP_TRACED_GONE;   /* a zombie leader blocks everything */
                    continue;
                }
                if (!culprit)
                    culprit = t->tid;
            }
            usable &= ~blk & ~pnd;
        }
        if (usable) {
            for (int sig = SIGRTMAX; sig >= SIGRTMIN; sig--) {
                if (usable & bit(sig)) {
                    stop_signal = sig;
                    return 0;
                }
            }
        }
        if (attempt + 1 >= ATTEMPTS_BEFORE_REFUSING) {
            if (culprit)
                snprintf(out->why, sizeof out->why, "thread %d blocks every real-time signal "
                         "without a handler, so the signal stop cannot stop it (and ptrace is "
                         "not available: %s)", culprit, hp_threads_stop_fallback_reason());
            else
                snprintf(out->why, sizeof out->why, "no real-time signal is free of handlers "
                         "and unblocked in every thread (and ptrace is not available: %s)",
                         hp_threads_stop_fallback_reason());
            out->missing = culprit;
            return -1;
        }
        hp_stop_sleep_ns(1000000L << attempt);     /* 1, 2, 4, 8 ms: a passing block */
    }
}

/* ---- installing and restoring -------------------------------------------------------------------- */

static int install_handler(struct hp_stopped *out)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = stop_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    /* Block everything while parked: no handler of the program runs (and touches its locks or
     * the code being written) in a thread that is supposed to be frozen. */
    sigfillset(&sa.sa_mask);
    if (sigaction(stop_signal, &sa, &saved_action) != 0) {
        snprintf(out->why, sizeof out->why, "cannot install the stop signal's handler: %s",
                 strerror(errno));
        return -1;
    }
    return 0;
}

/* A failed stop's handler stays until no thread has its signal pending any more. */
static void settle_lingering(void)
{
    if (!lingering || atomic_load(&inflight) != 0)
        return;
    unsigned long long pending = 0;
    pid_t self = (pid_t)hp_sys0(SYS_gettid);
    hp_stop_clear();
    if (hp_stop_list_new((pid_t)hp_sys0(SYS_getpid), self) < 0)
        return;
    for (size_t i = 0; i < hp_stop_arrays.count; i++) {
        unsigned long long blk, pnd;
        if (thread_masks(hp_stop_arrays.traced[i].tid, &blk, &pnd))
            pending |= pnd;
    }
    if (pending & bit(lingering))
        return;
    sigaction(lingering, &lingering_action, NULL);
    lingering = 0;
}

/* ---- the stop ---------------------------------------------------------------------------------- */

HP_STOPPED_WINDOW static long send_stop(pid_t pid, pid_t tid, int gen, size_t index)
{
    siginfo_t info;
    hp_raw_fill(&info, 0, sizeof info);
    info.si_signo = stop_signal;
    info.si_code = SI_QUEUE;
    info.si_pid = pid;
    info.si_uid = (uid_t)hp_sys0(SYS_getuid);
    info.si_value.sival_ptr = (void *)((uintptr_t)(unsigned)gen << 32 | index);
    return hp_sys4(SYS_rt_tgsigqueueinfo, pid, tid, stop_signal, (long)&info);
}

/*
 * Waits until every signaled thread has arrived or exited. Returns 0; or the tid of a thread
 * that blocks the signal now (*blocked) or has not arrived by the deadline. Each arrival
 * costs O(1); the threads that have not arrived are looked at every 2 ms.
 */
static pid_t wait_arrivals(long long deadline, bool *blocked)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    pid_t pid = (pid_t)hp_sys0(SYS_getpid);
    long long next_check = hp_stop_now_ns() + 1000000;
    for (;;) {
        int count = atomic_load(&arrived);
        if ((size_t)count + n_gone >= n_signaled)
            return 0;
        long long now = hp_stop_now_ns();
        if (now < next_check && now < deadline) {
            struct timespec slice = {0, 1000000};
            hp_sys4(SYS_futex, (long)&arrived, FUTEX_WAIT_PRIVATE, count, (long)&slice);
            continue;
        }
        pid_t late = 0;
        for (size_t i = 0; i < n_signaled; i++) {
            struct hp_traced *t = &a->traced[i];
            if (__atomic_load_n(&t->status, __ATOMIC_ACQUIRE) != HP_TRACED_SEIZED)
                continue;
            unsigned long long blk, pnd;
            if (thread_gone(pid, t->tid)) {
                if (__atomic_exchange_n(&t->status, HP_TRACED_GONE, __ATOMIC_ACQ_REL) ==
                    HP_TRACED_SEIZED)
                    n_gone++;
                continue;
            }
            /* Blocked and still pending: it cannot take it. (Blocked but not pending is a
             * thread inside our handler, which blocks everything while it runs.) */
            if (thread_masks(t->tid, &blk, &pnd) && (blk & pnd & bit(stop_signal))) {
                *blocked = true;
                return t->tid;
            }
            if (!late)
                late = t->tid;
        }
        if (now >= deadline && late)
            return late;
        next_check = now + 2000000;
    }
}

HP_STOPPED_WINDOW static void release(int gen)
{
    atomic_store(&active_gen, 0);
    atomic_store(&released_gen, gen);
    hp_sys3(SYS_futex, (long)&released_gen, FUTEX_WAKE_PRIVATE, 1 << 30);
}

/* Drops the entries of threads that exited, so that states[0..count) are the parked ones. */
HP_STOPPED_WINDOW static void compact(void)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    size_t kept = 0;
    for (size_t i = 0; i < a->count; i++) {
        if (a->traced[i].status != HP_TRACED_STOPPED)
            continue;
        if (kept != i) {
            hp_raw_copy(&a->states[kept], &a->states[i], sizeof a->states[i]);
            hp_raw_copy(&a->traced[kept], &a->traced[i], sizeof a->traced[i]);
        }
        kept++;
    }
    a->count = kept;
}

static void describe_late(struct hp_stopped *out, pid_t tid, bool blocked, int timeout_ms)
{
    out->missing = tid;
    if (blocked)
        snprintf(out->why, sizeof out->why, "thread %d blocks signal %d, so it cannot be "
                 "stopped to check where it is (ptrace is not available: %s)", tid,
                 stop_signal, hp_threads_stop_fallback_reason());
    else
        snprintf(out->why, sizeof out->why, "thread %d did not answer the stop signal within %d "
                 "ms (stopped by a debugger, or starved of CPU)", tid, timeout_ms);
}

/* Marks entries [first, count) to be signaled; from the second listing on, a new thread is
 * checked for the signal first. 0, or the tid of a new thread that blocks it. */
static pid_t prepare_new(size_t first)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    pid_t pid = (pid_t)hp_sys0(SYS_getpid);
    for (size_t i = first; i < a->count; i++) {
        struct hp_traced *t = &a->traced[i];
        if (first > 0) {
            unsigned long long blk, pnd;
            if (!thread_masks(t->tid, &blk, &pnd) || hp_stop_task_is_io_worker(pid, t->tid))
                t->status = HP_TRACED_GONE;
            else if (blk & bit(stop_signal))
                return thread_gone(pid, t->tid) ? (t->status = HP_TRACED_GONE, 0) : t->tid;
        }
        if (t->status == HP_TRACED_GONE)
            n_gone++;
        else
            t->status = HP_TRACED_SEIZED;   /* to be signaled; STOPPED when it arrives */
    }
    return 0;
}

int hp_signal_stop(struct hp_stopped *out, int timeout_ms)
{
    long long deadline = hp_stop_now_ns() + (long long)timeout_ms * 1000000;
    while (atomic_load(&inflight) != 0) {
        if (hp_stop_now_ns() > deadline) {
            snprintf(out->why, sizeof out->why, "a thread is still leaving the previous stop");
            return -1;
        }
        sched_yield();
    }
    settle_lingering();
    if (choose_signal(out) != 0 || install_handler(out) != 0)
        return -1;
    /* Stopping costs wakeups per thread: a big process gets at least 0.2 ms per thread. */
    if ((long)(hp_stop_arrays.count / 5) > timeout_ms) {
        timeout_ms = (int)(hp_stop_arrays.count / 5);
        deadline = hp_stop_now_ns() + (long long)timeout_ms * 1000000;
    }
    struct hp_stop_arrays *a = &hp_stop_arrays;
    pid_t pid = (pid_t)hp_sys0(SYS_getpid), self = (pid_t)hp_sys0(SYS_gettid);
    int gen = ++generation;
    atomic_store(&arrived, 0);
    n_signaled = 0;
    n_gone = 0;
    atomic_store(&active_gen, gen);
    pid_t late = 0;
    bool blocked = false;
    for (size_t first = 0;; first = n_signaled) {
        late = prepare_new(first);
        if (late) {
            blocked = true;
            break;
        }
        n_signaled = a->count;
        for (size_t i = first; i < n_signaled; i++) {
            struct hp_traced *t = &a->traced[i];
            if (t->status == HP_TRACED_SEIZED && send_stop(pid, t->tid, gen, i) != 0) {
                t->status = HP_TRACED_GONE;     /* it has exited */
                n_gone++;
            }
        }
        late = wait_arrivals(deadline, &blocked);
        if (late)
            break;
        /* Every thread signaled so far is parked: list again for threads they created. */
        long added = hp_stop_list_new(pid, self);
        if (added == 0)
            break;
        if (added < 0) {
            snprintf(out->why, sizeof out->why, "cannot list the threads again: %s",
                     strerror((int)-added));
            late = -1;
            break;
        }
    }
    if (late) {
        release(gen);
        if (late > 0)
            describe_late(out, late, blocked, timeout_ms);
        /* A thread that never arrived may take the signal later: the handler stays. */
        lingering_action = saved_action;
        lingering = stop_signal;
        return -1;
    }
    compact();
    out->threads = a->states;
    out->count = a->count;
    return 0;
}

HP_STOPPED_WINDOW void hp_signal_resume(void)
{
    release(generation);
    /* Every signaled thread took its signal: nothing of ours is pending, put the program's
     * disposition back (raw: sigaction may be patched; the kernel's struct). */
    struct kernel_sigaction k;
    hp_raw_fill(&k, 0, sizeof k);
    k.handler = (void *)saved_action.sa_handler;
    k.flags = (unsigned long)saved_action.sa_flags;
    k.restorer = saved_action.sa_restorer;
    hp_raw_copy(&k.mask, &saved_action.sa_mask, sizeof k.mask);
    hp_sys4(SYS_rt_sigaction, stop_signal, (long)&k, 0, sizeof k.mask);
}
