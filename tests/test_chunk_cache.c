/*
 * Chunk cache: single-flight loads, eviction that spares pinned entries,
 * failed loads not cached, and the memory bound.
 *
 * The repository is a real directory store; a gate wrapped around it
 * counts the GETs of chunk objects, can hold them until released (so that
 * a load is seen in flight) and can fail the next few.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chunk_cache.h"
#include "repo.h"
#include "tests.h"

#define CS (64u * 1024)
#define NCHUNKS 8

/* ---- the gate: a store wrapper ------------------------------------- */

struct gate {
	struct store st;
	struct store *inner;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned gets;		/* GETs of chunks/ begun */
	unsigned held;		/* of them, waiting at the gate now */
	bool closed;		/* GETs of chunks/ wait until opened */
	unsigned fail;		/* fail this many GETs of chunks/ (EIO) */
};

/* what chunk_cache_create() reports (it succeeds in these tests) */
static int cc_err;

static struct gate *gate_of(struct store *st)
{
	return (struct gate *)st;
}

static int gate_get(struct store *st, const char *key, uint64_t off,
		    uint64_t len, struct buf *out)
{
	struct gate *g = gate_of(st);
	bool fail = false;

	if (strncmp(key, "chunks/", 7) == 0) {
		pthread_mutex_lock(&g->lock);
		g->gets++;
		g->held++;
		pthread_cond_broadcast(&g->cond);
		while (g->closed)
			pthread_cond_wait(&g->cond, &g->lock);
		g->held--;
		if (g->fail > 0) {
			g->fail--;
			fail = true;
		}
		pthread_mutex_unlock(&g->lock);
		if (fail) {
			log_error("test: GET %s fails (injected)", key);
			return EIO;
		}
	}
	return store_get(g->inner, key, off, len, out);
}

static int gate_put(struct store *st, const char *key, const void *data,
		    size_t len)
{
	return store_put(gate_of(st)->inner, key, data, len);
}

static int gate_head(struct store *st, const char *key, uint64_t *sizep)
{
	return store_head(gate_of(st)->inner, key, sizep);
}

static int gate_del(struct store *st, const char *key)
{
	return store_del(gate_of(st)->inner, key);
}

static int gate_list(struct store *st, const char *prefix,
		     store_list_cb *cb, void *arg)
{
	return store_list(gate_of(st)->inner, prefix, cb, arg);
}

static void gate_destroy(struct store *st)
{
	struct gate *g = gate_of(st);

	store_destroy(g->inner);
	pthread_mutex_destroy(&g->lock);
	pthread_cond_destroy(&g->cond);
	free(g);
}

static const struct store_ops gate_ops = {
	.name = "gate",
	.get = gate_get,
	.put = gate_put,
	.head = gate_head,
	.del = gate_del,
	.list = gate_list,
	.destroy = gate_destroy,
};

static struct gate *gate_wrap(struct repo *r)
{
	struct gate *g = calloc(1, sizeof(*g));

	CHECK(g != NULL);
	g->st.ops = &gate_ops;
	g->st.url = strdup(r->store->url);
	CHECK(g->st.url != NULL);
	g->inner = r->store;
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
	r->store = &g->st;
	return g;
}

static unsigned gate_gets(struct gate *g)
{
	unsigned n;

	pthread_mutex_lock(&g->lock);
	n = g->gets;
	pthread_mutex_unlock(&g->lock);
	return n;
}

static void gate_close(struct gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->closed = true;
	pthread_mutex_unlock(&g->lock);
}

