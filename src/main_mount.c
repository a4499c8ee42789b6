/*
 * cbtfs: mount a repository read-only; every snapshot is VOLUME/NAME.img.
 *
 * Options come as FUSE -o key=value (so an fstab line works); cbtfs's own
 * are taken out here, the rest go to libfuse.  Every check that can fail
 * before mounting is made here, in order of cost (usage, values, the
 * mountpoint, /dev/fuse, the log file), so that each failure is one line
 * on the terminal: exit status 2 for a usage error, 1 for any other.
 */
#include "config.h"

#define FUSE_USE_VERSION 35

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <fuse.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuse_ops.h"
#include "index.h"
#include "mountinfo.h"

static const char prog[] = "cbtfs";

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define REPO_ENV "CBTFS_REPOSITORY"

struct mount_opts {
	char *repo;		/* -r, --repo */
	char *pos[2];		/* REPO MOUNTPOINT, or MOUNTPOINT */
	int n_pos;
	char *cache_dir;
	char *cache_size;
	char *refresh;
	char *readahead;
	char *jobs;
	char *timeout;
	char *retries;
	char *endpoint;
	char *region;
	char *addressing;
	char *ca_file;
	char *password_file;
	char *metrics_file;
	char *metrics_interval;
	char *log;
	int direct_io;
	int nonempty;
	int foreground;		/* -f, -o debug: libfuse sees them too */
	int single;
	int help;
	int version;
	int verbose;
};

enum { KEY_NO_D, KEY_NO_S };

#define OPT(t, p) { t, offsetof(struct mount_opts, p), 0 }
#define FLAG(t, p) { t, offsetof(struct mount_opts, p), 1 }
static const struct fuse_opt mount_fuse_opts[] = {
	OPT("-r %s", repo),		/* "--repo X" is rewritten to "-r X" */
	OPT("--repo=%s", repo),
	OPT("cache_dir=%s", cache_dir),
	OPT("cache_size=%s", cache_size),
	OPT("refresh=%s", refresh),
	FLAG("direct_io", direct_io),
	OPT("readahead=%s", readahead),
	OPT("jobs=%s", jobs),
	OPT("retries=%s", retries),
	OPT("timeout=%s", timeout),
	OPT("endpoint=%s", endpoint),
	OPT("region=%s", region),
	OPT("addressing=%s", addressing),
	OPT("ca_file=%s", ca_file),
	OPT("password_file=%s", password_file),
	OPT("metrics_file=%s", metrics_file),
	OPT("metrics_interval=%s", metrics_interval),
	OPT("log=%s", log),
	FLAG("nonempty", nonempty),
	FLAG("single_threaded", single),
	FLAG("--single-threaded", single),
	FLAG("-f", foreground),
	FUSE_OPT_KEY("-f", FUSE_OPT_KEY_KEEP),
	FLAG("debug", foreground),
	FUSE_OPT_KEY("debug", FUSE_OPT_KEY_KEEP),
	FUSE_OPT_KEY("-d", KEY_NO_D),
	FUSE_OPT_KEY("-s", KEY_NO_S),
	FLAG("-h", help),
	FLAG("--help", help),
	FLAG("-V", version),
	FLAG("--version", version),
	FLAG("-v", verbose),
	FLAG("--verbose", verbose),
	FUSE_OPT_END
};

/* Reports a usage error, and where help is; returns EXIT_USAGE. */
static int usage_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'cbtfs --help' for more information.\n");
	return EXIT_USAGE;
}

