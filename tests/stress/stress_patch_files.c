/*
 * stress_patch_files.c — a whole patch goes in and out at once, under load, end to end.
 *
 * Usage: stress_patch_files PATCH [THREADS [CYCLES]]   (defaults: 8 threads, 2000 cycles)
 *
 * This program links libhotpatch and starts its agent; THREADS threads call stress_a(),
 * stress_b() and stress_c() in a loop, one iteration each; the main thread opens one session
 * on the agent's own socket and sends `patch apply PATCH` and `patch revert stress-trio` CYCLES
 * times: the whole request path (server, protocol, command, metadata and build-id checks,
 * dlopen of the descriptor, the engine's batch) runs every cycle. PATCH
 * (stress_patch_files_fix.c, built with hotpatch_add_patch FOR this program) replaces all three:
 * 1, 2, 3 become 101, 102, 103.
 *
 * The check: a generation counter goes odd before each request and even after its reply. An
 * iteration that read the same even generation before its first call and after its last ran
 * entirely after one request finished and before the next began, so all three results must be
 * of the one version that request left (new after an apply, old after a revert): a thread that
 * sees the new a() sees the new b() and c(), and the old ones after a revert. Every result of
 * every iteration must be one version's exact value. A revert whose file cannot be unmapped yet
 * (a thread still inside the patch's code) is sent again until it is unloaded, as an operator
 * would; those retries are counted.
 *
 * The session's receive has a timeout (SO_RCVTIMEO), so a stop that interrupted the main
 * thread's blocked recv() makes it fail with EINTR unless the stop rewinds it; a revert makes
 * two stops back to back, which is where a rewind was once lost. An EINTR seen here is counted,
 * retried, and fails the run: the program must not see the stops.
 *
 * Exit 0 when every check held, 1 otherwise (with what was seen).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "hotpatch.h"

#if defined(__clang__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE __attribute__((noinline, noipa))
#endif

NOINLINE int stress_a(void);
NOINLINE int stress_b(void);
NOINLINE int stress_c(void);
NOINLINE int stress_a(void) { volatile int v = 1; return v; }
NOINLINE int stress_b(void) { volatile int v = 2; return v; }
NOINLINE int stress_c(void) { volatile int v = 3; return v; }

static struct {
    atomic_ulong generation;     /* odd while a request is in flight */
    atomic_int stop;
    atomic_ulong iterations, checked, mixed_while_stable, wrong_version, torn;
} run;

static bool is_version(int a, int b, int c, int base)
{
    return a == base + 1 && b == base + 2 && c == base + 3;
}

static void *caller(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&run.stop, memory_order_relaxed)) {
        unsigned long before = atomic_load(&run.generation);
        int a = stress_a(), b = stress_b(), c = stress_c();
        unsigned long after = atomic_load(&run.generation);
        atomic_fetch_add_explicit(&run.iterations, 1, memory_order_relaxed);
        bool old = is_version(a, b, c, 0), fresh = is_version(a, b, c, 100);
        if ((a != 1 && a != 101) || (b != 2 && b != 102) || (c != 3 && c != 103))
            atomic_fetch_add(&run.torn, 1);
        if (before != after || before % 2)
            continue;
        atomic_fetch_add_explicit(&run.checked, 1, memory_order_relaxed);
        bool applied = (before / 2) % 2 == 1;   /* generation 2: after the first apply */
        if (!old && !fresh)
            atomic_fetch_add(&run.mixed_while_stable, 1);
        else if (fresh != applied)
            atomic_fetch_add(&run.wrong_version, 1);
    }
    return NULL;
}

/* ---- the session ----------------------------------------------------------------------- */

static int session_fd = -1;
static unsigned long interrupted_receives;
static char buffer[65536];
static size_t buffered;

static bool read_reply(char *out, size_t cap)
{
    for (;;) {
        char *nl = memchr(buffer, '\n', buffered);
        if (nl) {
            size_t len = (size_t)(nl - buffer);
            snprintf(out, cap, "%.*s", (int)len, buffer);
            memmove(buffer, nl + 1, buffered - len - 1);
            buffered -= len + 1;
            return true;
        }
        if (buffered == sizeof buffer)
            return false;
        ssize_t n = recv(session_fd, buffer + buffered, sizeof buffer - buffered, 0);
        if (n < 0 && errno == EINTR) {
            interrupted_receives++;     /* see the note at the top: a failure, after the run */
            continue;
        }
        if (n < 0)
            fprintf(stderr, "stress_patch_files: recv: %s\n", strerror(errno));
        if (n <= 0)
            return false;
        buffered += (size_t)n;
    }
}

