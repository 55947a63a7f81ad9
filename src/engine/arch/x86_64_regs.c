/*
 * x86_64_regs.c — what the ptrace stop (engine/ptrace_stop.c) needs to know of x86-64: the
 * layout of the registers PTRACE_GETREGSET returns, which interrupted system calls it must
 * rewind so that the program never sees EINTR, and the raw clone that starts its helper.
 *
 * Rewinding a system call. A thread stopped by PTRACE_INTERRUPT while it was blocked in a call
 * is stopped on its way back to user mode: orig_rax holds the call's number (>= 0; every other
 * way into the kernel leaves -1 there) and rax its result. When the thread goes on and no
 * handler runs, the kernel itself restarts what ended in -ERESTARTSYS, -ERESTARTNOINTR,
 * -ERESTARTNOHAND (rip -= 2, rax = orig_rax) and -ERESTART_RESTARTBLOCK (restart_syscall, with
 * the time that was left). A call that ended in -EINTR is not restarted: that is what a
 * program sees after any stop (signal(7), "Interruption of system calls and library functions
 * by stop signals"). The helper does for those calls what the kernel does for a restart:
 * rip -= 2 (back over the `syscall` instruction, 0F 05, or `int $0x80`, CD 80: both 2 bytes)
 * and rax = orig_rax, so that the call runs again with the arguments it had (the registers
 * that carry them are preserved by the kernel). Only calls that are known to have done
 * nothing when they fail with EINTR, and whose second run means the same thing, are
 * rewound:
 *   epoll_wait, epoll_pwait, epoll_pwait2 (a signal mask given to epoll_pwait is put back by
 *       the kernel before the thread returns to user mode, and set again by the second run);
 *   rt_sigtimedwait (sigtimedwait, sigwaitinfo), semop, semtimedop, msgrcv, msgsnd,
 *       mq_timedreceive, mq_timedsend, io_getevents, io_pgetevents;
 *   the socket calls that fail with EINTR when they time out by SO_RCVTIMEO/SO_SNDTIMEO
 *       (accept, accept4, recvfrom, recvmsg, recvmmsg, sendto, sendmsg, sendmmsg) and read,
 *       readv, write, writev (which reach the same code on a socket): EINTR only when nothing
 *       was transferred.
 * A relative timeout starts afresh in the second run: the call can end later than it would
 * have, by at most the time it had already waited, never earlier. Not rewound: close (the
 * descriptor is gone already), connect (the second run would say EALREADY), io_uring_enter
 * (it may have submitted), ioctl and everything else: those keep their EINTR.
 */
#include <errno.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <ucontext.h>

#include "arch.h"
#include "engine/stopped_window.h"
#include "x86_64_syscall.h"

HP_STOPPED_WINDOW int hp_arch_regs_to_state(const struct user_regs_struct *r, uintptr_t *pc,
                                            uintptr_t *sp, uintptr_t *regs, int cap)
{
    *pc = r->rip;
    *sp = r->rsp;
    /* The first 23 words of user_regs_struct: r15 ... gs_base (ds, es, fs, gs are selectors). */
    const unsigned long long *words = (const unsigned long long *)r;
    int n = cap < 23 ? cap : 23;
    for (int i = 0; i < n; i++)
        regs[i] = (uintptr_t)words[i];
    return n;
}

HP_STOPPED_WINDOW int hp_arch_ucontext_to_state(const void *ucontext, uintptr_t *pc,
                                               uintptr_t *sp, uintptr_t *regs, int cap)
{
    const ucontext_t *uc = ucontext;
    *pc = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    *sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
    int n = NGREG < cap ? NGREG : cap;
    for (int i = 0; i < n; i++)
        regs[i] = (uintptr_t)uc->uc_mcontext.gregs[i];
    return n;
}

HP_STOPPED_WINDOW static bool rewindable(long nr)
{
    switch (nr) {
    case SYS_epoll_wait:
    case SYS_epoll_pwait:
#ifdef SYS_epoll_pwait2
    case SYS_epoll_pwait2:
#else
    case 441:
#endif
    case SYS_rt_sigtimedwait:
    case SYS_semop:
    case SYS_semtimedop:
    case SYS_msgrcv:
    case SYS_msgsnd:
    case SYS_mq_timedreceive:
    case SYS_mq_timedsend:
    case SYS_io_getevents:
#ifdef SYS_io_pgetevents
    case SYS_io_pgetevents:
#endif
    case SYS_accept:
    case SYS_accept4:
    case SYS_recvfrom:
    case SYS_recvmsg:
    case SYS_recvmmsg:
    case SYS_sendto:
    case SYS_sendmsg:
    case SYS_sendmmsg:
    case SYS_read:
    case SYS_readv:
    case SYS_write:
    case SYS_writev:
        return true;
    default:
        return false;
    }
}

HP_STOPPED_WINDOW bool hp_arch_interrupted_eintr(const struct user_regs_struct *r)
{
    long nr = (long)r->orig_rax;
    return nr >= 0 && (long)r->rax == -EINTR && rewindable(nr);
}

HP_STOPPED_WINDOW void hp_arch_rewind_syscall(struct user_regs_struct *r)
{
    r->rax = r->orig_rax;
    r->rip -= 2;
}

/*
 * clone(flags, stack) whose child calls hp_stop_helper_entry(arg) on the new stack and then
 * exits its thread (SYS_exit). *tid_word gets the child's tid before the child runs
 * (CLONE_PARENT_SETTID) and 0 when it exits (CLONE_CHILD_CLEARTID), as flags ask. The child shares the caller's thread pointer (no CLONE_SETTLS),
 * so hp_stop_helper_entry must never touch TLS. Returns the child's tid or -errno.
 */
__asm__(".pushsection hotpatch_stopped,\"ax\",@progbits\n"
        ".globl hp_arch_clone_helper\n"
        ".hidden hp_arch_clone_helper\n"
        ".type hp_arch_clone_helper,@function\n"
        "hp_arch_clone_helper:\n"
        /* rdi flags, rsi stack top, rdx tid word (parent and child), rcx arg */
        "    endbr64\n"
        "    andq $-16, %rsi\n"
        "    subq $16, %rsi\n"
        "    movq %rcx, (%rsi)\n"      /* arg at the child's stack pointer */
        "    movq %rdx, %r10\n"        /* child_tid: the same word as parent_tid (rdx) */
        "    xorl %r8d, %r8d\n"        /* tls: none */
        "    movl $56, %eax\n"         /* SYS_clone */
        "    syscall\n"
        "    testq %rax, %rax\n"
        "    jnz 1f\n"
        "    xorl %ebp, %ebp\n"        /* the child: a fresh stack, no frame above */
        "    movq (%rsp), %rdi\n"
        "    call hp_stop_helper_entry\n"
        "    xorl %edi, %edi\n"
        "    movl $60, %eax\n"         /* SYS_exit */
        "    syscall\n"
        "    hlt\n"
        "1:  ret\n"
        ".size hp_arch_clone_helper, .-hp_arch_clone_helper\n"
        ".popsection\n");
