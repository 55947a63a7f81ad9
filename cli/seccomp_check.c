/*
 * seccomp_check.c — before attaching to a process in seccomp filter mode, find out whether its
 * filters would kill it, or fail a call, when the injector and the agent make their system
 * calls: a filter that kills on mmap would end the program the moment the injector maps its
 * page, which no restore can undo.
 *
 * How: the filters are read with PTRACE_SECCOMP_GET_FILTER (the kernel hands out the classic
 * BPF program of each; it needs CAP_SYS_ADMIN and a kernel with CONFIG_CHECKPOINT_RESTORE) and
 * run here, by a small interpreter over struct seccomp_data, for each call in `needed` with the
 * arguments the injector or the agent passes (a filter that looks at arguments sees those).
 * Anything but ALLOW or LOG from any filter refuses the attach, naming the call and the
 * action. Filters that cannot be read refuse too: an unknown filter may kill. Only the main
 * thread's filters are read (threads inherit them; one that installed its own later is not
 * seen — said in docs/attach.md).
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>

#include <sched.h>

#include "exchange.h"
#include "message.h"
#include "seccomp_check.h"

#ifndef PTRACE_SECCOMP_GET_FILTER
#define PTRACE_SECCOMP_GET_FILTER 0x420c
#endif
#ifndef SECCOMP_RET_ACTION_FULL
#define SECCOMP_RET_ACTION_FULL 0xffff0000U
#endif
#ifndef SECCOMP_RET_LOG
#define SECCOMP_RET_LOG 0x7ffc0000U
#endif

#define MAX_FILTERS 64
#define MAX_INSNS BPF_MAXINSNS

/* A system call the attach makes, with the arguments it makes it with, and the errno the
 * filter may fail it with because glibc then does without (ANY_ERRNO: whatever the errno). */
struct needed_call {
    const char *name;
    long nr;
    uint64_t args[6];
    int tolerated_errno;
};
#define ANY_ERRNO (-1)

#define PTHREAD_CLONE_FLAGS                                                                  \
    (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM |       \
     CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID)

static const struct needed_call needed[] = {
    {"mmap", SYS_mmap,
     {0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1ULL, 0}, 0},
    {"mprotect", SYS_mprotect, {0, 4096, PROT_READ | PROT_EXEC, 0, 0, 0}, 0},
    {"munmap", SYS_munmap, {0, 8192, 0, 0, 0, 0}, 0},
    {"memfd_create", SYS_memfd_create, {0, 1 /* MFD_CLOEXEC */, 0, 0, 0, 0}, 0},
    {"clone3", SYS_clone3, {0, 88, 0, 0, 0, 0}, ENOSYS},   /* glibc then uses clone */
    {"clone", SYS_clone, {PTHREAD_CLONE_FLAGS, 0, 0, 0, 0, 0}, 0},
    {"rt_sigprocmask", SYS_rt_sigprocmask, {SIG_SETMASK, 0, 0, 8, 0, 0}, 0},
    {"prctl", SYS_prctl, {15 /* PR_SET_NAME */, 0, 0, 0, 0, 0}, 0},
    {"futex", SYS_futex, {0, 128 /* FUTEX_WAIT_PRIVATE */, 0, 0, 0, 0}, 0},
    {"openat", SYS_openat, {(uint64_t)-100, 0, 0x80000 /* O_RDONLY|O_CLOEXEC */, 0, 0, 0}, 0},
    {"read", SYS_read, {3, 0, 832, 0, 0, 0}, 0},
    {"pread64", SYS_pread64, {3, 0, 784, 64, 0, 0}, 0},
    {"newfstatat", SYS_newfstatat, {3, 0, 0, 0x1000 /* AT_EMPTY_PATH */, 0, 0}, 0},
    {"fstat", SYS_fstat, {3, 0, 0, 0, 0, 0}, 0},
    {"close", SYS_close, {3, 0, 0, 0, 0, 0}, 0},
    {"socket", SYS_socket, {1 /* AF_UNIX */, 0x80001 /* STREAM|CLOEXEC */, 0, 0, 0, 0}, 0},
    {"bind", SYS_bind, {3, 0, 110, 0, 0, 0}, 0},
    {"listen", SYS_listen, {3, 128, 0, 0, 0, 0}, 0},
    {"accept4", SYS_accept4, {3, 0, 0, 0x80800, 0, 0}, 0},
    {"poll", SYS_poll, {0, 2, 1000, 0, 0, 0}, 0},
    {"eventfd2", SYS_eventfd2, {0, 0x80800, 0, 0, 0, 0}, 0},
    {"recvmsg", SYS_recvmsg, {4, 0, 0x40, 0, 0, 0}, 0},
    {"sendto", SYS_sendto, {4, 0, 64, 0x4000 /* MSG_NOSIGNAL */, 0, 0}, 0},
    {"getsockopt", SYS_getsockopt, {4, 1, 17 /* SO_PEERCRED */, 0, 0, 0}, 0},
    {"fchmod", SYS_fchmod, {3, 0600, 0, 0, 0, 0}, 0},
    {"unlink", SYS_unlink, {0, 0, 0, 0, 0, 0}, 0},
    {"madvise", SYS_madvise, {0, 4096, 4 /* MADV_DONTNEED */, 0, 0, 0}, 0},
    {"set_robust_list", SYS_set_robust_list, {0, 24, 0, 0, 0, 0}, 0},
    {"rseq", 334, {0, 32, 0, 0x53053053, 0, 0}, ANY_ERRNO}, /* glibc runs without it */
    {"exit", SYS_exit, {0, 0, 0, 0, 0, 0}, 0},
    {"getpid", SYS_getpid, {0, 0, 0, 0, 0, 0}, 0},
};

