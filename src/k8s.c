/*
 * Kubernetes API client: see k8s.h.
 *
 * A kubeconfig is YAML; it is read with libyaml into json-c objects, so the
 * same accessors serve it and the API's JSON answers.
 *
 * exec credential plugins (client.authentication.k8s.io v1 and v1beta1):
 * the plugin runs before the first request, with KUBERNETES_EXEC_INFO in
 * its environment, stdin from /dev/null unless interactive, stdout and
 * stderr captured; its ExecCredential (a token, or a client certificate
 * and key) is kept until its expirationTimestamp, and fetched again once
 * when the server answers 401.  A new credential opens a new connection.
 *
 * tls-server-name: the request URL names that host, and CURLOPT_CONNECT_TO
 * sends the connection to the server's address, so the TLS name (SNI and
 * the certificate check) is tls-server-name while the TCP peer is the
 * server's.  proxy-url: every request goes through that proxy (http,
 * https, socks5); without one, no proxy is used.
 *
 * Not thread-safe: one client, one thread at a time.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <yaml.h>

#include "k8s.h"
#include "util.h"

#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define SMALL_FILE_MAX (1 << 20)
#define EXEC_OUTPUT_MAX (1 << 20)
#define EXEC_TIMEOUT_S 120
#define EXEC_V1 "client.authentication.k8s.io/v1"
#define EXEC_V1BETA1 "client.authentication.k8s.io/v1beta1"

extern char **environ;

/* users[].user.exec of a kubeconfig, and the credential it last gave */
struct k8s_exec {
	char *command;		/* as given: for messages */
	char *path;		/* what runs: relative to the kubeconfig */
	char **argv;		/* NULL-terminated, argv[0] = command */
	char **env;		/* "NAME=value", NULL-terminated */
	size_t n_env;
	char *api_version;
	char *install_hint;
	char *cluster_info;	/* spec.cluster JSON (provideClusterInfo) */
	int interactive;	/* 0 Never, 1 IfAvailable, 2 Always */
	/* the credential */
	bool have;
	char *token;
	struct curl_blob cert, key;
	time_t expires;		/* 0: none given */
};

