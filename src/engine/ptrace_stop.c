/*
 * ptrace_stop.c — the primary thread stop: a helper process that holds every other thread
 * with ptrace (the design argument is in stop.c's header).
 *
 * Life of one stop (engine lock held throughout):
 *   engine thread                                helper (a separate thread group, same memory)
 *   prepare: read /proc/self/status (a tracer?
 *     seccomp? capabilities), size the arrays
 *   clone the helper, every signal blocked  ---> prlimit(RLIMIT_CORE, 0), PDEATHSIG, wait `go`
 *   PR_SET_PTRACER when Yama needs it, go=1 ---> SEIZE + INTERRUPT the last stop's threads
 *                                                (each checked to be ours); wait4 until every
 *                                                one is stopped; when the kernel's count of
 *                                                threads says others exist: list
 *                                                /proc/PID/task, seize the new ones, again
 *                                                until nothing is new; GETREGSET
 *   wait for `phase` (deadline: kill the    <--- phase = STOPPED
 *     helper, which lets every thread go)
 *   ... the engine scans and writes ...
 *   command = RESUME                        ---> per thread: rewind an EINTR'd call (x86_64_regs.c)
 *                                                unless a handler's signal is pending there;
 *                                                PTRACE_DETACH with the signal it was stopped
 *                                                with (none for an interrupt or group stop)
 *   wait for the helper's exit (its tid     <--- exit (CLONE_CHILD_CLEARTID wakes the engine)
 *     word), reap it with __WCLONE
 *
 * Everything from the clone to the reaping is HP_STOPPED_WINDOW code using raw system calls;
 * the helper touches no TLS (it shares the creating thread's thread pointer). Messages are
 * formed after the threads run again, from the codes the helper leaves in `ctl`.
 *
 * Why the last stop's threads are tried first: listing /proc/PID/task costs a directory entry
 * (a dentry) per thread, about a fifth of a stop's time per thread, and between two stops the
 * threads of a server rarely change. The list is only a guess: a thread that exited is ESRCH,
 * a tid the kernel gave to another process since then is refused (after PTRACE_SEIZE, which
 * does not disturb it, tgkill(tgid, tid, 0) says whether the task now held is one of ours;
 * a held task keeps its tid), and a new thread makes the count of threads in
 * /proc/PID/status exceed the ones held, which sends the helper to the listing.
 *
 * State: ctl, the helper's stack, the last stop's tids and the Yama/seccomp facts, owned by
 * the engine lock (the helper writes them only while the engine waits for it).
 */
#include <elf.h>
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
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine.h"
#include "stop_internal.h"
#include "arch/arch.h"
#include "arch/x86_64_syscall.h"

#ifndef PR_SET_PTRACER
#define PR_SET_PTRACER 0x59616d61
#endif
#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif

#define HELPER_STACK (256 * 1024)
#define CAP_SYS_PTRACE_BIT 19

/* The helper's state, one word (futex) that both sides move along:
 *   IDLE -> REQUEST (engine) -> STOPPED or FAILED (helper) -> RELEASE (engine) or IDLE (engine,
 *   after reading a failure) -> IDLE (helper, every thread let go); IDLE -> EXITING (helper,
 *   after HELPER_IDLE_NS without a request). A request made while the helper is still letting
 *   the last stop's threads go is RELEASE -> RELEASE_THEN_REQUEST: the helper goes straight on
 *   to the next stop, and the engine is not woken in between (with the program's threads
 *   running again on every CPU, a wakeup can wait a whole scheduler slice). */
enum helper_state { H_IDLE = 1, H_REQUEST, H_STOPPED, H_FAILED, H_RELEASE, H_EXITING,
                    H_RELEASE_THEN_REQUEST };
enum stage { STAGE_NONE, STAGE_LIST, STAGE_SEIZE, STAGE_INTERRUPT, STAGE_WAIT, STAGE_REGS };
enum role { ROLE_INTERMEDIATE = 1, ROLE_HELPER };

#define HELPER_IDLE_NS 1000000000L      /* an idle helper exits after a second */
#define LIVENESS_NS 100000000L          /* while holding threads: is the process still there? */

struct helper_ctl {
    _Atomic int state;          /* futex: enum helper_state */
    _Atomic int alive;          /* the helper's tid while it lives; 0 after (kernel) */
    int role;                   /* what the next clone's child is to be */
    bool orphan;                /* the helper was orphaned to init (reaped there) */
    pid_t owner;                /* getpid() of the process the helper serves */
    pid_t tgid, caller;
    size_t expect;              /* threads the engine expects (room made for them first) */
    long long give_up_ns;       /* the helper's deadline for this stop (before the engine's) */
    int stage, err;             /* where and why the last stop failed */
    pid_t fail_tid;
    unsigned long rewound;      /* system calls rewound, all stops (tests) */
    unsigned long helpers;      /* helpers started (tests) */
    struct hp_stop_profile profile;     /* written by the helper, read by the bench */
};

static struct helper_ctl ctl;
static uint8_t *helper_stack, *spawn_stack;
/* The threads the last stop held (mmap'ed, grown by the helper), tried first by the next. */
static pid_t *last_tids;
static size_t n_last_tids, last_tids_cap;
static bool guess_last = true;  /* false: list every time (the benchmark's comparison) */
static int yama_scope = -1;     /* -1 unknown/none */
static bool subreaper;          /* the process adopts orphans: do not orphan the helper */
static char unusable[160];      /* why ptrace can never work here ("" = it may) */
static bool checked;

