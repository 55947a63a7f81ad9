/*
 * stale.c — telling and removing stale socket files in /tmp. See stale.h for the rules.
 *
 * Removal works on descriptors, not names: /tmp is opened once, each candidate is looked at
 * with fstatat(AT_SYMLINK_NOFOLLOW), a private directory is opened O_NOFOLLOW and its socket
 * looked at through that descriptor, and right before unlinkat the device and inode are
 * compared with the ones checked. /tmp is sticky, so a file the caller owns cannot be renamed
 * or replaced by another user in between.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "json.h"
#include "message.h"
#include "procfs.h"
#include "stale.h"
#include "unix_diag.h"

#define TMP_ENTRIES_LIMIT 65536     /* names of /tmp looked at */

bool is_private_fallback(const char *path, long pid)
{
    char prefix[48];
    int n = snprintf(prefix, sizeof prefix, "/tmp/hotpatch-%ld.", pid);
    if (n < 0 || strncmp(path, prefix, (size_t)n) != 0)
        return false;
    const char *rest = path + n, *slash = strchr(rest, '/');
    return slash && slash > rest && strcmp(slash, "/socket") == 0;
}

/* Whether a socket of this network namespace is bound to the socket file at path, which *st
 * (in the directory *directory, or NULL) describes. By the file's identity (unix_diag), so
 * that a live socket of the same name in another mount namespace does not keep a stale file
 * here: a match is bound, and no match is unbound only when the dump showed sockets on this
 * filesystem at all (else it may report its devices otherwise, a btrfs subvolume). By name
 * when the identity cannot decide. An unreadable table counts as bound: nothing is called
 * stale then. */
static bool socket_file_is_bound(const char *path, const struct stat *st,
                                 const struct stat *directory)
{
    struct unix_diag_matches matches;
    if (unix_diag_sockets_of_file(0, st, directory, UNIX_DIAG_ANY, &matches) == 0 &&
        (matches.count || matches.device_seen))
        return matches.count != 0;
    return proc_path_is_bound(path);
}

bool is_stale_socket_file(const char *path, struct stat *st)
{
    struct stat own;
    struct stat *s = st ? st : &own;
    if (lstat(path, s) != 0 || !S_ISSOCK(s->st_mode))
        return false;
    struct stat directory;
    bool have_directory = unix_diag_directory_of(path, &directory);
    return !socket_file_is_bound(path, s, have_directory ? &directory : NULL);
}

/* ---- the names of /tmp, sorted ------------------------------------------------------------------ */

struct names {
    char **names;
    size_t count;
};

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(struct names *n)
{
    for (size_t i = 0; i < n->count; i++)
        free(n->names[i]);
    free(n->names);
    *n = (struct names){0};
}

/* The names in /tmp that start with prefix, sorted; dirfd (when not NULL) gets /tmp open. */
static bool tmp_names(const char *prefix, struct names *out, int *dirfd_out)
{
    *out = (struct names){0};
    int fd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = fd >= 0 ? fdopendir(dup(fd)) : NULL;
    if (!dir) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    size_t cap = 0, plen = strlen(prefix);
    struct dirent *e;
    while (out->count < TMP_ENTRIES_LIMIT && (e = readdir(dir)) != NULL) {
        if (strncmp(e->d_name, prefix, plen) != 0)
            continue;
        if (out->count == cap) {
            cap = cap ? cap * 2 : 32;
            char **grown = realloc(out->names, cap * sizeof *grown);
            if (!grown)
                break;
            out->names = grown;
        }
        if (!(out->names[out->count] = strdup(e->d_name)))
            break;
        out->count++;
    }
    closedir(dir);
    if (out->count)
        qsort(out->names, out->count, sizeof *out->names, compare_names);
    if (dirfd_out)
        *dirfd_out = fd;
    else
        close(fd);
    return true;
}

bool find_stale_socket_of_pid(long pid, char *out, size_t cap)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/tmp/%ld.socket", pid);
    if (is_stale_socket_file(path, NULL))
        return (size_t)snprintf(out, cap, "%s", path) < cap;
    char prefix[48];
    snprintf(prefix, sizeof prefix, "hotpatch-%ld.", pid);
    struct names names;
    if (!tmp_names(prefix, &names, NULL))
        return false;
    bool found = false;
    for (size_t i = 0; i < names.count && !found; i++) {
        snprintf(path, sizeof path, "/tmp/%s/socket", names.names[i]);
        found = is_private_fallback(path, pid) && is_stale_socket_file(path, NULL) &&
                (size_t)snprintf(out, cap, "%s", path) < cap;
    }
    free_names(&names);
    return found;
}

/* ---- pruning ------------------------------------------------------------------------------------ */

