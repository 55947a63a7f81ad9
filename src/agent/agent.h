/*
 * agent.h — what the agent's subsystems (src/agent/) share with each other and with the command
 * families above them (src/commands/). Not installed.
 *
 * One file per subsystem:
 *   registry.c   named variables, functions and loaded libraries, behind one lock
 *   value.c      type names, parsing and formatting of typed values
 *   reply.c      the reply builder and its two renderings (plain text, one JSON line)
 *   protocol.c   tokenizing a request line, dispatch through the command table, help
 *   policy.c     who may connect, read-only mode, the audit trail
 *   server.c     the socket, the poll loop, peer credentials, timeouts, framing
 *   agent.c      hotpatch_start/stop, the socket path, the process life cycle
 *   exec.c       the exec functions, wrapped so that exec leaves no socket file behind
 * The command families (src/commands/) fill the dispatch table; the agent reaches them only
 * through hp_command_families, never by including their header.
 *
 * Threads: the agent runs one thread (server.c) that reads requests and runs every command
 * handler. Program threads only call the public API, and the exec wrappers (exec.c). So
 * handlers never race each other; they race only with registration, which the registry lock
 * covers, and with an exec hiding the socket file, which the server's file lock covers.
 */
#ifndef HOTPATCH_AGENT_H
#define HOTPATCH_AGENT_H

#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/base.h"
#include "hotpatch.h"

/* Protocol limits (documented in docs/protocol.md). */
#define HP_LINE_MAX 4096          /* bytes in one request line, without the newline */
#define HP_MAX_WORDS 16           /* words in one request */
#define HP_NAME_MAX 127           /* bytes in a registered name */
#define HP_REPLY_MAX (1u << 20)   /* bytes in one rendered reply */
#define HP_ERROR_MAX 512          /* bytes in one error or message line */

struct hp_peer;

/* ---- policy.c -------------------------------------------------------------------------- */
/* Reads HOTPATCH_ALLOW_UIDS, HOTPATCH_READ_ONLY and HOTPATCH_AUDIT; call before the agent
 * thread starts (the agent thread is then the only reader). */
void hp_policy_load(void);
/* True when a peer with this uid is answered (root always is). */
bool hp_policy_allows(uid_t uid);
/* "root, uid 1000, ..." for refusals. */
void hp_policy_describe_allowed(char *out, size_t cap);
/* True when mutating commands are refused. */
bool hp_policy_read_only(void);
/* Records one mutating request, its peer and its outcome at the configured destination. */
void hp_audit(const struct hp_peer *peer, const char *request, bool ok, const char *outcome);

/* ---- value.c --------------------------------------------------------------------------- */
/* Protocol name of a type ("int", "string", ...). */
const char *hp_type_name(enum hotpatch_type type);
/* Parses a protocol type name (aliases accepted); returns 0 when unknown. */
enum hotpatch_type hp_type_from_name(const char *name);
/* The accepted type names, for error messages: "bool, int, uint, ...". */
const char *hp_type_names(void);
/* Size in bytes of a numeric or bool type; 0 for string. */
size_t hp_type_size(enum hotpatch_type type);

/* A scalar value of any numeric or bool type. */
union hp_scalar {
    bool b;
    int i;
    unsigned int u;
    long l;
    unsigned long ul;
    long long ll;
    unsigned long long ull;
    float f;
    double d;
};

/*
 * Parses `text` as a value of `type` into *out. On failure returns -1 and writes a one-line
 * reason naming the text and what is accepted (e.g. "'abc' is not an int: expected a whole
 * number from -2147483648 to 2147483647").
 */
int hp_parse_scalar(enum hotpatch_type type, const char *text, union hp_scalar *out,
                    char *why, size_t why_cap);
/* Formats a scalar for the protocol; returns the length written (always terminated). */
int hp_format_scalar(enum hotpatch_type type, const union hp_scalar *v, char *buf, size_t cap);
/* Atomic load and store of a scalar at addr, with the width of `type`. */
void hp_load_scalar(enum hotpatch_type type, const void *addr, union hp_scalar *out);
void hp_store_scalar(enum hotpatch_type type, void *addr, const union hp_scalar *v);

/* True when s is valid UTF-8 of len bytes; else *bad_offset is the first bad byte. */
bool hp_utf8_valid(const char *s, size_t len, size_t *bad_offset);
/* True when name is 1..HP_NAME_MAX bytes of [A-Za-z0-9_.:-]. */
bool hp_name_valid(const char *name);

/* ---- reply.c --------------------------------------------------------------------------- */
/*
 * A reply is built by a handler and rendered by the server in the form the request asked for.
 * It holds: ok or an error line; optionally one value; optionally named top-level fields;
 * optionally a list of items (records of fields); optionally a message; optionally a plain-text
 * override. Renderings:
 *   plain: "error: <error>" | the plain override | the value | a table of items | the message
 *          | "ok", always newline-terminated;
 *   JSON:  {"ok":true,"value":...,<fields>,"items":[{...}],"message":"...","text":"<plain>"}
 *          or {"ok":false,"error":"...","text":"error: ..."}, on one line.
 * A reply that grows past HP_REPLY_MAX turns into an error. All functions are no-ops after an
 * error has been set (the first error wins), so handlers need not check each call.
 */
