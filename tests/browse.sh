#!/bin/bash
# cbtfs-repo browse: snapshots of busy filesystems (an ext4 with
# needs_recovery, an xfs with a dirty log) show every file, the last one
# synced too, with the repository and the image unchanged; partitioned
# disks (GPT with ext4 and vfat, MBR with one ext4) show each partition
# with its files; --unmount, and a browse killed at any moment, leave no
# mount, loop device, overlay file or server; bad input is refused with a
# clear message and nothing left.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_root
requires_fuse
for c in losetup mkfs.ext4 dumpe2fs mkfs.xfs xfs_logprint xfs_io sfdisk \
	mkfs.vfat mcopy; do
	requires $c
done
grep -qw xfs /proc/filesystems || skip "the kernel has no xfs"
grep -qw vfat /proc/filesystems || requires fusefat
losetup -f >/dev/null 2>&1 || skip "no free loop device"

R=$T/repo
MNT=$T/mnt
"$REPO" init "$R" >/dev/null || fail "init"

# browse ARGS...: cbtfs-repo browse, undone at exit whatever happens
browse() {
	cleanup_fn "'$REPO' browse --unmount '${*: -1}' >/dev/null 2>&1"
	"$REPO" browse "$@"
}

# nothing_left MOUNTPOINT: no mount at or under it, no loop device, FUSE
# server, overlay file or state of browse
nothing_left() {
	local mp=$1
	awk -v mp="$mp" '$5 == mp || index($5, mp "/") == 1' \
		/proc/self/mountinfo | grep -q . &&
		fail "a mount remains under $mp: $(grep "$mp" /proc/self/mountinfo)"
	# (a detached loop device that a probe such as udev's blkid still
	# holds goes away when the probe ends)
	wait_for 5 sh -c '! losetup -a | grep -q /run/cbtfs/browse' ||
		fail "a loop device remains: $(losetup -a | grep /run/cbtfs/browse)"
	grep -qE 'fuse.cbtfs-browse|/run/cbtfs/browse' /proc/self/mountinfo &&
		fail "a browse server remains mounted"
	if dmsetup ls >/dev/null 2>&1; then
		dmsetup ls | grep -q cbtfs && fail "a device-mapper target remains"
	fi
	grep -lsx "mountpoint $mp" /run/cbtfs/browse/*/state &&
		fail "the state of $mp remains"
	[ -z "$(find "$XDG_CACHE_HOME/cbtfs/browse" -type f 2>/dev/null)" ] ||
		fail "an overlay file remains"
	return 0
}

# files DIR OUT: checksums of every regular file under DIR
files() {
	(cd "$1" && find . -type f ! -path './lost+found/*' -print0 | sort -z |
		xargs -0 sha256sum) >"$2"
}

# busy_copy TYPE SIZE IMAGE: a filesystem written and synced, then one more
# file written and synced, copied into IMAGE at once while still mounted
# (its journal or log not checkpointed); $T/TYPE.sums has what it held
busy_copy() {
	local type=$1 size=$2 img=$3 live=$T/live-$1.img i
	rm -f "$live"
	truncate -s "$size" "$live"
	"mkfs.$type" -q "$live" >/dev/null || fail "mkfs.$type"
	mkdir -p "$T/src-$type"
	mount -o loop "$live" "$T/src-$type" || fail "mount $type"
	_mounts+=("$T/src-$type")
	mkdir "$T/src-$type/dir"
	for ((i = 0; i < 50; i++)); do
		head -c $((RANDOM * 3)) /dev/urandom >"$T/src-$type/dir/f$i"
	done
	sync
	echo "the last one, written after the others" >"$T/src-$type/last.txt"
	if [ "$type" = xfs ]; then
		# xfs writes its log back in place within 30 s (its log
		# worker): a shutdown right after the log force stops that,
		# so the copy is dirty, as a crash or a snapshot at that
		# moment leaves it; the files cannot be read after it
		files "$T/src-$type" "$T/$type.sums"
		sync -f "$T/src-$type/last.txt"
		xfs_io -x -c "shutdown -f" "$T/src-$type" ||
			fail "xfs shutdown"
		cp --sparse=always "$live" "$img"
	else
		# fsync, not syncfs: that would also write the last file's
		# metadata in place, and the copy would not need its journal
		sync "$T/src-$type/last.txt"
		cp --sparse=always "$live" "$img"
		files "$T/src-$type" "$T/$type.sums"
	fi
	umount "$T/src-$type" || fail "umount $type"
}

# dirty_copy TYPE IMAGE: the copy says it needs its journal or log, and
# mounted without them it lacks the last file; else $why says why not
dirty_copy() {
	local type=$1 img=$2 mp=$T/nolog-$1 opts found=0
	if [ "$type" = xfs ]; then
		why="the xfs copy has a clean log"
		xfs_logprint -t "$img" 2>/dev/null | grep -q DIRTY || return 1
		opts=loop,ro,norecovery,nouuid
	else
		why="the ext4 copy does not need recovery"
		dumpe2fs -h "$img" 2>/dev/null | grep -q needs_recovery ||
			return 1
		opts=loop,ro,noload
	fi
	mkdir -p "$mp"
	mount -o "$opts" "$img" "$mp" || fail "mount -o $opts the $type copy"
	_mounts+=("$mp")
	grep -qs 'the last one' "$mp/last.txt" && found=1
	umount "$mp" || fail "umount $mp"
	why="without its journal or log, the $type copy has the last file"
	[ $found = 0 ]
}

# busy_fs TYPE SIZE IMAGE: busy_copy, made again (3 tries in all) when
# background writeback wrote the last file in place before the copy
busy_fs() {
	local try why
	for try in 1 2 3; do
		busy_copy "$@"
		dirty_copy "$1" "$3" && return 0
		note "$1, try $try: $why"
	done
	fail "$why"
}

# ---- a dirty ext4, through an existing cbtfs mount --------------------------
busy_fs ext4 64M "$T/ext4.img"
img_sha=$(sha "$T/ext4.img")
"$INGEST" --repo "$R" --volume ns/ext4 --snapshot busy \
	--device "$T/ext4.img" >/dev/null || fail "ingest ext4"
start_mount "$R" "$MNT"
repo_fp=$(fingerprint "$R")
t0=$(date +%s%N)
browse "$R" ns/ext4@busy "$T/b1" >"$T/out" || fail "browse ext4"
note "browse of a 64 MiB ext4 needing recovery:" \
	"$((($(date +%s%N) - t0) / 1000000)) ms"
grep -q "$T/b1 .*ext4" "$T/out" ||
	fail "browse did not list the ext4: $(cat "$T/out")"
(cd "$T/b1" && sha256sum --quiet -c "$T/ext4.sums") ||
	fail "files of the busy ext4 differ"
[ "$(cd "$T/b1" && find . -type f ! -path './lost+found/*' | wc -l)" = 51 ] ||
	fail "not 51 files in the ext4"
grep -q 'the last one' "$T/b1/last.txt" || fail "the last ext4 file"
touch "$T/b1/x" 2>/dev/null && fail "the browsed ext4 is writable"
# the overlay file: unnamed, held by the server; how much recovery wrote
ovl=$(find /proc/[0-9]*/fd -lname "$XDG_CACHE_HOME/cbtfs/browse/*" \
	2>/dev/null | head -1)
