/*
 * patch.h — the function patch engine's internal interface (not installed).
 *
 * Three layers, one file each, so that architecture-specific encoding stays out of the engine:
 *
 *   patch.c         the engine: one record per patched function with its stack of versions,
 *                   relay slots within +-2 GB, the unload check. Every entry point below takes
 *                   the engine lock (see patch.c for its scope).
 *   patch_stop.c    stopping every other thread of the process for a moment (a real-time
 *                   signal whose handler parks the thread and records its registers), used to
 *                   prove where threads are: around every code write, and before a library is
 *                   unmapped.
 *   patch_x86_64.c  instruction encoding and code writes with every other thread stopped
 *                   (membarrier SYNC_CORE, writes through /proc/self/mem or mprotect).
 *   patch_x86_64_decode.c  decoding a function (capstone) to refuse a patch when a branch lands
 *                   inside the bytes the jump overwrites.
 *   symbols.c       name -> address and size, from the registry and the ELF symbol tables.
 */
#ifndef HOTPATCH_PATCH_H
#define HOTPATCH_PATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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
    unsigned long stopped_pokes;    /* code writes, each done while every thread was stopped */
    unsigned long relay_stores;     /* retargets done with one atomic store */
    unsigned long dropped;          /* records dropped because their code was unloaded */
};
void hp_patch_get_stats(struct hp_patch_stats *out);

/*
 * fork(): agent.c's pthread_atfork handlers call these (lock order agent_lock -> registry ->
 * engine) so that no fork happens while the engine writes code or has threads stopped, and the
 * child inherits an unlocked engine.
 */
void hp_patch_before_fork(void);
void hp_patch_after_fork(void);

/* ---- patch_stop.c: stopping the other threads ------------------------------------------ */

/* What a stopped thread was doing when the signal arrived. */
struct hp_thread_state {
    pid_t tid;
    uintptr_t pc, sp;
    uintptr_t regs[23];             /* the general registers of the interrupted context */
    int n_regs;
    bool on_altstack;               /* interrupted on a sigaltstack: its real stack is unknown */
};

struct hp_stopped {
    struct hp_thread_state *threads;
    size_t count;
    pid_t missing;                  /* 0, or a thread that did not answer in time */
    char why[160];                  /* set when the stop failed */
};

/*
 * Stops every thread of the process except the caller: each one parks in a signal handler
 * until hp_threads_resume(). Returns 0 with the threads' states in *out, or -1 with a reason
 * in out->why (a thread did not answer within timeout_ms, no free real-time signal, ...), in
 * which case every thread has been released already. The caller must hold the engine lock.
 */
int hp_threads_stop(struct hp_stopped *out, int timeout_ms);
/* Releases the threads and frees the states. */
void hp_threads_resume(struct hp_stopped *s);
/*
 * Calls scan(ctx, word) for every register of every stopped thread and every aligned word of
 * its stack from 128 bytes below its stack pointer to the end of the stack's mapping. Returns
 * the first non-zero value of scan, or -1 with a reason when a stack cannot be read.
 */
int hp_threads_scan(const struct hp_stopped *s, int (*scan)(void *ctx, pid_t tid, uintptr_t word,
                                                            bool is_pc),
                    void *ctx, char *why, size_t why_cap);
/* Protection (PROT_*) of the mapping holding addr, read without malloc; -1 when unmapped. */
int hp_maps_protection(uintptr_t addr);
/* /proc/self/maps as text in a static buffer (engine lock), read without malloc; NULL on error. */
const char *hp_maps_text(void);

/* ---- patch_x86_64.c: encoding and writing ---------------------------------------------- */

#define HP_JUMP_SIZE 5              /* jmp rel32 */
#define HP_INDIRECT_SIZE 6          /* jmp *disp32(%rip): a far version through its relay cell */
#define HP_SITE_MAX 6               /* the most bytes a site ever spans */
#define HP_RELAY_SLOT_SIZE 8        /* jmp *disp32(%rip) and two int3 */

