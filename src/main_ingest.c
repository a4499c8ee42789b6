/*
 * cbtfs-ingest: back up one snapshot of a volume into a repository.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cbt.h"
#include "cbt_grpc.h"
#include "cbt_k8s.h"
#include "cli.h"
#include "ingest.h"

static const char prog[] = "cbtfs-ingest";

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = 1;
}

static void usage(void)
{
	printf(
"Usage: cbtfs-ingest --repo REPO --volume VOLUME --snapshot NAME\n"
"                    --device PATH [--base NAME] [OPTIONS]\n"
"\n"
"Backs up snapshot NAME of VOLUME, whose full content is in PATH (a block\n"
"device or image file), into the repository REPO.  Without --base, every\n"
"non-zero chunk is stored; with --base, only chunks that differ from the\n"
"base snapshot.  The volume's capacity is the size of PATH.\n"
"\n"
"Options:\n"
"  -r, --repo REPO        repository: a directory, file:///path or\n"
"                         s3://BUCKET/PREFIX (default $CBTFS_REPOSITORY)\n"
"      --volume VOLUME    volume name, e.g. ns/pvc ('/' makes directories)\n"
"  -s, --snapshot NAME    name of the new snapshot (unique per volume);\n"
"                         VOLUME@NAME names the volume too\n"
"  -d, --device PATH      block device or image file with the snapshot\n"
"  -b, --base NAME        earlier snapshot of VOLUME to take unchanged\n"
"                         chunks from; 'latest': the volume's newest\n"
"                         (none yet: a full backup)\n"
"  -c, --changes SOURCE   how changed blocks are found:\n"
"                           scan          read the whole device and\n"
"                                         compare with the base (default)\n"
"                           ranges:FILE   read only the byte ranges listed\n"
"                                         in FILE ('OFFSET LENGTH' lines,\n"
"                                         sorted, non-overlapping); other\n"
"                                         chunks come from the base, or\n"
"                                         are zero without one\n"
"                           csi           ask the CSI driver's\n"
"                                         SnapshotMetadata service\n"
"                           sidecar       ask the Kubernetes snapshot-\n"
"                                         metadata sidecar\n"
"                           k8s           find the sidecar, the token and\n"
"                                         the CSI handles in the cluster\n"
"  -j, --jobs N           chunks processed in parallel, and S3 uploads in\n"
"                         flight (default: CPUs for a directory, 8 for S3)\n"
"      --cache-dir DIR    where the local index lives\n"
"                         (default $XDG_CACHE_HOME/cbtfs or ~/.cache/cbtfs)\n"
"      --password-file FILE  passphrase of an encrypted repository: the\n"
"                         file's content but a trailing newline (default\n"
"                         $CBTFS_PASSWORD, or asked on a terminal)\n"
"      --json             print the summary as JSON on stdout\n"
"      --metrics-file FILE  write Prometheus text-format metrics of the\n"
"                         run to FILE at its end, also when it fails\n"
"                         (replaced atomically; for node_exporter's\n"
"                         textfile collector)\n"
"      --no-progress      no progress line, even on a terminal\n"
"  -v, --verbose          more messages\n"
"  -h, --help             show this help and exit\n"
"  -V, --version          show the version and exit\n"
"\n"
"Changed Block Tracking (--changes csi or sidecar): without --base, the\n"
"service lists the allocated blocks; with --base, those changed since the\n"
"base, whose CSI snapshot handle the repository recorded.  Only chunks\n"
"these touch are read from --device.\n"
"      --csi-endpoint TARGET  csi: the driver's gRPC socket,\n"
"                         unix:///path/csi.sock or HOST:PORT\n"
"      --cbt-address HOST:PORT  sidecar: its gRPC address (always TLS)\n"
"      --snapshot-id HANDLE   the snapshot's CSI handle: required for\n"
"                         csi; recorded for the next delta\n"
"      --base-snapshot-id HANDLE  the base's CSI handle, instead of the\n"
"                         one recorded with --base\n"
"      --namespace NS     sidecar: namespace of the VolumeSnapshot named\n"
"                         by --snapshot\n"
"      --token-file FILE  sidecar: ServiceAccount token for the audience\n"
"                         of the SnapshotMetadataService\n"
"      --ca-file FILE     PEM CAs for the service's certificate (csi: TLS\n"
"                         only when given); also used for S3\n"
"      --tls-server-name NAME  name the service's certificate must carry,\n"
"                         when the address differs (port-forward)\n"
"      --max-results N    ranges per message (default 0: the server's)\n"
"      --no-fallback      fail, instead of making a full backup, when\n"
"                         the service cannot give the changes since --base\n"
"      --cbt-timeout SECONDS  longest wait for the next message of a\n"
"                         stream (default 60)\n"
"      --cbt-retries N    re-requests of a broken stream that make no\n"
"                         progress, before giving up (default 5)\n"
"\n"
"Kubernetes (--changes k8s): --snapshot and --base name VolumeSnapshots in\n"
"--namespace (default: the context's or the pod's); the driver, the\n"
"handles, the SnapshotMetadataService and a token come from the API\n"
"(in a pod, or $KUBECONFIG / ~/.kube/config).  --cbt-address and\n"
"--tls-server-name override the service's address (port-forward).\n"
"      --kubeconfig FILE  Kubernetes client configuration\n"
"      --service-account [NS/]NAME  ServiceAccount to request the token\n"
"                         for (default: the one of the credentials)\n"
"\n"
CLI_STORE_HELP
"\n"
"Exit status: 0 on success, 1 on failure, 2 on a usage error.\n"
"See cbtfs-ingest(1).\n");
}

enum {
	OPT_CACHE_DIR = 256, OPT_JSON, OPT_NO_PROGRESS, OPT_VOLUME,
	OPT_CSI_ENDPOINT, OPT_CBT_ADDRESS, OPT_SNAPSHOT_ID,
	OPT_BASE_SNAPSHOT_ID, OPT_NAMESPACE, OPT_TOKEN_FILE,
	OPT_TLS_SERVER_NAME, OPT_MAX_RESULTS, OPT_NO_FALLBACK,
	OPT_CBT_TIMEOUT, OPT_CBT_RETRIES, OPT_KUBECONFIG, OPT_SERVICE_ACCOUNT,
	OPT_PASSWORD_FILE, OPT_METRICS_FILE,
};

static const struct option long_opts[] = {
	{ "volume", required_argument, NULL, OPT_VOLUME },
	{ "snapshot", required_argument, NULL, 's' },
	{ "device", required_argument, NULL, 'd' },
	{ "base", required_argument, NULL, 'b' },
	{ "changes", required_argument, NULL, 'c' },
	{ "jobs", required_argument, NULL, 'j' },
	{ "cache-dir", required_argument, NULL, OPT_CACHE_DIR },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "no-progress", no_argument, NULL, OPT_NO_PROGRESS },
	{ "csi-endpoint", required_argument, NULL, OPT_CSI_ENDPOINT },
	{ "cbt-address", required_argument, NULL, OPT_CBT_ADDRESS },
	{ "snapshot-id", required_argument, NULL, OPT_SNAPSHOT_ID },
	{ "base-snapshot-id", required_argument, NULL, OPT_BASE_SNAPSHOT_ID },
	{ "namespace", required_argument, NULL, OPT_NAMESPACE },
	{ "token-file", required_argument, NULL, OPT_TOKEN_FILE },
	{ "tls-server-name", required_argument, NULL, OPT_TLS_SERVER_NAME },
	{ "max-results", required_argument, NULL, OPT_MAX_RESULTS },
	{ "no-fallback", no_argument, NULL, OPT_NO_FALLBACK },
	{ "cbt-timeout", required_argument, NULL, OPT_CBT_TIMEOUT },
	{ "cbt-retries", required_argument, NULL, OPT_CBT_RETRIES },
	{ "kubeconfig", required_argument, NULL, OPT_KUBECONFIG },
	{ "service-account", required_argument, NULL, OPT_SERVICE_ACCOUNT },
	{ "password-file", required_argument, NULL, OPT_PASSWORD_FILE },
	{ "metrics-file", required_argument, NULL, OPT_METRICS_FILE },
	CLI_STORE_LONG_OPTS,
	CLI_COMMON_LONG_OPTS,
	{ NULL, 0, NULL, 0 }
};

static void print_summary(const struct ingest_conf *conf,
			  const struct ingest_result *res, bool json)
{
	const struct manifest_stats *s = &res->stats;
	double mbps = res->seconds > 0 ? s->bytes_read / res->seconds / 1e6
				       : 0.0;

	if (json) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "already_committed",
				       json_object_new_boolean(
					       res->already_committed));
		json_object_object_add(o, "chunks_healed",
				       json_object_new_int64(
					       (int64_t)res->chunks_healed));
		json_object_object_add(o, "chunks_found",
				       json_object_new_int64(
					       (int64_t)res->chunks_found));

		json_object_object_add(o, "volume",
				       json_object_new_string(conf->volume));
		json_object_object_add(o, "snapshot",
				       json_object_new_string(conf->name));
		json_object_object_add(o, "id",
				       json_object_new_string(res->id));
		json_object_object_add(o, "parent", cli_json_text(res->base));
		json_object_object_add(o, "full_fallback",
				       json_object_new_boolean(
					       res->full_fallback));
		json_object_object_add(o, "changes", json_object_new_string(
						conf->changes->ops->name));
		json_object_object_add(
			o, "capacity",
			json_object_new_int64((int64_t)res->capacity));
		json_object_object_add(
			o, "chunk_size",
			json_object_new_int64(
				(int64_t)conf->repo->chunk_size));
		json_object_object_add(o, "chunks_total",
				       json_object_new_int64(
					       (int64_t)res->chunks_total));
		cli_json_stats(o, s);
		json_object_object_add(o, "manifest_bytes",
				       json_object_new_int64(
					       (int64_t)res->manifest_bytes));
		json_object_object_add(o, "seconds",
				       cli_json_seconds(res->seconds));
		json_object_object_add(o, "requests",
				       json_object_new_int64(
					       (int64_t)res->store.requests));
		json_object_object_add(o, "retries",
				       json_object_new_int64(
					       (int64_t)res->store.retries));
		cli_print_json(o);
		return;
	}
	if (res->already_committed) {
		printf("%s/%s: already committed by an earlier run (id %s); "
		       "nothing to do\n", conf->volume, conf->name, res->id);
		return;
	}
	printf("%s/%s: read %s in %.1f s (%.1f MB/s); chunks: %" PRIu64
	       " read, %" PRIu64 " changed (%" PRIu64 " new, %" PRIu64
	       " reused), %" PRIu64 " zero; stored %s (and a %s manifest)",
	       conf->volume, conf->name, HUMAN(s->bytes_read), res->seconds,
	       mbps, s->chunks_read, s->chunks_changed, s->chunks_new,
	       s->chunks_reused, s->chunks_zero, HUMAN(s->bytes_stored),
	       HUMAN(res->manifest_bytes));
	if (res->chunks_found > 0)
		printf("; %" PRIu64 " found stored by an earlier run",
		       res->chunks_found);
	if (res->chunks_healed > 0)
		printf("; %" PRIu64 " damaged stored again",
		       res->chunks_healed);
	if (res->store.requests > 0)
		printf("; %" PRIu64 " requests, %" PRIu64 " retries",
		       res->store.requests, res->store.retries);
	printf("\n");
}

/*
 * Metrics: the Prometheus text exposition format (version 0.0.4), one
 * family per row of METRICS, each sample labelled with the volume.  The
 * file is replaced atomically (a temporary file in the same directory,
 * then rename), so a collector never reads half of it.
 */
