/*
 * x86_64.c — x86-64 instruction encoding and the safe code-modification protocol.
 *
 * Everything that knows an opcode lives here, so that the engine (patch.c) can be ported by
 * writing one more file of this shape.
 *
 * Encodings:
 *   - the patch: `jmp rel32` (E9 xx xx xx xx), written at the entry, or just after an `endbr64`
 *     (F3 0F 1E FA) so that indirect calls still land on an endbr64 when IBT is enforced;
 *   - a far version: `jmp *disp32(%rip)` (FF 25 xx xx xx xx) reading an 8-byte destination
 *     cell that lives in a read-write, non-executable page within +-2 GB: written at the site
 *     itself when the function has 6 bytes to spare (one indirect jump, like a call through a
 *     pointer), else in a relay slot (followed by two int3) that the site's jmp rel32 reaches.
 *     Retargeting is one aligned 8-byte atomic store to data memory: no code is modified.
 *
 * Writing code (hp_arch_poke_stopped) is done only while every other thread of the process is
 * parked by stop.c and proven to be outside the bytes being replaced, so no thread can
 * execute them while they change. Afterwards every core serializes its instruction stream
 * (membarrier MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE) before the threads resume; returning
 * from the stop signal's handler is itself serializing (IRET/SYSRET path of sigreturn). No int3
 * is ever written, so the process never needs a SIGTRAP handler. If a write fails half-way, the
 * previous bytes are written back with the other method before the threads resume.
 *
 * How bytes reach a code page: pwrite() to /proc/self/mem, which the kernel performs with
 * FOLL_FORCE on the page (breaking copy-on-write for a private file mapping) without changing
 * the mapping's protection, so a page that holds code never loses PROT_EXEC and never becomes
 * writable for the program. When the kernel forbids that (proc_mem.force_override=never, some
 * LSMs), the fallback makes the page(s) read-write-execute for the duration of the write and
 * restores the previous protection: exec is never dropped, so a thread running on the same
 * page never faults.
 *
 * /proc/self/mem is opened for each write and closed after it, never kept: a descriptor names
 * the memory of the process that opened it, so one inherited across fork would make a child's
 * write land in its parent (while the parent's threads run), and one kept open could be closed
 * by the program and its number reused for one of the program's files.
 *
 * Restoring the page's protection after the fallback is retried; when the kernel keeps
 * refusing, the write is reported as failed (and undone), saying the page stays writable.
 *
 * Fault injection: built with HOTPATCH_FAULT_INJECTION (only the test build of the static
 * library, cmake/patch.cmake; never the installed libraries), the write path can be told to
 * fail after N bytes, to fail its /proc/self/mem write so that the fallback is taken, and to
 * fail mprotect or its restore (hp_arch_inject_faults). Production builds have no such code.
 *
 * State: whether the kernel refused /proc/self/mem writes (then the fallback is used at once)
 * and the membarrier registration flag (kept across fork, as the kernel keeps it), both owned
 * by the engine and touched only under the engine lock (patch.c); so is the fault plan.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/membarrier.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "arch.h"
#include "engine/maps.h"
#include "engine/stopped_window.h"
#include "x86_64_syscall.h"

#define OP_JMP_REL32 0xE9
#define OP_INT3 0xCC

static const uint8_t endbr64[4] = {0xF3, 0x0F, 0x1E, 0xFA};

static bool proc_mem_refused;      /* engine lock: the kernel forbids /proc/self/mem writes */
static bool membarrier_ready;

/* ---- encoding ------------------------------------------------------------------------------ */

size_t hp_arch_entry_skip(const uint8_t *entry)
{
    return memcmp(entry, endbr64, sizeof endbr64) == 0 ? sizeof endbr64 : 0;
}

static bool fits_rel32(intptr_t delta)
{
    return delta >= INT32_MIN && delta <= INT32_MAX;
}

bool hp_arch_near(const void *from, const void *to)
{
    intptr_t delta = (intptr_t)to - ((intptr_t)from + HP_JUMP_SIZE);
    return fits_rel32(delta);
}

void hp_arch_encode_jump(uint8_t *code, const void *at, const void *to)
{
    int32_t rel = (int32_t)((intptr_t)to - ((intptr_t)at + HP_JUMP_SIZE));
    code[0] = OP_JMP_REL32;
    memcpy(code + 1, &rel, sizeof rel);
}

