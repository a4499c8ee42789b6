#!/bin/bash
# --changes k8s end to end, against a fake Kubernetes API server (HTTPS,
# its own CA) and the gRPC fixture playing the sidecar: VolumeSnapshot ->
# VolumeSnapshotContent -> driver and handle -> SnapshotMetadataService ->
# TokenRequest -> sidecar.  Four generations, configured in-cluster style
# and with kubeconfigs (inline token, token file through $KUBECONFIG,
# client certificate); a delta after its base VolumeSnapshot was deleted;
# a SnapshotMetadataService served only as v1alpha1.  Every generation
# restores byte-exact.  Then each failure: not ready, not bound, no
# SnapshotMetadataService, TokenRequest forbidden, audience mismatch, bad
# credentials, a missing VolumeSnapshot: a clear message and no change.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
. "$top_srcdir/tests/cbt-fixture.inc"
. "$top_srcdir/tests/k8s-fixture.inc"
requires_fuse
requires_grpc_fixture
requires_in_cluster

CS=$((256 * 1024))
R=$T/repo
MNT=$T/mnt
STATE=$T/state
KS=$T/k8s.json
DRIVER=hostpath.csi.k8s.io
AUD=cbtfs-test-audience
"$REPO" init "$R" --chunk-size 256K >/dev/null || fail "init"

# the sidecar accepts the token the API server issues for $AUD
printf 'token-for-%s' "$AUD" >"$T/cbt-token"
start_cbt_server "$STATE"
start_k8s_api "$KS"
k8s_sms "$KS" v1beta1 "$DRIVER" "$AUD" "$SIDECAR_TARGET" "$CBT_CA"

img=$T/img
truncate -s 64M "$img"
SIDECAR_MAP=""

# snapshot N: the image now is handle hN, VolumeSnapshot ns/snap-N (ready,
# bound) in the API server and in the sidecar's table, and $T/genN.img.
snapshot() {
	local n=$1
	cp --sparse=always "$img" "$STATE/h$n.snap"
	cp --sparse=always "$img" "$T/gen$n.img"
	k8s_objects "$KS" ns "snap-$n" "h$n" "$DRIVER" true $((64 << 20))
	SIDECAR_MAP="$SIDECAR_MAP${SIDECAR_MAP:+,} \"ns/snap-$n\": \"h$n\""
	cbt_config "$STATE" "{\"sidecar_snapshots\": {$SIDECAR_MAP}}"
}

# check_gen N WANT_CHUNKS < json: the summary of an ingest of genN.
check_gen() {
	local out
	out=$(cat)
	[ "$(json_field changes <<<"$out")" = k8s ] || fail "gen$1: changes"
	[ "$(json_field capacity <<<"$out")" = $((64 << 20)) ] ||
		fail "gen$1: capacity"
	[ "$(json_field full_fallback <<<"$out")" = False ] ||
		fail "gen$1: fell back to a full backup"
	[ "$(json_field chunks_read <<<"$out")" = "$2" ] ||
		fail "gen$1 read $(json_field chunks_read <<<"$out") chunks, want $2"
	note "gen$1: $2 chunks read"
}

ING=("$INGEST" --repo "$R" --volume ns/data --changes k8s --json)

# generation 1, in a "pod": service account token and CA under
# /var/run/secrets, KUBERNETES_SERVICE_HOST/PORT; the ServiceAccount is
# found with a SelfSubjectReview
random_writes "$img" 12 2097152 1 "$T/r1"
snapshot 1
in_cluster "${ING[@]}" --snapshot snap-1 --device "$T/gen1.img" \
	--namespace ns >"$T/out" 2>"$T/err" || {
	cat "$T/err" >&2
	fail "gen1 in-cluster ingest"
}
check_gen 1 "$($IMGTOOL nonzero "$img" $CS)" <"$T/out"
k8s_requests | /usr/bin/python3 -c '
import json, sys
reqs = [json.loads(l) for l in sys.stdin if l.strip()]
paths = [r["path"] for r in reqs]
assert "/apis/snapshot.storage.k8s.io/v1/namespaces/ns/volumesnapshots/snap-1" in paths, paths
assert "/apis/cbt.storage.k8s.io/v1beta1/snapshotmetadataservices/hostpath.csi.k8s.io" in paths, paths
assert "/apis/authentication.k8s.io/v1/selfsubjectreviews" in paths, paths
tr = [r for r in reqs if r["path"].endswith("/serviceaccounts/cbtfs-backup/token")]
assert len(tr) == 1 and tr[0]["path"].startswith("/api/v1/namespaces/cbtfs/"), tr
assert tr[0]["body"]["spec"]["audiences"] == ["cbtfs-test-audience"], tr
assert all(r["user"] == "system:serviceaccount:cbtfs:cbtfs-backup" for r in reqs), reqs
' || fail "gen1 requests: $(k8s_requests)"

