/*
 * hotpatch.h — the public C API of libhotpatch.
 *
 * A program that links libhotpatch registers the variables and functions it wants to be
 * changeable at run time, then calls hotpatch_start(). A background thread then serves a
 * control socket (/tmp/<pid>.socket, or the path in $HOTPATCH_SOCKET) where an operator reads
 * and sets those variables, loads libraries and upgrades functions, with the `hotpatch`
 * command-line client, the Python client or `nc -U`. The protocol is in docs/protocol.md.
 *
 * Conventions for every function here:
 *   - Return 0 on success and a negative errno value on failure (-EINVAL for a bad argument,
 *     -EEXIST for a name already registered, -ENOMEM, ...). Nothing aborts or exits.
 *   - All functions are thread-safe: they may be called from any thread, before or after
 *     hotpatch_start(), concurrently with the agent serving requests.
 *   - Names are 1 to 127 bytes of [A-Za-z0-9_.:-]. The registry copies the name.
 *   - Registered memory (variables, string buffers) must stay valid until it is unregistered
 *     with hotpatch_unregister() or the agent is stopped.
 */
#ifndef HOTPATCH_H
#define HOTPATCH_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define HOTPATCH_API __attribute__((visibility("default")))
#else
#define HOTPATCH_API
#endif

/* The version of this library and of the control protocol it speaks. */
#define HOTPATCH_VERSION "0.2.0"
#define HOTPATCH_PROTOCOL_VERSION 1

/* The type of a registered variable; the protocol spells them as in the comments. */
enum hotpatch_type {
    HOTPATCH_TYPE_BOOL = 1, /* bool      (C bool / C++ bool) */
    HOTPATCH_TYPE_INT,      /* int       */
    HOTPATCH_TYPE_UINT,     /* uint      (unsigned int) */
    HOTPATCH_TYPE_LONG,     /* long      */
    HOTPATCH_TYPE_ULONG,    /* ulong     (unsigned long) */
    HOTPATCH_TYPE_LLONG,    /* llong     (long long) */
    HOTPATCH_TYPE_ULLONG,   /* ullong    (unsigned long long) */
    HOTPATCH_TYPE_FLOAT,    /* float     */
    HOTPATCH_TYPE_DOUBLE,   /* double    */
    HOTPATCH_TYPE_STRING,   /* string    (a char buffer with a capacity, or a custom accessor) */
    HOTPATCH_TYPE_SCHAR,    /* schar     (signed char: a 1-byte integer) */
    HOTPATCH_TYPE_UCHAR,    /* uchar     (unsigned char) */
    HOTPATCH_TYPE_SHORT,    /* short     */
    HOTPATCH_TYPE_USHORT,   /* ushort    (unsigned short) */
};

/*
 * Starts the agent: creates the control socket and the thread that serves it.
 * The socket is $HOTPATCH_SOCKET when set, else /tmp/<pid>.socket; it is created with mode
 * 0600 (HOTPATCH_ALLOW_UIDS and HOTPATCH_ALLOW_GROUP add users; in a setuid or otherwise
 * secure-execution program every HOTPATCH_* variable is ignored). A stale socket of this user
 * left by a dead process is replaced; anything else at that path (another user's file,
 * directory, link or socket, or a live agent) is left alone and the agent serves instead in a
 * private directory it creates, /tmp/hotpatch-<pid>.XXXXXX/socket, and logs where
 * (hotpatch_socket_path() tells). Idempotent: returns 0 when the agent already runs.
 * Errors: -ENAMETOOLONG (path over 107 bytes), or the errno of the failing socket call (for
 * example when neither the path nor a private directory under /tmp can be created).
 * Thread-safe.
 */
HOTPATCH_API int hotpatch_start(void);

/*
 * Stops the agent: wakes and joins its thread, closes every connection and removes the
 * socket (only if the path still is the socket this agent created). Idempotent; returns 0
 * when the agent was not running. Registered variables and functions stay registered.
 * Called automatically when the process exits normally. Thread-safe; must not be called
 * from a validator or change callback (they run on the agent thread): returns -EDEADLK there.
 */
HOTPATCH_API int hotpatch_stop(void);

/* Returns true while the agent's thread serves the socket. Thread-safe. */
HOTPATCH_API bool hotpatch_running(void);

/*
 * Copies the path of the control socket (the one in use, or the one hotpatch_start() would
 * use) into buf. Returns the path's length, or -ENAMETOOLONG when it does not fit in cap.
 */
HOTPATCH_API int hotpatch_socket_path(char *buf, size_t cap);

/*
 * A validator decides whether a new value may be stored. `new_value` points to a value of the
 * variable's type (for strings: a NUL-terminated char array). Return 0 to accept; return
 * non-zero to refuse, optionally writing a one-line reason into `why` (capacity `why_cap`),
 * which the client sees as "error: <reason>". Runs on the agent thread with the registry lock
 * held: it must be quick and must not call hotpatch_* functions.
 */
typedef int (*hotpatch_validator)(const char *name, const void *new_value, char *why,
                                  size_t why_cap, void *user);

/*
 * A change callback is told after a new value has been stored. `old_value` and `new_value`
 * point to values of the variable's type. Same context rules as the validator.
 */
typedef void (*hotpatch_on_change)(const char *name, const void *old_value,
                                   const void *new_value, void *user);

