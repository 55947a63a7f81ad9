/*
 * verify.c — finding the agent of a process by the listening sockets it holds, and checking
 * the server of a socket before anything is sent to it. See verify.h for why a name is not
 * enough, and procfs.c for how /proc is read (bounded; nothing blocks).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "message.h"
#include "procfs.h"
#include "stale.h"
#include "unix_diag.h"
#include "verify.h"

#define ENVIRON_LIMIT (1 << 16)     /* the part of /proc/PID/environ searched (as before) */

/* ---- messages --------------------------------------------------------------------------------- */

static void say_no_such_process(long pid)
{
    say("no process %ld is running", pid);
}

/* A /proc file of pid could not be read: the process is gone, or we may not look at it. */
static void say_unreadable(long pid, const char *file, int err)
{
    if (err == ENOENT || err == ESRCH)
        say_no_such_process(pid);
    else
        say("cannot verify the agent of process %ld: cannot read /proc/%ld/%s (%s); run as "
            "root or as the user that owns the process", pid, pid, file, strerror(err));
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
    say("no agent is listening there. Start the program linked with libhotpatch "
        "(calling hotpatch_start()),\n          or run it as: LD_PRELOAD=%s PROGRAM ...",
        preload);
}

/* ---- who the process is ------------------------------------------------------------------------ */

/* Reads the identity; 0, or the errno of the read that failed and in *file its name. */
static int identify(long pid, struct process_identity *who, const char **file)
{
    *who = (struct process_identity){.pid = pid};
    *file = "stat";
    int err = proc_start_time(pid, &who->start_time);
    if (err)
        return err;
    struct proc_status status;
    *file = "status";
    err = proc_status(pid, &status);
    if (err)
        return err;
    who->real_uid = status.real_uid;
    who->ns_pid = status.ns_pid;
    if (!proc_root_is_ours(pid))
        snprintf(who->root, sizeof who->root, "/proc/%ld/root", pid);
    return 0;
}

int identify_quietly(long pid, struct process_identity *who)
{
    const char *file;
    return identify(pid, who, &file);
}

/* No process pid: say so, naming the socket file it left behind if there is one. */
static void say_not_running(long pid)
{
    char stale[PATH_MAX];
    if (find_stale_socket_of_pid(pid, stale, sizeof stale))
        say("process %ld is not running (stale socket file %s)", pid, stale);
    else
        say_no_such_process(pid);
}

