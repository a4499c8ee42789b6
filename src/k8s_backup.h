/*
 * cbtfs-k8s's work: backups of many block PVCs and restores into PVCs,
 * driven through the Kubernetes API (k8s.h) with Jobs that run this
 * image's cbtfs-ingest and cbtfs-repo.
 *
 * Everything created carries the labels
 *   app.kubernetes.io/managed-by=cbtfs-k8s
 *   app.kubernetes.io/component=backup|restore
 *   cbtfs.io/run=RUN_ID
 * and VolumeSnapshots also cbtfs.io/pvc=PVC, so that a later run finds
 * what an interrupted one left: backup Jobs and temporary PVCs of another
 * run are deleted, VolumeSnapshots no committed backup names are deleted.
 * The repository is the authority on "committed": a VolumeSnapshot is
 * committed when the repository holds a snapshot of volume NS/PVC with its
 * name (cbtfs-ingest --snapshot is the VolumeSnapshot's name).
 */
#ifndef CBTFS_K8S_BACKUP_H
#define CBTFS_K8S_BACKUP_H

#include <signal.h>
#include <stdbool.h>

#include <json-c/json.h>

struct k8s_job_conf {
	/* NULL: $KUBECONFIG, then in-cluster, then ~/.kube/config */
	const char *kubeconfig;
	const char *repo;	/* as the pods see it */
	const char *repo_tool;	/* cbtfs-repo to run here */
	const char *image;
	const char *pull_policy;	/* NULL: the cluster's default */
	const char *service_account;	/* of the backup Jobs */
	const char *s3_secret;	/* for the Jobs' envFrom; or NULL */
	const char *storage_class;	/* NULL: the source's / default */
	int timeout_s;		/* each wait */
	int poll_ms;
	volatile sig_atomic_t *stop;	/* set by SIGINT/SIGTERM */
};

struct k8s_backup_conf {
	struct k8s_job_conf job;
	char **pvcs;		/* NS/NAME; or NULL with a selector */
	size_t npvcs;
	const char *selector;
	const char *ns;		/* NULL: the context's or the pod's */
	bool all_namespaces;
	const char *snapshot_class;	/* NULL: the driver's default */
	int snapshot_timeout_s;
	int parallel;
	int keep_snapshots;
};

/*
 * Backs up every PVC named or selected.  Returns 0 when every block PVC
 * was backed up, 1 when one failed (or was interrupted), 2 when nothing
 * could be started (logged); *report (caller puts) is the JSON report.
 */
int k8s_backup_run(const struct k8s_backup_conf *c,
		   struct json_object **report);

struct k8s_restore_conf {
	struct k8s_job_conf job;
	const char *volume;	/* NS/PVC as the repository names it */
	const char *snapshot;
	const char *to;		/* NS/NAME */
	const char *size;	/* a quantity, or NULL: the snapshot's */
	bool existing;		/* write into an existing PVC */
};

/* Restores into a PVC; 0 or 1 as above, *report the JSON report. */
int k8s_restore_run(const struct k8s_restore_conf *c,
		    struct json_object **report);

#endif
