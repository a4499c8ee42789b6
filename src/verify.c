/*
 * Verify: see verify.h.
 *
 * Model.  mans: every manifest in the store, sorted by id, each fetched
 * and verified once.  A checked manifest (one of the volume asked for, or
 * any) has a chain: the readable manifests from it towards its root, itself
 * first, up to the root or the first break (a parent that is missing,
 * unreadable, of another volume, or already met on the way: a loop).
 * Chunk i of the snapshot is the entry for i in the first chain member
 * that has one; a break leaves the chunks no member names unknown.
 * chunks: the distinct non-zero chunk ids the checked manifests name,
 * sorted, each with what the listing of chunks/ and the fetch found.
 *
 * Problems point at the object at fault and collect the snapshots whose
 * chains they damage, with the byte ranges.  Chain problems come first in
 * rep->problems while they are being found; everything is sorted at the
 * end.
 *
 * Threads: a pool of conf->jobs workers runs one task per item (a
 * manifest or chunk fetch); a task writes only its own item, and the
 * counters under v->lock.  The calling thread waits and draws progress.
 * Everything else runs on the calling thread.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "array.h"
#include "pool.h"
#include "progress.h"
#include "snapset.h"
#include "verify.h"

#define NO_PROBLEM UINT32_MAX

enum chunk_state {
	C_MISSING,	/* not listed, or gone when fetched */
	C_PRESENT,	/* listed, not fetched */
	C_TRUNCATED,	/* listed, shorter than a frame header */
	C_OK,		/* fetched and verified */
	C_CORRUPT,	/* fetched, failed verification */
};

struct vchunk {
	unsigned char id[CODEC_ID_LEN];
	uint64_t size;		/* as listed */
	uint8_t state;		/* enum chunk_state */
	bool recorded;		/* has a damage record */
	uint32_t problem;	/* in rep->problems, or NO_PROBLEM */
};

/* An entry of a manifest that names a damaged chunk. */
struct occurrence {
	uint64_t index;
	uint32_t problem;
};

struct vman {
	char id[CBTFS_UUID_LEN + 1];
	struct manifest *m;	/* NULL: unreadable, or deleted meanwhile */
	int err;		/* of repo_get_manifest() */
	bool checked;		/* of the volume asked for */
	unsigned walk;		/* the last chain walk that met it */
	struct {
		size_t *v;	/* indices into mans, itself first */
		size_t n, cap;
	} chain;
	struct {
		struct occurrence *v;
		size_t n, cap;
	} occ;
};

struct verify;
/* Handles item i; returns 0, or an errno that stops the pool. */
typedef int verify_task(struct verify *v, size_t i, struct buf *scratch);

struct verify {
	const struct verify_conf *conf;
	struct repo *r;
	struct verify_report *rep;
	struct {
		struct vman *v;
		size_t n, cap;
	} mans;
	struct {
		struct vchunk *v;
		size_t n, cap;
	} chunks;
	double start;

	/* guards the report's counters and the progress fields */
	pthread_mutex_t lock;
	verify_task *task;		/* of the phase running */
	const size_t *items;		/* NULL: 0..total-1 */
	size_t done, total;
	const char *phase;
	uint64_t bytes_done, bytes_total;
	struct progress pr;
};

const char *verify_kind_name(enum verify_kind k)
{
	static const char *const names[] = {
#define VERIFY_KIND_NAME(k, name) name,
		VERIFY_KINDS(VERIFY_KIND_NAME)
#undef VERIFY_KIND_NAME
	};

	return names[k];
}

/* ---- progress --------------------------------------------------------- */

/* Redraws the progress line (at most every PROGRESS_EVERY seconds); v->lock
 * held (or no workers running).  The estimate goes by bytes where the
 * phase knows them, else by items. */
static void draw_progress(struct verify *v)
{
	double secs = now_seconds() - v->pr.phase;
	double rate = secs > 0 ? v->bytes_done / secs : 0;

	if (v->total == 0)
		progress_show(&v->pr, false, 0, 0, "%s %zu", v->phase,
			      v->done);
	else if (v->bytes_total == 0)
		progress_show(&v->pr, false, v->done, v->total, "%s %zu/%zu",
			      v->phase, v->done, v->total);
	else
		progress_show(&v->pr, false, v->bytes_done, v->bytes_total,
			      "%s %zu/%zu, %s, %.1f MB/s", v->phase, v->done,
			      v->total, HUMAN(v->bytes_done), rate / 1e6);
}

