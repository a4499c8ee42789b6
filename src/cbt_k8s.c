/*
 * The k8s change source: see cbt_k8s.h.
 *
 * Every failure of the Kubernetes API is logged once, naming the object,
 * and for 401/403 the credentials or the permission that is missing.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbt_grpc.h"
#include "cbt_k8s.h"
#include "k8s.h"
#include "status.h"
#include "util.h"

#define RBAC_HINT "see the ClusterRole in k8s/rbac.yaml"

struct cbt_k8s {
	struct cbt_source src;
	struct cbt_k8s_conf conf;
	struct cbt_source *inner;	/* the sidecar source */
	char *driver, *handle, *token, *ca_pem, *address, *host;
	/* while enumerating, for token renewal */
	struct k8s_client *k;
	const char *ns, *audience;
};

/* What a snapshot resolves to. */
struct snap_info {
	char *driver;
	char *handle;
	uint64_t restore_size;	/* 0: unknown */
};

/*
 * GET or POST path; 0 with the object, ENOENT on 404 when quiet404, or an
 * errno after logging what failed with "what" (the object) and the verb
 * and resource for a 403.
 */
static int api(struct k8s_client *k, const char *path,
	       struct json_object *body, const char *what, const char *perm,
	       bool quiet404, struct json_object **out)
{
	struct json_object *o;
	long status;
	int err = k8s_request(k, path, body, &status, &o);

	*out = NULL;
	if (err != 0)
		return err;
	if (status == 200 || status == 201) {
		if (o == NULL || !json_object_is_type(o, json_type_object)) {
			log_error("Kubernetes API (%s): %s: the answer is not "
				  "a JSON object", k8s_source(k), what);
			json_object_put(o);
			return EPROTO;
		}
		*out = o;
		return 0;
	}
	if (status == 404 && quiet404) {
		json_object_put(o);
		return ENOENT;
	}
	if (status == 401)
		log_error("Kubernetes API (%s): %s: the credentials were not "
			  "accepted (HTTP 401 %s): check the token or client "
			  "certificate", k8s_source(k), what,
			  k8s_status_message(o));
	else if (status == 403)
		log_error("Kubernetes API (%s): %s: forbidden: %s; the "
			  "credentials need permission to %s (%s)",
			  k8s_source(k), what, k8s_status_message(o), perm,
			  RBAC_HINT);
	else if (status == 404)
		log_error("%s not found (Kubernetes API: %s)", what,
			  k8s_status_message(o));
	else
		log_error("Kubernetes API (%s): %s: HTTP %ld: %s",
			  k8s_source(k), what, status, k8s_status_message(o));
	json_object_put(o);
	err = http_status_to_errno(status);
	return err != 0 ? err : EIO;	/* a 2xx but 200 or 201 */
}

/* A Kubernetes quantity ("64Mi", "1G", "1073741824") in bytes; 0 if not
 * understood. */
static uint64_t parse_quantity(const char *s)
{
	static const struct { const char *sfx; uint64_t mult;
	} units[] = {
		{ "Ki", 1ull << 10 },
		{ "Mi", 1ull << 20 },
		{ "Gi", 1ull << 30 },
		{ "Ti", 1ull << 40 },
		{ "Pi", 1ull << 50 },
		{ "Ei", 1ull << 60 },
		{ "k", 1000ull },
		{ "M", 1000000ull },
		{ "G", 1000000000ull },
		{ "T", 1000000000000ull },
		{ "P", 1000000000000000ull },
		{ "E", 1000000000000000000ull },
		{ "", 1 },
	};
	char *end;
	unsigned long long v;
	size_t i;

	if (s == NULL || !isdigit((unsigned char)*s))
		return 0;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return 0;
	for (i = 0; i < sizeof(units) / sizeof(*units); i++)
		if (strcmp(end, units[i].sfx) == 0)
			return v <= UINT64_MAX / units[i].mult
				       ? v * units[i].mult
				       : 0;
	return 0;
}

static bool is_true(struct json_object *o, const char *path)
{
	struct json_object *v = k8s_field(o, path);

	return v != NULL && json_object_is_type(v, json_type_boolean) &&
	       json_object_get_boolean(v);
}

