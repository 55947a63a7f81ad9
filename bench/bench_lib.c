/*
 * bench_lib.c — the far replacement for the benchmark (libbench_far.so): a shared library is
 * mapped more than 2 GB from the PIE benchmark executable, so patching to it needs a relay.
 * Same body as the benchmark's own functions, so only the way the call gets there differs.
 */
#if defined(__clang__)
#define NOIPA __attribute__((noinline))
#else
#define NOIPA __attribute__((noinline, noipa))
#endif

int bench_far(int a, int b);
NOIPA int bench_far(int a, int b)
{
    return (a + b) * 5;
}

int bench_far2(int a, int b);
NOIPA int bench_far2(int a, int b)
{
    return (a + b) * 6;
}
