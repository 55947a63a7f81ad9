/*
 * bench_patch.c — what a patched call costs, and how long an upgrade takes (issue 3, item 8).
 *
 * Usage: bench_patch [--smoke | --scaling [--sizes N,N,...] [--ptrace-only] [--profile]]
 *   --sizes        the thread counts of the scaling section (default 64,256,1000,4000,10000)
 *   --ptrace-only  skip the signal stop's column
 *   --profile      also print where the ptrace stop's time goes, per thread and stop
 *   --compare-listing  also measure each size with /proc/PID/task listed at every stop
 * Usage: bench_patch --ptrace-floor [N]
 *   what the kernel alone charges per thread to stop N threads blocked in futex (default
 *   1,000) with ptrace from another process, step by step (seize, interrupt, wait4,
 *   GETREGSET, detach), and with the threads kept seized (interrupt ... PTRACE_CONT): the
 *   floor under the engine's own figure on this machine
 *
 * Call cost, in ns per call of a ~1 ns function ((a + b) * k), median of ROUNDS rounds of CALLS
 * calls each, every variant measured in the same run and interleaved round by round so that
 * frequency changes and noisy neighbours hit all of them alike:
 *   direct         a direct call of an unpatched function
 *   pointer        a call through a function pointer
 *   patched near   a direct call of a function patched with jmp rel32 (one extra jump)
 *   patched far    a direct call of a function patched through its relay cell: the site is
 *                  jmp *cell(%rip) (one indirect jump; a function whose branches forbid the
 *                  6-byte site gets jmp rel32 to a relay slot instead, two jumps)
 *   seed push/ret  a direct call of a function whose entry was overwritten the way the seed did
 *                  it: push imm32; mov dword [rsp+4], imm32; ret (an absolute jump that
 *                  mispredicts the return stack)
 * Then the latency of an upgrade + rollback pair while HAMMERS threads call the function:
 * original <-> v1 and v1 <-> v2 near (every code write is done with the threads stopped), and
 * v1 <-> v2 far (one atomic store to the relay cell).
 *
 * Then thread scaling (issue 11): upgrade + rollback of a near function (two code writes, each
 * with every other thread stopped) while 2 threads call it and the rest are blocked in futex,
 * read, nanosleep and epoll_wait (64 KiB stacks), at 64, 256, 1,000, 4,000 and 10,000 threads,
 * median of a few pairs, with the ptrace stop and with the signal stop (the fallback). Targets
 * for the ptrace stop: 256 threads <= 5 ms, 1,000 <= 20 ms. The table is printed as the
 * README's section.
 *
 * Ratios are against the direct call. Targets: patched near within 1.25x of direct; patched far
 * no slower than a pointer call. The process exits 1 when a patched call returns a wrong result
 * (the figures would be meaningless), never because of timing (machines are noisy).
 */
#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <linux/futex.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands/commands.h"
#include "engine/engine.h"
#include "engine/arch/arch.h"
#include "engine/maps.h"

#if defined(__clang__)
#define NOIPA __attribute__((noinline)) /* clang has no noipa; noinline keeps the call */
#else
#define NOIPA __attribute__((noinline, noipa))
#endif
#define HAMMERS 4

NOIPA int f_direct(int a, int b);
NOIPA int f_near_target(int a, int b);
NOIPA int f_near_v1(int a, int b);
NOIPA int f_near_v2(int a, int b);
NOIPA int f_far_target(int a, int b);
NOIPA int f_seed_target(int a, int b);
NOIPA int f_pointer(int a, int b);

NOIPA int f_direct(int a, int b) { return (a + b) * 3; }
NOIPA int f_pointer(int a, int b) { return (a + b) * 3; }
NOIPA int f_near_target(int a, int b) { return (a + b) * 7; }
NOIPA int f_near_v1(int a, int b) { return (a + b) * 3; }
NOIPA int f_near_v2(int a, int b) { return (a + b) * 9; }
NOIPA int f_far_target(int a, int b) { return (a + b) * 11; }
NOIPA int f_seed_target(int a, int b) { return (a + b) * 13; }

typedef int (*binary_fn)(int, int);
static binary_fn volatile pointer = f_pointer;

