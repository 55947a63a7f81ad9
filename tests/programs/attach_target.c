/*
 * attach_target.c — a program started with nothing (no hotpatch, no LD_PRELOAD) that the
 * attach tests (tests/integration/test_attach.py) inject the agent into. It counts everything
 * an injection could make it see and reports it on request, so a test can prove it saw none.
 *
 *   attach_target [--blockers] [--threads N] [--malloc N] [--signals] [--busy]
 *                 [--seccomp-deny-memfd]
 *
 *   --blockers    threads blocked in read on a pipe, a raw futex wait, pthread_cond_wait,
 *                 epoll_wait, nanosleep and sleep(); each counts EINTRs and early returns
 *   --threads N   N more threads sleeping in nanosleep loops (the same counts)
 *   --malloc N    N threads in a tight malloc/fill/check/free loop (counts corruptions)
 *   --signals     a thread queues SIGRTMIN to the process every millisecond; the handler
 *                 counts them (a queued real-time signal is never merged: sent == received)
 *   --busy        the main thread spins in this program's own code, printing add_func(1, 2)
 *                 every ~50 ms, and nothing else runs (single-threaded busy loop)
 *   --seccomp-deny-memfd   a seccomp filter that fails memfd_create with EPERM
 *   --seccomp-enosys-clone3   a filter that fails clone3 with ENOSYS (older container
 *                 profiles): glibc then creates threads with clone
 *   --in-handler  a second thread blocks in read on a pipe inside a signal handler (the
 *                 frame attach must see: a handler may have interrupted malloc)
 *   --no-safe-point   no thread is ever where attach may use it: the main thread holds a
 *                 mutex and waits in msgrcv (a call glibc's lock holders might make, as far
 *                 as attach knows), a second thread waits for that mutex (a lock wait)
 *
 * Without --busy the main thread reads commands on stdin (a blocking read on a pipe):
 *   report   prints "report eintr=N early=N errno=N corrupt=N sent=N received=N add=N at=WHERE"
 *            (WHERE: the call of the last EINTR or early return, "none" when there was none)
 *   quit     exits 0
 * It prints "ready" once every thread runs. errno is set to a marker before each blocking
 * call and checked after it: an injection that changed it counts in errno=.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static _Atomic long eintrs, earlies, errno_changes, corruptions, sent, received;
static const char *volatile last_surprise = "none";   /* where the last EINTR or early return was */
#define SURPRISE(counter, where) do { (counter)++; last_surprise = (where); } while (0)

/* How often this thread ran the program's own SIGRTMIN handler. A process-directed signal may
 * land on any thread that does not block it, and then epoll_wait, nanosleep and sleep() return
 * early as they must (SA_RESTART does not restart them; sleep() may even return 0 with errno
 * EINTR): that is the program's own doing, so a blocker that saw its handler run during a call
 * counts nothing about that call. */
static __thread volatile sig_atomic_t handled_here;
#define OWN_SIGNAL_SINCE(before) (handled_here != (before))
static volatile int never;          /* the futex word nobody wakes */
static pthread_mutex_t cond_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int pipe_fds[2], epoll_pipe[2];

/* A static function `func upgrade` replaces in tests (libadd_func_patch1.so: a * b + 100). */
__attribute__((noinline)) static int add_func(int a, int b)
{
    __asm__ volatile("");
    return a + b;
}

/* Reached through a pointer so the call is never folded. */
static int (*volatile add_ptr)(int, int) = add_func;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define MARK 4711

static void check_errno(int err, int expected)
{
    if (err != expected)
        errno_changes++;
}

static void *reader(void *arg)
{
    (void)arg;
    char c;
    for (;;) {
        errno = MARK;
        sig_atomic_t before = handled_here;
        ssize_t n = read(pipe_fds[0], &c, 1);
        if (OWN_SIGNAL_SINCE(before))
            continue;
        if (n < 0 && errno == EINTR)
            SURPRISE(eintrs, "read");
        else if (n < 0)
            check_errno(errno, MARK);
        else
            SURPRISE(earlies, "read");  /* nobody writes: any return is early */
    }
    return NULL;
}

