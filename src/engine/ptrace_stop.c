/*
 * ptrace_stop.c — the primary thread stop: a helper process that holds every other thread
 * with ptrace (the design argument is in stop.c's header).
 *
 * Life of one stop (engine lock held throughout):
 *   engine thread                                helper (a separate thread group, same memory)
 *   prepare: read /proc/self/status (a tracer?
 *     seccomp? capabilities), size the arrays
 *   clone the helper, every signal blocked  ---> prlimit(RLIMIT_CORE, 0), PDEATHSIG, wait `go`
 *   PR_SET_PTRACER when Yama needs it, go=1 ---> list /proc/PID/task; SEIZE + INTERRUPT each
 *                                                new thread; wait4 until every one is stopped;
 *                                                list again until nothing is new; GETREGSET
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
 * State: ctl, the helper's stack and the Yama/seccomp facts, owned by the engine lock.
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

enum phase { PHASE_STARTING, PHASE_STOPPED, PHASE_FAILED, PHASE_DONE };
enum stage { STAGE_NONE, STAGE_LIST, STAGE_SEIZE, STAGE_INTERRUPT, STAGE_WAIT, STAGE_REGS };

struct helper_ctl {
    _Atomic int phase;          /* futex: enum phase, written by the helper */
    _Atomic int go;             /* futex: 1 go, 2 abort (engine -> helper before the stop) */
    _Atomic int command;        /* futex: 1 resume */
    _Atomic int alive;          /* the helper's tid while it lives; 0 after (kernel) */
    pid_t tgid, caller;
    int stage, err;             /* where and why it failed */
    pid_t fail_tid;
    char fail_state;
    unsigned long rewound;      /* system calls rewound, all stops (tests) */
    long long t_clone, t_start, t_listed, t_stopped, t_resume, t_released;   /* bench */
};

static struct helper_ctl ctl;
static uint8_t *helper_stack;
static int yama_scope = -1;     /* -1 unknown/none */
static bool seccomp_risky;      /* seccomp filter on a kernel that dumps core across mms */
static char unusable[160];      /* why ptrace can never work here ("" = it may) */
static bool checked;
static bool set_ptracer;        /* this stop set PR_SET_PTRACER */
static long helper_tid;

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

/* Seizes and interrupts entries [first, count). Returns how many more are now held, or -1. */
HP_STOPPED_WINDOW static long seize_new(struct helper_ctl *c, size_t first, size_t *settled)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    long held = 0;
    for (size_t i = first; i < a->count; i++) {
        struct hp_traced *t = &a->traced[i];
        long rc = ptrace4(PTRACE_SEIZE, t->tid, 0, 0);
        if (rc == -EPERM) {
            /* A zombie (a leader that called pthread_exit) or an io_uring worker cannot be
             * seized: neither ever runs user code. */
            char st = hp_stop_task_state(c->tgid, t->tid);
            if (st == 'Z' || st == 'X' || st == 0 || hp_stop_task_is_io_worker(c->tgid, t->tid))
                rc = -ESRCH;
        }
        if (rc == -ESRCH) {
            t->status = HP_TRACED_GONE;
            (*settled)++;
            continue;
        }
        if (hp_sys_failed(rc))
            return fail(c, STAGE_SEIZE, rc, t->tid);
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

/* Waits until every held thread has stopped or exited. */
HP_STOPPED_WINDOW static int wait_all_stopped(struct helper_ctl *c, size_t *settled)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    while (*settled < a->count) {
        int status = 0;
        long pid = hp_sys4(SYS_wait4, -1, (long)&status, __WALL, 0);
        if (pid == -EINTR)
            continue;
        if (pid == -ECHILD) {
            /* Nothing traced is left: whatever is still "seized" has gone. */
            for (size_t i = 0; i < a->count; i++)
                if (a->traced[i].status == HP_TRACED_SEIZED)
                    a->traced[i].status = HP_TRACED_GONE;
            *settled = a->count;
            return 0;
        }
        if (hp_sys_failed(pid))
            return fail(c, STAGE_WAIT, pid, 0);
        long idx = hp_stop_index_of((pid_t)pid);
        if (idx < 0)
            continue;
        struct hp_traced *t = &a->traced[idx];
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
            if (t->status == HP_TRACED_SEIZED)
                (*settled)++;
            t->status = HP_TRACED_GONE;
            continue;
        }
        if (!WIFSTOPPED(status) || t->status != HP_TRACED_SEIZED)
            continue;
        int event = status >> 16, sig = WSTOPSIG(status);
        if (event == PTRACE_EVENT_STOP) {
            t->stop_kind = is_group_stop_signal(sig) ? HP_KIND_GROUP : HP_KIND_EVENT;
            t->inject = 0;
        } else if (event == 0) {
            t->stop_kind = HP_KIND_SIGNAL;   /* a signal arrived first: hand it back later */
            t->inject = sig;
        } else {
            t->stop_kind = HP_KIND_EVENT;
            t->inject = 0;
        }
        t->status = HP_TRACED_STOPPED;
        (*settled)++;
    }
    return 0;
}

