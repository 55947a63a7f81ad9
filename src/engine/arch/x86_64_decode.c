/*
 * x86_64_decode.c — what x86-64 code may branch to: the function being patched, decoded in
 * full, and whole objects swept for every address their code names.
 *
 * The patch replaces the first instructions at a function's patch site with a 5-byte
 * `jmp rel32` (or a 6-byte `jmp *cell(%rip)` for a far version, when the function allows it).
 * A thread that reaches one of the bytes site+1 .. site+4 other than by falling through from
 * the site (a loop head at entry+2, gcc's `f.cold` ending in `jmp f+3`) would execute the tail
 * of the jump as an instruction and crash. Checking where threads are at the moment of the
 * write is not enough: a branch taken a microsecond later lands there just the same. Two
 * decoders answer the question, both with a real x86-64 decoder (capstone):
 *
 *   hp_arch_check_function  decodes the function itself, from its entry to the end its symbol
 *       table gives, and must read every byte of it; it finds where the overwritten region
 *       ends once whole instructions are counted (the "cut" instruction), refuses a branch of
 *       the function into that region, and, for a function shorter than the jump, proves that
 *       the bytes after it up to the next symbol are alignment padding (nop forms or int3)
 *       that nothing falls into.
 *   hp_arch_sweep  decodes a stretch of an object's code linearly (branch_proof.c calls it for
 *       every executable section, restarting at every symbol) and reports every address the
 *       code names: direct branch and call targets, RIP-relative `lea` addresses (computed
 *       gotos, code pointers), absolute jump tables, immediates, and where indirect jumps are.
 *
 * Bytes capstone 4 cannot read: AVX-512 mask instructions (kmov*, VEX/EVEX forms glibc's
 * string functions use) and 0F 01 register forms such as rdpkru are measured by a small length
 * decoder here — none of them is a branch. What remains is data in .text (OpenSSL's constant
 * tables): the sweep steps over it a byte at a time and, because the code after data may
 * start at any byte, also decodes an instruction at every one of the next 64 offsets and
 * reports their branches. Extra targets can only refuse more, never less.
 *
 * Capstone is loaded on first use (dlopen), not linked: mapped at start it cost every process
 * with the agent about 1.4 MiB of private memory (its relocated tables) before anything was
 * patched; now a process that never patches never maps it, and libhotpatch.a needs no
 * -lcapstone. The soname comes from the headers we were compiled against
 * (libcapstone.so.<CS_API_MAJOR>) and the loaded library must report that major version, since
 * cs_insn's layout is the ABI. Capstone allocates, so this runs before any thread is stopped.
 * Everything x86-specific about branches lives here; the engine sees only arch.h.
 */
#include <capstone/capstone.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "arch.h"

#define SUPERSET_WINDOW 64

#define STRINGIFY2(x) #x
#define STRINGIFY(x) STRINGIFY2(x)
#define CAPSTONE_SONAME "libcapstone.so." STRINGIFY(CS_API_MAJOR)

/* ---- capstone, loaded on first use ------------------------------------------------------------ */

/* The few capstone functions used here. Engine lock; loaded once, never unloaded. */
static struct {
    bool loaded;
    cs_err (*open)(cs_arch, cs_mode, csh *);
    cs_err (*option)(csh, cs_opt_type, size_t);
    cs_insn *(*malloc)(csh);
    bool (*disasm_iter)(csh, const uint8_t **, size_t *, uint64_t *, cs_insn *);
    void (*free)(cs_insn *, size_t);
    cs_err (*close)(csh *);
    unsigned (*version)(int *, int *);
} capstone;

