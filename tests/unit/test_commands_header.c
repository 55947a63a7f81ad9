/* test_commands_header.c — the C header that tools/hotpatch_commands writes ("c" format) holds
 * exactly the agent's dispatch table, row for row, and its text format is the agent's own help.
 * A client may compile the header in for an offline `help`; this test is that client. */
#include "unit.h"

#include "hotpatch_commands.h"   /* generated into the build tree */

struct walk {
    size_t row;
};

static void compare_row(const struct hp_command *c, void *ctx)
{
    struct walk *w = ctx;
    assert_true(w->row < HOTPATCH_COMMAND_COUNT);
    const struct hotpatch_command_info *h = &hotpatch_commands[w->row++];
    assert_string_equal(h->family, c->family);
    if (c->verb)
        assert_string_equal(h->verb, c->verb);
    else
        assert_null(h->verb);
    assert_int_equal(h->min_args, c->min_args);
    assert_int_equal(h->max_args, c->max_args);
    assert_int_equal(h->mutates, (c->flags & HP_CMD_MUTATES) != 0);
    assert_string_equal(h->usage, c->usage);
    assert_string_equal(h->summary, c->summary);
}

static void the_header_is_the_dispatch_table(void **state)
{
    (void)state;
    struct walk w = {0};
    hp_for_each_command(compare_row, &w);
    assert_int_equal(w.row, HOTPATCH_COMMAND_COUNT);
    assert_true(HOTPATCH_COMMAND_COUNT >= 10);
}

/* The help lines a client would print from the header are the agent's `help` lines. */
static void help_from_the_header_is_the_agent_s_help(void **state)
{
    (void)state;
    struct hp_reply *r = hp_reply_new();
    bool json;
    enum hp_after after;
    hp_handle_line("help", 4, NULL, false, r, &json, &after);
    size_t n;
    char *text = hp_reply_render(r, false, &n);
    hp_reply_free(r);
    for (size_t i = 0; i < HOTPATCH_COMMAND_COUNT; i++) {
        char line[512];
        snprintf(line, sizeof line, "\n  %-36s %s\n", hotpatch_commands[i].usage,
                 hotpatch_commands[i].summary);
        if (!strstr(text, line))
            fail_msg("help lacks the line '%s'; help is:\n%s", line + 1, text);
    }
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_header_is_the_dispatch_table),
        cmocka_unit_test(help_from_the_header_is_the_agent_s_help),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
