/*
 * exchange.c — one request to one agent, and its reply printed. See exchange.h.
 *
 * The request goes in the JSON form even for plain output, because that form tells success
 * from failure without reading prose, which gives exit codes that mean something. Nothing is
 * sent before the agent is verified (verify.c). Every wait has a timeout. `lib load` and
 * `patch apply` send the file itself as a descriptor (the agent loads that very file, so it
 * cannot be swapped under its name, and a path the target cannot see still works) and turn a
 * relative path into an absolute one, because the agent would
 * resolve a name against the target's working directory, not the operator's. Text printed to
 * a terminal is escaped (terminal.c) unless --raw is given.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "exchange.h"
#include "json.h"
#include "message.h"
#include "stale.h"
#include "terminal.h"

#define REPLY_LIMIT (8u << 20)      /* refuse to buffer more than this from a server */

static bool out_is_terminal, err_is_terminal;

void note_terminals(void)
{
    out_is_terminal = isatty(STDOUT_FILENO);
    err_is_terminal = isatty(STDERR_FILENO);
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

/* The word that names a file to pass by descriptor: PATH of `lib load NAME PATH` and of
 * `patch apply [--check] PATH`; -1 for other commands. */
static int file_word(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[0], "lib") == 0 && strcmp(argv[1], "load") == 0)
        return 3;
    if (argc < 3 || strcmp(argv[0], "patch") != 0 || strcmp(argv[1], "apply") != 0)
        return -1;
    if (argc == 3)
        return 2;
    return argc == 4 && strcmp(argv[2], "--check") == 0 ? 3 : -1;
}

int build_request(int argc, char **argv, struct request *req)
{
    char absolute[PATH_MAX];
    snprintf(req->line, sizeof req->line, "json");
    req->passes_library = false;
    req->json_word = argc > 0 && strcmp(argv[0], "json") == 0;
    if (req->json_word)
        argc--, argv++;
    int file = file_word(argc, argv);
    for (int i = 0; i < argc; i++) {
        const char *word = argv[i];
        if (strpbrk(word, "\r\n")) {
            say("argument %d contains a line break; a request is one line", i + 1);
            return EXIT_TROUBLE;
        }
        if (i == file) {
            word = library_path_to_send(word, absolute, sizeof absolute, &req->passes_library);
            if (req->passes_library)
                snprintf(req->library_path, sizeof req->library_path, "%s", word);
        }
        if (!append_word(req->line, sizeof req->line, word)) {
            say("the request is longer than the agent's limit of 4096 bytes");
            return EXIT_TROUBLE;
        }
    }
    return 0;
}

/* The library to pass by descriptor. O_NONBLOCK only for the open itself, so that a FIFO
 * named as a library cannot hang the client; the agent gets a plain read-only descriptor. */
int open_library(const char *path, int *fd_out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        say("cannot open %s: %s", path, strerror(errno));
        return EXIT_TROUBLE;
    }
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

/* The pid a standard socket name /tmp/PID.socket carries, or 0. */
static long pid_of_standard_name(const char *path)
{
    if (strncmp(path, "/tmp/", 5) != 0)
        return 0;
    const char *digits = path + 5;
    size_t n = strspn(digits, "0123456789");
    if (n == 0 || n > 9 || strcmp(digits + n, ".socket") != 0)
        return 0;
    return strtol(digits, NULL, 10);
}

/* Connection refused at a socket file nothing listens on: what it is, instead of the hint on
 * starting an agent. True when it said so. */
static bool explain_stale(const char *path)
{
    if (!is_stale_socket_file(path, NULL))
        return false;
    long pid = pid_of_standard_name(path);
    if (pid && !process_exists(pid))
        say("process %ld is not running (stale socket file %s)", pid, path);
    else
        say("%s is a stale socket file (nothing listens on it)", path);
    return true;
}

static void explain_unreachable(const char *path, long pid, int err)
{
    say("cannot connect to %s: %s", path, strerror(err));
    if (pid && !process_exists(pid)) {
        say("no process %ld is running", pid);
        return;
    }
    if (err == EACCES || err == EPERM) {
        say("run as root or as the user that owns the process");
        return;
    }
    if (err == ECONNREFUSED && !pid && explain_stale(path))
        return;
    print_start_hint();
}

/* Connects to `target` (path itself, or the /proc/self/fd/N of a file held open at path);
 * messages name path. */
static int connect_with_timeout(const char *path, const char *target, long pid, int timeout_ms,
                                int *fd_out)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path || strlen(target) >= sizeof addr.sun_path) {
        say("socket path too long: %s", path);
        return EXIT_TROUBLE;
    }
    strcpy(addr.sun_path, target);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        say("socket: %s", strerror(errno));
        return EXIT_TROUBLE;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int err = errno;
        close(fd);
        if (err == EAGAIN || err == EWOULDBLOCK) {
            /* A Unix socket's connect waits while the listener's backlog is full, for at most
             * SO_SNDTIMEO: the agent is there but has not accepted. */
            say("timed out after %d ms connecting to %s: the agent did not accept the "
                "connection (its backlog is full; it may be busy or stuck); try again, or raise "
                "--timeout", timeout_ms, path);
            return EXIT_TROUBLE;
        }
        explain_unreachable(path, pid, err);
        return EXIT_TROUBLE;
    }
    *fd_out = fd;
    return 0;
}

