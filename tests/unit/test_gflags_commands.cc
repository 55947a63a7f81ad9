// test_gflags_commands.cc — the gflags and glog command families against a real gflags + glog
// program (this one), through the agent's own dispatch (hp_handle_line), with the adapter
// loaded from build/lib exactly as an agent loads it.
//
// What it proves: list/get/set read and change the program's real flags (checked through the
// FLAGS_ variables themselves); type errors, validator refusals and unknown names are one error
// line that changes nothing; the adapter's pre-check of a value agrees with gflags' own parser on
// every sample (so a refusal is named correctly); glog's settings are told apart from the
// program's flags; a severity change really filters glog's output (a LogSink counts what is
// logged); SetVLOGLevel through `glog vmodule` turns VLOG on for this file only.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include <gflags/gflags.h>
#include <glog/logging.h>

extern "C" {
#include "commands/commands.h"
}

// cmocka last: its fail() macro would break the standard library's headers.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
extern "C" {
#include <cmocka.h>
}

static bool ValidatePort(const char *, google::int32 v)
{
    return v > 0 && v < 65536;
}

DEFINE_int32(port, 8080, "port to listen on");
DEFINE_validator(port, &ValidatePort);
DEFINE_string(user_name, "ada", "who we are");

// Pairs of flags of each type: one set by gflags directly, one through the agent, so the two
// verdicts on the same text can be compared.
DEFINE_bool(direct_bool, false, "");
DEFINE_bool(agent_bool, false, "");
DEFINE_int32(direct_int32, 0, "");
DEFINE_int32(agent_int32, 0, "");
DEFINE_uint32(direct_uint32, 0, "");
DEFINE_uint32(agent_uint32, 0, "");
DEFINE_int64(direct_int64, 0, "");
DEFINE_int64(agent_int64, 0, "");
DEFINE_uint64(direct_uint64, 0, "");
DEFINE_uint64(agent_uint64, 0, "");
DEFINE_double(direct_double, 0, "");
DEFINE_double(agent_double, 0, "");

static std::string Run(const std::string &line)
{
    struct hp_reply *reply = hp_reply_new();
    bool json = false;
    enum hp_after after = HP_AFTER_CLOSE;
    hp_handle_line(line.c_str(), line.size(), nullptr, false, reply, &json, &after);
    size_t len = 0;
    char *text = hp_reply_render(reply, json, &len);
    hp_reply_free(reply);
    std::string out = text ? std::string(text, len) : std::string("render failed");
    free(text);
    return out;
}

static bool Contains(const std::string &hay, const std::string &needle)
{
    return hay.find(needle) != std::string::npos;
}

#define assert_contains(hay, needle)                                                         \
    do {                                                                                     \
        std::string h_ = (hay);                                                              \
        if (!Contains(h_, (needle)))                                                         \
            fail_msg("expected '%s' in: %s", std::string(needle).c_str(), h_.c_str());      \
    } while (0)

// Counts what glog really logs, by severity.
class CountingSink : public google::LogSink {
  public:
    void send(google::LogSeverity severity, const char *, const char *, int,
              const struct ::tm *, const char *, size_t) override
    {
        counts[severity]++;
    }
    std::atomic<int> counts[4] = {};
};
static CountingSink sink;

static void gflags_get_and_list(void **)
{
    assert_string_equal(Run("gflags get port").c_str(), "8080\n");
    assert_contains(Run("json gflags get port"), "\"value\":8080");
    assert_contains(Run("json gflags get user_name"), "\"value\":\"ada\"");
    std::string list = Run("gflags list");
    assert_contains(list, "NAME");
    assert_contains(list, "DESCRIPTION");
    assert_contains(list, "port");
    assert_contains(list, "port to listen on");
    std::string json = Run("json gflags list");
    assert_contains(json, "{\"name\":\"port\",\"type\":\"int32\",\"value\":8080,\"default\":8080,"
                          "\"description\":\"port to listen on\"}");
    assert_contains(json, "\"name\":\"minloglevel\"");
    assert_contains(Run("gflags get no_such_flag"), "error: no gflags flag named 'no_such_flag'");
}