static void usage(void)
{
	printf(
"Usage: cbtfs [-r REPO] MOUNTPOINT [-f] [-o OPTION[,OPTION...]]\n"
"       cbtfs REPO MOUNTPOINT [-f] [-o OPTION[,OPTION...]]\n"
"\n"
"Mounts the cbtfs repository REPO (a directory, file:///path or\n"
"s3://BUCKET/PREFIX; default $CBTFS_REPOSITORY) read-only at MOUNTPOINT,\n"
"an empty directory.  Every backed-up snapshot appears as\n"
"MOUNTPOINT/VOLUME/NAME.img, a raw disk image assembled on read.  Restore\n"
"with dd; browse a filesystem image with 'mount -o loop,ro'.  Snapshots\n"
"added while mounted appear within REFRESH seconds, or soon after a\n"
"directory listing.  Unmount with 'fusermount3 -u MOUNTPOINT'.\n"
"\n"
"  -r, --repo REPO        the repository (default $CBTFS_REPOSITORY)\n"
"  -f                     stay in the foreground, log to stderr\n"
"      --single-threaded  serve one request at a time; also written\n"
"                         as -o single_threaded\n"
"  -v, --verbose          more messages\n"
"  -h, --help             show this help and exit\n"
"  -V, --version          show the version and exit\n"
"\n"
"cbtfs -o options:\n"
"  -o cache_dir=DIR       where the local index lives\n"
"                         (default $XDG_CACHE_HOME/cbtfs or ~/.cache/cbtfs)\n"
"  -o cache_size=SIZE     memory for decoded chunks, 1M to 1T\n"
"                         (default 256M)\n"
"  -o refresh=SECONDS     look for new snapshots this often, 0 to 86400\n"
"                         (default 5; 0: only after directory listings\n"
"                         and lookups of missing names)\n"
"  -o readahead=N         on sequential reads, load the next N chunks in\n"
"                         the background, 0 to 64 (default 8; 0: off)\n"
"  -o direct_io           bypass the kernel page cache: every read reaches\n"
"                         cbtfs as the program made it\n"
"  -o metrics_file=FILE   write the metrics of MOUNTPOINT/.stats\n"
"                         (Prometheus text format) to FILE, replaced\n"
"                         atomically every METRICS_INTERVAL seconds and\n"
"                         at unmount\n"
"  -o metrics_interval=SECONDS\n"
"                         1 to 86400 (default 10)\n"
"  -o log=FILE            once in the background, append messages to FILE\n"
"                         (default: syslog if /dev/log exists, else\n"
"                         CACHE_DIR/mount-MOUNTPOINT.log)\n"
"  -o nonempty            mount even on a directory that is not empty or\n"
"                         already has a mount on it (hiding them)\n"
"  -o debug               FUSE debug output (implies -f)\n"
"  -o jobs=N              S3 requests in flight at once, 1 to 256\n"
"                         (default 8)\n"
"  -o endpoint=URL        S3 endpoint (default $AWS_ENDPOINT_URL_S3,\n"
"                         $AWS_ENDPOINT_URL, or AWS itself)\n"
"  -o region=REGION       S3 signing region (default $AWS_REGION,\n"
"                         $AWS_DEFAULT_REGION, or us-east-1)\n"
"  -o addressing=path|virtual\n"
"                         bucket in the URL path or host name (default:\n"
"                         path for a custom endpoint, virtual for AWS)\n"
"  -o ca_file=FILE        PEM CAs to trust (default $AWS_CA_BUNDLE)\n"
"  -o retries=N           retries of a failed S3 request, 0 to 100\n"
"                         (default 6)\n"
"  -o timeout=SECONDS     an S3 request that cannot connect, or stalls,\n"
"                         this long is failed and retried, 1 to 3600\n"
"                         (default 30)\n"
"                         S3 credentials: AWS_ACCESS_KEY_ID,\n"
"                         AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN\n"
"  -o password_file=FILE  passphrase of an encrypted repository: the\n"
"                         file's content but a trailing newline (default\n"
"                         $CBTFS_PASSWORD, or asked on a terminal); read\n"
"                         before mounting\n"
"\n"
"Other -o options (allow_other, max_idle_threads=N, splice_read,\n"
"splice_write, splice_move, ...) are passed to FUSE; see mount.fuse3(8).\n"
"Metrics: cat MOUNTPOINT/.stats.  See cbtfs(1).\n");
}

