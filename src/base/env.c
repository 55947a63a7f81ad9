/*
 * env.c — the agent's configuration from the environment, and when not to believe it.
 *
 * HOTPATCH_* variables choose where the agent creates its socket, which files it appends to and
 * which library it loads. In a secure-execution process (setuid, setgid or file capabilities:
 * the kernel's AT_SECURE) the environment belongs to the user who started the program, not to
 * the program's owner, so every HOTPATCH_* variable is ignored there and the defaults apply; the
 * agent says so once in its log. Other variables are not the agent's business and pass through.
 *
 * State: `announced` is set once with an atomic exchange; any thread.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>

#include "base.h"

static bool announced;

bool hp_secure_execution(void)
{
    return getauxval(AT_SECURE) != 0;
}

const char *hp_env(const char *name)
{
    if (strncmp(name, "HOTPATCH_", 9) != 0 || !hp_secure_execution())
        return getenv(name);
    if (getenv(name) && !__atomic_exchange_n(&announced, true, __ATOMIC_RELAXED))
        hp_log("secure-execution process (setuid, setgid or capabilities): ignoring every "
               "HOTPATCH_* variable of the environment; using the defaults");
    return NULL;
}
