/*
 * patch.c — the function patch engine: versions, relays, the SIGTRAP handler, the unload check.
 *
 * A patched function is redirected by one instruction written at its patch site (its entry, or
 * just after an endbr64 there): `jmp rel32`. When the replacement is within +-2 GB of the site
 * the jump goes straight to it (one jump on the hot path). Otherwise it goes to this function's
 * relay slot, a `jmp *cell(%rip)` in a page allocated within +-2 GB of the site, whose 8-byte
 * cell holds the replacement's address (two jumps). Moving between two far versions is then a
 * single atomic store to the cell: no code changes at all. The hot path has no lock, no atomic
 * and no lookup.
 *
 * Versions stack: each function keeps its original bytes and a stack of versions; an upgrade
 * pushes and installs the new top, a rollback pops and installs what is below, down to the
 * exact original bytes.
 *
 * Which write protocol (patch_x86_64.c does the writing):
 *   - original code -> jump: every other thread is stopped (patch_stop.c) and its PC and stack
 *     are checked: if one is paused between two of the instructions the jump overwrites (or a
 *     signal frame on its stack would return there), the threads are released and the check
 *     retried a few times, then the upgrade is refused. With no thread inside, the five bytes
 *     are written while everyone is parked. (An int3 alone cannot protect a thread already
 *     past the first instruction; the kernel avoids this by patching 5-byte nops only.)
 *   - jump -> jump, jump -> original code: the site holds one complete instruction, so no
 *     thread can be inside it; the int3 protocol (text_poke_bp) is used and no thread is
 *     disturbed. If a thread blocks SIGTRAP (a trap there would kill the process), the write
 *     is done with every thread stopped instead.
 *
 * The SIGTRAP redirect: a thread that executes the int3 of a site being written enters
 * hp_patch_sigtrap(), waits (yielding) until the write is complete, and then resumes at the
 * site, where it executes a complete instruction: the old code or the new jump. It thus goes
 * to the new code or resumes the original correctly, without emulating any instruction. A
 * SIGTRAP that is not ours (no site of ours at PC-1) goes to the handler the program had
 * (SA_SIGINFO or not), or gets the default action when it had none. The handler is installed
 * before the first int3 is written, reinstalled (chaining to the newcomer) if the program
 * replaced it, and removed once no function is patched any more and a thread stop has proved
 * that no thread still has one of our traps pending.
 *
 * Relay pages: the closest hole in /proc/self/maps within +-2 GB of the site is mapped with
 * MAP_FIXED_NOREPLACE (never clobbering anything), holes right after [heap] are approached from
 * their far end so brk keeps room. One page of code (512 slots, written once then made R-X)
 * and one page of cells (R-W, no exec) per region. Relay memory is never unmapped.
 *
 * The unload check refuses while any version (installed or stacked) comes from the library;
 * then stops every thread and refuses while any register, PC or stack word holds an address
 * inside the library, or a thread is inside a relay slot.
 *
 * Lock: engine_lock guards everything in this file and the writer state of patch_x86_64.c and
 * patch_stop.c; every hp_patch_* entry point holds it for its whole run. The only code that runs
 * without it is hp_patch_sigtrap, which reads the atomic site table below.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "patch.h"

#define MAX_SITES 4096
#define RELAY_SLOTS 512
#define STOP_TIMEOUT_MS 1000
#define STOP_ATTEMPTS 20
#define TWO_GB (1LL << 31)

struct version {
    char library[128];
    char symbol[256];
    void *address;
};

struct relay_region {
    uint8_t *code;              /* RELAY_SLOTS slots of HP_RELAY_SLOT_SIZE bytes, R-X */
    _Atomic(void *) *cells;     /* their destinations, R-W */
    size_t used;
    struct relay_region *next;
};

struct patched {
    char name[256];
    uint8_t *entry;
    uint8_t *site;
    uint8_t original[HP_JUMP_SIZE];
    struct version *versions;
    int depth, cap;
    uint8_t *relay;             /* this function's relay slot, NULL until a far version */
    _Atomic(void *) *cell;
};

