#!/bin/bash
# cbtfs-k8s against the fixture cluster: the fake API server
# (tests/k8s_api_server.py --cluster-dir) keeps PVCs as image files, makes
# VolumeSnapshots (copies the sidecar fixture serves, ready after a delay),
# PVCs from them, and runs each Job's container here as a process (the
# build tree's cbtfs-ingest and cbtfs-repo; the pod log is its output), so
# every ingest really runs against the gRPC sidecar fixture and commits to
# a directory repository.
#   1. backup of 3 block PVCs by selector (and a filesystem PVC skipped);
#   2. again: each ingest is a delta on the first run's backup, found by
#      cbtfs-k8s itself, reading only the changed chunks;
#   3. a snapshot that never becomes ready: reported, the others succeed,
#      exit status 1, no snapshot left of it;
#   4. SIGTERM mid-run: what it made is deleted; kill -9 mid-run: a re-run
#      deletes the orphans;
#   5. restore into a new PVC, byte-exact; an existing PVC refused;
#   6. every object created was labelled, and none is left but the kept
#      VolumeSnapshots (and the restored PVC).
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
. "$top_srcdir/tests/cbt-fixture.inc"
. "$top_srcdir/tests/k8s-fixture.inc"
requires_grpc_fixture

K8S=$top_builddir/cbtfs-k8s
CS=$((256 * 1024))
SIZE=$((8 << 20))
R=$T/repo
STATE=$T/cbt-state
KS=$T/k8s.json
CL=$T/cluster
DRIVER=hostpath.csi.k8s.io
AUD=cbtfs-test-audience
export CBTFS_K8S_POLL_MS=100 CBTFS_IMAGE=cbtfs:test
"$REPO" init "$R" --chunk-size 256K >/dev/null || fail "init"

printf 'token-for-%s' "$AUD" >"$T/cbt-token"
start_cbt_server "$STATE"
start_k8s_api "$KS" --cluster-dir "$CL" --cbt-state "$STATE" \
	--bin-dir "$top_builddir" --pod-kubeconfig "$T/kubeconfig"
make_kubeconfig "$T/kubeconfig" token
k8s_sms "$KS" v1beta1 "$DRIVER" "$AUD" "$SIDECAR_TARGET" "$CBT_CA"
mkdir -p "$CL/volumes"

# the cluster: a StorageClass of the driver, its default snapshot class
# (and another driver's), four PVCs labelled backup=daily (one of them
# Filesystem) and one that is not
k8s_state_edit "$KS" '
drv, size = a[0], int(a[1])
s["serviceaccounts"].append("ns/cbtfs-backup")
s["storageclasses"] = {"csi-hostpath-sc": {"apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass", "metadata": {"name": "csi-hostpath-sc"},
    "provisioner": drv}}
def vsc(name, driver, default):
    return {"apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotClass", "driver": driver,
            "deletionPolicy": "Delete",
            "metadata": {"name": name, "annotations": {
                "snapshot.storage.kubernetes.io/is-default-class":
                    "true" if default else "false"}}}
s["volumesnapshotclasses"] = {
    "other-default": vsc("other-default", "ebs.csi.aws.com", True),
    "csi-hostpath-slow": vsc("csi-hostpath-slow", drv, False),
    "csi-hostpath-snapclass": vsc("csi-hostpath-snapclass", drv, True)}
s["pvcs"] = {}
for name, mode, labels in (("db-a", "Block", {"backup": "daily"}),
                           ("db-b", "Block", {"backup": "daily"}),
                           ("db-c", "Block", {"backup": "daily", "x": "y"}),
                           ("files", "Filesystem", {"backup": "daily"}),
                           ("other", "Block", {})):
    s["pvcs"]["ns/" + name] = {"apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "ns", "labels": labels,
                     "uid": str(uuid.uuid4())},
        "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": mode,
                 "storageClassName": "csi-hostpath-sc",
                 "resources": {"requests": {"storage": "8Mi"}}},
        "status": {"phase": "Bound", "capacity": {"storage": "8Mi"}}}
s["snapshot_ready_delay"] = 0.5
' "$DRIVER" "$SIZE"
for p in db-a db-b db-c files other; do
	truncate -s $SIZE "$CL/volumes/ns_$p.img"
done