void *hp_arch_jump_target(const uint8_t *code, const void *at)
{
    if (code[0] != OP_JMP_REL32)
        return NULL;
    int32_t rel;
    memcpy(&rel, code + 1, sizeof rel);
    return (void *)((intptr_t)at + HP_JUMP_SIZE + rel);
}

void hp_arch_encode_indirect(uint8_t *code, const void *at, const void *cell)
{
    int32_t disp = (int32_t)((intptr_t)cell - ((intptr_t)at + HP_INDIRECT_SIZE));
    code[0] = 0xFF;  /* jmp *disp32(%rip): FF /4 with ModRM 00 100 101 */
    code[1] = 0x25;
    memcpy(code + 2, &disp, sizeof disp);
}

bool hp_arch_indirect_reaches(const void *at, const void *cell)
{
    return fits_rel32((intptr_t)cell - ((intptr_t)at + HP_INDIRECT_SIZE));
}

void *hp_arch_indirect_cell(const uint8_t *code, const void *at)
{
    if (code[0] != 0xFF || code[1] != 0x25)
        return NULL;
    int32_t disp;
    memcpy(&disp, code + 2, sizeof disp);
    return (void *)((intptr_t)at + HP_INDIRECT_SIZE + disp);
}

void hp_arch_encode_relay(uint8_t *code, const void *slot, const void *cell)
{
    hp_arch_encode_indirect(code, slot, cell);
    code[6] = OP_INT3;
    code[7] = OP_INT3;
}

/* ---- interrupted contexts ------------------------------------------------------------------- */

uintptr_t hp_arch_context_pc(const void *ucontext)
{
    const ucontext_t *uc = ucontext;
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
}

uintptr_t hp_arch_context_sp(const void *ucontext)
{
    const ucontext_t *uc = ucontext;
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
}

int hp_arch_context_regs(const void *ucontext, uintptr_t *regs, int cap)
{
    const ucontext_t *uc = ucontext;
    int n = NGREG < cap ? NGREG : cap;
    for (int i = 0; i < n; i++)
        regs[i] = (uintptr_t)uc->uc_mcontext.gregs[i];
    return n;
}

/* ---- serializing every core ------------------------------------------------------------------ */
/*
 * From here on, everything runs while the other threads are stopped (HP_STOPPED_WINDOW): raw
 * system calls (arch/x86_64_syscall.h), no libc (a stopped thread may hold its locks, or a
 * program may have patched its functions), messages formed with hp_stop_fmt.
 */

static long page_size = 4096;      /* set by hp_arch_text_init, read in the window */

static long membarrier(int cmd)
{
    return syscall(SYS_membarrier, cmd, 0, 0);
}

int hp_arch_text_init(char *why, size_t why_cap)
{
    if (membarrier_ready)
        return 0;
    long page = sysconf(_SC_PAGESIZE);
    if (page > 0)
        page_size = page;
    long supported = membarrier(MEMBARRIER_CMD_QUERY);
    if (supported < 0 || !(supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)) {
        snprintf(why, why_cap, "the kernel lacks membarrier SYNC_CORE (Linux 4.16 or later is "
                               "needed to modify code that other threads run)");
        return -ENOSYS;
    }
    if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE) != 0) {
        int err = errno;
        snprintf(why, why_cap, "membarrier registration failed: %s", strerror(err));
        return -err;
    }
    membarrier_ready = true;
    return 0;
}

HP_STOPPED_WINDOW void hp_arch_sync_cores(void)
{
    /* Cannot fail once registered (hp_arch_text_init is called before any write). */
    hp_sys3(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0);
}

/* ---- injected faults (test build only) ------------------------------------------------------- */

#ifdef HOTPATCH_FAULT_INJECTION
static struct hp_arch_fault_plan fault_plan;     /* engine lock (set by the test between calls) */
static struct hp_arch_fault_counts fault_counts; /* engine lock */

void hp_arch_inject_faults(const struct hp_arch_fault_plan *plan)
{
    struct hp_arch_fault_plan none = {0};
    fault_plan = plan ? *plan : none;
    struct hp_arch_fault_counts zero = {0};
    fault_counts = zero;
    proc_mem_refused = false;
}

void hp_arch_fault_counts(struct hp_arch_fault_counts *out)
{
    *out = fault_counts;
}

/* True when the plan is armed (its poke has come) and *budget says one more failure. */
HP_STOPPED_WINDOW static bool take_fault(int *budget)
{
    if (fault_counts.pokes < fault_plan.from_poke || *budget == 0)
        return false;
    if (*budget > 0)
        (*budget)--;
    return true;
}
#define FAULT(budget) take_fault(&fault_plan.budget)
#define COUNT(what) (fault_counts.what++)
#else
#define FAULT(budget) false
#define COUNT(what) ((void)0)
#endif

