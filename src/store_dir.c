/*
 * Local directory store: each key is a file below the root directory, its
 * '/'-separated components being subdirectories.
 *
 * put() writes "<dir>/.tmp.<name>.<random>", fsyncs it, renames it over the
 * final name and fsyncs the directory, so an object is either absent or
 * complete and durable.  Names beginning with ".tmp." are never listed;
 * ones left behind by a crash are harmless.  No state is shared between
 * calls, so there is no lock.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "store.h"

struct store_dir {
	struct store st;	/* first: the vtable pointer */
	char *root;		/* absolute path, no trailing '/' */
};

static const struct store_ops store_dir_ops;

static bool key_ok(const char *key)
{
	const char *p = key;

	/* no empty, "." or ".." components, no leading '/' */
	if (*key == '\0' || *key == '/')
		return false;
	while (*p) {
		const char *end = strchrnul(p, '/');
		size_t n = (size_t)(end - p);

		if (n == 0 || (n == 1 && p[0] == '.') ||
		    (n == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		p = *end ? end + 1 : end;
	}
	return true;
}

static int dir_path(struct store_dir *sd, const char *key, char *path)
{
	if (!key_ok(key)) {
		log_error("invalid object key '%s'", key);
		return EINVAL;
	}
	if ((size_t)snprintf(path, PATH_MAX, "%s/%s", sd->root, key) >=
	    PATH_MAX) {
		log_error("%s/%s: path too long", sd->root, key);
		return ENAMETOOLONG;
	}
	return 0;
}

static int dir_get(struct store *st, const char *key, uint64_t off,
		   uint64_t len, struct buf *out)
{
	struct store_dir *sd = (struct store_dir *)st;
	char path[PATH_MAX];
	struct stat sb;
	size_t want, got = 0;
	int fd, err;

	out->len = 0;
	if ((err = dir_path(sd, key, path)) != 0)
		return err;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = errno;
		if (err != ENOENT)
			log_error("%s: cannot open: %s", path, ERRSTR(err));
		return err;
	}
	if (fstat(fd, &sb) != 0) {
		err = errno;
		log_error("%s: %s", path, ERRSTR(err));
		close(fd);
		return err;
	}
	if (off >= (uint64_t)sb.st_size)
		want = 0;
	else if (len == STORE_TO_END || len > (uint64_t)sb.st_size - off)
		want = (size_t)((uint64_t)sb.st_size - off);
	else
		want = (size_t)len;
	if (buf_reserve(out, want ? want : 1) != 0) {
		close(fd);
		return ENOMEM;
	}
	while (got < want) {
		ssize_t n = pread(fd, out->data + got, want - got,
				  (off_t)(off + got));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? errno : EIO;
			log_error("%s: read failed: %s", path,
				  n < 0 ? ERRSTR(err) : "file shrank");
			close(fd);
			return err;
		}
		got += (size_t)n;
	}
	close(fd);
	out->len = got;
	return 0;
}

/* mkdir -p of every directory component of path (not its last one). */
static int make_parents(char *path)
{
	char *p;

	for (p = strchr(path + 1, '/'); p != NULL; p = strchr(p + 1, '/')) {
		*p = '\0';
		if (mkdir(path, 0755) != 0 && errno != EEXIST) {
			int err = errno;

			log_error("%s: cannot create directory: %s", path,
				  ERRSTR(err));
			*p = '/';
			return err;
		}
		*p = '/';
	}
	return 0;
}

static int fsync_dir_of(const char *path)
{
	char dir[PATH_MAX];
	char *slash;
	int fd, err = 0;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash == NULL)
		return 0;
	*slash = '\0';
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) != 0) {
		err = errno;
		log_error("%s: cannot sync directory: %s", dir, ERRSTR(err));
	}
	if (fd >= 0)
		close(fd);
	return err;
}

static int write_all(int fd, const void *data, size_t len)
{
	const unsigned char *p = data;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int dir_put(struct store *st, const char *key, const void *data,
		   size_t len)
{
	struct store_dir *sd = (struct store_dir *)st;
	char path[PATH_MAX], tmp[PATH_MAX + 64];
	unsigned char rnd[8];
	char rhex[17];
	const char *base;
	int fd, err;

	if ((err = dir_path(sd, key, path)) != 0)
		return err;
	base = strrchr(path, '/') + 1;
	RAND_bytes(rnd, sizeof(rnd));
	hex_encode(rnd, sizeof(rnd), rhex);
	snprintf(tmp, sizeof(tmp), "%.*s.tmp.%s.%s", (int)(base - path), path,
		 base, rhex);

	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0 && errno == ENOENT) {
		if ((err = make_parents(tmp)) != 0)
			return err;
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	}
	if (fd < 0) {
		err = errno;
		log_error("%s: cannot create: %s", tmp, ERRSTR(err));
		return err;
	}
	err = write_all(fd, data, len);
	if (err == 0 && fsync(fd) != 0)
		err = errno;
	if (close(fd) != 0 && err == 0)
		err = errno;
	if (err == 0 && rename(tmp, path) != 0)
		err = errno;
	if (err != 0) {
		log_error("%s: cannot write: %s", path, ERRSTR(err));
		unlink(tmp);
		return err;
	}
	return fsync_dir_of(path);
}