struct run {
	const struct ingest_conf *conf;
	const struct ingest_result *res;
	bool ok;
	double last_success;	/* Unix seconds; 0: none known */
};

/*
 * name, type, help, kind label ("" for none), value.  The rows are metric
 * families, not MANIFEST_STATS expanded: three statistics are one family
 * with a kind label, bytes_uploaded_total adds the manifest, and the names
 * are the exporter's.  The assertion below stops the build when a
 * statistic is added, so that it gets a row here and a place in
 * print_summary()'s sentence.
 */
#define X(field, json) + 1
_Static_assert(0 MANIFEST_STATS(X) == 7,
	       "MANIFEST_STATS changed: add it to METRICS and the summary");
#undef X

/* name, type, help, kind label ("" for none), value */
#define METRICS(X)                                                          \
	X("bytes_read_total", "counter",                                   \
	  "Bytes read from the device.", "",                                \
	  r->res->stats.bytes_read)                                         \
	X("chunks_read_total", "counter",                                  \
	  "Chunks read from the device.", "",                               \
	  r->res->stats.chunks_read)                                        \
	X("chunks_changed_total", "counter",                               \
	  "Chunks that differ from the base (entries of the manifest).",   \
	  "", r->res->stats.chunks_changed)                                 \
	X("chunks_total", "counter",                                       \
	  "Chunks by outcome: uploaded (new), already in the repository "  \
	  "(reused), all zero (zero).", "new", r->res->stats.chunks_new)    \
	X("chunks_total", "counter", NULL, "reused",                       \
	  r->res->stats.chunks_reused)                                      \
	X("chunks_total", "counter", NULL, "zero",                         \
	  r->res->stats.chunks_zero)                                        \
	X("bytes_uploaded_total", "counter",                               \
	  "Bytes stored in the repository: chunks and the manifest, as "   \
	  "stored (compressed, encrypted).", "",                            \
	  r->res->stats.bytes_stored + r->res->manifest_bytes)              \
	X("requests_total", "counter",                                     \
	  "Requests to the object store (0 for a directory).", "",          \
	  r->res->store.requests)                                           \
	X("retries_total", "counter",                                      \
	  "Requests to the object store that were tried again.", "",       \
	  r->res->store.retries)                                            \
	X("capacity_bytes", "gauge", "Capacity of the volume.", "",        \
	  r->res->capacity)                                                 \
	X("duration_seconds", "gauge",                                     \
	  "How long the ingest ran.", "", r->res->seconds)                  \
	X("success", "gauge",                                              \
	  "1 if the ingest committed its snapshot, else 0.", "",            \
	  r->ok ? 1 : 0)                                                    \
	X("last_run_timestamp_seconds", "gauge",                           \
	  "When the ingest ended (Unix time).", "", (double)time(NULL))     \
	X("last_success_timestamp_seconds", "gauge",                       \
	  "When an ingest of the volume last succeeded (Unix time), as "   \
	  "far as this file tells.", "", r->last_success)

