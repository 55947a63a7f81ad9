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
/* Reads HOTPATCH_ALLOW_UIDS, HOTPATCH_ALLOW_GROUP, HOTPATCH_READ_ONLY and HOTPATCH_AUDIT; call
 * before the agent
 * thread starts (the agent thread is then the only reader). */
void hp_policy_load(void);
/* True when the peer is answered: root, an allowed uid, or a member of the allowed group (its
 * gid or one of its supplementary `groups`, from SO_PEERGROUPS). */
bool hp_policy_allows(const struct hp_peer *peer, const gid_t *groups, size_t n_groups);
struct hp_socket_access;
/* Who the socket file must let connect, per the policy (valid until the next load). */
void hp_policy_socket_access(struct hp_socket_access *out);
/* "root, uid 1000, ..." for refusals. */
void hp_policy_describe_allowed(char *out, size_t cap);
/* True when mutating commands are refused. */
bool hp_policy_read_only(void);
/*
 * The audit trail: one JSON object per line at the configured destination, written with one
 * write(2) each. A mutating request gets a "begin" record before its handler runs (so a crash
 * still leaves its cause) and an "end" record with its result and error after; a connection or
 * request refused by policy or limits gets one "refused" record. `request` is len bytes, kept
 * whole up to 4096 bytes (else cut, with "truncated":true and its real size). Agent thread.
 */
enum hp_audit_phase { HP_AUDIT_BEGIN, HP_AUDIT_END, HP_AUDIT_REFUSED };
void hp_audit(enum hp_audit_phase phase, const struct hp_peer *peer, const char *request,
              size_t len, bool ok, const char *error);

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
    signed char sc;
    unsigned char uc;
    short s;
    unsigned short us;
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
/* The text of top-level field `key`, or NULL; the message, or NULL. */
const char *hp_reply_field_text(const struct hp_reply *r, const char *key);
const char *hp_reply_message_text(const struct hp_reply *r);

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

/* s[0..len) as a quoted JSON string (invalid UTF-8 as U+FFFD), malloc'd; NULL on ENOMEM. */
char *hp_json_quote(const char *s, size_t len);

/* Renders into a malloc'd, NUL-terminated buffer; *len gets its length. NULL on ENOMEM. */
char *hp_reply_render(struct hp_reply *r, bool json, size_t *len);

/* ---- protocol.c ------------------------------------------------------------------------ */
struct hp_peer {
    uid_t uid;
    gid_t gid;
    pid_t pid;
};

/* How the server should treat the connection after a request. */
enum hp_after { HP_AFTER_CLOSE, HP_AFTER_KEEP,
                HP_AFTER_DETACH };   /* `detach`: close, then stop serving and remove the socket */

struct hp_request {
    int argc;                    /* words after the family and verb */
    char **argv;
    const struct hp_peer *peer;  /* who sent it (NULL in unit tests) */
    bool in_session;             /* the connection is a persistent session */
    enum hp_after *after;        /* session/quit change what happens to the connection */
    int fd;                      /* a descriptor sent with the request (SCM_RIGHTS), or -1; the
                                  * server closes it after the handler (dup it to keep it) */
};

typedef void (*hp_handler)(const struct hp_request *req, struct hp_reply *reply);

