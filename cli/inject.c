/*
 * inject.c — the attach injector's ptrace primitives: hold every thread of a process, let them
 * go exactly as they were, and make one held thread run a system call or a function.
 *
 * Holding: PTRACE_SEIZE + PTRACE_INTERRUPT on every thread of /proc/PID/task, listed again
 * until a listing finds no new thread (a held thread cannot create one, so the last listing is
 * final). A seized thread is not stopped by the seize; the interrupt stops it in a
 * PTRACE_EVENT_STOP, or a signal that was on its way stops it first (a signal-delivery-stop:
 * that signal is handed back when the thread is let go, so none is lost or added).
 *
 * Letting go: a thread blocked in a system call that our interrupt made fail with EINTR (only
 * those the kernel does not restart itself, and only when no signal of its own is pending,
 * which would have caused that EINTR anyway) is rewound to run the call again, by the very
 * rule the engine's ptrace stop uses (src/engine/arch/x86_64_restart.c, compiled into this
 * client too). Calls that ended in a -ERESTART* code are restarted by the kernel as it lets the
 * thread go, nanosleep's remaining time included: the program sees nothing.
 *
 * Running code: the thread's registers, extended state (PTRACE_GETREGSET NT_X86_XSTATE) and
 * signal mask are saved first; every signal is blocked with PTRACE_SETSIGMASK while the
 * injector uses the thread (a signal stays pending and is delivered at the original context
 * once everything is restored, with the kernel's usual restart rules); orig_rax is -1 while it
 * runs injected code, so the kernel restarts nothing in between. A system call is single-
 * stepped over a `syscall` instruction; a function call returns into an int3 in the injected
 * page, whose SIGTRAP the injector takes and suppresses.
 *
 * Waiting: SIGCHLD is blocked and waited for with sigtimedwait, so every wait has a deadline.
 */
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/arch/arch.h"
#include "inject.h"

#ifndef PTRACE_GETSIGMASK
#define PTRACE_GETSIGMASK 0x420a
#define PTRACE_SETSIGMASK 0x420b
#endif
#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif

#define STOP_TIMEOUT_MS 2000         /* a thread that does not stop within this is refused */
#define SHARED_SIGNAL_WAIT_MS 10     /* how long a queued process signal is left to main */
#define MAX_THREADS (1 << 16)

long long monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- waiting ------------------------------------------------------------------------------- */

static void block_sigchld(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
}

/* True when the thread has ended (or is a zombie: a killed process's leader waits to be
 * reaped by its parent, and its tracer may never hear of it). */
static bool thread_gone(pid_t tid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return true;
    buf[n] = 0;
    char *close_paren = strrchr(buf, ')');
    return !close_paren || close_paren[1] != ' ' || close_paren[2] == 'Z' ||
           close_paren[2] == 'X';
}

/* True when the process has ended: no such pid, or only its zombie leader is left. */
static bool process_gone(pid_t pid)
{
    if (kill(pid, 0) != 0)
        return true;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return true;
    bool live = false;
    struct dirent *e;
    while (!live && (e = readdir(d)))
        live = atol(e->d_name) > 0 && !thread_gone((pid_t)atol(e->d_name));
    closedir(d);
    return !live;
}

/* waitpid(tid) with a deadline: 1 and *status, 0 on timeout, or -errno (-ECHILD: gone). */
static int wait_thread(pid_t tid, int *status, int timeout_ms)
{
    long long deadline = monotonic_ns() + (long long)timeout_ms * 1000000LL;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    for (;;) {
        pid_t r = waitpid(tid, status, WNOHANG | __WALL);
        if (r == tid)
            return 1;
        if (r < 0 && errno != EINTR)
            return -errno;
        if (thread_gone(tid))
            return -ECHILD;
        long long left = deadline - monotonic_ns();
        if (left <= 0)
            return 0;
        if (left > 2000000)
            left = 2000000;          /* a SIGCHLD for another thread may have been taken */
        struct timespec ts = {0, (long)left};
        sigtimedwait(&set, NULL, &ts);
    }
}

