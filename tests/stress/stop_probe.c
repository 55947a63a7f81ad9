/*
 * stop_probe.c — issue 11's probes of the thread stop: a program must not be able to tell that
 * its threads were stopped for a code write. Each mode runs a program shape while the main
 * thread flips a function between its original code and a replacement (every flip is a code
 * write with every other thread stopped), then checks what the program saw.
 *
 * Usage: stop_probe [--signal] MODE [FLIPS] [THREADS]
 *   --signal        use the fallback signal stop (HOTPATCH_STOP=signal does the same)
 *   sleepers        careless sleepers in nanosleep, clock_nanosleep, sleep(), usleep, poll,
 *                   epoll_wait, select, sigtimedwait, semop and a socket read with SO_RCVTIMEO
 *                   count EINTRs and early returns: 0 under the ptrace stop (the signal stop
 *                   prints what it cannot avoid and passes)
 *   signalfd        every thread blocks SIGRTMAX and one reads it with signalfd: upgrades
 *                   succeed, and it reads exactly the signals the program sent itself
 *   rtqueue         3,000 real-time signals queued by the program (blocked meanwhile) all
 *                   arrive, each once, across the flips
 *   blocker         one thread blocks every signal: under ptrace every flip succeeds and it
 *                   keeps running; under the signal stop every write is refused at once and
 *                   the other threads' progress during the refusals is at least half of what
 *                   it is without them (a ratio of counts, not a time limit)
 *   altstack        one thread spends most of its time in a handler on a sigaltstack: every
 *                   flip succeeds (the signal stop retries with backoff, issue 11 defect 9)
 *   signalstream    a steady stream of the program's own queued real-time signals (with a
 *                   handler, SA_RESTART) reaches threads sleeping in epoll_wait, nanosleep,
 *                   sigtimedwait, semtimedop and a recv with SO_RCVTIMEO, first sent to each
 *                   thread, then to the process: every signal is handled exactly once, and
 *                   while they are sent to threads a call fails with EINTR only in a thread
 *                   whose handler ran during that call (the program's signal, not the stop).
 *                   A signal sent to the process can leave an EINTR in a thread that another
 *                   thread beat to it, with or without stops: that phase checks counts only
 *   sharedsignal    four threads wait in epoll_wait; while the stop holds them all, the
 *                   program queues one signal (a handler) to the whole process: when they go
 *                   on, exactly one thread runs the handler and may see EINTR, the others
 *                   must not (they would not have been woken without the stop)
 *   unstoppable     one thread waits in vfork() for a child that sleeps 1.5 s (such a thread
 *                   cannot stop before the child is done): the stop gives up and refuses, and
 *                   the careless sleepers of `sleepers` it had already held see no EINTR
 *   threads         THREADS threads (64 KiB stacks) blocked in futex, read, nanosleep and
 *                   epoll_wait while 2 call the target: every flip succeeds, every call
 *                   returns one version's result (skipped when the system's limits cannot
 *                   hold that many threads)
 * Exit 0 on PASS, 1 on FAIL (with the reason), 2 on a usage error; 77 to skip.
 */
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ipc.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/sem.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"

#if defined(__clang__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE __attribute__((noinline, noipa))
#endif

NOINLINE int probe_target(int a, int b);
NOINLINE int probe_target(int a, int b)
{
    volatile int bias = 0;
    return a + b + bias;
}

NOINLINE int probe_repl(int a, int b);
NOINLINE int probe_repl(int a, int b)
{
    volatile int bias = 100;
    return a + b + bias;
}

static int (*volatile call_target)(int, int) = probe_target;
static atomic_int running = 1;
static atomic_long refused_flips;
static char last_why[512];

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int fail(const char *fmt, const char *detail)
{
    printf("stop_probe: FAIL: ");
    printf(fmt, detail);
    printf("\n");
    return 1;
}

/* One flip: upgrade then rollback. 0, or -1 when the engine refused (why in last_why). */
static int flip(void)
{
    struct hp_symbol sym = {.address = (void *)probe_target};
    hp_symbol_describe(&sym);
    struct hp_patch_target t = {"probe_target", (void *)probe_target, sym.size};
    struct hp_patch_origin o = {"probe", "probe_repl", (void *)probe_repl};
    char lib[128], name[256];
    int depth;
    if (hp_patch_upgrade(&t, &o, last_why, sizeof last_why) != 0)
        return -1;
    if (hp_patch_rollback(NULL, (void *)probe_target, lib, sizeof lib, name, sizeof name, &depth,
                          last_why, sizeof last_why) != 0)
        return -1;
    return 0;
}

