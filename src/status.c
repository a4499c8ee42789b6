/*
 * Protocol statuses to errno: see status.h, which holds the table.
 */
#include "config.h"

#include <errno.h>

#include "rpc.h"
#include "status.h"

int http_status_to_errno(long status)
{
	if (status >= 200 && status < 300)
		return 0;
	switch (status) {
	case 400:
		return EINVAL;
	case 401:
	case 403:
		return EACCES;
	case 404:
		return ENOENT;
	case 409:
		return EBUSY;
	case 412:
		return EEXIST;
	case 416:
		return ERANGE;
	case 429:
	case 503:
		return EAGAIN;
	default:
		return EIO;
	}
}

int grpc_status_to_errno(int code)
{
	switch (code) {
	case RPC_OK:
		return 0;
	case RPC_INVALID_ARGUMENT:
	case RPC_FAILED_PRECONDITION:
		return EINVAL;
	case RPC_UNAUTHENTICATED:
	case RPC_PERMISSION_DENIED:
		return EACCES;
	case RPC_NOT_FOUND:
		return ENOENT;
	case RPC_ABORTED:
		return EBUSY;
	case RPC_ALREADY_EXISTS:
		return EEXIST;
	case RPC_OUT_OF_RANGE:
		return ERANGE;
	case RPC_RESOURCE_EXHAUSTED:
	case RPC_UNAVAILABLE:
		return EAGAIN;
	case RPC_DEADLINE_EXCEEDED:
		return ETIMEDOUT;
	case RPC_CANCELLED:
		return ECANCELED;
	case RPC_UNIMPLEMENTED:
		return ENOSYS;
	default:	/* UNKNOWN, INTERNAL, DATA_LOSS, any other */
		return EIO;
	}
}