# generation 2: a kubeconfig with an inline token and CA; a delta
random_writes "$img" 8 300000 2 "$T/r2"
snapshot 2
make_kubeconfig "$T/kc-token" token
"${ING[@]}" --snapshot snap-2 --base snap-1 --device "$T/gen2.img" \
	--namespace ns --kubeconfig "$T/kc-token" >"$T/out" 2>"$T/err" || {
	cat "$T/err" >&2
	fail "gen2 kubeconfig ingest"
}
check_gen 2 "$($IMGTOOL changed "$T/gen1.img" "$img" $CS)" <"$T/out"

# generation 3: client certificate files, a named ServiceAccount, and the
# base VolumeSnapshot deleted: its handle comes from the repository
random_writes "$img" 10 20000 3 "$T/r3"
snapshot 3
k8s_state_edit "$KS" 'del s["volumesnapshots"]["ns/snap-2"]'
make_kubeconfig "$T/kc-cert" cert-file
"${ING[@]}" --snapshot snap-3 --base snap-2 --device "$T/gen3.img" \
	--namespace ns --kubeconfig "$T/kc-cert" \
	--service-account cbtfs/cbtfs-backup >"$T/out" 2>"$T/err" || {
	cat "$T/err" >&2
	fail "gen3 client-certificate ingest"
}
check_gen 3 "$($IMGTOOL changed "$T/gen2.img" "$img" $CS)" <"$T/out"
cbt_calls "$STATE" | grep '"method": "delta"' | tail -1 |
	grep -q '"base": "h2"' || fail "gen3 delta not against h2"

# generation 4: $KUBECONFIG with a token file, an older sidecar that
# serves the SnapshotMetadataService only as v1alpha1
random_writes "$img" 5 50000 4 "$T/r4"
snapshot 4
k8s_state_edit "$KS" 's["snapshotmetadataservices"]["v1alpha1"] = s["snapshotmetadataservices"].pop("v1beta1")
for o in s["snapshotmetadataservices"]["v1alpha1"].values(): o["apiVersion"] = "cbt.storage.k8s.io/v1alpha1"'
make_kubeconfig "$T/kc-tokenfile" token-file
KUBECONFIG=$T/nonexistent:$T/kc-tokenfile "${ING[@]}" --snapshot snap-4 \
	--base snap-3 --device "$T/gen4.img" --namespace ns >"$T/out" \
	2>"$T/err" || {
	cat "$T/err" >&2
	fail "gen4 KUBECONFIG ingest"
}
check_gen 4 "$($IMGTOOL changed "$T/gen3.img" "$img" $CS)" <"$T/out"

out=$("$REPO" snapshots "$R" --volume ns/data --json) || fail "snapshots"
/usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)
assert [x["csi_snapshot_handle"] for x in s] == ["h1", "h2", "h3", "h4"], s
assert all(x["csi_driver"] == "hostpath.csi.k8s.io" for x in s), s
assert [x["parent"] for x in s] == [None, "snap-1", "snap-2", "snap-3"], s
' <<<"$out" || fail "manifests: $out"

start_mount "$R" "$MNT"
for n in 1 2 3 4; do
	[ "$(sha "$MNT/ns/data/snap-$n.img")" = "$(sha "$T/gen$n.img")" ] ||
		fail "snap-$n differs from the snapshot"
done
stop_mount "$MNT"
note "4 generations over --changes k8s restore byte-exact"

# a VolumeSnapshot with nothing allocated: the sidecar's stream is empty,
# so the capacity is its restoreSize, not the (larger) device's
truncate -s 8M "$STATE/hz.snap"
truncate -s 9M "$T/zero-dev.img"
k8s_objects "$KS" ns zero hz "$DRIVER" true $((8 << 20))
cbt_config "$STATE" "{\"sidecar_snapshots\": {\"ns/zero\": \"hz\"}}"
"${ING[@]}" --volume ns/zero --snapshot zero --device "$T/zero-dev.img" \
	--namespace ns --kubeconfig "$T/kc-token" >"$T/out" 2>"$T/err" || {
	cat "$T/err" >&2
	fail "empty stream ingest"
}
[ "$(json_field capacity <"$T/out")" = $((8 << 20)) ] ||
	fail "empty stream: capacity $(json_field capacity <"$T/out"), want restoreSize"
[ "$(json_field chunks_read <"$T/out")" = 0 ] || fail "empty stream: read"
note "an empty stream takes the capacity from restoreSize"