static bool bind_capstone(void *lib)
{
    /* dlsym returns void *: POSIX guarantees it converts to a function pointer this way. */
    *(void **)&capstone.open = dlsym(lib, "cs_open");
    *(void **)&capstone.option = dlsym(lib, "cs_option");
    *(void **)&capstone.malloc = dlsym(lib, "cs_malloc");
    *(void **)&capstone.disasm_iter = dlsym(lib, "cs_disasm_iter");
    *(void **)&capstone.free = dlsym(lib, "cs_free");
    *(void **)&capstone.close = dlsym(lib, "cs_close");
    *(void **)&capstone.version = dlsym(lib, "cs_version");
    return capstone.open && capstone.option && capstone.malloc && capstone.disasm_iter &&
           capstone.free && capstone.close && capstone.version;
}

/* Loads capstone once; false with why when it is missing or of another ABI. */
static bool load_capstone(char *why, size_t why_cap)
{
    if (capstone.loaded)
        return true;
    void *lib = dlopen(CAPSTONE_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *err = dlerror();
        snprintf(why, why_cap, "the x86-64 decoder %s cannot be loaded (%s); install capstone "
                 "(Debian: libcapstone%d)", CAPSTONE_SONAME, err ? err : "not found",
                 CS_API_MAJOR);
        return false;
    }
    int major = 0, minor = 0;
    if (!bind_capstone(lib) || (capstone.version(&major, &minor), major != CS_API_MAJOR)) {
        snprintf(why, why_cap, "the x86-64 decoder %s is version %d, not the %d hotpatch was "
                 "built for", CAPSTONE_SONAME, major, CS_API_MAJOR);
        dlclose(lib);
        return false;
    }
    capstone.loaded = true;
    return true;
}

/* ---- the decoder ------------------------------------------------------------------------------ */

struct decoder {
    csh cs;
    cs_insn *insn;
};

static int open_decoder(struct decoder *d, const char *what, char *why, size_t why_cap)
{
    if (!load_capstone(why, why_cap))
        return -ENOSYS;
    if (capstone.open(CS_ARCH_X86, CS_MODE_64, &d->cs) != CS_ERR_OK) {
        snprintf(why, why_cap, "cannot start the x86-64 decoder to check %s", what);
        return -ENOSYS;
    }
    capstone.option(d->cs, CS_OPT_DETAIL, CS_OPT_ON);
    d->insn = capstone.malloc(d->cs);
    if (!d->insn) {
        capstone.close(&d->cs);
        snprintf(why, why_cap, "cannot decode %s: out of memory", what);
        return -ENOMEM;
    }
    return 0;
}

static void close_decoder(struct decoder *d)
{
    capstone.free(d->insn, 1);
    capstone.close(&d->cs);
}

/* ---- lengths of what capstone 4 does not know (none of them a branch) ------------------------- */

/* Bytes taken by a ModRM operand (ModRM, SIB, displacement) at c, or 0 when cut short. */
static size_t modrm_length(const uint8_t *c, size_t left)
{
    if (left < 1)
        return 0;
    unsigned mod = c[0] >> 6, rm = c[0] & 7;
    size_t n = 1;
    if (mod != 3 && rm == 4) {
        if (left < 2)
            return 0;
        if (mod == 0 && (c[1] & 7) == 5)
            n += 4;
        n++;
    }
    if (mod == 1)
        n += 1;
    else if (mod == 2 || (mod == 0 && rm == 5))
        n += 4;
    return n <= left ? n : 0;
}

/* A VEX (C4/C5) or EVEX (62) instruction: prefix, opcode, ModRM operand, imm8 by opcode map. */
static size_t vex_length(const uint8_t *c, size_t left)
{
    size_t p;
    unsigned map;
    if (left < 2)
        return 0;
    if (c[0] == 0xC5) {
        p = 2, map = 1;
    } else if (c[0] == 0xC4) {
        p = 3, map = c[1] & 0x1F;
    } else if (c[0] == 0x62) {
        p = 4, map = c[1] & 0x07;
    } else {
        return 0;
    }
    if (map == 0 || map == 4 || map > 6 || left < p + 2)
        return 0;
    uint8_t op = c[p];
    size_t m = modrm_length(c + p + 1, left - p - 1);
    if (m == 0)
        return 0;
    bool imm8 = map == 3 || (map == 1 && ((op >= 0x70 && op <= 0x73) || op == 0xC2 ||
                                          (op >= 0xC4 && op <= 0xC6)));
    size_t n = p + 1 + m + (imm8 ? 1 : 0);
    return n <= left ? n : 0;
}

