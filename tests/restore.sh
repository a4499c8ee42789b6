#!/bin/bash
# cbtfs-repo restore: byte-exact images on a new file, an existing file, a
# loop device (with and without --target-zeroed) and stdout; incremental
# restore with --from writes only the chunks that differ (its pwrites
# counted with strace); --verify; targets refused (too small, mounted,
# read-only, a directory) with the target and the repository unchanged; a
# corrupt chunk fails the restore and removes a new file; a new file on a
# file system without O_TMPFILE or RENAME_NOREPLACE (bindfs); a user without
# privileges restores into a file; and a restore from S3 (RGW).
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_root
requires strace
requires losetup
requires mkfs.ext4
requires /usr/bin/python3

CS=65536
R=$T/repo
"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init"
# a capacity that ends in a partial chunk, data at both ends and between
CAP=$((32 * 1024 * 1024 + 4096))
img=$T/img
truncate -s $CAP "$img"
printf '%s\n' "0 70000" "5000000 900000" "20000000 131072" \
	"$((CAP - 6000)) 6000" >"$T/ranges"
while read -r off len; do
	head -c "$len" /dev/urandom |
		dd of="$img" bs=64K seek="$off" oflag=seek_bytes conv=notrunc \
			status=none iflag=fullblock
done <"$T/ranges"
"$INGEST" --repo "$R" --volume ns/v --snapshot s1 --device "$img" \
	>/dev/null || fail "ingest s1"
# s2: scattered writes, and data where s1 had data punched out (zeroes)
cp --sparse=always "$img" "$T/img1"
random_writes "$img" 12 100000 7 "$T/w2"
fallocate --punch-hole --offset 5046272 --length 458752 "$img"
"$INGEST" --repo "$R" --volume ns/v --snapshot s2 --base s1 \
	--device "$img" >/dev/null || fail "ingest s2"
cp --sparse=always "$img" "$T/img2"
nonzero1=$($IMGTOOL nonzero "$T/img1" $CS)
nchunks=$(((CAP + CS - 1) / CS))
repo_fp=$(fingerprint "$R")

# losetup_file VAR FILE [ARGS...]: VAR names a new loop device over FILE,
# detached at exit (set here, not in a subshell, so that the exit trap
# knows it)
losetup_file() {
	local var=$1 dev
	shift
	dev=$(losetup -f --show "$@") || fail "losetup $*"
	cleanup_fn "losetup -d $dev"
	printf -v "$var" '%s' "$dev"
}

# same TARGET IMAGE: the first CAP bytes of TARGET are IMAGE
same() {
	cmp -n $CAP "$1" "$2" >/dev/null || fail "$1 differs from $2"
}

# 1. a new file: byte-exact and sparse; only the data chunks written
"$REPO" restore "$R" ns/v s1 --to "$T/new1" --json >"$T/out" ||
	fail "restore to a new file: $(cat "$T/out")"
same "$T/new1" "$T/img1"
[ "$(stat -c %s "$T/new1")" = $CAP ] || fail "new file size"
[ "$(json_field chunks_written <"$T/out")" = "$nonzero1" ] ||
	fail "chunks written: $(cat "$T/out")"
[ "$(json_field chunks_skipped <"$T/out")" = $((nchunks - nonzero1)) ] ||
	fail "chunks skipped: $(cat "$T/out")"
used=$(du -k "$T/new1" | cut -f1)
[ "$used" -lt 2048 ] || fail "the new file is not sparse: $used KiB"

# 2. an existing file full of other data: zero chunks are zeroed too
head -c $CAP /dev/urandom >"$T/old"
"$REPO" restore "$R" ns/v@s2 --to "$T/old" --json >"$T/out" ||
	fail "restore to an existing file"
same "$T/old" "$T/img2"
w=$(json_field chunks_written <"$T/out")
z=$(json_field chunks_zeroed <"$T/out")
[ $((w + z)) = $nchunks ] || fail "written $w + zeroed $z != $nchunks"

# 3. stdout (pipefail: the restore's status counts too)
(set -o pipefail; "$REPO" restore "$R" ns/v s2 --to - | cmp - "$T/img2") ||
	fail "restore to stdout failed or differs"

# 3b. a target larger than the image keeps its bytes past it
head -c $((CAP + 300000)) /dev/urandom >"$T/large"
tail -c 300000 "$T/large" >"$T/large.tail"
"$REPO" restore "$R" ns/v s2 --to "$T/large" >/dev/null ||
	fail "restore to a larger file"
