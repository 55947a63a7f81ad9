/*
 * history.c — what was changed in this process through the agent since it started.
 *
 * Every mutating request leaves one record once it has run (done or refused): when, who (the
 * peer's uid and pid), the request, and its outcome — for a set, the old and the new value;
 * otherwise the message or the error. The audit trail says the same to the outside world;
 * this copy is what `history` and `diff` answer from inside, without a log to read.
 *
 * A ring of the last HISTORY_MAX records, allocated on the first change (an agent nobody uses
 * costs nothing), with a count of the records dropped to make room. Written and read only on
 * the agent's thread (protocol.c runs every command there), so it needs no lock.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent.h"

#define HISTORY_MAX 1000

struct change {
    struct hp_change view;
    char *strings;               /* one block for every string of the view */
};

/* Agent thread. */
static struct change *ring;
static size_t next_slot, stored;
static unsigned long long dropped, recorded;

static size_t size_of(const char *text)
{
    return text ? strlen(text) + 1 : 0;
}

/* Copies text into the block at *cursor (NULL stays NULL). */
static const char *keep(char **cursor, const char *text)
{
    if (!text)
        return NULL;
    char *start = *cursor;
    size_t n = strlen(text) + 1;
    memcpy(start, text, n);
    *cursor += n;
    return start;
}

void hp_history_record(const struct hp_peer *peer, const char *request, const char *target,
                       const struct hp_reply *reply)
{
    if (!ring && !(ring = calloc(HISTORY_MAX, sizeof *ring)))
        return;
    bool ok = hp_reply_ok(reply);
    const char *old = ok ? hp_reply_field_text(reply, "old") : NULL;
    const char *now = ok ? hp_reply_field_text(reply, "value") : NULL;
    const char *outcome = ok ? hp_reply_message_text(reply) : hp_reply_error_text(reply);
    target = target ? target : "";
    outcome = outcome ? outcome : "";
    char *block = malloc(size_of(request) + size_of(target) + size_of(old) + size_of(now) +
                         size_of(outcome));
    if (!block)
        return;
    struct change *c = &ring[next_slot];
    if (c->strings) {
        free(c->strings);
        dropped++;
    }
    char *cursor = block;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    c->strings = block;
    c->view = (struct hp_change){
        .sequence = ++recorded,
        .time_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
        .uid = peer ? peer->uid : (uid_t)-1,
        .pid = peer ? peer->pid : 0,
        .ok = ok,
    };
    c->view.request = keep(&cursor, request);
    c->view.target = keep(&cursor, target);
    c->view.old_value = keep(&cursor, old);
    c->view.new_value = keep(&cursor, now);
    c->view.outcome = keep(&cursor, outcome);
    next_slot = (next_slot + 1) % HISTORY_MAX;
    if (stored < HISTORY_MAX)
        stored++;
}

void hp_history_each(hp_change_visitor visit, void *ctx)
{
    size_t first = (next_slot + HISTORY_MAX - stored) % HISTORY_MAX;
    for (size_t i = 0; ring && i < stored; i++)
        visit(&ring[(first + i) % HISTORY_MAX].view, ctx);
}

unsigned long long hp_history_dropped(void)
{
    return dropped;
}

unsigned long long hp_history_recorded(void)
{
    return recorded;
}
