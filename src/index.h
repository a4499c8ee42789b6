/*
 * Local index: a per-host SQLite database of the repository's snapshots,
 * their chunk entries and the chunks recorded as damaged.  Derived data,
 * never an authority: index_sync() brings it in line with the store's
 * snapshots/ and damaged/ (new manifests fetched, vanished ones dropped),
 * index_rebuild() recreates it from scratch, and every chain it resolves
 * is checked against digests of the verified manifests (see index.c).
 * All SQL of cbtfs lives in index.c.
 *
 * Location: <cache_dir>/<repo id>/index.db (0600, in a 0700 directory),
 * cache_dir defaulting to $XDG_CACHE_HOME/cbtfs or ~/.cache/cbtfs.  WAL
 * mode, so an ingest and a mount on one host share it.  Every function is
 * thread-safe (one mutex per index; SQLite is only touched under it).
 *
 * Functions return 0 or a positive errno and log what failed (naming the
 * index file), unless their comment says otherwise.  EUCLEAN means the
 * file is damaged; the message says how to repair it.
 */
#ifndef CBTFS_INDEX_H
#define CBTFS_INDEX_H

#include <stdbool.h>
#include <stdint.h>

#include "chunk_map.h"
#include "repo.h"

struct index;

/* What every message about a damaged index ends with. */
#define INDEX_REPAIR_HINT                                                   \
	"the local index is damaged; 'cbtfs-repo reindex REPO' rebuilds it " \
	"from the repository (ingests rebuild it by themselves)"

/* Default cache directory (malloc'd; NULL if out of memory), from
 * XDG_CACHE_HOME or HOME. */
char *index_default_cache_dir(void);

/*
 * Opens (creating) the index of repo under cache_dir (NULL: default).  A
 * file SQLite cannot read, or the index of another repository, is
 * replaced by an empty index (with a warning): the next sync fills it.
 * Processes opening it at the same time wait for each other.  NULL with
 * *errp set (logged).
 */
struct index *index_open(struct repo *repo, const char *cache_dir,
			 int *errp);
void index_close(struct index *ix);
const char *index_path(const struct index *ix);

/*
 * Syncs with the store: snapshots and damage records.  New manifests are
 * fetched and vanished ones dropped; a snapshot whose parent vanished is
 * read again first (a forget folded the parent into it and rewrote its
 * manifest, see prune.h).  *changed (may be NULL) is set when snapshots
 * were added, dropped or replaced, by this sync or by another process (an
 * ingest on this host) since the last sync.  Manifests
 * that cannot be read are logged and skipped (index_bad_manifests()).  An
 * index found damaged on the way is rebuilt.  0 or an errno (logged).
 */
int index_sync(struct index *ix, bool *changed);
/* Empties the index and syncs it from the store.  0 or an errno
 * (logged). */
int index_rebuild(struct index *ix);

/* Calls cb for the id of each manifest the last sync could not read. */
typedef int index_id_cb(void *arg, const char *id);
int index_bad_manifests(struct index *ix, index_id_cb *cb, void *arg);

/* Records a manifest just committed to the store (verified by its
 * writer). */
int index_add_manifest(struct index *ix, const struct manifest *m);

/*
 * Looks a snapshot up by volume and name: *mp receives its row as a
 * manifest without entries (n_entries 0), freed with manifest_free().
 * ENOENT (not logged) if absent.  The row is not verified: what matters
 * (the chain, the handles) is taken from index_resolve_chain().
 */
int index_find_snapshot(struct index *ix, const char *volume,
			const char *name, struct manifest **mp);

/* Calls cb for every snapshot (of volume, or all if NULL) ordered by
 * volume, creation time, name.  m has no entries and is valid during the
 * call only.  A non-zero return of cb stops and is returned. */
typedef int index_snapshot_cb(void *arg, const struct manifest *m);
int index_list_snapshots(struct index *ix, const char *volume,
			 index_snapshot_cb *cb, void *arg);

/* Sets *known if some indexed manifest refers to chunk id (whether it is
 * recorded as damaged is the caller's to check: index_damaged_ids()).
 * 0 or an errno (logged). */
int index_chunk_known(struct index *ix, const unsigned char *id,
		      bool *known);

/*
 * Damaged chunks: those with a record in the store (see repo.h), learnt at
 * each sync, and those this host found (index_mark_damaged(), which also
 * writes the store's record where it can).  All return 0 or an errno
 * (logged).
 */
int index_mark_damaged(struct index *ix, const unsigned char *id,
		       const char *why);
int index_clear_damaged(struct index *ix, const unsigned char *id);
/* *idsp (malloc'd, sorted with memcmp) receives *np damaged ids. */
int index_damaged_ids(struct index *ix, unsigned char (**idsp)[CODEC_ID_LEN],
		      size_t *np);

/*
 * Resolves the chain of snapshot snap_id into *mapp, and into *leafp (may
 * be NULL; no entries) the snapshot's own fields.  Every link is checked
 * against the digest recorded when its manifest was verified, so a
 * damaged index never yields a map: EUCLEAN (logged, naming the index and
 * 'cbtfs-repo reindex').  ENOENT if snap_id is not indexed; EIO (logged)
 * for a chain whose ancestor is missing or loops.
 */
int index_resolve_chain(struct index *ix, const char *snap_id,
			struct manifest **leafp, struct chunk_map **mapp);

#endif
