/*
 * Chunk cache: see chunk_cache.h.
 *
 * Entries live in a hash table (chained) and, once loaded and unpinned, on
 * an LRU list.  An entry is LOADING while one thread fetches it, READY
 * after.  Readers pin an entry (refs) while copying out of it, outside the
 * lock; pinned entries are never evicted.
 *
 * Prefetch: a bounded ring of ids and a few worker threads; a worker loads
 * an id exactly as a missing read would, then leaves it unpinned on the
 * LRU.  A read that arrives while the prefetch is under way waits for it.
 *
 * Locking: cc->lock guards everything but a READY entry's data, which is
 * immutable; cc->loaded is broadcast when a load finishes, cc->queued when
 * an id is queued or the workers must stop.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "chunk_cache.h"

#define NBUCKETS 4096
#define QUEUE_LEN 64

enum entry_state { LOADING, READY };

struct entry {
	unsigned char id[CODEC_ID_LEN];
	enum entry_state state;
	int err;		/* when a load failed: readers take it */
	unsigned refs;
	struct buf data;
	size_t off;		/* where the chunk's bytes begin in data */
	struct entry *hnext;	/* hash chain */
	struct entry *prev, *next;	/* LRU, only when READY and refs 0 */
};

struct chunk_cache {
	struct repo *repo;
	size_t max_entries;
	pthread_mutex_t lock;
	pthread_cond_t loaded;
	struct entry *bucket[NBUCKETS];
	struct entry lru;	/* sentinel: lru.next is the oldest */
	size_t n_entries;
	uint64_t hits, misses, prefetched;

	pthread_cond_t queued;
	unsigned char queue[QUEUE_LEN][CODEC_ID_LEN];
	size_t q_head, q_len;
	bool stopping;
	pthread_t *workers;
	unsigned n_workers;
};

static void *prefetch_worker(void *arg);

struct chunk_cache *chunk_cache_create(struct repo *repo, size_t max_bytes,
				       unsigned prefetch_threads)
{
	struct chunk_cache *cc = calloc(1, sizeof(*cc));
	unsigned i;

	if (cc == NULL)
		return NULL;
	cc->repo = repo;
	cc->max_entries = max_bytes / repo->chunk_size;
	if (cc->max_entries < 1)
		cc->max_entries = 1;
	pthread_mutex_init(&cc->lock, NULL);
	pthread_cond_init(&cc->loaded, NULL);
	pthread_cond_init(&cc->queued, NULL);
	cc->lru.prev = cc->lru.next = &cc->lru;
	/* room for what the workers load besides what readers pin */
	cc->max_entries += prefetch_threads;
	if (prefetch_threads > 0) {
		cc->workers = calloc(prefetch_threads, sizeof(*cc->workers));
		if (cc->workers == NULL) {
			chunk_cache_destroy(cc);
			errno = ENOMEM;
			return NULL;
		}
	}
	for (i = 0; i < prefetch_threads; i++) {
		if (pthread_create(&cc->workers[i], NULL, prefetch_worker,
				   cc) != 0) {
			chunk_cache_destroy(cc);
			errno = EAGAIN;
			return NULL;
		}
		cc->n_workers++;
	}
	return cc;
}

static void entry_free(struct entry *e)
{
	buf_free(&e->data);
	free(e);
}

void chunk_cache_destroy(struct chunk_cache *cc)
{
	size_t i;

	if (cc == NULL)
		return;
	pthread_mutex_lock(&cc->lock);
	cc->stopping = true;
	pthread_cond_broadcast(&cc->queued);
	pthread_mutex_unlock(&cc->lock);
	for (i = 0; i < cc->n_workers; i++)
		pthread_join(cc->workers[i], NULL);
	free(cc->workers);
	for (i = 0; i < NBUCKETS; i++) {
		while (cc->bucket[i] != NULL) {
			struct entry *e = cc->bucket[i];

			cc->bucket[i] = e->hnext;
			entry_free(e);
		}
	}
	pthread_mutex_destroy(&cc->lock);
	pthread_cond_destroy(&cc->loaded);
	pthread_cond_destroy(&cc->queued);
	free(cc);
}


static size_t bucket_of(const unsigned char *id)
{
	return ((size_t)id[0] | (size_t)id[1] << 8) % NBUCKETS;
}

static void lru_unlink(struct entry *e)
{
	if (e->next == NULL)
		return;
	e->prev->next = e->next;
	e->next->prev = e->prev;
	e->prev = e->next = NULL;
}

static void lru_push(struct chunk_cache *cc, struct entry *e)
{
	e->prev = cc->lru.prev;
	e->next = &cc->lru;
	cc->lru.prev->next = e;
	cc->lru.prev = e;
}

static void hash_remove(struct chunk_cache *cc, struct entry *e)
{
	struct entry **pp = &cc->bucket[bucket_of(e->id)];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	cc->n_entries--;
}

