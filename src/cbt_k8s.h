/*
 * The k8s change source: everything the sidecar source needs, found in the
 * cluster.
 *
 *   VolumeSnapshot NS/NAME -> its bound VolumeSnapshotContent (both ready,
 *   the content pointing back at the snapshot) -> the CSI driver and the
 *   snapshot's CSI handle -> the SnapshotMetadataService named after the
 *   driver (cbt.storage.k8s.io v1beta1, else v1alpha1): address, CA and
 *   audience -> a ServiceAccount token for that audience (TokenRequest) ->
 *   the sidecar source (cbt_grpc.h).
 *
 * The base of a delta is named by the CSI handle recorded in the
 * repository, so it works after the base VolumeSnapshot is deleted; a base
 * ingested without one is looked up in the cluster by name.
 */
#ifndef CBTFS_CBT_K8S_H
#define CBTFS_CBT_K8S_H

#include "cbt.h"

struct cbt_k8s_conf {
	const char *kubeconfig;		/* NULL: see k8s.h */
	const char *namespace;		/* NULL: the context's or the pod's */
	const char *snapshot_name;	/* the VolumeSnapshot */
	const char *base_name;		/* the base VolumeSnapshot, or NULL */
	const char *service_account;	/* "NAME" or "NS/NAME"; NULL: own */
	const char *base_snapshot_id;	/* overrides the recorded handle */
	const char *cbt_address;	/* overrides the CR's (port-forward) */
	const char *server_name;	/* TLS name; default: the CR's host */
	int max_results;
	bool no_fallback;
	int idle_timeout_s;
	int retries;
	bool verbose;
};

struct cbt_source *cbt_k8s_create(const struct cbt_k8s_conf *conf,
				  int *errp);

#endif
