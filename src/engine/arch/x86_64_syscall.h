/*
 * x86_64_syscall.h — raw Linux system calls, without the C library.
 *
 * Code that runs while other threads are stopped must not call the C library's wrappers: a
 * stopped thread may hold a lock they take, or the program may have patched them (a tracing
 * `open` that uses stdio deadlocks the process if the engine calls it in that window). These
 * inline functions are the `syscall` instruction itself, so they are compiled into their
 * caller's section. Return values follow the kernel: -errno on failure. Not installed.
 */
#ifndef HOTPATCH_X86_64_SYSCALL_H
#define HOTPATCH_X86_64_SYSCALL_H

static inline long hp_raw_syscall6(long n, long a, long b, long c, long d, long e, long f)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

static inline long hp_raw_syscall3(long n, long a, long b, long c)
{
    return hp_raw_syscall6(n, a, b, c, 0, 0, 0);
}

#endif /* HOTPATCH_X86_64_SYSCALL_H */