/* ---- the helper (runs in its own thread group, on its own stack, no TLS) ------------------ */

HP_STOPPED_WINDOW static long futex_wait(_Atomic int *word, int val, long ns, bool private_)
{
    struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
    return hp_sys4(SYS_futex, (long)word, private_ ? FUTEX_WAIT_PRIVATE : FUTEX_WAIT, val,
                   ns >= 0 ? (long)&ts : 0);
}

HP_STOPPED_WINDOW static void futex_wake(_Atomic int *word)
{
    hp_sys3(SYS_futex, (long)word, FUTEX_WAKE_PRIVATE, 1 << 30);
}

HP_STOPPED_WINDOW static long ptrace4(long req, pid_t tid, long addr, long data)
{
    return hp_sys4(SYS_ptrace, req, tid, addr, data);
}

HP_STOPPED_WINDOW static int fail(struct helper_ctl *c, int stage, long err, pid_t tid)
{
    c->stage = stage;
    c->err = (int)-err;
    c->fail_tid = tid;
    return -1;
}

/* A seized task that is not one of ours: PTRACE_DETACH needs it in a stop, so it is
 * interrupted, waited for and let go at once, with no signal taken from it. */
HP_STOPPED_WINDOW static void let_foreign_go(pid_t tid)
{
    if (hp_sys_failed(ptrace4(PTRACE_INTERRUPT, tid, 0, 0)))
        return;
    for (;;) {
        int status = 0;
        long pid = hp_sys4(SYS_wait4, tid, (long)&status, __WALL, 0);
        if (pid == -EINTR)
            continue;
        if (hp_sys_failed(pid) || !WIFSTOPPED(status))
            return;
        int sig = (status >> 16) == 0 ? WSTOPSIG(status) : 0;   /* a signal came first */
        ptrace4(PTRACE_DETACH, tid, 0, sig);
        return;
    }
}

/* Seizes and interrupts entries [first, count). Returns how many more are now held, or -1. */
HP_STOPPED_WINDOW static long seize_new(struct helper_ctl *c, size_t first, size_t *settled)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    long held = 0;
    for (size_t i = first; i < a->count; i++) {
        struct hp_traced *t = &a->traced[i];
        /* A tid from the last stop's list that no longer names one of our threads. */
        long rc = hp_sys_failed(hp_sys3(SYS_tgkill, c->tgid, t->tid, 0))
                      ? -ESRCH : ptrace4(PTRACE_SEIZE, t->tid, 0, 0);
        if (rc == -EPERM) {
            /* A zombie (a leader that called pthread_exit) or an io_uring worker cannot be
             * seized: neither ever runs user code. */
            char st = hp_stop_task_state(c->tgid, t->tid);
            if (st == 'Z' || hp_stop_task_is_io_worker(c->tgid, t->tid))
                t->inert = true;                    /* still counted among the threads */
            if (t->inert || st == 'X' || st == 0)
                rc = -ESRCH;
        }
        if (rc == -ESRCH) {
            t->status = HP_TRACED_GONE;
            (*settled)++;
            continue;
        }
        if (hp_sys_failed(rc))
            return fail(c, STAGE_SEIZE, rc, t->tid);
        if (hp_sys_failed(hp_sys3(SYS_tgkill, c->tgid, t->tid, 0))) {
            /* Between the check and the seize the tid went to another process's thread
             * (an exit, a reap and a wrap of the pid space within microseconds): let it go. */
            let_foreign_go(t->tid);
            t->status = HP_TRACED_GONE;
            (*settled)++;
            continue;
        }
        t->status = HP_TRACED_SEIZED;
        rc = ptrace4(PTRACE_INTERRUPT, t->tid, 0, 0);
        if (hp_sys_failed(rc) && rc != -ESRCH)
            return fail(c, STAGE_INTERRUPT, rc, t->tid);
        held++;
    }
    return held;
}

HP_STOPPED_WINDOW static bool is_group_stop_signal(int sig)
{
    return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

/* Takes in what wait4 said of a held thread. */
HP_STOPPED_WINDOW static void note_status(struct hp_traced *t, int status, size_t *settled)
{
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
        if (t->status == HP_TRACED_SEIZED)
            (*settled)++;
        t->status = HP_TRACED_GONE;
        return;
    }
    if (!WIFSTOPPED(status) || t->status != HP_TRACED_SEIZED)
        return;
    int event = status >> 16, sig = WSTOPSIG(status);
    if (event == PTRACE_EVENT_STOP) {
        t->stop_kind = is_group_stop_signal(sig) ? HP_KIND_GROUP : HP_KIND_EVENT;
        t->inject = 0;
    } else if (event == 0) {
        t->stop_kind = HP_KIND_SIGNAL;      /* a signal arrived first: hand it back later */
        t->inject = sig;
    } else {
        t->stop_kind = HP_KIND_EVENT;
        t->inject = 0;
    }
    t->status = HP_TRACED_STOPPED;
    (*settled)++;
}

/*
 * Waits until every held thread has stopped or exited. Each thread is waited for by its tid:
 * the kernel finds it directly, where wait4(-1) would walk every tracee each time (quadratic).
 * Threads stop in about the order they were interrupted, so later waits mostly return at once.
 */
