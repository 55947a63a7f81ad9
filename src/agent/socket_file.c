/*
 * socket_file.c — the agent's name in the file system: which path it listens on, who may open
 * it, and removing it again without ever touching a file that is not ours.
 *
 * The agent wants its configured path (/tmp/PID.socket by default). /tmp is shared with every
 * local user, and anyone may create that name first — a file, a directory, a symlink, or a
 * socket of their own — to keep the agent from serving. So the name is taken only when it is
 * free, or holds a socket of this user that nobody answers on (the stale socket of a dead
 * process, which is replaced). Anything else there is left alone, and the agent serves instead
 * in a private directory it creates itself, /tmp/hotpatch-PID.XXXXXX/socket (mkdtemp: a fresh
 * name, created 0700 by this process, which nobody can have planted). Clients do not rely on
 * names: they find an agent of PID by the listening socket that PID holds (/proc/PID/fd and
 * /proc/PID/net/unix), wherever it is.
 *
 * Who may connect: the socket file is 0600 (the mode is set on the socket before bind, so the
 * file never exists with a wider one). Users allowed besides the owner get access by a POSIX
 * ACL on the file (one entry per uid), or, with an allowed group, by group ownership and mode
 * 0660. The private directory is then 0711, so they can reach the file but not list it. The
 * permissions only let them knock: SO_PEERCRED on every connection still decides (server.c).
 *
 * Removal: the socket file and the directory are unlinked only while the path still names the
 * very inode this process created.
 *
 * No state of its own; callers (server.c) serialize calls per server.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "agent.h"

#define FALLBACK_PARENT "/tmp"

/* ---- permissions ---------------------------------------------------------------------------- */

/* The kernel's POSIX ACL xattr format (linux/posix_acl_xattr.h), little-endian. */
#define ACL_XATTR_VERSION 2
enum { ACL_USER_OBJ = 0x01, ACL_USER = 0x02, ACL_GROUP_OBJ = 0x04, ACL_MASK = 0x10,
       ACL_OTHER = 0x20 };
#define ACL_UNDEFINED_ID 0xffffffffu
#define ACL_RW 6

struct acl_entry {
    uint16_t tag, perm;
    uint32_t id;
};

static int compare_uids(const void *a, const void *b)
{
    uid_t x = *(const uid_t *)a, y = *(const uid_t *)b;
    return x < y ? -1 : x > y;
}

/* Grants read and write on path to each uid by an ACL. 0 or -errno. */
static int grant_users(const char *path, const uid_t *uids, size_t n)
{
    uid_t sorted[64];
    size_t count = 0;
    for (size_t i = 0; i < n && count < HP_ARRAY_SIZE(sorted); i++)
        if (uids[i] != 0 && uids[i] != geteuid())
            sorted[count++] = uids[i];
    if (count == 0)
        return 0;
    qsort(sorted, count, sizeof *sorted, compare_uids);
    struct {
        uint32_t version;
        struct acl_entry e[64 + 4];
    } acl = {ACL_XATTR_VERSION, {{0}}};
    size_t k = 0;
    acl.e[k++] = (struct acl_entry){ACL_USER_OBJ, ACL_RW, ACL_UNDEFINED_ID};
    for (size_t i = 0; i < count; i++)
        if (i == 0 || sorted[i] != sorted[i - 1])
            acl.e[k++] = (struct acl_entry){ACL_USER, ACL_RW, (uint32_t)sorted[i]};
    acl.e[k++] = (struct acl_entry){ACL_GROUP_OBJ, 0, ACL_UNDEFINED_ID};
    acl.e[k++] = (struct acl_entry){ACL_MASK, ACL_RW, ACL_UNDEFINED_ID};
    acl.e[k++] = (struct acl_entry){ACL_OTHER, 0, ACL_UNDEFINED_ID};
    size_t size = sizeof acl.version + k * sizeof acl.e[0];
    return setxattr(path, "system.posix_acl_access", &acl, size, 0) == 0 ? 0 : -errno;
}

static bool others_allowed(const struct hp_socket_access *access)
{
    if (access->has_group)
        return true;
    for (size_t i = 0; i < access->n_uids; i++)
        if (access->uids[i] != 0 && access->uids[i] != geteuid())
            return true;
    return false;
}

/* Opens the bound file to the allowed users; a failure is logged, never fatal (the owner and
 * root can still connect). */
static void apply_access(const char *path, const struct hp_socket_access *access)
{
    if (access->has_group) {
        if (chown(path, (uid_t)-1, access->gid) != 0 || chmod(path, 0660) != 0)
            hp_log("cannot give group %ld access to %s: %s", (long)access->gid, path,
                   strerror(errno));
    }
    int rc = grant_users(path, access->uids, access->n_uids);
    if (rc != 0)
        hp_log("cannot give the allowed users access to %s with an ACL (%s); they cannot "
               "connect. Use HOTPATCH_ALLOW_GROUP instead", path, strerror(-rc));
}

