"""A stand-in for the Kubernetes API server, for the cbtfs tests: just the
calls a Changed Block Tracking client makes (run it with /usr/bin/python3;
standard library only).

  k8s_api_server.py --state FILE --cert PEM --key PEM [--client-ca PEM]
                    [--ports-file FILE] [--log FILE]

It serves HTTPS (HTTP/1.1, ALPN "http/1.1") on 127.0.0.1:<free port>.
Once bound, --ports-file gets the shell assignment
  K8S_API=https://127.0.0.1:PORT
(written atomically).  With --client-ca, client certificates are requested
but optional; one that does not verify against that CA fails the handshake
(as with a real API server).  SIGTERM/SIGINT: stops and exits 0.

Authentication, at every request:
  1. "Authorization: Bearer T" with T a key of state "users": that user;
  2. else a verified client certificate: user = its subject CN, groups =
     its subject O values;
  3. else 401 Unauthorized.
(A real API server tries the client certificate before the token; this
only matters when a client sends both and they name different users.)
Groups: "system:serviceaccount:NS:NAME" users are in system:serviceaccounts
and system:serviceaccounts:NS, everybody is in system:authenticated;
state "groups" {user: [...]} replaces the first two sources.

Authorization: "<verb> <resource>" (verb "get" for GET, "create" for POST;
resource as in RBAC: volumesnapshots, volumesnapshotcontents,
snapshotmetadataservices, serviceaccounts/token, selfsubjectreviews) listed
in state "forbid"[user] gives 403 Forbidden with the real server's message,
e.g.
  serviceaccounts "cbtfs-backup" is forbidden: User "system:serviceaccount:
  cbtfs:cbtfs-backup" cannot create resource "serviceaccounts/token" in API
  group "" in the namespace "cbtfs"
It is checked before the object is looked up, as RBAC is.

Endpoints (JSON in and out, Content-Type: application/json):
  GET  /apis/snapshot.storage.k8s.io/v1/namespaces/NS/volumesnapshots/NAME
  GET  /apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents/NAME
  GET  /apis/cbt.storage.k8s.io/VERSION/snapshotmetadataservices/NAME
       (a VERSION that is not a key of state "snapshotmetadataservices" is
       not served: 404 "the server could not find the requested resource")
  POST /api/v1/namespaces/NS/serviceaccounts/SA/token       (TokenRequest)
       201: spec echoed (audiences defaulted to
       ["https://kubernetes.default.svc.cluster.local"], expirationSeconds
       to 3600), status.token = token_for_audience[audiences[0]] or
       "token-for-" + audiences[0], status.expirationTimestamp = now +
       expirationSeconds (RFC 3339, UTC).  expirationSeconds < 600 or
       > 2^32: 422 Invalid, like the real server.  SA not in state
       "serviceaccounts": 404.
  POST /apis/authentication.k8s.io/v1/selfsubjectreviews
       201: status.userInfo {username, groups}
  Anything else: 404 Status "the server could not find the requested
  resource"; PUT/PATCH/DELETE on the paths above: 405.
A POST body must be a JSON object (else 400 BadRequest); a Content-Type
other than application/json, application/yaml or
application/vnd.kubernetes.protobuf gives 415 (none at all means JSON, as
in the real server).  Errors are Status objects (kind Status, apiVersion v1,
status Failure, message, reason, details, code).

--state FILE is read again at every request (replace it atomically):
  {
    "users": {"<bearer token>": "system:serviceaccount:cbtfs:cbtfs-backup"},
    "groups": {"<user>": ["group", ...]},                    (optional)
    "forbid": {"<user>": ["get volumesnapshots",
                          "create serviceaccounts/token",
                          "get snapshotmetadataservices", ...]},
    "volumesnapshots": {"NS/NAME": {<full VolumeSnapshot object>}},
    "volumesnapshotcontents": {"NAME": {<full object>}},
    "snapshotmetadataservices": {"v1beta1": {"NAME": {<object>}},
                                 "v1alpha1": {...}},
    "serviceaccounts": ["NS/NAME", ...],
    "token_for_audience": {"<audience>": "<token to issue>"},
    "errors": {"<verb> <resource>": {"code": 500,             (optional)
               "reason": "InternalError", "message": "...",
               "retry_after": SECONDS}}
  }
Every key is optional.  "errors" makes every authorized request for that
verb and resource fail with that Status (a Retry-After header when
retry_after is given), until the state changes.  Objects are returned as
stored.

Cluster (--cluster-dir DIR --cbt-state DIR --bin-dir DIR
[--pod-kubeconfig FILE]): the server also plays the controllers and the
kubelet for a backup tool, on these collections (GET a name, GET a list with
?labelSelector=k=v,k!=v,k,!k, POST a new object, DELETE a name; RBAC verbs
get, list, create, delete, checked against "forbid" and "errors" as above):
  /api/v1[/namespaces/NS]/persistentvolumeclaims   state "pvcs" {"NS/NAME"}
  /api/v1[/namespaces/NS]/pods, .../pods/NAME/log  state "pods"
  /apis/batch/v1[/namespaces/NS]/jobs              state "jobs"
  /apis/snapshot.storage.k8s.io/v1[/namespaces/NS]/volumesnapshots
  /apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses  {"NAME": obj}
  /apis/storage.k8s.io/v1/storageclasses                  {"NAME": obj}
A PVC's data is the file DIR/volumes/NS_NAME.img: a new PVC gets a sparse
file of its requested size, one with a VolumeSnapshot dataSource a copy of
the snapshot; it is Bound at once.  A new VolumeSnapshot copies its PVC's
file to CBT_STATE/<handle>.snap, adds NS/NAME -> handle to the sidecar
fixture's config.json ("sidecar_snapshots"), gets a VolumeSnapshotContent
of the driver of its VolumeSnapshotClass (a missing class: status.error),
and becomes readyToUse state "snapshot_ready_delay" seconds later (default
1) unless its PVC "NS/PVC" is listed in state "never_ready".  A new Job
gets a pod (label job-name) whose one container runs here at once: the
command's basename from --bin-dir, arguments equal to a devicePath replaced
by the PVC's image file, to a mountPath by a directory of the pod's under
DIR/pods/, env values likewise, TMPDIR for /tmp, KUBECONFIG
--pod-kubeconfig; stdout and stderr are the pod log.  Its exit sets the
Job's status.succeeded or status.failed.  Deleting a Job deletes its pods
and terminates a running one (SIGTERM); deleting a PVC removes its file,
deleting a VolumeSnapshot its content, .snap and sidecar entry.
DIR/pods.log gets one JSON line per pod started (pod, pid, argv).

--log FILE gets one JSON line per request, written before the response:
  {"method": "GET", "path": "/apis/...", "query": "raw query string",
   "user": "name" or null, "auth": "token" | "cert" | null,
   "status": 200, "body": parsed JSON body of a POST (the raw text if it
   is not JSON) or null}
"""
import argparse
import datetime
import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
NOT_SERVED = "the server could not find the requested resource"
JSON_TYPES = ("application/json", "application/yaml",
              "application/vnd.kubernetes.protobuf")


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error answer: a Kubernetes Status."""

    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self):
        st = {"kind": "Status", "apiVersion": "v1", "metadata": {},
              "status": "Failure", "message": self.message,
              "reason": self.reason}
        if self.details is not None:
            st["details"] = self.details
        st["code"] = self.code
        return st


def qualified(resource, group):
    return "%s.%s" % (resource, group) if group else resource


def details(resource, group, name):
    d = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    d["kind"] = resource
    return d


def not_found(resource, group, name):
    return ApiError(404, "NotFound", '%s "%s" not found'
                    % (qualified(resource, group), name),
                    details(resource, group, name))


def not_served():
    return ApiError(404, "NotFound", NOT_SERVED, {})


def bad_request(message):
    return ApiError(400, "BadRequest", message)


class Request:
    """What a route needs to know about one request."""

    def __init__(self, verb, resource, subresource, group, namespace, name,
                 handler):
        self.verb = verb                # get | create
        self.resource = resource        # e.g. serviceaccounts
        self.subresource = subresource  # e.g. token, or None
        self.group = group              # "" for the core group
        self.namespace = namespace      # None: cluster-scoped
        self.name = name                # None for a create without a name
        self.handler = handler

    @property
    def rbac_resource(self):
        if self.subresource:
            return "%s/%s" % (self.resource, self.subresource)
        return self.resource

    def forbidden(self, user):
        where = ('in the namespace "%s"' % self.namespace if self.namespace
                 else "at the cluster scope")
        why = ('User "%s" cannot %s resource "%s" in API group "%s" %s'
               % (user, self.verb, self.rbac_resource, self.group, where))
        q = qualified(self.resource, self.group)
        if self.name:
            msg = '%s "%s" is forbidden: %s' % (q, self.name, why)
        else:
            msg = "%s is forbidden: %s" % (q, why)
        return ApiError(403, "Forbidden", msg,
                        details(self.resource, self.group, self.name))


def route(method, parts):
    """Maps a method and the path's segments to a Request, or raises."""
    verb = {"GET": "get", "POST": "create"}.get(method)
    r = None
    n = len(parts)
    if (n == 7 and parts[:4] == ["apis", "snapshot.storage.k8s.io", "v1",
                                 "namespaces"]
            and parts[5] == "volumesnapshots"):
        r = Request("get", "volumesnapshots", None, "snapshot.storage.k8s.io",
                    parts[4], parts[6], "volumesnapshot")
    elif (n == 5 and parts[:4] == ["apis", "snapshot.storage.k8s.io", "v1",
                                   "volumesnapshotcontents"]):
        r = Request("get", "volumesnapshotcontents", None,
                    "snapshot.storage.k8s.io", None, parts[4],
                    "volumesnapshotcontent")
    elif (n == 5 and parts[:2] == ["apis", "cbt.storage.k8s.io"]
          and parts[3] == "snapshotmetadataservices"):
        r = Request("get", "snapshotmetadataservices", None,
                    "cbt.storage.k8s.io", None, parts[4], "sms")
        r.version = parts[2]
    elif (n == 7 and parts[:3] == ["api", "v1", "namespaces"]
          and parts[4] == "serviceaccounts" and parts[6] == "token"):
        r = Request("create", "serviceaccounts", "token", "", parts[3],
                    parts[5], "token")
    elif n == 4 and parts == ["apis", "authentication.k8s.io", "v1",
                              "selfsubjectreviews"]:
        r = Request("create", "selfsubjectreviews", None,
                    "authentication.k8s.io", None, None, "ssr")
    if r is None or any(p == "" for p in parts):
        raise not_served()
    if verb != r.verb:
        if method in ("PUT", "PATCH", "DELETE", "GET", "POST"):
            raise ApiError(405, "MethodNotAllowed",
                           "the server does not allow this method on the "
                           "requested resource", {})
        raise not_served()
    return r


