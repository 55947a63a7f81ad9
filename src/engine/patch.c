/*
 * patch.c — the function patch engine: versions, relays, safe code writes, the unload check.
 *
 * A patched function is redirected by one instruction written at its patch site (its entry, or
 * just after an endbr64 there): `jmp rel32`. When the replacement is within +-2 GB of the site
 * the jump goes straight to it (one jump on the hot path). Otherwise it goes to this function's
 * relay cell, an 8-byte word in a page allocated within +-2 GB of the site that holds the
 * replacement's address: the site becomes `jmp *cell(%rip)` (6 bytes: one indirect jump, the
 * cost of a call through a pointer) when the function's branches allow 6 bytes to be
 * replaced, else a jmp rel32 to the function's relay slot, which does that jump (two jumps). Moving between two far versions is then a
 * single atomic store to the cell: no code changes and no thread is disturbed. The hot path has
 * no lock, no atomic and no lookup.
 *
 * Versions stack: each function keeps its original bytes and a stack of versions; an upgrade
 * pushes and installs the new top, a rollback pops and installs what is below, down to the
 * exact original bytes.
 *
 * How code is written (every write: original -> jump, jump -> jump, jump -> original):
 *   1. Before the first patch, the function is decoded (arch/x86_64_decode.c) and refused when
 *      a branch of its own lands strictly inside the instructions the jump overwrites: checking
 *      threads at one instant cannot exclude a branch taken an instant later.
 *   2. Every other thread is stopped (stop.c): each one parks in a signal handler and
 *      stays there until released; nothing else makes it leave.
 *   3. Every stopped thread's PC, registers and stack words are checked: none may lie strictly
 *      inside (site, site+5) — a thread paused between two of the replaced instructions, or a
 *      signal frame / return address that would resume there. If one does, the threads are
 *      released and the check retried a few times, then the change is refused.
 *   4. The site must still hold exactly the bytes the engine last wrote there (or the original
 *      bytes), in a mapping that is still executable: otherwise the code was unloaded or changed
 *      by someone else and the engine refuses to write into it.
 *   5. The five bytes are written (arch/x86_64.c), every core is serialized (membarrier
 *      SYNC_CORE), and only then are the threads released; the return from the stop signal's
 *      handler (sigreturn) is serializing as well.
 * Why this is as strong as the kernel's text_poke_bp (int3 first): text_poke_bp exists because
 * the kernel cannot stop every CPU cheaply, so it must make each intermediate state of the site
 * executable; here no thread executes anything while the bytes change, so no intermediate state
 * is ever executed at all. The hazards text_poke_bp leaves to its callers (a thread paused in
 * the middle of the replaced instructions; a branch into them) are covered by steps 3 and 1.
 * And it needs no SIGTRAP handler: a thread that blocks SIGTRAP, or a program that owns
 * SIGTRAP (a debugger, a sanitizer), is never affected, and the process never gets a handler it
 * did not ask for. The price: a thread that blocks the stop signal (or is stopped by a debugger)
 * makes every code write refused, cleanly, with its tid; a far -> far retarget still works.
 * If a write fails after bytes began to change, the previous bytes are written back with the
 * other write method while the threads are still stopped; only then is "nothing changed"
 * reported, and if that fails too the engine says the code is inconsistent and never touches
 * that function again.
 *
 * Relay pages: the closest hole in /proc/self/maps within +-2 GB of the site is mapped with
 * MAP_FIXED_NOREPLACE (never clobbering anything), holes right after [heap] are approached from
 * their far end so brk keeps room. One page of code (512 slots, written once then made R-X)
 * and one page of cells (R-W, no exec) per region. Relay memory is never unmapped; a slot
 * taken by an upgrade that failed before the site pointed to it is given back.
 *
 * Code the program unloads meanwhile: every entry point first takes a reference on the object
 * holding each site it will read or write (dlopen RTLD_NOLOAD, "a pin"), so the program's own
 * dlclose cannot unmap the code between the checks and the write; an object that went away
 * before it could be pinned is refused. The pins are dropped after the engine lock (a last
 * reference then runs the object's destructors, which may call into hotpatch).
 *
 * Unloaded code: each record remembers the object (dladdr base and path) holding its site.
 * Records whose object is gone (the program's own dlclose, or `lib unload`) are dropped at the
 * next engine call; `lib unload` is refused while a function inside the library is patched.
 *
 * The unload check refuses while any version (installed or stacked) comes from the library or
 * a function inside it is patched; then stops every thread and refuses while any register, PC
 * or stack word holds an address inside the library, or a thread is inside a relay slot.
 *
 * Lock: engine_lock guards everything in this file and the writer state of arch/x86_64.c,
 * arch/x86_64_decode.c, stop.c and maps.c; every hp_patch_* entry point holds it for its whole
 * run, and fork() holds it too (lock_before_fork), so a child never inherits a write in
 * progress. Lock order: agent_lock -> registry -> engine_lock.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <link.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "engine.h"
#include "branch_proof.h"
#include "elf.h"
#include "maps.h"
#include "arch/arch.h"
#include "arch/x86_64_syscall.h"

#define RELAY_SLOTS 512
#define STOP_TIMEOUT_MS 1000
#define STOP_ATTEMPTS 20
#define TWO_GB (1LL << 31)
#define HP_ERROR_MAX_ENGINE 512

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
    size_t site_len;            /* bytes every write covers: 6 when the function's branches
                                 * allow the far form at the site, else 5 */
    uint8_t original[HP_SITE_MAX];
    uint8_t written[HP_SITE_MAX];   /* what the site must hold now: original or our last jump */
    bool broken;                /* a failed write could not be undone: never write here again */
    void *object_base;          /* dladdr() of the site when first patched (NULL: no object) */
    char object[512];           /* that object's path as the loader names it */
    unsigned long long subs_at_write; /* the loader's unload count at our last write here */
    struct version *versions;
    int depth, cap;
    uint8_t *relay;             /* this function's relay slot, NULL until a far version */
    _Atomic(void *) *cell;
};

static pthread_mutex_t engine_lock = PTHREAD_MUTEX_INITIALIZER;

/* Engine lock. Records of patched functions (kept after rollback so `func list` keeps showing
 * them; dropped when their code is unloaded), relay regions, statistics. */
static struct patched **functions;
static size_t n_functions, cap_functions;
static struct relay_region *relays;
static struct hp_patch_stats stats;
/* Names of the last records dropped because their code was unloaded (a ring), so that a later
 * rollback of one says why there is nothing to roll back. */
