// prebuilt_server.cc — a stand-in for a prebuilt C++ service that uses gflags and glog and knows
// nothing about hotpatch (no hotpatch header, not linked with libhotpatch).
//
// Once per --interval_ms it prints "tick N" on stdout and logs one line at INFO, WARNING and
// ERROR and with VLOG(1) and VLOG(2), each ending in its tick number and level, so a test or a
// demo can see exactly which severities get through after a live change. (FATAL is not logged:
// glog aborts the program after a FATAL line.) It reads its flags on every tick, so changing
// --interval_ms or --greeting takes effect on the next one. SIGTERM and SIGINT end it normally
// (destructors run), and --max_ticks bounds a run.
//
// Run it under the preload agent:
//   LD_PRELOAD=build/lib/libhotpatch_preload.so build/bin/prebuilt_server &
//   build/bin/hotpatch -p $! gflags set minloglevel 2
#include <csignal>
#include <cstdio>
#include <ctime>

#include <gflags/gflags.h>
#include <glog/logging.h>

static bool ValidateInterval(const char *, google::int32 value)
{
    return value >= 10 && value <= 60000;
}

static bool ValidatePort(const char *, google::int32 value)
{
    return value > 0 && value < 65536;
}

DEFINE_int32(interval_ms, 1000, "milliseconds between ticks (10 to 60000)");
DEFINE_validator(interval_ms, &ValidateInterval);
DEFINE_int32(port, 8080, "port this pretend service would listen on (1 to 65535)");
DEFINE_validator(port, &ValidatePort);
DEFINE_string(greeting, "hello", "text logged with every INFO line");
DEFINE_double(sample_ratio, 0.25, "fraction of requests sampled for tracing");
DEFINE_bool(verbose_stats, false, "log statistics with every tick");
DEFINE_int64(max_ticks, 0, "stop after this many ticks (0: run until SIGTERM)");

static volatile std::sig_atomic_t stop_requested = 0;

static void RequestStop(int)
{
    stop_requested = 1;
}

// Sleeps for ms milliseconds in short steps so a stop request is noticed quickly.
static void SleepMs(long ms)
{
    while (ms > 0 && !stop_requested) {
        long step = ms < 50 ? ms : 50;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, nullptr);
        ms -= step;
    }
}

int main(int argc, char **argv)
{
    // This service's own default: log to stderr rather than to files under /tmp.
    google::SetCommandLineOptionWithMode("logtostderr", "true", google::SET_FLAGS_DEFAULT);
    gflags::SetUsageMessage("a pretend prebuilt service that logs at every severity");
    gflags::ParseCommandLineFlags(&argc, &argv, true);
    google::InitGoogleLogging(argv[0]);

    std::signal(SIGTERM, RequestStop);
    std::signal(SIGINT, RequestStop);

    for (long long tick = 1; !stop_requested; tick++) {
        std::printf("tick %lld\n", tick);
        std::fflush(stdout);
        LOG(INFO) << FLAGS_greeting << " tick " << tick << " INFO";
        LOG(WARNING) << "tick " << tick << " WARNING";
        LOG(ERROR) << "tick " << tick << " ERROR";
        VLOG(1) << "tick " << tick << " VLOG1";
        VLOG(2) << "tick " << tick << " VLOG2";
        if (FLAGS_verbose_stats)
            LOG(INFO) << "stats tick " << tick << " port=" << FLAGS_port
                      << " sample_ratio=" << FLAGS_sample_ratio;
        if (FLAGS_max_ticks > 0 && tick >= FLAGS_max_ticks)
            break;
        SleepMs(FLAGS_interval_ms);
    }
    // No gflags::ShutDownCommandLineFlags(): it frees gflags' registry while an agent thread
    // may be reading it (see "The preload agent" in docs/protocol.md).
    google::ShutdownGoogleLogging();
    return 0;
}