/* ---- binding ------------------------------------------------------------------------------- */

static int bind_to(int fd, const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof addr.sun_path)
        return -ENAMETOOLONG;
    memcpy(addr.sun_path, path, len + 1);
    return bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 ? 0 : -errno;
}

/* True when path is a socket of ours that nobody answers on: safe to replace. */
static bool is_stale_socket(const char *path, const char **why)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        *why = strerror(errno);
        return false;
    }
    if (!S_ISSOCK(st.st_mode)) {
        *why = S_ISDIR(st.st_mode) ? "a directory is there" : S_ISLNK(st.st_mode)
                                   ? "a symbolic link is there" : "a file that is not a socket is there";
        return false;
    }
    if (st.st_uid != geteuid()) {
        *why = "another user's socket is there";
        return false;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) {
        *why = strerror(errno);
        return false;
    }
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int rc = connect(probe, (struct sockaddr *)&addr, sizeof addr);
    int err = errno;
    close(probe);
    if (rc == 0) {
        *why = "another agent answers there";
        return false;
    }
    if (err != ECONNREFUSED) {
        *why = strerror(err);
        return false;
    }
    return true;
}

/* Binds to `path`, replacing a stale socket of ours there (never anything else). */
static int bind_wanted(int fd, const char *path, const char **why)
{
    int rc = bind_to(fd, path);
    if (rc != -EADDRINUSE) {
        *why = rc == 0 ? "" : strerror(-rc);
        return rc;
    }
    if (!is_stale_socket(path, why))
        return -EADDRINUSE;
    hp_log("replacing stale socket %s", path);
    if (unlink(path) != 0 && errno != ENOENT) {
        *why = strerror(errno);
        return -errno;
    }
    rc = bind_to(fd, path);
    *why = rc == 0 ? "" : rc == -EADDRINUSE ? "it was taken again at once" : strerror(-rc);
    return rc;
}

/* Creates the private directory and binds fd to its "socket". */
static int bind_fallback(int fd, const struct hp_socket_access *access, struct hp_socket_file *f)
{
    char dir[sizeof f->dir];
    snprintf(dir, sizeof dir, FALLBACK_PARENT "/hotpatch-%ld.XXXXXX", (long)getpid());
    if (!mkdtemp(dir))
        return -errno;
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
        rmdir(dir);
        return -EEXIST;
    }
    if (others_allowed(access) && chmod(dir, 0711) != 0)
        hp_log("cannot open %s to the allowed users: %s", dir, strerror(errno));
    char path[sizeof f->path];
    if ((size_t)snprintf(path, sizeof path, "%s/socket", dir) >= sizeof path) {
        rmdir(dir);
        return -ENAMETOOLONG;
    }
    int rc = bind_to(fd, path);
    if (rc != 0) {
        rmdir(dir);
        return rc;
    }
    memcpy(f->dir, dir, sizeof dir);
    f->dir_dev = st.st_dev;
    f->dir_ino = st.st_ino;
    memcpy(f->path, path, sizeof path);
    return 0;
}

static int record_identity(struct hp_socket_file *f)
{
    struct stat st;
    if (lstat(f->path, &st) != 0 || !S_ISSOCK(st.st_mode))
        return -EEXIST;
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    return 0;
}

int hp_socket_file_bind(int fd, const char *wanted, const struct hp_socket_access *access,
                        struct hp_socket_file *out)
{
    struct hp_socket_file f = {.dir = ""};
    if (strlen(wanted) >= sizeof f.path)
        return -ENAMETOOLONG;
    /* The file takes the socket's mode at bind time, so it is never wider than 0600. */
    if (fchmod(fd, 0600) != 0)
        return -errno;
    const char *why = "";
    int rc = bind_wanted(fd, wanted, &why);
    if (rc == 0) {
        snprintf(f.path, sizeof f.path, "%s", wanted);
    } else {
        rc = bind_fallback(fd, access, &f);
        if (rc == 0)
            hp_log("%s is taken (%s); serving on %s instead", wanted, why, f.path);
        else
            hp_log("cannot serve on %s (%s) nor in a private directory under " FALLBACK_PARENT
                   " (%s)", wanted, why, strerror(-rc));
    }
    if (rc == 0)
        rc = record_identity(&f);
    if (rc != 0) {
        hp_socket_file_remove(&f);
        return rc;
    }
    apply_access(f.path, access);
    *out = f;
    return 0;
}

bool hp_socket_file_intact(const struct hp_socket_file *f)
{
    struct stat st;
    return f->path[0] && lstat(f->path, &st) == 0 && st.st_dev == f->dev && st.st_ino == f->ino;
}

void hp_socket_file_remove(const struct hp_socket_file *f)
{
    if (hp_socket_file_intact(f))
        unlink(f->path);
    struct stat st;
    if (f->dir[0] && lstat(f->dir, &st) == 0 && st.st_dev == f->dir_dev &&
        st.st_ino == f->dir_ino)
        rmdir(f->dir);
}
