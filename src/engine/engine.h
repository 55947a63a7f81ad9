/*
 * engine.h — the function patch engine's interface (not installed). The engine knows nothing of
 * the agent: callers above it (commands/func.c, the tests, the benchmark) pass in what it needs.
 *
 * One file per subsystem, so that architecture-specific encoding stays out of the engine:
 *
 *   patch.c         the engine: one record per patched function with its stack of versions,
 *                   relay slots within +-2 GB, the unload check. Every entry point below takes
 *                   the engine lock (see patch.c for its scope).
 *   stop.c          stopping every other thread of the process for a moment, used to prove
 *                   where threads are: around every code write, and before a library is
 *                   unmapped. ptrace_stop.c does it with ptrace from a helper process (the
 *                   primary stop), signal_stop.c with a real-time signal (the fallback).
 *   maps.c          /proc/self/maps of any size, read without malloc or libc calls (maps.h).
 *   symbols.c       name -> address and size, from the ELF symbol tables of mapped objects
 *                   (symbol versions, full paths as OBJECT).
 *   elf.c           reading a loaded object's ELF file: symbols, versions, sections (elf.h).
 *   branch_proof.c  no code of an object may branch into a patch site: a per-object index of
 *                   every address its code may reach, cached (branch_proof.h).
 *   self.c          where hotpatch's own code is: never a target nor a replacement.
 *   refscan.c       before an unload: no word of writable memory points into the library.
 *   arch/x86_64.c   instruction encoding and code writes with every other thread stopped
 *                   (membarrier SYNC_CORE, writes through /proc/self/mem or mprotect); arch.h.
 *   arch/x86_64_decode.c  decoding a function and sweeping an object (capstone, loaded on
 *                   first use) for branches into the bytes the jump overwrites.
 */
#ifndef HOTPATCH_ENGINE_H
#define HOTPATCH_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "stopped_window.h"

/* ---- patch.c: the engine --------------------------------------------------------------- */

/* Where a version of a function comes from (shown by `func list`). */
struct hp_patch_origin {
    const char *library;  /* name the library was loaded as ("" for the original code) */
    const char *symbol;   /* symbol name in that library */
    void *address;        /* the replacement's entry */
};

/* What the engine needs to know about the function being replaced. */
struct hp_patch_target {
    const char *name;     /* display name, e.g. "add_func" or "libfoo.so:helper" */
    void *entry;          /* the function's entry address */
    size_t size;          /* its size in bytes from the symbol table; 0 when unknown */
};

/*
 * Installs `origin` as the new top version of the function at target->entry. The first upgrade
 * of a function saves its original bytes; later ones stack. Returns 0, or a negative errno with
 * a one-line reason in why and nothing changed.
 */
int hp_patch_upgrade(const struct hp_patch_target *target, const struct hp_patch_origin *origin,
                     char *why, size_t why_cap);

/*
 * Removes the top version of the function named `name` (a display name given to an upgrade)
 * or entered at `entry` (either may be NULL/0). The version below it, or the original code,
 * runs again. On success copies what is now installed into *now (library "" for the original)
 * and the remaining depth into *depth. -ENOENT when nothing is installed, -ESTALE when the
 * function's code was unloaded while patched (its record was dropped), with a reason.
 */
int hp_patch_rollback(const char *name, void *entry, char *now_library, size_t lib_cap,
                      char *now_symbol, size_t sym_cap, int *depth, char *why, size_t why_cap);

/* Every check an upgrade of target makes before it writes (executable, known size, room for
 * the jump, not hotpatch's own code, no branch into the site), without a replacement and
 * without writing. 0, or a negative errno with the reason. */
int hp_patch_check_target(const struct hp_patch_target *target, char *why, size_t why_cap);

/* One replacement of a batch. */
struct hp_patch_change {
    struct hp_patch_target target;
    struct hp_patch_origin origin;
};

/*
 * Installs every change as the new top version of its function, all in one stop of the
 * threads: every code write and relay-cell store happen while no thread runs and none is
 * inside any of the sites, all or nothing (a failure part-way puts the earlier ones back
 * before any thread moves). 0, or a negative errno with a reason that names the function, and
 * nothing changed. Engine lock.
 */
int hp_patch_upgrade_all(const struct hp_patch_change *changes, size_t n, char *why,
                         size_t why_cap);
/*
 * Removes the top version of each function entered at entries[i], which must be tops[i] (the
 * replacement's address; -EBUSY when a later upgrade is on top), all in one stop. 0, or a
 * negative errno with a reason, and nothing changed.
 */
int hp_patch_rollback_all(void *const *entries, const void *const *tops, size_t n, char *why,
                          size_t why_cap);