[ -n "$ovl" ] || fail "no overlay file is open"
note "ext4 overlay after recovery: $(du -k -L "$ovl" | cut -f1) KiB"
# a second browse at the same place is refused
expect_fail "is in use" "$REPO" browse "$R" ns/ext4@busy "$T/b1"
"$REPO" browse --unmount "$T/b1" >/dev/null || fail "unmount ext4"
nothing_left "$T/b1"
[ "$(fingerprint "$R")" = "$repo_fp" ] || fail "the repository changed"
[ "$(sha "$MNT/ns/ext4/busy.img")" = "$img_sha" ] ||
	fail "the ext4 image changed"
mountpoint -q "$MNT" || fail "--unmount took the user's cbtfs mount away"
stop_mount "$MNT"

# ---- a dirty xfs, with a cbtfs mount browse starts itself -----------------
busy_fs xfs 300M "$T/xfs.img"
img_sha=$(sha "$T/xfs.img")
"$INGEST" --repo "$R" --volume ns/xfs --snapshot busy \
	--device "$T/xfs.img" >/dev/null || fail "ingest xfs"
repo_fp=$(fingerprint "$R")
browse "$R" ns/xfs@busy "$T/b2" >"$T/out" || fail "browse xfs"
(cd "$T/b2" && sha256sum --quiet -c "$T/xfs.sums") ||
	fail "files of the busy xfs differ"
[ "$(cd "$T/b2" && find . -type f | wc -l)" = 51 ] || fail "not 51 files"
ovl=$(find /proc/[0-9]*/fd -lname "$XDG_CACHE_HOME/cbtfs/browse/*" \
	2>/dev/null | head -1)
