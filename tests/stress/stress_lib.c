/*
 * stress_lib.c — targets and replacements in shared libraries for the stress test.
 *
 * Built twice: as libstress_target.so (TARGET defined: lib_add, the function patched inside a
 * shared library) and as libstress_repl.so (the replacements). Both are shared libraries, so the
 * loader maps them within 2 GB of each other: patching lib_add with repl_* is a near jump,
 * while patching a function of the PIE executable with repl_* needs a relay.
 */
#if defined(__clang__)
#define NOINLINE __attribute__((noinline)) /* clang has no noipa; noinline keeps the call */
#else
#define NOINLINE __attribute__((noinline, noipa))
#endif

#ifdef TARGET
NOINLINE int lib_add(int a, int b);
NOINLINE int lib_add(int a, int b)
{
    volatile int bias = 0;
    return a + b + bias;
}
#else
int repl_v1(int a, int b);
int repl_v2(int a, int b);
int repl_v1(int a, int b)
{
    return a * b + 1000;
}
int repl_v2(int a, int b)
{
    return a * b + 2000;
}
#endif
