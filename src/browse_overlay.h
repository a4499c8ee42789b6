/*
 * The copy-on-write layer of cbtfs-repo browse: a small FUSE file system
 * that serves one writable file per filesystem found in a snapshot's
 * image, "pN.img" (or "fs.img" for a bare filesystem), each a window
 * [offset, offset + size) of the image.
 *
 * Reads come from the image (read-only, a file in a cbtfs mount) except
 * for the 4 KiB blocks written since, which come from an overlay: an
 * unnamed sparse file (O_TMPFILE) in a local directory, at the same
 * offsets as in the image, and a bitmap of the blocks it holds.  A write
 * that covers part of a block copies the rest of the block up first.
 * Nothing is ever written to the image; the overlay has no name, so it
 * disappears with the server, whatever way the server ends.
 *
 * The kernel replays a journal (ext4) or log (xfs) through a loop device
 * over such a file: the replay lands in the overlay.
 */
#ifndef CBTFS_BROWSE_OVERLAY_H
#define CBTFS_BROWSE_OVERLAY_H

#include <stdint.h>

struct overlay_file {
	char name[16];		/* "p1.img" */
	uint64_t offset, size;	/* in the image */
};

struct overlay_conf {
	int image_fd;		/* read-only; the server owns it */
	uint64_t capacity;	/* of the image */
	const char *overlay_dir; /* where the unnamed overlay file lives */
	const char *mountpoint;	/* an empty directory */
	const char *fsname;	/* for mount tables */
	const struct overlay_file *files;
	unsigned n_files;
};

/*
 * Mounts the server at conf->mountpoint and serves it until it is
 * unmounted; runs in the foreground of the calling process (the caller
 * forks first).  Returns 0, or an errno after logging the error.
 */
int overlay_serve(const struct overlay_conf *conf);

#endif