struct k8s_client {
	CURL *curl;
	char *server;		/* https://host:port, no trailing '/' */
	char *url_base;		/* server, or named tls-server-name */
	char *tls_server_name;
	struct curl_slist *connect_to;	/* "NAME:PORT:HOST:PORT" */
	char *proxy;		/* proxy-url, or NULL */
	char *token;		/* bearer token, or NULL */
	struct curl_blob ca, cert, key;	/* inline PEM (data NULL: none) */
	char *ca_file, *cert_file, *key_file;
	char *source;		/* for messages */
	char *ns;
	struct k8s_exec *exec;	/* or NULL */
	bool fresh;		/* credential changed: a new connection */
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
				o,
				yaml_node_to_json(
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
					doc,
					yaml_document_get_node(doc, p->value),
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
		log_error("kubeconfig %s: not valid YAML: %s at line %zu",
			  path, parser.problem ? parser.problem : "error",
			  parser.problem_mark.line + 1);
	} else {
		o = yaml_node_to_json(&doc, yaml_document_get_root_node(&doc),
				      0);
		yaml_document_delete(&doc);
		if (o == NULL || !json_object_is_type(o, json_type_object)) {
			log_error(
				"kubeconfig %s: not a kubeconfig (no mapping "
				"at the top)",
				path);
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
			 (int)(dot ? (size_t)(dot - path) : strlen(path)),
			 path);
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

/* ---------------------------------------------------------------------- */
/* Frees a secret string (a token, a header holding one), wiped first. */
static void free_secret(char *s)
{
	if (s == NULL)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

/* Frees a secret blob (a private key), wiped first, and empties it. */
static void free_secret_blob(struct curl_blob *b)
{
	if (b->data != NULL)
		explicit_bzero(b->data, b->len);
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/* exec credential plugins */

static void exec_free(struct k8s_exec *x)
{
	size_t i;

	if (x == NULL)
		return;
	free(x->command);
	free(x->path);
	for (i = 0; x->argv != NULL && x->argv[i] != NULL; i++)
		free(x->argv[i]);
	free(x->argv);
	for (i = 0; i < x->n_env; i++)
		free(x->env[i]);
	free(x->env);
	free(x->api_version);
	free(x->install_hint);
	free(x->cluster_info);
	free_secret(x->token);
	free(x->cert.data);
	free_secret_blob(&x->key);
	free(x);
}

/* Is "NAME=..." env entry e for name (n bytes)? */
static bool env_is(const char *e, const char *name, size_t n)
{
	return strncmp(e, name, n) == 0 && e[n] == '=';
}

static int env_add(struct k8s_exec *x, char *entry)
{
	char **v;

	if (entry == NULL)
		return ENOMEM;
	v = realloc(x->env, (x->n_env + 2) * sizeof(*v));
	if (v == NULL) {
		free(entry);
		return ENOMEM;
	}
	x->env = v;
	x->env[x->n_env++] = entry;
	x->env[x->n_env] = NULL;
	return 0;
}

/*
 * The plugin's environment: ours, with the kubeconfig's env entries and
 * KUBERNETES_EXEC_INFO put over it.  0 or ENOMEM.
 */
static int exec_env(struct k8s_exec *x, struct json_object *envs,
		    const char *info)
{
	size_t i, j, n = envs ? json_object_array_length(envs) : 0;
	int err = 0;

	for (i = 0; environ[i] != NULL && err == 0; i++) {
		bool over = env_is(environ[i], "KUBERNETES_EXEC_INFO", 20);

		for (j = 0; j < n && !over; j++) {
			const char *nm = k8s_string(
				json_object_array_get_idx(envs, j), "name");

			over = nm != NULL &&
			       env_is(environ[i], nm, strlen(nm));
		}
		if (!over)
			err = env_add(x, strdup(environ[i]));
	}
	for (j = 0; j < n && err == 0; j++) {
		struct json_object *e = json_object_array_get_idx(envs, j);
		const char *nm = k8s_string(e, "name");
		const char *val = k8s_string(e, "value");
		char *entry;

		if (nm == NULL || *nm == '\0' || strchr(nm, '=') != NULL)
			continue;
		if (asprintf(&entry, "%s=%s", nm, val ? val : "") < 0)
			entry = NULL;
		err = env_add(x, entry);
	}
	if (err == 0) {
		char *entry;

		if (asprintf(&entry, "KUBERNETES_EXEC_INFO=%s", info) < 0)
			entry = NULL;
		err = env_add(x, entry);
	}
	return err;
}

/*
 * Reads users[].user.exec (ex) for the cluster cl of kubeconfig path.
 * Returns 0, or EINVAL/ENOMEM after logging.
 */
static int exec_load(struct k8s_client *k, struct json_object *ex,
		     struct json_object *cl, const char *path, const char *cur)
{
	struct k8s_exec *x = calloc(1, sizeof(*x));
	struct json_object *args = k8s_field(ex, "args");
	struct json_object *envs = k8s_field(ex, "env");
	struct json_object *info = NULL, *spec, *cluster;
	const char *cmd = k8s_string(ex, "command");
	const char *ver = k8s_string(ex, "apiVersion");
	const char *mode = k8s_string(ex, "interactiveMode");
	const char *pci = k8s_string(ex, "provideClusterInfo");
	const char *v;
	size_t i, n;
	int err = ENOMEM;

	if (x == NULL)
		return ENOMEM;
	k->exec = x;
	if (cmd == NULL || *cmd == '\0') {
		log_error("kubeconfig %s: the exec plugin of context '%s' has "
			  "no command", path, cur);
		return EINVAL;
	}
	if (ver == NULL || (strcmp(ver, EXEC_V1) != 0 &&
			    strcmp(ver, EXEC_V1BETA1) != 0)) {
		log_error("kubeconfig %s: exec plugin %s: apiVersion '%s': "
			  "cbtfs speaks %s and %s", path, cmd,
			  ver ? ver : "(none)", EXEC_V1, EXEC_V1BETA1);
		return EINVAL;
	}
	if (mode == NULL && strcmp(ver, EXEC_V1) == 0) {
		/* v1 has no default (v1beta1: IfAvailable) */
		log_error("kubeconfig %s: exec plugin %s: %s needs "
			  "interactiveMode (Never, IfAvailable or Always)",
			  path, cmd, ver);
		return EINVAL;
	}
	if (mode == NULL || strcmp(mode, "IfAvailable") == 0)
		x->interactive = 1;
	else if (strcmp(mode, "Never") == 0)
		x->interactive = 0;
	else if (strcmp(mode, "Always") == 0)
		x->interactive = 2;
	else {
		log_error("kubeconfig %s: exec plugin %s: interactiveMode "
			  "'%s': use Never, IfAvailable or Always", path, cmd,
			  mode);
		return EINVAL;
	}
	if ((args != NULL && !json_object_is_type(args, json_type_array)) ||
	    (envs != NULL && !json_object_is_type(envs, json_type_array))) {
		log_error("kubeconfig %s: exec plugin %s: args and env must "
			  "be lists", path, cmd);
		return EINVAL;
	}
	x->command = strdup(cmd);
	/* a relative path with a '/' is relative to the kubeconfig */
	x->path = strchr(cmd, '/') ? config_path(path, cmd) : strdup(cmd);
	if ((v = k8s_string(ex, "installHint")) != NULL)
		x->install_hint = strdup(v);
	x->api_version = strdup(ver);
	n = args ? json_object_array_length(args) : 0;
	x->argv = calloc(n + 2, sizeof(*x->argv));
	if (x->command == NULL || x->path == NULL || x->api_version == NULL ||
	    x->argv == NULL)
		return ENOMEM;
	if ((x->argv[0] = strdup(cmd)) == NULL)
		return ENOMEM;
	for (i = 0; i < n; i++) {
		const char *a = json_object_get_string(
			json_object_array_get_idx(args, i));

		if ((x->argv[i + 1] = strdup(a ? a : "")) == NULL)
			return ENOMEM;
	}

	/* KUBERNETES_EXEC_INFO: an ExecCredential with only its spec */
	info = json_object_new_object();
	spec = json_object_new_object();
	json_object_object_add(info, "apiVersion",
			       json_object_new_string(ver));
	json_object_object_add(info, "kind",
			       json_object_new_string("ExecCredential"));
	json_object_object_add(info, "spec", spec);
	json_object_object_add(
		spec, "interactive",
		json_object_new_boolean(x->interactive > 0 && isatty(0)));
	if (pci != NULL && strcmp(pci, "true") == 0) {
		static const char *const keys[] = {
			"server", "tls-server-name",
			"certificate-authority-data", "proxy-url",
			"disable-compression"
		};
		struct json_object *ext = k8s_field(cl, "extensions");

		cluster = json_object_new_object();
		for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			if ((v = k8s_string(cl, keys[i])) != NULL)
				json_object_object_add(
					cluster, keys[i],
					json_object_new_string(v));
		/* extensions[] "client.authentication.k8s.io/exec" */
		for (i = 0; ext && json_object_is_type(ext, json_type_array) &&
			    i < json_object_array_length(ext); i++) {
			struct json_object *e =
				json_object_array_get_idx(ext, i);
			const char *nm = k8s_string(e, "name");

			if (nm && strcmp(nm, "client.authentication.k8s.io/"
					 "exec") == 0 &&
			    k8s_field(e, "extension") != NULL)
				json_object_object_add(
					cluster, "config",
					json_object_get(
						k8s_field(e, "extension")));
		}
		json_object_object_add(spec, "cluster", cluster);
	}
	err = exec_env(x, envs, json_object_to_json_string_ext(
					info, JSON_C_TO_STRING_PLAIN));
	json_object_put(info);
	return err;
}

/* Appends what a file descriptor has to b (up to max); false at EOF. */
static bool drain(int fd, struct buf *b, size_t max)
{
	char tmp[4096];
	ssize_t r = read(fd, tmp, sizeof(tmp));

	if (r <= 0)
		return r < 0 && errno == EINTR;
	if (b->len < max)
		buf_append(b, tmp, (size_t)r < max - b->len
					   ? (size_t)r : max - b->len);
	return true;
}

/* The executable a bare command name runs, from $PATH (as execvp would
 * pick it); malloc'd, or NULL. */
static char *path_lookup(const char *cmd)
{
	const char *p = getenv("PATH");
	char *list, *dir, *save = NULL, *full = NULL;

	if ((list = strdup(p && *p ? p : "/usr/local/bin:/usr/bin:/bin")) ==
	    NULL)
		return NULL;
	for (dir = strtok_r(list, ":", &save); dir != NULL;
	     dir = strtok_r(NULL, ":", &save)) {
		if (asprintf(&full, "%s/%s", *dir ? dir : ".", cmd) < 0) {
			full = NULL;
			break;
		}
		if (access(full, X_OK) == 0)
			break;
		free(full);
		full = NULL;
	}
	free(list);
	return full;
}

/*
 * Runs the plugin; returns 0 with its exit status in *status (-1: killed,
 * by signal *sig or the time-out) and its output, or an errno after
 * logging why it could not run.
 */
static int exec_spawn(struct k8s_client *k, struct buf *out,
		      struct buf *errout, int *status, int *sig)
{
	struct k8s_exec *x = k->exec;
	posix_spawn_file_actions_t fa;
	int po[2] = { -1, -1 }, pe[2] = { -1, -1 }, st = 0, rc;
	bool open_o = true, open_e = true;
	double deadline = now_seconds() + EXEC_TIMEOUT_S;
	char *found = NULL;
	pid_t pid;

	*status = -1;
	*sig = 0;
	if (strchr(x->path, '/') == NULL &&
	    (found = path_lookup(x->path)) == NULL) {
		log_error("%s: exec plugin %s: not found in $PATH%s%s",
			  k->source, x->command, x->install_hint ? ": " : "",
			  x->install_hint ? x->install_hint : "");
		return ENOENT;
	}
	if (pipe2(po, O_CLOEXEC) != 0 || pipe2(pe, O_CLOEXEC) != 0) {
		rc = errno;
		log_error("%s: exec plugin %s: pipe: %s", k->source,
			  x->command, ERRSTR(rc));
		goto close;
	}
	posix_spawn_file_actions_init(&fa);
	if (!(x->interactive > 0 && isatty(0)))
		posix_spawn_file_actions_addopen(&fa, 0, "/dev/null",
						 O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, po[1], 1);
	posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
	rc = posix_spawn(&pid, found ? found : x->path, &fa, NULL, x->argv,
			 x->env);
	posix_spawn_file_actions_destroy(&fa);
	close(po[1]);
	close(pe[1]);
	po[1] = pe[1] = -1;
	if (rc != 0) {
		log_error("%s: exec plugin %s: %s%s%s", k->source, x->command,
			  ERRSTR(rc), x->install_hint ? ": " : "",
			  x->install_hint ? x->install_hint : "");
		goto close;
	}
	while (open_o || open_e) {
		struct pollfd pf[2] = { { po[0], POLLIN, 0 },
					{ pe[0], POLLIN, 0 } };
		double left = deadline - now_seconds();

		if (left <= 0) {
			kill(pid, SIGKILL);
			break;
		}
		pf[0].fd = open_o ? po[0] : -1;
		pf[1].fd = open_e ? pe[0] : -1;
		if (poll(pf, 2, (int)(left * 1000) + 1) < 0 && errno != EINTR)
			break;
		if (pf[0].revents)
			open_o = drain(po[0], out, EXEC_OUTPUT_MAX);
		if (pf[1].revents)
			open_e = drain(pe[0], errout, EXEC_OUTPUT_MAX);
	}
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(st))
		*status = WEXITSTATUS(st);
	else if (WIFSIGNALED(st))
		*sig = WTERMSIG(st);
	rc = buf_append(out, "", 1) == 0 && buf_append(errout, "", 1) == 0
		     ? 0 : ENOMEM;
	out->len--;
	errout->len--;
close:
	free(found);
	if (po[0] >= 0)
		close(po[0]);
	if (pe[0] >= 0)
		close(pe[0]);
	if (po[1] >= 0)
		close(po[1]);
	if (pe[1] >= 0)
		close(pe[1]);
	return rc;
}

/* The plugin's stderr for a message: trimmed, its last 1000 bytes. */
static const char *stderr_text(struct buf *b)
{
	char *t;
	size_t n;

	if (b->data == NULL)
		return "";
	t = (char *)b->data;
	n = strlen(t);
	while (n > 0 && (t[n - 1] == '\n' || t[n - 1] == ' ' ||
			 t[n - 1] == '\r' || t[n - 1] == '\t'))
		t[--n] = '\0';
	return n > 1000 ? t + n - 1000 : t;
}

/* Takes the plugin's ExecCredential; 0 or EINVAL/ENOMEM after logging. */
static int exec_take(struct k8s_client *k, const char *text)
{
	struct k8s_exec *x = k->exec;
	struct json_object *o = json_tokener_parse(text);
	const char *kind = k8s_string(o, "kind");
	const char *ver = k8s_string(o, "apiVersion");
	const char *tok = k8s_string(o, "status.token");
	const char *cert = k8s_string(o, "status.clientCertificateData");
	const char *key = k8s_string(o, "status.clientKeyData");
	const char *exp = k8s_string(o, "status.expirationTimestamp");
	const char *what = NULL;
	time_t t = 0;
	int err = EINVAL;

	if (o == NULL)
		what = "its output is not JSON";
	else if (kind == NULL || strcmp(kind, "ExecCredential") != 0)
		what = "its output is not an ExecCredential";
	else if (ver == NULL || strcmp(ver, x->api_version) != 0)
		what = "its ExecCredential has another apiVersion than the "
		       "kubeconfig asks for";
	else if (k8s_field(o, "status") == NULL)
		what = "its ExecCredential has no status";
	else if ((cert == NULL) != (key == NULL))
		what = "its ExecCredential has only one of "
		       "clientCertificateData and clientKeyData";
	else if (tok == NULL && cert == NULL)
		what = "its ExecCredential has neither a token nor a client "
		       "certificate";
	else if (exp != NULL && (t = time_parse_rfc3339(exp)) == -1)
		what = "its expirationTimestamp is not an RFC 3339 time";
	if (what != NULL) {
		log_error("%s: exec plugin %s: %s", k->source, x->command,
			  what);
		goto out;
	}
	free_secret(x->token);
	free(x->cert.data);
	free_secret_blob(&x->key);
	memset(&x->cert, 0, sizeof(x->cert));
	x->token = tok ? strdup(tok) : NULL;
	if (cert != NULL) {
		x->cert.data = strdup(cert);
		x->cert.len = strlen(cert);
		x->cert.flags = CURL_BLOB_COPY;
		x->key.data = strdup(key);
		x->key.len = strlen(key);
		x->key.flags = CURL_BLOB_COPY;
	}
	err = ENOMEM;
	if ((tok && x->token == NULL) ||
	    (cert && (x->cert.data == NULL || x->key.data == NULL)))
		goto out;
	x->expires = t;
	x->have = true;
	/* the request reads k->token; the handle keeps cert and key */
	free(k->token);
	k->token = x->token ? strdup(x->token) : NULL;
	if (x->token && k->token == NULL)
		goto out;
	curl_easy_setopt(k->curl, CURLOPT_SSLCERT_BLOB,
			 x->cert.data ? &x->cert : NULL);
	curl_easy_setopt(k->curl, CURLOPT_SSLKEY_BLOB,
			 x->key.data ? &x->key : NULL);
	k->fresh = true;
	log_debug("%s: exec plugin %s gave a %s%s", k->source, x->command,
		  x->token ? "token" : "client certificate",
		  t ? ", with an expiry" : "");
	err = 0;
out:
	json_object_put(o);
	return err;
}

/*
 * Makes sure the plugin's credential is there and not expired, running
 * it if not (or if force).  0 or an errno after logging.
 */
static int exec_credential(struct k8s_client *k, bool force)
{
	struct k8s_exec *x = k->exec;
	struct buf out = { 0 }, errout = { 0 };
	int err, status, sig;

	if (x->have && !force && (x->expires == 0 || time(NULL) < x->expires))
		return 0;
	if (x->interactive == 2 && !isatty(0)) {
		log_error("%s: exec plugin %s wants a terminal "
			  "(interactiveMode Always), and there is none",
			  k->source, x->command);
		return EACCES;
	}
	err = exec_spawn(k, &out, &errout, &status, &sig);
	if (err == 0 && status != 0) {
		const char *e = stderr_text(&errout);

		if (sig != 0)
			log_error("%s: exec plugin %s was killed by signal "
				  "%d%s%s", k->source, x->command, sig,
				  *e ? ": " : "", e);
		else if (status < 0)
			log_error("%s: exec plugin %s ran for more than %d s",
				  k->source, x->command, EXEC_TIMEOUT_S);
		else
			log_error("%s: exec plugin %s failed with exit status "
				  "%d%s%s", k->source, x->command, status,
				  *e ? ": " : "", e);
		err = EACCES;
	} else if (err == 0) {
		err = exec_take(k, out.data ? (char *)out.data : "");
		if (err == EINVAL)
			err = EACCES;
	}
	if (out.data != NULL)
		explicit_bzero(out.data, out.len);
	buf_free(&out);
	buf_free(&errout);
	return err;
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
			  "do: give it certificate-authority(-data)",
			  path, cur);
		goto out;
	}
	if (k8s_field(us, "auth-provider") != NULL) {
		log_error("kubeconfig %s: user of context '%s' uses an "
			  "auth-provider, which Kubernetes removed and cbtfs "
			  "does not run: use an exec plugin, a token, "
			  "tokenFile or client certificate", path, cur);
		goto out;
	}
	k->server = strdup(server);
	if (asprintf(&k->source, "kubeconfig %s, context %s", path, cur) < 0)
		k->source = NULL;
	if ((v = k8s_string(cl, "tls-server-name")) != NULL && *v &&
	    (k->tls_server_name = strdup(v)) == NULL)
		goto out;
	if ((v = k8s_string(cl, "proxy-url")) != NULL && *v) {
		if (strncmp(v, "http://", 7) != 0 &&
		    strncmp(v, "https://", 8) != 0 &&
		    strncmp(v, "socks5://", 9) != 0) {
			log_error("kubeconfig %s: cluster of context '%s': "
				  "proxy-url '%s' must begin with http://, "
				  "https:// or socks5://", path, cur, v);
			goto out;
		}
		if ((k->proxy = strdup(v)) == NULL)
			goto out;
	}
	if (k8s_field(us, "exec") != NULL &&
	    (err = exec_load(k, k8s_field(us, "exec"), cl, path, cur)) != 0)
		goto out;
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

		k->token =
			p ? read_token_file(p, "kubeconfig tokenFile") : NULL;
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

/*
 * tls-server-name: requests name that host (SNI, certificate check) and
 * are connected to the server's host and port.  0, or EINVAL/ENOMEM
 * after logging.
 */
static int tls_server_name(struct k8s_client *k)
{
	CURLU *u;
	char *host = NULL, *port = NULL, *url = NULL, *line = NULL;
	int err = ENOMEM;
	size_t n;

	if (k->tls_server_name == NULL)
		return (k->url_base = strdup(k->server)) ? 0 : ENOMEM;
	if ((u = curl_url()) == NULL)
		return ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, k->server, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) !=
		    CURLUE_OK ||
	    curl_url_set(u, CURLUPART_HOST, k->tls_server_name, 0) !=
		    CURLUE_OK ||
	    curl_url_get(u, CURLUPART_URL, &url, 0) != CURLUE_OK) {
		log_error("%s: server %s with tls-server-name %s: not a "
			  "valid URL", k->source, k->server,
			  k->tls_server_name);
		err = EINVAL;
		goto out;
	}
	if (asprintf(&line, "%s:%s:%s:%s", k->tls_server_name, port, host,
		     port) < 0)
		goto out;
	if ((k->url_base = strdup(url)) == NULL)
		goto out;
	n = strlen(k->url_base);
	while (n > 0 && k->url_base[n - 1] == '/')
		k->url_base[--n] = '\0';
	k->connect_to = curl_slist_append(NULL, line);
	err = k->connect_to ? 0 : ENOMEM;
out:
	free(line);
	curl_free(host);
	curl_free(port);
	curl_free(url);
	curl_url_cleanup(u);
	return err;
}

