#!/bin/bash
# Four generations of a 64 MiB image with random writes at random offsets,
# ingested with scan (volume ns/scan) and with ranges (volume ns/ranges),
# restored byte for byte from a real FUSE mount.  Capacity grows in
# generation 3 (to an unaligned size) and shrinks in generation 4, which
# is ingested while the repository is mounted.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_fuse
requires /usr/bin/python3

CS=$((256 * 1024))
IMGTOOL="/usr/bin/python3 $top_srcdir/tests/imgtool.py"
R=$T/repo
MNT=$T/mnt

"$REPO" init "$R" --chunk-size 256K >/dev/null || fail "init"

img=$T/img
truncate -s 64M "$img"

# ingest_gen N BASE: ingests the current image as genN both ways and checks
# the counts each summary reports against what the image says.
ingest_gen() {
	local n=$1 base=$2 basearg=() nchunks want_changed touched out
	[ -n "$base" ] && basearg=(--base "$base")
	cp --sparse=always "$img" "$T/gen$n.img"
	nchunks=$((($(stat -c %s "$img") + CS - 1) / CS))
	if [ -n "$base" ]; then
		want_changed=$($IMGTOOL changed "$T/$base.img" "$img" $CS)
	else
		want_changed=$($IMGTOOL nonzero "$img" $CS)
	fi
	touched=$(chunks_touched "$T/r$n" $CS)

	out=$("$INGEST" --repo "$R" --volume ns/scan --snapshot "gen$n" \
		--device "$img" "${basearg[@]}" --json) || fail "scan gen$n"
	[ "$(json_field chunks_read <<<"$out")" = "$nchunks" ] ||
		fail "scan gen$n read $(json_field chunks_read <<<"$out") chunks, want $nchunks"
	[ "$(json_field chunks_changed <<<"$out")" = "$want_changed" ] ||
		fail "scan gen$n changed $(json_field chunks_changed <<<"$out"), want $want_changed"
	[ "$(json_field capacity <<<"$out")" = "$(stat -c %s "$img")" ] ||
		fail "scan gen$n capacity"
	note "gen$n scan: $nchunks chunks read, $want_changed changed," \
		"$(json_field chunks_new <<<"$out") new," \
		"$(json_field bytes_stored <<<"$out") bytes stored"
	SCAN_JSON=$out

	out=$("$INGEST" --repo "$R" --volume ns/ranges --snapshot "gen$n" \
		--device "$img" "${basearg[@]}" --changes "ranges:$T/r$n" \
		--json) || fail "ranges gen$n"
	# only the chunks the ranges touch are read from the device
	[ "$(json_field chunks_read <<<"$out")" = "$touched" ] ||
		fail "ranges gen$n read $(json_field chunks_read <<<"$out") chunks, want $touched"
	[ "$(json_field bytes_read <<<"$out")" -le $((touched * CS)) ] ||
		fail "ranges gen$n read too many bytes"
	[ "$(json_field chunks_changed <<<"$out")" = "$want_changed" ] ||
		fail "ranges gen$n changed $(json_field chunks_changed <<<"$out"), want $want_changed"
	# the scan volume stored these very chunks already: nothing new
	[ "$(json_field chunks_new <<<"$out")" = 0 ] ||
		fail "ranges gen$n uploaded chunks the scan volume has"
	[ "$(json_field bytes_stored <<<"$out")" = 0 ] ||
		fail "ranges gen$n stored bytes"
	note "gen$n ranges: $touched chunks read, $want_changed changed, deduplicated"
}

# generation 1: about 12 MiB of random data, the rest never written
random_writes "$img" 12 2097152 1 "$T/r1"
ingest_gen 1 ""
[ "$(json_field chunks_new <<<"$SCAN_JSON")" = \
	"$(json_field chunks_changed <<<"$SCAN_JSON")" ] || fail "gen1 new"

# generation 2: small writes; only the changed chunks are stored
random_writes "$img" 8 300000 2 "$T/r2"
ingest_gen 2 gen1
changed2=$($IMGTOOL changed "$T/gen1.img" "$img" $CS)
[ "$changed2" -gt 0 ] && [ "$changed2" -lt 64 ] || fail "gen2 changed $changed2"
[ "$(json_field chunks_new <<<"$SCAN_JSON")" = "$changed2" ] ||
	fail "gen2 stored $(json_field chunks_new <<<"$SCAN_JSON") chunks, want $changed2"
