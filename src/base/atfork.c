/*
 * atfork.c — one pthread_atfork registration for every lock libhotpatch holds across fork().
 *
 * The agent, the registry and the patch engine each hold a lock across fork so that a child
 * never inherits a lock taken by a thread it does not have, nor a table or a code write half
 * done. Their locks have a fixed order (agent -> registry -> engine); registering one
 * pthread_atfork per room would make that order depend on which room was used first. So the
 * rooms register their hooks here by rank, and this file runs them in order.
 *
 * The handler is installed on first registration, not from a constructor: atfork child
 * handlers run in registration order, and by then the program's allocator (glibc's, jemalloc,
 * tcmalloc) has registered its own, so a child's agent is started after the allocator is usable
 * again in the child.
 *
 * State: `hooks` and `armed` are written under table_lock. table_lock is held from prepare until
 * the parent or child hook, so a registration never lands between the two halves of a fork, and
 * `prepared` (written and read only by the forking thread while it holds table_lock) says which
 * ranks took their locks.
 */
#include <pthread.h>
#include <stdbool.h>

#include "base.h"

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hp_fork_hooks hooks[HP_FORK_RANKS];   /* guarded by table_lock */
static bool armed[HP_FORK_RANKS];                   /* guarded by table_lock */
static bool prepared[HP_FORK_RANKS];                /* the forking thread's, under table_lock */
static bool handler_installed;                      /* guarded by table_lock */

static void before_fork(void)
{
    pthread_mutex_lock(&table_lock);
    for (int r = 0; r < HP_FORK_RANKS; r++) {
        prepared[r] = armed[r];
        if (prepared[r] && hooks[r].prepare)
            hooks[r].prepare();
    }
}

static void after_fork(bool child)
{
    for (int r = HP_FORK_RANKS - 1; r >= 0; r--) {
        void (*hook)(void) = child ? hooks[r].child : hooks[r].parent;
        if (prepared[r] && hook)
            hook();
    }
    pthread_mutex_unlock(&table_lock);
}

static void in_parent(void)
{
    after_fork(false);
}

static void in_child(void)
{
    after_fork(true);
}

void hp_atfork_register(enum hp_fork_rank rank, const struct hp_fork_hooks *h)
{
    if ((int)rank < 0 || rank >= HP_FORK_RANKS || !h)
        return;
    pthread_mutex_lock(&table_lock);
    if (!armed[rank]) {
        hooks[rank] = *h;
        armed[rank] = true;
    }
    if (!handler_installed)
        handler_installed = pthread_atfork(before_fork, in_parent, in_child) == 0;
    pthread_mutex_unlock(&table_lock);
}