/* Flips n times; counts refusals; returns how many succeeded. */
static int flips(int n)
{
    int ok = 0;
    for (int i = 0; i < n; i++) {
        if (flip() == 0)
            ok++;
        else
            refused_flips++;
    }
    return ok;
}

static pthread_t spawn(void *(*fn)(void *), void *arg, size_t stack)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (stack)
        pthread_attr_setstacksize(&attr, stack);
    pthread_t t;
    int rc = pthread_create(&t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        printf("stop_probe: FAIL: pthread_create: %s\n", strerror(rc));
        exit(1);
    }
    return t;
}

/* ---- careless sleepers ------------------------------------------------------------------ */

enum sleeper_kind { NANOSLEEP, CLOCK_NANOSLEEP, SLEEP, USLEEP, POLL, EPOLL, SELECT, SIGTIMEDWAIT,
                    SEMOP, RECV_TIMEOUT, N_KINDS };
static const char *kind_names[N_KINDS] = {"nanosleep", "clock_nanosleep", "sleep", "usleep",
                                          "poll", "epoll_wait", "select", "sigtimedwait",
                                          "semop", "recv+SO_RCVTIMEO"};
static atomic_long eintr[N_KINDS], early[N_KINDS], rounds[N_KINDS];
static int semid = -1;

#define NAP_MS 20

/* What a sleeper waits on: an empty epoll set, a socket whose receive times out after
 * NAP_MS, and SIGUSR2 (blocked, for sigtimedwait). */
struct sleeper_kit {
    int ep, sv[2];
    sigset_t usr2;
};

