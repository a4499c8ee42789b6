/*
 * A store wrapper that counts what passes through it: the mount's metrics
 * of GETs, their bytes and their failures, whatever the backend.  Every
 * method is the inner store's; the counters are atomics, so the wrapper
 * adds no lock.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

struct store_count {
	struct store st;
	struct store *inner;
	uint64_t gets, get_bytes, get_errors;
};

#define INNER(st) (((struct store_count *)(st))->inner)

static int count_get(struct store *st, const char *key, uint64_t off,
		     uint64_t len, struct buf *out)
{
	struct store_count *sc = (struct store_count *)st;
	int err = store_get(sc->inner, key, off, len, out);

	__atomic_add_fetch(&sc->gets, 1, __ATOMIC_RELAXED);
	if (err == 0)
		__atomic_add_fetch(&sc->get_bytes, out->len,
				   __ATOMIC_RELAXED);
	else if (err != ENOENT)
		__atomic_add_fetch(&sc->get_errors, 1, __ATOMIC_RELAXED);
	return err;
}

static int count_put(struct store *st, const char *key, const void *data,
		     size_t len)
{
	return store_put(INNER(st), key, data, len);
}

static int count_head(struct store *st, const char *key, uint64_t *sizep)
{
	return store_head(INNER(st), key, sizep);
}

static int count_del(struct store *st, const char *key)
{
	return store_del(INNER(st), key);
}

static int count_del_many(struct store *st, const char *const *keys,
			  size_t n)
{
	return store_del_many(INNER(st), keys, n);
}

static int count_list(struct store *st, const char *prefix,
		      store_list_cb *cb, void *arg)
{
	return store_list(INNER(st), prefix, cb, arg);
}

static int count_clean_temp(struct store *st, unsigned max_age,
			    bool dry_run, uint64_t *files, uint64_t *bytes)
{
	return store_clean_temp(INNER(st), max_age, dry_run, files, bytes);
}

static void count_get_stats(struct store *st, struct store_stats *stats)
{
	store_get_stats(INNER(st), stats);
}

static void count_destroy(struct store *st)
{
	store_destroy(INNER(st));
	free(st);
}

static const struct store_ops store_count_ops = {
	.name = "count",
	.get = count_get,
	.put = count_put,
	.head = count_head,
	.del = count_del,
	.del_many = count_del_many,
	.list = count_list,
	.clean_temp = count_clean_temp,
	.get_stats = count_get_stats,
	.destroy = count_destroy,
};

struct store *store_count_create(struct store *inner, int *errp)
{
	struct store_count *sc = calloc(1, sizeof(*sc));

	if (sc != NULL)
		sc->st.url = strdup(inner->url ? inner->url : "");
	if (sc == NULL || sc->st.url == NULL) {
		free(sc);
		*errp = ENOMEM;
		return NULL;
	}
	sc->st.ops = &store_count_ops;
	sc->inner = inner;
	return &sc->st;
}

void store_count_get(struct store *st, struct store_counts *c)
{
	struct store_count *sc = (struct store_count *)st;

	memset(c, 0, sizeof(*c));
	if (st->ops != &store_count_ops)
		return;
	c->gets = __atomic_load_n(&sc->gets, __ATOMIC_RELAXED);
	c->get_bytes = __atomic_load_n(&sc->get_bytes, __ATOMIC_RELAXED);
	c->get_errors = __atomic_load_n(&sc->get_errors, __ATOMIC_RELAXED);
}
