/*
 * test_maps.c — the maps reader (engine/maps.c) on a process whose /proc/self/maps is far over
 * 1 MiB, the size at which every function used to be "not mapped" (issue 11, defect 9).
 *
 * A process of its own: it makes tens of thousands of small mappings whose protections
 * alternate (so the kernel cannot merge them), maps a file whose path is longer than the
 * reader's chunk, and then checks every way of reading the map against a plain read of the
 * file, and that a function is still patched and rolled back (the engine checks the
 * protection of the code and scans the stacks of stopped threads with the maps reader).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "engine/engine.h"
#include "engine/maps.h"

#define NOINLINE __attribute__((noinline))

NOINLINE int maps_target(int a, int b)
{
    volatile int bias = 0;
    return a + b + bias;
}

NOINLINE int maps_repl(int a, int b)
{
    volatile int bias = 100;
    return a + b + bias;
}

static int (*volatile call_target)(int, int) = maps_target;

/* The whole of /proc/self/maps read with the C library, for comparison. */
static char *read_all(size_t *len)
{
    int fd = open("/proc/self/maps", O_RDONLY);
    assert_true(fd >= 0);
    size_t cap = 1 << 20, used = 0;
    char *buf = malloc(cap);
    ssize_t n;
    while ((n = read(fd, buf + used, cap - used - 1)) > 0) {
        used += (size_t)n;
        if (cap - used < 4096)
            buf = realloc(buf, cap *= 2);
    }
    close(fd);
    buf[used] = '\0';
    *len = used;
    return buf;
}

static size_t count_lines(const char *text)
{
    size_t n = 0;
    for (const char *p = text; *p; p++)
        n += *p == '\n';
    return n;
}

/* Maps pages with alternating protections until the map is bigger than `bytes`. */
static void grow_maps(size_t bytes)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t len;
    free(read_all(&len));
    const size_t batch = 2048;
    while (len < bytes) {
        /* One reservation, then alternate protections page by page: never merged. */
        uint8_t *area = mmap(NULL, batch * (size_t)page, PROT_READ,
                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        assert_true(area != MAP_FAILED);
        for (size_t i = 1; i < batch; i += 2)
            assert_int_equal(mprotect(area + i * (size_t)page, (size_t)page,
                                      PROT_READ | PROT_WRITE), 0);
        free(read_all(&len));
    }
}

/* A file whose path is longer than the reader's 4 KiB chunk, mapped read-only. */
static char long_dir[4200];

static void map_long_path_file(void)
{
    snprintf(long_dir, sizeof long_dir, "/tmp/hp_maps_%d", (int)getpid());
    assert_int_equal(mkdir(long_dir, 0700), 0);
    char component[201];
    memset(component, 'd', 200);
    component[200] = '\0';
    while (strlen(long_dir) < 4000) {
        strcat(long_dir, "/");
        strcat(long_dir, component);
        assert_int_equal(mkdir(long_dir, 0700), 0);
    }
    char file[4300];
    snprintf(file, sizeof file, "%s/f", long_dir);
    int fd = open(file, O_RDWR | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 4096), 0);
    assert_true(mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0) != MAP_FAILED);
    close(fd);
    unlink(file);
    /* Leave the directories: rmdir of each level is not worth it; they are tiny. */
    for (char *slash; (slash = strrchr(long_dir, '/')) && strlen(long_dir) > 20; *slash = '\0')
        rmdir(long_dir);
    rmdir(long_dir);
}

static int count_visit(void *ctx, const struct hp_mapping *m)
{
    size_t *n = ctx;
    (*n)++;
    assert_true(m->end > m->start);
    return 0;
}

static void test_maps_over_a_mebibyte(void **state)
{
    (void)state;
    map_long_path_file();
    grow_maps(3u << 19);
    size_t len;
    char *plain = read_all(&len);
    print_message("/proc/self/maps: %zu bytes, %zu mappings\n", len, count_lines(plain));
    assert_true(len > (5u << 18));

    /* The protection of code, data and the last mapping. */
    assert_true(hp_maps_protection((uintptr_t)maps_target) & PROT_EXEC);
    int local = 0;
    struct hp_mapping m;
    assert_true(hp_maps_lookup((uintptr_t)&local, &m));
    assert_true(m.prot & PROT_WRITE);
    assert_true(hp_maps_lookup((uintptr_t)maps_target, &m));
    assert_true(m.inode != 0);        /* the executable's file */

    /* Streaming and whole text both see every line. */
    size_t n = 0;
    assert_int_equal(hp_maps_each(count_visit, &n), 0);
    size_t lines = count_lines(plain);
    /* The map may change by a line or two between the reads (the allocator of read_all). */
    assert_true(n + 4 >= lines && n <= lines + 4);
    const char *text = hp_maps_text();
    assert_non_null(text);
    assert_true(strlen(text) + 4096 >= len);
    assert_true(hp_maps_find(text, (uintptr_t)maps_target, &m));
    assert_true(m.prot & PROT_EXEC);
    free(plain);
}

static volatile int caller_stop;
static void *caller_main(void *arg)
{
    (void)arg;
    while (!caller_stop) {
        int r = call_target(1, 2);
        assert_true(r == 3 || r == 103);
    }
    return NULL;
}

/* The engine works in such a process: protection checks, stack scans of stopped threads. */
static void test_patch_with_a_huge_map(void **state)
{
    (void)state;
#if defined(__SANITIZE_THREAD__)
    skip();   /* TSan defers the stop signal: code writes are refused there (see test_patch.c) */
#endif
    pthread_t t;
    pthread_create(&t, NULL, caller_main, NULL);
    struct hp_symbol sym = {.address = (void *)maps_target};
    hp_symbol_describe(&sym);
    assert_true(sym.executable);
    struct hp_patch_target tg = {"maps_target", (void *)maps_target, sym.size};
    struct hp_patch_origin o = {"t", "maps_repl", (void *)maps_repl};
    char why[256] = "";
    int rc = hp_patch_upgrade(&tg, &o, why, sizeof why);
    if (rc != 0)
        print_message("refused: %s\n", why);
    assert_int_equal(rc, 0);
    assert_int_equal(call_target(1, 2), 103);
    char lib[64], s[64];
    int depth;
    assert_int_equal(hp_patch_rollback(NULL, (void *)maps_target, lib, sizeof lib, s, sizeof s,
                                       &depth, why, sizeof why), 0);
    assert_int_equal(call_target(1, 2), 3);
    caller_stop = 1;
    pthread_join(t, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_maps_over_a_mebibyte),
        cmocka_unit_test(test_patch_with_a_huge_map),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
