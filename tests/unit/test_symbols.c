/*
 * test_symbols.c — symbol resolution (engine/symbols.c, elf.c) for the forms that were refused
 * (issue 11, defect 9): versioned symbols, which glibc defines several times (`pthread_kill`,
 * `realpath`: "ambiguous" even as libc.so.6:pthread_kill), NAME@VERSION, and a full path as
 * OBJECT (/usr/lib/x86_64-linux-gnu/libc.so.6 for the libc the loader found under /lib).
 *
 * The C library's own versions are checked against dlvsym, the loader's answer; a small
 * library (reach/versioned.c) defines vfunc@HP_1 and vfunc@@HP_2, once with .symtab (versions
 * written into the names) and once stripped (versions only in .gnu.version).
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "engine/engine.h"

static char why[512];

static void *resolve(const char *func, int want_rc)
{
    struct hp_symbol sym;
    int rc = hp_symbol_resolve(func, NULL, &sym, why, sizeof why);
    if (rc != want_rc)
        print_message("%s: rc %d: %s\n", func, rc, why);
    assert_int_equal(rc, want_rc);
    return rc == 0 ? sym.address : NULL;
}

/* The C library itself: a sanitizer's runtime defines pthread_kill and realpath too (its
 * interceptors), which makes the unqualified names ambiguous there, rightly. */
static void *libc(void)
{
    void *h = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    assert_non_null(h);
    return h;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define INTERCEPTED 1
#else
#define INTERCEPTED 0
#endif

static void test_libc_versioned_symbols(void **state)
{
    (void)state;
    void *kill_default = dlsym(libc(), "pthread_kill");
    void *kill_old = dlvsym(libc(), "pthread_kill", "GLIBC_2.2.5");
    assert_non_null(kill_old);
    assert_ptr_not_equal(kill_default, kill_old);     /* two definitions in one object */
    assert_ptr_equal(resolve("libc.so.6:pthread_kill", 0), kill_default);
    if (!INTERCEPTED) {
        assert_ptr_equal(resolve("pthread_kill", 0), kill_default);
        assert_ptr_equal(resolve("pthread_kill@@GLIBC_2.34", 0), kill_default);
        assert_ptr_equal(resolve("realpath", 0), dlsym(libc(), "realpath"));
        assert_ptr_equal(resolve("realpath@GLIBC_2.2.5", 0),
                         dlvsym(libc(), "realpath", "GLIBC_2.2.5"));
    }
    assert_ptr_equal(resolve("libc.so.6:pthread_kill@@GLIBC_2.34", 0), kill_default);
    assert_ptr_equal(resolve("libc.so.6:realpath", 0), dlsym(libc(), "realpath"));
    assert_ptr_equal(resolve("libc.so.6:realpath@GLIBC_2.2.5", 0),
                     dlvsym(libc(), "realpath", "GLIBC_2.2.5"));
    resolve("libc.so.6:pthread_kill@@GLIBC_2.2.5", -ENOENT);   /* not the default one */
    resolve("libc.so.6:pthread_kill@GLIBC_9.9", -ENOENT);
    resolve("pthread_kill@", -EINVAL);
    resolve("@GLIBC_2.2.5", -EINVAL);
}

/* The C library by another path to the same file, and by its own. */
static void test_full_path_object(void **state)
{
    (void)state;
    Dl_info info;
    void *real = dlsym(libc(), "realpath");
    assert_true(dladdr(real, &info));
    char func[PATH_MAX + 32];
    snprintf(func, sizeof func, "%s:realpath", info.dli_fname);
    assert_ptr_equal(resolve(func, 0), real);
    const char *alternatives[] = {"/usr/lib/x86_64-linux-gnu/libc.so.6",
                                  "/lib/x86_64-linux-gnu/libc.so.6"};
    struct stat a, b;
    assert_int_equal(stat(info.dli_fname, &a), 0);
    for (size_t i = 0; i < 2; i++) {
        if (stat(alternatives[i], &b) != 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev)
            continue;
        snprintf(func, sizeof func, "%s:realpath", alternatives[i]);
        assert_ptr_equal(resolve(func, 0), real);
    }
    char resolved[PATH_MAX];
    assert_non_null(realpath(info.dli_fname, resolved));
    snprintf(func, sizeof func, "%s:pthread_kill", resolved);   /* libc.so.6 is a link? */
    assert_ptr_equal(resolve(func, 0), dlsym(libc(), "pthread_kill"));
    resolve("/nonexistent/libc.so.6:realpath", -ENOENT);
    assert_non_null(strstr(why, "no loaded object"));
}

static void check_versioned_library(const char *path, const char *object)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    assert_non_null(h);
    char func[256];
    int (*v1)(int) = (int (*)(int))dlvsym(h, "vfunc", "HP_1");
    int (*v2)(int) = (int (*)(int))dlvsym(h, "vfunc", "HP_2");
    assert_int_equal(v1(0), 1);
    assert_int_equal(v2(0), 2);
    snprintf(func, sizeof func, "%s:vfunc", object);
    assert_ptr_equal(resolve(func, 0), (void *)v2);
    snprintf(func, sizeof func, "%s:vfunc@HP_1", object);
    assert_ptr_equal(resolve(func, 0), (void *)v1);
    snprintf(func, sizeof func, "%s:vfunc@@HP_2", object);
    assert_ptr_equal(resolve(func, 0), (void *)v2);
    snprintf(func, sizeof func, "%s:vfunc@@HP_1", object);
    resolve(func, -ENOENT);
    dlclose(h);
}