/* VolumeSnapshot ns/name -> content -> driver, handle, size. */
static int resolve_snapshot(struct k8s_client *k, const char *ns,
			    const char *name, struct snap_info *si)
{
	struct json_object *vs = NULL, *vsc = NULL;
	char path[1024], what[600], cwhat[1400];
	const char *content, *v, *uid, *ref_uid;
	int err;

	snprintf(what, sizeof(what), "VolumeSnapshot %s/%s", ns, name);
	snprintf(path, sizeof(path),
		 "/apis/snapshot.storage.k8s.io/v1/namespaces/%s/"
		 "volumesnapshots/%s", ns, name);
	err = api(k, path, NULL, what, "get volumesnapshots "
		  "(snapshot.storage.k8s.io)", false, &vs);
	if (err != 0)
		return err;
	err = EINVAL;
	content = k8s_string(vs, "status.boundVolumeSnapshotContentName");
	if (!is_true(vs, "status.readyToUse")) {
		log_error("%s is not ready to use (status.readyToUse is not "
			  "true): wait until its snapshot is taken", what);
		goto out;
	}
	if (content == NULL) {
		log_error("%s is not bound to a VolumeSnapshotContent "
			  "(no status.boundVolumeSnapshotContentName)", what);
		goto out;
	}
	snprintf(cwhat, sizeof(cwhat), "VolumeSnapshotContent %s (of %s)",
		 content, what);
	snprintf(path, sizeof(path),
		 "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents/%s",
		 content);
	err = api(k, path, NULL, cwhat, "get volumesnapshotcontents "
		  "(snapshot.storage.k8s.io)", false, &vsc);
	if (err != 0)
		goto out;
	err = EINVAL;
	uid = k8s_string(vs, "metadata.uid");
	ref_uid = k8s_string(vsc, "spec.volumeSnapshotRef.uid");
	if ((v = k8s_string(vsc, "spec.volumeSnapshotRef.name")) == NULL ||
	    strcmp(v, name) != 0 ||
	    (v = k8s_string(vsc, "spec.volumeSnapshotRef.namespace")) ==
		    NULL ||
	    strcmp(v, ns) != 0 ||
	    (uid && ref_uid && strcmp(uid, ref_uid) != 0)) {
		log_error("%s is bound to another VolumeSnapshot "
			  "(spec.volumeSnapshotRef does not point back)",
			  cwhat);
		goto out;
	}
	if (!is_true(vsc, "status.readyToUse")) {
		log_error("%s is not ready to use (status.readyToUse is not "
			  "true)", cwhat);
		goto out;
	}
	if ((v = k8s_string(vsc, "status.snapshotHandle")) == NULL || !*v) {
		log_error("%s has no status.snapshotHandle", cwhat);
		goto out;
	}
	si->handle = strdup(v);
	if ((v = k8s_string(vsc, "spec.driver")) == NULL || !*v) {
		log_error("%s has no spec.driver", cwhat);
		goto out;
	}
	si->driver = strdup(v);
	{
		struct json_object *rs = k8s_field(vsc, "status.restoreSize");

		if (rs && json_object_is_type(rs, json_type_int))
			si->restore_size = (uint64_t)json_object_get_int64(rs);
		else
			si->restore_size = parse_quantity(
				k8s_string(vs, "status.restoreSize"));
	}
	err = si->handle && si->driver ? 0 : ENOMEM;
out:
	if (err != 0) {
		free(si->handle);
		free(si->driver);
		si->handle = si->driver = NULL;
	}
	json_object_put(vs);
	json_object_put(vsc);
	return err;
}

/* The SnapshotMetadataService of driver: address, CA, audience. */
static int find_sms(struct cbt_k8s *c, struct k8s_client *k,
		    const char *driver, char **audience)
{
	static const char *const versions[] = { "v1beta1", "v1alpha1" };
	struct json_object *sms = NULL;
	char path[1024], what[600];
	const char *addr, *aud, *ca;
	size_t i, n;
	int err = ENOENT;

	for (i = 0; i < 2 && err == ENOENT; i++) {
		snprintf(what, sizeof(what), "SnapshotMetadataService %s "
			 "(cbt.storage.k8s.io/%s)", driver, versions[i]);
		snprintf(path, sizeof(path), "/apis/cbt.storage.k8s.io/%s/"
			 "snapshotmetadataservices/%s", versions[i], driver);
		err = api(k, path, NULL, what, "get snapshotmetadataservices "
			  "(cbt.storage.k8s.io)", true, &sms);
	}
	if (err == ENOENT)
		log_error(
			"no SnapshotMetadataService named %s "
			"(cbt.storage.k8s.io v1beta1 or v1alpha1): the CSI "
			"driver %s offers no Changed Block Tracking here, or "
			"its snapshot-metadata sidecar is not deployed",
			driver, driver);
	if (err != 0)
		return err;
	addr = k8s_string(sms, "spec.address");
	aud = k8s_string(sms, "spec.audience");
	ca = k8s_string(sms, "spec.caCert");
	if (!addr || !*addr || !aud || !*aud || !ca || !*ca) {
		log_error("%s lacks spec.%s", what,
			  !addr || !*addr ? "address"
			  : !aud || !*aud ? "audience"
					  : "caCert");
		json_object_put(sms);
		return EINVAL;
	}
	err = base64_decode(ca, (unsigned char **)&c->ca_pem, &n);
	if (err != 0) {
		if (err == EINVAL)
			log_error("%s: spec.caCert is not valid base64", what);
		json_object_put(sms);
		return err;
	}
	c->address = strdup(addr);
	*audience = strdup(aud);
	/* the host the certificate is for: the address without the port */
	c->host = strdup(addr);
	if (c->host && strrchr(c->host, ':'))
		*strrchr(c->host, ':') = '\0';
	json_object_put(sms);
	return c->address && *audience && c->host ? 0 : ENOMEM;
}