/* A read-only view of one patched function, valid during the visit only. */
struct hp_patch_view {
    const char *name;
    void *entry;
    int depth;                      /* versions stacked above the original; 0 = original */
    struct hp_patch_origin top;     /* installed now (library "" when depth is 0) */
    bool via_relay;                 /* the entry jumps to a relay slot (far replacement) */
    void *relay;                    /* that slot, or NULL */
};
typedef void (*hp_patch_visitor)(const struct hp_patch_view *v, void *ctx);
/* Visits every function that has ever been patched and is still known, in patch order. */
void hp_patch_each(hp_patch_visitor visit, void *ctx);
/* Fills *out for the function entered at entry; false when it was never patched. */
bool hp_patch_find(void *entry, hp_patch_visitor visit, void *ctx);

/* One mapped address range of a library. */
struct hp_range {
    uintptr_t start, end;           /* [start, end) */
};

/*
 * The unload check: 0 when no version of any function comes from a library called `library`
 * or lies within `ranges`, no relay may still jump there and no thread's registers or stack
 * hold an address inside the ranges; else non-zero with a one-line reason.
 */
int hp_patch_library_busy(const char *library, const struct hp_range *ranges, size_t n_ranges,
                          char *why, size_t why_cap);

/* Counters for tests and the benchmark. */
struct hp_patch_stats {
    unsigned long stops;            /* thread stops performed */
    unsigned long stops_let_go;     /* of those, let go without a write: a thread was inside
                                     * a site (or on an alternate stack), so it was retried */
    unsigned long stopped_pokes;    /* code writes, each done while every thread was stopped */
    unsigned long relay_stores;     /* retargets done with one atomic store */
    unsigned long dropped;          /* records dropped because their code was unloaded */
};
void hp_patch_get_stats(struct hp_patch_stats *out);

/* The memory the thread stop keeps for itself (its per-thread arrays, its copies of the map,
 * the helper's stacks): copies of threads' registers, never references of the program's. The
 * unload scan skips them. Returns how many ranges it wrote (at most cap). Engine lock. */
size_t hp_threads_owned_ranges(struct hp_range *out, size_t cap);

/* ---- refscan.c: pointers into a library's code ---------------------------------------- */
struct hp_stopped;
#define HP_SCAN_MAX_MIB 1024        /* the scan's bounds, also the longest pause it causes */
#define HP_SCAN_MAX_MS 500
/* The first word found that points into the library's code. */
struct hp_reference {
    uintptr_t at;                   /* where the word is */
    uintptr_t value;                /* the code address it holds (demangled when mangled) */
    bool mangled;                   /* stored as the C library mangles pointers (atexit, jmp_buf) */
    unsigned long long scanned;     /* bytes read */
    bool unreadable_maps;           /* /proc/self/maps could not be read */
};
/*
 * With every other thread stopped (`stopped`), scans every readable and writable mapping
 * except the library's own (`ranges`: its PT_LOAD segments), device mappings and the dead part
 * of stacks, for an aligned word holding an address in the library's executable ranges, raw or
 * as the C library mangles pointers. 1 with *found filled; 0 none; -1 when the scan hit its
 * bounds (HP_SCAN_MAX_MIB, HP_SCAN_MAX_MS) or the map could not be read. Engine lock.
 */
int hp_scan_references(const struct hp_stopped *stopped, const struct hp_range *ranges,
                       size_t n_ranges, struct hp_reference *found);

/* ---- self.c: hotpatch's own code ------------------------------------------------------ */
/* True when addr lies in hotpatch's own code (its code sections in a static link; libhotpatch,
 * the preload agent or the gflags bridge as objects), with what it is in `what`. Engine lock;
 * not with threads stopped. */
bool hp_engine_owns(const void *addr, char *what, size_t what_cap);

/* ---- stop.c: stopping the other threads ------------------------------------------------ */

/* Where a stopped thread was. */
struct hp_thread_state {
    pid_t tid;
    uintptr_t pc, sp;
    uintptr_t regs[23];             /* its general registers (ptrace: r15 ... gs_base of
                                     * user_regs_struct; signal stop: the ucontext's gregs) */
    int n_regs;
    bool on_altstack;               /* stopped in a handler on a sigaltstack, where its own
                                     * stack cannot be found: hp_threads_scan says -EAGAIN */
};

struct hp_stopped {
    struct hp_thread_state *threads;
    size_t count;
    pid_t missing;                  /* 0, or a thread that did not stop in time */
    char why[160];                  /* set when the stop failed */
};

/*
 * Stops every thread of the process except the caller, with ptrace from a helper process when
 * that works here, else with a signal (stop.c says how and why). Returns 0 with the threads'
 * states in *out (valid until hp_threads_resume), or -1 with a reason in out->why (a thread did
 * not stop within timeout_ms, a thread blocks every signal the fallback could use, ...), in
 * which case every thread runs again already. No thread limit; the timeout is at least 0.2 ms
 * per thread of the process (stopping costs a wakeup each). The caller must hold the engine
 * lock, and until hp_threads_resume may run only code of the section hotpatch_stopped.
 */
