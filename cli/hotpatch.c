/*
 * hotpatch.c — the command-line client.
 *
 *   hotpatch -p PID var get age            (or -s SOCKET instead of -p)
 *
 * It joins the command words into one request line (quoting words that need it), sends it in
 * the JSON form, and prints the reply's "text" — so its output is exactly what `nc -U` shows —
 * or, with --json, the JSON line itself. The JSON form is used even for plain output because it
 * tells success from failure without reading prose, which gives exit codes that mean something:
 *   0  the agent did it;  1  the agent refused (the reason is on stderr);
 *   2  usage error, or the agent could not be reached or answered nonsense.
 *
 * Safety checks that belong to the client (verify.c): with -p, the agent is found among the
 * listening sockets the process holds, and after connecting the peer must be that process,
 * running as root or as its user, and still the same process (a planted socket or a reused pid
 * cannot impersonate it); with -s the peer must run as root, as the caller, or as the uid
 * named by --trust-peer. Nothing is sent before these checks pass. Every wait has a timeout.
 * `lib load` sends the library itself as a descriptor (the agent loads that very file, so it
 * cannot be swapped under its name) and turns a relative path into an absolute one, because
 * the agent would resolve a name against the target's working directory, not the operator's.
 * Text printed to a terminal is escaped (terminal.c) unless --raw is given.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "terminal.h"
#include "verify.h"

#define EXIT_REFUSED 1
#define EXIT_TROUBLE 2
#define LINE_LIMIT 4096             /* the agent's request limit (docs/protocol.md) */
#define REPLY_LIMIT (8u << 20)      /* refuse to buffer more than this from a server */

struct options {
    long pid;                       /* 0 when -s is used */
    const char *socket_path;
    bool json;
    bool raw;                       /* print the agent's text unescaped, even to a terminal */
    struct peer_trust trust;        /* with -s: a server uid accepted besides root and us */
    int timeout_ms;
};

/* The request line and, for `lib load`, the library file to pass with it. */
struct request {
    char line[LINE_LIMIT + 1];
    bool passes_library;
    char library_path[PATH_MAX];    /* the absolute path in the line, when passes_library */
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: hotpatch [-p PID | -s SOCKET] [--json] [--raw] [--timeout MS] [--trust-peer UID]\n"
            "                COMMAND [ARG...]\n"
            "\n"
            "Talks to the hotpatch agent inside a running process.\n"
            "\n"
            "  -p, --pid PID       the process; its agent is the listening socket it holds at its\n"
            "                      HOTPATCH_SOCKET (%%p = pid), /tmp/PID.socket or\n"
            "                      /tmp/hotpatch-PID.*/socket, checked to be served by PID\n"
            "  -s, --socket PATH   talk to the agent socket at PATH (served by root or by you)\n"
            "  --trust-peer UID    with -s: also accept a server running as UID (number or name)\n"
            "  -j, --json          print the agent's JSON reply (one line)\n"
            "  --raw               print the agent's text as sent even to a terminal, where control\n"
            "                      characters are otherwise shown escaped (\\e, \\x07, \\u009b)\n"
            "  -t, --timeout MS    give up after MS milliseconds (default 10000)\n"
            "  -h, --help          this text;  -V, --version  the client's version\n"
            "\n"
            "Commands (the agent's 'help' lists all of them):\n"
            "  var list | var get [TYPE] NAME | var set [TYPE] NAME VALUE\n"
            "  lib list | lib load NAME PATH | lib unload NAME   (lib load sends the file itself)\n"
            "  func list | func upgrade LIB FUNC [SYMBOL] | func rollback FUNC\n"
            "  patch list | patch apply [--check] PATH | patch revert NAME\n"
            "  gflags list | gflags get NAME | gflags set NAME VALUE\n"
            "  glog list | glog get NAME | glog set NAME VALUE | glog vmodule PATTERN LEVEL\n"
            "  status | history | diff | help [FAMILY] | version\n"
            "\n"
            "Exit status: 0 done, 1 refused by the agent, 2 usage error or agent unreachable.\n"
            "Example: hotpatch -p 1234 var set age 42\n");
}

static int fail(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "hotpatch: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    return EXIT_TROUBLE;
}

/* ---- building the request line ------------------------------------------------------------- */

