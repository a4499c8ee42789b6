/*
 * Cache of decoded (verified) chunks for the mount, bounded in bytes.
 *
 * Memory: chunks live in buffers of one size (a chunk's largest frame),
 * recycled from one chunk to the next and never more than max_bytes of
 * them, so what the cache holds is what it costs (no fresh pages per
 * chunk, no heap growth).
 *
 * Eviction: chunks read ahead and then read to their end go first (a
 * sequential reader is past them; their buffers are reused before new ones
 * are allocated, so such a read cycles through a few warm buffers), then
 * other chunks that were read (least recently read first), then chunks
 * read ahead that nobody has read yet (oldest first).  A read-ahead never
 * pushes out another read-ahead: when only those are left it is dropped,
 * so a small cache does not fetch a chunk twice.  A chunk being loaded or
 * copied out is pinned and never evicted: a reader that finds every buffer
 * pinned waits for one rather than exceed max_bytes.
 *
 * Reads of the same chunk by several threads fetch it once: the first
 * reader loads it while the others wait for that load (single flight).  A
 * chunk that fails to load is not cached: every reader waiting for that
 * load gets its error, and the next read loads it again.
 *
 * Returns and logs: the cache logs nothing itself.  A failed load returns
 * repo_get_chunk()'s errno, which the repo layer (or the store) logged
 * once per load: ENOENT for a chunk missing from the store, EBADMSG for
 * one that fails verification, else the store's errno.  Running out of
 * memory is ENOMEM, not logged.  Every function is thread-safe; the
 * cache holds no reference to what the caller passes in but the repo,
 * which must outlive it.
 */
#ifndef CBTFS_CHUNK_CACHE_H
#define CBTFS_CHUNK_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "repo.h"

struct chunk_cache;

/*
 * max_bytes: the memory of the chunk buffers (at least one buffer is
 * always allowed).  prefetch_threads: workers that load chunks asked for
 * by chunk_cache_prefetch() (0: none).  NULL with *errp set on failure
 * (ENOMEM, or EAGAIN when a worker cannot start; not logged).
 */
struct chunk_cache *chunk_cache_create(struct repo *repo, size_t max_bytes,
				       unsigned prefetch_threads, int *errp);
void chunk_cache_destroy(struct chunk_cache *cc);

/*
 * Copies len bytes at off within chunk id into dst (off + len at most the
 * chunk size), loading the chunk if it is not cached; waits for a load of
 * it under way, or for a buffer while every one is pinned.  0, or the
 * load's errno (see above).
 */
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
	uint64_t hits;		/* reads of a chunk cached or loading */
	uint64_t misses;	/* reads that loaded their chunk */
	uint64_t waits;		/* hits that waited for a load */
	uint64_t prefetched;	/* chunks loaded ahead of the reader */
	uint64_t prefetch_dropped;	/* read-aheads given up: no room */
	uint64_t load_errors;	/* loads that failed */
	uint64_t bytes;		/* buffer memory held now */
	uint64_t max_bytes;	/* its bound */
	uint64_t chunks;	/* chunks cached now */
};
void chunk_cache_get_stats(struct chunk_cache *cc,
			   struct chunk_cache_stats *st);

#endif
