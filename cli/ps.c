/*
 * ps.c — `hotpatch ps`: finding every agent the caller may reach and showing what each says of
 * itself. See ps.h.
 *
 * The table's cells that come from a process (its command line, a socket path it chose) are
 * escaped as the reply text is on a terminal (terminal.c), always: a cell is one line and can
 * never drive the terminal. The command line is cut to COMMAND_SHOWN bytes in the table (at
 * a character boundary); the JSON line has it whole (up to what /proc gives, 4 KiB).
 */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exchange.h"
#include "fleet.h"
#include "json.h"
#include "message.h"
#include "procfs.h"
#include "ps.h"
#include "terminal.h"
#include "verify.h"

#define COMMAND_SHOWN 120
#define COLUMNS 9

/* ---- finding the agents ------------------------------------------------------------------------- */

struct agent {
    struct process_identity who;
    struct agent_socket socket;
    char command[PROC_CMDLINE_LIMIT];
    size_t command_len;
};

struct agents {
    struct agent *items;
    size_t count, cap;
    bool full;
};

static bool add_agent(struct agents *list, const struct agent *a)
{
    if (list->count >= TARGETS_LIMIT)
        return false;
    if (list->count == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 16;
        struct agent *grown = realloc(list->items, cap * sizeof *grown);
        if (!grown)
            return false;
        list->items = grown;
        list->cap = cap;
    }
    list->items[list->count++] = *a;
    return true;
}

static bool consider_process(long pid, void *context)
{
    struct agents *list = context;
    struct agent *a = malloc(sizeof *a);
    const char *unreadable;
    if (!a)
        return false;
    if (pid != (long)getpid() && identify_quietly(pid, &a->who) == 0 &&
        locate_agent_socket(&a->who, &a->socket, &unreadable) == 0) {
        if (proc_cmdline(pid, a->command, sizeof a->command, &a->command_len) != 0)
            a->command_len = 0;
        list->full = !add_agent(list, a);
    }
    free(a);
    return !list->full;
}

static bool find_agents(struct agents *list)
{
    *list = (struct agents){0};
    int err = proc_each_pid(consider_process, list);
    if (err)
        say("cannot read /proc: %s", strerror(err));
    else if (list->full)
        say("too many processes: at most %d", TARGETS_LIMIT);
    return !err && !list->full;
}

bool add_agent_processes(struct pid_list *out)
{
    struct agents list;
    bool ok = find_agents(&list);
    for (size_t i = 0; ok && i < list.count; i++)
        ok = pid_list_add(out, list.items[i].who.pid);
    free(list.items);
    return ok;
}

/* ---- asking each ---------------------------------------------------------------------------------- */

/* One line of the listing. */
struct row {
    char *cells[COLUMNS];        /* PID USER STARTED UPTIME CHANGES PATCHED VERSION SOCKET COMMAND */
    char *json;                  /* the JSON line, without its newline */
};

struct listing {
    struct agents agents;
    struct row *rows;
    struct request status;
    int timeout_ms;
    int exit_status;
};

static int ask_status(size_t index, void *context)
{
    struct listing *l = context;
    struct exchange_options o = {.pid = l->agents.items[index].who.pid, .reply_only = true,
                                 .timeout_ms = l->timeout_ms};
    return exchange(&o, &l->status, -1);
}

static char *text_of(const char *fmt, long long v)
{
    char buf[64];
    snprintf(buf, sizeof buf, fmt, v);
    return strdup(buf);
}

static char *uptime_text(long long s)
{
    char buf[64];
    if (s < 60)
        snprintf(buf, sizeof buf, "%llds", s);
    else if (s < 3600)
        snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, s % 3600 / 60);
    else
        snprintf(buf, sizeof buf, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
    return strdup(buf);
}

static void user_name(uid_t uid, char *out, size_t cap)
{
    struct passwd *pw = getpwuid(uid);
    if (pw && pw->pw_name[0])
        snprintf(out, cap, "%s", pw->pw_name);
    else
        snprintf(out, cap, "%lu", (unsigned long)uid);
}

/* The command line as the table shows it: cut to COMMAND_SHOWN bytes, not inside a UTF-8
 * character, then escaped. */
static char *command_cell(const struct agent *a)
{
    size_t len = a->command_len;
    if (len > COMMAND_SHOWN) {
        len = COMMAND_SHOWN;
        while (len > 0 && ((unsigned char)a->command[len] & 0xC0) == 0x80)
            len--;
    }
    return escape_cell(a->command, len);
}

/* What status said, as numbers and strings; false when the reply lacks them. */
struct status_fields {
    char *version, *started;
    long long uptime_s, changes, patched;
};

static bool read_status(const char *reply, struct status_fields *f)
{
    *f = (struct status_fields){0};
    bool ok = false;
    if (json_member_bool(reply, "ok", &ok) != 0 || !ok ||
        json_member_string(reply, "version", &f->version) != 0 ||
        json_member_string(reply, "started", &f->started) != 0 ||
        json_member_integer(reply, "uptime_s", &f->uptime_s) != 0 ||
        json_member_integer(reply, "changes", &f->changes) != 0 ||
        json_member_integer(reply, "patched_functions", &f->patched) != 0) {
        free(f->version);
        free(f->started);
        return false;
    }
    return true;
}

/* Why an agent could not be listed: the agent's error, or the client's first message. */
static char *failure_text(int status, const char *out, const char *err)
{
    char *error = NULL;
    if (status != 2 && (json_member_string(out, "error", &error) == 0 ||
                        json_member_string(out, "text", &error) == 0)) {
        error[strcspn(error, "\n")] = '\0';
        return error;
    }
    if (strncmp(err, "hotpatch: ", 10) == 0)
        err += 10;
    size_t n = strcspn(err, "\n");
    error = malloc(n + 1);
    if (error) {
        memcpy(error, err, n);
        error[n] = '\0';
    }
    return error ? error : strdup("");
}

