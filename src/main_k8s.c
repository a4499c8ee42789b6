/*
 * cbtfs-k8s: backups of many block PVCs, and restores into PVCs, through
 * the Kubernetes API (in a pod: its service account; elsewhere: a
 * kubeconfig).  The work is in k8s_backup.c; this is options and wiring.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "k8s.h"
#include "k8s_backup.h"
#include "util.h"

static const char prog[] = "cbtfs-k8s";

enum {
	OPT_PVC = 256,
	OPT_SNAPSHOT_CLASS,
	OPT_STORAGE_CLASS,
	OPT_IMAGE,
	OPT_PULL_POLICY,
	OPT_SERVICE_ACCOUNT,
	OPT_S3_SECRET,
	OPT_KUBECONFIG,
	OPT_TIMEOUT,
	OPT_SNAPSHOT_TIMEOUT,
	OPT_KEEP_SNAPSHOTS,
	OPT_JSON,
	OPT_TO_PVC,
	OPT_SIZE,
	OPT_EXISTING,
};

static const struct option long_opts[] = {
	{ "pvc", required_argument, NULL, OPT_PVC },
	{ "selector", required_argument, NULL, 'l' },
	{ "namespace", required_argument, NULL, 'n' },
	{ "all-namespaces", no_argument, NULL, 'A' },
	{ "snapshot-class", required_argument, NULL, OPT_SNAPSHOT_CLASS },
	{ "storage-class", required_argument, NULL, OPT_STORAGE_CLASS },
	{ "image", required_argument, NULL, OPT_IMAGE },
	{ "pull-policy", required_argument, NULL, OPT_PULL_POLICY },
	{ "service-account", required_argument, NULL, OPT_SERVICE_ACCOUNT },
	{ "s3-secret", required_argument, NULL, OPT_S3_SECRET },
	{ "kubeconfig", required_argument, NULL, OPT_KUBECONFIG },
	{ "parallel", required_argument, NULL, 'p' },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "snapshot-timeout", required_argument, NULL, OPT_SNAPSHOT_TIMEOUT },
	{ "keep-snapshots", required_argument, NULL, OPT_KEEP_SNAPSHOTS },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "to-pvc", required_argument, NULL, OPT_TO_PVC },
	{ "size", required_argument, NULL, OPT_SIZE },
	{ "existing", no_argument, NULL, OPT_EXISTING },
	CLI_COMMON_LONG_OPTS,
	{ NULL, 0, NULL, 0 }
};

static void usage(FILE *f)
{
	fprintf(f,
"Usage: %s backup -r REPO (--pvc NS/NAME... | -l SELECTOR [-n NS | -A])\n"
"       %s restore -r REPO VOLUME@SNAPSHOT --to-pvc NS/NAME\n"
"       %s list -r REPO [--json]\n"
"\n"
"backup: snapshots each block PVC (VolumeSnapshot), restores the snapshot\n"
"into a temporary PVC and backs it up with a Job running cbtfs-ingest\n"
"--changes k8s, based on the volume's newest backup in REPO; then deletes\n"
"the Job and the PVC and keeps the newest VolumeSnapshots.  What an\n"
"interrupted run left is deleted by the next.\n"
"restore: writes a backup into a new block PVC (or an existing one with\n"
"--existing) with a Job running cbtfs-repo restore --verify.\n"
"list: what REPO holds (cbtfs-repo snapshots).\n"
"\n"
"  -r, --repo REPO        the repository, as the pods reach it (default\n"
"                         $CBTFS_REPOSITORY); it must exist\n"
"                         (cbtfs-repo init)\n"
"      --pvc NS/NAME      a PVC to back up (repeatable)\n"
"  -l, --selector LABELS  the PVCs with these labels (k=v,k!=v,k)\n"
"  -n, --namespace NS     where --selector looks (default: the context's,\n"
"                         or the pod's)\n"
"  -A, --all-namespaces   --selector looks in every namespace\n"
"      --snapshot-class C VolumeSnapshotClass (default: the driver's\n"
"                         default class)\n"
"      --storage-class C  class of the temporary and the restored PVCs\n"
"                         (default: the source's; the cluster's default)\n"
"      --image IMAGE      image of the Jobs (default $CBTFS_IMAGE)\n"
"      --pull-policy P    Always, IfNotPresent or Never\n"
"      --service-account SA  of the backup Jobs, in each PVC's namespace\n"
"                         (default cbtfs-backup)\n"
"      --s3-secret NAME   Secret whose keys the Jobs get as environment\n"
"                         (default cbtfs-s3, optional; \"\" for none)\n"
"      --kubeconfig FILE  (default $KUBECONFIG, in-cluster, ~/.kube/config)\n"
"  -p, --parallel N       PVCs at once (default 2)\n"
"      --timeout SECONDS  limit of each Job (default 3600)\n"
"      --snapshot-timeout SECONDS  limit of the wait for a VolumeSnapshot\n"
"                         (default 600)\n"
"      --keep-snapshots N VolumeSnapshots kept per PVC (default 1: the\n"
"                         base of the next delta)\n"
"      --to-pvc NS/NAME   restore: the target PVC\n"
"      --size SIZE        restore: its size (default the snapshot's)\n"
"      --existing         restore: into an existing block PVC, all of\n"
"                         whose content is replaced\n"
"      --json             a JSON report on stdout\n"
"  -v, --verbose          say what is done\n"
"  -h, --help             this help\n"
"  -V, --version          the version\n"
"\n"
"Exit status: 0 all succeeded, 1 one failed or was interrupted, 2 usage.\n",
		prog, prog, prog);
}

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* cbtfs-repo: next to this program, else from $PATH. */
static char *repo_tool(void)
{
	char self[PATH_MAX], *slash, *p = NULL;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n > 0) {
		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash != NULL) {
			*slash = '\0';
			if (asprintf(&p, "%s/cbtfs-repo", self) >= 0 &&
			    access(p, X_OK) == 0)
				return p;
			free(p);
		}
	}
	return strdup("cbtfs-repo");
}

