/*
 * procfs.c — reading processes from /proc for the client. See procfs.h for why it is shared.
 *
 * Everything is read with bounded buffers: /proc/PID/stat and /proc/PID/status whole (they are
 * small), at most PROC_CMDLINE_LIMIT bytes of the command line, at most FD_LIMIT socket
 * descriptors of a process, and /proc/PID/net/unix one bounded line at a time, for at most
 * UNIX_LINES_LIMIT lines.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "procfs.h"

#define STAT_LIMIT 4096             /* /proc/PID/stat: 52 numbers and a name of 16 bytes */
#define STATUS_LIMIT 16384          /* /proc/PID/status */
#define FD_LIMIT (1 << 20)          /* socket descriptors of one process looked at */
#define UNIX_LINE_LIMIT 512         /* a line of /proc/net/unix: ~60 bytes and a 108-byte path */
#define UNIX_LINES_LIMIT (1 << 22)  /* sockets in one network namespace looked at */
#define PIDS_LIMIT (1 << 22)        /* processes looked at (pid_max is at most 2^22) */
#define STARTTIME_FIELD 22          /* of /proc/PID/stat, counting from 1 (proc(5)) */
#define FLAG_LISTENING 0x10000ul    /* __SO_ACCEPTCON in the Flags column */
#define STATE_UNCONNECTED 1ul       /* SS_UNCONNECTED in the St column */

