/*
 * cbtfs-repo browse (see browse.h for the model).
 *
 * The state file, /run/cbtfs/browse/KEY/state, is a list of lines, each
 * written and synced before the object it names is made:
 *
 *	mountpoint PATH		the browse's MOUNTPOINT (first line)
 *	owner PID START		the process that set it up
 *	cbtfs DIR		a cbtfs mount browse started
 *	overlay DIR		the copy-on-write server's mount
 *	mount DIR		a filesystem (or the tmpfs of pN) mounted
 *	done			the setup finished
 *
 * Undoing goes through the lines backwards and removes what exists, so a
 * setup killed at any point is undone by browse_stop(), or by the next
 * browse_start() at the same MOUNTPOINT.  Loop devices are not recorded:
 * they are set up with autoclear, held open by the setup until their
 * filesystem is mounted, and so vanish with their mount or with a killed
 * setup.
 */
#include "config.h"

#include <blkid/blkid.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/loop.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "array.h"
#include "browse.h"
#include "mountinfo.h"
#include "browse_overlay.h"
#include "index.h"
#include "util.h"

#define RUN_DIR "/run/cbtfs/browse"
#define TAG "cbtfs-browse"
#define MAX_FS 128

/* ---- small helpers ------------------------------------------------------ */

/* snprintf() into a path buffer: 0, or ENAMETOOLONG (logged) */
static int pathf(char *out, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int pathf(char *out, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out, size, fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < size)
		return 0;
	log_error("path too long: %s...", out);
	return ENAMETOOLONG;
}

/*
 * Runs argv (looked up in PATH) and waits; its exit status, or -1 after
 * logging why it could not run or how it died.  If quiet, what it prints
 * is shown only when it fails (FUSE drivers chatter).  The program is
 * killed if browse dies first, so that a killed setup leaves no helper
 * behind that mounts after the undo (once it has daemonized, its server
 * lives on).
 */
static int run(char *const argv[], bool quiet)
{
	FILE *out = quiet ? tmpfile() : NULL;
	pid_t parent = getpid(), pid;
	int pfd[2], st, err = 0, rc = -1;

	if (pipe2(pfd, O_CLOEXEC) != 0) {
		err = errno;
		log_error("cannot run %s: %s", argv[0], ERRSTR(err));
		if (out != NULL)
			fclose(out);
		return -1;
	}
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (out != NULL) {
			dup2(fileno(out), STDOUT_FILENO);
			dup2(fileno(out), STDERR_FILENO);
		}
		execvp(argv[0], argv);
		err = errno;
		if (write(pfd[1], &err, sizeof(err)) < 0)
			_exit(126);
		_exit(127);
	}
	if (pid < 0)
		err = errno;
	close(pfd[1]);
	if (pid > 0 && read(pfd[0], &err, sizeof(err)) != sizeof(err))
		err = 0;	/* the pipe closed at exec */
	close(pfd[0]);
	if (pid > 0)
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
	if (err != 0)
		log_error("cannot run %s: %s", argv[0], ERRSTR(err));
	else if (WIFEXITED(st))
		rc = WEXITSTATUS(st);
	else
		log_error("%s was killed by signal %d", argv[0], WTERMSIG(st));
	if (out != NULL && rc > 0) {
		char line[512];

		rewind(out);
		while (fgets(line, sizeof(line), out) != NULL)
			fputs(line, stderr);
	}
	if (out != NULL)
		fclose(out);
	return rc;
}

/* mkdir -p, 0700 for what it makes; 0 or an errno (logged) */
static int mkdirs(const char *path)
{
	char p[PATH_MAX], *s;

	snprintf(p, sizeof(p), "%s", path);
	for (s = p + 1;; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char c = *s;

		*s = '\0';
		if (mkdir(p, 0700) != 0 && errno != EEXIST) {
			int err = errno;

			log_error("cannot create directory %s: %s", p,
				  ERRSTR(err));
			return err;
		}
		*s = c;
		if (c == '\0')
			return 0;
	}
}

/* An unmount that waits out a short EBUSY (an autoclear loop device or a
 * FUSE server going away); 0 or an errno (not logged). */
static int unmount(const char *dir)
{
	int i;

	for (i = 0; i < 50; i++) {
		if (umount2(dir, UMOUNT_NOFOLLOW) == 0)
			return 0;
		if (errno == EINVAL || errno == ENOENT)
			return 0;	/* not mounted (any more) */
		if (errno != EBUSY)
			return errno;
		sleep_ms(100, NULL);
	}
	return EBUSY;
}

/* ---- state -------------------------------------------------------------- */

struct state {
	char dir[PATH_MAX];	/* RUN_DIR/KEY */
	char file[PATH_MAX];
	int fd;
	const char *pause;	/* $CBTFS_BROWSE_PAUSE: a line's start */
};

