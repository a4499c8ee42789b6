#!/bin/bash
# The mount's command line: the repository as -r, --repo, --repo=,
# $CBTFS_REPOSITORY or a first argument, each mounting a snapshot that reads
# back byte-exact; -o debug is taken and -d/-s are refused with a hint;
# every bad -o value is refused with its range (exit 2); a missing,
# non-empty or already-mounted mountpoint is refused with what to do (exit
# 1); an unusable /dev/fuse is explained; a daemonized mount on a host
# without syslog writes its errors (a corrupt chunk) to -o log=FILE, or to
# a file under the cache directory, and names that file before detaching.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_root
requires_fuse

R=$T/repo
MNT=$T/mnt
"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init"
img=$T/img
head -c 1M /dev/urandom >"$img"
"$INGEST" --repo "$R" --volume ns/v --snapshot s1 --device "$img" \
	>/dev/null || fail "ingest"

# exit_is STATUS "message" cmd...: cmd exits STATUS and says message (a
# foreground mount that should have been refused is stopped after 10 s)
exit_is() {
	local want=$1 msg=$2 out rc
	shift 2
	_mounts+=("$MNT")
	out=$(timeout 10 "$@" 2>&1)
	rc=$?
	[ "$rc" = "$want" ] || fail "'$*' exited $rc, not $want: $out"
	grep -qF -- "$msg" <<<"$out" ||
		fail "'$*' did not say '$msg'; it said:"$'\n'"$out"
	mountpoint -q "$MNT" && fail "'$*' mounted"
	return 0
}

# the repository, every way; start_mount passes its first argument first
mkdir -p "$MNT"
mount_form() {
	MOUNT_LOG=$T/mount.log
	"$@" >"$MOUNT_LOG" 2>&1 &
	MOUNT_PID=$!
	_pids+=("$MOUNT_PID")
	_mounts+=("$MNT")
	wait_for 10 mountpoint -q "$MNT" ||
		fail "'$*' did not mount: $(cat "$MOUNT_LOG")"
	cmp "$MNT/ns/v/s1.img" "$img" || fail "'$*': the image differs"
	stop_mount "$MNT"
}
mount_form "$CBTFS" -r "$R" "$MNT" -f
mount_form "$CBTFS" "-r$R" "$MNT" -f
mount_form "$CBTFS" --repo "$R" "$MNT" -f
mount_form "$CBTFS" "$MNT" --repo="$R" -f --single-threaded
mount_form env CBTFS_REPOSITORY="$R" "$CBTFS" "$MNT" -f -o single_threaded
mount_form env CBTFS_REPOSITORY=$T/nowhere "$CBTFS" "$R" "$MNT" -f
# -o debug: FUSE's trace, in the foreground
mount_form "$CBTFS" -r "$R" "$MNT" -o debug
grep -q "opcode: INIT" "$MOUNT_LOG" || fail "-o debug: no FUSE trace"

# usage errors: exit 2, one line that says what to use instead
exit_is 2 "for FUSE debug output use -o debug" "$CBTFS" -d "$R" "$MNT"
exit_is 2 "use --single-threaded" "$CBTFS" -s "$R" "$MNT"
exit_is 2 "no repository given (REPO MOUNTPOINT, -r REPO or \$CBTFS_REPOSITORY)" \
	env -u CBTFS_REPOSITORY "$CBTFS" "$MNT"
exit_is 2 "the repository is given twice" "$CBTFS" -r "$R" "$R" "$MNT"
exit_is 2 "--repo needs a value" "$CBTFS" "$MNT" --repo
while read -r opt msg; do
	exit_is 2 "-o $opt: $msg" "$CBTFS" "$R" "$MNT" -f -o "$opt"
done <<'CASES'
refresh=-1 expected 0 to 86400 seconds
refresh=86401 expected 0 to 86400 seconds
timeout=0 expected 1 to 3600 seconds
timeout=3601 expected 1 to 3600 seconds
readahead=65 expected 0 to 64 chunks
jobs=0 expected 1 to 256 requests
jobs=4294967297 expected 1 to 256 requests
retries=-1 expected 0 to 100
retries=101 expected 0 to 100
retries=3x expected 0 to 100
metrics_interval=0 expected 1 to 86400 seconds
cache_size=100K expected a size from 1M to 1T
cache_size=2T expected a size from 1M to 1T
cache_size=lots expected a size from 1M to 1T
addressing=dns expected 'path' or 'virtual'
CASES

