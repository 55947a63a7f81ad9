/*
 * unix_diag.h — which Unix sockets are bound to a given file, asked of the kernel (sock_diag).
 *
 * Why not /proc/net/unix alone: it names a socket by the path its process passed to bind(),
 * and a network namespace is shared by every mount namespace in it. Two containers that each
 * bind /tmp/5.socket in a /tmp of their own show two sockets of one name, so a name cannot
 * tell which socket a file belongs to, and a check by name refuses (or trusts) the wrong one.
 * The kernel's unix_diag reports, for each bound socket, the device and inode of its file:
 * that ties a socket to the very file the client holds open.
 *
 * A netlink socket answers for the network namespace it was made in. For a process in another
 * one (a container, a pod whose containers share one), a short-lived thread enters that
 * namespace, makes the socket and ends, so no thread of the caller is ever left in the
 * target's namespace (going back could be refused: entering and leaving are checked against
 * different user namespaces). Entering needs CAP_SYS_ADMIN over it (root has it). The socket
 * is connected to the kernel, so no process can forge a reply. Where the kernel cannot be
 * asked, this returns an error and the callers fall back to names.
 *
 * The kernel reports the file's inode in 32 bits, and the device of the filesystem the file
 * was bound through, which stat() does not always give for the file itself: an overlay whose
 * upper layer is another filesystem reports the layer's device for a file but its own for a
 * directory. So a socket matches a file when the low 32 bits of the inode agree and its device
 * is the file's or its directory's. That can match more than one socket (inodes above 2^32, an
 * overlay's layers sharing a device), so every match is reported and the callers require all
 * of them to agree. Where nothing matches because the filesystem reports its devices otherwise
 * (a btrfs subvolume), `device_seen` stays false and the callers fall back to names.
 *
 * Reads are bounded (UNIX_DIAG_MESSAGES_LIMIT sockets) and each times out after a second.
 * Prints nothing; safe to call from any thread.
 */
#ifndef HOTPATCH_CLI_UNIX_DIAG_H
#define HOTPATCH_CLI_UNIX_DIAG_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

/* Which sockets a search looks at. */
enum unix_diag_states {
    UNIX_DIAG_LISTENING, /* only listening sockets */
    UNIX_DIAG_ANY,       /* every socket, in any state */
};

#define UNIX_DIAG_MATCHES_MAX 8

/* What a search found. */
struct unix_diag_matches {
    unsigned long inodes[UNIX_DIAG_MATCHES_MAX]; /* the matching sockets' inodes (/proc/PID/fd) */
    size_t count;       /* how many sockets matched; above UNIX_DIAG_MATCHES_MAX only counted */
    bool device_seen;   /* some socket of the dump is on the file's or its directory's device */
};

/* Finds the sockets of pid's network namespace (pid 0: the caller's) bound to the file that
 * *file describes (an fstat or lstat), in the directory that *directory (a stat, or NULL)
 * describes. Returns 0 with *out filled in. Errors: the errno of open() or setns() on
 * /proc/PID/ns/net (EPERM without CAP_SYS_ADMIN over that namespace, ENOENT when pid is gone)
 * or of socket(), connect(), send() or recv() (EPROTONOSUPPORT when the kernel has no
 * unix_diag, EAGAIN when it did not answer within a second), EPROTO for a reply that cannot be
 * read, E2BIG when the namespace has more sockets than the bound, ENOMEM. */
int unix_diag_sockets_of_file(long pid, const struct stat *file, const struct stat *directory,
                              enum unix_diag_states states, struct unix_diag_matches *out);

/* The directory that path names a file in, stat()ed: false when it cannot be. */
bool unix_diag_directory_of(const char *path, struct stat *directory);

#endif