static void gflags_set_changes_the_real_flag(void **)
{
    assert_string_equal(Run("gflags set port 9000").c_str(), "port = 9000 (was 8080)\n");
    assert_int_equal(FLAGS_port, 9000);
    std::string json = Run("json gflags set user_name \"Ada Lovelace\"");
    assert_contains(json, "\"ok\":true");
    assert_contains(json, "\"old\":\"ada\"");
    assert_contains(json, "\"value\":\"Ada Lovelace\"");
    assert_string_equal(FLAGS_user_name.c_str(), "Ada Lovelace");
}

static void gflags_refusals_change_nothing(void **)
{
    FLAGS_port = 9000;
    std::string bad = Run("gflags set port abc");
    assert_contains(bad, "error: illegal value 'abc' specified for int32 flag 'port': expected a "
                         "whole number");
    std::string refused = Run("gflags set port 70000");
    assert_contains(refused, "error: failed validation of new value '70000' for flag 'port'");
    assert_contains(Run("gflags set nope 1"), "error: no gflags flag named 'nope'");
    assert_contains(Run("gflags set port"), "usage: gflags set NAME VALUE");
    assert_int_equal(FLAGS_port, 9000);
    assert_contains(Run("json gflags set port 0"), "\"ok\":false");
    assert_int_equal(FLAGS_port, 9000);
}

// The adapter names a refusal by checking the value before gflags does; the two must agree.
static void precheck_agrees_with_gflags(void **)
{
    static const char *const types[] = {"bool", "int32", "uint32", "int64", "uint64", "double"};
    static const char *const samples[] = {
        "0", "1", "-1", "42", " 7", "7 ", "+5", "0x10", "0X1f", "-0x10", "010", "1e3", "1.5",
        "-2.5e-3", "nan", "inf", "true", "FALSE", "Yes", "no", "t", "F", "y", "N", "on", "",
        "abc", "2147483647", "2147483648", "-2147483648", "-2147483649", "4294967295",
        "4294967296", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
        "18446744073709551615", "18446744073709551616", "1e400", "0x", "--1", " -3"};
    for (const char *type : types) {
        for (const char *sample : samples) {
            std::string direct = std::string("direct_") + type;
            std::string agent = std::string("agent_") + type;
            bool gflags_accepts = !google::SetCommandLineOption(direct.c_str(), sample).empty();
            std::string reply = Run("gflags set " + agent + " \"" + sample + "\"");
            bool agent_accepts = !Contains(reply, "error:");
            if (gflags_accepts != agent_accepts)
                fail_msg("type %s value '%s': gflags %s it, the agent replied: %s", type, sample,
                         gflags_accepts ? "accepts" : "refuses", reply.c_str());
            if (!agent_accepts && !Contains(reply, "illegal value"))
                fail_msg("type %s value '%s': refusal not named as illegal: %s", type, sample,
                         reply.c_str());
        }
    }
}

static void glog_settings_are_glogs_only(void **)
{
    std::string list = Run("glog list");
    for (const char *name : {"minloglevel", "stderrthreshold", "logtostderr", "alsologtostderr",
                             "colorlogtostderr", "log_prefix", "v", "vmodule", "log_dir",
                             "logemaillevel", "symbolize_stacktrace"})
        assert_contains(list, std::string("\n") + name + " ");
    assert_false(Contains(list, "\nport "));
    assert_false(Contains(list, "\nflagfile "));
    assert_contains(Run("glog get port"), "error: 'port' is not one of glog's settings (it is a "
                                          "gflags flag: use 'gflags get/set')");
    assert_contains(Run("glog set nope 1"), "glog settings: ");
    assert_contains(Run("json glog list"), "\"name\":\"minloglevel\"");
}

static void glog_severity_words(void **)
{
    assert_string_equal(Run("glog set minloglevel ERROR").c_str(),
                        "minloglevel = ERROR (2) (was INFO (0))\n");
    assert_int_equal(FLAGS_minloglevel, 2);
    assert_string_equal(Run("glog get minloglevel").c_str(), "ERROR (2)\n");
    assert_contains(Run("json glog get minloglevel"), "\"value\":2");
    assert_contains(Run("glog set minloglevel 7"), "error: '7' is not a glog severity for "
                                                   "minloglevel: expected INFO, WARNING, ERROR, "
                                                   "FATAL or 0-3");
    assert_contains(Run("glog set minloglevel LOUD"), "is not a glog severity");
    assert_int_equal(FLAGS_minloglevel, 2);
    Run("glog set minloglevel warning");
    assert_int_equal(FLAGS_minloglevel, 1);
    Run("glog set stderrthreshold 3");
    assert_int_equal(FLAGS_stderrthreshold, 3);
    Run("glog set minloglevel 0");
    assert_int_equal(FLAGS_minloglevel, 0);
    assert_contains(Run("glog set v 3"), "v = 3 (was 0)");
    assert_int_equal(FLAGS_v, 3);
    Run("glog set v 0");
    assert_contains(Run("glog set logtostderr maybe"), "error: illegal value 'maybe' specified "
                                                       "for bool flag 'logtostderr'");
    assert_contains(Run("json glog set log_dir /tmp"), "applies to log files glog opens");
    assert_contains(Run("glog set vmodule x=1"), "error: glog reads vmodule only at start");
}