/* ---- the interpreter ----------------------------------------------------------------------- */

/* Runs a classic BPF program on data; false when the program is malformed. */
static bool run_filter(const struct sock_filter *f, size_t n, const struct seccomp_data *data,
                       uint32_t *ret)
{
    uint32_t a = 0, x = 0, mem[BPF_MEMWORDS] = {0};
    const uint8_t *bytes = (const uint8_t *)data;
    for (size_t pc = 0; pc < n; pc++) {
        const struct sock_filter *i = &f[pc];
        uint32_t k = i->k;
        uint32_t src = BPF_SRC(i->code) == BPF_X ? x : k;
        switch (BPF_CLASS(i->code)) {
        case BPF_LD:
            if (BPF_MODE(i->code) == BPF_ABS && BPF_SIZE(i->code) == BPF_W) {
                if (k > sizeof *data - 4 || k % 4)
                    return false;
                memcpy(&a, bytes + k, 4);
            } else if (BPF_MODE(i->code) == BPF_IMM) {
                a = k;
            } else if (BPF_MODE(i->code) == BPF_MEM && k < BPF_MEMWORDS) {
                a = mem[k];
            } else if (BPF_MODE(i->code) == BPF_LEN) {
                a = sizeof *data;
            } else {
                return false;
            }
            break;
        case BPF_LDX:
            if (BPF_MODE(i->code) == BPF_IMM)
                x = k;
            else if (BPF_MODE(i->code) == BPF_MEM && k < BPF_MEMWORDS)
                x = mem[k];
            else if (BPF_MODE(i->code) == BPF_LEN)
                x = sizeof *data;
            else
                return false;
            break;
        case BPF_ST:
            if (k >= BPF_MEMWORDS)
                return false;
            mem[k] = a;
            break;
        case BPF_STX:
            if (k >= BPF_MEMWORDS)
                return false;
            mem[k] = x;
            break;
        case BPF_ALU:
            switch (BPF_OP(i->code)) {
            case BPF_ADD: a += src; break;
            case BPF_SUB: a -= src; break;
            case BPF_MUL: a *= src; break;
            case BPF_DIV: if (!src) return false; a /= src; break;
            case BPF_MOD: if (!src) return false; a %= src; break;
            case BPF_OR: a |= src; break;
            case BPF_AND: a &= src; break;
            case BPF_XOR: a ^= src; break;
            case BPF_LSH: a = src < 32 ? a << src : 0; break;
            case BPF_RSH: a = src < 32 ? a >> src : 0; break;
            case BPF_NEG: a = -a; break;
            default: return false;
            }
            break;
        case BPF_JMP:
            if (BPF_OP(i->code) == BPF_JA) {
                pc += k;
            } else {
                bool taken;
                switch (BPF_OP(i->code)) {
                case BPF_JEQ: taken = a == src; break;
                case BPF_JGT: taken = a > src; break;
                case BPF_JGE: taken = a >= src; break;
                case BPF_JSET: taken = (a & src) != 0; break;
                default: return false;
                }
                pc += taken ? i->jt : i->jf;
            }
            break;
        case BPF_RET:
            *ret = BPF_RVAL(i->code) == BPF_A ? a : k;
            return true;
        case BPF_MISC:
            if (BPF_MISCOP(i->code) == BPF_TAX)
                x = a;
            else
                a = x;
            break;
        default:
            return false;
        }
    }
    return false;                    /* fell off the end */
}

