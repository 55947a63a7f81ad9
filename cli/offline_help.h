/*
 * offline_help.h — `hotpatch help [FAMILY]` without -p or -s: the command list without a
 * running agent, as the agent of this build answers it (generated at build time by
 * cli/gen_help.c from the dispatch table).
 */
#ifndef HOTPATCH_CLI_OFFLINE_HELP_H
#define HOTPATCH_CLI_OFFLINE_HELP_H

#include <stdbool.h>

/* Prints the list (of one family when family is not NULL), plain or as the JSON reply. The
 * exit status: 0, or 2 (said) for a family that has no commands. */
int print_offline_help(const char *family, bool json);

#endif
