#!/bin/bash
# The whole cbtfs demo on minikube, end to end:
#   a cluster; MinIO; the CSI hostpath driver with the snapshot-metadata
#   sidecar; RBAC; the cbtfs image; a workload that keeps writing random
#   blocks to a raw block PVC; three backups (snap-1 full, snap-2 and snap-3
#   deltas found with Changed Block Tracking); a restore of snap-2 into a new
#   PVC, checked against the checksum of the snapshot taken at backup time.
#
# minikube's own "volumesnapshots" and "csi-hostpath-driver" addons are
# disabled: they install the driver without the snapshot-metadata sidecar and
# at versions minikube chooses; k8s/hostpath/deploy-hostpath.sh installs all
# of it at pinned versions instead.
#
# Run from anywhere; needs minikube, kubectl, git, curl, openssl and a
# minikube driver (docker by default), and network access.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${MINIKUBE_PROFILE:=cbtfs}"
: "${MINIKUBE_DRIVER:=docker}"
: "${K8S_VERSION:=v1.34.0}"        # >= v1.33: Changed Block Tracking
: "${MINIKUBE_CPUS:=2}"
: "${MINIKUBE_MEMORY:=4096}"
: "${WRITE_SECONDS:=25}"           # how long the writer changes blocks between snapshots
: "${TIMEOUT:=600}"                # limit of each wait
: "${SNAP_PREFIX:=snap}"           # the snapshots are SNAP_PREFIX-1, -2, -3

TOP=$(cd "$CBTFS_K8S_DIR/.." && pwd)
PVC=block-data
NS=$CBTFS_NAMESPACE

usage() {
	cat <<EOF
Usage: $(basename "$0") [--delete-on-failure] [--delete-at-end] [--skip-build]

  --delete-on-failure  delete the minikube profile if a step fails
  --delete-at-end      delete it after a successful run as well
  --skip-build         do not rebuild the cbtfs image (use the one in minikube)
  -h, --help           this help

Environment: MINIKUBE_PROFILE ($MINIKUBE_PROFILE), MINIKUBE_DRIVER
($MINIKUBE_DRIVER), K8S_VERSION ($K8S_VERSION), MINIKUBE_CPUS, MINIKUBE_MEMORY,
WRITE_SECONDS ($WRITE_SECONDS), TIMEOUT ($TIMEOUT), SNAP_PREFIX ($SNAP_PREFIX).
EOF
}

delete_on_failure=0 delete_at_end=0 build=1
while [ $# -gt 0 ]; do
	case $1 in
	--delete-on-failure) delete_on_failure=1 ;;
	--delete-at-end) delete_at_end=1 ;;
	--skip-build) build=0 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument '$1'" ;;
	esac
	shift
done

need minikube kubectl git curl openssl
STATE=$(mktemp -d)
succeeded=0

finish() {
	local rc=$?
	set +e
	if [ $succeeded = 0 ]; then
		log "the demo failed (exit $rc)"
		if [ $delete_on_failure = 1 ]; then
			minikube delete -p "$MINIKUBE_PROFILE"
		else
			log "the cluster is kept for a look: minikube -p $MINIKUBE_PROFILE ..."
		fi
	elif [ $delete_at_end = 1 ]; then
		minikube delete -p "$MINIKUBE_PROFILE"
	fi
	rm -rf "$STATE"
	exit $rc
}
trap finish EXIT
trap 'exit 130' INT TERM

step() { log "=== $*"; }

step "minikube $MINIKUBE_PROFILE: Kubernetes $K8S_VERSION on $MINIKUBE_DRIVER"
minikube start -p "$MINIKUBE_PROFILE" --driver="$MINIKUBE_DRIVER" \
	--kubernetes-version="$K8S_VERSION" --cpus="$MINIKUBE_CPUS" \
	--memory="$MINIKUBE_MEMORY" --wait=all