# a token that expires during a long enumeration: after the stream broke,
# the sidecar refuses the token it accepted before; a new one is requested
cbt_config "$STATE" "{\"sidecar_snapshots\": {$SIDECAR_MAP},
	\"faults\": [{\"kind\": \"abort\", \"after\": 2},
	{\"kind\": \"abort\", \"code\": \"UNAUTHENTICATED\",
	 \"details\": \"token expired\"}]}"
ntok=$(k8s_requests | grep -c '/serviceaccounts/cbtfs-backup/token')
"${ING[@]}" --volume ns/renew --snapshot snap-1 --device "$T/gen1.img" \
	--namespace ns --kubeconfig "$T/kc-token" --max-results 7 \
	>"$T/out" 2>"$T/err" || {
	cat "$T/err" >&2
	fail "token renewal"
}
grep -q 'token expired.*requesting a new one' "$T/err" ||
	fail "renewal not reported: $(cat "$T/err")"
[ "$(json_field chunks_read <"$T/out")" = "$($IMGTOOL nonzero "$T/gen1.img" $CS)" ] ||
	fail "renewal: wrong chunks read"
[ "$(k8s_requests | grep -c '/serviceaccounts/cbtfs-backup/token')" = \
	$((ntok + 2)) ] || fail "expected two TokenRequests for one ingest"
note "an expired token is renewed and the stream resumed"

# a port-forward: the SnapshotMetadataService names an in-cluster address
# this host cannot resolve; --cbt-address reaches the sidecar, whose
# certificate is still verified for the service's host name
port=${SIDECAR_TARGET##*:}
k8s_sms "$KS" v1beta1 "$DRIVER" "$AUD" "cbt.example.test:$port" "$CBT_CA"
cbt_config "$STATE" "{\"sidecar_snapshots\": {$SIDECAR_MAP}}"
"${ING[@]}" --volume ns/forwarded --snapshot snap-4 --device "$T/gen4.img" \
	--namespace ns --kubeconfig "$T/kc-token" \
	--cbt-address "127.0.0.1:$port" >"$T/out" 2>"$T/err" || {
	cat "$T/err" >&2
	fail "--cbt-address override"
}
expect_fail "DNS resolution failed for cbt.example.test:$port" \
	"${ING[@]}" --volume ns/forwarded \
	--snapshot snap-3 --device "$T/gen3.img" --namespace ns \
	--kubeconfig "$T/kc-token" --cbt-retries 0
note "--cbt-address overrides the SnapshotMetadataService's address"

# ----------------------------------------------------------------------
# failures: a clear message, the repository unchanged

# bad NAME MESSAGE [args...]: an ingest of snapshot NAME fails saying
# MESSAGE and changes nothing.
bad() {
	local name=$1 msg=$2
	shift 2
	expect_fail_unchanged "$R" "$msg" "${ING[@]}" --volume ns/bad \
		--snapshot "$name" --device "$T/gen1.img" --namespace ns \
		--kubeconfig "$T/kc-token" --cbt-retries 0 "$@"
}

k8s_sms "$KS" v1beta1 "$DRIVER" "$AUD" "$SIDECAR_TARGET" "$CBT_CA"
k8s_objects "$KS" ns not-ready hx "$DRIVER" false
bad not-ready "VolumeSnapshot ns/not-ready is not ready to use"
k8s_objects "$KS" ns unbound hx "$DRIVER"
k8s_state_edit "$KS" 'del s["volumesnapshots"]["ns/unbound"]["status"]["boundVolumeSnapshotContentName"]'
bad unbound "VolumeSnapshot ns/unbound is not bound to a VolumeSnapshotContent"
k8s_objects "$KS" ns other-driver hx other.csi.example.com
bad other-driver "no SnapshotMetadataService named other.csi.example.com"
bad no-such "VolumeSnapshot ns/no-such not found"
k8s_state_edit "$KS" 's.setdefault("forbid", {})["system:serviceaccount:cbtfs:cbtfs-backup"] = ["create serviceaccounts/token"]'
bad snap-1 "permission to create serviceaccounts/token"
k8s_state_edit "$KS" 's["forbid"] = {}'
k8s_sms "$KS" v1beta1 "$DRIVER" other-audience "$SIDECAR_TARGET" "$CBT_CA"
bad snap-1 "UNAUTHENTICATED"
bad snap-1 "must be the audience the sidecar expects"
k8s_sms "$KS" v1beta1 "$DRIVER" "$AUD" "$SIDECAR_TARGET" "$CBT_CA"
sed 's/^\(    token: \).*/\1not-a-valid-token/' "$T/kc-token" >"$T/kc-bad"
! grep -qF -- "$K8S_TOKEN" "$T/kc-bad" || fail "kc-bad still holds the token"
bad snap-1 "credentials were not accepted (HTTP 401" --kubeconfig "$T/kc-bad"
KUBECONFIG=$T/none "${ING[@]}" --snapshot x --device "$T/gen1.img" \
	>/dev/null 2>"$T/err" && fail "KUBECONFIG=none worked"
grep -q "KUBECONFIG=$T/none: no such file" "$T/err" || fail "$(cat "$T/err")"
[ "$("$REPO" snapshots "$R" --volume ns/bad --json | tr -d ' \n')" = "[]" ] ||
	fail "a failed ingest left a snapshot"
note "7 kinds of failures: clear messages, repository unchanged"
exit 0