static int open_client(const char *kubeconfig, int timeout_s,
		       struct k8s_client **kp)
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
	} else if (home != NULL &&
		   asprintf(&path, "%s/.kube/config", home) >= 0 &&
		   access(path, F_OK) == 0) {
		err = load_kubeconfig(k, path);
	} else {
		log_error("no Kubernetes configuration: not in a pod "
			  "(KUBERNETES_SERVICE_HOST and %s/token), and no "
			  "--kubeconfig, $KUBECONFIG or ~/.kube/config",
			  SA_DIR);
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
	if (err == 0)
		err = tls_server_name(k);
	if (err != 0) {
		k8s_close(k);
		return err;
	}
	curl_easy_setopt(k->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(k->curl, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(k->curl, CURLOPT_TIMEOUT, (long)timeout_s);
	curl_easy_setopt(k->curl, CURLOPT_PROTOCOLS_STR, "https,http");
	if (k->proxy != NULL) {
		curl_easy_setopt(k->curl, CURLOPT_PROXY, k->proxy);
		curl_easy_setopt(k->curl, CURLOPT_NOPROXY, "");
	} else {
		curl_easy_setopt(k->curl, CURLOPT_NOPROXY, "*");
	}
	if (k->connect_to != NULL)
		curl_easy_setopt(k->curl, CURLOPT_CONNECT_TO, k->connect_to);
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

struct k8s_client *k8s_open(const char *kubeconfig, int timeout_s, int *errp)
{
	struct k8s_client *k = NULL;

	*errp = open_client(kubeconfig, timeout_s, &k);
	return *errp == 0 ? k : NULL;
}

void k8s_close(struct k8s_client *k)
{
	if (k == NULL)
		return;
	if (k->curl)
		curl_easy_cleanup(k->curl);
	free(k->server);
	free(k->url_base);
	free(k->tls_server_name);
	curl_slist_free_all(k->connect_to);
	free(k->proxy);
	exec_free(k->exec);
	free_secret(k->token);
	free(k->ca.data);
	free(k->cert.data);
	free_secret_blob(&k->key);
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
	return k8s_call(k, body != NULL ? "POST" : "GET", path, body, status,
			out, NULL);
}

const char *k8s_status_message(struct json_object *st)
{
	const char *m = k8s_string(st, "message");

	return m ? m : "no message";
}

/* ---------------------------------------------------------------------- */
/* requests with any method, and answers that are not JSON (pod logs) */

static int call_once(struct k8s_client *k, const char *method,
		     const char *path, struct json_object *body, long *status,
		     struct buf *b)
{
	struct curl_slist *hdrs = NULL;
	char *url = NULL, *auth = NULL;
	CURLcode rc;

	*status = 0;
	if (asprintf(&url, "%s%s", k->url_base, path) < 0)
		return ENOMEM;
	curl_easy_setopt(k->curl, CURLOPT_FRESH_CONNECT, k->fresh ? 1L : 0L);
	k->fresh = false;
	hdrs = curl_slist_append(hdrs, "Accept: application/json, */*");
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
	curl_easy_setopt(k->curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(k->curl, CURLOPT_URL, url);
	curl_easy_setopt(k->curl, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(k->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(k->curl, CURLOPT_WRITEDATA, b);
	rc = curl_easy_perform(k->curl);
	curl_easy_setopt(k->curl, CURLOPT_CUSTOMREQUEST, NULL);
	curl_slist_free_all(hdrs);
	free_secret(auth);
	if (rc != CURLE_OK) {
		log_error("Kubernetes API %s (%s): %s %s: %s%s", k->server,
			  k->source, method, path, curl_easy_strerror(rc),
			  rc == CURLE_PEER_FAILED_VERIFICATION ||
					  rc == CURLE_SSL_CACERT_BADFILE
				  ? ": check the cluster's CA"
				  : rc == CURLE_SSL_CERTPROBLEM
				  ? ": check the client certificate and key"
				  : "");
		free(url);
		return EIO;
	}
	curl_easy_getinfo(k->curl, CURLINFO_RESPONSE_CODE, status);
	log_debug("Kubernetes API: %s %s: HTTP %ld", method, path, *status);
	free(url);
	return 0;
}

int k8s_call(struct k8s_client *k, const char *method, const char *path,
	     struct json_object *body, long *status, struct json_object **out,
	     char **text)
{
	struct buf b = { 0 };
	int err;

	if (out != NULL)
		*out = NULL;
	if (text != NULL)
		*text = NULL;
	if (k->exec != NULL && (err = exec_credential(k, false)) != 0)
		return err;
	err = call_once(k, method, path, body, status, &b);
	if (err == 0 && *status == 401 && k->exec != NULL) {
		buf_free(&b);
		b = (struct buf){ 0 };
		if ((err = exec_credential(k, true)) == 0)
			err = call_once(k, method, path, body, status, &b);
	}
	if (err == 0 && buf_append(&b, "", 1) != 0)
		err = ENOMEM;
	if (err == 0 && out != NULL && b.len > 1)
		*out = json_tokener_parse((char *)b.data);
	if (err == 0 && text != NULL) {
		*text = (char *)b.data;
		return 0;
	}
	buf_free(&b);
	return err;
}
