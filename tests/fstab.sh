#!/bin/bash
# The README's fstab line works: mount(8) with a line of the form
#   PROGRAM#REPO MOUNTPOINT fuse ro,allow_other,nofail,refresh=N 0 0
# (what mount.fuse3 runs for type fuse.cbtfs once cbtfs is installed in
# /usr/bin or /usr/local/bin, with the program's path spelled out so that
# the test needs no install) mounts the repository, and the snapshot reads
# back byte-exact; umount(8) unmounts it.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_root
requires_fuse
[ -x /sbin/mount.fuse3 ] || [ -x /usr/sbin/mount.fuse3 ] ||
	skip "mount.fuse3 is missing"

R=$T/repo
MNT=$T/mnt
"$REPO" init "$R" >/dev/null || fail "init"
head -c 3M /dev/urandom >"$T/img"
"$INGEST" --repo "$R" --volume ns/v --snapshot s1 --device "$T/img" \
	>/dev/null || fail "ingest"
mkdir "$MNT"
echo "$CBTFS#$R $MNT fuse ro,allow_other,nofail,refresh=30 0 0" >"$T/fstab"
_mounts+=("$MNT")
mount --fstab "$T/fstab" "$MNT" || fail "mount with $(cat "$T/fstab")"
cmp "$MNT/ns/v/s1.img" "$T/img" || fail "the image differs"
grep -q " $MNT fuse.cbtfs ro," /proc/mounts ||
	fail "not a read-only fuse.cbtfs mount: $(grep " $MNT " /proc/mounts)"
umount "$MNT" || fail "umount"
mountpoint -q "$MNT" && fail "still mounted"
exit 0