# write SEED COUNT PVC: COUNT random 4 KiB blocks at chunk-spread offsets
write() {
	local seed=$1 n=$2 img=$CL/volumes/ns_$3.img i
	for ((i = 0; i < n; i++)); do
		dd if=/dev/urandom of="$img" bs=4K count=1 conv=notrunc \
			seek=$(((seed * 7 + i * 64 + 3) % (SIZE / 4096))) \
			status=none || fail "write $img"
	done
}
write 1 20 db-a
write 2 10 db-b
write 3 5 db-c

k8s() { "$K8S" --kubeconfig "$T/kubeconfig" -r "$R" "$@"; }

# entry PVC < report: that PVC's entry
entry() {
	"$K8S_PYTHON" -c '
import json, sys
r = json.load(sys.stdin)
e = [p for p in r["pvcs"] if p["pvc"] == sys.argv[1]]
print(json.dumps(e[0]) if e else "")' "$1"
}
field() { "$K8S_PYTHON" -c '
import json, sys
o = json.loads(sys.stdin.read() or "null")
for k in sys.argv[1].split("."):
    o = None if o is None else o.get(k)
print(o)' "$1"; }

# objects KIND: "ns/name" of each object of KIND in the cluster now
objects() {
	"$K8S_PYTHON" -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(" ".join(sorted(s.get(sys.argv[2]) or {})))' "$KS" "$1"
}

# --- 1. the first backup ------------------------------------------------------
note "run 1: three block PVCs by selector, one filesystem PVC skipped"
k8s backup -l backup=daily -n ns -p 2 --json >"$T/run1.json" 2>"$T/run1.err" ||
	{ cat "$T/run1.err" "$CL"/pods/*/log >&2; fail "run 1 failed"; }
[ "$(field succeeded <"$T/run1.json")" = 3 ] || fail "run 1: $(cat "$T/run1.json")"
[ "$(field skipped <"$T/run1.json")" = 1 ] || fail "run 1: not 1 skipped"
[ "$(entry files <"$T/run1.json" | field skipped)" = "volumeMode is not Block" ] ||
	fail "run 1: the filesystem PVC was not reported as skipped"
grep -q "skipping PVC ns/files" "$T/run1.err" || fail "run 1 did not say it skipped ns/files"
[ -z "$(entry other <"$T/run1.json")" ] || fail "run 1 backed up an unselected PVC"
for p in db-a db-b db-c; do
	e=$(entry $p <"$T/run1.json")
	[ "$(field ok <<<"$e")" = True ] || fail "run 1: $p: $e"
	[ "$(field parent <<<"$e")" = None ] || fail "run 1: $p had a base"
	[ "$(field ingest.changes <<<"$e")" = k8s ] || fail "run 1: $p: not --changes k8s"
	cp --sparse=always "$CL/volumes/ns_$p.img" "$T/$p.gen1"
done
grep -q '"class": "csi-hostpath-snapclass"\|csi-hostpath-snapclass' "$T/k8s-requests.log" ||
	fail "the driver's default VolumeSnapshotClass was not used"
"$REPO" snapshots "$R" --json >"$T/snaps1.json" || fail "snapshots"
[ "$("$K8S_PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)))' <"$T/snaps1.json")" = 3 ] ||
	fail "run 1: the repository does not hold 3 snapshots"
[ "$(objects jobs)" = "" ] || fail "run 1 left Jobs: $(objects jobs)"
[ "$(objects pods)" = "" ] || fail "run 1 left pods: $(objects pods)"
[ "$(objects pvcs)" = "ns/db-a ns/db-b ns/db-c ns/files ns/other" ] ||
	fail "run 1 left PVCs: $(objects pvcs)"
[ "$(objects volumesnapshots | wc -w)" = 3 ] || fail "run 1: snapshots $(objects volumesnapshots)"

# --- 2. incremental ----------------------------------------------------------
note "run 2: deltas, the base found in the repository"
write 11 3 db-a
write 12 1 db-c
want_a=$("$K8S_PYTHON" "$top_srcdir/tests/imgtool.py" changed "$T/db-a.gen1" \
	"$CL/volumes/ns_db-a.img" $CS)
sleep 1 # distinct creation times for the retention order
# in a pod when this host allows (root, mount namespaces): the service
# account's token and CA, and the selector in the pod's namespace
if [ "$(id -u)" = 0 ] && unshare --mount true 2>/dev/null; then
	note "run 2 runs in-cluster (service account, the pod's namespace)"
	# no kubeconfig anywhere: the namespace can only be the pod's
	mkdir -p "$T/nohome"
	HOME=$T/nohome K8S_POD_NAMESPACE=ns in_cluster "$K8S" -r "$R" backup \
		-l backup=daily --json >"$T/run2.json" 2>"$T/run2.err" ||
		{ cat "$T/run2.err" >&2; fail "run 2 failed"; }
else
	note "run 2 runs with the kubeconfig (in_cluster needs root)"
	k8s backup -l backup=daily -n ns --json >"$T/run2.json" 2>"$T/run2.err" ||
		{ cat "$T/run2.err" >&2; fail "run 2 failed"; }
fi
for p in db-a db-b db-c; do
	e=$(entry $p <"$T/run2.json")
	b=$(field parent <<<"$e")
	[ "$(field ok <<<"$e")" = True ] || fail "run 2: $p: $e"
	[ "$b" = "$(entry $p <"$T/run1.json" | field snapshot)" ] ||
		fail "run 2: $p: base $b is not run 1's snapshot"
	[ "$(field ingest.parent <<<"$e")" = "$b" ] || fail "run 2: $p: the ingest used no base"
	[ "$(field ingest.full_fallback <<<"$e")" = False ] || fail "run 2: $p: full fallback"
	cp --sparse=always "$CL/volumes/ns_$p.img" "$T/$p.gen2"
done
[ "$(entry db-a <"$T/run2.json" | field ingest.chunks_read)" = "$want_a" ] ||
	fail "run 2: db-a read $(entry db-a <"$T/run2.json" | field ingest.chunks_read) chunks, $want_a changed"
[ "$(entry db-b <"$T/run2.json" | field ingest.chunks_read)" = 0 ] ||
	fail "run 2: the unchanged db-b read chunks"
note "run 2: db-a read $want_a changed chunks, db-b none"
# keep 1: only run 2's snapshots are left
want=$(for p in db-a db-b db-c; do echo "ns/$(entry $p <"$T/run2.json" | field snapshot)"; done | sort | tr '\n' ' ')
[ "$(objects volumesnapshots) " = "$want" ] ||
	fail "after run 2: snapshots $(objects volumesnapshots), want $want"

# --- 3. a snapshot that never becomes ready ----------------------------------
note "run 3: db-b's snapshot never becomes ready"
k8s_state_edit "$KS" 's["never_ready"] = ["ns/db-b"]'
rc=0
# 5 s: ten times the others' 0.5 s ready delay, with room for a loaded
# machine's API server (Python) and sidecar
k8s backup -l backup=daily -n ns --snapshot-timeout 5 --json \
	>"$T/run3.json" 2>"$T/run3.err" || rc=$?
[ $rc = 1 ] || fail "run 3 exited $rc, want 1"
[ "$(field failed <"$T/run3.json")" = 1 ] || fail "run 3: $(cat "$T/run3.json")"
[ "$(field succeeded <"$T/run3.json")" = 2 ] || fail "run 3: others did not succeed"
entry db-b <"$T/run3.json" | field error | grep -q "not ready to use within 5 s" ||
	fail "run 3: db-b's error: $(entry db-b <"$T/run3.json")"
grep -q "backup of ns/db-b failed: VolumeSnapshot ns/db-b-.* was not ready" "$T/run3.err" ||
	fail "run 3 did not report db-b's failure"
objects volumesnapshots | grep -q "$(entry db-b <"$T/run3.json" | field snapshot)" &&
	fail "run 3 left db-b's unready snapshot"
k8s_state_edit "$KS" 's["never_ready"] = []'
want=$({
	echo "ns/$(entry db-a <"$T/run3.json" | field snapshot)"
	echo "ns/$(entry db-b <"$T/run2.json" | field snapshot)"
	echo "ns/$(entry db-c <"$T/run3.json" | field snapshot)"
} | sort | tr '\n' ' ')
[ "$(objects volumesnapshots) " = "$want" ] ||
	fail "after run 3: snapshots $(objects volumesnapshots), want $want"

# --- 4. interrupted runs ------------------------------------------------------
# wait_job: until a Job exists in the cluster (up to 30 s)
wait_job() {
	local i
	for ((i = 0; i < 600; i++)); do
		[ -n "$(objects jobs)" ] && return 0
		sleep 0.05
	done
	fail "no Job appeared"
}
note "run 4: SIGTERM while its Jobs run: it deletes what it made"
write 21 2 db-a
"$K8S" --kubeconfig "$T/kubeconfig" -r "$R" backup -l backup=daily -n ns -p 3 \
	--json >"$T/run4.json" 2>"$T/run4.err" &
pid=$!
_pids+=("$pid")
wait_job
kill -TERM $pid
rc=0
wait $pid || rc=$?
[ $rc = 1 ] || { cat "$T/run4.err" >&2; fail "SIGTERM: exit $rc, want 1"; }
[ "$(field interrupted <"$T/run4.json")" = True ] || fail "SIGTERM: not reported as interrupted"
[ "$(objects jobs)$(objects pods)" = "" ] || fail "SIGTERM left Jobs or pods: $(objects jobs)"
[ "$(objects pvcs)" = "ns/db-a ns/db-b ns/db-c ns/files ns/other" ] ||
	fail "SIGTERM left PVCs: $(objects pvcs)"
[ "$(objects volumesnapshots) " = "$want" ] ||
	fail "SIGTERM left snapshots: $(objects volumesnapshots)"

note "run 5: kill -9 while its Jobs run; run 6 deletes the orphans"
# db-b's snapshot is not ready when the kill comes: never committed
k8s_state_edit "$KS" 's["snapshot_ready_delay"] = 0.1; s["never_ready"] = ["ns/db-b"]'
"$K8S" --kubeconfig "$T/kubeconfig" -r "$R" backup -l backup=daily -n ns -p 3 \
	>/dev/null 2>"$T/run5.err" &
pid=$!
_pids+=("$pid")
wait_job
kill -KILL $pid
wait $pid 2>/dev/null
k8s_state_edit "$KS" 's["never_ready"] = []'
orphan_jobs=$(objects jobs)
[ -n "$orphan_jobs" ] || fail "kill -9 left no Job to clean up"
note "orphans: $orphan_jobs"
# its temporary PVCs are never selected, even when the selector matches
k8s backup -l app.kubernetes.io/managed-by=cbtfs-k8s -n ns >"$T/run5b.out" \
	2>"$T/run5b.err" || fail "a selector of nothing but temporary PVCs failed"
grep -qx "0 backed up, 0 failed, 0 skipped" "$T/run5b.out" ||
	fail "temporary PVCs were selected: $(cat "$T/run5b.out")"
k8s backup -l backup=daily -n ns -v --json >"$T/run6.json" 2>"$T/run6.err" ||
	{ cat "$T/run6.err" >&2; fail "run 6 failed"; }
for j in $orphan_jobs; do
	grep -q "deleting Job $j of the interrupted run" "$T/run6.err" ||
		fail "run 6 did not delete orphan Job $j"
done
[ "$(field succeeded <"$T/run6.json")" = 3 ] || fail "run 6: $(cat "$T/run6.json")"
# the orphans go first, unready snapshots included, before any new one
first=$(grep -n "creating VolumeSnapshot" "$T/run6.err" | head -n 1 | cut -d: -f1)
gone=$(grep -n "deleting VolumeSnapshot ns/db-b-.*: no backup was committed" \
	"$T/run6.err" | head -n 1 | cut -d: -f1)
[ -n "$gone" ] && [ "$gone" -lt "$first" ] ||
	fail "run 6 did not delete the killed run's unready snapshot first"
[ "$(objects jobs)$(objects pods)" = "" ] || fail "run 6 left Jobs or pods"
[ "$(objects pvcs)" = "ns/db-a ns/db-b ns/db-c ns/files ns/other" ] ||
	fail "run 6 left PVCs: $(objects pvcs)"
want=$(for p in db-a db-b db-c; do echo "ns/$(entry $p <"$T/run6.json" | field snapshot)"; done | sort | tr '\n' ' ')
[ "$(objects volumesnapshots) " = "$want" ] ||
	fail "after run 6: snapshots $(objects volumesnapshots), want $want"
cp --sparse=always "$CL/volumes/ns_db-a.img" "$T/db-a.gen6"

note "--pvc, and the report for people"
k8s backup --pvc ns/db-c --pvc ns/db-c >"$T/run7.out" 2>"$T/run7.err" ||
	{ cat "$T/run7.err" >&2; fail "run 7 failed"; }
grep -q "^ns/db-c: backed up as db-c-.* (a delta on db-c-.*), 0 chunks read$" \
	"$T/run7.out" || fail "run 7 said: $(cat "$T/run7.out")"
grep -qx "1 backed up, 0 failed, 0 skipped" "$T/run7.out" ||
	fail "run 7 said: $(cat "$T/run7.out")"
rc=0
k8s backup --pvc ns/nosuch >"$T/run8.out" 2>"$T/run8.err" || rc=$?
[ $rc = 1 ] || fail "a missing PVC: exit $rc"
grep -q 'backup of ns/nosuch failed: GET .*: HTTP 404' "$T/run8.err" ||
	fail "a missing PVC: $(cat "$T/run8.err")"

# --- 5. restore ---------------------------------------------------------------
note "restore of db-a into a new PVC, byte-exact"
snap=$(entry db-a <"$T/run6.json" | field snapshot)
k8s restore "ns/db-a@$snap" --to-pvc ns/restored --json >"$T/restore.json" \
	2>"$T/restore.err" || { cat "$T/restore.err" >&2; fail "restore failed"; }
[ "$(field ok <"$T/restore.json")" = True ] || fail "restore: $(cat "$T/restore.json")"
[ "$(field created_pvc <"$T/restore.json")" = True ] || fail "restore did not create the PVC"
cmp "$T/db-a.gen6" "$CL/volumes/ns_restored.img" || fail "the restored PVC differs"
note "restore of run 1's db-a into an existing PVC: refused without --existing"
snap1=$(entry db-a <"$T/run1.json" | field snapshot)
rc=0
k8s restore "ns/db-a@$snap1" --to-pvc ns/restored 2>"$T/restore2.err" || rc=$?
[ $rc = 1 ] || fail "restore into an existing PVC: exit $rc"
grep -q "PVC ns/restored exists: give --existing" "$T/restore2.err" ||
	fail "restore into an existing PVC: $(cat "$T/restore2.err")"
# run 1's snapshot was forgotten by nobody: the repository still has it
k8s restore "ns/db-a@$snap1" --to-pvc ns/restored --existing >/dev/null \
	2>"$T/restore3.err" || { cat "$T/restore3.err" >&2; fail "restore --existing"; }
cmp "$T/db-a.gen1" "$CL/volumes/ns_restored.img" || fail "restore --existing differs"

# --- 6. list, labels, leftovers ----------------------------------------------
k8s list --json >"$T/list.json" || fail "list"
cmp <("$REPO" snapshots "$R" --json) "$T/list.json" || fail "list differs from cbtfs-repo snapshots"
"$K8S_PYTHON" - "$T/k8s-requests.log" <<'PY' || fail "an object was created without the labels"
import json, sys
n = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["method"] != "POST" or r["status"] != 201 or "token" in r["path"]:
        continue
    labels = r["body"]["metadata"].get("labels") or {}
    if (labels.get("app.kubernetes.io/managed-by") != "cbtfs-k8s"
            or "cbtfs.io/run" not in labels):
        sys.exit("unlabelled: %s %s" % (r["path"], labels))
    n += 1
    if r["body"]["kind"] == "Job":
        spec = r["body"]["spec"]["template"]["spec"]
        c = spec["containers"][0]
        sc = c["securityContext"]
        assert spec["securityContext"]["seccompProfile"]["type"] == \
            "RuntimeDefault", "Job without seccomp"
        assert sc["capabilities"]["drop"] == ["ALL"], "capabilities kept"
        assert sc["readOnlyRootFilesystem"] is True, "writable root"
        assert sc["allowPrivilegeEscalation"] is False, "escalation"
        assert sc["privileged"] is False, "privileged"
        assert c["volumeDevices"], "root without a device"
print("# %d objects created, every one labelled; the Jobs locked down" % n)
PY
[ "$(objects jobs)$(objects pods)" = "" ] || fail "Jobs or pods left"
[ "$(objects pvcs)" = "ns/db-a ns/db-b ns/db-c ns/files ns/other ns/restored" ] ||
	fail "PVCs left: $(objects pvcs)"
exit 0
