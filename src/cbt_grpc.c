/*
 * The csi and sidecar change sources: see cbt_grpc.h.
 *
 * One enumeration is a series of calls of the same method: the first from
 * offset 0, each further one (after a broken stream) from the end of the
 * last range received.  Every message is checked as it arrives.  The four
 * response messages of the two APIs have
 * the same fields and numbers, so one decoder serves them all.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cbt_grpc.h"
#include "csi_snapshot_metadata.pb-c.h"
#include "rpc.h"
#include "snapshot_metadata.pb-c.h"
#include "status.h"
#include "util.h"

#define TOKEN_MAX (64 * 1024)

struct cbt_grpc {
	struct cbt_source src;
	struct cbt_grpc_conf conf;
	struct rpc_channel *ch;
	char *driver;		/* from GetPluginInfo (csi), or NULL */
};

/* The progress of one enumeration across its calls. */
struct stream {
	const char *method;	/* "GetMetadataAllocated"... */
	struct cbt_ranges *out;
	uint64_t start;		/* starting_offset of the current call */
	uint64_t next;		/* end of the last range received */
	uint64_t tuples;	/* received in the current call */
	bool have_meta;		/* type and capacity seen */
	bool authenticated;	/* a call got through the token check */
	bool renew_token;	/* ask token_fn for a new one */
	int type;
	uint64_t capacity;
	char problem[256];	/* why a message was refused */
};

static const char *api_name(const struct cbt_grpc *g)
{
	return g->conf.api == CBT_API_CSI ? "CSI driver" : "snapshot-metadata "
							   "sidecar";
}

static int refuse(struct stream *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int refuse(struct stream *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->problem, sizeof(s->problem), fmt, ap);
	va_end(ap);
	return EPROTO;
}

/* Checks one tuple and adds it to the ranges. */
static int take_tuple(struct stream *s, int64_t offset, int64_t size)
{
	uint64_t off, len;

	if (size <= 0)
		return refuse(s,
			      "a range at byte %" PRId64 " has size %" PRId64
			      " (must be greater than 0)",
			      offset, size);
	if (offset < 0)
		return refuse(s, "a range has the negative offset %" PRId64,
			      offset);
	off = (uint64_t)offset;
	len = (uint64_t)size;
	if (len > s->capacity || off > s->capacity - len)
		return refuse(s,
			      "the range %" PRIu64 "+%" PRIu64 " ends "
			      "beyond the volume's capacity (%" PRIu64
			      " bytes)",
			      off, len, s->capacity);
	/* after a resume the first range may start before the offset asked
	 * for, as long as it ends after it: keep only the new part */
	if (s->tuples == 0 && off < s->start && off + len > s->start) {
		len -= s->start - off;
		off = s->start;
	}
	if (off < s->next)
		return refuse(
			s,
			"the range %" PRIu64 "+%" PRIu64 " starts before "
			"the end of the previous one (byte %" PRIu64 "): "
			"ranges must be sorted and must not overlap",
			(uint64_t)offset, (uint64_t)size, s->next);
	s->tuples++;
	s->next = off + len;
	return cbt_ranges_add(s->out, off, len);
}