/* Writes s as a label value: backslash, quote and newline escaped. */
static void put_label_value(FILE *f, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '\\' || *s == '"')
			fputc('\\', f);
		if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void put_sample(FILE *f, const struct run *r, const char *name,
		       const char *type, const char *help, const char *kind,
		       double v)
{
	if (help != NULL)
		fprintf(f, "# HELP cbtfs_ingest_%s %s\n# TYPE cbtfs_ingest_%s "
			"%s\n", name, help, name, type);
	fprintf(f, "cbtfs_ingest_%s{volume=\"", name);
	put_label_value(f, r->conf->volume);
	if (kind[0] != '\0')
		fprintf(f, "\",kind=\"%s", kind);
	fprintf(f, "\"} %.17g\n", v);
}

/*
 * The last success an earlier run recorded in path, so that a failed run
 * keeps it (alerts are on its age); 0 if none.
 */
static double previous_success(const char *path)
{
	static const char key[] =
		"cbtfs_ingest_last_success_timestamp_seconds{";
	char line[1024], *v;
	double t = 0;
	FILE *f = fopen(path, "re");

	while (f != NULL && fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, key, sizeof(key) - 1) == 0 &&
		    (v = strrchr(line, ' ')) != NULL)
			t = strtod(v + 1, NULL);
	if (f != NULL)
		fclose(f);
	return t;
}

