/*
 * policy.c — who may use the agent, what they may do, and where it is recorded.
 *
 * Operator choices, read from the environment when the agent starts (and ignored, with the rest
 * of HOTPATCH_*, in a setuid or otherwise secure-execution process: base/env.c):
 *   HOTPATCH_ALLOW_UIDS   users answered besides root: comma-separated uids or user names
 *                         (default: the process's own uid). Root is always answered: it can
 *                         ptrace the process anyway, so refusing it would protect nothing.
 *                         The listed users get an ACL entry on the socket file so they can
 *                         connect at all (socket_file.c).
 *   HOTPATCH_ALLOW_GROUP  a group (name or gid) whose members are answered too; the socket file
 *                         then belongs to that group with mode 0660.
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
#include <grp.h>
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
#define AUDIT_REQUEST_MAX 4096   /* request bytes kept in a record (the protocol's line limit) */

enum audit_sink { AUDIT_STDERR, AUDIT_FILE, AUDIT_SYSLOG, AUDIT_OFF };

static struct {
    uid_t allowed[MAX_ALLOWED];
    size_t allowed_count;
    bool has_group;
    gid_t group;
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
    const char *text = hp_env("HOTPATCH_ALLOW_UIDS");
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

static bool parse_gid(const char *word, gid_t *gid)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(word, &end, 10);
    if (*word && !*end && !errno && v < (unsigned long)(gid_t)-1) {
        *gid = (gid_t)v;
        return true;
    }
    struct group gr, *found = NULL;
    char buf[4096];
    if (getgrnam_r(word, &gr, buf, sizeof buf, &found) == 0 && found) {
        *gid = found->gr_gid;
        return true;
    }
    return false;
}

static void load_group(void)
{
    const char *text = hp_env("HOTPATCH_ALLOW_GROUP");
    policy.has_group = false;
    if (!text || !*text)
        return;
    if (!parse_gid(text, &policy.group)) {
        hp_log("HOTPATCH_ALLOW_GROUP: ignoring '%s': not a gid or a group name", text);
        return;
    }
    policy.has_group = true;
}

static bool env_true(const char *name)
{
    const char *v = hp_env(name);
    return v && (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0);
}

static void load_audit(void)
{
    const char *text = hp_env("HOTPATCH_AUDIT");
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
    load_group();
    policy.read_only = env_true("HOTPATCH_READ_ONLY");
    load_audit();
}

bool hp_policy_allows(const struct hp_peer *peer, const gid_t *groups, size_t n_groups)
{
    if (peer->uid == 0)
        return true;
    for (size_t i = 0; i < policy.allowed_count; i++)
        if (policy.allowed[i] == peer->uid)
            return true;
    if (!policy.has_group)
        return false;
    if (peer->gid == policy.group)
        return true;
    for (size_t i = 0; i < n_groups; i++)
        if (groups[i] == policy.group)
            return true;
    return false;
}

void hp_policy_describe_allowed(char *out, size_t cap)
{
    size_t used = (size_t)snprintf(out, cap, "root");
    for (size_t i = 0; i < policy.allowed_count && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, ", uid %ld", (long)policy.allowed[i]);
    if (policy.has_group && used < cap)
        snprintf(out + used, cap - used, ", group %ld", (long)policy.group);
}

void hp_policy_socket_access(struct hp_socket_access *out)
{
    *out = (struct hp_socket_access){policy.allowed, policy.allowed_count, policy.has_group,
                                     policy.group};
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
    char why[300];
    int fd = hp_trust_open_append(policy.audit_path, why, sizeof why);
    if (fd < 0) {
        hp_log("cannot write the audit file: %s; this entry goes here: %s", why, line);
        return;
    }
    size_t len = strlen(line);
    if (write(fd, line, len) != (ssize_t)len)
        hp_log("short write to the audit file %s: %s", policy.audit_path, strerror(errno));
    close(fd);
}

static const char *phase_name(enum hp_audit_phase phase)
{
    switch (phase) {
    case HP_AUDIT_BEGIN: return "begin";
    case HP_AUDIT_END: return "end";
    default: return "refused";
    }
}

/* The request as a JSON string, cut at AUDIT_REQUEST_MAX bytes (then *cut is set). */
static char *quoted_request(const char *request, size_t len, bool *cut)
{
    *cut = len > AUDIT_REQUEST_MAX;
    return hp_json_quote(request ? request : "", *cut ? AUDIT_REQUEST_MAX : len);
}

/* Formats one record; malloc'd, no newline. */
static char *format_record(enum hp_audit_phase phase, const struct hp_peer *peer,
                           const char *request, size_t len, bool ok, const char *error)
{
    char when[40];
    format_now(when, sizeof when);
    bool cut;
    char *req = quoted_request(request, len, &cut);
    char *err = hp_json_quote(error ? error : "", error ? strlen(error) : 0);
    char *line = NULL;
    if (req && err) {
        char size[64] = "";
        if (cut)
            snprintf(size, sizeof size, ",\"truncated\":true,\"request_bytes\":%zu", len);
        char outcome[32] = "";
        if (phase == HP_AUDIT_END)
            snprintf(outcome, sizeof outcome, ",\"result\":\"%s\"", ok ? "ok" : "refused");
        bool has_error = phase != HP_AUDIT_BEGIN && error && *error;
        if (asprintf(&line, "{\"time\":\"%s\",\"process\":%ld,\"phase\":\"%s\",\"uid\":%ld,"
                     "\"pid\":%ld,\"request\":%s%s%s%s%s}", when, (long)getpid(),
                     phase_name(phase), peer ? (long)peer->uid : -1L,
                     peer ? (long)peer->pid : -1L, req, size, outcome,
                     has_error ? ",\"error\":" : "", has_error ? err : "") < 0)
            line = NULL;
    }
    free(req);
    free(err);
    return line;
}

void hp_audit(enum hp_audit_phase phase, const struct hp_peer *peer, const char *request,
              size_t len, bool ok, const char *error)
{
    if (policy.audit == AUDIT_OFF)
        return;
    char *record = format_record(phase, peer, request, len, ok, error);
    if (!record) {
        hp_log("audit: out of memory; a %s record of uid %ld was lost", phase_name(phase),
               peer ? (long)peer->uid : -1L);
        return;
    }
    switch (policy.audit) {
    case AUDIT_SYSLOG: syslog(LOG_USER | LOG_NOTICE, "hotpatch[%ld]: audit %s", (long)getpid(),
                              record); break;
    case AUDIT_FILE: {
        size_t n = strlen(record);
        char *entry = malloc(n + 2);
        if (entry) {
            memcpy(entry, record, n);
            memcpy(entry + n, "\n", 2);
            append_to_file(entry);
        }
        free(entry);
        break;
    }
    default: hp_log("audit %s", record); break;
    }
    free(record);
}