static int on_message(const uint8_t *data, size_t len, void *arg)
{
	struct stream *s = arg;
	Csi__V1__GetMetadataAllocatedResponse *r;
	size_t i;
	int err = 0;

	r = csi__v1__get_metadata_allocated_response__unpack(NULL, len, data);
	if (r == NULL)
		return refuse(s,
			      "a message could not be decoded as %sResponse",
			      s->method);
	if (r->block_metadata_type !=
		    CSI__V1__BLOCK_METADATA_TYPE__FIXED_LENGTH &&
	    r->block_metadata_type !=
		    CSI__V1__BLOCK_METADATA_TYPE__VARIABLE_LENGTH)
		err = refuse(s,
			     "block_metadata_type is %d, neither FIXED_LENGTH "
			     "nor VARIABLE_LENGTH",
			     (int)r->block_metadata_type);
	else if (r->volume_capacity_bytes <= 0)
		err = refuse(s, "volume_capacity_bytes is %" PRId64,
			     r->volume_capacity_bytes);
	else if (!s->have_meta) {
		s->have_meta = true;
		s->type = (int)r->block_metadata_type;
		s->capacity = (uint64_t)r->volume_capacity_bytes;
	} else if ((int)r->block_metadata_type != s->type)
		err = refuse(s, "block_metadata_type changed from %d to %d "
			     "within the stream", s->type,
			     (int)r->block_metadata_type);
	else if ((uint64_t)r->volume_capacity_bytes != s->capacity)
		err = refuse(s, "volume_capacity_bytes changed from %" PRIu64
			     " to %" PRId64 " within the stream", s->capacity,
			     r->volume_capacity_bytes);
	for (i = 0; err == 0 && i < r->n_block_metadata; i++)
		err = take_tuple(s, r->block_metadata[i]->byte_offset,
				 r->block_metadata[i]->size_bytes);
	csi__v1__get_metadata_allocated_response__free_unpacked(r, NULL);
	return err;
}

/* Reads the sidecar's token; NULL after logging why. */
static char *read_token(const char *path)
{
	int err;
	char *t = file_read_text(path, TOKEN_MAX, &err);

	if (t == NULL)
		log_error("cannot read the token file %s: %s", path,
			  err == EFBIG	  ? "larger than 64 KiB"
			  : err == ENODATA ? "it is empty"
					   : ERRSTR(err));
	return t;
}

/* Makes one call of the enumeration, from s->next. */
static int call_once(struct cbt_grpc *g, const char *base, struct stream *s,
		     volatile sig_atomic_t *interrupted, struct rpc_status *st)
{
	const struct cbt_grpc_conf *c = &g->conf;
	char path[128];
	char *token = NULL;
	const ProtobufCMessage *req;
	Csi__V1__GetMetadataAllocatedRequest ca =
		CSI__V1__GET_METADATA_ALLOCATED_REQUEST__INIT;
	Csi__V1__GetMetadataDeltaRequest cd =
		CSI__V1__GET_METADATA_DELTA_REQUEST__INIT;
	Snapshotmetadata__GetMetadataAllocatedRequest sa =
		SNAPSHOTMETADATA__GET_METADATA_ALLOCATED_REQUEST__INIT;
	Snapshotmetadata__GetMetadataDeltaRequest sd =
		SNAPSHOTMETADATA__GET_METADATA_DELTA_REQUEST__INIT;
	int err;

	if (c->api == CBT_API_CSI) {
		snprintf(path, sizeof(path), "/csi.v1.SnapshotMetadata/%s",
			 s->method);
		if (base == NULL) {
			ca.snapshot_id = (char *)c->snapshot_id;
			ca.starting_offset = (int64_t)s->next;
			ca.max_results = c->max_results;
			req = &ca.base;
		} else {
			cd.base_snapshot_id = (char *)base;
			cd.target_snapshot_id = (char *)c->snapshot_id;
			cd.starting_offset = (int64_t)s->next;
			cd.max_results = c->max_results;
			req = &cd.base;
		}
	} else {
		/* got again for every call: a projected token is rotated */
		if (c->token_fn != NULL) {
			const char *t =
				c->token_fn(c->token_arg, s->renew_token);

			s->renew_token = false;
			if (t == NULL)
				return EACCES;
			token = strdup(t);
		} else {
			token = read_token(c->token_file);
			if (token == NULL)
				return EINVAL;
		}
		if (token == NULL)
			return ENOMEM;
		snprintf(path, sizeof(path),
			 "/snapshotmetadata.SnapshotMetadata/%s", s->method);
		if (base == NULL) {
			sa.security_token = token;
			sa.namespace_ = (char *)c->namespace;
			sa.snapshot_name = (char *)c->snapshot_name;
			sa.starting_offset = (int64_t)s->next;
			sa.max_results = c->max_results;
			req = &sa.base;
		} else {
			sd.security_token = token;
			sd.namespace_ = (char *)c->namespace;
			sd.base_snapshot_id = (char *)base;
			sd.target_snapshot_name = (char *)c->snapshot_name;
			sd.starting_offset = (int64_t)s->next;
			sd.max_results = c->max_results;
			req = &sd.base;
		}
	}
	s->start = s->next;
	s->tuples = 0;
	log_debug("%s: %s from byte %" PRIu64, c->target, s->method, s->next);
	err = rpc_call_stream(g->ch, path, req, c->idle_timeout_s * 1000,
			      interrupted, on_message, s, st);
	free(token);
	return err;
}

