/*
 * Protocol statuses to errno: the one map per protocol.
 *
 * The layers speak errno (store.h, cbt.h); the peers speak HTTP (S3, the
 * Kubernetes API) and gRPC (a CSI driver, the snapshot-metadata sidecar).
 * These two functions are the only place that translates, so that one
 * answer means one errno whatever asked.  They are pure: they log nothing
 * (the caller knows what the request meant and says what failed, once),
 * and return 0 for success, else a positive errno, never anything else.
 *
 * A caller that knows more than the status (S3's error code NoSuchBucket)
 * may refine the errno afterwards, and says so where it does.  The AWS
 * credential endpoints (aws_creds.c) do not use the map: any answer but
 * 200 there means "no credentials", EACCES, with the status in the message.
 *
 *	HTTP				gRPC			errno
 *	2xx				OK			0
 *	400 Bad Request			INVALID_ARGUMENT,	EINVAL
 *					FAILED_PRECONDITION
 *	401 Unauthorized,		UNAUTHENTICATED,	EACCES
 *	403 Forbidden			PERMISSION_DENIED
 *	404 Not Found			NOT_FOUND		ENOENT
 *	409 Conflict			ABORTED			EBUSY
 *	412 Precondition Failed		ALREADY_EXISTS		EEXIST
 *	416 Range Not Satisfiable	OUT_OF_RANGE		ERANGE
 *	429 Too Many Requests,		RESOURCE_EXHAUSTED,	EAGAIN
 *	503 Service Unavailable		UNAVAILABLE
 *	-				DEADLINE_EXCEEDED	ETIMEDOUT
 *	-				CANCELLED		ECANCELED
 *	-				UNIMPLEMENTED		ENOSYS
 *	anything else			UNKNOWN, INTERNAL,	EIO
 *					DATA_LOSS, any other
 *
 * The gRPC rows follow gRPC's own HTTP equivalents (ABORTED is 409,
 * UNAVAILABLE 503, RESOURCE_EXHAUSTED 429...), so both columns of a row
 * mean the same thing.  HTTP 501 stays EIO: S3 answers it for a request
 * this server lacks, which is a failure of that request, and ENOTSUP
 * (== EOPNOTSUPP) already means "a format this cbtfs cannot read" to the
 * repository layer.
 */
#ifndef CBTFS_STATUS_H
#define CBTFS_STATUS_H

/* An HTTP status (200, 404...) as 0 or a positive errno; see above. */
int http_status_to_errno(long status);

/* A gRPC status code (enum rpc_code in rpc.h; the numbers are the
 * protocol's) as 0 or a positive errno; see above. */
int grpc_status_to_errno(int code);

#endif
