/*
 * x86_64_regs.c — what the ptrace stop (engine/ptrace_stop.c) needs to know of x86-64: the
 * layout of the registers PTRACE_GETREGSET returns and the raw clone that starts its helper.
 * The rule for which interrupted system calls are rewound lives in x86_64_restart.c, which
 * the attach injector (cli/) compiles too.
 */
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
