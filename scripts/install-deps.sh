#!/bin/sh
# Installs what cbtfs needs on Debian 12, with apt-get:
#   scripts/install-deps.sh          to build it and run it (and the demo)
#   scripts/install-deps.sh --test   that, and what the tests use: a Ceph
#                                    RGW, valgrind, Python modules for the
#                                    gRPC fixtures, shellcheck, the
#                                    manifest validator's npm modules
# As root; a user who may use sudo can run it as well: it asks sudo itself.
set -e
case ${1-} in
--test) test=1 ;;
'') test=0 ;;
*) echo "usage: $0 [--test]" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		exec sudo "$0" "$@"
	fi
	echo "$0: run it as root (apt-get installs packages)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
build_run="build-essential autoconf automake pkg-config
	libfuse3-dev fuse3 libsqlite3-dev libssl-dev libzstd-dev
	libprotobuf-c-dev protobuf-c-compiler libjson-c-dev uuid-dev
	libgrpc-dev protobuf-compiler protobuf-compiler-grpc libyaml-dev
	libcurl4-openssl-dev libblkid-dev ca-certificates util-linux mount
	fusefat"
tests="python3-grpcio python3-protobuf python3-cryptography valgrind curl
	ceph-mon ceph-osd ceph-mgr radosgw ceph-common
	e2fsprogs python3 openssl shellcheck strace
	xfsprogs dosfstools fdisk mtools bindfs"
pkgs=$build_run
[ $test = 0 ] || pkgs="$pkgs $tests"
apt-get update -qq
# shellcheck disable=SC2086 # the lists are split into package names
apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
if [ $test = 1 ]; then
	# the offline validator of k8s/ (npm packages, outside the source tree)
	sh "$(dirname "$0")/../tests/k8s-validate/install.sh"
	echo "cbtfs build, run and test dependencies installed"
else
	echo "cbtfs build and run dependencies installed"
fi
