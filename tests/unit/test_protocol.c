/* test_protocol.c — from raw request bytes to replies: checks, dispatch, argument counts. */
#include "unit.h"

static int age = 10;

struct outcome {
    char *text;
    bool json;
    enum hp_after after;
};

static struct outcome handle(const char *line, size_t len, bool in_session)
{
    struct hp_reply *r = hp_reply_new();
    struct outcome o = {0};
    hp_handle_line(line, len, NULL, in_session, r, &o.json, &o.after);
    size_t n;
    o.text = hp_reply_render(r, o.json, &n);
    hp_reply_free(r);
    return o;
}

static void expect(const char *line, const char *want_prefix)
{
    struct outcome o = handle(line, strlen(line), false);
    if (strncmp(o.text, want_prefix, strlen(want_prefix)) != 0)
        fail_msg("request '%s': got '%s', want prefix '%s'", line, o.text, want_prefix);
    free(o.text);
}

/* Globals nobody registered, reached by symbol (var.c, engine/symbols.c). */
__attribute__((used)) static long unit_total = 5;
__attribute__((used)) static const int unit_limit = 3;
__attribute__((used)) static bool unit_flag;

static void globals_are_reached_by_symbol(void **state)
{
    (void)state;
    expect("var get long unit_total", "5\n");
    expect("var set long test_protocol:unit_total 6", "test_protocol:unit_total = 6 (was 5)\n");
    assert_int_equal(__atomic_load_n(&unit_total, __ATOMIC_RELAXED), 6);
    expect("var set bool :unit_flag yes", ":unit_flag = true (was false)\n");
    assert_true(unit_flag);
    expect("var get int unit_limit", "3\n");
    expect("var set int unit_limit 4", "error: unit_limit at 0x");
    assert_int_equal(*(volatile const int *)&unit_limit, 3);
    expect("var get int unit_total", "error: unit_total is 8 bytes (its st_size), but int is 4; "
                                     "types of that size: long, ulong, llong, ullong, double\n");
    expect("var get unit_total", "error: no variable named 'unit_total' (see 'var list'); a "
                                 "global nobody registered is reached by symbol with its type: "
                                 "var get TYPE SYMBOL\n");
    expect("var get long no_such_unit_global", "error: unknown variable no_such_unit_global");
    expect("var get long globals_are_reached_by_symbol", "error: globals_are_reached_by_symbol "
                                                         "is a function, not a variable");
}

static int setup(void **state)
{
    (void)state;
    return hotpatch_register_variable("age", &age);
}

static void commands_dispatch_to_their_handlers(void **state)
{
    (void)state;
    expect("var get age", "10\n");
    expect("var get int age", "10\n");
    expect("  var   get  age\r", "10\n");
    expect("var set age 11", "age = 11 (was 10)\n");
    expect("help", "hotpatch ");
    expect("help var", "hotpatch ");
    expect("version", "hotpatch 0.2.0 protocol 1\ncapabilities: var, lib, func, patch, gflags, glog, json, session");
}

static void refusals_name_what_was_wrong(void **state)
{
    (void)state;
    expect("", "error: empty request; send 'help' for the commands\n");
    expect("frobnicate", "error: unknown command 'frobnicate'; commands: help, version, session");
    expect("var", "error: 'var' needs a subcommand: list, get, set (see 'help var')\n");
    expect("var fly", "error: unknown var subcommand 'fly'; accepted: list, get, set\n");
    expect("var get", "error: missing argument; usage: var get [TYPE] NAME\n");
    expect("var get int age extra", "error: too many arguments (1 extra); usage: var get");
    expect("var set age 1 2 3", "error: too many arguments (1 extra); usage: var set [TYPE] NAME");
    expect("var get integer age", "error: unknown type 'integer'; types: bool, schar, uchar, "
                                  "short, ushort, int,");
    expect("var set \"age 1", "error: unterminated \" quote");
    expect("help nothing", "error: no commands in family 'nothing'");
    expect("json", "{\"ok\":false,\"error\":\"'json' needs a command after it");
}

static void bad_bytes_are_refused_before_parsing(void **state)
{
    (void)state;
    struct outcome o = handle("var get \xff", 9, false);
    assert_string_equal(o.text, "error: request is not valid UTF-8 (byte 0xff at offset 8); send text\n");
    free(o.text);
    o = handle("var\0get", 7, false);
    assert_string_equal(o.text, "error: request contains control character 0x00 at offset 3; "
                                "send one line of text\n");
    free(o.text);
    o = handle("var get \x1b[2J", 12, false);
    assert_non_null(strstr(o.text, "control character 0x1b at offset 8"));
    free(o.text);
    o = handle("json var get \xc3", 14, false);
    assert_true(o.json);
    assert_non_null(strstr(o.text, "\"ok\":false"));
    free(o.text);
}

static void json_prefix_and_sessions(void **state)
{
    (void)state;
    struct outcome o = handle("json var get age", 16, false);
    assert_true(o.json);
    assert_int_equal(o.after, HP_AFTER_CLOSE);
    assert_non_null(strstr(o.text, "\"value\":"));
    free(o.text);

    o = handle("session", 7, false);
    assert_int_equal(o.after, HP_AFTER_KEEP);
    free(o.text);
    o = handle("var get age", 11, true);
    assert_true(o.json);
    assert_int_equal(o.after, HP_AFTER_KEEP);
    free(o.text);
    o = handle("session", 7, true);
    assert_non_null(strstr(o.text, "already in a session"));
    assert_int_equal(o.after, HP_AFTER_KEEP);
    free(o.text);
    o = handle("quit", 4, true);
    assert_int_equal(o.after, HP_AFTER_CLOSE);
    free(o.text);
}

static void every_command_has_usage_and_summary(void **state)
{
    (void)state;
    struct hp_reply *r = hp_reply_new();
    struct outcome o = handle("json help", 9, false);
    assert_non_null(strstr(o.text, "\"usage\":\"var set [TYPE] NAME VALUE\""));
    assert_non_null(strstr(o.text, "\"usage\":\"lib unload [--retire] NAME\""));
    assert_null(strstr(o.text, "\"summary\":\"\""));
    free(o.text);
    hp_reply_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(commands_dispatch_to_their_handlers),
        cmocka_unit_test(refusals_name_what_was_wrong),
        cmocka_unit_test(bad_bytes_are_refused_before_parsing),
        cmocka_unit_test(json_prefix_and_sessions),
        cmocka_unit_test(every_command_has_usage_and_summary),
        cmocka_unit_test(globals_are_reached_by_symbol),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