/* KEY: FNV-1a of the mount point's absolute path */
static void state_paths(struct state *s, const char *mountpoint)
{
	uint64_t h = 14695981039346656037ull;
	const char *p;

	for (p = mountpoint; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	snprintf(s->dir, sizeof(s->dir), RUN_DIR "/%016" PRIx64, h);
	pathf(s->file, sizeof(s->file), "%s/state", s->dir);
	s->fd = -1;
	s->pause = getenv("CBTFS_BROWSE_PAUSE");
}

/* SIGINT, SIGTERM or SIGHUP during a setup, which stops and undoes it */
static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

/*
 * Appends a line to the state and syncs it, before the object it names
 * is made; refused (EINTR) once a signal asked to stop.  0 or an errno
 * (logged).
 */
static int state_add(struct state *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int state_add(struct state *s, const char *fmt, ...)
{
	char line[PATH_MAX + 32];
	va_list ap;
	int n, err = 0;

	if (interrupted) {
		log_error("interrupted by signal %d: undoing the browse",
			  (int)interrupted);
		return EINTR;
	}
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line) - 1)
		return ENAMETOOLONG;
	line[n++] = '\n';
	if (write(s->fd, line, (size_t)n) != n || fdatasync(s->fd) != 0)
		err = errno ? errno : EIO;
	if (err != 0)
		log_error("cannot write %s: %s", s->file, ERRSTR(err));
	/* for tests: stop here, to be killed with this much done */
	if (err == 0 && s->pause != NULL &&
	    strncmp(line, s->pause, strlen(s->pause)) == 0)
		raise(SIGSTOP);
	return err;
}

/* The lines of a state file, malloc'd; NULL if there is none. */
struct lines {
	char **v;
	size_t n, cap;
};

static void lines_free(struct lines *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static int state_read(const struct state *s, struct lines *l)
{
	FILE *f = fopen(s->file, "re");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int err = 0;

	memset(l, 0, sizeof(*l));
	if (f == NULL)
		return errno;
	while (err == 0 && (n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] != '\n')
			break;	/* a line cut by a crash: never acted upon */
		line[n - 1] = '\0';
		if ((err = ARRAY_GROW(l)) == 0)
			l->v[l->n++] = line;
		line = NULL;
	}
	free(line);
	fclose(f);
	return err;
}

static const char *state_value(const struct lines *l, const char *key)
{
	size_t i, k = strlen(key);

	for (i = 0; i < l->n; i++)
		if (strncmp(l->v[i], key, k) == 0 &&
		    (l->v[i][k] == ' ' || l->v[i][k] == '\0'))
			return l->v[i] + k + (l->v[i][k] == ' ');
	return NULL;
}

/*
 * Whether the mount m at a recorded directory is one browse made: its
 * tmpfs, a loop device over a file of this state's overlay, or a FUSE
 * driver's mount tagged with TAG.
 */
static bool ours(const struct state *s, const struct mount_entry *m)
{
	char sys[PATH_MAX], back[PATH_MAX];
	const char *dev;
	FILE *f;
	bool yes = false;

	if (strncmp(m->source, TAG, strlen(TAG)) == 0)
		return true;
	if (strncmp(m->source, "/dev/loop", 9) != 0)
		return false;
	dev = m->source + 5;
	snprintf(sys, sizeof(sys), "/sys/block/%s/loop/backing_file", dev);
	if ((f = fopen(sys, "re")) == NULL)
		return false;
	if (fgets(back, sizeof(back), f) != NULL)
		yes = strncmp(back, s->dir, strlen(s->dir)) == 0;
	fclose(f);
	return yes;
}

struct sweep {
	const struct state *s;
	const char *dir;
	size_t len;
	char deepest[PATH_MAX];	/* out: "" if none */
};

static int match_below(const struct mount_entry *m, void *arg)
{
	struct sweep *w = arg;

	if (strncmp(m->dir, w->dir, w->len) == 0 && m->dir[w->len] == '/' &&
	    strlen(m->dir) > strlen(w->deepest) && ours(w->s, m))
		snprintf(w->deepest, sizeof(w->deepest), "%s", m->dir);
	return 0;
}

/*
 * Unmounts dir, after any mount of browse below it (deepest first): the
 * state records each, but one may have been made just after its line's
 * undo.  0 or an errno (not logged).
 */
static int unmount_tree(const struct state *s, const char *dir)
{
	struct sweep w = { .s = s, .dir = dir, .len = strlen(dir) };
	int i;

	for (i = 0; i < MAX_FS; i++) {
		w.deepest[0] = '\0';
		mountinfo_each(match_below, &w);
		if (w.deepest[0] == '\0' || unmount(w.deepest) != 0)
			break;
	}
	return unmount(dir);
}

/*
 * Undoes the objects l records, newest first; removes the state if all
 * went.  Returns 0 or EBUSY after logging each object that remains.
 */
