/*
 * cbtfs: mount a repository read-only; every snapshot is VOLUME/NAME.img.
 *
 * Options come as FUSE -o key=value (so an fstab line works); cbtfs's own
 * are taken out here, the rest go to libfuse.
 */
#include "config.h"

#define FUSE_USE_VERSION 35

#include <errno.h>
#include <malloc.h>
#include <fuse.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuse_ops.h"

static const char prog[] = "cbtfs";

struct mount_opts {
	char *repo;
	char *cache_dir;
	char *cache_size;
	unsigned refresh;
	unsigned readahead;
	unsigned jobs;
	unsigned timeout;
	int retries;
	char *endpoint;
	char *region;
	char *addressing;
	char *ca_file;
	char *password_file;
	char *metrics_file;
	unsigned metrics_interval;
	int direct_io;
	int help;
	int version;
	int verbose;
	int n_nonopt;
};

#define MOPT(t, p) { t, offsetof(struct mount_opts, p), 1 }
static const struct fuse_opt mount_fuse_opts[] = {
	{ "cache_dir=%s", offsetof(struct mount_opts, cache_dir), 0 },
	{ "cache_size=%s", offsetof(struct mount_opts, cache_size), 0 },
	{ "refresh=%u", offsetof(struct mount_opts, refresh), 0 },
	MOPT("direct_io", direct_io),
	{ "readahead=%u", offsetof(struct mount_opts, readahead), 0 },
	{ "jobs=%u", offsetof(struct mount_opts, jobs), 0 },
	{ "retries=%d", offsetof(struct mount_opts, retries), 0 },
	{ "timeout=%u", offsetof(struct mount_opts, timeout), 0 },
	{ "endpoint=%s", offsetof(struct mount_opts, endpoint), 0 },
	{ "region=%s", offsetof(struct mount_opts, region), 0 },
	{ "addressing=%s", offsetof(struct mount_opts, addressing), 0 },
	{ "ca_file=%s", offsetof(struct mount_opts, ca_file), 0 },
	{ "password_file=%s", offsetof(struct mount_opts, password_file), 0 },
	{ "metrics_file=%s", offsetof(struct mount_opts, metrics_file), 0 },
	{ "metrics_interval=%u", offsetof(struct mount_opts, metrics_interval),
	  0 },
	MOPT("-h", help),
	MOPT("--help", help),
	MOPT("-V", version),
	MOPT("--version", version),
	MOPT("-v", verbose),
	MOPT("--verbose", verbose),
	FUSE_OPT_END
};

