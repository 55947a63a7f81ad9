/*
 * forker.c — test program: an agent in a process that forks.
 *
 *   forker serve   the child lives on (a prefork worker): it prints "child <pid>" and exits
 *                  once its `value` has been set to 2 (or after 10 s)
 *   forker exec    the child execs `sleep 1` at once (fork + exec)
 *
 * The parent registers `value`, starts the agent, forks, prints "parent-serving", and prints
 * "child-exited <status>" when the child is gone; it serves until SIGTERM.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
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

static void nap(void)
{
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
}

static int run_child(bool exec_at_once)
{
    if (exec_at_once) {
        execlp("sleep", "sleep", "1", (char *)NULL);
        return 127;
    }
    printf("child %ld\n", (long)getpid());
    for (int i = 0; i < 500 && __atomic_load_n(&value, __ATOMIC_RELAXED) != 2; i++)
        nap();
    return 0; /* exit() runs the destructor: the child's socket is removed */
}

int main(int argc, char **argv)
{
    if (argc != 2 || (strcmp(argv[1], "serve") != 0 && strcmp(argv[1], "exec") != 0)) {
        fprintf(stderr, "usage: forker serve|exec\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    hotpatch_register_variable("value", &value);
    if (hotpatch_start() != 0)
        return 1;
    pid_t child = fork();
    if (child == 0)
        return run_child(strcmp(argv[1], "exec") == 0);
    printf("parent-serving %ld\n", (long)child);
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && !stopping)
        ;
    printf("child-exited %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    while (!stopping)
        nap();
    return 0;
}
