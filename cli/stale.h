/*
 * stale.h — socket files that no process listens on any more, in the standard locations:
 * /tmp/PID.socket and the agent's private /tmp/hotpatch-PID.XXXXXX/socket.
 *
 * A process killed by a signal leaves its socket file behind. The clients never connect to
 * one (they use only a listening socket a live process holds), but the files pile up, and an
 * operator who asks for a dead pid should hear "not running (stale socket file ...)" rather
 * than how to start an agent. `hotpatch ps --prune` removes them: only files the caller owns,
 * only when nothing listens on them, and only the very file that was checked.
 *
 * "Nothing listens": the file is stale when no socket of the caller's network namespace is
 * bound to it and a connect() to it is refused (which also covers a listener in another
 * network namespace sharing this /tmp). "Bound to it" is asked of the kernel by the file's
 * device and inode (unix_diag.h), not by its name: another mount namespace may have a live
 * socket of the same name in a /tmp of its own. Where the kernel cannot say, the name is
 * used, which errs on the side of keeping a file.
 */
#ifndef HOTPATCH_CLI_STALE_H
#define HOTPATCH_CLI_STALE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

/* /tmp/hotpatch-PID.X/socket (X not empty, without a slash): where the agent of PID serves
 * when /tmp/PID.socket is taken by a file it does not own. */
bool is_private_fallback(const char *path, long pid);

/* path is a socket file (not followed if a link) that no socket of this network namespace is
 * bound to; *st (when not NULL) gets its lstat. */
bool is_stale_socket_file(const char *path, struct stat *st);

/* The first stale socket file of pid in the standard locations: /tmp/PID.socket, then the
 * private directories in name order. */
bool find_stale_socket_of_pid(long pid, char *out, size_t cap);

/* Removes the stale socket files the caller owns in the standard locations, each rechecked
 * (device and inode) just before it is unlinked, and the private directory of one; prints
 * each removal ("removed PATH", or with json one {"removed":PATH} line). Exit status: 0, or 2
 * when a removal failed. */
int prune_stale_sockets(bool json);

#endif
