/*
 * The mounts of this process's namespace, from /proc/self/mountinfo: for
 * the commands that must not write to, mount on or stack over something
 * mounted (restore, the mount, browse).  Logs nothing.
 */
#ifndef CBTFS_MOUNTINFO_H
#define CBTFS_MOUNTINFO_H

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

struct mount_entry {
	char dir[PATH_MAX];	/* the mount point, unescaped */
	char type[64];		/* "ext4", "fuse.cbtfs", ... */
	char source[PATH_MAX];	/* unescaped */
	dev_t dev;		/* the filesystem's device (major:minor) */
};

/*
 * Calls fn for every mount, in the file's order (a later mount on one
 * point hides an earlier one), until it returns non-zero; returns that,
 * or 0 (also when the file cannot be read).
 */
int mountinfo_each(int (*fn)(const struct mount_entry *m, void *arg),
		   void *arg);

/* Whether dir (a real path) is a mount point; *m (may be NULL) receives
 * the mount seen there (the last one). */
bool mountinfo_at(const char *dir, struct mount_entry *m);

/* Whether block device dev is mounted; *m (may be NULL) receives the
 * first such mount. */
bool mountinfo_of_dev(dev_t dev, struct mount_entry *m);

#endif
