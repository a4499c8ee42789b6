#!/bin/bash
# Deploys the CSI hostpath driver with Changed Block Tracking: the
# external-snapshot-metadata sidecar next to the driver, its Service and its
# SnapshotMetadataService, plus what they need, all at pinned versions:
#
#   1. the VolumeSnapshot CRDs and the snapshot controller (external-snapshotter);
#   2. the SnapshotMetadataService CRD (external-snapshot-metadata);
#   3. the driver, from a clone of kubernetes-csi/csi-driver-host-path at a tag:
#      SNAPSHOT_METADATA_TESTS=true ./deploy/kubernetes-latest/deploy.sh
#      That adds the sidecar (image csi-snapshot-metadata), the TLS Secret
#      csi-snapshot-metadata-certs, the Service csi-snapshot-metadata (port
#      6443) and the SnapshotMetadataService hostpath.csi.k8s.io, in the
#      "default" namespace; the TLS key and CA come from the upstream test
#      data: published, shared by everyone, and with a fixed expiry date;
#   4. so this script then makes a fresh CA and server certificate, replaces
#      the Secret, points the SnapshotMetadataService (our
#      snapshot-metadata-service.yaml) at that CA with our audience, and
#      restarts the driver (unless --keep-upstream-tls);
#   5. the StorageClass and VolumeSnapshotClass of k8s/hostpath/.
#
# Needs kubectl (with kustomize, built in), git, curl and openssl, network
# access to github.com and the image registries, and a kubeconfig with
# cluster-admin rights.  Safe to run again.

set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

# Pinned upstream versions (override from the environment, at your own risk).
: "${HOSTPATH_VERSION:=v1.18.0}"           # kubernetes-csi/csi-driver-host-path
: "${SNAPSHOTTER_VERSION:=v8.4.0}"         # kubernetes-csi/external-snapshotter
: "${SNAPSHOT_METADATA_VERSION:=v1.0.0}"   # kubernetes-csi/external-snapshot-metadata
: "${HOSTPATH_NAMESPACE:=default}"         # where the upstream deploy puts the driver
: "${SMS_AUDIENCE:=cbtfs-snapshot-metadata}"
: "${DEPLOY_TIMEOUT:=600}"
: "${TLS_DAYS:=365}"

SMS_NAME=hostpath.csi.k8s.io
SMS_SERVICE=csi-snapshot-metadata
SMS_SECRET=csi-snapshot-metadata-certs

GITHUB_RAW=https://raw.githubusercontent.com/kubernetes-csi
HOSTPATH_GIT=https://github.com/kubernetes-csi/csi-driver-host-path.git

usage() {
	cat <<EOF
Usage: $(basename "$0") [--keep-upstream-tls] [--src DIR]

  --keep-upstream-tls  keep the upstream test TLS key and SnapshotMetadataService
  --src DIR            use this checkout of csi-driver-host-path (at
                       $HOSTPATH_VERSION) instead of cloning one
  -h, --help           this help

Versions: csi-driver-host-path $HOSTPATH_VERSION, external-snapshotter
$SNAPSHOTTER_VERSION, external-snapshot-metadata $SNAPSHOT_METADATA_VERSION
(sidecar image registry.k8s.io/sig-storage/csi-snapshot-metadata:$SNAPSHOT_METADATA_VERSION).
EOF
}

# make_tls DIR: a new CA (DIR/ca.crt) and a server certificate and key for
# the sidecar's Service (DIR/tls.crt, DIR/tls.key).  The CA's key is
# deleted: nothing else is ever signed with it.
make_tls() {
	local dir=$1 ns=$HOSTPATH_NAMESPACE svc=$SMS_SERVICE
	need openssl
	(
		umask 077
		cd "$dir"
		openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
			-keyout ca.key -out ca.crt -days "$TLS_DAYS" -subj "/CN=cbtfs snapshot-metadata CA" \
			-addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
		openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
			-keyout tls.key -out tls.csr -subj "/CN=$svc.$ns" 2>/dev/null
		cat >ext.cnf <<EOF
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:$svc,DNS:$svc.$ns,DNS:$svc.$ns.svc,DNS:$svc.$ns.svc.cluster.local
EOF
		openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-days "$TLS_DAYS" -extfile ext.cnf -out tls.crt 2>/dev/null
		rm -f ca.key ca.srl tls.csr ext.cnf
	)
	openssl verify -CAfile "$dir/ca.crt" "$dir/tls.crt" >/dev/null ||
		die "the new sidecar certificate does not verify"
}

install_snapshot_crds() {
	local base=$GITHUB_RAW/external-snapshotter/$SNAPSHOTTER_VERSION c
	log "installing the VolumeSnapshot CRDs and the snapshot controller ($SNAPSHOTTER_VERSION)"
	for c in volumesnapshotclasses volumesnapshotcontents volumesnapshots; do
		kubectl apply -f "$base/client/config/crd/snapshot.storage.k8s.io_$c.yaml"
	done
	for c in volumesnapshotclasses volumesnapshotcontents volumesnapshots; do
		kubectl wait --for condition=Established --timeout=120s \
			"crd/$c.snapshot.storage.k8s.io" >/dev/null
	done
	kubectl apply -f "$base/deploy/kubernetes/snapshot-controller/rbac-snapshot-controller.yaml"
	kubectl apply -f "$base/deploy/kubernetes/snapshot-controller/setup-snapshot-controller.yaml"
	kubectl rollout status deployment/snapshot-controller -n kube-system \
		--timeout="${DEPLOY_TIMEOUT}s"
}

