/*
 * status.c — what the agent can say about the process it is in: `status`, `history`, `diff`.
 *
 *   status     the agent's version and protocol, how it came into the process, its socket,
 *              the pid, uptime, and how much it holds: variables, libraries, patched functions
 *   history    every change made through the agent since it started (the last 1,000): when,
 *              by whom, the request and its outcome (agent/history.c keeps them)
 *   diff       every variable and flag whose value differs from the one the agent first saw,
 *              and whether the last change was the agent's (the current value is the one a
 *              change through the agent set) or the program's own
 *
 * An operator in an incident asks "what has been done to this process?": these answer it from
 * inside the process, without a log to find. Read-only; agent thread.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "engine/engine.h"
#include "preload/gflags_adapter.h"

/* ---- status --------------------------------------------------------------------------------- */

static void count_patched(const struct hp_patch_view *v, void *ctx)
{
    size_t *n = ctx;
    *n += v->depth > 0;
}

static void field_number(struct hp_reply *reply, const char *key, long long value)
{
    char text[32];
    snprintf(text, sizeof text, "%lld", value);
    hp_reply_field(reply, key, text, HP_JSON_NUMBER);
}

static void cmd_status(const struct hp_request *req, struct hp_reply *reply)
{
    (void)req;
    char socket_path[128] = "";
    if (hotpatch_socket_path(socket_path, sizeof socket_path) < 0)
        socket_path[0] = '\0';
    struct hp_registry_counts counts;
    hp_registry_counts(&counts);
    size_t patched = 0;
    hp_patch_each(count_patched, &patched);
    long long uptime = hp_agent_uptime_ms() / 1000;

    hp_reply_field(reply, "version", HOTPATCH_VERSION, HP_JSON_STRING);
    field_number(reply, "protocol", HOTPATCH_PROTOCOL_VERSION);
    hp_reply_field(reply, "started", hp_agent_origin(), HP_JSON_STRING);
    hp_reply_field(reply, "socket", socket_path, HP_JSON_STRING);
    field_number(reply, "pid", (long long)getpid());
    field_number(reply, "uptime_s", uptime);
    field_number(reply, "variables", (long long)counts.variables);
    field_number(reply, "functions", (long long)counts.functions);
    field_number(reply, "libraries", (long long)counts.libraries);
    field_number(reply, "patched_functions", (long long)patched);
    field_number(reply, "changes", (long long)hp_history_recorded());
    const char *stop = hp_threads_stop_method();
    const char *fallback = hp_threads_stop_fallback_reason();
    hp_reply_field(reply, "stop", stop, HP_JSON_STRING);
    if (fallback && *fallback)
        hp_reply_field(reply, "stop_fallback_reason", fallback, HP_JSON_STRING);
    hp_reply_plain(reply,
                   "hotpatch %s, protocol %d, %s agent in process %ld on %s, up %lld s\n"
                   "variables %zu, functions %zu, libraries %zu, patched functions %zu, "
                   "changes %llu; threads are stopped by %s%s%s",
                   HOTPATCH_VERSION, HOTPATCH_PROTOCOL_VERSION, hp_agent_origin(), (long)getpid(),
                   socket_path, uptime, counts.variables, counts.functions, counts.libraries,
                   patched, hp_history_recorded(), stop, fallback && *fallback ? ": " : "",
                   fallback && *fallback ? fallback : "");
}

/* ---- history -------------------------------------------------------------------------------- */

/* "2026-11-27T02:50:00.123Z" */
static void format_time(long long ms, char *out, size_t cap)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, cap - n, ".%03lldZ", ms % 1000);
}

