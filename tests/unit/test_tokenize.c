/* test_tokenize.c — splitting request lines into words, with quotes and escapes. */
#include "unit.h"

static int split(const char *text, char **words, char *buf, char *why)
{
    strcpy(buf, text);
    return hp_tokenize(buf, words, HP_MAX_WORDS, why, HP_ERROR_MAX);
}

static void plain_words_split_on_spaces_and_tabs(void **state)
{
    (void)state;
    char buf[256], why[HP_ERROR_MAX], *w[HP_MAX_WORDS];
    assert_int_equal(split("  var \t get   age  ", w, buf, why), 3);
    assert_string_equal(w[0], "var");
    assert_string_equal(w[1], "get");
    assert_string_equal(w[2], "age");
    assert_int_equal(split("", w, buf, why), 0);
    assert_int_equal(split("   ", w, buf, why), 0);
}

static void quotes_group_words_and_escape(void **state)
{
    (void)state;
    char buf[256], why[HP_ERROR_MAX], *w[HP_MAX_WORDS];
    assert_int_equal(split("var set user_name \"Ada  Lovelace\"", w, buf, why), 4);
    assert_string_equal(w[3], "Ada  Lovelace");
    assert_int_equal(split("a 'it''s' \"say \\\"hi\\\" \\\\ \\n\"", w, buf, why), 3);
    assert_string_equal(w[1], "its");
    assert_string_equal(w[2], "say \"hi\" \\ \\n");
    assert_int_equal(split("x \"\" y", w, buf, why), 3);
    assert_string_equal(w[1], "");
    assert_int_equal(split("pre\"fix mid\"post", w, buf, why), 1);
    assert_string_equal(w[0], "prefix midpost");
}

static void unterminated_quote_is_refused(void **state)
{
    (void)state;
    char buf[256], why[HP_ERROR_MAX], *w[HP_MAX_WORDS];
    assert_int_equal(split("var set x \"open", w, buf, why), -1);
    assert_non_null(strstr(why, "unterminated \" quote"));
    assert_int_equal(split("x 'open", w, buf, why), -1);
    assert_non_null(strstr(why, "unterminated ' quote"));
}

static void too_many_words_is_refused(void **state)
{
    (void)state;
    char buf[256], why[HP_ERROR_MAX], *w[HP_MAX_WORDS];
    assert_int_equal(split("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16", w, buf, why), 16);
    assert_int_equal(split("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17", w, buf, why), -1);
    assert_non_null(strstr(why, "at most 16"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_words_split_on_spaces_and_tabs),
        cmocka_unit_test(quotes_group_words_and_escape),
        cmocka_unit_test(unterminated_quote_is_refused),
        cmocka_unit_test(too_many_words_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