/* The ServiceAccount to get a token for, as namespace and name. */
static int find_service_account(struct cbt_k8s *c, struct k8s_client *k,
				const char *ns, char **sa_ns, char **sa_name)
{
	const char *sa = c->conf.service_account, *slash, *user;
	struct json_object *body, *rv = NULL;
	int err;

	if (sa != NULL) {
		slash = strchr(sa, '/');
		*sa_ns = slash ? strndup(sa, (size_t)(slash - sa))
			       : strdup(k8s_namespace(k) ? k8s_namespace(k)
							 : ns);
		*sa_name = strdup(slash ? slash + 1 : sa);
		return *sa_ns && *sa_name ? 0 : ENOMEM;
	}
	/* whoever these credentials are */
	body = json_tokener_parse(
		"{\"apiVersion\": \"authentication.k8s.io/v1\","
		" \"kind\": \"SelfSubjectReview\"}");
	err = api(k, "/apis/authentication.k8s.io/v1/selfsubjectreviews", body,
		  "SelfSubjectReview (who am I)", "create selfsubjectreviews "
		  "(authentication.k8s.io); or give --service-account",
		  false, &rv);
	json_object_put(body);
	if (err != 0)
		return err;
	user = k8s_string(rv, "status.userInfo.username");
	if (user == NULL ||
	    strncmp(user, "system:serviceaccount:", 22) != 0 ||
	    strchr(user + 22, ':') == NULL) {
		log_error("the Kubernetes credentials (%s) are those of '%s', "
			  "not of a ServiceAccount: give --service-account "
			  "NAMESPACE/NAME to get a token for", k8s_source(k),
			  user ? user : "an unknown user");
		json_object_put(rv);
		return EINVAL;
	}
	slash = strchr(user + 22, ':');
	*sa_ns = strndup(user + 22, (size_t)(slash - (user + 22)));
	*sa_name = strdup(slash + 1);
	json_object_put(rv);
	return *sa_ns && *sa_name ? 0 : ENOMEM;
}

/* A token for audience from the ServiceAccount (TokenRequest). */
static int request_token(struct cbt_k8s *c, struct k8s_client *k,
			 const char *ns, const char *audience)
{
	struct json_object *body, *spec, *auds, *rv = NULL;
	char *sa_ns = NULL, *sa_name = NULL, path[1024], what[600];
	const char *tok;
	int err;

	err = find_service_account(c, k, ns, &sa_ns, &sa_name);
	if (err != 0)
		goto out;
	body = json_object_new_object();
	spec = json_object_new_object();
	auds = json_object_new_array();
	json_object_array_add(auds, json_object_new_string(audience));
	json_object_object_add(spec, "audiences", auds);
	/* long enough for a resumed enumeration of a big volume */
	json_object_object_add(spec, "expirationSeconds",
			       json_object_new_int(3600));
	json_object_object_add(
		body, "apiVersion",
		json_object_new_string("authentication.k8s.io/v1"));
	json_object_object_add(body, "kind",
			       json_object_new_string("TokenRequest"));
	json_object_object_add(body, "spec", spec);
	snprintf(what, sizeof(what), "token of ServiceAccount %s/%s for "
		 "audience '%s'", sa_ns, sa_name, audience);
	snprintf(path, sizeof(path),
		 "/api/v1/namespaces/%s/serviceaccounts/%s/token", sa_ns,
		 sa_name);
	err = api(k, path, body, what, "create serviceaccounts/token in "
		  "that namespace", false, &rv);
	json_object_put(body);
	if (err != 0)
		goto out;
	tok = k8s_string(rv, "status.token");
	if (tok == NULL || !*tok) {
		log_error("Kubernetes API: the TokenRequest for the %s came "
			  "back without status.token", what);
		err = EPROTO;
		goto out;
	}
	if (c->token != NULL)
		explicit_bzero(c->token, strlen(c->token));
	free(c->token);
	c->token = strdup(tok);
	err = c->token ? 0 : ENOMEM;
	log_debug("got a %s", what);
out:
	json_object_put(rv);
	free(sa_ns);
	free(sa_name);
	return err;
}

