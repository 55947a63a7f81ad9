/*
 * agent.c — the agent's life cycle: hotpatch_start(), hotpatch_stop(), exit and fork.
 *
 * The process has at most one agent. Its state is one pointer, `running`, owned by this file
 * and guarded by agent_lock; start and stop are idempotent and may race from any threads.
 *
 * Configuration comes from the environment, read at start (documented in docs/protocol.md):
 *   HOTPATCH_SOCKET                socket path; "%p" stands for the pid (default /tmp/%p.socket)
 *   HOTPATCH_IDLE_TIMEOUT_MS       time to send a complete request (default 10000)
 *   HOTPATCH_SESSION_TIMEOUT_MS    idle time allowed between requests in a session (300000)
 *   HOTPATCH_WRITE_TIMEOUT_MS      time a client has to take its reply (10000)
 *   HOTPATCH_MAX_CLIENTS           simultaneous connections (512)
 * and the access and audit policy (policy.c): HOTPATCH_ALLOW_UIDS, HOTPATCH_READ_ONLY,
 * HOTPATCH_AUDIT.
 * A value that does not parse is ignored with a log line; the agent never refuses to start
 * because of a tuning knob.
 *
 * Detach (the `detach` command, run on the server thread, which cannot join itself): the server
 * thread removes its socket before replying and ends after; `running` keeps the ended server
 * until the next start (an attach calls hotpatch_start again) or stop joins and frees it, and
 * meanwhile counts as not running.
 *
 * Exit: a destructor stops the agent so the socket disappears on normal exit. Fork: see
 * forget_parent_agent() below. Exec: see hp_agent_before_exec() below.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

static pthread_mutex_t agent_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hp_server *running;          /* guarded by agent_lock */
/* The pid `running` belongs to (0 when none). Written under agent_lock, read without it by the
 * exec wrappers: a vfork child shares this memory but has its own pid, and must take no lock. */
static pid_t owner_pid;
static int execs_in_flight;                /* guarded by agent_lock */
static struct hp_server *hidden_for_exec;  /* guarded by agent_lock: the server hidden for them */

/* How this agent came into the process ("linked" unless the preload agent or the attach
 * injector says otherwise, before it starts) and when it started; written before the agent
 * thread exists, read by it afterwards. */
static const char *origin = "linked";
static struct timespec started_at;          /* CLOCK_MONOTONIC; guarded by agent_lock */

void hp_agent_set_origin(const char *how)
{
    origin = how;
}

const char *hp_agent_origin(void)
{
    return origin;
}

long long hp_agent_uptime_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&agent_lock);
    struct timespec t = started_at;
    pthread_mutex_unlock(&agent_lock);
    if (t.tv_sec == 0 && t.tv_nsec == 0)
        return 0;
    return (long long)(now.tv_sec - t.tv_sec) * 1000 + (now.tv_nsec - t.tv_nsec) / 1000000;
}

static void set_running(struct hp_server *s)
{
    if (s)
        clock_gettime(CLOCK_MONOTONIC, &started_at);
    running = s;
    hidden_for_exec = NULL;
    __atomic_store_n(&owner_pid, s ? getpid() : 0, __ATOMIC_RELEASE);
}

