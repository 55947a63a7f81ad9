/*
 * execer.c — test program: an agent in a process that replaces itself with exec.
 *
 * It registers `value`, starts the agent, prints "ready", then runs one command per line of
 * standard input:
 *
 *   <how> <program> [args...]    replace this process: how is one of execve execv execvp
 *                                execvpe execl execlp execle fexecve execveat (the list forms
 *                                take at most three args); the e forms pass the environment
 *                                EXECER_PASSED=<how>. On failure it prints "failed <how> <errno>"
 *                                and reads the next line.
 *   vfork <program> [args...]    a vfork child execve's the program; prints "vforked <status>"
 *   fork <ms> <program> [args...]
 *                                a forked child waits ms, then execv's the program; prints
 *                                "forked <pid>"
 *   storm <threads> <each> <program>
 *                                that many threads each execv the program `each` times at once
 *                                (it must fail); prints "storm <failures>" when all are done
 *
 * It also registers the string `exec_on_set`: setting it execs that program (argument "30")
 * from the change callback, that is on the agent's own thread; on failure it prints
 * "failed callback <errno>" and the set is answered as usual.
 *
 * On end of input it exits normally.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hotpatch.h"

#define MAX_ARGS 8

static int value = 1;
static char exec_on_set[256];

static void exec_from_callback(const char *name, const void *old_value, const void *new_value,
                               void *user)
{
    (void)name, (void)old_value, (void)user;
    char *argv[] = {(char *)new_value, "30", NULL};
    execv(argv[0], argv);
    printf("failed callback %s\n", strerrorname_np(errno));
}

static char *passed_env_for(const char *how, char *slot, size_t cap)
{
    snprintf(slot, cap, "EXECER_PASSED=%s", how);
    return slot;
}

/* Runs the exec function named how; returns only when it failed. */
static int exec_as(const char *how, char **argv, int argc)
{
    char slot[64];
    char *const envp[] = {passed_env_for(how, slot, sizeof slot), NULL};
    const char *prog = argv[0];
    char *a1 = argc > 1 ? argv[1] : NULL, *a2 = argc > 2 ? argv[2] : NULL;
    char *a3 = argc > 3 ? argv[3] : NULL;
    if (strcmp(how, "execve") == 0)
        return execve(prog, argv, envp);
    if (strcmp(how, "execv") == 0)
        return execv(prog, argv);
    if (strcmp(how, "execvp") == 0)
        return execvp(prog, argv);
    if (strcmp(how, "execvpe") == 0)
        return execvpe(prog, argv, envp);
    if (strcmp(how, "execl") == 0)
        return execl(prog, prog, a1, a2, a3, (char *)NULL);
    if (strcmp(how, "execlp") == 0)
        return execlp(prog, prog, a1, a2, a3, (char *)NULL);
    if (strcmp(how, "execle") == 0) /* the environment must follow the list's first NULL */
        return argc == 1   ? execle(prog, prog, (char *)NULL, envp)
               : argc == 2 ? execle(prog, prog, a1, (char *)NULL, envp)
               : argc == 3 ? execle(prog, prog, a1, a2, (char *)NULL, envp)
                           : execle(prog, prog, a1, a2, a3, (char *)NULL, envp);
    if (strcmp(how, "execveat") == 0)
        return execveat(AT_FDCWD, prog, argv, envp, 0);
    if (strcmp(how, "fexecve") == 0) {
        int fd = open(prog, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return -1;
        int rc = fexecve(fd, argv, envp);
        int err = errno;
        close(fd);
        errno = err;
        return rc;
    }
    errno = EINVAL;
    return -1;
}

static void run_vfork(char **argv)
{
    pid_t child = vfork();
    if (child == 0) {
        execve(argv[0], argv, (char *[]){NULL});
        _exit(127);
    }
    int status = -1;
    waitpid(child, &status, 0);
    printf("vforked %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

static void run_fork(long ms, char **argv)
{
    pid_t child = fork();
    if (child == 0) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        execv(argv[0], argv);
        _exit(127);
    }
    printf("forked %ld\n", (long)child);
}

struct storm {
    pthread_t thread;
    const char *program;
    long each, failures;
};

static void *storm_main(void *arg)
{
    struct storm *st = arg;
    char *argv[] = {(char *)st->program, NULL};
    for (long i = 0; i < st->each; i++)
        st->failures += execv(st->program, argv) == -1;
    return NULL;
}

static void run_storm(long threads, long each, const char *program)
{
    struct storm st[16] = {0};
    if (threads < 1 || threads > 16)
        threads = 16;
    for (long i = 0; i < threads; i++) {
        st[i] = (struct storm){.program = program, .each = each};
        pthread_create(&st[i].thread, NULL, storm_main, &st[i]);
    }
    long failures = 0;
    for (long i = 0; i < threads; i++) {
        pthread_join(st[i].thread, NULL);
        failures += st[i].failures;
    }
    printf("storm %ld\n", failures);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    hotpatch_register_variable("value", &value);
    hotpatch_register_string_checked("exec_on_set", exec_on_set, sizeof exec_on_set, NULL,
                                     exec_from_callback, NULL);
    if (hotpatch_start() != 0)
        return 1;
    printf("ready\n");
    char line[512];
    while (fgets(line, sizeof line, stdin)) {
        char *words[MAX_ARGS + 2] = {0};
        int n = 0;
        for (char *w = strtok(line, " \n"); w && n <= MAX_ARGS; w = strtok(NULL, " \n"))
            words[n++] = w;
        if (n < 2)
            continue;
        if (strcmp(words[0], "vfork") == 0) {
            run_vfork(words + 1);
        } else if (strcmp(words[0], "storm") == 0 && n >= 4) {
            run_storm(atol(words[1]), atol(words[2]), words[3]);
        } else if (strcmp(words[0], "fork") == 0 && n >= 3) {
            run_fork(atol(words[1]), words + 2);
        } else {
            exec_as(words[0], words + 1, n - 1);
            printf("failed %s %s\n", words[0], strerrorname_np(errno));
        }
    }
    return 0;
}
