/*
 * branch_proof.h — proving that no code of a function's object branches into the bytes a
 * patch overwrites (branch_proof.c). Not installed. Engine lock; never with threads stopped
 * (it reads files and allocates).
 */
#ifndef HOTPATCH_BRANCH_PROOF_H
#define HOTPATCH_BRANCH_PROOF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Proves that writing `len` bytes at entry+skip is safe for the function [entry, entry+size):
 * the function decodes completely and none of its branches lands inside the overwritten
 * instructions; no direct branch or call anywhere in the object that contains it, no code
 * address it materializes (lea, jump tables, relocated pointers) lands there; no symbol of the
 * object starts there; and when the function is shorter than skip+len, the bytes after it up
 * to the next symbol are alignment padding. Returns 0, or a negative errno with a one-line
 * reason naming the cause in why.
 */
int hp_branch_proof(const char *name, const uint8_t *entry, size_t size, size_t skip, size_t len,
                    char *why, size_t why_cap);

/* Drops the cached index of every object whose base lies in [start, end) (an object about to
 * be unloaded), its memory zeroed: the index holds addresses of the object's code, which the
 * unload's reference scan would otherwise find in the engine's own heap. Engine lock. */
void hp_branch_proof_forget(uintptr_t start, uintptr_t end);

/* Counters for tests: object indexes built, reused from the cache, and dropped because their
 * object was unloaded or its file changed. */
struct hp_branch_proof_stats {
    unsigned long built, reused, dropped;
    unsigned long cached;           /* indexes held now */
};
void hp_branch_proof_get_stats(struct hp_branch_proof_stats *out);

#endif /* HOTPATCH_BRANCH_PROOF_H */
