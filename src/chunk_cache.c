/*
 * Chunk cache: see chunk_cache.h.
 *
 * Entries live in a hash table (chained).  An entry is LOADING while one
 * thread fetches it, READY after.  Readers pin an entry (refs) while
 * copying out of it, outside the lock; pinned entries are never evicted.
 * A READY unpinned entry is on one of three lists: cc->done (read ahead,
 * then read to its end: a sequential reader went past it, and the kernel's
 * page cache holds it now), cc->read (other entries read at least once,
 * least recently read first) or cc->fresh (read ahead and not read yet,
 * oldest first).  Eviction takes from cc->done, cc->read, cc->fresh in
 * this order.
 *
 * Buffers: every entry owns one struct buf; there are at most max_bufs of
 * them, each of capacity buf_cap (a chunk's largest frame).  A load takes
 * a spare buffer, or a done entry's (warm pages: a sequential read then
 * cycles through a few buffers instead of faulting in the whole cache),
 * or allocates one while under the bound, or evicts a read entry (and, for
 * a reader, a fresh one) and takes its buffer; a reader that finds every
 * buffer pinned waits for cc->room.  A read-ahead that finds no buffer is
 * dropped.
 *
 * Prefetch: a bounded ring of ids and a few worker threads; a worker loads
 * an id exactly as a missing read would, then leaves it unpinned on
 * cc->fresh.  A read that arrives while the prefetch is under way waits
 * for it.
 *
 * Locking: cc->lock guards everything but a READY entry's data, which is
 * immutable while pinned; cc->loaded is broadcast when a load finishes,
 * cc->room when an entry is unpinned or a buffer is freed, cc->queued when
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
	bool was_read;		/* which list it goes back to */
	bool ahead;		/* loaded by a read-ahead */
	bool done;		/* read ahead, then read to its end */
	unsigned refs;
	struct buf data;
	size_t off;		/* where the chunk's bytes begin in data */
	struct entry *hnext;	/* hash chain */
	struct entry *prev, *next;	/* a list, when READY and refs 0 */
};

struct chunk_cache {
	struct repo *repo;
	size_t buf_cap;		/* the largest frame of a chunk */
	size_t max_bufs;
	size_t n_bufs;		/* buffers in entries and spares */
	uint64_t held;		/* their capacity */
	struct buf *spare;	/* up to max_bufs unused buffers */
	size_t n_spare;

	pthread_mutex_t lock;
	pthread_cond_t loaded;
	pthread_cond_t room;
	struct entry *bucket[NBUCKETS];
	struct entry done;	/* sentinels: .next is the oldest */
	struct entry read;
	struct entry fresh;
	size_t n_entries;
	uint64_t hits, misses, waits, prefetched, dropped, errors;

	pthread_cond_t queued;
	unsigned char queue[QUEUE_LEN][CODEC_ID_LEN];
	size_t q_head, q_len;
	bool stopping;
	pthread_t *workers;
	unsigned n_workers;
};

static void *prefetch_worker(void *arg);

struct chunk_cache *chunk_cache_create(struct repo *repo, size_t max_bytes,
				       unsigned prefetch_threads, int *errp)
{
	struct chunk_cache *cc = calloc(1, sizeof(*cc));
	unsigned i;

	*errp = ENOMEM;
	if (cc == NULL)
		return NULL;
	cc->repo = repo;
	/* header, digest, nonce and tag around an uncompressed chunk */
	cc->buf_cap = (size_t)repo->chunk_size + CODEC_HEADER_LEN +
		      CODEC_ID_LEN + CODEC_SEAL_OVERHEAD;
	cc->max_bufs = max_bytes / cc->buf_cap;
	if (cc->max_bufs < 1)
		cc->max_bufs = 1;
	pthread_mutex_init(&cc->lock, NULL);
	pthread_cond_init(&cc->loaded, NULL);
	pthread_cond_init(&cc->room, NULL);
	pthread_cond_init(&cc->queued, NULL);
	cc->done.prev = cc->done.next = &cc->done;
	cc->read.prev = cc->read.next = &cc->read;
	cc->fresh.prev = cc->fresh.next = &cc->fresh;
	cc->spare = calloc(cc->max_bufs, sizeof(*cc->spare));
	if (prefetch_threads > 0)
		cc->workers = calloc(prefetch_threads, sizeof(*cc->workers));
	if (cc->spare == NULL ||
	    (prefetch_threads > 0 && cc->workers == NULL)) {
		chunk_cache_destroy(cc);
		return NULL;
	}
	for (i = 0; i < prefetch_threads; i++) {
		if (pthread_create(&cc->workers[i], NULL, prefetch_worker,
				   cc) != 0) {
			chunk_cache_destroy(cc);
			*errp = EAGAIN;
			return NULL;
		}
		cc->n_workers++;
	}
	*errp = 0;
	return cc;
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
			buf_free(&e->data);
			free(e);
		}
	}
	for (i = 0; i < cc->n_spare; i++)
		buf_free(&cc->spare[i]);
	free(cc->spare);
	pthread_mutex_destroy(&cc->lock);
	pthread_cond_destroy(&cc->loaded);
	pthread_cond_destroy(&cc->room);
	pthread_cond_destroy(&cc->queued);
	free(cc);
}

static size_t bucket_of(const unsigned char *id)
{
	return ((size_t)id[0] | (size_t)id[1] << 8) % NBUCKETS;
}

static void list_unlink(struct entry *e)
{
	if (e->next == NULL)
		return;
	e->prev->next = e->next;
	e->next->prev = e->prev;
	e->prev = e->next = NULL;
}

