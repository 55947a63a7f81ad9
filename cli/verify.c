/*
 * verify.c — finding the agent of a process by the listening sockets it holds, and checking
 * the server of a socket before anything is sent to it. See verify.h for why a name is not
 * enough.
 *
 * Everything is read from /proc with bounded buffers: /proc/PID/stat and /proc/PID/status
 * whole (they are small), at most the first 64 KiB of /proc/PID/environ, at most FD_LIMIT
 * socket descriptors of the process, and /proc/PID/net/unix one bounded line at a time, for
 * at most UNIX_LINES_LIMIT lines. No read here can block: /proc files answer at once.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "verify.h"

#define STAT_LIMIT 4096             /* /proc/PID/stat: 52 numbers and a name of 16 bytes */
#define STATUS_LIMIT 16384          /* /proc/PID/status: the Uid: line is near the top */
#define ENVIRON_LIMIT (1 << 16)     /* the part of /proc/PID/environ searched (as before) */
#define FD_LIMIT (1 << 20)          /* socket descriptors of one process looked at */
#define UNIX_LINE_LIMIT 512         /* a line of /proc/net/unix: ~60 bytes and a 108-byte path */
#define UNIX_LINES_LIMIT (1 << 22)  /* sockets in one network namespace looked at */
#define STARTTIME_FIELD 22          /* of /proc/PID/stat, counting from 1 (proc(5)) */
#define FLAG_LISTENING 0x10000ul    /* __SO_ACCEPTCON in the Flags column */
#define STATE_UNCONNECTED 1ul       /* SS_UNCONNECTED in the St column */

/* ---- messages --------------------------------------------------------------------------------- */

static void say_no_such_process(long pid)
{
    fprintf(stderr, "hotpatch: no process %ld is running\n", pid);
}

static void say_cannot_read(long pid, const char *file, int err)
{
    fprintf(stderr, "hotpatch: cannot verify the agent of process %ld: cannot read /proc/%ld/%s "
            "(%s); run as root or as the user that owns the process\n",
            pid, pid, file, strerror(err));
}

/* A /proc file of pid could not be read: the process is gone, or we may not look at it. */
static void say_unreadable(long pid, const char *file, int err)
{
    if (err == ENOENT || err == ESRCH)
        say_no_such_process(pid);
    else
        say_cannot_read(pid, file, err);
}

void print_start_hint(void)
{
    char exe[PATH_MAX], preload[PATH_MAX] = "libhotpatch_preload.so";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        /* <prefix>/bin/hotpatch -> <prefix>/lib/libhotpatch_preload.so */
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            slash = strrchr(exe, '/');
        }
        if (slash) {
            *slash = '\0';
            snprintf(preload, sizeof preload, "%.*s/lib/libhotpatch_preload.so",
                     (int)(sizeof preload - 40), exe);
        }
    }
    fprintf(stderr,
            "hotpatch: no agent is listening there. Start the program linked with libhotpatch "
            "(calling hotpatch_start()),\n          or run it as: LD_PRELOAD=%s PROGRAM ...\n",
            preload);
}

/* ---- small /proc files ------------------------------------------------------------------------ */

/* Reads at most cap - 1 bytes of /proc/PID/FILE into buf, NUL-terminated. 0 or an errno. */
static int read_proc_file(long pid, const char *file, char *buf, size_t cap, size_t *len)
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

/* Field 22 of /proc/PID/stat. The process name (field 2) may hold spaces and ')', so the
 * fields are counted from after the last ')'. */