static int dir_head(struct store *st, const char *key, uint64_t *sizep)
{
	struct store_dir *sd = (struct store_dir *)st;
	char path[PATH_MAX];
	struct stat sb;
	int err;

	if ((err = dir_path(sd, key, path)) != 0)
		return err;
	if (stat(path, &sb) != 0) {
		err = errno;
		if (err != ENOENT)
			log_error("%s: %s", path, ERRSTR(err));
		return err;
	}
	if (!S_ISREG(sb.st_mode))
		return ENOENT;
	if (sizep != NULL)
		*sizep = (uint64_t)sb.st_size;
	return 0;
}

static int dir_del(struct store *st, const char *key)
{
	struct store_dir *sd = (struct store_dir *)st;
	char path[PATH_MAX];
	int err;

	if ((err = dir_path(sd, key, path)) != 0)
		return err;
	if (unlink(path) != 0 && errno != ENOENT) {
		err = errno;
		log_error("%s: cannot delete: %s", path, ERRSTR(err));
		return err;
	}
	return 0;
}

/* Walks directory rel (relative to root) recursively, reporting files whose
 * key begins with prefix. */
static int dir_walk(struct store_dir *sd, const char *rel, const char *prefix,
		    store_list_cb *cb, void *arg)
{
	char path[PATH_MAX], key[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int err = 0;

	snprintf(path, sizeof(path), "%s%s%s", sd->root, *rel ? "/" : "", rel);
	d = opendir(path);
	if (d == NULL) {
		err = errno;
		if (err == ENOENT || err == ENOTDIR)
			return 0;
		log_error("%s: cannot list: %s", path, ERRSTR(err));
		return err;
	}
	while (err == 0 && (errno = 0, de = readdir(d)) != NULL) {
		size_t klen, plen = strlen(prefix);
		struct stat sb;

		if (de->d_name[0] == '.')
			continue;	/* ".", "..", temporaries */
		snprintf(key, sizeof(key), "%s%s%s", rel, *rel ? "/" : "",
			 de->d_name);
		klen = strlen(key);
		/* prune subtrees that cannot hold matching keys */
		if (strncmp(key, prefix, klen < plen ? klen : plen) != 0)
			continue;
		if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW))
			continue;	/* vanished meanwhile */
		if (S_ISDIR(sb.st_mode))
			err = dir_walk(sd, key, prefix, cb, arg);
		else if (S_ISREG(sb.st_mode) && klen >= plen)
			err = cb(arg, key, (uint64_t)sb.st_size);
	}
	if (err == 0 && errno != 0) {
		err = errno;
		log_error("%s: cannot list: %s", path, ERRSTR(err));
	}
	closedir(d);
	return err;
}

static int dir_list(struct store *st, const char *prefix, store_list_cb *cb,
		    void *arg)
{
	return dir_walk((struct store_dir *)st, "", prefix, cb, arg);
}

static void dir_destroy(struct store *st)
{
	struct store_dir *sd = (struct store_dir *)st;

	free(sd->root);
	free(sd);
}

static const struct store_ops store_dir_ops = {
	.name = "dir",
	.get = dir_get,
	.put = dir_put,
	.head = dir_head,
	.del = dir_del,
	.list = dir_list,
	.destroy = dir_destroy,
};

struct store *store_dir_create(const char *path, bool create, int *errp)
{
	struct store_dir *sd;
	struct stat sb;
	char *root;

	if (create && mkdir(path, 0755) != 0 && errno != EEXIST) {
		*errp = errno;
		log_error("%s: cannot create directory: %s", path,
			  ERRSTR(*errp));
		return NULL;
	}
	if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		*errp = stat(path, &sb) != 0 ? errno : ENOTDIR;
		log_error("%s: cannot open repository directory: %s", path,
			  *errp == ENOTDIR ? "not a directory"
					   : ERRSTR(*errp));
		return NULL;
	}
	root = realpath(path, NULL);
	sd = calloc(1, sizeof(*sd));
	if (root == NULL || sd == NULL) {
		*errp = root == NULL ? errno : ENOMEM;
		log_error("%s: %s", path, ERRSTR(*errp));
		free(root);
		free(sd);
		return NULL;
	}
	sd->st.ops = &store_dir_ops;
	sd->root = root;
	return &sd->st;
}
