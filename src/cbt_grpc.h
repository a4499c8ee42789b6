/*
 * Change sources that ask a storage system over gRPC which blocks of a
 * snapshot are allocated, or changed since a base snapshot:
 *
 *   csi      the CSI driver's own SnapshotMetadata service (csi.v1), by
 *            CSI snapshot handles, usually on a unix socket;
 *   sidecar  the Kubernetes SnapshotMetadata API of the external-snapshot-
 *            metadata sidecar (snapshotmetadata), by VolumeSnapshot name
 *            with an audience-scoped token, over TLS.
 *
 * Both call GetMetadataAllocated without a base and GetMetadataDelta with
 * one, check every message of the stream, resume a broken stream from the
 * end of the last range received, and fall back to a full (allocated)
 * backup when the driver cannot give a delta.
 *
 * Returns and logs: get_ranges() (cbt.h) logs each failure once, naming
 * the service, the method and the snapshot, with the gRPC status, its
 * details and what to check.  It returns grpc_status_to_errno() of a
 * status no retry can mend (status.h), EIO when the retries ran out
 * without progress, EPROTO for an answer that breaks the protocol, ENOENT
 * when a delta cannot be had and no_fallback is set, EINTR when
 * interrupted, or the channel's (rpc.h: an unreadable CA file...).  A
 * fall-back to a full backup is a warning, and success.
 */
#ifndef CBTFS_CBT_GRPC_H
#define CBTFS_CBT_GRPC_H

#include "cbt.h"

enum cbt_api { CBT_API_CSI, CBT_API_SIDECAR };

struct cbt_grpc_conf {
	enum cbt_api api;
	const char *target;		/* gRPC target of the service */
	bool tls;			/* csi: optional; sidecar: always */
	const char *ca_file;		/* PEM roots; NULL: system defaults */
	const char *ca_pem;		/* or the PEM roots themselves */
	const char *server_name;	/* TLS name override (port-forward) */
	const char *snapshot_id;	/* csi: target handle (required) */
	const char *namespace;		/* sidecar: of the VolumeSnapshot */
	const char *snapshot_name;	/* sidecar: the VolumeSnapshot */
	const char *token_file;		/* sidecar: the security token */
	/* Or a function that gives it (NULL after logging why), and after
	 * the sidecar refused a token it had accepted before (it expired
	 * during a long enumeration), a new one if renew is set. */
	const char *(*token_fn)(void *arg, bool renew);
	void *token_arg;
	const char *base_snapshot_id; /* overrides the recorded base handle */
	int max_results; /* tuples per message; 0: the server's */
	bool no_fallback;		/* a delta that cannot be had fails */
	int idle_timeout_s;		/* longest wait for a message */
	int retries;			/* calls in a row without progress */
	bool verbose;
};

/* Checks conf (logging what is wrong) and returns the source, or NULL
 * with *errp. */
struct cbt_source *cbt_grpc_create(const struct cbt_grpc_conf *conf,
				   int *errp);

#endif
