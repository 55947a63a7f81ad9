/*
 * gflags_adapter.h — the agent's way to a process's gflags and glog, which are C++.
 *
 * The agent is C and must stay C: a C program started with the preload agent must never gain
 * libstdc++, gflags or glog in its memory map. So everything that needs C++ lives in a separate
 * shared object, libhotpatch_gflags.so (gflags_adapter.cc), which the agent dlopens only after
 * it has seen gflags' own symbols in the process (gflags_loader.c). The adapter has no DT_NEEDED
 * entry for gflags or glog: it binds, at dlopen time, to the copy the program already has —
 * whether that is Debian's libgflags.so.2.2 or a copy linked into the executable and exported —
 * so loading it can never bring a second gflags registry (or glog's flag definitions) into a
 * process that did not have them.
 *
 * This header has two halves:
 *   1. the C ABI of the adapter (its exported functions, looked up with dlsym by the loader);
 *   2. the loader's interface (gflags_loader.c) used by commands/gflags.c and commands/glog.c.
 * Every function returns 0 or a negative errno, with a one-line reason in `why`; the adapter
 * catches every C++ exception at its boundary, so nothing unwinds through C frames.
 */
#ifndef HOTPATCH_GFLAGS_ADAPTER_H
#define HOTPATCH_GFLAGS_ADAPTER_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a signature below changes; the loader refuses an adapter of another ABI. */
#define HP_GFLAGS_ADAPTER_ABI 1
#define HP_GFLAGS_ADAPTER_FILE "libhotpatch_gflags.so"

/* One flag as gflags describes it. The strings are valid only during the visitor call. */
struct hp_gflag {
    const char *name;
    const char *type;           /* gflags' names: bool int32 uint32 int64 uint64 double string */
    const char *value;          /* current value, as gflags formats it */
    const char *default_value;
    const char *description;
    const char *file;           /* the source file that defined the flag */
    bool is_default;            /* never set since start */
    bool has_validator;
    bool from_glog;             /* defined by glog (one of glog's logging settings) */
};
typedef void (*hp_gflag_visitor)(const struct hp_gflag *flag, void *ctx);

/* ---- 1. exported by libhotpatch_gflags.so (extern "C") ------------------------------------ */

/* HP_GFLAGS_ADAPTER_ABI of the adapter. */
typedef int (*hp_gflags_adapter_abi_fn)(void);
/* Visits every flag in name order (only glog's when glog_only). */
typedef int (*hp_gflags_adapter_each_fn)(bool glog_only, hp_gflag_visitor visit, void *ctx,
                                         char *why, size_t why_cap);
/* Visits one flag; -ENOENT when gflags has no flag of that name. */
typedef int (*hp_gflags_adapter_get_fn)(const char *name, hp_gflag_visitor visit, void *ctx,
                                        char *why, size_t why_cap);
/*
 * Sets a flag through gflags' SetCommandLineOption, so gflags' parser and the program's
 * validator decide. On success visits the flag twice: before (old) and after (new) the change.
 * Errors: -ENOENT unknown flag; -EINVAL the value does not parse for the flag's type;
 * -EPERM the program's validator refused it. Nothing is changed on error.
 */
typedef int (*hp_gflags_adapter_set_fn)(const char *name, const char *value,
                                        hp_gflag_visitor old_and_new, void *ctx, char *why,
                                        size_t why_cap);
/* glog's SetVLOGLevel(pattern, level); *previous gets the level the pattern had. -ENOSYS when
 * the process has no glog. */
typedef int (*hp_glog_adapter_set_vlog_fn)(const char *pattern, int level, int *previous,
                                           char *why, size_t why_cap);

/* ---- 2. the loader (gflags_loader.c, part of the agent) ----------------------------------- */

/* The adapter's functions, once loaded. */
struct hp_gflags_adapter {
    hp_gflags_adapter_each_fn each;
    hp_gflags_adapter_get_fn get;
    hp_gflags_adapter_set_fn set;
    hp_glog_adapter_set_vlog_fn set_vlog;
};

/*
 * Returns the adapter when this process has gflags, loading it on first use; else NULL with a
 * one-line reason in why ("this process has no gflags", or why the adapter could not be
 * loaded). A process without gflags never has anything loaded into it.
 */
const struct hp_gflags_adapter *hp_gflags_adapter(char *why, size_t why_cap);

/* The value flag `name` had when the agent first read the flags (the adapter's first load), or
 * NULL. Valid for the life of the process. Any thread. */
const char *hp_gflags_first_value(const char *name);

/* True when the process has glog (its SetVLOGLevel is reachable). */
bool hp_process_has_glog(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* HOTPATCH_GFLAGS_ADAPTER_H */
