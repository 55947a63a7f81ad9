/* test_value.c — typed parsing, range checks, formatting, atomic access, text checks. */
#include <float.h>
#include <limits.h>

#include "unit.h"

static char why[HP_ERROR_MAX];

static int parse(enum hotpatch_type t, const char *text, union hp_scalar *v)
{
    why[0] = '\0';
    return hp_parse_scalar(t, text, v, why, sizeof why);
}

static void integers_parse_within_their_range(void **state)
{
    (void)state;
    union hp_scalar v;
    assert_int_equal(parse(HOTPATCH_TYPE_INT, "42", &v), 0);
    assert_int_equal(v.i, 42);
    assert_int_equal(parse(HOTPATCH_TYPE_INT, "-2147483648", &v), 0);
    assert_int_equal(v.i, INT_MIN);
    assert_int_equal(parse(HOTPATCH_TYPE_INT, "0x10", &v), 0);
    assert_int_equal(v.i, 16);
    assert_int_equal(parse(HOTPATCH_TYPE_INT, "+7", &v), 0);
    assert_int_equal(v.i, 7);
    /* A leading zero is decimal, as documented: never octal. */
    assert_int_equal(parse(HOTPATCH_TYPE_INT, "010", &v), 0);
    assert_int_equal(v.i, 10);
    assert_int_equal(parse(HOTPATCH_TYPE_INT, "-09", &v), 0);
    assert_int_equal(v.i, -9);
    assert_int_equal(parse(HOTPATCH_TYPE_UINT, "0777", &v), 0);
    assert_int_equal(v.u, 777);
    assert_int_equal(parse(HOTPATCH_TYPE_INT, "-0x10", &v), 0);
    assert_int_equal(v.i, -16);
    assert_int_equal(parse(HOTPATCH_TYPE_INT, "2147483648", &v), -1);
    assert_non_null(strstr(why, "out of range for int: expected -2147483648 to 2147483647"));
    assert_int_equal(parse(HOTPATCH_TYPE_ULLONG, "18446744073709551615", &v), 0);
    assert_true(v.ull == ULLONG_MAX);
    assert_int_equal(parse(HOTPATCH_TYPE_ULLONG, "18446744073709551616", &v), -1);
    assert_int_equal(parse(HOTPATCH_TYPE_LLONG, "9223372036854775808", &v), -1);
}

static void small_integers_have_the_range_of_their_width(void **state)
{
    (void)state;
    union hp_scalar v;
    assert_int_equal(parse(HOTPATCH_TYPE_SCHAR, "-128", &v), 0);
    assert_int_equal(v.sc, -128);
    assert_int_equal(parse(HOTPATCH_TYPE_SCHAR, "128", &v), -1);
    assert_non_null(strstr(why, "out of range for schar: expected -128 to 127"));
    assert_int_equal(parse(HOTPATCH_TYPE_UCHAR, "0xff", &v), 0);
    assert_int_equal(v.uc, 255);
    assert_int_equal(parse(HOTPATCH_TYPE_UCHAR, "256", &v), -1);
    assert_int_equal(parse(HOTPATCH_TYPE_UCHAR, "-1", &v), -1);
    assert_non_null(strstr(why, "out of range for uchar: expected 0 to 255"));
    assert_int_equal(parse(HOTPATCH_TYPE_SHORT, "-32768", &v), 0);
    assert_int_equal(v.s, SHRT_MIN);
    assert_int_equal(parse(HOTPATCH_TYPE_SHORT, "32768", &v), -1);
    assert_int_equal(parse(HOTPATCH_TYPE_USHORT, "65535", &v), 0);
    assert_int_equal(v.us, USHRT_MAX);
    assert_int_equal(parse(HOTPATCH_TYPE_USHORT, "65536", &v), -1);
    assert_non_null(strstr(why, "out of range for ushort: expected 0 to 65535"));
    char buf[32];
    v.sc = -5;
    hp_format_scalar(HOTPATCH_TYPE_SCHAR, &v, buf, sizeof buf);
    assert_string_equal(buf, "-5");
    v.us = 65000;
    hp_format_scalar(HOTPATCH_TYPE_USHORT, &v, buf, sizeof buf);
    assert_string_equal(buf, "65000");
}