static void add_change_item(const struct hp_change *c, void *ctx)
{
    struct hp_reply *reply = ctx;
    char when[40];
    format_time(c->time_ms, when, sizeof when);
    hp_reply_item_begin(reply);
    hp_reply_item_int(reply, "seq", (long long)c->sequence);
    hp_reply_item_str(reply, "time", when);
    hp_reply_item_int(reply, "uid", (long long)c->uid);
    hp_reply_item_int(reply, "pid", (long long)c->pid);
    hp_reply_item_str(reply, "request", c->request);
    hp_reply_item_str(reply, "result", c->ok ? "ok" : "refused");
    hp_reply_item_str(reply, "old", c->old_value ? c->old_value : "");
    hp_reply_item_str(reply, "new", c->new_value ? c->new_value : "");
    hp_reply_item_str(reply, "outcome", c->outcome);
}

static void cmd_history(const struct hp_request *req, struct hp_reply *reply)
{
    (void)req;
    hp_reply_list(reply, "no changes have been made through the agent since it started");
    hp_history_each(add_change_item, reply);
    field_number(reply, "dropped", (long long)hp_history_dropped());
}

/* ---- diff ----------------------------------------------------------------------------------- */

struct last_change {
    const char *target;          /* "var NAME" or "flag NAME" */
    char value[HP_LINE_MAX];     /* the value the last successful change set */
    bool found;
};

static void find_last_change(const struct hp_change *c, void *ctx)
{
    struct last_change *q = ctx;
    if (!c->ok || !c->new_value || strcmp(c->target, q->target) != 0)
        return;
    snprintf(q->value, sizeof q->value, "%s", c->new_value);
    q->found = true;
}

/* "agent" when the value now is the one the last change through the agent set, else
 * "program" (the program changed it itself, since or instead). */
static const char *changed_by(const char *kind, const char *name, const char *now)
{
    static struct last_change q;   /* large; agent thread only */
    char target[HP_NAME_MAX + 16];
    snprintf(target, sizeof target, "%s %s", kind, name);
    q.target = target;
    q.found = false;
    hp_history_each(find_last_change, &q);
    return q.found && strcmp(q.value, now) == 0 ? "agent" : "program";
}

static void add_difference(struct hp_reply *reply, const char *kind, const char *name,
                           const char *first, const char *now)
{
    hp_reply_item_begin(reply);
    hp_reply_item_str(reply, "kind", kind);
    hp_reply_item_str(reply, "name", name);
    hp_reply_item_str(reply, "first", first);
    hp_reply_item_str(reply, "now", now);
    hp_reply_item_str(reply, "changed_by", changed_by(kind, name, now));
}

static void diff_variable(const struct hp_variable_view *v, void *ctx)
{
    if (v->first && strcmp(v->first, v->value) != 0)
        add_difference(ctx, "var", v->name, v->first, v->value);
}

static void diff_symbol(const char *name, const char *first, const char *now, void *ctx)
{
    if (strcmp(first, now) != 0)
        add_difference(ctx, "var", name, first, now);
}

static void diff_flag(const struct hp_gflag *flag, void *ctx)
{
    const char *first = hp_gflags_first_value(flag->name);
    if (first && strcmp(first, flag->value) != 0)
        add_difference(ctx, "flag", flag->name, first, flag->value);
}

static void cmd_diff(const struct hp_request *req, struct hp_reply *reply)
{
    (void)req;
    hp_reply_list(reply, "nothing differs from what the agent first saw");
    hp_registry_each_variable(diff_variable, reply);
    hp_var_each_symbol(diff_symbol, reply);
    char why[HP_ERROR_MAX];
    const struct hp_gflags_adapter *gflags = hp_gflags_adapter(why, sizeof why);
    if (gflags && gflags->each(false, diff_flag, reply, why, sizeof why) != 0)
        hp_reply_error(reply, "%s", why);
}

const struct hp_command hp_status_commands[] = {
    {"status", NULL, 0, 0, cmd_status, "status",
     "the agent: version, how it started, socket, pid, uptime, what it holds", 0},
    {"history", NULL, 0, 0, cmd_history, "history",
     "every change made through the agent since it started (the last 1,000)", 0},
    {"diff", NULL, 0, 0, cmd_diff, "diff",
     "variables and flags that differ from their first-seen values, and who changed them", 0},
    {0},
};