#define DROPPED_NAMES 16
static char dropped_names[DROPPED_NAMES][256];
static unsigned n_dropped_names;

/* ---- fork ------------------------------------------------------------------------------------ */

/* The engine lock is held across fork() (base/atfork.c runs these after the agent's and the
 * registry's prepare hooks), so no fork happens while the engine writes code or has threads
 * stopped, and the child inherits an unlocked engine. */
static void lock_before_fork(void)
{
    pthread_mutex_lock(&engine_lock);
}

static void unlock_after_fork(void)
{
    pthread_mutex_unlock(&engine_lock);
}

static void register_fork_hooks_once(void)
{
    static const struct hp_fork_hooks hooks = {lock_before_fork, unlock_after_fork,
                                               unlock_after_fork};
    hp_atfork_register(HP_FORK_ENGINE, &hooks);
}

/* Takes the engine lock for an entry point, registering the fork hooks on first use. */
static void lock_engine(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_fork_hooks_once);
    pthread_mutex_lock(&engine_lock);
}

/* ---- pins: the program cannot unmap code the engine is working on --------------------------- */

/*
 * A pinned object stays mapped until unpinned: dlopen(RTLD_NOLOAD) of the object holding addr
 * adds a reference (it never loads anything or runs a constructor), and the object is checked
 * to be the one at the address after the reference was taken. The main program and objects the
 * loader cannot open by name (the vDSO) are never unloaded and need none (*handle NULL).
 * Returns 0, or -ESTALE with the reason when addr is in no loaded object any more.
 */
static int pin_object(const void *addr, const char *name, void **handle, char *why,
                      size_t why_cap)
{
    *handle = NULL;
    struct hp_loaded_object o;
    if (!hp_loaded_object_at((uintptr_t)addr, &o)) {
        snprintf(why, why_cap, "%s at %p is in no loaded object (its library was unloaded?); "
                 "nothing changed", name, addr);
        return -ESTALE;
    }
    if (o.is_main)
        return 0;
    void *h = dlopen(o.path, RTLD_LAZY | RTLD_NOLOAD);
    struct link_map *map = NULL;
    if (h && dlinfo(h, RTLD_DI_LINKMAP, &map) == 0 && map && map->l_addr == o.base) {
        *handle = h;
        return 0;
    }
    if (h)
        dlclose(h);
    struct hp_loaded_object again;
    if (hp_loaded_object_at((uintptr_t)addr, &again) && again.base == o.base &&
        strcmp(again.path, o.path) == 0 && !h)
        return 0;    /* not openable by name (the vDSO) and still there: never unloaded */
    snprintf(why, why_cap, "%s at %p: its library %s was unloaded or replaced while the engine "
             "looked at it; nothing changed, try again", name, addr, o.shown);
    return -ESTALE;
}

/* A set of pins, one per site of an entry point's call. */
struct pins {
    void **handles;
    size_t n, cap;
};

static int pin(struct pins *ps, const void *addr, const char *name, char *why, size_t why_cap)
{
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 4;
        void **grown = realloc(ps->handles, cap * sizeof *grown);
        if (!grown) {
            snprintf(why, why_cap, "out of memory");
            return -ENOMEM;
        }
        ps->handles = grown;
        ps->cap = cap;
    }
    void *h;
    int rc = pin_object(addr, name, &h, why, why_cap);
    if (rc == 0 && h)
        ps->handles[ps->n++] = h;
    return rc;
}

/* For a rollback: a site whose object is gone has nothing to pin (its record is dropped). */
static void pin_if_loaded(struct pins *ps, const void *addr, const char *name)
{
    char ignored[HP_ERROR_MAX_ENGINE];
    pin(ps, addr, name, ignored, sizeof ignored);
}

/* Called after the engine lock is released. */
static void unpin_all(struct pins *ps)
{
    for (size_t i = 0; i < ps->n; i++)
        dlclose(ps->handles[i]);
    free(ps->handles);
    ps->handles = NULL;
    ps->n = ps->cap = 0;
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

/* Records which loaded object holds the site, to notice when it is unloaded. */
static void remember_object(struct patched *p)
{
    Dl_info info;
    if (dladdr(p->site, &info) == 0 || !info.dli_fbase)
        return;
    p->object_base = info.dli_fbase;
    snprintf(p->object, sizeof p->object, "%s", info.dli_fname ? info.dli_fname : "");
}

/* The loader's count of objects ever unloaded (dl_iterate_phdr's dlpi_subs). */
static int read_subs(struct dl_phdr_info *info, size_t size, void *ctx)
{
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs)
        *(unsigned long long *)ctx = info->dlpi_subs;
    return 1;
}

static unsigned long long loader_unloads(void)
{
    unsigned long long subs = 0;
    dl_iterate_phdr(read_subs, &subs);
    return subs;
}

/* Reads the site's bytes without trusting that it is still mapped. */
static bool read_site(const struct patched *p, uint8_t *out)
{
    struct iovec local = {out, p->site_len}, remote = {p->site, p->site_len};
    return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == (ssize_t)p->site_len;
}

/*
 * A plugin the program unloaded and loaded again at the same address (same path, same inode)
 * looks loaded to dladdr, but its code is a fresh copy: the site holds the original bytes
 * again, not our jump. Such a record describes code that no longer exists; keeping it would
 * show a patch that does not run and refuse every later write as "changed by someone else".
 */
static bool object_was_reloaded(const struct patched *p, unsigned long long subs)
{
    if (p->depth == 0 || subs == p->subs_at_write ||
        memcmp(p->written, p->original, p->site_len) == 0)
        return false;
    uint8_t now[HP_SITE_MAX];
    return read_site(p, now) && memcmp(now, p->original, p->site_len) == 0;
}

/* True while the object that held the site when it was first patched is still loaded. */
static bool object_still_loaded(const struct patched *p)
{
    if (!p->object_base)
        return true;
    Dl_info info;
    if (dladdr(p->site, &info) == 0 || info.dli_fbase != p->object_base)
        return false;
    return strcmp(info.dli_fname ? info.dli_fname : "", p->object) == 0;
}

static void free_record(struct patched *p)
{
    free(p->versions);
    free(p);
}

/*
 * Drops the records whose code was unloaded (the program's dlclose, or `lib unload` of a
 * library with rolled-back targets): their bytes must never be written again. Their relay slot
 * is not reused (a thread could in theory still be passing through it).
 */