static int undo(struct state *s, const struct lines *l)
{
	size_t i;
	int err, failed = 0;

	for (i = l->n; i-- > 0;) {
		const char *v = strchr(l->v[i], ' ');
		struct mount_entry m;

		v = v ? v + 1 : "";
		if (strncmp(l->v[i], "mount ", 6) == 0) {
			if (!mountinfo_at(v, &m))
				continue;
			if (!ours(s, &m)) {
				log_warn("%s is mounted (%s %s), but not by "
					 "browse: left alone", v, m.type,
					 m.source);
				continue;
			}
		} else if (strncmp(l->v[i], "overlay ", 8) != 0 &&
			   strncmp(l->v[i], "cbtfs ", 6) != 0) {
			continue;
		}
		if ((err = unmount_tree(s, v)) != 0) {
			log_error("cannot unmount %s: %s%s", v, ERRSTR(err),
				  err == EBUSY ? " (a program has files open "
				  "under it: 'fuser -vm' names it; stop it "
				  "and run --unmount again)" : "");
			failed = 1;
			continue;
		}
		if (strncmp(l->v[i], "mount ", 6) != 0)
			rmdir(v);
	}
	if (failed)
		return EBUSY;
	/* pN directories vanished with their tmpfs; the rest is ours */
	{
		char p[PATH_MAX + 16];

		snprintf(p, sizeof(p), "%s/repo", s->dir);
		rmdir(p);
		snprintf(p, sizeof(p), "%s/ovl", s->dir);
		rmdir(p);
	}
	if (unlink(s->file) != 0 && errno != ENOENT) {
		log_error("cannot remove %s: %s", s->file, ERRSTR(errno));
		return errno;
	}
	rmdir(s->dir);
	return 0;
}

/* ---- the repository's mount --------------------------------------------- */

struct find_repo {
	const char *repo;
	char real[PATH_MAX];	/* realpath of a local repository, or "" */
	char dir[PATH_MAX];	/* out: the mount point */
};

static int match_repo(const struct mount_entry *m, void *arg)
{
	struct find_repo *f = arg;
	char real[PATH_MAX];
	const char *src = m->source + 6;

	if (strcmp(m->type, "fuse.cbtfs") != 0 ||
	    strncmp(m->source, "cbtfs:", 6) != 0 ||
	    strncmp(m->dir, RUN_DIR "/", strlen(RUN_DIR) + 1) == 0)
		return 0;	/* not cbtfs, or another browse's own */
	/* root cannot enter another user's mount without allow_other */
	if (access(m->dir, X_OK) != 0)
		return 0;
	/*
	 * An S3 repository by its URL; a directory by its real path, so
	 * only a mount that named it by an absolute path (a relative one
	 * was relative to a directory unknown here)
	 */
	if (strncmp(src, "file://", 7) == 0)
		src += 7;
	if (f->real[0] == '\0'
		    ? strcmp(src, f->repo) == 0
		    : src[0] == '/' && realpath(src, real) != NULL &&
			      strcmp(real, f->real) == 0) {
		snprintf(f->dir, sizeof(f->dir), "%s", m->dir);
		return 1;
	}
	return 0;
}

/* The program cbtfs beside this one, else from PATH. */
static void cbtfs_path(char *out, size_t size)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	snprintf(out, size, "cbtfs");
	if (n <= 0)
		return;
	self[n] = '\0';
	if ((slash = strrchr(self, '/')) == NULL)
		return;
	*slash = '\0';
	if (pathf(out, size, "%s/cbtfs", self) != 0 ||
	    access(out, X_OK) != 0)
		snprintf(out, size, "cbtfs");
}

/*
 * The directory of a cbtfs mount of conf->repo into dir: an existing one,
 * else one started at STATE/repo.  0 or an errno (logged).
 */
static int repo_mount(const struct browse_conf *conf, struct state *s,
		      char *dir, size_t size)
{
	const struct store_opts *so = conf->store;
	struct find_repo f = { .repo = conf->repo };
	char prog[PATH_MAX], opts[8][PATH_MAX + 32];
	char *argv[24];
	int n = 0, k = 0, err;

	if (strncmp(conf->repo, "s3://", 5) != 0) {
		const char *p = conf->repo;

		if (strncmp(p, "file://", 7) == 0)
			p += 7;
		if (realpath(p, f.real) == NULL)
			f.real[0] = '\0';
	}
	if (mountinfo_each(match_repo, &f) != 0) {
		snprintf(dir, size, "%s", f.dir);
		log_info("using the cbtfs mount of %s at %s", conf->repo,
			 dir);
		return 0;
	}
	if ((err = pathf(dir, size, "%s/repo", s->dir)) != 0 ||
	    (err = state_add(s, "cbtfs %s", dir)) != 0 ||
	    (err = mkdirs(dir)) != 0)
		return err;
	cbtfs_path(prog, sizeof(prog));
	argv[n++] = prog;
	argv[n++] = (char *)conf->repo;
	argv[n++] = dir;
#define CBTFS_OPT(cond, ...)                                               \
	if (cond) {                                                         \
		snprintf(opts[k], sizeof(opts[k]), __VA_ARGS__);            \
		argv[n++] = "-o";                                           \
		argv[n++] = opts[k++];                                      \
	}
	CBTFS_OPT(conf->cache_dir, "cache_dir=%s", conf->cache_dir)
	CBTFS_OPT(conf->password_file, "password_file=%s",
		  conf->password_file)
	CBTFS_OPT(so && so->endpoint, "endpoint=%s", so->endpoint)
	CBTFS_OPT(so && so->region, "region=%s", so->region)
	CBTFS_OPT(so && so->addressing, "addressing=%s", so->addressing)
	CBTFS_OPT(so && so->ca_file, "ca_file=%s", so->ca_file)
	CBTFS_OPT(so && so->retries >= 0, "retries=%d", so->retries)
	CBTFS_OPT(so && so->timeout > 0, "timeout=%u", so->timeout)
#undef CBTFS_OPT
	argv[n] = NULL;
	if (run(argv, false) != 0) {
		log_error("could not mount repository %s with %s (see "
			  "above)", conf->repo, prog);
		return EIO;
	}
	return 0;
}

