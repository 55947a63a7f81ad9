/*
 * attach.c — `hotpatch -p PID attach`: bring the agent into a process that was started with
 * nothing, without the program noticing; the policy of the injector (the primitives are in
 * inject.c, inject_x86_64.c and target_image.c).
 *
 * The design, and why.
 *
 *  1. Refuse early, from /proc, before touching anything: a zombie or a stopped process, one
 *     already traced (its tracer named), without CAP_SYS_PTRACE another user's or group's
 *     process or one that is not dumpable, Yama's ptrace_scope, no glibc dynamic loader (static or another libc), a seccomp filter that
 *     would kill or fail a call the injection or the agent makes (seccomp_check.c), an agent
 *     already serving. Each refusal is one line naming the cause and the fix.
 *
 *  2. Which thread, and when. The loader must never run while another thread holds the
 *     loader's or malloc's lock, and which thread holds a lock cannot be seen from outside. So
 *     the injector never runs the loader on a stopped program: it uses one thread T only to
 *     create a thread of its own (pthread_create), lets every thread run again, and that new
 *     thread does the dlopen like any thread of the program would. pthread_create itself takes
 *     locks (the stack cache, the TLS allocation, malloc for the DTV), and T runs it while the
 *     other threads run, so T must hold none of them itself. T is therefore a thread that is
 *     stopped where glibc holds no lock of its own:
 *       - blocked in a system call that glibc's loader, malloc and thread code never make while
 *         holding their locks: nanosleep, clock_nanosleep, pause, the poll/select/epoll
 *         family, rt_sigsuspend, rt_sigtimedwait, wait4, waitid, accept, recv*, and read or
 *         readv on something that is not a regular file (a pipe, socket, eventfd, tty: the
 *         loader only reads regular files), and futex waits other than a lock's (FUTEX_WAIT
 *         with the value 2 is glibc's contended lock; FUTEX_WAIT_BITSET is a condition
 *         variable, a join or a semaphore), and restart_syscall (such a sleep the kernel restarted
 *         after an earlier stop: glibc's own locks never wait with a timeout); never mmap, mprotect, munmap, brk, madvise, openat,
 *         close, fstat, pread or a regular file's read, clone;
 *       - or, when no thread is blocked like that (a single-threaded busy loop), and the
 *         program's malloc is glibc's (no other object exports malloc: an interposed
 *         allocator's lock is the program's own, and pthread_create allocates with it), a
 *         thread whose pc is in the program's own code, not in libc, libdl or the loader:
 *         program code runs inside a glibc lock only when glibc called it back, and the callback that matters —
 *         a signal handler interrupting malloc — leaves a signal frame (a return address to
 *         libc's __restore_rt) on the stack. (Callbacks such as qsort's or dl_iterate_phdr's
 *         hold no lock pthread_create takes.)
 *     Either way the thread's stack must hold no signal frame: a handler that interrupted
 *     malloc may itself block in one of those calls.
 *     A thread stopped by a signal rather than by our interrupt is not used. When no thread
 *     qualifies, every thread runs again and the injector looks again after 10, 20, 40, ...
 *     ms, for about a second, then refuses and says why.
 *
 *  3. T's registers, extended state and signal mask are saved; every signal of T is blocked
 *     (through ptrace, so no handler can run on injected code and none is lost: they stay
 *     pending); two pages are mapped (a single-stepped `syscall` found in libc's text, with
 *     every thread still held: the round trip is then quick even when the program's threads
 *     keep the CPUs busy) and the loader code and its data written through /proc/PID/mem.
 *     Then T makes one call, of a bootstrap in the page, and as it starts every other thread
 *     is let go (an EINTR our stop caused is rewound as the engine does: the program never
 *     sees it; their release overlaps T's work). The bootstrap calls into the program's own
 *     libc: __errno_location (errno is saved and put back), pthread_attr_init,
 *     setdetachstate, pthread_create (the new thread inherits T's mask: all signals blocked,
 *     so it never runs a program's signal handler) and pthread_attr_destroy. It runs on T's
 *     own stack below its red zone, 16-byte aligned, returning into an int3 in the injected
 *     page whose SIGTRAP the injector takes and suppresses. Finally T's registers, extended
 *     state and mask are put back exactly and T is let go; its interrupted system call
 *     restarts as the kernel restarts it (nanosleep with its remaining time), or is rewound
 *     like the others'.
 *     A failure up to here unmaps the pages (when mapped) and restores T: the process is as it
 *     was.
 *
 *  4. The loader thread (inject_x86_64.c) dlopens the preload agent library (RTLD_NOW), calls
 *     its hotpatch_attach_start (origin "attached"; the library's constructor sees the loader
 *     thread's name and stands aside), writes the result and dlerror()'s text into the data
 *     page, waits for the injector to read them, and tail-jumps into munmap of both pages.
 *     The library is the one this client belongs to: $HOTPATCH_PRELOAD_LIBRARY, else
 *     ../lib/libhotpatch_preload.so or ../lib/hotpatch/ next to this binary, else the
 *     installed path. A process in another mount namespace cannot see that file: it gets a
 *     copy in a memfd of its own (memfd_create as a remote system call, filled through
 *     /proc/PID/fd/N) and dlopens /proc/self/fd/N, which the loader closes afterwards.
 *
 *  5. When the agent library is mapped already (an attach, or a preload or link, followed by
 *     `detach`), or the executable exports an agent of its own, the loader calls its entry
 *     directly — the address from the mapped file's dynsym — which restarts the same agent:
 *     never a second copy.
 *
 * Exit status: 0 attached, 1 refused or already serving, 2 not running or exited meanwhile.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <linux/futex.h>

#include "attach.h"
#include "exchange.h"
#include "inject.h"
#include "json.h"
#include "message.h"
#include "procfs.h"
#include "seccomp_check.h"
#include "verify.h"

#ifndef HOTPATCH_INSTALLED_PRELOAD
#define HOTPATCH_INSTALLED_PRELOAD "/usr/local/lib/hotpatch/libhotpatch_preload.so"
#endif

#define CAP_SYS_PTRACE_BIT 19
#define CALL_TIMEOUT_MS 5000         /* pthread_create may wait for a lock a running thread holds */
#define LOADER_TIMEOUT_MS 10000      /* dlopen and the agent's start */
#define ATTEMPTS 7                   /* 10 + 20 + ... + 640 ms: about a second of looking */

