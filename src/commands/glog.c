/*
 * glog.c — the `glog` command family: the process's glog logging settings, by name.
 *
 * glog keeps its settings (minloglevel, v, stderrthreshold, logtostderr, ...) as gflags flags
 * defined inside libglog, and reads most of them on every log call, so a change through gflags
 * takes effect on the next line logged. This family is a friendlier face over those flags:
 *   - `glog list` shows exactly the flags glog defines (the adapter tells them apart by where
 *     their variables live), so it lists "the rest glog exposes" for any glog version;
 *   - severities are spelled INFO, WARNING, ERROR, FATAL or 0-3, checked here because glog
 *     itself accepts any int32 and an out-of-range level silently disables logging;
 *   - `vmodule` cannot be changed through its flag (glog parses it once, at start), so
 *     `glog vmodule PATTERN LEVEL` calls glog's SetVLOGLevel instead, `glog set vmodule` says
 *     so, and `glog get vmodule` shows the list in effect (start value plus live changes).
 * Everything else goes through the same gflags set as `gflags set` (type checks, validators).
 *
 * State: live_vmodule records the patterns set through this agent (glog has no call to list
 * them), so `glog get vmodule` can show the list in effect. It is owned by the agent thread,
 * which runs every handler (see agent/agent.h), so it needs no lock.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "preload/gflags_adapter.h"
#include "commands.h"

#define VMODULE_TEXT_MAX 1024   /* the longest vmodule list shown */

static const char *const severity_names[] = {"INFO", "WARNING", "ERROR", "FATAL"};

/* glog settings whose value is a severity. */
static bool is_severity_setting(const char *name)
{
    return strcmp(name, "minloglevel") == 0 || strcmp(name, "stderrthreshold") == 0 ||
           strcmp(name, "logbuflevel") == 0 || strcmp(name, "logemaillevel") == 0;
}