/* Whether the directory of path can take a new file. */
static bool dir_writable(const char *path)
{
	char copy[PATH_MAX];

	snprintf(copy, sizeof(copy), "%s", path);
	return access(dirname(copy), W_OK | X_OK) == 0;
}

/* Writes the metrics of run r to path, atomically.  0 or an errno
 * (logged). */
static int write_metrics(const char *path, struct run *r)
{
	char tmp[PATH_MAX];
	FILE *f;
	int fd, err = 0;

	r->last_success = r->ok ? (double)time(NULL) : previous_success(path);
	if (snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >=
	    (int)sizeof(tmp)) {
		log_error("metrics file %s: name too long", path);
		return ENAMETOOLONG;
	}
	fd = mkstemp(tmp);
	if (fd < 0 || fchmod(fd, 0644) != 0 ||
	    (f = fdopen(fd, "w")) == NULL) {
		err = errno;
		log_error("metrics file %s: cannot create %s: %s", path, tmp,
			  ERRSTR(err));
		if (fd >= 0) {
			close(fd);
			unlink(tmp);
		}
		return err;
	}
#define X(name, type, help, kind, value)                                    \
	put_sample(f, r, name, type, help, kind, (double)(value));
	METRICS(X)
#undef X
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		err = errno;
	if (fclose(f) != 0 && err == 0)
		err = errno;
	if (err == 0 && rename(tmp, path) != 0)
		err = errno;
	if (err != 0) {
		log_error("metrics file %s: cannot write: %s", path,
			  ERRSTR(err));
		unlink(tmp);
	}
	return err;
}

