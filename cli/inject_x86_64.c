/*
 * inject_x86_64.c — what the attach injector needs to know of x86-64: the system call and
 * function call conventions on a held thread's registers, and the loader thread's code.
 *
 * A remote system call: rax = number, rdi rsi rdx r10 r8 r9 = arguments, rip = a `syscall`
 * instruction, orig_rax = -1 (so that the kernel, letting the thread go from its stop, does not
 * apply the restart rules of the call the thread was interrupted in to ours).
 *
 * A remote call: System V arguments in rdi rsi rdx rcx r8 r9, rax = 0 (no vector arguments
 * for a variadic callee), rsp below the thread's 128-byte red zone (which the interrupted code
 * may be using) and a further 256 bytes, aligned to 16, then one word for the return address
 * so that the callee starts with rsp = 8 mod 16 as after a `call`.
 *
 * The loader code is assembled here, into .rodata, and copied into the target's code page: it
 * refers to nothing but its data page (rbx) and its own labels, so it runs at any address.
 * Both pages are mapped read+execute and written through /proc/PID/mem, so that T needs one
 * single-stepped system call (mmap) and one call, of the bootstrap, which
 *   makes the data page writable (mprotect), saves errno (__errno_location), does
 *   pthread_attr_init, pthread_attr_setdetachstate(DETACHED), pthread_create(loader, data
 *   page), pthread_attr_destroy, puts errno back and returns 0 or (stage << 32) | error
 * — every round trip to T costs a scheduler slice when the program's threads are busy, so
 * there are as few as can be. The loader thread's life:
 *   name itself ATTACH_THREAD_NAME (prctl) so the preload constructor stands aside;
 *   unless DATA_ENTRY is preset (the library is mapped already): dlopen(path, RTLD_NOW),
 *   close(DATA_MEMFD) when the library came as a memfd copy (the mapping keeps it), and
 *   dlsym(handle, entry name), keeping dlerror()'s text on failure;
 *   call the entry (hotpatch_attach_start), keep its result, set DATA_STATE = 1;
 *   wait for the injector's DATA_ACK, 1 ms at a time (a futex wait with a timeout: the injector
 *   writes through /proc/PID/mem and cannot wake a private futex), at most LOADER_WAIT_ROUNDS;
 *   restore its callee-saved registers and tail-jump to munmap(code page, both pages), which
 *   returns into libc's thread start as if the loader had returned: the thread ends (it was
 *   created detached) and nothing of the injector stays mapped.
 */
#include <stddef.h>
#include <stdint.h>
#include <sys/user.h>

#include "inject.h"

void arch_set_syscall(struct user_regs_struct *r, uintptr_t insn, long nr, const long args[6])
{
    r->rax = (unsigned long long)nr;
    r->orig_rax = (unsigned long long)-1;
    r->rdi = (unsigned long long)args[0];
    r->rsi = (unsigned long long)args[1];
    r->rdx = (unsigned long long)args[2];
    r->r10 = (unsigned long long)args[3];
    r->r8 = (unsigned long long)args[4];
    r->r9 = (unsigned long long)args[5];
    r->rip = insn;
}

#define RED_ZONE 128
#define STACK_MARGIN 256

uintptr_t arch_set_call(struct user_regs_struct *r, uintptr_t fn, const long args[6])
{
    uintptr_t sp = ((uintptr_t)r->rsp - RED_ZONE - STACK_MARGIN) & ~(uintptr_t)15;
    sp -= 8;                         /* the return address: rsp = 8 mod 16 at entry */
    r->rsp = sp;
    r->rip = fn;
    r->orig_rax = (unsigned long long)-1;
    r->rax = 0;
    r->rdi = (unsigned long long)args[0];
    r->rsi = (unsigned long long)args[1];
    r->rdx = (unsigned long long)args[2];
    r->rcx = (unsigned long long)args[3];
    r->r8 = (unsigned long long)args[4];
    r->r9 = (unsigned long long)args[5];
    return sp;
}

long arch_result(const struct user_regs_struct *r)
{
    return (long)r->rax;
}

uintptr_t arch_pc(const struct user_regs_struct *r)
{
    return (uintptr_t)r->rip;
}

uintptr_t arch_sp(const struct user_regs_struct *r)
{
    return (uintptr_t)r->rsp;
}

long arch_syscall_nr(const struct user_regs_struct *r)
{
    return (long)r->orig_rax;
}