static pthread_mutex_t engine_lock = PTHREAD_MUTEX_INITIALIZER;

/* Engine lock. Records of patched functions (never freed once their first patch succeeded, so
 * `func list` keeps showing them), relay regions, statistics. */
static struct patched **functions;
static size_t n_functions, cap_functions;
static struct relay_region *relays;
static struct hp_patch_stats stats;
static bool traps_since_stop;   /* an int3 was written since the last successful thread stop */

/* Read by the SIGTRAP handler without the lock: sites ever patched (append-only) and the site
 * being written with the int3 protocol now (0 when none). */
static _Atomic uintptr_t trap_sites[MAX_SITES];
static atomic_int n_trap_sites;
static _Atomic uintptr_t busy_site;
static atomic_ulong trap_count;
static struct sigaction program_sigtrap;   /* what the program had; written under the lock */
static bool sigtrap_installed;

/* ---- the SIGTRAP handler ------------------------------------------------------------------- */

static bool is_known_site(uintptr_t site)
{
    int n = atomic_load(&n_trap_sites);
    for (int i = 0; i < n; i++)
        if (atomic_load(&trap_sites[i]) == site)
            return true;
    return false;
}

/* True when the trap at site came from our int3: it then waits for the write to finish. */
static bool hold_until_written(uintptr_t site)
{
    if (!is_known_site(site))
        return false;
    for (;;) {
        if (atomic_load(&busy_site) == site) {
            sched_yield();
            continue;
        }
        if (!hp_arch_is_trap(*(volatile uint8_t *)site))
            return true;   /* the write completed between the trap and this handler */
        if (atomic_load(&busy_site) != site)
            return false;  /* an int3 of the program's own at a site of ours */
    }
}

