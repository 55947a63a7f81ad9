/*
 * hotpatch.c — the command-line client: options, and what they select.
 *
 *   hotpatch -p PID var get age            one process (or -s SOCKET instead of -p)
 *   hotpatch -p 12,34 --pgrep srv var list  several: in parallel, each line "PID: ..."
 *   hotpatch ps [--json] [--prune]          the processes that have an agent
 *   hotpatch help [FAMILY]                  the command list, without an agent
 *
 * It joins the command words into one request line and sends it in the JSON form to each
 * target (exchange.c), printing the reply's "text" — so its output is exactly what `nc -U`
 * shows — or, with --json, the JSON line itself. Exit codes mean something:
 *   0  the agent did it (every agent, with several);  1  an agent refused (the reason is on
 *   stderr);  2  usage error, or an agent could not be reached or answered nonsense, or no
 *   process matched.
 * Several targets run in child processes, at most --jobs at once (fleet.c); their output comes
 * back in target order. Safety checks belong to verify.c: nothing is sent to a socket before
 * its server is shown to be the agent of that very process.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attach.h"
#include "exchange.h"
#include "fleet.h"
#include "message.h"
#include "offline_help.h"
#include "ps.h"
#include "stale.h"
#include "targets.h"
#include "verify.h"

struct options {
    struct pid_list pids;           /* -p, in the order given */
    const char *pgrep;
    bool all;
    const char *socket_path;
    bool json;
    bool raw;
    bool prune;
    struct peer_trust trust;
    int timeout_ms;
    int jobs;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: hotpatch [-p PID[,PID...] | --pgrep PATTERN | --all | -s SOCKET] [--json] [--raw]\n"
            "                [--timeout MS] [--jobs N] [--trust-peer UID] COMMAND [ARG...]\n"
            "       hotpatch ps [--json] [--prune]\n"
            "       hotpatch help [FAMILY]\n"
            "\n"
            "Talks to the hotpatch agent inside running processes.\n"
            "\n"
            "  -p, --pid PID       the process; its agent is the listening socket it holds at its\n"
            "                      HOTPATCH_SOCKET (%%p = pid), /tmp/PID.socket or\n"
            "                      /tmp/hotpatch-PID.*/socket, checked to be served by PID (a\n"
            "                      process in a container: through /proc/PID/root, by the pid it\n"
            "                      has there); PID,PID... or -p again name more processes\n"
            "  --pgrep PATTERN     every process whose command line matches PATTERN (an extended\n"
            "                      regular expression, as pgrep -f), but this client and its parents\n"
            "  --all               every process that has an agent (what 'hotpatch ps' lists)\n"
            "  -s, --socket PATH   talk to the agent socket at PATH (served by root or by you)\n"
            "  --trust-peer UID    with -s: also accept a server running as UID (number or name)\n"
            "  -j, --json          print the agent's JSON reply (one line; a \"pid\" member is added\n"
            "                      for a process, and one that cannot be reached gets a line too)\n"
            "  --raw               print the agent's text as sent even to a terminal, where control\n"
            "                      characters are otherwise shown escaped (\\e, \\x07, \\u009b)\n"
            "  -t, --timeout MS    give up after MS milliseconds (default 10000)\n"
            "  --jobs N            talk to at most N processes at once (default %d, at most %d)\n"
            "  -h, --help          this text;  -V, --version  the client's version\n"
            "\n"
            "With more than one process the command runs on all of them in parallel, and each line\n"
            "of plain output (stdout and stderr) starts with \"PID: \".\n"
            "\n"
            "  ps                  the processes that have an agent: pid, user, how the agent was\n"
            "                      started, uptime, changes, patched functions, version, socket,\n"
            "                      command (--json: one object per line)\n"
            "  ps --prune          remove the stale socket files you own in /tmp (nothing listens)\n"
            "  help [FAMILY]       without -p or -s: the agent's command list, from this build\n"
            "  -p PID attach       bring the agent into a process started without it (ptrace; the\n"
            "                      program sees one new thread and the socket); detach stops it\n"
            "\n"
            "Commands (the agent's 'help' lists all of them):\n"
            "  var list | var get [TYPE] NAME | var set [TYPE] NAME VALUE\n"
            "                      (with TYPE, NAME may be any global's symbol: OBJECT:NAME)\n"
            "  lib list | lib load NAME PATH | lib unload NAME   (lib load sends the file itself)\n"
            "  func list | func upgrade LIB FUNC [SYMBOL] | func rollback FUNC\n"
            "  patch list | patch apply [--check] PATH | patch revert NAME   (apply sends the file)\n"
            "  gflags list | gflags get NAME | gflags set NAME VALUE\n"
            "  glog list | glog get NAME | glog set NAME VALUE | glog vmodule PATTERN LEVEL\n"
            "  status | history | diff | detach | help [FAMILY] | version\n"
            "\n"
            "Exit status: 0 done, 1 refused (by the agent, or attach), 2 usage error or agent or\n"
            "process unreachable; with several processes: 2 when any was unreachable or none\n"
            "matched, else 1 when any refused.\n"
            "Example: hotpatch -p 1234 var set age 42;  hotpatch --pgrep my_server gflags set v 1\n",
            JOBS_DEFAULT, JOBS_LIMIT);
}

