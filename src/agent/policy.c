/*
 * policy.c — who may use the agent, what they may do, and where it is recorded.
 *
 * Three operator choices, read from the environment when the agent starts:
 *   HOTPATCH_ALLOW_UIDS   users answered besides root: comma-separated uids or user names
 *                         (default: the process's own uid). Root is always answered: it can
 *                         ptrace the process anyway, so refusing it would protect nothing.
 *   HOTPATCH_READ_ONLY    1/true/yes: every command that changes the process is refused.
 *   HOTPATCH_AUDIT        where mutating commands are recorded: stderr (default),
 *                         file:/absolute/path (appended, created 0600), syslog, or off.
 *
 * The policy is one static struct owned by this file. hp_policy_load() writes it while no
 * agent thread exists (hotpatch_start, under the agent lock); afterwards only the agent thread
 * reads it, so it needs no lock of its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define MAX_ALLOWED 32

enum audit_sink { AUDIT_STDERR, AUDIT_FILE, AUDIT_SYSLOG, AUDIT_OFF };

static struct {
    uid_t allowed[MAX_ALLOWED];
    size_t allowed_count;
    bool read_only;
    enum audit_sink audit;
    char audit_path[256];
} policy = {.allowed_count = 0, .audit = AUDIT_STDERR};

static bool parse_uid(const char *word, uid_t *uid)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(word, &end, 10);
    if (*word && !*end && !errno && v < (unsigned long)(uid_t)-1) {
        *uid = (uid_t)v;
        return true;
    }
    struct passwd pw, *found = NULL;
    char buf[1024];
    if (getpwnam_r(word, &pw, buf, sizeof buf, &found) == 0 && found) {
        *uid = found->pw_uid;
        return true;
    }
    return false;
}

static void load_allowed(void)
{
    policy.allowed_count = 0;
    const char *text = getenv("HOTPATCH_ALLOW_UIDS");
    if (!text || !*text) {
        policy.allowed[policy.allowed_count++] = geteuid();
        return;
    }
    char copy[512];
    snprintf(copy, sizeof copy, "%s", text);
    char *save = NULL;
    for (char *word = strtok_r(copy, ", ", &save); word; word = strtok_r(NULL, ", ", &save)) {
        uid_t uid;
        if (!parse_uid(word, &uid))
            hp_log("HOTPATCH_ALLOW_UIDS: ignoring '%s': not a uid or a user name", word);
        else if (policy.allowed_count < MAX_ALLOWED)
            policy.allowed[policy.allowed_count++] = uid;
        else
            hp_log("HOTPATCH_ALLOW_UIDS: ignoring '%s': at most %d users", word, MAX_ALLOWED);
    }
}

static bool env_true(const char *name)
{
    const char *v = getenv(name);
    return v && (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0);
}

static void load_audit(void)
{
    const char *text = getenv("HOTPATCH_AUDIT");
    policy.audit = AUDIT_STDERR;
    if (!text || !*text || strcmp(text, "stderr") == 0)
        return;
    if (strcmp(text, "syslog") == 0) {
        policy.audit = AUDIT_SYSLOG;
    } else if (strcmp(text, "off") == 0) {
        policy.audit = AUDIT_OFF;
    } else if (strncmp(text, "file:/", 6) == 0 && strlen(text + 5) < sizeof policy.audit_path) {
        policy.audit = AUDIT_FILE;
        snprintf(policy.audit_path, sizeof policy.audit_path, "%s", text + 5);
    } else {
        hp_log("HOTPATCH_AUDIT: ignoring '%s': expected stderr, syslog, off or "
               "file:/absolute/path; auditing to stderr", text);
    }
}

void hp_policy_load(void)
{
    load_allowed();
    policy.read_only = env_true("HOTPATCH_READ_ONLY");
    load_audit();
}

bool hp_policy_allows(uid_t uid)
{
    if (uid == 0)
        return true;
    for (size_t i = 0; i < policy.allowed_count; i++)
        if (policy.allowed[i] == uid)
            return true;
    return false;
}

void hp_policy_describe_allowed(char *out, size_t cap)
{
    size_t used = (size_t)snprintf(out, cap, "root");
    for (size_t i = 0; i < policy.allowed_count && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, ", uid %ld", (long)policy.allowed[i]);
}

bool hp_policy_read_only(void)
{
    return policy.read_only;
}

/* "2026-11-27T02:50:00.123Z" */
static void format_now(char *out, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void append_to_file(const char *line)
{
    int fd = open(policy.audit_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        hp_log("cannot write the audit file %s: %s; this entry goes here: %s", policy.audit_path,
               strerror(errno), line);
        return;
    }
    size_t len = strlen(line);
    if (write(fd, line, len) != (ssize_t)len)
        hp_log("short write to the audit file %s: %s", policy.audit_path, strerror(errno));
    close(fd);
}

void hp_audit(const struct hp_peer *peer, const char *request, bool ok, const char *outcome)
{
    if (policy.audit == AUDIT_OFF)
        return;
    char when[40], line[1024];
    format_now(when, sizeof when);
    long uid = peer ? (long)peer->uid : -1, pid = peer ? (long)peer->pid : -1;
    snprintf(line, sizeof line, "audit time=%s uid=%ld pid=%ld request=\"%.400s\" result=%s%s%.300s",
             when, uid, pid, request, ok ? "ok" : "refused", outcome && *outcome ? ": " : "",
             outcome ? outcome : "");
    switch (policy.audit) {
    case AUDIT_SYSLOG: syslog(LOG_USER | LOG_NOTICE, "hotpatch[%ld]: %s", (long)getpid(), line); break;
    case AUDIT_FILE: {
        char entry[1100];
        snprintf(entry, sizeof entry, "hotpatch[%ld]: %s\n", (long)getpid(), line);
        append_to_file(entry);
        break;
    }
    default: hp_log("%s", line); break;
    }
}
