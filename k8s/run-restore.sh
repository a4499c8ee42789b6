#!/bin/bash
# Restores a snapshot from the cbtfs repository into a new block PVC:
#   1. creates the block PVC TARGET, as large as the snapshot;
#   2. runs the restore Job (k8s/restore-job.yaml): `cbtfs-repo restore
#      --verify` writes the image onto the PVC (no FUSE, no privileges) and
#      reads back what it wrote, checking it against the chunk ids;
#   3. prints the Job's log and deletes the Job.  TARGET is kept (it is the
#      restored volume); on failure it is deleted, as it was made here.
# Nothing here needs the VolumeSnapshot or the original PVC to still exist.

# shellcheck disable=SC2034 # the upper-case template variables are read by render
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	cat <<EOF
Usage: $(basename "$0") --pvc PVC --snapshot NAME --target NEWPVC [OPTIONS]

  -p, --pvc PVC            the PVC that was backed up (names the volume
                           NS/PVC in the repository)
  -s, --snapshot NAME      the backed-up snapshot to restore
  -t, --target NEWPVC      block PVC to create and restore into
  -n, --namespace NS       namespace of TARGET and of the Job (default $CBTFS_NAMESPACE)
      --volume VOLUME      volume name in the repository (default NS/PVC)
      --size SIZE          size of TARGET, e.g. 64Mi (default: the
                           VolumeSnapshot's restoreSize, else PVC's size)
      --storage-class C    class of TARGET (default: PVC's, else csi-hostpath-sc)
      --repo URL           cbtfs repository (default $CBTFS_REPO)
      --image IMAGE        cbtfs image (default $CBTFS_IMAGE)
      --pull-policy P      its imagePullPolicy (default $CBTFS_IMAGE_PULL_POLICY)
      --s3-endpoint URL    S3 endpoint seen from the pods
                           (default $CBTFS_S3_ENDPOINT)
      --s3-region REGION   (default $CBTFS_S3_REGION)
      --expect-sha256 HEX  the image must also have this SHA-256 (e.g. from
                           run-backup.sh --sha256-out)
      --target-zeroed      the new PVC reads zeros (a thin volume of a
                           driver that guarantees it): skip the zero chunks
                           instead of zeroing them
      --timeout SECONDS    limit of each wait (default 600)
      --keep-on-failure    leave the Job and TARGET for debugging
  -h, --help               this help

The Job needs no privileges (it runs as uid 0 with every capability
dropped, for the device node) and reads the S3 credentials from Secret
cbtfs-s3 in NS.
EOF
}

NAMESPACE=$CBTFS_NAMESPACE
REPO=$CBTFS_REPO
IMAGE=$CBTFS_IMAGE
IMAGE_PULL_POLICY=$CBTFS_IMAGE_PULL_POLICY
S3_ENDPOINT=$CBTFS_S3_ENDPOINT
S3_REGION=$CBTFS_S3_REGION
PVC='' SNAPSHOT='' TARGET='' VOLUME='' SIZE='' STORAGE_CLASS='' EXPECT_SHA256=''
TARGET_ZEROED=''
TIMEOUT=600 KEEP_ON_FAILURE=0

while [ $# -gt 0 ]; do
	case $1 in
	-p | --pvc) PVC=${2:?}; shift ;;
	-s | --snapshot) SNAPSHOT=${2:?}; shift ;;
	-t | --target) TARGET=${2:?}; shift ;;
	-n | --namespace) NAMESPACE=${2:?}; shift ;;
	--volume) VOLUME=${2:?}; shift ;;
	--size) SIZE=${2:?}; shift ;;
	--storage-class) STORAGE_CLASS=${2:?}; shift ;;
	--repo) REPO=${2:?}; shift ;;
	--image) IMAGE=${2:?}; shift ;;
	--pull-policy) IMAGE_PULL_POLICY=${2:?}; shift ;;
	--s3-endpoint) S3_ENDPOINT=${2:?}; shift ;;
	--s3-region) S3_REGION=${2:?}; shift ;;
	--expect-sha256) EXPECT_SHA256=${2:?}; shift ;;
	--target-zeroed) TARGET_ZEROED=--target-zeroed ;;
	--timeout) TIMEOUT=${2:?}; shift ;;
	--keep-on-failure) KEEP_ON_FAILURE=1 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument '$1'" ;;
	esac
	shift