static bool needs_quotes(const char *w)
{
    return *w == '\0' || strpbrk(w, " \t\"'\\") != NULL;
}

/* Appends word to line (capacity cap), quoting when needed. False, and the line unchanged,
 * when the whole word does not fit: a request is never sent cut short. */
static bool append_word(char *line, size_t cap, const char *word)
{
    bool quote = needs_quotes(word);
    size_t n = strlen(line), need = (n > 0) + (quote ? 2 : 0);
    for (const char *p = word; *p; p++)
        need += 1 + (quote && (*p == '"' || *p == '\\'));
    if (n + need + 1 > cap)
        return false;
    if (n)
        line[n++] = ' ';
    if (quote)
        line[n++] = '"';
    for (const char *p = word; *p; p++) {
        if (quote && (*p == '"' || *p == '\\'))
            line[n++] = '\\';
        line[n++] = *p;
    }
    if (quote)
        line[n++] = '"';
    line[n] = '\0';
    return true;
}

/* `lib load NAME PATH`: the path to send. A relative PATH is made absolute against our working
 * directory; a bare name with no such file here is left for the dynamic loader to search
 * (*is_file false: there is no file of ours to pass). */
static const char *library_path_to_send(const char *path, char *buf, size_t cap, bool *is_file)
{
    *is_file = true;
    if (path[0] == '/')
        return path;
    struct stat st;
    bool local = strchr(path, '/') || stat(path, &st) == 0;
    if (!local) {
        *is_file = false;
        return path; /* a bare soname such as libm.so.6 */
    }
    if (realpath(path, buf))
        return buf;
    char cwd[PATH_MAX];
    while (path[0] == '.' && path[1] == '/')
        path += 2;
    if (getcwd(cwd, sizeof cwd) && (size_t)snprintf(buf, cap, "%s/%s", cwd, path) < cap)
        return buf;
    return path;
}

static bool is_lib_load(int argc, char **argv)
{
    return argc >= 4 && strcmp(argv[0], "lib") == 0 && strcmp(argv[1], "load") == 0;
}

static int build_request(int argc, char **argv, struct request *req, bool *json)
{
    char absolute[PATH_MAX];
    snprintf(req->line, sizeof req->line, "json");
    req->passes_library = false;
    if (argc > 0 && strcmp(argv[0], "json") == 0) {
        *json = true;
        argc--, argv++;
    }
    if (argc == 0) {
        usage(stderr);
        return EXIT_TROUBLE;
    }
    for (int i = 0; i < argc; i++) {
        const char *word = argv[i];
        if (strpbrk(word, "\r\n")) {
            fprintf(stderr, "hotpatch: argument %d contains a line break; a request is one "
                    "line\n", i + 1);
            return EXIT_TROUBLE;
        }
        if (i == 3 && is_lib_load(argc, argv)) {
            word = library_path_to_send(word, absolute, sizeof absolute, &req->passes_library);
            if (req->passes_library)
                snprintf(req->library_path, sizeof req->library_path, "%s", word);
        }
        if (!append_word(req->line, sizeof req->line, word))
            return fail("the request is longer than the agent's limit of %s bytes%s", "4096", "");
    }
    return 0;
}

/* The library to pass by descriptor. O_NONBLOCK only for the open itself, so that a FIFO
 * named as a library cannot hang the client; the agent gets a plain read-only descriptor. */
static int open_library(const char *path, int *fd_out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return fail("cannot open %s: %s", path, strerror(errno));
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    *fd_out = fd;
    return 0;
}

/* ---- reaching the agent -------------------------------------------------------------------- */

static bool process_exists(long pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld", pid);
    struct stat st;
    return stat(path, &st) == 0;
}

static void explain_unreachable(const struct options *o, int err)
{
    fprintf(stderr, "hotpatch: cannot connect to %s: %s\n", o->socket_path, strerror(err));
    if (o->pid && !process_exists(o->pid)) {
        fprintf(stderr, "hotpatch: no process %ld is running\n", o->pid);
        return;
    }
    if (err == EACCES || err == EPERM) {
        fprintf(stderr, "hotpatch: run as root or as the user that owns the process\n");
        return;
    }
    print_start_hint();
}

