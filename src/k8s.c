/*
 * Kubernetes API client: see k8s.h.
 *
 * A kubeconfig is YAML; it is read with libyaml into json-c objects, so the
 * same accessors serve it and the API's JSON answers.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <yaml.h>

#include "k8s.h"
#include "util.h"

#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define SMALL_FILE_MAX (1 << 20)

struct k8s_client {
	CURL *curl;
	char *server;		/* https://host:port, no trailing '/' */
	char *token;		/* bearer token, or NULL */
	struct curl_blob ca, cert, key;	/* inline PEM (data NULL: none) */
	char *ca_file, *cert_file, *key_file;
	char *source;		/* for messages */
	char *ns;
};

/* ---------------------------------------------------------------------- */
/* kubeconfig: YAML to json-c */

static struct json_object *yaml_node_to_json(yaml_document_t *doc,
					     yaml_node_t *node, int depth)
{
	struct json_object *o = NULL;
	yaml_node_item_t *it;
	yaml_node_pair_t *p;

	if (node == NULL || depth > 64)
		return NULL;
	switch (node->type) {
	case YAML_SCALAR_NODE:
		return json_object_new_string_len(
			(const char *)node->data.scalar.value,
			(int)node->data.scalar.length);
	case YAML_SEQUENCE_NODE:
		o = json_object_new_array();
		for (it = node->data.sequence.items.start;
		     it < node->data.sequence.items.top; it++)
			json_object_array_add(
				o, yaml_node_to_json(
					   doc, yaml_document_get_node(doc, *it),
					   depth + 1));
		return o;
	case YAML_MAPPING_NODE:
		o = json_object_new_object();
		for (p = node->data.mapping.pairs.start;
		     p < node->data.mapping.pairs.top; p++) {
			yaml_node_t *k = yaml_document_get_node(doc, p->key);

			if (k == NULL || k->type != YAML_SCALAR_NODE)
				continue;
			json_object_object_add(
				o, (const char *)k->data.scalar.value,
				yaml_node_to_json(
					doc, yaml_document_get_node(doc, p->value),
					depth + 1));
		}
		return o;
	default:
		return NULL;
	}
}

/* Reads a YAML (or JSON) file; NULL after logging. */
static struct json_object *read_yaml(const char *path)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	struct json_object *o = NULL;
	FILE *f = fopen(path, "re");

	if (f == NULL) {
		log_error("kubeconfig %s: %s", path, ERRSTR(errno));
		return NULL;
	}
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &doc)) {
		log_error("kubeconfig %s: not valid YAML: %s at line %zu", path,
			  parser.problem ? parser.problem : "error",
			  parser.problem_mark.line + 1);
	} else {
		o = yaml_node_to_json(&doc, yaml_document_get_root_node(&doc),
				      0);
		yaml_document_delete(&doc);
		if (o == NULL || !json_object_is_type(o, json_type_object)) {
			log_error("kubeconfig %s: not a kubeconfig (no mapping "
				  "at the top)", path);
			json_object_put(o);
			o = NULL;
		}
	}
	yaml_parser_delete(&parser);
	fclose(f);
	return o;
}

struct json_object *k8s_field(struct json_object *obj, const char *path)
{
	char key[128];
	const char *dot;

	while (obj != NULL && *path != '\0') {
		dot = strchr(path, '.');
		snprintf(key, sizeof(key), "%.*s",
			 (int)(dot ? (size_t)(dot - path) : strlen(path)), path);
		if (!json_object_is_type(obj, json_type_object) ||
		    !json_object_object_get_ex(obj, key, &obj))
			return NULL;
		path = dot ? dot + 1 : "";
	}
	return obj;
}

const char *k8s_string(struct json_object *obj, const char *path)
{
	struct json_object *v = k8s_field(obj, path);

	return v && json_object_is_type(v, json_type_string)
		? json_object_get_string(v)
		: NULL;
}

