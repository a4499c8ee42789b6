#!/bin/bash
# First sync on a new host: how long an ingest (of a small image, so that
# the sync is nearly all of it) takes on an empty index in front of a
# repository of N manifests on a throw-away local Ceph RGW, fetching the
# manifests in parallel (--jobs 8: 8 connections) and one at a time
# (--jobs 1: one connection, as before issue 11).  Also the request count
# and the time of 'cbtfs-repo snapshots' (8 connections).  RUNS runs
# each, min/median/max; the ratio is of the medians.
# Usage: bench/sync-jobs.sh [N [RUNS]]   (default 1000 manifests, 3 runs)
# DELAY_MS=N adds N ms to every request (see below).
. "$(dirname "$0")/lib.sh"
N=${1:-1000}
runs=${2:-3}
requires bc
requires curl
start_rgw

# the repository is made in a directory (fast), then copied to RGW: N
# snapshots of 8 volumes, each the child of the one before and 4 chunks
# of 64 KiB, one of them changed
D=$T/dir
"$REPO" init "$D" --chunk-size 64K >/dev/null || fail "init"
for v in 0 1 2 3 4 5 6 7; do
	head -c 256K /dev/urandom >"$T/img$v"
done
for ((i = 0; i < N; i++)); do
	v=$((i % 8))
	base=()
	[ $i -ge 8 ] && base=(--base s$((i - 8)))
	head -c 64K /dev/urandom | dd of="$T/img$v" bs=64K seek=$((i / 8 % 4)) \
		conv=notrunc status=none
	"$INGEST" --repo "$D" --volume ns/v$v --snapshot s$i "${base[@]}" \
		--device "$T/img$v" --no-progress >/dev/null || fail "ingest s$i"
done
(cd "$D" && find . -type f -printf '%P\n') | while read -r k; do
	printf 'upload-file = "%s/%s"\nurl = "%s/%s/sync/%s"\n' "$D" "$k" \
		"$S3_ENDPOINT" "$S3_BUCKET" "$k"
done >"$T/put.cfg"
curl -sSf -Z --parallel-max 8 --aws-sigv4 "aws:amz:us-east-1:s3" \
	--user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
	-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -K "$T/put.cfg" \
	2>"$T/curl.err" || fail "copying to RGW: $(cat "$T/curl.err")"
R=s3://$S3_BUCKET/sync
# DELAY_MS=N: every request through tests/faultproxy.py, N ms late, as
# on a network farther away than 127.0.0.1
if [ "${DELAY_MS:-0}" -gt 0 ]; then
	start_proxy slow --delay 1 --delay-ms "$DELAY_MS"
	export AWS_ENDPOINT_URL=$PROXY_URL
fi

head -c 64K /dev/urandom >"$T/small"
# first JOBS NAME: seconds of an ingest of snapshot NAME on an empty index
first() {
	rm -rf "$T/cache"
	XDG_CACHE_HOME=$T/cache secs "$INGEST" --repo "$R" --volume bench/new \
		--snapshot "$2" --device "$T/small" --jobs "$1" --no-progress
}
par=() one=() snaps=()
for ((r = 0; r < runs; r++)); do
	par+=("$(first 8 p$r)")
	one+=("$(first 1 o$r)")
	rm -rf "$T/cache"
	snaps+=("$(XDG_CACHE_HOME=$T/cache secs "$REPO" snapshots "$R")")
done
read -r _ pm _ <<<"$(stats %.3f "${par[@]}")"
read -r _ om _ <<<"$(stats %.3f "${one[@]}")"
echo "first sync of $N manifests on RGW, ${DELAY_MS:-0} ms added per request"
echo "(seconds, min median max):"
echo "  ingest, parallel (8 connections):  $(stats %.2f "${par[@]}")"
echo "  ingest, one at a time (1):         $(stats %.2f "${one[@]}")"
echo "  cbtfs-repo snapshots (8):          $(stats %.2f "${snaps[@]}")"
echo "  one at a time / parallel (medians): $(echo "scale=2; $om / $pm" | bc -l)"
