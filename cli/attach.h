/*
 * attach.h — `hotpatch -p PID attach`: bring the agent into a process that has none (attach.c).
 */
#ifndef HOTPATCH_CLI_ATTACH_H
#define HOTPATCH_CLI_ATTACH_H

#include <stdbool.h>

/* Attaches the preload agent to pid and prints what it did (one JSON line with json). Exit
 * status: 0 attached (or restarted after a detach), 1 refused or already serving, 2 the
 * process is not there or exited meanwhile. */
int run_attach(long pid, bool json, int timeout_ms);

#endif