static long calls_per_round = 20 * 1000 * 1000;
static int rounds = 11;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* One loop per variant, so each call site is a plain direct call (or one indirect call). */
#define LOOP(name, call)                                                                   \
    static NOIPA double loop_##name(long n, unsigned *sink)                              \
    {                                                                                      \
        unsigned s = 0; /* unsigned: the sum may wrap without undefined behaviour */     \
        double t0 = now_ns();                                                              \
        for (long i = 0; i < n; i++)                                                       \
            s += (unsigned)call((int)(i & 0xffff), 7);                                     \
        double t1 = now_ns();                                                              \
        *sink += s;                                                                        \
        return (t1 - t0) / (double)n;                                                      \
    }
LOOP(direct, f_direct)
LOOP(pointer, pointer)
LOOP(near, f_near_target)
LOOP(far, f_far_target)
LOOP(seed, f_seed_target)

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, compare_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int die(const char *what, const char *why)
{
    fprintf(stderr, "bench_patch: %s: %s\n", what, why);
    return 1;
}

static struct hp_patch_target target_of(const char *name, binary_fn fn)
{
    struct hp_symbol sym = {.address = (void *)fn};
    hp_symbol_describe(&sym);
    return (struct hp_patch_target){name, (void *)fn, sym.size};
}

static int upgrade(binary_fn target, const char *name, binary_fn to, char *why)
{
    struct hp_patch_target t = target_of(name, target);
    struct hp_patch_origin o = {"bench", name, (void *)to};
    return hp_patch_upgrade(&t, &o, why, HP_ERROR_MAX);
}

static int rollback(binary_fn target, char *why)
{
    char lib[128], sym[256];
    int depth;
    return hp_patch_rollback(NULL, (void *)target, lib, sizeof lib, sym, sizeof sym, &depth, why,
                             HP_ERROR_MAX);
}

/* The seed's technique: a 14-byte absolute jump written over the entry (single-threaded here). */
static int write_seed_jump(binary_fn at, binary_fn to, char *why)
{
    uint64_t dest = (uint64_t)(uintptr_t)to;
    uint8_t code[14] = {0x68};                      /* push imm32 (low half) */
    uint32_t lo = (uint32_t)dest, hi = (uint32_t)(dest >> 32);
    memcpy(code + 1, &lo, 4);
    code[5] = 0xC7, code[6] = 0x44, code[7] = 0x24, code[8] = 0x04; /* mov dword [rsp+4], imm32 */
    memcpy(code + 9, &hi, 4);
    code[13] = 0xC3;                                /* ret */
    return hp_arch_write_text((void *)at, code, sizeof code, why, HP_ERROR_MAX);
}

/* ---- upgrade latency under load ------------------------------------------------------------ */

static atomic_int hammering;
static binary_fn volatile hammered;

static void *hammer(void *arg)
{
    (void)arg;
    long s = 0;
    while (atomic_load_explicit(&hammering, memory_order_relaxed))
        s += hammered(1, 2);
    return (void *)s;
}

static int latency(const char *label, binary_fn target, binary_fn base, binary_fn v, int reps,
                   double *out_us)
{
    char why[HP_ERROR_MAX] = "";
    double *t = calloc((size_t)reps, sizeof *t);
    if (!t)
        return die(label, "out of memory");
    hammered = target;
    atomic_store(&hammering, 1);
    pthread_t th[HAMMERS];
    for (int i = 0; i < HAMMERS; i++)
        pthread_create(&th[i], NULL, hammer, NULL);
    int rc = base && upgrade(target, "base", base, why) ? die(label, why) : 0;
    struct hp_patch_target t_once = target_of(label, target); /* symbol lookup not timed */
    struct hp_patch_origin o = {"bench", "v", (void *)v};
    for (int i = 0; rc == 0 && i < reps; i++) {
        double t0 = now_ns();
        if (hp_patch_upgrade(&t_once, &o, why, sizeof why) != 0 || rollback(target, why) != 0)
            rc = die(label, why);
        t[i] = (now_ns() - t0) / 1000.0;
    }
    if (rc == 0 && base && rollback(target, why) != 0)
        rc = die(label, why);
    atomic_store(&hammering, 0);
    for (int i = 0; i < HAMMERS; i++)
        pthread_join(th[i], NULL);
    *out_us = rc == 0 ? median(t, reps) : 0;
    free(t);
    return rc;
}

/* ---- thread scaling ----------------------------------------------------------------------- */