static bool ns_name(const char *s)
{
	const char *slash = strchr(s, '/');

	return slash && slash != s && slash[1] && !strchr(slash + 1, '/');
}

/* The report for people: one line a PVC, then the counts; puts it. */
static void print_report(struct json_object *r)
{
	struct json_object *pvcs = k8s_field(r, "pvcs");
	size_t i;

	for (i = 0; json_object_is_type(pvcs, json_type_array) &&
		    i < json_object_array_length(pvcs); i++) {
		struct json_object *p = json_object_array_get_idx(pvcs, i);
		const char *vol = k8s_string(p, "volume");

		if (k8s_string(p, "skipped") != NULL)
			printf("%s: skipped: %s\n", vol,
			       k8s_string(p, "skipped"));
		else if (!json_object_get_boolean(k8s_field(p, "ok")))
			printf("%s: FAILED: %s\n", vol,
			       k8s_string(p, "error") ?: "?");
		else
			printf("%s: backed up as %s (%s%s), %" PRId64
			       " chunks read\n",
			       vol, k8s_string(p, "snapshot"),
			       k8s_string(p, "parent") ? "a delta on "
							: "full",
			       k8s_string(p, "parent") ?: "",
			       json_object_get_int64(
				       k8s_field(p, "ingest.chunks_read")));
	}
	if (pvcs != NULL)
		printf("%d backed up, %d failed, %d skipped%s\n",
		       json_object_get_int(k8s_field(r, "succeeded")),
		       json_object_get_int(k8s_field(r, "failed")),
		       json_object_get_int(k8s_field(r, "skipped")),
		       json_object_get_boolean(k8s_field(r, "interrupted"))
			       ? " (interrupted)"
			       : "");
	else if (json_object_get_boolean(k8s_field(r, "ok")))
		printf("restored %s@%s into PVC %s, verified\n",
		       k8s_string(r, "volume"), k8s_string(r, "snapshot"),
		       k8s_string(r, "pvc"));
	json_object_put(r);
}