long arch_syscall_arg(const struct user_regs_struct *r, int i)
{
    const unsigned long long a[6] = {r->rdi, r->rsi, r->rdx, r->r10, r->r8, r->r9};
    return i >= 0 && i < 6 ? (long)a[i] : 0;
}

/* The offsets below are DATA_* of inject.h (static asserts keep them in step). */
_Static_assert(DATA_STATE == 0x0 && DATA_ACK == 0x4 && DATA_RESULT == 0x8 && DATA_STAGE == 0xc,
               "loader data layout");
_Static_assert(DATA_DLERROR == 0x10 && DATA_HANDLE == 0x18 && DATA_FN_DLOPEN == 0x20 &&
               DATA_FN_DLSYM == 0x28 && DATA_FN_DLERROR == 0x30 && DATA_FN_MUNMAP == 0x38 &&
               DATA_ENTRY == 0x40 && DATA_MEMFD == 0x50 && DATA_WAIT_TS == 0x60 && DATA_THREAD_NAME == 0x200 &&
               DATA_ENTRY_NAME == 0x220 && DATA_PATH == 0x300, "loader data layout");
_Static_assert(DATA_THREAD == 0x48 && DATA_FN_ERRNO == 0x80 && DATA_FN_ATTR_INIT == 0x88 &&
               DATA_FN_ATTR_DETACH == 0x90 && DATA_FN_CREATE == 0x98 &&
               DATA_FN_ATTR_DESTROY == 0xa0 && DATA_LOADER == 0xa8 && DATA_ATTR == 0x100,
               "bootstrap data layout");