static void severity_change_filters_real_logging(void **)
{
    Run("glog set minloglevel INFO");
    int info = sink.counts[google::GLOG_INFO], error = sink.counts[google::GLOG_ERROR];
    LOG(INFO) << "before";
    LOG(ERROR) << "before";
    assert_int_equal(sink.counts[google::GLOG_INFO], info + 1);
    assert_int_equal(sink.counts[google::GLOG_ERROR], error + 1);
    assert_contains(Run("gflags set minloglevel 2"), "minloglevel = 2 (was 0)");
    LOG(INFO) << "after";
    LOG(WARNING) << "after";
    LOG(ERROR) << "after";
    assert_int_equal(sink.counts[google::GLOG_INFO], info + 1);
    assert_int_equal(sink.counts[google::GLOG_WARNING], 0);
    assert_int_equal(sink.counts[google::GLOG_ERROR], error + 2);
    Run("gflags set minloglevel 0");
}

static bool VerboseHere()
{
    return VLOG_IS_ON(2);
}

static void vmodule_turns_on_vlog_for_one_file(void **)
{
    assert_false(VerboseHere());
    assert_string_equal(Run("glog vmodule test_gflags_commands 2").c_str(),
                        "vmodule test_gflags_commands=2 (was 0)\n");
    assert_true(VerboseHere());
    assert_int_equal(FLAGS_v, 0);
    assert_string_equal(Run("glog get vmodule").c_str(), "test_gflags_commands=2\n");
    Run("glog vmodule other_file 1");
    assert_string_equal(Run("glog get vmodule").c_str(), "other_file=1,test_gflags_commands=2\n");
    assert_contains(Run("glog vmodule test_gflags_commands 0"), "(was 2)");
    assert_false(VerboseHere());
    assert_contains(Run("glog vmodule 'a b' 1"), "is not a vmodule pattern");
    assert_contains(Run("glog vmodule x 1.5"), "error: '1.5' is not");
}

static int CountMapped(const char *needle)
{
    std::ifstream maps("/proc/self/maps");
    std::string line, last;
    int objects = 0;
    while (std::getline(maps, line)) {
        size_t at = line.find('/');
        std::string path = at == std::string::npos ? "" : line.substr(at);
        if (Contains(path, needle) && path != last)
            objects++;
        if (!path.empty())
            last = path;
    }
    return objects;
}

static void one_gflags_and_the_adapter_are_mapped(void **)
{
    assert_int_equal(CountMapped("libgflags"), 1);
    assert_int_equal(CountMapped("libhotpatch_gflags.so"), 1);
}

int main(int argc, char **argv)
{
    google::SetCommandLineOption("logtostderr", "true");
    gflags::ParseCommandLineFlags(&argc, &argv, true);
    google::InitGoogleLogging(argv[0]);
    google::AddLogSink(&sink);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gflags_get_and_list),
        cmocka_unit_test(gflags_set_changes_the_real_flag),
        cmocka_unit_test(gflags_refusals_change_nothing),
        cmocka_unit_test(precheck_agrees_with_gflags),
        cmocka_unit_test(glog_settings_are_glogs_only),
        cmocka_unit_test(glog_severity_words),
        cmocka_unit_test(severity_change_filters_real_logging),
        cmocka_unit_test(vmodule_turns_on_vlog_for_one_file),
        cmocka_unit_test(one_gflags_and_the_adapter_are_mapped),
    };
    int failed = cmocka_run_group_tests(tests, nullptr, nullptr);
    google::RemoveLogSink(&sink);
    return failed;
}