/* Makes *path (malloc'd, may be NULL) absolute; 0 or ENOMEM. */
static int make_absolute(char **path)
{
	char *cwd, *abs = NULL;

	if (*path == NULL || (*path)[0] == '/')
		return 0;
	cwd = getcwd(NULL, 0);
	if (cwd == NULL || asprintf(&abs, "%s/%s", cwd, *path) < 0)
		abs = NULL;
	free(cwd);
	if (abs == NULL)
		return ENOMEM;
	free(*path);
	*path = abs;
	return 0;
}

static int opt_proc(void *data, const char *arg, int key,
		    struct fuse_args *outargs)
{
	struct mount_opts *o = data;

	(void)outargs;
	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (o->n_pos == 2) {
			usage_error("unexpected argument '%s'", arg);
			return -1;
		}
		o->pos[o->n_pos] = strdup(arg);
		if (o->pos[o->n_pos++] == NULL)
			return -1;
		return 0;	/* the mountpoint is added back later */
	case KEY_NO_D:
		usage_error("-d is not a cbtfs option (it is --device in "
			    "cbtfs-ingest); for FUSE debug output use "
			    "-o debug");
		return -1;
	case KEY_NO_S:
		usage_error("-s is not a cbtfs option (it is --snapshot in "
			    "cbtfs-ingest); to serve one request at a time "
			    "use --single-threaded");
		return -1;
	default:
		return 1;	/* for libfuse, which says what it refuses */
	}
}

/*
 * Parses the number value of -o name=value into *out, within min..max
 * (unit, e.g. "seconds", may be NULL).  Returns 0, or EXIT_USAGE after
 * saying so.
 */
static int opt_number(const char *name, const char *value, long min,
		      long max, const char *unit, long *out)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(value, &end, 10);
	if (*value == '\0' || *end != '\0' || errno != 0 || n < min ||
	    n > max)
		return usage_error("-o %s=%s: expected %ld to %ld%s%s", name,
				   value, min, max, unit ? " " : "",
				   unit ? unit : "");
	*out = n;
	return 0;
}

/* Fills conf from the -o values of o; 0 or EXIT_USAGE (reported). */
static int check_values(struct mount_opts *o, struct mount_conf *conf)
{
	uint64_t cache_bytes = 256u << 20;
	long n;

	if (o->cache_size != NULL &&
	    (parse_size(o->cache_size, &cache_bytes) != 0 ||
	     cache_bytes < (1u << 20) || cache_bytes > (1ull << 40) ||
	     cache_bytes > SIZE_MAX))
		return usage_error("-o cache_size=%s: expected a size from "
				   "1M to 1T (e.g. 512M, 4G)", o->cache_size);
	conf->cache_bytes = (size_t)cache_bytes;
	n = 5;
	if (o->refresh != NULL &&
	    opt_number("refresh", o->refresh, 0, 86400, "seconds", &n))
		return EXIT_USAGE;
	conf->refresh_seconds = (unsigned)n;
	n = 8;
	if (o->readahead != NULL &&
	    opt_number("readahead", o->readahead, 0, 64, "chunks", &n))
		return EXIT_USAGE;
	conf->readahead = (unsigned)n;
	n = 8;
	if (o->jobs != NULL &&
	    opt_number("jobs", o->jobs, 1, 256, "requests", &n))
		return EXIT_USAGE;
	conf->store.connections = (unsigned)n;
	n = -1;		/* the store's default */
	if (o->retries != NULL &&
	    opt_number("retries", o->retries, 0, 100, NULL, &n))
		return EXIT_USAGE;
	conf->store.retries = (int)n;
	n = 0;		/* the store's default */
	if (o->timeout != NULL &&
	    opt_number("timeout", o->timeout, 1, 3600, "seconds", &n))
		return EXIT_USAGE;
	conf->store.timeout = (unsigned)n;
	n = 10;
	if (o->metrics_interval != NULL &&
	    opt_number("metrics_interval", o->metrics_interval, 1, 86400,
		       "seconds", &n))
		return EXIT_USAGE;
	conf->metrics_seconds = (unsigned)n;
	if (o->addressing != NULL && strcmp(o->addressing, "path") != 0 &&
	    strcmp(o->addressing, "virtual") != 0)
		return usage_error("-o addressing=%s: expected 'path' or "
				   "'virtual'", o->addressing);
	return 0;
}