enum hp_json_kind {
    HP_JSON_STRING,            /* text is shown as a JSON string */
    HP_JSON_NUMBER,            /* text is a JSON number */
    HP_JSON_BOOL,              /* text is true or false */
    HP_JSON_NULL,              /* shown as null */
    HP_JSON_RAW,               /* text is already a JSON value (an array, an object) */
};

struct hp_reply;
struct hp_reply *hp_reply_new(void);
void hp_reply_free(struct hp_reply *r);
bool hp_reply_ok(const struct hp_reply *r);
/* The error text (without "error: "), or "" when the reply is not an error. */
const char *hp_reply_error_text(const struct hp_reply *r);

void hp_reply_error(struct hp_reply *r, const char *fmt, ...) HP_PRINTF(2, 3);
void hp_reply_message(struct hp_reply *r, const char *fmt, ...) HP_PRINTF(2, 3);
void hp_reply_plain(struct hp_reply *r, const char *fmt, ...) HP_PRINTF(2, 3);
void hp_reply_plain_append(struct hp_reply *r, const char *fmt, ...) HP_PRINTF(2, 3);
/* The reply's value: text is the plain form, kind says how it appears in JSON. */
void hp_reply_value(struct hp_reply *r, const char *text, enum hp_json_kind kind);
/* Marks the reply as a list (JSON "items" even when empty); empty_text is its plain form
 * when it has no items. */
void hp_reply_list(struct hp_reply *r, const char *empty_text);
/* A top-level JSON field (not shown in plain unless the handler writes plain text). */
void hp_reply_field(struct hp_reply *r, const char *key, const char *text, enum hp_json_kind kind);
/* Starts a new item; the following hp_reply_item_* calls add fields to it. */
void hp_reply_item_begin(struct hp_reply *r);
void hp_reply_item(struct hp_reply *r, const char *key, const char *text, enum hp_json_kind kind);
void hp_reply_item_str(struct hp_reply *r, const char *key, const char *text);
void hp_reply_item_int(struct hp_reply *r, const char *key, long long v);
void hp_reply_item_bool(struct hp_reply *r, const char *key, bool v);
void hp_reply_item_ptr(struct hp_reply *r, const char *key, const void *p);

/* Renders into a malloc'd, NUL-terminated buffer; *len gets its length. NULL on ENOMEM. */
char *hp_reply_render(struct hp_reply *r, bool json, size_t *len);

/* ---- protocol.c ------------------------------------------------------------------------ */
struct hp_peer {
    uid_t uid;
    gid_t gid;
    pid_t pid;
};

/* How the server should treat the connection after a request. */
enum hp_after { HP_AFTER_CLOSE, HP_AFTER_KEEP };

struct hp_request {
    int argc;                    /* words after the family and verb */
    char **argv;
    const struct hp_peer *peer;  /* who sent it (NULL in unit tests) */
    bool in_session;             /* the connection is a persistent session */
    enum hp_after *after;        /* session/quit change what happens to the connection */
};

typedef void (*hp_handler)(const struct hp_request *req, struct hp_reply *reply);

enum {
    HP_CMD_MUTATES = 1u << 0,    /* changes the process: logged with the peer's identity */
};

/*
 * One row of the dispatch table. A command is `family verb args...`, or `family args...` when
 * verb is NULL. The same rows drive dispatch, `help` and the command list in the docs.
 */
struct hp_command {
    const char *family;
    const char *verb;
    int min_args, max_args;
    hp_handler handler;
    const char *usage;    /* "var get [TYPE] NAME" */
    const char *summary;  /* one line */
    unsigned flags;
};

/*
 * The dispatch table: every command family's rows (each terminated by a row with family ==
 * NULL), in the order help lists them, ended by NULL. Defined by the command families
 * (commands/table.c), which the agent reaches only through this pointer table.
 */
extern const struct hp_command *const hp_command_families[];

/*
 * Splits a request line into at most HP_MAX_WORDS words, in place. Words are separated by
 * spaces or tabs; "double" and 'single' quotes group words; inside double quotes \" and \\
 * escape. Returns the number of words, or -1 with a reason in why.
 */
int hp_tokenize(char *line, char **words, int max_words, char *why, size_t why_cap);

/*
 * Handles one request line (without its newline; may contain any bytes). Fills `reply`.
 * *json is set when the reply should be rendered as JSON. When `in_session` is false and the
 * request is `session`, *after becomes HP_AFTER_KEEP. A `quit` in a session closes it.
 */
void hp_handle_line(const char *line, size_t len, const struct hp_peer *peer, bool in_session,
                    struct hp_reply *reply, bool *json, enum hp_after *after);

/* Iterates over every command row of every family; used by help and version. */
typedef void (*hp_command_visitor)(const struct hp_command *cmd, void *ctx);
void hp_for_each_command(hp_command_visitor visit, void *ctx);