static int connect_with_timeout(const struct options *o, int *fd_out)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(o->socket_path) >= sizeof addr.sun_path)
        return fail("socket path too long: %s%s", o->socket_path, "");
    strcpy(addr.sun_path, o->socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail("socket: %s%s", strerror(errno), "");
    struct timeval tv = {o->timeout_ms / 1000, (o->timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int err = errno;
        close(fd);
        explain_unreachable(o, err);
        return EXIT_TROUBLE;
    }
    *fd_out = fd;
    return 0;
}

/* -p: find the agent among the process's listening sockets, connect, and check that the peer
 * is that process before anything is sent. o->socket_path is set to the path found. */
static int reach_agent_of_process(struct options *o, char *path, size_t cap, int *fd_out)
{
    struct process_identity who;
    if (!identify_process(o->pid, &who) || !find_agent_socket(&who, path, cap))
        return EXIT_TROUBLE;
    o->socket_path = path;
    int rc = connect_with_timeout(o, fd_out);
    if (rc != 0)
        return rc;
    if (!check_agent_of_process(*fd_out, path, &who)) {
        close(*fd_out);
        return EXIT_TROUBLE;
    }
    return 0;
}

/* -s: connect, and check that the server runs as a user we trust. */
static int reach_socket(const struct options *o, int *fd_out)
{
    int rc = connect_with_timeout(o, fd_out);
    if (rc != 0)
        return rc;
    if (!check_socket_server(*fd_out, o->socket_path, &o->trust)) {
        close(*fd_out);
        return EXIT_TROUBLE;
    }
    return 0;
}

/* ---- the exchange -------------------------------------------------------------------------- */

static bool send_all(int fd, const char *data, size_t len)
{
    while (len) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        data += n;
        len -= (size_t)n;
    }
    return true;
}

/* Sends data with descriptor `passed` attached to its first byte (SCM_RIGHTS), in one
 * sendmsg; whatever that call did not take follows as plain bytes. */
static bool send_with_descriptor(int fd, const char *data, size_t len, int passed)
{
    union {
        struct cmsghdr header; /* for the alignment of the buffer */
        char bytes[CMSG_SPACE(sizeof(int))];
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.bytes,
                         .msg_controllen = sizeof control.bytes};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &passed, sizeof passed);
    ssize_t n;
    do
        n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return false;
    return send_all(fd, data + n, len - (size_t)n);
}

/* Reads until the first newline or EOF; NULL on timeout, error or an oversized reply. */
static char *read_reply(int fd, const char **why)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        *why = "out of memory";
        return NULL;
    }
    for (;;) {
        if (len + 1 >= cap) {
            if (cap >= REPLY_LIMIT) {
                *why = "the reply is larger than the client accepts";
                break;
            }
            char *grown = realloc(buf, cap * 2);
            if (!grown) {
                *why = "out of memory";
                break;
            }
            buf = grown;
            cap *= 2;
        }
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            *why = (errno == EAGAIN || errno == EWOULDBLOCK) ? "timed out waiting for the reply"
                                                             : strerror(errno);
            break;
        }
        if (n == 0 || memchr(buf + len, '\n', (size_t)n)) {
            len += (size_t)n;
            buf[len] = '\0';
            if (len == 0) {
                *why = "the agent closed the connection without answering";
                break;
            }
            return buf;
        }
        len += (size_t)n;
    }
    free(buf);
    return NULL;
}

/* Whether the reply is one bare value: a string member "value" whose text is value + "\n". */
static bool text_is_one_value(const char *reply, const char *text, size_t text_len)
{
    char *value = NULL;
    size_t value_len = 0;
    if (json_member_string_with_length(reply, "value", &value, &value_len) != 0)
        return false;
    bool same = text_len == value_len + 1 && memcmp(text, value, value_len) == 0 &&
                text[value_len] == '\n';
    free(value);
    return same;
}

/* The reply's text for a person: escaped when out is a terminal (unless --raw), otherwise
 * exactly as the agent sent it, up to a NUL byte, as it has always been written. */
static void print_text(FILE *out, const char *reply, const char *text, size_t len, bool raw)
{
    if (raw || !isatty(fileno(out))) {
        fputs(text, out);
        return;
    }
    write_escaped(out, text, len, text_is_one_value(reply, text, len));
}

