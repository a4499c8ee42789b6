/*
 * Local directory store: each key is a file below the root directory, its
 * '/'-separated components being subdirectories.
 *
 * Everything it creates is private to the owner: files 0600, directories
 * 0700, set explicitly whatever the umask.  A root directory that exists
 * already keeps its mode.
 *
 * put() writes a temporary file in "<root>/.tmp/", fsyncs it, renames it
 * to the final name and fsyncs that directory, so an object is either
 * absent or complete and durable.  A temporary's name says who wrote it:
 * "HOSTHASH.BOOTID.PIDNS.PID.START.RANDOM" (HOSTHASH: 16 hex digits of the
 * SHA-256 of the host name; the rest as in struct proc_id).  Opening the
 * store removes the temporaries whose writer is provably dead (same host,
 * boot and PID namespace, see proc_id_state()) and any older than a day
 * whoever wrote them (a writer on another host sharing the directory);
 * prune (clean_temp) removes those older than an hour.
 * Names beginning with '.' are never listed, so ".tmp" holds no objects.
 * No state is shared between calls, so there is no lock.
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
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "store.h"

#define TMP_DIR ".tmp"
#define TMP_MAX_AGE (24 * 3600)	/* seconds */
/* HOSTHASH.BOOTID.PIDNS.PID.START.RANDOM; fits struct proc_id's fields */
#define TMP_SCAN "%16[0-9a-f].%36[0-9a-f-].%23[0-9].%ld.%llu.%16[0-9a-f]"

struct store_dir {
	struct store st;	/* first: the vtable pointer */
	char *root;		/* absolute path, no trailing '/' */
	char tmp_prefix[160];	/* this writer's part of temporary names */
	pid_t prefix_pid;	/* whose: a forked child (a daemonized mount)
				 * makes its own */
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

/* fsyncs the directory holding path, so that its entry is durable. */
static int fsync_dir_of(const char *path)
{
	char dir[PATH_MAX];
	char *slash;
	int fd, err = 0;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash == NULL)
		return 0;
	if (slash == dir)
		slash++;	/* "/x": the root directory */
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

/* Creates directory path, mode 0700 whatever the umask; one that exists
 * already is left as it is.  Returns 0 or an errno (logged). */
static int make_dir(const char *path)
{
	int err;

	if (mkdir(path, 0700) != 0) {
		if (errno == EEXIST)
			return 0;
		err = errno;
		log_error("%s: cannot create directory: %s", path,
			  ERRSTR(err));
		return err;
	}
	if (chmod(path, 0700) != 0) {
		err = errno;
		log_error("%s: cannot set mode 0700: %s", path, ERRSTR(err));
		return err;
	}
	return fsync_dir_of(path);
}

/* mkdir -p of the directories between the root and path's last component. */
static int make_parents(struct store_dir *sd, char *path)
{
	char *p;
	int err;

	for (p = strchr(path + strlen(sd->root) + 1, '/'); p != NULL;
	     p = strchr(p + 1, '/')) {
		*p = '\0';
		err = make_dir(path);
		*p = '/';
		if (err != 0)
			return err;
	}
	return 0;
}

/* 16 hex digits of the SHA-256 of a host name. */
static void host_hash(const char *host, char out[17])
{
	unsigned char md[EVP_MAX_MD_SIZE] = { 0 };

	EVP_Digest(host, strlen(host), md, NULL, EVP_sha256(), NULL);
	hex_encode(md, 8, out);
}

/* "HOSTHASH.BOOTID.PIDNS.PID.START" of this process, into prefix. */
static void tmp_prefix(char *prefix, size_t size)
{
	struct proc_id self;
	char hhex[17];

	proc_id_self(&self);
	host_hash(self.host, hhex);
	snprintf(prefix, size, "%s.%s.%s.%ld.%llu", hhex, self.boot_id,
		 self.pidns, self.pid, self.start);
}

/* A new temporary's path for this process, in tmp (PATH_MAX bytes). */
static int tmp_path(struct store_dir *sd, char *tmp)
{
	unsigned char rnd[8];
	char rhex[17], forked[sizeof(sd->tmp_prefix)];
	const char *prefix = sd->tmp_prefix;

	if (getpid() != sd->prefix_pid) {
		tmp_prefix(forked, sizeof(forked));
		prefix = forked;
	}
	RAND_bytes(rnd, sizeof(rnd));
	hex_encode(rnd, sizeof(rnd), rhex);
	if ((size_t)snprintf(tmp, PATH_MAX, "%s/" TMP_DIR "/%s.%s", sd->root,
			     prefix, rhex) >= PATH_MAX) {
		log_error("%s: path too long for a temporary file", sd->root);
		return ENAMETOOLONG;
	}
	return 0;
}

/* Whether the writer of temporary name is alive, dead or unknown. */
static enum proc_state tmp_writer(const char *name)
{
	struct proc_id p = { 0 }, self;
	char hhex[17], rhex[17], self_hhex[17];

