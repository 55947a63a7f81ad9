/*
 * message.h — the client's own one-line messages on stderr ("hotpatch: ..."), and the first
 * of them kept for the JSON line of a target that could not be reached.
 *
 * Why: with --json a script reads one JSON line per target, and a target that could not be
 * reached must say why there too, in the very words the operator sees on stderr. So every
 * message of the client goes through say(), which prints it and keeps the first.
 */
#ifndef HOTPATCH_CLI_MESSAGE_H
#define HOTPATCH_CLI_MESSAGE_H

#include <stddef.h>

#if defined(__GNUC__)
#define CLI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CLI_PRINTF(a, b)
/* Forgets the first message (a child process that runs one target starts afresh). */
void forget_messages(void);

#endif

#define MESSAGE_LIMIT 8192          /* one message, paths included */

/* Prints "hotpatch: MESSAGE\n" on stderr; the first message of the run is kept. */
void say(const char *fmt, ...) CLI_PRINTF(1, 2);

/* The first message said (without "hotpatch: "), "" when none; its first line only. */
const char *first_message(void);

/* Forgets the first message (a child process that runs one target starts afresh). */
void forget_messages(void);

#endif
