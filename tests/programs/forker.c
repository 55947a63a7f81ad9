/*
 * forker.c — test program: an agent in a process that forks.
 *
 * The parent registers `value`, starts the agent and forks. The child prints "child <pid>",
 * starts its own agent and exits once its `value` has been set to 2 (or after 10 s). The
 * parent prints "parent-serving" and serves until SIGTERM; it prints "child-exited" when the
 * child is gone. Used by test_core.py to prove fork leaves both agents correct.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
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

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    hotpatch_register_variable("value", &value);
    if (hotpatch_start() != 0)
        return 1;
    pid_t child = fork();
    if (child == 0) {
        if (hotpatch_running())
            return 3; /* the parent's agent must not look alive in the child */
        if (hotpatch_start() != 0)
            return 4;
        printf("child %ld\n", (long)getpid());
        for (int i = 0; i < 500 && __atomic_load_n(&value, __ATOMIC_RELAXED) != 2; i++)
            nap();
        return 0; /* exit() runs the destructor: the child's socket is removed */
    }
    printf("parent-serving\n");
    int status;
    while (waitpid(child, &status, 0) < 0 && !stopping)
        ;
    printf("child-exited %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    while (!stopping)
        nap();
    return 0;
}
