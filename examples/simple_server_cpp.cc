/*
 * simple_server_cpp.cc — simple_server in C++, through hotpatch.hpp and std::string.
 *
 * Same behaviour and output as simple_server.c: one line per interval with user_name, age and
 * add_func(1, 2). Options: --interval-ms N, --count N.
 */
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "hotpatch.hpp"

static std::string user_name = "myname";
static int age = 10;

extern "C" __attribute__((noinline)) int add_func(int a, int b)
{
    volatile int bias = 0;
    return a + b + bias;
}

// SIGINT and SIGTERM end the loop so the program exits normally and the socket is removed.
static volatile std::sig_atomic_t stopping;

static long ParseOption(const char *name, const char *text)
{
    char *end;
    long v = std::strtol(text, &end, 10);
    if (*end || v < 0) {
        std::fprintf(stderr, "simple_server_cpp: %s expects a non-negative number, got '%s'\n",
                     name, text);
        std::exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    long interval_ms = 1000, count = -1;
    for (int i = 1; i < argc; i++) {
        if (std::strcmp(argv[i], "--interval-ms") == 0 && i + 1 < argc)
            interval_ms = ParseOption(argv[i], argv[i + 1]), i++;
        else if (std::strcmp(argv[i], "--count") == 0 && i + 1 < argc)
            count = ParseOption(argv[i], argv[i + 1]), i++;
        else {
            std::fprintf(stderr, "usage: simple_server_cpp [--interval-ms N] [--count N]\n");
            return 2;
        }
    }
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    std::signal(SIGINT, [](int) { stopping = 1; });
    std::signal(SIGTERM, [](int) { stopping = 1; });

    hotpatch::RegisterVariable("user_name", &user_name);
    hotpatch::RegisterVariable("age", &age);
    hotpatch::RegisterFunction("add_func", reinterpret_cast<void *>(add_func));
    if (int rc = hotpatch::Start(); rc != 0)
        std::fprintf(stderr, "simple_server_cpp: hotpatch agent not started: %s\n",
                     std::strerror(-rc));

    for (long n = 0; !stopping && (count < 0 || n < count); n++) {
        std::printf("user_name=%s age=%d add_func(1, 2)=%d\n",
                    hotpatch::ReadString("user_name").c_str(),
                    __atomic_load_n(&age, __ATOMIC_RELAXED), add_func(1, 2));
        for (long slept = 0; slept < interval_ms && !stopping; slept += 10)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    hotpatch::Stop();
    return 0;
}