/* What one attach found and did, for the report. */
struct attach_report {
    long pid;
    char library[PATH_MAX];
    bool restarted;                  /* the library was mapped: its entry was called again */
    bool memfd;                      /* the library went in as a copy in a memfd */
    pid_t thread;
    char thread_was[64];             /* "nanosleep", "program code" */
    long long pause_ns;              /* the longest any thread was held */
    long long started_ns;
    char socket[PATH_MAX];
};

/* ---- refusals from /proc ------------------------------------------------------------------- */

static char state_of(long pid)
{
    char buf[4096];
    size_t len;
    if (proc_read_file(pid, "stat", buf, sizeof buf, &len))
        return 0;
    char *close = strrchr(buf, ')');
    return close && close[1] == ' ' ? close[2] : 0;
}

/* The value after "KEY:" in /proc/PID/status, as text ("" when missing). */
static void status_field(const char *status, const char *key, char *out, size_t cap)
{
    out[0] = 0;
    size_t klen = strlen(key);
    for (const char *line = status; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            const char *v = line + klen + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t n = strcspn(v, "\n");
            snprintf(out, cap, "%.*s", (int)n, v);
            return;
        }
    }
}

static bool have_cap_sys_ptrace(void)
{
    char status[16384], eff[64];
    size_t len;
    if (proc_read_file(getpid(), "status", status, sizeof status, &len))
        return false;
    status_field(status, "CapEff", eff, sizeof eff);
    unsigned long long caps = strtoull(eff, NULL, 16);
    return (caps >> CAP_SYS_PTRACE_BIT) & 1;
}

static void comm_of(long pid, char *out, size_t cap)
{
    size_t len;
    if (proc_read_file(pid, "comm", out, cap, &len) == 0)
        out[strcspn(out, "\n")] = 0;
    else
        snprintf(out, cap, "?");
}

/* Is `pid` a descendant of this client (Yama scope 1 allows tracing those)? */
static bool is_descendant(long pid)
{
    for (int depth = 0; depth < 64 && pid > 1; depth++) {
        struct proc_status st;
        if (proc_status(pid, &st))
            return false;
        if (st.ppid == getpid())
            return true;
        pid = st.ppid;
    }
    return false;
}

