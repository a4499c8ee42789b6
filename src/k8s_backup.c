/*
 * cbtfs-k8s's work: see k8s_backup.h.
 *
 * A backup of one PVC NS/P, run by one worker thread with its own client:
 *   1. the PVC (volumeMode Block, else skipped), its StorageClass's
 *      provisioner (the CSI driver) and the VolumeSnapshotClass (given, or
 *      the one annotated as the driver's default);
 *   2. VolumeSnapshot P-RUN, until status.readyToUse (or status.error, or
 *      the snapshot timeout);
 *   3. a temporary block PVC cbtfs-RUN-I from it, and a Job of the same
 *      name running cbtfs-ingest --changes k8s on it as /dev/xvda, with the
 *      volume's newest backup as --base;
 *   4. the Job's end, its pod's log (the ingest's JSON summary ends it);
 *   5. Job and temporary PVC deleted; of the VolumeSnapshots of P this
 *      tool made, the newest keep_snapshots committed ones stay.
 * A failure at any step deletes what the step made and the snapshot.
 *
 * The workers share only the job list (a mutex) and the repository's
 * snapshot list read once at the start (read-only after).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "k8s.h"
#include "k8s_backup.h"
#include "status.h"
#include "util.h"

#define MANAGED_BY "app.kubernetes.io/managed-by"
#define ME "cbtfs-k8s"
#define COMPONENT "app.kubernetes.io/component"
#define RUN_LABEL "cbtfs.io/run"
#define PVC_LABEL "cbtfs.io/pvc"
#define VOLUME_ANNOTATION "cbtfs.io/volume"
#define SNAP_API "/apis/snapshot.storage.k8s.io/v1"
#define DEFAULT_CLASS_ANNOTATION \
	"snapshot.storage.kubernetes.io/is-default-class"

extern char **environ;

/* ---------------------------------------------------------------------- */
/* small JSON and API helpers */

/* The length of an array; 0 for anything else (an answer may lack it). */
static size_t alen(struct json_object *a)
{
	return json_object_is_type(a, json_type_array)
		       ? json_object_array_length(a)
		       : 0;
}

/* The value of label key of object o, or NULL (k8s_field splits on dots,
 * which label keys hold). */
