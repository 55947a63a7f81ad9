/*
 * targets.c — the processes a command goes to. See targets.h for the rules and the order.
 */
#include <errno.h>
#include <limits.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "message.h"
#include "procfs.h"
#include "targets.h"

#define ANCESTORS_LIMIT 4096        /* a chain of parents longer than this is cut there */

bool pid_list_add(struct pid_list *list, long pid)
{
    for (size_t i = 0; i < list->count; i++)
        if (list->pids[i] == pid)
            return true;
    if (list->count >= TARGETS_LIMIT)
        return false;
    if (list->count == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 16;
        long *grown = realloc(list->pids, cap * sizeof *grown);
        if (!grown)
            return false;
        list->pids = grown;
        list->cap = cap;
    }
    list->pids[list->count++] = pid;
    return true;
}

void pid_list_free(struct pid_list *list)
{
    free(list->pids);
    *list = (struct pid_list){0};
}

bool parse_pid_argument(const char *text, struct pid_list *list)
{
    const char *p = text;
    for (;;) {
        size_t n = strcspn(p, ",");
        char *end;
        errno = 0;
        long pid = strtol(p, &end, 10);   /* as -p has always read a pid: 1 to INT_MAX */
        if (errno || end == p || end != p + n || pid < 1 || pid > INT_MAX) {
            say("invalid pid '%.*s': expected a process id such as 1234", (int)n, p);
            return false;
        }
        if (!pid_list_add(list, pid)) {
            say("too many processes: at most %d", TARGETS_LIMIT);
            return false;
        }
        if (p[n] != ',')
            return true;
        p += n + 1;
    }
}

/* ---- --pgrep -------------------------------------------------------------------------------------- */

struct matcher {
    regex_t regex;
    struct pid_list skip;        /* the client and the processes it runs under */
    struct pid_list *out;
    bool full;
};

static void collect_ancestors(struct pid_list *skip)
{
    long pid = (long)getpid();
    for (int i = 0; i < ANCESTORS_LIMIT && pid > 0; i++) {
        pid_list_add(skip, pid);
        struct proc_status status;
        if (proc_status(pid, &status) != 0 || status.ppid == pid)
            break;
        pid = status.ppid;
    }
}

static bool is_skipped(const struct pid_list *skip, long pid)
{
    for (size_t i = 0; i < skip->count; i++)
        if (skip->pids[i] == pid)
            return true;
    return false;
}

/* The caller may look into the process (which the agent's verification needs). */
static bool may_look_into(long pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", pid);
    return access(path, R_OK | X_OK) == 0;
}

static bool match_process(long pid, void *context)
{
    struct matcher *m = context;
    char cmdline[PROC_CMDLINE_LIMIT];
    size_t len = 0;
    if (is_skipped(&m->skip, pid) || proc_cmdline(pid, cmdline, sizeof cmdline, &len) != 0 ||
        len == 0)
        return true;
    if (regexec(&m->regex, cmdline, 0, NULL, 0) != 0 || !may_look_into(pid))
        return true;
    m->full = !pid_list_add(m->out, pid);
    return !m->full;
}

bool add_matching_processes(const char *pattern, struct pid_list *list)
{
    struct matcher m = {.out = list};
    int rc = regcomp(&m.regex, pattern, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char why[256];
        regerror(rc, &m.regex, why, sizeof why);
        say("invalid --pgrep pattern '%s': %s", pattern, why);
        return false;
    }
    collect_ancestors(&m.skip);
    int err = proc_each_pid(match_process, &m);
    regfree(&m.regex);
    pid_list_free(&m.skip);
    if (err) {
        say("cannot read /proc: %s", strerror(err));
        return false;
    }
    if (m.full) {
        say("too many processes: at most %d", TARGETS_LIMIT);
        return false;
    }
    return true;
}