static bool is_group_stop_signal(int sig)
{
    return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

/* Waits for a seized and interrupted thread to stop, and notes how. */
static int wait_stopped(struct traced_thread *t, char *why)
{
    for (;;) {
        int status = 0;
        int rc = wait_thread(t->tid, &status, STOP_TIMEOUT_MS);
        if (rc == 0) {
            snprintf(why, WHY_CAP, "thread %d did not stop within %d ms", t->tid,
                     STOP_TIMEOUT_MS);
            return -ETIMEDOUT;
        }
        if (rc < 0 || WIFEXITED(status) || WIFSIGNALED(status)) {
            snprintf(why, WHY_CAP, "thread %d exited", t->tid);
            return -ESRCH;
        }
        if (!WIFSTOPPED(status))
            continue;
        int event = status >> 16, sig = WSTOPSIG(status);
        t->stopped_ns = monotonic_ns();
        if (event == PTRACE_EVENT_STOP) {
            t->kind = is_group_stop_signal(sig) ? STOP_GROUP : STOP_EVENT;
            t->signal = 0;
        } else {
            t->kind = STOP_SIGNAL;   /* a signal arrived first: hand it back later */
            t->signal = sig;
        }
        return 0;
    }
}

/* ---- holding every thread ------------------------------------------------------------------ */

static bool known(const struct traced_process *p, pid_t tid)
{
    for (size_t i = 0; i < p->count; i++)
        if (p->threads[i].tid == tid)
            return true;
    return false;
}

static int add_thread(struct traced_process *p, pid_t tid)
{
    if (p->count == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        struct traced_thread *n = realloc(p->threads, cap * sizeof *n);
        if (!n)
            return -ENOMEM;
        p->threads = n;
        p->cap = cap;
    }
    p->threads[p->count++] = (struct traced_thread){.tid = tid};
    return 0;
}

/* Seizes and interrupts the thread just added; one that has gone meanwhile is dropped. */
static int seize_new_thread(struct traced_process *p, char *why)
{
    struct traced_thread *t = &p->threads[p->count - 1];
    if (ptrace(PTRACE_SEIZE, t->tid, 0, 0) != 0) {
        int err = errno;
        p->count--;
        if (err == ESRCH)
            return 0;
        snprintf(why, WHY_CAP, "cannot trace thread %d: %s", t->tid, strerror(err));
        return -err;
    }
    t->held = true;                  /* seized: ours to let go from here on */
    if (ptrace(PTRACE_INTERRUPT, t->tid, 0, 0) != 0 && errno != ESRCH) {
        int err = errno;
        snprintf(why, WHY_CAP, "cannot interrupt thread %d: %s", t->tid, strerror(err));
        return -err;
    }
    t->kind = STOP_NONE;
    return 0;
}

/* Waits for every seized thread from `first` on to stop and reads its registers; threads that
 * ended meanwhile are dropped. All are interrupted before any is waited for: each wait may
 * cost a scheduler slice on a busy machine, and they then overlap. */
static int wait_new_threads(struct traced_process *p, size_t first, char *why)
{
    size_t kept = first;
    int rc = 0;
    for (size_t i = first; i < p->count; i++) {
        struct traced_thread *t = &p->threads[i];
        int w = rc ? 0 : wait_stopped(t, why);
        if (w == -ESRCH && !process_gone(p->pid)) {
            ptrace(PTRACE_DETACH, t->tid, 0, 0);
            continue;                /* that thread ended; the process goes on */
        }
        if (w < 0)
            rc = w;
        if (rc == 0) {
            struct iovec iov = {&t->regs, sizeof t->regs};
            if (ptrace(PTRACE_GETREGSET, t->tid, NT_PRSTATUS, &iov) != 0) {
                rc = -errno;
                snprintf(why, WHY_CAP, "cannot read the registers of thread %d: %s", t->tid,
                         strerror(-rc));
            }
        }
        p->threads[kept++] = *t;
    }
    p->count = kept;
    return rc;
}

/* One listing of /proc/PID/task: holds every thread not held yet; *added counts them. */
static int hold_listed_threads(struct traced_process *p, size_t *added, char *why)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", p->pid);
    DIR *d = opendir(path);
    if (!d) {
        snprintf(why, WHY_CAP, "process %d exited", p->pid);
        return -ESRCH;
    }
    size_t first = p->count;
    int rc = 0;
    struct dirent *e;
    bool main_listed = false;
    while (rc == 0 && (e = readdir(d))) {
        pid_t tid = (pid_t)atol(e->d_name);
        if (tid == p->pid && !known(p, tid)) {
            main_listed = true;      /* held last: see below */
            continue;
        }
        if (tid <= 0 || known(p, tid))
            continue;
        if (p->count >= MAX_THREADS) {
            snprintf(why, WHY_CAP, "more than %d threads", MAX_THREADS);
            rc = -E2BIG;
            break;
        }
        rc = add_thread(p, tid);
        if (rc == 0)
            rc = seize_new_thread(p, why);
    }
    closedir(d);
    /* The main thread last: a signal sent to the process goes to the main thread when it can
     * take it, and to another thread when it cannot (held). Held last and let go first, it
     * keeps taking them; another thread taking one in an interrupted nanosleep or epoll_wait
     * would return EINTR or early. */
    if (rc == 0 && main_listed && (rc = add_thread(p, p->pid)) == 0)
        rc = seize_new_thread(p, why);
    int w = wait_new_threads(p, first, why);
    *added = p->count - first;
    return rc ? rc : w;
}