int proc_read_file(long pid, const char *file, char *buf, size_t cap, size_t *len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/%s", pid, file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    size_t used = 0;
    while (used < cap - 1) {
        ssize_t n = read(fd, buf + used, cap - 1 - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = errno;
            close(fd);
            return err;
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    close(fd);
    buf[used] = '\0';
    *len = used;
    return 0;
}

/* The name (field 2) may hold spaces and ')', so the fields are counted after the last ')'. */
int proc_start_time(long pid, unsigned long long *start_time)
{
    char buf[STAT_LIMIT];
    size_t len;
    int err = proc_read_file(pid, "stat", buf, sizeof buf, &len);
    if (err)
        return err;
    char *p = strrchr(buf, ')');
    if (!p)
        return EINVAL;
    p++;
    for (int field = 3; field < STARTTIME_FIELD; field++) {
        p = strchr(p + 1, ' ');
        if (!p)
            return EINVAL;
    }
    char *end;
    errno = 0;
    *start_time = strtoull(p, &end, 10);
    return errno || end == p ? EINVAL : 0;
}

/* The line of status that starts with key ("Uid:"), just after the key; NULL if none. */
static char *status_line(char *buf, const char *key)
{
    size_t n = strlen(key);
    if (strncmp(buf, key, n) == 0)
        return buf + n;
    char pattern[16];
    snprintf(pattern, sizeof pattern, "\n%s", key);
    char *line = strstr(buf, pattern);
    return line ? line + 1 + n : NULL;
}

/* The last number on the NSpid: line (the pid in the innermost namespace); -1 if none. */
static long last_number_of_line(const char *p)
{
    long last = -1;
    while (*p && *p != '\n') {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        if (!errno && v > 0)
            last = v;
        p = end;
    }
    return last;
}

int proc_status(long pid, struct proc_status *out)
{
    char buf[STATUS_LIMIT];
    size_t len;
    int err = proc_read_file(pid, "status", buf, sizeof buf, &len);
    if (err)
        return err;
    char *line = status_line(buf, "Uid:"), *end;
    if (!line)
        return EINVAL;
    errno = 0;
    unsigned long value = strtoul(line, &end, 10);
    if (errno || end == line || value > (uid_t)-1)
        return EINVAL;
    out->real_uid = (uid_t)value;
    const char *ns = status_line(buf, "NSpid:");
    long ns_pid = ns ? last_number_of_line(ns) : -1;
    out->ns_pid = ns_pid > 0 ? ns_pid : pid;
    const char *pp = status_line(buf, "PPid:");
    out->ppid = pp ? strtol(pp, NULL, 10) : 0;
    return 0;
}

int proc_cmdline(long pid, char *buf, size_t cap, size_t *len)
{
    size_t limit = cap < PROC_CMDLINE_LIMIT ? cap : PROC_CMDLINE_LIMIT;
    int err = proc_read_file(pid, "cmdline", buf, limit, len);
    if (err)
        return err;
    while (*len && buf[*len - 1] == '\0')
        (*len)--;
    for (size_t i = 0; i < *len; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
    buf[*len] = '\0';
    return 0;
}

/* Whether /proc/PID/WHAT and /proc/self/WHAT are the same object; true when either cannot be
 * looked at. */
static bool same_as_ours(long pid, const char *what)
{
    char theirs_path[64], ours_path[64];
    snprintf(theirs_path, sizeof theirs_path, "/proc/%ld/%s", pid, what);
    snprintf(ours_path, sizeof ours_path, "/proc/self/%s", what);
    struct stat theirs, ours;
    if (stat(theirs_path, &theirs) != 0 || stat(ours_path, &ours) != 0)
        return true;
    return theirs.st_dev == ours.st_dev && theirs.st_ino == ours.st_ino;
}

bool proc_root_is_ours(long pid)
{
    /* Another mount namespace may show the same root directory with other mounts on it (a
     * tmpfs of its own on /tmp): its paths are ours only when the namespace is too. */
    return same_as_ours(pid, "root") && same_as_ours(pid, "ns/mnt");
}

/* ---- the sockets a process holds -------------------------------------------------------------- */

void inode_set_free(struct inode_set *set)
{
    free(set->inodes);
    *set = (struct inode_set){0};
}

static bool add_inode(struct inode_set *set, unsigned long inode)
{
    if (set->count == set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 64;
        unsigned long *grown = realloc(set->inodes, cap * sizeof *grown);
        if (!grown)
            return false;
        set->inodes = grown;
        set->cap = cap;
    }
    set->inodes[set->count++] = inode;
    return true;
}

static int compare_inodes(const void *a, const void *b)
{
    unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
    return (x > y) - (x < y);
}

bool inode_set_has(const struct inode_set *set, unsigned long inode)
{
    return set->count &&
           bsearch(&inode, set->inodes, set->count, sizeof inode, compare_inodes) != NULL;
}

/* The inode of a descriptor link of the form "socket:[INODE]"; false for anything else. */
static bool socket_inode_of(const char *link, unsigned long *inode)
{
    if (strncmp(link, "socket:[", 8) != 0)
        return false;
    char *end;
    errno = 0;
    *inode = strtoul(link + 8, &end, 10);
    return !errno && end != link + 8 && strcmp(end, "]") == 0;
}

int proc_held_sockets(long pid, struct inode_set *set)
{
    *set = (struct inode_set){0};
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", pid);
    DIR *dir = opendir(path);
    if (!dir)
        return errno;
    struct dirent *entry;
    while (set->count < FD_LIMIT && (entry = readdir(dir)) != NULL) {
        char link[64];
        ssize_t n = readlinkat(dirfd(dir), entry->d_name, link, sizeof link - 1);
        if (n <= 0)
            continue; /* ".", "..", or a descriptor closed since readdir */
        link[n] = '\0';
        unsigned long inode;
        if (socket_inode_of(link, &inode) && !add_inode(set, inode))
            break;
    }
    closedir(dir);
    if (set->count)
        qsort(set->inodes, set->count, sizeof *set->inodes, compare_inodes);
    return 0;
}

/* ---- /proc/PID/net/unix ----------------------------------------------------------------------- */

/* The next number of a line after at least one space; *p moves past it. */
static bool next_number(char **p, int base, unsigned long *out)
{
    char *s = *p;
    if (*s != ' ')
        return false;
    while (*s == ' ')
        s++;
    char *end;
    errno = 0;
    *out = strtoul(s, &end, base);
    if (errno || end == s)
        return false;
    *p = end;
    return true;
}

/* One line of /proc/PID/net/unix (unix(7)):
 *   "Num: RefCount Protocol Flags Type St Inode Path"
 *   "0000000000000000: 00000002 00000000 00010000 0001 01 12345 /tmp/1234.socket"
 * True, with the entry filled in, when the socket is bound to a path. */
static bool parse_unix_line(char *line, struct unix_entry *e)
{
    char *p = strchr(line, ':');
    if (!p)
        return false;
    p++;
    unsigned long refcount, protocol, flags, type, state;
    if (!next_number(&p, 16, &refcount) || !next_number(&p, 16, &protocol) ||
        !next_number(&p, 16, &flags) || !next_number(&p, 16, &type) ||
        !next_number(&p, 16, &state) || !next_number(&p, 10, &e->inode))
        return false;
    if (p[0] != ' ' || p[1] == '\0')
        return false;
    e->listening = flags == FLAG_LISTENING && state == STATE_UNCONNECTED;
    e->path = p + 1;
    return true;
}

/* Reads one line into buf; a line longer than buf is skipped whole. False at the end. */
static bool read_line(FILE *f, char *buf, size_t cap)
{
    for (;;) {
        if (!fgets(buf, (int)cap, f))
            return false;
        size_t n = strlen(buf);
        if (n && buf[n - 1] == '\n') {
            buf[n - 1] = '\0';
            return true;
        }
        if (n + 1 < cap)
            return true; /* the last line, without a newline */
        int c;
        while ((c = fgetc(f)) != EOF && c != '\n')
            ;
    }
}

int proc_scan_unix(long pid, unix_visitor visit, void *context)
{
    char path[64];
    if (pid)
        snprintf(path, sizeof path, "/proc/%ld/net/unix", pid);
    else
        snprintf(path, sizeof path, "/proc/self/net/unix");
    FILE *f = fopen(path, "re");
    if (!f)
        return errno;
    char line[UNIX_LINE_LIMIT];
    for (long lines = 0; lines < UNIX_LINES_LIMIT && read_line(f, line, sizeof line); lines++) {
        struct unix_entry entry;
        if (parse_unix_line(line, &entry) && !visit(&entry, context))
            break;
    }
    fclose(f);
    return 0;
}

struct bound_search {
    const char *path;
    bool found;
};

static bool match_bound(const struct unix_entry *e, void *context)
{
    struct bound_search *s = context;
    s->found = strcmp(e->path, s->path) == 0;
    return !s->found;
}

bool proc_path_is_bound(const char *path)
{
    struct bound_search search = {path, false};
    return proc_scan_unix(0, match_bound, &search) != 0 || search.found;
}

/* ---- every process ------------------------------------------------------------------------------ */

static int compare_pids(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/* The pid a /proc entry names, or 0 when it is not all digits. */
static long pid_of_entry(const char *name)
{
    char *end;
    errno = 0;
    long pid = strtol(name, &end, 10);
    return (name[0] >= '0' && name[0] <= '9' && !*end && !errno && pid > 0) ? pid : 0;
}

int proc_each_pid(pid_visitor visit, void *context)
{
    DIR *dir = opendir("/proc");
    if (!dir)
        return errno;
    long *pids = NULL;
    size_t count = 0, cap = 0;
    struct dirent *entry;
    while (count < PIDS_LIMIT && (entry = readdir(dir)) != NULL) {
        long pid = pid_of_entry(entry->d_name);
        if (!pid)
            continue;
        if (count == cap) {
            size_t grown_cap = cap ? cap * 2 : 256;
            long *grown = realloc(pids, grown_cap * sizeof *grown);
            if (!grown)
                break;
            pids = grown;
            cap = grown_cap;
        }
        pids[count++] = pid;
    }
    closedir(dir);
    if (count)
        qsort(pids, count, sizeof *pids, compare_pids);
    for (size_t i = 0; i < count && visit(pids[i], context); i++)
        ;
    free(pids);
    return 0;
}
