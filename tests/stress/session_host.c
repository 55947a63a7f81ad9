/*
 * session_host.c — a real process for the session stress (tests/integration/test_session_flips.py):
 * THREADS threads call add_func without pause while a client flips it over one session
 * connection of the agent (`func upgrade p1 add_func` / `func rollback add_func`).
 *
 * Every call's result must be exactly one version's: a + b (the original) or a * b + 100
 * (examples/add_func_patch1.c). With a and b in 1..50 the two never coincide, so a call that
 * ran a mix of both, or anything else, is counted as wrong. On SIGTERM the threads stop and the
 * program prints `calls=N wrong=M` and exits 0 only when no call was wrong and every thread
 * made calls.
 *
 * Usage: session_host [THREADS]   (default 16). Prints `ready` once the threads run.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hotpatch.h"

#define MAX_THREADS 256

/* Longer than a 5-byte jump; noinline and the volatile pointer below keep a real call. */
__attribute__((noinline)) int add_func(int a, int b)
{
    volatile int bias = 0;
    return a + b + bias;
}

static int (*volatile call_add)(int, int) = add_func;
static atomic_int stopping;
static atomic_ulong wrong;

struct caller {
    pthread_t thread;
    unsigned long calls;
    unsigned seed;
};

static void *call_forever(void *arg)
{
    struct caller *c = arg;
    while (!atomic_load_explicit(&stopping, memory_order_relaxed)) {
        int a = 1 + (int)(rand_r(&c->seed) % 50), b = 1 + (int)(rand_r(&c->seed) % 50);
        int r = call_add(a, b);
        if (r != a + b && r != a * b + 100) {
            if (atomic_fetch_add(&wrong, 1) < 5)
                fprintf(stderr, "session_host: add_func(%d, %d) returned %d\n", a, b, r);
        }
        c->calls++;
    }
    return NULL;
}

static void on_term(int sig)
{
    (void)sig;
    atomic_store(&stopping, 1);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 16;
    if (threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "usage: session_host [THREADS (1..%d)]\n", MAX_THREADS);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* SIGTERM stays blocked except in sigsuspend below, so it cannot slip in between the check
     * and the wait (every thread inherits the mask and never takes it). */
    sigset_t term, old;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigaddset(&term, SIGINT);
    pthread_sigmask(SIG_BLOCK, &term, &old);
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    hotpatch_register_function("add_func", (void *)add_func);
    int rc = hotpatch_start();
    if (rc != 0) {
        fprintf(stderr, "session_host: agent not started: %s\n", strerror(-rc));
        return 1;
    }
    static struct caller callers[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        callers[i].seed = (unsigned)i * 2654435761u + 1;
        if (pthread_create(&callers[i].thread, NULL, call_forever, &callers[i]) != 0) {
            fprintf(stderr, "session_host: cannot start thread %d\n", i);
            return 1;
        }
    }
    printf("ready\n");
    while (!atomic_load(&stopping))
        sigsuspend(&old);
    unsigned long calls = 0, idle = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(callers[i].thread, NULL);
        calls += callers[i].calls;
        idle += callers[i].calls == 0;
    }
    hotpatch_stop();
    printf("calls=%lu wrong=%lu idle_threads=%lu\n", calls, atomic_load(&wrong), idle);
    return atomic_load(&wrong) == 0 && idle == 0 ? 0 : 1;
}
