/*
 * Forget and prune: removing snapshots, then the objects no snapshot needs.
 * Both work from the store alone (snapset.h), never from the local index.
 *
 * Forget removes snapshots of a volume, named or chosen by a retention
 * policy, under the volume's lock (repo.h), so that no ingest of the
 * volume runs meanwhile.  A forgotten snapshot's entries are first folded
 * into each kept snapshot whose chain passes through it: the kept
 * snapshot's manifest is rewritten under its own id with the entries of
 * its forgotten ancestors that it lacks (below its capacity; zero entries
 * where a forgotten ancestor's smaller capacity hid an older chunk) and
 * with the nearest kept ancestor as its parent, so that it resolves to
 * exactly the same chunks.  Only when every such manifest is rewritten
 * are the forgotten manifests deleted, each after the ones that name it
 * as their parent.  So every snapshot present reads the same bytes at
 * every moment, and a forget killed anywhere is finished by running it
 * again.  Chunks are never deleted by forget.
 *
 * Prune deletes the chunk objects no manifest refers to (those of
 * forgotten snapshots and of ingests that stopped early), the damage
 * records of such chunks, and old temporaries of directory repositories,
 * under the repository's prune lock: no ingest or forget runs anywhere
 * while it is held, so no chunk it deletes can be about to be used (see
 * cbtfs-repository(5), "Prune").
 *
 * Both refuse to run while a manifest cannot be read: what it refers to
 * (chunks, parents) is unknown.
 */
#ifndef CBTFS_PRUNE_H
#define CBTFS_PRUNE_H

#include <stdbool.h>
#include <stdint.h>

#include "repo.h"

/*
 * Retention rules, restic's: last keeps the N newest snapshots; each other
 * rule keeps, for each of the last N periods (UTC hours, days, ISO weeks,
 * months) that have snapshots, the newest snapshot of that period.  A
 * snapshot is kept if any rule keeps it; the newest of a volume always is.
 * X(field, reason bit, name in reports and JSON)
 */
#define FORGET_RULES(X)                                                    \
	X(last, FORGET_KEEP_LAST, "last")                                  \
	X(hourly, FORGET_KEEP_HOURLY, "hourly")                            \
	X(daily, FORGET_KEEP_DAILY, "daily")                               \
	X(weekly, FORGET_KEEP_WEEKLY, "weekly")                            \
	X(monthly, FORGET_KEEP_MONTHLY, "monthly")

/* Why a snapshot is kept: bits; 0 means forgotten. */
enum {
	FORGET_KEEP_LAST = 1,
	FORGET_KEEP_HOURLY = 2,
	FORGET_KEEP_DAILY = 4,
	FORGET_KEEP_WEEKLY = 8,
	FORGET_KEEP_MONTHLY = 16,
	FORGET_KEEP_NEWEST = 32,	/* the volume's newest snapshot */
	FORGET_KEEP_UNNAMED = 64,	/* not named (named form) */
};

/* Names of the reason bits ("last", ..., "newest", "not named"), in bit
 * order; returns NULL past the last. */
const char *forget_reason_name(unsigned bit_index);

struct forget_policy {
#define FORGET_RULE_FIELD(f, bit, name) unsigned f;
	FORGET_RULES(FORGET_RULE_FIELD)
#undef FORGET_RULE_FIELD
};

/* Whether any rule is set. */
bool forget_policy_any(const struct forget_policy *p);

/*
 * Applies p to n snapshots of one volume created at created[0..n), sorted
 * newest first: keep[i] receives the reasons snapshot i is kept, 0 if it
 * is forgotten.  The newest (i = 0) always gets FORGET_KEEP_NEWEST.
 */
void forget_policy_apply(const struct forget_policy *p,
			 const int64_t *created, size_t n, unsigned *keep);

struct forget_conf {
	struct repo *repo;
	const char *volume;		/* NULL: every volume (policy only) */
	const char *const *names;	/* snapshots of volume to forget */
	size_t n_names;			/* 0: use policy */
	struct forget_policy policy;
	bool force;		/* may forget every snapshot of the volume */
	bool dry_run;		/* decide and report; write nothing, lock
				 * nothing */
	unsigned jobs;		/* parallel manifest reads, >= 1 */
	bool progress;		/* redraw a progress line on stderr */
};

