/*
 * stop_internal.h — what the thread stop's files share (stop.c, ptrace_stop.c, signal_stop.c).
 * Not installed; nothing outside the stop includes it.
 *
 * Everything declared HP_STOPPED_WINDOW here lives in the section hotpatch_stopped and calls
 * nothing but other functions of that section and raw system calls (arch/x86_64_syscall.h).
 * Memory comes from mmap, never malloc: a stopped thread may hold the allocator's lock.
 */
#ifndef HOTPATCH_STOP_INTERNAL_H
#define HOTPATCH_STOP_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/user.h>

#include "engine.h"

/* ---- growable per-thread arrays (stop.c) ---------------------------------------------------- */

/* What the ptrace helper knows of one thread beyond its hp_thread_state. */
struct hp_traced {
    pid_t tid;
    uint8_t status;             /* HP_TRACED_* */
    uint8_t stop_kind;          /* HP_KIND_*: why it is stopped */
    int inject;                 /* signal to deliver when detaching (a signal-delivery-stop) */
    bool inert;                 /* a zombie or an io_uring worker: never runs user code */
    bool have_regs;             /* regs were read (a stop that failed part-way may not have) */
    struct user_regs_struct regs;
};
enum { HP_TRACED_SEIZED = 1, HP_TRACED_STOPPED, HP_TRACED_GONE, HP_TRACED_DETACHED };
enum { HP_KIND_NONE, HP_KIND_EVENT, HP_KIND_SIGNAL, HP_KIND_GROUP };

/* The per-thread arrays of the current stop: states[i] and traced[i] are the i-th thread.
 * tid_set is an open-addressed hash of the tids in them (0 = empty), used to notice new
 * threads in a rescan of /proc/PID/task in constant time per thread. All mmap'ed; they grow
 * (mremap) only while no signal handler or helper of a stop writes into them. */
struct hp_stop_arrays {
    struct hp_thread_state *states;
    struct hp_traced *traced;
    size_t cap;                 /* entries of states and traced */
    struct hp_tid_slot {
        int32_t tid;            /* 0: empty */
        uint32_t index;         /* its entry in states and traced */
    } *tid_set;
    size_t set_cap;             /* a power of two, >= 2 * cap */
    size_t count;               /* entries in use */
};
extern struct hp_stop_arrays hp_stop_arrays;

/* The ptrace helper's own stacks (their dead frames hold copies of the threads' registers). */
size_t hp_ptrace_owned_ranges(struct hp_range *out, size_t cap);

/* Makes room for n entries (keeping the first `count`); false when memory cannot be had. */
bool hp_stop_reserve(size_t n) HP_STOPPED_WINDOW;
/* Adds tid (entry `index`) to the set; false when it was already there. The set must have
 * room (reserve). */
bool hp_stop_set_add(pid_t tid, size_t index) HP_STOPPED_WINDOW;
/* The entry of tid, or -1. */
long hp_stop_index_of(pid_t tid) HP_STOPPED_WINDOW;
/* Forgets every entry. */
void hp_stop_clear(void) HP_STOPPED_WINDOW;

/* ---- raw helpers (stop.c) ------------------------------------------------------------------- */

long long hp_stop_now_ns(void) HP_STOPPED_WINDOW;
void hp_stop_sleep_ns(long ns) HP_STOPPED_WINDOW;
/* Reads a whole small file (at most cap - 1 bytes, NUL-terminated); bytes read or -errno. */
long hp_stop_read_file(const char *path, char *buf, size_t cap) HP_STOPPED_WINDOW;
/* The hex number after "\nNAME:" in a /proc status text; false when absent. */
bool hp_stop_status_hex(const char *text, const char *name, unsigned long long *out)
    HP_STOPPED_WINDOW;
/* The decimal number after "\nNAME:"; false when absent. */
bool hp_stop_status_dec(const char *text, const char *name, long *out) HP_STOPPED_WINDOW;
/* "/proc/PID/task/TID/LEAF" into buf (TID 0: "/proc/PID/LEAF"). */
void hp_stop_proc_path(char *buf, size_t cap, pid_t pid, pid_t tid, const char *leaf)
    HP_STOPPED_WINDOW;
/* State letter of /proc/PID/task/TID/stat (R, S, D, Z, T, t, X ...); 0 when unreadable. */
char hp_stop_task_state(pid_t pid, pid_t tid) HP_STOPPED_WINDOW;
/* True when the thread is an io_uring worker (PF_IO_WORKER): it never runs user code. */
bool hp_stop_task_is_io_worker(pid_t pid, pid_t tid) HP_STOPPED_WINDOW;

/*
 * Lists /proc/PID/task and appends every tid (except `skip`) not yet in the set to
 * hp_stop_arrays (states[i].tid and traced[i].tid set, the rest zeroed). Returns how many were
 * appended (they are entries [count - n, count)), or -errno (the directory cannot be read, or
 * no memory for the arrays). Linear in the number of threads.
 */
long hp_stop_list_new(pid_t pid, pid_t skip) HP_STOPPED_WINDOW;
/* Appends tid (states[i].tid and traced[i].tid set, the rest zeroed): 1, or 0 when it is there
 * already, or -ENOMEM. */
int hp_stop_add_tid(pid_t tid) HP_STOPPED_WINDOW;

/* ---- the two methods -------------------------------------------------------------------------- */

/* How a method's failure is to be taken. */
enum hp_stop_failure {
    HP_STOP_FAIL_NONE,
    HP_STOP_FAIL_REFUSED,       /* this method cannot work here: use the other one from now on */
    HP_STOP_FAIL_NOT_NOW,       /* cannot work this time (a debugger is attached): the other one */
    HP_STOP_FAIL_BUSY,          /* a thread did not stop: refuse, the other would not do better */
};

/* ptrace_stop.c. 0 with out filled from hp_stop_arrays; else -1, *kind and out->why set, every
 * thread running again. */
int hp_ptrace_stop(struct hp_stopped *out, int timeout_ms, enum hp_stop_failure *kind);
void hp_ptrace_resume(void);
/* Waits until the helper has let every thread of the last stop go. */
void hp_ptrace_quiesce(void) HP_STOPPED_WINDOW;
/* Why ptrace cannot be used in this process at all (checked once), or NULL. */
const char *hp_ptrace_unusable(void);

/* signal_stop.c. Same contract. */
int hp_signal_stop(struct hp_stopped *out, int timeout_ms);
void hp_signal_resume(void);

#endif /* HOTPATCH_STOP_INTERNAL_H */