/* The sidecar source's token_fn: the token, or a new one on request. */
static const char *token_fn(void *arg, bool renew)
{
	struct cbt_k8s *c = arg;

	if (renew && request_token(c, c->k, c->ns, c->audience) != 0)
		return NULL;
	return c->token;
}

static int k8s_get_ranges(struct cbt_source *src,
			  const struct cbt_request *req,
			  struct cbt_answer *ans)
{
	struct cbt_k8s *c = (struct cbt_k8s *)src;
	struct k8s_client *k = NULL;
	struct snap_info si = { 0 }, bi = { 0 };
	struct cbt_grpc_conf g;
	struct cbt_request r = *req;
	char *audience = NULL;
	const char *ns;
	int err;

	if ((k = k8s_open(c->conf.kubeconfig, 30, &err)) == NULL)
		return err;
	ns = c->conf.sidecar.namespace ? c->conf.sidecar.namespace
				       : k8s_namespace(k);
	if (ns == NULL) {
		log_error("--changes k8s needs --namespace (the "
			  "VolumeSnapshot's): %s names none", k8s_source(k));
		err = EINVAL;
		goto out;
	}
	if ((err = resolve_snapshot(k, ns, c->conf.sidecar.snapshot_name,
				    &si)) != 0)
		goto out;
	c->driver = si.driver;
	c->handle = si.handle;
	if ((err = find_sms(c, k, si.driver, &audience)) != 0 ||
	    (err = request_token(c, k, ns, audience)) != 0)
		goto out;
	/* a base ingested without a handle: ask the cluster, if it still
	 * has the base VolumeSnapshot */
	if (req->has_base && req->base_handle == NULL &&
	    c->conf.sidecar.base_snapshot_id == NULL &&
	    req->base_name != NULL &&
	    resolve_snapshot(k, ns, req->base_name, &bi) == 0)
		r.base_handle = bi.handle;

	g = c->conf.sidecar;
	g.api = CBT_API_SIDECAR;
	g.target = g.target ? g.target : c->address;
	g.tls = true;
	g.ca_file = NULL;
	g.ca_pem = c->ca_pem;
	if (g.server_name == NULL && c->conf.sidecar.target != NULL)
		g.server_name = c->host;
	g.namespace = ns;
	g.token_file = NULL;
	g.token_fn = token_fn;
	g.token_arg = c;
	c->k = k;
	c->ns = ns;
	c->audience = audience;
	log_info("VolumeSnapshot %s/%s: driver %s, handle %s; "
		 "SnapshotMetadataService at %s",
		 ns, c->conf.sidecar.snapshot_name, si.driver, si.handle,
		 g.target);
	c->inner = cbt_grpc_create(&g, &err);
	if (c->inner == NULL)
		goto out;
	err = c->inner->ops->get_ranges(c->inner, &r, ans);
	if (err == 0) {
		ans->csi_driver = c->driver;
		ans->csi_handle = c->handle;
		/* an empty stream reports no capacity */
		if (ans->capacity == 0 && si.restore_size > 0)
			ans->capacity = si.restore_size;
	}
out:
	c->k = NULL;
	c->ns = c->audience = NULL;
	free(audience);
	free(bi.handle);
	free(bi.driver);
	k8s_close(k);
	return err;
}

static void k8s_destroy(struct cbt_source *src)
{
	struct cbt_k8s *c = (struct cbt_k8s *)src;

	cbt_source_destroy(c->inner);
	free(c->driver);
	free(c->handle);
	if (c->token != NULL)
		explicit_bzero(c->token, strlen(c->token));
	free(c->token);
	free(c->ca_pem);
	free(c->address);
	free(c->host);
	free(c);
}

static const struct cbt_source_ops k8s_ops = {
	.name = "k8s",
	.get_ranges = k8s_get_ranges,
	.destroy = k8s_destroy,
};

struct cbt_source *cbt_k8s_create(const struct cbt_k8s_conf *conf,
				  int *errp)
{
	struct cbt_k8s *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		*errp = ENOMEM;
		return NULL;
	}
	c->conf = *conf;
	c->src.ops = &k8s_ops;
	return &c->src;
}
