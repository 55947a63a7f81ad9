/*
 * base.h — the few things every room of libhotpatch shares: symbol visibility, diagnostics and
 * fork safety. Not installed.
 *
 * The rooms, from the bottom up (a room includes only its own headers and the ones below it):
 *   base/      this header: log.c (one-line diagnostics), env.c (settings, AT_SECURE),
 *              atfork.c (one fork hook for all)
 *   engine/    the patch engine: versions, relays, the thread stop, maps, symbols (engine.h),
 *              with arch/ for instruction encoding and code writes (arch.h)
 *   agent/     the control plane: registry, values, replies, protocol, policy, server, life
 *              cycle, exec wrappers (agent.h)
 *   commands/  one file per command family, and the table of families (commands.h)
 *   preload/   the preload agent and the gflags bridge (the only C++)
 */
#ifndef HOTPATCH_BASE_H
#define HOTPATCH_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#define HP_HIDDEN __attribute__((visibility("hidden")))
#define HP_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define HP_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- log.c ----------------------------------------------------------------------------- */
/* Writes "hotpatch[pid]: <message>\n" to the agent's log (stderr), in one write(2). errno is
 * preserved. Any thread. */
void hp_log(const char *fmt, ...) HP_PRINTF(1, 2);

/* Where hp_log's lines go instead of stderr (the preload agent's HOTPATCH_LOG). A sink gets one
 * complete line (with its newline) per call; it must not call hp_log. */
typedef void (*hp_log_sink)(const char *line, size_t len);
/* NULL restores stderr. Called before the agent starts. */
void hp_log_set_sink(hp_log_sink sink);

/* ---- env.c ----------------------------------------------------------------------------- */
/* getenv() for the agent's own settings: NULL for every HOTPATCH_* variable in a
 * secure-execution process (AT_SECURE: setuid, setgid, capabilities), logged once. Any thread. */
const char *hp_env(const char *name);
/* True in a secure-execution process. */
bool hp_secure_execution(void);

/* ---- atfork.c -------------------------------------------------------------------------- */
/*
 * Each room that holds a lock across fork() registers its hooks here, with its place in the
 * lock order. Before a fork the prepare hooks run in rank order (lowest first); after it the
 * parent or child hooks run in the reverse order, so locks are released as they were taken.
 * Registration is idempotent per rank and may happen at any time from any thread: a fork that
 * is already under way runs only the hooks that were registered when it started.
 */
enum hp_fork_rank {
    HP_FORK_AGENT,      /* agent.c: the agent's life-cycle lock; its child hook starts a child's agent */
    HP_FORK_REGISTRY,   /* registry.c: the registry lock */
    HP_FORK_ENGINE,     /* patch.c: the engine lock (no fork during a code write) */
    HP_FORK_RANKS
};
struct hp_fork_hooks {
    void (*prepare)(void);
    void (*parent)(void);
    void (*child)(void);
};
void hp_atfork_register(enum hp_fork_rank rank, const struct hp_fork_hooks *hooks);

#endif /* HOTPATCH_BASE_H */