static void list_push(struct entry *head, struct entry *e)
{
	e->prev = head->prev;
	e->next = head;
	head->prev->next = e;
	head->prev = e;
}

static void hash_remove(struct chunk_cache *cc, struct entry *e)
{
	struct entry **pp = &cc->bucket[bucket_of(e->id)];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	cc->n_entries--;
}

/* Keeps b for the next load, or frees it if it grew beyond buf_cap (a
 * corrupt object's size). */
static void put_spare(struct chunk_cache *cc, struct buf *b)
{
	if (b->cap > cc->buf_cap || b->data == NULL) {
		cc->held -= b->cap;
		buf_free(b);
		cc->n_bufs--;
	} else {
		b->len = 0;
		cc->spare[cc->n_spare++] = *b;
	}
	pthread_cond_broadcast(&cc->room);
}

/* Removes the oldest entry of list head and hands over its buffer. */
static bool evict_from(struct chunk_cache *cc, struct entry *head,
		       struct buf *b)
{
	struct entry *e = head->next;

	if (e == head)
		return false;
	list_unlink(e);
	hash_remove(cc, e);
	*b = e->data;
	b->len = 0;
	free(e);
	return true;
}

/*
 * A buffer for a load: a spare, a done entry's, a new one under the bound,
 * or an evicted entry's (a read one; for a reader, else a fresh one).
 * false: none now.
 */
static bool take_buf(struct chunk_cache *cc, bool reader, struct buf *b)
{
	memset(b, 0, sizeof(*b));
	if (cc->n_spare > 0) {
		*b = cc->spare[--cc->n_spare];
		return true;
	}
	if (evict_from(cc, &cc->done, b))
		return true;
	if (cc->n_bufs < cc->max_bufs) {
		cc->n_bufs++;
		return true;	/* the store allocates it, once */
	}
	return evict_from(cc, &cc->read, b) ||
	       (reader && evict_from(cc, &cc->fresh, b));
}

/* Drops a pin; the caller holds the lock. */
static void unpin(struct chunk_cache *cc, struct entry *e, bool reader)
{
	if (reader)
		e->was_read = true;
	if (--e->refs > 0)
		return;
	if (e->err != 0) {
		hash_remove(cc, e);	/* failed loads are not cached */
		put_spare(cc, &e->data);
		free(e);
		return;
	}
	list_push(e->done ? &cc->done : e->was_read ? &cc->read : &cc->fresh,
		  e);
	pthread_cond_broadcast(&cc->room);
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
 * Adds a LOADING entry for id, pinned once, holding buffer b, and loads it.
 * Called and returns with the lock held; drops it during the load.  NULL:
 * no memory (b is kept as a spare).
 */
static struct entry *load(struct chunk_cache *cc,
			  const unsigned char id[CODEC_ID_LEN], struct buf *b)
{
	struct entry *e = calloc(1, sizeof(*e));
	size_t cap = b->cap;
	int err;

	if (e == NULL) {
		put_spare(cc, b);
		return NULL;
	}
	memcpy(e->id, id, CODEC_ID_LEN);
	e->state = LOADING;
	e->refs = 1;
	e->data = *b;
	e->hnext = cc->bucket[bucket_of(id)];
	cc->bucket[bucket_of(id)] = e;
	cc->n_entries++;
	pthread_mutex_unlock(&cc->lock);

	err = repo_get_chunk(cc->repo, id, &e->data, &e->off);

	pthread_mutex_lock(&cc->lock);
	cc->held += e->data.cap - cap;	/* the store may have grown it */
	e->err = err;
	if (err != 0)
		cc->errors++;
	e->state = READY;
	pthread_cond_broadcast(&cc->loaded);
	return e;
}

int chunk_cache_read(struct chunk_cache *cc,
		     const unsigned char id[CODEC_ID_LEN], uint32_t off,
		     uint32_t len, void *dst)
{
	struct entry *e;
	struct buf b;
	int err;

	pthread_mutex_lock(&cc->lock);
	for (;;) {
		e = lookup(cc, id);
		if (e != NULL) {
			cc->hits++;
			list_unlink(e);
			e->refs++;
			if (e->state == LOADING)
				cc->waits++;
			while (e->state == LOADING)
				pthread_cond_wait(&cc->loaded, &cc->lock);
			break;
		}
		if (take_buf(cc, true, &b)) {
			cc->misses++;
			e = load(cc, id, &b);
			if (e == NULL) {
				pthread_mutex_unlock(&cc->lock);
				return ENOMEM;
			}
			break;
		}
		/* every buffer is pinned: wait for one */
		pthread_cond_wait(&cc->room, &cc->lock);
	}
	err = e->err;
	pthread_mutex_unlock(&cc->lock);

	if (err == 0)
		memcpy(dst, e->data.data + e->off + off, len);

	pthread_mutex_lock(&cc->lock);
	if (e->ahead && off + len == e->data.len - e->off)
		e->done = true;
	unpin(cc, e, true);
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
	struct buf b;

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
		if (!take_buf(cc, false, &b)) {
			cc->dropped++;	/* only unread chunks are left */
			continue;
		}
		cc->prefetched++;
		e = load(cc, id, &b);
		if (e != NULL) {
			e->ahead = true;
			unpin(cc, e, false);
		}
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
	st->waits = cc->waits;
	st->prefetched = cc->prefetched;
	st->prefetch_dropped = cc->dropped;
	st->load_errors = cc->errors;
	st->bytes = cc->held;
	st->max_bytes = (uint64_t)cc->max_bufs * cc->buf_cap;
	st->chunks = cc->n_entries;
	pthread_mutex_unlock(&cc->lock);
}