bool identify_process(long pid, struct process_identity *who)
{
    const char *file;
    int err = identify(pid, who, &file);
    if (!err)
        return true;
    if (err == ENOENT || err == ESRCH)
        say_not_running(pid);
    else
        say_unreadable(pid, file, err);
    return false;
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

/* The HOTPATCH_SOCKET the process was started with (its %p being the pid it knows itself
 * by), if its environment is readable. */
static bool socket_from_environment(const struct process_identity *who, char *out, size_t cap)
{
    char *env = malloc(ENVIRON_LIMIT);
    size_t n = 0;
    if (!env || proc_read_file(who->pid, "environ", env, ENVIRON_LIMIT, &n) != 0) {
        free(env);
        return false;
    }
    bool found = false;
    for (size_t i = 0; i < n && !found; i += strlen(env + i) + 1) {
        const char *kv = env + i;
        if (strncmp(kv, "HOTPATCH_SOCKET=", 16) == 0 && kv[16])
            found = expand_pid(kv + 16, who->ns_pid, out, cap);
    }
    free(env);
    return found;
}

/* ---- choosing the agent's socket -------------------------------------------------------------- */

enum { RANK_ENVIRONMENT, RANK_DEFAULT, RANK_FALLBACK, RANK_NONE };

/* What the scan looks for and what it has found so far. */
struct agent_search {
    long ns_pid;
    const struct inode_set *held;
    const char *environment_path;   /* NULL when the process has no HOTPATCH_SOCKET */
    char default_path[48];          /* /tmp/NSPID.socket */
    int best_rank;
    char best_path[PATH_MAX];
};

static int rank_of(const struct agent_search *s, const char *path)
{
    if (s->environment_path && strcmp(path, s->environment_path) == 0)
        return RANK_ENVIRONMENT;
    if (strcmp(path, s->default_path) == 0)
        return RANK_DEFAULT;
    if (is_private_fallback(path, s->ns_pid))
        return RANK_FALLBACK;
    return RANK_NONE;
}

static bool consider_listener(const struct unix_entry *e, void *context)
{
    struct agent_search *s = context;
    if (!e->listening || !inode_set_has(s->held, e->inode))
        return true; /* a name anyone may have bound: only the process's own sockets count */
    int rank = rank_of(s, e->path);
    if (rank < s->best_rank && strlen(e->path) < sizeof s->best_path) {
        s->best_rank = rank;
        strcpy(s->best_path, e->path);
    }
    return s->best_rank != RANK_ENVIRONMENT;
}

/* found->path: the bound name, reached through the process's root when it is not ours. */
static int set_found(const struct process_identity *who, const char *bound,
                     struct agent_socket *found)
{
    if (strlen(bound) >= sizeof found->bound)
        return ENAMETOOLONG;
    strcpy(found->bound, bound);
    int n = snprintf(found->path, sizeof found->path, "%s%s", who->root, bound);
    return n < 0 || (size_t)n >= sizeof found->path ? ENAMETOOLONG : 0;
}

int locate_agent_socket(const struct process_identity *who, struct agent_socket *found,
                        const char **unreadable)
{
    struct inode_set held;
    int err = proc_held_sockets(who->pid, &held);
    *unreadable = "fd";
    if (err)
        return err;
    char environment_path[PATH_MAX];
    struct agent_search search = {.ns_pid = who->ns_pid, .held = &held, .best_rank = RANK_NONE};
    if (socket_from_environment(who, environment_path, sizeof environment_path))
        search.environment_path = environment_path;
    snprintf(search.default_path, sizeof search.default_path, "/tmp/%ld.socket", who->ns_pid);
    err = held.count ? proc_scan_unix(who->pid, consider_listener, &search) : 0;
    inode_set_free(&held);
    *unreadable = "net/unix";
    if (err)
        return err;
    if (search.best_rank == RANK_NONE)
        return ENOENT;
    return set_found(who, search.best_path, found) ? ENOENT : 0;
}

static void say_no_agent(const struct process_identity *who)
{
    long n = who->ns_pid;
    say("process %ld has no agent: none of its listening sockets is /tmp/%ld.socket or "
        "/tmp/hotpatch-%ld.*/socket", who->pid, n, n);
    char stale[64];
    snprintf(stale, sizeof stale, "/tmp/%ld.socket", n);
    if (!who->root[0] && is_stale_socket_file(stale, NULL))
        say("%s is a stale socket file (nothing listens on it); 'hotpatch ps --prune' "
            "removes it", stale);
    print_start_hint();
}

bool find_agent_socket(const struct process_identity *who, struct agent_socket *found)
{
    const char *unreadable = "";
    int err = locate_agent_socket(who, found, &unreadable);
    if (err == ENOENT)
        say_no_agent(who);
    else if (err)
        say_unreadable(who->pid, unreadable, err);
    return err == 0;
}

/* ---- after connecting ------------------------------------------------------------------------- */

static bool peer_credentials(int fd, const char *path, struct ucred *cred)
{
    socklen_t len = sizeof *cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) == 0)
        return true;
    say("refusing to talk to %s: cannot read its server's credentials (%s)", path,
        strerror(errno));
    return false;
}

/* What the re-check after connecting looks for: a listener at path that pid holds, and any
 * listener at path that it does not hold. */
struct holder_search {
    const struct inode_set *held;
    const char *path;
    bool found, foreign;
};

static bool find_held_listener(const struct unix_entry *e, void *context)
{
    struct holder_search *s = context;
    if (e->listening && strcmp(e->path, s->path) == 0) {
        if (inode_set_has(s->held, e->inode))
            s->found = true;
        else
            s->foreign = true;
    }
    return !s->foreign;
}

/* By name, where unix_diag cannot be asked: whether the process holds a listening socket
 * bound to `bound` and no other listening socket carries that name (two listeners can be
 * bound to one name, the file was replaced, and the file, which connect() follows, belongs to
 * the later). In a network namespace that mount namespaces share, a name may also be another
 * container's, which this cannot tell from ours. */
static int held_by_name(long pid, const struct inode_set *held, const char *bound,
                        bool *held_now)
{
    struct holder_search search = {.held = held, .path = bound};
    int err = held->count ? proc_scan_unix(pid, find_held_listener, &search) : 0;
    *held_now = search.found && !search.foreign;
    return err;
}