static bool request(const char *line, char *reply, size_t cap)
{
    size_t len = strlen(line);
    if (send(session_fd, line, len, MSG_NOSIGNAL) != (ssize_t)len) {
        snprintf(reply, cap, "cannot send '%s'", line);
        return false;
    }
    if (!read_reply(reply, cap)) {
        snprintf(reply, cap, "no reply to '%s'", line);
        return false;
    }
    return strstr(reply, "\"ok\":true") != NULL;
}

static bool open_session(void)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (hotpatch_socket_path(addr.sun_path, sizeof addr.sun_path) < 0)
        return false;
    session_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval timeout = {60, 0};
    setsockopt(session_fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    for (int i = 0; i < 500; i++) {
        if (connect(session_fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
            char reply[4096];
            return request("session\n", reply, sizeof reply);
        }
        usleep(10000);
    }
    return false;
}

/* One request, bracketed by the generation: odd while it is in flight. */
static bool transition(const char *line, char *reply, size_t cap)
{
    atomic_fetch_add(&run.generation, 1);
    bool ok = request(line, reply, cap);
    atomic_fetch_add(&run.generation, 1);
    return ok;
}

static int cycle(const char *apply, unsigned long *retries)
{
    char reply[8192];
    if (!transition(apply, reply, sizeof reply)) {
        fprintf(stderr, "stress_patch_files: apply refused: %s\n", reply);
        return 1;
    }
    if (!transition("patch revert stress-trio\n", reply, sizeof reply)) {
        fprintf(stderr, "stress_patch_files: revert refused: %s\n", reply);
        return 1;
    }
    /* Reverted but still mapped: the functions already run the old code; ask again (this
     * changes no function, so the generation stays even and the checks go on). */
    for (int i = 0; strstr(reply, "\"unloaded\":false") && i < 1000; i++) {
        (*retries)++;
        usleep(1000);
        if (!request("patch revert stress-trio\n", reply, sizeof reply)) {
            fprintf(stderr, "stress_patch_files: revert refused: %s\n", reply);
            return 1;
        }
    }
    if (strstr(reply, "\"unloaded\":false")) {
        fprintf(stderr, "stress_patch_files: the patch stayed mapped: %s\n", reply);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: stress_patch_files PATCH [THREADS [CYCLES]]\n");
        return 2;
    }
    char patch[4096];
    if (!realpath(argv[1], patch)) {
        fprintf(stderr, "stress_patch_files: no patch file %s\n", argv[1]);
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 8, cycles = argc > 3 ? atoi(argv[3]) : 2000;
    if (threads < 1 || threads > 64 || cycles < 1) {
        fprintf(stderr, "stress_patch_files: 1-64 threads and at least one cycle\n");
        return 2;
    }
    if (hotpatch_start() != 0 || !open_session()) {
        fprintf(stderr, "stress_patch_files: cannot reach the agent\n");
        return 1;
    }
    char apply[4200];
    snprintf(apply, sizeof apply, "patch apply %s\n", patch);
    pthread_t tid[64];
    for (int i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, caller, NULL);
    unsigned long retries = 0;
    int rc = 0;
    for (int i = 0; i < cycles && rc == 0; i++)
        rc = cycle(apply, &retries);
    atomic_store(&run.stop, 1);
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    bool original = is_version(stress_a(), stress_b(), stress_c(), 0);
    printf("stress_patch_files: %d threads, %d apply/revert cycles, %lu iterations (%lu within "
           "one state), %lu revert retries, %lu receives interrupted; mixed within one state "
           "%lu, wrong version %lu, torn %lu; original code at the end: %s\n",
           threads, cycles, atomic_load(&run.iterations), atomic_load(&run.checked), retries,
           interrupted_receives,
           atomic_load(&run.mixed_while_stable), atomic_load(&run.wrong_version),
           atomic_load(&run.torn), original ? "yes" : "NO");
    close(session_fd);
    hotpatch_stop();
    if (rc != 0 || !original || atomic_load(&run.mixed_while_stable) ||
        atomic_load(&run.wrong_version) || atomic_load(&run.torn) ||
        atomic_load(&run.checked) == 0 || interrupted_receives)
        return 1;
    return 0;
}
