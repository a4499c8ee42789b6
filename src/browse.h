/*
 * cbtfs-repo browse: a snapshot's files, read-only, under a directory.
 *
 * browse_start() finds the image VOLUME/SNAPSHOT.img in a cbtfs mount of
 * the repository (an existing one, else one it starts), finds the
 * filesystems in it (the image itself, or the partitions of an MBR or
 * GPT partition table, found by libblkid in user space), and mounts each
 * read-only: at MOUNTPOINT for a bare filesystem, at MOUNTPOINT/pN on a
 * small read-only tmpfs for a partitioned disk.  Each filesystem is
 * mounted from a loop device over a file of the copy-on-write server
 * (browse_overlay.h), so that the kernel can replay a journal or log at
 * the mount: the user sees the recovered state, and nothing is written
 * to the image or the repository.  Filesystems the kernel does not know
 * are mounted by a FUSE driver where one is installed (fusefat for vfat),
 * else listed and skipped.
 *
 * Every object it makes carries the name cbtfs-browse and is recorded,
 * before it is made, in a state file /run/cbtfs/browse/KEY/state, KEY
 * naming MOUNTPOINT; browse_stop() (--unmount) and a new browse_start()
 * after a crashed one read it and undo what exists.  Loop devices are
 * set up with autoclear, so they disappear with the last mount of them
 * (or with the process that made them, before that); the overlay file
 * has no name.
 *
 * It sets up loop devices with their ioctls and mounts with mount(2)
 * itself (no losetup, no mount); it runs two kinds of programs, with
 * fork() and exec: cbtfs for a mount of the repository, and FUSE drivers
 * (fusefat) for filesystems the kernel lacks.  Needs root.
 */
#ifndef CBTFS_BROWSE_H
#define CBTFS_BROWSE_H

#include <stdbool.h>

#include "store.h"

struct browse_conf {
	const char *repo;	/* as given to cbtfs */
	const char *volume, *snapshot;
	const char *mountpoint;
	/* for a cbtfs mount it starts: the store's options, the passphrase
	 * file, the cache directory (NULL: defaults); the overlay file lives
	 * in CACHE_DIR/browse */
	const struct store_opts *store;
	const char *password_file;
	const char *cache_dir;
};

/*
 * Mounts the snapshot's filesystems under conf->mountpoint and prints
 * what it mounted and skipped.  Returns 0, or an errno after logging
 * what failed and undoing what it did.
 */
int browse_start(const struct browse_conf *conf);

/*
 * Undoes a browse of mountpoint, also one whose browse_start() was
 * killed: unmounts, stops the servers it started, removes its state.
 * Returns 0 (also when there was nothing to undo; it says so), or an
 * errno after logging what remains.
 */
int browse_stop(const char *mountpoint);

#endif
