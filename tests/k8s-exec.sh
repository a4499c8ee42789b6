#!/bin/bash
# kubeconfig exec credential plugins, tls-server-name and proxy-url, with
# --changes k8s against the fake API server (tests/k8s_api_server.py,
# which checks bearer tokens and client certificates as a real one does)
# and the gRPC sidecar fixture.  The plugin (tests/exec_plugin.py, run
# from the kubeconfig's directory by a relative command) checks the
# KUBERNETES_EXEC_INFO it is given and answers an ExecCredential as real
# plugins do.
#
# 1. a v1 plugin's token: the ingest commits, every API request carries
#    it, and the plugin ran once (the credential is kept until it
#    expires), with stdin on /dev/null and spec.cluster given;
# 2. a v1beta1 plugin's client certificate: every request authenticated
#    by that certificate;
# 3. a token the server refuses (401): the plugin runs again, once, and
#    the ingest goes on with the new token;
# 4. a token whose expirationTimestamp has passed: the plugin runs again
#    before each request;
# 5. a failing plugin: its exit status and stderr in the error; a missing
#    one with its installHint; v1 without interactiveMode refused;
# 6. tls-server-name: a server whose certificate names only
#    kube.cbtfs.test is refused at 127.0.0.1 without it, accepted with it;
# 7. proxy-url: the requests go through an HTTP CONNECT proxy.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
. "$top_srcdir/tests/cbt-fixture.inc"
. "$top_srcdir/tests/k8s-fixture.inc"
requires_grpc_fixture

R=$T/repo
KS=$T/k8s.json
DRIVER=hostpath.csi.k8s.io
AUD=cbtfs-test-audience
"$REPO" init "$R" --chunk-size 256K >/dev/null || fail "init"
printf 'token-for-%s' "$AUD" >"$T/cbt-token"
start_cbt_server "$T/state"
start_k8s_api "$KS"
k8s_sms "$KS" v1beta1 "$DRIVER" "$AUD" "$SIDECAR_TARGET" "$CBT_CA"
head -c 2M /dev/urandom >"$T/img"
truncate -s 8M "$T/img"
cp "$T/img" "$T/state/h1.snap"
k8s_objects "$KS" ns snap-1 h1 "$DRIVER" true $((8 << 20))
cbt_config "$T/state" '{"sidecar_snapshots": {"ns/snap-1": "h1"}}'

mkdir -p "$T/kc/bin"
cp "$top_srcdir/tests/exec_plugin.py" "$T/kc/bin/plugin" || fail "cp plugin"
chmod +x "$T/kc/bin/plugin"
PLOG=$T/plugin.log

# kubeconfig OUT SERVER MODE [VERSION [CLUSTER_EXTRA [USER_YAML]]]: a
# kubeconfig in $T/kc whose user runs "bin/plugin MODE" (or is USER_YAML)
kubeconfig() {
	local out=$1 server=$2 mode=$3 ver=${4:-v1} extra=${5:-} user=${6:-}
	[ -n "$user" ] || user="    exec:
      apiVersion: client.authentication.k8s.io/$ver
      command: bin/plugin
      args:
      - $mode
      - $PLOG
      - $server
      env:
      - name: PLUGIN_API_VERSION
        value: client.authentication.k8s.io/$ver
      - name: PLUGIN_TOKEN_FILE
        value: $K8S_TOKEN_FILE
      - name: PLUGIN_CERT
        value: $K8S_CLIENT_CERT
      - name: PLUGIN_KEY
        value: $K8S_CLIENT_KEY
      installHint: the test plugin is tests/exec_plugin.py
      interactiveMode: IfAvailable
      provideClusterInfo: true"
	cat >"$T/kc/$out" <<KC
apiVersion: v1
clusters:
- cluster:
    certificate-authority: $K8S_CA
    server: $server$extra
  name: test
contexts:
- context:
    cluster: test
    namespace: cbtfs
    user: plugin-user
  name: test
current-context: test
kind: Config
preferences: {}
users:
- name: plugin-user
  user:
$user
KC
}

