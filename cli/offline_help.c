/*
 * offline_help.c — the command list without an agent. See offline_help.h; the table itself is
 * generated into the build directory (offline_help_table.h there is cli/gen_help.c's output).
 */
#include <stdio.h>
#include <string.h>

#include "generated/offline_help_table.h"
#include "message.h"
#include "offline_help.h"

int print_offline_help(const char *family, bool json)
{
    const char *wanted = family ? family : "";
    for (size_t i = 0; i < sizeof offline_help / sizeof offline_help[0]; i++) {
        if (strcmp(offline_help[i].family, wanted) != 0)
            continue;
        fputs(json ? offline_help[i].json : offline_help[i].text, stdout);
        return 0;
    }
    say("no commands in family '%s'; 'hotpatch help' lists them all", wanted);
    return 2;
}