static bool retryable(int code)
{
	return code == RPC_UNAVAILABLE || code == RPC_DEADLINE_EXCEEDED ||
	       code == RPC_ABORTED || code == RPC_INTERNAL;
}

/* The snapshot, as the user named it to this API. */
static void describe_target(const struct cbt_grpc *g, char *buf, size_t n)
{
	if (g->conf.api == CBT_API_CSI)
		snprintf(buf, n, "snapshot %s", g->conf.snapshot_id);
	else
		snprintf(buf, n, "VolumeSnapshot %s/%s", g->conf.namespace,
			 g->conf.snapshot_name);
}

/* Logs a failure that no retry can mend, with what to check. */
static void log_final(const struct cbt_grpc *g, const struct stream *s,
		      const struct rpc_status *st)
{
	const struct cbt_grpc_conf *c = &g->conf;
	char what[300];
	const char *hint;

	describe_target(g, what, sizeof(what));
	switch (st->code) {
	case RPC_UNAUTHENTICATED:
		hint = c->api != CBT_API_SIDECAR
			? "check the credentials the driver expects"
			: c->token_fn != NULL
			? "the token was requested for the "
			  "SnapshotMetadataService's spec.audience, which "
			  "must be the audience the sidecar expects (its "
			  "--audience)"
			: "--token-file must hold an unexpired ServiceAccount "
			  "token for the audience of the "
			  "SnapshotMetadataService";
		break;
	case RPC_PERMISSION_DENIED:
		hint = "the token's ServiceAccount needs 'get' on "
		       "volumesnapshots in the snapshot's namespace (see the "
		       "client ClusterRole in k8s/)";
		break;
	case RPC_INVALID_ARGUMENT:
		hint = c->api == CBT_API_SIDECAR
			? "check --namespace, --snapshot, --base-snapshot-id "
			  "and --max-results"
			: "check --snapshot-id, --base-snapshot-id and "
			  "--max-results";
		break;
	case RPC_NOT_FOUND:
		hint = "check that the snapshot exists and --snapshot-id "
		       "names its CSI handle";
		break;
	case RPC_UNIMPLEMENTED:
		hint = c->api == CBT_API_SIDECAR
			? "is the address that of the snapshot-metadata "
			  "sidecar?"
			: "does the driver have the SNAPSHOT_METADATA_SERVICE "
			  "capability, and is this its socket?";
		break;
	default:
		if (strstr(st->details, "failed to connect") == NULL &&
		    strstr(st->details, "DNS resolution failed") == NULL &&
		    strstr(st->details, "no response for") == NULL)
			hint = c->api == CBT_API_SIDECAR
				? "the sidecar reports a VolumeSnapshot it "
				  "cannot find or that is not ready this way; "
				  "see its log"
				: "see the driver's log";
		else
			hint = c->tls ? "check the address, --ca-file and "
					"--tls-server-name"
				      : "check the address and that the "
					"service runs";
	}
	log_error("%s at %s: %s of %s failed: %s: %s; %s", api_name(g),
		  c->target, s->method, what, rpc_code_name(st->code),
		  st->details, hint);
}

/*
 * Enumerates the allocated ranges (base NULL) or those changed since the
 * base handle, resuming broken streams.  Returns 0, or an errno after
 * logging.  A delta the driver cannot give is 0 with *no_delta set (st
 * says why; nothing logged, the caller falls back).
 */
