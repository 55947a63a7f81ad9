/*
 * maps.h — the process's own memory map, /proc/self/maps, read without malloc and without
 * calling the C library, so that it can be used while other threads are stopped (one may hold
 * the allocator's lock, or be inside a patched `open`). Any size: the map is read in chunks.
 * Not installed.
 */
#ifndef HOTPATCH_MAPS_H
#define HOTPATCH_MAPS_H

#include <stdbool.h>
#include <stdint.h>

/* One mapping of /proc/self/maps. */
struct hp_mapping {
    uintptr_t start, end;           /* [start, end) */
    bool readable;
    int prot;                       /* PROT_READ | PROT_WRITE | PROT_EXEC as mapped */
    uint64_t offset;                /* file offset of start */
    unsigned dev_major, dev_minor;  /* the mapped file's device (0:0 for anonymous memory) */
    uint64_t inode;                 /* and inode (0 for anonymous memory) */
};

/* Protection (PROT_*) of the mapping holding addr, read afresh; -1 when unmapped or when the
 * map cannot be read. Reentrant (no shared buffer); safe while threads are stopped. */
int hp_maps_protection(uintptr_t addr);
/* The mapping holding addr, read afresh; false when none or unreadable. Reentrant. */
bool hp_maps_lookup(uintptr_t addr, struct hp_mapping *out);
/* Calls visit for every mapping in address order until it returns non-zero; returns that
 * value, 0 after the last one, or -1 when the map cannot be read. Reentrant; any size. */
int hp_maps_each(int (*visit)(void *ctx, const struct hp_mapping *m), void *ctx);
/* /proc/self/maps read afresh into one buffer (engine lock), grown with mmap as needed, so
 * any size is read whole; NULL on error. */
const char *hp_maps_text(void);
/* Finds the mapping that holds addr in text (from hp_maps_text); false when none. */
bool hp_maps_find(const char *text, uintptr_t addr, struct hp_mapping *out);

#endif /* HOTPATCH_MAPS_H */