/* ---- loop devices ------------------------------------------------------- */

/*
 * A loop device over path (read-write), with autoclear; its path into
 * dev, and an open descriptor of it into *fdp, which keeps it until the
 * caller has mounted it and closes *fdp.  0 or an errno (logged).
 */
static int loop_attach(const char *path, char *dev, size_t size, int *fdp)
{
	struct loop_config lc = { 0 };
	int ctl, back, fd = -1, nr, err = 0, tries;

	back = open(path, O_RDWR | O_CLOEXEC);
	if (back < 0) {
		err = errno;
		log_error("cannot open %s: %s", path, ERRSTR(err));
		return err;
	}
	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0) {
		err = errno;
		log_error("cannot open /dev/loop-control: %s (browse needs "
			  "loop devices: modprobe loop, or a privileged "
			  "container)", ERRSTR(err));
		close(back);
		return err;
	}
	lc.fd = (unsigned)back;
	lc.info.lo_flags = LO_FLAGS_AUTOCLEAR;
	/* for losetup -a: the file's name, cut to what fits */
	memcpy(lc.info.lo_file_name, path,
	       strnlen(path, LO_NAME_SIZE - 1));
	for (tries = 0; tries < 20; tries++) {
		nr = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (nr < 0) {
			err = errno;
			break;
		}
		snprintf(dev, size, "/dev/loop%d", nr);
		if (access(dev, F_OK) != 0 &&
		    mknod(dev, S_IFBLK | 0660, makedev(7, nr)) != 0) {
			err = errno;
			break;
		}
		fd = open(dev, O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			err = errno;
			break;
		}
		if (ioctl(fd, LOOP_CONFIGURE, &lc) == 0) {
			err = 0;
			break;
		}
		err = errno;
		/* kernels before 5.8: the same in two steps */
		if ((err == EINVAL || err == ENOTTY) &&
		    ioctl(fd, LOOP_SET_FD, back) == 0) {
			if (ioctl(fd, LOOP_SET_STATUS64, &lc.info) == 0) {
				err = 0;
				break;
			}
			err = errno;
			ioctl(fd, LOOP_CLR_FD, 0);
		}
		close(fd);
		fd = -1;
		if (err != EBUSY)
			break;	/* EBUSY: taken by another in between */
	}
	close(ctl);
	close(back);
	if (fd < 0 || err != 0) {
		log_error("cannot set up a loop device over %s: %s", path,
			  ERRSTR(err));
		return err ? err : EIO;
	}
	*fdp = fd;
	return 0;
}

/* ---- filesystems -------------------------------------------------------- */

struct fs {
	char name[16];		/* "p1", or "" for the whole image */
	char type[32];		/* blkid's TYPE, or "" */
	char usage[32];		/* blkid's USAGE */
	uint64_t offset, size;
	const char *kernel;	/* the kernel's name of type, or NULL */
	const char *helper;	/* else a FUSE driver, or NULL */
	char note[160];		/* why it is skipped */
	bool mounted;
};

static bool kernel_has(const char *type)
{
	FILE *f = fopen("/proc/filesystems", "re");
	char line[128], *t;
	bool yes = false;

	if (f == NULL)
		return false;
	while (!yes && fgets(line, sizeof(line), f) != NULL) {
		t = strrchr(line, '\t');
		t = t ? t + 1 : line;
		t[strcspn(t, "\n")] = '\0';
		yes = strcmp(t, type) == 0;
	}
	fclose(f);
	return yes;
}

static bool in_path(const char *prog)
{
	const char *path = getenv("PATH");
	char p[PATH_MAX];

	if (path == NULL)
		path = "/usr/sbin:/usr/bin:/sbin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");

		snprintf(p, sizeof(p), "%.*s/%s", (int)n, path, prog);
		if (access(p, X_OK) == 0)
			return true;
		path += n + (path[n] == ':');
	}
	return false;
}

/*
 * The filesystems browse mounts, by blkid TYPE: the kernel's name for
 * it, and the FUSE driver for a kernel without it.
 */