static int check_yama(long pid, bool cap)
{
    char buf[16];
    int fd = open("/proc/sys/kernel/yama/ptrace_scope", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;                    /* no Yama in this kernel */
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    int scope = n > 0 ? (buf[n] = 0, atoi(buf)) : 0;
    if (scope == 1 && !cap && !is_descendant(pid)) {
        say("refusing to attach to process %ld: kernel.yama.ptrace_scope is 1 (restricted: a "
            "process may trace only its own descendants); run hotpatch as root or with "
            "CAP_SYS_PTRACE, or allow it with sysctl kernel.yama.ptrace_scope=0", pid);
        return EXIT_REFUSED;
    }
    if (scope == 2 && !cap) {
        say("refusing to attach to process %ld: kernel.yama.ptrace_scope is 2 (admin-only: "
            "only CAP_SYS_PTRACE may trace); run hotpatch as root or with CAP_SYS_PTRACE",
            pid);
        return EXIT_REFUSED;
    }
    if (scope >= 3) {
        say("refusing to attach to process %ld: kernel.yama.ptrace_scope is %d (no attach: "
            "ptrace is disabled for everyone until reboot); start the program with "
            "LD_PRELOAD=libhotpatch_preload.so instead", pid, scope);
        return EXIT_REFUSED;
    }
    return 0;
}

/* What the kernel asks of a tracer without CAP_SYS_PTRACE beyond the uids (ptrace(2),
 * "Ptrace access mode checking"): the target's real, effective and saved gids are the
 * caller's, and the target is dumpable. A process that is not (it called
 * prctl(PR_SET_DUMPABLE, 0), or changed credentials as a setuid program does) has the files
 * in its /proc directory (not the directory itself) owned by root, which is how it shows. 0 or the exit status (said). */
static int check_group_and_dumpable(long pid, const char *status, bool cap)
{
    if (cap)
        return 0;
    char field[256];
    status_field(status, "Gid", field, sizeof field);
    unsigned long rgid, egid, sgid;
    if (sscanf(field, "%lu %lu %lu", &rgid, &egid, &sgid) == 3 &&
        (rgid != getgid() || egid != getgid() || sgid != getgid())) {
        say("refusing to attach to process %ld: it runs as group %lu, not as yours (gid %lu), "
            "and you lack CAP_SYS_PTRACE; attach as root or from a process of group %lu", pid,
            egid, (unsigned long)getgid(), egid);
        return EXIT_REFUSED;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    struct stat st;
    if (stat(path, &st) == 0 && st.st_uid != getuid()) {
        say("refusing to attach to process %ld: it is not dumpable (it called "
            "prctl(PR_SET_DUMPABLE, 0), or changed its credentials as a setuid program does), "
            "and only CAP_SYS_PTRACE may trace such a process; attach as root", pid);
        return EXIT_REFUSED;
    }
    return 0;
}

/* Everything /proc/PID/status tells: state, tracer, owner, seccomp. 0 or the exit status. */
static int check_status(long pid, int *seccomp_mode)
{
    char status[16384], field[256];
    size_t len;
    int err = proc_read_file(pid, "status", status, sizeof status, &len);
    if (err) {
        say("process %ld is not running", pid);
        return EXIT_TROUBLE;
    }
    char state = state_of(pid);
    if (state == 'Z' || state == 'X') {
        say("process %ld has exited (a zombie waiting for its parent to reap it): nothing to "
            "attach to", pid);
        return EXIT_TROUBLE;
    }
    status_field(status, "TracerPid", field, sizeof field);
    long tracer = atol(field);
    if (tracer > 0) {
        char comm[64];
        comm_of(tracer, comm, sizeof comm);
        say("refusing to attach to process %ld: it is already traced by process %ld (%s), a "
            "debugger or strace; detach that first (a process has at most one tracer)", pid,
            tracer, comm);
        return EXIT_REFUSED;
    }
    if (state == 'T' || state == 't') {
        say("refusing to attach to process %ld: it is stopped (state %c); let it run again "
            "with kill -CONT %ld, then attach", pid, state, pid);
        return EXIT_REFUSED;
    }
    bool cap = have_cap_sys_ptrace();
    status_field(status, "Uid", field, sizeof field);
    unsigned long ruid, euid, suid;
    if (sscanf(field, "%lu %lu %lu", &ruid, &euid, &suid) == 3 && !cap &&
        (ruid != getuid() || euid != getuid() || suid != getuid())) {
        say("refusing to attach to process %ld: it is another user's process (uid %lu), and "
            "you (uid %lu) lack CAP_SYS_PTRACE; attach as root or as uid %lu", pid, euid,
            (unsigned long)getuid(), euid);
        return EXIT_REFUSED;
    }
    int rc_of_owner = check_group_and_dumpable(pid, status, cap);
    if (rc_of_owner)
        return rc_of_owner;
    int rc = check_yama(pid, cap);
    if (rc)
        return rc;
    status_field(status, "Seccomp", field, sizeof field);
    *seccomp_mode = atoi(field);
    if (*seccomp_mode == 1) {
        say("refusing to attach to process %ld: it runs in strict seccomp mode (only read, "
            "write, exit and sigreturn are allowed), so the agent could not run", pid);
        return EXIT_REFUSED;
    }
    return 0;
}

/* The agent serving already? 0 when not, else the exit status (said). */
static int check_not_serving(const struct process_identity *who)
{
    struct agent_socket found;
    const char *unreadable = "";
    if (locate_agent_socket(who, &found, &unreadable) != 0)
        return 0;
    say("process %ld already has an agent serving on %s; nothing to do ('hotpatch -p %ld "
        "detach' stops it)", who->pid, found.path, who->pid);
    return EXIT_REFUSED;
}

/* ---- the library --------------------------------------------------------------------------- */

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool find_library(char *out, size_t cap)
{
    const char *env = getenv("HOTPATCH_PRELOAD_LIBRARY");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return is_file(out);
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = 0;
        const char *tries[] = {"%s/../lib/libhotpatch_preload.so",
                               "%s/../lib/hotpatch/libhotpatch_preload.so"};
        for (size_t i = 0; i < 2; i++) {
            char candidate[PATH_MAX + 64];
            snprintf(candidate, sizeof candidate, tries[i], exe);
            if (is_file(candidate) && realpath(candidate, out))
                return true;
        }
    }
    snprintf(out, cap, "%s", HOTPATCH_INSTALLED_PRELOAD);
    return is_file(out);
}

/* ---- choosing the thread ------------------------------------------------------------------- */

enum fitness { UNFIT, FIT_PROGRAM_CODE, FIT_BLOCKED };

struct choice_notes {
    int in_runtime, in_lock_wait, in_other_call, by_signal, signal_frame;
    int in_program_with_own_malloc;
};

static const char *call_name(long nr)
{
    switch (nr) {
    case SYS_nanosleep: return "nanosleep";
    case SYS_clock_nanosleep: return "clock_nanosleep";
    case SYS_pause: return "pause";
    case SYS_poll: return "poll";
    case SYS_ppoll: return "ppoll";
    case SYS_select: return "select";
    case SYS_pselect6: return "pselect6";
    case SYS_epoll_wait: return "epoll_wait";
    case SYS_epoll_pwait: return "epoll_pwait";
#ifdef SYS_epoll_pwait2
    case SYS_epoll_pwait2: return "epoll_pwait2";
#endif
    case SYS_rt_sigsuspend: return "rt_sigsuspend";
    case SYS_rt_sigtimedwait: return "rt_sigtimedwait";
    case SYS_wait4: return "wait4";
    case SYS_waitid: return "waitid";
    case SYS_accept: return "accept";
    case SYS_accept4: return "accept4";
    case SYS_recvfrom: return "recvfrom";
    case SYS_recvmsg: return "recvmsg";
    case SYS_recvmmsg: return "recvmmsg";
    case SYS_read: return "read";
    case SYS_readv: return "readv";
    case SYS_futex: return "futex";
    /* The continuation of a sleep the kernel restarted after a stop (nanosleep, poll, a
     * futex wait with a timeout: glibc's own locks never have one). */
    case SYS_restart_syscall: return "restart_syscall";
    default: return NULL;
    }
}

/* read/readv on fd: safe only when it is not a regular file (the loader reads only those). */
static bool reads_from_stream(long pid, long fd)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd/%ld", pid, fd);
    struct stat st;
    return stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) &&
           !S_ISBLK(st.st_mode);
}

static bool futex_is_not_a_lock(const struct user_regs_struct *r)
{
    long op = arch_syscall_arg(r, 1) & ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    if (op == FUTEX_WAIT_BITSET)
        return true;
    return op == FUTEX_WAIT && (int)arch_syscall_arg(r, 2) != 2;
}

static enum fitness blocked_fitness(long pid, const struct traced_thread *t)
{
    long nr = arch_syscall_nr(&t->regs);
    if (!call_name(nr))
        return UNFIT;
    if ((nr == SYS_read || nr == SYS_readv) && !reads_from_stream(pid, arch_syscall_arg(&t->regs, 0)))
        return UNFIT;
    if (nr == SYS_futex && !futex_is_not_a_lock(&t->regs))
        return UNFIT;
    return FIT_BLOCKED;
}

/* libc's text, read once per attempt: for a `syscall` instruction and signal frames. */
struct libc_text {
    uint8_t *bytes;
    uintptr_t start;
    size_t len;
};

static int read_libc_text(pid_t pid, const struct target_image *img, struct libc_text *out)
{
    out->start = img->libc.text_start;
    out->len = img->libc.text_end - img->libc.text_start;
    out->bytes = malloc(out->len);
    if (!out->bytes)
        return -ENOMEM;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = pread(fd, out->bytes, out->len, (off_t)out->start);
    close(fd);
    return n == (ssize_t)out->len ? 0 : -EIO;
}

/* __restore_rt: mov $15, %rax; syscall — where a signal handler returns to. */
static const uint8_t restore_rt[] = {0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05};

static bool is_restorer(const struct libc_text *text, uint64_t word)
{
    if (word < text->start || text->len < sizeof restore_rt ||
        word - text->start > text->len - sizeof restore_rt)    /* no overflow near ~0 */
        return false;
    return memcmp(text->bytes + (word - text->start), restore_rt, sizeof restore_rt) == 0;
}