int trace_process(struct traced_process *p, pid_t pid, char *why)
{
    *p = (struct traced_process){.pid = pid, .mem_fd = -1};
    block_sigchld();
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", pid);
    p->mem_fd = open(path, O_RDWR | O_CLOEXEC);
    if (p->mem_fd < 0) {
        int err = errno;
        snprintf(why, WHY_CAP, "cannot open %s: %s", path, strerror(err));
        return -err;
    }
    for (int round = 0; round < 1000; round++) {
        size_t added = 0;
        int rc = hold_listed_threads(p, &added, why);
        if (rc < 0) {
            release_all_but(p, SIZE_MAX);
            return rc;
        }
        if (added == 0 && p->count > 0)
            return 0;
        if (p->count == 0)
            break;
    }
    release_all_but(p, SIZE_MAX);
    snprintf(why, WHY_CAP, "process %d exited", pid);
    return -ESRCH;
}

/* ---- letting go ---------------------------------------------------------------------------- */

/* A hex mask line ("SigPnd:\t0000000000000200") of /proc/PID/task/TID/status. */
static bool status_mask(const char *text, const char *key, unsigned long long *out)
{
    const char *at = strstr(text, key);
    if (!at)
        return false;
    return sscanf(at + strlen(key), ":\t%llx", out) == 1;
}

/* The default action of these is to do nothing: pending, they would not have interrupted. */
#define DEFAULT_IGNORED                                                                       \
    ((1ULL << (SIGCHLD - 1)) | (1ULL << (SIGCONT - 1)) | (1ULL << (SIGURG - 1)) |             \
     (1ULL << (SIGWINCH - 1)))

