#!/bin/bash
# The mount's metrics: MOUNTPOINT/.stats (hidden, read-only) and
# -o metrics_file are Prometheus text format (checked by promcheck.py), and
# the counters move as they should: a cold read of an image with holes
# misses once and GETs once per stored chunk, holes cost nothing, a read of
# a corrupt chunk counts an error (and its damage record is written by the
# background thread while mounted); the file is replaced atomically and
# written a last time at unmount.  libfuse's -o splice_* are accepted.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_fuse
requires /usr/bin/python3

CS=65536
R=$T/repo
MNT=$T/mnt
PROM=$T/metrics.prom
promcheck() { /usr/bin/python3 "$top_srcdir/tests/promcheck.py" "$@"; }
"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init"

# s1: 40 chunks of data, then 8 of holes, then 8 of data
head -c $((40 * CS)) /dev/urandom >"$T/s1"
truncate -s $((48 * CS)) "$T/s1"
head -c $((8 * CS)) /dev/urandom >>"$T/s1"
# s2: other data; its first chunk will be corrupt
head -c $((4 * CS)) /dev/urandom >"$T/s2"
for s in s1 s2; do
	"$INGEST" --repo "$R" --volume v --snapshot $s --device "$T/$s" \
		--no-progress >/dev/null || fail "ingest $s"
done
D=48

# libfuse's splice options are accepted (they change no byte)
start_mount "$R" "$MNT" -o readahead=0,metrics_file=$PROM,metrics_interval=1 \
	-o splice_read,splice_write,splice_move

# .stats: hidden, read-only, well-formed
ls -A "$MNT" | grep -q stats && fail ".stats is listed: $(ls -A "$MNT")"
[ "$(stat -c %a "$MNT/.stats")" = 444 ] || fail ".stats mode"
(echo x >"$MNT/.stats") 2>/dev/null && fail ".stats is writable"
promcheck "$MNT/.stats" >"$T/before" || fail ".stats: $(cat "$MNT/.stats")"
v() { awk -v n="cbtfs_$2" '$1 == n { print $2 }' "$1"; }
for k in cache_hits_total cache_misses_total store_gets_total \
	store_get_bytes_total read_errors_total readahead_chunks_total \
	cache_bytes open_images maps_bytes snapshots; do
	[ -n "$(v "$T/before" $k)" ] || fail "no cbtfs_$k in .stats"
done
[ "$(v "$T/before" snapshots)" = 2 ] || fail "snapshots: $(cat "$T/before")"

# a cold read: one miss and one GET per stored chunk, none for the holes
cmp "$MNT/v/s1.img" "$T/s1" || fail "s1 differs"
promcheck "$MNT/.stats" >"$T/after" || fail ".stats after the read"
d() { echo $(($(v "$T/after" $1) - $(v "$T/before" $1))); }
note "after a cold read of $D stored chunks:" \
	"misses +$(d cache_misses_total), hits +$(d cache_hits_total)," \
	"GETs +$(d store_gets_total)," \
	"bytes +$(d store_get_bytes_total)"
[ "$(d cache_misses_total)" = $D ] ||
	fail "misses +$(d cache_misses_total), want $D (chunks read cold)"
[ "$(d store_gets_total)" = $D ] ||
	fail "GETs +$(d store_gets_total), want $D (one per stored chunk)"
[ "$(d store_get_bytes_total)" -ge $((D * CS)) ] &&
	[ "$(d store_get_bytes_total)" -le $((D * (CS + 128))) ] ||
	fail "GET bytes +$(d store_get_bytes_total) for $D chunks"
[ "$(d readahead_chunks_total)" = 0 ] || fail "read ahead with readahead=0"
[ "$(v "$T/after" cache_bytes)" -gt 0 ] || fail "cache_bytes 0"
# read again: the page cache answers, nothing is fetched
cat "$MNT/v/s1.img" >/dev/null
promcheck "$MNT/.stats" >"$T/again" || fail ".stats"
[ "$(v "$T/again" store_gets_total)" = "$(v "$T/after" store_gets_total)" ] ||
	fail "a warm read fetched chunks"

# a corrupt chunk: EIO, an error counted, the damage recorded in the
# background while still mounted
id=$(chunk_id "$T/s2" 0 $CS)
obj=$R/$(chunk_key "$id")
size=$(stat -c %s "$obj")
# 16 zero bytes amid random ones
dd if=/dev/zero of="$obj" bs=1 count=16 seek=$((size / 2)) conv=notrunc \
	status=none
dd if="$MNT/v/s2.img" of=/dev/null bs=64K count=1 2>/dev/null &&
	fail "a corrupt chunk was read"
promcheck "$MNT/.stats" >"$T/err" || fail ".stats"
[ "$(v "$T/err" read_errors_total)" -ge 1 ] &&
	[ "$(v "$T/err" chunk_load_errors_total)" -ge 1 ] ||
	fail "errors not counted: $(cat "$T/err")"
wait_for 10 test -f "$R/damaged/$id" ||
	fail "no damage record while mounted: $(cat "$MOUNT_LOG")"

# the metrics file: replaced whole, catching up within its interval
caught_up() {
	promcheck "$PROM" cbtfs_read_errors_total | grep -qv ' 0$'
}
wait_for 10 caught_up || fail "metrics file: $(cat "$PROM" 2>&1)"
promcheck "$PROM" >/dev/null || fail "metrics file not Prometheus text"
ls "$T" | grep -q 'metrics.prom.tmp' && fail "temporary files left"
stop_mount "$MNT"
promcheck "$PROM" cbtfs_cache_misses_total cbtfs_read_errors_total \
	>"$T/final" || fail "final metrics file"
[ "$(v "$T/final" cache_misses_total)" -ge $D ] ||
	fail "final metrics: $(cat "$T/final")"

# the checker itself fails on what is not the format
printf 'cbtfs_x_total 1\ncbtfs_x_total 2\n' | promcheck - >/dev/null 2>&1 &&
	fail "promcheck took a sample twice"
printf '# TYPE a counter\na 1\n' | promcheck - >/dev/null 2>&1 &&
	fail "promcheck took a counter without _total"
printf 'a{b="c} 1\n' | promcheck - >/dev/null 2>&1 &&
	fail "promcheck took an unterminated label"
printf 'a 1x\n' | promcheck - >/dev/null 2>&1 &&
	fail "promcheck took a bad value"
exit 0
