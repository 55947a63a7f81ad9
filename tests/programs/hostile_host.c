/*
 * hostile_host.c — test program: a host whose own needs the security tests check the agent
 * against, and whose memory holds strings meant to attack an operator's terminal.
 *
 *   hostile_host        starts the agent, prints "ready", then reads commands on stdin:
 *     open N            opens up to N descriptors of /dev/null, prints "opened K", closes them
 *     age N             the program itself sets `age` to N (prints "age N"), as programs do
 *     quit              exits 0
 *
 * It registers `banner`, a string that holds ESC, an OSC title sequence, BEL, a newline that
 * would forge a second line, and the C1 control U+009B (CSI); `age`, an int; and `crash`, an
 * int whose change callback aborts the process when it is set to 1 (a command that takes the
 * host down must still leave its audit record). The tests use
 * `open N` to prove that the host can still open files while other users hold connections to
 * its agent (the agent's descriptor budget).
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hotpatch.h"

static char banner[128] = "\x1b]0;owned\x07\nerror: forged line \xc2\x9b" "31mred";
static int age = 10;
static int crash;

static void crash_on_one(const char *name, const void *old_value, const void *new_value,
                         void *user)
{
    (void)name, (void)old_value, (void)user;
    if (*(const int *)new_value == 1)
        abort();
}

static int open_many(int wanted)
{
    int *fds = calloc((size_t)wanted, sizeof *fds);
    if (!fds)
        return 0;
    int opened = 0;
    while (opened < wanted && (fds[opened] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        opened++;
    for (int i = 0; i < opened; i++)
        close(fds[i]);
    free(fds);
    return opened;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    hotpatch_register_string("banner", banner, sizeof banner);
    hotpatch_register_variable("age", &age);
    hotpatch_register_variable_checked("crash", &crash, NULL, crash_on_one, NULL);
    if (hotpatch_start() != 0)
        return 1;
    puts("ready");
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        int n;
        if (sscanf(line, "open %d", &n) == 1 && n > 0)
            printf("opened %d\n", open_many(n));
        else if (sscanf(line, "age %d", &n) == 1) {
            __atomic_store_n(&age, n, __ATOMIC_SEQ_CST);
            printf("age %d\n", n);
        }
        else if (strncmp(line, "quit", 4) == 0)
            break;
    }
    hotpatch_stop();
    return 0;
}