note "xfs overlay after recovery: $(du -k -L "$ovl" | cut -f1) KiB"
rmnt=$(grep ' - fuse.cbtfs ' /proc/self/mountinfo |
	awk '$5 ~ "^/run/cbtfs/browse/" { print $5 }')
[ -n "$rmnt" ] || fail "browse did not start a cbtfs mount"
[ "$(sha "$rmnt/ns/xfs/busy.img")" = "$img_sha" ] ||
	fail "the xfs image changed"
"$REPO" browse --unmount "$T/b2" >/dev/null || fail "unmount xfs"
nothing_left "$T/b2"
[ "$(fingerprint "$R")" = "$repo_fp" ] || fail "the repository changed"

# ---- partitioned disks ----------------------------------------------------
# GPT: p1 ext4, p2 vfat; MBR: p1 ext4
truncate -s 100M "$T/gpt.img"
sfdisk -q "$T/gpt.img" <<EOF >/dev/null || fail "sfdisk gpt"
label: gpt
start=2048, size=40M, type=linux
size=30M, type=uefi
EOF
truncate -s 40M "$T/mbr.img"
sfdisk -q "$T/mbr.img" <<EOF >/dev/null || fail "sfdisk mbr"
label: dos
start=2048, type=83
EOF
# part_start IMAGE N: the first byte of partition N
part_start() {
	sfdisk -J "$1" | /usr/bin/python3 -c 'import json, sys
parts = json.load(sys.stdin)["partitiontable"]["partitions"]
print(parts[int(sys.argv[1]) - 1]["start"] * 512)' "$2"
}
# ext4_part IMAGE N NAME: an ext4 in partition N holding a file NAME
ext4_part() {
	local off dev
	off=$(part_start "$1" "$2")
	dev=$(losetup -f --show -o "$off" --sizelimit $((30 << 20)) "$1") ||
		fail "losetup"
	mkfs.ext4 -q "$dev" && mkdir -p "$T/p" && mount "$dev" "$T/p" ||
		fail "ext4 in $1"
	head -c 200000 /dev/urandom >"$T/p/$3"
	sha "$T/p/$3" >"$T/$3.sha"
	umount "$T/p" && losetup -d "$dev"
}
ext4_part "$T/gpt.img" 1 gpt-one.bin
ext4_part "$T/mbr.img" 1 mbr-one.bin
off=$(part_start "$T/gpt.img" 2)
mkfs.vfat -n EFI --offset $((off / 512)) "$T/gpt.img" $((30 << 10)) \
	>/dev/null 2>&1 || fail "mkfs.vfat"
head -c 150000 /dev/urandom >"$T/vfat file.bin"
mcopy -i "$T/gpt.img@@$off" "$T/vfat file.bin" "::/vfat file.bin" ||
	fail "mcopy"
"$INGEST" --repo "$R" --volume ns/gpt --snapshot s --device "$T/gpt.img" \
	>/dev/null || fail "ingest gpt"
"$INGEST" --repo "$R" --volume ns/mbr --snapshot s --device "$T/mbr.img" \
	>/dev/null || fail "ingest mbr"
browse "$R" ns/gpt@s "$T/b3" >"$T/out" || fail "browse gpt"
grep -q "gpt partition table, 2 partitions" "$T/out" ||
	fail "browse did not say gpt: $(cat "$T/out")"
[ "$(sha "$T/b3/p1/gpt-one.bin")" = "$(cat "$T/gpt-one.bin.sha")" ] ||
	fail "the ext4 file of the GPT disk"
cmp "$T/b3/p2/vfat file.bin" "$T/vfat file.bin" || fail "the vfat file"
touch "$T/b3/p3" 2>/dev/null && fail "the directory of partitions is writable"
browse "$R" ns/mbr@s "$T/b4" >"$T/out" || fail "browse mbr"
grep -q "dos partition table, 1 partition" "$T/out" ||
	fail "browse did not say dos: $(cat "$T/out")"
[ "$(sha "$T/b4/p1/mbr-one.bin")" = "$(cat "$T/mbr-one.bin.sha")" ] ||
	fail "the ext4 file of the MBR disk"
"$REPO" browse --unmount "$T/b3" >/dev/null || fail "unmount gpt"
"$REPO" browse --unmount "$T/b4" >/dev/null || fail "unmount mbr"
nothing_left "$T/b3"
nothing_left "$T/b4"

