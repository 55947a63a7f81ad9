/*
 * inject.h — the attach injector's ptrace primitives (inject.c), their architecture part
 * (inject_x86_64.c) and what the injector reads of the target's memory map and objects
 * (target_image.c). The policy that uses them — which thread, when, and every refusal — is
 * attach.c's; the argument for the design is in attach.c's header.
 *
 * Functions return 0 or a negative errno and write a one-line reason into `why` (they print
 * nothing); a target that exits meanwhile shows as -ESRCH.
 */
#ifndef HOTPATCH_CLI_INJECT_H
#define HOTPATCH_CLI_INJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/user.h>

#define WHY_CAP 512

/* ---- one traced thread ------------------------------------------------------------------ */

enum stop_kind { STOP_NONE, STOP_EVENT, STOP_GROUP, STOP_SIGNAL };

struct traced_thread {
    pid_t tid;
    bool held;                       /* seized and stopped: ours to let go */
    enum stop_kind kind;
    int signal;                      /* STOP_SIGNAL: the signal to hand back when let go */
    struct user_regs_struct regs;    /* as stopped */
    long long stopped_ns;            /* CLOCK_MONOTONIC when its stop was seen */
};

/* Every thread of one process, held. */
struct traced_process {
    pid_t pid;
    int mem_fd;                      /* /proc/PID/mem, for reads and writes */
    struct traced_thread *threads;
    size_t count, cap;
    long long longest_pause_ns;      /* the longest any thread was held, so far */
    int deferred_stop;               /* a stop signal that came during injected code: handed
                                      * back when the thread is let go */
};

long long monotonic_ns(void);

/* Seizes and interrupts every thread, listing /proc/PID/task again until no new one appears,
 * and waits until each has stopped; reads their registers. On failure every thread taken is
 * let go again. */
int trace_process(struct traced_process *p, pid_t pid, char *why);
/* Lets thread i go (rewinding a system call our stop made fail with EINTR, exactly as the
 * engine's ptrace stop does), handing back a signal it was stopped with. */
void release_thread(struct traced_process *p, size_t i);
/* Waits (at most max_ms) until no signal is queued for the whole process: the threads
 * running take them. */
void await_shared_signals_taken(pid_t pid, int max_ms);
/* Lets every held thread go but `keep` (SIZE_MAX: all), the main thread first. */
void release_all_but(struct traced_process *p, size_t keep);
/* Frees what trace_process allocated (threads must have been released). */
void traced_process_free(struct traced_process *p);

/* Target memory through /proc/PID/mem (writes reach read-only pages too). */
int peek(struct traced_process *p, uintptr_t addr, void *buf, size_t len);
int poke(struct traced_process *p, uintptr_t addr, const void *buf, size_t len);

/* Whether the stopped thread has a signal queued for it (not for the whole process) that it
 * does not block and that would do something (a handler, a stop, the end): then an EINTR it
 * got belongs to that signal. */
bool live_signal_pending(pid_t pid, const struct traced_thread *t);

/* ---- running code on a held thread (inject.c, with the arch part) ------------------------ */

/* What the injector has put into the target: two pages, code (RX) then data (RW). */
struct inject_page {
    uintptr_t base;                  /* 0 until mapped */
    uintptr_t gadget_trap;           /* `int3`: the return address of remote calls */
};

/* A thread's complete user state: general registers and the extended (FPU/SSE/AVX) state. */
struct saved_state {
    struct user_regs_struct regs;
    uint8_t *xstate;
    size_t xstate_len;
    bool have_xstate;
    uint64_t sigmask;
};

int save_state(pid_t tid, struct saved_state *s, char *why);
/* Puts back registers, extended state and signal mask exactly. */
int restore_state(pid_t tid, const struct saved_state *s, char *why);
void saved_state_free(struct saved_state *s);

/* Blocks every signal of the held thread (PTRACE_SETSIGMASK) while the injector uses it. */
int block_all_signals(pid_t tid, char *why);

/* Makes the held thread run one system call at `insn` (an `0f 05` anywhere executable), with
 * single-step; *ret is the kernel's result. `from` is the state it started in. */
int remote_syscall_at(struct traced_process *p, pid_t tid, const struct saved_state *from,
                      uintptr_t insn, long nr, const long args[6], long *ret, char *why);
/* Work done while the held thread runs injected code (before its result is waited for). */
struct meanwhile {
    void (*run)(void *context);
    void *context;
};
/* Calls fn(args...) on the thread's own stack (below its red zone, 16-byte aligned), returning
 * into the page's int3; runs `meanwhile` (may be NULL) once the thread runs, then waits at
 * most timeout_ms. */
int remote_call(struct traced_process *p, pid_t tid, const struct saved_state *from,
                const struct inject_page *page, uintptr_t fn, const long args[6], long *ret,
                int timeout_ms, const struct meanwhile *meanwhile, char *why);

