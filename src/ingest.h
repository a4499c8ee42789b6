/*
 * Ingest: one snapshot from a device into the repository.
 *
 * Pipeline: change source -> chunk indices -> read from the device ->
 * zero check and id -> compare with the base's chunk -> upload unless the
 * chunk object exists -> manifest (the commit point) -> index.
 *
 * Every input is checked before the first chunk is written, under the
 * volume's lock (whose record a failed check removes again), so bad input
 * leaves the repository unchanged.  The index is synced once, under the
 * lock: an ingest lists snapshots/ once.  Chunks are processed by a
 * bounded pool of worker threads; a failure stops them and writes no
 * manifest (the chunks already uploaded are unreferenced, for gc).
 */
#ifndef CBTFS_INGEST_H
#define CBTFS_INGEST_H

#include <signal.h>
#include <stdbool.h>

#include "cbt.h"
#include "index.h"
#include "repo.h"

struct ingest_conf {
	struct repo *repo;
	struct index *index;
	const char *volume;
	const char *name;		/* snapshot name */
	const char *device;		/* block device or image file */
	const char *base;		/* base snapshot name, or NULL;
					 * INGEST_BASE_LATEST: the newest */
	struct cbt_source *changes;
	const char *csi_handle;		/* recorded in the manifest; or NULL */
	const char *csi_driver;
	unsigned jobs;			/* worker threads, >= 1 */
	bool progress;			/* redraw a progress line on stderr */
	/* set (by a signal handler) to stop early: nothing is committed */
	volatile sig_atomic_t *interrupted;
};

/* --base latest: the volume's newest snapshot, or none (a full backup)
 * when it has none yet. */
#define INGEST_BASE_LATEST "latest"

struct ingest_result {
	char id[CBTFS_UUID_LEN + 1];
	char base[256];			/* the base used; "" for none */
	uint64_t capacity;
	bool full_fallback; /* --base given, but a full backup made */
	bool already_committed;		/* a killed run had committed it */
	uint64_t chunks_healed;		/* damaged chunks stored again */
	uint64_t chunks_found;		/* stored by a run that stopped */
	struct manifest_stats stats;
	uint64_t chunks_total;		/* chunks in the volume */
	uint64_t manifest_bytes;	/* encoded size of the manifest */
	struct store_stats store;	/* requests and retries (S3) */
	double seconds;
};

/* Returns 0, or an errno after logging what failed.  *res is filled
 * either way: after a failure, with what was done before it. */
int ingest_run(const struct ingest_conf *conf, struct ingest_result *res);

#endif