/* Starts counting a phase of total items (0: unknown) for progress. */
static void phase_begin(struct verify *v, const char *phase, size_t total,
			uint64_t bytes_total)
{
	pthread_mutex_lock(&v->lock);
	v->phase = phase;
	v->total = total;
	v->done = 0;
	v->bytes_total = bytes_total;
	v->bytes_done = 0;
	progress_phase(&v->pr);
	pthread_mutex_unlock(&v->lock);
}

/* ---- the worker pool ------------------------------------------------- */

/* pool_task: the verify task of this phase on item k. */
static int pool_item(void *arg, size_t k, struct buf *scratch)
{
	struct verify *v = arg;

	return v->task(v, v->items != NULL ? v->items[k] : k, scratch);
}

/* pool_tick: the progress line. */
static void pool_progress(void *arg, size_t done, bool final)
{
	struct verify *v = arg;

	pthread_mutex_lock(&v->lock);
	v->done = done;
	draw_progress(v);
	pthread_mutex_unlock(&v->lock);
}

/*
 * Runs task over n items (items[0..n), or 0..n-1 if items is NULL) on up
 * to conf->jobs threads; bytes_total (or 0) is what the tasks will add to
 * v->bytes_done, for progress.  Returns the first task error.
 */
static int run_pool(struct verify *v, const char *phase, verify_task *task,
		    const size_t *items, size_t n, uint64_t bytes_total)
{
	struct pool_conf pc = {
		.n = n, .jobs = v->conf->jobs, .task = pool_item,
		.tick = v->conf->progress ? pool_progress : NULL, .arg = v,
	};

	phase_begin(v, phase, n, bytes_total);
	v->task = task;
	v->items = items;
	return pool_run(&pc);
}

/* ---- problems --------------------------------------------------------- */

/* Appends a problem; *idx receives its index.  0 or ENOMEM. */
static int problem_add(struct verify *v, enum verify_kind kind,
		       const char *object, const char *why, uint32_t *idx)
{
	struct verify_problem *p;
	int err;

	if ((err = ARRAY_GROW(&v->rep->problems)) != 0)
		return err;
	p = &v->rep->problems.v[v->rep->problems.n];
	memset(p, 0, sizeof(*p));
	p->kind = kind;
	snprintf(p->object, sizeof(p->object), "%s", object);
	snprintf(p->why, sizeof(p->why), "%s", why);
	*idx = (uint32_t)v->rep->problems.n++;
	return 0;
}

/* The index of the problem of kind with object, added if new. */
static int problem_find_or_add(struct verify *v, enum verify_kind kind,
			       const char *object, const char *why,
			       uint32_t *idx)
{
	size_t i;

	for (i = 0; i < v->rep->problems.n; i++) {
		const struct verify_problem *p = &v->rep->problems.v[i];

		if (p->kind == kind && strcmp(p->object, object) == 0) {
			*idx = (uint32_t)i;
			return 0;
		}
	}
	return problem_add(v, kind, object, why, idx);
}

/* Adds snapshot m to problem idx; *vsp receives it, for its ranges. */
static int problem_add_snapshot(struct verify *v, uint32_t idx,
				const struct manifest *m,
				struct verify_snapshot **vsp)
{
	struct verify_problem *p = &v->rep->problems.v[idx];
	struct verify_snapshot *vs;
	int err;

	if ((err = ARRAY_GROW(&p->snapshots)) != 0)
		return err;
	vs = &p->snapshots.v[p->snapshots.n];
	memset(vs, 0, sizeof(*vs));
	snprintf(vs->id, sizeof(vs->id), "%s", m->id);
	vs->created = m->created;
	vs->volume = strdup(m->volume);
	vs->name = strdup(m->name);
	p->snapshots.n++;
	*vsp = vs;
	return vs->volume != NULL && vs->name != NULL ? 0 : ENOMEM;
}

