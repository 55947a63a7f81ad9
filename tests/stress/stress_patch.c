/*
 * stress_patch.c — issue 3's stress test: threads call patched functions in tight loops while
 * the control thread flips upgrade/rollback thousands of times; every call must return exactly
 * the result of one of the versions, and nothing may crash.
 *
 * Usage: stress_patch [THREADS [FLIPS]]   (defaults: 8 threads, 10000 flips per executable)
 *
 * Built at -O0 and at -O2, both with -fcf-protection=full (entries start with endbr64), as PIE
 * executables. Each run covers, with the flips split between them:
 *   - hot_add, a global function of this executable, replaced by repl_v1/repl_v2 of a shared
 *     library (farther than 2 GB: the relay path, retargeted by an atomic store);
 *   - hot_static, a `static` function found by name through .symtab, replaced by near_v1/
 *     near_v2 of this executable (the direct jmp rel32 path);
 *   - lib_add in libstress_target.so, replaced by repl_v1/v2 (near: shared library to shared
 *     library).
 * The flip pattern keeps the original -> patched transition (written with every thread
 * stopped) in the mix: v1 is installed, then v2 is upgraded and rolled back repeatedly, and
 * every 32 cycles the function goes back to its original code and up again. At the end the
 * original bytes must be back exactly. Calls are both direct and through a function pointer.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
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
#define NOINLINE __attribute__((noinline)) /* clang has no noipa; noinline keeps the call */
#else
#define NOINLINE __attribute__((noinline, noipa))
#endif

NOINLINE int hot_add(int a, int b);
NOINLINE int hot_add(int a, int b)
{
    volatile int bias = 0;
    return a + b + bias;
}

NOINLINE static int hot_static(int a, int b)
{
    volatile int bias = 0;
    return a + b + bias;
}

NOINLINE int near_v1(int a, int b);
NOINLINE int near_v1(int a, int b)
{
    return a * b + 1000;
}

NOINLINE int near_v2(int a, int b);
NOINLINE int near_v2(int a, int b)
{
    return a * b + 2000;
}

typedef int (*binary_fn)(int, int);

struct target {
    const char *name;          /* as resolved through symbols.c */
    binary_fn direct;          /* a direct call site (NULL: pointer calls only) */
    binary_fn v1, v2;
    const char *v1_name, *v2_name;
    int flips;
};

static atomic_int running;
static atomic_long calls, wrong;
static binary_fn volatile current_fn;
static int which_direct;   /* 0: hot_add, 1: hot_static, 2: none */

static int direct_call(int a, int b)
{
    switch (which_direct) {
    case 0:
        return hot_add(a, b);
    case 1:
        return hot_static(a, b);
    default:
        return current_fn(a, b);
    }
}

static bool allowed(int a, int b, int r)
{
    return r == a + b || r == a * b + 1000 || r == a * b + 2000;
}

static void *hammer(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    long n = 0, bad = 0;
    while (atomic_load_explicit(&running, memory_order_relaxed)) {
        int a = (int)(rand_r(&seed) % 1000) + 3, b = (int)(rand_r(&seed) % 1000) + 3;
        int r1 = current_fn(a, b);
        int r2 = direct_call(a, b);
        bad += !allowed(a, b, r1) + !allowed(a, b, r2);
        n += 2;
    }
    atomic_fetch_add(&calls, n);
    atomic_fetch_add(&wrong, bad);
    return NULL;
}

static int fail(const char *what, const char *why)
{
    fprintf(stderr, "stress_patch: FAIL: %s: %s\n", what, why);
    return 1;
}

/* -EBUSY is the engine's "a thread could not be proven outside, nothing changed; try again"
 * (a stop that timed out on a starved CPU): retried, counted, and never a failure by itself. */
static long busy_refusals;

static int upgrade(const struct hp_patch_target *t, const char *name, binary_fn to, char *why)
{
    struct hp_patch_origin o = {"stress", name, (void *)to};
    int rc;
    for (int tries = 0; (rc = hp_patch_upgrade(t, &o, why, HP_ERROR_MAX)) == -EBUSY && tries < 50;
         tries++)
        busy_refusals++;
    return rc;
}

