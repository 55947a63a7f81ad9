/*
 * protocol.c — from one request line to one reply.
 *
 * The server hands over raw bytes; this file decides whether they are an acceptable request
 * (length, UTF-8, no control characters), splits them into words (with quoting, so values may
 * hold spaces), strips the `json` prefix, and finds the command in the dispatch table. The
 * table is the union of each command family's rows (commands/table.c): the same rows serve dispatch,
 * argument-count checks, `help` and the command list in docs/protocol.md, so adding a command
 * is one row and one handler. Every refusal is one line that says what was wrong and what is
 * accepted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

void hp_for_each_command(hp_command_visitor visit, void *ctx)
{
    for (size_t f = 0; hp_command_families[f]; f++)
        for (const struct hp_command *c = hp_command_families[f]; c->family; c++)
            visit(c, ctx);
}

/* ---- tokenizing ---------------------------------------------------------------------------- */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

int hp_tokenize(char *line, char **words, int max_words, char *why, size_t why_cap)
{
    int count = 0;
    char *read = line, *write = line;
    for (;;) {
        while (is_blank(*read))
            read++;
        if (*read == '\0')
            return count;
        if (count == max_words) {
            snprintf(why, why_cap, "too many words in the request (at most %d)", max_words);
            return -1;
        }
        words[count++] = write;
        while (*read && !is_blank(*read)) {
            char quote = *read;
            if (quote != '"' && quote != '\'') {
                *write++ = *read++;
                continue;
            }
            read++;
            while (*read && *read != quote) {
                if (quote == '"' && *read == '\\' && (read[1] == '"' || read[1] == '\\'))
                    read++;
                *write++ = *read++;
            }
            if (*read != quote) {
                snprintf(why, why_cap, "unterminated %c quote in the request", quote);
                return -1;
            }
            read++;
        }
        bool at_end = *read == '\0';
        *write++ = '\0';
        if (at_end)
            return count;
        read++;
    }
}

/* ---- checking the raw line ----------------------------------------------------------------- */

/* Refuses what no command accepts: NUL, control characters, invalid UTF-8. */
static bool line_acceptable(const char *line, size_t len, struct hp_reply *reply)
{
    size_t bad;
    if (!hp_utf8_valid(line, len, &bad)) {
        hp_reply_error(reply, "request is not valid UTF-8 (byte 0x%02x at offset %zu); send text",
                       (unsigned char)line[bad], bad);
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            hp_reply_error(reply, "request contains control character 0x%02x at offset %zu; "
                           "send one line of text", c, i);
            return false;
        }
    }
    return true;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

static bool family_exists(const char *family)
{
    for (size_t f = 0; hp_command_families[f]; f++)
        for (const struct hp_command *c = hp_command_families[f]; c->family; c++)
            if (strcmp(c->family, family) == 0)
                return true;
    return false;
}

/* "var, lib, help, version, ..." or, for a family, its verbs. */
static void list_words(const char *family, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t f = 0; hp_command_families[f]; f++) {
        for (const struct hp_command *c = hp_command_families[f]; c->family; c++) {
            const char *word = family ? c->verb : c->family;
            if (!word || (family && strcmp(c->family, family) != 0))
                continue;
            if (!family && c != hp_command_families[f] && strcmp(c[-1].family, c->family) == 0)
                continue;
            int n = snprintf(out + used, cap - used, "%s%s", used ? ", " : "", word);
            if (n < 0 || (size_t)n >= cap - used)
                return;
            used += (size_t)n;
        }
    }
}

static const struct hp_command *find_command(char **words, int count, struct hp_reply *reply,
                                             int *consumed)
{
    char accepted[512];
    if (!family_exists(words[0])) {
        list_words(NULL, accepted, sizeof accepted);
        hp_reply_error(reply, "unknown command '%.64s'; commands: %s", words[0],
                       accepted);
        return NULL;
    }
    for (size_t f = 0; hp_command_families[f]; f++) {
        for (const struct hp_command *c = hp_command_families[f]; c->family; c++) {
            if (strcmp(c->family, words[0]) != 0)
                continue;
            if (!c->verb) {
                *consumed = 1;
                return c;
            }
            if (count > 1 && strcmp(c->verb, words[1]) == 0) {
                *consumed = 2;
                return c;
            }
        }
    }
    list_words(words[0], accepted, sizeof accepted);
    if (count < 2)
        hp_reply_error(reply, "'%s' needs a subcommand: %s (see 'help %s')", words[0], accepted,
                       words[0]);
    else
        hp_reply_error(reply, "unknown %s subcommand '%.64s'; accepted: %s", words[0], words[1],
                       accepted);
    return NULL;
}

static bool argument_count_ok(const struct hp_command *c, int argc, struct hp_reply *reply)
{
    if (argc < c->min_args) {
        hp_reply_error(reply, "missing argument; usage: %s", c->usage);
        return false;
    }
    if (argc > c->max_args) {
        hp_reply_error(reply, "too many arguments (%d extra); usage: %s%s", argc - c->max_args,
                       c->usage, strchr(c->usage, ' ') ? " (quote a value that has spaces)" : "");
        return false;
    }
    return true;
}