/* /tmp/DIGITS.socket */
static bool is_pid_socket_name(const char *name)
{
    size_t digits = strspn(name, "0123456789");
    return digits > 0 && strcmp(name + digits, ".socket") == 0;
}

/* hotpatch-DIGITS.X with X not empty and without a slash */
static bool is_private_dir_name(const char *name)
{
    if (strncmp(name, "hotpatch-", 9) != 0)
        return false;
    size_t digits = strspn(name + 9, "0123456789");
    return digits > 0 && name[9 + digits] == '.' && name[10 + digits] != '\0';
}

/* Whether a connect() to path is refused (nothing listens on the socket bound there, in any
 * network namespace). Non-blocking: a listener with a full backlog counts as listening. */
static bool connect_refused(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return false;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return false;
    int rc = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    bool refused = rc != 0 && errno == ECONNREFUSED;
    close(fd);
    return refused;
}

/* The socket `name` in directory dirfd (shown as path) is the caller's and stale: *st gets
 * what was checked. */
static bool stale_and_ours(int dirfd, const char *name, const char *path, struct stat *st)
{
    struct stat directory;
    if (fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISSOCK(st->st_mode) ||
        st->st_uid != geteuid())
        return false;
    bool have_directory = fstat(dirfd, &directory) == 0;
    return !socket_file_is_bound(path, st, have_directory ? &directory : NULL) &&
           connect_refused(path);
}

/* Still the very file checked (device, inode, a socket of ours). */
static bool unchanged(int dirfd, const char *name, const struct stat *checked)
{
    struct stat now;
    return fstatat(dirfd, name, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_dev == checked->st_dev &&
           now.st_ino == checked->st_ino && now.st_uid == checked->st_uid &&
           (now.st_mode & S_IFMT) == (checked->st_mode & S_IFMT);
}

static void report_removed(bool json, const char *path, const char *directory)
{
    if (!json) {
        printf("removed %s%s\n", path, directory ? " and its directory" : "");
        return;
    }
    fputs("{\"removed\":", stdout);
    json_write_string(stdout, path, strlen(path));
    if (directory) {
        fputs(",\"directory\":", stdout);
        json_write_string(stdout, directory, strlen(directory));
    }
    fputs("}\n", stdout);
}

/* Unlinks name in dirfd if it is still the file checked; false (said) when that fails. */
static bool remove_checked(int dirfd, const char *name, const char *path, const struct stat *st,
                           int flags)
{
    if (!unchanged(dirfd, name, st))
        return true; /* replaced meanwhile: not the file we checked, left alone */
    if (unlinkat(dirfd, name, flags) == 0)
        return true;
    say("cannot remove %s: %s", path, strerror(errno));
    return false;
}

static bool prune_file(int tmpfd, const char *name, bool json)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/tmp/%s", name);
    struct stat st;
    if (!stale_and_ours(tmpfd, name, path, &st))
        return true;
    bool ok = remove_checked(tmpfd, name, path, &st, 0);
    if (ok && !unchanged(tmpfd, name, &st))
        report_removed(json, path, NULL);
    return ok;
}

static bool prune_private_dir(int tmpfd, const char *name, bool json)
{
    int dirfd = openat(tmpfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dirfd < 0)
        return true;
    char path[PATH_MAX + 16], directory[PATH_MAX];
    snprintf(directory, sizeof directory, "/tmp/%s", name);
    snprintf(path, sizeof path, "%s/socket", directory);
    struct stat dir_st, st;
    bool ok = true;
    if (fstat(dirfd, &dir_st) == 0 && dir_st.st_uid == geteuid() &&
        stale_and_ours(dirfd, "socket", path, &st)) {
        ok = remove_checked(dirfd, "socket", path, &st, 0);
        /* The directory goes too when it is still the one checked and now empty; one that
         * holds something else is kept. */
        bool dir_gone = ok && unchanged(tmpfd, name, &dir_st) &&
                        unlinkat(tmpfd, name, AT_REMOVEDIR) == 0;
        if (ok && !unchanged(dirfd, "socket", &st))
            report_removed(json, path, dir_gone ? directory : NULL);
    }
    close(dirfd);
    return ok;
}

int prune_stale_sockets(bool json)
{
    struct names names;
    int tmpfd = -1;
    if (!tmp_names("", &names, &tmpfd)) {
        say("cannot read /tmp: %s", strerror(errno));
        return 2;
    }
    bool ok = true;
    for (size_t i = 0; i < names.count; i++) {
        const char *name = names.names[i];
        if (is_pid_socket_name(name))
            ok &= prune_file(tmpfd, name, json);
        else if (is_private_dir_name(name))
            ok &= prune_private_dir(tmpfd, name, json);
    }
    free_names(&names);
    close(tmpfd);
    return ok ? 0 : 2;
}