# ingest VOLUME KUBECONFIG: a backup of snap-1 into VOLUME; the API
# requests it made are in $T/reqs, the plugin's runs in $T/runs
ingest() {
	: >"$T/k8s-requests.log"
	: >"$PLOG"
	"$INGEST" --repo "$R" --volume "$1" --changes k8s --snapshot snap-1 \
		--device "$T/img" --namespace ns --kubeconfig "$T/kc/$2" \
		--json >"$T/out" 2>"$T/err" </dev/null || {
		cat "$T/err" >&2
		fail "ingest $1 with $2"
	}
	[ "$(json_field changes <"$T/out")" = k8s ] || fail "$1: changes"
	rm -f "$T/restored"
	"$REPO" restore "$R" "$1@snap-1" --to "$T/restored" >/dev/null ||
		fail "$1: restore"
	cmp "$T/restored" "$T/img" || fail "$1: restored image differs"
	cp "$T/k8s-requests.log" "$T/reqs"
	grep -c . "$PLOG" >"$T/runs"
}
# reqs PYTHON: asserts PYTHON over reqs (the request log's records)
reqs() {
	/usr/bin/python3 -c "import json, sys
reqs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert reqs, 'no requests'
$1" "$T/reqs" || fail "requests: $(cat "$T/reqs")"
}

# 1. a token, kept
kubeconfig token.yaml "$K8S_API" token
ingest ns/tok token.yaml
[ "$(cat "$T/runs")" = 1 ] || fail "token plugin ran $(cat "$T/runs") times"
reqs 'assert all(r["auth"] == "token" and r["status"] < 300 and
           r["user"] == "system:serviceaccount:cbtfs:cbtfs-backup"
           for r in reqs), reqs
assert len(reqs) >= 3, reqs'
/usr/bin/python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).readline())
assert r["stdin"] == "devnull", r
assert r["info"]["spec"]["cluster"]["server"] == sys.argv[2], r
assert "certificate-authority-data" not in r["info"]["spec"]["cluster"], r
' "$PLOG" "$K8S_API" || fail "plugin run: $(cat "$PLOG")"
note "v1 token plugin: one run, every request authenticated"

# 2. a client certificate (v1beta1)
kubeconfig cert.yaml "$K8S_API" cert v1beta1
ingest ns/cert cert.yaml
[ "$(cat "$T/runs")" = 1 ] || fail "cert plugin ran $(cat "$T/runs") times"
reqs 'assert all(r["auth"] == "cert" and r["status"] < 300 for r in reqs), reqs'
note "v1beta1 client-certificate plugin"

# 3. a refused token: 401, the plugin again, once
kubeconfig rotate.yaml "$K8S_API" rotate
ingest ns/rot rotate.yaml
[ "$(cat "$T/runs")" = 2 ] || fail "rotate plugin ran $(cat "$T/runs") times"
reqs 'assert reqs[0]["status"] == 401 and reqs[0]["auth"] is None, reqs
assert all(r["status"] < 300 and r["auth"] == "token" for r in reqs[1:]), reqs'
note "a token refused with 401 is fetched again"

# 4. an expired credential: fetched again before each request
kubeconfig expired.yaml "$K8S_API" expired
ingest ns/exp expired.yaml
n=$(grep -c . "$T/reqs")
[ "$(cat "$T/runs")" = "$n" ] ||
	fail "expired plugin ran $(cat "$T/runs") times for $n requests"
note "an expired credential is fetched again ($n runs)"

# 5. a failing plugin: exit status and stderr
kubeconfig fail.yaml "$K8S_API" fail
expect_fail "exec plugin bin/plugin failed with exit status 3: error: the SSO session has expired or is invalid
run 'cloud login' and try again" \
	"$INGEST" --repo "$R" --volume ns/fail --changes k8s --snapshot snap-1 \
	--device "$T/img" --namespace ns --kubeconfig "$T/kc/fail.yaml"
kubeconfig missing.yaml "$K8S_API" token v1 "" "    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: no-such-cbtfs-plugin
      installHint: install it from example.com
      interactiveMode: Never"
