/*
 * server.c — the control socket: accept, read one line, answer, close (or keep a session).
 *
 * One thread serves every connection with poll(2) over non-blocking sockets, so a client that
 * is silent, slow or never reads its reply costs a slot and a few kilobytes but never blocks
 * anyone else. Everything is bounded: HP_LINE_MAX bytes of request per connection, a reply of
 * at most HP_REPLY_MAX, max_clients connections, and a deadline on every connection (waiting
 * for a request, waiting between session requests, waiting for the client to take its reply).
 * Sends use MSG_NOSIGNAL, so a vanished client is an error code, never SIGPIPE in the host.
 *
 * Who may talk: the kernel's SO_PEERCRED (and SO_PEERGROUPS) says who is at the other end;
 * policy.c says whether it is answered (root and the process's uid by default). A connection
 * refused by policy or by a limit waits a moment for its first line, so that its one error line
 * comes in the form the line asks for (JSON or plain), and is audited.
 *
 * The socket file: socket_file.c chooses the path (the configured one, or a private fallback
 * directory when another user has taken that name) and removes it again only while it is
 * still the inode this server created.
 *
 * The descriptor budget: the agent lives in someone else's process, whose own open() must keep
 * working. It holds at most an eighth of RLIMIT_NOFILE (see descriptor_budget() below), half of
 * that per non-root uid. A request may carry one descriptor (SCM_RIGHTS) for the command that
 * takes one; it is closed after the handler.
 *
 * Descriptors: the program may close or dup2() over descriptors it does not own (daemons often
 * close every fd at start-up). So each descriptor the server owns remembers the identity
 * (st_dev, st_ino) of what it opened, and is checked before it is used or closed: a descriptor
 * that now names something else is forgotten, never read, written or closed, and a lost listen
 * socket or wake-up eventfd is recreated within a second.
 *
 * exec: just before the program replaces its image, exec.c (through agent.c) hides the server:
 * the socket file is removed, so the new image inherits no path nobody answers on; if the exec
 * fails the file comes back (a new listen socket at the same path, made by the server thread).
 * file_lock orders these with every bind the server thread makes, so a bind never brings the
 * file back while an exec is in flight.
 *
 * The thread runs with asynchronous signals blocked, so the program's signal handlers run on
 * the program's own threads; synchronous faults (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP) stay
 * deliverable because blocking them would make the kernel kill the process instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

/*
 * READING a request, WRITING its reply, then (unless in a session) DRAINING: the write side is
 * shut and input is discarded until the client closes, for a bounded time. Closing a socket
 * with unread input would make the kernel reset the connection, and the client could lose the
 * reply it has not read yet (an over-long line is the usual case).
 */
enum client_state { READING, WRITING, DRAINING };

/* A descriptor and the identity of the object it was opened on. */
struct owned_fd {
    int fd;                      /* -1 when none */
    dev_t dev;
    ino_t ino;
};

#define DRAIN_MS 1000              /* longest lingering close */
#define DRAIN_BYTES (1u << 20)     /* most input discarded while lingering */

struct client {
    struct owned_fd sock;
    struct hp_peer peer;
    struct owned_fd pending_fd;  /* a descriptor that came with the line being read, or fd -1 */
    bool extra_fds;              /* more than one descriptor came with this line */
    bool refusing;               /* refused before its request: `refusal` is its only answer */
    char refusal[HP_ERROR_MAX];
    enum client_state state;
    bool in_session;
    bool close_after_write;
    long long deadline_ms;       /* monotonic; the connection closes when it passes */
    size_t in_len;
    size_t drained;              /* bytes discarded while DRAINING */
    char *out;
    size_t out_len, out_sent;
    char in[HP_LINE_MAX + 2];    /* one line plus '\r' and '\n' */
};