/* ---- inject_x86_64.c: registers and code --------------------------------------------------- */

void arch_set_syscall(struct user_regs_struct *r, uintptr_t insn, long nr, const long args[6]);
/* Sets up a call; returns the stack address where the return address must be written. */
uintptr_t arch_set_call(struct user_regs_struct *r, uintptr_t fn, const long args[6]);
long arch_result(const struct user_regs_struct *r);
uintptr_t arch_pc(const struct user_regs_struct *r);
uintptr_t arch_sp(const struct user_regs_struct *r);
/* The system call the thread is stopped in (-1 when none) and its first three arguments. */
long arch_syscall_nr(const struct user_regs_struct *r);
long arch_syscall_arg(const struct user_regs_struct *r, int i);

/* The loader thread's code, position independent, and where the gadgets are in it. */
struct loader_code {
    const uint8_t *bytes;
    size_t len;
    size_t entry, gadget_trap;
    size_t bootstrap;            /* what T calls: makes the data page writable, creates the loader */
};
/* The bootstrap's result: 0, or (stage << 32) | errno, stage one of these. */
enum { BOOT_MPROTECT = 1, BOOT_ATTR_INIT, BOOT_ATTR_DETACH, BOOT_CREATE };
void arch_loader_code(struct loader_code *out);

/* The data page the loader code reads and writes (offsets; see inject_x86_64.c). */
enum {
    DATA_STATE = 0x000,          /* u32: 0 while the loader runs, 1 when it is done */
    DATA_ACK = 0x004,            /* u32: the injector writes 1 when it has read the result */
    DATA_RESULT = 0x008,         /* i32: what the entry returned */
    DATA_STAGE = 0x00c,          /* u32: 1 dlopen failed, 2 dlsym failed, 3 the entry ran */
    DATA_DLERROR = 0x010,        /* u64: dlerror()'s text */
    DATA_HANDLE = 0x018,
    DATA_FN_DLOPEN = 0x020,
    DATA_FN_DLSYM = 0x028,
    DATA_FN_DLERROR = 0x030,
    DATA_FN_MUNMAP = 0x038,
    DATA_ENTRY = 0x040,          /* u64: the entry, when the library is mapped already */
    DATA_THREAD = 0x048,         /* pthread_t of the loader */
    DATA_MEMFD = 0x050,          /* i32: the target's descriptor of the library's copy, or -1 */
    DATA_WAIT_TS = 0x060,        /* struct timespec: one wait for the acknowledgement */
    DATA_FN_ERRNO = 0x080,       /* the bootstrap's functions (see inject_x86_64.c) */
    DATA_FN_ATTR_INIT = 0x088,
    DATA_FN_ATTR_DETACH = 0x090,
    DATA_FN_CREATE = 0x098,
    DATA_FN_ATTR_DESTROY = 0x0a0,
    DATA_LOADER = 0x0a8,         /* u64: the loader thread's start routine (in the code page) */
    DATA_ATTR = 0x100,           /* pthread_attr_t (56 bytes on x86_64) */
    DATA_THREAD_NAME = 0x200,
    DATA_ENTRY_NAME = 0x220,
    DATA_PATH = 0x300,           /* the library path, to the end of the page */
    DATA_SIZE = 0x1000,
};
#define INJECT_PAGES 2           /* code, data */
#define LOADER_WAIT_ROUNDS 5000  /* 1 ms each: how long the loader waits for the ack */

/* ---- target_image.c: what is mapped ------------------------------------------------------- */

struct mapped_object {
    char path[4096];             /* as /proc/PID/maps names it */
    uintptr_t start, end;        /* its first mapping (file offset 0) .. its last */
    uintptr_t first_end;         /* the end of its first mapping (names it in map_files) */
    uintptr_t text_start, text_end; /* its first executable mapping */
    bool found;
};

struct target_image {
    struct mapped_object libc, loader, libdl, exe;
    struct mapped_object preload, linked;   /* libhotpatch_preload (or its memfd copy), libhotpatch.so */
    struct mapped_object agent;  /* the one to restart: preload if mapped, else linked */
    bool agent_is_preload;
    bool own_malloc;             /* an object other than libc exports malloc: it interposes */
};

/* Reads /proc/PID/maps. */
int read_target_image(pid_t pid, struct target_image *img, char *why);
/* True when pc lies in libc's, libdl's or the dynamic loader's mappings. */
bool in_runtime_code(const struct target_image *img, uintptr_t pc);
/* The run-time address of the default version of the dynamic symbol `name` of the mapped
 * object, or 0 (read from the mapped file through /proc/PID/map_files, else /proc/PID/root). */
uintptr_t resolve_symbol(pid_t pid, const struct mapped_object *o, const char *name);

#endif
