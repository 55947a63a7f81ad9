/*
 * test_branch_proof.c — the whole-object branch proof (engine/branch_proof.c) and tiny
 * functions, on real compiler output (issue 11, defect 1 and "reach").
 *
 * The objects come from tests/unit/reach, built with gcc by build_shapes.sh and checked with
 * objdump by check_shapes.sh (CTest reach_shapes):
 *   - gcc -O2, -O3 and -O2 -fcf-protection hot/cold splits, where retry.cold ends with
 *     `jmp retry+3` (+7 with endbr64), and the -O2 one stripped of .symtab: each upgrade of
 *     retry must be refused, naming the branch (the old check accepted it and the next retry
 *     died of SIGILL);
 *   - assembly that enters a function's first bytes from elsewhere: a second entry point, a
 *     local label, OpenSSL's bn_mulx4x_mont+3 jump, a call, a jump table, a lea, a code
 *     pointer in data;
 *   - tiny functions: `return x * 2;` (4 bytes after endbr64, then padding) is upgraded and
 *     flipped while threads call it; tiny ones without padding, with padding something
 *     jumps into, or falling through stay refused.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "engine/branch_proof.h"
#include "engine/engine.h"

#if defined(__SANITIZE_THREAD__)
#define NEEDS_THREAD_STOP() skip()     /* TSan defers the stop signal (see test_patch.c) */
#else
#define NEEDS_THREAD_STOP() do { } while (0)
#endif

__attribute__((noinline)) int test_replacement(int x)
{
    volatile int k = 5000;
    return x + k;
}

static char why[1024];

static void *open_shape(const char *lib)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", SHAPES_DIR, lib);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        print_message("dlopen %s: %s\n", path, dlerror());
    assert_non_null(h);
    return h;
}

static struct hp_symbol resolve(const char *lib, const char *name)
{
    char func[512];
    snprintf(func, sizeof func, "%s:%s", lib, name);
    struct hp_symbol sym;
    int rc = hp_symbol_resolve(func, NULL, &sym, why, sizeof why);
    if (rc != 0)
        print_message("%s: %s\n", func, why);
    assert_int_equal(rc, 0);
    return sym;
}

/* Upgrades lib:name to `to`; returns the engine's answer, why holds its reason. */
static int upgrade(const char *lib, const char *name, void *to)
{
    struct hp_symbol sym = resolve(lib, name);
    struct hp_patch_target t = {name, sym.address, sym.size};
    struct hp_patch_origin o = {"t", "replacement", to};
    why[0] = '\0';
    return hp_patch_upgrade(&t, &o, why, sizeof why);
}

static int rollback(void *entry)
{
    char lib[128], sym[256];
    int depth;
    return hp_patch_rollback(NULL, entry, lib, sizeof lib, sym, sizeof sym, &depth, why,
                             sizeof why);
}

/* lib:name is refused, with a one-line reason holding `expect`, and its bytes stay. */
static void assert_refused(const char *lib, const char *name, const char *expect)
{
    struct hp_symbol sym = resolve(lib, name);
    uint8_t before[16];
    memcpy(before, sym.address, sizeof before);
    int rc = upgrade(lib, name, (void *)test_replacement);
    print_message("%s:%s -> %d: %s\n", lib, name, rc, why);
    assert_int_equal(rc, -EINVAL);
    assert_non_null(strstr(why, expect));
    assert_null(strchr(why, '\n'));
    assert_memory_equal(sym.address, before, sizeof before);
}

/* ---- gcc's hot/cold split ------------------------------------------------------------------ */

static void check_hot_cold(const char *lib, const char *branch_from, const char *target)
{
    void *h = open_shape(lib);
    int (*retry)(int) = (int (*)(int))dlsym(h, "retry");
    int *fails_left = dlsym(h, "fails_left"), *retries = dlsym(h, "retries");
    *fails_left = 3;
    assert_int_equal(retry(5), 5);      /* through retry.cold and back, three times */
    assert_int_equal(*retries, 3);
    assert_refused(lib, "retry", branch_from);
    assert_non_null(strstr(why, target));
    *fails_left = 2;
    assert_int_equal(retry(6), 6);      /* still the original code */
    assert_int_equal(*retries, 5);
}