/* Length of an instruction capstone could not read but that is surely not a branch; 0 when
 * unknown. In 64-bit mode C4, C5 and 62 always start VEX/EVEX; 0F 01 with a register ModRM
 * is group 7 (rdpkru, wrpkru, xgetbv, rdtscp, ...), three bytes. */
static size_t non_branch_length(const uint8_t *c, size_t left)
{
    size_t pre = left > 0 && c[0] == 0x67 ? 1 : 0;   /* address-size prefix */
    size_t n = vex_length(c + pre, left - pre);
    if (n)
        return pre + n;
    if (left >= 3 && c[0] == 0x0F && c[1] == 0x01 && (c[2] >> 6) == 3)
        return 3;
    return 0;
}

/* ---- reading instructions --------------------------------------------------------------------- */

static bool in_group(const cs_insn *insn, uint8_t group)
{
    for (uint8_t i = 0; i < insn->detail->groups_count; i++)
        if (insn->detail->groups[i] == group)
            return true;
    return false;
}

/* A direct (relative) jmp, jcc, call, loop, jrcxz or xbegin: its target. */
static bool relative_branch(const cs_insn *insn, uintptr_t *to)
{
    const cs_x86 *x86 = &insn->detail->x86;
    if (!in_group(insn, CS_GRP_BRANCH_RELATIVE) || x86->op_count != 1 ||
        x86->operands[0].type != X86_OP_IMM)
        return false;
    *to = (uintptr_t)x86->operands[0].imm;
    return true;
}

static bool indirect_jump(const cs_insn *insn)
{
    return insn->id == X86_INS_JMP && insn->detail->x86.op_count == 1 &&
           insn->detail->x86.operands[0].type != X86_OP_IMM;
}

/* Control never reaches the next instruction from this one. */
static bool unconditional_end(const cs_insn *insn)
{
    return in_group(insn, CS_GRP_RET) || insn->id == X86_INS_JMP || insn->id == X86_INS_UD2 ||
           insn->id == X86_INS_INT3 || insn->id == X86_INS_HLT;
}

static bool padding(const cs_insn *insn)
{
    return insn->id == X86_INS_NOP || insn->id == X86_INS_INT3;
}

/* One instruction at *at: fills d->insn and returns its length; a non-branch capstone cannot
 * read gets its length and id 0 (X86_INS_INVALID); 0 when nothing can be read. */
static size_t decode_one(struct decoder *d, const uint8_t *code, size_t left, uintptr_t at)
{
    const uint8_t *p = code;
    size_t l = left;
    uint64_t address = at;
    if (capstone.disasm_iter(d->cs, &p, &l, &address, d->insn))
        return d->insn->size;
    size_t n = non_branch_length(code, left);
    if (n) {
        d->insn->id = X86_INS_INVALID;
        d->insn->size = (uint16_t)n;
        d->insn->detail->groups_count = 0;
        d->insn->detail->x86.op_count = 0;
    }
    return n;
}

/* ---- the function itself ------------------------------------------------------------------------ */

/* What decoding the function found. */
struct body {
    uintptr_t entry, site, len, cut_end;
    uintptr_t bad_from, bad_to;      /* the first branch into (site, cut_end), or 0 */
    bool ends_unconditionally;       /* its last instruction never falls through */
};

struct branch_list {
    struct { uintptr_t from, to; } items[4096];
    size_t count;
};

/* Decodes [code, code+len) located at at: every instruction must be read. Records branches,
 * the cut and whether the last instruction falls through. -1 with why when it is not code. */