static int read_start_time(long pid, unsigned long long *start_time)
{
    char buf[STAT_LIMIT];
    size_t len;
    int err = read_proc_file(pid, "stat", buf, sizeof buf, &len);
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

/* The real uid: the first number of the "Uid:" line of /proc/PID/status. */
static int read_real_uid(long pid, uid_t *uid)
{
    char buf[STATUS_LIMIT];
    size_t len;
    int err = read_proc_file(pid, "status", buf, sizeof buf, &len);
    if (err)
        return err;
    char *line = strncmp(buf, "Uid:", 4) == 0 ? buf : strstr(buf, "\nUid:");
    if (!line)
        return EINVAL;
    line += line == buf ? 4 : 5;
    char *end;
    errno = 0;
    unsigned long value = strtoul(line, &end, 10);
    if (errno || end == line || value > (uid_t)-1)
        return EINVAL;
    *uid = (uid_t)value;
    return 0;
}

bool identify_process(long pid, struct process_identity *who)
{
    who->pid = pid;
    int err = read_start_time(pid, &who->start_time);
    if (err) {
        say_unreadable(pid, "stat", err);
        return false;
    }
    err = read_real_uid(pid, &who->real_uid);
    if (err) {
        say_unreadable(pid, "status", err);
        return false;
    }
    return true;
}

/* ---- HOTPATCH_SOCKET from the process's environment ------------------------------------------- */

/* The agent's socket pattern with each "%p" replaced by pid (as the agent does). */
static bool expand_pid(const char *pattern, long pid, char *out, size_t cap)
{
    size_t used = 0;
    for (const char *p = pattern; *p; p++) {
        bool is_pid = p[0] == '%' && p[1] == 'p';
        int n = is_pid ? snprintf(out + used, cap - used, "%ld", pid)
                       : snprintf(out + used, cap - used, "%c", *p);
        if (n < 0 || (size_t)n >= cap - used)
            return false;
        used += (size_t)n;
        p += is_pid;
    }
    return true;
}

/* The HOTPATCH_SOCKET the process was started with, if its environment is readable. */
static bool socket_from_environment(long pid, char *out, size_t cap)
{
    char *env = malloc(ENVIRON_LIMIT);
    size_t n = 0;
    if (!env || read_proc_file(pid, "environ", env, ENVIRON_LIMIT, &n) != 0) {
        free(env);
        return false;
    }
    bool found = false;
    for (size_t i = 0; i < n && !found; i += strlen(env + i) + 1) {
        const char *kv = env + i;
        if (strncmp(kv, "HOTPATCH_SOCKET=", 16) == 0 && kv[16])
            found = expand_pid(kv + 16, pid, out, cap);
    }
    free(env);
    return found;
}

/* ---- the sockets a process holds -------------------------------------------------------------- */

/* The inodes of the sockets among a process's descriptors, sorted for lookup. */
struct inode_set {
    unsigned long *inodes;
    size_t count, cap;
};

static void forget_inodes(struct inode_set *set)
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

static bool holds_inode(const struct inode_set *set, unsigned long inode)
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

/* Collects the socket inodes of /proc/PID/fd into set. 0 or an errno (the directory could
 * not be read: the process is gone, or we may not look at it). */
static int read_held_sockets(long pid, struct inode_set *set)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", pid);
    DIR *dir = opendir(path);
    if (!dir)
        return errno;
    *set = (struct inode_set){0};
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

/* ---- listening sockets in /proc/PID/net/unix -------------------------------------------------- */

/* Called for each listening socket with a path; returns false to stop the scan. */
typedef bool (*listener_visitor)(unsigned long inode, const char *path, void *context);

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
 * True, with its inode and path, when the line is a listening socket bound to a path. */
static bool parse_listener(char *line, unsigned long *inode, const char **path)
{
    char *p = strchr(line, ':');
    if (!p)
        return false;
    p++;
    unsigned long refcount, protocol, flags, type, state;
    if (!next_number(&p, 16, &refcount) || !next_number(&p, 16, &protocol) ||
        !next_number(&p, 16, &flags) || !next_number(&p, 16, &type) ||
        !next_number(&p, 16, &state) || !next_number(&p, 10, inode))
        return false;
    if (flags != FLAG_LISTENING || state != STATE_UNCONNECTED || p[0] != ' ' || p[1] == '\0')
        return false;
    *path = p + 1;
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

/* Calls visit for each listening socket with a path that pid's network namespace has. */
static int scan_listeners(long pid, listener_visitor visit, void *context)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/net/unix", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return errno;
    char line[UNIX_LINE_LIMIT];
    for (long lines = 0; lines < UNIX_LINES_LIMIT && read_line(f, line, sizeof line); lines++) {
        unsigned long inode;
        const char *bound;
        if (parse_listener(line, &inode, &bound) && !visit(inode, bound, context))
            break;
    }
    fclose(f);
    return 0;
}

/* ---- choosing the agent's socket -------------------------------------------------------------- */

enum { RANK_ENVIRONMENT, RANK_DEFAULT, RANK_FALLBACK, RANK_NONE };

/* What the scan looks for and what it has found so far. */
struct agent_search {
    long pid;
    const struct inode_set *held;
    const char *environment_path;   /* NULL when the process has no HOTPATCH_SOCKET */
    char default_path[48];          /* /tmp/PID.socket */
    int best_rank;
    char best_path[PATH_MAX];
};

/* /tmp/hotpatch-PID.XXXXXX/socket: the agent's private directory when the standard name is
 * taken by a file the process does not own. */
static bool is_private_fallback(const char *path, long pid)
{
    char prefix[48];
    int n = snprintf(prefix, sizeof prefix, "/tmp/hotpatch-%ld.", pid);
    if (n < 0 || strncmp(path, prefix, (size_t)n) != 0)
        return false;
    const char *rest = path + n, *slash = strchr(rest, '/');
    return slash && slash > rest && strcmp(slash, "/socket") == 0;
}

static int rank_of(const struct agent_search *s, const char *path)
{
    if (s->environment_path && strcmp(path, s->environment_path) == 0)
        return RANK_ENVIRONMENT;
    if (strcmp(path, s->default_path) == 0)
        return RANK_DEFAULT;
    if (is_private_fallback(path, s->pid))
        return RANK_FALLBACK;
    return RANK_NONE;
}

static bool consider_listener(unsigned long inode, const char *path, void *context)
{
    struct agent_search *s = context;
    if (!holds_inode(s->held, inode))
        return true; /* a name anyone may have bound: only the process's own sockets count */
    int rank = rank_of(s, path);
    if (rank < s->best_rank && strlen(path) < sizeof s->best_path) {
        s->best_rank = rank;
        strcpy(s->best_path, path);
    }
    return s->best_rank != RANK_ENVIRONMENT;
}

static void say_no_agent(long pid)
{
    fprintf(stderr, "hotpatch: process %ld has no agent: none of its listening sockets is "
            "/tmp/%ld.socket or /tmp/hotpatch-%ld.*/socket\n", pid, pid, pid);
    print_start_hint();
}

bool find_agent_socket(const struct process_identity *who, char *path, size_t cap)
{
    struct inode_set held;
    int err = read_held_sockets(who->pid, &held);
    if (err) {
        say_unreadable(who->pid, "fd", err);
        return false;
    }
    char environment_path[PATH_MAX];
    struct agent_search search = {.pid = who->pid, .held = &held, .best_rank = RANK_NONE};
    if (socket_from_environment(who->pid, environment_path, sizeof environment_path))
        search.environment_path = environment_path;
    snprintf(search.default_path, sizeof search.default_path, "/tmp/%ld.socket", who->pid);
    err = held.count ? scan_listeners(who->pid, consider_listener, &search) : 0;
    forget_inodes(&held);
    if (err) {
        say_unreadable(who->pid, "net/unix", err);
        return false;
    }
    if (search.best_rank == RANK_NONE || strlen(search.best_path) >= cap) {
        say_no_agent(who->pid);
        return false;
    }
    strcpy(path, search.best_path);
    return true;
}

/* ---- after connecting ------------------------------------------------------------------------- */

static bool peer_credentials(int fd, const char *path, struct ucred *cred)
{
    socklen_t len = sizeof *cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) == 0)
        return true;
    fprintf(stderr, "hotpatch: refusing to talk to %s: cannot read its server's credentials "
            "(%s)\n", path, strerror(errno));
    return false;
}