	if (sscanf(name, TMP_SCAN, hhex, p.boot_id, p.pidns, &p.pid, &p.start,
		   rhex) != 6)
		return PROC_UNKNOWN;
	proc_id_self(&self);
	host_hash(self.host, self_hhex);
	if (strcmp(hhex, self_hhex) != 0)
		return PROC_UNKNOWN;
	memcpy(p.host, self.host, sizeof(p.host));
	return proc_id_state(&p);
}

/*
 * Removes the temporaries of dead writers and those older than max_age
 * seconds (with dry_run, only counts them), into *files and *bytes.  Best
 * effort: what cannot be removed (by a reader without write access to
 * the repository) stays, and nothing is logged but at debug level.
 */
static void sweep_tmp(struct store_dir *sd, unsigned max_age, bool dry_run,
		      uint64_t *files, uint64_t *bytes)
{
	char path[PATH_MAX];
	struct dirent *de;
	time_t now = time(NULL);
	DIR *d;

	*files = 0;
	*bytes = 0;
	snprintf(path, sizeof(path), "%s/" TMP_DIR, sd->root);
	d = opendir(path);
	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		struct stat sb;

		if (de->d_name[0] == '.' ||
		    fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) ||
		    !S_ISREG(sb.st_mode))
			continue;
		if (now - sb.st_mtime <= (time_t)max_age &&
		    tmp_writer(de->d_name) != PROC_DEAD)
			continue;
		if (dry_run || unlinkat(dirfd(d), de->d_name, 0) == 0) {
			if (!dry_run)
				log_debug("%s/%s: removed a temporary file "
					  "left by a killed or old writer",
					  path, de->d_name);
			(*files)++;
			*bytes += (uint64_t)sb.st_size;
		} else {
			log_debug("%s/%s: cannot remove: %s", path,
				  de->d_name, ERRSTR(errno));
		}
	}
	closedir(d);
}

static int dir_clean_temp(struct store *st, unsigned max_age, bool dry_run,
			  uint64_t *files, uint64_t *bytes)
{
	sweep_tmp((struct store_dir *)st, max_age, dry_run, files, bytes);
	return 0;
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
	char path[PATH_MAX], tmp[PATH_MAX];
	int fd, err;

	if ((err = dir_path(sd, key, path)) != 0 ||
	    (err = tmp_path(sd, tmp)) != 0)
		return err;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 && errno == ENOENT) {
		if ((err = make_parents(sd, tmp)) != 0)
			return err;
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (fd < 0) {
		err = errno;
		log_error("%s: cannot create: %s", tmp, ERRSTR(err));
		return err;
	}
	/* the umask may have taken the owner's bits too */
	err = fchmod(fd, 0600) != 0 ? errno : 0;
	if (err == 0)
		err = write_all(fd, data, len);
	if (err == 0 && fsync(fd) != 0)
		err = errno;
	if (close(fd) != 0 && err == 0)
		err = errno;
	if (err == 0 && rename(tmp, path) != 0) {
		err = errno;
		if (err == ENOENT) {
			if ((err = make_parents(sd, path)) != 0) {
				unlink(tmp);
				return err;
			}
			err = rename(tmp, path) != 0 ? errno : 0;
		}
	}
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
	.clean_temp = dir_clean_temp,
	.destroy = dir_destroy,
};

/* Creates the missing parents of a new repository directory, as mkdir -p
 * does (modes 0755 less the umask).  Returns 0 or an errno (logged). */
static int make_root_parents(const char *path)
{
	char *p = strdup(path), *slash;
	int err = 0;

	if (p == NULL)
		return ENOMEM;
	for (slash = strchr(p + 1, '/'); slash != NULL && err == 0;
	     slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		if (mkdir(p, 0755) != 0 && errno != EEXIST) {
			err = errno;
			log_error("%s: cannot create directory: %s", p,
				  ERRSTR(err));
		}
		*slash = '/';
	}
	free(p);
	return err;
}

struct store *store_dir_create(const char *path, bool create, int *errp)
{
	struct store_dir *sd;
	struct stat sb;
	char *root;

	if (create && ((*errp = make_root_parents(path)) != 0 ||
		       (*errp = make_dir(path)) != 0))
		return NULL;
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
	tmp_prefix(sd->tmp_prefix, sizeof(sd->tmp_prefix));
	sd->prefix_pid = getpid();
	sweep_tmp(sd, TMP_MAX_AGE, false, &(uint64_t){ 0 },
		  &(uint64_t){ 0 });
	return &sd->st;
}