enum {
    HP_CMD_MUTATES = 1u << 0,    /* changes the process: audited with the peer's identity */
    HP_CMD_TAKES_FD = 1u << 1,   /* accepts a descriptor sent with the request */
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

/* A request line as the server received it, with the descriptor that came with it. */
struct hp_line {
    const char *line;
    size_t len;
    const struct hp_peer *peer;
    int fd;                      /* -1 when none; owned by the caller */
    bool in_session;
};
/* hp_handle_line for a line that may carry a descriptor (only commands marked
 * HP_CMD_TAKES_FD accept one; others are refused). */
void hp_handle_request(const struct hp_line *in, struct hp_reply *reply, bool *json,
                       enum hp_after *after);

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
    const char *first;           /* its value when the agent first saw it, or NULL */
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

/* A descriptor the agent keeps open, with the identity of what it was opened on: the program
 * may close or reuse any descriptor, so one is closed only while it still names that file. */
struct hp_held_file {
    int fd;                      /* -1 when none */
    dev_t dev;
    ino_t ino;
};

/* A library loaded through `lib load`. */
struct hp_library_view {
    const char *name;
    const char *path;
    void *handle;
    uintptr_t base;              /* load address (link_map l_addr) */
    struct hp_held_file file;    /* the file it was loaded from (/proc/self/fd/N), or fd -1 */
};
typedef void (*hp_library_visitor)(const struct hp_library_view *l, void *ctx);
void hp_registry_each_library(hp_library_visitor visit, void *ctx);
/* Adds a loaded library; -EEXIST when the name is taken, -ENOMEM. */
int hp_registry_add_library(const char *name, const char *path, void *handle, uintptr_t base,
                            const struct hp_held_file *file);
/* How many variables, functions and libraries are registered now. */
struct hp_registry_counts {
    size_t variables, functions, libraries;
};
void hp_registry_counts(struct hp_registry_counts *out);
/* How many descriptors the loaded libraries hold (for the agent's descriptor budget). */
size_t hp_registry_held_files(void);
/* Finds a library by name; copies its view (strings valid until it is removed). 0 or -ENOENT. */
int hp_registry_find_library(const char *name, struct hp_library_view *out);
/* Removes a library entry by name and returns its handle (and held file, when file is not
 * NULL). 0 or -ENOENT. */
int hp_registry_remove_library(const char *name, void **handle, struct hp_held_file *file);

/* ---- history.c ------------------------------------------------------------------------ */
/* One change made through the agent (strings valid during the visit). */
struct hp_change {
    unsigned long long sequence;     /* 1 for the first change since start */
    long long time_ms;               /* wall clock, milliseconds since the epoch */
    uid_t uid;                       /* the peer's */
    pid_t pid;
    bool ok;                         /* done (true) or refused */
    const char *request;             /* the request line */
    const char *target;              /* what it changed ("var user_name", "gflags v"), or "" */
    const char *old_value;           /* a set's old and new value, or NULL */
    const char *new_value;
    const char *outcome;             /* the message or the error */
};
typedef void (*hp_change_visitor)(const struct hp_change *c, void *ctx);
/* Records a mutating request after it ran (its reply says how). Keeps the last 1,000. Agent
 * thread only, like the readers below. */
void hp_history_record(const struct hp_peer *peer, const char *request, const char *target,
                       const struct hp_reply *reply);
/* Visits the kept changes, oldest first. */
void hp_history_each(hp_change_visitor visit, void *ctx);
/* Changes dropped to keep the last 1,000, and changes recorded since start. */
unsigned long long hp_history_dropped(void);
unsigned long long hp_history_recorded(void);

/* ---- trust.c -------------------------------------------------------------------------- */
/* What a walk does with a symbolic link on the way. */
enum hp_trust_links {
    HP_LINKS_NONE,               /* refuse every link (log and audit files) */
    HP_LINKS_TRUSTED,            /* follow links owned by root or the process's uid (libraries) */
};
/*
 * Opens the absolute `path` one component at a time (see trust.c): every directory on the way
 * owned by root or the process's euid and not writable by others without the sticky bit; links
 * per `links`, never one in /proc. `flags` and `mode` are open(2)'s for the file itself
 * (O_NOFOLLOW and O_CLOEXEC are added). Returns the descriptor, or -errno with a one-line
 * reason naming the component. Any thread; no state.
 */
int hp_trust_open(const char *path, int flags, mode_t mode, enum hp_trust_links links,
                  char *why, size_t why_cap);
/*
 * Checks an open descriptor: a regular file, owned by root or the process's euid (exactly the
 * euid when owner_must_be_self), not writable by group or others. 0, or -errno with a reason
 * that names the file as `shown`.
 */
int hp_trust_check_file(int fd, const char *shown, bool owner_must_be_self, char *why,
                        size_t why_cap);
/* Opens a log or audit file for appending: no link anywhere, created 0600, owned by the
 * process's euid and writable by no one else. The descriptor, or -errno with a reason. */
int hp_trust_open_append(const char *path, char *why, size_t why_cap);

/* ---- socket_file.c -------------------------------------------------------------------- */
/* Who besides the process's user (and root) may open the socket file. SO_PEERCRED still
 * decides who is answered; this only lets them connect. */
struct hp_socket_access {
    const uid_t *uids;           /* granted read/write by a POSIX ACL entry each */
    size_t n_uids;
    bool has_group;              /* the file belongs to gid, mode 0660 */
    gid_t gid;
};
/* Where a server listens, and the identities that make removal safe. */
struct hp_socket_file {
    char path[108];              /* sizeof sun_path */
    dev_t dev;                   /* the socket file this process created */
    ino_t ino;
    char dir[96];                /* the private fallback directory it is in, or "" */
    dev_t dir_dev;
    ino_t dir_ino;
};
/*
 * Binds fd (an unbound AF_UNIX socket) to `wanted`, replacing only a stale socket of this user;
 * when the name is taken by anything else, binds in a new private directory
 * /tmp/hotpatch-PID.XXXXXX/socket instead, and logs where. The file is 0600 from the start, then
 * opened to `access`. 0 with *out filled, or -errno (logged).
 */
int hp_socket_file_bind(int fd, const char *wanted, const struct hp_socket_access *access,
                        struct hp_socket_file *out);
/* True while f->path still names the socket file that was created. */
bool hp_socket_file_intact(const struct hp_socket_file *f);
/* Unlinks the socket file and removes the private directory, each only if it is still the one
 * that was created. */
void hp_socket_file_remove(const struct hp_socket_file *f);

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
/* True once a `detach` was served: its socket file is gone and its thread ends as soon as the
 * replies are sent; the server still has to be stopped (joined, at most a write timeout
 * later, and freed) with hp_server_stop. Any thread. */
bool hp_server_detached(const struct hp_server *s);
/* True when called on the server's own thread. */
bool hp_server_is_current_thread(const struct hp_server *s);
/* Copies the path the server listens on (the configured one, or its private fallback) into
 * buf; its length, or -ENAMETOOLONG. Any thread. */
int hp_server_path(struct hp_server *s, char *buf, size_t cap);
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

/* How the agent came into the process: "linked" (the default), "preload", "attached". Set by
 * the preload agent or the injector before hotpatch_start(). */
void hp_agent_set_origin(const char *how);
const char *hp_agent_origin(void);
/* Milliseconds since the agent started serving (0 when it is not running). Any thread. */
long long hp_agent_uptime_ms(void);

/* ---- exec.c ---------------------------------------------------------------------------- */
/* Looks up the next definitions of the exec functions (libc's) now, outside any vfork child. */
void hp_exec_resolve(void);

#endif /* HOTPATCH_AGENT_H */