static void usage(void)
{
	printf(
"Usage: cbtfs REPO MOUNTPOINT [-f] [-o OPTION[,OPTION...]]\n"
"\n"
"Mounts the cbtfs repository REPO (a directory, file:///path or\n"
"s3://BUCKET/PREFIX) read-only at MOUNTPOINT.  Every backed-up snapshot\n"
"appears as MOUNTPOINT/VOLUME/NAME.img, a raw disk image assembled on\n"
"read.  Restore with dd; browse a filesystem image with\n"
"'mount -o loop,ro'.  Snapshots added while mounted appear within\n"
"REFRESH seconds, or soon after a directory listing.  Unmount with\n"
"'fusermount3 -u MOUNTPOINT'.\n"
"\n"
"cbtfs options:\n"
"  -o cache_dir=DIR       where the local index lives\n"
"                         (default $XDG_CACHE_HOME/cbtfs or ~/.cache/cbtfs)\n"
"  -o cache_size=SIZE     memory for decoded chunks (default 256M)\n"
"  -o refresh=SECONDS     look for new snapshots this often (default 5;\n"
"                         0: only after directory listings and lookups\n"
"                         of missing names)\n"
"  -o readahead=N         on sequential reads, load the next N chunks in\n"
"                         the background (default 8; 0: off)\n"
"  -o direct_io           bypass the kernel page cache: every read reaches\n"
"                         cbtfs as the program made it\n"
"  -o metrics_file=FILE   write the metrics of MOUNTPOINT/.stats\n"
"                         (Prometheus text format) to FILE, replaced\n"
"                         atomically every METRICS_INTERVAL seconds and\n"
"                         at unmount\n"
"  -o metrics_interval=SECONDS\n"
"                         (default 10)\n"
"  -o jobs=N              S3 requests in flight at once (default 8)\n"
"  -o endpoint=URL        S3 endpoint (default $AWS_ENDPOINT_URL_S3,\n"
"                         $AWS_ENDPOINT_URL, or AWS itself)\n"
"  -o region=REGION       S3 signing region (default $AWS_REGION,\n"
"                         $AWS_DEFAULT_REGION, or us-east-1)\n"
"  -o addressing=path|virtual\n"
"                         bucket in the URL path or host name (default:\n"
"                         path for a custom endpoint, virtual for AWS)\n"
"  -o ca_file=FILE        PEM CAs to trust (default $AWS_CA_BUNDLE)\n"
"  -o retries=N           retries of a failed S3 request (default 6)\n"
"  -o timeout=SECONDS     an S3 request that cannot connect, or stalls,\n"
"                         this long is failed and retried (default 30)\n"
"                         S3 credentials: AWS_ACCESS_KEY_ID,\n"
"                         AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN\n"
"  -o password_file=FILE  passphrase of an encrypted repository: the\n"
"                         file's content but a trailing newline (default\n"
"                         $CBTFS_PASSWORD, or asked on a terminal); read\n"
"                         before mounting\n"
"  -f                     stay in the foreground, log to stderr\n"
"  -d                     FUSE debug output (implies -f)\n"
"  -s                     single-threaded\n"
"  -v, --verbose          more messages\n"
"  -h, --help             show this help and exit\n"
"  -V, --version          show the version and exit\n"
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

	if (key != FUSE_OPT_KEY_NONOPT)
		return 1;
	o->n_nonopt++;
	if (o->repo == NULL) {
		o->repo = strdup(arg);
		return 0;	/* not for FUSE */
	}
	return 1;		/* the mountpoint, for fuse_parse_cmdline() */
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct mount_opts o = { .refresh = 5, .readahead = 8, .jobs = 8,
				.retries = -1, .metrics_interval = 10 };
	struct mount_conf conf = { 0 };
	uint64_t cache_bytes = 256u << 20;
	char *fsname = NULL, *mount_opts = NULL;
	int status;

	log_init(prog);
	/*
	 * Chunk buffers come and go at hundreds per second; served from the
	 * heap they reuse warm pages instead of faulting in fresh ones.
	 */
	mallopt(M_MMAP_THRESHOLD, 64 << 20);
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	if (fuse_opt_parse(&args, &o, mount_fuse_opts, opt_proc) != 0)
		return 2;
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
	status = 2;
	if (o.n_nonopt != 2) {
		fprintf(stderr, "%s: expected REPO and MOUNTPOINT\n"
			"Try 'cbtfs --help' for more information.\n", prog);
		goto out;
	}
	if (o.cache_size != NULL &&
	    (parse_size(o.cache_size, &cache_bytes) != 0 ||
	     cache_bytes > SIZE_MAX)) {
		fprintf(stderr, "%s: cache_size: invalid size '%s'\n", prog,
			o.cache_size);
		goto out;
	}
	conf.repo_url = o.repo;
	/* the daemon runs in "/": relative paths must be made absolute */
	if (make_absolute(&o.cache_dir) != 0 ||
	    make_absolute(&o.metrics_file) != 0)
		goto out;
	conf.cache_dir = o.cache_dir;
	if (o.metrics_interval < 1 || o.metrics_interval > 86400) {
		fprintf(stderr, "%s: metrics_interval: 1 to 86400 seconds\n",
			prog);
		goto out;
	}
	conf.metrics_file = o.metrics_file;
	conf.metrics_seconds = o.metrics_interval;
	conf.cache_bytes = (size_t)cache_bytes;
	conf.refresh_seconds = o.refresh;
	conf.direct_io = o.direct_io;
	if (o.readahead > 64) {
		fprintf(stderr, "%s: readahead: at most 64 chunks\n", prog);
		goto out;
	}
	conf.readahead = o.readahead;
	if (o.jobs < 1 || o.jobs > 256 || o.retries > 100 || o.retries < -1 ||
	    o.timeout > 3600 ||
	    (o.addressing != NULL && strcmp(o.addressing, "path") != 0 &&
	     strcmp(o.addressing, "virtual") != 0)) {
		fprintf(stderr, "%s: jobs must be 1 to 256, retries at most "
			"100, timeout at most 3600, addressing 'path' or "
			"'virtual'\n", prog);
		goto out;
	}
	conf.store.connections = o.jobs;
	conf.store.retries = o.retries;
	conf.store.timeout = o.timeout;
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
	    fuse_opt_add_arg(&args, mount_opts) != 0)
		goto out;
	status = fuse_ops_main(&args, &conf);
out:
	free(fsname);
	free(mount_opts);
	free(o.repo);
	free(o.cache_dir);
	free(o.cache_size);
	free(o.endpoint);
	free(o.region);
	free(o.addressing);
	free(o.ca_file);
	free(o.password_file);
	free(o.metrics_file);
	fuse_opt_free_args(&args);
	return status;
}