static void sleeper_kit_open(struct sleeper_kit *k)
{
    k->ep = epoll_create1(0);
    k->sv[0] = k->sv[1] = -1;
    socketpair(AF_UNIX, SOCK_STREAM, 0, k->sv);
    struct timeval tv = {0, NAP_MS * 1000};
    setsockopt(k->sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sigemptyset(&k->usr2);
    sigaddset(&k->usr2, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &k->usr2, NULL);
}

static void sleeper_kit_close(struct sleeper_kit *k)
{
    close(k->ep);
    close(k->sv[0]);
    close(k->sv[1]);
}

static void *sleeper_main(void *arg)
{
    enum sleeper_kind kind = (enum sleeper_kind)(intptr_t)arg;
    struct sleeper_kit kit;
    sleeper_kit_open(&kit);
    int ep = kit.ep, *sv = kit.sv;
    sigset_t usr2 = kit.usr2;
    while (atomic_load(&running)) {
        long long t0 = now_ns(), want = (kind == SLEEP ? 1000LL : NAP_MS) * 1000000LL;
        int rc = 0, err = 0;
        switch (kind) {
        case NANOSLEEP: {
            struct timespec ts = {0, NAP_MS * 1000000L};
            rc = nanosleep(&ts, NULL);
            break;
        }
        case CLOCK_NANOSLEEP: {
            struct timespec ts = {0, NAP_MS * 1000000L};
            rc = clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
            if (rc) {
                err = rc;
                rc = -1;
            }
            break;
        }
        case SLEEP:
            rc = sleep(1) ? -1 : 0;      /* returns the seconds left when interrupted */
            if (rc)
                err = EINTR;
            break;
        case USLEEP:
            rc = usleep(NAP_MS * 1000);
            break;
        case POLL:
            rc = poll(NULL, 0, NAP_MS);
            break;
        case EPOLL: {
            struct epoll_event ev;
            rc = epoll_wait(ep, &ev, 1, NAP_MS);
            break;
        }
        case SELECT: {
            struct timeval t = {0, NAP_MS * 1000};
            rc = select(0, NULL, NULL, NULL, &t);
            break;
        }
        case SIGTIMEDWAIT: {
            struct timespec ts = {0, NAP_MS * 1000000L};
            rc = sigtimedwait(&usr2, NULL, &ts);
            if (rc < 0 && errno == EAGAIN)
                rc = 0;                 /* the timeout: what a careful caller expects */
            break;
        }
        case SEMOP: {
            struct sembuf op = {0, -1, 0};
            struct timespec ts = {0, NAP_MS * 1000000L};
            rc = semtimedop(semid, &op, 1, &ts);
            if (rc < 0 && errno == EAGAIN)
                rc = 0;
            break;
        }
        case RECV_TIMEOUT: {
            char c;
            rc = (int)recv(sv[0], &c, 1, 0);
            if (rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                rc = 0;
            break;
        }
        default:
            break;
        }
        if (rc < 0 && !err)
            err = errno;
        long long took = now_ns() - t0;
        if (err == EINTR)
            eintr[kind]++;
        else if (took + 100000 < want)     /* 0.1 ms of slack for clock granularity */
            early[kind]++;
        rounds[kind]++;
    }
    sleeper_kit_close(&kit);
    return NULL;
}

static int mode_sleepers(int n_flips, bool ptrace_mode)
{
    semid = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    pthread_t t[N_KINDS];
    for (int k = 0; k < N_KINDS; k++)
        t[k] = spawn(sleeper_main, (void *)(intptr_t)k, 0);
    usleep(50000);
    int ok = 0;
    long long t0 = now_ns();
    /* Flip in bursts, with pauses, so that many waits are interrupted in every phase. */
    for (int i = 0; i < n_flips; i++) {
        ok += flips(1);
        if (i % 10 == 9)
            usleep(3000);
    }
    /* Let the sleeps cross at least one full sleep(1) too. */
    while (now_ns() - t0 < 1200000000LL)
        ok += flips(1), usleep(20000), n_flips++;
    atomic_store(&running, 0);
    for (int k = 0; k < N_KINDS; k++)
        pthread_join(t[k], NULL);
    if (semid >= 0)
        semctl(semid, 0, IPC_RMID);
    long bad = 0;
    printf("%-18s %8s %8s %8s   (%s stop, %d flips, %d refused)\n", "call", "rounds", "EINTR",
           "early", hp_threads_stop_method(), n_flips, n_flips - ok);
    for (int k = 0; k < N_KINDS; k++) {
        printf("%-18s %8ld %8ld %8ld\n", kind_names[k], rounds[k], eintr[k], early[k]);
        bad += eintr[k] + early[k];
    }
    if (ok != n_flips)
        return fail("a flip was refused: %s", last_why);
    if (ptrace_mode && bad)
        return fail("%s", "the program saw EINTR or an early return under the ptrace stop");
    printf("stop_probe: PASS%s\n", ptrace_mode ? "" : " (signal stop: counts are reported, "
                                                      "not checked)");
    return 0;
}

/* ---- signalstream ---------------------------------------------------------------------------- */

/* The stop may interrupt a call at the moment the program's own signal arrives: the EINTR then
 * belongs to the thread that runs the handler, and to no other. */
enum stream_kind { S_EPOLL, S_NANOSLEEP, S_SIGTIMEDWAIT, S_SEMOP, S_RECV, N_STREAM };
static const char *stream_names[N_STREAM] = {"epoll_wait", "nanosleep", "sigtimedwait",
                                             "semtimedop", "recv+SO_RCVTIMEO"};
static atomic_long stream_eintr[N_STREAM], stream_spurious[N_STREAM], stream_rounds[N_STREAM];
static atomic_long stream_sent, stream_handled;
static int stream_signal;          /* set before the threads start */
static _Thread_local volatile sig_atomic_t handled_here;

static void stream_handler(int sig)
{
    (void)sig;
    handled_here++;
    atomic_fetch_add(&stream_handled, 1);
}

/* Installs the counting handler (SA_RESTART) for sig and blocks it in the calling thread, the
 * one that flips (and in the threads it creates until they unblock it): the sleepers take
 * every one. */
static int take_stream_signal(int sig)
{
    stream_signal = sig;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = stream_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
    sigset_t mine;
    sigemptyset(&mine);
    sigaddset(&mine, sig);
    pthread_sigmask(SIG_BLOCK, &mine, NULL);
    return sig;
}

static int stream_call(enum stream_kind kind, int ep, int sock, const sigset_t *usr2)
{
    switch (kind) {
    case S_EPOLL: {
        struct epoll_event ev;
        return epoll_wait(ep, &ev, 1, NAP_MS);
    }
    case S_NANOSLEEP: {
        struct timespec ts = {0, NAP_MS * 1000000L};
        return nanosleep(&ts, NULL);
    }
    case S_SIGTIMEDWAIT: {
        struct timespec ts = {0, NAP_MS * 1000000L};
        int rc = sigtimedwait(usr2, NULL, &ts);
        return rc < 0 && errno == EAGAIN ? 0 : rc;
    }
    case S_SEMOP: {
        struct sembuf op = {0, -1, 0};
        struct timespec ts = {0, NAP_MS * 1000000L};
        int rc = semtimedop(semid, &op, 1, &ts);
        return rc < 0 && errno == EAGAIN ? 0 : rc;
    }
    case S_RECV: {
        char c;
        int rc = (int)recv(sock, &c, 1, 0);
        return rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : rc;
    }
    default:
        return 0;
    }
}

/* The stream's signal is blocked where a sleeper is created; the sleeper takes it. */
static void unblock_stream_signal(void)
{
    sigset_t stream;
    sigemptyset(&stream);
    sigaddset(&stream, stream_signal);
    pthread_sigmask(SIG_UNBLOCK, &stream, NULL);
}

static void *stream_sleeper(void *arg)
{
    enum stream_kind kind = (enum stream_kind)(intptr_t)arg;
    struct sleeper_kit kit;
    sleeper_kit_open(&kit);
    unblock_stream_signal();
    while (atomic_load(&running)) {
        sig_atomic_t before = handled_here;
        int rc = stream_call(kind, kit.ep, kit.sv[0], &kit.usr2);
        if (rc < 0 && errno == EINTR) {
            stream_eintr[kind]++;
            if (handled_here == before)
                stream_spurious[kind]++;
        }
        stream_rounds[kind]++;
    }
    sleeper_kit_close(&kit);
    return NULL;
}

static pthread_t stream_threads[N_STREAM];
static atomic_int stream_to_process;    /* 0: to each sleeper in turn; 1: to the process */

/* Queues the program's signal about every 300 us. */
static void *stream_sender(void *arg)
{
    int sig = (int)(intptr_t)arg;
    union sigval v = {0};
    for (unsigned turn = 0; atomic_load(&running); turn++) {
        int rc = atomic_load(&stream_to_process)
                     ? sigqueue(getpid(), sig, v)
                     : pthread_sigqueue(stream_threads[turn % N_STREAM], sig, v);
        if (rc == 0)
            atomic_fetch_add(&stream_sent, 1);
        struct timespec ts = {0, 300000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    return NULL;
}

/* Flips n times in bursts; how many succeeded. */
static int stream_flips(int n)
{
    int ok = 0;
    for (int i = 0; i < n; i++) {
        ok += flips(1);
        if (i % 10 == 9)
            usleep(3000);
    }
    return ok;
}

static int mode_signalstream(int n_flips, bool ptrace_mode)
{
    int sig = take_stream_signal(SIGRTMIN + 2);
    semid = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    for (int k = 0; k < N_STREAM; k++)
        stream_threads[k] = spawn(stream_sleeper, (void *)(intptr_t)k, 0);
    pthread_t sender = spawn(stream_sender, (void *)(intptr_t)sig, 0);
    usleep(50000);
    int ok = stream_flips(n_flips / 2);
    long spurious = 0;
    for (int k = 0; k < N_STREAM; k++)
        spurious += atomic_exchange(&stream_spurious[k], 0);
    atomic_store(&stream_to_process, 1);
    ok += stream_flips(n_flips - n_flips / 2);
    atomic_store(&running, 0);
    pthread_join(sender, NULL);
    /* Every queued signal must reach a handler; the sleepers wake at least every NAP_MS. */
    for (int i = 0; i < 200 && atomic_load(&stream_handled) < atomic_load(&stream_sent); i++)
        usleep(10000);
    for (int k = 0; k < N_STREAM; k++)
        pthread_join(stream_threads[k], NULL);
    if (semid >= 0)
        semctl(semid, 0, IPC_RMID);
    printf("%-18s %8s %8s %9s   (%s stop, %d flips, %d refused; signals sent %ld, handled "
           "%ld)\n", "call", "rounds", "EINTR", "spurious", hp_threads_stop_method(), n_flips,
           n_flips - ok, atomic_load(&stream_sent), atomic_load(&stream_handled));
    for (int k = 0; k < N_STREAM; k++)
        printf("%-18s %8ld %8ld %9s\n", stream_names[k], stream_rounds[k], stream_eintr[k], "");
    printf("EINTR with no handler in that thread, signals sent to threads: %ld\n", spurious);
    if (ok != n_flips)
        return fail("a flip was refused: %s", last_why);
    if (atomic_load(&stream_handled) != atomic_load(&stream_sent))
        return fail("%s", "a queued signal was lost or handled twice");
    if (ptrace_mode && spurious)
        return fail("%s", "a call failed with EINTR in a thread whose handler did not run");
    printf("stop_probe: PASS%s\n", ptrace_mode ? "" : " (signal stop: EINTRs are reported, "
                                                      "not checked)");
    return 0;
}

/* ---- sharedsignal ------------------------------------------------------------------------------ */

#define SHARED_SLEEPERS 4
static atomic_long shared_eintr, shared_spurious, shared_calls;

static void *shared_sleeper(void *arg)
{
    (void)arg;
    int ep = epoll_create1(0);
    unblock_stream_signal();
    while (atomic_load(&running)) {
        sig_atomic_t before = handled_here;
        struct epoll_event ev;
        if (epoll_wait(ep, &ev, 1, 50) < 0 && errno == EINTR) {
            shared_eintr++;
            if (handled_here == before)
                shared_spurious++;
        }
        shared_calls++;
    }
    close(ep);
    return NULL;
}

/* The signal is queued while every other thread is held (the stop's own API, used here by
 * the only thread that uses the engine), so that no thread is woken for it before the stop
 * lets them go: which of them takes it is then the kernel's choice alone. */
static int mode_sharedsignal(int rounds, bool ptrace_mode)
{
    int sig = take_stream_signal(SIGRTMIN + 3);
    pthread_t t[SHARED_SLEEPERS];
    for (int k = 0; k < SHARED_SLEEPERS; k++)
        t[k] = spawn(shared_sleeper, NULL, 0);
    usleep(50000);
    union sigval v = {0};
    int stopped = 0;
    for (int i = 0; i < rounds; i++) {
        struct hp_stopped s;
        if (hp_threads_stop(&s, 1000) != 0) {
            snprintf(last_why, sizeof last_why, "%s", s.why);
            continue;
        }
        if (sigqueue(getpid(), sig, v) == 0)
            atomic_fetch_add(&stream_sent, 1);
        hp_threads_resume(&s);
        stopped++;
        usleep(3000);
    }
    atomic_store(&running, 0);
    for (int i = 0; i < 200 && atomic_load(&stream_handled) < atomic_load(&stream_sent); i++)
        usleep(10000);
    for (int k = 0; k < SHARED_SLEEPERS; k++)
        pthread_join(t[k], NULL);
    printf("%d stops (%s stop), each with one signal queued to the process: sent %ld, handled "
           "%ld; epoll_wait calls %ld, EINTR %ld, EINTR with no handler in that thread %ld\n",
           stopped, hp_threads_stop_method(), atomic_load(&stream_sent),
           atomic_load(&stream_handled), atomic_load(&shared_calls),
           atomic_load(&shared_eintr), atomic_load(&shared_spurious));
    if (stopped != rounds)
        return fail("a stop was refused: %s", last_why);
    if (atomic_load(&stream_handled) != atomic_load(&stream_sent))
        return fail("%s", "a queued signal was lost or handled twice");
    if (ptrace_mode && atomic_load(&shared_spurious))
        return fail("%s", "a thread that did not take the signal saw EINTR");
    printf("stop_probe: PASS%s\n", ptrace_mode ? "" : " (signal stop: EINTRs are reported, "
                                                      "not checked)");
    return 0;
}

/* ---- unstoppable ------------------------------------------------------------------------------ */

static atomic_int vfork_started;

/* vfork's parent waits for the child killably: no stop reaches it until the child is done. */
static void *vforker(void *arg)
{
    (void)arg;
    atomic_store(&vfork_started, 1);
    pid_t child = vfork();
    if (child == 0) {
        struct timespec ts = {1, 500000000L};
        syscall(SYS_nanosleep, &ts, NULL);
        _exit(0);
    }
    if (child > 0)
        waitpid(child, NULL, 0);
    return NULL;
}

static int mode_unstoppable(bool ptrace_mode)
{
    semid = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    pthread_t t[N_KINDS];
    for (int k = 0; k < N_KINDS; k++)
        t[k] = spawn(sleeper_main, (void *)(intptr_t)k, 0);
    usleep(50000);
    pthread_t v = spawn(vforker, NULL, 0);
    while (!atomic_load(&vfork_started))
        usleep(1000);
    usleep(20000);
    int refused_rc = flip();
    char refused_why[sizeof last_why];
    snprintf(refused_why, sizeof refused_why, "%s", last_why);
    pthread_join(v, NULL);
    int ok = flips(20);
    atomic_store(&running, 0);
    for (int k = 0; k < N_KINDS; k++)
        pthread_join(t[k], NULL);
    if (semid >= 0)
        semctl(semid, 0, IPC_RMID);
    long bad = 0;
    for (int k = 0; k < N_KINDS; k++)
        bad += eintr[k] + early[k];
    printf("(%s stop) the flip during the vfork: %s; afterwards %d of 20 flips; EINTRs and "
           "early returns: %ld\n", hp_threads_stop_method(),
           refused_rc == 0 ? "succeeded" : refused_why, ok, bad);
    if (refused_rc == 0)
        return fail("%s", "a flip succeeded while a thread could not be stopped");
    if (!strstr(refused_why, "did not stop"))
        return fail("the refusal does not say which thread did not stop: %s", refused_why);
    if (ok != 20)
        return fail("a flip after the vfork was refused: %s", last_why);
    if (ptrace_mode && bad)
        return fail("%s", "a stop that gave up left an EINTR or an early return");
    printf("stop_probe: PASS\n");
    return 0;
}

/* ---- signalfd ------------------------------------------------------------------------------- */

static atomic_long read_own, read_foreign;

static void *signalfd_reader(void *arg)
{
    int fd = *(int *)arg;
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_code == SI_QUEUE && si.ssi_int == 4242)
            read_own++;
        else if (si.ssi_code != SI_QUEUE || si.ssi_int != 9999)
            read_foreign++;
        if (si.ssi_int == 9999)
            break;
    }
    return NULL;
}

static void *busy_main(void *arg)
{
    atomic_long *calls = arg;
    while (atomic_load(&running)) {
        int r = call_target(1, 2);
        if (r != 3 && r != 103)
            abort();
        (*calls)++;
    }
    return NULL;
}

static int mode_signalfd(int n_flips)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMAX);
    pthread_sigmask(SIG_BLOCK, &set, NULL);        /* inherited by every thread */
    int fd = signalfd(-1, &set, 0);
    atomic_long calls = 0;
    pthread_t r = spawn(signalfd_reader, &fd, 0), b = spawn(busy_main, &calls, 0);
    int sent = 0, ok = 0;
    for (int i = 0; i < n_flips; i++) {
        ok += flips(1);
        union sigval v = {.sival_int = 4242};
        if (sigqueue(getpid(), SIGRTMAX, v) == 0)
            sent++;
    }
    union sigval end = {.sival_int = 9999};
    sigqueue(getpid(), SIGRTMAX, end);
    pthread_join(r, NULL);
    atomic_store(&running, 0);
    pthread_join(b, NULL);
    printf("signalfd: %d flips (%d refused), sent %d, read %ld own and %ld others (%s stop)\n",
           n_flips, n_flips - ok, sent, (long)read_own, (long)read_foreign,
           hp_threads_stop_method());
    if (ok != n_flips)
        return fail("a flip was refused: %s", last_why);
    if (read_own != sent || read_foreign != 0)
        return fail("%s", "the signalfd reader did not read exactly the program's signals");
    printf("stop_probe: PASS\n");
    return 0;
}