/* One snapshot judged by forget. */
struct forget_snapshot {
	char id[CBTFS_UUID_LEN + 1];
	char *volume;
	char *name;
	int64_t created;
	unsigned keep;		/* FORGET_KEEP_* bits; 0: forgotten */
	bool rewritten;		/* kept, and its manifest rewritten */
};

/*
 * Counters of a forget (with dry_run, what it would do), in report order;
 * each a uint64_t field of struct forget_report and a JSON field:
 *   volumes     volumes judged
 *   kept        snapshots kept
 *   forgotten   snapshots forgotten (manifests deleted)
 *   rewritten   kept snapshots whose manifest was rewritten (folded)
 */
#define FORGET_COUNTERS(X)                                               \
	X(volumes)                                                       \
	X(kept)                                                          \
	X(forgotten)                                                     \
	X(rewritten)

struct forget_report {
#define FORGET_COUNTER_FIELD(f) uint64_t f;
	FORGET_COUNTERS(FORGET_COUNTER_FIELD)
#undef FORGET_COUNTER_FIELD
	double seconds;
	/* by volume, then newest first */
	struct {
		struct forget_snapshot *v;
		size_t n, cap;
	} snapshots;
};

/*
 * Runs a forget into *rep (zeroed first; free it with
 * forget_report_free() whatever the result).  Returns 0; ENOENT (logged)
 * for a volume without snapshots or a named snapshot that is not there
 * (nothing is changed, unless an earlier forget of the volume stopped
 * early: then the names it removed already are noted and the others
 * forgotten); EPERM (logged) when the names cover every snapshot of the
 * volume and force is not set; EBADMSG (logged) when a manifest cannot
 * be read or a chain loops; EBUSY (logged) when a volume or the
 * repository is locked; or another errno (logged).  Volumes done before
 * an error stay done, and are in rep.
 */
int forget_run(const struct forget_conf *conf, struct forget_report *rep);

void forget_report_free(struct forget_report *rep);

struct prune_conf {
	struct repo *repo;
	bool dry_run;		/* count what would go; write nothing */
	unsigned jobs;		/* parallel reads and deletions, >= 1 */
	bool progress;		/* redraw a progress line on stderr */
};

/* Temporaries of directory repositories older than this are removed. */
#define PRUNE_TEMP_AGE 3600

/*
 * Counters of a prune (with dry_run, what it would remove), in report
 * order; each a uint64_t field of struct prune_report and a JSON field:
 *   manifests          manifests read
 *   chunks_listed      chunk objects in the store
 *   chunks_referenced  distinct chunks the manifests refer to
 *   chunks_missing     of those, not in the store (verify tells more)
 *   chunks_deleted     chunk objects no manifest refers to, deleted
 *   freed_bytes        their stored size
 *   damage_removed     damage records of such chunks, removed
 *   temp_removed       temporary files removed (directories only)
 *   temp_bytes         their size
 */
#define PRUNE_COUNTERS(X)                                                \
	X(manifests)                                                     \
	X(chunks_listed)                                                 \
	X(chunks_referenced)                                             \
	X(chunks_missing)                                                \
	X(chunks_deleted)                                                \
	X(freed_bytes)                                                   \
	X(damage_removed)                                                \
	X(temp_removed)                                                  \
	X(temp_bytes)

struct prune_report {
#define PRUNE_COUNTER_FIELD(f) uint64_t f;
	PRUNE_COUNTERS(PRUNE_COUNTER_FIELD)
#undef PRUNE_COUNTER_FIELD
	double seconds;
};

/*
 * Runs a prune into *rep (zeroed first).  Returns 0; EBUSY (logged) when
 * an ingest, forget or other prune holds a lock; EBADMSG (logged) when a
 * manifest cannot be read (nothing is deleted); ESTALE (logged) when the
 * prune lock's lease ran out (it stops before its next deletion); or
 * another errno (logged).  What was deleted before an error is counted.
 */
int prune_run(const struct prune_conf *conf, struct prune_report *rep);

#endif