static int print_reply(const char *reply, const struct options *o)
{
    bool ok = false;
    char *text = NULL;
    size_t len = 0;
    if (json_member_bool(reply, "ok", &ok) != 0 ||
        json_member_string_with_length(reply, "text", &text, &len) != 0) {
        fprintf(stderr, "hotpatch: the agent's reply is not valid: %.200s\n", reply);
        return EXIT_TROUBLE;
    }
    if (o->json)
        fputs(reply, stdout);
    else
        print_text(ok ? stdout : stderr, reply, text, len, o->raw);
    free(text);
    return ok ? 0 : EXIT_REFUSED;
}

static int send_request(int fd, const struct request *req, int library_fd)
{
    size_t len = strlen(req->line);
    char *framed = malloc(len + 2);
    if (!framed)
        return fail("out of memory%s%s", "", "");
    memcpy(framed, req->line, len);
    memcpy(framed + len, "\n", 2);
    bool sent = library_fd >= 0 ? send_with_descriptor(fd, framed, len + 1, library_fd)
                                : send_all(fd, framed, len + 1);
    int err = errno;
    free(framed);
    if (!sent)
        return fail("cannot send the request: %s%s", strerror(err), "");
    return 0;
}

static int exchange(struct options *o, const struct request *req, int library_fd)
{
    char path[PATH_MAX];
    int fd = -1;
    int rc = o->pid ? reach_agent_of_process(o, path, sizeof path, &fd) : reach_socket(o, &fd);
    if (rc != 0)
        return rc;
    rc = send_request(fd, req, library_fd);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    const char *why = "";
    char *reply = read_reply(fd, &why);
    close(fd);
    if (!reply)
        return fail("no reply from %s: %s", o->socket_path, why);
    rc = print_reply(reply, o);
    free(reply);
    return rc;
}

/* ---- main ---------------------------------------------------------------------------------- */

enum { OPTION_RAW = 256, OPTION_TRUST_PEER };

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

/* Parses the options into o. -1 to go on, else the exit status. */
static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"pid", required_argument, NULL, 'p'},   {"socket", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},        {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},        {"version", no_argument, NULL, 'V'},
        {"raw", no_argument, NULL, OPTION_RAW},
        {"trust-peer", required_argument, NULL, OPTION_TRUST_PEER},
        {NULL, 0, NULL, 0},
    };
    long value;
    int c;
    /* '+': options end at the first command word, so `var set x -5` keeps its -5. */
    while ((c = getopt_long(argc, argv, "+p:s:jt:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'p':
            if (!parse_long(optarg, 1, INT_MAX, &value))
                return fail("invalid pid '%s': expected a process id such as 1234%s", optarg, "");
            o->pid = value;
            break;
        case 's': o->socket_path = optarg; break;
        case 'j': o->json = true; break;
        case 't':
            if (!parse_long(optarg, 1, 3600000, &value))
                return fail("invalid timeout '%s': expected milliseconds from 1 to 3600000%s",
                            optarg, "");
            o->timeout_ms = (int)value;
            break;
        case OPTION_RAW: o->raw = true; break;
        case OPTION_TRUST_PEER:
            if (!parse_trusted_uid(optarg, &o->trust.uid))
                return fail("invalid --trust-peer '%s': expected a uid or a user name%s", optarg,
                            "");
            o->trust.named = true;
            break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("hotpatch %s (protocol 1)\n", HOTPATCH_VERSION_STRING); return 0;
        default: usage(stderr); return EXIT_TROUBLE;
        }
    }
    if (!o->pid == !o->socket_path) {
        fprintf(stderr, "hotpatch: give exactly one of -p PID or -s SOCKET\n");
        usage(stderr);
        return EXIT_TROUBLE;
    }
    return -1;
}

int main(int argc, char **argv)
{
    struct options o = {.timeout_ms = 10000};
    int rc = parse_options(argc, argv, &o);
    if (rc >= 0)
        return rc;
    struct request req;
    rc = build_request(argc - optind, argv + optind, &req, &o.json);
    if (rc != 0)
        return rc;
    int library_fd = -1;
    if (req.passes_library && (rc = open_library(req.library_path, &library_fd)) != 0)
        return rc;
    rc = exchange(&o, &req, library_fd);
    if (library_fd >= 0)
        close(library_fd);
    return rc;
}