static void test_hot_cold_split_is_refused(void **state)
{
    (void)state;
    check_hot_cold("libhp_hotcold_O2.so", "the branch at retry.cold+0x", "targets retry+0x3");
    check_hot_cold("libhp_hotcold_O3.so", "the branch at retry.cold+0x", "targets retry+0x3");
    check_hot_cold("libhp_hotcold_cet.so", "the branch at retry.cold+0x", "targets retry+0x7");
    /* Without .symtab the cold piece has no name: the sweep of .text finds it anyway. */
    check_hot_cold("libhp_hotcold_O2_stripped.so", "the branch at libhp_hotcold_O2_stripped.so+0x",
                   "targets retry+0x3");
}

/* ---- entries into the site from elsewhere -------------------------------------------------- */

static void check_entries(const char *lib, bool has_symtab)
{
    open_shape(lib);
    assert_refused(lib, "entry2_target", "the symbol entry2_inner starts at +0x2");
    if (has_symtab)
        assert_refused(lib, "label_target", "the symbol label_inner starts at +0x2");
    assert_refused(lib, "mulx_target", "the branch at mul_mont_like+0x7 targets mulx_target+0x3");
    assert_refused(lib, "call_target", "the branch at call_maker+0 targets call_target+0x3");
    assert_refused(lib, "table_target", "a jump table entry at");
    assert_non_null(strstr(why, "targets table_target+0x2"));
    assert_refused(lib, "table2_target", "a jump table entry at");
    assert_refused(lib, "lea_target", "the code at lea_taker+0 takes the address lea_target+0x2");
    assert_refused(lib, "pointer_target", "a code pointer in the data at");
    assert_non_null(strstr(why, "points to pointer_target+0x1"));
}

static void test_entries_into_the_site_are_refused(void **state)
{
    (void)state;
    check_entries("libhp_asm_shapes.so", true);
    check_entries("libhp_asm_shapes_stripped.so", false);
}

/* ---- tiny functions ------------------------------------------------------------------------ */

struct caller {
    pthread_t thread;
    int (*volatile fn)(int);
    atomic_int stop;
    long calls, bad;
};

static void *caller_main(void *arg)
{
    struct caller *c = arg;
    while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
        int r = c->fn(3);
        c->bad += r != 6 && r != 61 && r != 5003;
        c->calls++;
    }
    return NULL;
}

static void test_tiny_function_is_patched(void **state)
{
    (void)state;
    NEEDS_THREAD_STOP();
    void *h = open_shape("libhp_tiny.so");
    struct hp_symbol sym = resolve("libhp_tiny.so", "twice");
    assert_true(sym.size < 4 + 5);        /* endbr64 + 4 bytes: shorter than the jump */
    int (*twice)(int) = (int (*)(int))sym.address;
    void *near_repl = dlsym(h, "twice_repl");
    uint8_t before[16];
    memcpy(before, sym.address, sizeof before);
    struct caller c[2] = {{.fn = twice}, {.fn = twice}};
    for (int i = 0; i < 2; i++)
        pthread_create(&c[i].thread, NULL, caller_main, &c[i]);
    for (int i = 0; i < 200; i++) {
        int rc = upgrade("libhp_tiny.so", "twice", near_repl);
        if (rc != 0)
            print_message("refused: %s\n", why);
        assert_int_equal(rc, 0);
        assert_int_equal(twice(3), 61);
        assert_int_equal(upgrade("libhp_tiny.so", "twice", (void *)test_replacement), 0);
        assert_int_equal(twice(3), 5003);       /* far: through the relay */
        assert_int_equal(rollback(sym.address), 0);
        assert_int_equal(rollback(sym.address), 0);
        assert_int_equal(twice(3), 6);
        assert_memory_equal(sym.address, before, sizeof before);
    }
    for (int i = 0; i < 2; i++) {
        atomic_store(&c[i].stop, 1);
        pthread_join(c[i].thread, NULL);
        assert_int_equal(c[i].bad, 0);
        assert_true(c[i].calls > 0);
    }
}

static void test_tiny_functions_without_room_are_refused(void **state)
{
    (void)state;
    open_shape("libhp_asm_shapes.so");
    assert_refused("libhp_asm_shapes.so", "tiny_nopad", "belong to the next symbol");
    assert_non_null(strstr(why, "too short"));
    assert_refused("libhp_asm_shapes.so", "tiny_jumped", "the branch at pad_jumper+0 targets");
    assert_refused("libhp_asm_shapes.so", "tiny_notpad", "not alignment padding");
    assert_refused("libhp_asm_shapes.so", "tiny_falls", "falls through");
}

