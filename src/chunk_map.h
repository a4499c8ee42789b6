/*
 * Chunk maps: the chunk ids of one snapshot, resolved through its chain
 * (index_resolve_chain() builds them).  Compact: only the non-zero chunks
 * are held, sorted by index, 40 bytes each, so a map costs what the
 * snapshot stores, not what its capacity is.  Immutable once built, so
 * any number of threads may read one.
 *
 * Returns and logs: nothing here logs or does I/O; the only failure is
 * memory (NULL or ENOMEM), for the caller to report.  chunk_map_id()
 * points into the map (or at codec_zero_id), valid while the map lives.
 */
#ifndef CBTFS_CHUNK_MAP_H
#define CBTFS_CHUNK_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "repo.h"

struct chunk_map {
	uint64_t capacity;
	uint32_t chunk_size;
	uint64_t nchunks;		/* ceil(capacity / chunk_size) */
	size_t n;			/* non-zero chunks */
	struct manifest_entry *v;	/* them, sorted by index, unique */
};

/* An empty map (every chunk zero) of that geometry; NULL if out of
 * memory. */
struct chunk_map *chunk_map_create(uint64_t capacity, uint32_t chunk_size);
void chunk_map_free(struct chunk_map *map);

/*
 * Applies one link of a chain over map (links go root first): chunks at
 * or beyond lim (the link's own chunk count) are cleared, then the n
 * entries (sorted by index, unique; zero ids clear) replace what map held
 * at their indexes.  Entries at or beyond lim or the map's nchunks are
 * ignored.  0 or ENOMEM (map unchanged).
 */
int chunk_map_overlay(struct chunk_map *map, uint64_t lim,
		      const struct manifest_entry *e, size_t n);

/* The id of chunk i: codec_zero_id for a zero chunk (or i out of range). */
const unsigned char *chunk_map_id(const struct chunk_map *map, uint64_t i);

/* Position in map->v of the first non-zero chunk at index i or later
 * (map->n if none). */
size_t chunk_map_lower(const struct chunk_map *map, uint64_t i);

/* The first chunk at index i or later that holds data (data) or is zero
 * (!data); map->nchunks if none. */
uint64_t chunk_map_next(const struct chunk_map *map, uint64_t i, bool data);

/* Bytes of the non-zero chunks (the last one only up to the capacity). */
uint64_t chunk_map_stored(const struct chunk_map *map);

#endif
