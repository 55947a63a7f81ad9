/*
 * unix_diag.c — one sock_diag dump of a network namespace's Unix sockets, searched for those
 * bound to a file. See unix_diag.h for why a file's identity, not its name.
 *
 * The request asks only for the file identity (UDIAG_SHOW_VFS) and, for a listener search,
 * only listening sockets, so the kernel sends a few dozen bytes per socket. The reply is read
 * into one buffer a datagram at a time, and the whole dump is read: a match is only trusted
 * when it is the only kind of match there is. Only replies to our own request count: the
 * socket is connected to the kernel (port 0), and the sequence number is checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <unistd.h>

#include "unix_diag.h"

#define UNIX_DIAG_MESSAGES_LIMIT (1 << 22) /* sockets in one network namespace looked at */
#define TCP_LISTEN_STATE 10                /* the state unix_diag reports for a listener */
#define REQUEST_SEQUENCE 0x68707464u       /* "hptd": the only sequence a reply may carry */
#define DATAGRAM_LIMIT 65536               /* above any datagram of a dump (at most 32 KiB) */

/* The device as the kernel keeps it (MAJOR << 20 | MINOR), which is what unix_diag reports,
 * not the encoding stat() returns. */
static uint32_t kernel_device(dev_t dev)
{
    return (uint32_t)((major(dev) << 20) | (minor(dev) & 0xfffff));
}

/* ---- the socket, in the right namespace --------------------------------------------------- */

/* A sock_diag socket of the calling thread's namespace, connected to the kernel so that no
 * other sender can reach it; or -errno. */
static int plain_diag_socket(void)
{
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0)
        return -errno;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    struct timeval second = {.tv_sec = 1};
    if (connect(fd, (struct sockaddr *)&kernel, sizeof kernel) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &second, sizeof second) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

struct namespace_visit {
    int namespace_fd;
    int result;    /* the socket, or -errno */
};

/* Runs in a thread of its own, which ends here: it never has to come back. */
static void *open_in_namespace(void *context)
{
    struct namespace_visit *visit = context;
    visit->result = setns(visit->namespace_fd, CLONE_NEWNET) == 0 ? plain_diag_socket() : -errno;
    return NULL;
}

static bool same_object(int a, int b)
{
    struct stat x, y;
    return fstat(a, &x) == 0 && fstat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

/* A sock_diag socket of pid's network namespace (pid 0: the caller's), or -errno. */
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
    int fd;
    if (ours < 0) {
        fd = -errno;
    } else if (same_object(theirs, ours)) {
        fd = plain_diag_socket();
    } else {
        struct namespace_visit visit = {.namespace_fd = theirs, .result = -EAGAIN};
        pthread_t thread;
        int err = pthread_create(&thread, NULL, open_in_namespace, &visit);
        if (err == 0)
            pthread_join(thread, NULL);
        fd = err ? -err : visit.result;
    }
    if (ours >= 0)
        close(ours);
    close(theirs);
    return fd;
}

/* ---- the dump ----------------------------------------------------------------------------- */

static int send_dump_request(int fd, enum unix_diag_states states)
{
    struct {
        struct nlmsghdr header;
        struct unix_diag_req request;
    } message = {
        .header = {.nlmsg_len = sizeof message, .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                   .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = REQUEST_SEQUENCE},
        .request = {.sdiag_family = AF_UNIX, .udiag_show = UDIAG_SHOW_VFS,
                    .udiag_states = states == UNIX_DIAG_LISTENING ? 1u << TCP_LISTEN_STATE
                                                                  : UINT32_MAX},
    };
    ssize_t sent = send(fd, &message, sizeof message, 0);
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
    struct unix_diag_matches *out;
    long seen;
};

static void consider(const struct nlmsghdr *header, struct file_search *search)
{
    struct unix_diag_vfs vfs;
    if (!file_of(header, &vfs))
        return;
    bool device = vfs.udiag_vfs_dev == search->device ||
                  vfs.udiag_vfs_dev == search->directory_device;
    struct unix_diag_matches *out = search->out;
    out->device_seen |= device;
    if (!device || vfs.udiag_vfs_ino != search->inode)
        return;
    if (out->count < UNIX_DIAG_MATCHES_MAX)
        out->inodes[out->count] = ((const struct unix_diag_msg *)NLMSG_DATA(header))->udiag_ino;
    out->count++;
}

/* The error a NLMSG_ERROR or NLMSG_DONE carries (negative), 0 when none. */
static int carried_error(const struct nlmsghdr *header)
{
    if (header->nlmsg_len < NLMSG_LENGTH(sizeof(int)))
        return header->nlmsg_type == NLMSG_ERROR ? -EPROTO : 0;
    int error;
    memcpy(&error, NLMSG_DATA(header), sizeof error);
    return error < 0 ? error : header->nlmsg_type == NLMSG_ERROR ? -EPROTO : 0;
}

/* Looks at one datagram of the dump. 1: the dump is over, 0: more to read, or -errno. */
static int search_datagram(const char *buffer, ssize_t size, struct file_search *search)
{
    const struct nlmsghdr *header = (const struct nlmsghdr *)buffer;
    for (; NLMSG_OK(header, size); header = NLMSG_NEXT(header, size)) {
        if (header->nlmsg_seq != REQUEST_SEQUENCE)
            return -EPROTO;
        if (header->nlmsg_type == NLMSG_DONE || header->nlmsg_type == NLMSG_ERROR) {
            int error = carried_error(header);
            return error ? error : 1;
        }
        if (header->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
            header->nlmsg_len < NLMSG_LENGTH(sizeof(struct unix_diag_msg)))
            return -EPROTO;
        if (++search->seen > UNIX_DIAG_MESSAGES_LIMIT)
            return -E2BIG;
        consider(header, search);
    }
    return size <= 0 ? 0 : -EPROTO; /* bytes left that are no whole message */
}

static int read_dump(int fd, struct file_search *search)
{
    uint64_t *buffer = malloc(DATAGRAM_LIMIT); /* 8-byte aligned for headers read in place */
    if (!buffer)
        return ENOMEM;
    int err;
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

int unix_diag_sockets_of_file(long pid, const struct stat *file, const struct stat *directory,
                              enum unix_diag_states states, struct unix_diag_matches *out)
{
    *out = (struct unix_diag_matches){0};
    int fd = open_diag_socket(pid);
    if (fd < 0)
        return -fd;
    struct file_search search = {
        .device = kernel_device(file->st_dev),
        .directory_device = kernel_device(directory ? directory->st_dev : file->st_dev),
        .inode = (uint32_t)file->st_ino,
        .out = out,
    };
    int err = send_dump_request(fd, states);
    if (!err)
        err = read_dump(fd, &search);
    close(fd);
    if (err)
        *out = (struct unix_diag_matches){0};
    return err;
}

bool unix_diag_directory_of(const char *path, struct stat *directory)
{
    char parent[PATH_MAX];
    if ((size_t)snprintf(parent, sizeof parent, "%s", path) >= sizeof parent)
        return false;
    char *slash = strrchr(parent, '/');
    if (!slash)
        return stat(".", directory) == 0;
    slash[slash == parent] = '\0'; /* the directory of "/x" is "/" */
    return stat(parent, directory) == 0;
}
