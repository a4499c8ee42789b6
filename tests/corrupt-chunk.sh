#!/bin/bash
# A chunk that fails verification makes the reads that need it fail with
# EIO and a log line naming the chunk; it never returns wrong bytes.  Reads
# of other chunks go on working.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_fuse

R=$T/repo
MNT=$T/mnt
"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init"
img=$T/img
head -c 1M /dev/urandom >"$img"
"$INGEST" --repo "$R" --volume v --snapshot s1 --device "$img" >/dev/null ||
	fail "ingest"

# chunk 3 of the image: its id is the SHA-256 of bytes 192K..256K
id3=$(chunk_id "$img" 3)
obj3=$R/$(chunk_key "$id3")
[ -f "$obj3" ] || fail "chunk object $obj3 missing"
id5=$(chunk_id "$img" 5)
obj5=$R/$(chunk_key "$id5")

# flip one byte in the middle of chunk 3's object; delete chunk 5's
size=$(stat -c %s "$obj3")
damage_byte "$obj3" $((size / 2))
rm "$obj5"

start_mount "$R" "$MNT"
f=$MNT/v/s1.img
# chunks 0-2 read fine
dd if="$f" of="$T/head" bs=64K count=3 status=none || fail "good chunks"
cmp "$T/head" <(head -c $((3 * 65536)) "$img") || fail "good chunks differ"
# chunk 3: EIO, no data
out=$(dd if="$f" of="$T/bad" bs=64K skip=3 count=1 2>&1) &&
	fail "read of a corrupt chunk succeeded"
grep -q "Input/output error" <<<"$out" || fail "no EIO: $out"
[ ! -s "$T/bad" ] || fail "bytes returned for a corrupt chunk"
grep -q "chunk $(chunk_key "$id3") is corrupt" "$MOUNT_LOG" ||
	fail "log does not name the corrupt chunk: $(cat "$MOUNT_LOG")"
# chunk 5: missing, EIO
dd if="$f" of=/dev/null bs=64K skip=5 count=1 status=none 2>/dev/null &&
	fail "read of a missing chunk succeeded"
grep -q "chunk $(chunk_key "$id5") is missing" "$MOUNT_LOG" ||
	fail "log does not name the missing chunk"
# a whole-image restore fails loudly instead of producing a bad copy
dd if="$f" of="$T/all" bs=1M status=none 2>/dev/null &&
	fail "restore of a damaged image succeeded"
# the chunks after them still read
dd if="$f" of="$T/tail" bs=64K skip=6 status=none || fail "tail"
cmp "$T/tail" <(tail -c +$((6 * 65536 + 1)) "$img") || fail "tail differs"
stop_mount "$MNT"
exit 0