/* Everything the command line says. */
struct options {
	struct ingest_conf conf;
	struct store_opts store;
	struct cbt_grpc_conf grpc;
	struct cbt_k8s_conf k8s;
	struct passphrase_src pass;
	const char *repo_url, *changes, *cache_dir, *metrics_file;
	const char *csi_endpoint, *cbt_address;
	bool jobs_set, json, progress;
	int verbose;
	char volume_buf[520];	/* of --snapshot VOLUME@NAME */
};

/* Parses argv into o: -1 to go on, else the exit status (--help, errors,
 * reported). */
static int parse_options(int argc, char *argv[], struct options *o)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN), n;
	const char *env, *at;
	int c;

	o->store.retries = -1;
	o->grpc.idle_timeout_s = 60;
	o->grpc.retries = 5;
	o->changes = "scan";
	o->progress = isatty(STDERR_FILENO);
	o->conf.jobs = ncpu > 0 ? (unsigned)ncpu : 2;
	while ((c = getopt_long(argc, argv, "r:s:d:b:c:j:vhV", long_opts,
				NULL)) != -1) {
		switch (c) {
		case 'r':
			o->repo_url = optarg;
			break;
		case OPT_VOLUME:
			o->conf.volume = optarg;
			break;
		case 's':
			o->conf.name = optarg;
			break;
		case 'd':
			o->conf.device = optarg;
			break;
		case 'b':
			o->conf.base = optarg;
			break;
		case 'c':
			o->changes = optarg;
			break;
		case 'j':
			if (cli_number(prog, "--jobs", optarg, 1, 256, &n) !=
			    0)
				return EXIT_USAGE;
			o->conf.jobs = (unsigned)n;
			o->jobs_set = true;
			break;
		case OPT_CACHE_DIR:
			o->cache_dir = optarg;
			break;
		case OPT_PASSWORD_FILE:
			o->pass.file = optarg;
			break;
		case OPT_METRICS_FILE:
			o->metrics_file = optarg;
			break;
		case OPT_CSI_ENDPOINT:
			o->csi_endpoint = optarg;
			break;
		case OPT_CBT_ADDRESS:
			o->cbt_address = optarg;
			break;
		case OPT_SNAPSHOT_ID:
			o->grpc.snapshot_id = optarg;
			break;
		case OPT_BASE_SNAPSHOT_ID:
			o->grpc.base_snapshot_id = optarg;
			break;
		case OPT_NAMESPACE:
			o->grpc.namespace = optarg;
			break;
		case OPT_TOKEN_FILE:
			o->grpc.token_file = optarg;
			break;
		case OPT_TLS_SERVER_NAME:
			o->grpc.server_name = optarg;
			break;
		case OPT_NO_FALLBACK:
			o->grpc.no_fallback = true;
			break;
		case OPT_KUBECONFIG:
			o->k8s.kubeconfig = optarg;
			break;
		case OPT_SERVICE_ACCOUNT:
			o->k8s.service_account = optarg;
			break;
		case OPT_MAX_RESULTS:
			if (cli_number(prog, "--max-results", optarg, 0,
				       100000, &n) != 0)
				return EXIT_USAGE;
			o->grpc.max_results = (int)n;
			break;
		case OPT_CBT_TIMEOUT:
			if (cli_number(prog, "--cbt-timeout", optarg, 1, 3600,
				       &n) != 0)
				return EXIT_USAGE;
			o->grpc.idle_timeout_s = (int)n;
			break;
		case OPT_CBT_RETRIES:
			if (cli_number(prog, "--cbt-retries", optarg, 0, 3600,
				       &n) != 0)
				return EXIT_USAGE;
			o->grpc.retries = (int)n;
			break;
		case OPT_JSON:
			o->json = true;
			break;
		case OPT_NO_PROGRESS:
			o->progress = false;
			break;
		case 'v':
			o->verbose++;
			break;
		case 'h':
			usage();
			return EXIT_OK;
		case 'V':
			cli_version(prog);
			return EXIT_OK;
		default:
			if (cli_store_option(prog, c, optarg, &o->store) != 0)
				return EXIT_USAGE;
		}
	}
	if (optind < argc)
		return cli_usage_error(prog, "unexpected argument '%s'",
				       argv[optind]);
	if (o->repo_url == NULL && (env = getenv(REPO_ENV)) != NULL &&
	    env[0] != '\0')
		o->repo_url = env;
	/* --snapshot VOLUME@NAME, without --volume */
	if (o->conf.volume == NULL && o->conf.name != NULL &&
	    (at = strrchr(o->conf.name, '@')) != NULL &&
	    (size_t)(at - o->conf.name) < sizeof(o->volume_buf)) {
		snprintf(o->volume_buf, sizeof(o->volume_buf), "%.*s",
			 (int)(at - o->conf.name), o->conf.name);
		o->conf.volume = o->volume_buf;
		o->conf.name = at + 1;
	}
	if (o->repo_url == NULL || o->conf.volume == NULL ||
	    o->conf.name == NULL || o->conf.device == NULL)
		return cli_usage_error(prog, "--repo (or $%s), --volume (or "
				       "--snapshot VOLUME@NAME), --snapshot "
				       "and --device are required", REPO_ENV);
	if (o->conf.base != NULL && strcmp(o->conf.base, o->conf.name) == 0)
		return cli_usage_error(prog, "--base must name an earlier "
				       "snapshot, not the new one");
	if (repo_check_volume_name(o->conf.volume) != 0 ||
	    repo_check_snapshot_name(o->conf.name) != 0 ||
	    (o->conf.base != NULL &&
	     repo_check_snapshot_name(o->conf.base) != 0))
		return EXIT_USAGE;
	if (o->metrics_file != NULL && !dir_writable(o->metrics_file))
		return cli_usage_error(prog, "--metrics-file %s: its "
				       "directory does not exist or is not "
				       "writable", o->metrics_file);
	/* uploads wait on the network, not the CPU: keep more in flight */
	if (!o->jobs_set && strncmp(o->repo_url, "s3://", 5) == 0)
		o->conf.jobs = 8;
	o->store.connections = o->conf.jobs;
	o->conf.progress = o->progress;
	return -1;
}

