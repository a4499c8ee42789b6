/*
 * Forget: the retention policy (restic's rules) on made-up times, and
 * folding: random chains with branches, capacity changes and zero entries,
 * random snapshots forgotten; every kept snapshot must resolve to the same
 * chunks afterwards, both through an index synced before the forget (its
 * rows of rewritten manifests are re-read) and through a new one.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index.h"
#include "prune.h"
#include "repo.h"
#include "tests.h"

#define CS (64u * 1024)
#define DAY 86400

/* keep[] as a string of 'k' and '.' for comparisons */
static void check_policy(const struct forget_policy *p, const int64_t *t,
			 size_t n, const char *expect)
{
	unsigned keep[64];
	char got[65];
	size_t i;

	forget_policy_apply(p, t, n, keep);
	for (i = 0; i < n; i++)
		got[i] = keep[i] ? 'k' : '.';
	got[n] = '\0';
	if (strcmp(got, expect) != 0) {
		fprintf(stderr, "policy: got %s, want %s\n", got, expect);
		abort();
	}
	CHECK(keep[0] & FORGET_KEEP_NEWEST);
}

static void test_policy(void)
{
	/* 2024-01-15 12:00 UTC (a Monday), newest first */
	const int64_t base = 1705320000;
	int64_t t[16];
	struct forget_policy p;
	unsigned keep[16];
	size_t i;

	for (i = 0; i < 10; i++)
		t[i] = base - (int64_t)i * 3600;	/* hourly, 10 h */
	memset(&p, 0, sizeof(p));
	p.last = 3;
	check_policy(&p, t, 10, "kkk.......");
	memset(&p, 0, sizeof(p));
	p.hourly = 4;
	check_policy(&p, t, 10, "kkkk......");
	/* 12:00 back to 03:00: two days (the 15th from 00:00) */
	memset(&p, 0, sizeof(p));
	p.daily = 5;
	check_policy(&p, t, 10, "k.........");

	/* two per day over 6 days, at 12:00 and 06:00 */
	for (i = 0; i < 12; i++)
		t[i] = base - (int64_t)(i / 2) * DAY -
		       (int64_t)(i % 2) * 21600;
	memset(&p, 0, sizeof(p));
	p.daily = 3;
	check_policy(&p, t, 12, "k.k.k.......");
	/* union with keep-last 2 */
	p.last = 2;
	check_policy(&p, t, 12, "kkk.k.......");
	forget_policy_apply(&p, t, 12, keep);
	CHECK(keep[0] == (FORGET_KEEP_NEWEST | FORGET_KEEP_LAST |
			  FORGET_KEEP_DAILY));
	CHECK(keep[1] == FORGET_KEEP_LAST);
	CHECK(keep[2] == FORGET_KEEP_DAILY);
	/* ISO weeks: Mon 15th, Sun 14th and Sat 13th differ by week once */
	memset(&p, 0, sizeof(p));
	p.weekly = 2;
	check_policy(&p, t, 12, "k.k.........");
	/* more periods asked for than there are: all of them */
	memset(&p, 0, sizeof(p));
	p.daily = 100;
	check_policy(&p, t, 12, "k.k.k.k.k.k.");

	/* months: Jan 15, Jan 1, Dec 31, Dec 1, Nov 30 */
	t[0] = base;
	t[1] = 1704110400;	/* 2024-01-01 12:00 */
	t[2] = 1704024000;	/* 2023-12-31 12:00 */
	t[3] = 1701432000;	/* 2023-12-01 12:00 */
	t[4] = 1701345600;	/* 2023-11-30 12:00 */
	memset(&p, 0, sizeof(p));
	p.monthly = 2;
	check_policy(&p, t, 5, "k.k..");
	p.monthly = 3;
	check_policy(&p, t, 5, "k.k.k");
	/* only the newest, whatever the rule */
	memset(&p, 0, sizeof(p));
	check_policy(&p, t, 5, "k....");
}

/* ---- folding ------------------------------------------------------------ */

