/*
 * preload.c — the preload agent: `LD_PRELOAD=libhotpatch_preload.so program` starts the hotpatch
 * agent inside a program that was never written for it.
 *
 * libhotpatch_preload.so is the agent's object code (hotpatch_objects) plus this file. Its
 * constructor reads the environment and calls hotpatch_start(). It needs no destructor of its
 * own: the agent's destructor (agent.c, linked into the same object) stops the server and
 * removes the socket at a normal exit. Everything else — the socket, the
 * commands, gflags and glog found at run time — is the ordinary agent. What this file adds:
 *
 *   HOTPATCH_DISABLE   1/true/yes/on (or any value but 0/false/no/off/empty): start nothing.
 *   HOTPATCH_LOG       where the agent's log lines go: `stderr` (default), `none`, or a file
 *                      path, appended to (created with mode 0600).
 *   HOTPATCH_SOCKET    the socket path (read by the agent itself; default /tmp/<pid>.socket).
 *
 * Rules it keeps, because it lives in someone else's program:
 *   - It never writes to stdout, and on success it writes nothing at all.
 *   - It exports nothing but the public API, the attach entry (below) and the C library's
 *     exec functions (exec.c wraps them so exec leaves no socket file behind); a version
 *     script enforces this and a test runs nm -D. It never interposes one of the program's
 *     own symbols.
 *   - It is C and links no C++: a C program does not gain libstdc++ (gflags support is loaded
 *     later, and only into programs that already have gflags; see gflags_loader.c).
 *   - One agent per process. If the program links libhotpatch.so, the preloaded copy of the
 *     public API comes first in symbol lookup, so the program's own registrations and its
 *     hotpatch_start() land in this agent: one registry, one socket. If the program carries its
 *     own exported copy of the API (libhotpatch.a linked with -rdynamic), that copy wins lookup
 *     and this constructor stands aside, leaving the program to start its own agent.
 *   - exec removes the socket file first; the new image inherits LD_PRELOAD and so gets an
 *     agent (and socket) of its own, at the same path when it is the same process.
 *
 * Attach (cli/attach.c). `hotpatch -p PID attach` loads this same library into a process that
 * was started with nothing: a loader thread the injector created dlopens it and then calls
 * hotpatch_attach_start(). That thread names itself ATTACH_THREAD_NAME before the dlopen, and
 * the constructor, which runs inside that dlopen, sees the name and stands aside: the entry
 * starts the agent, with origin "attached" and the status the injector reads, and the
 * constructor's LD_PRELOAD rules (HOTPATCH_DISABLE among them) are for LD_PRELOAD only; an
 * operator who attaches asked for the agent. A later attach after `detach` finds the library
 * mapped and calls the entry again, which restarts the same agent.
 *
 * The log file is opened for each line rather than kept open: log lines are rare (changes and
 * failures), and a descriptor held for the life of the program could be closed by the program
 * (daemons close every descriptor) and then reused for one of its own files.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent.h"

/* The file named by HOTPATCH_LOG; written once by the constructor, before the agent starts. */
static char log_path[PATH_MAX];

/* ---- configuration -------------------------------------------------------------------------- */

static bool env_says_off(const char *name)
{
    const char *v = hp_env(name);
    if (!v || !*v)
        return false;
    static const char *const keep_on[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < HP_ARRAY_SIZE(keep_on); i++)
        if (strcasecmp(v, keep_on[i]) == 0)
            return false;
    return true;
}

/* Each line opens the file afresh through the trusted walk: no descriptor of ours can be closed
 * or reused by the program, and no link or foreign file is ever written. */
static void write_to_log_file(const char *line, size_t len)
{
    char why[256];
    int fd = hp_trust_open_append(log_path, why, sizeof why);
    if (fd < 0)
        return;
    ssize_t ignored = write(fd, line, len);
    (void)ignored;
    close(fd);
}

static void discard_log_line(const char *line, size_t len)
{
    (void)line;
    (void)len;
}

