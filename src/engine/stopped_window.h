/*
 * stopped_window.h — the mark of code that runs while other threads are stopped (included by
 * engine.h; arch/ may include it too). Not installed.
 */
#ifndef HOTPATCH_STOPPED_WINDOW_H
#define HOTPATCH_STOPPED_WINDOW_H

/*
 * Code that runs while other threads of the process are stopped lives in a section of its own,
 * hotpatch_stopped: a stopped thread may hold any lock (the allocator's, stdio's, the loader's)
 * or be inside any function a patch replaced, so this code calls nothing outside the section
 * but raw system calls (tests/stopped_window_check.py proves it on the built library).
 * noinline keeps its callers from copying it out of the section; no_sanitize and no stack
 * protector keep the instrumentation's calls out.
 */
#if defined(__has_attribute)
#if __has_attribute(no_stack_protector)
#define HP_NO_STACK_PROTECTOR no_stack_protector,
#endif
#if __has_attribute(disable_sanitizer_instrumentation)
#define HP_NO_INSTRUMENTATION disable_sanitizer_instrumentation,
#endif
#endif
#ifndef HP_NO_STACK_PROTECTOR
#define HP_NO_STACK_PROTECTOR
#endif
#ifndef HP_NO_INSTRUMENTATION
#define HP_NO_INSTRUMENTATION
#endif
#define HP_STOPPED_WINDOW                                                                   \
    __attribute__((section("hotpatch_stopped"), noinline, HP_NO_STACK_PROTECTOR            \
                   HP_NO_INSTRUMENTATION no_sanitize("address", "undefined", "thread")))

#include <stdarg.h>
#include <stddef.h>

/* A tiny snprintf for messages formed while threads are stopped (stop.c): %s %c %d %u %ld %lu
 * %lx %zu %p %% and the '#' flag for hex; always NUL-terminates. */
void hp_stop_fmt(char *buf, size_t cap, const char *fmt, ...) HP_STOPPED_WINDOW;
void hp_stop_vfmt(char *buf, size_t cap, const char *fmt, va_list ap) HP_STOPPED_WINDOW;

#endif /* HOTPATCH_STOPPED_WINDOW_H */
