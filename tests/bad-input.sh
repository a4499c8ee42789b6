#!/bin/bash
# Bad input gets a clear error and leaves the repository unchanged.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

R=$T/repo
"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init"
img=$T/img
truncate -s 4M "$img"
head -c 1M /dev/urandom | dd of="$img" conv=notrunc status=none
"$INGEST" --repo "$R" --volume ns/pvc --snapshot s1 --device "$img" \
	>/dev/null || fail "first ingest"
before=$(fingerprint "$R")

unchanged() {
	[ "$(fingerprint "$R")" = "$before" ] || fail "repository changed: $*"
}

ing() { "$INGEST" --repo "$R" --volume ns/pvc --device "$img" "$@"; }

# missing device
expect_fail "device $T/nope: cannot open: No such file or directory" \
	ing --snapshot s2 --device "$T/nope"
unchanged "missing device"

# a directory is no device; neither is an empty file
expect_fail "must be a block device or a regular file" \
	ing --snapshot s2 --device "$T"
touch "$T/empty"
expect_fail "is empty" ing --snapshot s2 --device "$T/empty"
unchanged "bad devices"

# ranges files: unsorted, overlapping, beyond the end, malformed
printf '131072 10\n0 10\n' >"$T/unsorted"
expect_fail "line 2: range at 0 comes before the previous one" \
	ing --snapshot s2 --base s1 --changes "ranges:$T/unsorted"
printf '0 100\n50 100\n' >"$T/overlap"
expect_fail "line 2: range at 50 overlaps the previous one, which ends at 100" \
	ing --snapshot s2 --base s1 --changes "ranges:$T/overlap"
printf '0 10\n4194300 10\n' >"$T/beyond"
expect_fail "line 2: range 4194300+10 ends beyond the end of the device (4194304 bytes)" \
	ing --snapshot s2 --base s1 --changes "ranges:$T/beyond"
printf '0 10 junk\n' >"$T/junk"
expect_fail "line 1: expected 'OFFSET LENGTH' in bytes" \
	ing --snapshot s2 --changes "ranges:$T/junk"
expect_fail "ranges file $T/none: No such file or directory" \
	ing --snapshot s2 --changes "ranges:$T/none"
expect_fail "unknown change source" ing --snapshot s2 --changes magic
unchanged "bad ranges"

# the snapshot name exists already; the base does not exist
expect_fail "snapshot 's1' of volume 'ns/pvc' already exists" \
	ing --snapshot s1
expect_fail "base snapshot 'nope' of volume 'ns/pvc' is not in the repository" \
	ing --snapshot s2 --base nope
expect_fail "base snapshot 's1' of volume 'other' is not in the repository" \
	"$INGEST" --repo "$R" --volume other --device "$img" --snapshot s2 --base s1
unchanged "names"

# invalid names
expect_fail "invalid snapshot name 'a/b'" ing --snapshot a/b
expect_fail "invalid volume name 'ns//pvc'" \
	"$INGEST" --repo "$R" --volume ns//pvc --snapshot x --device "$img"
expect_fail "invalid volume name '../x'" \
	"$INGEST" --repo "$R" --volume ../x --snapshot x --device "$img"
expect_fail "may not end in .img" \
	"$INGEST" --repo "$R" --volume ns/a.img --snapshot x --device "$img"
unchanged "invalid names"

# usage errors exit 2
"$INGEST" --repo "$R" --volume ns/pvc --snapshot x >/dev/null 2>&1
[ $? = 2 ] || fail "missing --device should be a usage error"
"$INGEST" --repo "$R" --volume ns/pvc --snapshot x --device "$img" --jobs 0 \
	>/dev/null 2>&1
[ $? = 2 ] || fail "--jobs 0 should be a usage error"
expect_fail "--base must name an earlier snapshot" ing --snapshot s1 --base s1

# a repository path that is not a repository
mkdir "$T/plain"
echo hello >"$T/plain/file"
for cmd in "$INGEST --repo $T/plain --volume v --snapshot s --device $img" \
	"$REPO snapshots $T/plain" "$REPO reindex $T/plain"; do
	expect_fail "$T/plain: not a cbtfs repository (no config object); create one with 'cbtfs-repo init $T/plain'" $cmd