static void test_versions_in_symtab_and_dynsym(void **state)
{
    (void)state;
    check_versioned_library(VERSIONED_LIB, "libhp_versioned.so");
    check_versioned_library(VERSIONED_STRIPPED_LIB, "libhp_versioned_stripped.so");
}

/* ---- variables (hp_symbol_resolve_data) ---------------------------------------------------- */

__attribute__((used)) static int unit_counter = 3;
__attribute__((used)) static const long unit_constant = 9;
__attribute__((used)) static __thread int unit_per_thread;
__attribute__((used)) static double unit_ratio;

static int resolve_data(const char *name, struct hp_symbol *sym)
{
    int rc = hp_symbol_resolve_data(name, NULL, sym, why, sizeof why);
    if (rc != 0)
        print_message("%s: rc %d: %s\n", name, rc, why);
    return rc;
}

static void test_static_variables(void **state)
{
    (void)state;
    struct hp_symbol sym;
    assert_int_equal(resolve_data("unit_counter", &sym), 0);
    assert_ptr_equal(sym.address, &unit_counter);
    assert_int_equal(sym.size, sizeof unit_counter);
    assert_false(sym.executable);
    assert_int_equal(resolve_data(":unit_ratio", &sym), 0);          /* "" the main program */
    assert_ptr_equal(sym.address, &unit_ratio);
    assert_int_equal(sym.size, sizeof(double));
    assert_int_equal(resolve_data("test_symbols:unit_constant", &sym), 0);
    assert_ptr_equal(sym.address, &unit_constant);
    int prot = hp_memory_protection((uintptr_t)sym.address, sym.size);
    assert_true(prot > 0 && !(prot & 2 /* PROT_WRITE */));
    prot = hp_memory_protection((uintptr_t)&unit_counter, sizeof unit_counter);
    assert_true(prot > 0 && (prot & 2));
    assert_int_equal(hp_memory_protection(0, 4), -1);
    /* The function resolver does not see variables, nor the variable one functions. */
    assert_int_equal(hp_symbol_resolve("unit_counter", NULL, &sym, why, sizeof why), -ENOENT);
    assert_int_equal(hp_symbol_resolve_data("test_static_variables", NULL, &sym, why,
                                            sizeof why), -EINVAL);
    assert_non_null(strstr(why, "is a function"));
    assert_int_equal(hp_symbol_resolve_data("unit_per_thread", NULL, &sym, why, sizeof why),
                     -EINVAL);
    assert_non_null(strstr(why, "thread-local"));
    assert_int_equal(hp_symbol_resolve_data("no_such_variable_anywhere", NULL, &sym, why,
                                            sizeof why), -ENOENT);
    assert_int_equal(hp_symbol_resolve_data(":", NULL, &sym, why, sizeof why), -EINVAL);
    /* A library's exported variable: the loader's own answer. */
    void *environ_address = dlsym(RTLD_DEFAULT, "environ");
    assert_int_equal(resolve_data("environ", &sym), 0);
    assert_ptr_equal(sym.address, environ_address);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_libc_versioned_symbols),
        cmocka_unit_test(test_full_path_object),
        cmocka_unit_test(test_versions_in_symtab_and_dynsym),
        cmocka_unit_test(test_static_variables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
