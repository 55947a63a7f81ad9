/*
 * fdchaos.c — test program: a process that tramples on descriptors it does not own.
 *
 *   fdchaos close      after the agent starts, close every descriptor from 3 to 1023
 *   fdchaos dup2 FILE  after the agent starts, dup2 FILE over every descriptor from 3 to 1023
 *
 * Daemons do both. The agent must keep serving and must never read, write or close a
 * descriptor that has become the program's. It prints "trampled" when done, then prints
 * `value=N` every 50 ms until SIGTERM.
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hotpatch.h"

static int value = 1;
static volatile sig_atomic_t stopping;

static void on_term(int sig)
{
    (void)sig;
    stopping = 1;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "dup2") == 0 && argc < 3)) {
        fprintf(stderr, "usage: fdchaos close | fdchaos dup2 FILE\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    hotpatch_register_variable("value", &value);
    if (hotpatch_start() != 0)
        return 1;
    if (strcmp(argv[1], "close") == 0) {
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
    } else {
        int file = open(argv[2], O_WRONLY | O_APPEND);
        if (file < 0)
            return 1;
        for (int fd = 3; fd < 1024; fd++)
            if (fd != file)
                dup2(file, fd);
    }
    printf("trampled\n");
    while (!stopping) {
        printf("value=%d\n", __atomic_load_n(&value, __ATOMIC_RELAXED));
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}