static const char *action_name(uint32_t action)
{
    switch (action & SECCOMP_RET_ACTION_FULL) {
    case SECCOMP_RET_KILL_PROCESS: return "kill the process";
    case SECCOMP_RET_KILL_THREAD: return "kill the thread";
    case SECCOMP_RET_TRAP: return "send SIGSYS";
    case SECCOMP_RET_ERRNO: return "fail it with an errno";
    case SECCOMP_RET_USER_NOTIF: return "hand it to a supervisor";
    case SECCOMP_RET_TRACE: return "hand it to a tracer";
    default: return "refuse it";
    }
}

/* ---- reading the filters ------------------------------------------------------------------- */

struct filters {
    struct sock_filter *prog[MAX_FILTERS];
    size_t len[MAX_FILTERS];
    size_t count;
};

/* Reads every filter of the main thread, which the caller holds stopped. 0 or an errno. */
static int read_filters(pid_t pid, struct filters *out)
{
    for (unsigned long i = 0; i < MAX_FILTERS; i++) {
        long n = ptrace(PTRACE_SECCOMP_GET_FILTER, pid, i, NULL);
        if (n < 0)
            return errno != ENOENT || i == 0 ? errno : 0;
        if (n == 0 || n > MAX_INSNS)
            return EINVAL;
        out->prog[i] = calloc((size_t)n, sizeof(struct sock_filter));
        if (!out->prog[i])
            return ENOMEM;
        out->count = i + 1;
        if (ptrace(PTRACE_SECCOMP_GET_FILTER, pid, i, out->prog[i]) != n)
            return errno ? errno : EIO;
        out->len[i] = (size_t)n;
    }
    return 0;
}

static void free_filters(struct filters *f)
{
    for (size_t i = 0; i < f->count; i++)
        free(f->prog[i]);
}

int check_seccomp(pid_t pid)
{
    struct filters f = {0};
    int err = read_filters(pid, &f);
    if (err) {
        say("refusing to attach to process %d: it runs under a seccomp filter that cannot be "
            "read (%s%s), and an unknown filter may kill it at the first injected call", pid,
            strerror(err), err == EACCES || err == EPERM ? ": reading it needs CAP_SYS_ADMIN"
                           : err == EINVAL ? ": the kernel lacks CONFIG_CHECKPOINT_RESTORE" : "");
        free_filters(&f);
        return EXIT_REFUSED;
    }
    int rc = 0;
    for (size_t c = 0; c < sizeof needed / sizeof needed[0] && rc == 0; c++) {
        struct seccomp_data data = {.nr = (int)needed[c].nr, .arch = AUDIT_ARCH_X86_64};
        memcpy(data.args, needed[c].args, sizeof data.args);
        for (size_t i = 0; i < f.count; i++) {
            uint32_t ret = 0;
            if (!run_filter(f.prog[i], f.len[i], &data, &ret)) {
                say("refusing to attach to process %d: its seccomp filter %zu could not be "
                    "evaluated (an instruction this checker does not know)", pid, i);
                rc = EXIT_REFUSED;
                break;
            }
            uint32_t action = ret & SECCOMP_RET_ACTION_FULL;
            int tolerated = needed[c].tolerated_errno;
            bool done_without = action == SECCOMP_RET_ERRNO &&
                                (tolerated == ANY_ERRNO ||
                                 (tolerated && (int)(ret & SECCOMP_RET_DATA) == tolerated));
            if (action != SECCOMP_RET_ALLOW && action != SECCOMP_RET_LOG && !done_without) {
                say("refusing to attach to process %d: its seccomp filter would %s on %s, a "
                    "call the attach or the agent makes; nothing was changed (allow %s in the "
                    "filter, or start the program with LD_PRELOAD=libhotpatch_preload.so)", pid,
                    action_name(action), needed[c].name, needed[c].name);
                rc = EXIT_REFUSED;
                break;
            }
        }
    }
    free_filters(&f);
    return rc;
}
