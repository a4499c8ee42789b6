/*
 * The read-only FUSE file system: the only code that knows FUSE.
 *
 * Tree: one directory per volume path component, one file NAME.img per
 * snapshot (mode 0444, size = capacity, mtime = creation time), and the
 * hidden file .stats at the root (metrics, Prometheus text format).  The
 * tree is rebuilt from the index whenever a sync finds new or vanished
 * snapshots.  Syncs run in a background thread, never in a FUSE request:
 * every refresh_seconds, and soon after a directory listing or a failed
 * lookup when the last sync is older than a second.
 */
#ifndef CBTFS_FUSE_OPS_H
#define CBTFS_FUSE_OPS_H

#include <stdbool.h>
#include <stddef.h>

#include "repo.h"
#include "store.h"

struct fuse_args;

struct mount_conf {
	const char *repo_url;
	struct store_opts store;	/* S3 settings */
	struct passphrase_src pass;	/* of an encrypted repository */
	const char *cache_dir;		/* index location; NULL: default */
	unsigned refresh_seconds;	/* background sync period */
	size_t cache_bytes;		/* decoded chunk cache */
	bool direct_io;			/* bypass the kernel page cache */
	unsigned readahead;		/* chunks loaded ahead of sequential
					 * reads, by at most store.connections
					 * threads */
	const char *metrics_file;	/* NULL: none */
	unsigned metrics_seconds;	/* its period */
	int log_fd;			/* once daemonized, messages go to
					 * this open file (taken over);
					 * -1: to syslog */
};

/*
 * Mounts and serves until unmounted.  args holds the FUSE options and the
 * mountpoint.  Returns the process exit status, having logged every
 * failure itself.  Inside, the FUSE callbacks return -errno, as FUSE
 * wants; a read that fails verification is EIO to the reader, logged with
 * the chunk it could not read.
 */
int fuse_ops_main(struct fuse_args *args, const struct mount_conf *conf);

#endif
