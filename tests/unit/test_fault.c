/*
 * test_fault.c — the restore path of a failed code write, proven on real code with injected
 * failures (the test build of the static library, HOTPATCH_FAULT_INJECTION: arch/x86_64.c).
 *
 * Each case makes the write path fail in one way — a /proc/self/mem write that lands some bytes
 * and then fails, the mprotect fallback refused, the fallback's restore of the page protection
 * refused, a batch whose second or third site fails — and checks what the program would see:
 * the site holds exactly its previous bytes, the function computes what it did, the error is a
 * single line naming what failed, and no page of the process is left writable and executable.
 *
 * Built with -fcf-protection=full (every function here starts with endbr64, as in test_patch).
 * Calls go through volatile function pointers so that each one executes the patched entry.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "commands/commands.h"
#include "engine/engine.h"
#include "engine/arch/arch.h"

#define NOINLINE __attribute__((noinline))
#define SITE_BYTES 16

NOINLINE int fault_target(int x) { volatile int k = 1; return x + k; }
NOINLINE int fault_fallback(int x) { volatile int k = 2; return x + k; }
NOINLINE int fault_reprotect(int x) { volatile int k = 3; return x + k; }
NOINLINE int fault_broken(int x) { volatile int k = 4; return x + k; }
NOINLINE int fault_new(int x) { volatile int k = 1000; return x + k; }
NOINLINE int batch_a(int x) { volatile int k = 11; return x + k; }
NOINLINE int batch_b(int x) { volatile int k = 12; return x + k; }
NOINLINE int batch_c(int x) { volatile int k = 13; return x + k; }
NOINLINE int batch_a2(int x) { volatile int k = 111; return x + k; }
NOINLINE int batch_b2(int x) { volatile int k = 112; return x + k; }
NOINLINE int batch_c2(int x) { volatile int k = 113; return x + k; }

typedef int (*int_fn)(int);
static int_fn volatile call_target = fault_target;
static int_fn volatile call_fallback = fault_fallback;
static int_fn volatile call_reprotect = fault_reprotect;
static int_fn volatile call_batch[3] = {batch_a, batch_b, batch_c};

static struct hp_patch_target target_of(const char *name, void *fn)
{
    struct hp_symbol sym = {.address = fn};
    hp_symbol_describe(&sym);
    struct hp_patch_target t = {name, fn, sym.size};
    return t;
}

static int upgrade(const char *name, void *fn, void *to, char *why)
{
    struct hp_patch_target t = target_of(name, fn);
    struct hp_patch_origin o = {"faults", "fault_new", to};
    return hp_patch_upgrade(&t, &o, why, HP_ERROR_MAX);
}

static int rollback(void *fn, char *why)
{
    char lib[128], sym[256];
    int depth;
    return hp_patch_rollback(NULL, fn, lib, sizeof lib, sym, sizeof sym, &depth, why,
                             HP_ERROR_MAX);
}

static void inject(unsigned from_poke, int proc_mem_failures, size_t proc_mem_bytes,
                   int mprotect_failures, int reprotect_failures)
{
    struct hp_arch_fault_plan plan = {from_poke, proc_mem_failures, proc_mem_bytes,
                                      mprotect_failures, reprotect_failures};
    hp_arch_inject_faults(&plan);
}

/* The permissions field ("r-xp") of the mapping holding addr in /proc/self/maps. */
static void permissions_of(const void *addr, char perms[5])
{
    FILE *maps = fopen("/proc/self/maps", "r");
    assert_non_null(maps);
    char line[4096];
    strcpy(perms, "????");
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        char p[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, p) == 3 && (uintptr_t)addr >= lo &&
            (uintptr_t)addr < hi) {
            memcpy(perms, p, 5);
            break;
        }
    }
    fclose(maps);
}

/* Mappings that are writable and executable at once: the fallback must never leave one. */
static int writable_code_mappings(void)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    assert_non_null(maps);
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, maps)) {
        char p[5];
        if (sscanf(line, "%*x-%*x %4s", p) == 1 && p[1] == 'w' && p[2] == 'x')
            n++;
    }
    fclose(maps);
    return n;
}

static void assert_not_writable(const void *fn)
{
    char perms[5];
    permissions_of(fn, perms);
    if (perms[1] != '-' || perms[2] != 'x')
        fail_msg("the code at %p is mapped %s", fn, perms);
    assert_int_equal(writable_code_mappings(), 0);
}