/* How much of a stack above sp is read, at most. The used part of a stack is what lies above
 * sp, so this bounds only a very deep one; a stack deeper than this is not proven free of a
 * signal frame, and its thread is not used. */
#define STACK_SCAN_BYTES (64u << 20)
#define USER_CODE_SEGMENT 0x33      /* __USER_CS on x86-64: what a user thread's cs holds */

/*
 * True when the word at `at`, which holds __restore_rt's address, begins a real signal frame
 * and is not a stale copy (glibc's sigaction puts that address in a structure on the stack, and
 * such words outlive the call in the frames above). The kernel's frame is the return address,
 * then the ucontext: uc_flags (a few UC_* bits), uc_link, uc_stack, the general registers
 * (r8 ... cr2: words 6 to 28, the interrupted rsp, rip and the code segment among them), and
 * the pointer to the saved FPU state, which the kernel puts just above the frame.
 */
static bool is_signal_frame(struct traced_process *p, uintptr_t at)
{
    uint64_t frame[30];
    if (pread(p->mem_fd, frame, sizeof frame, (off_t)at) != (ssize_t)sizeof frame)
        return false;
    uint64_t uc_flags = frame[1], rsp = frame[21], rip = frame[22], csgsfs = frame[24];
    uint64_t fpstate = frame[29];
    return uc_flags <= 0xf && (csgsfs & 0xffff) == USER_CODE_SEGMENT && rip != 0 && rsp != 0 &&
           (fpstate == 0 || (fpstate > at && fpstate - at < 64 * 1024));
}

/* True when the stack above sp holds a signal frame (a return address to __restore_rt), or
 * is deeper than can be read to its end. */
static bool stack_has_signal_frame(struct traced_process *p, const struct libc_text *text,
                                   uintptr_t sp)
{
    enum { CHUNK_WORDS = 8192 };    /* 64 KiB a read */
    uint64_t *chunk = malloc(CHUNK_WORDS * sizeof *chunk);
    if (!chunk)
        return true;                 /* not proven free of a frame: not used */
    bool found = true;               /* until the end of the stack is reached */
    sp &= ~(uintptr_t)7;
    for (size_t done = 0; done < STACK_SCAN_BYTES; done += CHUNK_WORDS * sizeof *chunk) {
        ssize_t n = pread(p->mem_fd, chunk, CHUNK_WORDS * sizeof *chunk, (off_t)(sp + done));
        size_t words = n > 0 ? (size_t)n / 8 : 0;
        bool frame = false;
        for (size_t i = 0; i < words && !frame; i++)
            frame = is_restorer(text, chunk[i]) && is_signal_frame(p, sp + done + i * 8);
        if (frame || words < CHUNK_WORDS) {  /* a frame, or the end of the stack's mapping */
            found = frame;
            break;
        }
    }
    free(chunk);
    return found;
}

static enum fitness fitness_of(struct traced_process *p, const struct target_image *img,
                               const struct libc_text *text, const struct traced_thread *t,
                               struct choice_notes *notes)
{
    if (t->kind != STOP_EVENT) {
        notes->by_signal++;
        return UNFIT;
    }
    enum fitness f = FIT_PROGRAM_CODE;
    if (arch_syscall_nr(&t->regs) >= 0) {
        f = blocked_fitness(p->pid, t);
        if (f == UNFIT && arch_syscall_nr(&t->regs) == SYS_futex)
            notes->in_lock_wait++;
        else if (f == UNFIT)
            notes->in_other_call++;
        if (f == UNFIT)
            return f;
    } else if (in_runtime_code(img, arch_pc(&t->regs))) {
        notes->in_runtime++;
        return UNFIT;
    } else if (img->own_malloc) {
        /* Program code may be the program's own allocator, holding its lock, and
         * pthread_create allocates with it. */
        notes->in_program_with_own_malloc++;
        return UNFIT;
    }
    /* A signal handler may have interrupted malloc (its lock held) and then blocked or spun
     * in code of its own: a signal frame anywhere on the stack rules the thread out. */
    if (stack_has_signal_frame(p, text, arch_sp(&t->regs))) {
        notes->signal_frame++;
        return UNFIT;
    }
    return f;
}

/* The best thread, or SIZE_MAX. */
static size_t choose_thread(struct traced_process *p, const struct target_image *img,
                            const struct libc_text *text, struct choice_notes *notes)
{
    /* Among equals, not the main thread: a signal sent to the process goes to the main thread
     * first when it can take it, and it cannot while it is being used (its signals blocked):
     * another thread would get it, perhaps in a call that then fails with EINTR. */
    size_t best = SIZE_MAX;
    int best_score = 0;
    for (size_t i = 0; i < p->count; i++) {
        enum fitness f = fitness_of(p, img, text, &p->threads[i], notes);
        int score = f == UNFIT ? 0 : 2 * (int)f + (p->threads[i].tid != p->pid);
        if (score > best_score) {
            best = i;
            best_score = score;
        }
    }
    return best;
}

static uintptr_t find_syscall_insn(const struct libc_text *text)
{
    for (size_t i = 0; i + 1 < text->len; i++)
        if (text->bytes[i] == 0x0f && text->bytes[i + 1] == 0x05)
            return text->start + i;
    return 0;
}

/* ---- the injection ------------------------------------------------------------------------- */

struct injection {
    struct traced_process *p;
    pid_t tid;
    struct saved_state saved;
    struct inject_page page;
    struct loader_code code;
    uintptr_t syscall_insn;
    uintptr_t fn_errno, fn_attr_init, fn_attr_detach, fn_create, fn_attr_destroy;
    uintptr_t fn_dlopen, fn_dlsym, fn_dlerror, fn_munmap;
    uintptr_t entry;                 /* preset: the mapped library's entry */
    const char *entry_name;
    char target_path[PATH_MAX];      /* the path the target dlopens */
    int memfd;                       /* the target's descriptor of the copy, or -1 */
    char why[WHY_CAP];
};

