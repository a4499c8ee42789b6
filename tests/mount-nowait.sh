#!/bin/bash
# FUSE requests never wait on the network for metadata: through a proxy
# that delays every S3 answer by 4 s, a lookup of a missing name and a
# directory listing answer at once from the tree the mount has (they only
# ask the background thread for a sync, which then brings a snapshot made
# meanwhile), and a read of a missing chunk fails with EIO as soon as its
# GET does: the HEAD of the manifest and the PUT of the damage record are
# the background thread's, which writes the record a little later.  (With
# them in FUSE threads and a 2 s delay, the lookup and the listing took
# 4.3 s each and the failed read 6.5 s.  The limits, 2.5 s for a lookup or
# a listing and 7 s for the failed read, are below one more request and
# leave seconds for a loaded machine.)
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_fuse
requires /usr/bin/python3
start_rgw

R=s3://$S3_BUCKET/nowait
MNT=$T/mnt
head -c 2M /dev/urandom >"$T/s1"
"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init"
"$INGEST" --repo "$R" --volume v --snapshot s1 --device "$T/s1" \
	--no-progress >/dev/null || fail "ingest s1"
# the index is synced now (shared through $XDG_CACHE_HOME): the mount
# through the proxy fetches no manifest before mounting
"$REPO" snapshots "$R" >/dev/null || fail "snapshots"
id=$(head -c 65536 "$T/s1" | sha256sum | cut -d' ' -f1)
s3_curl -X DELETE "$S3_ENDPOINT/$S3_BUCKET/nowait/chunks/${id:0:2}/$id" ||
	fail "delete chunk 0"

# every answer is delayed, by 4 s once the mount is up (mounting takes a
# few requests, and start_mount waits 10 s)
start_proxy slow --delay 1.0 --delay-ms 0 --delay-ms-file "$T/delay-ms"
# timed CMD...: runs CMD; $t is the milliseconds it took, $rc its status
timed() {
	local t0
	t0=$(date +%s%N)
	"$@" >/dev/null 2>&1
	rc=$?
	t=$((($(date +%s%N) - t0) / 1000000))
}
# readahead=0: the read's own GET is the only one
start_mount "$R" "$MNT" -o endpoint=$PROXY_URL,refresh=0,retries=0,readahead=0
echo 4000 >"$T/delay-ms.tmp" && mv "$T/delay-ms.tmp" "$T/delay-ms"

# (a second after the last sync, when a sync would be due)
sleep 1.1
timed stat "$MNT/v/s2.img"
[ $rc != 0 ] || fail "s2 exists before its ingest"
[ "$t" -lt 2500 ] || fail "a lookup of a missing name took $t ms"
t_lookup=$t
sleep 1.1
timed ls "$MNT/v"
[ $rc = 0 ] && [ "$t" -lt 2500 ] || fail "a listing took $t ms (status $rc)"
note "a lookup of a missing name: $t_lookup ms, a listing: $t ms"

# a snapshot made meanwhile: a listing asks for a sync, which brings it
head -c 1M /dev/urandom >"$T/s2"
"$INGEST" --repo "$R" --volume v --snapshot s2 --device "$T/s2" \
	--no-progress >/dev/null || fail "ingest s2"
listed() { ls "$MNT/v" | grep -qx s2.img; }
sleep 1.1
wait_for 60 listed || fail "s2 did not appear after a listing"

# O_DIRECT: one read, not retried by the page cache
timed dd if="$MNT/v/s1.img" of=/dev/null bs=64K count=1 iflag=direct
[ $rc != 0 ] || fail "a missing chunk was read"
note "a read of a missing chunk failed after $t ms (its GET: 4 s)"
[ "$t" -lt 7000 ] || fail "EIO took $t ms: the read waited for more" \
	"than its GET"
has_record() {
	s3_curl -o /dev/null "$S3_ENDPOINT/$S3_BUCKET/nowait/damaged/$id"
}
wait_for 60 has_record || fail "no damage record: $(cat "$MOUNT_LOG")"
stop_mount "$MNT"
exit 0
