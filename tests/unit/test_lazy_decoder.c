/*
 * test_lazy_decoder.c — the x86-64 decoder (capstone) is not mapped until the first patch
 * needs it (issue 11, idle cost: mapped at start it added ~1.4 MiB of private memory to every
 * process with the agent).
 *
 * This program links libhotpatch.a and no capstone at all (which also proves the static
 * archive needs no -lcapstone). The check is exact: /proc/self/maps names libcapstone or
 * not. Before: the agent serves its socket and every command that needs no decoding runs
 * (symbol lookups, func list, a refused upgrade of data). After the first upgrade: it is
 * mapped.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "hotpatch.h"
#include "engine/engine.h"

__attribute__((noinline)) int lazy_target(int a)
{
    volatile int k = 1;
    return a + k;
}

__attribute__((noinline)) int lazy_repl(int a)
{
    volatile int k = 100;
    return a + k;
}

static int (*volatile call)(int) = lazy_target;
static const int not_code[16] = {1};

static bool capstone_mapped(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    assert_non_null(f);
    char line[4096];
    bool found = false;
    while (fgets(line, sizeof line, f))
        found |= strstr(line, "libcapstone") != NULL;
    fclose(f);
    return found;
}

static void ignore(const struct hp_patch_view *v, void *ctx)
{
    (void)v;
    (void)ctx;
}

static void test_decoder_is_loaded_on_first_patch(void **state)
{
    (void)state;
    char sock[64];
    snprintf(sock, sizeof sock, "/tmp/hp_lazy_%d.socket", (int)getpid());
    setenv("HOTPATCH_SOCKET", sock, 1);
    hotpatch_register_function("lazy_target", (void *)lazy_target);
    assert_int_equal(hotpatch_start(), 0);
    assert_false(capstone_mapped());

    char why[512] = "";
    struct hp_symbol sym;
    assert_int_equal(hp_symbol_resolve("lazy_target", NULL, &sym, why, sizeof why), 0);
    assert_int_equal(hp_symbol_resolve("libc.so.6:realpath", NULL, &sym, why, sizeof why), 0);
    hp_patch_each(ignore, NULL);
    struct hp_patch_target data = {"data", (void *)not_code, sizeof not_code};
    struct hp_patch_origin o = {"t", "lazy_repl", (void *)lazy_repl};
    assert_int_equal(hp_patch_upgrade(&data, &o, why, sizeof why), -EFAULT);
    assert_false(capstone_mapped());

    /* The agent's own thread blocks every signal (the engine runs on it when the socket asks),
     * so a write from this thread needs it gone. */
    hotpatch_stop();
    assert_false(capstone_mapped());
#if defined(__SANITIZE_THREAD__)
    skip();                     /* code writes need the thread stop, which TSan defers */
#endif
    assert_int_equal(hp_symbol_resolve("lazy_target", NULL, &sym, why, sizeof why), 0);
    struct hp_patch_target t = {"lazy_target", sym.address, sym.size};
    int rc = hp_patch_upgrade(&t, &o, why, sizeof why);
    if (rc != 0)
        print_message("refused: %s\n", why);
    assert_int_equal(rc, 0);
    assert_true(capstone_mapped());
    assert_int_equal(call(1), 101);
    char lib[64], s[64];
    int depth;
    assert_int_equal(hp_patch_rollback(NULL, sym.address, lib, sizeof lib, s, sizeof s, &depth,
                                       why, sizeof why), 0);
    assert_int_equal(call(1), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decoder_is_loaded_on_first_patch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
