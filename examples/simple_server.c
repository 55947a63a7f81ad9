/*
 * simple_server.c — the smallest program that uses hotpatch, in C.
 *
 * It registers a string, an int, a validated int and a function, starts the agent, and prints one line per
 * interval with the current values and add_func(1, 2), so every change made through the socket
 * shows up in its output:
 *
 *   user_name=myname age=10 add_func(1, 2)=3
 *
 * Options: --interval-ms N (default 1000), --count N (stop after N lines; default: forever).
 * SIGINT and SIGTERM stop it cleanly.
 * Output is line-buffered so tests and demos see each line as it is printed.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hotpatch.h"

static char user_name[64] = "myname";
static int age = 10;
/* Not printed: shows a validator, which refuses values outside 1..60000 with its own reason. */
static int timeout_ms = 1000;

static int timeout_in_range(const char *name, const void *value, char *why, size_t cap,
                            void *user)
{
    (void)user;
    int v = *(const int *)value;
    if (v >= 1 && v <= 60000)
        return 0;
    snprintf(why, cap, "%s must be between 1 and 60000 milliseconds, not %d", name, v);
    return 1;
}

/* The function an operator may upgrade. noinline keeps a real call in the loop below, and the
 * volatile read keeps the body longer than a 5-byte jump, as a real function would be. */
__attribute__((noinline)) int add_func(int a, int b)
{
    volatile int bias = 0;
    return a + b + bias;
}

/* How the age is shown: a second function a patch may replace together with add_func
 * (examples/simple_server_fix.c). */
__attribute__((noinline)) int shown_age(int years)
{
    volatile int bias = 0;
    return years + bias;
}

/* SIGINT and SIGTERM end the loop, so the program exits normally and the agent removes its
 * socket (a process killed outright leaves it behind for the next start to replace). */
static volatile sig_atomic_t stopping;

static void request_stop(int sig)
{
    (void)sig;
    stopping = 1;
}

static long parse_option(const char *name, const char *text)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (*end || v < 0) {
        fprintf(stderr, "simple_server: %s expects a non-negative number, got '%s'\n", name, text);
        exit(2);
    }
    return v;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stopping)
        ;
}

int main(int argc, char **argv)
{
    long interval_ms = 1000, count = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--interval-ms") == 0 && i + 1 < argc)
            interval_ms = parse_option(argv[i], argv[i + 1]), i++;
        else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
            count = parse_option(argv[i], argv[i + 1]), i++;
        else {
            fprintf(stderr, "usage: simple_server [--interval-ms N] [--count N]\n");
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa = {.sa_handler = request_stop};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    hotpatch_register_string("user_name", user_name, sizeof user_name);
    hotpatch_register_variable("age", &age);
    hotpatch_register_variable_checked("timeout_ms", &timeout_ms, timeout_in_range, NULL, NULL);
    hotpatch_register_function("add_func", (void *)add_func);
    int rc = hotpatch_start();
    if (rc != 0)
        fprintf(stderr, "simple_server: hotpatch agent not started: %s\n", strerror(-rc));

    for (long n = 0; !stopping && (count < 0 || n < count); n++) {
        char name[sizeof user_name];
        hotpatch_get_string("user_name", name, sizeof name);
        printf("user_name=%s age=%d add_func(1, 2)=%d\n", name,
               shown_age(__atomic_load_n(&age, __ATOMIC_RELAXED)), add_func(1, 2));
        sleep_ms(interval_ms);
    }
    hotpatch_stop();
    return 0;
}