static void chain_to_program(int sig, siginfo_t *info, void *ucontext)
{
    struct sigaction prev = program_sigtrap;
    if (prev.sa_flags & SA_SIGINFO) {
        prev.sa_sigaction(sig, info, ucontext);
    } else if (prev.sa_handler == SIG_IGN) {
        return;
    } else if (prev.sa_handler == SIG_DFL) {
        /* The default action (core dump): restore it and re-raise; delivered on return. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(SIGTRAP, &dfl, NULL);
        raise(SIGTRAP);
    } else {
        prev.sa_handler(sig);
    }
}

void hp_patch_sigtrap(int sig, siginfo_t *info, void *ucontext)
{
    int saved_errno = errno;
    uintptr_t site = hp_arch_trap_site(hp_arch_context_pc(ucontext));
    if (hold_until_written(site)) {
        atomic_fetch_add(&trap_count, 1);
        hp_arch_context_set_pc(ucontext, site);
    } else {
        chain_to_program(sig, info, ucontext);
    }
    errno = saved_errno;
}

static bool sigtrap_is_ours(const struct sigaction *sa)
{
    return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == hp_patch_sigtrap;
}

/* Installs our handler, or reinstalls it when the program replaced it (chaining to theirs). */
static int ensure_sigtrap(char *why, size_t why_cap)
{
    struct sigaction current;
    if (sigaction(SIGTRAP, NULL, &current) != 0)
        goto fail;
    if (sigtrap_installed && sigtrap_is_ours(&current))
        return 0;
    struct sigaction ours;
    memset(&ours, 0, sizeof ours);
    ours.sa_sigaction = hp_patch_sigtrap;
    /* SA_NODEFER: the handler executes no int3, and a thread inside it must not look as if it
     * blocked SIGTRAP (see write_over_jump). Empty mask: the stop signal must be able to nest. */
    ours.sa_flags = SA_SIGINFO | SA_RESTART | SA_NODEFER;
    sigemptyset(&ours.sa_mask);
    program_sigtrap = current;
    if (sigaction(SIGTRAP, &ours, NULL) != 0)
        goto fail;
    sigtrap_installed = true;
    return 0;
fail:
    snprintf(why, why_cap, "cannot install the SIGTRAP handler: %s", strerror(errno));
    return -errno;
}

static bool any_function_patched(void)
{
    for (size_t i = 0; i < n_functions; i++)
        if (functions[i]->depth > 0)
            return true;
    return false;
}

/*
 * Removes our SIGTRAP handler once no patch needs it. A thread that executed one of our int3
 * may not have run its handler yet (preempted between the trap and the delivery); a thread
 * stop proves it has (synchronous signals are delivered before ours), so one is done unless
 * none was needed. When threads cannot be stopped now, the handler stays for a later attempt.
 */
static void release_sigtrap_if_unused(void)
{
    if (!sigtrap_installed || any_function_patched())
        return;
    if (traps_since_stop) {
        struct hp_stopped stopped;
        if (hp_threads_stop(&stopped, STOP_TIMEOUT_MS) != 0)
            return;
        stats.stops++;
        hp_threads_resume(&stopped);
        traps_since_stop = false;
    }
    struct sigaction current;
    if (sigaction(SIGTRAP, NULL, &current) == 0 && sigtrap_is_ours(&current))
        sigaction(SIGTRAP, &program_sigtrap, NULL);
    sigtrap_installed = false;
}

/* ---- records ------------------------------------------------------------------------------- */

static struct patched *find_by_entry(const void *entry)
{
    for (size_t i = 0; i < n_functions; i++)
        if (functions[i]->entry == entry)
            return functions[i];
    return NULL;
}

static struct patched *find_by_name(const char *name)
{
    for (size_t i = 0; i < n_functions; i++)
        if (strcmp(functions[i]->name, name) == 0)
            return functions[i];
    return NULL;
}

static int add_trap_site(uintptr_t site, char *why, size_t why_cap)
{
    if (is_known_site(site))
        return 0;
    int n = atomic_load(&n_trap_sites);
    if (n >= MAX_SITES) {
        snprintf(why, why_cap, "%d functions have been patched already: the limit", MAX_SITES);
        return -ENOSPC;
    }
    atomic_store(&trap_sites[n], site);
    atomic_store(&n_trap_sites, n + 1);
    return 0;
}

static struct patched *new_record(const struct hp_patch_target *t, size_t skip, char *why,
                                  size_t why_cap)
{
    if (n_functions == cap_functions) {
        size_t cap = cap_functions ? cap_functions * 2 : 16;
        struct patched **grown = realloc(functions, cap * sizeof *grown);
        if (!grown)
            goto nomem;
        functions = grown;
        cap_functions = cap;
    }
    struct patched *p = calloc(1, sizeof *p);
    if (!p)
        goto nomem;
    snprintf(p->name, sizeof p->name, "%s", t->name);
    p->entry = t->entry;
    p->site = p->entry + skip;
    memcpy(p->original, p->site, HP_JUMP_SIZE);
    return p;
nomem:
    snprintf(why, why_cap, "out of memory");
    return NULL;
}

static int push_version(struct patched *p, const struct hp_patch_origin *o)
{
    if (p->depth == p->cap) {
        int cap = p->cap ? p->cap * 2 : 4;
        struct version *grown = realloc(p->versions, (size_t)cap * sizeof *grown);
        if (!grown)
            return -ENOMEM;
        p->versions = grown;
        p->cap = cap;
    }
    struct version *v = &p->versions[p->depth++];
    snprintf(v->library, sizeof v->library, "%s", o->library ? o->library : "");
    snprintf(v->symbol, sizeof v->symbol, "%s", o->symbol ? o->symbol : "");
    v->address = o->address;
    return 0;
}

/* ---- relay slots ----------------------------------------------------------------------------- */

static bool slot_reaches(const uint8_t *site, const uint8_t *slot)
{
    return hp_arch_near(site, slot);
}

static struct relay_region *map_region_at(uintptr_t at)
{
    long page = sysconf(_SC_PAGESIZE);
    void *mem = mmap((void *)at, 2 * (size_t)page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (mem == MAP_FAILED)
        return NULL;
    if ((uintptr_t)mem != at) {  /* a kernel without MAP_FIXED_NOREPLACE took it as a hint */
        munmap(mem, 2 * (size_t)page);
        return NULL;
    }
    struct relay_region *r = calloc(1, sizeof *r);
    if (!r) {
        munmap(mem, 2 * (size_t)page);
        return NULL;
    }
    r->code = mem;
    r->cells = (_Atomic(void *) *)((uint8_t *)mem + page);
    for (size_t i = 0; i < RELAY_SLOTS; i++)
        hp_arch_encode_relay(r->code + i * HP_RELAY_SLOT_SIZE, r->code + i * HP_RELAY_SLOT_SIZE,
                             &r->cells[i]);
    if (mprotect(r->code, (size_t)page, PROT_READ | PROT_EXEC) != 0) {
        munmap(mem, 2 * (size_t)page);
        free(r);
        return NULL;
    }
    return r;
}

/* The candidate address in hole [lo, hi) closest to site, for a region of `size` bytes. */
static bool candidate_in_hole(uintptr_t lo, uintptr_t hi, uintptr_t site, size_t size,
                              bool after_heap, uintptr_t *out)
{
    if (hi - lo < size)
        return false;
    uintptr_t c;
    if (hi <= site)
        c = hi - size;                        /* hole below: its top is closest */
    else if (lo >= site)
        c = after_heap ? hi - size : lo;      /* hole above: its bottom, unless brk needs it */
    else
        c = lo;
    intptr_t distance = (intptr_t)c - (intptr_t)site;
    if (distance < 0)
        distance = -distance;
    if (distance >= TWO_GB - (intptr_t)(2 * size))
        return false;
    *out = c;
    return true;
}

static struct relay_region *allocate_region_near(const uint8_t *site)
{
    const char *maps = hp_maps_text();
    if (!maps)
        return NULL;
    long page = sysconf(_SC_PAGESIZE);
    size_t size = 2 * (size_t)page;
    uintptr_t prev_end = 0x10000, best = 0;
    bool prev_heap = false;
    unsigned long long best_distance = ~0ULL;
    for (const char *line = maps; *line;) {
        char *end;
        uintptr_t lo = strtoull(line, &end, 16);
        uintptr_t hi = strtoull(end + 1, &end, 16);
        const char *eol = strchr(line, '\n');
        uintptr_t c;
        if (lo > prev_end && candidate_in_hole(prev_end, lo, (uintptr_t)site, size, prev_heap, &c)) {
            unsigned long long d = c > (uintptr_t)site ? c - (uintptr_t)site : (uintptr_t)site - c;
            if (d < best_distance)
                best = c, best_distance = d;
        }
        prev_end = hi;
        prev_heap = eol ? memmem(line, (size_t)(eol - line), "[heap]", 6) != NULL
                        : strstr(line, "[heap]") != NULL;
        if (!eol)
            break;
        line = eol + 1;
    }
    return best ? map_region_at(best) : NULL;
}

static int assign_relay(struct patched *p, char *why, size_t why_cap)
{
    if (p->relay)
        return 0;
    struct relay_region *r = relays;
    while (r && (r->used == RELAY_SLOTS || !slot_reaches(p->site, r->code + r->used * 8)))
        r = r->next;
    if (!r) {
        r = allocate_region_near(p->site);
        if (!r) {
            snprintf(why, why_cap, "no free address space within 2 GB of %s (%p) for a relay "
                     "page, and the replacement is farther than a jmp rel32 reaches", p->name,
                     (void *)p->entry);
            return -ENOMEM;
        }
        r->next = relays;
        relays = r;
    }
    p->relay = r->code + r->used * HP_RELAY_SLOT_SIZE;
    p->cell = &r->cells[r->used];
    r->used++;
    return 0;
}

static bool in_relay_code(uintptr_t pc)
{
    long page = sysconf(_SC_PAGESIZE);
    for (struct relay_region *r = relays; r; r = r->next)
        if (pc >= (uintptr_t)r->code && pc < (uintptr_t)r->code + (uintptr_t)page)
            return true;
    return false;
}

/* ---- writing a site ---------------------------------------------------------------------------- */

struct inside_check {
    uintptr_t lo, hi;       /* (site, site + HP_JUMP_SIZE): resumption points we would cut */
    pid_t tid;
    uintptr_t word;
};

static int word_inside(void *ctx, pid_t tid, uintptr_t word, bool is_pc)
{
    (void)is_pc;
    struct inside_check *c = ctx;
    if (word > c->lo && word < c->hi) {
        c->tid = tid;
        c->word = word;
        return 1;
    }
    return 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* Original code -> jump, with every thread stopped and proven outside the overwritten bytes. */
static int write_over_original(struct patched *p, const uint8_t *code, char *why, size_t why_cap)
{
    struct inside_check check = {(uintptr_t)p->site, (uintptr_t)p->site + HP_JUMP_SIZE, 0, 0};
    for (int attempt = 0; attempt < STOP_ATTEMPTS; attempt++) {
        struct hp_stopped stopped;
        if (hp_threads_stop(&stopped, STOP_TIMEOUT_MS) != 0) {
            snprintf(why, why_cap, "cannot prove no thread is inside the first bytes of %s: %s",
                     p->name, stopped.why);
            return -EBUSY;
        }
        stats.stops++;
        traps_since_stop = false;
        char scan_why[160] = "";
        int found = hp_threads_scan(&stopped, word_inside, &check, scan_why, sizeof scan_why);
        int rc = 0;
        if (found == 0) {
            rc = hp_arch_poke_stopped(p->site, code, HP_JUMP_SIZE, why, why_cap);
            stats.stopped_pokes++;
        }
        hp_threads_resume(&stopped);
        if (found == 0)
            return rc;
        if (found < 0) {
            snprintf(why, why_cap, "cannot check the threads before patching %s: %s", p->name,
                     scan_why);
            return -EBUSY;
        }
        sleep_ms(1);
    }
    snprintf(why, why_cap, "thread %d is paused inside the first %d bytes of %s (at %#lx); "
             "nothing changed, try again", check.tid, HP_JUMP_SIZE, p->name,
             (unsigned long)check.word);
    return -EBUSY;
}

/* Jump -> anything: int3 protocol, or with threads stopped when one blocks SIGTRAP. */
static int write_over_jump(struct patched *p, const uint8_t *code, char *why, size_t why_cap)
{
    pid_t blocker;
    if (hp_threads_blocking(SIGTRAP, &blocker, 1) > 0) {
        struct hp_stopped stopped;
        if (hp_threads_stop(&stopped, STOP_TIMEOUT_MS) != 0) {
            snprintf(why, why_cap, "thread %d blocks SIGTRAP and the threads cannot be stopped "
                     "to write %s safely: %s", blocker, p->name, stopped.why);
            return -EBUSY;
        }
        stats.stops++;
        traps_since_stop = false;
        int rc = hp_arch_poke_stopped(p->site, code, HP_JUMP_SIZE, why, why_cap);
        stats.stopped_pokes++;
        hp_threads_resume(&stopped);
        return rc;
    }
    int rc = ensure_sigtrap(why, why_cap);
    if (rc != 0)
        return rc;
    atomic_store(&busy_site, (uintptr_t)p->site);
    rc = hp_arch_poke_live(p->site, code, HP_JUMP_SIZE, why, why_cap);
    atomic_store(&busy_site, 0);
    traps_since_stop = true;
    stats.int3_pokes++;
    return rc;
}

static int write_site(struct patched *p, const uint8_t *code, char *why, size_t why_cap)
{
    if (memcmp(p->site, code, HP_JUMP_SIZE) == 0)
        return 0;
    if (memcmp(p->site, p->original, HP_JUMP_SIZE) == 0)
        return write_over_original(p, code, why, why_cap);
    return write_over_jump(p, code, why, why_cap);
}

/* Makes the site run `to`: a direct jump when near, else through the relay slot. */
static int install_destination(struct patched *p, void *to, char *why, size_t why_cap)
{
    uint8_t code[HP_JUMP_SIZE];
    if (hp_arch_near(p->site, to)) {
        hp_arch_encode_jump(code, p->site, to);
        return write_site(p, code, why, why_cap);
    }
    int rc = assign_relay(p, why, why_cap);
    if (rc != 0)
        return rc;
    void *before = atomic_load(p->cell);
    atomic_store_explicit(p->cell, to, memory_order_release);
    stats.relay_stores++;
    hp_arch_encode_jump(code, p->site, p->relay);
    rc = write_site(p, code, why, why_cap);
    if (rc != 0)
        atomic_store(p->cell, before);
    return rc;
}

static int install_top(struct patched *p, char *why, size_t why_cap)
{
    if (p->depth == 0)
        return write_site(p, p->original, why, why_cap);
    return install_destination(p, p->versions[p->depth - 1].address, why, why_cap);
}

/* ---- upgrade and rollback --------------------------------------------------------------------- */

static int check_executable(const char *what, const void *address, char *why, size_t why_cap)
{
    int prot = hp_maps_protection((uintptr_t)address);
    if (prot >= 0 && (prot & PROT_EXEC))
        return 0;
    snprintf(why, why_cap, "%s at %p is not in executable memory%s", what, address,
             prot < 0 ? " (not mapped)" : "");
    return -EFAULT;
}

/* Functions the engine itself calls while a site is half-written: patching them would trap
 * the engine in its own write. */
static int check_not_engine_path(const struct hp_patch_target *t, char *why, size_t why_cap)
{
    void *const engine_path[] = {
        (void *)pwrite, (void *)syscall, (void *)mprotect, (void *)memcmp, (void *)memcpy,
        (void *)sched_yield, (void *)sysconf, (void *)hp_patch_upgrade, (void *)hp_patch_sigtrap,
        (void *)hp_arch_poke_live, (void *)hp_arch_write_text, (void *)hp_arch_sync_cores,
    };
    for (size_t i = 0; i < sizeof engine_path / sizeof engine_path[0]; i++) {
        if (engine_path[i] == t->entry) {
            snprintf(why, why_cap, "%s is used by the patch engine while it writes code and "
                     "cannot be patched", t->name);
            return -EPERM;
        }
    }
    return 0;
}

static int check_target(const struct hp_patch_target *t, const struct hp_patch_origin *o,
                        size_t *skip, char *why, size_t why_cap)
{
    int rc = check_executable(t->name, t->entry, why, why_cap);
    if (rc == 0)
        rc = check_executable(o->symbol, o->address, why, why_cap);
    if (rc == 0)
        rc = check_not_engine_path(t, why, why_cap);
    if (rc != 0)
        return rc;
    if (t->size == 0) {
        snprintf(why, why_cap, "the size of %s is unknown (no symbol table entry covers %p): "
                 "cannot prove the %d-byte jump fits", t->name, t->entry, HP_JUMP_SIZE);
        return -EINVAL;
    }
    *skip = hp_arch_entry_skip(t->entry);
    if (t->size < *skip + HP_JUMP_SIZE) {
        snprintf(why, why_cap, "%s is too short to patch: %zu bytes%s, and the jump needs %d",
                 t->name, t->size - (t->size >= *skip ? *skip : 0),
                 *skip ? " after its endbr64" : "", HP_JUMP_SIZE);
        return -EINVAL;
    }
    if ((uint8_t *)o->address >= (uint8_t *)t->entry &&
        (uint8_t *)o->address < (uint8_t *)t->entry + t->size) {
        snprintf(why, why_cap, "the replacement %s lies inside %s itself", o->symbol, t->name);
        return -EINVAL;
    }
    return 0;
}

static int prepare_text(char *why, size_t why_cap)
{
    return hp_arch_text_init(why, why_cap);
}

int hp_patch_upgrade(const struct hp_patch_target *target, const struct hp_patch_origin *origin,
                     char *why, size_t why_cap)
{
    pthread_mutex_lock(&engine_lock);
    size_t skip = 0;
    struct patched *p = find_by_entry(target->entry);
    bool fresh = p == NULL;
    int rc = prepare_text(why, why_cap);
    if (rc == 0)
        rc = check_target(target, origin, &skip, why, why_cap);
    if (rc == 0 && fresh && !(p = new_record(target, skip, why, why_cap)))
        rc = -ENOMEM;
    if (rc == 0)
        rc = add_trap_site((uintptr_t)p->site, why, why_cap);
    if (rc == 0 && push_version(p, origin) != 0) {
        snprintf(why, why_cap, "out of memory");
        rc = -ENOMEM;
    }
    if (rc == 0) {
        rc = install_top(p, why, why_cap);
        if (rc != 0)
            p->depth--;
    }
    if (fresh && p) {
        if (rc == 0)
            functions[n_functions++] = p;
        else
            free(p->versions), free(p);
    }
    pthread_mutex_unlock(&engine_lock);
    return rc;
}

int hp_patch_rollback(const char *name, void *entry, char *now_library, size_t lib_cap,
                      char *now_symbol, size_t sym_cap, int *depth, char *why, size_t why_cap)
{
    pthread_mutex_lock(&engine_lock);
    struct patched *p = name ? find_by_name(name) : NULL;
    if (!p && entry)
        p = find_by_entry(entry);
    int rc = 0;
    if (!p || p->depth == 0) {
        snprintf(why, why_cap, "%s has no upgrade installed: nothing to roll back",
                 p ? p->name : name ? name : "the function");
        rc = -ENOENT;
    } else {
        struct version top = p->versions[--p->depth];
        rc = install_top(p, why, why_cap);
        if (rc != 0)
            p->versions[p->depth++] = top;
    }
    if (rc == 0) {
        const struct version *now = p->depth ? &p->versions[p->depth - 1] : NULL;
        snprintf(now_library, lib_cap, "%s", now ? now->library : "");
        snprintf(now_symbol, sym_cap, "%s", now ? now->symbol : p->name);
        *depth = p->depth;
        release_sigtrap_if_unused();
    }
    pthread_mutex_unlock(&engine_lock);
    return rc;
}

/* ---- views ---------------------------------------------------------------------------------- */

static void view_of(const struct patched *p, struct hp_patch_view *v)
{
    memset(v, 0, sizeof *v);
    v->name = p->name;
    v->entry = p->entry;
    v->depth = p->depth;
    const struct version *top = p->depth ? &p->versions[p->depth - 1] : NULL;
    v->top.library = top ? top->library : "";
    v->top.symbol = top ? top->symbol : p->name;
    v->top.address = top ? top->address : p->entry;
    v->via_relay = p->relay && hp_arch_jump_target(p->site, p->site) == p->relay;
    v->relay = v->via_relay ? p->relay : NULL;
}

void hp_patch_each(hp_patch_visitor visit, void *ctx)
{
    pthread_mutex_lock(&engine_lock);
    for (size_t i = 0; i < n_functions; i++) {
        struct hp_patch_view v;
        view_of(functions[i], &v);
        visit(&v, ctx);
    }
    pthread_mutex_unlock(&engine_lock);
}

bool hp_patch_find(void *entry, hp_patch_visitor visit, void *ctx)
{
    pthread_mutex_lock(&engine_lock);
    const struct patched *p = find_by_entry(entry);
    if (p) {
        struct hp_patch_view v;
        view_of(p, &v);
        visit(&v, ctx);
    }
    pthread_mutex_unlock(&engine_lock);
    return p != NULL;
}

void hp_patch_get_stats(struct hp_patch_stats *out)
{
    pthread_mutex_lock(&engine_lock);
    *out = stats;
    out->traps = atomic_load(&trap_count);
    out->sigtrap_installed = sigtrap_installed;
    pthread_mutex_unlock(&engine_lock);
}

/* ---- the unload check ------------------------------------------------------------------------ */

static bool in_ranges(uintptr_t a, const struct hp_range *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a >= r[i].start && a < r[i].end)
            return true;
    return false;
}

static int versions_from(const char *library, const struct hp_range *ranges, size_t n,
                         char *why, size_t why_cap)
{
    for (size_t i = 0; i < n_functions; i++) {
        const struct patched *p = functions[i];
        for (int d = p->depth - 1; d >= 0; d--) {
            const struct version *v = &p->versions[d];
            if (strcmp(v->library, library) != 0 && !in_ranges((uintptr_t)v->address, ranges, n))
                continue;
            snprintf(why, why_cap, "%s of %s is %s as %s (version %d of %d); roll it back first",
                     v->symbol, library, d == p->depth - 1 ? "installed" : "stacked", p->name,
                     d + 1, p->depth);
            return -EBUSY;
        }
    }
    return 0;
}

struct range_check {
    const struct hp_range *ranges;
    size_t n;
    pid_t tid;
    uintptr_t word;
    bool is_pc, in_relay;
};

static int word_in_library(void *ctx, pid_t tid, uintptr_t word, bool is_pc)
{
    struct range_check *c = ctx;
    bool relay = is_pc && in_relay_code(word);
    if (!relay && !in_ranges(word, c->ranges, c->n))
        return 0;
    c->tid = tid;
    c->word = word;
    c->is_pc = is_pc;
    c->in_relay = relay;
    return 1;
}

/* Points relay cells that still name the library (unreachable leftovers) at their function. */
static void clear_stale_cells(const struct hp_range *ranges, size_t n)
{
    for (size_t i = 0; i < n_functions; i++) {
        struct patched *p = functions[i];
        if (p->cell && in_ranges((uintptr_t)atomic_load(p->cell), ranges, n))
            atomic_store(p->cell, (void *)p->entry);
    }
}

static int threads_in(const char *library, const struct hp_range *ranges, size_t n, char *why,
                      size_t why_cap)
{
    struct hp_stopped stopped;
    if (hp_threads_stop(&stopped, STOP_TIMEOUT_MS) != 0) {
        snprintf(why, why_cap, "cannot prove no thread runs in %s: %s", library, stopped.why);
        return -EBUSY;
    }
    stats.stops++;
    traps_since_stop = false;
    struct range_check check = {ranges, n, 0, 0, false, false};
    char scan_why[160] = "";
    int found = hp_threads_scan(&stopped, word_in_library, &check, scan_why, sizeof scan_why);
    if (found == 0)
        clear_stale_cells(ranges, n);
    hp_threads_resume(&stopped);
    if (found < 0)
        snprintf(why, why_cap, "cannot prove no thread runs in %s: %s", library, scan_why);
    else if (found > 0 && check.in_relay)
        snprintf(why, why_cap, "thread %d is passing through a relay slot; try again",
                 check.tid);
    else if (found > 0)
        snprintf(why, why_cap, "thread %d %s %#lx inside %s; try again when it has left",
                 check.tid, check.is_pc ? "is executing at" : "holds the address",
                 (unsigned long)check.word, library);
    return found == 0 ? 0 : -EBUSY;
}

int hp_patch_library_busy(const char *library, const struct hp_range *ranges, size_t n_ranges,
                          char *why, size_t why_cap)
{
    pthread_mutex_lock(&engine_lock);
    int rc = versions_from(library, ranges, n_ranges, why, why_cap);
    if (rc == 0 && n_ranges > 0)
        rc = threads_in(library, ranges, n_ranges, why, why_cap);
    if (rc == 0)
        release_sigtrap_if_unused();
    pthread_mutex_unlock(&engine_lock);
    return rc;
}
