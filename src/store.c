/*
 * Store selection by URL: the one place that knows which backend serves
 * which URL scheme.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

/* Splits "s3://BUCKET/PREFIX" and opens it. */
static struct store *open_s3(const char *url, const struct store_opts *opts,
			     int *errp)
{
	const char *b = url + 5, *slash = strchr(b, '/');
	char *bucket = strndup(b, slash ? (size_t)(slash - b) : strlen(b));
	struct store *st;

	if (bucket == NULL) {
		*errp = ENOMEM;
		return NULL;
	}
	st = store_s3_create(bucket, slash ? slash + 1 : "", opts, errp);
	free(bucket);
	return st;
}

struct store *store_open(const char *url, bool create,
			 const struct store_opts *opts, int *errp)
{
	static const struct store_opts no_opts = { .retries = -1 };
	struct store *st;

	if (opts == NULL)
		opts = &no_opts;
	if (strncmp(url, "s3://", 5) == 0) {
		st = open_s3(url, opts, errp);
	} else if (strncmp(url, "file://", 7) == 0) {
		if (url[7] != '/') {
			log_error("%s: a file URL needs an absolute path "
				  "(file:///path/to/repo)", url);
			*errp = EINVAL;
			return NULL;
		}
		st = store_dir_create(url + 7, create, errp);
	} else if (strstr(url, "://") != NULL) {
		log_error("%s: unsupported repository URL scheme; use "
			  "s3://BUCKET/PREFIX, a directory path or "
			  "file:///path", url);
		*errp = EINVAL;
		return NULL;
	} else {
		st = store_dir_create(url, create, errp);
	}
	if (st == NULL)
		return NULL;
	st->url = strdup(url);
	if (st->url == NULL) {
		st->ops->destroy(st);
		*errp = ENOMEM;
		return NULL;
	}
	return st;
}

int store_del_many(struct store *st, const char *const *keys, size_t n)
{
	size_t i;
	int err = 0;

	if (st->ops->del_many != NULL)
		return st->ops->del_many(st, keys, n);
	for (i = 0; i < n && err == 0; i++)
		err = st->ops->del(st, keys[i]);
	return err;
}

int store_clean_temp(struct store *st, unsigned max_age, bool dry_run,
		     uint64_t *files, uint64_t *bytes)
{
	*files = 0;
	*bytes = 0;
	if (st->ops->clean_temp == NULL)
		return 0;
	return st->ops->clean_temp(st, max_age, dry_run, files, bytes);
}

void store_get_stats(struct store *st, struct store_stats *stats)
{
	memset(stats, 0, sizeof(*stats));
	if (st->ops->get_stats != NULL)
		st->ops->get_stats(st, stats);
}

void store_destroy(struct store *st)
{
	if (st == NULL)
		return;
	free(st->url);
	st->ops->destroy(st);
}