/* A reply line: not empty, no newline. */
static void assert_one_line(const char *why)
{
    assert_true(why[0] != '\0');
    if (strchr(why, '\n'))
        fail_msg("the reason spans lines: %s", why);
}

static void assert_bytes(const void *fn, const uint8_t *expected)
{
    assert_memory_equal(fn, expected, SITE_BYTES);
}

/* ---- the fallback alone ------------------------------------------------------------------------ */

static void test_fallback_writes_correctly(void **state)
{
    (void)state;
    char why[HP_ERROR_MAX] = "";
    uint8_t original[SITE_BYTES];
    memcpy(original, (void *)fault_fallback, SITE_BYTES);
    inject(1, -1, 0, 0, 0);   /* every /proc/self/mem write fails: mprotect does them all */
    assert_int_equal(upgrade("fault_fallback", (void *)fault_fallback, (void *)fault_new, why), 0);
    assert_int_equal(call_fallback(5), 1005);
    assert_not_writable((void *)fault_fallback);
    assert_int_equal(rollback((void *)fault_fallback, why), 0);
    assert_int_equal(call_fallback(5), 7);
    assert_bytes((void *)fault_fallback, original);
    assert_not_writable((void *)fault_fallback);
    struct hp_arch_fault_counts counts;
    hp_arch_fault_counts(&counts);
    assert_int_equal(counts.pokes, 2);
    assert_int_equal(counts.mprotect_writes, 2);
    assert_true(counts.proc_mem_writes >= 2);
    hp_arch_inject_faults(NULL);
}

/* ---- a write that fails half-way --------------------------------------------------------------- */

/* /proc/self/mem lands 2 bytes of the jump and fails; the fallback is refused once; the previous
 * bytes go back through the fallback. */
static void test_half_write_restored_through_mprotect(void **state)
{
    (void)state;
    char why[HP_ERROR_MAX] = "";
    uint8_t original[SITE_BYTES];
    memcpy(original, (void *)fault_target, SITE_BYTES);
    inject(1, -1, 2, 1, 0);
    assert_int_not_equal(upgrade("fault_target", (void *)fault_target, (void *)fault_new, why), 0);
    assert_one_line(why);
    assert_non_null(strstr(why, "mprotect(RWX) failed"));
    assert_non_null(strstr(why, "the previous bytes are back, nothing changed"));
    assert_bytes((void *)fault_target, original);
    assert_int_equal(call_target(5), 6);
    assert_not_writable((void *)fault_target);
    struct hp_arch_fault_counts counts;
    hp_arch_fault_counts(&counts);
    assert_int_equal(counts.mprotect_writes, 2);   /* the refused write, then the restore */
    assert_false(hp_patch_find((void *)fault_target, NULL, NULL));

    /* Nothing is left behind that refuses the next write. */
    hp_arch_inject_faults(NULL);
    assert_int_equal(upgrade("fault_target", (void *)fault_target, (void *)fault_new, why), 0);
    assert_int_equal(call_target(5), 1005);
    assert_int_equal(rollback((void *)fault_target, why), 0);
    assert_bytes((void *)fault_target, original);
}

/* /proc/self/mem lands 3 bytes of the rollback's write and fails once; the fallback is refused
 * every time, so the previous bytes (the jump) go back through /proc/self/mem. */
static void test_half_write_restored_through_proc_mem(void **state)
{
    (void)state;
    char why[HP_ERROR_MAX] = "";
    uint8_t original[SITE_BYTES], patched[SITE_BYTES];
    memcpy(original, (void *)fault_target, SITE_BYTES);
    assert_int_equal(upgrade("fault_target", (void *)fault_target, (void *)fault_new, why), 0);
    memcpy(patched, (void *)fault_target, SITE_BYTES);
    inject(1, 1, 3, -1, 0);
    assert_int_not_equal(rollback((void *)fault_target, why), 0);
    assert_one_line(why);
    assert_non_null(strstr(why, "nothing changed"));
    assert_bytes((void *)fault_target, patched);
    assert_int_equal(call_target(5), 1005);        /* still the upgrade, whole */
    assert_not_writable((void *)fault_target);
    struct hp_arch_fault_counts counts;
    hp_arch_fault_counts(&counts);
    assert_int_equal(counts.proc_mem_writes, 2);   /* the short write, then the restore */

    hp_arch_inject_faults(NULL);
    assert_int_equal(rollback((void *)fault_target, why), 0);
    assert_bytes((void *)fault_target, original);
    assert_int_equal(call_target(5), 6);
}

