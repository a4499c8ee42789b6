/*
 * Cache of decoded (verified) chunks for the mount, bounded in bytes, LRU.
 *
 * Reads of the same chunk by several threads fetch it once: the first
 * reader loads it while the others wait for that load (single flight).  A
 * chunk that fails to load is not cached: every reader of it gets the error
 * (EIO for corruption, logged once per load by the repo layer).
 */
#ifndef CBTFS_CHUNK_CACHE_H
#define CBTFS_CHUNK_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "repo.h"

struct chunk_cache;

/*
 * max_bytes: at least one chunk is always allowed.  prefetch_threads:
 * workers that load chunks asked for by chunk_cache_prefetch() (0: none).
 * NULL with errno set on failure.
 */
struct chunk_cache *chunk_cache_create(struct repo *repo, size_t max_bytes,
				       unsigned prefetch_threads);
void chunk_cache_destroy(struct chunk_cache *cc);

/* Copies len bytes at off within chunk id into dst; 0 or an errno. */
int chunk_cache_read(struct chunk_cache *cc,
		     const unsigned char id[CODEC_ID_LEN], uint32_t off,
		     uint32_t len, void *dst);

/*
 * Asks for chunk id to be loaded in the background, unless it is cached,
 * being loaded or queued.  Never blocks on I/O.  Returns false if the
 * prefetch queue is full: ask again later.
 */
bool chunk_cache_prefetch(struct chunk_cache *cc,
			  const unsigned char id[CODEC_ID_LEN]);

struct chunk_cache_stats {
	uint64_t hits, misses, prefetched;
};
void chunk_cache_get_stats(struct chunk_cache *cc,
			   struct chunk_cache_stats *st);

#endif
