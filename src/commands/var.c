/*
 * var.c — the `var` command family: list, get and set registered variables.
 *
 * The registry does the typed work (parse, range, validator, atomic store); this file turns
 * words into registry calls and registry answers into replies. TYPE is optional in get and set
 * because the registry knows each variable's type; when given and wrong the command is refused,
 * never reinterpreted.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"

/* How a formatted value of `type` appears in JSON. */
static enum hp_json_kind json_kind_of(enum hotpatch_type type, const char *text)
{
    if (type == HOTPATCH_TYPE_STRING)
        return HP_JSON_STRING;
    if (type == HOTPATCH_TYPE_BOOL)
        return HP_JSON_BOOL;
    /* nan and inf have no JSON number form: they travel as strings. */
    if ((type == HOTPATCH_TYPE_FLOAT || type == HOTPATCH_TYPE_DOUBLE) &&
        !isfinite(strtod(text, NULL)))
        return HP_JSON_STRING;
    return HP_JSON_NUMBER;
}

/* Reads the optional TYPE word; false (and an error) when it is not a type name. */
static bool parse_type_word(const char *word, enum hotpatch_type *type, struct hp_reply *reply)
{
    *type = hp_type_from_name(word);
    if (*type)
        return true;
    hp_reply_error(reply, "unknown type '%.64s'; types: %s", word, hp_type_names());
    return false;
}

static void add_variable_item(const struct hp_variable_view *v, void *ctx)
{
    struct hp_reply *reply = ctx;
    hp_reply_item_begin(reply);
    hp_reply_item_str(reply, "name", v->name);
    hp_reply_item_str(reply, "type", hp_type_name(v->type));
    hp_reply_item(reply, "value", v->value, json_kind_of(v->type, v->value));
}

static void cmd_var_list(const struct hp_request *req, struct hp_reply *reply)
{
    (void)req;
    hp_reply_list(reply, "no variables are registered");
    hp_registry_each_variable(add_variable_item, reply);
}

static void cmd_var_get(const struct hp_request *req, struct hp_reply *reply)
{
    enum hotpatch_type want = 0;
    if (req->argc == 2 && !parse_type_word(req->argv[0], &want, reply))
        return;
    const char *name = req->argv[req->argc - 1];
    struct hp_variable_view *view = malloc(sizeof *view);
    if (!view) {
        hp_reply_error(reply, "out of memory");
        return;
    }
    int rc = hp_registry_get_variable(name, want, view);
    if (rc == -ENOENT)
        hp_reply_error(reply, "no variable named '%.128s' (see 'var list')", name);
    else if (rc == -EPROTOTYPE)
        hp_reply_error(reply, "variable '%s' has type %s, not %s", name, hp_type_name(view->type),
                       hp_type_name(want));
    else
        hp_reply_value(reply, view->value, json_kind_of(view->type, view->value));
    free(view);
}

static void cmd_var_set(const struct hp_request *req, struct hp_reply *reply)
{
    enum hotpatch_type want = 0;
    if (req->argc == 3 && !parse_type_word(req->argv[0], &want, reply))
        return;
    const char *name = req->argv[req->argc - 2];
    const char *text = req->argv[req->argc - 1];

    char *old_value = malloc(HP_LINE_MAX), *new_value = malloc(HP_LINE_MAX);
    char why[HP_ERROR_MAX];
    enum hotpatch_type type = 0;
    if (!old_value || !new_value) {
        hp_reply_error(reply, "out of memory");
    } else if (hp_registry_set_variable(name, want, text, &type, old_value, new_value,
                                        HP_LINE_MAX, why, sizeof why) != 0) {
        hp_reply_error(reply, "%s", why);
    } else {
        hp_reply_field(reply, "name", name, HP_JSON_STRING);
        hp_reply_field(reply, "old", old_value, json_kind_of(type, old_value));
        hp_reply_field(reply, "value", new_value, json_kind_of(type, new_value));
        hp_reply_message(reply, "%s = %s (was %s)", name, new_value, old_value);
    }
    free(old_value);
    free(new_value);
}

const struct hp_command hp_var_commands[] = {
    {"var", "list", 0, 0, cmd_var_list, "var list",
     "list registered variables with their types and values", 0},
    {"var", "get", 1, 2, cmd_var_get, "var get [TYPE] NAME", "print a variable's value", 0},
    {"var", "set", 2, 3, cmd_var_set, "var set [TYPE] NAME VALUE",
     "set a variable (checked against its type, range and validator)", HP_CMD_MUTATES},
    {0},
};
