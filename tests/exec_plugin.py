#!/usr/bin/python3
"""A kubeconfig exec credential plugin for the cbtfs tests, as kubelogin,
aws eks get-token or gke-gcloud-auth-plugin are: it reads
KUBERNETES_EXEC_INFO, prints an ExecCredential on stdout, and says what
went wrong on stderr with a non-zero exit status.

  exec_plugin.py MODE LOG [CLUSTER_SERVER]

MODE (with files named in the environment the kubeconfig's exec env
sets):
  token    status.token = contents of $PLUGIN_TOKEN_FILE, valid 1 h
  cert     status.clientCertificateData/clientKeyData = the PEM files
           $PLUGIN_CERT and $PLUGIN_KEY, valid 1 h
  rotate   1st run: token "stale-token" valid 1 h (the API server does
           not know it); later runs: as token
  expired  as token, with an expirationTimestamp already past
  fail     stderr "error: ...", exit 3
Every run appends one JSON line to LOG: {"mode", "info" (the parsed
KUBERNETES_EXEC_INFO), "stdin" (what stdin is)}.  The plugin exits 2 with a
message on stderr if KUBERNETES_EXEC_INFO is not what the spec says (kind
ExecCredential, apiVersion $PLUGIN_API_VERSION, spec.interactive false, and
spec.cluster.server = CLUSTER_SERVER when that is given).
"""
import datetime
import json
import os
import stat
import sys

mode, log = sys.argv[1], sys.argv[2]
server = sys.argv[3] if len(sys.argv) > 3 else None
version = os.environ.get("PLUGIN_API_VERSION",
                         "client.authentication.k8s.io/v1")
raw = os.environ.get("KUBERNETES_EXEC_INFO")
st = os.fstat(0)
stdin = "devnull" if stat.S_ISCHR(st.st_mode) and \
    os.path.samestat(st, os.stat("/dev/null")) else "other"
info = json.loads(raw) if raw else None
with open(log, "a") as f:
    f.write(json.dumps({"mode": mode, "info": info, "stdin": stdin}) + "\n")


def bad(msg):
    sys.stderr.write("exec_plugin: %s\n" % msg)
    sys.exit(2)


if info is None:
    bad("KUBERNETES_EXEC_INFO is not set")
if info.get("kind") != "ExecCredential" or info.get("apiVersion") != version:
    bad("KUBERNETES_EXEC_INFO is not an ExecCredential of %s: %s"
        % (version, raw))
if info.get("spec", {}).get("interactive") is not False:
    bad("spec.interactive is not false: %s" % raw)
if server and info["spec"].get("cluster", {}).get("server") != server:
    bad("spec.cluster.server is not %s: %s" % (server, raw))

now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
later = (now + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
past = (now - datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")


def read(name):
    with open(os.environ[name]) as f:
        return f.read().strip() if name == "PLUGIN_TOKEN_FILE" else f.read()


status = {}
if mode == "fail":
    sys.stderr.write("error: the SSO session has expired or is invalid\n"
                     "run 'cloud login' and try again\n")
    sys.exit(3)
elif mode == "token":
    status = {"token": read("PLUGIN_TOKEN_FILE"), "expirationTimestamp": later}
elif mode == "rotate":
    prior = sum(1 for l in open(log) if json.loads(l)["mode"] == "rotate")
    status = {"token": "stale-token" if prior == 1
              else read("PLUGIN_TOKEN_FILE"), "expirationTimestamp": later}
elif mode == "expired":
    status = {"token": read("PLUGIN_TOKEN_FILE"), "expirationTimestamp": past}
elif mode == "cert":
    status = {"clientCertificateData": read("PLUGIN_CERT"),
              "clientKeyData": read("PLUGIN_KEY"),
              "expirationTimestamp": later}
else:
    bad("unknown mode " + mode)
json.dump({"apiVersion": version, "kind": "ExecCredential", "spec": {},
           "status": status}, sys.stdout)
