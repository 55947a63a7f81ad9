/* unit.h — what every unit test includes: cmocka and the library's internal header. */
#ifndef HOTPATCH_UNIT_H
#define HOTPATCH_UNIT_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "commands/commands.h"
#endif
