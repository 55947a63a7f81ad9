/*
 * ps.h — `hotpatch ps`: every process the caller may reach that has an agent, with what its
 * agent says of itself (`status`), and the discovery that --all uses.
 *
 * An agent is found as -p finds one (verify.c): a listening socket the process itself holds
 * at one of the agent's names; each is then asked `status` only after the same verification,
 * by a child process of its own (fleet.c), at most `jobs` at once.
 */
#ifndef HOTPATCH_CLI_PS_H
#define HOTPATCH_CLI_PS_H

#include <stdbool.h>

#include "targets.h"

/* Adds every process with an agent socket (in pid order) to list. False (said) on failure. */
bool add_agent_processes(struct pid_list *list);

/* Lists the agents, as a table or one JSON object per line. The exit status: 0, or 2 when an
 * agent could not be asked. */
int run_ps(bool json, int jobs, int timeout_ms);

#endif