static void *futex_waiter(void *arg)
{
    (void)arg;
    for (;;) {
        errno = MARK;
        sig_atomic_t before = handled_here;
        long rc = syscall(SYS_futex, &never, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
        if (OWN_SIGNAL_SINCE(before))
            continue;
        if (rc < 0 && errno == EINTR)
            SURPRISE(eintrs, "futex");
        else
            SURPRISE(earlies, "futex");  /* nobody wakes it */
    }
    return NULL;
}

static void *cond_waiter(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&cond_lock);
    for (;;) {
        errno = MARK;
        pthread_cond_wait(&cond, &cond_lock);
        SURPRISE(earlies, "cond");  /* nobody signals it: a spurious wakeup */
        check_errno(errno, MARK);
    }
    return NULL;
}

static void *epoller(void *arg)
{
    (void)arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, epoll_pipe[0], &ev);
    for (;;) {
        errno = MARK;
        sig_atomic_t before = handled_here;
        int n = epoll_wait(ep, &ev, 1, -1);
        if (OWN_SIGNAL_SINCE(before))
            continue;
        if (n < 0 && errno == EINTR)
            SURPRISE(eintrs, "epoll");
        else
            SURPRISE(earlies, "epoll");
    }
    return NULL;
}

static void *nanosleeper(void *arg)
{
    (void)arg;
    for (;;) {
        struct timespec ts = {0, 300 * 1000 * 1000};
        double start = now_s();
        errno = MARK;
        sig_atomic_t before = handled_here;
        int rc = nanosleep(&ts, NULL);
        if (OWN_SIGNAL_SINCE(before))
            continue;
        if (rc < 0 && errno == EINTR)
            SURPRISE(eintrs, "nanosleep");
        else if (now_s() - start < 0.2999)
            SURPRISE(earlies, "nanosleep");
        else
            check_errno(errno, MARK);
    }
    return NULL;
}

static void *sleeper(void *arg)
{
    (void)arg;
    for (;;) {
        errno = MARK;
        sig_atomic_t before = handled_here;
        unsigned left = sleep(1);
        if (OWN_SIGNAL_SINCE(before))
            continue;
        if (left)
            SURPRISE(earlies, "sleep");
        check_errno(errno, MARK);
    }
    return NULL;
}

static void *allocator(void *arg)
{
    size_t seed = (size_t)arg;
    for (;;) {
        size_t n = 16 + (seed = seed * 1103515245 + 12345) % 4000;
        unsigned char *p = malloc(n);
        if (!p)
            continue;
        memset(p, (int)(n & 0xff), n);
        for (size_t i = 0; i < n; i += 61)
            if (p[i] != (unsigned char)(n & 0xff))
                corruptions++;
        free(p);
    }
    return NULL;
}

static void on_signal(int sig)
{
    (void)sig;
    received++;
    handled_here++;
}

static volatile int stop_sending;

static void *signal_sender(void *arg)
{
    (void)arg;
    union sigval v = {0};
    while (!stop_sending) {
        if (sigqueue(getpid(), SIGRTMIN, v) == 0)
            sent++;
        struct timespec ms = {0, 1000000};
        while (nanosleep(&ms, &ms) != 0)
            ;
    }
    return NULL;
}

static int handler_pipe[2];

static void blocking_handler(int sig)
{
    (void)sig;
    char c;
    for (;;)
        if (read(handler_pipe[0], &c, 1) == 1)
            return;
}

static void *handler_blocker(void *arg)
{
    (void)arg;
    struct sigaction sa = {.sa_handler = blocking_handler};
    sigaction(SIGUSR2, &sa, NULL);
    pthread_kill(pthread_self(), SIGUSR2);
    return NULL;
}

static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;

static void *lock_waiter(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&held_lock);  /* held by main for ever */
    return NULL;
}

static void start(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    if (pthread_create(&t, NULL, fn, arg) != 0) {
        perror("pthread_create");
        exit(1);
    }
}

static void deny_call(long nr, int error)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)error),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("seccomp");
        exit(1);
    }
}