HP_STOPPED_WINDOW static int helper_stop(struct helper_ctl *c)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    size_t settled = 0;
    for (;;) {
        size_t first = a->count;
        long added = hp_stop_list_new(c->tgid, c->caller);
        if (added < 0)
            return fail(c, STAGE_LIST, added, 0);
        if (first == 0)
            c->t_listed = hp_stop_now_ns();
        if (seize_new(c, first, &settled) < 0 || wait_all_stopped(c, &settled) < 0)
            return -1;
        /* Every thread held is stopped and cannot create another: a listing that finds no
         * new thread now is final. */
        if (added == 0)
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
    return 0;
}

/* The default action of these is to do nothing: pending, they would not have interrupted. */
#define DEFAULT_IGNORED                                                                       \
    ((1ULL << (SIGCHLD - 1)) | (1ULL << (SIGCONT - 1)) | (1ULL << (SIGURG - 1)) |             \
     (1ULL << (SIGWINCH - 1)))

/*
 * True when a signal that would do something (run a handler, stop or end the process) is
 * pending for the thread and not blocked by it, counting `inject`, the one it was stopped
 * with: then the EINTR it got belongs to that signal, as it would have without us.
 */
HP_STOPPED_WINDOW static bool live_signal_pending(pid_t tgid, pid_t tid, int inject)
{
    char path[64], text[4096];
    hp_stop_proc_path(path, sizeof path, tgid, tid, "status");
    if (hp_stop_read_file(path, text, sizeof text) <= 0)
        return true;
    unsigned long long pnd = 0, shd = 0, blk = 0, ign = 0, cgt = 0;
    if (!hp_stop_status_hex(text, "SigPnd", &pnd) || !hp_stop_status_hex(text, "ShdPnd", &shd) ||
        !hp_stop_status_hex(text, "SigBlk", &blk) || !hp_stop_status_hex(text, "SigIgn", &ign) ||
        !hp_stop_status_hex(text, "SigCgt", &cgt))
        return true;
    unsigned long long pending = pnd | shd;
    if (inject > 0 && inject <= 64)
        pending |= 1ULL << (inject - 1);
    unsigned long long inert = ign | (DEFAULT_IGNORED & ~cgt);
    return (pending & ~blk & ~inert) != 0;
}

HP_STOPPED_WINDOW static bool signal_is_inert(pid_t tgid, int sig)
{
    char path[48], text[4096];
    hp_stop_proc_path(path, sizeof path, tgid, 0, "status");
    unsigned long long ign = 0, cgt = 0;
    if (hp_stop_read_file(path, text, sizeof text) <= 0 ||
        !hp_stop_status_hex(text, "SigIgn", &ign) || !hp_stop_status_hex(text, "SigCgt", &cgt))
        return false;
    unsigned long long bit = 1ULL << (sig - 1);
    return (ign & bit) || ((DEFAULT_IGNORED & bit) && !(cgt & bit));
}

