#!/bin/bash
# An image holding an ext4 filesystem, backed up in two generations, is
# loop-mounted read-only straight from the FUSE mount, and its files match.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_fuse
requires_root
requires mkfs.ext4
requires losetup
losetup -f >/dev/null 2>&1 || skip "no free loop device"

R=$T/repo
MNT=$T/mnt
fsimg=$T/fs.img
"$REPO" init "$R" >/dev/null || fail "init"
truncate -s 64M "$fsimg"
mkfs.ext4 -q -F -L cbtfs-test "$fsimg" || fail "mkfs.ext4"

# loop_mount IMAGE DIR [ro]: mounts and registers the unmount
loop_mount() {
	mkdir -p "$2"
	mount -o "loop${3:+,$3}" "$1" "$2" || fail "mount $1"
	_mounts+=("$2")
}

loop_mount "$fsimg" "$T/fs"
mkdir -p "$T/fs/dir/sub"
head -c 3000000 /dev/urandom >"$T/fs/big.bin"
head -c 12345 /dev/urandom >"$T/fs/dir/small.bin"
echo "generation one" >"$T/fs/dir/sub/note.txt"
(cd "$T/fs" && find . -type f ! -path './lost+found/*' -print0 | sort -z |
	xargs -0 sha256sum) >"$T/files1"
umount "$T/fs"
"$INGEST" --repo "$R" --volume ns/fs --snapshot one --device "$fsimg" \
	>/dev/null || fail "ingest one"

loop_mount "$fsimg" "$T/fs"
echo "generation two" >"$T/fs/dir/sub/note.txt"
rm "$T/fs/dir/small.bin"
head -c 500000 /dev/urandom >"$T/fs/new.bin"
(cd "$T/fs" && find . -type f ! -path './lost+found/*' -print0 | sort -z |
	xargs -0 sha256sum) >"$T/files2"
umount "$T/fs"
out=$("$INGEST" --repo "$R" --volume ns/fs --snapshot two --base one \
	--device "$fsimg" --json) || fail "ingest two"
[ "$(json_field chunks_changed <<<"$out")" -lt 64 ] ||
	fail "generation two stored the whole filesystem"

start_mount "$R" "$MNT"
for g in one two; do
	n=1
	[ $g = two ] && n=2
	loop_mount "$MNT/ns/fs/$g.img" "$T/ro-$g" ro
	(cd "$T/ro-$g" && sha256sum --quiet -c "$T/files$n") ||
		fail "files of generation $g differ"
	# and nothing else is there
	[ "$(cd "$T/ro-$g" && find . -type f ! -path './lost+found/*' | wc -l)" = \
		"$(wc -l <"$T/files$n")" ] || fail "extra files in $g"
done
grep -q "generation one" "$T/ro-one/dir/sub/note.txt" || fail "note one"
grep -q "generation two" "$T/ro-two/dir/sub/note.txt" || fail "note two"
[ -e "$T/ro-two/dir/small.bin" ] && fail "deleted file present in two"
touch "$T/ro-one/x" 2>/dev/null && fail "loop mount of an image is writable"
umount "$T/ro-one" && umount "$T/ro-two" || fail "umount loops"
stop_mount "$MNT"
exit 0
