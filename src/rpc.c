/*
 * gRPC calls on grpc core: see rpc.h.
 *
 * A call is three batches on its own pluck completion queue: (1) send the
 * request and receive the initial metadata, (2) receive one message, again
 * and again, (3) receive the status.  Every started batch is waited for
 * before the call is released, and the status batch always runs: it holds
 * the reason for every failure, connection errors included.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "rpc.h"
#include "util.h"

/* Wait between checks of the idle limit and the interrupt flag. */
#define RPC_TICK_MS 200

struct rpc_channel {
	grpc_channel *channel;
};

static const char *const code_names[] = {
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
	"DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
	"PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
	"UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

const char *rpc_code_name(int code)
{
	if (code >= 0 &&
	    (size_t)code < sizeof(code_names) / sizeof(*code_names))
		return code_names[code];
	return "UNKNOWN_CODE";
}

static bool grpc_verbose;

/* grpc logs handshake failures itself; the status we return says the
 * same, so its lines are shown only with --verbose. */
static void grpc_log(gpr_log_func_args *args)
{
	if (grpc_verbose)
		log_debug("grpc: %s", args->message);
}

static int open_channel(const struct rpc_channel_opts *opts,
			struct rpc_channel **chp)
{
	struct rpc_channel *ch;
	grpc_channel_credentials *creds;
	struct buf pem = { 0 };
	grpc_arg args[5];
	grpc_channel_args cargs = { 0, args };
	int err;

	if (opts->tls && opts->ca_file != NULL) {
		err = file_read_small(opts->ca_file, 4 << 20, &pem);
		if (err != 0) {
			log_error("cannot read CA file %s: %s", opts->ca_file,
				  err == EFBIG
					  ? "larger than 4 MiB, not a PEM "
					    "bundle"
					  : ERRSTR(err));
			return err;
		}
		if (strstr((char *)pem.data, "-----BEGIN CERTIFICATE-----") ==
		    NULL) {
			log_error("CA file %s holds no PEM certificate "
				  "(-----BEGIN CERTIFICATE-----)",
				  opts->ca_file);
			buf_free(&pem);
			return EINVAL;
		}
	}
	if (opts->tls && opts->ca_file == NULL && opts->ca_pem != NULL &&
	    buf_append(&pem, opts->ca_pem, strlen(opts->ca_pem) + 1) != 0)
		return ENOMEM;
	ch = calloc(1, sizeof(*ch));
	if (ch == NULL) {
		buf_free(&pem);
		return ENOMEM;
	}
	grpc_verbose = opts->verbose;
	gpr_set_log_function(grpc_log);
	gpr_set_log_verbosity(opts->verbose ? GPR_LOG_SEVERITY_INFO
					    : GPR_LOG_SEVERITY_ERROR);
	grpc_init();

	/* responses of many tuples exceed grpc's default 4 MiB */
	args[cargs.num_args].type = GRPC_ARG_INTEGER;
	args[cargs.num_args].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[cargs.num_args++].value.integer = 64 << 20;
	/* http_proxy must not capture a service on this host or cluster */
	args[cargs.num_args].type = GRPC_ARG_INTEGER;
	args[cargs.num_args].key = (char *)GRPC_ARG_ENABLE_HTTP_PROXY;
	args[cargs.num_args++].value.integer = 0;
	args[cargs.num_args].type = GRPC_ARG_STRING;
	args[cargs.num_args].key = (char *)GRPC_ARG_PRIMARY_USER_AGENT_STRING;
	args[cargs.num_args++].value.string = (char *)PACKAGE_NAME "/"
					      PACKAGE_VERSION;
	/* a retry after a refused connection should not wait a second */
	args[cargs.num_args].type = GRPC_ARG_INTEGER;
	args[cargs.num_args].key =
		(char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
	args[cargs.num_args++].value.integer = 100;
	if (opts->tls && opts->server_name != NULL) {
		args[cargs.num_args].type = GRPC_ARG_STRING;
		args[cargs.num_args].key =
			(char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
		args[cargs.num_args++].value.string =
			(char *)opts->server_name;
	}

	if (opts->tls)
		creds = grpc_ssl_credentials_create((char *)pem.data, NULL,
						    NULL, NULL);
	else
		creds = grpc_insecure_credentials_create();
	buf_free(&pem);	/* grpc copied it */
	ch->channel = grpc_channel_create(opts->target, creds, &cargs);
	grpc_channel_credentials_release(creds);
	if (ch->channel == NULL) {
		log_error("cannot create a gRPC channel to %s", opts->target);
		grpc_shutdown();
		free(ch);
		return EINVAL;
	}
	*chp = ch;
	return 0;
}

struct rpc_channel *rpc_channel_open(const struct rpc_channel_opts *opts,
				     int *errp)
{
	struct rpc_channel *ch = NULL;

	*errp = open_channel(opts, &ch);
	return *errp == 0 ? ch : NULL;
}

void rpc_channel_close(struct rpc_channel *ch)
{
	double give_up;

	if (ch == NULL)
		return;
	grpc_channel_destroy(ch->channel);
	free(ch);
	/* grpc_shutdown() finishes on a thread of its own; wait for it, so
	 * that nothing of grpc's runs on while the program exits */
	grpc_shutdown();
	give_up = now_seconds() + 2.0;
	while (grpc_is_initialized() && now_seconds() < give_up)
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
}

/* The state of one call that the waits need. */
struct call_wait {
	grpc_completion_queue *cq;
	grpc_call *call;
	int idle_ms;
	volatile sig_atomic_t *interrupted;
	bool cancelled;		/* by us: idle limit or interrupt */
	bool was_interrupted;
};

/*
 * Waits for the batch with the given tag; returns its success flag.  While
 * waiting, cancels the call once when the idle limit passes or the
 * interrupt flag is set; the batch then completes (unsuccessfully) soon.
 */
static bool wait_batch(struct call_wait *w, void *tag)
{
	double idle_end = now_seconds() + w->idle_ms / 1000.0;

	for (;;) {
		gpr_timespec tick = gpr_time_add(
			gpr_now(GPR_CLOCK_MONOTONIC),
			gpr_time_from_millis(RPC_TICK_MS, GPR_TIMESPAN));
		grpc_event ev = grpc_completion_queue_pluck(w->cq, tag, tick,
							    NULL);

		if (ev.type == GRPC_OP_COMPLETE)
			return ev.success != 0;
		if (w->cancelled)
			continue;
		if (w->interrupted != NULL && *w->interrupted) {
			w->cancelled = w->was_interrupted = true;
			grpc_call_cancel_with_status(w->call,
						     GRPC_STATUS_CANCELLED,
						     "interrupted", NULL);
		} else if (now_seconds() >= idle_end) {
			char why[96];

			snprintf(why, sizeof(why), "no response for %d s",
				 (w->idle_ms + 999) / 1000);
			w->cancelled = true;
			grpc_call_cancel_with_status(
				w->call, GRPC_STATUS_DEADLINE_EXCEEDED, why,
				NULL);
		}
	}
}

/* Serializes a protobuf-c message into a new grpc byte buffer. */
static grpc_byte_buffer *pack_message(const ProtobufCMessage *msg)
{
	size_t n = protobuf_c_message_get_packed_size(msg);
	grpc_slice s = grpc_slice_malloc(n);
	grpc_byte_buffer *bb;

	protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
	bb = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	return bb;
}

/* Hands one received message to the callback. */
static int deliver(grpc_byte_buffer *bb, rpc_message_fn *on_message,
		   void *arg)
{
	grpc_byte_buffer_reader reader;
	grpc_slice all;
	int err;

	if (!grpc_byte_buffer_reader_init(&reader, bb))
		return EPROTO;	/* undecompressable */
	all = grpc_byte_buffer_reader_readall(&reader);
	grpc_byte_buffer_reader_destroy(&reader);
	err = on_message(GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all),
			 arg);
	grpc_slice_unref(all);
	return err;
}

int rpc_call_stream(struct rpc_channel *ch, const char *method,
		    const ProtobufCMessage *request, int idle_ms,
		    volatile sig_atomic_t *interrupted,
		    rpc_message_fn *on_message, void *arg,
		    struct rpc_status *st)
{
	struct call_wait w = { .idle_ms = idle_ms,
			       .interrupted = interrupted };
	grpc_metadata_array initial_md, trailing_md;
	grpc_byte_buffer *send_bb, *recv_bb;
	grpc_status_code status = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice();
	const char *error_string = NULL;
	grpc_op ops[4];
	grpc_call_error cerr;
	int err = 0;
	bool ok;

	memset(st, 0, sizeof(*st));
	send_bb = pack_message(request);
	if (send_bb == NULL)
		return ENOMEM;
	w.cq = grpc_completion_queue_create_for_pluck(NULL);
	w.call = grpc_channel_create_call(
		ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, w.cq,
		grpc_slice_from_static_string(method), NULL,
		gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	grpc_metadata_array_init(&initial_md);
	grpc_metadata_array_init(&trailing_md);

	/* 1. the request */
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = send_bb;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
	cerr = grpc_call_start_batch(w.call, ops, 4, (void *)1, NULL);
	ok = cerr == GRPC_CALL_OK && wait_batch(&w, (void *)1);

	/* 2. the messages, one at a time, until the end or a failure */
	while (ok && err == 0) {
		recv_bb = NULL;
		memset(ops, 0, sizeof(ops));
		ops[0].op = GRPC_OP_RECV_MESSAGE;
		ops[0].data.recv_message.recv_message = &recv_bb;
		if (grpc_call_start_batch(w.call, ops, 1, (void *)2, NULL) !=
		    GRPC_CALL_OK)
			break;
		ok = wait_batch(&w, (void *)2);
		if (recv_bb == NULL)
			break;	/* end of stream, or failed */
		if (ok) {
			err = deliver(recv_bb, on_message, arg);
			if (err != 0)
				grpc_call_cancel_with_status(
					w.call, GRPC_STATUS_CANCELLED,
					"stopped by the client", NULL);
		}
		grpc_byte_buffer_destroy(recv_bb);
	}

	/* 3. the status, which says why whatever happened happened */
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &trailing_md;
	ops[0].data.recv_status_on_client.status = &status;
	ops[0].data.recv_status_on_client.status_details = &details;
	ops[0].data.recv_status_on_client.error_string = &error_string;
	if (grpc_call_start_batch(w.call, ops, 1, (void *)3, NULL) ==
	    GRPC_CALL_OK) {
		w.idle_ms = 24 * 3600 * 1000;	/* cancelling again is moot */
		wait_batch(&w, (void *)3);
		st->code = (int)status;
		snprintf(st->details, sizeof(st->details), "%.*s",
			 (int)GRPC_SLICE_LENGTH(details),
			 (const char *)GRPC_SLICE_START_PTR(details));
		if (st->details[0] == '\0' && error_string != NULL)
			snprintf(st->details, sizeof(st->details), "%s",
				 error_string);
	} else {
		st->code = RPC_INTERNAL;
		snprintf(st->details, sizeof(st->details),
			 "grpc refused to start the call (error %d)",
			 (int)cerr);
	}
	if (err == 0 && w.was_interrupted)
		err = EINTR;

	grpc_slice_unref(details);
	gpr_free((void *)error_string);
	grpc_metadata_array_destroy(&initial_md);
	grpc_metadata_array_destroy(&trailing_md);
	grpc_byte_buffer_destroy(send_bb);
	grpc_call_unref(w.call);
	grpc_completion_queue_shutdown(w.cq);
	while (grpc_completion_queue_pluck(w.cq, NULL,
					   gpr_inf_future(GPR_CLOCK_REALTIME),
					   NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(w.cq);
	return err;
}