/*
 * Whether the directory dir (a real path) is the mount point of a mount;
 * what is mounted there ("TYPE SOURCE" of the last such mount) into what.
 */
static bool mounted_at(const char *dir, char *what, size_t size)
{
	struct mount_entry m;

	if (!mountinfo_at(dir, &m))
		return false;
	snprintf(what, size, "%s %s", m.type[0] ? m.type : "?",
		 m.source[0] ? m.source : "?");
	return true;
}

/* Whether directory dir holds anything; false if it cannot be read. */
static bool dir_has_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	bool any = false;

	if (d == NULL)
		return false;
	while (!any && (e = readdir(d)) != NULL)
		any = strcmp(e->d_name, ".") != 0 &&
		      strcmp(e->d_name, "..") != 0;
	closedir(d);
	return any;
}

/*
 * Checks that mnt can take the mount: an existing directory, empty and
 * not a mount point unless nonempty; its real path into real.  Returns 0
 * or EXIT_FAIL after saying what to do.
 */
static int check_mountpoint(const char *mnt, bool nonempty, char *real)
{
	char what[PATH_MAX + 80];
	struct stat st;

	if (realpath(mnt, real) == NULL) {
		if (errno == ENOENT)
			log_error("mount point %s does not exist; create it "
				  "(mkdir -p %s) or choose another", mnt, mnt);
		else
			log_error("mount point %s: %s", mnt, ERRSTR(errno));
		return EXIT_FAIL;
	}
	if (stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
		log_error("mount point %s is not a directory", mnt);
		return EXIT_FAIL;
	}
	if (nonempty)
		return 0;
	if (mounted_at(real, what, sizeof(what))) {
		log_error("mount point %s already has a mount on it (%s); "
			  "unmount it first (fusermount3 -u %s), choose "
			  "another directory, or add -o nonempty to mount "
			  "on top of it", mnt, what, mnt);
		return EXIT_FAIL;
	}
	if (dir_has_entries(real)) {
		log_error("mount point %s is not empty: the mount would "
			  "hide its files; use an empty directory, or add "
			  "-o nonempty", mnt);
		return EXIT_FAIL;
	}
	return 0;
}

/* Whether /dev/fuse can be opened; 0 or EXIT_FAIL after saying why. */
static int check_dev_fuse(void)
{
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	int err = errno;

	if (fd >= 0) {
		close(fd);
		return 0;
	}
	if (err == ENOENT || err == ENODEV || err == ENXIO)
		log_error("cannot open /dev/fuse: %s; load the fuse module "
			  "(modprobe fuse), or in a container give it the "
			  "device (docker run --device /dev/fuse, or a "
			  "privileged pod)", ERRSTR(err));
	else if (err == EACCES || err == EPERM)
		log_error("cannot open /dev/fuse: %s; run cbtfs as root, "
			  "or as a user who may open it (ls -l /dev/fuse: "
			  "usually mode 0666, else join its group), or in a "
			  "container allow the device (docker run --device "
			  "/dev/fuse --cap-add SYS_ADMIN, or a privileged "
			  "pod)", ERRSTR(err));
	else
		log_error("cannot open /dev/fuse: %s", ERRSTR(err));
	return EXIT_FAIL;
}

