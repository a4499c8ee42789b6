/*
 * The copy-on-write FUSE server of cbtfs-repo browse (see
 * browse_overlay.h).  Besides fuse_ops.c, the only code that knows FUSE:
 * it serves a private mount of browse, never the repository.
 *
 * Locking: one rwlock, ov.lock, over the bitmap and the overlay file's
 * content: reads hold it shared, writes (with their copy-ups) exclusive.
 */
#include "config.h"

#define FUSE_USE_VERSION 35

#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "browse_overlay.h"
#include "util.h"

#define OV_BLOCK 4096u

static struct overlay {
	const struct overlay_conf *conf;
	int ovl_fd;		/* the unnamed sparse file */
	uint64_t *bitmap;	/* a bit per OV_BLOCK of the image */
	pthread_rwlock_t lock;
} ov;

static bool held(uint64_t blk)
{
	return ov.bitmap[blk / 64] >> (blk % 64) & 1;
}

static const struct overlay_file *find_file(const char *path)
{
	unsigned i;

	if (path[0] != '/')
		return NULL;
	for (i = 0; i < ov.conf->n_files; i++)
		if (strcmp(path + 1, ov.conf->files[i].name) == 0)
			return &ov.conf->files[i];
	return NULL;
}

static int ov_getattr(const char *path, struct stat *st,
		      struct fuse_file_info *fi)
{
	const struct overlay_file *f;

	(void)fi;
	memset(st, 0, sizeof(*st));
	if (strcmp(path, "/") == 0) {
		st->st_mode = S_IFDIR | 0500;
		st->st_nlink = 2;
		return 0;
	}
	if ((f = find_file(path)) == NULL)
		return -ENOENT;
	st->st_mode = S_IFREG | 0600;
	st->st_nlink = 1;
	st->st_size = (off_t)f->size;
	st->st_blksize = OV_BLOCK;
	return 0;
}

static int ov_readdir(const char *path, void *buf, fuse_fill_dir_t fill,
		      off_t off, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	unsigned i;

	(void)off;
	(void)fi;
	(void)flags;
	if (strcmp(path, "/") != 0)
		return -ENOTDIR;
	fill(buf, ".", NULL, 0, 0);
	fill(buf, "..", NULL, 0, 0);
	for (i = 0; i < ov.conf->n_files; i++)
		fill(buf, ov.conf->files[i].name, NULL, 0, 0);
	return 0;
}

static int ov_open(const char *path, struct fuse_file_info *fi)
{
	if (find_file(path) == NULL)
		return -ENOENT;
	if (fi->flags & O_TRUNC)
		return -EPERM;
	/* the filesystem above caches what it reads; a second cache here
	 * would only double the memory */
	fi->direct_io = 1;
	return 0;
}

/* pread of exactly n bytes (short only at EOF, then zero-filled) */
static int read_full(int fd, char *buf, size_t n, uint64_t off)
{
	ssize_t got = pread_full(fd, buf, n, off);

	if (got < 0)
		return (int)-got;
	memset(buf + got, 0, n - (size_t)got);
	return 0;
}

/* Bytes [off, off + n) of the image as browsed, runs of blocks at once. */
static int read_image(char *buf, size_t n, uint64_t off)
{
	int err = 0;

	while (n > 0 && err == 0) {
		uint64_t blk = off / OV_BLOCK, end = (blk + 1) * OV_BLOCK;
		bool in_ovl = held(blk);
		size_t len;

		while (end < off + n && held(end / OV_BLOCK) == in_ovl)
			end += OV_BLOCK;
		len = end - off < n ? (size_t)(end - off) : n;
		err = read_full(in_ovl ? ov.ovl_fd : ov.conf->image_fd, buf,
				len, off);
		buf += len;
		n -= len;
		off += len;
	}
	return err;
}

/* The extent of a request to file f, clipped to it, as image offsets. */
static int clip(const char *path, size_t *n, off_t off, uint64_t *image_off)
{
	const struct overlay_file *f = find_file(path);

	if (f == NULL)
		return -ENOENT;
	if (off < 0)
		return -EINVAL;
	if ((uint64_t)off >= f->size)
		*n = 0;
	else if (*n > f->size - (uint64_t)off)
		*n = (size_t)(f->size - (uint64_t)off);
	*image_off = f->offset + (uint64_t)off;
	return 0;
}

static int ov_read(const char *path, char *buf, size_t n, off_t off,
		   struct fuse_file_info *fi)
{
	uint64_t ioff;
	int err;

	(void)fi;
	if ((err = clip(path, &n, off, &ioff)) != 0)
		return err;
	if (n > INT_MAX)
		n = INT_MAX;
	pthread_rwlock_rdlock(&ov.lock);
	err = read_image(buf, n, ioff);
	pthread_rwlock_unlock(&ov.lock);
	if (err != 0) {
		log_error("browse overlay: reading %s at %lld: %s", path,
			  (long long)off, ERRSTR(err));
		return -err;
	}
	return (int)n;
}

