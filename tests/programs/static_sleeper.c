/*
 * static_sleeper.c — a statically linked program (no dynamic loader, no libc.so.6): attach
 * must refuse it, and leave it as it was (tests/integration/test_attach.py).
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
    printf("ready\n");
    fflush(stdout);
    for (;;)
        sleep(1);
}