static void malformed_integers_are_refused_with_the_accepted_form(void **state)
{
    (void)state;
    union hp_scalar v;
    const char *bad[] = {"", "abc", "12abc", " 12", "12 ", "1.5", "0x", "--1", "1e3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(parse(HOTPATCH_TYPE_INT, bad[i], &v), -1);
        assert_non_null(strstr(why, "is not a valid int: expected a whole number"));
    }
    assert_int_equal(parse(HOTPATCH_TYPE_UINT, "-1", &v), -1);
    assert_non_null(strstr(why, "out of range for uint: expected 0 to 4294967295"));
    assert_int_equal(parse(HOTPATCH_TYPE_UINT, "-x", &v), -1);
}

static void floats_must_be_finite_and_in_range(void **state)
{
    (void)state;
    union hp_scalar v;
    assert_int_equal(parse(HOTPATCH_TYPE_DOUBLE, "2.5e-3", &v), 0);
    assert_true(v.d == 2.5e-3);
    assert_int_equal(parse(HOTPATCH_TYPE_FLOAT, "1e39", &v), -1);
    assert_non_null(strstr(why, "out of range for float"));
    assert_int_equal(parse(HOTPATCH_TYPE_DOUBLE, "1e309", &v), -1);
    assert_int_equal(parse(HOTPATCH_TYPE_DOUBLE, "nan", &v), -1);
    assert_int_equal(parse(HOTPATCH_TYPE_DOUBLE, "inf", &v), -1);
    assert_int_equal(parse(HOTPATCH_TYPE_DOUBLE, "1.5x", &v), -1);
    assert_non_null(strstr(why, "is not a valid double"));
    assert_int_equal(parse(HOTPATCH_TYPE_DOUBLE, " 1", &v), -1);
    /* A nonzero value the type cannot hold is refused, not stored as 0. */
    assert_int_equal(parse(HOTPATCH_TYPE_FLOAT, "1e-50", &v), -1);
    assert_non_null(strstr(why, "1e-50 is too small for float"));
    assert_int_equal(parse(HOTPATCH_TYPE_DOUBLE, "1e-400", &v), -1);
    assert_int_equal(parse(HOTPATCH_TYPE_FLOAT, "1e-40", &v), 0);      /* subnormal: kept */
    assert_true(v.f > 0.0f);
    assert_int_equal(parse(HOTPATCH_TYPE_FLOAT, "0.0e5", &v), 0);
    assert_int_equal(parse(HOTPATCH_TYPE_DOUBLE, "-0", &v), 0);
    assert_int_equal(parse(HOTPATCH_TYPE_FLOAT, "0x0", &v), 0);          /* a zero in hex */
    assert_int_equal(parse(HOTPATCH_TYPE_FLOAT, "0x1p-200", &v), -1);    /* not a zero */
}

static void bools_accept_the_usual_words(void **state)
{
    (void)state;
    union hp_scalar v;
    const char *yes[] = {"true", "TRUE", "1", "yes", "on"};
    const char *no[] = {"false", "0", "No", "off"};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(parse(HOTPATCH_TYPE_BOOL, yes[i], &v), 0);
        assert_true(v.b);
    }
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(parse(HOTPATCH_TYPE_BOOL, no[i], &v), 0);
        assert_false(v.b);
    }
    assert_int_equal(parse(HOTPATCH_TYPE_BOOL, "maybe", &v), -1);
    assert_non_null(strstr(why, "expected true, false, 1, 0, yes, no, on or off"));
}

static void floating_values_format_to_the_shortest_exact_text(void **state)
{
    (void)state;
    char buf[64];
    union hp_scalar v = {.d = 0.1};
    hp_format_scalar(HOTPATCH_TYPE_DOUBLE, &v, buf, sizeof buf);
    assert_string_equal(buf, "0.1");
    v.d = 1.0 / 3.0;
    hp_format_scalar(HOTPATCH_TYPE_DOUBLE, &v, buf, sizeof buf);
    assert_true(strtod(buf, NULL) == 1.0 / 3.0);
    v.f = 0.1f;
    hp_format_scalar(HOTPATCH_TYPE_FLOAT, &v, buf, sizeof buf);
    assert_string_equal(buf, "0.1");
    v.b = true;
    hp_format_scalar(HOTPATCH_TYPE_BOOL, &v, buf, sizeof buf);
    assert_string_equal(buf, "true");
}