/* ---- options ------------------------------------------------------------------------------- */

enum { OPTION_RAW = 256, OPTION_TRUST_PEER, OPTION_PGREP, OPTION_ALL, OPTION_JOBS, OPTION_PRUNE };

static bool parse_long(const char *text, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* One option into o. -1 to go on, else the exit status. */
static int take_option(int c, struct options *o)
{
    long value;
    switch (c) {
    case 'p': return parse_pid_argument(optarg, &o->pids) ? -1 : EXIT_TROUBLE;
    case 's': o->socket_path = optarg; return -1;
    case 'j': o->json = true; return -1;
    case 't':
        if (!parse_long(optarg, 1, 3600000, &value)) {
            say("invalid timeout '%s': expected milliseconds from 1 to 3600000", optarg);
            return EXIT_TROUBLE;
        }
        o->timeout_ms = (int)value;
        return -1;
    case OPTION_RAW: o->raw = true; return -1;
    case OPTION_TRUST_PEER:
        if (!parse_trusted_uid(optarg, &o->trust.uid)) {
            say("invalid --trust-peer '%s': expected a uid or a user name", optarg);
            return EXIT_TROUBLE;
        }
        o->trust.named = true;
        return -1;
    case OPTION_PGREP: o->pgrep = optarg; return -1;
    case OPTION_ALL: o->all = true; return -1;
    case OPTION_JOBS:
        if (!parse_long(optarg, 1, JOBS_LIMIT, &value)) {
            say("invalid --jobs '%s': expected a number from 1 to %d", optarg, JOBS_LIMIT);
            return EXIT_TROUBLE;
        }
        o->jobs = (int)value;
        return -1;
    case OPTION_PRUNE: o->prune = true; return -1;
    case 'h': usage(stdout); return 0;
    case 'V': printf("hotpatch %s (protocol 1)\n", HOTPATCH_VERSION_STRING); return 0;
    default: usage(stderr); return EXIT_TROUBLE;
    }
}

/* Parses options from argv[optind] on (optind 0 starts afresh). -1 to go on. */
static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"pid", required_argument, NULL, 'p'},   {"socket", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},        {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},        {"version", no_argument, NULL, 'V'},
        {"raw", no_argument, NULL, OPTION_RAW},
        {"trust-peer", required_argument, NULL, OPTION_TRUST_PEER},
        {"pgrep", required_argument, NULL, OPTION_PGREP},
        {"all", no_argument, NULL, OPTION_ALL},
        {"jobs", required_argument, NULL, OPTION_JOBS},
        {"prune", no_argument, NULL, OPTION_PRUNE},
        {NULL, 0, NULL, 0},
    };
    int c;
    /* '+': options end at the first command word, so `var set x -5` keeps its -5. */
    while ((c = getopt_long(argc, argv, "+p:s:jt:hV", longopts, NULL)) != -1) {
        int rc = take_option(c, o);
        if (rc >= 0)
            return rc;
    }
    return -1;
}

static bool names_processes(const struct options *o)
{
    return o->pids.count || o->pgrep || o->all;
}

/* ---- ps and help ----------------------------------------------------------------------------- */

/* `hotpatch ps [OPTIONS]`: its options may follow the word too. */
static int run_ps_command(int argc, char **argv, char *program_name, struct options *o)
{
    optind = 0;                     /* glibc: start afresh on the words after "ps" */
    argv[0] = program_name;         /* getopt's messages name the program, not "ps" */
    int rc = parse_options(argc, argv, o);
    if (rc >= 0)
        return rc;
    if (optind < argc) {
        say("ps takes no arguments, not '%s'", argv[optind]);
        return EXIT_TROUBLE;
    }
    if (names_processes(o) || o->socket_path) {
        say("ps lists every agent: it takes no -p, --pgrep, --all or -s");
        return EXIT_TROUBLE;
    }
    return o->prune ? prune_stale_sockets(o->json) : run_ps(o->json, o->jobs, o->timeout_ms);
}

static int run_help_command(int argc, char **argv, const struct options *o)
{
    if (argc > 2) {
        say("too many arguments: usage: hotpatch help [FAMILY]");
        return EXIT_TROUBLE;
    }
    return print_offline_help(argc == 2 ? argv[1] : NULL, o->json);
}

/* ---- many targets -------------------------------------------------------------------------- */

struct fleet_run {
    const struct options *o;
    const struct pid_list *targets;
    const struct request *req;
    int library_fd;
    int status;
};

