#!/bin/bash
# Holes cost next to nothing: a scan ingest of a sparse image reads only
# the chunks that hold data (counted independently with strace), and a
# chunk punched out since the base becomes a zero entry; the mount answers
# SEEK_DATA/SEEK_HOLE with its zero chunks as holes and reports st_blocks
# as the stored size, so cp --sparse=always copies only the data and makes
# a sparse, byte-exact copy.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_fuse
requires strace
requires /usr/bin/python3

CS=65536
R=$T/repo
MNT=$T/mnt
img=$T/img
"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init"
truncate -s 256M "$img"
# data at the start, in the middle (not chunk-aligned) and at the end
printf '%s\n' "0 100000" "104870000 300000" "268385456 50000" >"$T/ranges"
while read -r off len; do
	head -c "$len" /dev/urandom |
		dd of="$img" bs=64K seek="$off" oflag=seek_bytes conv=notrunc \
			status=none iflag=fullblock
done <"$T/ranges"
want=$(chunks_touched "$T/ranges" $CS)

# reads_of FILE CMD...: bytes CMD reads from FILE (pread64 return values)
reads_of() {
	local file=$1
	shift
	rm -f "$T"/strace.*
	# one file per thread, so that no call is split across lines
	strace -ff -y -e trace=pread64 -o "$T/strace" "$@" >"$T/out" ||
		fail "$*: $(cat "$T/out")"
	cat "$T"/strace.* | awk -v f="<$file>" \
		'index($0, f) && $NF ~ /^[0-9]+$/ { s += $NF } END { print s + 0 }'
}

# 1. the first ingest reads the data chunks only
got=$(reads_of "$img" "$INGEST" --repo "$R" --volume v --snapshot s1 \
	--device "$img" --json)
[ "$got" -le $((want * CS)) ] && [ "$got" -ge 450000 ] ||
	fail "ingest read $got bytes of a sparse image; its data is in $want chunks"
[ "$(json_field chunks_read <"$T/out")" = "$want" ] ||
	fail "chunks read: $(cat "$T/out")"
cp --sparse=always "$img" "$T/s1"

# 2. the middle data punched out: its chunks, holes now, are read (the base
#    had data there) and become zero entries; nothing else is read
mid_chunks=$(echo "104870000 300000" >"$T/mid"; chunks_touched "$T/mid" $CS)
fallocate --punch-hole --offset $((104870000 / CS * CS)) \
	--length $((mid_chunks * CS)) "$img"
got=$(reads_of "$img" "$INGEST" --repo "$R" --volume v --snapshot s2 \
	--base s1 --device "$img" --json)
[ "$(json_field chunks_changed <"$T/out")" = "$mid_chunks" ] ||
	fail "s2: $(cat "$T/out")"
[ "$got" -le $(((want) * CS)) ] || fail "s2 read $got bytes"

# 3. the mount: holes, st_blocks, cp --sparse=always
start_mount "$R" "$MNT"
for s in s1 s2; do
	src=$T/s1
	[ $s = s2 ] && src=$img
	f=$MNT/v/$s.img
	$IMGTOOL holes "$f" "$src" $CS >"$T/holes" ||
		fail "$s: holes differ: $(cat "$T/holes")"
	cp --sparse=always "$f" "$T/copy.$s" || fail "cp $s"
	cmp "$T/copy.$s" "$src" || fail "cp --sparse=always of $s differs"
	used=$(du -k "$T/copy.$s" | cut -f1)
	[ "$used" -lt 2048 ] || fail "the copy of $s is not sparse: $used KiB"
done
stop_mount "$MNT"
note "scan read only the $want data chunks; holes and st_blocks right"
exit 0
