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

#include "cbt_grpc.h"

struct cbt_k8s_conf {
	const char *kubeconfig;		/* NULL: see k8s.h */
	const char *service_account;	/* "NAME" or "NS/NAME"; NULL: own */
	/*
	 * The sidecar source's settings.  namespace (NULL: the context's or
	 * the pod's) and snapshot_name name the VolumeSnapshot; target and
	 * server_name, if set, override the SnapshotMetadataService's
	 * address (a port-forward; the name verified stays the address's
	 * host); api, tls, ca and token are filled in from the cluster.
	 */
	struct cbt_grpc_conf sidecar;
};

/* conf->sidecar.snapshot_name must be set.  NULL with *errp (ENOMEM). */
struct cbt_source *cbt_k8s_create(const struct cbt_k8s_conf *conf,
				  int *errp);

#endif