static void busy_loop(void)
{
    int saved = errno = MARK;
    double next = now_s();
    unsigned long spins = 0;
    for (;;) {
        spins++;
        if ((spins & 0xfffff) == 0 && now_s() >= next) {
            if (errno != saved)
                errno_changes++;
            printf("add_func(1, 2)=%d errno=%ld\n", add_ptr(1, 2), (long)errno_changes);
            fflush(stdout);
            errno = saved;
            next += 0.05;
        }
    }
}

static void report(void)
{
    printf("report eintr=%ld early=%ld errno=%ld corrupt=%ld sent=%ld received=%ld add=%d "
           "at=%s\n", (long)eintrs, (long)earlies, (long)errno_changes, (long)corruptions,
           (long)sent, (long)received, add_ptr(1, 2), last_surprise);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int blockers = 0, threads = 0, mallocs = 0, signals = 0, busy = 0, seccomp = 0;
    int no_safe_point = 0, in_handler = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--blockers"))
            blockers = 1;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--malloc") && i + 1 < argc)
            mallocs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--signals"))
            signals = 1;
        else if (!strcmp(argv[i], "--busy"))
            busy = 1;
        else if (!strcmp(argv[i], "--seccomp-deny-memfd"))
            seccomp = 1;
        else if (!strcmp(argv[i], "--seccomp-enosys-clone3"))
            seccomp = 2;
        else if (!strcmp(argv[i], "--no-safe-point"))
            no_safe_point = 1;
        else if (!strcmp(argv[i], "--in-handler"))
            in_handler = 1;
        else {
            fprintf(stderr, "usage: attach_target [--blockers] [--threads N] [--malloc N] "
                            "[--signals] [--busy] [--seccomp-deny-memfd] [--seccomp-enosys-clone3] "
                            "[--no-safe-point] [--in-handler]\n");
            return 2;
        }
    }
    if (pipe(pipe_fds) || pipe(epoll_pipe))
        return 1;
    if (seccomp == 1)
        deny_call(SYS_memfd_create, EPERM);
    else if (seccomp == 2)
        deny_call(SYS_clone3, ENOSYS);
    if (no_safe_point) {
        pthread_mutex_lock(&held_lock);
        start(lock_waiter, NULL);
        int queue = msgget(IPC_PRIVATE, 0600);
        struct timespec settle = {0, 20 * 1000 * 1000};
        nanosleep(&settle, NULL);   /* the waiter is in its futex wait by now */
        printf("ready\n");
        fflush(stdout);
        struct { long type; char text[8]; } msg;
        for (;;)
            msgrcv(queue, &msg, sizeof msg.text, 0, 0);
    }
    if (busy) {
        printf("ready\n");
        fflush(stdout);
        busy_loop();
    }
    if (signals) {
        struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
        sigaction(SIGRTMIN, &sa, NULL);
        start(signal_sender, NULL);
    }
    if (blockers) {
        start(reader, NULL);
        start(futex_waiter, NULL);
        start(cond_waiter, NULL);
        start(epoller, NULL);
        start(nanosleeper, NULL);
        start(sleeper, NULL);
    }
    for (int i = 0; i < threads; i++)
        start(nanosleeper, NULL);
    if (in_handler && pipe(handler_pipe) == 0) {
        start(handler_blocker, NULL);
        struct timespec settle = {0, 20 * 1000 * 1000};
        nanosleep(&settle, NULL);   /* it is in its handler's read by now */
    }
    for (int i = 0; i < mallocs; i++)
        start(allocator, (void *)(size_t)(i + 1));
    printf("ready\n");
    fflush(stdout);
    char line[64];
    for (;;) {
        errno = MARK;
        if (!fgets(line, sizeof line, stdin)) {
            if (errno == EINTR) {
                SURPRISE(eintrs, "stdin");
                clearerr(stdin);
                continue;
            }
            return 0;
        }
        if (!strncmp(line, "report", 6)) {
            if (signals) {
                stop_sending = 1;
                struct timespec settle = {0, 50 * 1000 * 1000};
                nanosleep(&settle, NULL);
            }
            report();
        } else if (!strncmp(line, "quit", 4)) {
            return 0;
        }
    }
}