static int decode_range(struct decoder *d, const char *name, const uint8_t *code, size_t len,
                        uintptr_t at, struct body *b, struct branch_list *branches, char *why,
                        size_t why_cap)
{
    for (size_t off = 0; off < len;) {
        size_t n = decode_one(d, code + off, len - off, at + off);
        uintptr_t here = at + off;
        if (n == 0) {
            snprintf(why, why_cap, "%s cannot be patched safely: its code at +%#lx cannot be "
                     "decoded, so no branch into the overwritten bytes can be excluded", name,
                     (unsigned long)(here - b->entry));
            return -1;
        }
        if (here < b->site + b->len && here + n >= b->site + b->len)
            b->cut_end = here + n;       /* the instruction holding the jump's last byte */
        uintptr_t to;
        if (relative_branch(d->insn, &to)) {
            if (branches->count == sizeof branches->items / sizeof branches->items[0]) {
                snprintf(why, why_cap, "%s has more than %zu branches: too large to check",
                         name, branches->count);
                return -1;
            }
            branches->items[branches->count].from = here;
            branches->items[branches->count++].to = to;
        }
        b->ends_unconditionally = unconditional_end(d->insn);
        off += n;
    }
    return 0;
}

static void describe_branch(char *why, size_t why_cap, const char *name, const struct body *b)
{
    snprintf(why, why_cap, "%s cannot be patched safely: the branch at +%#lx targets +%#lx, "
             "inside the first %lu bytes the jump would overwrite (+%#lx..+%#lx)", name,
             (unsigned long)(b->bad_from - b->entry), (unsigned long)(b->bad_to - b->entry),
             (unsigned long)(b->cut_end - b->site), (unsigned long)(b->site - b->entry),
             (unsigned long)(b->cut_end - b->entry - 1));
}

/* The body [entry, entry+size), then for a function shorter than the jump the padding after
 * it up to `limit`, as far as the jump reaches. */
static int decode_function(struct decoder *d, const char *name, const uint8_t *entry,
                           size_t size, const uint8_t *limit, struct body *b,
                           struct branch_list *branches, char *why, size_t why_cap)
{
    uintptr_t end = (uintptr_t)entry + size, need = b->site + b->len;
    if (decode_range(d, name, entry, size, (uintptr_t)entry, b, branches, why, why_cap) != 0) {
        if (end < need)
            snprintf(why, why_cap, "%s is too short to patch: %zu bytes%s, the jump needs %lu, "
                     "and its bytes do not decode as a whole function", name,
                     size > b->site - b->entry ? size - (b->site - b->entry) : 0,
                     b->site > b->entry ? " after its endbr64" : "", (unsigned long)b->len);
        return -1;
    }
    if (end >= need)
        return 0;
    if (!b->ends_unconditionally) {
        snprintf(why, why_cap, "%s is too short to patch: %zu bytes%s, the jump needs %lu, "
                 "and its last instruction falls through into what follows", name,
                 size > b->site - b->entry ? size - (b->site - b->entry) : 0,
                 b->site > b->entry ? " after its endbr64" : "", (unsigned long)b->len);
        return -1;
    }
    /* Padding is decoded until an instruction covers the jump's last byte, within limit. */
    size_t room = (uintptr_t)limit > end ? (uintptr_t)limit - end : 0;
    size_t off = 0;
    while (end + off < need) {
        size_t n = off < room ? decode_one(d, entry + size + off, room - off, end + off) : 0;
        if (n == 0 || !padding(d->insn)) {
            snprintf(why, why_cap, "%s is too short to patch: %zu bytes%s, the jump needs %lu, "
                     "and the bytes after it %s", name, size - (b->site - b->entry),
                     b->site > b->entry ? " after its endbr64" : "", (unsigned long)b->len,
                     off >= room ? "belong to the next symbol"
                                 : "are not alignment padding (nop forms or int3)");
            return -1;
        }
        if (end + off < need && end + off + n >= need)
            b->cut_end = end + off + n;
        off += n;
    }
    return 0;
}

