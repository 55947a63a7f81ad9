/* test_registry.c — registration rules, typed get/set, validators, callbacks, strings. */
#include <errno.h>

#include "unit.h"

static char old_v[HP_LINE_MAX], new_v[HP_LINE_MAX], why[HP_ERROR_MAX];
static enum hotpatch_type type;

static int set(const char *name, enum hotpatch_type want, const char *text)
{
    why[0] = '\0';
    return hp_registry_set_variable(name, want, text, &type, old_v, new_v, sizeof old_v, why,
                                    sizeof why);
}

static void registration_checks_names_pointers_and_duplicates(void **state)
{
    (void)state;
    static int a;
    static long b;
    assert_int_equal(hotpatch_register_variable("reg_a", &a), 0);
    assert_int_equal(hotpatch_register_variable("reg_a", &b), -EEXIST);
    assert_int_equal(hotpatch_register_variable("bad name", &a), -EINVAL);
    assert_int_equal(hotpatch_register_typed("reg_null", HOTPATCH_TYPE_INT, NULL, NULL, NULL, NULL),
                     -EINVAL);
    char bytes[16] __attribute__((aligned(8)));
    assert_int_equal(hotpatch_register_typed("reg_misaligned", HOTPATCH_TYPE_INT, bytes + 1, NULL,
                                             NULL, NULL), -EINVAL);
    assert_int_equal(hotpatch_register_typed("reg_str_as_typed", HOTPATCH_TYPE_STRING, bytes,
                                             NULL, NULL, NULL), -EINVAL);
    assert_int_equal(hotpatch_unregister("reg_a"), 0);
    assert_int_equal(hotpatch_unregister("reg_a"), -ENOENT);
}

static void set_parses_checks_type_and_stores(void **state)
{
    (void)state;
    static int age = 10;
    static double ratio = 0.5;
    assert_int_equal(hotpatch_register_variable("age", &age), 0);
    assert_int_equal(hotpatch_register_variable("ratio", &ratio), 0);
    assert_int_equal(set("age", 0, "42"), 0);
    assert_int_equal(age, 42);
    assert_int_equal(type, HOTPATCH_TYPE_INT);
    assert_string_equal(old_v, "10");
    assert_string_equal(new_v, "42");
    assert_int_equal(set("age", HOTPATCH_TYPE_INT, "43"), 0);
    assert_int_equal(age, 43);

    assert_int_equal(set("age", HOTPATCH_TYPE_STRING, "x"), -EPROTOTYPE);
    assert_string_equal(why, "variable 'age' has type int, not string");
    assert_int_equal(set("age", 0, "99999999999"), -EINVAL);
    assert_int_equal(age, 43);
    assert_int_equal(set("nope", 0, "1"), -ENOENT);
    assert_non_null(strstr(why, "no variable named 'nope'"));

    assert_int_equal(set("ratio", 0, "1e-3"), 0);
    assert_true(ratio == 1e-3);

    struct hp_variable_view view;
    assert_int_equal(hp_registry_get_variable("age", 0, &view), 0);
    assert_string_equal(view.value, "43");
    assert_int_equal(hp_registry_get_variable("age", HOTPATCH_TYPE_DOUBLE, &view), -EPROTOTYPE);
    assert_int_equal(view.type, HOTPATCH_TYPE_INT);
}

static void small_integers_register_by_their_pointer_type(void **state)
{
    (void)state;
    static short port_offset = 3;
    static unsigned short window = 100;
    static signed char bias = -1;
    static unsigned char level = 2;
    struct { unsigned char before; unsigned short value; unsigned char after; } guarded = {9, 1, 9};
    assert_int_equal(hotpatch_register_variable("port_offset", &port_offset), 0);
    assert_int_equal(hotpatch_register_variable("window", &window), 0);
    assert_int_equal(hotpatch_register_variable("bias", &bias), 0);
    assert_int_equal(hotpatch_register_variable("level", &level), 0);
    assert_int_equal(set("port_offset", 0, "-300"), 0);
    assert_int_equal(type, HOTPATCH_TYPE_SHORT);
    assert_int_equal(port_offset, -300);
    assert_int_equal(set("window", 0, "65535"), 0);
    assert_int_equal(type, HOTPATCH_TYPE_USHORT);
    assert_int_equal(window, 65535);
    assert_int_equal(set("window", 0, "65536"), -EINVAL);
    assert_int_equal(window, 65535);
    assert_int_equal(set("bias", HOTPATCH_TYPE_SCHAR, "-128"), 0);
    assert_int_equal(bias, -128);
    assert_int_equal(set("level", 0, "255"), 0);
    assert_int_equal(type, HOTPATCH_TYPE_UCHAR);
    assert_string_equal(old_v, "2");
    assert_int_equal(level, 255);
    /* A misaligned 2-byte object cannot be stored in one access: refused. */
    assert_int_equal(hotpatch_register_typed("misaligned", HOTPATCH_TYPE_USHORT,
                                             (char *)&guarded.value + 1, NULL, NULL, NULL),
                     -EINVAL);
}

static int below_150(const char *name, const void *value, char *reason, size_t cap, void *user)
{
    (void)name;
    (void)user;
    if (*(const int *)value < 150)
        return 0;
    snprintf(reason, cap, "age must be below 150");
    return 1;
}