struct hp_server {
    pthread_t thread;
    struct owned_fd listener;
    bool listener_lost;          /* the program took it and listening again failed: retry */
    struct owned_fd wake;        /* eventfd: written to make the loop look at the flags below */
    int stopping;                /* set (atomically) by hp_server_stop(): end the loop */
    int relisten;                /* set (atomically) after a failed exec: listen again */
    int detaching;               /* set (atomically) by the thread on `detach`: the socket is
                                  * gone and the loop ends once the replies are sent */
    pthread_mutex_t file_lock;   /* guards `hidden` and every bind or unlink of path after start */
    bool hidden;                 /* an exec is in flight: the socket file must stay away */
    sigset_t program_mask;       /* the starting thread's mask, for an exec from this thread */
    struct hp_server_config cfg;
    char wanted[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* the configured path */
    struct hp_socket_file file;  /* where it listens (guarded by file_lock once the thread runs) */
    struct client **clients;     /* owned by the server thread once it runs */
    size_t client_count;
    long long accept_pause_until_ms; /* after EMFILE: stop accepting for a moment */
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- owned descriptors -------------------------------------------------------------------- */

/* Takes ownership of fd, remembering what it refers to. */
static void own(struct owned_fd *o, int fd)
{
    struct stat st;
    o->fd = -1;
    if (fd < 0)
        return;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return;
    }
    o->fd = fd;
    o->dev = st.st_dev;
    o->ino = st.st_ino;
}

/* True while the descriptor still refers to the object it was opened on. */
static bool still_ours(const struct owned_fd *o)
{
    struct stat st;
    return o->fd >= 0 && fstat(o->fd, &st) == 0 && st.st_dev == o->dev && st.st_ino == o->ino;
}

/* Closes the descriptor if it is still ours; forgets it either way. */
static void release(struct owned_fd *o)
{
    if (still_ours(o))
        close(o->fd);
    o->fd = -1;
}

/* ---- the socket file ----------------------------------------------------------------------- */

/* Creates a socket and binds it where socket_file.c decides (the configured path, or a private
 * fallback when that name is taken), then listens. Callers hold file_lock, or run before the
 * thread exists. */
static int bind_socket(struct hp_server *s)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    /* Owned from the start: the program may dup2 over the new descriptor at any moment, and
     * then it must be neither bound nor closed by us. */
    struct owned_fd sock = {-1, 0, 0};
    own(&sock, fd);
    if (sock.fd < 0)
        return -EBADF;
    struct hp_socket_access access;
    hp_policy_socket_access(&access);
    struct hp_socket_file file;
    int rc = still_ours(&sock) ? hp_socket_file_bind(sock.fd, s->wanted, &access, &file) : -EBADF;
    if (rc == 0) {
        errno = 0;
        if (!still_ours(&sock) || listen(sock.fd, 128) != 0) {
            rc = errno ? -errno : -EBADF;
            hp_socket_file_remove(&file);
        }
    }
    if (rc != 0) {
        release(&sock);
        return rc;
    }
    s->file = file;
    s->listener = sock;
    return 0;
}

/* ---- connections --------------------------------------------------------------------------- */

/* Best effort, for a connection about to be closed: never blocks, never raises SIGPIPE. */
static void send_and_forget(int fd, const char *text)
{
    ssize_t ignored = send(fd, text, strlen(text), MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)ignored;
}

static void close_client(struct hp_server *s, size_t index)
{
    struct client *c = s->clients[index];
    release(&c->sock);
    release(&c->pending_fd);
    free(c->out);
    free(c);
    s->clients[index] = s->clients[--s->client_count];
}

/* A refusal that cannot wait for the request (no slot to wait in): plain form, at once. */
static void refuse_now(int fd, const struct hp_peer *peer, const char *reason)
{
    char line[HP_ERROR_MAX + 16];
    snprintf(line, sizeof line, "error: %s\n", reason);
    send_and_forget(fd, line);
    if (peer) {
        hp_log("refused connection from uid %ld pid %ld: %s", (long)peer->uid, (long)peer->pid,
               reason);
        hp_audit(HP_AUDIT_REFUSED, peer, "", 0, false, reason);
    }
    close(fd);
}

static struct client *add_client(struct hp_server *s, int fd, const struct hp_peer *peer)
{
    struct client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    own(&c->sock, fd);
    if (c->sock.fd < 0) {
        free(c);
        return NULL;
    }
    c->pending_fd.fd = -1;
    c->peer = *peer;
    c->state = READING;
    c->deadline_ms = now_ms() + s->cfg.idle_timeout_ms;
    s->clients[s->client_count++] = c;
    return c;
}

static void queue_error(struct hp_server *s, struct client *c, const char *message);

/* ---- the descriptor budget ---------------------------------------------------------------- */

