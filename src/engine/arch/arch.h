/*
 * arch.h — what the engine asks of the processor: encoding jumps, decoding functions, writing
 * code while other threads are stopped, and reading interrupted contexts. Not installed.
 *
 * One implementation per architecture (x86_64.c and x86_64_decode.c today), so that encoding
 * stays out of the engine (engine.h). Below the engine: it includes only the maps reader.
 */
#ifndef HOTPATCH_ARCH_H
#define HOTPATCH_ARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- x86_64.c: encoding and writing ---------------------------------------------------- */

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
/* ---- x86_64_decode.c: what code may branch to ---------------------------------------------- */

/*
 * Decodes the function [entry, entry+size) and refuses (-EINVAL, one-line reason) when a
 * relative branch of it targets a byte strictly inside the instructions that `len` bytes
 * written at `site` would overwrite, or when the body cannot be decoded. A function shorter
 * than site+len must end in an instruction that never falls through and be followed, up to
 * `limit` (the next symbol or the end of its section), by alignment padding (nop forms, int3)
 * covering the jump. 0 when safe, with *cut_end the end of the last instruction the jump
 * touches (a branch anywhere else into [site+1, cut_end) is unsafe too).
 */
int hp_arch_check_function(const char *name, const uint8_t *entry, size_t size,
                           const uint8_t *site, size_t len, const uint8_t *limit,
                           uintptr_t *cut_end, char *why, size_t why_cap);

/* What a sweep reports for an instruction at `from`. */
enum hp_code_ref {
    HP_REF_BRANCH,          /* a direct jmp, jcc, call, loop, jrcxz or xbegin to `to` */
    HP_REF_LEA,             /* a RIP-relative lea computing `to` (a code or table address) */
    HP_REF_RIP,             /* another RIP-relative memory operand: data at `to` is used */
    HP_REF_IMM,             /* an immediate operand `to` (an absolute address in non-PIC code) */
    HP_REF_ABS_TABLE,       /* jmp *to(,%reg,8): a table of absolute addresses at `to` */
    HP_REF_INDIRECT,        /* an indirect jmp (through a register or memory) */
    HP_REF_UNDECODABLE,     /* a byte that starts no instruction the decoder knows */
};
typedef void (*hp_code_visitor)(void *ctx, enum hp_code_ref kind, uintptr_t from, uintptr_t to);
/*
 * Decodes [code, code+len), located at address `at`, linearly, calling visit for what each
 * instruction names. After a byte that starts no instruction it steps one byte and also
 * decodes every offset of the next 64 bytes for branches (code after data may start
 * anywhere). Returns the number of undecodable bytes, or -errno with why.
 */
long hp_arch_sweep(const uint8_t *code, size_t len, uintptr_t at, hp_code_visitor visit,
                   void *ctx, char *why, size_t why_cap);

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

#ifdef HOTPATCH_FAULT_INJECTION
/*
 * Test build only (the static library built with HOTPATCH_FAULT_INJECTION, cmake/patch.cmake):
 * failures injected into the code-write path, to prove its restore path on real code. Faults
 * arm when the from_poke-th call of hp_arch_poke_stopped after hp_arch_inject_faults begins
 * (1: the next one; 0 as well); each budget counts failures of one kind from then on (-1:
 * every one). Call with the engine idle (between hp_patch_* calls); NULL clears the plan, and
 * every call zeroes the counts and forgets that the kernel refused /proc/self/mem writes.
 */
struct hp_arch_fault_plan {
    unsigned from_poke;
    int proc_mem_failures;      /* /proc/self/mem writes that fail (the fallback is taken) */
    size_t proc_mem_bytes;      /* the first of them writes this many bytes first (a short
                                 * write), the later ones none */
    int mprotect_failures;      /* mprotect(RWX) of the fallback fails (ENOMEM) */
    int reprotect_failures;     /* restoring the page's protection afterwards fails (ENOMEM) */
};
struct hp_arch_fault_counts {
    unsigned pokes;             /* hp_arch_poke_stopped calls */
    unsigned proc_mem_writes;   /* /proc/self/mem writes tried */
    unsigned mprotect_writes;   /* writes through the mprotect fallback tried */
    unsigned reprotects_failed; /* restores of protection that failed (each retry counts) */
};
void hp_arch_inject_faults(const struct hp_arch_fault_plan *plan);
void hp_arch_fault_counts(struct hp_arch_fault_counts *out);
#endif

/* Program counter of an interrupted context, and setting it. */
uintptr_t hp_arch_context_pc(const void *ucontext);
uintptr_t hp_arch_context_sp(const void *ucontext);
/* Copies the general registers of the context; returns how many (<= cap). */
int hp_arch_context_regs(const void *ucontext, uintptr_t *regs, int cap);

/* ---- x86_64_regs.c: the ptrace stop's registers, system call rewinding, helper clone ------- */

struct user_regs_struct;
/* The pc, sp and general registers (at most cap) in the registers PTRACE_GETREGSET returned;
 * returns how many registers were copied. */
int hp_arch_regs_to_state(const struct user_regs_struct *r, uintptr_t *pc, uintptr_t *sp,
                          uintptr_t *regs, int cap);
/* The same from a signal handler's ucontext (the signal stop). */
int hp_arch_ucontext_to_state(const void *ucontext, uintptr_t *pc, uintptr_t *sp,
                              uintptr_t *regs, int cap);
/* True when r is a thread stopped on its way out of a system call that failed with EINTR
 * because of the stop, and that may safely run again (x86_64_restart.c lists them). */
bool hp_arch_interrupted_eintr(const struct user_regs_struct *r);
/* Makes the kernel restart that system call when the thread resumes, unless a handler runs
 * first (then it fails with EINTR, as the handler's signal would have made it). */
void hp_arch_rewind_syscall(struct user_regs_struct *r);
/* clone(flags) on `stack_top` whose child runs hp_stop_helper_entry(arg) and exits; the
 * child's tid or -errno. The child shares the caller's thread pointer. */
long hp_arch_clone_helper(unsigned long flags, void *stack_top, int *child_tid, void *arg);

#endif /* HOTPATCH_ARCH_H */