# -- a small cluster: PVCs, VolumeSnapshots, Jobs whose pods run here ------
#
# With --cluster-dir DIR the server also plays the controllers a backup
# tool talks to (see "Cluster" in the docstring at the top).

GENERIC = {
    ("", "persistentvolumeclaims"): ("pvcs", True),
    ("", "pods"): ("pods", True),
    ("batch", "jobs"): ("jobs", True),
    ("snapshot.storage.k8s.io", "volumesnapshots"): ("volumesnapshots", True),
    ("snapshot.storage.k8s.io", "volumesnapshotclasses"):
        ("volumesnapshotclasses", False),
    ("storage.k8s.io", "storageclasses"): ("storageclasses", False),
}
STATE_LOCK = threading.Lock()
PODS = {}           # "ns/pod" -> subprocess.Popen
SIZES = (("Ei", 1 << 60), ("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30),
         ("Mi", 1 << 20), ("Ki", 1 << 10), ("E", 10 ** 18), ("P", 10 ** 15),
         ("T", 10 ** 12), ("G", 10 ** 9), ("M", 10 ** 6), ("k", 10 ** 3))


def parse_quantity(q):
    q = str(q)
    for suffix, unit in SIZES:
        if q.endswith(suffix):
            return int(q[:-len(suffix)]) * unit
    return int(q)


def quantity(n):
    for suffix, unit in SIZES[:6]:
        if n and n % unit == 0:
            return "%d%s" % (n // unit, suffix)
    return str(n)


def generic_route(method, parts):
    """(verb, kind, namespace, name, log, group, resource) or None."""
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    ns = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    if not rest or (group, rest[0]) not in GENERIC:
        return None
    kind, namespaced = GENERIC[(group, rest[0])]
    if ns is not None and not namespaced:
        return None
    name = rest[1] if len(rest) >= 2 else None
    log = len(rest) == 3 and rest[0] == "pods" and rest[2] == "log"
    if len(rest) > 3 or (len(rest) == 3 and not log):
        return None
    if method == "GET":
        verb = "get" if name else "list"
    elif method == "POST" and name is None and ns is not None:
        verb = "create"
    elif method == "DELETE" and name is not None and not log:
        verb = "delete"
    else:
        raise ApiError(405, "MethodNotAllowed",
                       "the server does not allow this method on the "
                       "requested resource", {})
    return verb, kind, ns, name, log, group, rest[0]


def selector_matches(sel, labels):
    for term in [t.strip() for t in (sel or "").split(",") if t.strip()]:
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            k = k.strip().rstrip("=")
            if labels.get(k) != v.strip().lstrip("="):
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def load_state(path):
    with open(path) as f:
        return json.load(f)


def save_state(path, s):
    tmp = "%s.tmp.srv.%d" % (path, threading.get_ident())
    with open(tmp, "w") as f:
        json.dump(s, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


class Cluster:
    """The controllers, on the state file (under STATE_LOCK)."""

    def __init__(self, args, server):
        self.args = args
        self.server = server
        self.dir = args.cluster_dir
        for d in ("volumes", "pods"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)

    def image(self, ns, name):
        return os.path.join(self.dir, "volumes", "%s_%s.img" % (ns, name))

    def sidecar_map(self, key, handle):
        """Adds (handle) or removes (None) key in the sidecar's table."""
        path = os.path.join(self.args.cbt_state, "config.json")
        try:
            with open(path) as f:
                cfg = json.load(f)
        except FileNotFoundError:
            cfg = {}
        m = cfg.setdefault("sidecar_snapshots", {})
        if handle is None:
            m.pop(key, None)
        else:
            m[key] = handle
        tmp = path + ".tmp.k8s"
        with open(tmp, "w") as f:
            json.dump(cfg, f)
        os.replace(tmp, path)

    # every read goes through here: snapshots become ready
    def settle(self, s):
        changed = False
        now = time.time()
        for key, vs in (s.get("volumesnapshots") or {}).items():
            at = (vs.get("metadata", {}).get("annotations") or {}).get(
                "fixture/ready-at")
            if at is None or vs["status"].get("readyToUse"):
                continue
            src = vs["spec"]["source"].get("persistentVolumeClaimName")
            if key.split("/")[0] + "/" + str(src) in (s.get("never_ready")
                                                      or []):
                continue
            if now >= float(at):
                vs["status"]["readyToUse"] = True
                vsc = s["volumesnapshotcontents"].get(
                    vs["status"]["boundVolumeSnapshotContentName"])
                if vsc:
                    vsc["status"]["readyToUse"] = True
                changed = True
        return changed

    def create(self, s, kind, ns, body):
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise bad_request("metadata.name is required")
        key = "%s/%s" % (ns, name)
        objs = s.setdefault(kind, {})
        if key in objs:
            raise ApiError(409, "AlreadyExists",
                           '%s "%s" already exists' % (kind, name),
                           {"name": name, "kind": kind})
        meta["namespace"] = ns
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339(now_utc())
        meta["resourceVersion"] = str(int(time.time() * 1000) % 10 ** 9)
        getattr(self, "create_" + kind)(s, ns, name, body)
        objs[key] = body
        return body

    def create_pvcs(self, s, ns, name, body):
        spec = body.setdefault("spec", {})
        spec.setdefault("volumeMode", "Filesystem")
        size = parse_quantity(spec["resources"]["requests"]["storage"])
        img = self.image(ns, name)
        ds = spec.get("dataSource")
        if ds:
            vs = s["volumesnapshots"].get("%s/%s" % (ns, ds.get("name")))
            if vs is None or not vs["status"].get("readyToUse"):
                raise ApiError(422, "Invalid", "dataSource %s is not a "
                               "ready VolumeSnapshot" % ds.get("name"), {})
            handle = s["volumesnapshotcontents"][
                vs["status"]["boundVolumeSnapshotContentName"]][
                "status"]["snapshotHandle"]
            subprocess.run(["cp", "--sparse=always", os.path.join(
                self.args.cbt_state, handle + ".snap"), img], check=True)
        else:
            with open(img, "wb") as f:
                f.truncate(size)
        body["status"] = {"phase": "Bound", "accessModes":
                          spec.get("accessModes", []),
                          "capacity": {"storage": quantity(
                              max(size, os.path.getsize(img)))}}

    def create_volumesnapshots(self, s, ns, name, body):
        spec = body.get("spec") or {}
        pvc = (spec.get("source") or {}).get("persistentVolumeClaimName")
        cls = spec.get("volumeSnapshotClassName")
        if "%s/%s" % (ns, pvc) not in (s.get("pvcs") or {}):
            raise bad_request("no PVC %s/%s" % (ns, pvc))
        vclass = (s.get("volumesnapshotclasses") or {}).get(str(cls))
        body["status"] = {"readyToUse": False}
        if vclass is None:
            body["status"]["error"] = {
                "message": 'VolumeSnapshotClass "%s" not found' % cls}
            return
        uid = body["metadata"]["uid"]
        handle = "snap-" + uid
        snap = os.path.join(self.args.cbt_state, handle + ".snap")
        subprocess.run(["cp", "--sparse=always", self.image(ns, pvc), snap],
                       check=True)
        size = os.path.getsize(snap)
        vsc = "snapcontent-" + uid
        s.setdefault("volumesnapshotcontents", {})[vsc] = {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": vsc, "uid": str(uuid.uuid4()),
                         "creationTimestamp": rfc3339(now_utc())},
            "spec": {"deletionPolicy": "Delete", "driver": vclass["driver"],
                     "source": {"volumeHandle": "vol-" + pvc},
                     "volumeSnapshotClassName": cls,
                     "volumeSnapshotRef": {
                         "apiVersion": "snapshot.storage.k8s.io/v1",
                         "kind": "VolumeSnapshot", "name": name,
                         "namespace": ns, "uid": uid}},
            "status": {"readyToUse": False, "restoreSize": size,
                       "snapshotHandle": handle,
                       "creationTime": int(time.time() * 1e9)},
        }
        body["status"].update({"boundVolumeSnapshotContentName": vsc,
                               "restoreSize": quantity(size),
                               "creationTime": rfc3339(now_utc())})
        body["metadata"].setdefault("annotations", {})[
            "fixture/ready-at"] = str(time.time() + float(
                s.get("snapshot_ready_delay", 1.0)))
        self.sidecar_map("%s/%s" % (ns, name), handle)

    def create_pods(self, s, ns, name, body):
        raise bad_request("pods are made by Jobs here")

    def create_jobs(self, s, ns, name, body):
        body["status"] = {"active": 1}
        pod = "%s-%s" % (name, uuid.uuid4().hex[:5])
        tmpl = body["spec"]["template"]
        labels = dict((tmpl.get("metadata") or {}).get("labels") or {})
        labels["job-name"] = name
        s.setdefault("pods", {})["%s/%s" % (ns, pod)] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": ns, "labels": labels,
                         "uid": str(uuid.uuid4())},
            "spec": tmpl["spec"], "status": {"phase": "Running"}}
        self.start_pod(s, ns, pod, tmpl["spec"])
        threading.Thread(target=self.watch_pod, args=(ns, name, pod),
                         daemon=True).start()

    def start_pod(self, s, ns, pod, spec):
        """Runs the pod's one container here: devicePaths become the PVCs'
        image files, mountPaths directories of the pod's own."""
        c = spec["containers"][0]
        root = os.path.join(self.dir, "pods", "%s_%s" % (ns, pod))
        os.makedirs(root, exist_ok=True)
        subst = {}
        claims = {v["name"]: v for v in spec.get("volumes", [])}
        for d in c.get("volumeDevices", []):
            claim = claims[d["name"]]["persistentVolumeClaim"]["claimName"]
            if "%s/%s" % (ns, claim) not in s.get("pvcs", {}):
                raise bad_request("no PVC %s/%s" % (ns, claim))
            subst[d["devicePath"]] = self.image(ns, claim)
        for m in c.get("volumeMounts", []):
            d = os.path.join(root, m["name"])
            os.makedirs(d, exist_ok=True)
            subst[m["mountPath"]] = d

        def fix(v):     # whole arguments only: host paths stay as they are
            return subst.get(v, v)
        argv = [fix(a) for a in (c.get("command") or []) + (c.get("args")
                                                            or [])]
        argv[0] = os.path.join(self.args.bin_dir, os.path.basename(argv[0]))
        env = {"PATH": self.args.bin_dir + ":/usr/bin:/bin",
               "KUBECONFIG": self.args.pod_kubeconfig or ""}
        if "/tmp" in subst:
            env["TMPDIR"] = subst["/tmp"]
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = fix(e["value"])
        for k in ("CBTFS_PASSWORD",):
            if k in os.environ:
                env[k] = os.environ[k]
        with open(os.path.join(root, "log"), "wb") as log:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=env)
        PODS["%s/%s" % (ns, pod)] = p
        with open(os.path.join(self.dir, "pods.log"), "a") as f:
            f.write(json.dumps({"pod": "%s/%s" % (ns, pod), "pid": p.pid,
                                "argv": argv}) + "\n")

    def watch_pod(self, ns, job, pod):
        p = PODS["%s/%s" % (ns, pod)]
        rc = p.wait()
        with STATE_LOCK:
            s = load_state(self.args.state)
            po = s.get("pods", {}).get("%s/%s" % (ns, pod))
            if po:
                po["status"]["phase"] = "Succeeded" if rc == 0 else "Failed"
            j = s.get("jobs", {}).get("%s/%s" % (ns, job))
            if j:
                j["status"] = {"succeeded": 1} if rc == 0 else {"failed": 1}
                j["status"]["conditions"] = [{
                    "type": "Complete" if rc == 0 else "Failed",
                    "status": "True"}]
            save_state(self.args.state, s)

    def delete(self, s, kind, ns, name):
        key = "%s/%s" % (ns, name) if ns is not None else name
        obj = s.get(kind, {}).pop(key, None)
        if obj is None:
            return None
        if kind == "pvcs":
            try:
                os.unlink(self.image(ns, name))
            except FileNotFoundError:
                pass
        elif kind == "volumesnapshots":
            vsc = s.get("volumesnapshotcontents", {}).pop(
                (obj.get("status") or {}).get(
                    "boundVolumeSnapshotContentName"), None)
            self.sidecar_map(key, None)
            if vsc:
                try:
                    os.unlink(os.path.join(self.args.cbt_state,
                                           vsc["status"]["snapshotHandle"]
                                           + ".snap"))
                except FileNotFoundError:
                    pass
        elif kind == "jobs":
            for pk, po in list(s.get("pods", {}).items()):
                if (pk.startswith(ns + "/") and
                        po["metadata"]["labels"].get("job-name") == name):
                    del s["pods"][pk]
                    p = PODS.pop(pk, None)
                    if p and p.poll() is None:
                        p.terminate()
        obj.setdefault("metadata", {})["deletionTimestamp"] = rfc3339(
            now_utc())
        return obj

    def serve(self, handler, method, g, body, query):
        verb, kind, ns, name, log, group, resource = g
        q = urllib.parse.parse_qs(query)
        with STATE_LOCK:
            s = load_state(self.args.state)
            if self.settle(s):
                save_state(self.args.state, s)
            objs = s.get(kind) or {}
            key = "%s/%s" % (ns, name) if ns is not None else name
            if verb == "list":
                sel = (q.get("labelSelector") or [""])[0]
                items = [o for k, o in sorted(objs.items())
                         if (ns is None or k.startswith(ns + "/")) and
                         selector_matches(sel, o.get("metadata", {}).get(
                             "labels") or {})]
                return 200, {"kind": "List", "apiVersion": "v1",
                             "metadata": {}, "items": items}, None
            if verb == "get":
                o = objs.get(key)
                if o is None:
                    raise not_found(resource, group, name)
                if log:
                    with open(os.path.join(self.dir, "pods", "%s_%s" % (
                            ns, name), "log"), "rb") as f:
                        return 200, f.read(), None
                return 200, o, None
            if verb == "create":
                o = self.create(s, kind, ns, body)
                save_state(self.args.state, s)
                return 201, o, None
            o = self.delete(s, kind, ns, name)
            if o is None:
                raise not_found(resource, group, name)
            save_state(self.args.state, s)
            return 200, o, None


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, args, ctx):
        self.args = args
        self.ctx = ctx
        self.log_lock = threading.Lock()
        self.cluster = Cluster(args, self) if args.cluster_dir else None
        super().__init__(("127.0.0.1", 0), Handler)

    def finish_request(self, request, client_address):
        # the TLS handshake happens here, in the request's own thread, so
        # that a slow or broken client cannot block the accept loop
        request.settimeout(30)
        try:
            conn = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            sys.stderr.write("k8s_api_server: TLS handshake with %s failed: "
                             "%s\n" % (client_address[0], e))
            sys.stderr.flush()
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            # wrap_socket() took the descriptor over from request, so the
            # server's own shutdown_request() cannot close it
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout, ssl.SSLError)):
            return
        super().handle_error(request, client_address)

    def log(self, rec):
        if not self.args.log:
            return
        line = json.dumps(rec) + "\n"
        with self.log_lock:
            with open(self.args.log, "a") as f:
                f.write(line)
                f.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def version_string(self):
        return "k8s-api-fixture"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        self.serve("GET")

    def do_POST(self):
        self.serve("POST")

    def do_PUT(self):
        self.serve("PUT")

    def do_PATCH(self):
        self.serve("PATCH")

    def do_DELETE(self):
        self.serve("DELETE")

    def do_HEAD(self):
        self.serve("HEAD")

    # -- plumbing ------------------------------------------------------

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            data = b""
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n",
                                                             b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline(65537)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def authenticate(self, state):
        auth = self.headers.get("Authorization", "")
        users = state.get("users") or {}
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
            if token in users:
                user = users[token]
                return user, self.groups(state, user, None), "token"
        cert = None
        try:
            cert = self.connection.getpeercert()
        except (ValueError, AttributeError):
            cert = None
        if cert:
            cn = None
            orgs = []
            for rdn in cert.get("subject", ()):
                for k, v in rdn:
                    if k == "commonName" and cn is None:
                        cn = v
                    elif k == "organizationName":
                        orgs.append(v)
            if cn:
                return cn, self.groups(state, cn, orgs), "cert"
        return None, None, None

    @staticmethod
    def groups(state, user, orgs):
        g = (state.get("groups") or {}).get(user)
        if g is None:
            g = list(orgs or [])
            p = user.split(":")
            if len(p) == 4 and p[:2] == ["system", "serviceaccount"]:
                g += ["system:serviceaccounts", "system:serviceaccounts:" + p[2]]
        out = []
        for x in list(g) + ["system:authenticated"]:
            if x not in out:
                out.append(x)
        return out

    def send_json(self, code, obj, headers=None, head_only=False):
        ctype = "application/json"
        if isinstance(obj, bytes):     # a pod log
            data, ctype = obj, "text/plain"
        else:
            data = (json.dumps(obj) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head_only:
            self.wfile.write(data)
        self.wfile.flush()

    def serve(self, method):
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        rec = {"method": method, "path": path, "query": split.query,
               "user": None, "auth": None, "status": None, "body": None}
        raw = b""
        try:
            raw = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
        if method == "POST":
            text = raw.decode("utf-8", "replace")
            try:
                rec["body"] = json.loads(text)
            except ValueError:
                rec["body"] = text
        try:
            code, obj, headers = self.dispatch(method, path, raw, rec)
        except ApiError as e:
            code, obj, headers = e.code, e.status(), e.headers
        except Exception as e:  # a bug here, or a bad state file
            sys.stderr.write("k8s_api_server: %s %s: %r\n" % (method, path, e))
            sys.stderr.flush()
            err = ApiError(500, "InternalError",
                           "Internal error occurred: %s" % e, {})
            code, obj, headers = 500, err.status(), {}
        rec["status"] = code
        self.server.log(rec)
        self.send_json(code, obj, headers, head_only=(method == "HEAD"))

    def dispatch(self, method, path, raw, rec):
        with open(self.server.args.state) as f:
            state = json.load(f)
        user, groups, how = self.authenticate(state)
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        rec["user"] = user
        rec["auth"] = how
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        g = self.server.cluster and generic_route(method, parts)
        if g:
            return self.dispatch_cluster(method, g, state, user, rec)
        req = route(method, parts)
        rule = "%s %s" % (req.verb, req.rbac_resource)
        if rule in ((state.get("forbid") or {}).get(user) or []):
            raise req.forbidden(user)
        err = (state.get("errors") or {}).get(rule)
        if err:
            hdrs = {}
            if err.get("retry_after") is not None:
                hdrs["Retry-After"] = str(err["retry_after"])
            raise ApiError(int(err.get("code", 500)),
                           err.get("reason", "InternalError"),
                           err.get("message", "injected error"),
                           err.get("details", {}), hdrs)
        body = None
        if method == "POST":
            ctype = self.headers.get("Content-Type", "")
            ctype = ctype.split(";")[0].strip().lower()
            if ctype and ctype not in JSON_TYPES:
                raise ApiError(
                    415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format - "
                    "accepted media types include: " + ", ".join(JSON_TYPES),
                    {})
            body = rec["body"]
            if not isinstance(body, dict):
                raise bad_request("the body of the request is not a JSON "
                                  "object: %s" % raw[:200].decode(
                                      "utf-8", "replace"))
        return getattr(self, "h_" + req.handler)(state, req, body,
                                                 user, groups)

    def dispatch_cluster(self, method, g, state, user, rec):
        verb, kind, ns, name, log, group, resource = g
        rule = "%s %s%s" % (verb, resource, "/log" if log else "")
        if rule in ((state.get("forbid") or {}).get(user) or []):
            raise ApiError(403, "Forbidden", '%s is forbidden: User "%s" '
                           'cannot %s resource "%s"' % (resource, user, verb,
                                                        resource), {})
        err = (state.get("errors") or {}).get(rule)
        if err:
            raise ApiError(int(err.get("code", 500)),
                           err.get("reason", "InternalError"),
                           err.get("message", "injected error"), {})
        body = rec["body"]
        if method == "POST" and not isinstance(body, dict):
            raise bad_request("the body of the request is not a JSON object")
        return self.server.cluster.serve(self, method, g, body,
                                         urllib.parse.urlsplit(
                                             self.path).query)

    # -- endpoints -----------------------------------------------------

    def h_volumesnapshot(self, state, req, body, user, groups):
        key = "%s/%s" % (req.namespace, req.name)
        obj = (state.get("volumesnapshots") or {}).get(key)
        if obj is None:
            raise not_found(req.resource, req.group, req.name)
        return 200, obj, None

    def h_volumesnapshotcontent(self, state, req, body, user, groups):
        obj = (state.get("volumesnapshotcontents") or {}).get(req.name)
        if obj is None:
            raise not_found(req.resource, req.group, req.name)
        return 200, obj, None

    def h_sms(self, state, req, body, user, groups):
        versions = state.get("snapshotmetadataservices") or {}
        if req.version not in versions:
            raise not_served()
        obj = (versions[req.version] or {}).get(req.name)
        if obj is None:
            raise not_found(req.resource, req.group, req.name)
        return 200, obj, None

    def h_token(self, state, req, body, user, groups):
        kind = body.get("kind")
        api = body.get("apiVersion")
        if (kind not in (None, "TokenRequest")
                or api not in (None, "authentication.k8s.io/v1")):
            raise bad_request(
                'TokenRequest in version "v1" cannot be handled as a '
                'TokenRequest: unexpected kind/apiVersion %s %s' % (api, kind))
        spec = body.get("spec") or {}
        if not isinstance(spec, dict):
            raise bad_request("spec must be an object")
        auds = spec.get("audiences")
        if auds is None or auds == []:
            auds = [DEFAULT_AUDIENCE]
        if (not isinstance(auds, list)
                or not all(isinstance(a, str) for a in auds)):
            raise bad_request("spec.audiences must be a list of strings")
        exp = spec.get("expirationSeconds")
        if exp is None:
            exp = 3600
        if isinstance(exp, bool) or not isinstance(exp, int):
            raise bad_request(
                'TokenRequest in version "v1" cannot be handled as a '
                'TokenRequest: spec.expirationSeconds: not an integer')
        msg = None
        if exp < 600:
            msg = "may not specify a duration less than 10 minutes"
        elif exp > 1 << 32:
            msg = "may not specify a duration larger than 2^32 seconds"
        if msg:
            cause = "Invalid value: %d: %s" % (exp, msg)
            raise ApiError(
                422, "Invalid",
                'TokenRequest.authentication.k8s.io "%s" is invalid: '
                "spec.expirationSeconds: %s" % (req.name, cause),
                {"name": req.name, "group": "authentication.k8s.io",
                 "kind": "TokenRequest",
                 "causes": [{"reason": "FieldValueInvalid", "message": cause,
                             "field": "spec.expirationSeconds"}]})
        sa = "%s/%s" % (req.namespace, req.name)
        if sa not in (state.get("serviceaccounts") or []):
            raise not_found("serviceaccounts", "", req.name)
        token = (state.get("token_for_audience") or {}).get(auds[0])
        if token is None:
            token = "token-for-" + auds[0]
        now = now_utc()
        out_spec = dict(spec)
        out_spec["audiences"] = auds
        out_spec["expirationSeconds"] = exp
        out_spec.setdefault("boundObjectRef", None)
        return 201, {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": req.name, "namespace": req.namespace,
                         "creationTimestamp": rfc3339(now)},
            "spec": out_spec,
            "status": {"token": token,
                       "expirationTimestamp": rfc3339(
                           now + datetime.timedelta(seconds=exp))},
        }, None

    def h_ssr(self, state, req, body, user, groups):
        return 201, {
            "kind": "SelfSubjectReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": rfc3339(now_utc())},
            "status": {"userInfo": {"username": user, "groups": groups}},
        }, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--client-ca")
    ap.add_argument("--ports-file")
    ap.add_argument("--log")
    ap.add_argument("--cluster-dir")
    ap.add_argument("--cbt-state")
    ap.add_argument("--bin-dir")
    ap.add_argument("--pod-kubeconfig")
    args = ap.parse_args()
    args.state = os.path.abspath(args.state)
    if args.log:
        args.log = os.path.abspath(args.log)
    if args.cluster_dir and not (args.cbt_state and args.bin_dir):
        ap.error("--cluster-dir needs --cbt-state and --bin-dir")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["http/1.1"])
    if args.client_ca:
        ctx.load_verify_locations(args.client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL

    srv = Server(args, ctx)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True)
    t.start()

    text = "K8S_API=%s\n" % shlex.quote(
        "https://127.0.0.1:%d" % srv.server_address[1])
    if args.ports_file:
        tmp = "%s.tmp.%d" % (args.ports_file, os.getpid())
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.ports_file)
    sys.stdout.write(text)
    sys.stdout.flush()

    while not stop.wait(0.2):
        pass
    srv.shutdown()
    srv.server_close()
    for p in list(PODS.values()):     # the "pods" die with the cluster
        if p.poll() is None:
            p.terminate()
    sys.stdout.flush()
    sys.stderr.flush()
    # handler threads in the middle of a request must not keep the process
    # alive; every log line is written before its response
    os._exit(0)


if __name__ == "__main__":
    main()
