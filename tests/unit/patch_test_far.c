/*
 * patch_test_far.c — a shared library for test_patch: replacements that lie far (more than
 * 2 GB) from the PIE test executable, so the engine must use a relay, and a function a thread
 * can be kept running inside, to exercise the unload check.
 */
int far_replacement(int a, int b);
int far_replacement2(int a, int b);
int shared_name(void);
void far_spin(volatile int *stop);

int far_replacement(int a, int b)
{
    return a * b + 1000;
}

int far_replacement2(int a, int b)
{
    return a * b + 2000;
}

/* Also defined by test_patch itself: an ambiguous name. */
int shared_name(void)
{
    return 2;
}

void far_spin(volatile int *stop)
{
    while (!*stop)
        ;
}

/* A coroutine that suspends itself inside this library: its stack (not a thread's) then holds
 * return addresses into this code until it is resumed. */
#include <ucontext.h>
void far_yield(ucontext_t *self, ucontext_t *back);

void far_yield(ucontext_t *self, ucontext_t *back)
{
    swapcontext(self, back);
}
