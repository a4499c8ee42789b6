/*
 * Verify: checks a repository from its store alone.  The local index is not
 * consulted: it is a cache, and what is checked is what a restore on any
 * host would read.
 *
 * A run lists snapshots/ and reads and verifies every manifest, follows
 * every chain (each parent a readable manifest of the same volume, no
 * loops), lists chunks/ once and compares it with the chunks the
 * snapshots refer to (an object shorter than a frame header is corrupt),
 * and with read_data fetches and verifies every referenced chunk, or a
 * random share of them, each distinct chunk once, in parallel.  Chunks
 * with a damage record are always fetched and verified, so a record is
 * never dropped for a chunk that merely exists.
 *
 * Each problem is reported once, with every snapshot whose resolved chain
 * it damages and the byte ranges affected.  Damage records (repo.h) are
 * written for every chunk found missing or corrupt, and removed for every
 * recorded chunk that now verifies.
 *
 * Nothing but damage records is written; locks are not taken (a snapshot
 * committed during the run is checked or not, never half).
 */
#ifndef CBTFS_VERIFY_H
#define CBTFS_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "repo.h"

/* The kinds of problem: constant, and the name reports and JSON use. */
#define VERIFY_KINDS(X)                                                  \
	X(VERIFY_MISSING_CHUNK, "missing_chunk")                         \
	X(VERIFY_CORRUPT_CHUNK, "corrupt_chunk")                         \
	X(VERIFY_UNREADABLE_MANIFEST, "unreadable_manifest")             \
	X(VERIFY_BROKEN_CHAIN, "broken_chain")

enum verify_kind {
#define VERIFY_KIND_ENUM(k, name) k,
	VERIFY_KINDS(VERIFY_KIND_ENUM)
#undef VERIFY_KIND_ENUM
};

/* "missing_chunk", ... */
const char *verify_kind_name(enum verify_kind k);

/*
 * The counters of a run, in the order reports print them; each is a
 * uint64_t field of struct verify_report and a JSON field of that name.
 *   manifests       manifest objects in the store, all read
 *   chunks_checked  distinct chunks the checked snapshots refer to, each
 *                   looked for in the listing of chunks/
 *   chunks_read     of those, fetched and verified
 *   bytes_read      stored bytes of the chunks fetched
 *   damage_marked   damage records written
 *   damage_cleared  damage records removed (the chunk verifies now)
 */
#define VERIFY_COUNTERS(X)                                               \
	X(manifests)                                                     \
	X(chunks_checked)                                                \
	X(chunks_read)                                                   \
	X(read_bytes)                                                    \
	X(damage_marked)                                                 \
	X(damage_cleared)

struct verify_conf {
	struct repo *repo;
	const char *volume;	/* only its snapshots; NULL: all */
	bool read_data;		/* fetch and verify chunks */
	unsigned subset;	/* with read_data: percent to fetch, 1-100 */
	unsigned jobs;		/* parallel fetches, >= 1 */
	bool progress;		/* redraw a progress line on stderr */
};

/* Bytes [off, off + len) of a snapshot's image. */
struct verify_range {
	uint64_t off, len;
};

/* A snapshot a problem damages. */
struct verify_snapshot {
	char id[CBTFS_UUID_LEN + 1];
	char *volume;
	char *name;
	int64_t created;
	/* the bytes that cannot be restored, sorted, merged */
	struct {
		struct verify_range *v;
		size_t n, cap;
	} ranges;
};

struct verify_problem {
	enum verify_kind kind;
	/* the object at fault: "chunks/ab/ab..", "snapshots/<uuid>" */
	char object[REPO_CHUNK_KEY_LEN + 1];
	char why[200];		/* what is wrong with it */
	/* ordered by volume, creation time, name */
	struct {
		struct verify_snapshot *v;
		size_t n, cap;
	} snapshots;
};

struct verify_report {
#define VERIFY_COUNTER_FIELD(f) uint64_t f;
	VERIFY_COUNTERS(VERIFY_COUNTER_FIELD)
#undef VERIFY_COUNTER_FIELD
	double seconds;
	/* ordered by kind, then object */
	struct {
		struct verify_problem *v;
		size_t n, cap;
	} problems;
};

/*
 * Runs the check into *rep (zeroed first; free it with
 * verify_report_free() whatever the result).  Returns 0 when the check
 * ran to the end, whether or not it found problems (rep->problems); or an
 * errno (logged) when it could not: a listing or a fetch failed for a
 * reason other than damage (the store's retries ran out), or memory ran
 * out.  Damaged objects are logged where found (by repo.c) as well.
 */
int verify_run(const struct verify_conf *conf, struct verify_report *rep);

void verify_report_free(struct verify_report *rep);

#endif