/* ---- registry.c ------------------------------------------------------------------------ */
/*
 * The registry: variables, functions and loaded libraries by name. One mutex (registry_lock)
 * guards all three tables and is held while a variable is read or written by the agent, so a
 * set never interleaves with a registration, an unregistration or hotpatch_get_string().
 */
struct hp_variable_view {
    const char *name;
    enum hotpatch_type type;
    char value[HP_LINE_MAX];     /* formatted current value */
    size_t capacity;             /* strings: buffer capacity (0 for accessors and numerics) */
    bool has_validator;
};
typedef void (*hp_variable_visitor)(const struct hp_variable_view *v, void *ctx);
/* Visits every variable in name order, under the lock. */
void hp_registry_each_variable(hp_variable_visitor visit, void *ctx);
/*
 * Reads one variable: 0 and *view filled; -ENOENT unknown name; -EPROTOTYPE when want_type is
 * non-zero and differs (view->type then says the real type).
 */
int hp_registry_get_variable(const char *name, enum hotpatch_type want_type,
                             struct hp_variable_view *view);
/*
 * Sets one variable from text: parses, validates, stores, notifies. Returns 0, the variable's
 * type and the formatted old and new values; or a negative errno with a one-line reason in why and nothing changed.
 */
int hp_registry_set_variable(const char *name, enum hotpatch_type want_type, const char *text,
                             enum hotpatch_type *type, char *old_value, char *new_value,
                             size_t value_cap, char *why, size_t why_cap);

struct hp_function_view {
    const char *name;
    void *address;
};
typedef void (*hp_function_visitor)(const struct hp_function_view *f, void *ctx);
void hp_registry_each_function(hp_function_visitor visit, void *ctx);
/* Address of the function registered as name, or NULL. */
void *hp_registry_find_function(const char *name);

/* A library loaded through `lib load`. */
struct hp_library_view {
    const char *name;
    const char *path;
    void *handle;
    uintptr_t base;              /* load address (link_map l_addr) */
};
typedef void (*hp_library_visitor)(const struct hp_library_view *l, void *ctx);
void hp_registry_each_library(hp_library_visitor visit, void *ctx);
/* Adds a loaded library; -EEXIST when the name is taken, -ENOMEM. */
int hp_registry_add_library(const char *name, const char *path, void *handle, uintptr_t base);
/* Finds a library by name; copies its view (strings valid until it is removed). 0 or -ENOENT. */
int hp_registry_find_library(const char *name, struct hp_library_view *out);
/* Removes a library entry by name and returns its handle through *handle. 0 or -ENOENT. */
int hp_registry_remove_library(const char *name, void **handle);

/* ---- server.c / agent.c ---------------------------------------------------------------- */
struct hp_server;
struct hp_server_config {
    const char *socket_path;
    int idle_timeout_ms;         /* a connection with no complete request for this long closes */
    int session_timeout_ms;      /* idle limit between requests in a session */
    int write_timeout_ms;        /* a reply not taken by the client within this long is dropped */
    int max_clients;
    int start_delay_ms;          /* > 0: the thread waits this long, then creates the socket
                                  * (errors are then logged, not returned) */
};
/* Creates the socket and starts the thread. 0 or negative errno (and a log line). */
int hp_server_start(const struct hp_server_config *cfg, struct hp_server **out);
/* Wakes the thread, joins it, closes connections, unlinks the socket if still ours. */
void hp_server_stop(struct hp_server *s);
/* True when called on the server's own thread. */
bool hp_server_is_current_thread(const struct hp_server *s);
/* The path the server listens on. */
const char *hp_server_path(const struct hp_server *s);
/* In a forked child: closes the parent server's descriptors without touching its socket file. */
void hp_server_abandon(struct hp_server *s);
/* Before an exec: removes the socket file (if still ours) and keeps it away. Any thread. */
void hp_server_hide_for_exec(struct hp_server *s);
/* The signal mask of the thread that started the server (its own thread blocks signals). */
const sigset_t *hp_server_program_mask(const struct hp_server *s);
/* After a failed exec: the server thread listens on the path again, within a moment. */
void hp_server_unhide_after_exec(struct hp_server *s);

/* Around an exec (called by exec.c; agent.c owns the state). before fills `st`; pass it to
 * after_failed_exec when the exec returns. Neither allocates; a vfork child (other pid, the
 * parent's memory) and a process without an agent are left alone. */
struct hp_exec_state {
    bool counted;                /* this exec is counted among those in flight */
    bool mask_changed;           /* exec from the agent thread: `mask` is its own to restore */
    sigset_t mask;
};
void hp_agent_before_exec(struct hp_exec_state *st);
void hp_agent_after_failed_exec(const struct hp_exec_state *st);

/* ---- exec.c ---------------------------------------------------------------------------- */
/* Looks up the next definitions of the exec functions (libc's) now, outside any vfork child. */
void hp_exec_resolve(void);

#endif /* HOTPATCH_AGENT_H */