/* Makes the change source --changes names into o->conf.changes: -1 to go
 * on, else the exit status (reported). */
static int make_change_source(struct options *o)
{
	struct cbt_grpc_conf *g = &o->grpc;
	int err;

	g->snapshot_name = o->conf.name;
	g->verbose = o->verbose > 1;
	if (strcmp(o->changes, "csi") == 0 ||
	    strcmp(o->changes, "sidecar") == 0) {
		bool csi = strcmp(o->changes, "csi") == 0;

		g->api = csi ? CBT_API_CSI : CBT_API_SIDECAR;
		g->target = csi ? o->csi_endpoint : o->cbt_address;
		g->tls = !csi || o->store.ca_file != NULL;
		g->ca_file = o->store.ca_file;
		o->conf.changes = cbt_grpc_create(g, &err);
		o->conf.csi_handle = g->snapshot_id;
	} else if (strcmp(o->changes, "k8s") == 0) {
		if (o->csi_endpoint || g->snapshot_id || g->token_file)
			return cli_usage_error(
				prog, "--changes k8s finds the "
				      "address, handles and token "
				      "itself: no --csi-endpoint, "
				      "--snapshot-id or --token-file");
		o->k8s.sidecar = *g;
		o->k8s.sidecar.target = o->cbt_address;
		o->conf.changes = cbt_k8s_create(&o->k8s, &err);
	} else if (o->k8s.kubeconfig || o->k8s.service_account) {
		return cli_usage_error(prog,
				       "--kubeconfig and --service-account "
				       "need --changes k8s");
	} else if (o->csi_endpoint || o->cbt_address || g->snapshot_id ||
		   g->base_snapshot_id || g->namespace || g->token_file) {
		return cli_usage_error(prog, "--csi-endpoint, --cbt-address, "
				       "--snapshot-id, --base-snapshot-id, "
				       "--namespace and --token-file need "
				       "--changes csi, sidecar or k8s");
	} else {
		o->conf.changes = cbt_source_create(o->changes, &err);
	}
	return o->conf.changes == NULL ? EXIT_USAGE : -1;
}