static void gate_open(struct gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->closed = false;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

/* Waits until n GETs wait at the gate. */
static void gate_wait_held(struct gate *g, unsigned n)
{
	pthread_mutex_lock(&g->lock);
	while (g->held < n)
		pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
}

/* ---- chunks and readers --------------------------------------------- */

static unsigned char ids[NCHUNKS][CODEC_ID_LEN];

/* Chunk i: every byte is 'A' + i, but the first, which is i. */
static void fill(unsigned i, unsigned char *p)
{
	memset(p, 'A' + (int)i, CS);
	p[0] = (unsigned char)i;
}

static void put_chunks(struct repo *r)
{
	struct buf b = { 0 };
	uint64_t stored;
	unsigned i;

	CHECK_EQ(buf_reserve(&b, repo_chunk_room(r)), 0);
	for (i = 0; i < NCHUNKS; i++) {
		unsigned char *p = b.data + repo_chunk_offset(r);

		fill(i, p);
		CHECK_EQ(repo_chunk_id(r, p, ids[i]), 0);
		CHECK_EQ(repo_put_chunk(r, ids[i], &b, &stored), 0);
	}
	buf_free(&b);
}

/* Reads chunk i whole and checks its bytes; returns the read's result. */
static int read_chunk(struct chunk_cache *cc, unsigned i)
{
	unsigned char *got = malloc(CS), *want = malloc(CS);
	int err;

	CHECK(got != NULL && want != NULL);
	err = chunk_cache_read(cc, ids[i], 0, CS, got);
	if (err == 0) {
		fill(i, want);
		CHECK(memcmp(got, want, CS) == 0);
	}
	free(got);
	free(want);
	return err;
}

struct reader {
	pthread_t thread;
	struct chunk_cache *cc;
	unsigned chunk;
	int err;
};

static void *reader_main(void *arg)
{
	struct reader *rd = arg;

	rd->err = read_chunk(rd->cc, rd->chunk);
	return NULL;
}

static void reader_start(struct reader *rd, struct chunk_cache *cc,
			 unsigned chunk)
{
	rd->cc = cc;
	rd->chunk = chunk;
	rd->err = -1;
	CHECK_EQ(pthread_create(&rd->thread, NULL, reader_main, rd), 0);
}

static void stats(struct chunk_cache *cc, struct chunk_cache_stats *st)
{
	memset(st, 0, sizeof(*st));
	chunk_cache_get_stats(cc, st);
}

/* Waits (up to 10 s) until the cache has counted n waits. */
static void wait_for_waits(struct chunk_cache *cc, uint64_t n)
{
	struct chunk_cache_stats st;
	int i;

	for (i = 0; i < 10000; i++) {
		stats(cc, &st);
		if (st.waits >= n)
			return;
		nanosleep(&(struct timespec){ 0, 1000 * 1000 }, NULL);
	}
	CHECK(!"a reader never waited for the load");
}

/* ---- the tests ------------------------------------------------------- */

/* Two readers of one missing chunk: one GET, and both get its bytes. */
static void test_single_flight(struct repo *r, struct gate *g)
{
	struct chunk_cache *cc = chunk_cache_create(r, 4 * CS, 0, &cc_err);
	struct chunk_cache_stats st;
	struct reader a, b;
	unsigned before = gate_gets(g);

	CHECK(cc != NULL);
	gate_close(g);
	reader_start(&a, cc, 1);
	gate_wait_held(g, 1);		/* a's load is in flight */
	reader_start(&b, cc, 1);
	wait_for_waits(cc, 1);		/* b waits for that load */
	gate_open(g);
	CHECK_EQ(pthread_join(a.thread, NULL), 0);
	CHECK_EQ(pthread_join(b.thread, NULL), 0);
	CHECK_EQ(a.err, 0);
	CHECK_EQ(b.err, 0);
	CHECK_EQ(gate_gets(g) - before, 1u);
	stats(cc, &st);
	CHECK_EQ(st.misses, 1u);
	CHECK_EQ(st.hits, 1u);
	CHECK_EQ(st.waits, 1u);
	CHECK_EQ(st.chunks, 1u);

	/* and a third read is a plain hit */
	CHECK_EQ(read_chunk(cc, 1), 0);
	CHECK_EQ(gate_gets(g) - before, 1u);
	chunk_cache_destroy(cc);
}

/*
 * Room for one chunk.  While chunk 0 is pinned (its load in flight), a
 * reader of chunk 2 must neither evict it nor fetch past the bound: it
 * waits, and fetches once the pin is dropped.  Then the unpinned chunk 0
 * is evicted for chunk 2.
 */
static void test_pinned_survives(struct repo *r, struct gate *g)
{
	struct chunk_cache *cc = chunk_cache_create(r, CS, 0, &cc_err);
	struct chunk_cache_stats st;
	struct reader a, b;
	unsigned before = gate_gets(g);
	int i;

	CHECK(cc != NULL);
	gate_close(g);
	reader_start(&a, cc, 0);
	gate_wait_held(g, 1);
	reader_start(&b, cc, 2);
	/* b finds no buffer it may take: give it time to do wrong */
	for (i = 0; i < 50; i++)
		nanosleep(&(struct timespec){ 0, 2 * 1000 * 1000 }, NULL);
	CHECK_EQ(gate_gets(g) - before, 1u);
	stats(cc, &st);
	CHECK_EQ(st.chunks, 1u);
	CHECK_EQ(st.misses, 1u);
	gate_open(g);
	CHECK_EQ(pthread_join(a.thread, NULL), 0);
	CHECK_EQ(pthread_join(b.thread, NULL), 0);
	CHECK_EQ(a.err, 0);		/* its bytes were not taken */
	CHECK_EQ(b.err, 0);
	CHECK_EQ(gate_gets(g) - before, 2u);
	stats(cc, &st);
	CHECK_EQ(st.chunks, 1u);	/* chunk 0 made room for 2 */
	CHECK(st.bytes <= st.max_bytes);

	CHECK_EQ(read_chunk(cc, 2), 0);	/* cached */
	CHECK_EQ(gate_gets(g) - before, 2u);
	CHECK_EQ(read_chunk(cc, 0), 0);	/* evicted: fetched again */
	CHECK_EQ(gate_gets(g) - before, 3u);
	chunk_cache_destroy(cc);
}

/* A failed load is not cached: the next read fetches again. */
static void test_failed_not_cached(struct repo *r, struct gate *g)
{
	struct chunk_cache *cc = chunk_cache_create(r, 4 * CS, 0, &cc_err);
	struct chunk_cache_stats st;
	unsigned before = gate_gets(g);

	CHECK(cc != NULL);
	pthread_mutex_lock(&g->lock);
	g->fail = 1;
	pthread_mutex_unlock(&g->lock);
	CHECK_EQ(read_chunk(cc, 3), EIO);
	stats(cc, &st);
	CHECK_EQ(st.load_errors, 1u);
	CHECK_EQ(st.chunks, 0u);
	CHECK_EQ(read_chunk(cc, 3), 0);
	CHECK_EQ(gate_gets(g) - before, 2u);
	CHECK_EQ(read_chunk(cc, 3), 0);	/* now it is cached */
	CHECK_EQ(gate_gets(g) - before, 2u);
	stats(cc, &st);
	CHECK_EQ(st.load_errors, 1u);
	CHECK_EQ(st.chunks, 1u);
	chunk_cache_destroy(cc);
}

/*
 * Room for three chunks: reading all of them keeps the buffer memory
 * within the bound, holds the three most recently read, and evicts the
 * least recently read first.
 */
static void test_memory_bound(struct repo *r, struct gate *g)
{
	struct chunk_cache *cc;
	struct chunk_cache_stats st;
	unsigned before = gate_gets(g), i;

	/* a bound between three and four buffers means three */
	cc = chunk_cache_create(r, 3 * CS + CS / 2, 0, &cc_err);
	CHECK(cc != NULL);
	for (i = 0; i < NCHUNKS; i++) {
		CHECK_EQ(read_chunk(cc, i), 0);
		stats(cc, &st);
		CHECK(st.bytes <= st.max_bytes);
		CHECK(st.chunks <= 3);
	}
	CHECK(st.max_bytes <= 3 * CS + CS / 2);
	CHECK_EQ(st.chunks, 3u);
	CHECK_EQ(gate_gets(g) - before, NCHUNKS);

	/* NCHUNKS - 3 is still cached; read it, so NCHUNKS - 2 is now the
	 * least recently read, and goes first */
	CHECK_EQ(read_chunk(cc, NCHUNKS - 3), 0);
	CHECK_EQ(gate_gets(g) - before, NCHUNKS);
	CHECK_EQ(read_chunk(cc, 0), 0);
	CHECK_EQ(gate_gets(g) - before, NCHUNKS + 1);
	CHECK_EQ(read_chunk(cc, NCHUNKS - 3), 0);
	CHECK_EQ(read_chunk(cc, NCHUNKS - 1), 0);
	CHECK_EQ(gate_gets(g) - before, NCHUNKS + 1);
	CHECK_EQ(read_chunk(cc, NCHUNKS - 2), 0);
	CHECK_EQ(gate_gets(g) - before, NCHUNKS + 2);
	stats(cc, &st);
	CHECK(st.bytes <= st.max_bytes);
	CHECK_EQ(st.chunks, 3u);

	/* the smallest bound still allows one buffer */
	chunk_cache_destroy(cc);
	cc = chunk_cache_create(r, 1, 0, &cc_err);
	CHECK(cc != NULL);
	CHECK_EQ(read_chunk(cc, 0), 0);
	CHECK_EQ(read_chunk(cc, 1), 0);
	stats(cc, &st);
	CHECK_EQ(st.chunks, 1u);
	CHECK(st.bytes <= st.max_bytes);
	chunk_cache_destroy(cc);
}

int main(void)
{
	char dir[] = "/tmp/cbtfs-test-chunk-cache-XXXXXX";
	char repo_path[300], cmd[400], rid[CBTFS_UUID_LEN + 1];
	struct repo *r;
	struct gate *g;
	int err;

	log_init("test_chunk_cache");
	alarm(120);	/* a deadlock fails the test instead of hanging it */
	CHECK(mkdtemp(dir) != NULL);
	snprintf(repo_path, sizeof(repo_path), "%s/repo", dir);
	CHECK_EQ(repo_init(repo_path, NULL, CS, NULL, rid), 0);
	r = repo_open(repo_path, NULL, NULL, &err);
	CHECK(r != NULL);
	put_chunks(r);
	g = gate_wrap(r);

	test_single_flight(r, g);
	test_pinned_survives(r, g);
	test_failed_not_cached(r, g);
	test_memory_bound(r, g);

	repo_close(r);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK_EQ(system(cmd), 0);
	printf("test_chunk_cache: ok\n");
	return 0;
}
