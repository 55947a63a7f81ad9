/*
 * simple_server_fix.c — a patch file for simple_server (include/hotpatch_patch.h): two
 * functions that go in and out together. `make demo` applies it (scripts/demo.sh):
 *
 *   user_name=myname age=10 add_func(1, 2)=3      before
 *   user_name=myname age=120 add_func(1, 2)=103   after `patch apply`, from the next line on
 *
 * Built by hotpatch_add_patch(simple_server_fix SOURCES ... FOR simple_server) (cmake/
 * patch_files.cmake), which also embeds simple_server's build-id: the agent refuses it in any
 * other build of the program.
 */
#include "hotpatch_patch.h"

HOTPATCH_PATCH_INFO("demo-fix", "add_func adds 100, and the age is shown in months");

int add_func_fixed(int a, int b)
{
    return a + b + 100;
}
HOTPATCH_REPLACE("add_func", add_func_fixed);

int shown_age_in_months(int years)
{
    return years * 12;
}
HOTPATCH_REPLACE("shown_age", shown_age_in_months);
