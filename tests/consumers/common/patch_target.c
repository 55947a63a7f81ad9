/*
 * patch_target.c — a program a consumer project patches with a patch file it builds itself
 * (hotpatch_add_patch, tests/consumers/common/fix_answer.c). It starts the agent and asks
 * answer_of() until it says 42, which only the patch makes it say; exit 0 then, 1 after 10 s.
 */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <unistd.h>

#include "hotpatch.h"

__attribute__((noinline)) int answer_of(void)
{
    volatile int answer = 41;
    return answer;
}

int main(void)
{
    if (hotpatch_start() != 0)
        return 2;
    int answer = 0;
    for (int i = 0; i < 1000 && (answer = answer_of()) != 42; i++)
        usleep(10000);
    hotpatch_stop();
    printf("answer_of()=%d\n", answer);
    return answer == 42 ? 0 : 1;
}
