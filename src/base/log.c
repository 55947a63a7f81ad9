/*
 * log.c — the agent's diagnostics.
 *
 * The agent lives inside someone else's program, so it never writes to stdout and never uses
 * stdio buffers the program may be using: each message is formatted into a local buffer and
 * written to stderr with a single write(2), so lines from several threads do not interleave.
 * A message that does not fit is truncated; a failed write is ignored (logging must never be
 * the reason the host fails).
 *
 * The preload agent may send the lines elsewhere (HOTPATCH_LOG) with hp_log_set_sink(); the
 * sink is set once, before the agent starts, and read with an atomic load.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base.h"

static hp_log_sink log_sink;   /* NULL: stderr. Set by preload.c before the agent starts. */

void hp_log_set_sink(hp_log_sink sink)
{
    __atomic_store_n(&log_sink, sink, __ATOMIC_RELEASE);
}

void hp_log(const char *fmt, ...)
{
    char line[1024];
    int saved_errno = errno;
    int n = snprintf(line, sizeof line, "hotpatch[%ld]: ", (long)getpid());

    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';

    hp_log_sink sink = __atomic_load_n(&log_sink, __ATOMIC_ACQUIRE);
    if (sink) {
        sink(line, len);
    } else {
        ssize_t ignored = write(STDERR_FILENO, line, len);
        (void)ignored;
    }
    errno = saved_errno;
}