done
expect_fail "cannot open repository directory: No such file or directory" \
	"$REPO" snapshots "$T/missing"
expect_fail "not a directory" "$REPO" snapshots "$T/plain/file"
expect_fail "unsupported repository URL scheme" "$REPO" snapshots "gopher://x"
[ "$(ls "$T/plain")" = file ] || fail "a failed command wrote into a non-repository"
expect_fail "not empty" "$REPO" init "$T/plain"
expect_fail "already a cbtfs repository" "$REPO" init "$R"
expect_fail "is not a power of two from 64 KiB to 16 MiB" \
	"$REPO" init "$T/new" --chunk-size 100K
expect_fail "is not a power of two from 64 KiB to 16 MiB" \
	"$REPO" init "$T/new2" --chunk-size 32M
unchanged "repository commands"

if [ -c /dev/fuse ] && command -v fusermount3 >/dev/null; then
	mkdir "$T/mnt"
	expect_fail "not a cbtfs repository" "$CBTFS" "$T/plain" "$T/mnt" -f
	mountpoint -q "$T/mnt" && fail "mounted a non-repository"
fi

# a corrupt config is named as such
mkdir "$T/bad"
echo garbage >"$T/bad/config"
expect_fail "the config object is not a cbtfs repository config" \
	"$REPO" snapshots "$T/bad"

# a device shorter than the base's capacity is fine: a smaller volume
truncate -s 1M "$T/small"
out=$("$INGEST" --repo "$R" --volume ns/pvc --snapshot small --base s1 \
	--device "$T/small" --json) || fail "smaller device"
[ "$(json_field capacity <<<"$out")" = 1048576 ] || fail "capacity $out"

# an interrupted ingest commits nothing and releases its lock
head -c 512M /dev/urandom >"$T/big"
snaps=$(ls "$R/snapshots")
"$INGEST" --repo "$R" --volume ns/pvc --snapshot big --device "$T/big" \
	--jobs 1 >"$T/int.out" 2>&1 &
pid=$!
# its lock record says it runs, with its handler for SIGINT in place
wait_for 20 sh -c "grep -lq 'state=held' '$R'/locks/* 2>/dev/null" ||
	fail "the ingest took no lock"
kill -INT $pid
wait $pid && fail "an interrupted ingest exited 0"
grep -q "interrupted: no snapshot was committed" "$T/int.out" ||
	fail "interrupted ingest: $(cat "$T/int.out")"
[ "$(ls "$R/snapshots")" = "$snaps" ] || fail "interrupted ingest committed"
# what it leaves is an abandoned record: it blocks nothing, and tells the
# next ingest of the volume to look for the chunks already stored
n=0
for f in "$R"/locks/*; do
	[ -e "$f" ] || fail "the interrupted ingest left no record"
	grep -qx "state=abandoned" "$f" ||
		fail "interrupted ingest left a live lock: $(cat "$f")"
	n=$((n + 1))
done
[ $n = 1 ] || fail "$n lock records left"
# the next ingest of the volume looks for what it stored, and removes it
out=$("$INGEST" --repo "$R" --volume ns/pvc --snapshot afterint \
	--device "$img" 2>&1) || fail "ingest after the interruption: $out"
grep -q "an earlier ingest of snapshot 'big' stopped early" <<<"$out" ||
	fail "the abandoned record was not taken into account: $out"
[ -z "$(ls "$R/locks")" ] || fail "the abandoned record remains"
rm "$T/big"

# an empty ranges file is a valid empty delta: nothing read, nothing stored
: >"$T/emptyranges"
out=$("$INGEST" --repo "$R" --volume ns/pvc --snapshot same --base s1 \
	--device "$img" --changes "ranges:$T/emptyranges" --json) ||
	fail "empty ranges"
[ "$(json_field read_bytes <<<"$out")" = 0 ] || fail "empty ranges read"
[ "$(json_field chunks_changed <<<"$out")" = 0 ] || fail "empty ranges changed"
exit 0
