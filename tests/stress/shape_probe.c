/*
 * shape_probe.c — two program shapes of issue 11's stress list that the thread stop alone does
 * not cover: coroutines suspended inside the function being flipped, and a plugin that the
 * program unloads and loads again while its function is upgraded and rolled back.
 *
 * Usage: shape_probe MODE [FLIPS]
 *   coroutines   two threads each run 8 ucontext coroutines round-robin; every coroutine calls
 *                coro_target, which suspends itself (swapcontext) in the middle of its body
 *                and is resumed later, after flips. The main thread flips coro_target between
 *                its original and coro_repl FLIPS times. Every call must return exactly the
 *                result of the version it entered (a + b, or a + b + 100 for the upgrade,
 *                which suspends too), every flip must succeed, and calls must have been
 *                suspended across a flip (else the shape did not happen).
 *   plugins      a thread loads plugin A, calls its plugin_fn, unloads it, loads plugin B (a
 *                different file, same size, usually at the same address), calls, unloads, in
 *                a loop. The main thread resolves plugin_fn as `func upgrade` does (whichever
 *                plugin is loaded), upgrades it to plugin_repl (in this executable, more than
 *                2 GB away: through the relay) and rolls it back, FLIPS times. Refusals are
 *                allowed (the plugin may vanish between resolving and writing); a crash, a
 *                wrong result (A's bytes written into B, a jump left in a fresh copy) or a
 *                record left installed for code that is gone is not. At least one flip must
 *                succeed.
 * Exit 0 on PASS, 1 on FAIL (with the reason), 2 on a usage error, 77 to skip.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

#include "engine/engine.h"

#if defined(__clang__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE __attribute__((noinline, noipa))
#endif

static atomic_int running = 1;
static atomic_ulong flips_done;     /* successful code writes so far */
static char last_why[512];