install_sms_crd() {
	log "installing the SnapshotMetadataService CRD ($SNAPSHOT_METADATA_VERSION)"
	kubectl apply -f "$GITHUB_RAW/external-snapshot-metadata/$SNAPSHOT_METADATA_VERSION/client/config/crd/cbt.storage.k8s.io_snapshotmetadataservices.yaml"
	kubectl wait --for condition=Established --timeout=120s \
		crd/snapshotmetadataservices.cbt.storage.k8s.io >/dev/null
}

deploy_driver() {
	local src=$1
	if [ ! -d "$src/.git" ] && [ ! -x "$src/deploy/kubernetes-latest/deploy.sh" ]; then
		need git
		log "cloning csi-driver-host-path $HOSTPATH_VERSION"
		git clone --quiet --depth 1 --branch "$HOSTPATH_VERSION" "$HOSTPATH_GIT" "$src"
	fi
	[ -x "$src/deploy/kubernetes-latest/deploy.sh" ] ||
		die "$src has no deploy/kubernetes-latest/deploy.sh"
	if [ -d "$src/.git" ] && command -v git >/dev/null; then
		local at
		at=$(git -C "$src" describe --tags --exact-match 2>/dev/null) || at=unknown
		[ "$at" = "$HOSTPATH_VERSION" ] ||
			warn "$src is at $at, not $HOSTPATH_VERSION: deploying it anyway"
	fi
	log "deploying the hostpath driver with the snapshot-metadata sidecar"
	(
		cd "$src"
		SNAPSHOT_METADATA_TESTS=true \
			CSI_SNAPSHOT_METADATA_TAG="$SNAPSHOT_METADATA_VERSION" \
			./deploy/kubernetes-latest/deploy.sh
	)
}

install_tls() {
	local dir=$1 SMS_ADDRESS SMS_CA_CERT
	log "replacing the sidecar's TLS key and the SnapshotMetadataService's CA"
	make_tls "$dir"
	kubectl create secret tls "$SMS_SECRET" -n "$HOSTPATH_NAMESPACE" \
		--cert="$dir/tls.crt" --key="$dir/tls.key" --dry-run=client -o yaml |
		kubectl apply -f - >/dev/null
	SMS_ADDRESS=$SMS_SERVICE.$HOSTPATH_NAMESPACE:6443
	SMS_CA_CERT=$(base64 -w0 <"$dir/ca.crt")
	export SMS_NAME SMS_ADDRESS SMS_AUDIENCE SMS_CA_CERT
	render "$CBTFS_K8S_DIR/hostpath/snapshot-metadata-service.yaml" | kubectl apply -f -
	kubectl rollout restart statefulset/csi-hostpathplugin -n "$HOSTPATH_NAMESPACE"
	kubectl rollout status statefulset/csi-hostpathplugin -n "$HOSTPATH_NAMESPACE" \
		--timeout="${DEPLOY_TIMEOUT}s"
}

verify() {
	local containers addr
	containers=$(kubectl get pods -n "$HOSTPATH_NAMESPACE" \
		-l app.kubernetes.io/name=csi-hostpathplugin \
		-o 'jsonpath={.items[*].spec.containers[*].name}')
	[[ $containers == *snapshot-metadata* ]] ||
		die "the hostpath driver runs without the snapshot-metadata sidecar ($containers)"
	kubectl get service "$SMS_SERVICE" -n "$HOSTPATH_NAMESPACE" >/dev/null ||
		die "no Service $HOSTPATH_NAMESPACE/$SMS_SERVICE"
	addr=$(kubectl get snapshotmetadataservice "$SMS_NAME" -o 'jsonpath={.spec.address}') ||
		die "no SnapshotMetadataService $SMS_NAME"
	log "CBT ready: SnapshotMetadataService $SMS_NAME -> $addr"
}

main() {
	local keep_tls=0 src='' work
	while [ $# -gt 0 ]; do
		case $1 in
		--keep-upstream-tls) keep_tls=1 ;;
		--src) src=${2:?}; shift ;;
		-h | --help) usage; exit 0 ;;
		*) usage >&2; die "unknown argument '$1'" ;;
		esac
		shift
	done
	need kubectl curl openssl base64
	kubectl version >/dev/null || die "kubectl cannot reach a cluster"

	work=$(mktemp -d)
	# shellcheck disable=SC2064 # expand $work now
	trap "rm -rf '$work'" EXIT
	[ -n "$src" ] || src=$work/csi-driver-host-path

	install_snapshot_crds
	install_sms_crd
	deploy_driver "$src"
	if [ $keep_tls = 0 ]; then
		mkdir -m 700 "$work/tls"
		install_tls "$work/tls"
	fi
	kubectl apply -f "$CBTFS_K8S_DIR/hostpath/storageclass.yaml"
	kubectl apply -f "$CBTFS_K8S_DIR/hostpath/snapshotclass.yaml"
	verify
}

# sourced (by the tests) for make_tls: define only
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi
