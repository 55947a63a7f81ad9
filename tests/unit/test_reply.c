/* test_reply.c — the reply builder's plain and JSON renderings and its limits. */
#include "unit.h"

static char *render(struct hp_reply *r, bool json)
{
    size_t len;
    char *text = hp_reply_render(r, json, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

static void values_render_plain_and_typed_json(void **state)
{
    (void)state;
    struct hp_reply *r = hp_reply_new();
    hp_reply_value(r, "10", HP_JSON_NUMBER);
    char *plain = render(r, false), *json = render(r, true);
    assert_string_equal(plain, "10\n");
    assert_string_equal(json, "{\"ok\":true,\"value\":10,\"text\":\"10\\u000a\"}\n");
    free(plain);
    free(json);
    hp_reply_free(r);
}

static void lists_render_as_aligned_tables_and_item_arrays(void **state)
{
    (void)state;
    struct hp_reply *r = hp_reply_new();
    hp_reply_list(r, "nothing");
    hp_reply_item_begin(r);
    hp_reply_item_str(r, "name", "age");
    hp_reply_item_int(r, "value", 10);
    hp_reply_item_begin(r);
    hp_reply_item_str(r, "name", "user_name");
    hp_reply_item_str(r, "value", "tab\there");
    char *plain = render(r, false), *json = render(r, true);
    assert_string_equal(plain, "NAME       VALUE\n"
                               "age        10\n"
                               "user_name  tab here\n");
    assert_non_null(strstr(json, "\"items\":[{\"name\":\"age\",\"value\":10},"
                                 "{\"name\":\"user_name\",\"value\":\"tab\\u0009here\"}]"));
    free(plain);
    free(json);
    hp_reply_free(r);

    r = hp_reply_new();
    hp_reply_list(r, "nothing here");
    plain = render(r, false);
    json = render(r, true);
    assert_string_equal(plain, "nothing here\n");
    assert_non_null(strstr(json, "\"items\":[]"));
    free(plain);
    free(json);
    hp_reply_free(r);
}

static void first_error_wins_and_is_one_line(void **state)
{
    (void)state;
    struct hp_reply *r = hp_reply_new();
    hp_reply_error(r, "first\nproblem");
    hp_reply_error(r, "second");
    hp_reply_value(r, "ignored", HP_JSON_STRING);
    assert_false(hp_reply_ok(r));
    char *plain = render(r, false), *json = render(r, true);
    assert_string_equal(plain, "error: first problem\n");
    assert_string_equal(json, "{\"ok\":false,\"error\":\"first problem\","
                              "\"text\":\"error: first problem\\u000a\"}\n");
    free(plain);
    free(json);
    hp_reply_free(r);
}

static void json_strings_are_escaped_and_valid_utf8(void **state)
{
    (void)state;
    struct hp_reply *r = hp_reply_new();
    hp_reply_value(r, "q\"b\\s\x01 \xc3\xa9 bad\xff", HP_JSON_STRING);
    char *json = render(r, true);
    assert_non_null(strstr(json, "\"value\":\"q\\\"b\\\\s\\u0001 \xc3\xa9 bad\\ufffd\""));
    free(json);
    hp_reply_free(r);
}

static void oversized_replies_become_errors(void **state)
{
    (void)state;
    struct hp_reply *r = hp_reply_new();
    char chunk[4097];
    memset(chunk, 'x', sizeof chunk - 1);
    chunk[sizeof chunk - 1] = '\0';
    for (int i = 0; i < 400 && hp_reply_ok(r); i++) {
        hp_reply_item_begin(r);
        hp_reply_item_str(r, "blob", chunk);
    }
    assert_false(hp_reply_ok(r));
    char *plain = render(r, false);
    assert_non_null(strstr(plain, "error: reply would exceed 1048576 bytes"));
    free(plain);
    hp_reply_free(r);
}

static void messages_fields_and_plain_overrides(void **state)
{
    (void)state;
    struct hp_reply *r = hp_reply_new();
    hp_reply_field(r, "name", "age", HP_JSON_STRING);
    hp_reply_field(r, "list", "[1,2]", HP_JSON_RAW);
    hp_reply_message(r, "age = 2 (was 1)");
    char *plain = render(r, false), *json = render(r, true);
    assert_string_equal(plain, "age = 2 (was 1)\n");
    assert_string_equal(json, "{\"ok\":true,\"name\":\"age\",\"list\":[1,2],"
                              "\"message\":\"age = 2 (was 1)\",\"text\":\"age = 2 (was 1)\\u000a\"}\n");
    free(plain);
    free(json);
    hp_reply_plain(r, "line one\n");
    hp_reply_plain_append(r, "line two");
    plain = render(r, false);
    assert_string_equal(plain, "line one\nline two\n");
    free(plain);
    hp_reply_free(r);

    r = hp_reply_new();
    plain = render(r, false);
    assert_string_equal(plain, "ok\n");
    free(plain);
    hp_reply_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(values_render_plain_and_typed_json),
        cmocka_unit_test(lists_render_as_aligned_tables_and_item_arrays),
        cmocka_unit_test(first_error_wins_and_is_one_line),
        cmocka_unit_test(json_strings_are_escaped_and_valid_utf8),
        cmocka_unit_test(oversized_replies_become_errors),
        cmocka_unit_test(messages_fields_and_plain_overrides),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
