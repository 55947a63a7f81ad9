/*
 * seccomp_check.h — would a seccomp filter of the target stop a call the attach makes?
 * (seccomp_check.c)
 */
#ifndef HOTPATCH_CLI_SECCOMP_CHECK_H
#define HOTPATCH_CLI_SECCOMP_CHECK_H

#include <sys/types.h>

/* For a process in seccomp filter mode (Seccomp: 2), whose main thread the caller holds
 * (ptrace-stopped): reads its filters and runs them on every
 * system call the injection, the loader and the agent make. 0 when each is allowed; else says
 * which call would be refused or why the filters cannot be read, and returns exit status 1. */
int check_seccomp(pid_t pid);

#endif