/*
 * Registers a variable of a numeric or bool type at `addr` under `name`. Prefer the
 * hotpatch_register_variable() macro, which derives `type` from the pointer's type.
 * `addr` must be aligned for its type: reads and sets are single atomic loads and stores, so
 * the program may read the variable from any thread without a lock (a plain read of an
 * aligned scalar; use __atomic_load_n or C11 atomics for strict data-race freedom).
 * `validate` and `on_change` may be NULL; `user` is passed to both.
 * Errors: -EINVAL (bad name, NULL or misaligned addr, type not numeric/bool), -EEXIST (name
 * taken by a variable), -ENOMEM.
 */
HOTPATCH_API int hotpatch_register_typed(const char *name, enum hotpatch_type type, void *addr,
                                         hotpatch_validator validate,
                                         hotpatch_on_change on_change, void *user);

/*
 * Registers a NUL-terminated string held in the program's buffer `buf` of `cap` bytes.
 * A set stores at most cap-1 bytes and refuses longer values. A set writes the buffer while the
 * program may be reading it; a program that reads it from other threads should take a copy
 * with hotpatch_get_string(), which reads under the registry lock.
 * Errors: -EINVAL (bad name, NULL buf, cap < 1), -EEXIST, -ENOMEM.
 */
HOTPATCH_API int hotpatch_register_string(const char *name, char *buf, size_t cap);

/* hotpatch_register_string() with a validator and a change callback (either may be NULL). */
HOTPATCH_API int hotpatch_register_string_checked(const char *name, char *buf, size_t cap,
                                                  hotpatch_validator validate,
                                                  hotpatch_on_change on_change, void *user);

/*
 * Copies the current value of the registered string variable `name` into out (capacity cap),
 * under the registry lock, so the copy is never torn by a concurrent set.
 * Returns the value's length, -ENOENT when no string variable has that name, or
 * -ENAMETOOLONG when the value does not fit (out then holds a truncated, terminated copy).
 */
HOTPATCH_API int hotpatch_get_string(const char *name, char *out, size_t cap);

/*
 * A custom string variable, for values the agent cannot address directly (a C++ std::string,
 * a value guarded by the program's own lock). `get` writes the current value, NUL-terminated,
 * into out (capacity cap) and returns its length (or -ENAMETOOLONG when it does not fit);
 * `set` stores a new value and returns 0, or non-zero to refuse, writing a reason into why.
 * Both run on the agent thread under the registry lock and must not call hotpatch_*.
 */
struct hotpatch_string_accessor {
    int (*get)(void *user, char *out, size_t cap);
    int (*set)(void *user, const char *value, char *why, size_t why_cap);
    void *user;
};
HOTPATCH_API int hotpatch_register_string_accessor(const char *name,
                                                   const struct hotpatch_string_accessor *acc);

/*
 * Registers a function the operator may upgrade by this name (`func list`, `func upgrade`).
 * Functions that the process's symbol tables name can be upgraded without registering;
 * registering gives a stable name that wins over symbol names.
 * Errors: -EINVAL (bad name, NULL fn), -EEXIST (name taken by a function), -ENOMEM.
 */
HOTPATCH_API int hotpatch_register_function(const char *name, void *fn);

/*
 * Removes the variable or function registered as `name` (variables first). Returns 0, or
 * -ENOENT when nothing has that name. After it returns the agent no longer touches the
 * variable's memory.
 */
HOTPATCH_API int hotpatch_unregister(const char *name);

#ifdef __cplusplus
} /* extern "C" */
#endif

/*
 * hotpatch_register_variable(name, &x): registers a numeric or bool variable, its type taken
 * from the pointer (int, unsigned, long, unsigned long, long long, unsigned long long, short,
 * unsigned short, signed char, unsigned char, bool, float, double; a plain char * is not
 * taken: it is a string). hotpatch_register_variable_checked() adds a validator, a change callback
 * and a user pointer. For strings use hotpatch_register_string(). C11 and later; C++ programs
 * use hotpatch::RegisterVariable from hotpatch.hpp.
 */
#if !defined(__cplusplus) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define HOTPATCH_TYPE_OF_POINTER(ptr)                                                      \
    _Generic((ptr),                                                                        \
        bool *: HOTPATCH_TYPE_BOOL,                                                        \
        int *: HOTPATCH_TYPE_INT,                                                          \
        unsigned int *: HOTPATCH_TYPE_UINT,                                                \
        long *: HOTPATCH_TYPE_LONG,                                                        \
        unsigned long *: HOTPATCH_TYPE_ULONG,                                              \
        long long *: HOTPATCH_TYPE_LLONG,                                                  \
        unsigned long long *: HOTPATCH_TYPE_ULLONG,                                        \
        float *: HOTPATCH_TYPE_FLOAT,                                                      \
        double *: HOTPATCH_TYPE_DOUBLE,                                                    \
        short *: HOTPATCH_TYPE_SHORT,                                                      \
        unsigned short *: HOTPATCH_TYPE_USHORT,                                            \
        signed char *: HOTPATCH_TYPE_SCHAR,                                                \
        unsigned char *: HOTPATCH_TYPE_UCHAR)
#define hotpatch_register_variable(name, ptr)                                              \
    hotpatch_register_typed((name), HOTPATCH_TYPE_OF_POINTER(ptr), (void *)(ptr), NULL,    \
                            NULL, NULL)
#define hotpatch_register_variable_checked(name, ptr, validate, on_change, user)           \
    hotpatch_register_typed((name), HOTPATCH_TYPE_OF_POINTER(ptr), (void *)(ptr),          \
                            (validate), (on_change), (user))
#endif

#endif /* HOTPATCH_H */