/* What the re-check after connecting looks for: a listener at path that pid holds, and any
 * listener at path that it does not hold. */
struct holder_search {
    const struct inode_set *held;
    const char *path;
    bool found, foreign;
};

static bool find_held_listener(unsigned long inode, const char *path, void *context)
{
    struct holder_search *s = context;
    if (strcmp(path, s->path) == 0) {
        if (holds_inode(s->held, inode))
            s->found = true;
        else
            s->foreign = true;
    }
    return !s->foreign;
}

/* Whether the process still holds a listening socket bound to path, and no other listening
 * socket carries that name: two listeners can be bound to one name (the file was replaced),
 * and the file, which connect() follows, belongs to the later; the one the process holds may
 * not be the one we reached. 0, or an errno and in *unreadable the /proc file that could not
 * be read. */
static int check_still_held(long pid, const char *path, bool *held_now, const char **unreadable)
{
    struct inode_set held;
    int err = read_held_sockets(pid, &held);
    if (err) {
        *unreadable = "fd";
        return err;
    }
    struct holder_search search = {.held = &held, .path = path};
    err = held.count ? scan_listeners(pid, find_held_listener, &search) : 0;
    forget_inodes(&held);
    *held_now = search.found && !search.foreign;
    *unreadable = "net/unix";
    return err;
}

