/*
 * core.c — the commands about the protocol and the agent itself: help, version, session, quit,
 * detach.
 *
 * `help` and `version` are generated from the dispatch table (hp_for_each_command), so they
 * cannot drift from what the server accepts: a family that is compiled in shows up in both.
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"

/* ---- help ---------------------------------------------------------------------------------- */

struct help_walk {
    struct hp_reply *reply;
    const char *family;        /* only this family, or NULL for all */
    int matched;
};

static void add_help_row(const struct hp_command *c, void *ctx)
{
    struct help_walk *w = ctx;
    if (w->family && strcmp(w->family, c->family) != 0)
        return;
    w->matched++;
    hp_reply_item_begin(w->reply);
    hp_reply_item_str(w->reply, "usage", c->usage);
    hp_reply_item_str(w->reply, "summary", c->summary);
    hp_reply_item_bool(w->reply, "mutates", (c->flags & HP_CMD_MUTATES) != 0);
}

static void append_help_line(const struct hp_command *c, void *ctx)
{
    struct help_walk *w = ctx;
    if (w->family && strcmp(w->family, c->family) != 0)
        return;
    hp_reply_plain_append(w->reply, "  %-36s %s\n", c->usage, c->summary);
}

static void cmd_help(const struct hp_request *req, struct hp_reply *reply)
{
    struct help_walk walk = {reply, req->argc ? req->argv[0] : NULL, 0};
    hp_reply_list(reply, "");
    hp_for_each_command(add_help_row, &walk);
    if (walk.matched == 0) {
        hp_reply_error(reply, "no commands in family '%.64s'; send 'help' for all of them",
                       walk.family);
        return;
    }
    hp_reply_plain(reply, "hotpatch %s, protocol %d. Commands:\n", HOTPATCH_VERSION,
                   HOTPATCH_PROTOCOL_VERSION);
    hp_for_each_command(append_help_line, &walk);
    hp_reply_plain_append(reply,
                          "Prefix a command with 'json' for a one-line JSON reply. Quote a value "
                          "that has spaces: var set user_name \"a b\".\n"
                          "Details: docs/protocol.md.");
}

/* ---- version ------------------------------------------------------------------------------- */

struct capability_walk {
    char list[512];            /* plain: "var, lib, json, session" */
    size_t used;
    char json[600];            /* JSON array of the same names */
    size_t json_used;
    const char *last_family;   /* a family's rows are contiguous: name it once */
};

/* A capability is a command family (var, lib, ...) or a protocol feature (json, session). */
static void add_capability(struct capability_walk *w, const char *name)
{
    int n = snprintf(w->list + w->used, sizeof w->list - w->used, "%s%s", w->used ? ", " : "",
                     name);
    if (n > 0 && (size_t)n < sizeof w->list - w->used)
        w->used += (size_t)n;
    n = snprintf(w->json + w->json_used, sizeof w->json - w->json_used, "%s\"%s\"",
                 w->json_used > 1 ? "," : "", name);
    if (n > 0 && (size_t)n < sizeof w->json - w->json_used)
        w->json_used += (size_t)n;
}

static void add_family_capability(const struct hp_command *c, void *ctx)
{
    struct capability_walk *w = ctx;
    if (!c->verb || (w->last_family && strcmp(w->last_family, c->family) == 0))
        return;
    w->last_family = c->family;
    add_capability(w, c->family);
}

static void cmd_version(const struct hp_request *req, struct hp_reply *reply)
{
    (void)req;
    struct capability_walk walk = {.json = "[", .json_used = 1};
    hp_for_each_command(add_family_capability, &walk);
    add_capability(&walk, "json");
    add_capability(&walk, "session");
    add_capability(&walk, "fd-passing");   /* lib load and patch apply take the file itself */
    snprintf(walk.json + walk.json_used, sizeof walk.json - walk.json_used, "]");

    char protocol[16];
    snprintf(protocol, sizeof protocol, "%d", HOTPATCH_PROTOCOL_VERSION);
    hp_reply_field(reply, "version", HOTPATCH_VERSION, HP_JSON_STRING);
    hp_reply_field(reply, "protocol", protocol, HP_JSON_NUMBER);
    hp_reply_field(reply, "capabilities", walk.json, HP_JSON_RAW);
    hp_reply_plain(reply, "hotpatch %s protocol %d\ncapabilities: %s", HOTPATCH_VERSION,
                   HOTPATCH_PROTOCOL_VERSION, walk.list);
}

/* ---- session, quit ------------------------------------------------------------------------- */

static void cmd_session(const struct hp_request *req, struct hp_reply *reply)
{
    if (req->in_session) {
        hp_reply_error(reply, "already in a session; send 'quit' to end it");
        return;
    }
    *req->after = HP_AFTER_KEEP;
    char protocol[16];
    snprintf(protocol, sizeof protocol, "%d", HOTPATCH_PROTOCOL_VERSION);
    hp_reply_field(reply, "protocol", protocol, HP_JSON_NUMBER);
    hp_reply_message(reply, "session started: one JSON reply per request; 'quit' ends it");
}

static void cmd_quit(const struct hp_request *req, struct hp_reply *reply)
{
    *req->after = HP_AFTER_CLOSE;
    hp_reply_message(reply, "bye");
}

/* ---- detach -------------------------------------------------------------------------------- */

/* The server sends this reply, removes its socket and ends its thread (server.c); the library
 * and everything it changed stay, so a later `hotpatch -p PID attach` (or hotpatch_start())
 * brings the same agent back. */
static void cmd_detach(const struct hp_request *req, struct hp_reply *reply)
{
    *req->after = HP_AFTER_DETACH;
    char path[4096];
    if (hotpatch_socket_path(path, sizeof path) < 0)
        snprintf(path, sizeof path, "its socket");
    hp_reply_field(reply, "socket", path, HP_JSON_STRING);
    hp_reply_message(reply, "detached: the server stops and %s is removed; the library stays "
                     "loaded, and 'hotpatch -p PID attach' starts it again", path);
}

const struct hp_command hp_core_commands[] = {
    {"help", NULL, 0, 1, cmd_help, "help [FAMILY]", "list the commands (of one family)", 0},
    {"version", NULL, 0, 0, cmd_version, "version",
     "print the agent and protocol versions and capabilities", 0},
    {"session", NULL, 0, 0, cmd_session, "session",
     "keep the connection open; every reply is then one JSON line", 0},
    {"quit", NULL, 0, 0, cmd_quit, "quit", "end the session and close the connection", 0},
    {"detach", NULL, 0, 0, cmd_detach, "detach",
     "stop serving and remove the socket; the library stays (attach starts it again)",
     HP_CMD_MUTATES},
    {0},
};