done

if [ -z "$SNAPSHOT" ] || [ -z "$TARGET" ] || { [ -z "$PVC" ] && [ -z "$VOLUME" ]; }; then
	usage >&2
	die "--pvc (or --volume), --snapshot and --target are required"
fi
need kubectl
check_name namespace "$NAMESPACE"
[ -z "$PVC" ] || check_name PVC "$PVC" 253
check_name snapshot "$SNAPSHOT" 253
check_name target "$TARGET" 49 # the Job's name adds 14 characters
[ -n "$VOLUME" ] || VOLUME=$NAMESPACE/$PVC
[[ $VOLUME =~ ^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$ ]] || die "bad --volume '$VOLUME'"
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a number of seconds"
[ -z "$EXPECT_SHA256" ] || [[ $EXPECT_SHA256 =~ ^[0-9a-f]{64}$ ]] ||
	die "--expect-sha256: 64 lower-case hex digits expected"
case $IMAGE_PULL_POLICY in Always | IfNotPresent | Never) ;; *) die "bad --pull-policy" ;; esac
[[ $REPO == s3://?* ]] || die "--repo: s3://BUCKET/PREFIX expected (the Job's pod has no other storage)"

JOB=cbtfs-restore-$TARGET
DEADLINE=$TIMEOUT

if [ -z "$SIZE" ]; then
	SIZE=$(jsonpath volumesnapshot "$SNAPSHOT" '{.status.restoreSize}' "$NAMESPACE") || SIZE=''
	if [ -z "$SIZE" ] && [ -n "$PVC" ]; then
		SIZE=$(jsonpath pvc "$PVC" '{.status.capacity.storage}' "$NAMESPACE") || SIZE=''
	fi
	[ -n "$SIZE" ] || die "cannot tell the size of $SNAPSHOT: give --size"
fi
[[ $SIZE =~ ^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$ ]] || die "bad --size '$SIZE'"
if [ -z "$STORAGE_CLASS" ]; then
	if [ -n "$PVC" ]; then
		STORAGE_CLASS=$(jsonpath pvc "$PVC" '{.spec.storageClassName}' "$NAMESPACE") || STORAGE_CLASS=''
	fi
	: "${STORAGE_CLASS:=csi-hostpath-sc}"
fi

created_pvc=0

# the objects made besides the Job (job_setup): TARGET, unless restored
cleanup_objects() {
	if [ $done = 0 ] && [ $created_pvc = 1 ]; then
		kubectl delete pvc "$TARGET" -n "$NAMESPACE" --ignore-not-found \
			--wait=false >/dev/null || warn "could not delete pvc/$TARGET"
	fi
}
job_setup cleanup_objects "pvc/$TARGET"

# --- 1. the target volume ------------------------------------------------------
if kubectl get pvc "$TARGET" -n "$NAMESPACE" >/dev/null 2>&1; then
	die "PVC $NAMESPACE/$TARGET exists: restore into a new PVC (nothing is overwritten)"
fi
log "creating block PVC $NAMESPACE/$TARGET ($SIZE, $STORAGE_CLASS)"
render "$CBTFS_K8S_DIR/templates/block-pvc.yaml" | kubectl create -f - >/dev/null
created_pvc=1
wait_bound "$TARGET" "$NAMESPACE" "$TIMEOUT"

# --- 2. the restore Job -----------------------------------------------------------
delete_job # a leftover of an earlier run
run_job "$CBTFS_K8S_DIR/restore-job.yaml" restore \
	"$REPO $VOLUME@$SNAPSHOT -> $TARGET"

# --- 3. results -----------------------------------------------------------------
kubectl logs -n "$NAMESPACE" "job/$JOB" >"$LOG" || die "cannot read the log of job/$JOB"
cat "$LOG"
grep -q '^verified ' "$LOG" || die "job $JOB did not report a verified restore"
done=1
log "restored $VOLUME/$SNAPSHOT into PVC $NAMESPACE/$TARGET"