static int run_target(size_t index, void *context)
{
    struct fleet_run *f = context;
    struct exchange_options x = {.pid = f->targets->pids[index], .json = f->o->json,
                                 .raw = f->o->raw, .timeout_ms = f->o->timeout_ms};
    return exchange(&x, f->req, f->library_fd);
}

static void print_target(size_t index, int status, const char *out, size_t out_len,
                         const char *err, size_t err_len, void *context)
{
    struct fleet_run *f = context;
    long pid = f->targets->pids[index];
    if (f->o->json)
        fwrite(out, 1, out_len, stdout);  /* one JSON line, its "pid" member says whose */
    else
        write_prefixed(stdout, pid, out, out_len);
    write_prefixed(stderr, pid, err, err_len);
    f->status = combine_status(f->status, status);
}

/* The processes -p, --pgrep and --all select, in that order. False (said) when none. */
static bool select_targets(const struct options *o, struct pid_list *targets)
{
    for (size_t i = 0; i < o->pids.count; i++)
        pid_list_add(targets, o->pids.pids[i]);
    if (o->pgrep && !add_matching_processes(o->pgrep, targets))
        return false;
    if (o->all && !add_agent_processes(targets))
        return false;
    if (targets->count)
        return true;
    if (o->pgrep)
        say("no process matches --pgrep '%s'", o->pgrep);
    else
        say("no process has an agent");
    return false;
}

static int run_on_processes(const struct options *o, const struct request *req, int library_fd)
{
    struct pid_list targets = {0};
    if (!select_targets(o, &targets)) {
        pid_list_free(&targets);
        return EXIT_TROUBLE;
    }
    int rc;
    if (targets.count == 1) {
        struct exchange_options x = {.pid = targets.pids[0], .json = o->json, .raw = o->raw,
                                     .timeout_ms = o->timeout_ms};
        rc = exchange(&x, req, library_fd);
    } else {
        struct fleet_run f = {o, &targets, req, library_fd, 0};
        rc = run_parallel(targets.count, o->jobs, 3 * o->timeout_ms + 2000, run_target,
                          print_target, &f) ? f.status : EXIT_TROUBLE;
    }
    pid_list_free(&targets);
    return rc;
}

/* ---- main ---------------------------------------------------------------------------------- */

/* `attach` is the client's own work (a ptrace injector), not a request: one process only. */
static int run_attach_command(int argc, char **argv, const struct options *o)
{
    (void)argv;
    if (argc != 1) {
        say("attach takes no arguments: usage: hotpatch -p PID attach");
        return EXIT_TROUBLE;
    }
    if (o->socket_path || o->pgrep || o->all || o->pids.count != 1) {
        say("attach needs exactly one process: hotpatch -p PID attach");
        return EXIT_TROUBLE;
    }
    return run_attach(o->pids.pids[0], o->json, o->timeout_ms);
}

static int run_command(int argc, char **argv, struct options *o)
{
    if (argc > 0 && strcmp(argv[0], "attach") == 0)
        return run_attach_command(argc, argv, o);
    if (names_processes(o) == !!o->socket_path) {
        say("give exactly one of -p PID (or --pgrep, --all) or -s SOCKET");
        usage(stderr);
        return EXIT_TROUBLE;
    }
    if (o->prune) {
        say("--prune goes with ps: hotpatch ps --prune");
        return EXIT_TROUBLE;
    }
    struct request req;
    if (argc == 0 || (argc == 1 && strcmp(argv[0], "json") == 0)) {
        usage(stderr);
        return EXIT_TROUBLE;
    }
    int rc = build_request(argc, argv, &req);
    if (rc != 0)
        return rc;
    struct options with_json = *o;
    with_json.json = o->json || req.json_word;
    int library_fd = -1;
    if (req.passes_library && (rc = open_library(req.library_path, &library_fd)) != 0)
        return rc;
    if (o->socket_path) {
        struct exchange_options x = {.socket_path = o->socket_path, .json = with_json.json,
                                     .raw = o->raw, .trust = o->trust,
                                     .timeout_ms = o->timeout_ms};
        rc = exchange(&x, &req, library_fd);
    } else {
        rc = run_on_processes(&with_json, &req, library_fd);
    }
    if (library_fd >= 0)
        close(library_fd);
    return rc;
}

int main(int argc, char **argv)
{
    struct options o = {.timeout_ms = 10000, .jobs = JOBS_DEFAULT};
    note_terminals();
    int rc = parse_options(argc, argv, &o);
    if (rc < 0) {
        int words = argc - optind;
        char **word = argv + optind;
        bool bare = !names_processes(&o) && !o.socket_path && words > 0;
        if (bare && strcmp(word[0], "ps") == 0)
            rc = run_ps_command(words, word, argv[0], &o);
        else if (bare && strcmp(word[0], "help") == 0 && !o.prune)
            rc = run_help_command(words, word, &o);
        else
            rc = run_command(words, word, &o);
    }
    pid_list_free(&o.pids);
    return rc;
}