/* Evicts unpinned entries, oldest first, while over the limit. */
static void evict(struct chunk_cache *cc)
{
	while (cc->n_entries > cc->max_entries && cc->lru.next != &cc->lru) {
		struct entry *e = cc->lru.next;

		lru_unlink(e);
		hash_remove(cc, e);
		entry_free(e);
	}
}

/* Drops a pin; the caller holds the lock. */
static void unpin(struct chunk_cache *cc, struct entry *e)
{
	if (--e->refs > 0)
		return;
	if (e->err != 0) {
		hash_remove(cc, e);	/* failed loads are not cached */
		entry_free(e);
		return;
	}
	lru_push(cc, e);
	evict(cc);
}

static struct entry *lookup(struct chunk_cache *cc,
			    const unsigned char id[CODEC_ID_LEN])
{
	struct entry *e;

	for (e = cc->bucket[bucket_of(id)]; e != NULL; e = e->hnext)
		if (e->err == 0 && memcmp(e->id, id, CODEC_ID_LEN) == 0)
			return e;
	return NULL;
}

/*
 * Adds a LOADING entry for id, pinned once, and loads it.  Called and
 * returns with the lock held; drops it during the load.  NULL: no memory.
 */
static struct entry *load(struct chunk_cache *cc,
			  const unsigned char id[CODEC_ID_LEN])
{
	struct entry *e = calloc(1, sizeof(*e));
	int err;

	if (e == NULL)
		return NULL;
	memcpy(e->id, id, CODEC_ID_LEN);
	e->state = LOADING;
	e->refs = 1;
	e->hnext = cc->bucket[bucket_of(id)];
	cc->bucket[bucket_of(id)] = e;
	cc->n_entries++;
	pthread_mutex_unlock(&cc->lock);

	err = repo_get_chunk(cc->repo, id, &e->data, &e->off);

	pthread_mutex_lock(&cc->lock);
	e->err = err;
	e->state = READY;
	pthread_cond_broadcast(&cc->loaded);
	return e;
}

int chunk_cache_read(struct chunk_cache *cc,
		     const unsigned char id[CODEC_ID_LEN], uint32_t off,
		     uint32_t len, void *dst)
{
	struct entry *e;
	int err;

	pthread_mutex_lock(&cc->lock);
	e = lookup(cc, id);
	if (e != NULL) {
		cc->hits++;
		lru_unlink(e);
		e->refs++;
		while (e->state == LOADING)
			pthread_cond_wait(&cc->loaded, &cc->lock);
	} else {
		cc->misses++;
		e = load(cc, id);
		if (e == NULL) {
			pthread_mutex_unlock(&cc->lock);
			return ENOMEM;
		}
	}
	err = e->err;
	pthread_mutex_unlock(&cc->lock);

	if (err == 0)
		memcpy(dst, e->data.data + e->off + off, len);

	pthread_mutex_lock(&cc->lock);
	unpin(cc, e);
	pthread_mutex_unlock(&cc->lock);
	return err;
}

bool chunk_cache_prefetch(struct chunk_cache *cc,
			  const unsigned char id[CODEC_ID_LEN])
{
	bool taken = true;
	size_t i;

	if (cc->n_workers == 0)
		return true;
	pthread_mutex_lock(&cc->lock);
	if (lookup(cc, id) != NULL)
		goto out;
	if (cc->q_len == QUEUE_LEN) {
		taken = false;
		goto out;
	}
	for (i = 0; i < cc->q_len; i++)
		if (memcmp(cc->queue[(cc->q_head + i) % QUEUE_LEN], id,
			   CODEC_ID_LEN) == 0)
			goto out;
	memcpy(cc->queue[(cc->q_head + cc->q_len) % QUEUE_LEN], id,
	       CODEC_ID_LEN);
	cc->q_len++;
	pthread_cond_signal(&cc->queued);
out:
	pthread_mutex_unlock(&cc->lock);
	return taken;
}

static void *prefetch_worker(void *arg)
{
	struct chunk_cache *cc = arg;
	unsigned char id[CODEC_ID_LEN];
	struct entry *e;

	pthread_mutex_lock(&cc->lock);
	for (;;) {
		while (!cc->stopping && cc->q_len == 0)
			pthread_cond_wait(&cc->queued, &cc->lock);
		if (cc->stopping)
			break;
		memcpy(id, cc->queue[cc->q_head], CODEC_ID_LEN);
		cc->q_head = (cc->q_head + 1) % QUEUE_LEN;
		cc->q_len--;
		if (lookup(cc, id) != NULL)
			continue;	/* a read got there first */
		cc->prefetched++;
		e = load(cc, id);
		if (e != NULL)
			unpin(cc, e);
	}
	pthread_mutex_unlock(&cc->lock);
	return NULL;
}

void chunk_cache_get_stats(struct chunk_cache *cc,
			   struct chunk_cache_stats *st)
{
	pthread_mutex_lock(&cc->lock);
	st->hits = cc->hits;
	st->misses = cc->misses;
	st->prefetched = cc->prefetched;
	pthread_mutex_unlock(&cc->lock);
}