static void drop_unloaded_records(void)
{
    size_t kept = 0;
    unsigned long long subs = loader_unloads();
    for (size_t i = 0; i < n_functions; i++) {
        if (object_still_loaded(functions[i]) && !object_was_reloaded(functions[i], subs)) {
            functions[kept++] = functions[i];
            continue;
        }
        snprintf(dropped_names[n_dropped_names++ % DROPPED_NAMES], sizeof dropped_names[0], "%s",
                 functions[i]->name);
        free_record(functions[i]);
        stats.dropped++;
    }
    n_functions = kept;
}

static bool was_dropped(const char *name)
{
    for (unsigned i = 0; name && i < DROPPED_NAMES && i < n_dropped_names; i++)
        if (strcmp(dropped_names[i], name) == 0)
            return true;
    return false;
}

static struct patched *new_record(const struct hp_patch_target *t, size_t skip,
                                  size_t site_len, char *why, size_t why_cap)
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
    p->site_len = site_len;
    memcpy(p->original, p->site, site_len);
    memcpy(p->written, p->site, site_len);
    remember_object(p);
    return p;
nomem:
    snprintf(why, why_cap, "out of memory");
    return NULL;
}

static int push_version(struct patched *p, const struct hp_patch_origin *o)
{
    if (p->depth == p->cap) {
        /* Grown by hand, not realloc: the old block holds replacement addresses, and left in
         * freed memory they would look like live references to the unload scan. */
        int cap = p->cap ? p->cap * 2 : 4;
        struct version *grown = calloc((size_t)cap, sizeof *grown);
        if (!grown)
            return -ENOMEM;
        if (p->versions) {
            memcpy(grown, p->versions, (size_t)p->cap * sizeof *grown);
            explicit_bzero(p->versions, (size_t)p->cap * sizeof *grown);
            free(p->versions);
        }
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

static long relay_page_size = 4096;   /* the page size relay regions were mapped with */

static struct relay_region *map_region_at(uintptr_t at)
{
    long page = sysconf(_SC_PAGESIZE);
    relay_page_size = page;
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

/* Runs in the stopped window (the unload check's scan): no libc. */
HP_STOPPED_WINDOW static bool in_relay_code(uintptr_t pc)
{
    long page = relay_page_size;
    for (struct relay_region *r = relays; r; r = r->next)
        if (pc >= (uintptr_t)r->code && pc < (uintptr_t)r->code + (uintptr_t)page)
            return true;
    return false;
}


/* Gives back the slot an upgrade just took when the site never pointed to it. */
static void unassign_relay(struct patched *p)
{
    long page = sysconf(_SC_PAGESIZE);
    for (struct relay_region *r = relays; r; r = r->next) {
        if (p->relay < r->code || p->relay >= r->code + page)
            continue;
        if (r->used > 0 && p->relay == r->code + (r->used - 1) * HP_RELAY_SLOT_SIZE) {
            atomic_store(&r->cells[r->used - 1], NULL);
            r->used--;
        }
        break;
    }
    p->relay = NULL;
    p->cell = NULL;
}

/* ---- writing a site ---------------------------------------------------------------------------- */

struct inside_check {
    uintptr_t lo, hi;       /* (site, site + site_len): resumption points we would cut */
    pid_t tid;
    uintptr_t word;
};

HP_STOPPED_WINDOW static int word_inside(void *ctx, pid_t tid, uintptr_t word, bool is_pc)
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

HP_STOPPED_WINDOW static bool site_mapped_executable(const struct patched *p)
{
    const int need = PROT_READ | PROT_EXEC;
    int first = hp_maps_protection((uintptr_t)p->site);
    int last = hp_maps_protection((uintptr_t)p->site + p->site_len - 1);
    return first >= 0 && last >= 0 && (first & need) == need && (last & need) == need;
}

/*
 * The site still holds exactly what the engine last wrote there (the original bytes before the
 * first patch), in executable memory. Raw system calls only, so it also runs with threads
 * stopped.
 */
HP_STOPPED_WINDOW static int site_unchanged(const struct patched *p, char *why, size_t why_cap)
{
    if (p->broken) {
        hp_stop_fmt(why, why_cap, "%s was left inconsistent by a failed write earlier; the engine "
                 "will not write its code again", p->name);
        return -ENOTRECOVERABLE;
    }
    if (!site_mapped_executable(p)) {
        hp_stop_fmt(why, why_cap, "the code of %s at %p is no longer mapped executable (its "
                 "library was unloaded?); nothing written", p->name, (void *)p->site);
        return -ESTALE;
    }
    if (hp_raw_differ(p->site, p->written, p->site_len)) {
        hp_stop_fmt(why, why_cap, "%s at %p no longer holds the bytes the engine wrote there "
                 "(unloaded and reloaded, or changed by someone else); nothing written",
                 p->name, (void *)p->site);
        return -ESTALE;
    }
    return 0;
}

/* With every thread stopped and outside the site: verifies the site, then writes `code`. */
HP_STOPPED_WINDOW static int write_while_stopped(struct patched *p, const uint8_t *code, char *why,
                               size_t why_cap)
{
    int rc = site_unchanged(p, why, why_cap);
    if (rc != 0)
        return rc;
    rc = hp_arch_poke_stopped(p->site, code, p->site_len, why, why_cap);
    stats.stopped_pokes++;
    if (rc == 0) {
        hp_raw_copy(p->written, code, p->site_len);
    } else if (rc == -ENOTRECOVERABLE) {
        p->broken = true;
    } else {
        size_t used = 0;
        while (used < why_cap && why[used])
            used++;
        hp_stop_fmt(why + used, why_cap - used, "; the previous bytes are back, nothing changed");
    }
    return rc;
}

/* How many leading bytes of the site a write changes: a thread resting right after them (at an
 * instruction boundary of unchanged code) is not cut, e.g. at site+5 when a 6-byte site gets a
 * 5-byte jump. */
HP_STOPPED_WINDOW static size_t changed_extent(const uint8_t *now, const uint8_t *code,
                                                size_t len)
{
    while (len > 0 && now[len - 1] == code[len - 1])
        len--;
    return len;
}

/*
 * Writes `code` over the site with every other thread stopped and proven outside the bytes
 * being replaced (PC, registers and stack words). Retries, backing off, when a thread is inside.
 */
static int write_site_stopped(struct patched *p, const uint8_t *code, char *why, size_t why_cap)
{
    struct inside_check check = {(uintptr_t)p->site,
                                 (uintptr_t)p->site + changed_extent(p->written, code, p->site_len),
                                 0, 0};
    for (int attempt = 0; attempt < STOP_ATTEMPTS; attempt++) {
        struct hp_stopped stopped;
        if (hp_threads_stop(&stopped, STOP_TIMEOUT_MS) != 0) {
            snprintf(why, why_cap, "cannot stop the threads to write the code of %s: %s; "
                     "nothing changed", p->name, stopped.why);
            return -EBUSY;
        }
        stats.stops++;
        char scan_why[160] = "";
        int found = hp_threads_scan(&stopped, word_inside, &check, scan_why, sizeof scan_why);
        int rc = found == 0 ? write_while_stopped(p, code, why, why_cap) : 0;
        hp_threads_resume(&stopped);
        if (found == 0)
            return rc;
        stats.stops_let_go++;
        if (found == -EAGAIN && attempt + 1 < STOP_ATTEMPTS) {
            /* A thread in a handler on an alternate stack: retry as for a PC inside. */
            sleep_ms(attempt < 5 ? 1 << attempt : 50);
            continue;
        }
        if (found < 0) {
            snprintf(why, why_cap, "cannot check the threads before writing the code of %s: "
                     "%s; nothing changed", p->name, scan_why);
            return -EBUSY;
        }
        /* Back off: a thread found inside may be preempted there and needs CPU time to move
         * on (1, 2, 4 ... 32 ms, then 50 ms: under a second in all). */
        sleep_ms(attempt < 5 ? 1 << attempt : 50);
    }
    snprintf(why, why_cap, "thread %d is paused inside the first %d bytes of %s (at %#lx); "
             "nothing changed, try again", check.tid, (int)(check.hi - check.lo), p->name,
             (unsigned long)check.word);
    return -EBUSY;
}

static int write_site(struct patched *p, const uint8_t *code, char *why, size_t why_cap)
{
    if (memcmp(p->written, code, p->site_len) == 0)
        return site_unchanged(p, why, why_cap);
    /* Counted before the write: an unload after this moment is one the record may not outlive. */
    unsigned long long subs = loader_unloads();
    int rc = write_site_stopped(p, code, why, why_cap);
    if (rc == 0)
        p->subs_at_write = subs;
    return rc;
}

/* What the site holds for a far version: `jmp *cell(%rip)` when it has room (one indirect jump,
 * as cheap as a call through a pointer), else a jmp rel32 to the relay slot; either way the
 * original bytes after the jump stay as they were. */
static void encode_far(const struct patched *p, uint8_t *code)
{
    memcpy(code, p->original, p->site_len);
    if (p->site_len >= HP_INDIRECT_SIZE && hp_arch_indirect_reaches(p->site, p->cell))
        hp_arch_encode_indirect(code, p->site, p->cell);
    else
        hp_arch_encode_jump(code, p->site, p->relay);
}

/* Far destination: the cell first (one atomic store), then the site jumps through it. */
static int install_far(struct patched *p, void *to, char *why, size_t why_cap)
{
    bool new_slot = p->relay == NULL;
    int rc = assign_relay(p, why, why_cap);
    if (rc == 0)
        rc = site_unchanged(p, why, why_cap);
    if (rc != 0) {
        if (new_slot && p->relay)
            unassign_relay(p);
        return rc;
    }
    void *before = atomic_load(p->cell);
    atomic_store_explicit(p->cell, to, memory_order_release);
    stats.relay_stores++;
    uint8_t code[HP_SITE_MAX];
    encode_far(p, code);
    rc = write_site(p, code, why, why_cap);
    if (rc == 0 || rc == -ENOTRECOVERABLE)
        return rc;
    atomic_store(p->cell, before);
    if (new_slot)
        unassign_relay(p);
    return rc;
}

/* Makes the site run `to`: a direct jump when near, else through the relay cell. */
static int install_destination(struct patched *p, void *to, char *why, size_t why_cap)
{
    if (!hp_arch_near(p->site, to))
        return install_far(p, to, why, why_cap);
    uint8_t code[HP_SITE_MAX];
    memcpy(code, p->original, p->site_len);
    hp_arch_encode_jump(code, p->site, to);
    return write_site(p, code, why, why_cap);
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

/* Functions the engine's own thread runs while it writes (it is the one thread not stopped):
 * patching them could cut an instruction under the engine itself. hotpatch's own code is
 * refused as a whole; these are the C library's functions the write path calls. */
static int check_not_engine_path(const struct hp_patch_target *t, char *why, size_t why_cap)
{
    void *const engine_path[] = {
        (void *)pwrite, (void *)syscall, (void *)mprotect, (void *)memcmp, (void *)memcpy,
        (void *)sysconf,
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

/* Neither the target nor the replacement may be hotpatch's own code. */
static int check_not_hotpatch(const struct hp_patch_target *t, const struct hp_patch_origin *o,
                              char *why, size_t why_cap)
{
    char what[300];
    if (hp_engine_owns(t->entry, what, sizeof what)) {
        snprintf(why, why_cap, "%s (%p) is part of %s, which never patches itself", t->name,
                 t->entry, what);
        return -EPERM;
    }
    if (o && hp_engine_owns(o->address, what, sizeof what)) {
        snprintf(why, why_cap, "the replacement %s (%p) is part of %s; a replacement must come "
                 "from a patch library", o->symbol, o->address, what);
        return -EPERM;
    }
    return 0;
}

static int check_target(const struct hp_patch_target *t, const struct hp_patch_origin *o,
                        size_t *skip, char *why, size_t why_cap)
{
    int rc = check_executable(t->name, t->entry, why, why_cap);
    if (rc == 0 && o)
        rc = check_executable(o->symbol, o->address, why, why_cap);
    if (rc == 0)
        rc = check_not_hotpatch(t, o, why, why_cap);
    if (rc == 0)
        rc = check_not_engine_path(t, why, why_cap);
    if (rc != 0)
        return rc;
    if (t->size == 0) {
        snprintf(why, why_cap, "the size of %s is unknown (no symbol table entry covers %p): "
                 "cannot prove the %d-byte jump fits", t->name, t->entry, HP_JUMP_SIZE);
        return -EINVAL;
    }
    /* A function shorter than the jump is the branch proof's to judge (choose_site_len): it
     * may be followed by alignment padding the jump can cover. */
    *skip = hp_arch_entry_skip(t->entry);
    if (o && (uint8_t *)o->address >= (uint8_t *)t->entry &&
        (uint8_t *)o->address < (uint8_t *)t->entry + t->size) {
        snprintf(why, why_cap, "the replacement %s lies inside %s itself", o->symbol, t->name);
        return -EINVAL;
    }
    return 0;
}

/*
 * First patch of a function: its own branches must not land inside the bytes we overwrite.
 * The site spans 6 bytes (room for the far form at the site) when that is provably safe, else
 * 5 (far versions then go through a relay slot); refused when not even 5 are.
 */
static int choose_site_len(const struct hp_patch_target *t, size_t skip, size_t *site_len,
                           char *why, size_t why_cap)
{
    /* The proof covers the whole object the function is in (branch_proof.c), not only its
     * own branches: gcc's f.cold pieces and other entry points jump into a function's first
     * bytes too. The object's index is built once and cached, so the second try is cheap. */
    *site_len = HP_INDIRECT_SIZE;
    if (hp_branch_proof(t->name, t->entry, t->size, skip, HP_INDIRECT_SIZE, why, why_cap) == 0)
        return 0;
    *site_len = HP_JUMP_SIZE;
    return hp_branch_proof(t->name, t->entry, t->size, skip, HP_JUMP_SIZE, why, why_cap);
}

/* A record kept at depth 0 (rolled back) outlives its code when the program unloads the object
 * and loads it again, maybe another file at the same address: its branch proof is then made
 * again before a new jump goes in (cheap: the proof is cached per object file). */
static int reprove_if_reloaded(const struct hp_patch_target *t, const struct patched *p,
                               size_t skip, char *why, size_t why_cap)
{
    if (p->depth != 0 || loader_unloads() == p->subs_at_write)
        return 0;
    return hp_branch_proof(t->name, t->entry, t->size, skip, p->site_len, why, why_cap);
}

static int upgrade_locked(const struct hp_patch_target *target,
                          const struct hp_patch_origin *origin, char *why, size_t why_cap)
{
    drop_unloaded_records();
    size_t skip = 0, site_len = HP_JUMP_SIZE;
    struct patched *p = find_by_entry(target->entry);
    bool fresh = p == NULL;
    int rc = hp_arch_text_init(why, why_cap);
    if (rc == 0)
        rc = check_target(target, origin, &skip, why, why_cap);
    if (rc == 0 && fresh)
        rc = choose_site_len(target, skip, &site_len, why, why_cap);
    if (rc == 0 && !fresh)
        rc = reprove_if_reloaded(target, p, skip, why, why_cap);
    if (rc == 0 && fresh && !(p = new_record(target, skip, site_len, why, why_cap)))
        rc = -ENOMEM;
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
        if (rc == 0 || rc == -ENOTRECOVERABLE)
            functions[n_functions++] = p;   /* a broken record stays, to refuse later writes */
        else
            free_record(p);
    }
    return rc;
}

int hp_patch_check_target(const struct hp_patch_target *target, char *why, size_t why_cap)
{
    struct pins pins = {0};
    lock_engine();
    int rc = pin(&pins, target->entry, target->name, why, why_cap);
    if (rc == 0) {
        drop_unloaded_records();
        size_t skip = 0, site_len;
        rc = check_target(target, NULL, &skip, why, why_cap);
        if (rc == 0 && !find_by_entry(target->entry))
            rc = choose_site_len(target, skip, &site_len, why, why_cap);
    }
    pthread_mutex_unlock(&engine_lock);
    unpin_all(&pins);
    return rc;
}

int hp_patch_upgrade(const struct hp_patch_target *target, const struct hp_patch_origin *origin,
                     char *why, size_t why_cap)
{
    struct pins pins = {0};
    lock_engine();
    int rc = pin(&pins, target->entry, target->name, why, why_cap);
    if (rc == 0)
        rc = upgrade_locked(target, origin, why, why_cap);
    pthread_mutex_unlock(&engine_lock);
    unpin_all(&pins);
    return rc;
}

int hp_patch_rollback(const char *name, void *entry, char *now_library, size_t lib_cap,
                      char *now_symbol, size_t sym_cap, int *depth, char *why, size_t why_cap)
{
    struct pins pins = {0};
    lock_engine();
    struct patched *p = name ? find_by_name(name) : NULL;
    if (!p && entry)
        p = find_by_entry(entry);
    /* A site whose object is gone cannot be pinned: its record is dropped just below. */
    if (p)
        pin_if_loaded(&pins, p->site, p->name);
    drop_unloaded_records();
    p = name ? find_by_name(name) : NULL;
    if (!p && entry)
        p = find_by_entry(entry);
    int rc = 0;
    if (!p && was_dropped(name)) {
        snprintf(why, why_cap, "the code of %s was unloaded while it was patched: nothing to "
                 "roll back (its patch record was dropped)", name);
        rc = -ESTALE;
    } else if (!p || p->depth == 0) {
        snprintf(why, why_cap, "%s has no upgrade installed: nothing to roll back",
                 p ? p->name : name ? name : "the function");
        rc = -ENOENT;
    } else {
        struct version top = p->versions[--p->depth];
        rc = install_top(p, why, why_cap);
        if (rc != 0)
            p->versions[p->depth++] = top;
        else   /* no stale address of the replacement stays behind (see refscan.c) */
            explicit_bzero(&p->versions[p->depth], sizeof p->versions[p->depth]);
    }
    if (rc == 0) {
        const struct version *now = p->depth ? &p->versions[p->depth - 1] : NULL;
        snprintf(now_library, lib_cap, "%s", now ? now->library : "");
        snprintf(now_symbol, sym_cap, "%s", now ? now->symbol : p->name);
        *depth = p->depth;
    }
    pthread_mutex_unlock(&engine_lock);
    unpin_all(&pins);
    return rc;
}

/* ---- many functions in one stop (patch files) ------------------------------------------------ */

/*
 * A patch file replaces several functions that call each other; the process must never run a
 * mix of old and new ones. So every site write and every relay-cell store of the batch happen
 * inside one stop of the threads, after proving that no thread is inside any of the sites; a
 * failure part-way puts every earlier site and cell back before the threads move again.
 */
struct batch_item {
    struct patched *p;
    bool fresh;                      /* the record was made for this batch */
    bool new_slot;                   /* its relay slot was taken for this batch */
    bool pushed;                     /* a version was pushed (upgrade) */
    struct version popped;           /* the version taken off (rollback) */
    bool did_pop;
    uint8_t code[HP_SITE_MAX];       /* what the site must hold after the batch */
    void *cell_value;                /* what the relay cell must hold, or NULL */
    uint8_t previous[HP_SITE_MAX];   /* for putting things back */
    void *previous_cell;
    bool written;
};

struct batch_check {
    const struct batch_item *items;
    size_t n;
    pid_t tid;
    uintptr_t word;
    const char *name;
};

HP_STOPPED_WINDOW static int word_inside_any(void *ctx, pid_t tid, uintptr_t word, bool is_pc)
{
    (void)is_pc;
    struct batch_check *c = ctx;
    for (size_t i = 0; i < c->n; i++) {
        const struct patched *p = c->items[i].p;
        uintptr_t lo = (uintptr_t)p->site;
        uintptr_t hi = lo + changed_extent(p->written, c->items[i].code, p->site_len);
        if (word > lo && word < hi) {
            c->tid = tid;
            c->word = word;
            c->name = p->name;
            return 1;
        }
    }
    return 0;
}

/* Puts back every item written so far (threads still stopped). */
HP_STOPPED_WINDOW static int undo_batch(struct batch_item *items, size_t n, char *why,
                                        size_t why_cap)
{
    int rc = 0;
    for (size_t i = n; i-- > 0;) {
        struct batch_item *it = &items[i];
        if (!it->written)
            continue;
        char undo_why[HP_ERROR_MAX_ENGINE];
        if (hp_raw_differ(it->previous, it->p->written, it->p->site_len) &&
            hp_arch_poke_stopped(it->p->site, it->previous, it->p->site_len, undo_why,
                                 sizeof undo_why) != 0) {
            it->p->broken = true;
            hp_stop_fmt(why, why_cap, "%s could not be put back (%s): its code is left "
                        "inconsistent", it->p->name, undo_why);
            rc = -ENOTRECOVERABLE;
        } else {
            hp_raw_copy(it->p->written, it->previous, it->p->site_len);
        }
        if (it->p->cell)
            atomic_store(it->p->cell, it->previous_cell);
        it->written = false;
    }
    return rc;
}

/* Says which function's write failed and that the batch was undone. */
HP_STOPPED_WINDOW static void explain_batch_failure(const struct patched *p, char *why,
                                                    size_t why_cap)
{
    char reason[HP_ERROR_MAX_ENGINE];
    hp_raw_copy(reason, why, why_cap < sizeof reason ? why_cap : sizeof reason);
    reason[sizeof reason - 1] = '\0';
    hp_stop_fmt(why, why_cap, "%s: %s; every function of the patch is back as it was, nothing "
                "changed", p->name, reason);
}

/* With every thread stopped and outside all the sites: writes every item, or none. */
HP_STOPPED_WINDOW static int write_batch_stopped(struct batch_item *items, size_t n, char *why,
                                                 size_t why_cap)
{
    for (size_t i = 0; i < n; i++) {
        struct batch_item *it = &items[i];
        struct patched *p = it->p;
        int rc = site_unchanged(p, why, why_cap);
        if (rc == 0) {
            hp_raw_copy(it->previous, p->written, p->site_len);
            it->previous_cell = p->cell ? atomic_load(p->cell) : NULL;
            if (it->cell_value)
                atomic_store_explicit(p->cell, it->cell_value, memory_order_release);
            it->written = true;
            if (hp_raw_differ(p->written, it->code, p->site_len)) {
                rc = hp_arch_poke_stopped(p->site, it->code, p->site_len, why, why_cap);
                stats.stopped_pokes++;
            }
            if (rc == 0)
                hp_raw_copy(p->written, it->code, p->site_len);
            else if (rc == -ENOTRECOVERABLE)
                p->broken = true;
        }
        if (rc != 0) {
            if (rc != -ENOTRECOVERABLE)
                explain_batch_failure(p, why, why_cap);
            int undo = undo_batch(items, n, why, why_cap);
            return undo != 0 ? undo : rc;
        }
    }
    return 0;
}

static int write_batch(struct batch_item *items, size_t n, char *why, size_t why_cap)
{
    struct batch_check check = {items, n, 0, 0, ""};
    unsigned long long subs = loader_unloads();
    for (int attempt = 0; attempt < STOP_ATTEMPTS; attempt++) {
        struct hp_stopped stopped;
        if (hp_threads_stop(&stopped, STOP_TIMEOUT_MS) != 0) {
            snprintf(why, why_cap, "cannot stop the threads to write the patch's code: %s; "
                     "nothing changed", stopped.why);
            return -EBUSY;
        }
        stats.stops++;
        char scan_why[160] = "";
        int found = hp_threads_scan(&stopped, word_inside_any, &check, scan_why,
                                    sizeof scan_why);
        int rc = found == 0 ? write_batch_stopped(items, n, why, why_cap) : 0;
        hp_threads_resume(&stopped);
        if (found == 0) {
            for (size_t i = 0; rc == 0 && i < n; i++)
                items[i].p->subs_at_write = subs;
            return rc;
        }
        stats.stops_let_go++;
        if (found < 0) {
            snprintf(why, why_cap, "cannot check the threads before writing the patch's code: "
                     "%s; nothing changed", scan_why);
            return -EBUSY;
        }
        sleep_ms(attempt < 5 ? 1 << attempt : 50);
    }
    snprintf(why, why_cap, "thread %d is paused inside the first bytes of %s (at %#lx); nothing "
             "changed, try again", check.tid, check.name, (unsigned long)check.word);
    return -EBUSY;
}

/* The code (and relay cell) that makes p run its top version. */
static int plan_top(struct batch_item *it, char *why, size_t why_cap)
{
    struct patched *p = it->p;
    memcpy(it->code, p->original, p->site_len);
    it->cell_value = NULL;
    if (p->depth == 0)
        return 0;
    void *to = p->versions[p->depth - 1].address;
    if (hp_arch_near(p->site, to)) {
        hp_arch_encode_jump(it->code, p->site, to);
        return 0;
    }
    it->new_slot = p->relay == NULL;
    int rc = assign_relay(p, why, why_cap);
    if (rc != 0)
        return rc;
    encode_far(p, it->code);
    it->cell_value = to;
    return 0;
}

/* Gives back what planning took: versions, relay slots, fresh records. */
static void abandon_batch(struct batch_item *items, size_t n)
{
    for (size_t i = n; i-- > 0;) {
        struct batch_item *it = &items[i];
        if (!it->p)
            continue;
        if (it->pushed)
            it->p->depth--;
        if (it->did_pop)
            it->p->versions[it->p->depth++] = it->popped;
        if (it->new_slot && it->p->relay)
            unassign_relay(it->p);
        if (it->fresh && !it->p->broken)
            free_record(it->p);
        else if (it->fresh)
            functions[n_functions++] = it->p;   /* a broken record stays, to refuse writes */
    }
}

static int prepare_upgrade(const struct hp_patch_change *c, struct batch_item *it,
                           struct batch_item *done, size_t n_done, char *why, size_t why_cap)
{
    for (size_t j = 0; j < n_done; j++)
        if (done[j].p->entry == c->target.entry) {
            snprintf(why, why_cap, "%s is replaced twice in one patch", c->target.name);
            return -EINVAL;
        }
    size_t skip = 0, site_len = HP_JUMP_SIZE;
    it->p = find_by_entry(c->target.entry);
    it->fresh = it->p == NULL;
    int rc = check_target(&c->target, &c->origin, &skip, why, why_cap);
    if (rc == 0 && it->fresh)
        rc = choose_site_len(&c->target, skip, &site_len, why, why_cap);
    if (rc == 0 && !it->fresh)
        rc = reprove_if_reloaded(&c->target, it->p, skip, why, why_cap);
    if (rc == 0 && it->fresh &&
        !(it->p = new_record(&c->target, skip, site_len, why, why_cap)))
        rc = -ENOMEM;
    if (rc == 0 && push_version(it->p, &c->origin) != 0) {
        snprintf(why, why_cap, "out of memory");
        rc = -ENOMEM;
    }
    it->pushed = rc == 0;
    if (rc == 0)
        rc = plan_top(it, why, why_cap);
    if (rc != 0 && it->fresh && it->p && !it->pushed) {
        free_record(it->p);
        it->p = NULL;
    }
    return rc;
}

static void prefix_reason(const char *name, char *why, size_t why_cap)
{
    char reason[HP_ERROR_MAX_ENGINE];
    snprintf(reason, sizeof reason, "%s", why);
    snprintf(why, why_cap, "%s: %s", name, reason);
}

/* A zeroed array of n batch items (at least one), or NULL with the reason. */
static struct batch_item *new_batch(size_t n, char *why, size_t why_cap)
{
    struct batch_item *items = calloc(n ? n : 1, sizeof *items);
    if (!items)
        snprintf(why, why_cap, "out of memory");
    return items;
}

int hp_patch_upgrade_all(const struct hp_patch_change *changes, size_t n, char *why,
                         size_t why_cap)
{
    struct batch_item *items = new_batch(n, why, why_cap);
    if (!items)
        return -ENOMEM;
    struct pins pins = {0};
    lock_engine();
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = pin(&pins, changes[i].target.entry, changes[i].target.name, why, why_cap);
    drop_unloaded_records();
    if (rc == 0)
        rc = hp_arch_text_init(why, why_cap);
    size_t prepared = 0;
    for (; rc == 0 && prepared < n; prepared++) {
        rc = prepare_upgrade(&changes[prepared], &items[prepared], items, prepared, why,
                             why_cap);
        if (rc != 0)
            prefix_reason(changes[prepared].target.name, why, why_cap);
    }
    if (rc == 0)
        rc = write_batch(items, n, why, why_cap);
    if (rc == 0) {
        for (size_t i = 0; i < n; i++)
            if (items[i].fresh)
                functions[n_functions++] = items[i].p;
    } else {
        abandon_batch(items, prepared);   /* the failed item included: its own cleanup ran */
    }
    pthread_mutex_unlock(&engine_lock);
    unpin_all(&pins);
    explicit_bzero(items, (n ? n : 1) * sizeof *items);   /* no replacement address left behind */
    free(items);
    return rc;
}

int hp_patch_rollback_all(void *const *entries, const void *const *tops, size_t n, char *why,
                          size_t why_cap)
{
    struct batch_item *items = new_batch(n, why, why_cap);
    if (!items)
        return -ENOMEM;
    struct pins pins = {0};
    lock_engine();
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const struct patched *p = find_by_entry(entries[i]);
        if (p)
            pin_if_loaded(&pins, p->site, p->name);
    }
    drop_unloaded_records();
    size_t prepared = 0;
    for (; rc == 0 && prepared < n; prepared++) {
        struct batch_item *it = &items[prepared];
        it->p = find_by_entry(entries[prepared]);
        if (!it->p || it->p->depth == 0) {
            snprintf(why, why_cap, "the function at %p has no upgrade installed",
                     entries[prepared]);
            rc = -ENOENT;
        } else if (it->p->versions[it->p->depth - 1].address != tops[prepared]) {
            snprintf(why, why_cap, "%s now runs another version, installed later", it->p->name);
            rc = -EBUSY;
        } else {
            it->popped = it->p->versions[--it->p->depth];
            it->did_pop = true;
            rc = plan_top(it, why, why_cap);
        }
        if (rc != 0 && it->p && !it->did_pop)
            it->p = NULL;
    }
    if (rc == 0)
        rc = write_batch(items, n, why, why_cap);
    if (rc == 0) {
        for (size_t i = 0; i < n; i++)   /* no stale replacement address stays behind */
            explicit_bzero(&items[i].p->versions[items[i].p->depth], sizeof(struct version));
    } else {
        abandon_batch(items, prepared);
    }
    pthread_mutex_unlock(&engine_lock);
    unpin_all(&pins);
    explicit_bzero(items, (n ? n : 1) * sizeof *items);   /* no replacement address left behind */
    free(items);
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
    v->via_relay = p->relay && (hp_arch_jump_target(p->site, p->site) == p->relay ||
                                hp_arch_indirect_cell(p->site, p->site) == (void *)p->cell);
    v->relay = v->via_relay ? p->relay : NULL;
}

void hp_patch_each(hp_patch_visitor visit, void *ctx)
{
    lock_engine();
    drop_unloaded_records();
    for (size_t i = 0; i < n_functions; i++) {
        struct hp_patch_view v;
        view_of(functions[i], &v);
        visit(&v, ctx);
    }
    pthread_mutex_unlock(&engine_lock);
}

bool hp_patch_find(void *entry, hp_patch_visitor visit, void *ctx)
{
    lock_engine();
    drop_unloaded_records();
    const struct patched *p = find_by_entry(entry);
    if (p && visit) {
        struct hp_patch_view v;
        view_of(p, &v);
        visit(&v, ctx);
    }
    pthread_mutex_unlock(&engine_lock);
    return p != NULL;
}

void hp_patch_get_stats(struct hp_patch_stats *out)
{
    lock_engine();
    *out = stats;
    pthread_mutex_unlock(&engine_lock);
}


/* ---- the unload check ------------------------------------------------------------------------ */

HP_STOPPED_WINDOW static bool in_ranges(uintptr_t a, const struct hp_range *r, size_t n)
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

/* A function whose code lies inside the library and is patched now: its jump would be unmapped
 * with it, and its rollback would write into whatever is mapped there next. */
static int targets_inside(const char *library, const struct hp_range *ranges, size_t n,
                          char *why, size_t why_cap)
{
    for (size_t i = 0; i < n_functions; i++) {
        const struct patched *p = functions[i];
        if (p->depth == 0 || !in_ranges((uintptr_t)p->site, ranges, n))
            continue;
        snprintf(why, why_cap, "%s is a function of %s and is patched (depth %d); roll it back "
                 "first", p->name, library, p->depth);
        return -EBUSY;
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

HP_STOPPED_WINDOW static int word_in_library(void *ctx, pid_t tid, uintptr_t word, bool is_pc)
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
HP_STOPPED_WINDOW static void clear_stale_cells(const struct hp_range *ranges, size_t n)
{
    for (size_t i = 0; i < n_functions; i++) {
        struct patched *p = functions[i];
        if (p->cell && in_ranges((uintptr_t)atomic_load(p->cell), ranges, n))
            atomic_store(p->cell, (void *)p->entry);
    }
}

/* The kernel keeps signal handlers where no scan of memory sees them. */
static int handlers_in(const char *library, const struct hp_range *ranges, size_t n, char *why,
                       size_t why_cap)
{
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) != 0)
            continue;
        void *handler = (sa.sa_flags & SA_SIGINFO) ? (void *)sa.sa_sigaction
                                                   : (void *)sa.sa_handler;
        if (handler == (void *)SIG_IGN || handler == (void *)SIG_DFL)
            continue;
        if (in_ranges((uintptr_t)handler, ranges, n)) {
            snprintf(why, why_cap, "the handler of signal %d (%s) is in %s; unloading it would "
                     "leave the signal pointing at unmapped code", sig, strsignal(sig), library);
            return -EBUSY;
        }
    }
    return 0;
}

/* Records of functions inside the library that are not patched (rolled back) would be dropped
 * once it is unmapped; they go now, zeroed, so their addresses are not mistaken for live
 * references by the scan. */
static void forget_records_inside(const struct hp_range *ranges, size_t n)
{
    size_t kept = 0;
    for (size_t i = 0; i < n_functions; i++) {
        struct patched *p = functions[i];
        if (p->depth == 0 && !p->relay && in_ranges((uintptr_t)p->site, ranges, n)) {
            if (p->versions)
                explicit_bzero(p->versions, (size_t)p->cap * sizeof *p->versions);
            free(p->versions);
            explicit_bzero(p, sizeof *p);
            free(p);
            continue;
        }
        functions[kept++] = p;
    }
    n_functions = kept;
}

static void explain_reference(const char *library, const struct hp_reference *ref, char *why,
                              size_t why_cap)
{
    if (ref->unreadable_maps) {
        snprintf(why, why_cap, "cannot read /proc/self/maps to scan for pointers into %s",
                 library);
        return;
    }
    if (ref->at == 0) {
        snprintf(why, why_cap, "cannot prove nothing points into %s: the scan of writable "
                 "memory reached its bound (%d MiB or %d ms) after %llu MiB; 'lib unload "
                 "--retire %s' forgets it and keeps it mapped", library, HP_SCAN_MAX_MIB,
                 HP_SCAN_MAX_MS, ref->scanned >> 20, library);
        return;
    }
    char where[96] = "";
    const char *maps = hp_maps_text();
    struct hp_mapping m;
    if (maps && hp_maps_find(maps, ref->at, &m))
        snprintf(where, sizeof where, " (in the mapping %#lx-%#lx)", (unsigned long)m.start,
                 (unsigned long)m.end);
    snprintf(why, why_cap, "the word at %#lx%s holds %s%#lx, an address in the code of %s (a "
             "callback, a destructor or a suspended coroutine may still run it); 'lib unload "
             "--retire %s' forgets it and keeps it mapped", (unsigned long)ref->at, where,
             ref->mangled ? "the mangled pointer " : "", (unsigned long)ref->value, library,
             library);
}

static int threads_in(const char *library, const struct hp_range *ranges, size_t n, char *why,
                      size_t why_cap)
{
    int rc = handlers_in(library, ranges, n, why, why_cap);
    if (rc != 0)
        return rc;
    forget_records_inside(ranges, n);
    for (size_t i = 0; i < n; i++)
        hp_branch_proof_forget(ranges[i].start, ranges[i].end);
    struct hp_stopped stopped;
    if (hp_threads_stop(&stopped, STOP_TIMEOUT_MS) != 0) {
        snprintf(why, why_cap, "cannot prove no thread runs in %s: %s", library, stopped.why);
        return -EBUSY;
    }
    stats.stops++;
    struct range_check check = {ranges, n, 0, 0, false, false};
    char scan_why[160] = "";
    int found = hp_threads_scan(&stopped, word_in_library, &check, scan_why, sizeof scan_why);
    struct hp_reference ref = {0};
    int referenced = 0;
    if (found == 0) {
        clear_stale_cells(ranges, n);
        referenced = hp_scan_references(&stopped, ranges, n, &ref);
    }
    hp_threads_resume(&stopped);
    if (found == 0 && referenced != 0) {
        explain_reference(library, &ref, why, why_cap);
        return -EBUSY;
    }
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
    lock_engine();
    drop_unloaded_records();
    int rc = versions_from(library, ranges, n_ranges, why, why_cap);
    if (rc == 0)
        rc = targets_inside(library, ranges, n_ranges, why, why_cap);
    if (rc == 0 && n_ranges > 0)
        rc = threads_in(library, ranges, n_ranges, why, why_cap);
    pthread_mutex_unlock(&engine_lock);
    return rc;
}