/* ---- queued real-time signals ------------------------------------------------------------------ */

#define QUEUED 3000
static atomic_long handled;
static unsigned char seen[QUEUED];
static atomic_int queue_ready, queue_release;

static void count_handler(int sig, siginfo_t *info, void *uc)
{
    (void)sig, (void)uc;
    int i = info->si_value.sival_int;
    if (info->si_code == SI_QUEUE && i >= 0 && i < QUEUED)
        seen[i]++;
    handled++;
}

static void *queue_holder(void *arg)
{
    (void)arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN + 1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    atomic_store(&queue_ready, 1);
    while (!atomic_load(&queue_release))
        usleep(1000);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);      /* all 3,000 are delivered here */
    return NULL;
}

static int mode_rtqueue(int n_flips)
{
    struct rlimit rl;
    getrlimit(RLIMIT_SIGPENDING, &rl);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < QUEUED + 64) {
        printf("stop_probe: SKIP: RLIMIT_SIGPENDING %ld is below %d\n", (long)rl.rlim_cur,
               QUEUED);
        return 77;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = count_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGRTMIN + 1, &sa, NULL);
    /* Every other thread blocks it too, so the holder is the one it is queued on. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN + 1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_t h = spawn(queue_holder, NULL, 0);
    while (!atomic_load(&queue_ready))
        usleep(1000);
    int ok = 0;
    for (int i = 0; i < QUEUED; i++) {
        union sigval v = {.sival_int = i};
        if (pthread_sigqueue(h, SIGRTMIN + 1, v) != 0)
            return fail("pthread_sigqueue: %s", strerror(errno));
        if (i % (QUEUED / (n_flips ? n_flips : 1) + 1) == 0)
            ok += flips(1);
    }
    int done = ok;
    for (; done < n_flips; done++)
        ok += flips(1);
    atomic_store(&queue_release, 1);
    pthread_join(h, NULL);
    long once = 0;
    for (int i = 0; i < QUEUED; i++)
        once += seen[i] == 1;
    printf("rtqueue: %d flips (%d refused), %d queued, %ld handled, %ld exactly once (%s stop)\n",
           done, done - ok, QUEUED, (long)handled, once, hp_threads_stop_method());
    if (ok != done)
        return fail("a flip was refused: %s", last_why);
    if (handled != QUEUED || once != QUEUED)
        return fail("%s", "a queued signal was lost or delivered twice");
    printf("stop_probe: PASS\n");
    return 0;
}

/* ---- a thread that blocks every signal --------------------------------------------------------- */

