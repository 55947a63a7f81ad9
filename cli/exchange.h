/*
 * exchange.h — one request to one agent: forming the request line, reaching and verifying the
 * agent, sending (with the file of `lib load` or `patch apply` attached), reading the reply
 * and printing it.
 *
 * The same code serves one target in the client's own process and each target of many in a
 * child process of its own (fleet.c), so what is printed for a target is the same either way.
 *
 * Exit status of a run: 0 the agent did it; 1 the agent refused (the reason is on stderr);
 * 2 the agent could not be reached or answered nonsense.
 */
#ifndef HOTPATCH_CLI_EXCHANGE_H
#define HOTPATCH_CLI_EXCHANGE_H

#include <limits.h>
#include <stdbool.h>

#include "verify.h"

#define EXIT_REFUSED 1
#define EXIT_TROUBLE 2
#define LINE_LIMIT 4096             /* the agent's request limit (docs/protocol.md) */

/* The request line and, for `lib load` and `patch apply`, the file to pass with it. */
struct request {
    char line[LINE_LIMIT + 1];
    bool json_word;                 /* the words began with "json" (the same as --json) */
    bool passes_library;
    char library_path[PATH_MAX];    /* the absolute path in the line, when passes_library */
};

/* How to reach the agent and print its reply. */
struct exchange_options {
    long pid;                       /* 0 when socket_path is used */
    const char *socket_path;
    bool json;
    bool raw;                       /* print the agent's text unescaped, even to a terminal */
    bool reply_only;                /* print the reply line as it came (ps reads it) */
    struct peer_trust trust;        /* with -s: a server uid accepted besides root and us */
    int timeout_ms;
};

/* Forms the request from the command words (a leading "json" is taken off and noted).
 * 0, or 2 after saying why. */
int build_request(int argc, char **argv, struct request *req);

/* Opens the file `lib load` or `patch apply` passes. 0, or 2 after saying why. */
int open_library(const char *path, int *fd_out);

/* Whether the client's own stdout and stderr are terminals: plain text printed there is
 * escaped (unless --raw). Noted once at start, before any output is redirected. */
void note_terminals(void);

/* Sends req to the agent and prints the reply: the text (stdout if done, stderr if refused)
 * or, with json, the JSON line; a target named by pid gets a "pid" member, and with json a
 * target that cannot be reached prints {"ok":false,"reached":false,"error":...,"pid":PID}.
 * Returns the exit status. */
int exchange(const struct exchange_options *o, const struct request *req, int library_fd);

#endif