static int rollback(const struct hp_patch_target *t, char *why)
{
    char lib[128], sym[256];
    int depth, rc;
    for (int tries = 0; (rc = hp_patch_rollback(NULL, t->entry, lib, sizeof lib, sym, sizeof sym,
                                                &depth, why, HP_ERROR_MAX)) == -EBUSY &&
                        tries < 50;
         tries++)
        busy_refusals++;
    return rc;
}

static int flip(const struct target *tg, const struct hp_patch_target *t)
{
    char why[HP_ERROR_MAX] = "";
    if (upgrade(t, tg->v1_name, tg->v1, why))
        return fail("upgrade v1", why);
    for (int i = 0; i < tg->flips / 2; i++) {
        if (upgrade(t, tg->v2_name, tg->v2, why))
            return fail("upgrade v2", why);
        if (rollback(t, why))
            return fail("rollback v2", why);
        if (i % 32 == 31 && (rollback(t, why) || upgrade(t, tg->v1_name, tg->v1, why)))
            return fail("original <-> v1", why);
    }
    if (rollback(t, why))
        return fail("rollback v1", why);
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int run_target(const struct target *tg, int threads)
{
    char why[HP_ERROR_MAX] = "";
    struct hp_symbol sym;
    if (hp_func_resolve(tg->name, &sym, why, sizeof why) != 0)
        return fail(tg->name, why);
    struct hp_patch_target t = {tg->name, sym.address, sym.size};
    uint8_t before[32];
    memcpy(before, sym.address, sizeof before);
    current_fn = (binary_fn)sym.address;
    atomic_store(&calls, 0);
    atomic_store(&wrong, 0);
    atomic_store(&running, 1);
    pthread_t th[64];
    for (int i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, hammer, (void *)(uintptr_t)(i + 1));
    double t0 = now();
    int rc = flip(tg, &t);
    double elapsed = now() - t0;
    atomic_store(&running, 0);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    struct hp_patch_stats st;
    hp_patch_get_stats(&st);
    printf("%-28s %6d flips in %6.2f s (%5.0f us/flip), %ld calls, %ld wrong; stops=%lu "
           "stopped=%lu relay=%lu busy=%ld\n", tg->name, tg->flips, elapsed,
           elapsed / tg->flips * 1e6, atomic_load(&calls), atomic_load(&wrong),
           st.stops, st.stopped_pokes, st.relay_stores, busy_refusals);
    if (rc)
        return rc;
    if (atomic_load(&wrong) != 0)
        return fail(tg->name, "a call returned a result of no version");
    if (atomic_load(&calls) == 0)
        return fail(tg->name, "the threads made no calls");
    if (memcmp(before, sym.address, sizeof before) != 0)
        return fail(tg->name, "original bytes not restored exactly");
    return 0;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 8;
    int flips = argc > 2 ? atoi(argv[2]) : 10000;
    if (threads < 1 || threads > 64 || flips < 2) {
        fprintf(stderr, "usage: stress_patch [THREADS(1-64) [FLIPS(>=2)]]\n");
        return 2;
    }
    void *target_lib = dlopen(STRESS_TARGET_LIB, RTLD_NOW | RTLD_GLOBAL);
    void *repl_lib = dlopen(STRESS_REPL_LIB, RTLD_NOW | RTLD_LOCAL);
    if (!target_lib || !repl_lib)
        return fail("dlopen", dlerror());
    binary_fn far_v1 = (binary_fn)dlsym(repl_lib, "repl_v1");
    binary_fn far_v2 = (binary_fn)dlsym(repl_lib, "repl_v2");
    struct target targets[] = {
        {"hot_add", hot_add, far_v1, far_v2, "repl_v1", "repl_v2", flips * 2 / 5},
        {"hot_static", hot_static, near_v1, near_v2, "near_v1", "near_v2", flips / 5},
        {"libstress_target.so:lib_add", NULL, far_v1, far_v2, "repl_v1", "repl_v2",
         flips * 2 / 5},
    };
    printf("stress_patch: %d threads, %d flips, %s\n", threads, flips, BUILD_FLAVOR);
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        which_direct = (int)i;
        if (run_target(&targets[i], threads) != 0)
            return 1;
    }
    printf("stress_patch: PASS\n");
    return 0;
}
