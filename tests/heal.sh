#!/bin/bash
# Healing: a chunk found corrupt or missing by a read through the mount is
# recorded as damaged in the repository; the next ingest whose data holds
# it, on another host (another index), stores it again, also when it is
# unchanged from the base and the change source did not report it; after
# that every snapshot that used it restores byte-exact.  Before healing,
# deduplication never trusts the damaged chunk.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_fuse
requires_root

R=$T/repo
MNT=$T/mnt
"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init"
img=$T/img
head -c 4M /dev/urandom >"$img"
"$INGEST" --repo "$R" --volume v --snapshot g1 --device "$img" >/dev/null ||
	fail "ingest g1"
cp "$img" "$T/g1"
# g2 changes chunk 0 only: chunks 3 and 5 are g1's
head -c 1000 /dev/urandom | dd of="$img" conv=notrunc status=none
"$INGEST" --repo "$R" --volume v --snapshot g2 --base g1 --device "$img" \
	>/dev/null || fail "ingest g2"
cp "$img" "$T/g2"

id3=$(chunk_id "$img" 3)
id5=$(chunk_id "$img" 5)
obj3=$R/$(chunk_key "$id3")
obj5=$R/$(chunk_key "$id5")
[ -f "$obj3" ] && [ -f "$obj5" ] || fail "chunk objects missing"
size=$(stat -c %s "$obj3")
damage_byte "$obj3" $((size / 2))
rm "$obj5"

# 1. reads through the mount fail with EIO and record both chunks
start_mount "$R" "$MNT"
for s in g1 g2; do
	dd if="$MNT/v/$s.img" of=/dev/null bs=64K 2>/dev/null &&
		fail "$s read in full despite damaged chunks"
done
dd if="$MNT/v/g2.img" of=/dev/null bs=64K skip=5 count=1 2>/dev/null &&
	fail "a missing chunk was read"
stop_mount "$MNT"
[ -f "$R/damaged/$id3" ] || fail "the corrupt chunk was not recorded: $(cat "$MOUNT_LOG")"
[ -f "$R/damaged/$id5" ] || fail "the missing chunk was not recorded"
grep -q "^why=corrupt" "$R/damaged/$id3" || fail "record: $(cat "$R/damaged/$id3")"

# 2. dedup does not trust them: an ingest of the same image on another
#    host (its own index, synced from the store) stores chunks 3 and 5
#    again, though they are unchanged from the base
export XDG_CACHE_HOME=$T/host2
out=$("$INGEST" --repo "$R" --volume v --snapshot g3 --base g2 \
	--device "$img" --json) || fail "ingest g3"
[ "$(json_field chunks_healed <<<"$out")" = 2 ] ||
	fail "g3 did not store the damaged chunks again: $out"
[ "$(json_field chunks_changed <<<"$out")" = 0 ] ||
	fail "g3 has entries for unchanged chunks: $out"
[ -e "$R/damaged/$id3" ] || [ -e "$R/damaged/$id5" ] &&
	fail "damage records remain after healing"

# 3. every snapshot restores byte-exact, read by a fresh host
export XDG_CACHE_HOME=$T/host3
start_mount "$R" "$MNT"
cmp "$MNT/v/g1.img" "$T/g1" || fail "g1 after healing"
cmp "$MNT/v/g2.img" "$T/g2" || fail "g2 after healing"
cmp "$MNT/v/g3.img" "$img" || fail "g3 after healing"
stop_mount "$MNT"

# 4. with a change source that does not report the damaged chunk, the
#    base's damaged chunk is read from the device all the same
id7=$(chunk_id "$img" 7)
obj7=$R/$(chunk_key "$id7")
damage_byte "$obj7" 100
"$REPO" verify "$R" --read-data >/dev/null 2>&1 &&
	fail "verify did not find the corrupt chunk 7"
[ -f "$R/damaged/$id7" ] || fail "verify did not record chunk 7"
head -c 4096 /dev/urandom | dd of="$img" bs=4096 seek=16 conv=notrunc status=none
echo "65536 4096" >"$T/ranges"
out=$("$INGEST" --repo "$R" --volume v --snapshot g4 --base g3 \
	--device "$img" --changes "ranges:$T/ranges" --json) ||
	fail "ingest g4"
[ "$(json_field chunks_healed <<<"$out")" = 1 ] ||
	fail "g4 did not store chunk 7 again: $out"
[ "$(json_field chunks_read <<<"$out")" = 2 ] ||
	fail "g4 read other than chunks 1 and 7: $out"
start_mount "$R" "$MNT"
for s in g1 g2 g3; do
	dd if="$MNT/v/$s.img" of=/dev/null bs=1M status=none ||
		fail "$s does not read after chunk 7 healed"
done
cmp "$MNT/v/g4.img" "$img" || fail "g4 after healing"
stop_mount "$MNT"
"$REPO" verify "$R" --read-data >/dev/null || fail "verify after healing"
exit 0