__asm__(".pushsection .rodata\n"
        ".globl hp_loader_begin\n"
        ".hidden hp_loader_begin\n"
        "hp_loader_begin:\n"
        /* the return address of remote calls */
        "hp_loader_gadget_trap:\n"
        "    int3\n"
        "    .balign 16, 0xcc\n"
        "hp_loader_bootstrap:\n"              /* rdi = data page; on T's stack */
        "    push %rbx\n"
        "    push %r12\n"
        "    push %r13\n"                       /* rsp = 0 mod 16 for the calls below */
        "    mov %rdi, %rbx\n"
        "    mov %rbx, %rdi\n"                  /* mprotect(data, 4096, PROT_READ|PROT_WRITE) */
        "    mov $0x1000, %esi\n"
        "    mov $3, %edx\n"
        "    mov $10, %eax\n"
        "    syscall\n"
        "    test %rax, %rax\n"
        "    jz 1f\n"
        "    neg %eax\n"
        "    mov %eax, %eax\n"
        "    mov $1, %rdx\n"
        "    shl $32, %rdx\n"
        "    or %rdx, %rax\n"
        "    jmp 9f\n"
        "1:  call *0x80(%rbx)\n"               /* errno: r12 = &errno, r13d = its value */
        "    mov %rax, %r12\n"
        "    mov (%rax), %r13d\n"
        "    lea 0x100(%rbx), %rdi\n"          /* pthread_attr_init(&attr) */
        "    call *0x88(%rbx)\n"
        "    mov $2, %edx\n"
        "    test %eax, %eax\n"
        "    jnz 7f\n"
        "    lea 0x100(%rbx), %rdi\n"          /* pthread_attr_setdetachstate(&attr, DETACHED) */
        "    mov $1, %esi\n"
        "    call *0x90(%rbx)\n"
        "    mov $3, %edx\n"
        "    test %eax, %eax\n"
        "    jnz 6f\n"
        "    lea 0x48(%rbx), %rdi\n"           /* pthread_create(&thread, &attr, loader, data) */
        "    lea 0x100(%rbx), %rsi\n"
        "    mov 0xa8(%rbx), %rdx\n"
        "    mov %rbx, %rcx\n"
        "    call *0x98(%rbx)\n"
        "    mov $4, %edx\n"
        "6:  push %rax\n"                      /* keep the result over the destroy */
        "    push %rdx\n"
        "    lea 0x100(%rbx), %rdi\n"          /* pthread_attr_destroy(&attr) */
        "    call *0xa0(%rbx)\n"
        "    pop %rdx\n"
        "    pop %rax\n"
        "7:  mov %r13d, (%r12)\n"              /* errno as it was */
        "    mov %eax, %eax\n"
        "    test %eax, %eax\n"
        "    jz 9f\n"
        "    shl $32, %rdx\n"
        "    or %rdx, %rax\n"
        "9:  pop %r13\n"
        "    pop %r12\n"
        "    pop %rbx\n"
        "    ret\n"
        "    .balign 16, 0xcc\n"
        "hp_loader_entry:\n"
        "    push %rbx\n"
        "    push %r12\n"
        "    push %r13\n"                       /* rsp = 0 mod 16 for the calls below */
        "    mov %rdi, %rbx\n"
        "    mov $15, %edi\n"                   /* prctl(PR_SET_NAME, name) */
        "    lea 0x200(%rbx), %rsi\n"
        "    xor %edx, %edx\n"
        "    xor %r10d, %r10d\n"
        "    xor %r8d, %r8d\n"
        "    mov $157, %eax\n"
        "    syscall\n"
        "    mov 0x40(%rbx), %rax\n"            /* the entry, when mapped already */
        "    test %rax, %rax\n"
        "    jnz 3f\n"
        "    lea 0x300(%rbx), %rdi\n"           /* dlopen(path, RTLD_NOW) */
        "    mov $2, %esi\n"
        "    call *0x20(%rbx)\n"
        "    mov %rax, 0x18(%rbx)\n"
        "    movslq 0x50(%rbx), %rdi\n"        /* close(memfd): the mapping keeps the copy */
        "    test %rdi, %rdi\n"
        "    js 8f\n"
        "    mov $3, %eax\n"
        "    syscall\n"
        "8:  mov 0x18(%rbx), %rax\n"
        "    test %rax, %rax\n"
        "    jz 1f\n"
        "    mov %rax, %rdi\n"                  /* dlsym(handle, entry name) */
        "    lea 0x220(%rbx), %rsi\n"
        "    call *0x28(%rbx)\n"
        "    test %rax, %rax\n"
        "    jz 2f\n"
        "3:  call *%rax\n"                      /* the entry */
        "    mov %eax, 0x8(%rbx)\n"
        "    movl $3, 0xc(%rbx)\n"
        "    jmp 5f\n"
        "1:  movl $1, 0xc(%rbx)\n"
        "    jmp 4f\n"
        "2:  movl $2, 0xc(%rbx)\n"
        "4:  call *0x30(%rbx)\n"                /* dlerror() */
        "    mov %rax, 0x10(%rbx)\n"
        "5:  movl $1, 0x0(%rbx)\n"              /* done */
        "    mov $5000, %r12d\n"
        "6:  cmpl $0, 0x4(%rbx)\n"              /* acknowledged? */
        "    jne 7f\n"
        "    lea 0x4(%rbx), %rdi\n"             /* futex(&ack, FUTEX_WAIT_PRIVATE, 0, 1 ms) */
        "    mov $128, %esi\n"
        "    xor %edx, %edx\n"
        "    lea 0x60(%rbx), %r10\n"
        "    mov $202, %eax\n"
        "    syscall\n"
        "    dec %r12d\n"
        "    jnz 6b\n"
        "7:  lea -0x1000(%rbx), %rdi\n"         /* munmap(code page, 2 pages) */
        "    mov $0x2000, %esi\n"
        "    mov 0x38(%rbx), %rax\n"
        "    pop %r13\n"
        "    pop %r12\n"
        "    pop %rbx\n"
        "    jmp *%rax\n"
        "hp_loader_end:\n"
        ".globl hp_loader_offsets\n"
        ".hidden hp_loader_offsets\n"
        "hp_loader_offsets:\n"
        "    .quad hp_loader_entry - hp_loader_begin\n"
        "    .quad hp_loader_gadget_trap - hp_loader_begin\n"
        "    .quad hp_loader_end - hp_loader_begin\n"
        "    .quad hp_loader_bootstrap - hp_loader_begin\n"
        ".popsection\n");

extern const uint8_t hp_loader_begin[];
extern const uint64_t hp_loader_offsets[4];

_Static_assert(LOADER_WAIT_ROUNDS == 5000, "the loader code waits 5000 rounds");

void arch_loader_code(struct loader_code *out)
{
    out->bytes = hp_loader_begin;
    out->entry = (size_t)hp_loader_offsets[0];
    out->gadget_trap = (size_t)hp_loader_offsets[1];
    out->len = (size_t)hp_loader_offsets[2];
    out->bootstrap = (size_t)hp_loader_offsets[3];
}