/* The element of list (clusters, users, contexts) whose name is name. */
static struct json_object *named(struct json_object *cfg, const char *list,
				 const char *name)
{
	struct json_object *a = k8s_field(cfg, list);
	size_t i;

	if (a == NULL || !json_object_is_type(a, json_type_array) || !name)
		return NULL;
	for (i = 0; i < json_object_array_length(a); i++) {
		struct json_object *e = json_object_array_get_idx(a, i);
		const char *n = k8s_string(e, "name");

		if (n != NULL && strcmp(n, name) == 0)
			return e;
	}
	return NULL;
}

/* Decodes base64 kubeconfig data into a curl blob; 0, EINVAL or ENOMEM. */
static int blob_from_base64(const char *b64, struct curl_blob *blob)
{
	unsigned char *data;
	int err = base64_decode(b64, &data, &blob->len);

	if (err == 0) {
		blob->data = data;
		blob->flags = CURL_BLOB_COPY;
	}
	return err;
}

/* A path in a kubeconfig is relative to the kubeconfig's directory. */
static char *config_path(const char *kubeconfig, const char *p)
{
	const char *slash = strrchr(kubeconfig, '/');
	char *out;

	if (p[0] == '/' || slash == NULL)
		return strdup(p);
	if (asprintf(&out, "%.*s/%s", (int)(slash - kubeconfig), kubeconfig,
		     p) < 0)
		return NULL;
	return out;
}

/* Reads a token file, trimmed; NULL after logging. */
static char *read_token_file(const char *path, const char *what)
{
	int err;
	char *t = file_read_text(path, SMALL_FILE_MAX, &err);

	if (t == NULL)
		log_error("%s %s: %s", what, path,
			  err == ENODATA ? "empty" : ERRSTR(err));
	return t;
}

/* Takes one "data or file" credential of a kubeconfig entry. */
static int take_cred(struct json_object *e, const char *data_key,
		     const char *file_key, const char *kubeconfig,
		     struct curl_blob *blob, char **file)
{
	const char *v;

	if ((v = k8s_string(e, data_key)) != NULL) {
		int err = blob_from_base64(v, blob);

		if (err == EINVAL)
			log_error("kubeconfig %s: %s is not valid base64",
				  kubeconfig, data_key);
		if (err != 0)
			return err;
	} else if ((v = k8s_string(e, file_key)) != NULL) {
		*file = config_path(kubeconfig, v);
		if (*file == NULL)
			return ENOMEM;
		if (access(*file, R_OK) != 0) {
			int err = errno;

			log_error("kubeconfig %s: %s %s: %s", kubeconfig,
				  file_key, *file, ERRSTR(err));
			return err;
		}
	}
	return 0;
}

static int load_kubeconfig(struct k8s_client *k, const char *path)
{
	struct json_object *cfg = read_yaml(path), *ctx, *cl, *us;
	const char *cur, *server, *v;
	int err = EINVAL;

	if (cfg == NULL)
		return EINVAL;
	cur = k8s_string(cfg, "current-context");
	ctx = named(cfg, "contexts", cur);
	if (cur == NULL || ctx == NULL) {
		log_error("kubeconfig %s: %s", path,
			  cur ? "the current-context is not among its contexts"
			      : "no current-context; set one with 'kubectl "
				"config use-context'");
		goto out;
	}
	cl = k8s_field(named(cfg, "clusters",
			     k8s_string(ctx, "context.cluster")), "cluster");
	us = k8s_field(named(cfg, "users", k8s_string(ctx, "context.user")),
		       "user");
	server = k8s_string(cl, "server");
	if (server == NULL) {
		log_error("kubeconfig %s: context '%s' has no cluster with a "
			  "server", path, cur);
		goto out;
	}
	if ((v = k8s_string(cl, "insecure-skip-tls-verify")) != NULL &&
	    strcmp(v, "true") == 0) {
		log_error("kubeconfig %s: cluster of context '%s' sets "
			  "insecure-skip-tls-verify, which cbtfs does not "
			  "do: give it certificate-authority(-data)", path, cur);
		goto out;
	}
	if (k8s_field(us, "exec") != NULL || k8s_field(us, "auth-provider")) {
		log_error("kubeconfig %s: user of context '%s' uses a "
			  "credential plugin (exec/auth-provider), which cbtfs "
			  "does not run: use a token, tokenFile or client "
			  "certificate", path, cur);
		goto out;
	}
	k->server = strdup(server);
	if (asprintf(&k->source, "kubeconfig %s, context %s", path, cur) < 0)
		k->source = NULL;
	if ((v = k8s_string(ctx, "context.namespace")) != NULL)
		k->ns = strdup(v);
	if ((err = take_cred(cl, "certificate-authority-data",
			     "certificate-authority", path, &k->ca,
			     &k->ca_file)) != 0 ||
	    (err = take_cred(us, "client-certificate-data",
			     "client-certificate", path, &k->cert,
			     &k->cert_file)) != 0 ||
	    (err = take_cred(us, "client-key-data", "client-key", path,
			     &k->key, &k->key_file)) != 0)
		goto out;
	if ((v = k8s_string(us, "token")) != NULL)
		k->token = strdup(v);
	else if ((v = k8s_string(us, "tokenFile")) != NULL) {
		char *p = config_path(path, v);

		k->token = p ? read_token_file(p, "kubeconfig tokenFile") : NULL;
		free(p);
		if (k->token == NULL) {
			err = EINVAL;
			goto out;
		}
	}
	err = k->server && k->source ? 0 : ENOMEM;
out:
	json_object_put(cfg);
	return err;
}