static int map_pages(struct injection *in)
{
    /* Read+execute: the injector writes through /proc/PID/mem, the bootstrap makes the data
     * page writable itself. */
    const long args[6] = {0, INJECT_PAGES * DATA_SIZE, PROT_READ | PROT_EXEC,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0};
    long ret;
    int rc = remote_syscall_at(in->p, in->tid, &in->saved, in->syscall_insn, SYS_mmap, args,
                               &ret, in->why);
    if (rc)
        return rc;
    if (ret < 0 && ret > -4096) {
        snprintf(in->why, WHY_CAP, "mmap in the process failed: %s", strerror((int)-ret));
        return (int)ret;
    }
    in->page.base = (uintptr_t)ret;
    in->page.gadget_trap = in->page.base + in->code.gadget_trap;
    return 0;
}

static void put_u64(uint8_t *data, size_t at, uint64_t v)
{
    memcpy(data + at, &v, sizeof v);
}

static int write_pages(struct injection *in)
{
    uint8_t *data = calloc(1, DATA_SIZE);
    if (!data)
        return -ENOMEM;
    put_u64(data, DATA_FN_DLOPEN, in->fn_dlopen);
    put_u64(data, DATA_FN_DLSYM, in->fn_dlsym);
    put_u64(data, DATA_FN_DLERROR, in->fn_dlerror);
    put_u64(data, DATA_FN_MUNMAP, in->fn_munmap);
    put_u64(data, DATA_ENTRY, in->entry);
    put_u64(data, DATA_FN_ERRNO, in->fn_errno);
    put_u64(data, DATA_FN_ATTR_INIT, in->fn_attr_init);
    put_u64(data, DATA_FN_ATTR_DETACH, in->fn_attr_detach);
    put_u64(data, DATA_FN_CREATE, in->fn_create);
    put_u64(data, DATA_FN_ATTR_DESTROY, in->fn_attr_destroy);
    put_u64(data, DATA_LOADER, in->page.base + in->code.entry);
    int32_t memfd = in->memfd;
    memcpy(data + DATA_MEMFD, &memfd, sizeof memfd);
    struct timespec one_ms = {0, 1000000};
    memcpy(data + DATA_WAIT_TS, &one_ms, sizeof one_ms);
    snprintf((char *)data + DATA_THREAD_NAME, 16, "hotpatch-attach");
    snprintf((char *)data + DATA_ENTRY_NAME, DATA_PATH - DATA_ENTRY_NAME, "%s", in->entry_name);
    memcpy(data + DATA_PATH, in->target_path, strlen(in->target_path) + 1); /* checked to fit */
    int rc = poke(in->p, in->page.base + DATA_SIZE, data, DATA_SIZE);
    free(data);
    if (rc == 0)
        rc = poke(in->p, in->page.base, in->code.bytes, in->code.len);
    if (rc) {
        snprintf(in->why, WHY_CAP, "cannot write the injected pages: %s", strerror(-rc));
        return rc;
    }
    return 0;
}

struct release_others {
    struct traced_process *p;
    size_t keep;
};

static void release_the_others(void *context)
{
    struct release_others *r = context;
    release_all_but(r->p, r->keep);
}

/* T calls the bootstrap: the data page made writable, errno kept, the loader thread created
 * detached (it inherits T's mask: every signal blocked). Every other thread is let go as soon
 * as T runs: the bootstrap may wait for a lock one of them holds, and their release then
 * overlaps T's work instead of adding to T's pause. */
static int create_loader_thread(struct injection *in, size_t chosen)
{
    static const char *const stages[] = {"", "mprotect", "pthread_attr_init",
                                         "pthread_attr_setdetachstate", "pthread_create"};
    long ret;
    const long args[6] = {(long)(in->page.base + DATA_SIZE), 0, 0, 0, 0, 0};
    struct release_others others = {in->p, chosen};
    struct meanwhile release = {release_the_others, &others};
    int rc = remote_call(in->p, in->tid, &in->saved, &in->page,
                         in->page.base + in->code.bootstrap, args, &ret, CALL_TIMEOUT_MS,
                         &release, in->why);
    if (rc)
        return rc;
    unsigned stage = (unsigned)((unsigned long)ret >> 32);
    int err = (int)(ret & 0xffffffff);
    if (stage == 0 && err == 0)
        return 0;
    snprintf(in->why, WHY_CAP, "%s in the process failed: %s",
             stage < 5 ? stages[stage] : "the bootstrap", strerror(err));
    return -(err ? err : EIO);
}

/* Copies the library into a memfd of the target (a container cannot see our file). */
static int copy_into_memfd(struct injection *in, const char *library)
{
    uintptr_t name = in->page.base + DATA_SIZE + DATA_PATH;
    static const char memfd_name[] = "hotpatch_preload";
    int rc = poke(in->p, name, memfd_name, sizeof memfd_name);
    long fd = -1;
    const long args[6] = {(long)name, MFD_CLOEXEC, 0, 0, 0, 0};
    if (rc == 0)            /* the code page is not executable yet: libc's `syscall` */
        rc = remote_syscall_at(in->p, in->tid, &in->saved, in->syscall_insn, SYS_memfd_create,
                               args, &fd, in->why);
    if (rc)
        return rc;
    if (fd < 0) {
        snprintf(in->why, WHY_CAP, "memfd_create in the process failed: %s",
                 strerror((int)-fd));
        return (int)fd;
    }
    in->memfd = (int)fd;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/%ld", in->p->pid, fd);
    int src = open(library, O_RDONLY | O_CLOEXEC), dst = open(path, O_WRONLY | O_CLOEXEC);
    char buf[65536];
    ssize_t n = 0;
    while (src >= 0 && dst >= 0 && (n = read(src, buf, sizeof buf)) > 0)
        if (write(dst, buf, (size_t)n) != n) {
            n = -1;
            break;
        }
    rc = src < 0 || dst < 0 || n < 0 ? -errno : 0;
    if (src >= 0)
        close(src);
    if (dst >= 0)
        close(dst);
    if (rc) {
        snprintf(in->why, WHY_CAP, "cannot copy %.300s into the process: %s", library,
                 strerror(-rc));
        return rc;
    }
    snprintf(in->target_path, sizeof in->target_path, "/proc/self/fd/%ld", fd);
    return 0;
}

