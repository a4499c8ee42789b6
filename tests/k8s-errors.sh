#!/bin/bash
# --changes k8s when the configuration or the cluster's objects are wrong:
# every kubeconfig problem, and every VolumeSnapshot, VolumeSnapshotContent,
# SnapshotMetadataService and TokenRequest answer cbtfs refuses, gives its
# own message, and the repository stays unchanged.  (k8s-e2e.sh has the
# working paths and the RBAC and audience failures.)
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
. "$top_srcdir/tests/cbt-fixture.inc"
. "$top_srcdir/tests/k8s-fixture.inc"
requires_grpc_fixture
requires_in_cluster

R=$T/repo
KS=$T/k8s.json
DRIVER=hostpath.csi.k8s.io
"$REPO" init "$R" >/dev/null || fail "init"
head -c 1M /dev/urandom >"$T/img"
start_cbt_server "$T/state"
start_k8s_api "$KS"
k8s_sms "$KS" v1beta1 "$DRIVER" aud "$SIDECAR_TARGET" "$CBT_CA"
k8s_objects "$KS" ns s1 h1 "$DRIVER"
make_kubeconfig "$T/kc" token
BEFORE=$(fingerprint "$R")	# for the in-cluster run at the end

ING=("$INGEST" --repo "$R" --volume ns/v --device "$T/img" --changes k8s
	--namespace ns --cbt-retries 0)

# refused MESSAGE ARGS...: the ingest fails saying MESSAGE; no change.
refused() {
	local msg=$1
	shift
	expect_fail_unchanged "$R" "$msg" "${ING[@]}" "$@"
}

# kc NAME PYTHON: $T/NAME, the working kubeconfig edited by PYTHON (on
# its text t).
kc() {
	/usr/bin/python3 -c "import sys; t = open(sys.argv[1]).read(); $2
open(sys.argv[2], 'w').write(t)" "$T/kc" "$T/$1" || fail "kc $1"
}

# ---------------------------------------------------------------------
# the kubeconfig

refused "kubeconfig $T/none: No such file" --snapshot s1 --kubeconfig "$T/none"
printf 'a: [\n' >"$T/kc-yaml"
refused "kubeconfig $T/kc-yaml: not valid YAML" --snapshot s1 \
	--kubeconfig "$T/kc-yaml"
printf -- '- a\n- b\n' >"$T/kc-list"
refused "kubeconfig $T/kc-list: not a kubeconfig" --snapshot s1 \
	--kubeconfig "$T/kc-list"
kc kc-nocur 't = t.replace("current-context: cbtfs-test\n", "")'
refused "no current-context; set one with 'kubectl config use-context'" \
	--snapshot s1 --kubeconfig "$T/kc-nocur"
kc kc-badcur 't = t.replace("current-context: cbtfs-test", "current-context: gone")'
refused "the current-context is not among its contexts" --snapshot s1 \
	--kubeconfig "$T/kc-badcur"
kc kc-noserver 'import re; t = re.sub(r"\n    server: https://127\.0\.0\.1:[0-9]+", "", t)'
refused "context 'cbtfs-test' has no cluster with a server" --snapshot s1 \
	--kubeconfig "$T/kc-noserver"
kc kc-insecure 't = t.replace("    server: https://127.0.0.1:", "    insecure-skip-tls-verify: true\n    server: https://127.0.0.1:", 1)'
grep -q insecure "$T/kc-insecure" || fail "kc-insecure"
refused "sets insecure-skip-tls-verify, which cbtfs does not do" \
	--snapshot s1 --kubeconfig "$T/kc-insecure"
kc kc-exec 'import re; t = re.sub(r"(- name: cbtfs-backup\n  user:\n)    token: \S+", r"\1    exec:\n      command: aws", t)'
grep -q 'command: aws' "$T/kc-exec" || fail "kc-exec"
refused "exec plugin aws: apiVersion '(none)': cbtfs speaks client.authentication.k8s.io/v1 and client.authentication.k8s.io/v1beta1" --snapshot s1 \
	--kubeconfig "$T/kc-exec"
kc kc-b64 't = t.replace("certificate-authority-data: ", "certificate-authority-data: $$$$", 1)'
refused "certificate-authority-data is not valid base64" --snapshot s1 \
	--kubeconfig "$T/kc-b64"
make_kubeconfig "$T/kc-tf" token-file
sed "s|tokenFile: .*|tokenFile: $T/no-token|" "$T/kc-tf" >"$T/kc-tf2"
refused "kubeconfig tokenFile $T/no-token: No such file" --snapshot s1 \
	--kubeconfig "$T/kc-tf2"
make_kubeconfig "$T/kc-cf" cert-file
sed "s|client-key: .*|client-key: $T/no-key|" "$T/kc-cf" >"$T/kc-cf2"
refused "client-key $T/no-key: No such file" --snapshot s1 \
	--kubeconfig "$T/kc-cf2"
