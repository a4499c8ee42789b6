#!/bin/sh
# Installs what the benchmarks in bench/ need beyond the build and test
# dependencies (scripts/install-deps.sh, which CI uses): the peers cbtfs is
# measured against (s3backer, restic), gnuplot for the plot, and the tools
# the scripts measure with.  Debian 12; root.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y --no-install-recommends \
	s3backer restic gnuplot-nox bc strace util-linux coreutils curl \
	libcurl4-openssl-dev libssl-dev libzstd-dev pkg-config gcc
