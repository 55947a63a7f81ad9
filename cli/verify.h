/*
 * verify.h — finding the agent of a process and checking who serves a socket, before the
 * client sends a single byte to it.
 *
 * A socket file's name proves nothing: anyone may bind /tmp/PID.socket before the process
 * does, and a pid may be reused by another process after the one that bound the socket exits.
 * So with -p the client looks for the agent among the listening sockets the process itself
 * holds (its /proc/PID/fd against /proc/PID/net/unix), and after connecting checks the peer's
 * credentials, that the process still holds the listener bound to the very file connected to
 * (by device and inode, unix_diag.h: names repeat across mount namespaces) and that its pid
 * was not reused.
 * With -s there is no process to compare with: the peer must run as root, as the caller, or
 * as the uid the operator named with --trust-peer.
 *
 * A process in a container (another pid and mount namespace) is named by its pid here, the
 * host's; its agent named its socket with the pid it knows itself by (NSpid) and bound it in
 * its own mount namespace, which the client reaches through /proc/PID/root. SO_PEERCRED gives
 * the peer's pid as seen from the caller's namespace, so the checks compare host pids.
 *
 * Every function that returns false has already printed its one-line reason on stderr (with
 * the "hotpatch: " prefix, through say()); the caller exits with status 2.
 */
#ifndef HOTPATCH_CLI_VERIFY_H
#define HOTPATCH_CLI_VERIFY_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

/* What identifies a process across time: a pid alone may be reused. */
struct process_identity {
    long pid;
    unsigned long long start_time; /* field 22 of /proc/PID/stat, clock ticks since boot */
    uid_t real_uid;                /* first number of the Uid: line of /proc/PID/status */
    long ns_pid;                   /* the pid in its own namespace (NSpid), which names sockets */
    char root[40];                 /* "" or "/proc/PID/root": how its paths are reached */
};

/* The agent's socket: the name it is bound to (as /proc/PID/net/unix shows it, in the
 * process's mount namespace) and the path the client connects to (the same, or through
 * /proc/PID/root). */
struct agent_socket {
    char bound[PATH_MAX];
    char path[PATH_MAX];
};

/* Whom the caller accepts as the server of a socket named with -s. */
struct peer_trust {
    bool named;      /* --trust-peer was given */
    uid_t uid;       /* the uid it names */
};

/* Reads the identity of pid. False (E1, or "not running (stale socket file ...)") when no
 * such process runs, or (E2) when /proc cannot be read. */
bool identify_process(long pid, struct process_identity *who);
/* The same without a word: 0 or the errno of the /proc read that failed. */
int identify_quietly(long pid, struct process_identity *who);

/* Finds the agent's listening socket among the sockets the process holds: its
 * HOTPATCH_SOCKET, /tmp/NSPID.socket, then /tmp/hotpatch-NSPID.*\/socket. False (E2, E3). */
bool find_agent_socket(const struct process_identity *who, struct agent_socket *found);
/* The same without a word: 0, ENOENT when the process holds no such socket, or the errno of
 * the /proc read that failed (*unreadable names the file). */
int locate_agent_socket(const struct process_identity *who, struct agent_socket *found,
                        const char **unreadable);

/* The agent's socket file, held open so that the client connects to the very file it then
 * checks: opened O_PATH with a final symbolic link not followed, connected to through `via`
 * (/proc/self/fd/N). */
struct agent_file {
    int fd;
    struct stat st;
    char via[32];
};
/* Opens found->path so. 0; the errno of open() (nothing said); or ENOTSOCK when the file is
 * not a socket (a link or another file put in its place; said). */
int open_agent_file(const struct agent_socket *found, struct agent_file *file);
void close_agent_file(struct agent_file *file);

/* After connecting fd through file->via: the peer must be the process, running as root or as
 * its real uid; the process must still hold the listening socket bound to that file and still
 * be the same process. False (E4, E5, E7, E8). */
bool check_agent_of_process(int fd, const struct agent_socket *found,
                            const struct process_identity *who, const struct agent_file *file);

/* After connecting fd to a path given with -s: the peer must run as root, as the caller or
 * as the trusted uid; a caller that is root accepts anyone. False (E6). */
bool check_socket_server(int fd, const char *path, const struct peer_trust *trust);

/* Parses a --trust-peer argument: a numeric uid or a user name. */
bool parse_trusted_uid(const char *text, uid_t *uid);

/* The lines that say how to start a program with an agent (after "nothing answers"). */
void print_start_hint(void);

#endif
