/*
 * x86_64_decode.c — proving that no branch of a function lands inside the bytes the
 * patch overwrites.
 *
 * The patch replaces the first instructions at a function's patch site with a 5-byte
 * `jmp rel32` (or a 6-byte `jmp *cell(%rip)` for a far version, when the function allows it). A thread that reaches one of the bytes site+1 .. site+4 other than by falling
 * through from the site (a loop head at entry+2, a jcc back to the second instruction) would
 * execute the tail of the jump as an instruction and crash. Checking where threads are at the
 * moment of the write is not enough: a branch taken a microsecond later lands there just the
 * same. So the function body is decoded, from its entry to the end its symbol table gives, with
 * a real x86-64 decoder (capstone), and the upgrade is refused when
 *   - a relative jmp, jcc, call, loop or jrcxz of the function targets a byte strictly inside
 *     the overwritten region, or
 *   - the 5 bytes end inside an instruction (the "cut" instruction) and a branch targets
 *     anything between the site and the end of that instruction, or
 *   - the body cannot be decoded completely (data in .text, an instruction the decoder does not
 *     know): then nothing can be proven and the engine says so.
 * What this cannot prove, documented in docs/protocol.md: indirect jumps (jump tables, computed
 * gotos), and branches from other functions into the middle of this one. Compilers emit neither
 * into a function's first instructions in practice, but they are not excluded by decoding.
 *
 * Capstone allocates, so this runs before any thread is stopped. Everything x86-specific about
 * branches lives here; the engine only sees hp_arch_check_branches().
 */
#include <capstone/capstone.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "arch.h"
#include "engine/maps.h"

/* Where the overwritten region ends once whole instructions are counted: [site, cut_end). */
struct cut {
    uintptr_t site, len, cut_end;   /* len: bytes written at the site (5 or 6) */
};

/* One decoded relative branch of the function. */
struct branch {
    uintptr_t from, to;
};

static bool relative_branch(csh cs, const cs_insn *insn, uintptr_t *to)
{
    if (!cs_insn_group(cs, insn, CS_GRP_JUMP) && !cs_insn_group(cs, insn, CS_GRP_CALL))
        return false;
    const cs_x86 *x86 = &insn->detail->x86;
    if (x86->op_count != 1 || x86->operands[0].type != X86_OP_IMM)
        return false;
    *to = (uintptr_t)x86->operands[0].imm;
    return true;
}

static void describe(char *why, size_t why_cap, const char *name, const struct branch *b,
                     const struct cut *c, uintptr_t entry)
{
    snprintf(why, why_cap, "%s cannot be patched safely: the branch at +%#lx targets +%#lx, "
             "inside the first %lu bytes the jump would overwrite (+%#lx..+%#lx)", name,
             (unsigned long)(b->from - entry), (unsigned long)(b->to - entry),
             (unsigned long)(c->cut_end - c->site), (unsigned long)(c->site - entry),
             (unsigned long)(c->cut_end - entry - 1));
}

/*
 * Decodes [entry, entry+size): fills cut->cut_end, and the first branch whose target lies in
 * (site, cut_end) into *bad. Returns 1 when such a branch exists, 0 when none, -1 when the body
 * cannot be decoded (why says where).
 */
static int scan_body(csh cs, const char *name, const uint8_t *entry, size_t size,
                     struct cut *cut, struct branch *bad, char *why, size_t why_cap)
{
    cs_insn *insn = cs_malloc(cs);
    if (!insn) {
        snprintf(why, why_cap, "cannot decode %s: out of memory", name);
        return -1;
    }
    /* Branch targets are compared after the whole body is decoded: the cut's end is known only
     * once the instruction covering site+4 has been seen, and a branch may precede it. */
    enum { MAX_BRANCHES = 4096 };
    static struct branch branches[MAX_BRANCHES];   /* engine lock */
    size_t n_branches = 0;
    const uint8_t *code = entry;
    size_t left = size;
    uint64_t address = (uint64_t)(uintptr_t)entry;
    int rc = 0;
    while (left > 0) {
        uintptr_t at = (uintptr_t)address;
        if (!cs_disasm_iter(cs, &code, &left, &address, insn)) {
            snprintf(why, why_cap, "%s cannot be patched safely: its code at +%#lx cannot be "
                     "decoded, so no branch into the overwritten bytes can be excluded", name,
                     (unsigned long)(at - (uintptr_t)entry));
            rc = -1;
            break;
        }
        uintptr_t end = at + insn->size;
        if (at < cut->site + cut->len && end >= cut->site + cut->len)
            cut->cut_end = end;   /* the instruction holding the jump's last byte */
        uintptr_t to;
        if (relative_branch(cs, insn, &to)) {
            if (n_branches == MAX_BRANCHES) {
                snprintf(why, why_cap, "%s has more than %d branches: too large to check", name,
                         MAX_BRANCHES);
                rc = -1;
                break;
            }
            branches[n_branches++] = (struct branch){at, to};
        }
    }
    cs_free(insn, 1);
    if (rc != 0)
        return rc;
    if (cut->cut_end == 0)
        cut->cut_end = cut->site + cut->len;
    for (size_t i = 0; i < n_branches; i++) {
        if (branches[i].to > cut->site && branches[i].to < cut->cut_end) {
            *bad = branches[i];
            return 1;
        }
    }
    return 0;
}

int hp_arch_check_branches(const char *name, const uint8_t *entry, size_t size,
                           const uint8_t *site, size_t len, char *why, size_t why_cap)
{
    csh cs;
    if (cs_open(CS_ARCH_X86, CS_MODE_64, &cs) != CS_ERR_OK) {
        snprintf(why, why_cap, "cannot start the x86-64 decoder to check %s", name);
        return -ENOSYS;
    }
    cs_option(cs, CS_OPT_DETAIL, CS_OPT_ON);
    struct cut cut = {(uintptr_t)site, len, 0};
    struct branch bad = {0, 0};
    int found = scan_body(cs, name, entry, size, &cut, &bad, why, why_cap);
    cs_close(&cs);
    if (found < 0)
        return -EINVAL;
    if (found > 0) {
        describe(why, why_cap, name, &bad, &cut, (uintptr_t)entry);
        return -EINVAL;
    }
    return 0;
}