static int load_in_cluster(struct k8s_client *k)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");

	k->token = read_token_file(SA_DIR "/token",
				   "in-cluster service account token");
	if (k->token == NULL)
		return EINVAL;
	{
		int err;	/* optional: then --namespace must say it */

		k->ns = file_read_text(SA_DIR "/namespace", SMALL_FILE_MAX,
				       &err);
	}
	k->ca_file = strdup(SA_DIR "/ca.crt");
	if (asprintf(&k->server, strchr(host, ':') ? "https://[%s]:%s"
						    : "https://%s:%s",
		     host, port && *port ? port : "443") < 0)
		k->server = NULL;
	k->source = strdup("in-cluster service account");
	return k->server && k->source && k->ca_file ? 0 : ENOMEM;
}

int k8s_open(const char *kubeconfig, int timeout_s, struct k8s_client **kp)
{
	struct k8s_client *k = calloc(1, sizeof(*k));
	const char *env = getenv("KUBECONFIG"), *home = getenv("HOME");
	char *path = NULL;
	int err;

	if (k == NULL)
		return ENOMEM;
	if (kubeconfig != NULL) {
		err = load_kubeconfig(k, kubeconfig);
	} else if (env != NULL && *env != '\0') {
		char *list = strdup(env), *save = NULL, *p;

		err = ENOENT;
		for (p = strtok_r(list, ":", &save); p && err == ENOENT;
		     p = strtok_r(NULL, ":", &save))
			if (access(p, F_OK) == 0)
				err = load_kubeconfig(k, p);
		if (err == ENOENT)
			log_error("KUBECONFIG=%s: no such file", env);
		free(list);
	} else if (getenv("KUBERNETES_SERVICE_HOST") != NULL &&
		   access(SA_DIR "/token", F_OK) == 0) {
		err = load_in_cluster(k);
	} else if (home != NULL && asprintf(&path, "%s/.kube/config", home) >= 0 &&
		   access(path, F_OK) == 0) {
		err = load_kubeconfig(k, path);
	} else {
		log_error("no Kubernetes configuration: not in a pod "
			  "(KUBERNETES_SERVICE_HOST and %s/token), and no "
			  "--kubeconfig, $KUBECONFIG or ~/.kube/config", SA_DIR);
		err = ENOENT;
	}
	free(path);
	if (err == 0) {
		size_t n = strlen(k->server);

		while (n > 0 && k->server[n - 1] == '/')
			k->server[--n] = '\0';
		k->curl = curl_easy_init();
		if (k->curl == NULL)
			err = ENOMEM;
	}
	if (err != 0) {
		k8s_close(k);
		return err;
	}
	curl_easy_setopt(k->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(k->curl, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(k->curl, CURLOPT_TIMEOUT, (long)timeout_s);
	curl_easy_setopt(k->curl, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(k->curl, CURLOPT_NOPROXY, "*");
	if (k->ca.data)
		curl_easy_setopt(k->curl, CURLOPT_CAINFO_BLOB, &k->ca);
	else if (k->ca_file)
		curl_easy_setopt(k->curl, CURLOPT_CAINFO, k->ca_file);
	if (k->cert.data)
		curl_easy_setopt(k->curl, CURLOPT_SSLCERT_BLOB, &k->cert);
	else if (k->cert_file)
		curl_easy_setopt(k->curl, CURLOPT_SSLCERT, k->cert_file);
	if (k->key.data)
		curl_easy_setopt(k->curl, CURLOPT_SSLKEY_BLOB, &k->key);
	else if (k->key_file)
		curl_easy_setopt(k->curl, CURLOPT_SSLKEY, k->key_file);
	log_debug("Kubernetes API %s (%s)", k->server, k->source);
	*kp = k;
	return 0;
}

void k8s_close(struct k8s_client *k)
{
	if (k == NULL)
		return;
	if (k->curl)
		curl_easy_cleanup(k->curl);
	free(k->server);
	free(k->token);
	free(k->ca.data);
	free(k->cert.data);
	free(k->key.data);
	free(k->ca_file);
	free(k->cert_file);
	free(k->key_file);
	free(k->source);
	free(k->ns);
	free(k);
}

const char *k8s_source(const struct k8s_client *k)
{
	return k->source;
}

const char *k8s_namespace(const struct k8s_client *k)
{
	return k->ns;
}

/* ---------------------------------------------------------------------- */
/* requests */

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	return buf_append(arg, p, size * n) == 0 ? size * n : 0;
}

int k8s_request(struct k8s_client *k, const char *path,
		struct json_object *body, long *status,
		struct json_object **out)
{
	struct curl_slist *hdrs = NULL;
	struct buf b = { 0 };
	char *url = NULL, *auth = NULL;
	CURLcode rc;

	*out = NULL;
	*status = 0;
	if (asprintf(&url, "%s%s", k->server, path) < 0)
		return ENOMEM;
	hdrs = curl_slist_append(hdrs, "Accept: application/json");
	if (k->token != NULL &&
	    asprintf(&auth, "Authorization: Bearer %s", k->token) >= 0)
		hdrs = curl_slist_append(hdrs, auth);
	if (body != NULL) {
		hdrs = curl_slist_append(hdrs,
					 "Content-Type: application/json");
		curl_easy_setopt(k->curl, CURLOPT_COPYPOSTFIELDS,
				 json_object_to_json_string_ext(
					 body, JSON_C_TO_STRING_PLAIN));
	} else {
		curl_easy_setopt(k->curl, CURLOPT_HTTPGET, 1L);
	}
	curl_easy_setopt(k->curl, CURLOPT_URL, url);
	curl_easy_setopt(k->curl, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(k->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(k->curl, CURLOPT_WRITEDATA, &b);
	rc = curl_easy_perform(k->curl);
	curl_slist_free_all(hdrs);
	if (auth != NULL) {
		explicit_bzero(auth, strlen(auth));
		free(auth);
	}
	if (rc != CURLE_OK) {
		log_error("Kubernetes API %s (%s): %s %s: %s%s", k->server,
			  k->source, body ? "POST" : "GET", path,
			  curl_easy_strerror(rc),
			  rc == CURLE_PEER_FAILED_VERIFICATION ||
					  rc == CURLE_SSL_CACERT_BADFILE
				  ? ": check the cluster's CA"
				  : rc == CURLE_SSL_CERTPROBLEM
				  ? ": check the client certificate and key"
				  : "");
		free(url);
		buf_free(&b);
		return EIO;
	}
	curl_easy_getinfo(k->curl, CURLINFO_RESPONSE_CODE, status);
	if (b.len > 0 && buf_append(&b, "", 1) == 0)
		*out = json_tokener_parse((char *)b.data);
	log_debug("Kubernetes API: %s %s: HTTP %ld", body ? "POST" : "GET",
		  path, *status);
	free(url);
	buf_free(&b);
	return 0;
}

const char *k8s_status_message(struct json_object *st)
{
	const char *m = k8s_string(st, "message");

	return m ? m : "no message";
}
