/*
 * trust.c — opening a file so that the file that was checked is the file that is used.
 *
 * The agent loads libraries (their constructors run in the process) and appends to log and
 * audit files (a root process writing where another user points it). Checking a path and then
 * handing the path to dlopen() or open() resolves it twice, and whoever can change a symlink or
 * a directory on the way wins the race in between. So a path is never resolved by the kernel in
 * one go here: it is walked one component at a time, each one opened relative to the
 * descriptor of the directory before it (never followed by name again), and each one checked
 * as it is opened:
 *   - a directory must be owned by root or the process's effective uid, and not writable by
 *     its group or others unless it has the sticky bit (which stops others from renaming or
 *     removing entries they do not own);
 *   - a symlink is followed only when root or the process's uid owns it (policy
 *     HP_LINKS_TRUSTED), or never (HP_LINKS_NONE); a link inside /proc (a "magic" link such as
 *     /proc/self/fd/N, which names an open file rather than a path) is never followed;
 *   - ".." pops the walk's own stack of directory descriptors, so it cannot climb out of a
 *     directory that was moved meanwhile, and never above "/".
 * The caller then checks the descriptor itself (hp_trust_check_file) and uses that very
 * descriptor: a library is loaded as /proc/self/fd/N, a log is written through the fd.
 *
 * No state; any thread. Every refusal is one line naming the component and the rule.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "agent.h"

#define PROC_SUPER_MAGIC 0x9fa0
#define MAX_LINKS 40                 /* as the kernel's own limit on nested symlinks */
#define MAX_DEPTH 128                /* directories on the walk's stack */

struct walk {
    int dirs[MAX_DEPTH];             /* descriptors of the directories walked, "/" first */
    int depth;
    char shown[PATH_MAX];            /* the path walked so far, for messages */
    enum hp_trust_links links;
    char *why;
    size_t why_cap;
};

static bool owner_trusted(uid_t uid)
{
    return uid == 0 || uid == geteuid();
}

static const char *writer_of(mode_t mode)
{
    return (mode & S_IWOTH) ? "every user" : "its group";
}

static int refuse(struct walk *w, int err, const char *fmt, const char *a, const char *b)
{
    snprintf(w->why, w->why_cap, fmt, a, b);
    return -err;
}

static int check_directory(struct walk *w, int fd, const char *shown)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return refuse(w, errno, "cannot check directory %s: %s", shown, strerror(errno));
    char owner[64];
    if (!owner_trusted(st.st_uid)) {
        snprintf(owner, sizeof owner, "%ld", (long)st.st_uid);
        return refuse(w, EPERM, "directory %s is owned by uid %s; it must be owned by root or "
                      "the process's user", shown, owner);
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX)) {
        snprintf(w->why, w->why_cap, "directory %s is writable by %s (mode %04o) and not sticky; "
                 "only root or uid %ld may be able to change it", shown, writer_of(st.st_mode),
                 (unsigned)(st.st_mode & 07777), (long)geteuid());
        return -EPERM;
    }
    return 0;
}

static void close_walk(struct walk *w)
{
    while (w->depth > 0)
        close(w->dirs[--w->depth]);
}

static int push_directory(struct walk *w, int fd)
{
    if (w->depth == MAX_DEPTH) {
        close(fd);
        return refuse(w, ENAMETOOLONG, "path %s is nested too deeply%s", w->shown, "");
    }
    w->dirs[w->depth++] = fd;
    return 0;
}

static void shown_append(struct walk *w, const char *name)
{
    size_t n = strlen(w->shown);
    if (n + 1 + strlen(name) + 1 > sizeof w->shown)
        return;
    if (n == 0 || w->shown[n - 1] != '/')
        w->shown[n++] = '/';
    strcpy(w->shown + n, name);
}

static void shown_pop(struct walk *w)
{
    char *slash = strrchr(w->shown, '/');
    if (slash && slash != w->shown)
        *slash = '\0';
    else
        strcpy(w->shown, "/");
}