HP_STOPPED_WINDOW static int wait_all_stopped(struct helper_ctl *c, size_t first,
                                              size_t *settled)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    for (size_t i = first; i < a->count; i++) {
        struct hp_traced *t = &a->traced[i];
        for (int polls = 0; t->status == HP_TRACED_SEIZED; polls++) {
            int status = 0;
            long pid = hp_sys4(SYS_wait4, t->tid, (long)&status, __WALL | WNOHANG, 0);
            if (pid == 0) {
                /* Not stopped yet (running, or waiting for a CPU): yield to it a few times,
                 * then nap, and give up in time to let every held thread go ourselves (a
                 * killed helper would leave their EINTRs unrewound). */
                if (hp_stop_now_ns() > c->give_up_ns)
                    return fail(c, STAGE_WAIT, -ETIMEDOUT, t->tid);
                if (polls < 8) {
                    hp_sys0(SYS_sched_yield);
                } else {
                    struct timespec nap = {0, 50000};
                    hp_sys2(SYS_nanosleep, (long)&nap, 0);
                }
                continue;
            }
            if (pid == -EINTR)
                continue;
            if (pid == -ECHILD) {           /* no longer ours to wait for: it has gone */
                t->status = HP_TRACED_GONE;
                (*settled)++;
                break;
            }
            if (hp_sys_failed(pid))
                return fail(c, STAGE_WAIT, pid, t->tid);
            note_status(t, status, settled);
        }
    }
    return 0;
}

/* Threads of the process now (Threads: of /proc/PID/status), or -1. */
HP_STOPPED_WINDOW static long live_threads(pid_t tgid)
{
    char path[48], text[2048];
    long n = -1;
    hp_stop_proc_path(path, sizeof path, tgid, 0, "status");
    if (hp_stop_read_file(path, text, sizeof text) <= 0 || !hp_stop_status_dec(text, "Threads", &n))
        return -1;
    return n;
}

/* Keeps the tids the stop holds for the next one (nothing when memory cannot be had). */
HP_STOPPED_WINDOW static void remember_tids(void)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    if (a->count > last_tids_cap) {
        size_t cap = last_tids_cap ? last_tids_cap : 1024;
        while (cap < a->count)
            cap *= 2;
        long mem = hp_sys6(SYS_mmap, 0, (long)(cap * sizeof *last_tids), PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (hp_sys_failed(mem)) {
            n_last_tids = 0;
            return;
        }
        if (last_tids)
            hp_sys2(SYS_munmap, (long)last_tids, (long)(last_tids_cap * sizeof *last_tids));
        last_tids = (pid_t *)mem;
        last_tids_cap = cap;
    }
    for (size_t i = 0; i < a->count; i++)
        last_tids[i] = a->traced[i].tid;
    n_last_tids = a->count;
}

/* Puts the last stop's threads (but the caller) into the cleared arrays: the first guess. */
HP_STOPPED_WINDOW static bool guess_from_last(struct helper_ctl *c)
{
    if (!guess_last)
        return true;
    for (size_t i = 0; i < n_last_tids; i++)
        if (last_tids[i] != c->caller && hp_stop_add_tid(last_tids[i]) < 0)
            return false;
    return true;
}

HP_STOPPED_WINDOW static int helper_stop(struct helper_ctl *c)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    size_t settled = 0;
    struct hp_stop_profile *prof = &c->profile;
    long long t0 = hp_stop_now_ns(), t1;
    /* The first round takes the last stop's threads (already in the arrays) without listing. */
    for (bool guessed = a->count > 0;; guessed = false) {
        size_t first = guessed ? 0 : a->count;
        long added = guessed ? (long)a->count : hp_stop_list_new(c->tgid, c->caller);
        t1 = hp_stop_now_ns();
        prof->list_ns += t1 - t0;
        t0 = t1;
        if (added < 0)
            return fail(c, STAGE_LIST, added, 0);
        if (seize_new(c, first, &settled) < 0)
            return -1;
        t1 = hp_stop_now_ns();
        prof->seize_ns += t1 - t0;
        t0 = t1;
        if (wait_all_stopped(c, first, &settled) < 0)
            return -1;
        t1 = hp_stop_now_ns();
        prof->wait_ns += t1 - t0;
        t0 = t1;
        /* Every thread held is stopped and cannot create another: a listing that finds no
         * new thread now is final. The kernel's count of threads tells the same for less:
         * when it is the caller plus every thread held (stopped, or a zombie, or an io_uring
         * worker, all still counted), no other thread exists. */
        if (added == 0 && !guessed)
            break;
        size_t known = 1;
        for (size_t i = 0; i < a->count; i++)
            known += a->traced[i].status == HP_TRACED_STOPPED || a->traced[i].inert;
        long live = live_threads(c->tgid);
        t1 = hp_stop_now_ns();
        prof->list_ns += t1 - t0;
        t0 = t1;
        if (live == (long)known)
            break;
    }
    size_t kept = 0;
    for (size_t i = 0; i < a->count; i++) {
        struct hp_traced *t = &a->traced[i];
        if (t->status != HP_TRACED_STOPPED)
            continue;
        struct iovec iov = {&t->regs, sizeof t->regs};
        long rc = ptrace4(PTRACE_GETREGSET, t->tid, NT_PRSTATUS, (long)&iov);
        if (hp_sys_failed(rc)) {
            if (rc == -ESRCH) {     /* killed (SIGKILL) while stopped */
                t->status = HP_TRACED_GONE;
                continue;
            }
            return fail(c, STAGE_REGS, rc, t->tid);
        }
        t->have_regs = true;
        if (kept != i)
            hp_raw_copy(&a->traced[kept], t, sizeof *t);
        hp_raw_fill(&a->states[kept], 0, sizeof a->states[kept]);
        a->states[kept].tid = a->traced[kept].tid;
        struct hp_thread_state *st = &a->states[kept];
        st->n_regs = hp_arch_regs_to_state(&a->traced[kept].regs, &st->pc, &st->sp, st->regs,
                                           (int)(sizeof st->regs / sizeof st->regs[0]));
        kept++;
    }
    /* Entries past `kept` are gone or not stopped; detaching looks at every entry's status,
     * so keep the not-stopped ones out of the compacted range by marking them gone. */
    a->count = kept;
    remember_tids();
    prof->regs_ns += hp_stop_now_ns() - t0;
    prof->stops++;
    prof->threads += kept;
    return 0;
}