/* Offset of the patch site from the entry: 4 after an endbr64, else 0. */
size_t hp_arch_entry_skip(const uint8_t *entry);
/* True when from+5 can reach to with a rel32. */
bool hp_arch_near(const void *from, const void *to);
/* Encodes `jmp to` at `at` into code[HP_JUMP_SIZE]. The pair must be near. */
void hp_arch_encode_jump(uint8_t *code, const void *at, const void *to);
/* Decodes a jmp rel32 at code (located at `at`): its destination, or NULL when not one. */
void *hp_arch_jump_target(const uint8_t *code, const void *at);
/* Encodes `jmp *cell(%rip)` at `at` into code[HP_INDIRECT_SIZE]; cell must be near. */
void hp_arch_encode_indirect(uint8_t *code, const void *at, const void *cell);
/* True when `jmp *cell(%rip)` at `at` can reach cell. */
bool hp_arch_indirect_reaches(const void *at, const void *cell);
/* Decodes a jmp *disp32(%rip) at code (located at `at`): the cell it reads, or NULL. */
void *hp_arch_indirect_cell(const uint8_t *code, const void *at);
/* Encodes a relay slot at `slot` whose jump reads its destination from the 8 bytes at cell. */
void hp_arch_encode_relay(uint8_t *code, const void *slot, const void *cell);
/*
 * Decodes the function [entry, entry+size) and refuses (-EINVAL, one-line reason) when a
 * relative branch of it targets a byte strictly inside the instructions that `len` bytes
 * written at `site` would overwrite, or when the body cannot be decoded. 0 when safe.
 */
int hp_arch_check_branches(const char *name, const uint8_t *entry, size_t size,
                           const uint8_t *site, size_t len, char *why, size_t why_cap);

/* Registers for membarrier SYNC_CORE; 0 or -errno with a reason. Idempotent. */
int hp_arch_text_init(char *why, size_t why_cap);
/* Every thread of the process serializes its instruction stream before this returns. */
void hp_arch_sync_cores(void);
/* Writes len bytes of code at addr without ever removing exec permission. 0 or -errno. */
int hp_arch_write_text(void *addr, const void *bytes, size_t len, char *why, size_t why_cap);
/*
 * Replaces the len (<= 16) bytes at addr while every other thread is stopped outside them, then
 * syncs every core. 0; or -errno with the previous bytes back in place (verified), written with
 * the other method when the first one failed half-way; or -ENOTRECOVERABLE when even that
 * failed (why says the code is left inconsistent).
 */
int hp_arch_poke_stopped(uint8_t *addr, const uint8_t *bytes, size_t len, char *why,
                         size_t why_cap);

/* Program counter of an interrupted context, and setting it. */
uintptr_t hp_arch_context_pc(const void *ucontext);
uintptr_t hp_arch_context_sp(const void *ucontext);
/* Copies the general registers of the context; returns how many (<= cap). */
int hp_arch_context_regs(const void *ucontext, uintptr_t *regs, int cap);

/* ---- symbols.c: name -> address -------------------------------------------------------- */

/* A resolved function. */
struct hp_symbol {
    void *address;
    size_t size;                    /* 0 when unknown */
    char name[256];                 /* symbol name */
    char object[512];               /* path of the object that defines it ("" for main program) */
    bool registered;                /* found in the registry */
    bool executable;                /* lies in a mapping with PROT_EXEC */
};

/*
 * Resolves FUNC as the func commands accept it: a registered name first; else a symbol of the
 * executable or a loaded object ("name", or "object:name" where object is a file name or path
 * suffix such as libfoo.so or simple_server). Returns 0; -ENOENT unknown; -EEXIST ambiguous
 * (why lists the qualified forms); -EINVAL bad form. why gets a one-line reason on failure.
 */
int hp_symbol_resolve(const char *func, struct hp_symbol *out, char *why, size_t why_cap);
/* Resolves symbol `name` defined by the object loaded with dlopen handle (no registry). */
int hp_symbol_in_library(void *handle, const char *name, struct hp_symbol *out, char *why,
                         size_t why_cap);
/* Fills size and executable for out->address from the symbol tables and mappings. */
void hp_symbol_describe(struct hp_symbol *out);
/* The mapped ranges (PT_LOAD segments) of the object whose load base is `base`; count. */
size_t hp_symbol_object_ranges(uintptr_t base, struct hp_range *ranges, size_t cap);

#endif /* HOTPATCH_PATCH_H */
