/* fix_answer.c — the consumer's patch file for patch_target (see patch_target.c). */
#include "hotpatch_patch.h"

HOTPATCH_PATCH_INFO("fix-answer", "answer_of says 42");

int answer_of_fixed(void)
{
    return 42;
}
HOTPATCH_REPLACE("answer_of", answer_of_fixed);
