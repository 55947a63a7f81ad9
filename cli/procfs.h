/*
 * procfs.h — what the client reads about processes from /proc: identity (start time, real uid,
 * the pid the process knows itself by in its own pid namespace, its parent), its command line,
 * the sockets it holds, and the Unix sockets of its network namespace.
 *
 * Why a room of its own: finding one agent (verify.c), listing every agent (ps.c), choosing
 * targets by command line (targets.c) and telling a stale socket file (ps.c) all read the same
 * files by the same rules, and those rules are what keeps a planted socket from being taken
 * for an agent. Every read is bounded and none blocks: /proc answers at once.
 *
 * Functions return 0 or an errno; they print nothing.
 */
#ifndef HOTPATCH_CLI_PROCFS_H
#define HOTPATCH_CLI_PROCFS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define PROC_CMDLINE_LIMIT 4096     /* the part of /proc/PID/cmdline read */

/* Reads at most cap - 1 bytes of /proc/PID/FILE into buf, NUL-terminated. */
int proc_read_file(long pid, const char *file, char *buf, size_t cap, size_t *len);

/* Field 22 of /proc/PID/stat: clock ticks after boot when the process started. */
int proc_start_time(long pid, unsigned long long *start_time);

/* From /proc/PID/status: the real uid (first number of Uid:), the pid in the process's own
 * pid namespace (last number of NSpid:, or pid when the kernel has no such line) and PPid. */
struct proc_status {
    uid_t real_uid;
    long ns_pid;
    long ppid;
};
int proc_status(long pid, struct proc_status *out);

/* The command line, arguments joined by spaces (at most PROC_CMDLINE_LIMIT - 1 bytes); empty
 * for a kernel thread or a zombie. */
int proc_cmdline(long pid, char *buf, size_t cap, size_t *len);

/* Whether the process sees paths as we do: the same root directory (/proc/PID/root) in the
 * same mount namespace; false for a process in a container or a chroot. An error reads as
 * "ours": the reads that follow then fail with their own reason. */
bool proc_root_is_ours(long pid);

/* The inodes of the sockets among a process's descriptors, sorted for lookup. */
struct inode_set {
    unsigned long *inodes;
    size_t count, cap;
};
int proc_held_sockets(long pid, struct inode_set *set);   /* set is empty on error */
bool inode_set_has(const struct inode_set *set, unsigned long inode);
void inode_set_free(struct inode_set *set);

/* One line of /proc/PID/net/unix with a path. */
struct unix_entry {
    unsigned long inode;
    bool listening;          /* Flags __SO_ACCEPTCON and state SS_UNCONNECTED */
    const char *path;
};
/* Called for each socket with a path; returns false to stop the scan. */
typedef bool (*unix_visitor)(const struct unix_entry *entry, void *context);
/* Scans the Unix sockets of pid's network namespace (pid 0: the caller's own). */
int proc_scan_unix(long pid, unix_visitor visit, void *context);

/* Whether a socket of the caller's network namespace is bound to path (listening or not). */
bool proc_path_is_bound(const char *path);

/* Calls visit for every process in /proc, in increasing pid order; stops when it returns false. */
typedef bool (*pid_visitor)(long pid, void *context);
int proc_each_pid(pid_visitor visit, void *context);

#endif