static const struct fs_kind {
	const char *type, *kernel, *alt, *helper;
} fs_kinds[] = {
	{ "ext4", "ext4", NULL, "fuse2fs" },
	{ "ext3", "ext3", "ext4", "fuse2fs" },
	{ "ext2", "ext2", "ext4", "fuse2fs" },
	{ "xfs", "xfs", NULL, NULL },
	{ "btrfs", "btrfs", NULL, NULL },
	{ "vfat", "vfat", NULL, "fusefat" },
	{ "exfat", "exfat", NULL, "exfat-fuse" },
	{ "ntfs", "ntfs3", NULL, "ntfs-3g" },
};

/* Chooses how fs is mounted, or writes why it is not into fs->note. */
static void fs_choose(struct fs *fs)
{
	size_t i;

	if (fs->type[0] == '\0') {
		snprintf(fs->note, sizeof(fs->note), "no filesystem found");
		return;
	}
	if (strcmp(fs->usage, "filesystem") != 0) {
		snprintf(fs->note, sizeof(fs->note), "%s is not a filesystem",
			 fs->type);
		return;
	}
	for (i = 0; i < sizeof(fs_kinds) / sizeof(fs_kinds[0]); i++) {
		const struct fs_kind *k = &fs_kinds[i];

		if (strcmp(k->type, fs->type) != 0)
			continue;
		if (kernel_has(k->kernel))
			fs->kernel = k->kernel;
		else if (k->alt != NULL && kernel_has(k->alt))
			fs->kernel = k->alt;
		else if (k->helper != NULL && in_path(k->helper))
			fs->helper = k->helper;
		else
			snprintf(fs->note, sizeof(fs->note), "this kernel "
				 "has no %s driver%s%s%s", fs->type,
				 k->helper ? " and " : "",
				 k->helper ? k->helper : "",
				 k->helper ? " is not installed" : "");
		return;
	}
	snprintf(fs->note, sizeof(fs->note), "browse does not mount %s",
		 fs->type);
}

/* TYPE and USAGE of the superblock at [fs->offset, +size) of fd. */
static void probe_fs(int fd, struct fs *fs)
{
	blkid_probe pr = blkid_new_probe();
	const char *v;

	if (pr == NULL)
		return;
	if (blkid_probe_set_device(pr, fd, (blkid_loff_t)fs->offset,
				   (blkid_loff_t)fs->size) == 0) {
		blkid_probe_enable_superblocks(pr, 1);
		blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE |
						  BLKID_SUBLKS_USAGE);
		blkid_probe_enable_partitions(pr, 0);
		if (blkid_do_safeprobe(pr) == 0) {
			if (blkid_probe_lookup_value(pr, "TYPE", &v, NULL) ==
			    0)
				snprintf(fs->type, sizeof(fs->type), "%s", v);
			if (blkid_probe_lookup_value(pr, "USAGE", &v,
						     NULL) == 0)
				snprintf(fs->usage, sizeof(fs->usage), "%s",
					 v);
		}
	}
	blkid_free_probe(pr);
}

/*
 * The filesystems of the image at fd: its partitions if it has a
 * partition table (*pttype gets its name), else the image itself.
 * Returns how many, or -1 after logging.
 */
static int find_filesystems(int fd, uint64_t capacity, struct fs *fss,
			    char *pttype, size_t size)
{
	blkid_probe pr = blkid_new_probe();
	blkid_partlist pl;
	int n = 0, i, np;

	pttype[0] = '\0';
	if (pr == NULL || blkid_probe_set_device(pr, fd, 0, 0) != 0) {
		log_error("cannot probe the image (libblkid)");
		if (pr != NULL)
			blkid_free_probe(pr);
		return -1;
	}
	blkid_probe_enable_superblocks(pr, 0);
	blkid_probe_enable_partitions(pr, 1);
	pl = blkid_probe_get_partitions(pr);
	np = pl ? blkid_partlist_numof_partitions(pl) : 0;
	if (pl != NULL && np > 0) {
		blkid_parttable t = blkid_partlist_get_table(pl);

		snprintf(pttype, size, "%s",
			 t ? blkid_parttable_get_type(t) : "?");
		for (i = 0; i < np && n < MAX_FS; i++) {
			blkid_partition p =
				blkid_partlist_get_partition(pl, i);
			struct fs *fs = &fss[n];

			if (p == NULL || blkid_partition_is_extended(p))
				continue;
			memset(fs, 0, sizeof(*fs));
			snprintf(fs->name, sizeof(fs->name), "p%d",
				 blkid_partition_get_partno(p));
			fs->offset = (uint64_t)blkid_partition_get_start(p) *
				     512;
			fs->size = (uint64_t)blkid_partition_get_size(p) * 512;
			if (fs->offset >= capacity)
				continue;
			if (fs->size > capacity - fs->offset)
				fs->size = capacity - fs->offset;
			n++;
		}
	} else {
		memset(&fss[0], 0, sizeof(fss[0]));
		fss[0].size = capacity;
		n = 1;
	}
	blkid_free_probe(pr);
	for (i = 0; i < n; i++) {
		probe_fs(fd, &fss[i]);
		fs_choose(&fss[i]);
	}
	return n;
}

/* ---- setup -------------------------------------------------------------- */

