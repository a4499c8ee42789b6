#!/bin/bash
# Capacity changes between generations: a volume that shrinks to a partial
# chunk and grows again must read zeros where it was not written, not the
# bytes an ancestor had past the smaller capacity -- with ranges that do
# not mention the grown area, and with scan.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_fuse

R=$T/repo
MNT=$T/mnt
"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init"
echo "0 10" >"$T/r"

# a: 128K of data; b: cut to 96K; c: grown back to 128K (zeros past 96K);
# d: grown to 200K+1 by scan; e: cut to 64K+1, then f grown to 192K
head -c 128K /dev/urandom >"$T/a"
head -c 96K "$T/a" >"$T/b"
cp "$T/b" "$T/c" && truncate -s 128K "$T/c"
cp "$T/c" "$T/d" && truncate -s $((200 * 1024 + 1)) "$T/d"
head -c $((64 * 1024 + 1)) "$T/d" >"$T/e"
cp "$T/e" "$T/f" && truncate -s 192K "$T/f"

ing() {
	"$INGEST" --repo "$R" --volume v --snapshot "$1" --device "$T/$1" \
		"${@:2}" >/dev/null || fail "ingest $1"
}
ing a
ing b --base a --changes "ranges:$T/r"
ing c --base b --changes "ranges:$T/r"
ing d --base c
ing e --base d --changes "ranges:$T/r"
ing f --base e --changes "ranges:$T/r"

start_mount "$R" "$MNT"
for s in a b c d e f; do
	[ "$(stat -c %s "$MNT/v/$s.img")" = "$(stat -c %s "$T/$s")" ] ||
		fail "$s: wrong size"
	cmp "$MNT/v/$s.img" "$T/$s" || fail "$s differs from its source"
done
stop_mount "$MNT"

# a daemonized mount (it runs in "/") with a relative index directory
mkdir -p "$T/mnt3"
(cd "$T" && "$CBTFS" "$R" mnt3 -o cache_dir=relcache) || fail "background mount"
_mounts+=("$T/mnt3")
cmp "$T/mnt3/v/f.img" "$T/f" || fail "background mount with a relative cache_dir"
[ -d "$T/relcache" ] || fail "the relative cache_dir was not used"
fusermount3 -u "$T/mnt3" || fail "unmount"
exit 0
