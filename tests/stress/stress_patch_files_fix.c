/*
 * stress_patch_files_fix.c — the three-function patch stress_patch_files applies and reverts
 * (see there): stress_a, stress_b and stress_c answer 101, 102, 103 instead of 1, 2, 3.
 */
#include "hotpatch_patch.h"

HOTPATCH_PATCH_INFO("stress-trio", "three functions that go in and out together");

int stress_a_new(void);
int stress_b_new(void);
int stress_c_new(void);
int stress_a_new(void) { return 101; }
int stress_b_new(void) { return 102; }
int stress_c_new(void) { return 103; }
HOTPATCH_REPLACE("stress_a", stress_a_new);
HOTPATCH_REPLACE("stress_b", stress_b_new);
HOTPATCH_REPLACE("stress_c", stress_c_new);