/* ---- the cache ----------------------------------------------------------------------------- */

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void test_index_is_built_once_per_object(void **state)
{
    (void)state;
    NEEDS_THREAD_STOP();
    void *h = dlopen(SHAPES_DIR "/libhp_hotcold_O2.so", RTLD_NOW | RTLD_LOCAL);
    assert_non_null(h);
    struct hp_branch_proof_stats a, b, c;
    hp_branch_proof_get_stats(&a);
    /* The first proof in this object was made by an earlier test; every one now reuses it. */
    double t0 = seconds();
    assert_int_equal(upgrade("libhp_hotcold_O2.so", "retry_repl", (void *)test_replacement), 0);
    double t1 = seconds();
    assert_int_equal(rollback(resolve("libhp_hotcold_O2.so", "retry_repl").address), 0);
    assert_int_equal(upgrade("libhp_hotcold_O2.so", "try_once", (void *)test_replacement), 0);
    assert_int_equal(rollback(resolve("libhp_hotcold_O2.so", "try_once").address), 0);
    hp_branch_proof_get_stats(&b);
    print_message("a proof from the cache: %.3f ms (upgrade included)\n", (t1 - t0) * 1e3);
    assert_int_equal(b.built, a.built);
    assert_true(b.reused >= a.reused + 2);

    /* The object unloaded: its index is dropped at the next proof. */
    dlclose(h);
    dlclose(h);                           /* the reference check_hot_cold left */
    open_shape("libhp_tiny.so");
    assert_int_equal(upgrade("libhp_tiny.so", "thrice", (void *)test_replacement), 0);
    assert_int_equal(rollback(resolve("libhp_tiny.so", "thrice").address), 0);
    hp_branch_proof_get_stats(&c);
    print_message("indexes: built %lu, reused %lu, dropped %lu, held %lu\n", c.built, c.reused,
                  c.dropped, c.cached);
    assert_true(c.dropped > b.dropped);
}

/* Copies the file at from to to through a new inode (write a temporary, rename over). */
static void copy_file(const char *from, const char *to)
{
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", to);
    FILE *in = fopen(from, "rb"), *out = fopen(tmp, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
    assert_int_equal(rename(tmp, to), 0);
}

/* A library unloaded and another file loaded under the same name gets a new index: the key is
 * the file's identity (and base), not its name. */
static void test_index_follows_the_file_not_the_name(void **state)
{
    (void)state;
    NEEDS_THREAD_STOP();
    char path[1100];
    snprintf(path, sizeof path, "/tmp/libhp_reload_%d.so", (int)getpid());
    struct hp_branch_proof_stats a, b, c;
    for (int round = 0; round < 2; round++) {
        copy_file(SHAPES_DIR "/libhp_tiny.so", path);
        hp_branch_proof_get_stats(&a);
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        assert_non_null(h);
        const char *lib = strrchr(path, '/') + 1;
        assert_int_equal(upgrade(lib, "twice", (void *)test_replacement), 0);
        assert_int_equal(rollback(resolve(lib, "twice").address), 0);
        assert_int_equal(upgrade(lib, "thrice", (void *)test_replacement), 0);
        assert_int_equal(rollback(resolve(lib, "thrice").address), 0);
        hp_branch_proof_get_stats(&b);
        print_message("round %d: built %lu -> %lu, reused %lu -> %lu, dropped %lu\n", round,
                      a.built, b.built, a.reused, b.reused, b.dropped);
        assert_int_equal(b.built, a.built + 1);    /* one index per file, then reused */
        assert_true(b.reused >= a.reused + 1);
        assert_int_equal(dlclose(h), 0);
    }
    hp_branch_proof_get_stats(&c);
    assert_true(c.dropped >= 1);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hot_cold_split_is_refused),
        cmocka_unit_test(test_entries_into_the_site_are_refused),
        cmocka_unit_test(test_tiny_function_is_patched),
        cmocka_unit_test(test_tiny_functions_without_room_are_refused),
        cmocka_unit_test(test_index_is_built_once_per_object),
        cmocka_unit_test(test_index_follows_the_file_not_the_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
