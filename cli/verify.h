/*
 * verify.h — finding the agent of a process and checking who serves a socket, before the
 * client sends a single byte to it.
 *
 * A socket file's name proves nothing: anyone may bind /tmp/PID.socket before the process
 * does, and a pid may be reused by another process after the one that bound the socket exits.
 * So with -p the client looks for the agent among the listening sockets the process itself
 * holds (its /proc/PID/fd against /proc/PID/net/unix), and after connecting checks the peer's
 * credentials, that the process still holds that socket and that its pid was not reused.
 * With -s there is no process to compare with: the peer must run as root, as the caller, or
 * as the uid the operator named with --trust-peer.
 *
 * Every function that returns false has already printed its one-line reason on stderr (with
 * the "hotpatch: " prefix); the caller exits with status 2.
 */
#ifndef HOTPATCH_CLI_VERIFY_H
#define HOTPATCH_CLI_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* What identifies a process across time: a pid alone may be reused. */
struct process_identity {
    long pid;
    unsigned long long start_time; /* field 22 of /proc/PID/stat, clock ticks since boot */
    uid_t real_uid;                /* first number of the Uid: line of /proc/PID/status */
};

/* Whom the caller accepts as the server of a socket named with -s. */
struct peer_trust {
    bool named;      /* --trust-peer was given */
    uid_t uid;       /* the uid it names */
};

/* Reads the start time and real uid of pid. False (E1) when no such process runs. */
bool identify_process(long pid, struct process_identity *who);

/* Finds the path of the agent's listening socket among the sockets the process holds:
 * its HOTPATCH_SOCKET, /tmp/PID.socket, then /tmp/hotpatch-PID.*\/socket. False (E2, E3). */
bool find_agent_socket(const struct process_identity *who, char *path, size_t cap);

/* After connecting fd to path (found by find_agent_socket): the peer must be the process,
 * running as root or as its real uid; the process must still hold the listening socket at
 * path and still be the same process. False (E4, E5, E7, E8). */
bool check_agent_of_process(int fd, const char *path, const struct process_identity *who);

/* After connecting fd to a path given with -s: the peer must run as root, as the caller or
 * as the trusted uid; a caller that is root accepts anyone. False (E6). */
bool check_socket_server(int fd, const char *path, const struct peer_trust *trust);

/* Parses a --trust-peer argument: a numeric uid or a user name. */
bool parse_trusted_uid(const char *text, uid_t *uid);

/* The lines that say how to start a program with an agent (after "nothing answers"). */
void print_start_hint(void);

#endif