int main(int argc, char **argv)
{
	struct k8s_backup_conf b = { 0 };
	struct k8s_restore_conf rs = { 0 };
	struct k8s_job_conf j = {
		.service_account = "cbtfs-backup",
		.s3_secret = "cbtfs-s3",
		.image = getenv("CBTFS_IMAGE"),
		.timeout_s = 3600,
		.poll_ms = 2000,
		.stop = &stop,
	};
	struct json_object *report = NULL;
	struct sigaction sa = { .sa_handler = on_signal };
	const char *cmd, *env, *to = NULL, *size = NULL;
	char **pvcs = NULL;
	size_t npvcs = 0;
	long parallel = 2, keep = 1, snap_timeout = 600, n;
	bool json = false, existing = false, all = false;
	int c, verbose = 0, rc;

	log_init(prog);
	j.repo = getenv(REPO_ENV);
	if ((env = getenv("CBTFS_K8S_POLL_MS")) != NULL)	/* tests */
		j.poll_ms = atoi(env) > 0 ? atoi(env) : j.poll_ms;
	while ((c = getopt_long(argc, argv, "r:l:n:Ap:vhV", long_opts,
				NULL)) != -1) {
		switch (c) {
		case 'r': j.repo = optarg; break;
		case OPT_PVC:
			if (!ns_name(optarg))
				return cli_usage_error(prog, "--pvc %s: "
						       "NAMESPACE/NAME "
						       "expected", optarg);
			pvcs = realloc(pvcs, (npvcs + 1) * sizeof(*pvcs));
			if (pvcs == NULL)
				return EXIT_FAIL;
			pvcs[npvcs++] = optarg;
			break;
		case 'l': b.selector = optarg; break;
		case 'n': b.ns = optarg; break;
		case 'A': all = true; break;
		case OPT_SNAPSHOT_CLASS: b.snapshot_class = optarg; break;
		case OPT_STORAGE_CLASS: j.storage_class = optarg; break;
		case OPT_IMAGE: j.image = optarg; break;
		case OPT_PULL_POLICY:
			if (strcmp(optarg, "Always") &&
			    strcmp(optarg, "IfNotPresent") &&
			    strcmp(optarg, "Never"))
				return cli_usage_error(prog, "--pull-policy: "
						       "Always, IfNotPresent "
						       "or Never");
			j.pull_policy = optarg;
			break;
		case OPT_SERVICE_ACCOUNT: j.service_account = optarg; break;
		case OPT_S3_SECRET:
			j.s3_secret = *optarg ? optarg : NULL;
			break;
		case OPT_KUBECONFIG: j.kubeconfig = optarg; break;
		case 'p':
			if (cli_number(prog, "--parallel", optarg, 1, 64,
				       &parallel))
				return EXIT_USAGE;
			break;
		case OPT_TIMEOUT:
			if (cli_number(prog, "--timeout", optarg, 1,
				       INT_MAX / 1000, &n))
				return EXIT_USAGE;
			j.timeout_s = (int)n;
			break;
		case OPT_SNAPSHOT_TIMEOUT:
			if (cli_number(prog, "--snapshot-timeout", optarg, 1,
				       INT_MAX / 1000, &snap_timeout))
				return EXIT_USAGE;
			break;
		case OPT_KEEP_SNAPSHOTS:
			if (cli_number(prog, "--keep-snapshots", optarg, 1, 64,
				       &keep))
				return EXIT_USAGE;
			break;
		case OPT_JSON: json = true; break;
		case OPT_TO_PVC: to = optarg; break;
		case OPT_SIZE: size = optarg; break;
		case OPT_EXISTING: existing = true; break;
		case 'v': verbose++; break;
		case 'h': usage(stdout); return EXIT_OK;
		case 'V': cli_version(prog); return EXIT_OK;
		default:
			fprintf(stderr, "Try '%s --help'.\n", prog);
			return EXIT_USAGE;
		}
	}
	log_set_verbose(verbose);
	if (optind >= argc)
		return cli_usage_error(prog, "name a command: backup, restore "
				       "or list");
	cmd = argv[optind++];
	if (j.repo == NULL || *j.repo == '\0')
		return cli_usage_error(prog, "name the repository with -r or "
				       "$" REPO_ENV);
	if (!strcmp(cmd, "list")) {
		char *tool = repo_tool();
		char *av[] = { tool, "snapshots", (char *)j.repo,
			       json ? "--json" : NULL, NULL };

		if (optind < argc)
			return cli_usage_error(prog, "list takes no operands");
		fflush(stdout);
		execvp(tool, av);
		log_error("cannot run %s: %s", tool, ERRSTR(errno));
		return EXIT_FAIL;
	}
	if (strcmp(cmd, "backup") && strcmp(cmd, "restore"))
		return cli_usage_error(prog, "unknown command '%s'", cmd);
	if (j.image == NULL || *j.image == '\0')
		return cli_usage_error(prog, "name the Jobs' image with "
				       "--image or $CBTFS_IMAGE");
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	j.repo_tool = repo_tool();
	if (!strcmp(cmd, "backup")) {
		if (optind < argc)
			return cli_usage_error(prog, "backup: unexpected "
					       "'%s'", argv[optind]);
		if ((npvcs == 0) == (b.selector == NULL))
			return cli_usage_error(prog, "backup: give --pvc or "
					       "--selector (one of them)");
		if ((b.ns != NULL || all) && b.selector == NULL)
			return cli_usage_error(prog, "--namespace and "
					       "--all-namespaces go with "
					       "--selector");
		if (b.ns != NULL && all)
			return cli_usage_error(prog, "--namespace or "
					       "--all-namespaces, not both");
		b.job = j;
		b.pvcs = pvcs;
		b.npvcs = npvcs;
		b.all_namespaces = all;
		b.parallel = (int)parallel;
		b.keep_snapshots = (int)keep;
		b.snapshot_timeout_s = (int)snap_timeout;
		rc = k8s_backup_run(&b, &report);
	} else {
		const char *at;

		if (optind + 1 != argc)
			return cli_usage_error(prog, "restore: name one "
					       "VOLUME@SNAPSHOT");
		at = strrchr(argv[optind], '@');
		if (at == NULL || at == argv[optind] || !at[1] ||
		    !ns_name(to ? to : ""))
			return cli_usage_error(prog, "restore: VOLUME@SNAPSHOT"
					       " and --to-pvc NS/NAME "
					       "expected");
		rs.job = j;
		rs.volume = strndup(argv[optind], (size_t)(at - argv[optind]));
		rs.snapshot = at + 1;
		rs.to = to;
		rs.size = size;
		rs.existing = existing;
		rc = k8s_restore_run(&rs, &report);
		free((char *)rs.volume);
	}
	if (report != NULL && json)
		cli_print_json(report);
	else if (report != NULL)
		print_report(report);
	free(pvcs);
	free((char *)j.repo_tool);
	return rc == 0 ? EXIT_OK : rc == 2 ? EXIT_FAIL : EXIT_FAIL;
}