[ "$(json_field bytes_stored <<<"$SCAN_JSON")" -le $((changed2 * (CS + 64))) ] ||
	fail "gen2 stored more bytes than its changed chunks"

# generation 3: grows to an unaligned size, writes anywhere
truncate -s $((72 * 1024 * 1024 + 12345)) "$img"
random_writes "$img" 10 700000 3 "$T/r3"
ingest_gen 3 gen2

start_mount "$R" "$MNT" -o refresh=60
for v in scan ranges; do
	for n in 1 2 3; do
		f=$MNT/ns/$v/gen$n.img
		[ "$(stat -c %s "$f")" = "$(stat -c %s "$T/gen$n.img")" ] ||
			fail "$f: wrong size"
		[ "$(sha "$f")" = "$(sha "$T/gen$n.img")" ] ||
			fail "$f differs from the source"
	done
done
note "generations 1-3 restored byte-exact through the mount"

# generation 4: shrinks; ingested while mounted, it appears on the next
# directory listing (refresh=60 rules out the background refresh)
truncate -s $((60 * 1024 * 1024 + 1000)) "$img"
random_writes "$img" 6 100000 4 "$T/r4"
ingest_gen 4 gen3
sleep 1.1
ls "$MNT/ns/scan" | grep -qx gen4.img || fail "gen4 not listed without a remount"
ls "$MNT/ns/ranges" | grep -qx gen4.img || fail "gen4 not listed (ranges)"
for v in scan ranges; do
	for n in 1 2 3 4; do
		[ "$(sha "$MNT/ns/$v/gen$n.img")" = "$(sha "$T/gen$n.img")" ] ||
			fail "$v gen$n differs"
	done
done
note "generation 4 appeared while mounted and restores byte-exact"

# dd as a restore would do it, two at once
dd if="$MNT/ns/scan/gen2.img" of="$T/out2" bs=1M status=none &
p1=$!
dd if="$MNT/ns/ranges/gen3.img" of="$T/out3" bs=1M status=none &
p2=$!
wait $p1 && wait $p2 || fail "parallel dd"
cmp "$T/out2" "$T/gen2.img" || fail "dd gen2"
cmp "$T/out3" "$T/gen3.img" || fail "dd gen3"

# reads at unaligned offsets and sizes across chunk boundaries
$IMGTOOL preads "$MNT/ns/scan/gen3.img" "$T/gen3.img" 7 200 >/dev/null ||
	fail "unaligned reads (page-cached mount)"
dd if="$MNT/ns/ranges/gen3.img" iflag=skip_bytes,count_bytes \
	skip=$((CS - 3)) count=$((CS + 7)) bs=4096 status=none >"$T/piece"
dd if="$T/gen3.img" iflag=skip_bytes,count_bytes \
	skip=$((CS - 3)) count=$((CS + 7)) bs=4096 status=none | cmp - "$T/piece" ||
	fail "dd piece across a chunk boundary"
stop_mount "$MNT"

# a direct_io mount hands the reads to cbtfs exactly as the program made them
start_mount "$R" "$MNT" -o direct_io
$IMGTOOL preads "$MNT/ns/ranges/gen3.img" "$T/gen3.img" 8 200 >/dev/null ||
	fail "unaligned reads (direct_io)"
$IMGTOOL preads "$MNT/ns/scan/gen4.img" "$T/gen4.img" 9 100 >/dev/null ||
	fail "unaligned reads gen4 (direct_io)"
stop_mount "$MNT"

# the listing names every snapshot with its parent
out=$("$REPO" snapshots "$R" --volume ns/scan --json) || fail "snapshots"
/usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)
assert [x["name"] for x in s] == ["gen1", "gen2", "gen3", "gen4"], s
assert [x["parent"] for x in s] == [None, "gen1", "gen2", "gen3"], s
assert all(x["volume"] == "ns/scan" for x in s)
' <<<"$out" || fail "snapshots --json: $out"
"$REPO" snapshots "$R" | grep -q "ns/ranges .*gen4 .*gen3" ||
	fail "snapshots table"
exit 0