/* Goes back to "/" (an absolute symlink target). */
static void restart_at_root(struct walk *w)
{
    while (w->depth > 1)
        close(w->dirs[--w->depth]);
    strcpy(w->shown, "/");
}

static bool on_procfs(int fd)
{
    struct statfs fs;
    return fstatfs(fd, &fs) == 0 && fs.f_type == PROC_SUPER_MAGIC;
}

/*
 * The component `name` of the current directory is a symlink: checks it, and replaces the rest
 * of the path (`rest`, of capacity cap) with its target followed by the old rest.
 */
static int follow_link(struct walk *w, const char *name, char *rest, size_t cap, int *links)
{
    int dir = w->dirs[w->depth - 1];
    char shown[PATH_MAX];
    snprintf(shown, sizeof shown, "%s%s%s", w->shown, strcmp(w->shown, "/") ? "/" : "", name);
    if (w->links == HP_LINKS_NONE)
        return refuse(w, ELOOP, "%s is a symbolic link; links are not followed here%s", shown,
                      "");
    if (on_procfs(dir))
        return refuse(w, ELOOP, "%s is a link in /proc; such links name open files, not "
                      "paths, and are never followed%s", shown, "");
    struct stat st;
    if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return refuse(w, errno, "cannot check link %s: %s", shown, strerror(errno));
    if (!owner_trusted(st.st_uid)) {
        char owner[32];
        snprintf(owner, sizeof owner, "%ld", (long)st.st_uid);
        return refuse(w, EPERM, "symbolic link %s is owned by uid %s; it must be owned by root "
                      "or the process's user", shown, owner);
    }
    if (++*links > MAX_LINKS)
        return refuse(w, ELOOP, "too many symbolic links on the way to %s%s", shown, "");
    char target[PATH_MAX];
    ssize_t n = readlinkat(dir, name, target, sizeof target - 1);
    if (n <= 0)
        return refuse(w, n < 0 ? errno : EINVAL, "cannot read link %s: %s", shown,
                      n < 0 ? strerror(errno) : "empty target");
    target[n] = '\0';
    char joined[PATH_MAX];
    if ((size_t)snprintf(joined, sizeof joined, "%s%s%s", target, *rest ? "/" : "", rest) >=
        sizeof joined || strlen(joined) >= cap)
        return refuse(w, ENAMETOOLONG, "the path through link %s is too long%s", shown, "");
    strcpy(rest, joined);
    if (target[0] == '/')
        restart_at_root(w);
    return 0;
}

/* Splits the first component off `rest` (in place) into name; false when rest is empty. */
static bool next_component(char *rest, char *name, size_t cap)
{
    char *p = rest;
    while (*p == '/')
        p++;
    if (!*p) {
        rest[0] = '\0';
        return false;
    }
    size_t len = strcspn(p, "/");
    if (len >= cap)
        len = cap - 1;
    memcpy(name, p, len);
    name[len] = '\0';
    memmove(rest, p + len, strlen(p + len) + 1);
    return true;
}

static bool only_slashes(const char *s)
{
    return s[strspn(s, "/")] == '\0';
}

/* Opens the last component, the file itself, into *fd. Returns 0, 1 when it is a link to
 * follow, or -errno. */
static int open_leaf(struct walk *w, const char *name, int flags, mode_t mode, int *fd)
{
    int dir = w->dirs[w->depth - 1];
    *fd = openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, mode);
    if (*fd >= 0)
        return 0;
    int err = errno;
    struct stat st;
    if ((err == ELOOP || err == EMLINK) && fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISLNK(st.st_mode))
        return 1;
    char shown[PATH_MAX];
    snprintf(shown, sizeof shown, "%s%s%s", w->shown, strcmp(w->shown, "/") ? "/" : "", name);
    return refuse(w, err, "cannot open %s: %s", shown, strerror(err));
}

