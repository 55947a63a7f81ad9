/*
 * x86_64_syscall.h — raw system calls as inline `syscall` instructions, for the code that runs
 * while other threads are stopped (engine.h, HP_STOPPED_WINDOW). Not installed.
 *
 * Why not libc's syscall() or its wrappers: a stopped thread may hold any lock, and a program
 * may have patched (or interposed) any libc function, including syscall() itself; libc's
 * wrappers also set errno through the thread pointer, which the ptrace helper (stop.c) shares
 * with the thread that created it. These wrappers are always inlined into their caller, touch
 * no memory but their arguments, and return the kernel's result: a value in [-4095, -1] is
 * -errno (hp_sys_failed).
 */
#ifndef HOTPATCH_X86_64_SYSCALL_H
#define HOTPATCH_X86_64_SYSCALL_H

#include <stdbool.h>
#include <sys/syscall.h>

#define HP_SYSCALL_INLINE                                                                   \
    static inline __attribute__((always_inline, unused,                                     \
                                 no_sanitize("address", "undefined", "thread")))

HP_SYSCALL_INLINE long hp_sys0(long nr)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr) : "rcx", "r11", "memory");
    return ret;
}

HP_SYSCALL_INLINE long hp_sys1(long nr, long a1)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a1) : "rcx", "r11", "memory");
    return ret;
}

HP_SYSCALL_INLINE long hp_sys2(long nr, long a1, long a2)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a1), "S"(a2) : "rcx", "r11", "memory");
    return ret;
}

HP_SYSCALL_INLINE long hp_sys3(long nr, long a1, long a2, long a3)
{
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a1), "S"(a2), "d"(a3)
                     : "rcx", "r11", "memory");
    return ret;
}

HP_SYSCALL_INLINE long hp_sys4(long nr, long a1, long a2, long a3, long a4)
{
    long ret;
    register long r10 __asm__("r10") = a4;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
}

HP_SYSCALL_INLINE long hp_sys5(long nr, long a1, long a2, long a3, long a4, long a5)
{
    long ret;
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return ret;
}

HP_SYSCALL_INLINE long hp_sys6(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
    long ret;
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    register long r9 __asm__("r9") = a6;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

/* True when a raw result is an error (-errno). */
HP_SYSCALL_INLINE bool hp_sys_failed(long ret)
{
    return (unsigned long)ret > -4096UL;
}

/* Copies, fills and compares without calling memcpy/memset/memcmp (which the compiler would
 * emit for a plain loop, and which a program may have patched). */
HP_SYSCALL_INLINE void hp_raw_copy(void *dst, const void *src, unsigned long n)
{
    __asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

HP_SYSCALL_INLINE void hp_raw_fill(void *dst, int byte, unsigned long n)
{
    __asm__ volatile("rep stosb" : "+D"(dst), "+c"(n) : "a"(byte) : "memory");
}

/* 0 when the n bytes are equal (no ordering). */
HP_SYSCALL_INLINE int hp_raw_differ(const void *a, const void *b, unsigned long n)
{
    const volatile unsigned char *x = a, *y = b;
    for (unsigned long i = 0; i < n; i++)
        if (x[i] != y[i])
            return 1;
    return 0;
}

#endif /* HOTPATCH_X86_64_SYSCALL_H */
