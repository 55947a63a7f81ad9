/*
 * gflags.c — the `gflags` command family: list, get and set the process's own gflags.
 *
 * The process's gflags is found at run time (gflags_loader.c); nothing here links gflags or any
 * C++. A set goes through gflags' SetCommandLineOption (in the adapter), so gflags' type checks
 * and the program's validators decide, and a refusal comes back as one error line that changes
 * nothing. A process without gflags gets "error: this process has no gflags".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preload/gflags_adapter.h"
#include "commands.h"

enum hp_json_kind hp_gflag_json_kind(const char *type, const char *text)
{
    if (strcmp(type, "bool") == 0)
        return HP_JSON_BOOL;
    if (strcmp(type, "string") == 0 || !*text)
        return HP_JSON_STRING;
    if (strcmp(type, "double") == 0 && !isfinite(strtod(text, NULL)))
        return HP_JSON_STRING; /* nan and inf have no JSON number form */
    return HP_JSON_NUMBER;
}

/* Adds one flag as an item of a list reply. */
static void add_flag_item(const struct hp_gflag *flag, void *ctx)
{
    struct hp_reply *reply = ctx;
    hp_reply_item_begin(reply);
    hp_reply_item_str(reply, "name", flag->name);
    hp_reply_item_str(reply, "type", flag->type);
    hp_reply_item(reply, "value", flag->value, hp_gflag_json_kind(flag->type, flag->value));
    hp_reply_item(reply, "default", flag->default_value,
                  hp_gflag_json_kind(flag->type, flag->default_value));
    hp_reply_item_str(reply, "description", flag->description);
}

static void cmd_gflags_list(const struct hp_request *req, struct hp_reply *reply)
{
    (void)req;
    char why[HP_ERROR_MAX];
    const struct hp_gflags_adapter *gflags = hp_gflags_adapter(why, sizeof why);
    if (!gflags) {
        hp_reply_error(reply, "%s", why);
        return;
    }
    hp_reply_list(reply, "this process has gflags but no flags are defined");
    if (gflags->each(false, add_flag_item, reply, why, sizeof why) != 0)
        hp_reply_error(reply, "%s", why);
}

/* A single flag as the reply's value, with its description in JSON. */
static void reply_with_flag(const struct hp_gflag *flag, void *ctx)
{
    struct hp_reply *reply = ctx;
    hp_reply_value(reply, flag->value, hp_gflag_json_kind(flag->type, flag->value));
    hp_reply_field(reply, "name", flag->name, HP_JSON_STRING);
    hp_reply_field(reply, "type", flag->type, HP_JSON_STRING);
    hp_reply_field(reply, "default", flag->default_value,
                   hp_gflag_json_kind(flag->type, flag->default_value));
    hp_reply_field(reply, "is_default", flag->is_default ? "true" : "false", HP_JSON_BOOL);
    hp_reply_field(reply, "has_validator", flag->has_validator ? "true" : "false", HP_JSON_BOOL);
    hp_reply_field(reply, "file", flag->file, HP_JSON_STRING);
    hp_reply_field(reply, "description", flag->description, HP_JSON_STRING);
}

static void cmd_gflags_get(const struct hp_request *req, struct hp_reply *reply)
{
    char why[HP_ERROR_MAX];
    const struct hp_gflags_adapter *gflags = hp_gflags_adapter(why, sizeof why);
    if (!gflags) {
        hp_reply_error(reply, "%s", why);
        return;
    }
    if (gflags->get(req->argv[0], reply_with_flag, reply, why, sizeof why) != 0)
        hp_reply_error(reply, "%s", why);
}

/* The set's before and after views arrive one after the other; the second completes the reply. */
struct set_outcome {
    struct hp_reply *reply;
    hp_value_describer describe;
    int seen;
    char *old_value;
};

static void record_set(const struct hp_gflag *flag, void *ctx)
{
    struct set_outcome *out = ctx;
    if (out->seen++ == 0) {
        out->old_value = strdup(flag->value);
        if (!out->old_value)
            hp_reply_error(out->reply, "out of memory");
        return;
    }
    if (!out->old_value)
        return;
    enum hp_json_kind kind = hp_gflag_json_kind(flag->type, flag->value);
    hp_reply_field(out->reply, "name", flag->name, HP_JSON_STRING);
    hp_reply_field(out->reply, "old", out->old_value,
                   hp_gflag_json_kind(flag->type, out->old_value));
    hp_reply_field(out->reply, "value", flag->value, kind);
    char now[128], was[128];
    hp_reply_message(out->reply, "%s = %s (was %s)", flag->name,
                     out->describe ? out->describe(flag->value, now, sizeof now) : flag->value,
                     out->describe ? out->describe(out->old_value, was, sizeof was)
                                   : out->old_value);
}

void hp_gflags_set_reply(const char *name, const char *value, hp_value_describer describe,
                         struct hp_reply *reply)
{
    char why[HP_ERROR_MAX];
    const struct hp_gflags_adapter *gflags = hp_gflags_adapter(why, sizeof why);
    if (!gflags) {
        hp_reply_error(reply, "%s", why);
        return;
    }
    struct set_outcome out = {.reply = reply, .describe = describe};
    if (gflags->set(name, value, record_set, &out, why, sizeof why) != 0)
        hp_reply_error(reply, "%s", why);
    free(out.old_value);
}

static void cmd_gflags_set(const struct hp_request *req, struct hp_reply *reply)
{
    hp_gflags_set_reply(req->argv[0], req->argv[1], NULL, reply);
}

const struct hp_command hp_gflags_commands[] = {
    {"gflags", "list", 0, 0, cmd_gflags_list, "gflags list",
     "list the process's gflags: name, type, value, default, description", 0},
    {"gflags", "get", 1, 1, cmd_gflags_get, "gflags get NAME", "print a gflags flag's value", 0},
    {"gflags", "set", 2, 2, cmd_gflags_set, "gflags set NAME VALUE",
     "set a gflags flag through SetCommandLineOption (type checks and validators run)",
     HP_CMD_MUTATES},
    {0},
};