# ---- kills ----------------------------------------------------------------
# killed_at LINE: a browse of the GPT disk stopped (CBTFS_BROWSE_PAUSE)
# once it recorded the state line starting with LINE, then killed
killed_at() {
	local pid i
	CBTFS_BROWSE_PAUSE=$1 "$REPO" browse "$R" ns/gpt@s "$T/b5" \
		>/dev/null 2>&1 &
	pid=$!
	for ((i = 0; i < 400; i++)); do
		[ "$(awk '{ print $3 }' /proc/$pid/stat 2>/dev/null)" = T ] &&
			break
		sleep 0.05
	done
	[ $i -lt 400 ] || fail "browse did not pause at '$1' in 20 s"
	kill -9 $pid
	wait $pid 2>/dev/null
	return 0
}
# before its cbtfs mount, with it and the overlay server, with the tmpfs,
# with p1 mounted, with everything but the last line
for at in cbtfs overlay "mount $T/b5" "mount $T/b5/p2" done; do
	killed_at "$at"
	"$REPO" browse --unmount "$T/b5" >/dev/null ||
		fail "--unmount after a kill at '$at'"
	nothing_left "$T/b5"
done
# at a moment left to chance
"$REPO" browse "$R" ns/gpt@s "$T/b5" >/dev/null 2>&1 &
pid=$!
sleep 0.$((RANDOM % 4))
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
"$REPO" browse --unmount "$T/b5" >/dev/null || fail "--unmount after a kill"
nothing_left "$T/b5"
# SIGTERM (or SIGINT) in the middle: the browse undoes itself
CBTFS_BROWSE_PAUSE="mount $T/b5/p2" "$REPO" browse "$R" ns/gpt@s "$T/b5" \
	>/dev/null 2>"$T/err" &
pid=$!
wait_for 20 sh -c "[ \"\$(awk '{ print \$3 }' /proc/$pid/stat)\" = T ]" ||
	fail "browse did not pause in 20 s"
kill -TERM $pid
kill -CONT $pid
wait $pid && fail "an interrupted browse succeeded"
grep -q "interrupted by signal 15: undoing the browse" "$T/err" ||
	fail "an interrupted browse said: $(cat "$T/err")"
nothing_left "$T/b5"
# a new browse after a killed one undoes it first
killed_at "mount $T/b5/p2"
browse "$R" ns/ext4@busy "$T/b5" >/dev/null ||
	fail "a browse after a killed one"
[ -e "$T/b5/last.txt" ] || fail "the browse after a killed one shows nothing"
# the overlay server killed under a finished browse
spid=$(for p in /proc/[0-9]*; do
	[ "$(tr '\0' ' ' 2>/dev/null <"$p/cmdline")" = \
		"$REPO browse $R ns/ext4@busy $T/b5 " ] && basename "$p"
done)
[ -n "$spid" ] || fail "no overlay server"
kill -9 $spid
"$REPO" browse --unmount "$T/b5" >/dev/null ||
	fail "--unmount after the server was killed"
nothing_left "$T/b5"

# ---- bad input --------------------------------------------------------------
truncate -s 8M "$T/empty.img"
head -c 1M /dev/urandom | dd of="$T/empty.img" seek=1 bs=1M conv=notrunc \
	status=none
"$INGEST" --repo "$R" --volume ns/raw --snapshot s --device "$T/empty.img" \
	>/dev/null || fail "ingest raw"
repo_fp=$(fingerprint "$R")
expect_fail "ns/raw@s holds no filesystem browse can mount (no filesystem" \
	"$REPO" browse "$R" ns/raw@s "$T/b6"
nothing_left "$T/b6"
expect_fail "has no snapshot nope of volume ns/ext4" \
	"$REPO" browse "$R" ns/ext4@nope "$T/b6"
nothing_left "$T/b6"
mkdir -p "$T/busy"
mount -t tmpfs none "$T/busy" || fail "tmpfs"
_mounts+=("$T/busy")
expect_fail "$T/busy is in use: none is mounted there" \
	"$REPO" browse "$R" ns/ext4@busy "$T/busy"
umount "$T/busy"
expect_fail "browse needs root" setpriv --reuid=65534 --regid=65534 \
	--clear-groups "$REPO" browse "$R" ns/ext4@busy "$T/b6"
expect_fail "give REPO VOLUME@SNAPSHOT MOUNTPOINT" \
	"$REPO" browse "$R" ns/ext4@busy
"$REPO" browse --unmount "$T/b6" | grep -q "nothing is browsed" ||
	fail "--unmount of nothing"
[ "$(fingerprint "$R")" = "$repo_fp" ] || fail "the repository changed"
exit 0
