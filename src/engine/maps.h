/*
 * maps.h — the process's own memory map, /proc/self/maps, read without malloc so that it can be
 * used while other threads are stopped (one may hold the allocator's lock). Not installed.
 */
#ifndef HOTPATCH_MAPS_H
#define HOTPATCH_MAPS_H

#include <stdbool.h>
#include <stdint.h>

/* One mapping of /proc/self/maps. */
struct hp_mapping {
    uintptr_t start, end;           /* [start, end) */
    bool readable;
};

/* Protection (PROT_*) of the mapping holding addr, read afresh; -1 when unmapped or when the
 * map cannot be read. Engine lock. Raw system calls only: usable while threads are stopped. */
int hp_maps_protection(uintptr_t addr);
/* /proc/self/maps read afresh, whole, into a buffer of the engine's (engine lock); NULL on
 * error. */
const char *hp_maps_text(void);
/* Finds the mapping that holds addr in text (from hp_maps_text); false when none. */
bool hp_maps_find(const char *text, uintptr_t addr, struct hp_mapping *out);

#endif /* HOTPATCH_MAPS_H */