static int enumerate(struct cbt_grpc *g, const char *base,
		     volatile sig_atomic_t *interrupted,
		     struct cbt_answer *ans, struct rpc_status *st,
		     bool *no_delta)
{
	struct stream s = { 0 };
	int failures = 0, err;

	*no_delta = false;
	s.method = base ? "GetMetadataDelta" : "GetMetadataAllocated";
	s.out = &ans->ranges;
	for (;;) {
		err = call_once(g, base, &s, interrupted, st);
		if (err == EPROTO) {
			log_error(
				"%s at %s: %s sent a bad answer: %s; nothing "
				"was written",
				api_name(g), g->conf.target, s.method,
				s.problem);
			return err;
		}
		if (err == EINTR) {
			log_error("interrupted: no snapshot was committed");
			return err;
		}
		if (err != 0)
			return err;
		if (st->code == RPC_OK)
			break;
		/* nothing can follow the end of the volume */
		if (s.have_meta && s.next >= s.capacity)
			break;
		if (s.tuples > 0)
			s.authenticated = true;
		/* a token that worked before has expired: get a new one */
		if (st->code == RPC_UNAUTHENTICATED && s.authenticated &&
		    g->conf.token_fn != NULL && !s.renew_token) {
			log_warn("%s at %s: the token was refused (%s) "
				 "after it had been accepted; requesting a "
				 "new one", api_name(g), g->conf.target,
				 st->details);
			s.renew_token = true;
			s.authenticated = false;
			continue;
		}
		if (base != NULL && (st->code == RPC_FAILED_PRECONDITION ||
				     st->code == RPC_NOT_FOUND)) {
			*no_delta = true;
			return 0;
		}
		if (!retryable(st->code)) {
			log_final(g, &s, st);
			return grpc_status_to_errno(st->code);
		}
		if (s.tuples > 0)
			failures = 0;	/* it made progress */
		if (++failures > g->conf.retries) {
			log_final(g, &s, st);
			log_error("gave up after %d attempts in a row without "
				  "progress (--cbt-retries)", failures);
			return EIO;
		}
		log_warn("%s at %s: %s stream broke at byte %" PRIu64 ": %s: "
			 "%s; resuming (attempt %d of %d)", api_name(g),
			 g->conf.target, s.method, s.next,
			 rpc_code_name(st->code), st->details, failures,
			 g->conf.retries);
		sleep_ms(backoff_ms((unsigned)failures, 100, 6400),
			 interrupted);
		if (interrupted && *interrupted) {
			log_error("interrupted: no snapshot was committed");
			return EINTR;
		}
	}
	ans->capacity = s.have_meta ? s.capacity : 0;
	log_debug("%s: %s: %zu ranges, %s", g->conf.target, s.method,
		 ans->ranges.n,
		 s.type == CSI__V1__BLOCK_METADATA_TYPE__VARIABLE_LENGTH
			 ? "VARIABLE_LENGTH"
			 : s.have_meta ? "FIXED_LENGTH" : "empty stream");
	return 0;
}

/* Asks a CSI driver its name, to record with the snapshot; best effort. */
static int on_plugin_info(const uint8_t *data, size_t len, void *arg)
{
	struct cbt_grpc *g = arg;
	Csi__V1__GetPluginInfoResponse *r;

	r = csi__v1__get_plugin_info_response__unpack(NULL, len, data);
	if (r == NULL)
		return EPROTO;
	free(g->driver);
	g->driver = r->name[0] ? strdup(r->name) : NULL;
	csi__v1__get_plugin_info_response__free_unpacked(r, NULL);
	return 0;
}

static void get_plugin_info(struct cbt_grpc *g,
			    volatile sig_atomic_t *interrupted)
{
	Csi__V1__GetPluginInfoRequest req =
		CSI__V1__GET_PLUGIN_INFO_REQUEST__INIT;
	struct rpc_status st;

	if (rpc_call_stream(g->ch, "/csi.v1.Identity/GetPluginInfo", &req.base,
			    g->conf.idle_timeout_s * 1000, interrupted,
			    on_plugin_info, g, &st) != 0 ||
	    st.code != RPC_OK)
		log_debug("%s: GetPluginInfo: %s: %s (the driver's name is "
			  "not recorded)", g->conf.target,
			  rpc_code_name(st.code), st.details);
}

