/*
 * A small Kubernetes API client: finds the API server and credentials the
 * way kubectl and client-go do, and makes JSON requests to it.
 *
 * Configuration, first that applies:
 *   1. the kubeconfig file given (--kubeconfig),
 *   2. $KUBECONFIG (the first existing file of a ':' separated list),
 *   3. in a pod: $KUBERNETES_SERVICE_HOST/_PORT with the service account's
 *      token and CA under /var/run/secrets/kubernetes.io/serviceaccount,
 *   4. ~/.kube/config.
 * A kubeconfig's current context names the cluster (server, CA as a file or
 * inline data, tls-server-name, proxy-url) and the user (token, tokenFile,
 * client certificate and key as files or inline data, or an exec
 * credential plugin of client.authentication.k8s.io/v1 or v1beta1, whose
 * token or client certificate is kept until its expirationTimestamp and
 * fetched again once when the server answers 401).
 *
 * Returns and logs: functions that can fail return 0 or a positive errno
 * after logging what failed; HTTP errors are the exception, returned as a
 * status for the caller to judge (k8s_request()).  The strings and
 * objects that k8s_source(), k8s_namespace(), k8s_status_message(),
 * k8s_field() and k8s_string() return are borrowed: they live as long as
 * the client or the object they come from.
 */
#ifndef CBTFS_K8S_H
#define CBTFS_K8S_H

#include <json-c/json.h>

struct k8s_client;

/* The client, or NULL with *errp set after logging what is missing or
 * wrong. */
struct k8s_client *k8s_open(const char *kubeconfig, int timeout_s,
			    int *errp);
void k8s_close(struct k8s_client *k);

/* Where the configuration came from, for messages: "in-cluster", or the
 * kubeconfig path and context. */
const char *k8s_source(const struct k8s_client *k);
/* The namespace of the context or of the pod, or NULL. */
const char *k8s_namespace(const struct k8s_client *k);

/*
 * GET (body NULL) or POST (body a JSON object) path, e.g.
 * "/api/v1/namespaces/ns/serviceaccounts/sa/token".  Returns 0 with the
 * HTTP status in *status and the answer in *out (NULL unless it is JSON;
 * the caller puts it); or an errno after logging a transport failure or
 * a failing exec plugin (its exit status and stderr).
 * HTTP errors are not logged: the caller knows what the request meant.
 */
int k8s_request(struct k8s_client *k, const char *path,
		struct json_object *body, long *status,
		struct json_object **out);

/*
 * Like k8s_request, with any method ("GET", "POST", "DELETE", ...) and, if
 * text is not NULL, the whole answer as a string in *text (the caller
 * frees it; a pod log is plain text).  out may be NULL.
 */
int k8s_call(struct k8s_client *k, const char *method, const char *path,
	     struct json_object *body, long *status, struct json_object **out,
	     char **text);

/* The "message" of a Kubernetes Status object, or a stand-in. */
const char *k8s_status_message(struct json_object *status_obj);

/* Looks up a dotted path ("status.readyToUse") in obj; NULL if absent. */
struct json_object *k8s_field(struct json_object *obj, const char *path);
/* The string at path, or NULL if absent or not a string. */
const char *k8s_string(struct json_object *obj, const char *path);

#endif