# the mountpoint: missing, not empty, already mounted (exit 1)
exit_is 1 "mount point $T/none does not exist; create it (mkdir -p $T/none)" \
	"$CBTFS" "$R" "$T/none"
mkdir "$T/full" && touch "$T/full/f"
exit_is 1 "mount point $T/full is not empty" "$CBTFS" "$R" "$T/full"
start_mount "$R" "$MNT"
out=$("$CBTFS" "$R" "$MNT" 2>&1) && fail "a second mount on $MNT: $out"
grep -qF "mount point $MNT already has a mount on it (fuse.cbtfs cbtfs:$R); unmount it first" \
	<<<"$out" || fail "second mount: $out"
[ "$(grep -c " $MNT " /proc/self/mountinfo)" = 1 ] || fail "mounts stacked"
stop_mount "$MNT"
# -o nonempty: the files are hidden, not refused
start_mount "$R" "$T/full" -o nonempty
cmp "$T/full/ns/v/s1.img" "$img" || fail "nonempty mount"
stop_mount "$T/full"

# /dev/fuse missing or not permitted, in a mount namespace of our own
if command -v unshare >/dev/null && command -v setpriv >/dev/null; then
	out=$(unshare -m --propagation slave sh -c "$MOUNT_NS_PREP"'
		mount -t tmpfs none /dev && exec "$@"' sh \
		"$CBTFS" "$R" "$MNT" 2>&1) && fail "mounted without /dev/fuse"
	grep -qF "cannot open /dev/fuse: No such file or directory; load the fuse module (modprobe fuse)" \
		<<<"$out" || fail "no /dev/fuse: $out"
	chmod 755 "$T"
	out=$(unshare -m --propagation slave sh -c "$MOUNT_NS_PREP"'
		mount -t tmpfs none /dev &&
		mknod -m 600 /dev/fuse c 10 229 &&
		exec setpriv --reuid=65534 --regid=65534 --clear-groups "$@"' \
		sh "$CBTFS" "$R" "$MNT" 2>&1) && fail "mounted as nobody"
	grep -qF "cannot open /dev/fuse: Permission denied; run cbtfs as root" \
		<<<"$out" || fail "/dev/fuse denied: $out"
	chmod 700 "$T"
fi

# a daemonized mount: errors go to -o log=FILE, syslog or not
id3=$(chunk_id "$img" 3)
obj3=$R/$(chunk_key "$id3")
size=$(stat -c %s "$obj3")
damage_byte "$obj3" $((size / 2))
_mounts+=("$MNT")
"$CBTFS" "$R" "$MNT" -o log="$T/cbtfs.log" >"$T/out" 2>&1 ||
	fail "daemonized mount: $(cat "$T/out")"
head -1 "$T/out" | grep -qF "cbtfs: messages go to $T/cbtfs.log once in the background" ||
	fail "the first message does not name the log: $(cat "$T/out")"
dd if="$MNT/ns/v/s1.img" of=/dev/null bs=64K skip=3 count=1 status=none \
	2>/dev/null && fail "read of a corrupt chunk succeeded"
head -1 "$T/cbtfs.log" | grep -qE "^[0-9-]{10}T[0-9:]{8}Z cbtfs\[[0-9]+\]: $R mounted at $MNT\$" ||
	fail "the log does not start with the mount: $(cat "$T/cbtfs.log")"
grep -q "error: chunk $(chunk_key "$id3") is corrupt" "$T/cbtfs.log" ||
	fail "the log does not name the corrupt chunk: $(cat "$T/cbtfs.log")"
fusermount3 -u "$MNT" || fail "unmount"
# without syslog, by default, to a file per mountpoint under the cache
# directory
[ -S /dev/log ] && skip "syslog runs here (/dev/log): the default file is not used"
"$CBTFS" "$R" "$MNT" >"$T/out" 2>&1 || fail "daemonized mount: $(cat "$T/out")"
log=$XDG_CACHE_HOME/cbtfs/mount-$(sed 's|^/||; s|/|-|g' <<<"$MNT").log
grep -qF "cbtfs: messages go to $log once in the background (no syslog" \
	"$T/out" || fail "the default log is not named: $(cat "$T/out")"
dd if="$MNT/ns/v/s1.img" of=/dev/null bs=64K skip=3 count=1 status=none \
	2>/dev/null && fail "read of a corrupt chunk succeeded"
grep -q "chunk $(chunk_key "$id3") is corrupt" "$log" ||
	fail "the default log does not name the corrupt chunk"
fusermount3 -u "$MNT" || fail "unmount"
exit 0