/* Lets one stopped thread go. A system call the stop made fail with EINTR is handed back to
 * the kernel's restart (x86_64_restart.c): restarted, unless a handler runs first, in which
 * case the EINTR is the handler's signal's, as it would have been without the stop. A signal
 * the thread was stopped with is handed back. */
HP_STOPPED_WINDOW static void release_one(struct helper_ctl *c, struct hp_traced *t)
{
    if (!t->have_regs) {        /* a stop that failed before it read them */
        struct iovec iov = {&t->regs, sizeof t->regs};
        t->have_regs = !hp_sys_failed(ptrace4(PTRACE_GETREGSET, t->tid, NT_PRSTATUS, (long)&iov));
    }
    if (t->have_regs && hp_arch_interrupted_eintr(&t->regs) &&
        (t->stop_kind == HP_KIND_EVENT || t->stop_kind == HP_KIND_SIGNAL)) {
        struct user_regs_struct regs;
        hp_raw_copy(&regs, &t->regs, sizeof regs);
        hp_arch_rewind_syscall(&regs);
        struct iovec iov = {&regs, sizeof regs};
        if (!hp_sys_failed(ptrace4(PTRACE_SETREGSET, t->tid, NT_PRSTATUS, (long)&iov)))
            c->rewound++;
    }
    ptrace4(PTRACE_DETACH, t->tid, 0, t->inject);
    t->status = HP_TRACED_DETACHED;
}

/*
 * Lets every stopped thread go: first those that were blocked in a system call (they go back
 * to sleep at once), last those that were running, which would otherwise take the CPU from the
 * helper while it still has threads to let go.
 */
HP_STOPPED_WINDOW static void helper_release(struct helper_ctl *c, size_t n)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    long long t0 = hp_stop_now_ns();
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            struct hp_traced *t = &a->traced[i];
            bool in_syscall = (long)t->regs.orig_rax >= 0;
            if (t->status == HP_TRACED_STOPPED && in_syscall == (pass == 0))
                release_one(c, t);
        }
    }
    c->profile.release_ns += hp_stop_now_ns() - t0;
}

/* While the helper holds threads: false when the process it serves has gone (its threads
 * died, or it ran execve and has other memory now: the helper would hold the old one). */
HP_STOPPED_WINDOW static bool process_alive(struct helper_ctl *c)
{
    long rc = hp_sys2(SYS_kill, c->tgid, 0);
    if (rc == -ESRCH)
        return false;
    long same = hp_sys5(SYS_kcmp, hp_sys0(SYS_getpid), c->tgid, 0 /* KCMP_VM */, 0, 0);
    return same <= 0;   /* 0: the same memory; < 0: kcmp unavailable, assume so */
}

HP_STOPPED_WINDOW static void set_state(struct helper_ctl *c, int state)
{
    atomic_store(&c->state, state);
    futex_wake(&c->state);
}

/* The kernel's struct sched_attr (sched_setattr). */
struct hp_sched_attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
};

/*
 * Asks for a short scheduler slice (Linux 6.12: a fair task's sched_runtime is its slice, and
 * a task with a shorter one preempts on wakeup): the helper then runs at once when woken, even
 * when every CPU is busy with the program's threads, instead of waiting for one of them to use
 * up its slice. Ignored by older kernels; needs no privilege; the nice value is kept.
 */
