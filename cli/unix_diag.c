/*
 * unix_diag.c — one sock_diag dump of the caller's Unix sockets, searched for the one bound
 * to a file. See unix_diag.h for why a file's identity, not its name.
 *
 * The request asks only for the file identity (UDIAG_SHOW_VFS) and, for a listener search,
 * only listening sockets, so the kernel sends a few dozen bytes per socket. The reply is read
 * into a fixed buffer one datagram at a time; the search stops at the first match (only one
 * socket can be bound to a file: bind() creates it) and the netlink socket is closed, which
 * drops whatever the kernel had left to send.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <unistd.h>

#include "unix_diag.h"

#define UNIX_DIAG_MESSAGES_LIMIT (1 << 22) /* sockets in one network namespace looked at */
#define TCP_LISTEN_STATE 10                /* the state unix_diag reports for a listener */

/* The device as the kernel keeps it (MAJOR << 20 | MINOR), which is what unix_diag reports,
 * not the encoding stat() returns. */
static uint32_t kernel_device(dev_t dev)
{
    return (uint32_t)((major(dev) << 20) | (minor(dev) & 0xfffff));
}

static int send_dump_request(int fd, enum unix_diag_states states)
{
    struct {
        struct nlmsghdr header;
        struct unix_diag_req request;
    } message = {
        .header = {.nlmsg_len = sizeof message, .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                   .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 1},
        .request = {.sdiag_family = AF_UNIX, .udiag_show = UDIAG_SHOW_VFS,
                    .udiag_states = states == UNIX_DIAG_LISTENING ? 1u << TCP_LISTEN_STATE
                                                                  : UINT32_MAX},
    };
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    ssize_t sent = sendto(fd, &message, sizeof message, 0, (struct sockaddr *)&kernel,
                          sizeof kernel);
    if (sent < 0)
        return errno;
    return sent == (ssize_t)sizeof message ? 0 : EPROTO;
}

/* The file identity of one socket of the dump; false when it is bound to no file. */
static bool file_of(const struct nlmsghdr *header, struct unix_diag_vfs *vfs)
{
    const struct unix_diag_msg *socket_message = NLMSG_DATA(header);
    int length = (int)header->nlmsg_len - (int)NLMSG_LENGTH(sizeof *socket_message);
    const struct rtattr *attribute = (const struct rtattr *)(socket_message + 1);
    for (; length > 0 && RTA_OK(attribute, length); attribute = RTA_NEXT(attribute, length)) {
        if (attribute->rta_type == UNIX_DIAG_VFS && RTA_PAYLOAD(attribute) >= sizeof *vfs) {
            memcpy(vfs, RTA_DATA(attribute), sizeof *vfs);
            return true;
        }
    }
    return false;
}

struct file_search {
    uint32_t device, directory_device, inode;   /* as unix_diag reports them */
    unsigned long socket_inode;
    long seen;
};

/* Looks at one datagram of the dump. 1: the dump is over (or the socket was found), 0: more
 * to read, or -errno. */
static int search_datagram(const char *buffer, ssize_t size, struct file_search *search)
{
    for (const struct nlmsghdr *header = (const struct nlmsghdr *)buffer;
         NLMSG_OK(header, size); header = NLMSG_NEXT(header, size)) {
        if (header->nlmsg_type == NLMSG_DONE)
            return 1;
        if (header->nlmsg_type == NLMSG_ERROR) {
            const struct nlmsgerr *error = NLMSG_DATA(header);
            return header->nlmsg_len >= NLMSG_LENGTH(sizeof *error) && error->error < 0
                       ? error->error : -EPROTO;
        }
        if (header->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
            header->nlmsg_len < NLMSG_LENGTH(sizeof(struct unix_diag_msg)))
            return -EPROTO;
        if (++search->seen > UNIX_DIAG_MESSAGES_LIMIT)
            return -E2BIG;
        struct unix_diag_vfs vfs;
        if (file_of(header, &vfs) && vfs.udiag_vfs_ino == search->inode &&
            (vfs.udiag_vfs_dev == search->device ||
             vfs.udiag_vfs_dev == search->directory_device)) {
            search->socket_inode = ((const struct unix_diag_msg *)NLMSG_DATA(header))->udiag_ino;
            return 1;
        }
    }
    return 0;
}

