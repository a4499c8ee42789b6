/*
 * Snapshot sets: see snapset.h.  The fetches run on pool_run()'s
 * threads; each writes only its own item.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "pool.h"
#include "snapset.h"

struct listing {
	struct snapset *set;
	snapset_want_fn *want;
	void *warg;
};

static int add_id(void *arg, const char *id)
{
	struct listing *l = arg;
	struct snapset_item *it;
	int err;

	if (l->want != NULL && !l->want(l->warg, id))
		return 0;
	if ((err = ARRAY_GROW(&l->set->items)) != 0)
		return err;
	it = &l->set->items.v[l->set->items.n++];
	memset(it, 0, sizeof(*it));
	snprintf(it->id, sizeof(it->id), "%s", id);
	return 0;
}

static int item_cmp(const void *a, const void *b)
{
	return strcmp(((const struct snapset_item *)a)->id,
		      ((const struct snapset_item *)b)->id);
}

struct fetching {
	struct repo *r;
	struct snapset *set;
	snapset_progress_fn *progress;
	void *parg;
};

/* pool_task: reads manifest i. */
static int fetch(void *arg, size_t i, struct buf *scratch)
{
	struct fetching *f = arg;
	struct snapset_item *it = &f->set->items.v[i];

	it->err = repo_get_manifest(f->r, it->id, &it->m);
	switch (it->err) {
	case 0:
	case ENOENT:		/* deleted since the listing */
	case EBADMSG:		/* corrupt: logged */
	case ENOTSUP:
		return 0;
	default:
		return it->err;	/* the store could not answer: logged */
	}
}

/* pool_tick: the caller's progress. */
static void fetch_tick(void *arg, size_t done, bool final)
{
	struct fetching *f = arg;

	f->progress(f->parg, done, f->set->items.n);
}

int snapset_read(struct repo *r, unsigned jobs, snapset_want_fn *want,
		 void *warg, snapset_progress_fn *progress, void *parg,
		 struct snapset *set)
{
	struct listing l = { set, want, warg };
	struct fetching f = { r, set, progress, parg };
	struct pool_conf pc = { .jobs = jobs, .task = fetch, .arg = &f };
	int err;

	memset(set, 0, sizeof(*set));
	if (progress != NULL)
		progress(parg, 0, 0);
	err = repo_list_manifests(r, add_id, &l);
	if (err == 0) {
		array_sort(set->items.v, set->items.n, sizeof(*set->items.v),
			   item_cmp);
		pc.n = set->items.n;
		pc.tick = progress != NULL ? fetch_tick : NULL;
		err = pool_run(&pc);
	}
	if (err == ENOMEM)
		log_error("reading the manifests of %s: out of memory",
			  r->store->url);
	return err;
}

struct snapset_item *snapset_find(const struct snapset *set, const char *id)
{
	struct snapset_item key;

	snprintf(key.id, sizeof(key.id), "%s", id);
	return array_find(&key, set->items.v, set->items.n,
			  sizeof(*set->items.v), item_cmp);
}

const struct snapset_item *snapset_unreadable(const struct snapset *set)
{
	size_t i;

	for (i = 0; i < set->items.n; i++)
		if (set->items.v[i].err == EBADMSG ||
		    set->items.v[i].err == ENOTSUP)
			return &set->items.v[i];
	return NULL;
}

void snapset_free(struct snapset *set)
{
	size_t i;

	for (i = 0; i < set->items.n; i++)
		manifest_free(set->items.v[i].m);
	free(set->items.v);
	memset(set, 0, sizeof(*set));
}