expect_fail "exec plugin no-such-cbtfs-plugin: not found in \$PATH: install it from example.com" \
	"$INGEST" --repo "$R" --volume ns/fail --changes k8s --snapshot snap-1 \
	--device "$T/img" --namespace ns --kubeconfig "$T/kc/missing.yaml"
kubeconfig nomode.yaml "$K8S_API" token v1 "" "    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: bin/plugin"
expect_fail "exec plugin bin/plugin: client.authentication.k8s.io/v1 needs interactiveMode (Never, IfAvailable or Always)" \
	"$INGEST" --repo "$R" --volume ns/fail --changes k8s --snapshot snap-1 \
	--device "$T/img" --namespace ns --kubeconfig "$T/kc/nomode.yaml"
"$REPO" snapshots "$R" | grep -q ns/fail && fail "a failed ingest committed"
note "a failing plugin: its exit status and stderr"

# 6. tls-server-name: a second API server whose certificate names only
#    kube.cbtfs.test, from the same CA
C=$(dirname "$K8S_CA")
cat >"$T/alt.cnf" <<'CNF'
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:kube.cbtfs.test
CNF
{
	openssl req -new -newkey rsa:2048 -nodes -subj "/CN=kube.cbtfs.test" \
		-keyout "$T/alt.key" -out "$T/alt.csr" &&
	openssl x509 -req -days 30 -in "$T/alt.csr" -CA "$K8S_CA" \
		-CAkey "$C/ca.key" -set_serial 0x51 -extfile "$T/alt.cnf" \
		-extensions server -out "$T/alt.pem"
} >"$T/alt.log" 2>&1 || { cat "$T/alt.log"; fail "alt certificate"; }
/usr/bin/python3 "$top_srcdir/tests/k8s_api_server.py" --state "$KS" \
	--cert "$T/alt.pem" --key "$T/alt.key" --client-ca "$K8S_CA" \
	--ports-file "$T/alt-ports" --log "$T/alt-requests.log" \
	>"$T/alt-api.log" 2>&1 &
_pids+=($!)
wait_for 20 test -s "$T/alt-ports" || fail "second API server"
ALT=$(. "$T/alt-ports"; echo "$K8S_API")
TOKEN_USER="    token: $K8S_TOKEN"
kubeconfig alt-plain.yaml "$ALT" - v1 "" "$TOKEN_USER"
expect_fail "check the cluster's CA" \
	"$INGEST" --repo "$R" --volume ns/tls --changes k8s --snapshot snap-1 \
	--device "$T/img" --namespace ns --kubeconfig "$T/kc/alt-plain.yaml"
kubeconfig alt.yaml "$ALT" - v1 "
    tls-server-name: kube.cbtfs.test" "$TOKEN_USER"
ingest ns/tls alt.yaml
grep -q '"status": 200' "$T/alt-requests.log" ||
	fail "the tls-server-name server saw no request"
note "tls-server-name: the certificate is checked against that name"

# 7. proxy-url: an HTTP CONNECT proxy
/usr/bin/python3 "$top_srcdir/tests/connect_proxy.py" \
	--port-file "$T/proxy-port" --log "$T/proxy.log" 2>"$T/proxy.err" &
_pids+=($!)
wait_for 10 test -s "$T/proxy-port" || fail "proxy"
kubeconfig proxy.yaml "$K8S_API" - v1 "
    proxy-url: http://127.0.0.1:$(cat "$T/proxy-port")" "$TOKEN_USER"
ingest ns/proxy proxy.yaml
grep -qx "CONNECT 127.0.0.1:$K8S_PORT" "$T/proxy.log" ||
	fail "no CONNECT through the proxy: $(cat "$T/proxy.log")"
CLOSED=$CLOSED_PORT
kubeconfig noproxy.yaml "$K8S_API" - v1 "
    proxy-url: http://127.0.0.1:$CLOSED" "$TOKEN_USER"
expect_fail "Kubernetes API $K8S_API" \
	"$INGEST" --repo "$R" --volume ns/np --changes k8s --snapshot snap-1 \
	--device "$T/img" --namespace ns --kubeconfig "$T/kc/noproxy.yaml"
note "proxy-url: requests go through the proxy"
exit 0
