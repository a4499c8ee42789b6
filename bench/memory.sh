#!/bin/bash
# Memory with a bound (issue 11, Benchmarks): the mount's peak RSS (VmHWM)
# with N (default 100) open images of CAP (default 1T) each, read in turn,
# against cache_size + 64 MiB.
# Every image is its own volume with one snapshot: a sparse CAP image
# holding PER MiB (default 8) of fresh random data in 1 MiB pieces spread
# over the capacity (so every image has its own chunks and its map spans
# the whole volume).  The mount (-o cache_size=CACHE, default 256M) opens
# all N images and keeps them open; then each is read in turn (its data
# pieces with dd, and one hole), PASSES times (default 2), so N x PER MiB
# passes through a cache of CACHE.  VmHWM and VmRSS of the mount are
# printed after the opens and after every pass, and the bound met or not.
# The repository is a local directory (S3=1: a throw-away Ceph RGW, where
# the S3 connection pool's buffers count too).
# Usage: bench/memory.sh   Env: N, CAP, PER, CACHE, PASSES, S3.  Root.
. "$(dirname "$0")/lib.sh"
N=${N:-100}
CAP=${CAP:-1T}
PER=${PER:-8}
CACHE=${CACHE:-256M}
PASSES=${PASSES:-2}
requires_fuse
requires bc

bytes_of() { numfmt --from=iec "$1"; }
cache_b=$(bytes_of "$CACHE")
bound=$((cache_b + 64 * 1048576))

if [ "${S3:-0}" = 1 ]; then
	start_rgw
	R=s3://$S3_BUCKET/memory
else
	R=$T/repo
fi
"$REPO" init "$R" >/dev/null || fail "init"

img=$T/disk.img
truncate -s "$CAP" "$img" || fail "cannot make a $CAP sparse file in $T"
cap_mib=$(($(stat -c %s "$img") / 1048576))
# PER pieces of 1 MiB, spread evenly (MiB offsets), the last at the end
offs=()
for ((j = 0; j < PER; j++)); do
	offs+=($((PER > 1 ? (cap_mib - 1) * j / (PER - 1) : 0)))
done
for ((i = 0; i < N; i++)); do
	for o in "${offs[@]}"; do
		head -c 1M /dev/urandom | dd of="$img" bs=1M seek="$o" \
			conv=notrunc status=none iflag=fullblock || fail "write"
	done
	"$INGEST" --repo "$R" --volume "v$i" --snapshot s1 --device "$img" \
		--no-progress >/dev/null || fail "ingest v$i"
done
note "$N volumes of $CAP, each with $PER MiB of its own data"

start_mount "$R" "$T/mnt" -o "cache_size=$CACHE"
mem() { awk -v k="$1" '$1 == k ":" { printf "%.1f", $2 / 1024 }' "/proc/$MOUNT_PID/status"; }
report() {
	printf '  %-40s VmHWM %7s MiB   VmRSS %7s MiB\n' "$1" "$(mem VmHWM)" "$(mem VmRSS)"
}
printf '\n%s open %s images, %s MiB of data each, cache_size=%s, %s repository\n' \
	"$N" "$CAP" "$PER" "$CACHE" "$([ "${S3:-0}" = 1 ] && echo 'S3 (RGW)' || echo directory)"
printf '  shared 2-CPU machine: other work may have run at the same time\n'
report "mounted"
fds=()
for ((i = 0; i < N; i++)); do
	exec {fd}<"$T/mnt/v$i/s1.img" || fail "open v$i"
	fds+=("$fd")
done
report "$N images open"
for ((pass = 1; pass <= PASSES; pass++)); do
	for ((i = 0; i < N; i++)); do
		f=/proc/self/fd/${fds[i]}
		for o in "${offs[@]}"; do
			dd if="$T/mnt/v$i/s1.img" bs=1M skip="$o" count=1 \
				of=/dev/null status=none || fail "read v$i at MiB $o"
		done
		# one hole, between the first two pieces
		dd if="$T/mnt/v$i/s1.img" bs=1M skip=$((offs[0] + 1)) count=1 \
			of=/dev/null status=none || fail "read a hole of v$i"
		# the image stays open through its descriptor
		[ -e "$f" ] || fail "v$i was closed"
	done
	report "after pass $pass over all $N"
	sync
	echo 1 >/proc/sys/vm/drop_caches 2>/dev/null	# next pass reaches cbtfs
done
hwm_kib=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$MOUNT_PID/status")
for fd in "${fds[@]}"; do
	exec {fd}<&-
done
stop_mount "$T/mnt"
echo "  target:"
target "peak RSS (VmHWM) MiB vs cache_size + 64 MiB ($((bound / 1048576)))" \
	"$(calc "$hwm_kib / 1024")" "<=" "$((bound / 1048576))"