static void *block_everything(void *arg)
{
    atomic_long *calls = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    return busy_main(calls);
}

static int mode_blocker(int n_flips, bool ptrace_mode)
{
    atomic_long blocker_calls = 0, worker_calls = 0;
    pthread_t b = spawn(block_everything, &blocker_calls, 0);
    pthread_t w = spawn(busy_main, &worker_calls, 0);
    usleep(20000);
    /* Baseline: the worker's progress over the time n_flips attempts take. */
    long long t0 = now_ns();
    long w0 = worker_calls;
    int ok = flips(n_flips);
    long long took = now_ns() - t0;
    long during = worker_calls - w0;
    long b_during = blocker_calls;
    long w1 = worker_calls;
    long long t1 = now_ns();
    while (now_ns() - t1 < took)
        usleep(100);
    long baseline = worker_calls - w1;
    atomic_store(&running, 0);
    pthread_join(b, NULL);
    pthread_join(w, NULL);
    double ratio = baseline ? (double)during / (double)baseline : 1.0;
    printf("blocker: %d flips, %d succeeded (%s stop); worker progress during them %.2f of "
           "baseline; blocker made %ld calls\n", n_flips, ok, hp_threads_stop_method(), ratio,
           b_during);
    if (ptrace_mode && ok != n_flips)
        return fail("a flip was refused: %s", last_why);
    if (!ptrace_mode && ok != 0)
        return fail("%s", "the signal stop wrote code with a thread it cannot stop");
    if (!ptrace_mode && !strstr(last_why, "blocks every real-time signal"))
        return fail("unexpected refusal: %s", last_why);
    if (!ptrace_mode && ratio < 0.5)
        return fail("%s", "the refused attempts held the other threads back");
    if (b_during == 0)
        return fail("%s", "the thread blocking every signal made no progress");
    printf("stop_probe: PASS\n");
    return 0;
}

