#!/bin/bash
# The gRPC client under valgrind: a successful csi call (a stream cut once
# and resumed), a successful sidecar delta over TLS, a dead socket and a
# TLS handshake that fails; and the Kubernetes client: --changes k8s with a
# client-certificate kubeconfig, and a VolumeSnapshot that is not there.  No memory errors, nothing definitely,
# indirectly or possibly lost (grpc's one-time globals are suppressed in
# tests/grpc-valgrind.supp).
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
. "$top_srcdir/tests/cbt-fixture.inc"
. "$top_srcdir/tests/k8s-fixture.inc"
requires valgrind
requires_grpc_fixture

STATE=$T/state
"$REPO" init "$T/repo" --chunk-size 64K >/dev/null || fail "init"
head -c 1M /dev/urandom >"$T/img"
truncate -s 2M "$T/img"
mkdir -p "$STATE"
cp "$T/img" "$STATE/h1.snap"
start_cbt_server "$STATE"
cbt_config "$STATE" '{"sidecar_snapshots": {"ns/s2": "h1"},
	"faults": [{"kind": "abort", "after": 2}]}'

VG=(valgrind -q --error-exitcode=99 --leak-check=full
	--show-leak-kinds=definite,indirect,possible
	--errors-for-leak-kinds=definite,indirect,possible
	--suppressions="$top_srcdir/tests/grpc-valgrind.supp")
ING=("$INGEST" --repo "$T/repo" --volume v --device "$T/img" --no-progress)

# vg WANT_RC NAME ARGS...: runs ingest under valgrind; the exit status must
# be WANT_RC (99 would be valgrind's).
vg() {
	local want=$1 name=$2 rc=0
	shift 2
	"${VG[@]}" "${ING[@]}" "$@" >"$T/vg.out" 2>&1 || rc=$?
	[ "$rc" = "$want" ] || {
		cat "$T/vg.out" >&2
		fail "$name: exit status $rc, want $want"
	}
	note "$name: clean under valgrind (exit $rc)"
}

vg 0 "csi, resumed once" --snapshot s1 --changes csi \
	--csi-endpoint "$CSI_TARGET" --snapshot-id h1 --max-results 3
grep -q resuming "$T/vg.out" || fail "the stream was not cut"
vg 0 "sidecar delta over TLS" --snapshot s2 --base s1 --changes sidecar \
	--cbt-address "$SIDECAR_TARGET" --ca-file "$CBT_CA" --namespace ns \
	--token-file "$CBT_TOKEN_FILE"
vg 1 "dead socket" --snapshot s3 --changes csi \
	--csi-endpoint "unix:$T/none.sock" --snapshot-id h1 --cbt-retries 0
grep -q 'No such file or directory' "$T/vg.out" || fail "dead socket message"
vg 1 "TLS handshake refused" --snapshot s3 --changes sidecar \
	--cbt-address "$SIDECAR_TARGET" --namespace ns \
	--ca-file "$T/cbt-certs/other-ca.pem" \
	--token-file "$CBT_TOKEN_FILE" --cbt-retries 0
grep -q 'certificate verify failed' "$T/vg.out" || fail "TLS message"

printf 'token-for-aud' >"$T/cbt-token"	# what the API server issues
start_k8s_api "$T/k8s.json"
k8s_sms "$T/k8s.json" v1beta1 d.example aud "$SIDECAR_TARGET" "$CBT_CA"
k8s_objects "$T/k8s.json" ns s4 h1 d.example
cbt_config "$STATE" '{"sidecar_snapshots": {"ns/s4": "h1"}}'
make_kubeconfig "$T/kc" cert
vg 0 "k8s discovery, then the sidecar" --snapshot s4 --changes k8s \
	--kubeconfig "$T/kc" --namespace ns
vg 1 "k8s: no such VolumeSnapshot" --snapshot s5 --changes k8s \
	--kubeconfig "$T/kc" --namespace ns
grep -q 'VolumeSnapshot ns/s5 not found' "$T/vg.out" || fail "k8s message"
exit 0