/* Undoes a failed injection: the pages and the memfd go; T's state comes back. */
static void undo(struct injection *in)
{
    long ret;
    char why[WHY_CAP];
    if (in->memfd >= 0) {
        const long args[6] = {in->memfd, 0, 0, 0, 0, 0};
        remote_syscall_at(in->p, in->tid, &in->saved, in->syscall_insn, SYS_close, args, &ret,
                          why);
    }
    if (in->page.base) {
        const long args[6] = {(long)in->page.base, INJECT_PAGES * DATA_SIZE, 0, 0, 0, 0};
        remote_syscall_at(in->p, in->tid, &in->saved, in->syscall_insn, SYS_munmap, args, &ret,
                          why);
    }
}

/* Runs the whole injection on T, thread `chosen`. The pages are mapped and written while
 * every thread is still held (T's round trips then need no scheduler slice against the
 * program's busy threads); the others are let go as T starts the bootstrap, which may wait
 * for a lock one of them holds. 0 when the loader thread was created; else the process is
 * as it was (every thread still held is let go by the caller). */
static int inject(struct injection *in, const char *library, bool needs_memfd, size_t chosen)
{
    int rc = save_state(in->tid, &in->saved, in->why);
    if (rc)
        return rc;
    rc = block_all_signals(in->tid, in->why);
    if (rc == 0)
        rc = map_pages(in);
    if (rc == 0 && needs_memfd && !in->entry)
        rc = copy_into_memfd(in, library);
    if (rc == 0)
        rc = write_pages(in);
    if (rc == 0)
        rc = create_loader_thread(in, chosen);
    if (rc != 0 && rc != -ESRCH && in->page.base)
        undo(in);
    char why[WHY_CAP];
    if (rc != -ESRCH && restore_state(in->tid, &in->saved, why) != 0 && rc == 0) {
        snprintf(in->why, WHY_CAP, "%s", why);
        rc = -EIO;
    }
    return rc;
}

/* ---- the loader's answer ------------------------------------------------------------------- */