static unsigned long long rng = 88172645463325252ull;

static unsigned rnd(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned)(rng % n);
}

#define MAXS 8

struct trial {
	struct manifest m[MAXS];
	int parent[MAXS];	/* -1: root */
	size_t n;
};

/* A random tree of n snapshots in volume vol, each with random entries
 * (some zero) and a random capacity, written to r. */
static void make_tree(struct repo *r, struct trial *t, size_t n)
{
	size_t i, k;
	char name[8];

	t->n = n;
	for (i = 0; i < n; i++) {
		struct manifest *m = &t->m[i];
		uint64_t nch = 1 + rnd(12), idx;

		memset(m, 0, sizeof(*m));
		uuid_new(m->id);
		m->volume = "ns/fold";
		snprintf(name, sizeof(name), "s%zu", i);
		m->name = strdup(name);
		t->parent[i] = i == 0 ? -1 : (int)rnd((unsigned)i);
		snprintf(m->parent_id, sizeof(m->parent_id), "%s",
			 t->parent[i] < 0 ? "" : t->m[t->parent[i]].id);
		m->capacity = nch * CS - (rnd(2) ? rnd(CS) : 0);
		m->chunk_size = CS;
		m->created = 1700000000 + (int64_t)i;
		m->changes = "scan";
		m->csi_handle = "";
		m->csi_driver = "";
		m->entries = calloc(nch, sizeof(*m->entries));
		CHECK(m->entries != NULL);
		for (idx = 0, k = 0; idx < nch; idx++) {
			if (rnd(3) == 0)
				continue;
			m->entries[k].index = idx;
			/* a zero chunk, or one of 5 ids */
			if (rnd(5) != 0)
				memset(m->entries[k].id, 'a' + (int)rnd(5),
				       CODEC_ID_LEN);
			k++;
		}
		m->n_entries = k;
		CHECK_EQ(repo_put_manifest(r, m, NULL), 0);
	}
}

static void free_tree(struct trial *t)
{
	size_t i;

	for (i = 0; i < t->n; i++) {
		free(t->m[i].name);
		free(t->m[i].entries);
	}
}

static bool same_map(const struct chunk_map *a, const struct chunk_map *b)
{
	return a->nchunks == b->nchunks && a->capacity == b->capacity &&
	       a->n == b->n &&
	       memcmp(a->v, b->v, a->n * sizeof(*a->v)) == 0;
}

