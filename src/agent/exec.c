/*
 * exec.c — exec leaves no socket file behind.
 *
 * When a process replaces its image with exec, its descriptors close and its threads end, but
 * the socket file stays: the new image would carry a path that nobody answers on, for as long as
 * it runs. The kernel gives a process no notice of its own exec, so libhotpatch defines the C
 * library's exec functions itself (as any library earlier in symbol lookup may): each asks the
 * agent to remove its socket file (agent.c, hp_agent_before_exec), calls the C library's own
 * function, and — only if that returns, which means the exec failed — has the agent listen on
 * the path again. Arguments, environment, errno and the result are passed through untouched.
 *
 * Covered: execve, execv, execvp, execvpe, execl, execlp, execle, fexecve, execveat — every
 * exec entry point of glibc, and what exec calls in Python, shells and other runtimes compile
 * to. Not covered: a raw syscall(SYS_execve) (documented). posix_spawn, system and popen exec
 * in a new child, which has no agent, so they need nothing.
 *
 * The wrappers must work where exec may be called: a vfork child (it shares the parent's memory,
 * so it must not touch the parent's agent: agent.c compares pids first), an atfork or signal
 * handler (no malloc here; the agent lock is only tried). The C library's functions are looked
 * up with dlsym(RTLD_NEXT) when the agent starts or the library loads, not in the wrapper,
 * so a vfork child normally finds them already resolved.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent.h"

#define HP_EXPORT __attribute__((visibility("default")))

extern char **environ;

enum exec_function { EXECVE, EXECV, EXECVP, EXECVPE, FEXECVE, EXECVEAT, EXEC_FUNCTIONS };

static const char *const function_names[EXEC_FUNCTIONS] = {
    [EXECVE] = "execve",   [EXECV] = "execv",     [EXECVP] = "execvp",
    [EXECVPE] = "execvpe", [FEXECVE] = "fexecve", [EXECVEAT] = "execveat",
};

/* The next definition of each (normally libc's). Written once, atomically; any thread. */
static void *next_function[EXEC_FUNCTIONS];

static void *next_definition(enum exec_function which)
{
    void *fn = __atomic_load_n(&next_function[which], __ATOMIC_ACQUIRE);
    if (!fn) {
        fn = dlsym(RTLD_NEXT, function_names[which]);
        __atomic_store_n(&next_function[which], fn, __ATOMIC_RELEASE);
    }
    return fn;
}

__attribute__((constructor)) void hp_exec_resolve(void)
{
    for (int i = 0; i < EXEC_FUNCTIONS; i++)
        next_definition((enum exec_function)i);
}

/* After the real call returned (the exec failed): the agent listens again; errno is kept. */
static int exec_failed(const struct hp_exec_state *st, int rc)
{
    int saved = errno;
    hp_agent_after_failed_exec(st);
    errno = saved;
    return rc;
}

/* No next definition: only in a program linked without the dynamic loader's help. */
static int unavailable(void)
{
    errno = ENOSYS;
    return -1;
}

typedef int path_env_fn(const char *, char *const[], char *const[]);
typedef int path_fn(const char *, char *const[]);
typedef int fd_env_fn(int, char *const[], char *const[]);
typedef int at_fn(int, const char *, char *const[], char *const[], int);

static int call_path_env(enum exec_function which, const char *file, char *const argv[],
                         char *const envp[])
{
    path_env_fn *real = (path_env_fn *)next_definition(which);
    struct hp_exec_state st;
    hp_agent_before_exec(&st);
    int rc;
    if (real)
        rc = real(file, argv, envp);
    else if (which == EXECVE)
        rc = (int)syscall(SYS_execve, file, argv, envp);
    else
        rc = unavailable();
    return exec_failed(&st, rc);
}

static int call_path(enum exec_function which, const char *file, char *const argv[])
{
    path_fn *real = (path_fn *)next_definition(which);
    if (!real) /* execv is execve with this environment; execvp needs the real search */
        return which == EXECV ? call_path_env(EXECVE, file, argv, environ) : unavailable();
    struct hp_exec_state st;
    hp_agent_before_exec(&st);
    return exec_failed(&st, real(file, argv));
}

HP_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    return call_path_env(EXECVE, path, argv, envp);
}

HP_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    return call_path_env(EXECVPE, file, argv, envp);
}

HP_EXPORT int execv(const char *path, char *const argv[])
{
    return call_path(EXECV, path, argv);
}

HP_EXPORT int execvp(const char *file, char *const argv[])
{
    return call_path(EXECVP, file, argv);
}

HP_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    fd_env_fn *real = (fd_env_fn *)next_definition(FEXECVE);
    if (!real)
        return unavailable();
    struct hp_exec_state st;
    hp_agent_before_exec(&st);
    return exec_failed(&st, real(fd, argv, envp));
}

HP_EXPORT int execveat(int dirfd, const char *path, char *const argv[], char *const envp[],
                       int flags)
{
    at_fn *real = (at_fn *)next_definition(EXECVEAT);
    struct hp_exec_state st;
    hp_agent_before_exec(&st);
    int rc = real ? real(dirfd, path, argv, envp, flags)
                  : (int)syscall(SYS_execveat, dirfd, path, argv, envp, flags);
    return exec_failed(&st, rc);
}

/*
 * execl, execlp, execle: the list becomes an argv on the stack (as the C library does; exec
 * may not allocate), then the vector form runs with the environment: the process's, or for
 * execle the pointer after the list's NULL.
 */
static int exec_list(enum exec_function which, const char *file, const char *arg, va_list ap,
                     bool env_follows)
{
    va_list count;
    va_copy(count, ap);
    long n = arg ? 1 : 0;
    while (n > 0 && va_arg(count, const char *) != NULL)
        if (++n >= INT_MAX / (long)sizeof(char *))
            break;
    va_end(count);
    if (n >= INT_MAX / (long)sizeof(char *)) {
        errno = E2BIG;
        return -1;
    }
    char *argv[n + 1];
    argv[0] = (char *)arg;
    for (long i = 1; i < n; i++)
        argv[i] = va_arg(ap, char *);
    argv[n] = NULL;
    if (n > 0)
        (void)va_arg(ap, char *); /* the list's NULL (with n == 0, arg itself was the end) */
    char *const *envp = env_follows ? va_arg(ap, char *const *) : environ;
    return call_path_env(which, file, argv, envp);
}

HP_EXPORT int execl(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    int rc = exec_list(EXECVE, path, arg, ap, false);
    va_end(ap);
    return rc;
}

HP_EXPORT int execlp(const char *file, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    int rc = exec_list(EXECVPE, file, arg, ap, false);
    va_end(ap);
    return rc;
}

HP_EXPORT int execle(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    int rc = exec_list(EXECVE, path, arg, ap, true);
    va_end(ap);
    return rc;
}
