#!/bin/bash
# Backs up one block PVC with cbtfs, through a VolumeSnapshot:
#   1. creates VolumeSnapshot SNAPSHOT of PVC and waits until it is ready;
#   2. creates the block PVC SNAPSHOT-src restored from it;
#   3. runs the backup Job (k8s/backup-job.yaml) on that PVC, which asks the
#      CSI driver's snapshot-metadata sidecar for the allocated or changed
#      blocks and stores them in the repository;
#   4. prints the Job's log and its JSON summary, deletes the Job and the
#      temporary PVC.
# The VolumeSnapshot is kept: drivers like the CSI hostpath driver need the
# base snapshot of a delta to still exist (see --delete-base).

# shellcheck disable=SC2034 # the upper-case template variables are read by render
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	cat <<EOF
Usage: $(basename "$0") --pvc PVC --snapshot NAME [--base NAME] [OPTIONS]

  -p, --pvc PVC            the block PVC to back up (volumeMode: Block)
  -s, --snapshot NAME      VolumeSnapshot to create (or to reuse, if it is
                           already a snapshot of PVC) and back up
  -b, --base NAME          the previous backup of PVC: back up only what
                           changed since (the first backup has none)
  -n, --namespace NS       namespace of PVC and of the Job (default $CBTFS_NAMESPACE)
      --repo URL           cbtfs repository (default $CBTFS_REPO)
      --image IMAGE        cbtfs image (default $CBTFS_IMAGE)
      --pull-policy P      its imagePullPolicy (default $CBTFS_IMAGE_PULL_POLICY)
      --snapshot-class C   VolumeSnapshotClass (default $CBTFS_SNAPSHOT_CLASS)
      --storage-class C    class of the temporary PVC (default: PVC's)
      --s3-endpoint URL    S3 endpoint seen from the pods
                           (default $CBTFS_S3_ENDPOINT)
      --s3-region REGION   (default $CBTFS_S3_REGION)
      --timeout SECONDS    limit of each wait (default 600)
      --sha256-out FILE    also checksum the whole snapshot in the Job and
                           write the hex SHA-256 to FILE (reads every block)
      --summary-out FILE   write the JSON summary to FILE
      --delete-base        after the backup, delete VolumeSnapshot --base
                           (the new snapshot is the base of the next delta)
      --keep-on-failure    leave Job, PVC and VolumeSnapshot for debugging
  -h, --help               this help

The Job runs as ServiceAccount cbtfs-backup and reads the S3 credentials
from Secret cbtfs-s3, both in NS (k8s/rbac.yaml, k8s/minio.yaml).
EOF
}

NAMESPACE=$CBTFS_NAMESPACE
REPO=$CBTFS_REPO
IMAGE=$CBTFS_IMAGE
IMAGE_PULL_POLICY=$CBTFS_IMAGE_PULL_POLICY
SNAPSHOT_CLASS=$CBTFS_SNAPSHOT_CLASS
S3_ENDPOINT=$CBTFS_S3_ENDPOINT
S3_REGION=$CBTFS_S3_REGION
PVC='' SNAPSHOT='' BASE='' STORAGE_CLASS='' SHA_OUT='' SUMMARY_OUT=''
TIMEOUT=600 DELETE_BASE=0 KEEP_ON_FAILURE=0

while [ $# -gt 0 ]; do
	case $1 in
	-p | --pvc) PVC=${2:?}; shift ;;
	-s | --snapshot) SNAPSHOT=${2:?}; shift ;;
	-b | --base) BASE=${2:?}; shift ;;
	-n | --namespace) NAMESPACE=${2:?}; shift ;;
	--repo) REPO=${2:?}; shift ;;
	--image) IMAGE=${2:?}; shift ;;
	--pull-policy) IMAGE_PULL_POLICY=${2:?}; shift ;;
	--snapshot-class) SNAPSHOT_CLASS=${2:?}; shift ;;
	--storage-class) STORAGE_CLASS=${2:?}; shift ;;
	--s3-endpoint) S3_ENDPOINT=${2:?}; shift ;;
	--s3-region) S3_REGION=${2:?}; shift ;;
	--timeout) TIMEOUT=${2:?}; shift ;;
	--sha256-out) SHA_OUT=${2:?}; shift ;;
	--summary-out) SUMMARY_OUT=${2:?}; shift ;;
	--delete-base) DELETE_BASE=1 ;;
	--keep-on-failure) KEEP_ON_FAILURE=1 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument '$1'" ;;
	esac
	shift
