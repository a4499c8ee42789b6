/*
 * Change sources: where ingest learns which byte ranges of a snapshot hold
 * data (no base: "allocated") or differ from the base ("delta").
 *
 * A source either yields a sorted list of non-overlapping byte ranges, or
 * (scan) asks ingest to read the whole device and compare chunk ids itself.
 * Ranges have any alignment; cbt_ranges_to_chunks() turns them into the
 * chunk indices ingest must read.
 */
#ifndef CBTFS_CBT_H
#define CBTFS_CBT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cbt_range {
	uint64_t offset;
	uint64_t length;	/* > 0 */
};

struct cbt_ranges {
	struct cbt_range *v;
	size_t n;
	size_t cap;
};

void cbt_ranges_free(struct cbt_ranges *rl);

/*
 * Appends a range, merged with the previous one if they touch.  Returns 0,
 * EINVAL if it is empty, overflows, or starts before the end of the
 * previous range (unsorted or overlapping), or ENOMEM.  Nothing is logged:
 * the caller knows where the range came from.
 */
int cbt_ranges_add(struct cbt_ranges *rl, uint64_t offset, uint64_t length);

/*
 * The sorted, unique indices of the chunks of size chunk_size that the
 * ranges touch, in *idxp (malloc'd, NULL when *np is 0).
 */
int cbt_ranges_to_chunks(const struct cbt_ranges *rl, uint32_t chunk_size,
			 uint64_t **idxp, size_t *np);

/* What a source is asked. */
struct cbt_request {
	uint64_t device_size;	/* bytes: ranges must end within it */
	bool has_base;		/* a delta against a base snapshot */
	const char *base_handle; /* the base's CSI snapshot handle, or NULL */
	const char *base_name;	/* the base snapshot's name, or NULL */
	/* set by a signal handler: give up soon with EINTR */
	volatile sig_atomic_t *interrupted;
};

/* What a source answers. */
struct cbt_answer {
	struct cbt_ranges ranges;
	/* The volume's size as the source knows it; 0: the device's size. */
	uint64_t capacity;
	/* The ranges hold the allocated data of the whole volume, not the
	 * changes against the base: the source fell back to a full backup. */
	bool full;
	const char *csi_driver;	/* to record; NULL if unknown; the source's */
	const char *csi_handle;	/* the snapshot's CSI handle, if found */
};

struct cbt_source;

struct cbt_source_ops {
	const char *name;	/* recorded in the manifest: "scan"... */
	/* NULL: the source is a full scan done by ingest itself. */
	int (*get_ranges)(struct cbt_source *src,
			  const struct cbt_request *req,
			  struct cbt_answer *out);
	void (*destroy)(struct cbt_source *src);
};

struct cbt_source {
	const struct cbt_source_ops *ops;
};

/* Parses a --changes argument: "scan" or "ranges:FILE".  NULL with *errp
 * (logged) on a bad argument. */
struct cbt_source *cbt_source_create(const char *spec, int *errp);

struct cbt_source *cbt_scan_create(void);
struct cbt_source *cbt_ranges_file_create(const char *path, int *errp);

static inline void cbt_source_destroy(struct cbt_source *src)
{
	if (src != NULL)
		src->ops->destroy(src);
}

#endif