bool check_agent_of_process(int fd, const char *path, const struct process_identity *who)
{
    struct ucred cred;
    if (!peer_credentials(fd, path, &cred))
        return false;
    if (cred.pid != who->pid) {
        fprintf(stderr, "hotpatch: refusing to talk to %s: it is served by process %ld, not by "
                "process %ld (a stale or foreign socket)\n", path, (long)cred.pid, who->pid);
        return false;
    }
    if (cred.uid != 0 && cred.uid != who->real_uid) {
        fprintf(stderr, "hotpatch: refusing to talk to %s: its server runs as uid %lu, but "
                "process %ld runs as uid %lu (only root or uid %lu may serve it)\n", path,
                (unsigned long)cred.uid, who->pid, (unsigned long)who->real_uid,
                (unsigned long)who->real_uid);
        return false;
    }
    bool held_now = false;
    const char *unreadable = "";
    int held_err = check_still_held(who->pid, path, &held_now, &unreadable);
    /* The start time is read last, so a pid reused during the checks above is noticed and
     * named as such rather than as whatever those checks saw. */
    unsigned long long start_time;
    int err = read_start_time(who->pid, &start_time);
    if (err) {
        say_unreadable(who->pid, "stat", err);
        return false;
    }
    if (start_time != who->start_time) {
        fprintf(stderr, "hotpatch: process %ld changed while connecting (it exited and its pid "
                "was reused); try again\n", who->pid);
        return false;
    }
    if (held_err) {
        say_unreadable(who->pid, unreadable, held_err);
        return false;
    }
    if (!held_now) {
        fprintf(stderr, "hotpatch: refusing to talk to %s: process %ld does not hold that "
                "listening socket (a socket handed over by another process)\n", path, who->pid);
        return false;
    }
    return true;
}

bool check_socket_server(int fd, const char *path, const struct peer_trust *trust)
{
    struct ucred cred;
    if (!peer_credentials(fd, path, &cred))
        return false;
    uid_t me = geteuid();
    if (me == 0 || cred.uid == 0 || cred.uid == me || (trust->named && cred.uid == trust->uid))
        return true;
    fprintf(stderr, "hotpatch: refusing to talk to %s: its server runs as uid %lu, not as root "
            "or as you (uid %lu); pass --trust-peer %lu to allow it\n", path,
            (unsigned long)cred.uid, (unsigned long)me, (unsigned long)cred.uid);
    return false;
}

bool parse_trusted_uid(const char *text, uid_t *uid)
{
    if (*text >= '0' && *text <= '9') {
        char *end;
        errno = 0;
        unsigned long value = strtoul(text, &end, 10);
        if (errno || *end || value >= (uid_t)-1)
            return false;
        *uid = (uid_t)value;
        return true;
    }
    struct passwd *pw = *text ? getpwnam(text) : NULL;
    if (!pw)
        return false;
    *uid = pw->pw_uid;
    return true;
}