int hp_threads_stop(struct hp_stopped *out, int timeout_ms);
/* Lets the threads go (system calls the stop interrupted are restarted, ptrace mode). */
void hp_threads_resume(struct hp_stopped *s);
/*
 * Calls scan(ctx, tid, word, is_pc) for every register of every stopped thread and every
 * aligned word of its stack from 128 bytes below its stack pointer to the end of the stack's
 * mapping. Returns the first non-zero value of scan; -EAGAIN with a reason when a thread is in
 * a handler on an alternate stack (try again a moment later, as for a PC inside a site); -1
 * with a reason when a stack cannot be read. Runs in the stopped window: scan must be
 * HP_STOPPED_WINDOW code too.
 */
int hp_threads_scan(const struct hp_stopped *s, int (*scan)(void *ctx, pid_t tid, uintptr_t word,
                                                            bool is_pc),
                    void *ctx, char *why, size_t why_cap);
/* "ptrace" or "signal": the method the next stop uses (status and version show it). */
const char *hp_threads_stop_method(void);
/* Why the signal stop is used instead of ptrace ("" when ptrace is used). */
const char *hp_threads_stop_fallback_reason(void);
/* Tests and settings: "auto" (default; HOTPATCH_STOP overrides), "ptrace" (never fall back)
 * or "signal". 0, or -EINVAL for another word. Engine lock. */
int hp_threads_stop_prefer(const char *method);
/* Where the ptrace stop's time goes (bench/bench_patch.c --profile): sums over every stop of
 * this process, in ns, as the helper measured them. Read with the engine idle. */
struct hp_stop_profile {
    unsigned long stops;        /* stops the helper made */
    unsigned long threads;      /* threads held, summed over the stops */
    long long list_ns;          /* reading /proc/PID/task (and its count in status) */
    long long seize_ns;         /* PTRACE_SEIZE + PTRACE_INTERRUPT */
    long long wait_ns;          /* wait4 until every thread is in its stop */
    long long regs_ns;          /* PTRACE_GETREGSET */
    long long release_ns;       /* rewinding and PTRACE_DETACH */
};
void hp_ptrace_profile(struct hp_stop_profile *out);
/* The benchmark's before/after comparison: false makes every ptrace stop list /proc/PID/task
 * instead of trying the last stop's threads first (the default, true). Engine idle. */
void hp_ptrace_guess_last_threads(bool on);

/* ---- symbols.c: name -> address -------------------------------------------------------- */

/* A resolved function. */
struct hp_symbol {
    void *address;
    size_t size;                    /* 0 when unknown */
    char name[256];                 /* symbol name */
    char object[512];               /* path of the object that defines it ("" for main program) */
    bool registered;                /* the caller's own name for it (set by the caller) */
    bool executable;                /* lies in a mapping with PROT_EXEC */
};

/* A library the caller loaded under a name of its own (the agent's `lib load NAME PATH`). */
struct hp_symbol_alias {
    const char *name;
    uintptr_t base;                 /* its load base (link_map l_addr) */
};
/* The caller's aliases for one resolution (NULL: none). */
struct hp_symbol_scope {
    const struct hp_symbol_alias *aliases;
    size_t count;
};

/*
 * Resolves FUNC, "name" or "object:name", in the symbol tables of the executable and every
 * loaded object; object is a file name or path suffix (libfoo.so, simple_server) or an alias of
 * scope. An unqualified name that matches both an aliased library and elsewhere ignores the
 * aliased one. Returns 0; -ENOENT unknown; -EEXIST ambiguous (why lists the qualified forms);
 * -EINVAL bad form. why gets a one-line reason on failure. Not thread-safe: one caller at a time.
 */
int hp_symbol_resolve(const char *func, const struct hp_symbol_scope *scope,
                      struct hp_symbol *out, char *why, size_t why_cap);
/*
 * Resolves VARIABLE ("name" or "object:name", object "" for the main program) among the data
 * symbols (STT_OBJECT, STT_COMMON, sized STT_NOTYPE) of the same tables; out->size is its
 * st_size. An exported variable the loader binds the process to wins over the copies it
 * shadows. Returns 0; -ENOENT unknown; -EEXIST ambiguous; -EINVAL bad form, a function's name,
 * a thread-local (STT_TLS) or an unsized symbol. Not thread-safe: one caller at a time.
 */
int hp_symbol_resolve_data(const char *variable, const struct hp_symbol_scope *scope,
                           struct hp_symbol *out, char *why, size_t why_cap);
/* The protection (PROT_*) every byte of [address, address + len) has, read afresh from
 * /proc/self/maps (the bits all its mappings share); -1 when any byte is unmapped. */
int hp_memory_protection(uintptr_t address, size_t len);
/* Resolves symbol `name` defined by the object loaded with dlopen handle (no registry). */
int hp_symbol_in_library(void *handle, const char *name, struct hp_symbol *out, char *why,
                         size_t why_cap);
/* Fills size and executable for out->address from the symbol tables and mappings. */
void hp_symbol_describe(struct hp_symbol *out);
/* The mapped ranges (PT_LOAD segments) of the object whose load base is `base`; count. */
size_t hp_symbol_object_ranges(uintptr_t base, struct hp_range *ranges, size_t cap);

#endif /* HOTPATCH_ENGINE_H */