static const char *label(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;

	if (!json_object_object_get_ex(k8s_field(o, "metadata.labels"), key,
				       &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static struct json_object *js(const char *s)
{
	return s ? json_object_new_string(s) : NULL;
}

/* An object from key, value pairs ending with NULL; NULL values are left
 * out (and not leaked: there are none). */
static struct json_object *jobj(const char *key, ...)
{
	struct json_object *o = json_object_new_object();
	va_list ap;

	va_start(ap, key);
	while (key != NULL) {
		struct json_object *v = va_arg(ap, struct json_object *);

		if (v != NULL)
			json_object_object_add(o, key, v);
		key = va_arg(ap, const char *);
	}
	va_end(ap);
	return o;
}

static struct json_object *jarr(struct json_object *first, ...)
{
	struct json_object *a = json_object_new_array();
	va_list ap;

	va_start(ap, first);
	while (first != NULL) {
		json_object_array_add(a, first);
		first = va_arg(ap, struct json_object *);
	}
	va_end(ap);
	return a;
}

static char *escape(const char *s)
{
	char *e = curl_easy_escape(NULL, s, 0);
	char *r = e ? strdup(e) : NULL;

	curl_free(e);
	return r;
}

/* What failed, for the report: a malloc'd message. */
static char *msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *msg(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

/*
 * One API call; want is the status that means success (and 404 is also
 * accepted when ok404).  Returns 0, or an errno with *why set (malloc'd,
 * "METHOD PATH: HTTP N: message").
 */
static int api(struct k8s_client *k, const char *method, const char *path,
	       struct json_object *body, long want, bool ok404,
	       struct json_object **out, char **text, char **why)
{
	struct json_object *o = NULL;
	const char *reason;
	long status;
	int err;

	err = k8s_call(k, method, path, body, &status, &o, text);
	if (err != 0) {
		*why = msg("%s %s: %s", method, path, ERRSTR(err));
		return err;
	}
	if (status == want || (status >= 200 && status < 300 &&
			       want >= 200 && want < 300) ||
	    (ok404 && status == 404)) {
		if (out != NULL)
			*out = o;
		else
			json_object_put(o);
		return status == 404 ? ENOENT : 0;
	}
	*why = msg("%s %s: HTTP %ld: %s", method, path, status,
		   k8s_status_message(o));
	/* a 409 is also a conflict of versions; its reason tells */
	reason = k8s_string(o, "reason");
	err = reason != NULL && strcmp(reason, "AlreadyExists") == 0
		      ? EEXIST
		      : http_status_to_errno(status);
	json_object_put(o);
	if (text != NULL) {
		free(*text);
		*text = NULL;
	}
	return err != 0 ? err : EIO;
}

static void del(struct k8s_client *k, const char *path)
{
	/* Background: the Job's pods go with it */
	struct json_object *body = jobj("kind", js("DeleteOptions"),
					"apiVersion", js("v1"),
					"propagationPolicy", js("Background"),
					NULL);
	char *why = NULL;

	if (api(k, "DELETE", path, body, 200, true, NULL, NULL, &why) != 0 &&
	    why != NULL)
		log_warn("cannot delete %s: %s", path, why);
	json_object_put(body);
	free(why);
}

/* The body is consumed by api(): wrap so that callers may build inline. */
static int post(struct k8s_client *k, const char *path,
		struct json_object *body, char **why)
{
	int err = api(k, "POST", path, body, 201, false, NULL, NULL, why);

	json_object_put(body);
	return err;
}

static void del_put(struct k8s_client *k, const char *path)
{
	del(k, path);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------------- */
/* the repository's snapshots, through cbtfs-repo snapshots --json */

/*
 * Runs REPO_TOOL snapshots --json REPO and returns the array (caller
 * puts), or NULL after logging.  cbtfs-repo's messages go to our stderr.
 */
static struct json_object *repo_snapshots(const struct k8s_job_conf *c)
{
	char *argv[] = { (char *)c->repo_tool, "snapshots", "--json",
			 (char *)c->repo, NULL };
	posix_spawn_file_actions_t fa;
	struct buf b = { 0 };
	struct json_object *arr = NULL;
	int fds[2], st, err;
	pid_t pid;
	char tmp[65536];
	ssize_t n;

	if (pipe2(fds, O_CLOEXEC) != 0) {
		log_error("pipe: %s", ERRSTR(errno));
		return NULL;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
	err = posix_spawnp(&pid, c->repo_tool, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(fds[1]);
	if (err != 0) {
		log_error("cannot run %s: %s", c->repo_tool, ERRSTR(err));
		close(fds[0]);
		return NULL;
	}
	while ((n = read(fds[0], tmp, sizeof(tmp))) > 0 ||
	       (n < 0 && errno == EINTR))
		if (n > 0 && buf_append(&b, tmp, (size_t)n) != 0)
			break;
	close(fds[0]);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0 &&
	    buf_append(&b, "", 1) == 0)
		arr = json_tokener_parse((char *)b.data);
	buf_free(&b);
	if (arr == NULL || !json_object_is_type(arr, json_type_array)) {
		log_error("%s snapshots --json %s failed: the repository must "
			  "exist (cbtfs-repo init) and be readable here",
			  c->repo_tool, c->repo);
		json_object_put(arr);
		return NULL;
	}
	return arr;
}

/* The newest snapshot of volume in snaps (by creation time), or NULL. */
static struct json_object *newest_of(struct json_object *snaps,
				     const char *volume)
{
	struct json_object *best = NULL;
	const char *bt = "";
	size_t i;

	for (i = 0; i < alen(snaps); i++) {
		struct json_object *s = json_object_array_get_idx(snaps, i);
		const char *v = k8s_string(s, "volume");
		const char *t = k8s_string(s, "created");

		if (v == NULL || strcmp(v, volume) != 0)
			continue;
		if (t == NULL)
			t = "";
		if (best == NULL || strcmp(t, bt) >= 0) {
			best = s;
			bt = t;
		}
	}
	return best;
}

static struct json_object *find_snap(struct json_object *snaps,
				     const char *volume, const char *name)
{
	size_t i;

	for (i = 0; i < alen(snaps); i++) {
		struct json_object *s = json_object_array_get_idx(snaps, i);
		const char *v = k8s_string(s, "volume");
		const char *n = k8s_string(s, "snapshot");

		if (v && n && !strcmp(v, volume) && !strcmp(n, name))
			return s;
	}
	return NULL;
}

/* ---------------------------------------------------------------------- */
/* Jobs */

static struct json_object *labels(const char *component, const char *run,
				  const char *pvc)
{
	return jobj(MANAGED_BY, js(ME), COMPONENT, js(component), RUN_LABEL,
		    js(run), PVC_LABEL, js(pvc), NULL);
}

/* An object cbtfs-k8s makes: its name, namespace and labels (see labels()),
 * annotations (NULL: none) and spec. */
static struct json_object *object(const char *api_version, const char *kind,
				  const char *name, const char *ns,
				  struct json_object *labels,
				  struct json_object *annotations,
				  struct json_object *spec)
{
	return jobj("apiVersion", js(api_version), "kind", js(kind),
		    "metadata",
		    jobj("name", js(name), "namespace", js(ns), "labels",
			 labels, "annotations", annotations, NULL),
		    "spec", spec, NULL);
}

/* The spec of a block PVC of size bytes (a Kubernetes quantity) in
 * storage class sc (NULL: the default), made from data_source (NULL:
 * empty). */
static struct json_object *block_pvc_spec(const char *sc, const char *size,
					  struct json_object *data_source)
{
	return jobj("accessModes", jarr(js("ReadWriteOnce"), NULL),
		    "volumeMode", js("Block"), "storageClassName", js(sc),
		    "resources",
		    jobj("requests", jobj("storage", js(size), NULL), NULL),
		    "dataSource", data_source, NULL);
}

/* The pod security context every Job of ours has: see k8s/README.md. */
static struct json_object *container_security(void)
{
	return jobj("privileged", json_object_new_boolean(0),
		    "allowPrivilegeEscalation", json_object_new_boolean(0),
		    "readOnlyRootFilesystem", json_object_new_boolean(1),
		    /* the device node of a block PVC is root's (0660) */
		    "runAsUser", json_object_new_int(0),
		    "capabilities", jobj("drop", jarr(js("ALL"), NULL), NULL),
		    "seccompProfile", jobj("type", js("RuntimeDefault"), NULL),
		    NULL);
}

/* Environment the Jobs get from ours: where the store is, not secrets. */
static struct json_object *job_env(void)
{
	static const char *const pass[] = {
		"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
		"AWS_DEFAULT_REGION", "AWS_CA_BUNDLE", NULL
	};
	struct json_object *env = jarr(
		jobj("name", js("XDG_CACHE_HOME"), "value", js("/cache"),
		     NULL),
		NULL);
	size_t i;

	for (i = 0; pass[i] != NULL; i++) {
		const char *v = getenv(pass[i]);

		if (v != NULL && *v != '\0')
			json_object_array_add(env, jobj("name", js(pass[i]),
							"value", js(v), NULL));
	}
	return env;
}

/*
 * A Job NAME in NS running argv (NULL-terminated) in the image, with
 * claim attached as the raw device dev.  component: backup or restore.
 */
static struct json_object *job_new(const struct k8s_job_conf *c,
				   const char *ns, const char *name,
				   const char *component, const char *run,
				   const char *pvc_label, const char *claim,
				   const char *dev, const char *sa,
				   const char *const *argv)
{
	struct json_object *cmd = json_object_new_array();
	struct json_object *args = json_object_new_array();
	struct json_object *env_from = NULL;
	size_t i;

	json_object_array_add(cmd, js(argv[0]));
	for (i = 1; argv[i] != NULL; i++)
		json_object_array_add(args, js(argv[i]));
	if (c->s3_secret != NULL)
		env_from = jarr(jobj("secretRef",
				     jobj("name", js(c->s3_secret), "optional",
					  json_object_new_boolean(1), NULL),
				     NULL),
				NULL);
	return object(
		"batch/v1", "Job", name, ns,
		labels(component, run, pvc_label), NULL,
		jobj("backoffLimit", json_object_new_int(0),
		     /* what a killed cbtfs-k8s leaves goes in a day anyway */
		     "ttlSecondsAfterFinished", json_object_new_int(86400),
		     "activeDeadlineSeconds",
		     json_object_new_int(c->timeout_s),
		     "template",
		     jobj("metadata",
			  jobj("labels", labels(component, run, pvc_label),
			       NULL),
			  "spec",
			  jobj("restartPolicy", js("Never"),
			       "serviceAccountName", js(sa),
			       "automountServiceAccountToken",
			       json_object_new_boolean(sa != NULL),
			       "securityContext",
			       jobj("seccompProfile",
				    jobj("type", js("RuntimeDefault"), NULL),
				    NULL),
			       "containers",
			       jarr(jobj("name", js(component), "image",
					 js(c->image), "imagePullPolicy",
					 js(c->pull_policy), "command", cmd,
					 "args", args, "env", job_env(),
					 "envFrom", env_from,
					 "securityContext",
					 container_security(),
					 "resources",
					 jobj("requests",
					      jobj("cpu", js("100m"), "memory",
						   js("128Mi"), NULL),
					      "limits",
					      jobj("memory", js("1Gi"), NULL),
					      NULL),
					 "volumeDevices",
					 jarr(jobj("name", js("volume"),
						   "devicePath", js(dev),
						   NULL),
					      NULL),
					 "volumeMounts",
					 jarr(jobj("name", js("cache"),
						   "mountPath", js("/cache"),
						   NULL),
					      jobj("name", js("tmp"),
						   "mountPath", js("/tmp"),
						   NULL),
					      NULL),
					 NULL),
				    NULL),
			       "volumes",
			       jarr(jobj("name", js("volume"),
					 "persistentVolumeClaim",
					 jobj("claimName", js(claim), NULL),
					 NULL),
				    jobj("name", js("cache"), "emptyDir",
					 jobj("sizeLimit", js("1Gi"), NULL),
					 NULL),
				    jobj("name", js("tmp"), "emptyDir",
					 jobj("sizeLimit", js("16Mi"), NULL),
					 NULL),
				    NULL),
			       NULL),
			  NULL),
		     NULL));
}

/*
 * The last JSON object of a log that starts at a line's first column
 * (cbtfs-ingest and cbtfs-repo print their --json summary last, pretty,
 * so its '{' opens a line), or NULL.
 */
static struct json_object *last_json(const char *log)
{
	const char *p = log + strlen(log);

	while (p > log) {
		struct json_object *o;

		p--;
		if (*p != '{' || (p > log && p[-1] != '\n'))
			continue;
		o = json_tokener_parse(p);
		if (o != NULL && json_object_is_type(o, json_type_object))
			return o;
		json_object_put(o);
	}
	return NULL;
}

/*
 * Waits for Job NS/NAME to end; then its pod's log in *log (caller frees,
 * NULL if it could not be read).  Returns 0 when it succeeded, else an
 * errno with *why.
 */
static int job_wait(struct k8s_client *k, const struct k8s_job_conf *c,
		    const char *ns, const char *name, char **log, char **why)
{
	char *path = NULL, *sel = NULL, *pods = NULL, *lpath = NULL;
	struct json_object *o = NULL;
	int64_t end = now_ms() + (int64_t)c->timeout_s * 1000;
	bool ok = false;
	int err;

	*log = NULL;
	if (asprintf(&path, "/apis/batch/v1/namespaces/%s/jobs/%s", ns,
		     name) < 0)
		return ENOMEM;
	for (;;) {
		if ((err = api(k, "GET", path, NULL, 200, false, &o, NULL,
			       why)) != 0)
			goto out;
		if (json_object_get_int(k8s_field(o, "status.succeeded")) >
		    0) {
			ok = true;
			break;
		}
		if (json_object_get_int(k8s_field(o, "status.failed")) > 0)
			break;
		json_object_put(o);
		o = NULL;
		if (*c->stop) {
			*why = msg("interrupted");
			err = EINTR;
			goto out;
		}
		if (now_ms() > end) {
			*why = msg("Job %s/%s did not end within %d s", ns,
				   name, c->timeout_s);
			err = ETIMEDOUT;
			goto out;
		}
		sleep_ms((unsigned long)c->poll_ms, c->stop);
	}
	json_object_put(o);
	o = NULL;
	/* its pod, by the label the Job controller gives it */
	sel = msg("job-name=%s", name);
	pods = escape(sel ? sel : "");
	free(path);
	path = msg("/api/v1/namespaces/%s/pods?labelSelector=%s", ns,
		   pods ? pods : "");
	if (api(k, "GET", path, NULL, 200, false, &o, NULL, why) == 0) {
		struct json_object *items = k8s_field(o, "items");
		size_t n = alen(items);
		const char *pod = n ? k8s_string(json_object_array_get_idx(
							 items, n - 1),
						 "metadata.name")
				    : NULL;

		if (pod != NULL) {
			lpath = msg("/api/v1/namespaces/%s/pods/%s/log", ns,
				    pod);
			if (api(k, "GET", lpath, NULL, 200, false, NULL, log,
				why) != 0)
				*log = NULL;
		}
	}
	free(*why);
	*why = NULL;
	if (ok) {
		err = 0;
	} else {
		const char *l = *log ? *log : "";
		size_t len = strlen(l);

		/* the end of its log says why */
		*why = msg("Job %s/%s failed; the end of its log:\n%s", ns,
			   name, len > 2000 ? l + len - 2000 : l);
		err = EIO;
	}
out:
	json_object_put(o);
	free(path);
	free(sel);
	free(pods);
	free(lpath);
	return err;
}

/* ---------------------------------------------------------------------- */
/* backup */

struct target {
	char *ns, *name;
	struct json_object *result;	/* the report's entry */
	int status;			/* 0 ok, 1 failed, -1 skipped */
};

struct backup_run {
	const struct k8s_backup_conf *c;
	char run[40];
	struct json_object *snaps;	/* the repository's, at the start */
	struct target *t;
	size_t n, next;
	pthread_mutex_t lock;		/* next */
};

/* The VolumeSnapshotClass for a PVC whose class is sc. */
static char *snapshot_class(struct k8s_client *k, const char *sc,
			    char **why)
{
	struct json_object *o = NULL, *items;
	char *path, *found = NULL;
	const char *driver;
	size_t i;

	path = msg("/apis/storage.k8s.io/v1/storageclasses/%s", sc);
	if (path == NULL ||
	    api(k, "GET", path, NULL, 200, false, &o, NULL, why) != 0) {
		free(path);
		return NULL;
	}
	free(path);
	driver = k8s_string(o, "provisioner");
	if (driver == NULL) {
		*why = msg("StorageClass %s has no provisioner", sc);
		json_object_put(o);
		return NULL;
	}
	driver = strdup(driver);
	json_object_put(o);
	o = NULL;
	if (api(k, "GET", SNAP_API "/volumesnapshotclasses", NULL, 200, false,
		&o, NULL, why) != 0) {
		free((char *)driver);
		return NULL;
	}
	items = k8s_field(o, "items");
	for (i = 0; i < alen(items); i++) {
		struct json_object *vsc = json_object_array_get_idx(items, i);
		struct json_object *ann =
			k8s_field(vsc, "metadata.annotations");
		struct json_object *d = NULL;
		const char *dd = k8s_string(vsc, "driver");

		json_object_object_get_ex(ann, DEFAULT_CLASS_ANNOTATION, &d);
		if (dd && !strcmp(dd, driver) && d &&
		    !strcmp(json_object_get_string(d), "true") &&
		    k8s_string(vsc, "metadata.name") != NULL) {
			found = strdup(k8s_string(vsc, "metadata.name"));
			break;
		}
	}
	if (found == NULL)
		*why = msg("no VolumeSnapshotClass of driver %s is annotated "
			   DEFAULT_CLASS_ANNOTATION ": \"true\"; give "
			   "--snapshot-class",
			   driver);
	free((char *)driver);
	json_object_put(o);
	return found;
}

/* Waits until VolumeSnapshot NS/NAME is ready; its restoreSize in *size
 * (malloc'd). */
static int snapshot_wait(struct k8s_client *k, const struct backup_run *r,
			 const char *ns, const char *name, char **size,
			 char **why)
{
	const struct k8s_backup_conf *c = r->c;
	int64_t end = now_ms() + (int64_t)c->snapshot_timeout_s * 1000;
	char *path = msg(SNAP_API "/namespaces/%s/volumesnapshots/%s", ns,
			 name);
	struct json_object *o = NULL;
	int err;

	for (;;) {
		struct json_object *ready;

		if ((err = api(k, "GET", path, NULL, 200, false, &o, NULL,
			       why)) != 0)
			break;
		ready = k8s_field(o, "status.readyToUse");
		if (ready && json_object_get_boolean(ready)) {
			const char *s = k8s_string(o, "status.restoreSize");

			*size = s ? strdup(s) : NULL;
			break;
		}
		if (k8s_string(o, "status.error.message") != NULL) {
			*why = msg("VolumeSnapshot %s/%s failed: %s", ns, name,
				   k8s_string(o, "status.error.message"));
			err = EIO;
			break;
		}
		json_object_put(o);
		o = NULL;
		if (*c->job.stop) {
			*why = msg("interrupted");
			err = EINTR;
			break;
		}
		if (now_ms() > end) {
			*why = msg("VolumeSnapshot %s/%s was not ready to use "
				   "within %d s",
				   ns, name, c->snapshot_timeout_s);
			err = ETIMEDOUT;
			break;
		}
		sleep_ms((unsigned long)c->job.poll_ms, c->job.stop);
	}
	json_object_put(o);
	free(path);
	return err;
}

/*
 * Deletes the VolumeSnapshots of NS/PVC this tool made that no future
 * delta needs: those no committed backup names (but the current run's,
 * which is in progress), and the committed ones beyond the newest keep.
 * committed_now: the snapshot this run committed, or NULL.
 */
static void snapshots_tidy(struct k8s_client *k, const struct backup_run *r,
			   const char *ns, const char *pvc,
			   const char *committed_now, bool keep_current)
{
	char *volume = msg("%s/%s", ns, pvc), *sel = NULL, *esel = NULL;
	char *path = NULL, *why = NULL;
	struct json_object *o = NULL, *items;
	struct {
		const char *name, *created;
	} kept[64];
	size_t i, nk = 0;

	sel = msg(MANAGED_BY "=" ME "," PVC_LABEL "=%s", pvc);
	esel = escape(sel ? sel : "");
	path = msg(SNAP_API "/namespaces/%s/volumesnapshots?labelSelector=%s",
		   ns, esel ? esel : "");
	if (volume == NULL || path == NULL ||
	    api(k, "GET", path, NULL, 200, false, &o, NULL, &why) != 0) {
		log_warn("cannot list the VolumeSnapshots of %s/%s: %s", ns,
			 pvc, why ? why : "out of memory");
		goto out;
	}
	items = k8s_field(o, "items");
	for (i = 0; i < alen(items); i++) {
		struct json_object *vs = json_object_array_get_idx(items, i);
		const char *name = k8s_string(vs, "metadata.name");
		const char *run = label(vs, RUN_LABEL);
		const char *created = k8s_string(vs,
						 "metadata.creationTimestamp");
		bool committed;

		if (name == NULL)
			continue;
		committed = (committed_now && !strcmp(name, committed_now)) ||
			    find_snap(r->snaps, volume, name) != NULL;
		if (!committed) {
			if (keep_current && run && !strcmp(run, r->run))
				continue;
			log_info("deleting VolumeSnapshot %s/%s: no backup "
				 "was committed from it", ns, name);
		} else if (nk < sizeof(kept) / sizeof(kept[0])) {
			kept[nk].name = name;
			kept[nk].created = created ? created : "";
			nk++;
			continue;
		} else {
			continue;
		}
		free(path);
		path = msg(SNAP_API "/namespaces/%s/volumesnapshots/%s", ns,
			   name);
		if (path)
			del_put(k, path);
	}
	/* of the committed ones, the oldest go until keep are left */
	for (;;) {
		size_t j, oldest = 0;

		if (nk <= (size_t)r->c->keep_snapshots)
			break;
		for (j = 1; j < nk; j++) {
			int d = strcmp(kept[j].created, kept[oldest].created);

			if (d == 0)
				d = strcmp(kept[j].name, kept[oldest].name);
			if (d < 0)
				oldest = j;
		}
		log_info("deleting VolumeSnapshot %s/%s: --keep-snapshots %d",
			 ns, kept[oldest].name, r->c->keep_snapshots);
		free(path);
		path = msg(SNAP_API "/namespaces/%s/volumesnapshots/%s", ns,
			   kept[oldest].name);
		if (path)
			del_put(k, path);
		kept[oldest] = kept[--nk];
	}
out:
	json_object_put(o);
	free(volume);
	free(sel);
	free(esel);
	free(path);
	free(why);
}

/* Backs up r->t[i]; fills its result. */
static void backup_one(struct k8s_client *k, struct backup_run *r, size_t i)
{
	const struct k8s_backup_conf *c = r->c;
	struct target *t = &r->t[i];
	struct json_object *pvc = NULL, *res = t->result, *base, *sum = NULL;
	char *path = NULL, *why = NULL, *cls = NULL, *vs = NULL, *tmp = NULL;
	char *size = NULL, *volume = NULL, *log = NULL, *sa = NULL;
	const char *mode, *sc, *base_name = NULL;
	bool made_vs = false, made_pvc = false, made_job = false;
	bool committed = false;
	int err = ENOMEM;

	volume = msg("%s/%s", t->ns, t->name);
	path = msg("/api/v1/namespaces/%s/persistentvolumeclaims/%s", t->ns,
		   t->name);
	if (volume == NULL || path == NULL)
		goto out;
	json_object_object_add(res, "volume", js(volume));
	if ((err = api(k, "GET", path, NULL, 200, false, &pvc, NULL, &why)))
		goto out;
	mode = k8s_string(pvc, "spec.volumeMode");
	if (mode == NULL || strcmp(mode, "Block") != 0) {
		log_warn("skipping PVC %s: volumeMode %s; Changed Block "
			 "Tracking needs Block", volume,
			 mode ? mode : "Filesystem");
		json_object_object_add(res, "skipped",
				       js("volumeMode is not Block"));
		t->status = -1;
		goto done;
	}
	sc = c->job.storage_class ? c->job.storage_class
				  : k8s_string(pvc, "spec.storageClassName");
	if (c->snapshot_class != NULL) {
		cls = strdup(c->snapshot_class);
	} else if (sc == NULL) {
		why = msg("PVC %s has no storageClassName, so its driver is "
			  "unknown: give --snapshot-class", volume);
		err = EINVAL;
		goto out;
	} else if ((cls = snapshot_class(k, sc, &why)) == NULL) {
		err = EINVAL;
		goto out;
	}
	/* 1. the snapshot */
	vs = msg("%.40s-%s", t->name, r->run);
	tmp = msg("cbtfs-%s-%zu", r->run, i);
	free(path);
	path = msg(SNAP_API "/namespaces/%s/volumesnapshots", t->ns);
	if (vs == NULL || tmp == NULL || path == NULL)
		goto out;
	json_object_object_add(res, "snapshot", js(vs));
	log_info("%s: creating VolumeSnapshot %s (class %s)", volume, vs,
		 cls);
	err = post(k, path,
		   object("snapshot.storage.k8s.io/v1", "VolumeSnapshot", vs,
			  t->ns, labels("backup", r->run, t->name),
			  jobj(VOLUME_ANNOTATION, js(volume), NULL),
			  jobj("volumeSnapshotClassName", js(cls), "source",
			       jobj("persistentVolumeClaimName", js(t->name),
				    NULL),
			       NULL)),
		   &why);
	if (err != 0)
		goto out;
	made_vs = true;
	if ((err = snapshot_wait(k, r, t->ns, vs, &size, &why)) != 0)
		goto out;
	/* 2. the temporary PVC */
	if (size == NULL)
		size = strdup(k8s_string(pvc, "status.capacity.storage")
				      ?: k8s_string(pvc,
						    "spec.resources.requests."
						    "storage")
				      ?: "1Gi");
	free(path);
	path = msg("/api/v1/namespaces/%s/persistentvolumeclaims", t->ns);
	if (path == NULL || size == NULL)
		goto out;
	err = post(k, path,
		   object("v1", "PersistentVolumeClaim", tmp, t->ns,
			  labels("backup", r->run, t->name), NULL,
			  block_pvc_spec(sc, size,
					 jobj("apiGroup",
					      js("snapshot.storage.k8s.io"),
					      "kind", js("VolumeSnapshot"),
					      "name", js(vs), NULL))),
		   &why);
	if (err != 0)
		goto out;
	made_pvc = true;
	/* 3. the Job */
	base = newest_of(r->snaps, volume);
	base_name = base ? k8s_string(base, "snapshot") : NULL;
	json_object_object_add(res, "parent", js(base_name));
	sa = msg("%s/%s", t->ns, c->job.service_account);
	{
		const char *argv[] = {
			"cbtfs-ingest", "--repo", c->job.repo, "--volume",
			volume, "--snapshot", vs, "--device", "/dev/xvda",
			"--changes", "k8s", "--namespace", t->ns,
			"--service-account", sa, "--cache-dir", "/cache",
			"--no-progress", "--json",
			base_name ? "--base" : NULL, base_name, NULL
		};

		free(path);
		path = msg("/apis/batch/v1/namespaces/%s/jobs", t->ns);
		if (path == NULL || sa == NULL)
			goto out;
		log_info("%s: running Job %s (base %s)", volume, tmp,
			 base_name ? base_name : "none: a full backup");
		err = post(k, path,
			   job_new(&c->job, t->ns, tmp, "backup", r->run,
				   t->name, tmp, "/dev/xvda",
				   c->job.service_account, argv),
			   &why);
	}
	if (err != 0)
		goto out;
	made_job = true;
	json_object_object_add(res, "job", js(tmp));
	err = job_wait(k, &c->job, t->ns, tmp, &log, &why);
	sum = log ? last_json(log) : NULL;
	if (err != 0)
		goto out;
	if (sum == NULL) {
		why = msg("Job %s/%s succeeded but its log holds no JSON "
			  "summary", t->ns, tmp);
		err = EIO;
		goto out;
	}
	json_object_object_add(res, "ingest", json_object_get(sum));
	committed = true;
	t->status = 0;
	log_info("%s: backed up as %s", volume, vs);
out:
	if (made_job) {
		free(path);
		path = msg("/apis/batch/v1/namespaces/%s/jobs/%s", t->ns, tmp);
		if (path)
			del_put(k, path);
	}
	if (made_pvc) {
		free(path);
		path = msg("/api/v1/namespaces/%s/persistentvolumeclaims/%s",
			   t->ns, tmp);
		if (path)
			del_put(k, path);
	}
	if (made_vs && !committed) {
		free(path);
		path = msg(SNAP_API "/namespaces/%s/volumesnapshots/%s", t->ns,
			   vs);
		if (path)
			del_put(k, path);
	}
	if (t->status == 0 || made_vs)
		snapshots_tidy(k, r, t->ns, t->name, committed ? vs : NULL,
			       false);
	if (t->status != 0) {
		t->status = 1;
		if (why == NULL)
			why = msg("%s", ERRSTR(err));
		log_error("backup of %s failed: %s", volume ? volume : "?",
			  why ? why : "out of memory");
		json_object_object_add(res, "error", js(why));
	}
done:
	json_object_object_add(res, "ok",
			       json_object_new_boolean(t->status == 0));
	if (!json_object_object_get_ex(res, "error", NULL))
		json_object_object_add(res, "error", NULL);
	json_object_put(pvc);
	json_object_put(sum);
	free(path);
	free(why);
	free(cls);
	free(vs);
	free(tmp);
	free(size);
	free(volume);
	free(log);
	free(sa);
}

static void *worker(void *arg)
{
	struct backup_run *r = arg;
	struct k8s_client *k = NULL;
	int err;

	k = k8s_open(r->c->job.kubeconfig, 60, &err);
	for (;;) {
		size_t i;

		pthread_mutex_lock(&r->lock);
		i = r->next < r->n ? r->next++ : r->n;
		pthread_mutex_unlock(&r->lock);
		if (i == r->n)
			break;
		if (err != 0 || *r->c->job.stop) {
			r->t[i].status = 1;
			json_object_object_add(
				r->t[i].result, "error",
				js(err ? "cannot reach the Kubernetes API"
				       : "interrupted before it started"));
			json_object_object_add(r->t[i].result, "ok",
					       json_object_new_boolean(0));
			continue;
		}
		backup_one(k, r, i);
	}
	if (k != NULL)
		k8s_close(k);
	return NULL;
}

static int add_target(struct backup_run *r, const char *ns, const char *name)
{
	struct target *t;
	size_t i;

	for (i = 0; i < r->n; i++)
		if (!strcmp(r->t[i].ns, ns) && !strcmp(r->t[i].name, name))
			return 0;
	t = realloc(r->t, (r->n + 1) * sizeof(*t));
	if (t == NULL)
		return ENOMEM;
	r->t = t;
	t = &r->t[r->n];
	t->ns = strdup(ns);
	t->name = strdup(name);
	t->result = jobj("pvc", js(name), "namespace", js(ns), NULL);
	t->status = 1;
	if (t->ns == NULL || t->name == NULL)
		return ENOMEM;
	r->n++;
	return 0;
}

/* The PVCs of --selector, but those this tool made. */
static int select_pvcs(struct k8s_client *k, struct backup_run *r,
		       const char *ns)
{
	const struct k8s_backup_conf *c = r->c;
	struct json_object *o = NULL, *items;
	char *sel = escape(c->selector), *path, *why = NULL;
	size_t i;
	int err;

	if (ns != NULL)
		path = msg("/api/v1/namespaces/%s/persistentvolumeclaims"
			   "?labelSelector=%s", ns, sel ? sel : "");
	else
		path = msg("/api/v1/persistentvolumeclaims?labelSelector=%s",
			   sel ? sel : "");
	free(sel);
	if (path == NULL)
		return ENOMEM;
	err = api(k, "GET", path, NULL, 200, false, &o, NULL, &why);
	free(path);
	if (err != 0) {
		log_error("cannot list the PVCs: %s", why);
		free(why);
		return err;
	}
	items = k8s_field(o, "items");
	for (i = 0; i < alen(items) && err == 0; i++) {
		struct json_object *p = json_object_array_get_idx(items, i);
		const char *by = label(p, MANAGED_BY);
		const char *pns = k8s_string(p, "metadata.namespace");
		const char *name = k8s_string(p, "metadata.name");

		if ((by != NULL && !strcmp(by, ME)) || !pns || !name)
			continue;
		err = add_target(r, pns, name);
	}
	json_object_put(o);
	return err;
}

/*
 * Deletes the backup Jobs and temporary PVCs of other runs in ns (an
 * interrupted run's), and its VolumeSnapshots that no committed backup
 * names.
 */
static void orphans(struct k8s_client *k, struct backup_run *r,
		    const char *ns)
{
	static const char *const kinds[] = {
		"/apis/batch/v1/namespaces/", "/api/v1/namespaces/",
		SNAP_API "/namespaces/",
	};
	static const char *const plural[] = {
		"jobs", "persistentvolumeclaims", "volumesnapshots",
	};
	char *sel = msg(MANAGED_BY "=" ME "," COMPONENT "=backup,"
			RUN_LABEL "!=%s", r->run);
	char *esel = escape(sel ? sel : "");
	size_t i, j;

	for (i = 0; i < 3; i++) {
		struct json_object *o = NULL, *items;
		char *base = msg("%s%s/%s", kinds[i], ns, plural[i]);
		char *path, *why = NULL;

		path = msg("%s?labelSelector=%s", base, esel);
		if (path == NULL || base == NULL ||
		    api(k, "GET", path, NULL, 200, false, &o, NULL, &why)) {
			log_warn("cannot look for orphans in %s: %s", ns,
				 why ? why : "out of memory");
			free(why);
			free(path);
			free(base);
			continue;
		}
		items = k8s_field(o, "items");
		for (j = 0; j < alen(items); j++) {
			struct json_object *x = json_object_array_get_idx(
				items, j);
			const char *name = k8s_string(x, "metadata.name");
			const char *pvc = label(x, PVC_LABEL);

			if (name == NULL)
				continue;
			if (i == 2) {
				/* snapshots: only those never committed */
				snapshots_tidy(k, r, ns, pvc ? pvc : "", NULL,
					       true);
				continue;
			}
			log_info("deleting %s %s/%s of the interrupted run %s",
				 i == 0 ? "Job" : "PVC", ns, name,
				 label(x, RUN_LABEL));
			free(path);
			path = msg("%s/%s", base, name);
			if (path)
				del_put(k, path);
		}
		json_object_put(o);
		free(path);
		free(base);
	}
	free(sel);
	free(esel);
}

int k8s_backup_run(const struct k8s_backup_conf *c,
		   struct json_object **report)
{
	struct backup_run r = { .c = c };
	struct k8s_client *k = NULL;
	struct json_object *results;
	pthread_t *th = NULL;
	const char *ns;
	size_t i, nth, ok = 0, failed = 0, skipped = 0;
	time_t now = time(NULL);
	struct tm tm;
	unsigned char rnd[2];
	char hex[5];
	int err, rc = 2;

	*report = NULL;
	pthread_mutex_init(&r.lock, NULL);
	gmtime_r(&now, &tm);
	if (getentropy(rnd, sizeof(rnd)) != 0)
		rnd[0] = rnd[1] = (unsigned char)getpid();
	hex_encode(rnd, sizeof(rnd), hex);
	strftime(r.run, sizeof(r.run), "%Y%m%d-%H%M%S-", &tm);
	strcat(r.run, hex);
	if ((k = k8s_open(c->job.kubeconfig, 60, &err)) == NULL)
		goto out;
	ns = c->ns ? c->ns : k8s_namespace(k);
	if (ns == NULL && !c->all_namespaces && c->selector != NULL) {
		log_error("no namespace: give --namespace or "
			  "--all-namespaces");
		goto out;
	}
	if ((r.snaps = repo_snapshots(&c->job)) == NULL)
		goto out;
	for (i = 0; i < c->npvcs; i++) {
		char *s = strdup(c->pvcs[i]), *slash = s ? strchr(s, '/') : 0;

		if (slash == NULL) {
			free(s);
			err = ENOMEM;
			goto out;
		}
		*slash = '\0';
		err = add_target(&r, s, slash + 1);
		free(s);
		if (err != 0)
			goto out;
	}
	if (c->selector != NULL &&
	    select_pvcs(k, &r, c->all_namespaces ? NULL : ns) != 0)
		goto out;
	log_info("run %s: %zu PVC%s", r.run, r.n, r.n == 1 ? "" : "s");
	/* what interrupted runs left in these namespaces */
	for (i = 0; i < r.n; i++) {
		size_t j;

		for (j = 0; j < i && strcmp(r.t[j].ns, r.t[i].ns); j++)
			;
		if (j == i)
			orphans(k, &r, r.t[i].ns);
	}
	nth = (size_t)c->parallel < r.n ? (size_t)c->parallel : r.n;
	th = calloc(nth ? nth : 1, sizeof(*th));
	if (th == NULL)
		goto out;
	for (i = 0; i < nth; i++)
		if (pthread_create(&th[i], NULL, worker, &r) != 0)
			break;
	nth = i;
	if (nth == 0 && r.n > 0)
		worker(&r);
	for (i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
	results = json_object_new_array();
	for (i = 0; i < r.n; i++) {
		json_object_array_add(results, r.t[i].result);
		r.t[i].result = NULL;
		if (r.t[i].status == 0)
			ok++;
		else if (r.t[i].status < 0)
			skipped++;
		else
			failed++;
	}
	*report = jobj("run", js(r.run), "repository", js(c->job.repo),
		       "succeeded", json_object_new_int((int)ok), "failed",
		       json_object_new_int((int)failed), "skipped",
		       json_object_new_int((int)skipped), "interrupted",
		       json_object_new_boolean(*c->job.stop != 0), "pvcs",
		       results, NULL);
	rc = failed || *c->job.stop ? 1 : 0;
out:
	if (k != NULL)
		k8s_close(k);
	for (i = 0; i < r.n; i++) {
		free(r.t[i].ns);
		free(r.t[i].name);
		json_object_put(r.t[i].result);
	}
	free(r.t);
	free(th);
	json_object_put(r.snaps);
	pthread_mutex_destroy(&r.lock);
	return rc;
}

/* ---------------------------------------------------------------------- */
/* restore */

int k8s_restore_run(const struct k8s_restore_conf *c,
		    struct json_object **report)
{
	struct k8s_client *k = NULL;
	struct json_object *snaps = NULL, *snap, *pvc = NULL, *sum = NULL;
	char *ns = NULL, *name, *path = NULL, *why = NULL, *job = NULL;
	char *log = NULL, *size = NULL, *what = NULL;
	char run[40];
	bool made_pvc = false, made_job = false;
	time_t now = time(NULL);
	struct tm tm;
	int err = ENOMEM, rc = 1;

	*report = NULL;
	gmtime_r(&now, &tm);
	strftime(run, sizeof(run), "%Y%m%d-%H%M%S", &tm);
	if ((ns = strdup(c->to)) == NULL)
		return 1;
	name = strchr(ns, '/');
	*name++ = '\0';
	what = msg("%s@%s", c->volume, c->snapshot);
	job = msg("cbtfs-restore-%s", run);
	if (what == NULL || job == NULL)
		goto out;
	if ((snaps = repo_snapshots(&c->job)) == NULL) {
		why = msg("cannot read the repository");
		goto out;
	}
	snap = find_snap(snaps, c->volume, c->snapshot);
	if (snap == NULL) {
		why = msg("the repository holds no snapshot %s", what);
		err = ENOENT;
		goto out;
	}
	if ((k = k8s_open(c->job.kubeconfig, 60, &err)) == NULL) {
		why = msg("cannot reach the Kubernetes API");
		goto out;
	}
	path = msg("/api/v1/namespaces/%s/persistentvolumeclaims/%s", ns,
		   name);
	err = api(k, "GET", path, NULL, 200, true, &pvc, NULL, &why);
	if (err == 0) {
		const char *mode = k8s_string(pvc, "spec.volumeMode");

		/* an existing PVC is written over only when asked to: its
		 * content cannot be seen from here, and every byte of it is
		 * replaced */
		if (!c->existing) {
			why = msg("PVC %s exists: give --existing to write "
				  "over all of it, or name a new PVC", c->to);
			err = EEXIST;
			goto out;
		}
		if (mode == NULL || strcmp(mode, "Block") != 0) {
			why = msg("PVC %s has volumeMode %s: a restore needs "
				  "Block", c->to, mode ? mode : "Filesystem");
			err = EINVAL;
			goto out;
		}
	} else if (err == ENOENT) {
		free(why);
		why = NULL;
		size = c->size ? strdup(c->size)
			       : msg("%" PRId64,
				     json_object_get_int64(
					     k8s_field(snap, "capacity")));
		free(path);
		path = msg("/api/v1/namespaces/%s/persistentvolumeclaims", ns);
		if (size == NULL || path == NULL)
			goto out;
		log_info("creating PVC %s (%s bytes)", c->to, size);
		err = post(k, path,
			   object("v1", "PersistentVolumeClaim", name, ns,
				  labels("restore", run, name),
				  jobj("cbtfs.io/restored-from", js(what),
				       NULL),
				  block_pvc_spec(c->job.storage_class, size,
						 NULL)),
			   &why);
		if (err != 0)
			goto out;
		made_pvc = true;
	} else {
		goto out;
	}
	{
		const char *argv[] = { "cbtfs-repo", "restore", c->job.repo,
				       what, "--to", "/dev/xvdb", "--verify",
				       "--json", NULL };

		free(path);
		path = msg("/apis/batch/v1/namespaces/%s/jobs", ns);
		if (path == NULL)
			goto out;
		log_info("running Job %s/%s: restore %s", ns, job, what);
		err = post(k, path,
			   job_new(&c->job, ns, job, "restore", run, name,
				   name, "/dev/xvdb", NULL, argv),
			   &why);
	}
	if (err != 0)
		goto out;
	made_job = true;
	err = job_wait(k, &c->job, ns, job, &log, &why);
	sum = log ? last_json(log) : NULL;
	if (err == 0 && sum == NULL) {
		why = msg("Job %s/%s succeeded but its log holds no JSON "
			  "summary", ns, job);
		err = EIO;
	}
	if (err == 0) {
		rc = 0;
		log_info("restored %s into PVC %s, verified", what, c->to);
	}
out:
	if (made_job) {
		free(path);
		path = msg("/apis/batch/v1/namespaces/%s/jobs/%s", ns, job);
		if (path)
			del_put(k, path);
	}
	if (rc != 0) {
		if (why == NULL)
			why = msg("%s", ERRSTR(err));
		log_error("restore of %s into %s failed: %s",
			  what ? what : "?", c->to, why ? why : "?");
		if (made_pvc)
			log_error("PVC %s, which this restore created, is "
				  "kept: delete it, or run again with "
				  "--existing", c->to);
	}
	*report = jobj("volume", js(c->volume), "snapshot", js(c->snapshot),
		       "pvc", js(c->to), "created_pvc",
		       json_object_new_boolean(made_pvc), "ok",
		       json_object_new_boolean(rc == 0), NULL);
	/* unset is null, as in every cbtfs JSON output */
	json_object_object_add(*report, "error", rc ? js(why) : NULL);
	json_object_object_add(*report, "restore", json_object_get(sum));
	if (k != NULL)
		k8s_close(k);
	json_object_put(snaps);
	json_object_put(pvc);
	json_object_put(sum);
	free(ns);
	free(path);
	free(why);
	free(job);
	free(log);
	free(size);
	free(what);
	return rc;
}
