/*
 * Chunk maps: see chunk_map.h.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chunk_map.h"
#include "codec.h"

struct chunk_map *chunk_map_create(uint64_t capacity, uint32_t chunk_size)
{
	struct chunk_map *map = calloc(1, sizeof(*map));

	if (map == NULL)
		return NULL;
	map->capacity = capacity;
	map->chunk_size = chunk_size;
	map->nchunks = chunk_size ? (capacity + chunk_size - 1) / chunk_size
				  : 0;
	return map;
}

void chunk_map_free(struct chunk_map *map)
{
	if (map == NULL)
		return;
	free(map->v);
	free(map);
}

int chunk_map_overlay(struct chunk_map *map, uint64_t lim,
		      const struct manifest_entry *e, size_t n)
{
	struct manifest_entry *out;
	size_t i = 0, k = 0, m = 0;

	if (lim > map->nchunks)
		lim = map->nchunks;
	out = malloc((map->n + n ? map->n + n : 1) * sizeof(*out));
	if (out == NULL)
		return ENOMEM;
	/* a merge of two sorted lists, the link's entries winning */
	while (i < map->n || k < n) {
		const struct manifest_entry *pick;

		if (k == n || (i < map->n && map->v[i].index < e[k].index)) {
			pick = &map->v[i++];
		} else {
			if (i < map->n && map->v[i].index == e[k].index)
				i++;	/* replaced */
			pick = &e[k++];
		}
		if (pick->index < lim && !codec_id_is_zero(pick->id))
			out[m++] = *pick;
	}
	free(map->v);
	map->v = out;
	map->n = m;
	return 0;
}

size_t chunk_map_lower(const struct chunk_map *map, uint64_t i)
{
	size_t lo = 0, hi = map->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (map->v[mid].index < i)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

const unsigned char *chunk_map_id(const struct chunk_map *map, uint64_t i)
{
	size_t k = chunk_map_lower(map, i);

	if (k < map->n && map->v[k].index == i)
		return map->v[k].id;
	return codec_zero_id;
}

uint64_t chunk_map_next(const struct chunk_map *map, uint64_t i, bool data)
{
	size_t k = chunk_map_lower(map, i);

	if (i >= map->nchunks)
		return map->nchunks;
	if (data)
		return k < map->n ? map->v[k].index : map->nchunks;
	/* the first gap in the run of entries starting at i */
	while (k < map->n && map->v[k].index == i) {
		k++;
		i++;
	}
	return i < map->nchunks ? i : map->nchunks;
}

uint64_t chunk_map_stored(const struct chunk_map *map)
{
	uint64_t bytes = (uint64_t)map->n * map->chunk_size;
	uint64_t tail = map->capacity % map->chunk_size;

	/* the last chunk counts only up to the capacity */
	if (map->n > 0 && tail != 0 &&
	    map->v[map->n - 1].index == map->nchunks - 1)
		bytes -= map->chunk_size - tail;
	return bytes;
}