/*
 * The agent lives in someone else's process, whose own open() must never fail because of it.
 * So the agent holds at most an eighth of the soft RLIMIT_NOFILE (read at each connection, as
 * the program may change it), and never more than BUDGET_CAP: its listen socket and eventfd,
 * every connection, every descriptor received with a request, and the files of loaded
 * libraries. A few slots are kept to refuse politely; a uid other than root may hold at most
 * half of the budget, so one user cannot lock root out.
 */
#define BUDGET_CAP 512
#define REFUSAL_SLOTS 4            /* connections waiting to be told "no" in their own form */
#define REFUSAL_WAIT_MS 250        /* how long such a connection may take to send its line */

static size_t descriptor_budget(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur / 8 >= BUDGET_CAP)
        return BUDGET_CAP;
    return (size_t)(rl.rlim_cur / 8);
}

static size_t refusal_slots(size_t budget)
{
    return budget >= 4 * REFUSAL_SLOTS ? REFUSAL_SLOTS : budget / 4;
}

/* Descriptors held now, and those held for one uid's connections. */
static size_t descriptors_held(const struct hp_server *s, const uid_t *uid)
{
    size_t held = uid ? 0 : 2 + hp_registry_held_files();
    for (size_t i = 0; i < s->client_count; i++) {
        const struct client *c = s->clients[i];
        if (uid && c->peer.uid != *uid)
            continue;
        held += 1 + (c->pending_fd.fd >= 0);
    }
    return held;
}

static size_t count_clients(const struct hp_server *s, bool refusing)
{
    size_t n = 0;
    for (size_t i = 0; i < s->client_count; i++)
        n += s->clients[i]->refusing == refusing;
    return n;
}

/* Why a new connection of peer cannot be served now ("" when it can). */
static void check_limits(const struct hp_server *s, const struct hp_peer *peer, char *why,
                         size_t cap)
{
    size_t budget = descriptor_budget(), slots = refusal_slots(budget);
    size_t held = descriptors_held(s, NULL) + 1;
    why[0] = '\0';
    if (count_clients(s, false) >= (size_t)s->cfg.max_clients)
        snprintf(why, cap, "too many connections; try again later");
    else if (held + slots > budget)
        snprintf(why, cap, "too many connections: the agent's share of this process's file "
                 "descriptors (%zu) is in use; try again later", budget);
    else if (peer->uid != 0 && descriptors_held(s, &peer->uid) + 1 > budget / 2)
        snprintf(why, cap, "too many connections from uid %ld: one user may hold at most %zu of "
                 "the agent's %zu descriptors; close some first", (long)peer->uid, budget / 2,
                 budget);
}

/* The peer's supplementary groups (SO_PEERGROUPS); 0 when unknown. */
static size_t peer_groups(int fd, gid_t *groups, size_t cap)
{
    socklen_t len = (socklen_t)(cap * sizeof *groups);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0)
        return 0;
    return len / sizeof *groups;
}

/* Keeps a refused connection for a moment, so the refusal can come in the form its request asks
 * for (JSON or plain); without a slot for that, refuses at once in plain form. */
static void refuse_later(struct hp_server *s, int fd, const struct hp_peer *peer,
                         const char *reason)
{
    size_t budget = descriptor_budget();
    struct client *c = NULL;
    if (count_clients(s, true) < refusal_slots(budget) &&
        descriptors_held(s, NULL) + 1 <= budget)
        c = add_client(s, fd, peer);
    if (!c) {
        refuse_now(fd, peer, reason);
        return;
    }
    hp_log("refused connection from uid %ld pid %ld: %s", (long)peer->uid, (long)peer->pid,
           reason);
    c->refusing = true;
    snprintf(c->refusal, sizeof c->refusal, "%s", reason);
    c->deadline_ms = now_ms() + REFUSAL_WAIT_MS;
}

static void admit(struct hp_server *s, int fd)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        refuse_now(fd, NULL, "cannot read the peer's credentials");
        return;
    }
    struct hp_peer peer = {cred.uid, cred.gid, cred.pid};
    gid_t groups[256];
    size_t n_groups = peer_groups(fd, groups, HP_ARRAY_SIZE(groups));
    char reason[HP_ERROR_MAX];
    if (!hp_policy_allows(&peer, groups, n_groups)) {
        char allowed[200];
        hp_policy_describe_allowed(allowed, sizeof allowed);
        snprintf(reason, sizeof reason, "permission denied: uid %ld may not control this process "
                 "(allowed: %s)", (long)peer.uid, allowed);
        refuse_later(s, fd, &peer, reason);
        return;
    }
    check_limits(s, &peer, reason, sizeof reason);
    if (reason[0]) {
        refuse_later(s, fd, &peer, reason);
        return;
    }
    if (!add_client(s, fd, &peer))
        refuse_now(fd, &peer, "cannot take the connection");
}