mkdir -p "$T/home"
expect_fail "no Kubernetes configuration: not in a pod" env -u KUBECONFIG \
	-u KUBERNETES_SERVICE_HOST HOME="$T/home" "${ING[@]}" --snapshot s1
kc kc-otherca "import base64; t = t.replace(t.split('certificate-authority-data: ')[1].split()[0], base64.b64encode(open('$K8S_OTHER_CA','rb').read()).decode(), 1)"
refused "check the cluster's CA" --snapshot s1 --kubeconfig "$T/kc-otherca"
note "13 kubeconfig problems refused with their own messages"

# ---------------------------------------------------------------------
# the cluster's objects

# obj NAME PYTHON: a fresh, working VolumeSnapshot NAME (handle h1), then
# PYTHON applied to the state (vs and vsc are its two objects).
obj() {
	k8s_objects "$KS" ns "$1" h1 "$DRIVER"
	k8s_state_edit "$KS" "vs = s['volumesnapshots']['ns/$1']
vsc = s['volumesnapshotcontents']['$K8S_VSC_NAME']
$2"
}
KC=(--kubeconfig "$T/kc")

obj other-ref 'vsc["spec"]["volumeSnapshotRef"]["name"] = "someone-else"'
refused "is bound to another VolumeSnapshot" --snapshot other-ref "${KC[@]}"
obj other-uid 'vsc["spec"]["volumeSnapshotRef"]["uid"] = "0000"'
refused "is bound to another VolumeSnapshot" --snapshot other-uid "${KC[@]}"
obj vsc-unready 'vsc["status"]["readyToUse"] = False'
refused "(of VolumeSnapshot ns/vsc-unready) is not ready to use" \
	--snapshot vsc-unready "${KC[@]}"
obj no-handle 'del vsc["status"]["snapshotHandle"]'
refused "has no status.snapshotHandle" --snapshot no-handle "${KC[@]}"
obj no-driver 'del vsc["spec"]["driver"]'
refused "has no spec.driver" --snapshot no-driver "${KC[@]}"
# what it had read of that snapshot is freed (valgrind: 99 on a leak)
if command -v valgrind >/dev/null; then
	rc=0
	valgrind -q --leak-check=full --errors-for-leak-kinds=definite \
		--error-exitcode=99 \
		--suppressions="$top_srcdir/tests/grpc-valgrind.supp" \
		"${ING[@]}" --snapshot no-driver "${KC[@]}" >"$T/vg" 2>&1 ||
		rc=$?
	[ $rc = 1 ] || fail "no-driver under valgrind: exit $rc: $(cat "$T/vg")"
fi

k8s_state_edit "$KS" 'del s["snapshotmetadataservices"]["v1beta1"]["'"$DRIVER"'"]["spec"]["audience"]'
refused "SnapshotMetadataService $DRIVER (cbt.storage.k8s.io/v1beta1) lacks spec.audience" \
	--snapshot s1 "${KC[@]}"
k8s_sms "$KS" v1beta1 "$DRIVER" aud "$SIDECAR_TARGET" "$CBT_CA"
k8s_state_edit "$KS" 's["snapshotmetadataservices"]["v1beta1"]["'"$DRIVER"'"]["spec"]["caCert"] = "not*base64"'
refused "spec.caCert is not valid base64" --snapshot s1 "${KC[@]}"
k8s_sms "$KS" v1beta1 "$DRIVER" aud "$SIDECAR_TARGET" "$CBT_CA"

# a TokenRequest answered without a token
k8s_state_edit "$KS" 's["token_for_audience"] = {"aud": ""}'
refused "came back without status.token" --snapshot s1 "${KC[@]}"
k8s_state_edit "$KS" 's["token_for_audience"] = {}'

# credentials of a person, not of a ServiceAccount
k8s_state_edit "$KS" 's["users"]["jane-token"] = "jane"'
kc kc-jane "t = t.replace('$K8S_TOKEN', 'jane-token')"
refused "are those of 'jane', not of a ServiceAccount: give --service-account" \
	--snapshot s1 --kubeconfig "$T/kc-jane"

# a pod without a namespace file, and no --namespace
K8S_POD_NAMESPACE= in_cluster "$INGEST" --repo "$R" --volume ns/v \
	--device "$T/img" --changes k8s --snapshot s1 >/dev/null 2>"$T/err" &&
	fail "an ingest with no namespace anywhere worked"
grep -q -- "--changes k8s needs --namespace" "$T/err" || fail "$(cat "$T/err")"
[ "$(fingerprint "$R")" = "$BEFORE" ] || fail "repository changed"
note "10 problems with the cluster's objects refused with their own messages"
exit 0
