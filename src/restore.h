/*
 * Restore: writes the image of one snapshot to a block device, a file or
 * stdout, without FUSE.  The chunks are fetched and verified in parallel
 * and written where they belong (pwrite, in any order); zero chunks are
 * skipped on a target known to read zeros (a new file, or one the caller
 * says is zeroed) and otherwise zeroed in runs (BLKZEROOUT on a block
 * device, a punched hole in a file).  An incremental restore (from) knows
 * that the target holds an earlier snapshot of the volume and writes only
 * the chunks that differ.  To stdout, chunks are written in order, zeros
 * included, with at most jobs chunks in memory.
 *
 * What is written is made durable (fdatasync) before restore_run()
 * returns; with verify, it is then read back from the target (its page
 * cache dropped first) and checked against the chunk ids.
 */
#ifndef CBTFS_RESTORE_H
#define CBTFS_RESTORE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "index.h"
#include "repo.h"

struct restore_conf {
	struct repo *repo;
	struct index *index;		/* synced by restore_run() */
	const char *volume;
	const char *snapshot;		/* the name of what to restore */
	const char *from;		/* NULL, or a snapshot of volume
					 * the target holds already */
	const char *target;		/* a path, or "-" for stdout */
	bool target_zeroed;		/* the target reads zeros */
	bool verify;			/* read back what was written */
	unsigned jobs;			/* chunks fetched in parallel */
	bool progress;			/* a progress line on stderr */
	volatile sig_atomic_t *interrupted;	/* may be NULL */
};

/* What a restore did, for its summary; the counters come in one list so
 * that the text and JSON summaries cannot forget one. */
#define RESTORE_COUNTERS(X)                                                 \
	X(capacity)		/* bytes of the image */                    \
	X(chunk_size)                                                       \
	X(chunks)		/* of the image */                          \
	X(chunks_written)	/* fetched and written */                   \
	X(chunks_zeroed)	/* zero chunks written or punched as zeros */\
	X(chunks_skipped)	/* zero on a zeroed target, or the same as   \
				 * in from */                               \
	X(chunks_verified)	/* read back and checked */                 \
	X(written_bytes)	/* of the chunks written */                 \
	X(zeroed_bytes)                                                     \
	X(requests)		/* to the store (S3) */                     \
	X(retries)

struct restore_report {
#define RESTORE_FIELD(f) uint64_t f;
	RESTORE_COUNTERS(RESTORE_FIELD)
#undef RESTORE_FIELD
	bool new_file;			/* the target was created */
	double seconds;
};

/*
 * Restores conf->volume@conf->snapshot to conf->target.  Refuses (EINVAL,
 * logged, before writing anything) a target that is smaller than the
 * image, mounted or otherwise in use (EBUSY), read-only (EROFS), or not a
 * block device or regular file; a missing file is created (0600) and
 * removed again if the restore fails.  ENOENT (logged) for a snapshot
 * that is not in the repository; EBADMSG/ENOENT for a chunk that fails
 * verification or is missing (logged with the byte range it damages, and
 * recorded as damaged); EINTR when interrupted.  On failure the target
 * holds a partial image (said in the message).  rep is filled on success.
 */
int restore_run(const struct restore_conf *conf, struct restore_report *rep);

#endif