/* Applies HOTPATCH_LOG. A file that cannot be opened leaves the log on stderr, and says so. */
/* Applies HOTPATCH_LOG; true when it chose where the lines go (a file, or nowhere). */
static bool configure_log(void)
{
    const char *dest = hp_env("HOTPATCH_LOG");
    if (!dest || !*dest || strcmp(dest, "stderr") == 0)
        return false;
    if (strcmp(dest, "none") == 0 || strcmp(dest, "off") == 0) {
        hp_log_set_sink(discard_log_line);
        return true;
    }
    int n = snprintf(log_path, sizeof log_path, "%s", dest);
    char why[300] = "path too long";
    int fd = n > 0 && (size_t)n < sizeof log_path ? hp_trust_open_append(log_path, why, sizeof why)
                                                  : -ENAMETOOLONG;
    if (fd < 0) {
        hp_log("HOTPATCH_LOG=%.200s refused (%s); logging to stderr", dest, why);
        return false;
    }
    close(fd);
    hp_log_set_sink(write_to_log_file);
    return true;
}

/* An attached agent's lines go to the program's stderr only when that is a stream (a tty, a
 * pipe, a socket such as the journal's, /dev/null) or a file opened for appending: a program
 * that closed its stderr may have opened a file of its own as descriptor 2 since, and a line
 * written there would land in its data and move its offset. */
static void write_to_stderr_stream(const char *line, size_t len)
{
    struct stat st;
    int flags = fcntl(STDERR_FILENO, F_GETFL);
    if (flags < 0 || fstat(STDERR_FILENO, &st) != 0)
        return;
    bool stream = S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode);
    if (!stream && !(S_ISREG(st.st_mode) && (flags & O_APPEND)))
        return;
    ssize_t ignored = write(STDERR_FILENO, line, len);
    (void)ignored;
}

/* ---- one agent per process ------------------------------------------------------------------ */

/*
 * True when the hotpatch_start that symbol lookup finds for the program is not this object's:
 * the program carries its own exported agent, which will serve. `where` names its object.
 */
static bool program_has_own_agent(char *where, size_t cap)
{
    void *global = dlsym(RTLD_DEFAULT, "hotpatch_start");
    Dl_info mine, theirs;
    if (!global || !dladdr((void *)program_has_own_agent, &mine) || !dladdr(global, &theirs))
        return false;
    if (theirs.dli_fbase == mine.dli_fbase)
        return false;
    snprintf(where, cap, "%s", theirs.dli_fname && *theirs.dli_fname ? theirs.dli_fname
                                                                      : "the program");
    return true;
}

/* ---- life cycle ----------------------------------------------------------------------------- */

/* The name the attach injector's loader thread gives itself (cli/inject_x86_64.c writes it). */
#define ATTACH_THREAD_NAME "hotpatch-attach"

static bool loaded_by_attach(void)
{
    char name[17] = {0};
    return prctl(PR_GET_NAME, name, 0, 0, 0) == 0 && strcmp(name, ATTACH_THREAD_NAME) == 0;
}

/*
 * The attach injector's entry: starts (or, after `detach`, restarts) the agent of this
 * library as "attached" (or the program's own exported agent, when it has one). 0, or a negative errno (also logged). Called on the injector's loader
 * thread; safe to call again (hotpatch_start is idempotent). Not part of the public API.
 */
HOTPATCH_API int hotpatch_attach_start(void)
{
    int saved_errno = errno;
    static bool configured;      /* HOTPATCH_LOG applied; owned by the first caller */
    if (!__atomic_exchange_n(&configured, true, __ATOMIC_ACQ_REL) && !configure_log())
        hp_log_set_sink(write_to_stderr_stream);
    /* A program with its own exported agent (libhotpatch.a and -rdynamic) gets that one
     * started again, never a second agent beside it. */
    char where[PATH_MAX];
    int (*theirs)(void) = NULL;
    if (program_has_own_agent(where, sizeof where))
        *(void **)&theirs = dlsym(RTLD_DEFAULT, "hotpatch_start");
    if (!theirs)
        hp_agent_set_origin("attached");
    int rc = theirs ? theirs() : hotpatch_start();
    if (rc < 0)
        hp_log("attached agent not started: %s", strerror(-rc));
    errno = saved_errno;
    return rc;
}

__attribute__((constructor)) static void preload_agent_start(void)
{
    int saved_errno = errno;
    if (loaded_by_attach() || env_says_off("HOTPATCH_DISABLE"))
        goto out;
    configure_log();
    char where[PATH_MAX];
    if (program_has_own_agent(where, sizeof where)) {
        hp_log("preload agent not started: %.300s has its own hotpatch agent", where);
        goto out;
    }
    hp_agent_set_origin("preload");
    int rc = hotpatch_start();
    if (rc < 0)
        hp_log("preload agent not started: %s; the program runs without it", strerror(-rc));
out:
    errno = saved_errno;
}