static int ov_write(const char *path, const char *buf, size_t n, off_t off,
		    struct fuse_file_info *fi)
{
	char block[OV_BLOCK];
	uint64_t ioff, blk, last;
	int err = 0;

	(void)fi;
	if ((err = clip(path, &n, off, &ioff)) != 0)
		return err;
	if (n == 0)
		return 0;
	if (n > INT_MAX)
		n = INT_MAX;
	pthread_rwlock_wrlock(&ov.lock);
	/* copy up the blocks the write covers in part, at either end */
	last = (ioff + n - 1) / OV_BLOCK;
	for (blk = ioff / OV_BLOCK; blk <= last && err == 0;
	     blk += last > blk ? last - blk : 1) {
		uint64_t start = blk * OV_BLOCK;

		if (held(blk) ||
		    (ioff <= start && ioff + n >= start + OV_BLOCK))
			continue;
		err = read_full(ov.conf->image_fd, block, OV_BLOCK, start);
		if (err == 0)
			err = pwrite_full(ov.ovl_fd, block, OV_BLOCK, start);
		if (err == 0)
			ov.bitmap[blk / 64] |= 1ull << (blk % 64);
	}
	if (err == 0)
		err = pwrite_full(ov.ovl_fd, buf, n, ioff);
	if (err == 0)
		for (blk = ioff / OV_BLOCK; blk <= last; blk++)
			ov.bitmap[blk / 64] |= 1ull << (blk % 64);
	pthread_rwlock_unlock(&ov.lock);
	if (err != 0) {
		log_error("browse overlay: writing %s at %lld (into the "
			  "overlay in %s): %s", path, (long long)off,
			  ov.conf->overlay_dir, ERRSTR(err));
		return -err;
	}
	return (int)n;
}

/* The overlay is thrown away: there is nothing to make durable. */
static int ov_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path;
	(void)datasync;
	(void)fi;
	return 0;
}

static int ov_truncate(const char *path, off_t size,
		       struct fuse_file_info *fi)
{
	const struct overlay_file *f = find_file(path);

	(void)fi;
	if (f == NULL)
		return -ENOENT;
	return (uint64_t)size == f->size ? 0 : -EPERM;
}

static const struct fuse_operations ov_ops = {
	.getattr = ov_getattr,
	.readdir = ov_readdir,
	.open = ov_open,
	.read = ov_read,
	.write = ov_write,
	.fsync = ov_fsync,
	.truncate = ov_truncate,
};

int overlay_serve(const struct overlay_conf *conf)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config loop = { .max_idle_threads = 10 };
	uint64_t blocks = (conf->capacity + OV_BLOCK - 1) / OV_BLOCK;
	char *opts = NULL;
	struct fuse *fuse = NULL;
	int err = ENOMEM;

	ov.conf = conf;
	ov.ovl_fd = open(conf->overlay_dir, O_TMPFILE | O_RDWR | O_CLOEXEC,
			 0600);
	if (ov.ovl_fd < 0) {
		err = errno;
		log_error("cannot create the overlay file in %s: %s (it "
			  "needs a local filesystem with O_TMPFILE: ext4, "
			  "xfs, btrfs, tmpfs)", conf->overlay_dir,
			  ERRSTR(err));
		return err;
	}
	/* untouched pages of a large calloc() cost no memory */
	ov.bitmap = calloc(blocks / 64 + 1, sizeof(uint64_t));
	pthread_rwlock_init(&ov.lock, NULL);
	if (ov.bitmap == NULL ||
	    fuse_opt_add_arg(&args, "cbtfs-browse") != 0 ||
	    asprintf(&opts, "fsname=%s,subtype=cbtfs-browse", conf->fsname)
		    < 0)
		goto out;
	if (fuse_opt_add_arg(&args, "-o") != 0 ||
	    fuse_opt_add_arg(&args, opts) != 0)
		goto out;
	fuse = fuse_new(&args, &ov_ops, sizeof(ov_ops), NULL);
	err = EINVAL;
	if (fuse == NULL)
		goto out;
	if (fuse_mount(fuse, conf->mountpoint) != 0)
		goto out_destroy;
	/* from here on, nobody waits for its output: syslog, and free the
	 * caller's terminal or pipe */
	log_use_syslog();
	dup2(STDIN_FILENO, STDERR_FILENO);
	err = fuse_loop_mt(fuse, &loop) == 0 ? 0 : EIO;
	fuse_unmount(fuse);
out_destroy:
	fuse_destroy(fuse);
out:
	if (err == ENOMEM)
		log_error("browse overlay: out of memory");
	free(opts);
	fuse_opt_free_args(&args);
	free(ov.bitmap);
	close(ov.ovl_fd);
	return err;
}
