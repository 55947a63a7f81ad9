/*
 * test_gflags_absent.c — the gflags and glog commands in a C program that has neither.
 *
 * The promise under test: a process without gflags gets "error: this process has no gflags"
 * (and "no glog"), and asking never loads anything into it — no adapter, no libstdc++, no
 * gflags or glog — which /proc/self/maps shows. The commands run through the agent's own
 * dispatch (hp_handle_line), exactly as a request from the socket would.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands/commands.h"

/* Runs one request line and returns its plain rendering (malloc'd). */
static char *run(const char *line, bool want_json)
{
    struct hp_reply *reply = hp_reply_new();
    assert_non_null(reply);
    bool json = false;
    enum hp_after after = HP_AFTER_CLOSE;
    char request[256];
    snprintf(request, sizeof request, "%s%s", want_json ? "json " : "", line);
    hp_handle_line(request, strlen(request), NULL, false, reply, &json, &after);
    size_t len;
    char *text = hp_reply_render(reply, json, &len);
    hp_reply_free(reply);
    assert_non_null(text);
    return text;
}

static void assert_reply(const char *line, const char *expected)
{
    char *text = run(line, false);
    assert_string_equal(text, expected);
    free(text);
}

/* True when /proc/self/maps names an object whose path contains needle. */
static bool mapped(const char *needle)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    assert_non_null(maps);
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof line, maps))
        found = strstr(line, needle) != NULL;
    fclose(maps);
    return found;
}

static void gflags_commands_say_no_gflags(void **state)
{
    (void)state;
    assert_reply("gflags list", "error: this process has no gflags\n");
    assert_reply("gflags get minloglevel", "error: this process has no gflags\n");
    assert_reply("gflags set minloglevel 2", "error: this process has no gflags\n");
    char *json = run("gflags list", true);
    assert_non_null(strstr(json, "\"ok\":false"));
    assert_non_null(strstr(json, "\"error\":\"this process has no gflags\""));
    free(json);
}

static void glog_commands_say_no_glog(void **state)
{
    (void)state;
    assert_reply("glog list", "error: this process has no glog\n");
    assert_reply("glog get v", "error: this process has no glog\n");
    assert_reply("glog set minloglevel ERROR", "error: this process has no glog\n");
    assert_reply("glog vmodule server 2", "error: this process has no glog\n");
}

static void argument_errors_come_before_the_process_check(void **state)
{
    (void)state;
    char *text = run("gflags set minloglevel", false);
    assert_non_null(strstr(text, "usage: gflags set NAME VALUE"));
    free(text);
    text = run("glog vmodule 'bad pattern' 1", false);
    assert_non_null(strstr(text, "is not a vmodule pattern"));
    free(text);
    text = run("glog vmodule server two", false);
    assert_non_null(strstr(text, "'two' is not"));
    free(text);
}

static void looking_loads_nothing(void **state)
{
    (void)state;
    /* A sanitizer runtime brings libstdc++ itself; the agent must not. */
    if (!mapped("libasan") && !mapped("libtsan") && !mapped("libubsan"))
        assert_false(mapped("libstdc++"));
    assert_false(mapped("libgflags"));
    assert_false(mapped("libglog"));
    assert_false(mapped("libhotpatch_gflags"));
}

static void help_lists_both_families(void **state)
{
    (void)state;
    char *text = run("help gflags", false);
    assert_non_null(strstr(text, "gflags set NAME VALUE"));
    free(text);
    text = run("help glog", false);
    assert_non_null(strstr(text, "glog vmodule PATTERN LEVEL"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gflags_commands_say_no_gflags),
        cmocka_unit_test(glog_commands_say_no_glog),
        cmocka_unit_test(argument_errors_come_before_the_process_check),
        cmocka_unit_test(help_lists_both_families),
        cmocka_unit_test(looking_loads_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