/* ---- writing bytes into code pages ---------------------------------------------------------- */

HP_STOPPED_WINDOW static const char *errno_name(long err)
{
    switch (err) {
    case EPERM: return "Operation not permitted";
    case EACCES: return "Permission denied";
    case ENOMEM: return "Cannot allocate memory";
    case EINVAL: return "Invalid argument";
    case EFAULT: return "Bad address";
    case EIO: return "Input/output error";
    default: return "error";
    }
}

HP_STOPPED_WINDOW static bool write_through_proc_mem(void *addr, const void *bytes, size_t len)
{
    if (proc_mem_refused)
        return false;
    COUNT(proc_mem_writes);
#ifdef HOTPATCH_FAULT_INJECTION
    if (FAULT(proc_mem_failures)) {   /* a short write: the first bytes land, then an error */
        size_t some = fault_plan.proc_mem_bytes < len ? fault_plan.proc_mem_bytes : len;
        fault_plan.proc_mem_bytes = 0;  /* once: later failures land nothing */
        if (some > 0) {
            long fd = hp_sys4(SYS_openat, AT_FDCWD, (long)"/proc/self/mem", O_RDWR | O_CLOEXEC,
                              0);
            if (!hp_sys_failed(fd)) {
                hp_sys4(SYS_pwrite64, fd, (long)bytes, (long)some, (long)(uintptr_t)addr);
                hp_sys1(SYS_close, fd);
            }
        }
        return false;
    }
#endif
    long fd = hp_sys4(SYS_openat, AT_FDCWD, (long)"/proc/self/mem", O_RDWR | O_CLOEXEC, 0);
    if (hp_sys_failed(fd)) {
        proc_mem_refused = fd == -EPERM || fd == -EACCES;
        return false;
    }
    long n;
    while ((n = hp_sys4(SYS_pwrite64, fd, (long)bytes, (long)len, (long)(uintptr_t)addr)) ==
           -EINTR)
        ;
    hp_sys1(SYS_close, fd);
    /* Only a refusal means this kernel forbids it (stop trying); EIO/EFAULT on an address that
     * is not mapped, or a short write, says nothing about the next write. */
    if (n == -EPERM || n == -EACCES)
        proc_mem_refused = true;
    return n == (long)len;
}

/* Pages the fallback could not give their protection back (they stay writable): what that
 * protection was, so that the next write through mprotect restores it, not the writable one it
 * would read from /proc/self/maps. Engine lock. */
#define LEFT_WRITABLE_MAX 8
static struct left_writable {
    uintptr_t first;
    size_t span;
    int prot;
} left_writable[LEFT_WRITABLE_MAX];

HP_STOPPED_WINDOW static struct left_writable *left_writable_at(uintptr_t first)
{
    for (int i = 0; i < LEFT_WRITABLE_MAX; i++)
        if (left_writable[i].span && left_writable[i].first == first)
            return &left_writable[i];
    return NULL;
}

/* Remembers (or forgets, when healed) that [first, first+span) should have `prot`. */
HP_STOPPED_WINDOW static void note_left_writable(uintptr_t first, size_t span, int prot,
                                                 bool healed)
{
    struct left_writable *slot = left_writable_at(first);
    if (healed) {
        if (slot)
            slot->span = 0;
        return;
    }
    for (int i = 0; !slot && i < LEFT_WRITABLE_MAX; i++)
        if (!left_writable[i].span)
            slot = &left_writable[i];
    if (slot) {
        slot->first = first;
        slot->span = span;
        slot->prot = prot;
    }
}

/* Gives the page(s) back their protection; retried, as a transient refusal (ENOMEM while the
 * kernel merges the mappings again, EAGAIN) must not leave code writable. 0 or -errno. */
HP_STOPPED_WINDOW static long reprotect(uintptr_t first, size_t span, int prot)
{
    long rc = -EIO;
    for (int attempt = 0; attempt < 4; attempt++) {
        rc = FAULT(reprotect_failures) ? -ENOMEM : hp_sys3(SYS_mprotect, (long)first,
                                                            (long)span, prot);
        if (!hp_sys_failed(rc))
            return 0;
        COUNT(reprotects_failed);
    }
    return rc;
}