/* Large enough for any datagram the kernel sends a dump in (it fills at most 32 KiB). */
#define DATAGRAM_LIMIT 65536

static int read_dump(int fd, struct file_search *search)
{
    uint64_t *buffer = malloc(DATAGRAM_LIMIT); /* 8-byte aligned for headers read in place */
    if (!buffer)
        return ENOMEM;
    int err = 0;
    for (;;) {
        ssize_t size = recv(fd, buffer, DATAGRAM_LIMIT, 0);
        if (size <= 0) {
            err = size == 0 ? EPROTO : errno == EINTR ? EAGAIN : errno;
            break;
        }
        int done = search_datagram((const char *)buffer, size, search);
        if (done) {
            err = done < 0 ? -done : 0;
            break;
        }
    }
    free(buffer);
    return err;
}

static int plain_diag_socket(void)
{
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    return fd >= 0 ? fd : -errno;
}

static bool same_object(int a, int b)
{
    struct stat x, y;
    return fstat(a, &x) == 0 && fstat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

/* A sock_diag socket of pid's network namespace (pid 0: the caller's), or -errno. A netlink
 * socket answers for the namespace it was made in, so for another one the calling thread
 * enters it for the socket() call alone and goes back; setns() needs CAP_SYS_ADMIN over that
 * namespace (root has it), and without it this is -EPERM. */
static int open_diag_socket(long pid)
{
    if (pid == 0)
        return plain_diag_socket();
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/ns/net", pid);
    int theirs = open(path, O_RDONLY | O_CLOEXEC);
    if (theirs < 0)
        return -errno;
    int ours = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (ours < 0) {
        int err = -errno;
        close(theirs);
        return err;
    }
    int fd;
    if (same_object(theirs, ours))
        fd = plain_diag_socket();
    else if (setns(theirs, CLONE_NEWNET) != 0)
        fd = -errno;
    else {
        fd = plain_diag_socket();
        /* Going back cannot fail for a caller that could enter (the same capability over
         * its own namespace); if it did, the socket is not used. */
        if (setns(ours, CLONE_NEWNET) != 0 && fd >= 0) {
            close(fd);
            fd = -EPERM;
        }
    }
    close(ours);
    close(theirs);
    return fd;
}

int unix_diag_socket_of_file(long pid, const struct stat *file, const struct stat *directory,
                             enum unix_diag_states states, unsigned long *socket_inode)
{
    *socket_inode = 0;
    int fd = open_diag_socket(pid);
    if (fd < 0)
        return -fd;
    struct timeval second = {.tv_sec = 1};
    int err = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &second, sizeof second) ? errno : 0;
    if (!err)
        err = send_dump_request(fd, states);
    struct file_search search = {
        .device = kernel_device(file->st_dev),
        .directory_device = kernel_device(directory ? directory->st_dev : file->st_dev),
        .inode = (uint32_t)file->st_ino,
    };
    if (!err)
        err = read_dump(fd, &search);
    close(fd);
    if (!err)
        *socket_inode = search.socket_inode;
    return err;
}

int unix_diag_socket_at_path(long pid, const char *path, enum unix_diag_states states,
                             unsigned long *socket_inode)
{
    *socket_inode = 0;
    struct stat file, directory;
    if (lstat(path, &file) != 0)
        return errno;
    char parent[PATH_MAX];
    if ((size_t)snprintf(parent, sizeof parent, "%s", path) >= sizeof parent)
        return ENAMETOOLONG;
    char *slash = strrchr(parent, '/');
    bool have_directory = false;
    if (slash) {
        slash[slash == parent] = '\0'; /* the directory of "/x" is "/" */
        have_directory = stat(parent, &directory) == 0;
    }
    return unix_diag_socket_of_file(pid, &file, have_directory ? &directory : NULL, states,
                                    socket_inode);
}
