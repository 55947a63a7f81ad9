/*
 * consumer.c — a C program as a user of the installed (or added) libhotpatch writes it: it
 * registers a variable, starts the agent and waits until an operator sets it. The consumer
 * tests (tests/consumers/run.sh) build it through find_package, pkg-config and
 * add_subdirectory, then set `answer` with the CLI: exit 0 only when the agent really served.
 *
 * It also prints the library version it was compiled against, which the driver compares with
 * the one the build system reported (a stale header elsewhere on the include path would show).
 */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <unistd.h>

#include "hotpatch.h"

static int answer = 41;

int main(void)
{
    printf("version %s\n", HOTPATCH_VERSION);
    fflush(stdout);
    if (hotpatch_register_variable("answer", &answer) != 0 || hotpatch_start() != 0)
        return 2;
    for (int i = 0; i < 1000 && __atomic_load_n(&answer, __ATOMIC_RELAXED) == 41; i++)
        usleep(10000);
    hotpatch_stop();
    printf("answer=%d\n", answer);
    return answer == 42 ? 0 : 1;
}