/* -p: find the agent among the process's listening sockets, connect, and check that the peer
 * is that process before anything is sent. */
static int reach_agent_of_process(const struct exchange_options *o, struct agent_socket *found,
                                  int *fd_out)
{
    struct process_identity who;
    if (!identify_process(o->pid, &who) || !find_agent_socket(&who, found))
        return EXIT_TROUBLE;
    struct agent_file file;
    int err = open_agent_file(found, &file);
    if (err) {
        if (err != ENOTSOCK)
            explain_unreachable(found->path, o->pid, err);
        return EXIT_TROUBLE;
    }
    int rc = connect_with_timeout(found->path, file.via, o->pid, o->timeout_ms, fd_out);
    if (rc == 0 && !check_agent_of_process(*fd_out, found, &who, &file)) {
        close(*fd_out);
        rc = EXIT_TROUBLE;
    }
    close_agent_file(&file);
    return rc;
}

/* -s: connect, and check that the server runs as a user we trust. */
static int reach_socket(const struct exchange_options *o, int *fd_out)
{
    int rc = connect_with_timeout(o->socket_path, o->socket_path, 0, o->timeout_ms, fd_out);
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
static void print_text(bool to_stdout, const char *reply, const char *text, size_t len, bool raw)
{
    FILE *out = to_stdout ? stdout : stderr;
    if (raw || !(to_stdout ? out_is_terminal : err_is_terminal)) {
        fputs(text, out);
        return;
    }
    write_escaped(out, text, len, text_is_one_value(reply, text, len));
}

/* The reply with the member "pid":PID added last, before the closing brace (a JSON reader
 * that keeps the last of two members of one name, as most do, then reads the client's). */
static void print_with_pid(const char *reply, long pid)
{
    const char *close = strrchr(reply, '}');
    if (!close) {
        fputs(reply, stdout);
        return;
    }
    const char *before = close;
    while (before > reply && strchr(" \t\r\n", before[-1]))
        before--;
    bool empty = before > reply && before[-1] == '{';
    fwrite(reply, 1, (size_t)(close - reply), stdout);
    printf("%s\"pid\":%ld", empty ? "" : ",", pid);
    fputs(close, stdout);
}

static int print_reply(const char *reply, const struct exchange_options *o)
{
    bool ok = false;
    char *text = NULL;
    size_t len = 0;
    if (json_member_bool(reply, "ok", &ok) != 0 ||
        json_member_string_with_length(reply, "text", &text, &len) != 0) {
        say("the agent's reply is not valid: %.200s", reply);
        return EXIT_TROUBLE;
    }
    if (o->reply_only)
        fputs(reply, stdout);
    else if (o->json && o->pid)
        print_with_pid(reply, o->pid);
    else if (o->json)
        fputs(reply, stdout);
    else
        print_text(ok, reply, text, len, o->raw);
    free(text);
    return ok ? 0 : EXIT_REFUSED;
}

static int send_request(int fd, const struct request *req, int library_fd)
{
    size_t len = strlen(req->line);
    char *framed = malloc(len + 2);
    if (!framed) {
        say("out of memory");
        return EXIT_TROUBLE;
    }
    memcpy(framed, req->line, len);
    memcpy(framed + len, "\n", 2);
    bool sent = library_fd >= 0 ? send_with_descriptor(fd, framed, len + 1, library_fd)
                                : send_all(fd, framed, len + 1);
    int err = errno;
    free(framed);
    if (!sent) {
        say("cannot send the request: %s", strerror(err));
        return EXIT_TROUBLE;
    }
    return 0;
}

/* Connects, sends and prints; the exit status. */
static int talk(const struct exchange_options *o, const struct request *req, int library_fd)
{
    struct agent_socket found;
    int fd = -1;
    int rc = o->pid ? reach_agent_of_process(o, &found, &fd) : reach_socket(o, &fd);
    if (rc != 0)
        return rc;
    const char *path = o->pid ? found.path : o->socket_path;
    rc = send_request(fd, req, library_fd);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    const char *why = "";
    char *reply = read_reply(fd, &why);
    close(fd);
    if (!reply) {
        say("no reply from %s: %s", path, why);
        return EXIT_TROUBLE;
    }
    rc = print_reply(reply, o);
    free(reply);
    return rc;
}

/* With --json, a process that gave no reply still has its line: why, and its pid. */
static void print_unreached(long pid)
{
    const char *why = first_message();
    fputs("{\"ok\":false,\"reached\":false,\"error\":", stdout);
    json_write_string(stdout, why, strlen(why));
    printf(",\"pid\":%ld}\n", pid);
}

int exchange(const struct exchange_options *o, const struct request *req, int library_fd)
{
    int rc = talk(o, req, library_fd);
    if (rc == EXIT_TROUBLE && o->json && o->pid && !o->reply_only)
        print_unreached(o->pid);
    return rc;
}
