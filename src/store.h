/*
 * Object store interface.  A store maps keys ("config", "chunks/ab/ab12..",
 * "snapshots/<uuid>") to immutable byte strings.  Backends: store_dir.c (a
 * local directory).  Wrappers stack on top by holding an inner store.
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
	/* Lists keys beginning with prefix, in no particular order. */
	int (*list)(struct store *st, const char *prefix, store_list_cb *cb,
		    void *arg);
	void (*destroy)(struct store *st);
};

struct store {
	const struct store_ops *ops;
	char *url;		/* as given by the user, for messages */
};

/*
 * Opens the store named by url: "file:///path" or a plain path.  create:
 * make the directory if missing (cbtfs-repo init).  Returns NULL with
 * *errp set (the reason logged) on failure.
 */
struct store *store_open(const char *url, bool create, int *errp);

struct store *store_dir_create(const char *path, bool create, int *errp);

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

void store_destroy(struct store *st);

#endif