static void accept_pending(struct hp_server *s)
{
    for (int i = 0; i < 64; i++) {
        int fd = accept4(s->listener.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            admit(s, fd);
            continue;
        }
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* Out of descriptors: the pending connection stays queued; retry shortly instead
             * of spinning on a listen socket that stays readable. */
            if (now_ms() >= s->accept_pause_until_ms)
                hp_log("cannot accept connections: %s; retrying", strerror(errno));
            s->accept_pause_until_ms = now_ms() + 100;
        }
        return;
    }
}

/* Queues text as the reply; the connection switches to writing it. */
static void queue_reply(struct hp_server *s, struct client *c, char *text, size_t len, bool close)
{
    free(c->out);
    c->out = text;
    c->out_len = len;
    c->out_sent = 0;
    c->state = WRITING;
    c->close_after_write = close;
    c->deadline_ms = now_ms() + s->cfg.write_timeout_ms;
}

/* An error reply in the connection's form (JSON in a session); NULL when out of memory. */
static char *render_error(bool json, const char *message, size_t *len)
{
    struct hp_reply *reply = hp_reply_new();
    if (!reply)
        return NULL;
    hp_reply_error(reply, "%s", message);
    char *text = hp_reply_render(reply, json, len);
    hp_reply_free(reply);
    return text;
}

/* Queues an error and closes after sending it (or at once when it cannot be rendered). */
static void queue_error(struct hp_server *s, struct client *c, const char *message)
{
    size_t len = 0;
    char *text = render_error(c->in_session, message, &len);
    queue_reply(s, c, text, text ? len : 0, true);
}

/* True when a request line asks for JSON replies: a `json` prefix, or `session`. */
static bool line_wants_json(const char *line, size_t len)
{
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    size_t word = i;
    while (i < len && line[i] != ' ' && line[i] != '\t' && line[i] != '\r')
        i++;
    return (i - word == 4 && memcmp(line + word, "json", 4) == 0) ||
           (i - word == 7 && memcmp(line + word, "session", 7) == 0);
}

/* Answers a refused connection, in the form of its first line when one has arrived (`known`),
 * and records the refusal with that line. */
static void answer_refusal(struct hp_server *s, struct client *c, size_t len, bool known)
{
    hp_audit(HP_AUDIT_REFUSED, &c->peer, c->in, known ? len : c->in_len, false, c->refusal);
    size_t out_len = 0;
    char *text = render_error(known && line_wants_json(c->in, len), c->refusal, &out_len);
    queue_reply(s, c, text, text ? out_len : 0, true);
}

/* Runs the request in c->in[0..len), with the descriptor that came with it, and queues its
 * reply; the descriptor is closed afterwards (a handler that keeps one has its own dup). */
/* `detach`: the socket file goes and nothing more is accepted, at once. */
static void stop_listening(struct hp_server *s)
{
    pthread_mutex_lock(&s->file_lock);
    hp_socket_file_remove(&s->file);
    s->file.path[0] = 0;
    pthread_mutex_unlock(&s->file_lock);
    release(&s->listener);
    __atomic_store_n(&s->detaching, 1, __ATOMIC_RELEASE);
}

static void serve_line(struct hp_server *s, struct client *c, size_t len)
{
    if (c->refusing) {
        answer_refusal(s, c, len, true);
        return;
    }
    bool extra = c->extra_fds;
    int fd = still_ours(&c->pending_fd) ? c->pending_fd.fd : -1;
    struct hp_reply *reply = hp_reply_new();
    if (!reply || extra) {
        hp_reply_free(reply);
        release(&c->pending_fd);
        c->extra_fds = false;
        queue_error(s, c, extra ? "more than one file descriptor came with the request (at most "
                                  "one may); nothing was done"
                                : "out of memory");
        return;
    }
    bool json = false;
    enum hp_after after = HP_AFTER_CLOSE;
    struct hp_line line = {c->in, len, &c->peer, fd, c->in_session};
    hp_handle_request(&line, reply, &json, &after);
    release(&c->pending_fd);
    if (after == HP_AFTER_DETACH) {
        stop_listening(s);      /* before the reply: whoever reads it finds no socket */
        after = HP_AFTER_CLOSE;
    }
    /* The reply that opens or closes a session is already in the session's JSON form. */
    bool session_reply = c->in_session || after == HP_AFTER_KEEP;
    c->in_session = after == HP_AFTER_KEEP;
    size_t out_len = 0;
    char *out = hp_reply_render(reply, json || session_reply, &out_len);
    hp_reply_free(reply);
    if (!out) {
        queue_error(s, c, "out of memory while rendering the reply");
        return;
    }
    queue_reply(s, c, out, out_len, !c->in_session);
}