HP_STOPPED_WINDOW static void ask_short_slice(void)
{
    long prio = hp_sys2(SYS_getpriority, 0 /* PRIO_PROCESS */, 0);
    struct hp_sched_attr attr;
    hp_raw_fill(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.policy = 0;                                   /* SCHED_OTHER */
    attr.nice = hp_sys_failed(prio) ? 0 : (int32_t)(20 - prio);
    attr.runtime = 100000;                             /* 0.1 ms, the shortest allowed */
    hp_sys3(SYS_sched_setattr, 0, (long)&attr, 0);
}

HP_STOPPED_WINDOW static void helper_loop(struct helper_ctl *c)
{
    struct rlimit no_core = {0, 0};
    hp_sys4(SYS_prlimit64, 0, RLIMIT_CORE, (long)&no_core, 0);
    ask_short_slice();
    if (!c->orphan) {
        hp_sys2(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL);
        if (hp_sys0(SYS_getppid) != c->tgid)
            return;                                 /* the process is gone already */
    }
    struct hp_stop_arrays *a = &hp_stop_arrays;
    for (;;) {
        int s = atomic_load(&c->state);
        switch (s) {
        case H_IDLE: {
            long rc = futex_wait(&c->state, H_IDLE, HELPER_IDLE_NS, true);
            int idle = H_IDLE;
            if (rc == -ETIMEDOUT && atomic_compare_exchange_strong(&c->state, &idle, H_EXITING))
                return;
            break;
        }
        case H_REQUEST:
            hp_stop_clear();
            if (!hp_stop_reserve(c->expect) || !guess_from_last(c)) {
                fail(c, STAGE_LIST, -ENOMEM, 0);
                set_state(c, H_FAILED);
            } else if (helper_stop(c) != 0) {
                helper_release(c, a->count);
                bool still_held = false;
                for (size_t i = 0; i < a->count; i++)
                    still_held |= a->traced[i].status == HP_TRACED_SEIZED;
                set_state(c, H_FAILED);
                if (still_held)
                    return;     /* PTRACE_DETACH needs a stop: our exit lets them go */
            } else {
                set_state(c, H_STOPPED);
            }
            break;
        case H_STOPPED:
        case H_FAILED:
            if (futex_wait(&c->state, s, LIVENESS_NS, true) == -ETIMEDOUT && !process_alive(c))
                return;
            break;
        case H_RELEASE:
        case H_RELEASE_THEN_REQUEST:
            helper_release(c, a->count);
            if (!c->orphan) {
                set_state(c, H_EXITING);            /* a direct child lives for one stop */
                return;
            }
            int releasing = H_RELEASE;
            if (!atomic_compare_exchange_strong(&c->state, &releasing, H_IDLE))
                atomic_store(&c->state, H_REQUEST);     /* RELEASE_THEN_REQUEST */
            futex_wake(&c->state);
            break;
        default:
            return;
        }
    }
}

/* Entered from hp_arch_clone_helper on a stack of its own: the intermediate process clones
 * the helper and exits at once, so that the helper is orphaned (its parent becomes init,
 * which reaps it, with SIGCHLD: the kernel gives orphans that exit signal) and never waits as
 * a zombie among the program's children. */
HP_STOPPED_WINDOW __attribute__((visibility("hidden"), used)) void
hp_stop_helper_entry(void *arg);
HP_STOPPED_WINDOW void hp_stop_helper_entry(void *arg)
{
    struct helper_ctl *c = arg;
    if (c->role == ROLE_INTERMEDIATE) {
        c->role = ROLE_HELPER;
        unsigned long flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_UNTRACED |
                              CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;
        long tid = hp_arch_clone_helper(flags, helper_stack + HELPER_STACK, (int *)&c->alive, c);
        if (hp_sys_failed(tid))
            c->err = (int)-tid;
        return;
    }
    helper_loop(c);
}

/* ---- the engine's side of the window -------------------------------------------------------- */

/* Waits until the helper has exited (the kernel clears its tid word), killing it when it has
 * not within ns (a killed tracer lets every thread it holds go); reaps a direct child. */
HP_STOPPED_WINDOW static void end_helper(long long ns)
{
    int tid = atomic_load(&ctl.alive);
    long long deadline = hp_stop_now_ns() + ns;
    bool killed = false;
    int v;
    while ((v = atomic_load(&ctl.alive)) != 0) {
        long long left = deadline - hp_stop_now_ns();
        if (left <= 0 && !killed) {
            hp_sys2(SYS_kill, v, SIGKILL);
            killed = true;
            left = 10000000;
        }
        futex_wait(&ctl.alive, v, left > 10000000 || left <= 0 ? 10000000 : (long)left, false);
    }
    if (!ctl.orphan && tid > 0) {
        int status;
        while (hp_sys4(SYS_wait4, tid, (long)&status, __WCLONE, 0) == -EINTR)
            ;
        return;
    }
    /* The kernel clears the tid word before the exiting helper lets go of the threads it
     * traces: until it is a zombie (or reaped by init), a new helper's seize would find them
     * taken. A short wait, bounded. */
    for (int i = 0; tid > 0 && i < 2000; i++) {
        char st = hp_stop_task_state(tid, 0);
        if (st == 0 || st == 'Z' || st == 'X')
            break;
        struct timespec nap = {0, 50000};
        hp_sys2(SYS_nanosleep, (long)&nap, 0);
    }
}

/* Starts a helper in state IDLE; false with ctl.err when it cannot be started. */
HP_STOPPED_WINDOW static bool spawn_helper(void)
{
    atomic_store(&ctl.state, H_IDLE);
    atomic_store(&ctl.alive, 0);
    ctl.owner = ctl.tgid;
    ctl.orphan = !subreaper;
    ctl.err = 0;
    ctl.helpers++;
    sigset_t all, old;
    hp_raw_fill(&all, 0xff, sizeof all);
    hp_sys4(SYS_rt_sigprocmask, SIG_SETMASK, (long)&all, (long)&old, 8);
    long child;
    if (ctl.orphan) {
        ctl.role = ROLE_INTERMEDIATE;
        child = hp_arch_clone_helper(CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_UNTRACED,
                                     spawn_stack + 16384, NULL, &ctl);
    } else {
        ctl.role = ROLE_HELPER;
        child = hp_arch_clone_helper(CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_UNTRACED |
                                         CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID,
                                     helper_stack + HELPER_STACK, (int *)&ctl.alive, &ctl);
    }
    hp_sys4(SYS_rt_sigprocmask, SIG_SETMASK, (long)&old, 0, 8);
    if (hp_sys_failed(child)) {
        ctl.err = (int)-child;
        return false;
    }
    if (ctl.orphan) {
        int status;
        while (hp_sys4(SYS_wait4, child, (long)&status, __WCLONE, 0) == -EINTR)
            ;
        if (atomic_load(&ctl.alive) == 0) {
            if (!ctl.err)
                ctl.err = ECHILD;
            return false;
        }
    }
    if (yama_scope == 1 &&
        hp_sys_failed(hp_sys2(SYS_prctl, PR_SET_PTRACER, atomic_load(&ctl.alive)))) {
        /* Yama allows a tracer that is an ancestor or that the tracee names; the helper is
         * neither until named. The exception goes away when the helper exits. */
        end_helper(0);
        ctl.err = EPERM;
        return false;
    }
    return true;
}

/* Hands the request to an idle helper (starting one when there is none). 0, or -1 with
 * ctl.stage/err set. */
HP_STOPPED_WINDOW static int request_stop(long long deadline)
{
    if (ctl.owner != ctl.tgid) {
        /* A fork's child: the helper in its memory serves the parent, and the threads it
         * remembers are the parent's. */
        atomic_store(&ctl.alive, 0);
        ctl.owner = 0;
        n_last_tids = 0;
    }
    for (;;) {
        if (hp_stop_now_ns() > deadline) {
            end_helper(0);
            ctl.stage = STAGE_NONE;
            ctl.err = ETIMEDOUT;
            return -1;
        }
        if (atomic_load(&ctl.alive) == 0) {
            if (!spawn_helper()) {
                ctl.stage = STAGE_NONE;
                return -1;
            }
            continue;
        }
        int s = atomic_load(&ctl.state);
        if (s == H_IDLE) {
            if (atomic_compare_exchange_strong(&ctl.state, &s, H_REQUEST)) {
                futex_wake(&ctl.state);
                return 0;
            }
        } else if (s == H_RELEASE) {
            /* The last stop's threads are being let go: the helper goes on to this one. */
            if (atomic_compare_exchange_strong(&ctl.state, &s, H_RELEASE_THEN_REQUEST))
                return 0;
        } else if (s == H_EXITING) {
            end_helper(1000000000LL);
        } else {
            end_helper(0);                                 /* not where it should be */
        }
    }
}

/* Waits until the helper holds every thread. 0; or -1 (failed: ctl says why; or the helper
 * died or was killed at the deadline), every thread running again. */
HP_STOPPED_WINDOW static int stop_window(long long deadline, bool *killed)
{
    *killed = false;
    if (request_stop(deadline) != 0)
        return -1;
    int s;
    while (((s = atomic_load(&ctl.state)) == H_REQUEST || s == H_RELEASE_THEN_REQUEST) &&
           atomic_load(&ctl.alive)) {
        long long left = deadline - hp_stop_now_ns();
        if (left <= 0)
            break;
        futex_wait(&ctl.state, s, left > 5000000 ? 5000000 : (long)left, true);
    }
    if (s == H_STOPPED)
        return 0;
    if (s == H_FAILED) {
        if (ctl.stage == STAGE_WAIT && ctl.err == ETIMEDOUT) {
            end_helper(1000000000LL);       /* it let the stopped go, and exits for the rest */
            return -1;
        }
        set_state(&ctl, H_IDLE);            /* the helper let every thread go already */
        return -1;
    }
    *killed = atomic_load(&ctl.alive) != 0;
    end_helper(0);                           /* late or dead: killing it lets them go */
    return -1;
}

/* Waits until the helper holds no thread (it lets the last stop's threads go on its own):
 * before the signal stop, and before anything that needs every thread running. */
HP_STOPPED_WINDOW void hp_ptrace_quiesce(void)
{
    int s;
    long long deadline = hp_stop_now_ns() + 10LL * 1000000000LL;
    while (ctl.owner == ctl.tgid && atomic_load(&ctl.alive) &&
           (s = atomic_load(&ctl.state)) == H_RELEASE) {
        if (hp_stop_now_ns() > deadline) {
            end_helper(0);
            return;
        }
        futex_wait(&ctl.state, s, 1000000, true);
    }
}

/* When libhotpatch is unloaded (or the process exits normally), an idle helper is told to
 * exit and waited for: it must not run code that is about to be unmapped. */
__attribute__((destructor)) static void end_idle_helper(void)
{
    if (ctl.owner != getpid() || !atomic_load(&ctl.alive))
        return;
    hp_ptrace_quiesce();
    int idle = H_IDLE;
    if (atomic_compare_exchange_strong(&ctl.state, &idle, H_EXITING)) {
        futex_wake(&ctl.state);
        end_helper(100000000LL);
    }
}

HP_STOPPED_WINDOW void hp_ptrace_resume(void)
{
    int s = H_STOPPED;
    if (!atomic_compare_exchange_strong(&ctl.state, &s, H_RELEASE))
        return;
    futex_wake(&ctl.state);
    /* The helper lets the threads go on its own; the next stop waits for it. A direct child
     * (in a process that adopts orphans) exits after one stop: reap it now. */
    if (!ctl.orphan)
        end_helper(10LL * 1000000000LL);
}

/* ---- before and after the window (ordinary code) ------------------------------------------ */

static bool kernel_at_least(int major, int minor)
{
    struct utsname u;
    int ma = 0, mi = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
        return false;
    return ma > major || (ma == major && mi >= minor);
}

static void check_once(void)
{
    if (checked)
        return;
    checked = true;
    char text[64];
    long n = hp_stop_read_file("/proc/sys/kernel/yama/ptrace_scope", text, sizeof text);
    yama_scope = n > 0 ? atoi(text) : -1;
    /* Before Linux 5.16 a core dump stopped every process sharing the memory, so a helper
     * killed by a seccomp filter (SIGSYS dumps core) would take the program with it. */
    char status[8192];
    long seccomp = 0;
    if (hp_stop_read_file("/proc/self/status", status, sizeof status) > 0 &&
        hp_stop_status_dec(status, "Seccomp", &seccomp) && seccomp == 1)
        snprintf(unusable, sizeof unusable, "the process runs in seccomp strict mode");
    if (seccomp == 2 && !kernel_at_least(5, 16))
        snprintf(unusable, sizeof unusable, "a seccomp filter on a kernel older than 5.16 (a "
                 "helper it killed could take the process with it)");
    if (yama_scope >= 3)
        snprintf(unusable, sizeof unusable, "Yama ptrace_scope is %d: no process may use "
                 "ptrace", yama_scope);
    if (!unusable[0]) {
        helper_stack = mmap(NULL, HELPER_STACK + 4096, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (helper_stack == MAP_FAILED) {
            helper_stack = NULL;
            snprintf(unusable, sizeof unusable, "no memory for the ptrace helper's stack");
        } else {
            mprotect(helper_stack, 4096, PROT_NONE);    /* a guard page below it */
            helper_stack += 4096;
        }
        spawn_stack = mmap(NULL, 16384, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (spawn_stack == MAP_FAILED) {
            spawn_stack = NULL;
            snprintf(unusable, sizeof unusable, "no memory for the ptrace helper's stack");
        }
        /* A process that adopts orphans (PR_SET_CHILD_SUBREAPER) would adopt the helper and
         * get SIGCHLD for it: there the helper stays our child, with no exit signal. */
        int adopts = 0;
        subreaper = prctl(PR_GET_CHILD_SUBREAPER, &adopts, 0, 0, 0) == 0 && adopts;
    }
}

const char *hp_ptrace_unusable(void)
{
    check_once();
    return unusable[0] ? unusable : NULL;
}

static bool has_cap_sys_ptrace(const char *status)
{
    unsigned long long eff = 0;
    return hp_stop_status_hex(status, "CapEff", &eff) && (eff >> CAP_SYS_PTRACE_BIT & 1);
}

static const char *stage_name(int stage)
{
    switch (stage) {
    case STAGE_LIST: return "listing /proc/self/task";
    case STAGE_SEIZE: return "PTRACE_SEIZE";
    case STAGE_INTERRUPT: return "PTRACE_INTERRUPT";
    case STAGE_WAIT: return "wait4";
    case STAGE_REGS: return "PTRACE_GETREGSET";
    default: return "starting the helper";
    }
}

/* The tracer of a thread (TracerPid), 0 when none or unknown. */
static long tracer_of(pid_t tid)
{
    char path[64], text[4096];
    long tracer = 0;
    hp_stop_proc_path(path, sizeof path, getpid(), tid, "status");
    if (hp_stop_read_file(path, text, sizeof text) > 0)
        hp_stop_status_dec(text, "TracerPid", &tracer);
    return tracer;
}

static void explain_failure(struct hp_stopped *out, int timeout_ms, bool killed,
                            enum hp_stop_failure *kind)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    if (killed) {
        /* Killed at the deadline: name a thread that had not stopped. */
        for (size_t i = 0; i < a->count; i++) {
            if (a->traced[i].status != HP_TRACED_SEIZED)
                continue;
            pid_t tid = a->traced[i].tid;
            char state = hp_stop_task_state(getpid(), tid);
            out->missing = tid;
            *kind = HP_STOP_FAIL_BUSY;
            snprintf(out->why, sizeof out->why, "thread %d did not stop within %d ms (state "
                     "%c%s)", tid, timeout_ms, state ? state : '?',
                     state == 'D' ? ": in an uninterruptible system call" : "");
            return;
        }
        *kind = HP_STOP_FAIL_BUSY;
        snprintf(out->why, sizeof out->why, "the ptrace helper did not stop the threads within "
                 "%d ms", timeout_ms);
        return;
    }
    if (ctl.stage == STAGE_WAIT && ctl.err == ETIMEDOUT) {
        char state = hp_stop_task_state(getpid(), ctl.fail_tid);
        out->missing = ctl.fail_tid;
        *kind = HP_STOP_FAIL_BUSY;
        snprintf(out->why, sizeof out->why, "thread %d did not stop within %d ms (state %c%s)",
                 ctl.fail_tid, timeout_ms * 4 / 5, state ? state : '?',
                 state == 'D' ? ": in an uninterruptible system call" : "");
        return;
    }
    if (ctl.stage == STAGE_NONE && ctl.err == ETIMEDOUT) {
        *kind = HP_STOP_FAIL_BUSY;
        snprintf(out->why, sizeof out->why, "the ptrace helper was busy for %d ms", timeout_ms);
        return;
    }
    if (ctl.stage == STAGE_NONE && ctl.err) {
        *kind = HP_STOP_FAIL_REFUSED;
        snprintf(out->why, sizeof out->why, "cannot start the ptrace helper: %s%s",
                 strerror(ctl.err), ctl.err == EPERM && yama_scope == 1
                                        ? " (Yama ptrace_scope 1: PR_SET_PTRACER refused)"
                                        : "");
        return;
    }
    if (ctl.stage == STAGE_NONE) {
        *kind = HP_STOP_FAIL_REFUSED;
        snprintf(out->why, sizeof out->why, "the ptrace helper died (killed, or by a seccomp "
                 "filter)");
        return;
    }
    if (ctl.stage == STAGE_SEIZE && (ctl.err == EPERM || ctl.err == EACCES)) {
        long tracer = ctl.fail_tid ? tracer_of(ctl.fail_tid) : 0;
        if (tracer) {
            *kind = HP_STOP_FAIL_NOT_NOW;
            snprintf(out->why, sizeof out->why, "thread %d is traced by process %ld (a "
                     "debugger)", ctl.fail_tid, tracer);
            return;
        }
        *kind = HP_STOP_FAIL_REFUSED;
        snprintf(out->why, sizeof out->why, "ptrace is not permitted here (%s: %s%s)",
                 stage_name(ctl.stage), strerror(ctl.err),
                 yama_scope == 2 ? "; Yama ptrace_scope 2 needs CAP_SYS_PTRACE"
                 : yama_scope == 1 ? "; Yama ptrace_scope 1"
                                   : "; an LSM, or the process is not dumpable");
        return;
    }
    *kind = ctl.err == ENOMEM ? HP_STOP_FAIL_BUSY : HP_STOP_FAIL_REFUSED;
    if (ctl.fail_tid)
        snprintf(out->why, sizeof out->why, "the ptrace stop failed: %s of thread %d: %s",
                 stage_name(ctl.stage), ctl.fail_tid, strerror(ctl.err));
    else
        snprintf(out->why, sizeof out->why, "the ptrace stop failed: %s: %s",
                 stage_name(ctl.stage), strerror(ctl.err));
}

int hp_ptrace_stop(struct hp_stopped *out, int timeout_ms, enum hp_stop_failure *kind)
{
    *kind = HP_STOP_FAIL_NONE;
    if (hp_ptrace_unusable()) {
        *kind = HP_STOP_FAIL_REFUSED;
        snprintf(out->why, sizeof out->why, "%s", unusable);
        return -1;
    }
    char status[8192];
    long tracer = 0, threads = 0;
    if (hp_stop_read_file("/proc/self/status", status, sizeof status) <= 0) {
        *kind = HP_STOP_FAIL_REFUSED;
        snprintf(out->why, sizeof out->why, "cannot read /proc/self/status");
        return -1;
    }
    /* While our helper is still letting the last stop's threads go, the main thread shows it
     * as its tracer (request_stop then hands it this stop directly), or, for an instant while
     * the kernel unlinks it, its real parent. Taking either for a debugger would send this
     * stop to the signal fallback, whose EINTRs the program would see: a tracer that is not
     * the helper is believed only once the helper holds nothing. */
    bool traced = hp_stop_status_dec(status, "TracerPid", &tracer) && tracer != 0 &&
                  !(ctl.owner == getpid() && tracer == atomic_load(&ctl.alive));
    if (traced) {
        hp_ptrace_quiesce();
        traced = hp_stop_read_file("/proc/self/status", status, sizeof status) > 0 &&
                 hp_stop_status_dec(status, "TracerPid", &tracer) && tracer != 0;
    }
    if (traced) {
        *kind = HP_STOP_FAIL_NOT_NOW;
        snprintf(out->why, sizeof out->why, "the process is traced by process %ld (a debugger)",
                 tracer);
        return -1;
    }
    if (yama_scope == 2 && !has_cap_sys_ptrace(status)) {
        *kind = HP_STOP_FAIL_REFUSED;
        snprintf(out->why, sizeof out->why, "Yama ptrace_scope 2 allows ptrace only with "
                 "CAP_SYS_PTRACE");
        return -1;
    }
    /* The arrays belong to the helper until it is idle again (it may still be letting the
     * last stop's threads go): it clears and sizes them itself. */
    hp_stop_status_dec(status, "Threads", &threads);
    ctl.expect = (size_t)threads + (size_t)threads / 4 + 64;
    ctl.tgid = getpid();
    ctl.caller = (pid_t)hp_sys0(SYS_gettid);
    ctl.stage = STAGE_NONE;
    ctl.err = 0;
    ctl.fail_tid = 0;
    if (yama_scope == 1 && has_cap_sys_ptrace(status))
        yama_scope = 0;   /* CAP_SYS_PTRACE passes Yama: no exception needed */
    bool killed = false;
    /* Stopping costs wakeups per thread: a big process gets at least 0.2 ms per thread. */
    if (threads / 5 > timeout_ms)
        timeout_ms = (int)(threads / 5);
    long long deadline = hp_stop_now_ns() + (long long)timeout_ms * 1000000;
    /* The helper gives up first, with time left to let every thread go itself. */
    ctl.give_up_ns = deadline - (long long)timeout_ms * 200000;
    if (stop_window(deadline, &killed) == 0) {
        out->threads = hp_stop_arrays.states;
        out->count = hp_stop_arrays.count;
        return 0;
    }
    explain_failure(out, timeout_ms, killed, kind);
    return -1;
}

unsigned long hp_ptrace_rewound(void)
{
    return ctl.rewound;
}

unsigned long hp_ptrace_helpers(void)
{
    return ctl.helpers;
}

void hp_ptrace_profile(struct hp_stop_profile *out)
{
    *out = ctl.profile;
}

void hp_ptrace_guess_last_threads(bool on)
{
    guess_last = on;
}


HP_STOPPED_WINDOW size_t hp_ptrace_owned_ranges(struct hp_range *out, size_t cap)
{
    size_t n = 0;
    if (helper_stack && n < cap)
        out[n++] = (struct hp_range){(uintptr_t)helper_stack - 4096,
                                     (uintptr_t)helper_stack + HELPER_STACK};
    if (spawn_stack && n < cap)
        out[n++] = (struct hp_range){(uintptr_t)spawn_stack, (uintptr_t)spawn_stack + 16384};
    return n;
}