/* A descriptor sent with the request (SCM_RIGHTS) is for the commands that take one. */
static bool descriptor_acceptable(const struct hp_command *c, int fd, struct hp_reply *reply)
{
    if (fd < 0 || (c->flags & HP_CMD_TAKES_FD))
        return true;
    hp_reply_error(reply, "'%s%s%s' takes no file descriptor (only 'lib load' and 'patch apply' do); send the "
                   "request without one", c->family, c->verb ? " " : "", c->verb ? c->verb : "");
    return false;
}

/* What a change was made to, for history and diff: "var NAME", "flag NAME" (gflags and glog
 * set the same flags), "lib NAME", "func NAME"; "" when the reply does not name it. */
static void describe_target(const struct hp_command *c, const struct hp_reply *reply,
                            char *out, size_t cap)
{
    const char *name = hp_reply_field_text(reply, "name");
    if (!name)
        name = hp_reply_field_text(reply, "function");
    bool flag = strcmp(c->family, "gflags") == 0 || strcmp(c->family, "glog") == 0;
    if (name)
        snprintf(out, cap, "%s %s", flag ? "flag" : c->family, name);
    else
        out[0] = '\0';
}

/* Every request that may change the process is audited before it runs and after, refused or
 * not, so even a command that takes the process down leaves its record; then it goes into
 * the history. */
static void run_command(const struct hp_command *c, const struct hp_request *req,
                        const char *request, struct hp_reply *reply)
{
    bool mutates = (c->flags & HP_CMD_MUTATES) != 0;
    if (mutates)
        hp_audit(HP_AUDIT_BEGIN, req->peer, request, strlen(request), true, NULL);
    if (mutates && hp_policy_read_only())
        hp_reply_error(reply, "the agent is read-only (HOTPATCH_READ_ONLY is set); '%s %s' would "
                       "change the process", c->family, c->verb ? c->verb : "");
    else if (descriptor_acceptable(c, req->fd, reply))
        c->handler(req, reply);
    if (!mutates)
        return;
    hp_audit(HP_AUDIT_END, req->peer, request, strlen(request), hp_reply_ok(reply),
             hp_reply_error_text(reply));
    char target[HP_NAME_MAX + 16];
    describe_target(c, reply, target, sizeof target);
    hp_history_record(req->peer, request, target, reply);
}

static void handle_words(char **words, int count, const struct hp_line *in, const char *request,
                         struct hp_reply *reply, enum hp_after *after)
{
    int consumed = 0;
    const struct hp_command *c = find_command(words, count, reply, &consumed);
    if (!c)
        return;
    struct hp_request req = {count - consumed, words + consumed, in->peer, in->in_session, after,
                             in->fd};
    if (!argument_count_ok(c, req.argc, reply))
        return;
    run_command(c, &req, request, reply);
}

void hp_handle_line(const char *line, size_t len, const struct hp_peer *peer, bool in_session,
                    struct hp_reply *reply, bool *json, enum hp_after *after)
{
    struct hp_line in = {line, len, peer, -1, in_session};
    hp_handle_request(&in, reply, json, after);
}

void hp_handle_request(const struct hp_line *in, struct hp_reply *reply, bool *json,
                       enum hp_after *after)
{
    const char *line = in->line;
    size_t len = in->len;
    bool in_session = in->in_session;
    *json = in_session;
    *after = in_session ? HP_AFTER_KEEP : HP_AFTER_CLOSE;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len > HP_LINE_MAX) {
        hp_reply_error(reply, "request longer than %d bytes", HP_LINE_MAX);
        return;
    }
    /* A JSON-looking client gets JSON errors even when the line itself is refused. */
    if (len >= 5 && memcmp(line, "json", 4) == 0 && (line[4] == ' ' || line[4] == '\t'))
        *json = true;
    if (!line_acceptable(line, len, reply))
        return;

    char text[HP_LINE_MAX + 1], copy[HP_LINE_MAX + 1];
    memcpy(text, line, len);
    text[len] = '\0';
    memcpy(copy, text, len + 1);

    char *words[HP_MAX_WORDS + 1];
    char why[HP_ERROR_MAX];
    int count = hp_tokenize(text, words, HP_MAX_WORDS + 1, why, sizeof why);
    if (count < 0) {
        hp_reply_error(reply, "%s", why);
        return;
    }
    if (count > 0 && strcmp(words[0], "json") == 0) {
        *json = true;
        if (count == 1) {
            hp_reply_error(reply, "'json' needs a command after it, e.g. 'json var list'");
            return;
        }
        memmove(words, words + 1, (size_t)(count - 1) * sizeof *words);
        count--;
    }
    if (count == 0) {
        hp_reply_error(reply, "empty request; send 'help' for the commands");
        return;
    }
    if (count > HP_MAX_WORDS) {
        hp_reply_error(reply, "too many words in the request (at most %d)", HP_MAX_WORDS);
        return;
    }
    handle_words(words, count, in, copy, reply, after);
}