same "$T/large" "$T/img2"
tail -c 300000 "$T/large" | cmp - "$T/large.tail" ||
	fail "restore wrote past the image"

# 4. a loop device full of other data, with --verify
head -c $CAP /dev/urandom >"$T/dev1"
losetup_file dev1 "$T/dev1"
"$REPO" restore "$R" ns/v s2 --to "$dev1" --verify --json >"$T/out" ||
	fail "restore to $dev1: $(cat "$T/out")"
same "$dev1" "$T/img2"
[ "$(json_field chunks_verified <"$T/out")" = $nchunks ] ||
	fail "chunks verified: $(cat "$T/out")"

# 5. a zeroed loop device (a new sparse file) with --target-zeroed
truncate -s $CAP "$T/dev2"
losetup_file dev2 "$T/dev2"
"$REPO" restore "$R" ns/v s1 --to "$dev2" --target-zeroed --json \
	>"$T/out" || fail "restore --target-zeroed"
same "$dev2" "$T/img1"
[ "$(json_field chunks_zeroed <"$T/out")" = 0 ] ||
	fail "zeroed on a zeroed target: $(cat "$T/out")"

# 6. incremental: dev2 holds s1; --from s1 writes only what s2 changed,
#    one pwrite per chunk, and zeroes the chunks s2 punched out
changed=$($IMGTOOL changed "$T/img1" "$T/img2" $CS)
strace -f -y -e trace=pwrite64 -o "$T/strace" \
	"$REPO" restore "$R" ns/v s2 --to "$dev2" --from s1 --json \
	>"$T/out" || fail "restore --from s1: $(cat "$T/out")"
same "$dev2" "$T/img2"
w=$(json_field chunks_written <"$T/out")
z=$(json_field chunks_zeroed <"$T/out")
[ $((w + z)) = "$changed" ] && [ "$z" -gt 0 ] ||
	fail "--from: written $w + zeroed $z, but $changed chunks changed"
pw=$(grep -c "pwrite64([0-9]*<$dev2>" "$T/strace")
[ "$pw" = "$w" ] || fail "--from: $pw pwrites to $dev2 for $w chunks"
[ "$(json_field chunks_skipped <"$T/out")" = $((nchunks - changed)) ] ||
	fail "--from skipped: $(cat "$T/out")"

# a terminal gets a progress line with the time elapsed
script -qec "$REPO restore $R ns/v s2 --to $T/tty" /dev/null >"$T/tty.out" ||
	fail "restore on a terminal: $(cat "$T/tty.out")"
grep -q "restore: writing 100% \([0-9]*\)/\1 chunks, .*, [0-9:]* elapsed" \
	"$T/tty.out" || fail "no progress line: $(cat -v "$T/tty.out")"

# 7. refused targets: nothing written, the repository unchanged
truncate -s 1M "$T/small"
expect_fail "less than the snapshot's $CAP" \
	"$REPO" restore "$R" ns/v s1 --to "$T/small"
[ "$(stat -c %s "$T/small")" = 1048576 ] || fail "the small file changed"
head -c $((CAP - 512)) /dev/urandom >"$T/dev3"
losetup_file dev3 "$T/dev3"
before=$(sha "$T/dev3")
expect_fail "less than the snapshot's" \
	"$REPO" restore "$R" ns/v s1 --to "$dev3"
truncate -s 40M "$T/dev4"
mkfs.ext4 -q "$T/dev4" || fail "mkfs"
losetup_file dev4 "$T/dev4"
mkdir "$T/mnt"
mount "$dev4" "$T/mnt" || fail "mount $dev4"
_mounts+=("$T/mnt")
expect_fail "$dev4 is mounted on $T/mnt" \
	"$REPO" restore "$R" ns/v s1 --to "$dev4"
umount "$T/mnt"
losetup_file dev5 -r "$T/dev3"
expect_fail "read-only" "$REPO" restore "$R" ns/v s1 --to "$dev5"
[ "$(sha "$T/dev3")" = "$before" ] || fail "a refused device changed"
expect_fail "neither a block device nor a regular file" \
	"$REPO" restore "$R" ns/v s1 --to "$T"
expect_fail "volume ns/v has no snapshot s9" \
	"$REPO" restore "$R" ns/v s9 --to "$T/x"