/* ---- a thread that lives in a handler on an alternate stack ------------------------------------- */

static atomic_long in_handler_calls;

static void busy_handler(int sig)
{
    (void)sig;
    /* Most of this thread's time is spent here, on its sigaltstack. */
    for (int i = 0; i < 200000 && atomic_load(&running); i++) {
        int r = call_target(1, 2);
        if (r != 3 && r != 103)
            abort();
        in_handler_calls++;
    }
}

static void *altstack_main(void *arg)
{
    (void)arg;
    stack_t ss = {.ss_sp = malloc(1 << 16), .ss_size = 1 << 16, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    while (atomic_load(&running))
        usleep(1000);                /* not pause(): the last signal may come before it */
    void *mem = ss.ss_sp;
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, NULL);
    free(mem);
    return NULL;
}

static int mode_altstack(int n_flips)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = busy_handler;
    sa.sa_flags = SA_ONSTACK | SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);       /* only the altstack thread takes it */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_t t;
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    t = spawn(altstack_main, NULL, 0);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_attr_destroy(&attr);
    usleep(10000);
    int ok = 0;
    for (int i = 0; i < n_flips; i++) {
        pthread_kill(t, SIGUSR1);
        usleep(200);
        ok += flips(1);
    }
    atomic_store(&running, 0);
    pthread_kill(t, SIGUSR1);
    pthread_join(t, NULL);
    printf("altstack: %d flips, %d succeeded (%s stop), %ld calls in the handler\n", n_flips, ok,
           hp_threads_stop_method(), (long)in_handler_calls);
    if (ok != n_flips)
        return fail("a flip was refused: %s", last_why);
    if (in_handler_calls == 0)
        return fail("%s", "the handler never ran");
    printf("stop_probe: PASS\n");
    return 0;
}