/* Adds chunks [first, end) of m to vs's ranges, as bytes, merging. */
static int add_chunk_range(struct verify_snapshot *vs,
			   const struct manifest *m, uint64_t first,
			   uint64_t end)
{
	uint64_t off = first * m->chunk_size, stop = end * m->chunk_size;
	struct verify_range *last;
	int err;

	if (stop > m->capacity)
		stop = m->capacity;
	last = vs->ranges.n > 0 ? &vs->ranges.v[vs->ranges.n - 1] : NULL;
	if (last != NULL && last->off + last->len == off) {
		last->len = stop - last->off;
		return 0;
	}
	if ((err = ARRAY_GROW(&vs->ranges)) != 0)
		return err;
	vs->ranges.v[vs->ranges.n].off = off;
	vs->ranges.v[vs->ranges.n].len = stop - off;
	vs->ranges.n++;
	return 0;
}

/* ---- manifests and chains ------------------------------------------- */

static uint64_t nchunks(const struct manifest *m)
{
	return (m->capacity + m->chunk_size - 1) / m->chunk_size;
}

static int vman_key_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct vman *)elem)->id);
}

/* The index of manifest id in mans, or SIZE_MAX. */
static size_t find_manifest(const struct verify *v, const char *id)
{
	const struct vman *vm = array_find(id, v->mans.v, v->mans.n,
					   sizeof(*v->mans.v), vman_key_cmp);

	return vm != NULL ? (size_t)(vm - v->mans.v) : SIZE_MAX;
}