/*
 * Where a daemonized mount logs: -o log=FILE, else syslog if it runs
 * (/dev/log), else a file per mount point under the cache directory.
 * Opens the file into *fdp (-1: syslog) and says where messages will go.
 * 0 or EXIT_FAIL (reported).
 */
static int open_log(const char *log, const char *cache_dir,
		    const char *real_mnt, int *fdp)
{
	struct stat st;
	char *path = NULL, *def = NULL, *p;
	const char *c;
	int fd;

	*fdp = -1;
	if (log == NULL && stat("/dev/log", &st) == 0 && S_ISSOCK(st.st_mode))
		return 0;
	if (log == NULL) {
		char name[PATH_MAX];
		size_t n = 0;

		/* /mnt/a b -> mount-mnt-a%20b.log */
		for (c = real_mnt + 1; *c && n + 4 < sizeof(name); c++) {
			if (*c == '/')
				name[n++] = '-';
			else if ((*c >= 'a' && *c <= 'z') ||
				 (*c >= 'A' && *c <= 'Z') ||
				 (*c >= '0' && *c <= '9') || *c == '.' ||
				 *c == '_' || *c == '-')
				name[n++] = *c;
			else
				n += (size_t)snprintf(name + n, 4, "%%%02X",
						      (unsigned char)*c);
		}
		name[n] = '\0';
		if (cache_dir == NULL)
			cache_dir = def = index_default_cache_dir();
		if (cache_dir == NULL ||
		    asprintf(&path, "%s/mount-%s.log", cache_dir,
			     n ? name : "root") < 0) {
			free(def);
			log_error("out of memory");
			return EXIT_FAIL;
		}
		free(def);
		/* mkdir -p of the cache directory, 0700 */
		for (p = path + 1; (p = strchr(p, '/')) != NULL; p++) {
			*p = '\0';
			if (mkdir(path, 0700) != 0 && errno != EEXIST) {
				log_error("cannot create %s for the log: %s; "
					  "name a file with -o log=FILE",
					  path, ERRSTR(errno));
				free(path);
				return EXIT_FAIL;
			}
			*p = '/';
		}
		log = path;
	}
	fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY,
		  0600);
	if (fd < 0) {
		log_error("cannot open log file %s: %s", log, ERRSTR(errno));
		free(path);
		return EXIT_FAIL;
	}
	log_info("messages go to %s once in the background%s", log,
		 path != NULL ? " (no syslog: /dev/log is missing)" : "");
	free(path);
	*fdp = fd;
	return 0;
}

/* "--repo X" becomes "-r X", which fuse_opt can take with its value
 * apart or attached; what follows "-o" or "--" is left alone.  0, or
 * EXIT_USAGE (reported) for a --repo without a value. */