static atomic_int parked_run = 1;
static pthread_mutex_t park_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t park_cond = PTHREAD_COND_INITIALIZER;
static int park_pipe[2] = {-1, -1}, park_epoll = -1;

static void *parked(void *arg)
{
    switch ((intptr_t)arg % 4) {
    case 0:
        pthread_mutex_lock(&park_lock);
        while (atomic_load(&parked_run))
            pthread_cond_wait(&park_cond, &park_lock);
        pthread_mutex_unlock(&park_lock);
        break;
    case 1: {
        char c;
        while (atomic_load(&parked_run) && read(park_pipe[0], &c, 1) > 0)
            ;
        break;
    }
    case 2:
        while (atomic_load(&parked_run)) {
            struct timespec ts = {30, 0};
            nanosleep(&ts, NULL);
        }
        break;
    default:
        while (atomic_load(&parked_run)) {
            struct epoll_event ev;
            epoll_wait(park_epoll, &ev, 1, 30000);
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

/* Median upgrade + rollback, in ms, with the stop method given; -1 when one was refused. */
static double pair_ms(const char *method, int reps, char *why)
{
    hp_threads_stop_prefer(method);
    struct hp_patch_target t = target_of("f_near_target", f_near_target);
    struct hp_patch_origin o = {"bench", "f_near_v1", (void *)f_near_v1};
    double v[64];
    reps = reps > 64 ? 64 : reps;
    struct hp_patch_stats before, after;
    hp_patch_get_stats(&before);
    for (int i = -1; i < reps; i++) {              /* one warm-up pair */
        double t0 = now_ns();
        if (hp_patch_upgrade(&t, &o, why, HP_ERROR_MAX) != 0 || rollback(f_near_target, why) != 0) {
            hp_threads_stop_prefer("auto");
            return -1;
        }
        if (i >= 0)
            v[i] = (now_ns() - t0) / 1e6;
    }
    hp_threads_stop_prefer("auto");
    hp_patch_get_stats(&after);
    unsigned long writes = after.stopped_pokes - before.stopped_pokes;
    if (writes && after.stops - before.stops > writes)
        printf("  (%s: %lu stops for %lu code writes: a calling thread was inside the jump's "
               "bytes, and the write waited for it)\n", method, after.stops - before.stops, writes);
    return median(v, reps);
}

static int custom_sizes[5], n_custom_sizes;   /* --sizes */
static bool ptrace_only, profile;              /* --ptrace-only, --profile */
static bool compare_listing;                   /* --compare-listing */

/* Prints where the ptrace stop's time went since `before`, per thread held and stop. */
static void print_profile(int threads, const struct hp_stop_profile *before)
{
    struct hp_stop_profile now;
    hp_ptrace_profile(&now);
    double n = (double)(now.threads - before->threads);
    if (n <= 0)
        return;
    printf("  %d threads, ptrace stop per thread per stop (%lu stops): list %.2f us, seize + "
           "interrupt %.2f us, wait %.2f us, regs %.2f us, release %.2f us\n", threads,
           now.stops - before->stops, (now.list_ns - before->list_ns) / n / 1e3,
           (now.seize_ns - before->seize_ns) / n / 1e3, (now.wait_ns - before->wait_ns) / n / 1e3,
           (now.regs_ns - before->regs_ns) / n / 1e3,
           (now.release_ns - before->release_ns) / n / 1e3);
}

static int scaling(bool smoke)
{
    static const int full[] = {64, 256, 1000, 4000, 10000}, quick[] = {64, 256};
    const int *sizes = n_custom_sizes ? custom_sizes : smoke ? quick : full;
    int n_sizes = n_custom_sizes ? n_custom_sizes : smoke ? 2 : 5;
    int biggest = sizes[n_sizes - 1];
    long pid_max = read_long("/proc/sys/kernel/pid_max");
    long threads_max = read_long("/proc/sys/kernel/threads-max");
    struct rlimit nproc;
    getrlimit(RLIMIT_NPROC, &nproc);
    printf("thread scaling: pid_max %ld, threads-max %ld, RLIMIT_NPROC %s%ld\n", pid_max,
           threads_max, nproc.rlim_cur == RLIM_INFINITY ? "unlimited " : "",
           nproc.rlim_cur == RLIM_INFINITY ? 0L : (long)nproc.rlim_cur);
    if (pipe(park_pipe) != 0 || (park_epoll = epoll_create1(0)) < 0)
        return die("scaling", "pipe/epoll");
    static pthread_t *pool;
    pool = calloc((size_t)biggest, sizeof *pool);
    if (!pool)
        return die("scaling", "out of memory");
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    hammered = f_near_target;
    atomic_store(&hammering, 1);
    pthread_t hammers[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&hammers[i], &attr, hammer, NULL);
    int created = 2, rc = 0;
    double ptrace_ms[5] = {0}, signal_ms[5] = {0};
    int reached = 0;
    char why[HP_ERROR_MAX] = "";
    for (int k = 0; k < n_sizes && rc == 0; k++) {
        int want = sizes[k];
        while (created < want) {
            int err = pthread_create(&pool[created - 2], &attr, parked,
                                     (void *)(intptr_t)created);
            if (err != 0) {
                printf("  cannot create thread %d: %s; the curve stops at %d\n", created + 1,
                       strerror(err), sizes[k > 0 ? k - 1 : 0]);
                want = -1;
                break;
            }
            created++;
        }
        if (want < 0)
            break;
        usleep(200000 + (useconds_t)want * 20);    /* let them all reach their call */
        int reps = smoke ? 3 : want >= 4000 ? 7 : 21;
        struct hp_stop_profile before;
        hp_ptrace_profile(&before);
        ptrace_ms[k] = pair_ms("ptrace", reps, why);
        if (ptrace_ms[k] < 0)
            printf("  %d threads, ptrace: refused: %s\n", want, why);
        if (profile)
            print_profile(want, &before);
        if (compare_listing) {
            /* The same pairs with the listing of /proc/PID/task at every stop, interleaved
             * with the default so that the machine's load hits both alike. */
            double with[5], without[5];
            for (int round = 0; round < 5; round++) {
                hp_ptrace_guess_last_threads(false);
                without[round] = pair_ms("ptrace", reps, why);
                hp_ptrace_guess_last_threads(true);
                with[round] = pair_ms("ptrace", reps, why);
            }
            printf("  %d threads: listing every stop %.2f ms, last stop's threads first %.2f ms "
                   "(medians of 5 rounds of %d pairs)\n", want, median(without, 5),
                   median(with, 5), reps);
        }
        signal_ms[k] = ptrace_only ? -2 : pair_ms("signal", smoke ? 3 : want >= 4000 ? 3 : 7, why);
        if (signal_ms[k] == -1)
            printf("  %d threads, signal: refused: %s\n", want, why);
        reached = k + 1;
    }
    /* The parked threads sleep for long (so that their own wakeups do not load the machine);
     * they are not joined: the process ends after this section. */
    atomic_store(&parked_run, 0);
    pthread_mutex_lock(&park_lock);
    pthread_cond_broadcast(&park_cond);
    pthread_mutex_unlock(&park_lock);
    close(park_pipe[1]);
    atomic_store(&hammering, 0);
    for (int i = 0; i < 2; i++)
        pthread_join(hammers[i], NULL);
    pthread_attr_destroy(&attr);

    printf("\n### Thread scaling (printed by `make bench`)\n\n");
    printf("Upgrade + rollback of a near function (two code writes, every other thread stopped "
           "for each) while 2 threads call it and the others are blocked in futex, read, "
           "nanosleep and epoll_wait; median, ms.\n\n");
    printf("| threads | ptrace stop | per 1,000 threads | signal stop (fallback) |\n");
    printf("| ---: | ---: | ---: | ---: |\n");
    for (int k = 0; k < reached; k++) {
        char p[32], per[32], sg[32];
        snprintf(p, sizeof p, ptrace_ms[k] < 0 ? "refused" : "%.2f", ptrace_ms[k]);
        snprintf(per, sizeof per, ptrace_ms[k] < 0 ? "-" : "%.2f",
                 ptrace_ms[k] * 1000.0 / sizes[k]);
        snprintf(sg, sizeof sg, signal_ms[k] == -2 ? "-" : signal_ms[k] < 0 ? "refused" : "%.2f",
                 signal_ms[k]);
        printf("| %d | %s | %s | %s |\n", sizes[k], p, per, sg);
    }
    printf("\nTargets (ptrace stop): 256 threads <= 5 ms: %s; 1,000 <= 20 ms: %s.\n",
           reached > 1 && ptrace_ms[1] >= 0 && ptrace_ms[1] <= 5 ? "met" : "MISSED",
           smoke ? "not measured (--smoke)"
           : reached > 2 && ptrace_ms[2] >= 0 && ptrace_ms[2] <= 20 ? "met" : "MISSED");
    return rc;
}

/* ---- the kernel's floor for a ptrace stop ----------------------------------------------------- */

static int floor_word;

static void *floor_sleeper(void *arg)
{
    (void)arg;
    for (;;)
        syscall(SYS_futex, &floor_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    return NULL;
}

static void floor_wait_all(const pid_t *tids, int n)
{
    for (int i = 0; i < n; i++) {
        int status;
        while (waitpid(tids[i], &status, __WALL) < 0 && errno == EINTR)
            ;
    }
}

/* In the forked tracer: rounds of stops, step by step; per thread per stop, in us. */
static void floor_measure(const pid_t *tids, int n, bool keep_seized, double *us)
{
    enum { ROUNDS = 20 };
    struct user_regs_struct regs;
    struct iovec iov = {&regs, sizeof regs};
    double sum[5] = {0};
    for (int i = 0; keep_seized && i < n; i++)
        ptrace(PTRACE_SEIZE, tids[i], 0, 0);
    for (int r = 0; r < ROUNDS; r++) {
        double t[6];
        t[0] = now_ns();
        for (int i = 0; !keep_seized && i < n; i++)
            ptrace(PTRACE_SEIZE, tids[i], 0, 0);
        t[1] = now_ns();
        for (int i = 0; i < n; i++)
            ptrace(PTRACE_INTERRUPT, tids[i], 0, 0);
        t[2] = now_ns();
        floor_wait_all(tids, n);
        t[3] = now_ns();
        for (int i = 0; i < n; i++)
            ptrace(PTRACE_GETREGSET, tids[i], NT_PRSTATUS, &iov);
        t[4] = now_ns();
        for (int i = 0; i < n; i++)
            ptrace(keep_seized ? PTRACE_CONT : PTRACE_DETACH, tids[i], 0, 0);
        t[5] = now_ns();
        for (int k = 0; k < 5; k++)
            sum[k] += t[k + 1] - t[k];
        usleep(2000);
    }
    for (int k = 0; k < 5; k++)
        us[k] = sum[k] / ROUNDS / n / 1e3;
}

static int ptrace_floor(int n)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, floor_sleeper, NULL) != 0)
            return die("ptrace floor", "cannot create the threads");
    }
    usleep(200000 + (useconds_t)n * 20);
    pid_t *tids = calloc((size_t)n + 1, sizeof *tids);
    int count = 0;
    DIR *dir = opendir("/proc/self/task");
    struct dirent *e;
    while (tids && dir && (e = readdir(dir)) && count < n)
        if (atoi(e->d_name) > 0 && atoi(e->d_name) != getpid())
            tids[count++] = atoi(e->d_name);
    if (dir)
        closedir(dir);
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY);
    fflush(stdout);
    pid_t tracer = fork();
    if (tracer == 0) {
        double a[5], b[5];
        floor_measure(tids, count, false, a);
        floor_measure(tids, count, true, b);
        printf("ptrace floor, %d threads blocked in futex, per thread per stop (us):\n"
               "  seize %.2f, interrupt %.2f, wait4 %.2f, GETREGSET %.2f, detach %.2f: %.2f\n"
               "  kept seized: interrupt %.2f, wait4 %.2f, GETREGSET %.2f, PTRACE_CONT %.2f: "
               "%.2f\n", count, a[0], a[1], a[2], a[3], a[4], a[0] + a[1] + a[2] + a[3] + a[4],
               b[1], b[2], b[3], b[4], b[1] + b[2] + b[3] + b[4]);
        fflush(stdout);
        _exit(0);
    }
    int status = 0;
    if (tracer < 0 || waitpid(tracer, &status, 0) < 0 || !WIFEXITED(status))
        return die("ptrace floor", "the tracer failed");
    return 0;
}