static int need_root(void)
{
	if (geteuid() == 0)
		return 0;
	log_error("browse needs root: it sets up loop devices and mounts "
		  "(run it with sudo, or in the browse pod of k8s/)");
	return EPERM;
}

/* MOUNTPOINT, absolute, into out; created if missing.  0 or an errno. */
static int abs_mountpoint(const char *mp, char *out, bool create)
{
	struct stat st;

	if (create && mkdir(mp, 0755) != 0 && errno != EEXIST) {
		log_error("cannot create mount point %s: %s", mp,
			  ERRSTR(errno));
		return errno;
	}
	if (realpath(mp, out) == NULL) {
		log_error("mount point %s: %s", mp, ERRSTR(errno));
		return errno;
	}
	if (stat(out, &st) != 0 || !S_ISDIR(st.st_mode)) {
		log_error("mount point %s is not a directory", mp);
		return ENOTDIR;
	}
	return 0;
}

/*
 * A state at s left by an earlier browse: refused if that one finished
 * and is still mounted, or still runs; else undone.  0 or an errno.
 */
static int earlier_state(struct state *s, const char *mp)
{
	struct lines l;
	struct proc_id owner = { 0 };
	const char *v;
	int err;

	if ((err = state_read(s, &l)) != 0)
		return err == ENOENT ? 0 : err;
	v = state_value(&l, "owner");
	if (v != NULL) {
		proc_id_self(&owner);
		if (sscanf(v, "%ld %llu", &owner.pid, &owner.start) != 2)
			owner.pid = 0;
	}
	if (state_value(&l, "done") == NULL && owner.pid > 0 &&
	    proc_id_state(&owner) == PROC_ALIVE) {
		log_error("another browse (pid %ld) is setting up %s",
			  owner.pid, mp);
		lines_free(&l);
		return EBUSY;
	}
	if (state_value(&l, "done") != NULL && mountinfo_at(mp, NULL)) {
		log_error("%s is in use: a browse is mounted there; "
			  "'cbtfs-repo browse --unmount %s' it first", mp, mp);
		lines_free(&l);
		return EBUSY;
	}
	log_warn("undoing an earlier browse of %s that %s", mp,
		 state_value(&l, "done") ? "was unmounted by hand"
					 : "did not finish");
	err = undo(s, &l);
	lines_free(&l);
	return err;
}

/*
 * Starts the copy-on-write server over the image at STATE/ovl in a child
 * of its own; returns 0 once it is mounted, or an errno (logged).
 */
static int start_overlay(const struct browse_conf *conf, struct state *s,
			 int image_fd, uint64_t capacity,
			 const struct overlay_file *files, unsigned n,
			 char *ovl, size_t size)
{
	char odir[PATH_MAX], fsname[PATH_MAX + 64];
	struct mount_entry m;
	pid_t pid;
	int i, st, err;

	if (conf->cache_dir != NULL) {
		snprintf(odir, sizeof(odir), "%s/browse", conf->cache_dir);
	} else {
		char *cd = index_default_cache_dir();

		if (cd == NULL)
			return ENOMEM;
		snprintf(odir, sizeof(odir), "%s/browse", cd);
		free(cd);
	}
	if ((err = mkdirs(odir)) != 0)
		return err;
	if ((err = pathf(ovl, size, "%s/ovl", s->dir)) != 0 ||
	    (err = pathf(fsname, sizeof(fsname), TAG ":%s@%s", conf->volume,
			 conf->snapshot)) != 0 ||
	    (err = state_add(s, "overlay %s", ovl)) != 0 ||
	    (err = mkdirs(ovl)) != 0)
		return err;
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		err = errno;
		log_error("cannot start the overlay server: %s", ERRSTR(err));
		return err;
	}
	if (pid == 0) {
		struct overlay_conf oc = {
			.image_fd = image_fd,
			.capacity = capacity,
			.overlay_dir = odir,
			.mountpoint = ovl,
			.fsname = fsname,
			.files = files,
			.n_files = n,
		};
		int null = open("/dev/null", O_RDWR);

		setsid();
		signal(SIGINT, SIG_IGN);
		signal(SIGHUP, SIG_IGN);
		signal(SIGTERM, SIG_DFL);
		/* errors before the mount reach the terminal; the server
		 * then lets go of it (see overlay_serve) */
		if (null >= 0) {
			dup2(null, STDIN_FILENO);
			dup2(null, STDOUT_FILENO);
			close(null);
		}
		_exit(overlay_serve(&oc) == 0 ? 0 : 1);
	}
	for (i = 0; i < 200; i++) {
		if (mountinfo_at(ovl, &m) &&
		    strcmp(m.type, "fuse.cbtfs-browse") == 0)
			break;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			log_error("the overlay server stopped (see above)");
			return EIO;
		}
		sleep_ms(50, NULL);
	}
	if (i == 200) {
		log_error("the overlay server did not mount %s", ovl);
		return ETIMEDOUT;
	}
	return 0;
}

