/*
 * Object store interface.  A store maps keys ("config", "chunks/ab/ab12..",
 * "snapshots/<uuid>") to immutable byte strings.  Backends: store_dir.c (a
 * local directory) and store_s3.c (S3).  Wrappers stack on top by holding
 * an inner store.
 *
 * Contract for every method: returns 0 on success or a positive errno value:
 * ENOENT when the key does not exist (not logged: callers often expect it),
 * anything else after the backend logged what failed and on what.  Every
 * method is thread-safe.  put() is atomic and durable: once it returns 0 the
 * object is complete and survives a crash; a concurrent reader sees either
 * nothing or the whole object.
 */
#ifndef CBTFS_STORE_H
#define CBTFS_STORE_H

#include <stdint.h>

#include "util.h"

#define STORE_TO_END UINT64_MAX

struct store;
struct store_stats;

/* Called once per key by list(); a non-zero return stops the listing and
 * is returned by list(). */
typedef int store_list_cb(void *arg, const char *key, uint64_t size);

struct store_ops {
	const char *name;
	/* Reads len bytes from offset off (STORE_TO_END: to the end) into
	 * out, replacing its contents.  A range past the end is shortened. */
	int (*get)(struct store *st, const char *key, uint64_t off,
		   uint64_t len, struct buf *out);
	int (*put)(struct store *st, const char *key, const void *data,
		   size_t len);
	/* *sizep (may be NULL) receives the object's size. */
	int (*head)(struct store *st, const char *key, uint64_t *sizep);
	/* Deleting a missing key is not an error. */
	int (*del)(struct store *st, const char *key);
	/* Optional: deletes n keys, in as few requests as it can (prune). */
	int (*del_many)(struct store *st, const char *const *keys, size_t n);
	/* Lists keys beginning with prefix, in no particular order. */
	int (*list)(struct store *st, const char *prefix, store_list_cb *cb,
		    void *arg);
	/* Optional: removes the backend's own temporary files (not
	 * objects) older than max_age seconds or whose writer is dead;
	 * with dry_run only counts them.  *files and *bytes receive what
	 * was (or would be) removed.  0 or an errno (logged). */
	int (*clean_temp)(struct store *st, unsigned max_age, bool dry_run,
			  uint64_t *files, uint64_t *bytes);
	/* Optional: counters so far. */
	void (*get_stats)(struct store *st, struct store_stats *stats);
	void (*destroy)(struct store *st);
};

struct store {
	const struct store_ops *ops;
	char *url;		/* as given by the user, for messages */
};

/*
 * Settings for remote stores, from the command line; NULL or 0 fields take
 * the environment's or the default.  Secrets are never here: they come
 * from the environment only.
 */
struct store_opts {
	const char *endpoint;	/* e.g. http://127.0.0.1:7480 */
	const char *region;
	const char *addressing;	/* "path" or "virtual" */
	const char *ca_file;
	unsigned connections;	/* parallel transfers */
	int retries;		/* < 0: default */
	unsigned timeout;	/* seconds a request may stall; 0: default */
};

/* Counters of a store's requests, for summaries. */
struct store_stats {
	uint64_t requests;
	uint64_t retries;
};

/*
 * Opens the store named by url: "s3://BUCKET[/PREFIX]", "file:///path" or
 * a plain path.  create: make the directory if missing (cbtfs-repo init).
 * opts may be NULL.  Returns NULL with *errp set (logged) on failure.
 */
struct store *store_open(const char *url, bool create,
			 const struct store_opts *opts, int *errp);

/* A directory store; opening one removes the temporary files its killed
 * writers left behind (see store_dir.c). */
struct store *store_dir_create(const char *path, bool create, int *errp);
struct store *store_s3_create(const char *bucket, const char *prefix,
			      const struct store_opts *opts, int *errp);

static inline int store_get(struct store *st, const char *key, uint64_t off,
			    uint64_t len, struct buf *out)
{
	return st->ops->get(st, key, off, len, out);
}

static inline int store_put(struct store *st, const char *key,
			    const void *data, size_t len)
{
	return st->ops->put(st, key, data, len);
}

static inline int store_head(struct store *st, const char *key,
			     uint64_t *sizep)
{
	return st->ops->head(st, key, sizep);
}

static inline int store_del(struct store *st, const char *key)
{
	return st->ops->del(st, key);
}

static inline int store_list(struct store *st, const char *prefix,
			     store_list_cb *cb, void *arg)
{
	return st->ops->list(st, prefix, cb, arg);
}

/*
 * A wrapper over inner (which it then owns) counting GETs: calls, bytes
 * returned and failures other than ENOENT.  NULL with *errp (ENOMEM) on
 * failure; inner is then still the caller's.
 */
struct store_counts {
	uint64_t gets, get_bytes, get_errors;
};
struct store *store_count_create(struct store *inner, int *errp);
/* The counters of a store_count_create() store; zeroes for another. */
void store_count_get(struct store *st, struct store_counts *c);

/* Deletes n keys: del_many() where the store has it, else one by one. */
int store_del_many(struct store *st, const char *const *keys, size_t n);

/* clean_temp() where the store has one; else 0 with nothing removed. */
int store_clean_temp(struct store *st, unsigned max_age, bool dry_run,
		     uint64_t *files, uint64_t *bytes);

/* Zeroes stats for stores that keep none. */
void store_get_stats(struct store *st, struct store_stats *stats);

void store_destroy(struct store *st);

#endif