expect_fail "does not exist, but --from says it holds snapshot s1" \
	"$REPO" restore "$R" ns/v s2 --to "$T/x" --from s1
[ ! -e "$T/x" ] || fail "a refused restore left $T/x"
expect_fail "say where to with --to PATH" "$REPO" restore "$R" ns/v s1
expect_fail "--verify and --from need" \
	"$REPO" restore "$R" ns/v s1 --to - --verify
expect_fail "--target-zeroed says it holds zeros" \
	"$REPO" restore "$R" ns/v s2 --to "$T/x" --from s1 --target-zeroed
[ "$(fingerprint "$R")" = "$repo_fp" ] ||
	fail "the repository changed during restores"

# 8. a corrupt chunk: the restore fails naming the bytes, a new file is
#    removed, an existing one is said to hold a partial image
cp -a "$R" "$T/bad"
# the first chunk of s1 (the object is named by its SHA-256)
id=$(chunk_id "$T/img1" 0 $CS)
victim=$T/bad/$(chunk_key "$id")
[ -f "$victim" ] || fail "no chunk object $victim"
damage_byte "$victim" 40
export XDG_CACHE_HOME=$T/cache-bad
expect_fail "cannot be restored: their chunk is damaged" \
	"$REPO" restore "$T/bad" ns/v s1 --to "$T/y"
[ ! -e "$T/y" ] || fail "a failed restore left its new file"
ls -A "$T" | grep -q cbtfs-partial && fail "a partial file was left"
[ -e "$T/bad/damaged/$id" ] || fail "the damaged chunk was not recorded"
cp "$T/img2" "$T/z"
expect_fail "the target holds a partial image; run the same command again" \
	"$REPO" restore "$T/bad" ns/v s1 --to "$T/z"
# to stdout, the output stops early and says so
"$REPO" restore "$T/bad" ns/v s1 --to - >"$T/stream" 2>"$T/err" &&
	fail "a restore to stdout with a damaged chunk succeeded"
grep -q "the output stopped early" "$T/err" || fail "stdout: $(cat "$T/err")"
[ "$(stat -c %s "$T/stream")" -lt $CAP ] || fail "stdout got a whole image"
export XDG_CACHE_HOME=$T/cache

# 8b. a restore killed (-9) while it writes a new file leaves no file at
#     its name: the file has none until it is complete
strace -f -o /dev/null -e inject=pwrite64:delay_enter=300000 \
	"$REPO" restore "$R" ns/v s2 --to "$T/killed" --jobs 1 \
	>/dev/null 2>&1 &
tracer=$!
_pids+=("$tracer")
wait_for 10 pgrep -P $tracer || fail "the traced restore did not start"
sleep 1
kill -9 "$(pgrep -P $tracer)"
wait $tracer 2>/dev/null
[ ! -e "$T/killed" ] || fail "a killed restore left $T/killed"

# 8d. a file system without O_TMPFILE or RENAME_NOREPLACE (bindfs, a FUSE
#     file system on libfuse 2): the new file is written under a hidden
#     partial name and given its name when complete, by a hard link (or,
#     where links fail too, here made to by strace, a plain rename); a
#     killed restore leaves only that hidden name, which the next run
#     takes over; a name that exists is never taken
if command -v bindfs >/dev/null && [ -c /dev/fuse ]; then
	F=$T/fuse
	mkdir "$T/under" "$F"
	bindfs -f "$T/under" "$F" >"$T/bindfs.log" 2>&1 &
	_pids+=($!)
	_mounts+=("$F")
	wait_for 10 mountpoint -q "$F" || fail "bindfs did not mount"
	strace -f -o "$T/fuse.trace" -e trace=openat,renameat2,rename,link \
		"$REPO" restore "$R" ns/v s2 --to "$F/img" >"$T/out" 2>&1 ||
		fail "restore to bindfs: $(cat "$T/out")"
	same "$F/img" "$T/img2"
	grep -q 'O_TMPFILE.*= -1 EOPNOTSUPP' "$T/fuse.trace" ||
		fail "bindfs: O_TMPFILE was not tried, or did not fail"
	grep -q 'renameat2(.*RENAME_NOREPLACE) = -1 EINVAL' "$T/fuse.trace" ||
		fail "bindfs: RENAME_NOREPLACE was not tried, or did not fail"
	grep -q 'link(".*/\.img\.cbtfs-partial", ".*/img") = 0' \
		"$T/fuse.trace" || fail "bindfs: not linked from a partial name"
	strace -f -o "$T/fuse.trace" -e trace=rename,link \
		-e inject=link:error=EPERM \
		"$REPO" restore "$R" ns/v s1 --to "$F/img1" >"$T/out" 2>&1 ||
		fail "restore to bindfs, no links: $(cat "$T/out")"
	same "$F/img1" "$T/img1"
	grep -q 'rename(".*/\.img1\.cbtfs-partial", ".*/img1") = 0' \
		"$T/fuse.trace" || fail "bindfs, no links: not renamed"
	strace -f -o /dev/null -e inject=pwrite64:delay_enter=300000 \
		"$REPO" restore "$R" ns/v s2 --to "$F/killed" --jobs 1 \
		>/dev/null 2>&1 &
	tracer=$!
	_pids+=("$tracer")
	wait_for 20 test -e "$F/.killed.cbtfs-partial" ||
		fail "bindfs: the traced restore made no partial file"
	kill -9 "$(pgrep -P $tracer)"
	wait $tracer 2>/dev/null
	[ ! -e "$F/killed" ] || fail "a killed restore left $F/killed"
	"$REPO" restore "$R" ns/v s2 --to "$F/killed" >"$T/out" 2>&1 ||
		fail "re-run of the killed restore: $(cat "$T/out")"
	same "$F/killed" "$T/img2"
	[ -z "$(ls -A "$F" | grep cbtfs-partial)" ] ||
		fail "bindfs: a partial file remains: $(ls -A "$F")"
	fusermount3 -u "$F" || fail "cannot unmount bindfs"
