#!/bin/bash
# The whole main job of cbtfs on a local directory repository:
#   make a disk image and write data to it, back it up (generation 1),
#   change some blocks, back up only what changed (generation 2),
#   mount the repository, restore both generations with dd and compare;
#   restore without the mount, in full and incrementally, and compare.
# Run from a built source tree (./configure && make).  Needs /dev/fuse.
# Work files go to a temporary directory (DEMO_DIR to choose one).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
for p in cbtfs cbtfs-ingest cbtfs-repo; do
	[ -x "$top/$p" ] || { echo "build first: $top/$p is missing" >&2; exit 1; }
done
PATH=$top:$PATH
W=${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/cbtfs-demo.XXXXXX")}
mkdir -p "$W"
export XDG_CACHE_HOME=$W/cache
MNT=$W/mnt
cleanup() {
	mountpoint -q "$MNT" 2>/dev/null && fusermount3 -u "$MNT"
	[ -z "${DEMO_DIR:-}" ] && rm -rf "$W"
	return 0
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "A repository in a local directory"
run cbtfs-repo init "$W/repo"

step "A 256 MiB disk image with 48 MiB of data (the rest never written)"
truncate -s 256M "$W/disk.img"
for off in 0 40 100 200; do
	head -c 12M /dev/urandom |
		dd of="$W/disk.img" bs=1M seek=$off conv=notrunc status=none
done

step "Generation 1: every non-zero chunk is stored"
run cbtfs-ingest --repo "$W/repo" --volume demo/disk --snapshot gen1 \
	--device "$W/disk.img"
cp --sparse=always "$W/disk.img" "$W/gen1.src"

step "Change 3 small areas, 5 MiB more, then generation 2 with --base gen1"
for off in 5 150 250; do
	head -c 100K /dev/urandom |
		dd of="$W/disk.img" bs=4K seek=$((off * 256 + 3)) conv=notrunc status=none
done
head -c 5M /dev/urandom | dd of="$W/disk.img" bs=1M seek=60 conv=notrunc status=none
run cbtfs-ingest --repo "$W/repo" --volume demo/disk --snapshot gen2 \
	--device "$W/disk.img" --base gen1
cp --sparse=always "$W/disk.img" "$W/gen2.src"

step "What the repository holds (STORED: bytes each generation added)"
run cbtfs-repo snapshots "$W/repo"
printf 'repository size on disk: %s\n' "$(du -sh "$W/repo" | cut -f1)"

step "Mount read-only; every snapshot is an image"
mkdir -p "$MNT"
run cbtfs "$W/repo" "$MNT"
run ls -lR "$MNT"

step "Restore both generations with dd and compare checksums"
for g in gen1 gen2; do
	run dd if="$MNT/demo/disk/$g.img" of="$W/$g.restored" bs=1M status=none
done
sha256sum "$W/gen1.src" "$W/gen1.restored" "$W/gen2.src" "$W/gen2.restored"
ok=1
for g in gen1 gen2; do
	if cmp -s "$W/$g.src" "$W/$g.restored"; then
		echo "$g: restored image equals the source"
	else
		echo "$g: RESTORED IMAGE DIFFERS" >&2
		ok=0
	fi
done
run fusermount3 -u "$MNT"

step "Restore without FUSE: gen2 to a new file, then gen1 over it from gen2"
run cbtfs-repo restore "$W/repo" demo/disk@gen2 --to "$W/disk.restored"
run cbtfs-repo restore "$W/repo" demo/disk@gen1 --to "$W/disk.restored" \
	--from gen2 --verify
if cmp -s "$W/gen1.src" "$W/disk.restored"; then
	echo "gen1 (restored incrementally over gen2) equals the source"
else
	echo "gen1: INCREMENTAL RESTORE DIFFERS" >&2
	ok=0
fi
[ $ok = 1 ] && printf '\ncbtfs demo: OK\n'
