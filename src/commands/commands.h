/*
 * commands.h — the command families (src/commands/), one file each, and what they share.
 * Not installed.
 *
 *   core.c     help, version, session, quit
 *   status.c   status, history, diff: what the agent holds and what was changed
 *   var.c      registered variables
 *   lib.c      loading and unloading shared libraries
 *   func.c     upgrading and rolling back functions (over the patch engine, engine/engine.h)
 *   gflags.c   gflags flags (through the gflags bridge, preload/gflags_adapter.h)
 *   glog.c     glog's logging settings
 *   patch.c    patch files: apply, revert, list (patch_file.c reads their metadata)
 *   table.c    the dispatch table the agent serves (hp_command_families, agent/agent.h)
 *
 * Every handler runs on the agent's thread (see agent/agent.h), one at a time.
 */
#ifndef HOTPATCH_COMMANDS_H
#define HOTPATCH_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>

#include "agent/agent.h"

/* Each command family's table, terminated by a row with family == NULL. */
extern const struct hp_command hp_core_commands[];
extern const struct hp_command hp_status_commands[];
extern const struct hp_command hp_var_commands[];
extern const struct hp_command hp_lib_commands[];
extern const struct hp_command hp_func_commands[];
extern const struct hp_command hp_gflags_commands[];
extern const struct hp_command hp_glog_commands[];
extern const struct hp_command hp_patch_commands[];

/* ---- var.c ----------------------------------------------------------------------------- */
/* Visits each global reached by symbol (`var get/set TYPE SYMBOL`) that still resolves to the
 * same bytes: its name as given, the value first seen there, and the value now. Agent thread. */
typedef void (*hp_symbol_value_visitor)(const char *name, const char *first, const char *now,
                                        void *ctx);
void hp_var_each_symbol(hp_symbol_value_visitor visit, void *ctx);

/* ---- lib.c ----------------------------------------------------------------------------- */
/*
 * Asks the subsystems that may hold code of a library whether it can be unmapped now.
 * Returns 0 when it can; else non-zero with a one-line reason in why. (The patch engine
 * answers for installed functions; see docs/protocol.md, `lib unload`.)
 */
int hp_library_busy(const struct hp_library_view *lib, char *why, size_t why_cap);

/* For `CMD [OPTION] ARG`: *given tells whether the first word is OPTION; false with the
 * reply's error set when it is another word. */
bool hp_request_option(const struct hp_request *req, const char *option, bool *given,
                       struct hp_reply *reply);

/*
 * The descriptor of the library to load for a request, checked: the one the client sent, or
 * PATH opened by the trusted walk (agent/trust.c). A new descriptor, or -1 with the reply's
 * error set ("refusing to load PATH: ..."). Shared by `lib load` and `patch apply`.
 */
int hp_lib_open_checked(const struct hp_request *req, const char *path, struct hp_reply *reply);
/* Loads the checked descriptor fd (as /proc/self/fd/N, RTLD_NOW | RTLD_LOCAL), which then stays
 * open as *file while the library is loaded. The handle, or NULL with the reply's error set
 * (fd is then closed). */
void *hp_lib_dlopen_held(int fd, const char *path, struct hp_held_file *file,
                         struct hp_reply *reply);
/* Closes a held descriptor, only while it still names the file it was opened on. */
void hp_lib_release_file(const struct hp_held_file *file);

/* ---- func.c ---------------------------------------------------------------------------- */
struct hp_symbol;
/*
 * Resolves FUNC as the func commands accept it: a registered name first (out->registered), else
 * the engine's hp_symbol_resolve with the names given to `lib load` as aliases. 0 or a negative
 * errno with a one-line reason (see hp_symbol_resolve). Agent thread.
 */
int hp_func_resolve(const char *func, struct hp_symbol *out, char *why, size_t why_cap);
/* Resolves VARIABLE among the data symbols (engine's hp_symbol_resolve_data), the names given
 * to `lib load` as aliases. 0 or a negative errno with a one-line reason. Agent thread. */
int hp_data_resolve(const char *variable, struct hp_symbol *out, char *why, size_t why_cap);
/* Resolves a patch's import: a function as hp_func_resolve does, else a variable of the
 * symbol tables (static ones too, hp_data_resolve). */
int hp_symbol_resolve_any(const char *symbol, struct hp_symbol *out, char *why, size_t why_cap);
/* The patch engine's answer to hp_library_busy: installed versions, threads inside. */
int hp_func_library_busy(const struct hp_library_view *lib, char *why, size_t why_cap);

/* ---- gflags.c (shared with glog.c) ----------------------------------------------------- */
/* How a gflags value of `type` appears in JSON (bool, number, or string for text/nan/inf). */
enum hp_json_kind hp_gflag_json_kind(const char *type, const char *text);

/*
 * Sets a flag through the adapter and fills reply: fields name, old, value and the message
 * "NAME = NEW (was OLD)", or one error line. `describe`, when not NULL, rewrites a value for the
 * message (e.g. "2" -> "ERROR (2)") into buf and returns buf.
 */
typedef const char *(*hp_value_describer)(const char *value, char *buf, size_t cap);
void hp_gflags_set_reply(const char *name, const char *value, hp_value_describer describe,
                         struct hp_reply *reply);

/* ---- patch_file.c ---------------------------------------------------------------------- */
#define HP_PATCH_MAX_FUNCTIONS 64
#define HP_PATCH_MAX_BUILD_IDS 8
struct hotpatch_patch_record;
/* Two strings of a record (they point into hp_patch_file.records). */
struct hp_patch_pair {
    const char *a, *b;
};
/* A patch file's metadata (include/hotpatch_patch.h), as read from its descriptor. */
struct hp_patch_file {
    char name[64];
    char description[256];
    struct hp_patch_pair replaces[HP_PATCH_MAX_FUNCTIONS];   /* target, replacement symbol */
    size_t n_replaces;
    struct hp_patch_pair imports[HP_PATCH_MAX_FUNCTIONS];    /* process symbol, local symbol */
    size_t n_imports;
    struct hp_patch_pair build_ids[HP_PATCH_MAX_BUILD_IDS];  /* object, hex */
    size_t n_build_ids;
    struct hotpatch_patch_record *records;
};
/*
 * Reads and checks the metadata of the patch open at fd, without loading it: its name (valid
 * and present), at least one replacement, records well formed. 0, or a negative errno with a
 * one-line reason ("no hotpatch metadata ..."). Free with hp_patch_file_free().
 */
int hp_patch_file_read(int fd, struct hp_patch_file *out, char *why, size_t why_cap);
void hp_patch_file_free(struct hp_patch_file *f);
/* Checks, from the file's own dynamic symbol table and before anything is loaded, that every
 * replacement is a function the patch itself defines (exported: not static, not a
 * dependency's) and every import slot a writable pointer variable it defines. 0, or a
 * negative errno with a one-line reason ("it defines no function ..."). */
int hp_patch_file_check_symbols(int fd, const struct hp_patch_file *meta, char *why,
                                size_t why_cap);

/* ---- patch.c ------------------------------------------------------------------------------ */
/* Whether a patch of that name is applied (not reverted). Agent thread. */
bool hp_patch_is_applied(const char *name);
/* The GNU build-id (hex) of the loaded object named `object` ("" the main program, else its
 * file name as in /proc/PID/exe or the loader's list). 0; -ENOENT not loaded; -ENODATA no
 * build-id. */
int hp_loaded_build_id(const char *object, char *hex, size_t cap);

#endif /* HOTPATCH_COMMANDS_H */
