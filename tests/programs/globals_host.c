/*
 * globals_host.c — test program: static globals nobody registered, for `var get/set TYPE
 * SYMBOL` and for patches that import them (tests/integration/test_var_symbols.py,
 * test_patch_files.py).
 *
 * It registers nothing but starts the agent, then reads commands on stdin:
 *   print   prints every global as its own code reads it ("b1=... i4=... ...")
 *   tick    calls next_ticket() (a patch may replace it) and prints "ticket=N tickets=M", N its
 *           answer and M the static counter as this file's own code reads it
 * It exits at end of input.
 *
 * The globals cover each size of the var types (bool, schar and uchar 1, short 2, int/float 4,
 * long/double 8), a 16-byte one (no var type has that size: refused), a
 * read-only one in .rodata, one in RELRO (a const pointer, relocated at load and then
 * protected), an unaligned one (asm: a 4-byte object at an odd address), a thread-local, a
 * name defined twice (here and in libglobals_lib.so: ambiguous unless qualified), and a
 * library's exported variable this program uses (a copy relocation or a GOT reference: either
 * way the live definition is the one the loader binds).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "hotpatch.h"

__attribute__((used)) static bool flag_b1 = true;
__attribute__((used)) static int count_i4 = 40;
__attribute__((used)) static long total_l8 = 8000000000L;
__attribute__((used)) static double ratio_d8 = 0.25;
__attribute__((used)) static float scale_f4 = 1.5f;
__attribute__((used)) static short half_s2 = 2;
__attribute__((used)) static unsigned char level_u1 = 200;
__attribute__((used)) static signed char delta_c1 = -3;
__attribute__((used)) static long long pair_16[2] = {1, 2};  /* no var type has 16 bytes */
__attribute__((used)) static const int limit_ro = 7;
__attribute__((used)) static int *const pointer_relro = &count_i4;
__attribute__((used)) static __thread int per_thread_tls = 3;
__attribute__((used)) static int dup_name = 1;
__attribute__((used)) static int tickets;

/* A 4-byte object one byte past an 8-byte boundary: no single access can be atomic. */
__asm__(".pushsection .data\n"
        ".p2align 3\n"
        "odd_pad: .byte 0\n"
        ".type odd_word, @object\n"
        ".size odd_word, 4\n"
        "odd_word: .long 1234\n"
        ".popsection\n");
extern int odd_word_alias __asm__("odd_word");

extern int lib_exported;          /* libglobals_lib.so */
int lib_dup_value(void);          /* its own static dup_name */

__attribute__((noinline)) int next_ticket(void)
{
    __asm__ volatile("" ::: "memory");
    return ++tickets;
}

static void print_globals(void)
{
    int odd;
    memcpy(&odd, (const char *)&odd_word_alias, sizeof odd);
    printf("b1=%d i4=%d l8=%ld d8=%.17g f4=%.9g s2=%d u1=%d c1=%d ro=%d relro=%d tls=%d "
           "dup=%d libdup=%d lib=%d odd=%d pair=%lld\n",
           (int)*(volatile bool *)&flag_b1, *(volatile int *)&count_i4,
           *(volatile long *)&total_l8, *(volatile double *)&ratio_d8,
           (double)*(volatile float *)&scale_f4, *(volatile short *)&half_s2,
           *(volatile unsigned char *)&level_u1, *(volatile signed char *)&delta_c1,
           *(const volatile int *)&limit_ro,
           *pointer_relro == count_i4, per_thread_tls, *(volatile int *)&dup_name,
           lib_dup_value(), *(volatile int *)&lib_exported, odd,
           ((volatile long long *)pair_16)[1]);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (hotpatch_start() != 0)
        return 1;
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strcmp(line, "print\n") == 0)
            print_globals();
        else if (strcmp(line, "tick\n") == 0) {
            int n = next_ticket();
            printf("ticket=%d tickets=%d\n", n, *(volatile int *)&tickets);
        }
    }
    return 0;
}