HP_STOPPED_WINDOW static int write_through_mprotect(void *addr, const void *bytes, size_t len,
                                                    char *why, size_t why_cap)
{
    long page = page_size;
    uintptr_t first = (uintptr_t)addr & ~(uintptr_t)(page - 1);
    uintptr_t last = ((uintptr_t)addr + len - 1) & ~(uintptr_t)(page - 1);
    int prot = hp_maps_protection((uintptr_t)addr);
    if (prot < 0 || (last != first && hp_maps_protection(last) != prot)) {
        hp_stop_fmt(why, why_cap, "cannot write code at %p: its mapping was not found", addr);
        return -EFAULT;
    }
    const struct left_writable *earlier = left_writable_at(first);
    if (earlier)
        prot = earlier->prot;
    COUNT(mprotect_writes);
    size_t span = last + page - first;
    long rc = FAULT(mprotect_failures) ? -ENOMEM
                                       : hp_sys3(SYS_mprotect, (long)first, (long)span,
                                                 prot | PROT_READ | PROT_WRITE | PROT_EXEC);
    if (hp_sys_failed(rc)) {
        hp_stop_fmt(why, why_cap, "cannot write code at %p: /proc/self/mem refused and "
                    "mprotect(RWX) failed: %s", addr, errno_name(-rc));
        return (int)rc;
    }
    /* Every other thread is stopped outside these bytes: plain byte stores are enough. */
    volatile uint8_t *dst = addr;
    for (size_t i = 0; i < len; i++)
        dst[i] = ((const uint8_t *)bytes)[i];
    rc = reprotect(first, span, prot);
    note_left_writable(first, span, prot, !hp_sys_failed(rc));
    if (hp_sys_failed(rc)) {
        hp_stop_fmt(why, why_cap, "cannot write code at %p: after writing it through "
                    "mprotect, restoring the page's protection failed (%s) and it stays "
                    "writable", addr, errno_name(-rc));
        return (int)rc;
    }
    return 0;
}

HP_STOPPED_WINDOW int hp_arch_write_text(void *addr, const void *bytes, size_t len, char *why,
                                         size_t why_cap)
{
    if (write_through_proc_mem(addr, bytes, len))
        return 0;
    return write_through_mprotect(addr, bytes, len, why, why_cap);
}

/* ---- the protocols ---------------------------------------------------------------------------- */

/* Writes through the method that was not tried first: the mprotect path, or /proc/self/mem. */
HP_STOPPED_WINDOW static int write_the_other_way(void *addr, const void *bytes, size_t len,
                                                 char *why, size_t why_cap)
{
    if (write_through_mprotect(addr, bytes, len, why, why_cap) == 0)
        return 0;
    return write_through_proc_mem(addr, bytes, len) ? 0 : -EIO;
}

/* After a failed write: puts `before` back, verified. 0 when the site is as it was. */
HP_STOPPED_WINDOW static int restore(uint8_t *addr, const uint8_t *before, size_t len)
{
    char ignored[160];
    if (!hp_raw_differ(addr, before, len))
        return 0;
    write_the_other_way(addr, before, len, ignored, sizeof ignored);
    if (hp_raw_differ(addr, before, len))
        hp_arch_write_text(addr, before, len, ignored, sizeof ignored);
    hp_arch_sync_cores();
    return hp_raw_differ(addr, before, len) ? -EIO : 0;
}

HP_STOPPED_WINDOW int hp_arch_poke_stopped(uint8_t *addr, const uint8_t *bytes, size_t len,
                                           char *why, size_t why_cap)
{
    uint8_t before[16];
    if (len > sizeof before)
        return -EINVAL;
    COUNT(pokes);
    hp_raw_copy(before, addr, len);
    if (!hp_raw_differ(addr, bytes, len))
        return 0;
    int rc = hp_arch_write_text(addr, bytes, len, why, why_cap);
    if (rc == 0 && hp_raw_differ(addr, bytes, len)) {
        hp_stop_fmt(why, why_cap, "the code at %p did not take the new bytes", (void *)addr);
        rc = -EIO;
    }
    hp_arch_sync_cores();
    if (rc == 0)
        return 0;
    if (restore(addr, before, len) == 0)
        return rc;  /* nothing changed */
    size_t used = 0;
    while (used < why_cap && why[used])
        used++;
    hp_stop_fmt(why + used, why_cap - used, "; restoring the previous bytes failed too: the "
                "code at %p is left inconsistent and must not be run", (void *)addr);
    return -ENOTRECOVERABLE;
}