int hp_arch_check_function(const char *name, const uint8_t *entry, size_t size,
                           const uint8_t *site, size_t len, const uint8_t *limit,
                           uintptr_t *cut_end, char *why, size_t why_cap)
{
    struct decoder d;
    int rc = open_decoder(&d, name, why, why_cap);
    if (rc != 0)
        return rc;
    static struct branch_list branches;   /* engine lock */
    branches.count = 0;
    struct body b = {(uintptr_t)entry, (uintptr_t)site, len, 0, 0, 0, false};
    int found = decode_function(&d, name, entry, size, limit, &b, &branches, why, why_cap);
    close_decoder(&d);
    if (found != 0)
        return -EINVAL;
    if (b.cut_end == 0)
        b.cut_end = b.site + b.len;
    for (size_t i = 0; i < branches.count; i++) {
        if (branches.items[i].to > b.site && branches.items[i].to < b.cut_end) {
            b.bad_from = branches.items[i].from;
            b.bad_to = branches.items[i].to;
            describe_branch(why, why_cap, name, &b);
            return -EINVAL;
        }
    }
    *cut_end = b.cut_end;
    return 0;
}

/* ---- sweeping an object's code --------------------------------------------------------------------- */

struct sweep {
    struct decoder d;
    hp_code_visitor visit;
    void *ctx;
};

/* Reports what one decoded instruction at `at` names. */
static void report(struct sweep *s, uintptr_t at, bool all)
{
    const cs_insn *insn = s->d.insn;
    uintptr_t to;
    if (insn->id == X86_INS_INVALID)
        return;
    if (relative_branch(insn, &to)) {
        s->visit(s->ctx, HP_REF_BRANCH, at, to);
        return;
    }
    const cs_x86 *x86 = &insn->detail->x86;
    uintptr_t next = at + insn->size;
    for (uint8_t i = 0; i < x86->op_count; i++) {
        const cs_x86_op *op = &x86->operands[i];
        if (op->type == X86_OP_MEM && op->mem.base == X86_REG_RIP)
            s->visit(s->ctx, insn->id == X86_INS_LEA ? HP_REF_LEA : HP_REF_RIP, at,
                     next + (uintptr_t)op->mem.disp);
        else if (all && op->type == X86_OP_IMM)
            s->visit(s->ctx, HP_REF_IMM, at, (uintptr_t)op->imm);
    }
    if (!all || !indirect_jump(insn))
        return;
    const cs_x86_op *op = &x86->operands[0];
    if (op->type == X86_OP_MEM && op->mem.base == X86_REG_INVALID &&
        op->mem.index != X86_REG_INVALID && op->mem.scale == 8)
        s->visit(s->ctx, HP_REF_ABS_TABLE, at, (uintptr_t)op->mem.disp);
    s->visit(s->ctx, HP_REF_INDIRECT, at, 0);
}

/* After bytes that are not code: an instruction at every offset of the window, reporting its
 * branches and code addresses, since the code that follows may start at any of them. */
static void superset(struct sweep *s, const uint8_t *code, size_t len, uintptr_t at)
{
    for (size_t off = 1; off < SUPERSET_WINDOW && off < len; off++)
        if (decode_one(&s->d, code + off, len - off, at + off))
            report(s, at + off, false);
}

long hp_arch_sweep(const uint8_t *code, size_t len, uintptr_t at, hp_code_visitor visit,
                   void *ctx, char *why, size_t why_cap)
{
    struct sweep s = {.visit = visit, .ctx = ctx};
    int rc = open_decoder(&s.d, "the object's code", why, why_cap);
    if (rc != 0)
        return rc;
    long undecodable = 0;
    for (size_t off = 0; off < len;) {
        size_t n = decode_one(&s.d, code + off, len - off, at + off);
        if (n == 0) {
            visit(ctx, HP_REF_UNDECODABLE, at + off, 0);
            superset(&s, code + off, len - off, at + off);
            undecodable++;
            off++;
            continue;
        }
        report(&s, at + off, true);
        off += n;
    }
    close_decoder(&s.d);
    return undecodable;
}