static int env_int(const char *name, int fallback, int min, int max)
{
    const char *text = hp_env(name);
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

/* The configured path with every "%p" replaced by the pid, or the default. */
static int configured_path(char *buf, size_t cap)
{
    const char *env = hp_env("HOTPATCH_SOCKET");
    if (!env || !*env)
        env = "/tmp/%p.socket";
    size_t used = 0;
    for (const char *p = env; *p; p++) {
        int n = (p[0] == '%' && p[1] == 'p') ? snprintf(buf + used, cap - used, "%ld",
                                                        (long)getpid())
                                             : snprintf(buf + used, cap - used, "%c", *p);
        if (n < 0 || (size_t)n >= cap - used)
            return -ENAMETOOLONG;
        used += (size_t)n;
        if (p[0] == '%' && p[1] == 'p')
            p++;
    }
    return (int)used;
}

HOTPATCH_API int hotpatch_socket_path(char *buf, size_t cap)
{
    if (!buf || cap == 0)
        return -EINVAL;
    pthread_mutex_lock(&agent_lock);
    int n = running ? hp_server_path(running, buf, cap) : configured_path(buf, cap);
    pthread_mutex_unlock(&agent_lock);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : n;
}

/* Starts the agent; the caller holds agent_lock. delay_ms > 0 defers the socket (see fork). */
static int start_locked(int delay_ms)
{
    if (running && hp_server_detached(running)) {
        /* Detached earlier: its thread has ended or ends once its last reply is sent (the
         * join waits at most that long); start afresh. */
        hp_server_stop(running);
        set_running(NULL);
    }
    if (running)
        return 0;
    char path[PATH_MAX];
    int rc = configured_path(path, sizeof path);
    if (rc < 0)
        return rc;
    struct hp_server_config cfg = {
        .socket_path = path,
        .idle_timeout_ms = env_int("HOTPATCH_IDLE_TIMEOUT_MS", 10000, 10, 3600000),
        .session_timeout_ms = env_int("HOTPATCH_SESSION_TIMEOUT_MS", 300000, 10, 86400000),
        .write_timeout_ms = env_int("HOTPATCH_WRITE_TIMEOUT_MS", 10000, 10, 3600000),
        .max_clients = env_int("HOTPATCH_MAX_CLIENTS", 512, 1, 65536),
        .start_delay_ms = delay_ms,
    };
    hp_policy_load();
    struct hp_server *s;
    rc = hp_server_start(&cfg, &s);
    if (rc == 0)
        set_running(s);
    return rc;
}

/*
 * fork(): the agent, registry and patch engine locks (taken in that order) are held across the
 * fork so the child inherits consistent state (never a code write in progress) and
 * unlocked mutexes. The child forgets the parent's server (its thread does not exist in the
 * child) without touching the parent's socket file, and — when the parent had an agent —
 * starts its own at its own path after HOTPATCH_FORK_DELAY_MS (200 ms): a prefork worker gets
 * an agent, while a child that execs right away never creates a socket it would leave behind.
 * HOTPATCH_FORK_AGENT=0 turns this off. A custom HOTPATCH_SOCKET must contain %p (the pid) for
 * children to get agents; otherwise the child's path would be the parent's.
 */
static void lock_before_fork(void)
{
    pthread_mutex_lock(&agent_lock);
}

static void unlock_in_parent(void)
{
    pthread_mutex_unlock(&agent_lock);
}

static bool child_should_get_agent(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    /* Sanitizer runtimes keep their allocator locked until fork() returns and then reset the
     * lock, so a thread created from an atfork child handler can block on it forever. */
    return false;
#endif
    const char *on = hp_env("HOTPATCH_FORK_AGENT");
    if (on && strcmp(on, "0") == 0)
        return false;
    const char *custom = hp_env("HOTPATCH_SOCKET");
    return !custom || !*custom || strstr(custom, "%p");
}

/* Runs after the registry's and the engine's child hooks have released their locks. */
static void forget_parent_agent(void)
{
    bool parent_had_agent = running != NULL && !hp_server_detached(running);
    if (running)
        hp_server_abandon(running);
    set_running(NULL);
    execs_in_flight = 0; /* the threads that were exec'ing are the parent's */
    if (parent_had_agent && child_should_get_agent())
        start_locked(env_int("HOTPATCH_FORK_DELAY_MS", 200, 1, 60000));
    pthread_mutex_unlock(&agent_lock);
}

static pthread_once_t fork_hooks_once = PTHREAD_ONCE_INIT;

static void register_fork_hooks(void)
{
    static const struct hp_fork_hooks hooks = {lock_before_fork, unlock_in_parent,
                                               forget_parent_agent};
    hp_atfork_register(HP_FORK_AGENT, &hooks);
}

HOTPATCH_API int hotpatch_start(void)
{
    pthread_once(&fork_hooks_once, register_fork_hooks);
    hp_exec_resolve();
    pthread_mutex_lock(&agent_lock);
    int rc = start_locked(0);
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
    set_running(NULL);
    pthread_mutex_unlock(&agent_lock);
    if (s)
        hp_server_stop(s);
    return 0;
}

HOTPATCH_API bool hotpatch_running(void)
{
    pthread_mutex_lock(&agent_lock);
    bool r = running != NULL && !hp_server_detached(running);
    pthread_mutex_unlock(&agent_lock);
    return r;
}

/*
 * exec: the kernel tells a process nothing before exec replaces it, so exec.c wraps the exec
 * functions and calls these two around the real call. The first exec in flight hides the
 * server (its socket file is removed); when the last one in flight fails, the server listens
 * again. The server thread keeps running meanwhile (exec ends it), so an exec is not delayed by
 * a request being served, and a change callback on the agent's own thread may exec too.
 *
 * exec may be called from a signal handler (it is async-signal-safe), perhaps one that
 * interrupted this thread while it held agent_lock; so the lock is only tried, for at most
 * about 100 ms, and an exec that cannot get it goes ahead without hiding (the file then stays
 * behind, as a killed process's would, and the next agent at the path replaces it).
 */
static bool lock_agent_briefly(void)
{
    for (int tries = 0; tries < 100; tries++) {
        if (pthread_mutex_trylock(&agent_lock) == 0)
            return true;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    return false;
}

void hp_agent_before_exec(struct hp_exec_state *st)
{
    st->counted = st->mask_changed = false;
    if (__atomic_load_n(&owner_pid, __ATOMIC_ACQUIRE) != getpid() || !lock_agent_briefly())
        return;
    st->counted = running != NULL && !hp_server_detached(running);
    if (st->counted)
        execs_in_flight++;
    if (st->counted && hidden_for_exec != running) {
        hp_server_hide_for_exec(running);
        hidden_for_exec = running;
    }
    /* On the agent thread (a change callback that execs): the new image must not inherit the
     * agent thread's mask, which blocks every asynchronous signal, SIGTERM included. */
    if (st->counted && hp_server_is_current_thread(running))
        st->mask_changed =
            pthread_sigmask(SIG_SETMASK, hp_server_program_mask(running), &st->mask) == 0;
    pthread_mutex_unlock(&agent_lock);
}

void hp_agent_after_failed_exec(const struct hp_exec_state *st)
{
    if (st->mask_changed)
        pthread_sigmask(SIG_SETMASK, &st->mask, NULL);
    if (!st->counted)
        return;
    /* Not held by this thread: before_exec got it, and released it, in this same call. */
    pthread_mutex_lock(&agent_lock);
    if (execs_in_flight > 0 && --execs_in_flight == 0 && running && running == hidden_for_exec) {
        hp_server_unhide_after_exec(running);
        hidden_for_exec = NULL;
    }
    pthread_mutex_unlock(&agent_lock);
}

/* At a normal end of the process (return from main, a call to the exit function, dlclose of
 * the library): stop and remove the socket.
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