static int rewrite_long_repo(int argc, char *argv[])
{
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "-o") == 0) {
			i++;
		} else if (strcmp(argv[i], "--repo") == 0) {
			if (i + 1 == argc)
				return usage_error("--repo needs a value");
			argv[i] = "-r";
		}
	}
	return 0;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct mount_opts o = { 0 };
	struct mount_conf conf = { .log_fd = -1 };
	char *fsname = NULL, *mount_opts = NULL;
	const char *mnt, *env;
	char real[PATH_MAX];
	int status;

	log_init(prog);
	/*
	 * Chunk buffers come and go at hundreds per second; served from the
	 * heap they reuse warm pages instead of faulting in fresh ones.
	 */
	mallopt(M_MMAP_THRESHOLD, 64 << 20);
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	status = EXIT_USAGE;
	if (rewrite_long_repo(argc, argv) != 0 ||
	    fuse_opt_parse(&args, &o, mount_fuse_opts, opt_proc) != 0)
		goto out;
	if (o.help) {
		usage();
		status = 0;
		goto out;
	}
	if (o.version) {
		printf("cbtfs %s (libfuse %s)\n", PACKAGE_VERSION,
		       fuse_pkgversion());
		status = 0;
		goto out;
	}
	log_set_verbose(o.verbose);
	env = getenv(REPO_ENV);
	if (o.repo != NULL && o.n_pos == 2) {
		usage_error("the repository is given twice: -r %s and %s",
			    o.repo, o.pos[0]);
		goto out;
	}
	if (o.repo == NULL && o.n_pos == 2) {
		o.repo = o.pos[0];
		o.pos[0] = NULL;
	} else if (o.repo == NULL && o.n_pos == 1 && env != NULL &&
		   env[0] != '\0') {
		o.repo = strdup(env);
		if (o.repo == NULL)
			goto out;
	}
	if (o.repo == NULL || o.n_pos == 0) {
		usage_error(o.n_pos == 0 ? "no MOUNTPOINT given"
			    : "no repository given (REPO MOUNTPOINT, "
			      "-r REPO or $" REPO_ENV ")");
		goto out;
	}
	mnt = o.pos[o.n_pos - 1];
	if ((status = check_values(&o, &conf)) != 0)
		goto out;
	status = EXIT_FAIL;
	/* libfuse's /dev/fd/N: a descriptor its caller already mounted */
	if (strncmp(mnt, "/dev/fd/", 8) == 0) {
		snprintf(real, sizeof(real), "%s", mnt);
	} else if (check_mountpoint(mnt, o.nonempty, real) != 0 ||
		   check_dev_fuse() != 0) {
		goto out;
	}
	/* the daemon runs in "/": relative paths must be made absolute */
	if (make_absolute(&o.cache_dir) != 0 ||
	    make_absolute(&o.metrics_file) != 0 ||
	    make_absolute(&o.log) != 0)
		goto out;
	if (!o.foreground &&
	    open_log(o.log, o.cache_dir, real, &conf.log_fd) != 0)
		goto out;
	conf.repo_url = o.repo;
	conf.cache_dir = o.cache_dir;
	conf.metrics_file = o.metrics_file;
	conf.direct_io = o.direct_io;
	conf.store.endpoint = o.endpoint;
	conf.store.region = o.region;
	conf.store.addressing = o.addressing;
	conf.store.ca_file = o.ca_file;
	conf.pass.file = o.password_file;
	conf.pass.file_opt = "-o password_file=FILE";

	/*
	 * Read-only, named after the repository in mount tables.  libfuse
	 * splits -o values at ',' unless escaped by '\\', and re-escapes what
	 * it passes on, so the escaped path stays one fsname: a path like
	 * "/x,allow_other" cannot add mount options.
	 */
	if (asprintf(&fsname, "fsname=cbtfs:%s", o.repo) < 0 ||
	    fuse_opt_add_opt_escaped(&mount_opts, fsname) != 0 ||
	    fuse_opt_add_opt(&mount_opts, "subtype=cbtfs,ro") != 0 ||
	    fuse_opt_add_arg(&args, "-o") != 0 ||
	    fuse_opt_add_arg(&args, mount_opts) != 0 ||
	    (o.single && fuse_opt_add_arg(&args, "-s") != 0) ||
	    fuse_opt_add_arg(&args, real) != 0)
		goto out;
	status = fuse_ops_main(&args, &conf);
	conf.log_fd = -1;	/* taken over */
out:
	if (conf.log_fd >= 0)
		close(conf.log_fd);
	free(fsname);
	free(mount_opts);
	free(o.repo);
	free(o.pos[0]);
	free(o.pos[1]);
	free(o.cache_dir);
	free(o.cache_size);
	free(o.refresh);
	free(o.readahead);
	free(o.jobs);
	free(o.timeout);
	free(o.retries);
	free(o.endpoint);
	free(o.region);
	free(o.addressing);
	free(o.ca_file);
	free(o.password_file);
	free(o.metrics_file);
	free(o.metrics_interval);
	free(o.log);
	fuse_opt_free_args(&args);
	return status;
}