static void read_target_string(struct traced_process *p, uintptr_t at, char *out, size_t cap)
{
    out[0] = 0;
    if (!at)
        return;
    ssize_t n = pread(p->mem_fd, out, cap - 1, (off_t)at);
    out[n > 0 ? (size_t)n : 0] = 0;
    out[strcspn(out, "\n")] = 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits for the loader thread's result. 0 when the agent started; else says why. */
static int await_loader(struct injection *in, const char *library)
{
    uintptr_t data = in->page.base + DATA_SIZE;
    uint32_t head[4] = {0};
    for (int waited = 0; waited < LOADER_TIMEOUT_MS * 10; waited++) {
        if (peek(in->p, data, head, sizeof head) != 0) {
            say("process %d exited during attach", in->p->pid);
            return EXIT_TROUBLE;
        }
        if (head[0] == 1)
            break;
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    if (head[0] != 1) {
        say("the agent did not start in process %d within %d ms (its loader thread is still "
            "in dlopen or the agent's start); it is left to finish", in->p->pid,
            LOADER_TIMEOUT_MS);
        return EXIT_TROUBLE;
    }
    uint64_t dlerror_at = 0;
    peek(in->p, data + DATA_DLERROR, &dlerror_at, sizeof dlerror_at);
    char text[512];
    read_target_string(in->p, (uintptr_t)dlerror_at, text, sizeof text);
    uint32_t ack = 1;
    poke(in->p, data + DATA_ACK, &ack, sizeof ack);
    head[1] = ack;                            /* what the page holds now, until it goes */
    /* The loader unmaps both pages next: wait for that, so nothing of the injector is left
     * when attach returns (its thread ends right after). The results are the ones read before
     * the ack: once the pages are gone, another mapping may take their address. */
    uint32_t now[4];
    for (int waited = 0; waited < 2000 && peek(in->p, data, now, sizeof now) == 0 &&
                         memcmp(now, head, sizeof now) == 0;
         waited++)
        sleep_ms(1);
    int32_t result = (int32_t)head[2];
    if (head[3] == 1) {
        say("refusing: process %d could not load %s: %s", in->p->pid, library,
            text[0] ? text : "dlopen failed");
        return EXIT_REFUSED;
    }
    if (head[3] == 2) {
        say("refusing: %s has no %s (%s): not a hotpatch preload agent of this version",
            library, in->entry_name, text);
        return EXIT_REFUSED;
    }
    if (result != 0) {
        say("the agent in process %d did not start: %s (its log, on the process's stderr or "
            "HOTPATCH_LOG, says more)", in->p->pid, strerror(-result));
        return EXIT_REFUSED;
    }
    return 0;
}

/* The agent answers on its socket: found among the process's listeners, and a `version` gets
 * a reply. */
static int await_agent(long pid, struct attach_report *r, int timeout_ms)
{
    struct process_identity who;
    if (identify_quietly(pid, &who) != 0) {
        say("process %ld exited during attach", pid);
        return EXIT_TROUBLE;
    }
    struct agent_socket found;
    const char *unreadable;
    for (int waited = 0; locate_agent_socket(&who, &found, &unreadable) != 0; waited += 5) {
        if (waited >= timeout_ms) {
            say("the agent started in process %ld, but no socket of it appeared within %d ms",
                pid, timeout_ms);
            return EXIT_TROUBLE;
        }
        sleep_ms(5);
    }
    snprintf(r->socket, sizeof r->socket, "%s", found.path);
    struct agent_file file;
    if (open_agent_file(&found, &file) != 0) {
        say("the agent in process %ld does not answer on %s", pid, found.path);
        return EXIT_TROUBLE;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    memcpy(addr.sun_path, file.via, strlen(file.via) + 1);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char reply[256];
    ssize_t n = -1;
    if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        check_agent_of_process(fd, &found, &who, &file) &&
        send(fd, "version\n", 8, MSG_NOSIGNAL) == 8)
        n = recv(fd, reply, sizeof reply - 1, 0);
    if (fd >= 0)
        close(fd);
    close_agent_file(&file);
    if (n <= 0) {
        say("the agent in process %ld does not answer on %s", pid, found.path);
        return EXIT_TROUBLE;
    }
    return 0;
}

/* ---- one attempt --------------------------------------------------------------------------- */

static bool resolve_functions(struct injection *in, const struct target_image *img)
{
    pid_t pid = in->p->pid;
    const struct mapped_object *c = &img->libc;
    in->fn_errno = resolve_symbol(pid, c, "__errno_location");
    in->fn_attr_init = resolve_symbol(pid, c, "pthread_attr_init");
    in->fn_attr_detach = resolve_symbol(pid, c, "pthread_attr_setdetachstate");
    in->fn_create = resolve_symbol(pid, c, "pthread_create");
    in->fn_attr_destroy = resolve_symbol(pid, c, "pthread_attr_destroy");
    in->fn_munmap = resolve_symbol(pid, c, "munmap");
    const struct mapped_object *dl = c;
    in->fn_dlopen = resolve_symbol(pid, c, "dlopen");
    if (!in->fn_dlopen && img->libdl.found) {
        dl = &img->libdl;
        in->fn_dlopen = resolve_symbol(pid, dl, "dlopen");
    }
    in->fn_dlsym = resolve_symbol(pid, dl, "dlsym");
    in->fn_dlerror = resolve_symbol(pid, dl, "dlerror");
    return in->fn_errno && in->fn_attr_init && in->fn_attr_detach && in->fn_create &&
           in->fn_attr_destroy && in->fn_munmap && in->fn_dlopen && in->fn_dlsym &&
           in->fn_dlerror;
}

enum attempt { ATTEMPT_DONE, ATTEMPT_RETRY, ATTEMPT_FAILED };

/* What is read before any thread is held (none of it changes while the program runs): the
 * memory map, libc's text, the functions the injection calls, the mapped agent's entry. */
struct attach_plan {
    long pid;
    const char *library;
    bool needs_memfd;
    bool check_seccomp;              /* Seccomp: 2 — read and run its filters once, held */
    struct attach_report *report;
    struct choice_notes notes;
    struct target_image img;
    struct libc_text text;
    struct injection template;       /* every field but the process and the thread */
    int status;                      /* ATTEMPT_FAILED: the exit status (said) */
};

static int prepare(struct attach_plan *plan)
{
    char why[WHY_CAP];
    pid_t pid = (pid_t)plan->pid;
    struct injection *in = &plan->template;
    in->memfd = -1;
    if (read_target_image(pid, &plan->img, why) != 0 ||
        read_libc_text(pid, &plan->img, &plan->text) != 0) {
        say("process %ld exited during attach", plan->pid);
        return EXIT_TROUBLE;
    }
    in->p = &(struct traced_process){.pid = pid};
    bool resolved = resolve_functions(in, &plan->img);
    in->p = NULL;
    if (!resolved) {
        say("refusing to attach to process %ld: its C library %s lacks dlopen (glibc before "
            "2.34 has it in libdl, which the process has not loaded) or pthread_create; start "
            "it with LD_PRELOAD=%s instead", plan->pid, plan->img.libc.path, plan->library);
        return EXIT_REFUSED;
    }
    in->syscall_insn = find_syscall_insn(&plan->text);
    const struct mapped_object *agent = &plan->img.agent;
    if (agent->found) {
        in->entry_name = plan->img.agent_is_preload ? "hotpatch_attach_start" : "hotpatch_start";
        in->entry = resolve_symbol(pid, agent, in->entry_name);
        plan->report->restarted = in->entry != 0;
        snprintf(plan->report->library, sizeof plan->report->library, "%s", agent->path);
    }
    if (!in->entry && (in->entry = resolve_symbol(pid, &plan->img.exe, "hotpatch_start"))) {
        /* The program carries its own exported agent (libhotpatch.a, -rdynamic): start it. */
        in->entry_name = "hotpatch_start";
        plan->report->restarted = true;
        snprintf(plan->report->library, sizeof plan->report->library, "%s", plan->img.exe.path);
    }
    if (!in->entry) {
        in->entry_name = "hotpatch_attach_start";
        snprintf(in->target_path, sizeof in->target_path, "%s", plan->library);
        plan->report->memfd = plan->needs_memfd;
    }
    arch_loader_code(&in->code);
    return 0;
}

static enum attempt failed(struct attach_plan *plan, int status)
{
    plan->status = status;
    return ATTEMPT_FAILED;
}

/* Uses the chosen thread (every other one running again) and waits for the loader. */
static enum attempt inject_with(struct attach_plan *plan, struct traced_process *p,
                                size_t chosen)
{
    struct injection in = plan->template;
    in.p = p;
    in.tid = p->threads[chosen].tid;
    struct traced_thread *t = &p->threads[chosen];
    long nr = arch_syscall_nr(&t->regs);
    snprintf(plan->report->thread_was, sizeof plan->report->thread_was, "%s",
             nr >= 0 ? call_name(nr) : "program code");
    plan->report->thread = in.tid;
    int rc = inject(&in, plan->library, plan->needs_memfd, chosen);
    if (p->deferred_stop && t->signal == 0)
        t->signal = p->deferred_stop;    /* SIGSTOP meanwhile: the process stops now */
    if (rc != -ESRCH) {
        /* T, its mask back, would take a signal queued for the process meanwhile, perhaps in
         * an interrupted nanosleep (EINTR): leave it a moment to the threads that run. */
        if (p->threads[chosen].tid != p->pid)
            await_shared_signals_taken(p->pid, 10);
        release_thread(p, chosen);
    }
    plan->report->pause_ns = p->longest_pause_ns;
    saved_state_free(&in.saved);
    if (rc == -ESRCH) {
        say("process %ld exited during attach", plan->pid);
        return failed(plan, EXIT_TROUBLE);
    }
    if (rc) {
        say("refusing to attach to process %ld: %s; the process is as it was", plan->pid,
            in.why);
        return failed(plan, EXIT_REFUSED);
    }
    plan->status = await_loader(&in, plan->report->library[0] ? plan->report->library
                                                              : plan->library);
    return plan->status == 0 ? ATTEMPT_DONE : ATTEMPT_FAILED;
}

static enum attempt attempt_once(struct attach_plan *plan)
{
    plan->notes = (struct choice_notes){0};
    struct traced_process p;
    char why[WHY_CAP];
    int rc = trace_process(&p, (pid_t)plan->pid, why);
    enum attempt result;
    if (rc == -ESRCH) {
        say("process %ld exited during attach", plan->pid);
        result = failed(plan, EXIT_TROUBLE);
    } else if (rc) {
        say("refusing to attach to process %ld: %s", plan->pid, why);
        result = failed(plan, EXIT_REFUSED);
    } else if (plan->check_seccomp && (plan->status = check_seccomp(p.pid)) != 0) {
        result = ATTEMPT_FAILED;
    } else {
        plan->check_seccomp = false;
        size_t chosen = choose_thread(&p, &plan->img, &plan->text, &plan->notes);
        result = chosen == SIZE_MAX ? ATTEMPT_RETRY : inject_with(plan, &p, chosen);
    }
    release_all_but(&p, SIZE_MAX);   /* whoever is still held (none after an injection) */
    traced_process_free(&p);
    return result;
}

/* ---- the command --------------------------------------------------------------------------- */

static void json_text(const char *key, const char *value)
{
    printf(",\"%s\":", key);
    json_write_string(stdout, value, strlen(value));
}

static void print_report(const struct attach_report *r, bool json)
{
    double pause_ms = (double)r->pause_ns / 1e6;
    double total_ms = (double)(monotonic_ns() - r->started_ns) / 1e6;
    if (!json) {
        printf("attached to process %ld: %s agent %s%s; thread %d (in %s) created its loader "
               "thread; socket %s\n"
               "target paused at most %.3f ms; attach took %.1f ms\n",
               r->pid, r->restarted ? "restarted the" : "loaded the", r->library,
               r->memfd ? " (as a copy in a memfd)" : "", r->thread, r->thread_was, r->socket,
               pause_ms, total_ms);
        return;
    }
    printf("{\"ok\":true,\"pid\":%ld", r->pid);
    json_text("library", r->library);
    printf(",\"restarted\":%s,\"memfd\":%s,\"thread\":%d", r->restarted ? "true" : "false",
           r->memfd ? "true" : "false", (int)r->thread);
    json_text("thread_was", r->thread_was);
    json_text("socket", r->socket);
    printf(",\"pause_ms\":%.3f,\"attach_ms\":%.3f}\n", pause_ms, total_ms);
}

static void print_refusal_json(long pid, int status)
{
    printf("{\"ok\":false,\"pid\":%ld,\"reached\":%s", pid,
           status != EXIT_TROUBLE ? "true" : "false");
    json_text("error", first_message());
    printf("}\n");
}

static void say_no_safe_thread(long pid, const struct choice_notes *n)
{
    char own[160] = "";
    if (n->in_program_with_own_malloc)
        snprintf(own, sizeof own, ", running its own code while it has its own malloc (which "
                 "may hold that allocator's lock): %d", n->in_program_with_own_malloc);
    say("refusing to attach to process %ld: no thread came to a safe point within about a "
        "second (threads inside libc or the loader: %d, waiting for a lock or in a call that "
        "may hold one: %d, in a signal handler: %d, stopped by a signal: %d%s); try again when "
        "it is less busy", pid, n->in_runtime, n->in_lock_wait + n->in_other_call,
        n->signal_frame, n->by_signal, own);
}

static int attach_checked(long pid, struct attach_report *report, int timeout_ms)
{
    int seccomp_mode = 0;
    int rc = check_status(pid, &seccomp_mode);
    if (rc)
        return rc;
    struct process_identity who;
    if (!identify_process(pid, &who))
        return EXIT_TROUBLE;
    char why[WHY_CAP];
    struct target_image img;
    if (read_target_image((pid_t)pid, &img, why) != 0) {
        say("cannot attach to process %ld: %s", pid, why);
        return EXIT_TROUBLE;
    }
    if (!img.loader.found || !img.libc.found) {
        say("refusing to attach to process %ld: it has no glibc dynamic loader (%s): it is "
            "statically linked or uses another C library, so the agent cannot be loaded into "
            "it; link it with libhotpatch instead", pid,
            !img.loader.found ? "no ld-linux in its memory map" : "no libc.so.6");
        return EXIT_REFUSED;
    }
    if ((rc = check_not_serving(&who)) != 0)
        return rc;
    char library[PATH_MAX];
    if (!find_library(library, sizeof library)) {
        say("cannot attach: the preload agent %s is not there (set HOTPATCH_PRELOAD_LIBRARY "
            "to its path)", library);
        return EXIT_TROUBLE;
    }
    if (strlen(library) >= DATA_SIZE - DATA_PATH) {
        say("cannot attach: the preload agent's path is longer than %d bytes: %.200s...",
            DATA_SIZE - DATA_PATH - 1, library);
        return EXIT_TROUBLE;
    }
    snprintf(report->library, sizeof report->library, "%s", library);
    struct attach_plan plan = {.pid = pid, .library = library, .report = report,
                               .needs_memfd = who.root[0] != 0,
                               .check_seccomp = seccomp_mode == 2};
    rc = prepare(&plan);
    enum attempt a = ATTEMPT_RETRY;
    for (int attempt = 0; rc == 0 && a == ATTEMPT_RETRY && attempt < ATTEMPTS; attempt++) {
        if (attempt)
            sleep_ms(10 << (attempt - 1));
        a = attempt_once(&plan);
    }
    free(plan.text.bytes);
    if (rc)
        return rc;
    if (a == ATTEMPT_FAILED)
        return plan.status;
    if (a == ATTEMPT_DONE)
        return await_agent(pid, report, timeout_ms);
    say_no_safe_thread(pid, &plan.notes);
    return EXIT_REFUSED;
}

int run_attach(long pid, bool json, int timeout_ms)
{
    /* An injector killed while the target runs injected code would leave that thread to hit
     * the int3 with nobody to catch it (the kernel lets tracees go when their tracer dies),
     * and the target would die of SIGTRAP: Ctrl-C and friends wait until attach is done (it
     * is bounded: a few seconds at most). */
    sigset_t quiet, saved;
    sigemptyset(&quiet);
    int deferred[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP};
    for (size_t i = 0; i < sizeof deferred / sizeof deferred[0]; i++)
        sigaddset(&quiet, deferred[i]);
    sigprocmask(SIG_BLOCK, &quiet, &saved);
    struct attach_report report = {.pid = pid, .started_ns = monotonic_ns()};
    int rc = attach_checked(pid, &report, timeout_ms);
    if (rc == 0)
        print_report(&report, json);
    else if (json)
        print_refusal_json(pid, rc);
    fflush(stdout);
    sigprocmask(SIG_SETMASK, &saved, NULL);
    return rc;
}