/* Mounts fs (a file of the overlay at ovl) at dir; 0 or an errno. */
static int mount_fs(const struct browse_conf *conf, struct state *s,
		    const char *ovl, struct fs *fs, const char *dir)
{
	char file[PATH_MAX + 32], dev[64], opts[PATH_MAX + 96];
	int fd = -1, err;

	snprintf(file, sizeof(file), "%s/%s.img", ovl,
		 fs->name[0] ? fs->name : "fs");
	if ((err = state_add(s, "mount %s", dir)) != 0)
		return err;
	if (fs->helper != NULL) {
		char *argv[] = { (char *)fs->helper, "-o", opts, file,
				 (char *)dir, NULL };

		/* its files are for every user, as a kernel mount's are */
		snprintf(opts, sizeof(opts),
			 "ro,allow_other,fsname=" TAG ":%s@%s%s%s",
			 conf->volume, conf->snapshot, fs->name[0] ? "/" : "",
			 fs->name);
		if (run(argv, true) != 0) {
			log_error("%s: %s could not mount the %s filesystem "
				  "(see above)", dir, fs->helper, fs->type);
			return EIO;
		}
		return 0;
	}
	if ((err = loop_attach(file, dev, sizeof(dev), &fd)) != 0)
		return err;
	/* two mounts of one xfs (the volume's own, elsewhere) are fine */
	if (mount(dev, dir, fs->kernel, MS_RDONLY | MS_NOSUID | MS_NODEV,
		  strcmp(fs->kernel, "xfs") == 0 ? "nouuid" : NULL) != 0) {
		err = errno;
		log_error("%s: cannot mount the %s filesystem%s%s: %s (the "
			  "kernel log, dmesg, says why)", dir, fs->type,
			  fs->name[0] ? " of partition " : "", fs->name,
			  ERRSTR(err));
	}
	close(fd);	/* the mount holds the loop device now */
	return err;
}

static void print_fs(const char *mp, const struct fs *fs, bool parted)
{
	char where[PATH_MAX + 16];

	snprintf(where, sizeof(where), "%s%s%s", mp, parted ? "/" : "",
		 fs->name);
	if (fs->mounted)
		printf("  %-28s %-6s %10s%s%s%s\n", where, fs->type,
		       HUMAN(fs->size), fs->helper ? "  (with " : "",
		       fs->helper ? fs->helper : "", fs->helper ? ")" : "");
	else
		printf("  %-28s %-6s %10s  skipped: %s\n",
		       parted ? fs->name : where, fs->type[0] ? fs->type : "-",
		       HUMAN(fs->size), fs->note);
}

