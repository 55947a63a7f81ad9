/*
 * fleet.h — running something for many targets at once: each in a child process of its own,
 * at most `jobs` at a time, its stdout and stderr collected and handed back in target order.
 *
 * Why child processes: a target's run (exchange.c, verify.c) prints its own messages and
 * exits with its own status, exactly as a run for one target does; in a child it can do so
 * unchanged, its output cannot interleave with another's, and a target that hangs is killed
 * at its deadline without holding the others up. Results come back in the order the targets
 * were given, as soon as each and all before it are done, so the output is the same whatever
 * order the children finish in.
 */
#ifndef HOTPATCH_CLI_FLEET_H
#define HOTPATCH_CLI_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define JOBS_DEFAULT 8
#define JOBS_LIMIT 64

/* What a child does for target index; returns its exit status. */
typedef int (*target_fn)(size_t index, void *context);
/* Called in the parent for each target, in order: its exit status (2 when it died or was
 * killed at its deadline) and what it printed. */
typedef void (*result_fn)(size_t index, int status, const char *out, size_t out_len,
                          const char *err, size_t err_len, void *context);

/* Runs run for targets 0..n-1 and hands each result to done. deadline_ms bounds each child.
 * False (said) when the children could not be started. */
bool run_parallel(size_t n, int jobs, int deadline_ms, target_fn run, result_fn done,
                  void *context);

/* Writes each line of text to out with "PID: " before it (a last line without its newline
 * gets one). */
void write_prefixed(FILE *out, long pid, const char *text, size_t len);

/* The exit status of many: 2 when any is 2 (or anything but 0 and 1), else 1 when any is 1,
 * else 0. */
int combine_status(int so_far, int status);

#endif