/* Both methods keep failing: the bytes cannot be put back. The engine says the code is left
 * inconsistent, in one line, and never writes that function again. */
static void test_failed_restore_is_reported_and_fenced(void **state)
{
    (void)state;
    char why[HP_ERROR_MAX] = "";
    uint8_t original[SITE_BYTES];
    memcpy(original, (void *)fault_broken, SITE_BYTES);
    inject(1, -1, 2, -1, 0);
    assert_int_equal(upgrade("fault_broken", (void *)fault_broken, (void *)fault_new, why),
                     -ENOTRECOVERABLE);
    assert_one_line(why);
    assert_non_null(strstr(why, "left inconsistent and must not be run"));
    assert_memory_not_equal((void *)fault_broken, original, SITE_BYTES);   /* really half-done */
    assert_not_writable((void *)fault_broken);

    hp_arch_inject_faults(NULL);
    assert_int_equal(upgrade("fault_broken", (void *)fault_broken, (void *)fault_new, why),
                     -ENOTRECOVERABLE);
    assert_one_line(why);
    assert_non_null(strstr(why, "left inconsistent by a failed write earlier"));

    /* The test repairs its own function (the engine will not). */
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t first = (uintptr_t)fault_broken & ~(uintptr_t)(page - 1);
    uintptr_t last = ((uintptr_t)fault_broken + SITE_BYTES - 1) & ~(uintptr_t)(page - 1);
    size_t span = last + (size_t)page - first;
    assert_int_equal(mprotect((void *)first, span, PROT_READ | PROT_WRITE | PROT_EXEC), 0);
    memcpy((void *)fault_broken, original, SITE_BYTES);
    assert_int_equal(mprotect((void *)first, span, PROT_READ | PROT_EXEC), 0);
}

/* ---- the fallback's restore of the page protection ---------------------------------------------- */

static void test_reprotect_failure_is_retried(void **state)
{
    (void)state;
    char why[HP_ERROR_MAX] = "";
    inject(1, -1, 0, 0, 1);
    assert_int_equal(upgrade("fault_reprotect", (void *)fault_reprotect, (void *)fault_new, why),
                     0);
    assert_int_equal(call_reprotect(5), 1005);
    assert_not_writable((void *)fault_reprotect);
    struct hp_arch_fault_counts counts;
    hp_arch_fault_counts(&counts);
    assert_int_equal(counts.reprotects_failed, 1);
    hp_arch_inject_faults(NULL);
    assert_int_equal(rollback((void *)fault_reprotect, why), 0);
    assert_int_equal(call_reprotect(5), 8);
}

/* The kernel keeps refusing to give the page its protection back: the write is undone and the
 * error says the page stays writable; the next fallback write heals it. */
static void test_reprotect_keeps_failing(void **state)
{
    (void)state;
    char why[HP_ERROR_MAX] = "";
    uint8_t original[SITE_BYTES];
    memcpy(original, (void *)fault_reprotect, SITE_BYTES);
    inject(1, -1, 0, 0, -1);
    assert_int_not_equal(upgrade("fault_reprotect", (void *)fault_reprotect, (void *)fault_new,
                                 why), 0);
    assert_one_line(why);
    assert_non_null(strstr(why, "restoring the page's protection failed"));
    assert_non_null(strstr(why, "stays writable"));
    assert_non_null(strstr(why, "nothing changed"));
    assert_bytes((void *)fault_reprotect, original);
    assert_int_equal(call_reprotect(5), 8);
    char perms[5];
    permissions_of((void *)fault_reprotect, perms);
    assert_int_equal(perms[1], 'w');                    /* as the error says */

    inject(1, -1, 0, 0, 0);                             /* the fallback again, now working */
    assert_int_equal(upgrade("fault_reprotect", (void *)fault_reprotect, (void *)fault_new, why),
                     0);
    assert_int_equal(call_reprotect(5), 1005);
    assert_not_writable((void *)fault_reprotect);       /* its old protection, not rwx */
    assert_int_equal(rollback((void *)fault_reprotect, why), 0);
    assert_bytes((void *)fault_reprotect, original);
    assert_not_writable((void *)fault_reprotect);
    hp_arch_inject_faults(NULL);
}