bool live_signal_pending(pid_t pid, const struct traced_thread *t)
{
    char path[80], text[4096];
    snprintf(path, sizeof path, "/proc/%d/task/%d/status", pid, t->tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return true;
    text[n] = 0;
    unsigned long long pnd, shd, blk, ign, cgt;
    if (!status_mask(text, "SigPnd", &pnd) || !status_mask(text, "ShdPnd", &shd) ||
        !status_mask(text, "SigBlk", &blk) || !status_mask(text, "SigIgn", &ign) ||
        !status_mask(text, "SigCgt", &cgt))
        return true;
    /* A signal queued for the whole process may be taken by any thread (while this one was
     * held, another would have); only one queued for this thread owns its EINTR. */
    (void)shd;
    unsigned long long pending = pnd;
    if (t->signal > 0 && t->signal <= 64)
        pending |= 1ULL << (t->signal - 1);
    unsigned long long inert = ign | (DEFAULT_IGNORED & ~cgt);
    return (pending & ~blk & ~inert) != 0;
}

void release_thread(struct traced_process *p, size_t i)
{
    struct traced_thread *t = &p->threads[i];
    if (!t->held)
        return;
    if (hp_arch_interrupted_eintr(&t->regs) && t->kind == STOP_EVENT &&
        !live_signal_pending(p->pid, t)) {
        struct user_regs_struct regs = t->regs;
        hp_arch_rewind_syscall(&regs);
        struct iovec iov = {&regs, sizeof regs};
        ptrace(PTRACE_SETREGSET, t->tid, NT_PRSTATUS, &iov);
    }
    ptrace(PTRACE_DETACH, t->tid, 0, t->signal);
    long long held = monotonic_ns() - t->stopped_ns;
    if (held > p->longest_pause_ns)
        p->longest_pause_ns = held;
    t->held = false;
}

/* Signals queued for the whole process (ShdPnd of /proc/PID/status); ~0 when unknown. */
static unsigned long long shared_pending(pid_t pid)
{
    char path[64], text[4096];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ~0ULL;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    unsigned long long shd;
    if (n <= 0)
        return ~0ULL;
    text[n] = 0;
    return status_mask(text, "ShdPnd", &shd) ? shd : ~0ULL;
}

void await_shared_signals_taken(pid_t pid, int max_ms)
{
    long long deadline = monotonic_ns() + (long long)max_ms * 1000000LL;
    while (shared_pending(pid) != 0 && monotonic_ns() < deadline) {
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
}

void release_all_but(struct traced_process *p, size_t keep)
{
    /* The main thread first (signals to the process go to it, as if nothing had happened),
     * then the blocked ones: they go back to sleep at once; running ones take the CPU. A
     * signal queued for the process while all were held is left a moment for the main
     * thread to take: another thread taking it in an interrupted nanosleep or epoll_wait
     * would see EINTR where the program never would have. */
    bool main_released = false;
    for (size_t i = 0; i < p->count; i++)
        if (i != keep && p->threads[i].tid == p->pid && p->threads[i].held) {
            release_thread(p, i);
            main_released = true;
        }
    if (main_released)
        await_shared_signals_taken(p->pid, SHARED_SIGNAL_WAIT_MS);
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < p->count; i++)
            if (i != keep && (arch_syscall_nr(&p->threads[i].regs) >= 0) == (pass == 0))
                release_thread(p, i);
}

void traced_process_free(struct traced_process *p)
{
    if (p->mem_fd >= 0)
        close(p->mem_fd);
    free(p->threads);
    p->threads = NULL;
    p->count = p->cap = 0;
    p->mem_fd = -1;
}

/* ---- memory -------------------------------------------------------------------------------- */

int peek(struct traced_process *p, uintptr_t addr, void *buf, size_t len)
{
    ssize_t n = pread(p->mem_fd, buf, len, (off_t)addr);
    return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
}

int poke(struct traced_process *p, uintptr_t addr, const void *buf, size_t len)
{
    ssize_t n = pwrite(p->mem_fd, buf, len, (off_t)addr);
    return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
}

/* ---- a thread's whole state ---------------------------------------------------------------- */

#define XSTATE_MAX (64 * 1024)

int save_state(pid_t tid, struct saved_state *s, char *why)
{
    memset(s, 0, sizeof *s);
    struct iovec iov = {&s->regs, sizeof s->regs};
    if (ptrace(PTRACE_GETREGSET, tid, NT_PRSTATUS, &iov) != 0)
        goto fail;
    s->xstate = malloc(XSTATE_MAX);
    if (!s->xstate) {
        snprintf(why, WHY_CAP, "out of memory");
        return -ENOMEM;
    }
    struct iovec x = {s->xstate, XSTATE_MAX};
    if (ptrace(PTRACE_GETREGSET, tid, NT_X86_XSTATE, &x) == 0) {
        s->xstate_len = x.iov_len;
        s->have_xstate = true;
    } else {
        /* No XSAVE: the legacy FPU/SSE area holds it all. */
        struct iovec f = {s->xstate, sizeof(struct user_fpregs_struct)};
        if (ptrace(PTRACE_GETREGSET, tid, NT_PRFPREG, &f) != 0)
            goto fail;
        s->xstate_len = f.iov_len;
    }
    if (ptrace(PTRACE_GETSIGMASK, tid, sizeof s->sigmask, &s->sigmask) != 0)
        goto fail;
    return 0;
fail:;
    int err = errno;
    snprintf(why, WHY_CAP, "cannot read the state of thread %d: %s", tid, strerror(err));
    return -err;
}

int restore_state(pid_t tid, const struct saved_state *s, char *why)
{
    struct iovec x = {s->xstate, s->xstate_len};
    struct iovec iov = {(void *)&s->regs, sizeof s->regs};
    uint64_t mask = s->sigmask;
    if (ptrace(PTRACE_SETREGSET, tid, s->have_xstate ? NT_X86_XSTATE : NT_PRFPREG, &x) != 0 ||
        ptrace(PTRACE_SETREGSET, tid, NT_PRSTATUS, &iov) != 0 ||
        ptrace(PTRACE_SETSIGMASK, tid, sizeof mask, &mask) != 0) {
        int err = errno;
        snprintf(why, WHY_CAP, "cannot restore the state of thread %d: %s", tid,
                 strerror(err));
        return -err;
    }
    return 0;
}

void saved_state_free(struct saved_state *s)
{
    free(s->xstate);
    s->xstate = NULL;
}

int block_all_signals(pid_t tid, char *why)
{
    uint64_t all = ~0ULL;
    if (ptrace(PTRACE_SETSIGMASK, tid, sizeof all, &all) == 0)
        return 0;
    int err = errno;
    snprintf(why, WHY_CAP, "cannot block the signals of thread %d: %s", tid, strerror(err));
    return -err;
}

/* ---- running code -------------------------------------------------------------------------- */

/* Resumes the thread (single-step or continue) and waits for its SIGTRAP. Any other stop is a
 * signal that could not be blocked: SIGKILL ends the process, a group stop waits for SIGCONT.
 */
static int run_until_trap(struct traced_process *p, pid_t tid, bool step, int timeout_ms,
                          const struct meanwhile *meanwhile, char *why)
{
    if (ptrace(step ? PTRACE_SINGLESTEP : PTRACE_CONT, tid, 0, 0) != 0) {
        int err = errno;
        snprintf(why, WHY_CAP, "cannot resume thread %d: %s", tid, strerror(err));
        return -err;
    }
    if (meanwhile)
        meanwhile->run(meanwhile->context);
    for (;;) {
        int status = 0;
        int rc = wait_thread(tid, &status, timeout_ms);
        if (rc == 0) {
            snprintf(why, WHY_CAP, "thread %d did not come back within %d ms from the "
                     "injected call", tid, timeout_ms);
            return -ETIMEDOUT;
        }
        if (rc < 0 || WIFEXITED(status) || WIFSIGNALED(status)) {
            snprintf(why, WHY_CAP, "the process exited during attach");
            return -ESRCH;
        }
        if (WIFSTOPPED(status) && WSTOPSIG(status) == SIGTRAP && (status >> 16) == 0)
            return 0;
        if (WIFSTOPPED(status) && (status >> 16) == 0 && is_group_stop_signal(WSTOPSIG(status))) {
            /* A stop signal cannot be blocked: it is handed back when the thread is let go,
             * so the process stops then, as it was asked to. */
            p->deferred_stop = WSTOPSIG(status);
        } else if (WIFSTOPPED(status) && (status >> 16) == 0) {
            /* Every signal is blocked: this is a fault of the injected code itself. It is not
             * delivered; the caller restores the thread. */
            snprintf(why, WHY_CAP, "the injected code in thread %d faulted (%s)", tid,
                     strsignal(WSTOPSIG(status)));
            return -EFAULT;
        }
        /* A group stop (SIGSTOP sent meanwhile): go on to the trap; the stop is the kernel's
         * to repeat once the process is let go. */
        if (ptrace(step ? PTRACE_SINGLESTEP : PTRACE_CONT, tid, 0, 0) != 0) {
            snprintf(why, WHY_CAP, "the process exited during attach");
            return -ESRCH;
        }
    }
}

static int set_regs(pid_t tid, const struct user_regs_struct *r, char *why)
{
    struct iovec iov = {(void *)r, sizeof *r};
    if (ptrace(PTRACE_SETREGSET, tid, NT_PRSTATUS, &iov) == 0)
        return 0;
    int err = errno;
    snprintf(why, WHY_CAP, "cannot set the registers of thread %d: %s", tid, strerror(err));
    return -err;
}

static int get_regs(pid_t tid, struct user_regs_struct *r, char *why)
{
    struct iovec iov = {r, sizeof *r};
    if (ptrace(PTRACE_GETREGSET, tid, NT_PRSTATUS, &iov) == 0)
        return 0;
    int err = errno;
    snprintf(why, WHY_CAP, "cannot read the registers of thread %d: %s", tid, strerror(err));
    return -err;
}

int remote_syscall_at(struct traced_process *p, pid_t tid, const struct saved_state *from,
                      uintptr_t insn, long nr, const long args[6], long *ret, char *why)
{
    struct user_regs_struct r = from->regs;
    arch_set_syscall(&r, insn, nr, args);
    int rc = set_regs(tid, &r, why);
    if (rc == 0)
        rc = run_until_trap(p, tid, true, STOP_TIMEOUT_MS, NULL, why);
    if (rc == 0)
        rc = get_regs(tid, &r, why);
    if (rc == 0)
        *ret = arch_result(&r);
    return rc;
}

int remote_call(struct traced_process *p, pid_t tid, const struct saved_state *from,
                const struct inject_page *page, uintptr_t fn, const long args[6], long *ret,
                int timeout_ms, const struct meanwhile *meanwhile, char *why)
{
    struct user_regs_struct r = from->regs;
    uintptr_t slot = arch_set_call(&r, fn, args);
    uint64_t return_to = page->gadget_trap;
    int rc = poke(p, slot, &return_to, sizeof return_to);
    if (rc < 0) {
        snprintf(why, WHY_CAP, "cannot write the stack of thread %d: %s", tid, strerror(-rc));
        return rc;
    }
    rc = set_regs(tid, &r, why);
    if (rc == 0)
        rc = run_until_trap(p, tid, false, timeout_ms, meanwhile, why);
    if (rc == 0)
        rc = get_regs(tid, &r, why);
    if (rc == 0 && arch_pc(&r) != page->gadget_trap + 1) {
        snprintf(why, WHY_CAP, "the injected call stopped at %#lx, not at its return",
                 (unsigned long)arch_pc(&r));
        return -EFAULT;
    }
    if (rc == 0)
        *ret = arch_result(&r);
    return rc;
}
