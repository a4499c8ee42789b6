/*
 * Snapshot sets: the manifests of a repository read from its store, never
 * from the local index, so that what is judged is what a restore on any
 * host would read.  verify, forget and prune work on one.
 *
 * A set is an array of items sorted by id; an item whose manifest could
 * not be read says why (its err), so that callers decide what an
 * unreadable manifest means to them.  Not thread-safe: one thread owns a
 * set.
 */
#ifndef CBTFS_SNAPSET_H
#define CBTFS_SNAPSET_H

#include "repo.h"

struct snapset_item {
	char id[CBTFS_UUID_LEN + 1];
	struct manifest *m;	/* NULL unless err is 0 */
	int err;		/* of repo_get_manifest(): 0; ENOENT for a
				 * manifest deleted since the listing;
				 * EBADMSG or ENOTSUP (logged) for one that
				 * cannot be read */
};

struct snapset {
	struct {
		struct snapset_item *v;
		size_t n, cap;
	} items;
};

/* Whether to read manifest id (NULL: every manifest). */
typedef bool snapset_want_fn(void *arg, const char *id);
/* Progress while fetching: done of n manifests, on the calling thread. */
typedef void snapset_progress_fn(void *arg, size_t done, size_t n);

/*
 * Lists snapshots/ and fetches each manifest that want accepts, on up to
 * jobs threads, into *set (empty before; free it with snapset_free()
 * whatever the result).  Returns 0 when every listed manifest was fetched
 * or found unreadable or gone (see the items' err); else an errno
 * (logged): the listing or a fetch failed for a reason other than the
 * manifest's content (the store's retries ran out), or memory ran out.
 */
int snapset_read(struct repo *r, unsigned jobs, snapset_want_fn *want,
		 void *warg, snapset_progress_fn *progress, void *parg,
		 struct snapset *set);

/* The item of id, or NULL. */
struct snapset_item *snapset_find(const struct snapset *set, const char *id);

/* The first item that could not be read (EBADMSG or ENOTSUP), or NULL. */
const struct snapset_item *snapset_unreadable(const struct snapset *set);

void snapset_free(struct snapset *set);

#endif