else
	note "no bindfs or /dev/fuse: a file system without O_TMPFILE is" \
		"not tried"
fi

# 8c. --from across a capacity change: s3 grew past a partial chunk
cp "$T/img2" "$T/img3"
truncate -s $((CAP + 100000)) "$T/img3"
head -c 8000 /dev/urandom | dd of="$T/img3" bs=1 seek=$((CAP - 4000)) \
	conv=notrunc status=none
"$INGEST" --repo "$R" --volume ns/v --snapshot s3 --base s2 \
	--device "$T/img3" >/dev/null || fail "ingest s3"
cp "$T/img2" "$T/grow"
truncate -s $((CAP + 100000)) "$T/grow"
"$REPO" restore "$R" ns/v s3 --to "$T/grow" --from s2 --verify >"$T/out" ||
	fail "restore s3 --from s2: $(cat "$T/out")"
cmp "$T/grow" "$T/img3" || fail "restore --from across a capacity change"
grep -q "the skipped ones were not read" "$T/out" ||
	fail "the summary does not say what --verify did not read"

# 9. no privileges: nobody restores from a repository it can read into a
#    file of its own
U=$(mktemp -d /tmp/cbtfs-nobody.XXXXXX)
cleanup_fn "rm -rf $U"
chmod 755 "$U"
cp -a "$R" "$U/repo"
chmod -R a+rX "$U/repo"
mkdir "$U/out" && chown nobody "$U/out"
setpriv --reuid=nobody --regid=nogroup --clear-groups \
	env XDG_CACHE_HOME="$U/out/cache" \
	"$REPO" restore "$U/repo" ns/v s2 --to "$U/out/img" >"$T/out" 2>&1 ||
	fail "restore as nobody: $(cat "$T/out")"
same "$U/out/img" "$T/img2"

# an ingest on a terminal draws its progress line the same way
script -qec "$INGEST --repo $R --volume ns/tty --snapshot t1 --device $T/img2" \
	/dev/null >"$T/tty.out" || fail "ingest on a terminal"
grep -q "ingest: 100% \([0-9]*\)/\1 chunks, .* MB/s, [0-9:]* elapsed" \
	"$T/tty.out" || fail "no ingest progress line: $(cat -v "$T/tty.out")"

# 10. from S3
start_rgw
S=s3://$S3_BUCKET/restore
"$REPO" init "$S" --chunk-size 64K >/dev/null || fail "init $S"
"$INGEST" --repo "$S" --volume ns/v --snapshot s2 --device "$T/img2" \
	>/dev/null || fail "ingest to $S"
"$REPO" restore "$S" ns/v s2 --to "$T/s3img" --verify >"$T/out" ||
	fail "restore from S3: $(cat "$T/out")"
same "$T/s3img" "$T/img2"
note "restores byte-exact; --from wrote $w chunks and zeroed $z of $nchunks"
exit 0
