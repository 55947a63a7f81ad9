// consumer.cc — a C++ user of libhotpatch through hotpatch.hpp: a std::string, an int and an
// unsigned short, registered the way the original C++ library spelled it. Built by the
// consumer tests (tests/consumers/run.sh) through each way of finding the library; the driver
// sets `name` to "set", `level` to 7 and `port` to 65000 with the CLI, and the program exits 0
// only when it saw all three.
//
// With CONSUMER_GFLAGS it also defines a gflags flag, so that `gflags get consumer_flag`
// proves the installed library found its gflags adapter (in LIBDIR/hotpatch/).
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "hotpatch.hpp"

#ifdef CONSUMER_GFLAGS
#include <gflags/gflags.h>
DEFINE_int32(consumer_flag, 5, "a flag the consumer test reads through the agent");
#endif

static std::string name = "unset";
static int level = 1;
static unsigned short port = 1;

int main()
{
    std::printf("version %s\n", HOTPATCH_VERSION);
    std::fflush(stdout);
    if (hotpatch::RegisterVariable("name", &name) != 0 ||
        hotpatch::RegisterVariable("level", &level) != 0 ||
        hotpatch::RegisterVariable("port", &port) != 0 || hotpatch::Start() != 0)
        return 2;
    for (int i = 0; i < 1000; i++) {
        if (hotpatch::ReadString("name") == "set" && __atomic_load_n(&level, __ATOMIC_RELAXED) == 7 &&
            __atomic_load_n(&port, __ATOMIC_RELAXED) == 65000)
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    hotpatch::Stop();
    std::printf("name=%s level=%d port=%u\n", name.c_str(), level, port);
    return name == "set" && level == 7 && port == 65000 ? 0 : 1;
}