/* Steps into directory `name`; 1 when it is a link to follow, 0 done, or -errno. */
static int enter_directory(struct walk *w, const char *name)
{
    int dir = w->dirs[w->depth - 1];
    int fd = openat(dir, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    char shown[PATH_MAX];
    snprintf(shown, sizeof shown, "%s%s%s", w->shown, strcmp(w->shown, "/") ? "/" : "", name);
    if (fd < 0)
        return refuse(w, errno, "cannot open %s: %s", shown, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return refuse(w, err, "cannot check %s: %s", shown, strerror(err));
    }
    if (S_ISLNK(st.st_mode)) {
        close(fd);
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        close(fd);
        return refuse(w, ENOTDIR, "%s is not a directory%s", shown, "");
    }
    int rc = check_directory(w, fd, shown);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    shown_append(w, name);
    return push_directory(w, fd);
}

static int step_up(struct walk *w)
{
    if (w->depth > 1) {
        close(w->dirs[--w->depth]);
        shown_pop(w);
    }
    return 0;
}

int hp_trust_open(const char *path, int flags, mode_t mode, enum hp_trust_links links,
                  char *why, size_t why_cap)
{
    struct walk w = {.depth = 0, .links = links, .why = why, .why_cap = why_cap};
    if (!path || path[0] != '/')
        return refuse(&w, EINVAL, "'%.200s' is not an absolute path%s", path ? path : "", "");
    char rest[PATH_MAX];
    if (strlen(path) >= sizeof rest)
        return refuse(&w, ENAMETOOLONG, "path '%.200s...' is too long%s", path, "");
    strcpy(rest, path);
    strcpy(w.shown, "/");
    int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0)
        return refuse(&w, errno, "cannot open /: %s%s", strerror(errno), "");
    int rc = check_directory(&w, root, "/");
    if (rc != 0) {
        close(root);
        return rc;
    }
    w.dirs[w.depth++] = root;
    int links_followed = 0, fd = -1;
    char name[NAME_MAX + 1];
    while (fd < 0 && next_component(rest, name, sizeof name)) {
        bool last = only_slashes(rest);
        if (strcmp(name, ".") == 0 || (strcmp(name, "..") == 0 && !last)) {
            if (name[1] == '.')
                step_up(&w);
            continue;
        }
        if (strcmp(name, "..") == 0) {
            rc = refuse(&w, EISDIR, "path '%.200s' names a directory, not a file%s", path, "");
            break;
        }
        rc = last ? open_leaf(&w, name, flags, mode, &fd) : enter_directory(&w, name);
        if (rc == 1)
            rc = follow_link(&w, name, rest, sizeof rest, &links_followed);
        if (rc < 0)
            break;
    }
    if (rc == 0 && fd < 0)
        rc = refuse(&w, EISDIR, "path '%.200s' names a directory, not a file%s", path, "");
    close_walk(&w);
    return rc < 0 ? rc : fd;
}

int hp_trust_check_file(int fd, const char *shown, bool owner_must_be_self, char *why,
                        size_t why_cap)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, why_cap, "cannot check %s: %s", shown, strerror(errno));
        return -errno;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, why_cap, "%s is not a regular file", shown);
        return -EINVAL;
    }
    bool owner_ok = owner_must_be_self ? st.st_uid == geteuid() : owner_trusted(st.st_uid);
    const char *who = owner_must_be_self ? "" : "root or ";
    if (!owner_ok) {
        snprintf(why, why_cap, "file %s is owned by uid %ld; it must be owned by %suid %ld",
                 shown, (long)st.st_uid, who, (long)geteuid());
        return -EPERM;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(why, why_cap, "file %s is writable by %s (mode %04o); only %suid %ld may be able "
                 "to change it", shown, writer_of(st.st_mode), (unsigned)(st.st_mode & 07777),
                 who, (long)geteuid());
        return -EPERM;
    }
    return 0;
}

int hp_trust_open_append(const char *path, char *why, size_t why_cap)
{
    int fd = hp_trust_open(path, O_WRONLY | O_APPEND | O_CREAT, 0600, HP_LINKS_NONE, why,
                           why_cap);
    if (fd < 0)
        return fd;
    int rc = hp_trust_check_file(fd, path, true, why, why_cap);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    return fd;
}
