#!/bin/sh
# Installs the npm modules of the manifest validator (validate.mjs), at the
# versions of package-lock.json, OUTSIDE the source tree: into
# $CBTFS_NODE_PREFIX (default /var/cache/cbtfs-node)/node_modules.  Run by
# scripts/install-deps.sh (as root); tests/k8s-manifests.sh uses them.
# Installs Debian's nodejs and npm first if node or npm is missing.
set -e
here=$(cd "$(dirname "$0")" && pwd)
prefix=${CBTFS_NODE_PREFIX:-/var/cache/cbtfs-node}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	echo "installing Debian's nodejs and npm"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		nodejs npm >/dev/null
fi

want=$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)
if [ -f "$prefix/.lock-sha256" ] && [ "$(cat "$prefix/.lock-sha256")" = "$want" ] &&
	[ -d "$prefix/node_modules/kubernetes-models" ]; then
	echo "validator modules already installed in $prefix"
	exit 0
fi

mkdir -p "$prefix"
rm -f "$prefix/.lock-sha256"
cp "$here/package.json" "$here/package-lock.json" "$prefix/"
tries=0
until npm ci --prefix "$prefix" --no-audit --no-fund --ignore-scripts \
	--loglevel=error >/dev/null; do
	tries=$((tries + 1))
	if [ $tries -ge 3 ]; then
		echo "npm ci of the validator modules failed" >&2
		exit 1
	fi
	sleep 5
done
echo "$want" >"$prefix/.lock-sha256"
echo "validator modules installed in $prefix"