static int changes;
static int last_old, last_new;
static void count_change(const char *name, const void *old, const void *fresh, void *user)
{
    (void)name;
    (void)user;
    changes++;
    last_old = *(const int *)old;
    last_new = *(const int *)fresh;
}

static void validators_refuse_and_callbacks_observe(void **state)
{
    (void)state;
    static int limited = 5;
    assert_int_equal(hotpatch_register_variable_checked("limited", &limited, below_150,
                                                        count_change, NULL), 0);
    assert_int_equal(set("limited", 0, "200"), -EPERM);
    assert_string_equal(why, "age must be below 150");
    assert_int_equal(limited, 5);
    assert_int_equal(changes, 0);
    assert_int_equal(set("limited", 0, "149"), 0);
    assert_int_equal(limited, 149);
    assert_int_equal(changes, 1);
    assert_int_equal(last_old, 5);
    assert_int_equal(last_new, 149);
}

static void strings_respect_capacity(void **state)
{
    (void)state;
    static char name[8] = "abc";
    assert_int_equal(hotpatch_register_string("short_name", name, sizeof name), 0);
    assert_int_equal(set("short_name", HOTPATCH_TYPE_STRING, "1234567"), 0);
    assert_string_equal(name, "1234567");
    assert_int_equal(set("short_name", 0, "12345678"), -ERANGE);
    assert_string_equal(why, "value is 8 bytes; short_name holds at most 7");
    assert_string_equal(name, "1234567");
    assert_int_equal(set("short_name", 0, ""), 0);
    assert_string_equal(name, "");

    char copy[4];
    assert_int_equal(set("short_name", 0, "hello"), 0);
    assert_int_equal(hotpatch_get_string("short_name", copy, sizeof copy), -ENAMETOOLONG);
    assert_string_equal(copy, "hel");
    char full[16];
    assert_int_equal(hotpatch_get_string("short_name", full, sizeof full), 5);
    assert_int_equal(hotpatch_get_string("age", full, sizeof full), -ENOENT);
}

static char accessor_value[32] = "initial";
static int accessor_get(void *user, char *out, size_t cap)
{
    (void)user;
    return snprintf(out, cap, "%s", accessor_value);
}
static int accessor_set(void *user, const char *value, char *why_out, size_t cap)
{
    (void)user;
    if (strchr(value, '!')) {
        snprintf(why_out, cap, "no exclamation marks");
        return 1;
    }
    snprintf(accessor_value, sizeof accessor_value, "%s", value);
    return 0;
}

static void custom_accessors_get_and_set(void **state)
{
    (void)state;
    struct hotpatch_string_accessor acc = {accessor_get, accessor_set, NULL};
    assert_int_equal(hotpatch_register_string_accessor("custom", &acc), 0);
    assert_int_equal(set("custom", 0, "changed"), 0);
    assert_string_equal(accessor_value, "changed");
    assert_string_equal(old_v, "initial");
    assert_string_equal(new_v, "changed");
    assert_int_equal(set("custom", 0, "wow!"), -EPERM);
    assert_string_equal(why, "no exclamation marks");
    assert_string_equal(accessor_value, "changed");
}

struct collected {
    char names[16][HP_NAME_MAX + 1];
    int count;
};
static void collect(const struct hp_variable_view *v, void *ctx)
{
    struct collected *c = ctx;
    if (c->count < 16)
        strcpy(c->names[c->count++], v->name);
}

static void listing_is_sorted_by_name(void **state)
{
    (void)state;
    struct collected c = {0};
    hp_registry_each_variable(collect, &c);
    assert_true(c.count >= 5);
    for (int i = 1; i < c.count; i++)
        assert_true(strcmp(c.names[i - 1], c.names[i]) < 0);
}

static void functions_and_libraries(void **state)
{
    (void)state;
    assert_int_equal(hotpatch_register_function("fn", (void *)listing_is_sorted_by_name), 0);
    assert_int_equal(hotpatch_register_function("fn", (void *)collect), -EEXIST);
    assert_ptr_equal(hp_registry_find_function("fn"), (void *)listing_is_sorted_by_name);
    assert_null(hp_registry_find_function("missing"));
    assert_int_equal(hp_registry_add_library("lib1", "/x/lib1.so", (void *)1, 0x1000, NULL), 0);
    assert_int_equal(hp_registry_add_library("lib1", "/y.so", (void *)2, 0, NULL), -EEXIST);
    struct hp_library_view view;
    assert_int_equal(hp_registry_find_library("lib1", &view), 0);
    assert_string_equal(view.path, "/x/lib1.so");
    void *handle = NULL;
    assert_int_equal(hp_registry_remove_library("lib1", &handle, NULL), 0);
    assert_ptr_equal(handle, (void *)1);
    assert_int_equal(hp_registry_find_library("lib1", &view), -ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(registration_checks_names_pointers_and_duplicates),
        cmocka_unit_test(set_parses_checks_type_and_stores),
        cmocka_unit_test(small_integers_register_by_their_pointer_type),
        cmocka_unit_test(validators_refuse_and_callbacks_observe),
        cmocka_unit_test(strings_respect_capacity),
        cmocka_unit_test(custom_accessors_get_and_set),
        cmocka_unit_test(listing_is_sorted_by_name),
        cmocka_unit_test(functions_and_libraries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
