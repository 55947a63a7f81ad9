/*
 * fleet.c — many targets in parallel child processes, bounded. See fleet.h for why.
 *
 * The parent keeps at most `jobs` children; each writes into two pipes (its stdout and stderr)
 * that the parent drains with poll(), so a child never blocks on a full pipe. What a child
 * prints is kept up to CAPTURE_LIMIT bytes per stream (a reply is at most 8 MiB). A child
 * still running at its deadline is killed (SIGKILL) and its target reported as unreachable.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fleet.h"
#include "message.h"

#define CAPTURE_LIMIT (16u << 20)

struct capture {
    char *data;
    size_t len, cap;
    int fd;                      /* the read end, -1 once at its end */
};

struct slot {
    pid_t child;
    struct capture out, err;
    long long deadline_ms;
    bool started, finished;
    int status;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void capture_append(struct capture *c, const char *data, size_t len)
{
    if (c->len + len > CAPTURE_LIMIT)
        len = CAPTURE_LIMIT - c->len;
    if (c->len + len + 1 > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + len + 1)
            cap *= 2;
        char *grown = realloc(c->data, cap);
        if (!grown)
            return;
        c->data = grown;
        c->cap = cap;
    }
    memcpy(c->data + c->len, data, len);
    c->len += len;
    c->data[c->len] = '\0';
}

/* Reads what is there; at the end (or on an error) closes the descriptor. */
static void capture_read(struct capture *c)
{
    char buf[65536];
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        close(c->fd);
        c->fd = -1;
        return;
    }
    capture_append(c, buf, (size_t)n);
}

/* In the child: stdout and stderr become the pipes, then the target runs. Never returns. */
static void run_child(size_t index, int out_fd, int err_fd, target_fn run, void *context)
{
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    close(out_fd);
    close(err_fd);
    forget_messages();
    int status = run(index, context);
    fflush(stdout);
    fflush(stderr);
    _exit(status);
}

static bool start_slot(struct slot *s, size_t index, int deadline_ms, target_fn run,
                       void *context)
{
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0)
        return false;
    if (pipe2(err, O_CLOEXEC) != 0) {
        close(out[0]);
        close(out[1]);
        return false;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t child = fork();
    if (child == 0) {
        close(out[0]);
        close(err[0]);
        run_child(index, out[1], err[1], run, context);
    }
    close(out[1]);
    close(err[1]);
    if (child < 0) {
        close(out[0]);
        close(err[0]);
        return false;
    }
    *s = (struct slot){.child = child, .out.fd = out[0], .err.fd = err[0], .started = true,
                       .deadline_ms = now_ms() + deadline_ms};
    return true;
}

static void reap(struct slot *s)
{
    int wstatus = 0;
    while (waitpid(s->child, &wstatus, 0) < 0 && errno == EINTR)
        ;
    s->status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 2;
    if (s->status > 2)
        s->status = 2;
    s->finished = true;
}

static void kill_at_deadline(struct slot *s, int deadline_ms)
{
    kill(s->child, SIGKILL);
    for (struct capture *c = &s->out; c <= &s->err; c++)
        if (c->fd >= 0) {
            close(c->fd);
            c->fd = -1;
        }
    char text[128];
    int n = snprintf(text, sizeof text, "hotpatch: no result within %d ms; gave up\n",
                     deadline_ms);
    capture_append(&s->err, text, (size_t)n);
    reap(s);
    s->status = 2;
}

/* Waits for output of the running children (until the nearest deadline) and reads it. */
static void poll_running(struct slot *slots, size_t from, size_t to)
{
    struct pollfd fds[2 * JOBS_LIMIT];
    struct capture *owners[2 * JOBS_LIMIT];
    nfds_t n = 0;
    long long nearest = -1;
    for (size_t i = from; i < to; i++) {
        struct slot *s = &slots[i];
        if (!s->started || s->finished)
            continue;
        if (nearest < 0 || s->deadline_ms < nearest)
            nearest = s->deadline_ms;
        for (struct capture *c = &s->out; c <= &s->err; c++)
            if (c->fd >= 0 && n < 2 * JOBS_LIMIT) {
                fds[n] = (struct pollfd){.fd = c->fd, .events = POLLIN};
                owners[n++] = c;
            }
    }
    long long wait = nearest < 0 ? 0 : nearest - now_ms();
    if (poll(fds, n, wait < 0 ? 0 : (int)(wait > 1000 ? 1000 : wait)) <= 0)
        return;
    for (nfds_t i = 0; i < n; i++)
        if (fds[i].revents)
            capture_read(owners[i]);
}

/* Reaps children whose output has ended, and kills those past their deadline. */
static size_t settle(struct slot *slots, size_t from, size_t to, int deadline_ms)
{
    size_t running = 0;
    long long now = now_ms();
    for (size_t i = from; i < to; i++) {
        struct slot *s = &slots[i];
        if (!s->started || s->finished)
            continue;
        if (s->out.fd < 0 && s->err.fd < 0)
            reap(s);
        else if (now >= s->deadline_ms)
            kill_at_deadline(s, deadline_ms);
        else
            running++;
    }
    return running;
}

bool run_parallel(size_t n, int jobs, int deadline_ms, target_fn run, result_fn done,
                  void *context)
{
    struct slot *slots = calloc(n ? n : 1, sizeof *slots);
    if (!slots) {
        say("out of memory");
        return false;
    }
    if (jobs < 1)
        jobs = 1;
    if (jobs > JOBS_LIMIT)
        jobs = JOBS_LIMIT;
    size_t next_start = 0, next_done = 0, running = 0;
    bool ok = true;
    while (next_done < n) {
        while (ok && running < (size_t)jobs && next_start < n) {
            if (!start_slot(&slots[next_start], next_start, deadline_ms, run, context)) {
                say("cannot start a process for the next target: %s", strerror(errno));
                ok = false;
                break;
            }
            next_start++;
            running++;
        }
        poll_running(slots, next_done, next_start);
        running = settle(slots, next_done, next_start, deadline_ms);
        for (; next_done < next_start && slots[next_done].finished; next_done++) {
            struct slot *s = &slots[next_done];
            done(next_done, s->status, s->out.data ? s->out.data : "", s->out.len,
                 s->err.data ? s->err.data : "", s->err.len, context);
            free(s->out.data);
            free(s->err.data);
        }
        if (!ok && next_done == next_start)
            break;
    }
    free(slots);
    return ok;
}

void write_prefixed(FILE *out, long pid, const char *text, size_t len)
{
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - text) : len;
        fprintf(out, "%ld: ", pid);
        fwrite(text + i, 1, end - i, out);
        fputc('\n', out);
        i = end + 1;
    }
}

int combine_status(int so_far, int status)
{
    if (status != 0 && status != 1)
        status = 2;
    return so_far > status ? so_far : status;
}