kubectl config use-context "$MINIKUBE_PROFILE" >/dev/null
minikube addons disable volumesnapshots -p "$MINIKUBE_PROFILE" >/dev/null 2>&1 || true
minikube addons disable csi-hostpath-driver -p "$MINIKUBE_PROFILE" >/dev/null 2>&1 || true

step "namespace and MinIO"
kubectl apply -f "$CBTFS_K8S_DIR/namespace.yaml"
kubectl apply -f "$CBTFS_K8S_DIR/minio.yaml"
kubectl rollout status deployment/minio -n "$NS" --timeout="${TIMEOUT}s"
wait_job cbtfs-make-bucket "$NS" "$TIMEOUT" || die "could not create the bucket"

step "CSI hostpath driver with the snapshot-metadata sidecar"
"$CBTFS_K8S_DIR/hostpath/deploy-hostpath.sh"

step "RBAC"
kubectl apply -f "$CBTFS_K8S_DIR/rbac.yaml"

if [ $build = 1 ]; then
	step "building the cbtfs image $CBTFS_IMAGE in minikube"
	(cd "$TOP" && minikube image build -p "$MINIKUBE_PROFILE" -t "$CBTFS_IMAGE" -f k8s/Dockerfile .)
fi

step "the block writer"
kubectl apply -f "$CBTFS_K8S_DIR/block-writer.yaml"
wait_bound "$PVC" "$NS" "$TIMEOUT"
kubectl rollout status deployment/block-writer -n "$NS" --timeout="${TIMEOUT}s"

backup() { # backup SNAPSHOT [BASE]
	local args=(--pvc "$PVC" --snapshot "$1" --timeout "$TIMEOUT"
		--summary-out "$STATE/$1.json" --sha256-out "$STATE/$1.sha256")
	[ $# -lt 2 ] || args+=(--base "$2")
	"$CBTFS_K8S_DIR/run-backup.sh" "${args[@]}"
}

s1=$SNAP_PREFIX-1 s2=$SNAP_PREFIX-2 s3=$SNAP_PREFIX-3 target=restore-$SNAP_PREFIX-2
check_name "SNAP_PREFIX" "$SNAP_PREFIX" 39
for s in "$s1" "$s2" "$s3"; do
	if kubectl get volumesnapshot "$s" -n "$NS" >/dev/null 2>&1; then
		die "VolumeSnapshot $NS/$s exists: this cluster ran the demo already" \
			"(minikube delete -p $MINIKUBE_PROFILE, or set SNAP_PREFIX)"
	fi
done

log "letting the writer change blocks for ${WRITE_SECONDS}s"
sleep "$WRITE_SECONDS"
step "backup 1: $s1 (full: the allocated blocks)"
backup "$s1"
sleep "$WRITE_SECONDS"
step "backup 2: $s2 (delta since $s1)"
backup "$s2" "$s1"
sleep "$WRITE_SECONDS"
step "backup 3: $s3 (delta since $s2)"
backup "$s3" "$s2"

step "restore $s2 into a new PVC and verify"
kubectl delete pvc "$target" -n "$NS" --ignore-not-found --wait=true --timeout=120s >/dev/null
"$CBTFS_K8S_DIR/run-restore.sh" --pvc "$PVC" --snapshot "$s2" --target "$target" \
	--expect-sha256 "$(cat "$STATE/$s2.sha256")" --timeout "$TIMEOUT"

succeeded=1
step "summary"
for s in "$s1" "$s2" "$s3"; do
	printf '%s  sha256 %s\n' "$s" "$(cat "$STATE/$s.sha256")"
	cat "$STATE/$s.json"
done
cat <<EOF

Backed up $NS/$PVC three times into $CBTFS_REPO (MinIO in namespace $NS), and
restored $s2 into PVC $NS/$target: its content matches the snapshot's
checksum taken at backup time.
Look around:  kubectl -n $NS get volumesnapshots,pvc,pods
Clean up:     minikube delete -p $MINIKUBE_PROFILE
EOF