static int fail(const char *what, const char *detail)
{
    printf("shape_probe: FAIL: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    return 1;
}

static struct hp_patch_target target_at(const char *name, void *fn)
{
    struct hp_symbol sym = {.address = fn};
    hp_symbol_describe(&sym);
    struct hp_patch_target t = {name, fn, sym.size};
    return t;
}

static int rollback(void *fn)
{
    char lib[128], name[256];
    int depth;
    return hp_patch_rollback(NULL, fn, lib, sizeof lib, name, sizeof name, &depth, last_why,
                             sizeof last_why);
}

/* ---- coroutines --------------------------------------------------------------------------------- */

#define SCHEDULERS 2
#define COROUTINES 8
#define CORO_STACK (64 * 1024)

struct coroutine {
    ucontext_t self;
    ucontext_t *scheduler;
    unsigned seed;
    unsigned long calls, across_flips, wrong;
};

/* The coroutine running on each scheduler thread (set before every switch). */
static __thread struct coroutine *current;

NOINLINE static void coro_yield(void)
{
    struct coroutine *c = current;
    swapcontext(&c->self, c->scheduler);
}

/* Both versions suspend in the middle of their body: a flip happens while calls are inside. */
NOINLINE int coro_target(int a, int b);
NOINLINE int coro_target(int a, int b)
{
    volatile int bias = 0;
    int r = a + b + bias;
    coro_yield();
    return r + bias;
}

NOINLINE int coro_repl(int a, int b);
NOINLINE int coro_repl(int a, int b)
{
    volatile int bias = 100;
    int r = a + b + bias;
    coro_yield();
    return r;
}

static int (*volatile call_coro)(int, int) = coro_target;

static void coroutine_main(unsigned lo, unsigned hi)
{
    struct coroutine *c = (struct coroutine *)(((uintptr_t)hi << 32) | lo);
    for (;;) {
        int a = (int)(rand_r(&c->seed) % 1000), b = (int)(rand_r(&c->seed) % 1000);
        unsigned long before = atomic_load(&flips_done);
        int r = call_coro(a, b);
        if (r != a + b && r != a + b + 100)
            c->wrong++;
        c->across_flips += atomic_load(&flips_done) != before;
        c->calls++;
    }
}

/* getcontext returns twice: kept in a function of its own, with nothing changed after it. */
NOINLINE static void init_coroutine(struct coroutine *c, ucontext_t *scheduler)
{
    const uintptr_t p = (uintptr_t)c;
    void *stack = malloc(CORO_STACK);
    c->scheduler = scheduler;
    c->seed = (unsigned)p;
    getcontext(&c->self);
    c->self.uc_stack.ss_sp = stack;
    c->self.uc_stack.ss_size = CORO_STACK;
    c->self.uc_link = NULL;
    makecontext(&c->self, (void (*)(void))coroutine_main, 2, (unsigned)(p & 0xffffffffu),
                (unsigned)(p >> 32));
}

static void *scheduler_main(void *arg)
{
    struct coroutine *cs = arg;
    ucontext_t scheduler;
    for (int i = 0; i < COROUTINES; i++)
        init_coroutine(&cs[i], &scheduler);
    while (atomic_load(&running)) {
        for (int i = 0; i < COROUTINES; i++) {
            current = &cs[i];
            swapcontext(&scheduler, &cs[i].self);
        }
    }
    /* The coroutines stay suspended forever; their stacks go with the process. */
    return NULL;
}

static int mode_coroutines(int n_flips)
{
    static struct coroutine cs[SCHEDULERS][COROUTINES];
    pthread_t t[SCHEDULERS];
    for (int i = 0; i < SCHEDULERS; i++)
        pthread_create(&t[i], NULL, scheduler_main, cs[i]);
    usleep(100000);
    struct hp_patch_target target = target_at("coro_target", (void *)coro_target);
    struct hp_patch_origin origin = {"probe", "coro_repl", (void *)coro_repl};
    int ok = 0;
    for (int i = 0; i < n_flips; i++) {
        if (hp_patch_upgrade(&target, &origin, last_why, sizeof last_why) != 0)
            break;
        atomic_fetch_add(&flips_done, 1);
        if (rollback((void *)coro_target) != 0)
            break;
        atomic_fetch_add(&flips_done, 1);
        ok++;
    }
    atomic_store(&running, 0);
    for (int i = 0; i < SCHEDULERS; i++)
        pthread_join(t[i], NULL);
    unsigned long calls = 0, across = 0, wrong = 0;
    for (int i = 0; i < SCHEDULERS; i++)
        for (int j = 0; j < COROUTINES; j++) {
            calls += cs[i][j].calls;
            across += cs[i][j].across_flips;
            wrong += cs[i][j].wrong;
        }
    printf("coroutines: %d of %d flips, %lu calls, %lu suspended across a flip, %lu wrong\n",
           ok, n_flips, calls, across, wrong);
    if (ok != n_flips)
        return fail("a flip was refused", last_why);
    if (wrong)
        return fail("a call returned a result of neither version", NULL);
    if (across == 0)
        return fail("no call was suspended across a flip", NULL);
    printf("shape_probe: PASS\n");
    return 0;
}

/* ---- plugins reloaded under the engine ----------------------------------------------------------- */

NOINLINE int plugin_repl(int a, int b);
NOINLINE int plugin_repl(int a, int b)
{
    volatile int bias = 100000;
    return a + b + bias;
}

static atomic_ulong plugin_calls, plugin_wrong, plugin_loads;

/* Loads each plugin in turn and checks every result: its own code's, or the upgrade's. */
static void *reloader_main(void *arg)
{
    (void)arg;
    const char *paths[2] = {SHAPE_PLUGIN_A, SHAPE_PLUGIN_B};
    unsigned seed = 7;
    for (unsigned long round = 0; atomic_load(&running); round++) {
        void *h = dlopen(paths[round % 2], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            fprintf(stderr, "shape_probe: dlopen: %s\n", dlerror());
            atomic_fetch_add(&plugin_wrong, 1);
            return NULL;
        }
        atomic_fetch_add(&plugin_loads, 1);
        int (*fn)(int, int) = (int (*)(int, int))dlsym(h, "plugin_fn");
        int (*other)(int) = (int (*)(int))dlsym(h, "plugin_other");
        int own_bias = round % 2 == 0 ? 1000 : 2000;   /* shape_plugin.c's two variants */
        for (int k = 0; fn && other && k < 1000; k++) {
            int a = (int)(rand_r(&seed) % 1000), b = (int)(rand_r(&seed) % 1000);
            int r = fn(a, b);
            if (other(a) != 3 * a) {
                if (atomic_fetch_add(&plugin_wrong, 1) < 5)
                    fprintf(stderr, "shape_probe: plugin %c: plugin_other(%d) = %d\n",
                            'A' + (int)(round % 2), a, other(a));
            }
            if (r != a + b + own_bias && r != a + b + 100000) {
                if (atomic_fetch_add(&plugin_wrong, 1) < 5)
                    fprintf(stderr, "shape_probe: plugin %c: plugin_fn(%d, %d) = %d\n",
                            'A' + (int)(round % 2), a, b, r);
            }
            atomic_fetch_add(&plugin_calls, 1);
        }
        dlclose(h);
    }
    return NULL;
}

struct installed_count {
    int installed;
    char names[256];
};

static void count_installed(const struct hp_patch_view *v, void *ctx)
{
    struct installed_count *c = ctx;
    if (v->depth > 0) {
        c->installed++;
        snprintf(c->names, sizeof c->names, "%s", v->name);
    }
}

/* The distinct kinds of refusal seen (their text up to the first digit), for the report. */
#define KINDS 6
static char kinds[KINDS][80];
static int kind_count[KINDS];

static void note_refusal(const char *why)
{
    char kind[80];
    size_t n = 0;
    while (why[n] && n + 1 < sizeof kind && !(why[n] >= '0' && why[n] <= '9'))
        n++;
    snprintf(kind, sizeof kind, "%.*s", (int)n, why);
    for (int i = 0; i < KINDS; i++) {
        if (!kinds[i][0])
            snprintf(kinds[i], sizeof kinds[i], "%s", kind);
        if (strcmp(kinds[i], kind) == 0) {
            kind_count[i]++;
            return;
        }
    }
}

static int mode_plugins(int n_flips)
{
    pthread_t t;
    pthread_create(&t, NULL, reloader_main, NULL);
    struct hp_patch_origin origin = {"probe", "plugin_repl", (void *)plugin_repl};
    int ok = 0, refused = 0, unresolved = 0;
    char first_refusal[512] = "";
    for (int i = 0; i < n_flips; i++) {
        struct hp_symbol sym;
        char why[512];
        if (hp_symbol_resolve("plugin_fn", NULL, &sym, why, sizeof why) != 0) {
            unresolved++;          /* between an unload and the next load */
            continue;
        }
        struct hp_patch_target target = {"plugin_fn", sym.address, sym.size};
        if (hp_patch_upgrade(&target, &origin, last_why, sizeof last_why) != 0) {
            note_refusal(last_why);
            if (!first_refusal[0])
                snprintf(first_refusal, sizeof first_refusal, "%s", last_why);
            refused++;
            continue;
        }
        /* The record may be dropped (the plugin went away) before the rollback: allowed. */
        if (rollback(sym.address) != 0) {
            note_refusal(last_why);
            if (!first_refusal[0])
                snprintf(first_refusal, sizeof first_refusal, "%s", last_why);
            refused++;
            continue;
        }
        ok++;
    }
    atomic_store(&running, 0);
    pthread_join(t, NULL);
    /* Every plugin is unloaded now: no record may still claim an installed patch. */
    struct installed_count left = {0, ""};
    hp_patch_each(count_installed, &left);
    printf("plugins: %d of %d flips, %d refused, %d unresolved, %lu loads, %lu calls, %lu "
           "wrong; first refusal: %s\n", ok, n_flips, refused, unresolved,
           atomic_load(&plugin_loads), atomic_load(&plugin_calls), atomic_load(&plugin_wrong),
           first_refusal[0] ? first_refusal : "none");
    for (int i = 0; i < KINDS && kinds[i][0]; i++)
        printf("  refused %d times: %s...\n", kind_count[i], kinds[i]);
    if (atomic_load(&plugin_wrong))
        return fail("a plugin call returned a result of neither version", NULL);
    if (left.installed)
        return fail("a record stays installed for code that was unloaded", left.names);
    if (ok == 0)
        return fail("no flip succeeded", first_refusal);
    printf("shape_probe: PASS\n");
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: shape_probe coroutines|plugins [FLIPS]\n");
        return 2;
    }
    int n_flips = argc > 2 ? atoi(argv[2]) : 1000;
    if (strcmp(argv[1], "coroutines") == 0)
        return mode_coroutines(n_flips);
    if (strcmp(argv[1], "plugins") == 0)
        return mode_plugins(n_flips);
    fprintf(stderr, "shape_probe: unknown mode %s\n", argv[1]);
    return 2;
}