/* glog settings read only when a log file is opened. */
static bool applies_to_new_files(const char *name)
{
    static const char *const names[] = {"log_dir", "log_link", "logfile_mode",
                                        "timestamp_in_logfile_name"};
    for (size_t i = 0; i < HP_ARRAY_SIZE(names); i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

/* glog's name for a severity level: INFO..FATAL for 0-3, "none" above (nothing is that
 * severe), else the text itself. */
static const char *severity_name(const char *value)
{
    char *end;
    long level = strtol(value, &end, 10);
    if (!*value || *end || level < 0)
        return value;
    return level < (long)HP_ARRAY_SIZE(severity_names) ? severity_names[level] : "none";
}

/* "2" -> "ERROR (2)"; other numbers unchanged. */
static const char *describe_severity(const char *value, char *buf, size_t cap)
{
    char *end;
    long level = strtol(value, &end, 10);
    if (*value && !*end && level >= 0 && level < (long)HP_ARRAY_SIZE(severity_names))
        snprintf(buf, cap, "%s (%ld)", severity_names[level], level);
    else
        snprintf(buf, cap, "%s", value);
    return buf;
}

/*
 * Turns a severity word into glog's number: INFO WARNING ERROR FATAL (any case) or 0-3.
 * logemaillevel also takes larger numbers (glog's default, 999, means "mail nothing").
 */
static bool parse_severity(const char *name, const char *text, char *out, size_t cap,
                           struct hp_reply *reply)
{
    for (size_t i = 0; i < HP_ARRAY_SIZE(severity_names); i++) {
        if (strcasecmp(text, severity_names[i]) == 0) {
            snprintf(out, cap, "%zu", i);
            return true;
        }
    }
    union hp_scalar v;
    char why[HP_ERROR_MAX];
    bool mail = strcmp(name, "logemaillevel") == 0;
    if (hp_parse_scalar(HOTPATCH_TYPE_INT, text, &v, why, sizeof why) == 0 && v.i >= 0 &&
        (v.i <= 3 || mail)) {
        snprintf(out, cap, "%d", v.i);
        return true;
    }
    hp_reply_error(reply, "'%.64s' is not a glog severity for %s: expected INFO, WARNING, ERROR, "
                   "FATAL or 0-3%s", text, name, mail ? " (or a larger number to mail nothing)" : "");
    return false;
}

static void effective_vmodule(const char *startup, char *out, size_t cap);

/* The value to show for a setting: vmodule as in effect now, the others as gflags has them. */
static const char *shown_value(const struct hp_gflag *flag, char *buf, size_t cap)
{
    if (strcmp(flag->name, "vmodule") != 0)
        return flag->value;
    effective_vmodule(flag->value, buf, cap);
    return buf;
}

/* The adapter, when the process has glog and gflags; else NULL and an error in reply. */
static const struct hp_gflags_adapter *glog_adapter(struct hp_reply *reply)
{
    if (!hp_process_has_glog()) {
        hp_reply_error(reply, "this process has no glog");
        return NULL;
    }
    char why[HP_ERROR_MAX];
    const struct hp_gflags_adapter *adapter = hp_gflags_adapter(why, sizeof why);
    if (!adapter)
        hp_reply_error(reply, "this process's glog cannot be reached: %s", why);
    return adapter;
}

/* ---- glog list ------------------------------------------------------------------------------ */

static void add_setting_item(const struct hp_gflag *flag, void *ctx)
{
    struct hp_reply *reply = ctx;
    hp_reply_item_begin(reply);
    hp_reply_item_str(reply, "name", flag->name);
    hp_reply_item_str(reply, "type", flag->type);
    char shown[VMODULE_TEXT_MAX];
    const char *value = shown_value(flag, shown, sizeof shown);
    hp_reply_item(reply, "value", value, hp_gflag_json_kind(flag->type, value));
    hp_reply_item(reply, "default", flag->default_value,
                  hp_gflag_json_kind(flag->type, flag->default_value));
    hp_reply_item_str(reply, "description", flag->description);
    if (is_severity_setting(flag->name))
        hp_reply_item_str(reply, "severity", severity_name(flag->value));
}

static void cmd_glog_list(const struct hp_request *req, struct hp_reply *reply)
{
    (void)req;
    const struct hp_gflags_adapter *adapter = glog_adapter(reply);
    if (!adapter)
        return;
    char why[HP_ERROR_MAX];
    hp_reply_list(reply, "this process's glog defines no gflags settings (built without gflags)");
    if (adapter->each(true, add_setting_item, reply, why, sizeof why) != 0)
        hp_reply_error(reply, "%s", why);
}

/* ---- looking a setting up ------------------------------------------------------------------- */

struct setting_lookup {
    bool found;
    bool is_glog;
    struct hp_reply *reply;     /* when set, the found setting becomes the reply's value */
};

static void take_setting(const struct hp_gflag *flag, void *ctx)
{
    struct setting_lookup *look = ctx;
    look->found = true;
    look->is_glog = flag->from_glog;
    if (!look->reply || !flag->from_glog)
        return;
    struct hp_reply *reply = look->reply;
    char shown[VMODULE_TEXT_MAX];
    const char *value = shown_value(flag, shown, sizeof shown);
    hp_reply_value(reply, value, hp_gflag_json_kind(flag->type, value));
    hp_reply_field(reply, "name", flag->name, HP_JSON_STRING);
    hp_reply_field(reply, "type", flag->type, HP_JSON_STRING);
    hp_reply_field(reply, "default", flag->default_value,
                   hp_gflag_json_kind(flag->type, flag->default_value));
    hp_reply_field(reply, "description", flag->description, HP_JSON_STRING);
    if (is_severity_setting(flag->name)) {
        char buf[64];
        hp_reply_field(reply, "severity", severity_name(flag->value), HP_JSON_STRING);
        hp_reply_plain(reply, "%s", describe_severity(flag->value, buf, sizeof buf));
    }
}

/* Appends a setting's name to a comma-separated list. */
struct name_list {
    char text[1024];
    size_t used;
};

static void append_name(const struct hp_gflag *flag, void *ctx)
{
    struct name_list *list = ctx;
    int n = snprintf(list->text + list->used, sizeof list->text - list->used, "%s%s",
                     list->used ? ", " : "", flag->name);
    if (n > 0 && list->used + (size_t)n < sizeof list->text)
        list->used += (size_t)n;
}

/* True when name is one of glog's settings; else an error naming the accepted ones. */
static bool require_setting(const struct hp_gflags_adapter *adapter, const char *name,
                            struct hp_reply *value_reply, struct hp_reply *reply)
{
    struct setting_lookup look = {.reply = value_reply};
    char why[HP_ERROR_MAX];
    int rc = adapter->get(name, take_setting, &look, why, sizeof why);
    if (rc != 0 && rc != -ENOENT) {
        hp_reply_error(reply, "%s", why);
        return false;
    }
    if (look.found && look.is_glog)
        return true;
    struct name_list list = {.used = 0};
    list.text[0] = '\0';
    adapter->each(true, append_name, &list, why, sizeof why);
    hp_reply_error(reply, "'%.128s' is not one of glog's settings%s; glog settings: %s", name,
                   look.found ? " (it is a gflags flag: use 'gflags get/set')" : "", list.text);
    return false;
}

/* ---- glog get / set ------------------------------------------------------------------------- */

static void cmd_glog_get(const struct hp_request *req, struct hp_reply *reply)
{
    const struct hp_gflags_adapter *adapter = glog_adapter(reply);
    if (adapter)
        require_setting(adapter, req->argv[0], reply, reply);
}

static void cmd_glog_set(const struct hp_request *req, struct hp_reply *reply)
{
    const char *name = req->argv[0];
    const char *value = req->argv[1];
    const struct hp_gflags_adapter *adapter = glog_adapter(reply);
    if (!adapter || !require_setting(adapter, name, NULL, reply))
        return;
    if (strcmp(name, "vmodule") == 0) {
        hp_reply_error(reply, "glog reads vmodule only at start; change verbosity per module "
                       "with 'glog vmodule PATTERN LEVEL' (e.g. glog vmodule server 2)");
        return;
    }
    char number[32];
    bool severity = is_severity_setting(name);
    if (severity && !parse_severity(name, value, number, sizeof number, reply))
        return;
    hp_gflags_set_reply(name, severity ? number : value, severity ? describe_severity : NULL,
                        reply);
    if (hp_reply_ok(reply) && applies_to_new_files(name))
        hp_reply_field(reply, "note", "applies to log files glog opens from now on",
                       HP_JSON_STRING);
}

/* ---- glog vmodule --------------------------------------------------------------------------- */

/*
 * glog keeps per-module levels in a list that has no public reader, so the agent keeps the
 * patterns it set (in the order it set them) and replays glog's own rule on top of --vmodule:
 * an exact pattern updates its entry, a new pattern goes in front.
 */
#define LIVE_VMODULE_MAX 64

struct vmodule_entry {
    char pattern[HP_NAME_MAX + 1];
    int level;
};
static struct vmodule_entry live_vmodule[LIVE_VMODULE_MAX];   /* owned by the agent thread */
static size_t live_vmodule_count;                              /* owned by the agent thread */

static void remember_vmodule(const char *pattern, int level)
{
    for (size_t i = 0; i < live_vmodule_count; i++) {
        if (strcmp(live_vmodule[i].pattern, pattern) == 0) {
            live_vmodule[i].level = level; /* glog updates an exact pattern where it stands */
            return;
        }
    }
    if (live_vmodule_count == LIVE_VMODULE_MAX)
        return; /* the record is a courtesy for get/list; glog itself has the setting */
    struct vmodule_entry *e = &live_vmodule[live_vmodule_count++];
    snprintf(e->pattern, sizeof e->pattern, "%s", pattern);
    e->level = level;
}

/* Does "pattern=" appear as an entry of the comma-separated list? Returns its offset or -1. */
static long find_entry(const char *list, const char *pattern)
{
    size_t len = strlen(pattern);
    for (const char *p = list; *p;) {
        if (strncmp(p, pattern, len) == 0 && p[len] == '=')
            return p - list;
        const char *comma = strchr(p, ',');
        if (!comma)
            break;
        p = comma + 1;
    }
    return -1;
}

/* The vmodule list in effect: --vmodule as given at start, with the live changes replayed.
 * A list longer than VMODULE_TEXT_MAX shows the changes that fit. */
static void effective_vmodule(const char *startup, char *out, size_t cap)
{
    char list[VMODULE_TEXT_MAX], next[VMODULE_TEXT_MAX];
    int n = snprintf(list, sizeof list, "%s", startup);
    for (size_t i = 0; n >= 0 && i < live_vmodule_count; i++) {
        const struct vmodule_entry *e = &live_vmodule[i];
        long at = find_entry(list, e->pattern);
        const char *rest = at < 0 ? NULL : strchr(list + at, ',');
        if (at < 0)
            n = snprintf(next, sizeof next, "%s=%d%s%.*s", e->pattern, e->level,
                         *list ? "," : "", (int)(sizeof next / 2), list);
        else
            n = snprintf(next, sizeof next, "%.*s%s=%d%.*s", (int)at, list, e->pattern, e->level,
                         (int)(sizeof next / 2), rest ? rest : "");
        if (n < 0 || (size_t)n >= sizeof next)
            break;
        memcpy(list, next, sizeof list);
    }
    snprintf(out, cap, "%s", list);
}

/* glog matches a pattern against a source file's base name without extension, with * and ?. */
static bool vmodule_pattern_valid(const char *pattern, struct hp_reply *reply)
{
    size_t len = strlen(pattern);
    bool ok = len > 0 && len <= HP_NAME_MAX;
    for (const char *p = pattern; ok && *p; p++)
        ok = isalnum((unsigned char)*p) || strchr("_-.*?+", *p);
    if (!ok)
        hp_reply_error(reply, "'%.128s' is not a vmodule pattern: expected 1-%d characters of "
                       "A-Z a-z 0-9 _ - . + and the wildcards * ?, matched against a source "
                       "file's name without directory or extension (e.g. server, net_*)",
                       pattern, HP_NAME_MAX);
    return ok;
}

static void cmd_glog_vmodule(const struct hp_request *req, struct hp_reply *reply)
{
    const char *pattern = req->argv[0];
    union hp_scalar level;
    char why[HP_ERROR_MAX];
    if (!vmodule_pattern_valid(pattern, reply))
        return;
    if (hp_parse_scalar(HOTPATCH_TYPE_INT, req->argv[1], &level, why, sizeof why) != 0) {
        hp_reply_error(reply, "%s", why);
        return;
    }
    const struct hp_gflags_adapter *adapter = glog_adapter(reply);
    if (!adapter)
        return;
    int previous = 0, now = 0;
    if (adapter->set_vlog(pattern, level.i, &previous, why, sizeof why) != 0 ||
        adapter->set_vlog(pattern, level.i, &now, why, sizeof why) != 0) {
        hp_reply_error(reply, "%s", why);
        return;
    }
    /* glog ignores a new pattern that an existing wildcard pattern already matches: asking again
     * returns the level really in effect, and a second identical call changes nothing. */
    if (now != level.i) {
        hp_reply_error(reply, "glog kept level %d for '%s': an existing vmodule wildcard pattern "
                       "matching it takes precedence (see 'glog get vmodule'); set that pattern "
                       "instead", now, pattern);
        return;
    }
    remember_vmodule(pattern, level.i);
    char text[32];
    hp_reply_field(reply, "pattern", pattern, HP_JSON_STRING);
    snprintf(text, sizeof text, "%d", previous);
    hp_reply_field(reply, "old", text, HP_JSON_NUMBER);
    snprintf(text, sizeof text, "%d", level.i);
    hp_reply_field(reply, "value", text, HP_JSON_NUMBER);
    hp_reply_message(reply, "vmodule %s=%d (was %d)", pattern, level.i, previous);
}

const struct hp_command hp_glog_commands[] = {
    {"glog", "list", 0, 0, cmd_glog_list, "glog list",
     "list glog's logging settings: name, type, value, default, description", 0},
    {"glog", "get", 1, 1, cmd_glog_get, "glog get NAME",
     "print one glog setting (severities also by name)", 0},
    {"glog", "set", 2, 2, cmd_glog_set, "glog set NAME VALUE",
     "change a glog setting; severities as INFO, WARNING, ERROR, FATAL or 0-3", HP_CMD_MUTATES},
    {"glog", "vmodule", 2, 2, cmd_glog_vmodule, "glog vmodule PATTERN LEVEL",
     "set VLOG verbosity for source files matching PATTERN (glog's SetVLOGLevel)",
     HP_CMD_MUTATES},
    {0},
};
