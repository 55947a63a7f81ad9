/*
 * unix_diag.h — which Unix socket is bound to a given file, asked of the kernel (sock_diag).
 *
 * Why not /proc/net/unix alone: it names a socket by the path its process passed to bind(),
 * and a network namespace is shared by every mount namespace in it. Two containers that each
 * bind /tmp/5.socket in a /tmp of their own show two sockets of one name, so a name cannot
 * tell which socket a file belongs to, and a check by name refuses (or trusts) the wrong one.
 * The kernel's unix_diag reports, for each bound socket, the device and inode of its file:
 * that ties a socket to the very file the client looked at with lstat().
 *
 * A netlink socket answers for the network namespace it was made in. For a process in another
 * one (a container, a pod whose containers share one), the calling thread enters that
 * namespace for the socket() call alone, which needs CAP_SYS_ADMIN over it (root has it).
 * Where that is refused, or the kernel has no unix_diag, this returns an error and the
 * callers fall back to names.
 *
 * The kernel reports the file's inode in 32 bits, and the device of the filesystem the file
 * was bound through, which stat() does not always give for the file itself: an overlay whose
 * upper layer is another filesystem reports the layer's device for a file but its own for a
 * directory. So a socket matches a file when the low 32 bits of the inode agree and its device
 * is the file's or its directory's. Where even that fails (a btrfs subvolume reports neither)
 * no socket matches: the listener check then falls back to names (verify.c), and a stale-file
 * check still needs a refused connect() before it removes anything (stale.c).
 *
 * Reads are bounded (UNIX_DIAG_MESSAGES_LIMIT sockets) and each times out after a second.
 * Prints nothing; safe to call from any thread (setns() changes only the calling thread's
 * namespace, and changes it back before returning).
 */
#ifndef HOTPATCH_CLI_UNIX_DIAG_H
#define HOTPATCH_CLI_UNIX_DIAG_H

#include <stdbool.h>
#include <sys/stat.h>

/* Which sockets a search looks at. */
enum unix_diag_states {
    UNIX_DIAG_LISTENING, /* only listening sockets */
    UNIX_DIAG_ANY,       /* every socket, in any state */
};

/* Finds the socket of pid's network namespace (pid 0: the caller's) bound to the file that
 * *file (an lstat) describes, in the directory that *directory (a stat, or NULL) describes.
 * Returns 0 with *socket_inode set to that socket's inode (its number in /proc/PID/fd links),
 * or to 0 when no such socket is bound to it. Errors: the errno of open()/setns() on
 * /proc/PID/ns/net (EPERM without CAP_SYS_ADMIN over that namespace, ENOENT when pid is gone)
 * or of socket()/send()/recv() (EPROTONOSUPPORT when the kernel has no unix_diag, EAGAIN when
 * it did not answer within a second), EPROTO for a reply that cannot be read, E2BIG when the
 * namespace has more sockets than the bound, ENOMEM. */
int unix_diag_socket_of_file(long pid, const struct stat *file, const struct stat *directory,
                             enum unix_diag_states states, unsigned long *socket_inode);

/* The same for the file at path, which it lstat()s (its directory stat()ed): also the errno
 * of that lstat(), or ENAMETOOLONG. */
int unix_diag_socket_at_path(long pid, const char *path, enum unix_diag_states states,
                             unsigned long *socket_inode);

#endif