/* If the buffer holds a complete line, serves it and drops it from the buffer. */
static bool serve_buffered_line(struct hp_server *s, struct client *c)
{
    char *newline = memchr(c->in, '\n', c->in_len);
    if (!newline)
        return false;
    size_t len = (size_t)(newline - c->in);
    serve_line(s, c, len);
    size_t rest = c->in_len - len - 1;
    memmove(c->in, newline + 1, rest);
    c->in_len = rest;
    return true;
}

#define MAX_FDS_PER_READ 4         /* more are discarded by the kernel (MSG_CTRUNC) */

/* Keeps the first descriptor that came with the line being read; closes any other. */
static void take_descriptors(struct client *c, struct msghdr *msg)
{
    if (msg->msg_flags & MSG_CTRUNC)
        c->extra_fds = true;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof fd, sizeof fd);
            if (c->pending_fd.fd < 0 && !c->refusing) {
                own(&c->pending_fd, fd);
                continue;
            }
            close(fd);
            c->extra_fds = !c->refusing;
        }
    }
}

/* recv(2) that also takes the descriptors a client sends with its request (SCM_RIGHTS). */
static ssize_t receive(struct client *c, size_t room)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * MAX_FDS_PER_READ)];
        struct cmsghdr align;
    } control;
    struct iovec iov = {c->in + c->in_len, room};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    ssize_t n = recvmsg(c->sock.fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n >= 0)
        take_descriptors(c, &msg);
    return n;
}

/* Reads what is available; returns false when the connection should be closed now. */
static bool read_from(struct hp_server *s, struct client *c)
{
    size_t room = sizeof c->in - c->in_len;
    ssize_t n = receive(c, room);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    if (n == 0 && c->refusing) {
        answer_refusal(s, c, c->in_len, c->in_len > 0);
        return true;
    }
    if (n == 0) {
        /* The client finished sending. A complete line was already served; a partial one is
         * refused rather than executed, because it may be a command cut short. */
        if (c->in_len == 0)
            return false;
        queue_error(s, c, "request ended without a newline; nothing was done");
        return true;
    }
    c->in_len += (size_t)n;
    if (serve_buffered_line(s, c))
        return true;
    if (c->in_len == sizeof c->in && c->refusing) {
        answer_refusal(s, c, c->in_len, true);
    } else if (c->in_len == sizeof c->in) {
        char message[96];
        snprintf(message, sizeof message, "request line longer than %d bytes; nothing was done",
                 HP_LINE_MAX);
        queue_error(s, c, message);
    }
    return true;
}