static int setup(const struct browse_conf *conf, struct state *s,
		 const char *mp)
{
	static struct fs fss[MAX_FS];
	struct overlay_file files[MAX_FS];
	char rdir[PATH_MAX], image[PATH_MAX * 2], pttype[32], ovl[PATH_MAX];
	char dir[PATH_MAX + 16];
	struct proc_id self;
	struct stat st;
	unsigned n_files = 0;
	int fd, n, i, err, mounted = 0;
	DIR *d;

	proc_id_self(&self);
	if ((err = state_add(s, "mountpoint %s", mp)) != 0 ||
	    (err = state_add(s, "owner %ld %llu", self.pid, self.start)) != 0)
		return err;
	if ((err = repo_mount(conf, s, rdir, sizeof(rdir))) != 0)
		return err;
	/* a listing makes an existing mount look for new snapshots */
	snprintf(image, sizeof(image), "%s/%s", rdir, conf->volume);
	if ((d = opendir(rdir)) != NULL)
		closedir(d);
	if ((d = opendir(image)) != NULL)
		closedir(d);
	snprintf(image, sizeof(image), "%s/%s/%s.img", rdir, conf->volume,
		 conf->snapshot);
	fd = open(image, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = errno;
		if (err == ENOENT)
			log_error("%s has no snapshot %s of volume %s "
				  "('cbtfs-repo snapshots %s' lists them)",
				  conf->repo, conf->snapshot, conf->volume,
				  conf->repo);
		else
			log_error("cannot open %s: %s", image, ERRSTR(err));
		return err;
	}
	if (fstat(fd, &st) != 0) {
		err = errno;
		close(fd);
		return err;
	}
	n = find_filesystems(fd, (uint64_t)st.st_size, fss, pttype,
			     sizeof(pttype));
	if (n < 0) {
		close(fd);
		return EIO;
	}
	for (i = 0; i < n; i++) {
		if (fss[i].kernel == NULL && fss[i].helper == NULL)
			continue;
		pathf(files[n_files].name, sizeof(files[n_files].name),
		      "%s.img", fss[i].name[0] ? fss[i].name : "fs");
		files[n_files].offset = fss[i].offset;
		files[n_files].size = fss[i].size;
		n_files++;
	}
	if (n_files == 0) {
		close(fd);
		if (pttype[0] == '\0')
			log_error(
				"%s@%s holds no filesystem browse can mount "
				"(%s); 'cbtfs-repo restore' writes its image "
				"out whole",
				conf->volume, conf->snapshot, fss[0].note);
		else
			for (i = 0,
			    log_error("%s@%s: no partition of its %s "
				      "table holds a filesystem browse "
				      "can mount:",
				      conf->volume, conf->snapshot, pttype);
			     i < n; i++)
				log_error("  %s: %s", fss[i].name,
					  fss[i].note);
		return ENOMEDIUM;
	}
	err = start_overlay(conf, s, fd, (uint64_t)st.st_size, files,
			    n_files, ovl, sizeof(ovl));
	close(fd);	/* the server has its own */
	if (err != 0)
		return err;
	if (pttype[0] != '\0') {
		/* a read-only tmpfs holds the pN directories */
		if ((err = state_add(s, "mount %s", mp)) != 0)
			return err;
		if (mount(TAG, mp, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
			  "size=64k,mode=0755") != 0) {
			err = errno;
			log_error("cannot mount a tmpfs at %s: %s", mp,
				  ERRSTR(err));
			return err;
		}
		for (i = 0; i < n; i++) {
			if (!fss[i].kernel && !fss[i].helper)
				continue;
			if ((err = pathf(dir, sizeof(dir), "%s/%s", mp,
					 fss[i].name)) != 0)
				return err;
			if (mkdir(dir, 0755) != 0) {
				err = errno;
				log_error("cannot create %s: %s", dir,
					  ERRSTR(err));
				return err;
			}
		}
		if (mount(NULL, mp, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID |
			  MS_NODEV | MS_NOEXEC, NULL) != 0)
			log_warn("cannot make %s read-only: %s", mp,
				 ERRSTR(errno));
	}
	for (i = 0; i < n; i++) {
		if (fss[i].kernel == NULL && fss[i].helper == NULL)
			continue;
		snprintf(dir, sizeof(dir), "%s%s%s", mp,
			 pttype[0] ? "/" : "", fss[i].name);
		if (mount_fs(conf, s, ovl, &fss[i], dir) == 0) {
			fss[i].mounted = true;
			mounted++;
		} else {
			snprintf(fss[i].note, sizeof(fss[i].note),
				 "its mount failed (see above)");
		}
	}
	if (mounted == 0)
		return EIO;
	if ((err = state_add(s, "done")) != 0)
		return err;
	printf("%s@%s", conf->volume, conf->snapshot);
	if (pttype[0] != '\0')
		printf(" (a %s partition table, %d partition%s)", pttype, n,
		       n == 1 ? "" : "s");
	printf(", read-only; 'cbtfs-repo browse --unmount %s' ends it:\n",
	       mp);
	for (i = 0; i < n; i++)
		print_fs(mp, &fss[i], pttype[0] != '\0');
	return 0;
}

int browse_start(const struct browse_conf *conf)
{
	char mp[PATH_MAX];
	struct state s;
	struct mount_entry m;
	struct lines l;
	int err;

	if ((err = need_root()) != 0 ||
	    (err = abs_mountpoint(conf->mountpoint, mp, true)) != 0)
		return err;
	state_paths(&s, mp);
	if ((err = earlier_state(&s, mp)) != 0)
		return err;
	if (mountinfo_at(mp, &m)) {
		log_error("%s is in use: %s is mounted there (%s)", mp,
			  m.source, m.type);
		return EBUSY;
	}
	if ((err = mkdirs(s.dir)) != 0)
		return err;
	s.fd = open(s.file, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC,
		    0600);
	if (s.fd < 0) {
		err = errno;
		log_error("cannot create %s: %s", s.file, ERRSTR(err));
		return err;
	}
	{
		struct sigaction sa = { .sa_handler = on_signal }, old[3];

		sigemptyset(&sa.sa_mask);
		sigaction(SIGINT, &sa, &old[0]);
		sigaction(SIGTERM, &sa, &old[1]);
		sigaction(SIGHUP, &sa, &old[2]);
		err = setup(conf, &s, mp);
		sigaction(SIGINT, &old[0], NULL);
		sigaction(SIGTERM, &old[1], NULL);
		sigaction(SIGHUP, &old[2], NULL);
	}
	close(s.fd);
	if (err == 0)
		return 0;
	if (state_read(&s, &l) == 0) {
		undo(&s, &l);
		lines_free(&l);
	}
	return err;
}

int browse_stop(const char *mountpoint)
{
	char mp[PATH_MAX];
	struct state s;
	struct lines l;
	int err;

	if ((err = need_root()) != 0 ||
	    (err = abs_mountpoint(mountpoint, mp, false)) != 0)
		return err;
	state_paths(&s, mp);
	if ((err = state_read(&s, &l)) != 0) {
		if (err != ENOENT) {
			log_error("cannot read %s: %s", s.file, ERRSTR(err));
			return err;
		}
		rmdir(s.dir);	/* of a browse killed before its state */
		printf("nothing is browsed at %s\n", mp);
		return 0;
	}
	err = undo(&s, &l);
	lines_free(&l);
	if (err == 0)
		printf("unmounted %s\n", mp);
	return err;
}
