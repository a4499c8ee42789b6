/*
 * One server-streaming gRPC call at a time, on the grpc core C library.
 *
 * This is the only file that knows grpc.  A channel is a connection to one
 * server (unix socket or TCP, plaintext or TLS); a call sends one protobuf
 * request and hands every response message to a callback, with an idle
 * time limit between messages and a flag that interrupts it.  What the
 * server answered is returned as a gRPC status, never logged here: the
 * caller knows what the call meant and says what to do about a failure.
 */
#ifndef CBTFS_RPC_H
#define CBTFS_RPC_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* gRPC status codes (the numbers are the protocol's) */
enum rpc_code {
	RPC_OK = 0,
	RPC_CANCELLED = 1,
	RPC_UNKNOWN = 2,
	RPC_INVALID_ARGUMENT = 3,
	RPC_DEADLINE_EXCEEDED = 4,
	RPC_NOT_FOUND = 5,
	RPC_ALREADY_EXISTS = 6,
	RPC_PERMISSION_DENIED = 7,
	RPC_RESOURCE_EXHAUSTED = 8,
	RPC_FAILED_PRECONDITION = 9,
	RPC_ABORTED = 10,
	RPC_OUT_OF_RANGE = 11,
	RPC_UNIMPLEMENTED = 12,
	RPC_INTERNAL = 13,
	RPC_UNAVAILABLE = 14,
	RPC_DATA_LOSS = 15,
	RPC_UNAUTHENTICATED = 16,
};

const char *rpc_code_name(int code);

struct rpc_channel_opts {
	const char *target; /* "unix:///path", "unix:/path", "host:port" */
	bool tls;
	const char *ca_file;	 /* PEM roots for TLS; NULL: grpc's defaults */
	const char *ca_pem;	 /* or the PEM roots themselves */
	const char *server_name; /* name the certificate must carry, if not
				    the target's host */
	bool verbose;		 /* pass grpc's own log lines on */
};

struct rpc_channel;

/* The channel, or NULL with *errp set after logging why (unreadable CA
 * file...).  Connecting happens at the first call. */
struct rpc_channel *rpc_channel_open(const struct rpc_channel_opts *opts,
				     int *errp);
void rpc_channel_close(struct rpc_channel *ch);

struct rpc_status {
	int code;		/* enum rpc_code */
	char details[512];	/* the server's message, or grpc's */
};

/* Gets one response message (serialized); returns 0 to go on, or an errno
 * to end the call (it is cancelled). */
typedef int rpc_message_fn(const uint8_t *data, size_t len, void *arg);

/*
 * Calls the server-streaming method (a path "/package.Service/Method")
 * with request.  Waits at most idle_ms for each response message (and for
 * the call to start); past that the call is cancelled and ends with
 * DEADLINE_EXCEEDED.  If *interrupted becomes set, the call is cancelled
 * and EINTR returned.
 *
 * Returns 0 when the call ended, with how in *st (maybe not OK; messages
 * may have arrived before a failure); the callback's error if it stopped
 * the call; EINTR; or ENOMEM.
 */
int rpc_call_stream(struct rpc_channel *ch, const char *method,
		    const ProtobufCMessage *request, int idle_ms,
		    volatile sig_atomic_t *interrupted,
		    rpc_message_fn *on_message, void *arg,
		    struct rpc_status *st);

#endif
