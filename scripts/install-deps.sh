#!/bin/sh
# Installs what cbtfs needs to build and test on Debian 12 (run as root).
set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
	build-essential autoconf automake pkg-config \
	libfuse3-dev fuse3 libsqlite3-dev libssl-dev libzstd-dev \
	libprotobuf-c-dev protobuf-c-compiler libjson-c-dev uuid-dev \
	libgrpc-dev protobuf-compiler protobuf-compiler-grpc libyaml-dev \
	python3-grpcio python3-protobuf python3-cryptography valgrind \
	libcurl4-openssl-dev curl \
	ceph-mon ceph-osd ceph-mgr radosgw ceph-common \
	e2fsprogs util-linux mount python3 ca-certificates openssl shellcheck \
	libblkid-dev xfsprogs dosfstools fdisk fusefat mtools \
	>/dev/null
# the offline validator of k8s/ (npm packages, outside the source tree)
sh "$(dirname "$0")/../tests/k8s-validate/install.sh"
echo "cbtfs build and test dependencies installed"