/* Discards input until the client closes; returns false when the connection should close. */
static bool drain(struct client *c)
{
    char sink[4096];
    ssize_t n = recv(c->sock.fd, sink, sizeof sink, MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    c->drained += (size_t)n;
    return n > 0 && c->drained < DRAIN_BYTES;
}

/* Sends what the socket takes; returns false when the connection should be closed now. */
static bool write_to(struct hp_server *s, struct client *c)
{
    while (c->out_sent < c->out_len) {
        ssize_t n = send(c->sock.fd, c->out + c->out_sent, c->out_len - c->out_sent,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        c->out_sent += (size_t)n;
    }
    if (c->close_after_write) {
        shutdown(c->sock.fd, SHUT_WR);
        c->state = DRAINING;
        c->deadline_ms = now_ms() + DRAIN_MS;
        return true;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_sent = 0;
    c->state = READING;
    c->deadline_ms = now_ms() + s->cfg.session_timeout_ms;
    /* A session client may have sent its next requests already. */
    if (serve_buffered_line(s, c))
        return write_to(s, c);
    return true;
}

static void expire(struct hp_server *s, size_t index)
{
    struct client *c = s->clients[index];
    if (c->refusing && c->state == READING) {
        answer_refusal(s, c, c->in_len, false);  /* no line in time: the plain form */
        return;
    }
    if (c->state == READING) {
        size_t len;
        char *text = render_error(c->in_session,
                                  c->in_session ? "session idle for too long; closing"
                                                : "timed out waiting for a complete request line",
                                  &len);
        if (text)
            send_and_forget(c->sock.fd, text);
        free(text);
    }
    close_client(s, index);
}

/* ---- the loop ------------------------------------------------------------------------------ */

#define CHECK_INTERVAL_MS 1000  /* descriptors are re-verified at least this often */

static int next_timeout(const struct hp_server *s, long long now)
{
    long long soonest = now + CHECK_INTERVAL_MS;
    for (size_t i = 0; i < s->client_count; i++)
        if (s->clients[i]->deadline_ms < soonest)
            soonest = s->clients[i]->deadline_ms;
    if (s->accept_pause_until_ms > now && s->accept_pause_until_ms < soonest)
        soonest = s->accept_pause_until_ms;
    return soonest <= now ? 0 : (int)(soonest - now);
}

/*
 * Listens on the path again with a new socket: after the program took the listen socket, or
 * after a failed exec. The path must be absent or still the file this server created (now
 * unanswered); anything else there is left alone. While an exec is in flight nothing is bound:
 * hp_server_unhide_after_exec() asks again. Server thread only.
 */
static bool listen_again(struct hp_server *s, const char *why)
{
    pthread_mutex_lock(&s->file_lock);
    if (s->hidden) {
        s->listener_lost = false;
        pthread_mutex_unlock(&s->file_lock);
        return false;
    }
    hp_socket_file_remove(&s->file); /* only if still ours; a taken name means the fallback */
    int rc = bind_socket(s);
    pthread_mutex_unlock(&s->file_lock);
    if (rc != 0 && !s->listener_lost)
        hp_log("%s; cannot listen on %s again yet (%s); retrying every second", why, s->wanted,
               strerror(-rc));
    s->listener_lost = rc != 0;
    return rc == 0;
}

/* The program closed or replaced our listen socket: worth a line, the program is at odds with
 * the agent. (A failed exec is the program's own affair and is not logged.) */
static void recover_listener(struct hp_server *s)
{
    s->listener.fd = -1; /* not ours any more: never close it */
    const char *why = "the program closed the agent's listen socket";
    if (listen_again(s, why))
        hp_log("%s; listening again on %s", why, s->file.path);
}

/* An exec failed after the socket file was removed for it. */
static void listen_after_failed_exec(struct hp_server *s)
{
    release(&s->listener); /* still bound to the removed file: nobody can reach it */
    listen_again(s, "an exec failed");
}

static void recover_wake(struct hp_server *s)
{
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct owned_fd fresh = {-1, 0, 0};
    own(&fresh, fd);
    __atomic_store_n(&s->wake.fd, -1, __ATOMIC_SEQ_CST);
    s->wake.dev = fresh.dev;
    s->wake.ino = fresh.ino;
    __atomic_store_n(&s->wake.fd, fresh.fd, __ATOMIC_SEQ_CST);
}

/* Re-verifies the server's own descriptors; forgets clients whose descriptor was taken. */
static void check_descriptors(struct hp_server *s)
{
    if (__atomic_exchange_n(&s->relisten, 0, __ATOMIC_ACQ_REL))
        listen_after_failed_exec(s);
    if (s->listener_lost || (s->listener.fd >= 0 && !still_ours(&s->listener)))
        recover_listener(s);
    if (!still_ours(&s->wake))
        recover_wake(s);
    for (size_t i = s->client_count; i-- > 0;)
        if (!still_ours(&s->clients[i]->sock))
            close_client(s, i);
}

static void serve_events(struct hp_server *s, struct pollfd *fds, size_t polled)
{
    /* fds[2 + i] belongs to the client that was at index i when poll was called; closing
     * swaps the last client into the hole, so walk backwards to keep indices valid. */
    for (size_t i = polled; i-- > 0;) {
        struct client *c = s->clients[i];
        short ev = fds[2 + i].revents;
        if (!ev)
            continue;
        if ((ev & POLLNVAL) || !still_ours(&c->sock)) {
            close_client(s, i); /* the program closed or replaced it: forget, never close */
            continue;
        }
        bool keep = true;
        if (c->state == READING && (ev & (POLLIN | POLLHUP | POLLERR)))
            keep = read_from(s, c);
        else if (c->state == WRITING && (ev & (POLLOUT | POLLERR | POLLHUP)))
            keep = write_to(s, c);
        else if (c->state == DRAINING)
            keep = drain(c);
        if (keep && c->state == WRITING && c->out_sent == 0)
            keep = write_to(s, c);
        if (!keep)
            close_client(s, i);
    }
}

/* Empties the eventfd so the next poll sleeps again. */
static void drain_wake(struct hp_server *s)
{
    uint64_t count;
    if (still_ours(&s->wake)) {
        ssize_t ignored = read(s->wake.fd, &count, sizeof count);
        (void)ignored;
    }
}

/* A delayed start (a forked child's agent) waits first, so a child that execs right after
 * fork never creates a socket. Returns false when the server is stopped during the wait. */
static bool delayed_bind(struct hp_server *s)
{
    long long until = now_ms() + s->cfg.start_delay_ms;
    for (long long now = now_ms(); now < until; now = now_ms()) {
        /* If the program has taken the eventfd's number, nap in short steps instead. */
        bool ours = still_ours(&s->wake);
        long long left = until - now;
        struct pollfd wake = {.fd = ours ? s->wake.fd : -1, .events = POLLIN};
        if (poll(&wake, 1, (int)(ours || left < 100 ? left : 100)) > 0)
            drain_wake(s);
        if (__atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE))
            return false;
    }
    __atomic_store_n(&s->relisten, 0, __ATOMIC_RELEASE); /* the first bind is still to come */
    pthread_mutex_lock(&s->file_lock);
    int rc = s->hidden ? 0 : bind_socket(s); /* hidden: the failed exec's request will bind */
    pthread_mutex_unlock(&s->file_lock);
    if (rc != 0)
        hp_log("cannot serve %s: %s", s->wanted, strerror(-rc));
    return rc == 0;
}

/* True while some connection still has a reply to send. */
static bool replies_pending(const struct hp_server *s)
{
    for (size_t i = 0; i < s->client_count; i++)
        if (s->clients[i]->state == WRITING)
            return true;
    return false;
}

/* After `detach`: the thread ends once the replies are sent. The server object stays for
 * hp_server_stop (the next start, or exit) to join and free. */
static void finish_detach(struct hp_server *s)
{
    while (s->client_count > 0)
        close_client(s, s->client_count - 1);
    hp_log("agent detached: socket %s removed, server stopped", s->wanted);
}

static void *server_main(void *arg)
{
    struct hp_server *s = arg;
    if (s->cfg.start_delay_ms > 0 && !delayed_bind(s))
        return NULL;
    size_t cap = (size_t)s->cfg.max_clients + REFUSAL_SLOTS + 2;
    struct pollfd *fds = calloc(cap, sizeof *fds);
    if (!fds) {
        hp_log("server thread cannot allocate its poll set; not serving");
        return NULL;
    }
    while (!__atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE)) {
        if (s->detaching && !replies_pending(s)) {
            finish_detach(s);
            break;
        }
        check_descriptors(s);
        long long now = now_ms();
        for (size_t i = s->client_count; i-- > 0;)
            if (s->clients[i]->deadline_ms <= now)
                expire(s, i);
        fds[0] = (struct pollfd){.fd = s->wake.fd, .events = POLLIN};
        bool accepting = now >= s->accept_pause_until_ms && !s->detaching;
        fds[1] = (struct pollfd){.fd = accepting ? s->listener.fd : -1, .events = POLLIN};
        for (size_t i = 0; i < s->client_count; i++) {
            struct client *c = s->clients[i];
            fds[2 + i] = (struct pollfd){.fd = c->sock.fd,
                                         .events = c->state == WRITING ? POLLOUT : POLLIN};
        }
        size_t polled = s->client_count;
        int n = poll(fds, 2 + polled, next_timeout(s, now));
        if (n < 0 && errno != EINTR) {
            hp_log("poll failed: %s; server stops", strerror(errno));
            break;
        }
        if (n <= 0)
            continue;
        if (fds[0].revents)
            drain_wake(s); /* stopping or relisten: both looked at on the next turn */
        serve_events(s, fds, polled);
        if (fds[1].revents & POLLIN)
            accept_pending(s);
    }
    free(fds);
    return NULL;
}

/* ---- start and stop ------------------------------------------------------------------------ */

static void destroy(struct hp_server *s)
{
    release(&s->listener);
    release(&s->wake);
    while (s->client_count > 0)
        close_client(s, s->client_count - 1);
    free(s->clients);
    pthread_mutex_destroy(&s->file_lock);
    free(s);
}

static int start_thread(struct hp_server *s)
{
    sigset_t all, saved;
    sigfillset(&all);
    int synchronous[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS};
    for (size_t i = 0; i < HP_ARRAY_SIZE(synchronous); i++)
        sigdelset(&all, synchronous[i]);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    s->program_mask = saved;
    int rc = pthread_create(&s->thread, NULL, server_main, s);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (rc == 0)
        pthread_setname_np(s->thread, "hotpatch");
    return -rc;
}

int hp_server_start(const struct hp_server_config *cfg, struct hp_server **out)
{
    struct hp_server *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    s->listener.fd = -1;
    pthread_mutex_init(&s->file_lock, NULL);
    own(&s->wake, eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    s->clients = calloc((size_t)cfg->max_clients + REFUSAL_SLOTS, sizeof *s->clients);
    size_t len = strlen(cfg->socket_path);
    int rc = s->wake.fd < 0 ? -EMFILE : !s->clients ? -ENOMEM
             : len >= sizeof s->wanted ? -ENAMETOOLONG : 0;
    if (rc == 0)
        memcpy(s->wanted, cfg->socket_path, len + 1);
    s->cfg.socket_path = s->wanted;
    if (rc == 0 && cfg->start_delay_ms <= 0)
        rc = bind_socket(s);
    if (rc == 0)
        rc = start_thread(s);
    if (rc != 0) {
        hp_socket_file_remove(&s->file);
        hp_log("cannot serve %s: %s", cfg->socket_path, strerror(-rc));
        destroy(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* Makes the thread look at its flags now; if the program has taken the eventfd's number, the
 * thread still sees them within CHECK_INTERVAL_MS. Any thread. */
static void wake_thread(struct hp_server *s)
{
    struct owned_fd wake = {__atomic_load_n(&s->wake.fd, __ATOMIC_SEQ_CST), s->wake.dev,
                            s->wake.ino};
    uint64_t one = 1;
    if (still_ours(&wake)) {
        ssize_t ignored = write(wake.fd, &one, sizeof one);
        (void)ignored;
    }
}

void hp_server_stop(struct hp_server *s)
{
    __atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
    wake_thread(s);
    pthread_join(s->thread, NULL);
    hp_socket_file_remove(&s->file);
    destroy(s);
}

void hp_server_hide_for_exec(struct hp_server *s)
{
    pthread_mutex_lock(&s->file_lock);
    s->hidden = true;
    hp_socket_file_remove(&s->file);
    pthread_mutex_unlock(&s->file_lock);
}

void hp_server_unhide_after_exec(struct hp_server *s)
{
    pthread_mutex_lock(&s->file_lock);
    s->hidden = false;
    pthread_mutex_unlock(&s->file_lock);
    __atomic_store_n(&s->relisten, 1, __ATOMIC_RELEASE);
    wake_thread(s);
}

const sigset_t *hp_server_program_mask(const struct hp_server *s)
{
    return &s->program_mask;
}

bool hp_server_detached(const struct hp_server *s)
{
    return __atomic_load_n(&s->detaching, __ATOMIC_ACQUIRE) != 0;
}

bool hp_server_is_current_thread(const struct hp_server *s)
{
    return pthread_equal(pthread_self(), s->thread);
}

int hp_server_path(struct hp_server *s, char *buf, size_t cap)
{
    pthread_mutex_lock(&s->file_lock);
    const char *path = s->file.path[0] ? s->file.path : s->wanted;
    int n = snprintf(buf, cap, "%s", path);
    pthread_mutex_unlock(&s->file_lock);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : n;
}

/* For fork: the child must not serve, join or unlink anything of the parent's server. */
void hp_server_abandon(struct hp_server *s)
{
    release(&s->listener);
    release(&s->wake);
    for (size_t i = 0; i < s->client_count; i++)
        release(&s->clients[i]->sock);
    /* The memory is not freed: another thread of the parent may have been using it at fork
     * time, and it is small; leaking it in the child is the safe choice. */
}