int main(int argc, char *argv[])
{
	struct options o = { 0 };
	struct ingest_result res;
	struct sigaction sa = { .sa_handler = on_signal };
	double start;
	int status, err;

	log_init(prog);
	if ((status = parse_options(argc, argv, &o)) >= 0)
		return status;
	log_set_verbose(o.verbose);
	if ((status = make_change_source(&o)) >= 0)
		return status;
	/* Ctrl-C or a Job's deadline: stop, commit nothing, unlock */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	o.conf.interrupted = &interrupted;

	memset(&res, 0, sizeof(res));
	start = now_seconds();
	err = cli_open_repo(o.repo_url, &o.store, &o.pass, o.cache_dir,
			    &o.conf.repo, &o.conf.index);
	if (err == 0) {
		err = ingest_run(&o.conf, &res);
		if (err == 0)
			print_summary(&o.conf, &res, o.json);
		index_close(o.conf.index);
		repo_close(o.conf.repo);
	}
	res.seconds = now_seconds() - start;
	if (o.metrics_file != NULL) {
		struct run r = { .conf = &o.conf, .res = &res,
				 .ok = err == 0 };

		/* a run that committed but could not say so has failed */
		if (write_metrics(o.metrics_file, &r) != 0)
			err = EIO;
	}
	cbt_source_destroy(o.conf.changes);
	return err == 0 ? EXIT_OK : EXIT_FAIL;
}