/* The JSON line of one agent: its process, then what its status said or why it did not. */
static char *json_line(const struct agent *a, const char *user, const struct status_fields *f,
                       const char *error)
{
    char *line = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&line, &size);
    if (!out)
        return NULL;
    fprintf(out, "{\"pid\":%ld,\"ns_pid\":%ld,\"user\":", a->who.pid, a->who.ns_pid);
    json_write_string(out, user, strlen(user));
    fprintf(out, ",\"uid\":%lu,\"command\":", (unsigned long)a->who.real_uid);
    json_write_string(out, a->command, a->command_len);
    fputs(",\"socket\":", out);
    json_write_string(out, a->socket.path, strlen(a->socket.path));
    if (f) {
        fputs(",\"ok\":true,\"version\":", out);
        json_write_string(out, f->version, strlen(f->version));
        fputs(",\"started\":", out);
        json_write_string(out, f->started, strlen(f->started));
        fprintf(out, ",\"uptime_s\":%lld,\"changes\":%lld,\"patched_functions\":%lld}",
                f->uptime_s, f->changes, f->patched);
    } else {
        fputs(",\"ok\":false,\"error\":", out);
        json_write_string(out, error, strlen(error));
        fputc('}', out);
    }
    fclose(out);
    return line;
}

static void got_status(size_t index, int status, const char *out, size_t out_len,
                       const char *err, size_t err_len, void *context)
{
    (void)out_len;
    struct listing *l = context;
    const struct agent *a = &l->agents.items[index];
    struct row *row = &l->rows[index];
    char user[256];
    user_name(a->who.real_uid, user, sizeof user);
    struct status_fields f;
    bool answered = status == 0 && read_status(out, &f);
    row->cells[0] = text_of("%lld", a->who.pid);
    row->cells[1] = escape_cell(user, strlen(user));
    row->cells[7] = escape_cell(a->socket.path, strlen(a->socket.path));
    row->cells[8] = command_cell(a);
    if (answered) {
        row->cells[2] = escape_cell(f.started, strlen(f.started));
        row->cells[3] = uptime_text(f.uptime_s);
        row->cells[4] = text_of("%lld", f.changes);
        row->cells[5] = text_of("%lld", f.patched);
        row->cells[6] = escape_cell(f.version, strlen(f.version));
        row->json = json_line(a, user, &f, NULL);
        free(f.version);
        free(f.started);
        return;
    }
    for (int c = 2; c <= 6; c++)
        row->cells[c] = strdup("-");
    char *error = failure_text(status, out, err);
    row->json = json_line(a, user, NULL, error ? error : "");
    if (status == 2)
        write_prefixed(stderr, a->who.pid, err, err_len);
    else
        fprintf(stderr, "%ld: error: %s\n", a->who.pid, error ? error : "");
    free(error);
    l->exit_status = 2;
}

/* ---- printing ----------------------------------------------------------------------------------- */

static const char *const headers[COLUMNS] = {"PID", "USER", "STARTED", "UPTIME", "CHANGES",
                                             "PATCHED", "VERSION", "SOCKET", "COMMAND"};

static const char *cell(const struct row *r, int c)
{
    return r->cells[c] ? r->cells[c] : "?";
}

static void print_cells(const char *const *cells, const size_t *width)
{
    for (int c = 0; c < COLUMNS; c++) {
        if (c == COLUMNS - 1)
            printf("%s\n", cells[c]);
        else
            printf("%-*s  ", (int)width[c], cells[c]);
    }
}

static void print_table(const struct listing *l)
{
    size_t width[COLUMNS];
    for (int c = 0; c < COLUMNS; c++) {
        width[c] = strlen(headers[c]);
        for (size_t i = 0; i < l->agents.count; i++)
            if (strlen(cell(&l->rows[i], c)) > width[c])
                width[c] = strlen(cell(&l->rows[i], c));
    }
    print_cells(headers, width);
    for (size_t i = 0; i < l->agents.count; i++) {
        const char *cells[COLUMNS];
        for (int c = 0; c < COLUMNS; c++)
            cells[c] = cell(&l->rows[i], c);
        print_cells(cells, width);
    }
}

static void free_rows(struct listing *l)
{
    for (size_t i = 0; i < l->agents.count; i++) {
        for (int c = 0; c < COLUMNS; c++)
            free(l->rows[i].cells[c]);
        free(l->rows[i].json);
    }
    free(l->rows);
}

int run_ps(bool json, int jobs, int timeout_ms)
{
    struct listing l = {.timeout_ms = timeout_ms};
    char *words[] = {"status"};
    if (build_request(1, words, &l.status) != 0 || !find_agents(&l.agents))
        return EXIT_TROUBLE;
    l.rows = calloc(l.agents.count ? l.agents.count : 1, sizeof *l.rows);
    bool ran = l.rows && run_parallel(l.agents.count, jobs, 3 * timeout_ms + 2000, ask_status,
                                      got_status, &l);
    if (ran && json) {
        for (size_t i = 0; i < l.agents.count; i++)
            printf("%s\n", l.rows[i].json ? l.rows[i].json : "{}");
    } else if (ran) {
        print_table(&l);
    }
    if (l.rows)
        free_rows(&l);
    free(l.agents.items);
    return ran ? l.exit_status : EXIT_TROUBLE;
}