/* ---- a batch failing part-way ------------------------------------------------------------------ */

static void batch_changes(struct hp_patch_change *changes)
{
    const char *names[3] = {"batch_a", "batch_b", "batch_c"};
    void *from[3] = {(void *)batch_a, (void *)batch_b, (void *)batch_c};
    void *to[3] = {(void *)batch_a2, (void *)batch_b2, (void *)batch_c2};
    const char *to_names[3] = {"batch_a2", "batch_b2", "batch_c2"};
    for (int i = 0; i < 3; i++) {
        changes[i].target = target_of(names[i], from[i]);
        changes[i].origin.library = "faults";
        changes[i].origin.symbol = to_names[i];
        changes[i].origin.address = to[i];
    }
}

static void assert_batch(const uint8_t bytes[3][SITE_BYTES], int added)
{
    for (int i = 0; i < 3; i++) {
        assert_memory_equal((void *)call_batch[i], bytes[i], SITE_BYTES);
        assert_int_equal(call_batch[i](0), 11 + i + added);
        assert_not_writable((void *)call_batch[i]);
    }
}

static void test_batch_failing_part_way_puts_every_site_back(void **state)
{
    (void)state;
    char why[HP_ERROR_MAX] = "";
    struct hp_patch_change changes[3];
    batch_changes(changes);
    void *entries[3] = {(void *)batch_a, (void *)batch_b, (void *)batch_c};
    const void *tops[3] = {(void *)batch_a2, (void *)batch_b2, (void *)batch_c2};
    const char *failing[4] = {NULL, NULL, "batch_b: ", "batch_c: "};
    uint8_t original[3][SITE_BYTES], patched[3][SITE_BYTES];
    for (int i = 0; i < 3; i++)
        memcpy(original[i], (void *)call_batch[i], SITE_BYTES);

    for (unsigned site = 2; site <= 3; site++) {
        /* The site-th write half-fails and its fallback is refused once; every write after
         * it (the restore, then undoing the earlier sites) fails through /proc/self/mem and
         * is done by the fallback. */
        inject(site, -1, 2, 1, 0);
        assert_int_not_equal(hp_patch_upgrade_all(changes, 3, why, sizeof why), 0);
        assert_one_line(why);
        assert_non_null(strstr(why, failing[site]));
        assert_non_null(strstr(why, "every function of the patch is back as it was"));
        assert_batch(original, 0);
        for (int i = 0; i < 3; i++)
            assert_false(hp_patch_find(entries[i], NULL, NULL));
        struct hp_arch_fault_counts counts;
        hp_arch_fault_counts(&counts);
        assert_int_equal(counts.pokes, 2 * site - 1);   /* site writes, site - 1 undone */
    }

    hp_arch_inject_faults(NULL);
    assert_int_equal(hp_patch_upgrade_all(changes, 3, why, sizeof why), 0);
    for (int i = 0; i < 3; i++)
        memcpy(patched[i], (void *)call_batch[i], SITE_BYTES);
    assert_batch(patched, 100);

    /* The revert failing in its third site leaves the whole upgrade in place. */
    inject(3, -1, 2, 1, 0);
    assert_int_not_equal(hp_patch_rollback_all(entries, tops, 3, why, sizeof why), 0);
    assert_one_line(why);
    assert_non_null(strstr(why, "batch_c: "));
    assert_batch(patched, 100);

    hp_arch_inject_faults(NULL);
    assert_int_equal(hp_patch_rollback_all(entries, tops, 3, why, sizeof why), 0);
    assert_batch(original, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fallback_writes_correctly),
        cmocka_unit_test(test_half_write_restored_through_mprotect),
        cmocka_unit_test(test_half_write_restored_through_proc_mem),
        cmocka_unit_test(test_failed_restore_is_reported_and_fenced),
        cmocka_unit_test(test_reprotect_failure_is_retried),
        cmocka_unit_test(test_reprotect_keeps_failing),
        cmocka_unit_test(test_batch_failing_part_way_puts_every_site_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
