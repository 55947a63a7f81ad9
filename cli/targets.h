/*
 * targets.h — which processes a command goes to: -p PID[,PID...] (repeatable), --pgrep PATTERN
 * and --all, in one list without repeats.
 *
 * The order is part of the output (results come back in it): the pids of -p in the order
 * given, then the processes --pgrep matches and then --all's agents, each in increasing pid
 * order. --pgrep matches like `pgrep -f`: PATTERN is a POSIX extended regular expression
 * searched in the process's command line (its arguments joined by spaces), in the C locale;
 * it selects processes the caller may look into (/proc/PID/fd readable), never the client
 * itself or the processes it runs under (the shell that started it names the pattern too).
 * --all selects every agent `hotpatch ps` lists.
 */
#ifndef HOTPATCH_CLI_TARGETS_H
#define HOTPATCH_CLI_TARGETS_H

#include <stdbool.h>
#include <stddef.h>

#define TARGETS_LIMIT 65536

struct pid_list {
    long *pids;
    size_t count, cap;
};

/* Adds pid unless it is there already. False when the list is full. */
bool pid_list_add(struct pid_list *list, long pid);
void pid_list_free(struct pid_list *list);

/* Adds the pids of one -p argument ("1234" or "12,34"). False (said) for a bad one. */
bool parse_pid_argument(const char *text, struct pid_list *list);

/* Adds the processes whose command line matches pattern. False (said) for a bad pattern. */
bool add_matching_processes(const char *pattern, struct pid_list *list);

#endif