int main(int argc, char **argv)
{
    bool smoke = argc > 1 && strcmp(argv[1], "--smoke") == 0;
    if (argc > 1 && strcmp(argv[1], "--ptrace-floor") == 0)
        return ptrace_floor(argc > 2 && atoi(argv[2]) > 0 ? atoi(argv[2]) : 1000);
    if (argc > 1 && strcmp(argv[1], "--scaling") == 0) {
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--ptrace-only") == 0) {
                ptrace_only = true;
            } else if (strcmp(argv[i], "--profile") == 0) {
                profile = true;
            } else if (strcmp(argv[i], "--compare-listing") == 0) {
                compare_listing = true;
            } else if (strcmp(argv[i], "--sizes") == 0 && i + 1 < argc) {
                char *p = argv[++i];
                while (*p && n_custom_sizes < 5) {
                    long v = strtol(p, &p, 10);
                    if (v < 3)
                        return die("--sizes", "each size must be at least 3");
                    custom_sizes[n_custom_sizes++] = (int)v;
                    p += *p == ',';
                }
            } else {
                return die("usage", "bench_patch --scaling [--sizes N,N,...] [--ptrace-only] "
                           "[--profile] [--compare-listing]");
            }
        }
        return scaling(false);       /* the thread scaling section only */
    }
    if (smoke)
        calls_per_round = 200 * 1000, rounds = 3;
    char why[HP_ERROR_MAX] = "";
    void *lib = dlopen(BENCH_FAR_LIB, RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        return die("dlopen", dlerror());
    binary_fn far = (binary_fn)dlsym(lib, "bench_far");
    if (upgrade(f_near_target, "f_near_v1", f_near_v1, why) != 0)
        return die("near upgrade", why);
    if (upgrade(f_far_target, "bench_far", far, why) != 0)
        return die("far upgrade", why);
    if (write_seed_jump(f_seed_target, f_direct, why) != 0)
        return die("seed jump", why);
    if (f_near_target(1, 2) != 9 || f_far_target(1, 2) != 15 || f_seed_target(1, 2) != 9)
        return die("check", "a patched function returned a wrong result");
    struct hp_patch_stats st;
    hp_patch_get_stats(&st);

    enum { DIRECT, POINTER, NEAR, FAR, SEED, N };
    static const char *names[N] = {"direct call", "function pointer", "patched near (rel32)",
                                   "patched far (relay)", "seed push/mov/ret"};
    double samples[N][64];
    unsigned sink = 0;
    for (int r = 0; r < rounds; r++) {
        samples[DIRECT][r] = loop_direct(calls_per_round, &sink);
        samples[POINTER][r] = loop_pointer(calls_per_round, &sink);
        samples[NEAR][r] = loop_near(calls_per_round, &sink);
        samples[FAR][r] = loop_far(calls_per_round, &sink);
        samples[SEED][r] = loop_seed(calls_per_round, &sink);
    }
    double med[N];
    for (int v = 0; v < N; v++)
        med[v] = median(samples[v], rounds);
    printf("call cost: median of %d rounds x %ld calls (sink %u)\n", rounds, calls_per_round,
           sink & 1u);
    printf("  %-22s %8s %8s\n", "variant", "ns/call", "ratio");
    for (int v = 0; v < N; v++)
        printf("  %-22s %8.3f %7.2fx\n", names[v], med[v], med[v] / med[DIRECT]);
    printf("  target: near <= 1.25x direct: %s; far <= pointer: %s\n",
           med[NEAR] <= 1.25 * med[DIRECT] ? "met" : "MISSED",
           med[FAR] <= med[POINTER] * 1.02 ? "met" : "MISSED");

    if (rollback(f_near_target, why) != 0 || rollback(f_far_target, why) != 0)
        return die("rollback", why);
    int reps = smoke ? 5 : 200;
    double orig_us, near_us, far_us;
    if (latency("original <-> v1", f_near_target, NULL, f_near_v1, reps, &orig_us) ||
        latency("v1 <-> v2 near", f_near_target, f_near_v1, f_near_v2, reps, &near_us) ||
        latency("v1 <-> v2 far", f_far_target, far, (binary_fn)dlsym(lib, "bench_far2"), reps,
                &far_us))
        return 1;
    printf("upgrade + rollback latency with %d threads calling the function (median of %d):\n",
           HAMMERS, reps);
    printf("  %-34s %10.1f us\n", "original <-> v1 (threads stopped)", orig_us);
    printf("  %-34s %10.1f us\n", "v1 <-> v2 near (threads stopped)", near_us);
    printf("  %-34s %10.1f us\n", "v1 <-> v2 far (relay cell store)", far_us);
    return scaling(smoke);
}