/* Lets every stopped thread go, rewinding the system calls the stop made fail with EINTR. */
HP_STOPPED_WINDOW static void helper_release(struct helper_ctl *c, size_t n)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    for (size_t i = 0; i < n; i++) {
        struct hp_traced *t = &a->traced[i];
        if (t->status != HP_TRACED_STOPPED)
            continue;
        /* A signal-delivery-stop for a signal that does nothing (ignored: only queued because
         * we trace the thread) interrupted the call as our interrupt would have. */
        bool ours = t->stop_kind == HP_KIND_EVENT ||
                    (t->stop_kind == HP_KIND_SIGNAL && signal_is_inert(c->tgid, t->inject));
        if (ours && hp_arch_interrupted_eintr(&t->regs) &&
            !live_signal_pending(c->tgid, t->tid, t->inject)) {
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
}

/* Entered from hp_arch_clone_helper on the helper's stack. */
HP_STOPPED_WINDOW __attribute__((visibility("hidden"), used)) void
hp_stop_helper_entry(void *arg);
HP_STOPPED_WINDOW void hp_stop_helper_entry(void *arg)
{
    struct helper_ctl *c = arg;
    struct rlimit no_core = {0, 0};
    hp_sys4(SYS_prlimit64, 0, RLIMIT_CORE, (long)&no_core, 0);
    hp_sys2(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL);
    c->t_start = hp_stop_now_ns();
    if (hp_sys0(SYS_getppid) != c->tgid)
        return;                                     /* the process is gone already */
    while (atomic_load(&c->go) == 0)
        futex_wait(&c->go, 0, -1, true);
    if (atomic_load(&c->go) != 1)
        return;
    struct hp_stop_arrays *a = &hp_stop_arrays;
    if (helper_stop(c) != 0) {
        helper_release(c, a->count);
        atomic_store(&c->phase, PHASE_FAILED);
        futex_wake(&c->phase);
        return;
    }
    c->t_stopped = hp_stop_now_ns();
    atomic_store(&c->phase, PHASE_STOPPED);
    futex_wake(&c->phase);
    while (atomic_load(&c->command) == 0)
        futex_wait(&c->command, 0, -1, true);
    c->t_resume = hp_stop_now_ns();
    helper_release(c, a->count);
    c->t_released = hp_stop_now_ns();
    atomic_store(&c->phase, PHASE_DONE);
}

/* ---- the engine's side of the window -------------------------------------------------------- */

/* Waits until the helper has exited (its tid word is cleared by the kernel), then reaps it;
 * kills it first when it does not exit within ns (which lets every thread it holds go). */
HP_STOPPED_WINDOW static int reap_helper(long tid, long long ns)
{
    long long deadline = hp_stop_now_ns() + ns;
    int v;
    while ((v = atomic_load(&ctl.alive)) != 0) {
        long long left = deadline - hp_stop_now_ns();
        if (left <= 0) {
            hp_sys2(SYS_kill, tid, SIGKILL);
            deadline = hp_stop_now_ns() + 10LL * 1000000000LL;
            continue;
        }
        futex_wait(&ctl.alive, v, left > 10000000 ? 10000000 : (long)left, false);
    }
    int status = 0;
    long rc;
    while ((rc = hp_sys4(SYS_wait4, tid, (long)&status, __WCLONE, 0)) == -EINTR)
        ;
    return rc == tid ? status : -1;
}

/* Clones the helper and waits until it holds every thread; 0, or the failure's phase. */
HP_STOPPED_WINDOW static int stop_window(long long deadline, int *helper_status)
{
    sigset_t all, old;
    hp_raw_fill(&all, 0xff, sizeof all);
    hp_sys4(SYS_rt_sigprocmask, SIG_SETMASK, (long)&all, (long)&old, 8);
    ctl.t_clone = hp_stop_now_ns();
    unsigned long flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_UNTRACED |
                          CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID; /* no exit signal */
    helper_tid = hp_arch_clone_helper(flags, helper_stack + HELPER_STACK, (int *)&ctl.alive,
                                      &ctl);
    hp_sys4(SYS_rt_sigprocmask, SIG_SETMASK, (long)&old, 0, 8);
    if (hp_sys_failed(helper_tid)) {
        ctl.stage = STAGE_NONE;
        ctl.err = (int)-helper_tid;
        return -1;
    }
    set_ptracer = false;
    if (yama_scope == 1) {
        /* Yama allows a tracer that is an ancestor or that we name; the helper is neither. */
        if (hp_sys_failed(hp_sys2(SYS_prctl, PR_SET_PTRACER, helper_tid))) {
            atomic_store(&ctl.go, 2);
            futex_wake(&ctl.go);
            *helper_status = reap_helper(helper_tid, 1000000000LL);
            ctl.stage = STAGE_SEIZE;
            ctl.err = EPERM;
            return -1;
        }
        set_ptracer = true;
    }
    atomic_store(&ctl.go, 1);
    futex_wake(&ctl.go);
    int phase;
    while ((phase = atomic_load(&ctl.phase)) == PHASE_STARTING && atomic_load(&ctl.alive)) {
        long long left = deadline - hp_stop_now_ns();
        if (left <= 0)
            break;
        futex_wait(&ctl.phase, PHASE_STARTING, left > 5000000 ? 5000000 : (long)left, true);
    }
    if (phase == PHASE_STOPPED)
        return 0;
    /* Failed, died or late: a helper that is killed lets every thread it holds go. */
    *helper_status = reap_helper(helper_tid, phase == PHASE_STARTING ? 0 : 1000000000LL);
    return -1;
}

HP_STOPPED_WINDOW void hp_ptrace_resume(void)
{
    atomic_store(&ctl.command, 1);
    futex_wake(&ctl.command);
    reap_helper(helper_tid, 10LL * 1000000000LL);
    if (set_ptracer)
        hp_sys2(SYS_prctl, PR_SET_PTRACER, 0);
    set_ptracer = false;
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
    seccomp_risky = seccomp == 2 && !kernel_at_least(5, 16);
    if (seccomp_risky)
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

static void explain_failure(struct hp_stopped *out, int timeout_ms, int helper_status,
                            enum hp_stop_failure *kind)
{
    struct hp_stop_arrays *a = &hp_stop_arrays;
    int phase = atomic_load(&ctl.phase);
    if (phase == PHASE_STARTING && helper_status >= 0 && WIFSIGNALED(helper_status) &&
        WTERMSIG(helper_status) != SIGKILL) {
        *kind = HP_STOP_FAIL_REFUSED;
        snprintf(out->why, sizeof out->why, "the ptrace helper was killed by signal %d%s",
                 WTERMSIG(helper_status),
                 WTERMSIG(helper_status) == SIGSYS ? " (a seccomp filter)" : "");
        return;
    }
    if (phase == PHASE_STARTING && a->count > 0) {
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
    }
    if (phase == PHASE_STARTING) {
        *kind = HP_STOP_FAIL_BUSY;
        snprintf(out->why, sizeof out->why, "the ptrace helper did not stop the threads within "
                 "%d ms", timeout_ms);
        return;
    }
    if (ctl.stage == STAGE_NONE) {
        *kind = HP_STOP_FAIL_REFUSED;
        snprintf(out->why, sizeof out->why, "cannot start the ptrace helper: clone: %s",
                 strerror(ctl.err));
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
    if (hp_stop_status_dec(status, "TracerPid", &tracer) && tracer != 0) {
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
    hp_stop_status_dec(status, "Threads", &threads);
    if (!hp_stop_reserve((size_t)threads + threads / 4 + 64)) {
        *kind = HP_STOP_FAIL_BUSY;
        snprintf(out->why, sizeof out->why, "no memory to list %ld threads", threads);
        return -1;
    }
    hp_stop_clear();
    atomic_store(&ctl.phase, PHASE_STARTING);
    atomic_store(&ctl.go, 0);
    atomic_store(&ctl.command, 0);
    ctl.tgid = getpid();
    ctl.caller = (pid_t)hp_sys0(SYS_gettid);
    ctl.stage = STAGE_NONE;
    ctl.err = 0;
    ctl.fail_tid = 0;
    if (yama_scope == 1 && has_cap_sys_ptrace(status))
        yama_scope = 0;   /* CAP_SYS_PTRACE passes Yama: no exception needed */
    int helper_status = -1;
    long long deadline = hp_stop_now_ns() + (long long)timeout_ms * 1000000;
    if (stop_window(deadline, &helper_status) == 0) {
        out->threads = hp_stop_arrays.states;
        out->count = hp_stop_arrays.count;
        return 0;
    }
    if (set_ptracer)
        prctl(PR_SET_PTRACER, 0, 0, 0, 0);
    set_ptracer = false;
    explain_failure(out, timeout_ms, helper_status, kind);
    return -1;
}

void hp_ptrace_times(long long t[6])
{
    t[0] = ctl.t_clone, t[1] = ctl.t_start, t[2] = ctl.t_listed, t[3] = ctl.t_stopped;
    t[4] = ctl.t_resume, t[5] = ctl.t_released;
}

unsigned long hp_ptrace_rewound(void)
{
    return ctl.rewound;
}
