/*
 * fuzz_request.c — libFuzzer target over the whole request path.
 *
 * Each input is the bytes of one request line as the server would hand them over: it goes
 * through the checks, the tokenizer, the dispatcher and a handler, and the reply is rendered
 * in both forms. The first byte chooses whether the line arrives inside a session. Variables of
 * every type (with a validator and a change callback) are registered so typed parsing and
 * setting are reached. `lib load` can only name files of the seed corpus, which do not exist,
 * so fuzzing never loads code into the fuzzer. `var set TYPE SYMBOL VALUE` would write any
 * global of the fuzzer's own process (libFuzzer learns the names the symbol search compares),
 * so such a request for a name not registered here is skipped; reads by symbol are fuzzed.
 *
 * Build and run: make fuzz (FUZZ_SECONDS=600 for a longer run).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "commands/commands.h"

static bool flag_value;
static int int_value;
static unsigned uint_value;
static long long_value;
static unsigned long ulong_value;
static long long llong_value;
static unsigned long long ullong_value;
static float float_value;
static double double_value;
static signed char schar_value;
static unsigned char uchar_value;
static short short_value;
static unsigned short ushort_value;
static char string_value[32] = "seed";

static int refuse_negative(const char *name, const void *value, char *why, size_t cap, void *u)
{
    (void)name;
    (void)u;
    if (*(const int *)value >= 0)
        return 0;
    strncpy(why, "must not be negative", cap - 1);
    why[cap - 1] = '\0';
    return 1;
}

static void ignore_change(const char *name, const void *old, const void *fresh, void *u)
{
    (void)name, (void)old, (void)fresh, (void)u;
}

static void register_everything(void)
{
    hotpatch_register_variable("flag", &flag_value);
    hotpatch_register_variable_checked("age", &int_value, refuse_negative, ignore_change, NULL);
    hotpatch_register_variable("uint_value", &uint_value);
    hotpatch_register_variable("long_value", &long_value);
    hotpatch_register_variable("ulong_value", &ulong_value);
    hotpatch_register_variable("llong_value", &llong_value);
    hotpatch_register_variable("ullong_value", &ullong_value);
    hotpatch_register_variable("ratio", &float_value);
    hotpatch_register_variable("scale", &double_value);
    hotpatch_register_variable("schar_value", &schar_value);
    hotpatch_register_variable("uchar_value", &uchar_value);
    hotpatch_register_variable("short_value", &short_value);
    hotpatch_register_variable("ushort_value", &ushort_value);
    hotpatch_register_string("user_name", string_value, sizeof string_value);
    hotpatch_register_function("add_func", (void *)register_everything);
}

static bool is_registered(const char *name)
{
    static struct hp_variable_view view;   /* large; the fuzzer is single-threaded */
    return hp_registry_get_variable(name, 0, &view) != -ENOENT;
}

/* True when the line may be `[json] var set TYPE NAME VALUE` for a NAME not registered: a
 * write to a global found by symbol. Judged on the text up to any NUL byte (a line with one is
 * refused whole by the agent anyway), so it errs towards skipping. */
static bool writes_a_symbol(const uint8_t *data, size_t size)
{
    static char line[HP_LINE_MAX + 1];
    if (size > HP_LINE_MAX)
        return false;                     /* refused as too long before any handler */
    memcpy(line, data, size);
    line[size] = '\0';
    char *words[HP_MAX_WORDS], why[128];
    int n = hp_tokenize(line, words, HP_MAX_WORDS, why, sizeof why);
    for (int i = 0; i + 1 < n && i < 3; i++)
        if (strcmp(words[i], "var") == 0 && strcmp(words[i + 1], "set") == 0)
            return n - i - 2 == 3 && !is_registered(words[i + 3]);
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool registered;
    if (!registered) {
        register_everything();
        registered = true;
    }
    if (size == 0 || writes_a_symbol(data + 1, size - 1))
        return 0;
    bool in_session = data[0] & 1;
    struct hp_reply *reply = hp_reply_new();
    if (!reply)
        return 0;
    bool json = false;
    enum hp_after after;
    struct hp_peer peer = {0, 0, 1};
    hp_handle_line((const char *)data + 1, size - 1, &peer, in_session, reply, &json, &after);
    for (int form = 0; form < 2; form++) {
        size_t len = 0;
        char *text = hp_reply_render(reply, form == 1, &len);
        if (text && strlen(text) != len)
            abort(); /* a rendering must never contain a NUL byte */
        free(text);
    }
    hp_reply_free(reply);
    return 0;
}
