#!/bin/bash
# A small cache does not thrash: a cold sequential read over S3 (a local
# Ceph RGW) with cache_size=16M and a deep read-ahead (16 chunks asked
# for, 7 granted: half the cache) fetches each chunk once, because chunks
# already read are evicted before chunks read ahead and not read yet, and a
# read-ahead never evicts another.  (The LRU before pushed read-ahead out
# and fetched chunks again: 406 requests for these 256 chunks.)  Counted by
# the mount's own metrics and, independently, by the store requests of the
# unmount summary.  CACHE overrides cache_size.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_fuse
requires /usr/bin/python3
start_rgw

N=256			# chunks of 1 MiB
R=s3://$S3_BUCKET/ra
MNT=$T/mnt
img=$T/img
head -c ${N}M /dev/urandom >"$img"
"$REPO" init "$R" >/dev/null || fail "init"
"$INGEST" --repo "$R" --volume v --snapshot s1 --device "$img" --jobs 8 \
	--no-progress >/dev/null || fail "ingest"

gets() {
	/usr/bin/python3 "$top_srcdir/tests/promcheck.py" "$MNT/.stats" \
		cbtfs_store_gets_total | cut -d' ' -f2
}
for run in 1 2; do
	start_mount "$R" "$MNT" -o cache_size=${CACHE:-16M},jobs=8,readahead=16
	before=$(gets)
	cmp "$MNT/v/s1.img" "$img" || fail "the image differs"
	got=$(($(gets) - before))
	stop_mount "$MNT"
	req=$(sed -n 's/.* store \([0-9]*\) requests.*/\1/p' "$MOUNT_LOG")
	note "run $run: $got chunk GETs for $N chunks; $req store requests" \
		"in the mount's life"
	# each chunk once; the requests also list and fetch the manifest
	[ "$got" -eq $N ] || fail "$got GETs for $N chunks"
	[ -n "$req" ] && [ "$req" -le $((N + N / 50 + 8)) ] ||
		fail "$req store requests for $N chunks"
done
exit 0