static void loads_and_stores_use_the_type_width(void **state)
{
    (void)state;
    struct {
        int32_t guard_before;
        int value;
        int32_t guard_after;
    } mem = {-1, 5, -1};
    union hp_scalar v = {.i = 77};
    hp_store_scalar(HOTPATCH_TYPE_INT, &mem.value, &v);
    assert_int_equal(mem.value, 77);
    assert_int_equal(mem.guard_before, -1);
    assert_int_equal(mem.guard_after, -1);
    union hp_scalar back;
    hp_load_scalar(HOTPATCH_TYPE_INT, &mem.value, &back);
    assert_int_equal(back.i, 77);
    bool flag = false;
    v.b = true;
    hp_store_scalar(HOTPATCH_TYPE_BOOL, &flag, &v);
    assert_true(flag);
    /* 1 and 2 bytes: the neighbours of the value keep their bytes. */
    unsigned char bytes[6] = {0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa};
    union hp_scalar small = {.s = -2};
    hp_store_scalar(HOTPATCH_TYPE_SHORT, &bytes[2], &small);
    assert_int_equal(bytes[1], 0xaa);
    assert_int_equal(bytes[4], 0xaa);
    hp_load_scalar(HOTPATCH_TYPE_SHORT, &bytes[2], &back);
    assert_int_equal(back.s, -2);
    small.uc = 7;
    hp_store_scalar(HOTPATCH_TYPE_UCHAR, &bytes[5], &small);
    assert_int_equal(bytes[5], 7);
    assert_int_equal(bytes[3], 0xff);
    hp_load_scalar(HOTPATCH_TYPE_SCHAR, &bytes[2], &back);
    assert_int_equal(back.sc, -2);
    hp_load_scalar(HOTPATCH_TYPE_UCHAR, &bytes[5], &back);
    assert_int_equal(back.uc, 7);
}

static void type_names_and_aliases(void **state)
{
    (void)state;
    assert_int_equal(hp_type_from_name("int"), HOTPATCH_TYPE_INT);
    assert_int_equal(hp_type_from_name("unsigned"), HOTPATCH_TYPE_UINT);
    assert_int_equal(hp_type_from_name("int64"), HOTPATCH_TYPE_LLONG);
    assert_int_equal(hp_type_from_name("string"), HOTPATCH_TYPE_STRING);
    assert_int_equal(hp_type_from_name("integer"), 0);
    assert_int_equal(hp_type_from_name("uint16"), HOTPATCH_TYPE_USHORT);
    assert_int_equal(hp_type_from_name("int8"), HOTPATCH_TYPE_SCHAR);
    assert_int_equal(hp_type_size(HOTPATCH_TYPE_SHORT), 2);
    assert_int_equal(hp_type_size(HOTPATCH_TYPE_UCHAR), 1);
    assert_string_equal(hp_type_name(HOTPATCH_TYPE_ULLONG), "ullong");
}

static void utf8_and_names_are_checked(void **state)
{
    (void)state;
    size_t bad = 0;
    assert_true(hp_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15, &bad));
    assert_false(hp_utf8_valid("ab\xff", 3, &bad));
    assert_int_equal(bad, 2);
    assert_false(hp_utf8_valid("\xc0\xaf", 2, &bad));      /* overlong '/' */
    assert_false(hp_utf8_valid("\xed\xa0\x80", 3, &bad));  /* surrogate */
    assert_false(hp_utf8_valid("x\xe2\x82", 3, &bad));     /* truncated */
    assert_int_equal(bad, 1);
    assert_true(hp_name_valid("user_name"));
    assert_true(hp_name_valid("ns:sub.name-2"));
    assert_false(hp_name_valid(""));
    assert_false(hp_name_valid("has space"));
    char long_name[HP_NAME_MAX + 2];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_false(hp_name_valid(long_name));
    long_name[HP_NAME_MAX] = '\0';
    assert_true(hp_name_valid(long_name));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(integers_parse_within_their_range),
        cmocka_unit_test(small_integers_have_the_range_of_their_width),
        cmocka_unit_test(malformed_integers_are_refused_with_the_accepted_form),
        cmocka_unit_test(floats_must_be_finite_and_in_range),
        cmocka_unit_test(bools_accept_the_usual_words),
        cmocka_unit_test(floating_values_format_to_the_shortest_exact_text),
        cmocka_unit_test(loads_and_stores_use_the_type_width),
        cmocka_unit_test(type_names_and_aliases),
        cmocka_unit_test(utf8_and_names_are_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