int open_agent_file(const struct agent_socket *found, struct agent_file *file)
{
    file->fd = open(found->path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (file->fd < 0)
        return errno;
    if (fstat(file->fd, &file->st) != 0 || !S_ISSOCK(file->st.st_mode)) {
        say("refusing to talk to %s: it is not a socket (a link or another file was put in "
            "its place)", found->path);
        close_agent_file(file);
        return ENOTSOCK;
    }
    snprintf(file->via, sizeof file->via, "/proc/self/fd/%d", file->fd);
    return 0;
}

void close_agent_file(struct agent_file *file)
{
    if (file->fd >= 0)
        close(file->fd);
    file->fd = -1;
}

/* Whether the listeners unix_diag tied to the file decide the question: some matched, and
 * the process holds every one (several match only when inodes above 2^32 or an overlay's
 * layers collide; then all must be its own). */
static bool held_by_identity(const struct unix_diag_matches *m, const struct inode_set *held)
{
    if (m->count > UNIX_DIAG_MATCHES_MAX)
        return false;
    for (size_t i = 0; i < m->count; i++)
        if (!inode_set_has(held, m->inodes[i]))
            return false;
    return true;
}

/* Whether the process still holds the listening socket bound to the very file the client
 * connected to (file, held open since before the connect): unix_diag, asked in the process's
 * network namespace, names that socket by the file's device and inode. When it names none (no
 * unix_diag, a namespace that cannot be entered, a filesystem whose devices it reports
 * otherwise), names decide, as held_by_name() says. 0, or an errno and in *unreadable the
 * /proc file that could not be read. */
static int check_still_held(long pid, const struct agent_socket *found,
                            const struct agent_file *file, bool *held_now,
                            const char **unreadable)
{
    struct inode_set held;
    int err = proc_held_sockets(pid, &held);
    *unreadable = "fd";
    if (err)
        return err;
    struct stat directory;
    bool have_directory = unix_diag_directory_of(found->path, &directory);
    struct unix_diag_matches matches;
    if (held.count &&
        unix_diag_sockets_of_file(pid, &file->st, have_directory ? &directory : NULL,
                                  UNIX_DIAG_LISTENING, &matches) == 0 &&
        matches.count) {
        *held_now = held_by_identity(&matches, &held);
    } else {
        err = held_by_name(pid, &held, found->bound, held_now);
        *unreadable = "net/unix";
    }
    inode_set_free(&held);
    return err;
}

bool check_agent_of_process(int fd, const struct agent_socket *found,
                            const struct process_identity *who, const struct agent_file *file)
{
    const char *path = found->path;
    struct ucred cred;
    if (!peer_credentials(fd, path, &cred))
        return false;
    if (cred.pid != who->pid) {
        say("refusing to talk to %s: it is served by process %ld, not by process %ld (a stale "
            "or foreign socket)", path, (long)cred.pid, who->pid);
        return false;
    }
    if (cred.uid != 0 && cred.uid != who->real_uid) {
        say("refusing to talk to %s: its server runs as uid %lu, but process %ld runs as uid "
            "%lu (only root or uid %lu may serve it)", path, (unsigned long)cred.uid, who->pid,
            (unsigned long)who->real_uid, (unsigned long)who->real_uid);
        return false;
    }
    bool held_now = false;
    const char *unreadable = "";
    int held_err = check_still_held(who->pid, found, file, &held_now, &unreadable);
    /* The start time is read last, so a pid reused during the checks above is noticed and
     * named as such rather than as whatever those checks saw. */
    unsigned long long start_time;
    int err = proc_start_time(who->pid, &start_time);
    if (err) {
        say_unreadable(who->pid, "stat", err);
        return false;
    }
    if (start_time != who->start_time) {
        say("process %ld changed while connecting (it exited and its pid was reused); try "
            "again", who->pid);
        return false;
    }
    if (held_err) {
        say_unreadable(who->pid, unreadable, held_err);
        return false;
    }
    if (!held_now) {
        say("refusing to talk to %s: process %ld does not hold that listening socket (a "
            "socket handed over by another process)", path, who->pid);
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
    say("refusing to talk to %s: its server runs as uid %lu, not as root or as you (uid %lu); "
        "pass --trust-peer %lu to allow it", path, (unsigned long)cred.uid, (unsigned long)me,
        (unsigned long)cred.uid);
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