static int grpc_get_ranges(struct cbt_source *src,
			   const struct cbt_request *req,
			   struct cbt_answer *ans)
{
	struct cbt_grpc *g = (struct cbt_grpc *)src;
	struct rpc_status st = { 0 };
	char reason[800] = "";
	bool no_delta;
	int err;

	if (g->ch == NULL) {
		struct rpc_channel_opts o = {
			.target = g->conf.target,
			.tls = g->conf.tls,
			.ca_file = g->conf.ca_file,
			.ca_pem = g->conf.ca_pem,
			.server_name = g->conf.server_name,
			.verbose = g->conf.verbose,
		};

		if ((g->ch = rpc_channel_open(&o, &err)) == NULL)
			return err;
	}
	if (g->conf.api == CBT_API_CSI) {
		get_plugin_info(g, req->interrupted);
		ans->csi_driver = g->driver;
	}
	if (req->has_base) {
		const char *base = g->conf.base_snapshot_id
			? g->conf.base_snapshot_id : req->base_handle;

		if (base == NULL || base[0] == '\0') {
			snprintf(
				reason, sizeof(reason),
				"the base snapshot has no CSI snapshot handle "
				"recorded, and --base-snapshot-id was not "
				"given");
		} else {
			err = enumerate(g, base, req->interrupted, ans, &st,
					&no_delta);
			if (err != 0 || !no_delta)
				return err;
			snprintf(reason, sizeof(reason),
				 "the %s cannot give the changes since base "
				 "snapshot handle %s (%s: %s)", api_name(g),
				 base, rpc_code_name(st.code), st.details);
			cbt_ranges_free(&ans->ranges);
		}
	}
	if (reason[0] != '\0') {
		if (g->conf.no_fallback) {
			log_error("%s; --no-fallback: giving up", reason);
			return ENOENT;
		}
		log_warn(
			"%s: backing up every allocated block instead (a full "
			"backup)",
			reason);
		ans->full = true;
	}
	return enumerate(g, NULL, req->interrupted, ans, &st, &no_delta);
}

static void grpc_destroy(struct cbt_source *src)
{
	struct cbt_grpc *g = (struct cbt_grpc *)src;

	rpc_channel_close(g->ch);
	free(g->driver);
	free(g);
}

static const struct cbt_source_ops csi_ops = {
	.name = "csi",
	.get_ranges = grpc_get_ranges,
	.destroy = grpc_destroy,
};

static const struct cbt_source_ops sidecar_ops = {
	.name = "sidecar",
	.get_ranges = grpc_get_ranges,
	.destroy = grpc_destroy,
};

struct cbt_source *cbt_grpc_create(const struct cbt_grpc_conf *conf,
				   int *errp)
{
	struct cbt_grpc *g;
	const char *missing = NULL;

	if (conf->api == CBT_API_CSI) {
		if (conf->target == NULL)
			missing = "--csi-endpoint";
		else if (conf->snapshot_id == NULL)
			missing = "--snapshot-id (the snapshot's CSI handle)";
	} else {
		if (conf->target == NULL)
			missing = "--cbt-address";
		else if (conf->namespace == NULL)
			missing = "--namespace";
		else if (conf->token_file == NULL && conf->token_fn == NULL)
			missing = "--token-file";
	}
	if (missing != NULL) {
		log_error("--changes %s needs %s",
			  conf->api == CBT_API_CSI ? "csi" : "sidecar",
			  missing);
		*errp = EINVAL;
		return NULL;
	}
	if (conf->api == CBT_API_SIDECAR && conf->token_fn == NULL) {
		char *t = read_token(conf->token_file);

		if (t == NULL) {
			*errp = EINVAL;
			return NULL;
		}
		free(t);
	}
	g = calloc(1, sizeof(*g));
	if (g == NULL) {
		*errp = ENOMEM;
		return NULL;
	}
	g->conf = *conf;
	g->src.ops = conf->api == CBT_API_CSI ? &csi_ops : &sidecar_ops;
	return &g->src;
}