done

if [ -z "$PVC" ] || [ -z "$SNAPSHOT" ]; then
	usage >&2
	die "--pvc and --snapshot are required"
fi
need kubectl
check_name namespace "$NAMESPACE"
check_name PVC "$PVC" 253
check_name snapshot "$SNAPSHOT" 50 # the Job's name adds 13 characters
[ -z "$BASE" ] || check_name "base snapshot" "$BASE" 253
[ "$BASE" != "$SNAPSHOT" ] || die "--base must differ from --snapshot"
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a number of seconds"
case $IMAGE_PULL_POLICY in Always | IfNotPresent | Never) ;; *) die "bad --pull-policy" ;; esac
[[ $REPO == s3://?* ]] || die "--repo: s3://BUCKET/PREFIX expected (the Job's pod has no other storage)"

VOLUME=$NAMESPACE/$PVC
JOB=cbtfs-backup-$SNAPSHOT
SRC_PVC=$SNAPSHOT-src
DEADLINE=$TIMEOUT
SOURCE_SHA256=0
[ -z "$SHA_OUT" ] || SOURCE_SHA256=1

created_snapshot=0 created_pvc=0

# the objects made besides the Job (job_setup)
cleanup_objects() {
	if [ $created_pvc = 1 ]; then
		kubectl delete pvc "$SRC_PVC" -n "$NAMESPACE" --ignore-not-found \
			--wait=true --timeout=120s >/dev/null ||
			warn "could not delete pvc/$SRC_PVC"
	fi
	# a snapshot that was never backed up is of no use as a base: drop it,
	# so that the same command can simply be run again
	if [ $done = 0 ] && [ $created_snapshot = 1 ]; then
		kubectl delete volumesnapshot "$SNAPSHOT" -n "$NAMESPACE" \
			--ignore-not-found --wait=false >/dev/null ||
			warn "could not delete volumesnapshot/$SNAPSHOT"
	fi
}
job_setup cleanup_objects "pvc/$SRC_PVC volumesnapshot/$SNAPSHOT"

# --- the volume ---------------------------------------------------------------
mode=$(jsonpath pvc "$PVC" '{.spec.volumeMode}' "$NAMESPACE") ||
	die "no PVC $NAMESPACE/$PVC"
[ "$mode" = Block ] ||
	die "PVC $NAMESPACE/$PVC has volumeMode '$mode': Changed Block Tracking needs Block"
if [ -z "$STORAGE_CLASS" ]; then
	STORAGE_CLASS=$(jsonpath pvc "$PVC" '{.spec.storageClassName}' "$NAMESPACE")
	[ -n "$STORAGE_CLASS" ] || die "PVC $PVC has no storageClassName: give --storage-class"
fi
if [ -n "$BASE" ] && ! kubectl get volumesnapshot "$BASE" -n "$NAMESPACE" >/dev/null 2>&1; then
	warn "VolumeSnapshot $BASE is gone: unless the driver can diff against its" \
		"recorded handle alone, cbtfs-ingest falls back to a full backup"
fi

# --- 1. the snapshot ------------------------------------------------------------
if kubectl get volumesnapshot "$SNAPSHOT" -n "$NAMESPACE" >/dev/null 2>&1; then
	src=$(jsonpath volumesnapshot "$SNAPSHOT" '{.spec.source.persistentVolumeClaimName}' "$NAMESPACE")
	[ "$src" = "$PVC" ] ||
		die "VolumeSnapshot $SNAPSHOT exists and is not a snapshot of $PVC"
	log "reusing VolumeSnapshot $NAMESPACE/$SNAPSHOT"
else
	log "creating VolumeSnapshot $NAMESPACE/$SNAPSHOT of $PVC"
	render "$CBTFS_K8S_DIR/templates/volumesnapshot.yaml" | kubectl create -f - >/dev/null
	created_snapshot=1
fi

snapshot_ready() {
	local ready err
	ready=$(jsonpath volumesnapshot "$SNAPSHOT" '{.status.readyToUse}' "$NAMESPACE")
	err=$(jsonpath volumesnapshot "$SNAPSHOT" '{.status.error.message}' "$NAMESPACE")
	[ -z "$err" ] || die "VolumeSnapshot $SNAPSHOT failed: $err"
	[ "$ready" = true ]
}
start=$SECONDS
until snapshot_ready; do
	((SECONDS - start < TIMEOUT)) || die "VolumeSnapshot $SNAPSHOT not ready after ${TIMEOUT}s"
	sleep 2
done
SIZE=$(jsonpath volumesnapshot "$SNAPSHOT" '{.status.restoreSize}' "$NAMESPACE")
[ -n "$SIZE" ] || SIZE=$(jsonpath pvc "$PVC" '{.status.capacity.storage}' "$NAMESPACE")
[ -n "$SIZE" ] || die "cannot tell the size of $SNAPSHOT"
log "VolumeSnapshot $SNAPSHOT is ready ($SIZE)"

# --- 2. the snapshot's content as a block volume -----------------------------------
delete_job # a leftover of an earlier run
if kubectl get pvc "$SRC_PVC" -n "$NAMESPACE" >/dev/null 2>&1; then
	die "PVC $NAMESPACE/$SRC_PVC exists already (a leftover? delete it first)"
fi
log "creating PVC $NAMESPACE/$SRC_PVC from $SNAPSHOT"
render "$CBTFS_K8S_DIR/templates/pvc-from-snapshot.yaml" | kubectl create -f - >/dev/null
created_pvc=1
wait_bound "$SRC_PVC" "$NAMESPACE" "$TIMEOUT"

# --- 3. the backup Job ------------------------------------------------------------
run_job "$CBTFS_K8S_DIR/backup-job.yaml" backup \
	"$VOLUME@$SNAPSHOT${BASE:+ (delta since $BASE)} -> $REPO"

# --- 4. results -----------------------------------------------------------------
pod=$(kubectl get pods -n "$NAMESPACE" -l "job-name=$JOB" \
	--field-selector=status.phase=Succeeded -o name | head -n 1)
[ -n "$pod" ] || die "job $JOB completed, but no pod of it succeeded?"
kubectl logs -n "$NAMESPACE" "$pod" >"$LOG" || die "cannot read the log of $pod"
cat "$LOG"
summary=$(sed -n '/^--- cbtfs summary ---$/,/^--- end ---$/p' "$LOG" | sed '1d;$d')
[ -n "$summary" ] || die "job $JOB printed no summary"
[ -z "$SUMMARY_OUT" ] || printf '%s\n' "$summary" >"$SUMMARY_OUT"
if [ -n "$SHA_OUT" ]; then
	sum=$(awk '$1 == "cbtfs-source-sha256" { print $2 }' "$LOG")
	[[ $sum =~ ^[0-9a-f]{64}$ ]] || die "job $JOB printed no checksum"
	printf '%s\n' "$sum" >"$SHA_OUT"
fi
done=1
log "backed up $VOLUME@$SNAPSHOT"

if [ $DELETE_BASE = 1 ] && [ -n "$BASE" ]; then
	log "deleting VolumeSnapshot $BASE (no longer a base)"
	kubectl delete volumesnapshot "$BASE" -n "$NAMESPACE" --ignore-not-found --wait=false >/dev/null ||
		warn "could not delete volumesnapshot/$BASE"
fi