static void one_trial(const char *dir, int trial)
{
	char path[400], cache_old[400], cache_new[400], rid[40];
	struct chunk_map *before[MAXS] = { 0 }, *after;
	const char *names[MAXS];
	struct forget_conf conf = { 0 };
	struct forget_report rep;
	struct index *old, *fresh;
	struct trial t;
	struct repo *r;
	size_t i, n = 2 + rnd(MAXS - 1), nf = 0;
	bool gone[MAXS] = { 0 }, exists;
	int err;

	snprintf(path, sizeof(path), "%s/repo%d", dir, trial);
	snprintf(cache_old, sizeof(cache_old), "%s/cache-old%d", dir, trial);
	snprintf(cache_new, sizeof(cache_new), "%s/cache-new%d", dir, trial);
	CHECK_EQ(repo_init(path, NULL, CS, NULL, rid), 0);
	r = repo_open(path, NULL, NULL, &err);
	CHECK(r != NULL);
	make_tree(r, &t, n);
	old = index_open(r, cache_old, &err);
	CHECK(old != NULL);
	CHECK_EQ(index_sync(old, NULL), 0);
	for (i = 0; i < n; i++)
		CHECK_EQ(index_resolve_chain(old, t.m[i].id, NULL,
					     &before[i]), 0);

	/* forget a random non-empty proper subset */
	while (nf == 0 || nf == n) {
		nf = 0;
		for (i = 0; i < n; i++) {
			gone[i] = rnd(2);
			if (gone[i])
				names[nf++] = t.m[i].name;
		}
	}
	conf.repo = r;
	conf.volume = "ns/fold";
	conf.names = names;
	conf.n_names = nf;
	conf.jobs = 2;
	CHECK_EQ(forget_run(&conf, &rep), 0);
	CHECK_EQ(rep.forgotten, (uint64_t)nf);
	CHECK_EQ(rep.kept, (uint64_t)(n - nf));
	forget_report_free(&rep);

	/* a second run of the same names: nothing is there, an error */
	CHECK_EQ(forget_run(&conf, &rep), ENOENT);
	forget_report_free(&rep);

	CHECK_EQ(index_sync(old, NULL), 0);
	fresh = index_open(r, cache_new, &err);
	CHECK(fresh != NULL);
	CHECK_EQ(index_sync(fresh, NULL), 0);
	for (i = 0; i < n; i++) {
		CHECK_EQ(repo_has_manifest(r, t.m[i].id, &exists), 0);
		CHECK(exists == !gone[i]);
		if (gone[i]) {
			CHECK_EQ(index_resolve_chain(old, t.m[i].id, NULL,
						     &after), ENOENT);
			continue;
		}
		CHECK_EQ(index_resolve_chain(old, t.m[i].id, NULL, &after),
			 0);
		if (!same_map(before[i], after)) {
			fprintf(stderr, "trial %d: s%zu reads differently "
				"through the index synced before\n", trial, i);
			abort();
		}
		chunk_map_free(after);
		CHECK_EQ(index_resolve_chain(fresh, t.m[i].id, NULL, &after),
			 0);
		if (!same_map(before[i], after)) {
			fprintf(stderr, "trial %d: s%zu reads differently\n",
				trial, i);
			abort();
		}
		chunk_map_free(after);
	}
	for (i = 0; i < n; i++)
		chunk_map_free(before[i]);
	index_close(old);
	index_close(fresh);
	free_tree(&t);
	repo_close(r);
}

/* Forgetting every snapshot needs force; a missing name changes
 * nothing. */
static void test_refusals(const char *dir)
{
	char path[400], rid[40];
	const char *all[] = { "s0", "s1", "s2" }, *bad[] = { "s1", "nope" };
	struct forget_conf conf = { 0 };
	struct forget_report rep;
	struct trial t;
	struct repo *r;
	bool exists;
	size_t i;
	int err;

	snprintf(path, sizeof(path), "%s/refusals", dir);
	CHECK_EQ(repo_init(path, NULL, CS, NULL, rid), 0);
	r = repo_open(path, NULL, NULL, &err);
	CHECK(r != NULL);
	make_tree(r, &t, 3);
	conf.repo = r;
	conf.volume = "ns/fold";
	conf.jobs = 1;
	conf.names = all;
	conf.n_names = 3;
	CHECK_EQ(forget_run(&conf, &rep), EPERM);
	forget_report_free(&rep);
	conf.names = bad;
	conf.n_names = 2;
	CHECK_EQ(forget_run(&conf, &rep), ENOENT);
	forget_report_free(&rep);
	for (i = 0; i < 3; i++) {
		CHECK_EQ(repo_has_manifest(r, t.m[i].id, &exists), 0);
		CHECK(exists);
	}
	conf.names = all;
	conf.n_names = 3;
	conf.force = true;
	CHECK_EQ(forget_run(&conf, &rep), 0);
	CHECK_EQ(rep.forgotten, 3);
	forget_report_free(&rep);
	for (i = 0; i < 3; i++) {
		CHECK_EQ(repo_has_manifest(r, t.m[i].id, &exists), 0);
		CHECK(!exists);
	}
	free_tree(&t);
	repo_close(r);
}

int main(void)
{
	char dir[] = "/tmp/cbtfs-test-prune-XXXXXX", cmd[200];
	int i;

	log_init("test_prune");
	test_policy();
	CHECK(mkdtemp(dir) != NULL);
	test_refusals(dir);
	for (i = 0; i < 150; i++)
		one_trial(dir, i);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK_EQ(system(cmd), 0);
	printf("test_prune: ok\n");
	return 0;
}