static int entry_key_cmp(const void *key, const void *elem)
{
	uint64_t a = *(const uint64_t *)key;
	uint64_t b = ((const struct manifest_entry *)elem)->index;

	return a < b ? -1 : a > b;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static bool has_entry(const struct manifest *m, uint64_t index)
{
	return array_find(&index, m->entries, m->n_entries,
			  sizeof(*m->entries), entry_key_cmp) != NULL;
}

/* Progress of snapset_read(): listing (n 0), then fetching. */
static void manifests_progress(void *arg, size_t done, size_t n)
{
	struct verify *v = arg;

	pthread_mutex_lock(&v->lock);
	v->phase = n == 0 ? "listing snapshots/" : "manifests";
	v->done = done;
	v->total = n;
	draw_progress(v);
	pthread_mutex_unlock(&v->lock);
}

/* Reads every manifest from the store (snapset.h), marks the checked
 * ones. */
static int read_manifests(struct verify *v)
{
	const char *volume = v->conf->volume;
	struct snapset set;
	bool any = false;
	size_t i;
	int err;

	phase_begin(v, "listing snapshots/", 0, 0);
	err = snapset_read(v->r, v->conf->jobs, NULL, NULL, manifests_progress,
			   v, &set);
	for (i = 0; i < set.items.n && err == 0; i++) {
		struct vman *vm;

		if ((err = ARRAY_GROW(&v->mans)) != 0)
			break;
		vm = &v->mans.v[v->mans.n++];
		memset(vm, 0, sizeof(*vm));
		snprintf(vm->id, sizeof(vm->id), "%s", set.items.v[i].id);
		vm->m = set.items.v[i].m;
		vm->err = set.items.v[i].err;
		set.items.v[i].m = NULL;	/* v->mans owns it now */
	}
	snapset_free(&set);
	if (err != 0)
		return err;
	for (i = 0; i < v->mans.n; i++) {
		struct vman *vm = &v->mans.v[i];

		if (vm->err != ENOENT)
			v->rep->manifests++;
		vm->checked = vm->m != NULL &&
			      (volume == NULL ||
			       strcmp(vm->m->volume, volume) == 0);
		any |= vm->checked;
	}
	if (volume != NULL && !any) {
		log_error("volume '%s' has no snapshot in %s; 'cbtfs-repo "
			  "snapshots' lists them", volume, v->r->store->url);
		return ENOENT;
	}
	return 0;
}

/* Adds the chunk indices of top that its chain does not resolve (every
 * index no chain member has an entry for) to vs. */
static int add_unresolved(struct vman *top, const struct verify *v,
			  struct verify_snapshot *vs)
{
	const struct manifest *m = top->m;
	uint64_t n = nchunks(m), next = 0, *idx = NULL;
	size_t total = 0, k = 0, i, j;
	int err = 0;

	for (i = 0; i < top->chain.n; i++)
		total += v->mans.v[top->chain.v[i]].m->n_entries;
	if (total > 0 && (idx = malloc(total * sizeof(*idx))) == NULL)
		return ENOMEM;
	for (i = 0; i < top->chain.n; i++) {
		const struct manifest *c = v->mans.v[top->chain.v[i]].m;

		for (j = 0; j < c->n_entries && c->entries[j].index < n; j++)
			idx[k++] = c->entries[j].index;
	}
	array_sort(idx, k, sizeof(*idx), u64_cmp);
	for (i = 0; i < k && err == 0; i++) {
		if (idx[i] > next)
			err = add_chunk_range(vs, m, next, idx[i]);
		next = idx[i] + 1;
	}
	if (err == 0 && next < n)
		err = add_chunk_range(vs, m, next, n);
	free(idx);
	return err;
}

/* Follows the chain of checked manifest s, walk number walk, into its
 * chain; a break adds s to the problem at fault. */
static int walk_chain(struct verify *v, size_t s, unsigned walk)
{
	struct vman *top = &v->mans.v[s];
	char object[REPO_CHUNK_KEY_LEN + 1], why[200];
	struct verify_snapshot *vs;
	enum verify_kind kind;
	size_t c = s, p, i;
	uint32_t idx;
	int err;

	for (;;) {
		const struct vman *cur = &v->mans.v[c], *par;

		v->mans.v[c].walk = walk;
		if ((err = ARRAY_GROW(&top->chain)) != 0)
			return err;
		top->chain.v[top->chain.n++] = c;
		if (cur->m->parent_id[0] == '\0')
			return 0;
		p = find_manifest(v, cur->m->parent_id);
		par = p != SIZE_MAX ? &v->mans.v[p] : NULL;
		if (par == NULL || par->err == ENOENT) {
			kind = VERIFY_BROKEN_CHAIN;
			snprintf(object, sizeof(object), "snapshots/%s",
				 cur->m->parent_id);
			snprintf(why, sizeof(why), "missing: snapshots name "
				 "it as their parent");
			break;
		}
		if (par->m == NULL) {
			kind = VERIFY_UNREADABLE_MANIFEST;
			snprintf(object, sizeof(object), "snapshots/%s",
				 par->id);
			why[0] = '\0';	/* added by check_chains() */
			break;
		}
		if (strcmp(par->m->volume, cur->m->volume) != 0) {
			kind = VERIFY_BROKEN_CHAIN;
			snprintf(object, sizeof(object), "snapshots/%s",
				 cur->id);
			snprintf(why, sizeof(why), "its parent snapshots/%s "
				 "is a snapshot of another volume, '%s'",
				 par->id, par->m->volume);
			break;
		}
		if (par->walk == walk) {
			/* name the loop by its least id, whoever meets it */
			size_t least = p;

			for (i = 0; top->chain.v[i] != p; i++)
				;
			for (; i < top->chain.n; i++)
				if (top->chain.v[i] < least)
					least = top->chain.v[i];
			kind = VERIFY_BROKEN_CHAIN;
			snprintf(object, sizeof(object), "snapshots/%s",
				 v->mans.v[least].id);
			snprintf(why, sizeof(why), "its parent links form a "
				 "loop");
			break;
		}
		c = p;
	}
	if ((err = problem_find_or_add(v, kind, object, why, &idx)) != 0 ||
	    (err = problem_add_snapshot(v, idx, top->m, &vs)) != 0)
		return err;
	return add_unresolved(top, v, vs);
}

/* A problem for every unreadable manifest, then every checked chain. */
static int check_chains(struct verify *v)
{
	unsigned walk = 0;
	size_t i;
	uint32_t idx;
	int err;

	for (i = 0; i < v->mans.n; i++) {
		const struct vman *vm = &v->mans.v[i];
		char object[REPO_CHUNK_KEY_LEN + 1];

		if (vm->m != NULL || vm->err == ENOENT)
			continue;
		snprintf(object, sizeof(object), "snapshots/%s", vm->id);
		err = problem_add(v, VERIFY_UNREADABLE_MANIFEST, object,
				  vm->err == ENOTSUP
					  ? "in a format this cbtfs cannot "
					    "read"
					  : "corrupt: it cannot be decoded "
					    "or fails verification",
				  &idx);
		if (err != 0)
			return err;
	}
	for (i = 0; i < v->mans.n; i++)
		if (v->mans.v[i].checked &&
		    (err = walk_chain(v, i, ++walk)) != 0)
			return err;
	return 0;
}

/* ---- chunks ----------------------------------------------------------- */


static struct vchunk *find_chunk(const struct verify *v,
				 const unsigned char *id)
{
	return array_find(id, v->chunks.v, v->chunks.n,
			  sizeof(*v->chunks.v), codec_id_cmp);
}

/* Sorts chunks and drops duplicates. */
static void chunks_dedupe(struct verify *v)
{
	size_t i, n = 0;

	array_sort(v->chunks.v, v->chunks.n, sizeof(*v->chunks.v),
		   codec_id_cmp);
	for (i = 0; i < v->chunks.n; i++)
		if (n == 0 || memcmp(v->chunks.v[n - 1].id, v->chunks.v[i].id,
				     CODEC_ID_LEN) != 0)
			v->chunks.v[n++] = v->chunks.v[i];
	v->chunks.n = n;
}

/* Gathers the distinct non-zero chunks the checked manifests name,
 * dropping duplicates whenever they may have doubled the array. */
static int collect_chunks(struct verify *v)
{
	size_t i, j, distinct = 0;
	int err;

	for (i = 0; i < v->mans.n; i++) {
		const struct manifest *m = v->mans.v[i].m;

		if (!v->mans.v[i].checked)
			continue;
		for (j = 0; j < m->n_entries; j++) {
			struct vchunk *c;

			if (codec_id_is_zero(m->entries[j].id))
				continue;
			if ((err = ARRAY_GROW(&v->chunks)) != 0)
				return err;
			c = &v->chunks.v[v->chunks.n++];
			memset(c, 0, sizeof(*c));
			memcpy(c->id, m->entries[j].id, CODEC_ID_LEN);
			c->problem = NO_PROBLEM;
		}
		if (v->chunks.n > 2 * distinct + 65536) {
			chunks_dedupe(v);
			distinct = v->chunks.n;
		}
	}
	chunks_dedupe(v);
	v->rep->chunks_checked = v->chunks.n;
	return 0;
}

static int listed_record(void *arg, const unsigned char id[CODEC_ID_LEN])
{
	struct vchunk *c = find_chunk(arg, id);

	if (c != NULL)
		c->recorded = true;
	return 0;
}

/* One chunk object of the listing of chunks/. */
static int listed_chunk(void *arg, const unsigned char id[CODEC_ID_LEN],
			uint64_t size)
{
	struct verify *v = arg;
	struct vchunk *c;

	v->done++;
	draw_progress(v);
	c = find_chunk(v, id);
	if (c != NULL) {
		c->size = size;
		c->state = size < CODEC_HEADER_LEN ? C_TRUNCATED : C_PRESENT;
	}
	return 0;
}

static int fetch_chunk(struct verify *v, size_t i, struct buf *scratch)
{
	struct vchunk *c = &v->chunks.v[i];
	size_t off;
	int err;

	err = repo_get_chunk(v->r, c->id, scratch, &off);
	if (err != 0 && err != ENOENT && err != EBADMSG)
		return err;	/* the store could not answer: logged */
	pthread_mutex_lock(&v->lock);
	c->state = err == 0 ? C_OK : err == ENOENT ? C_MISSING : C_CORRUPT;
	v->rep->chunks_read++;
	if (err != ENOENT)
		v->rep->read_bytes += c->size;
	v->bytes_done += c->size;
	pthread_mutex_unlock(&v->lock);
	return 0;
}

/* A random number for sampling (splitmix64). */
static uint64_t next_random(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/*
 * Fetches and verifies the listed chunks to read: every recorded one, and
 * with read_data all others or, with a subset, that share of them chosen
 * at random.
 */
static int read_chunks(struct verify *v)
{
	struct {
		size_t *v;
		size_t n, cap;
	} todo = { 0 }, pool = { 0 };
	uint64_t bytes = 0, seed = 0;
	size_t i, want;
	int err = 0;

	for (i = 0; i < v->chunks.n && err == 0; i++) {
		const struct vchunk *c = &v->chunks.v[i];

		if (c->state != C_PRESENT ||
		    (!c->recorded && !v->conf->read_data))
			continue;
		if (c->recorded || v->conf->subset >= 100) {
			if ((err = ARRAY_GROW(&todo)) == 0)
				todo.v[todo.n++] = i;
		} else if ((err = ARRAY_GROW(&pool)) == 0) {
			pool.v[pool.n++] = i;
		}
	}
	/* the share of the others: a partial Fisher-Yates shuffle */
	want = (size_t)((pool.n * (uint64_t)v->conf->subset + 99) / 100);
	if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
		seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	for (i = 0; i < want && err == 0; i++) {
		size_t j = i + (size_t)(next_random(&seed) % (pool.n - i));
		size_t t = pool.v[i];

		pool.v[i] = pool.v[j];
		pool.v[j] = t;
		if ((err = ARRAY_GROW(&todo)) == 0)
			todo.v[todo.n++] = pool.v[i];
	}
	for (i = 0; i < todo.n; i++)
		bytes += v->chunks.v[todo.v[i]].size;
	if (err == 0)
		err = run_pool(v, "chunks", fetch_chunk, todo.v, todo.n,
			       bytes);
	free(todo.v);
	free(pool.v);
	return err;
}

/* Compares (problem, index) pairs. */
static int occurrence_cmp(const void *a, const void *b)
{
	const struct occurrence *x = a, *y = b;

	if (x->problem != y->problem)
		return x->problem < y->problem ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

/* Adds checked manifest s to the problems of the damaged chunks its
 * resolved chain uses, with their ranges.  pairs is scratch space. */
static int damaged_in(struct verify *v, size_t s, struct occurrence **pairs,
		      size_t *cap)
{
	const struct vman *top = &v->mans.v[s];
	const struct manifest *m = top->m;
	size_t n = 0, i, j, k, l;
	int err = 0;

	for (j = 0; j < top->chain.n; j++) {
		const struct vman *member = &v->mans.v[top->chain.v[j]];

		for (k = 0; k < member->occ.n; k++) {
			struct occurrence o = member->occ.v[k];

			if (o.index >= nchunks(m))
				continue;
			/* a member nearer to s may name the chunk */
			for (l = 0; l < j; l++)
				if (has_entry(v->mans.v[top->chain.v[l]].m,
					      o.index))
					break;
			if (l < j)
				continue;
			if ((err = array_reserve(pairs, cap, n + 1,
						 sizeof(**pairs))) != 0)
				return err;
			(*pairs)[n++] = o;
		}
	}
	array_sort(*pairs, n, sizeof(**pairs), occurrence_cmp);
	for (i = 0; i < n && err == 0; i = j) {
		struct verify_snapshot *vs;

		uint32_t prob = (*pairs)[i].problem;

		err = problem_add_snapshot(v, prob, m, &vs);
		for (j = i; j < n && (*pairs)[j].problem == prob; j++)
			if (err == 0)
				err = add_chunk_range(vs, m, (*pairs)[j].index,
						      (*pairs)[j].index + 1);
	}
	return err;
}

/* A problem for every damaged chunk, with the snapshots that use it. */
static int chunk_problems(struct verify *v)
{
	struct occurrence *pairs = NULL;
	size_t i, j, cap = 0, found = 0;
	int err = 0;

	for (i = 0; i < v->chunks.n && err == 0; i++) {
		struct vchunk *c = &v->chunks.v[i];
		char key[REPO_CHUNK_KEY_LEN + 1], why[200];

		if (c->state == C_MISSING)
			snprintf(why, sizeof(why), "missing from the "
				 "repository");
		else if (c->state == C_TRUNCATED)
			snprintf(why, sizeof(why), "truncated: %" PRIu64
				 " bytes, shorter than a chunk frame header",
				 c->size);
		else if (c->state == C_CORRUPT)
			snprintf(why, sizeof(why), "corrupt: it fails "
				 "verification");
		else
			continue;
		repo_chunk_key(c->id, key);
		err = problem_add(v, c->state == C_MISSING
					     ? VERIFY_MISSING_CHUNK
					     : VERIFY_CORRUPT_CHUNK,
				  key, why, &c->problem);
		found++;
	}
	/* where the checked manifests name them */
	for (i = 0; i < v->mans.n && err == 0 && found > 0; i++) {
		struct vman *vm = &v->mans.v[i];

		for (j = 0; vm->checked && j < vm->m->n_entries && err == 0;
		     j++) {
			const struct manifest_entry *e = &vm->m->entries[j];
			const struct vchunk *c;

			if (codec_id_is_zero(e->id) ||
			    (c = find_chunk(v, e->id)) == NULL ||
			    c->problem == NO_PROBLEM)
				continue;
			if ((err = ARRAY_GROW(&vm->occ)) == 0) {
				vm->occ.v[vm->occ.n].index = e->index;
				vm->occ.v[vm->occ.n++].problem = c->problem;
			}
		}
	}
	for (i = 0; i < v->mans.n && err == 0 && found > 0; i++)
		if (v->mans.v[i].checked)
			err = damaged_in(v, i, &pairs, &cap);
	free(pairs);
	return err;
}

/* Writes a damage record for each damaged chunk not yet recorded; removes
 * the record of each recorded chunk that verified. */
static void update_records(struct verify *v)
{
	size_t i, failed = 0;

	for (i = 0; i < v->chunks.n; i++) {
		const struct vchunk *c = &v->chunks.v[i];
		int err = 0;

		if (c->problem != NO_PROBLEM && !c->recorded) {
			err = repo_mark_damaged(v->r, c->id,
						c->state == C_MISSING
							? "missing (verify)"
						: c->state == C_TRUNCATED
							? "truncated (verify)"
							: "corrupt (verify)");
			if (err == 0)
				v->rep->damage_marked++;
		} else if (c->recorded && c->state == C_OK) {
			err = repo_clear_damaged(v->r, c->id);
			if (err == 0)
				v->rep->damage_cleared++;
		}
		if (err != 0)
			failed++;
	}
	if (failed > 0)
		log_warn("%zu damage records under damaged/ could not be "
			 "updated (see above); until they are, ingests do "
			 "not know which chunks to store again: check the "
			 "permissions and run verify again", failed);
}

/* ---- the run ----------------------------------------------------------- */

static int snapshot_cmp(const void *a, const void *b)
{
	const struct verify_snapshot *x = a, *y = b;
	int c = strcmp(x->volume, y->volume);

	if (c == 0 && x->created != y->created)
		c = x->created < y->created ? -1 : 1;
	if (c == 0)
		c = strcmp(x->name, y->name);
	return c != 0 ? c : strcmp(x->id, y->id);
}

static int problem_cmp(const void *a, const void *b)
{
	const struct verify_problem *x = a, *y = b;

	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	return strcmp(x->object, y->object);
}

int verify_run(const struct verify_conf *conf, struct verify_report *rep)
{
	struct verify v = { .conf = conf, .r = conf->repo, .rep = rep };
	size_t i;
	int err;

	memset(rep, 0, sizeof(*rep));
	pthread_mutex_init(&v.lock, NULL);
	v.start = now_seconds();
	progress_init(&v.pr, "verify", conf->progress);

	err = read_manifests(&v);
	if (err == 0)
		err = check_chains(&v);
	if (err == 0)
		err = collect_chunks(&v);
	if (err == 0)
		err = repo_list_damaged(v.r, listed_record, &v);
	if (err == 0) {
		phase_begin(&v, "listing chunks/", 0, 0);
		err = repo_list_chunks(v.r, listed_chunk, &v);
	}
	if (err == 0)
		err = read_chunks(&v);
	if (err == 0)
		err = chunk_problems(&v);
	if (err == 0)
		update_records(&v);
	if (err == ENOMEM)
		log_error("verify of %s: out of memory", v.r->store->url);

	array_sort(rep->problems.v, rep->problems.n, sizeof(*rep->problems.v),
		   problem_cmp);
	for (i = 0; i < rep->problems.n; i++) {
		struct verify_problem *p = &rep->problems.v[i];

		array_sort(p->snapshots.v, p->snapshots.n,
			   sizeof(*p->snapshots.v), snapshot_cmp);
	}
	rep->seconds = now_seconds() - v.start;
	progress_end(&v.pr);

	for (i = 0; i < v.mans.n; i++) {
		manifest_free(v.mans.v[i].m);
		free(v.mans.v[i].chain.v);
		free(v.mans.v[i].occ.v);
	}
	free(v.mans.v);
	free(v.chunks.v);
	pthread_mutex_destroy(&v.lock);
	return err;
}

void verify_report_free(struct verify_report *rep)
{
	size_t i, j;

	for (i = 0; i < rep->problems.n; i++) {
		struct verify_problem *p = &rep->problems.v[i];

		for (j = 0; j < p->snapshots.n; j++) {
			free(p->snapshots.v[j].volume);
			free(p->snapshots.v[j].name);
			free(p->snapshots.v[j].ranges.v);
		}
		free(p->snapshots.v);
	}
	free(rep->problems.v);
	memset(rep, 0, sizeof(*rep));
}
