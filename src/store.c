/*
 * Store selection by URL: the one place that knows which backend serves
 * which URL scheme.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

struct store *store_open(const char *url, bool create, int *errp)
{
	struct store *st;

	if (strncmp(url, "file://", 7) == 0) {
		if (url[7] != '/') {
			log_error("%s: a file URL needs an absolute path "
				  "(file:///path/to/repo)", url);
			*errp = EINVAL;
			return NULL;
		}
		st = store_dir_create(url + 7, create, errp);
	} else if (strstr(url, "://") != NULL) {
		log_error("%s: unsupported repository URL scheme; use a "
			  "directory path or file:///path", url);
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

void store_destroy(struct store *st)
{
	if (st == NULL)
		return;
	free(st->url);
	st->ops->destroy(st);
}
