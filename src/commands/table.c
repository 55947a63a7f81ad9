/*
 * table.c — the dispatch table: every command family, in the order `help` lists them.
 *
 * The agent's protocol (agent/protocol.c) dispatches through this table without knowing the
 * families, so the agent never includes the commands' header; a new family is one line here.
 */
#include <stddef.h>

#include "commands.h"

const struct hp_command *const hp_command_families[] = {
    hp_core_commands,
    hp_var_commands,
    hp_lib_commands,
    hp_func_commands,
    hp_patch_commands,
    hp_gflags_commands,
    hp_glog_commands,
    hp_status_commands,
    NULL,
};