/* ---- many threads ------------------------------------------------------------------------------ */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int pipe_fds[2], epoll_fd;

static void *parked_main(void *arg)
{
    switch ((intptr_t)arg % 4) {
    case 0:
        pthread_mutex_lock(&lock);
        while (atomic_load(&running))
            pthread_cond_wait(&cond, &lock);
        pthread_mutex_unlock(&lock);
        break;
    case 1: {
        char c;
        while (atomic_load(&running) && read(pipe_fds[0], &c, 1) != 0)
            ;
        break;
    }
    case 2:
        while (atomic_load(&running)) {
            struct timespec ts = {30, 0};
            nanosleep(&ts, NULL);
        }
        break;
    default:
        while (atomic_load(&running)) {
            struct epoll_event ev;
            epoll_wait(epoll_fd, &ev, 1, 30000);
        }
    }
    return NULL;
}

static long read_long(const char *path)
{
    FILE *f = fopen(path, "r");
    long v = -1;
    if (f) {
        if (fscanf(f, "%ld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

/* Whether the system's limits leave room for n threads (else the probe is skipped, saying so). */
static bool room_for_threads(int n)
{
    long pid_max = read_long("/proc/sys/kernel/pid_max");
    long threads_max = read_long("/proc/sys/kernel/threads-max");
    struct rlimit nproc;
    getrlimit(RLIMIT_NPROC, &nproc);
    long want = (long)n + 1000;   /* and the rest of the machine */
    if ((pid_max > 0 && pid_max < want) || (threads_max > 0 && threads_max < want) ||
        (nproc.rlim_cur != RLIM_INFINITY && (long)nproc.rlim_cur < want)) {
        printf("stop_probe: SKIP: %d threads need pid_max, threads-max and RLIMIT_NPROC of at "
               "least %ld (they are %ld, %ld, %ld)\n", n, want, pid_max, threads_max,
               nproc.rlim_cur == RLIM_INFINITY ? -1L : (long)nproc.rlim_cur);
        return false;
    }
    return true;
}

static int mode_threads(int n_flips, int n_threads)
{
    if (!room_for_threads(n_threads))
        return 77;
    if (pipe(pipe_fds) != 0 || (epoll_fd = epoll_create1(0)) < 0)
        return fail("%s", "pipe/epoll");
    pthread_t *t = calloc((size_t)n_threads + 2, sizeof *t);
    atomic_long calls[2] = {0, 0};
    for (int i = 0; i < n_threads - 2; i++)
        t[i] = spawn(parked_main, (void *)(intptr_t)i, 64 * 1024);
    t[n_threads - 2] = spawn(busy_main, &calls[0], 64 * 1024);
    t[n_threads - 1] = spawn(busy_main, &calls[1], 64 * 1024);
    usleep(200000);
    long long t0 = now_ns();
    int ok = flips(n_flips);
    long long took = now_ns() - t0;
    atomic_store(&running, 0);
    pthread_mutex_lock(&lock);
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    close(pipe_fds[1]);
    /* The sleepers in nanosleep and epoll_wait sleep for long (their own wakeups would load the
     * machine): the busy ones are joined, the rest end with the process. */
    pthread_join(t[n_threads - 2], NULL);
    pthread_join(t[n_threads - 1], NULL);
    free(t);
    printf("threads: %d threads, %d flips (%d refused) in %.1f ms (%.2f ms per upgrade + "
           "rollback, %s stop), %ld calls\n", n_threads, n_flips, n_flips - ok, took / 1e6,
           took / 1e6 / n_flips, hp_threads_stop_method(), (long)(calls[0] + calls[1]));
    if (ok != n_flips)
        return fail("a flip was refused: %s", last_why);
    printf("stop_probe: PASS\n");
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    int arg = 1;
    bool signal_mode = false;
    if (arg < argc && strcmp(argv[arg], "--signal") == 0) {
        signal_mode = true;
        arg++;
    }
    if (arg >= argc) {
        fprintf(stderr, "usage: stop_probe [--signal] MODE [FLIPS] [THREADS]\n");
        return 2;
    }
    const char *mode = argv[arg++];
    int n_flips = arg < argc ? atoi(argv[arg++]) : 200;
    int n_threads = arg < argc ? atoi(argv[arg++]) : 1000;
    if (signal_mode)
        hp_threads_stop_prefer("signal");
    bool ptrace_mode = strcmp(hp_threads_stop_method(), "ptrace") == 0;
    if (!signal_mode && !ptrace_mode && strcmp(mode, "threads") != 0) {
        printf("stop_probe: SKIP: the ptrace stop is not available here: %s\n",
               hp_threads_stop_fallback_reason());
        return 77;
    }
    if (strcmp(mode, "sleepers") == 0)
        return mode_sleepers(n_flips, ptrace_mode);
    if (strcmp(mode, "signalfd") == 0)
        return mode_signalfd(n_flips);
    if (strcmp(mode, "signalstream") == 0)
        return mode_signalstream(n_flips, ptrace_mode);
    if (strcmp(mode, "sharedsignal") == 0)
        return mode_sharedsignal(n_flips, ptrace_mode);
    if (strcmp(mode, "unstoppable") == 0)
        return mode_unstoppable(ptrace_mode);
    if (strcmp(mode, "rtqueue") == 0)
        return mode_rtqueue(n_flips);
    if (strcmp(mode, "blocker") == 0)
        return mode_blocker(n_flips, ptrace_mode);
    if (strcmp(mode, "threads") == 0)
        return mode_threads(n_flips, n_threads);
    if (strcmp(mode, "altstack") == 0)
        return mode_altstack(n_flips);
    fprintf(stderr, "stop_probe: unknown mode %s\n", mode);
    return 2;
}
