/*
 * agent.c — the agent's life cycle: hotpatch_start(), hotpatch_stop(), exit and fork.
 *
 * The process has at most one agent. Its state is one pointer, `running`, owned by this file
 * and guarded by agent_lock; start and stop are idempotent and may race from any threads.
 *
 * Configuration comes from the environment, read at start (documented in docs/protocol.md):
 *   HOTPATCH_SOCKET                socket path (default /tmp/<pid>.socket)
 *   HOTPATCH_IDLE_TIMEOUT_MS       time to send a complete request (default 10000)
 *   HOTPATCH_SESSION_TIMEOUT_MS    idle time allowed between requests in a session (300000)
 *   HOTPATCH_WRITE_TIMEOUT_MS      time a client has to take its reply (10000)
 *   HOTPATCH_MAX_CLIENTS           simultaneous connections (512)
 * A value that does not parse is ignored with a log line; the agent never refuses to start
 * because of a tuning knob.
 *
 * Exit: a destructor stops the agent so the socket disappears on normal exit. Fork: the child
 * inherits the agent's memory but not its thread, so pthread_atfork handlers (installed when
 * the library loads) hold the agent and registry locks across the fork, and the child forgets
 * the parent's server (closing only descriptors): it never joins a thread it does not have nor
 * unlinks the parent's socket, and may call hotpatch_start() for its own.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static pthread_mutex_t agent_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hp_server *running;          /* guarded by agent_lock */

static int env_int(const char *name, int fallback, int min, int max)
{
    const char *text = getenv(name);
    if (!text || !*text)
        return fallback;
    char *end;
    long v = strtol(text, &end, 10);
    if (*end || v < min || v > max) {
        hp_log("ignoring %s=%s: expected a whole number from %d to %d", name, text, min, max);
        return fallback;
    }
    return (int)v;
}

HOTPATCH_API int hotpatch_socket_path(char *buf, size_t cap)
{
    if (!buf || cap == 0)
        return -EINVAL;
    pthread_mutex_lock(&agent_lock);
    int n;
    const char *env = getenv("HOTPATCH_SOCKET");
    if (running)
        n = snprintf(buf, cap, "%s", hp_server_path(running));
    else if (env && *env)
        n = snprintf(buf, cap, "%s", env);
    else
        n = snprintf(buf, cap, "/tmp/%ld.socket", (long)getpid());
    pthread_mutex_unlock(&agent_lock);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : n;
}

/*
 * fork(): both locks are held across the fork so the child inherits consistent state and
 * unlocked mutexes; the child then forgets the parent's server (its thread does not exist in
 * the child) without touching the parent's socket file.
 */
static void lock_before_fork(void)
{
    pthread_mutex_lock(&agent_lock);
    hp_registry_before_fork();
}

static void unlock_in_parent(void)
{
    hp_registry_after_fork();
    pthread_mutex_unlock(&agent_lock);
}

static void forget_parent_agent(void)
{
    hp_registry_after_fork();
    if (running)
        hp_server_abandon(running);
    running = NULL;
    pthread_mutex_unlock(&agent_lock);
}

__attribute__((constructor)) static void install_fork_handler(void)
{
    pthread_atfork(lock_before_fork, unlock_in_parent, forget_parent_agent);
}

HOTPATCH_API int hotpatch_start(void)
{
    char path[PATH_MAX];
    int rc = hotpatch_socket_path(path, sizeof path);
    if (rc < 0)
        return rc;
    struct hp_server_config cfg = {
        .socket_path = path,
        .idle_timeout_ms = env_int("HOTPATCH_IDLE_TIMEOUT_MS", 10000, 10, 3600000),
        .session_timeout_ms = env_int("HOTPATCH_SESSION_TIMEOUT_MS", 300000, 10, 86400000),
        .write_timeout_ms = env_int("HOTPATCH_WRITE_TIMEOUT_MS", 10000, 10, 3600000),
        .max_clients = env_int("HOTPATCH_MAX_CLIENTS", 512, 1, 65536),
    };
    pthread_mutex_lock(&agent_lock);
    rc = running ? 0 : hp_server_start(&cfg, &running);
    pthread_mutex_unlock(&agent_lock);
    return rc;
}

HOTPATCH_API int hotpatch_stop(void)
{
    pthread_mutex_lock(&agent_lock);
    struct hp_server *s = running;
    if (s && hp_server_is_current_thread(s)) {
        pthread_mutex_unlock(&agent_lock);
        return -EDEADLK;
    }
    running = NULL;
    pthread_mutex_unlock(&agent_lock);
    if (s)
        hp_server_stop(s);
    return 0;
}

HOTPATCH_API bool hotpatch_running(void)
{
    pthread_mutex_lock(&agent_lock);
    bool r = running != NULL;
    pthread_mutex_unlock(&agent_lock);
    return r;
}

/* Normal exit (return from main, exit(), dlclose of the library): stop and remove the socket.
 * When exit is called on the agent's own thread (from a change callback) that thread cannot
 * join itself; the socket file is removed directly instead. */
__attribute__((destructor)) static void stop_at_exit(void)
{
    if (hotpatch_stop() == -EDEADLK) {
        char path[PATH_MAX];
        if (hotpatch_socket_path(path, sizeof path) > 0)
            unlink(path);
    }
}
