#!/bin/bash
# Holes of a loop device: a scan ingest of /dev/loopN over a sparse file
# (attached at an offset that is not a multiple of the chunk size) reads
# only the chunks with data, which it learns from the backing file
# (counted with strace), says so with --verbose, and the backup is
# byte-exact (compared through the mount with the device).  A loop device
# whose backing file was deleted is read whole, and --verbose says so.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_root
requires_fuse
requires losetup
requires strace

CS=65536
OFF=12288		# the device's byte 0 in the file
R=$T/repo
MNT=$T/mnt
file=$T/backing
"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init"
truncate -s $((1024 * 1024 * 1024 + OFF)) "$file"
# data (in device offsets) at the start, in the middle (not chunk-aligned)
# and at the end
printf '%s\n' "0 100000" "300000000 300000" "1073691824 50000" >"$T/ranges"
while read -r off len; do
	head -c "$len" /dev/urandom |
		dd of="$file" bs=64K seek=$((off + OFF)) oflag=seek_bytes \
			conv=notrunc status=none iflag=fullblock
done <"$T/ranges"
want=$(chunks_touched "$T/ranges" $CS)
data=$((100000 + 300000 + 50000))
dev=$(losetup --find --show --offset $OFF "$file") || skip "no loop device"
cleanup_fn "losetup -d $dev"
[ "$(blockdev --getsize64 "$dev")" = $((1024 * 1024 * 1024)) ] ||
	fail "$dev: unexpected size"

# reads_of FILE CMD...: bytes CMD reads from FILE (pread64 return values)
reads_of() {
	local file=$1
	shift
	rm -f "$T"/strace.*
	strace -ff -y -e trace=pread64 -o "$T/strace" "$@" >"$T/out" \
		2>"$T/err" || fail "$*: $(cat "$T/out" "$T/err")"
	cat "$T"/strace.* | awk -v f="<$file>" \
		'index($0, f) && $NF ~ /^[0-9]+$/ { s += $NF } END { print s + 0 }'
}

got=$(reads_of "$dev" "$INGEST" --repo "$R" --volume v --snapshot s1 \
	--device "$dev" --json --verbose)
[ "$got" -le $((want * CS)) ] && [ "$got" -ge $data ] ||
	fail "ingest read $got bytes of $dev; its data is in $want chunks"
[ "$(json_field chunks_read <"$T/out")" = "$want" ] ||
	fail "chunks read: $(cat "$T/out")"
grep -qF "device $dev: its holes are those of its backing file $file (from offset $OFF)" \
	"$T/err" || fail "--verbose did not say where holes come from: $(cat "$T/err")"
note "$dev: read $got bytes for $data of data in $want chunks of 1 GiB"

# a loop device whose backing file was deleted: holes unknown, all read
small=$T/small
truncate -s 16M "$small"
head -c 100000 /dev/urandom | dd of="$small" bs=1M seek=5 conv=notrunc \
	status=none
dev2=$(losetup --find --show "$small") || skip "no second loop device"
cleanup_fn "losetup -d $dev2"
rm "$small"
got=$(reads_of "$dev2" "$INGEST" --repo "$R" --volume v2 --snapshot s1 \
	--device "$dev2" --json --verbose)
[ "$got" = $((16 * 1024 * 1024)) ] ||
	fail "read $got bytes of $dev2, whose holes are not known"
grep -qF "device $dev2: its holes are not known" "$T/err" ||
	fail "--verbose did not say that all is read: $(cat "$T/err")"

start_mount "$R" "$MNT"
cmp "$MNT/v/s1.img" "$dev" || fail "the backup differs from $dev"
cmp "$MNT/v2/s1.img" "$dev2" || fail "the backup differs from $dev2"
stop_mount "$MNT"
exit 0
