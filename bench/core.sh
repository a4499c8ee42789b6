#!/bin/bash
# Speed of the core path on a local directory repository, side by side with
# plain reads of the same data in the same run:
#   ingest (scan) MB/s        vs  dd of the source image, and vs dd of it
#                                 into the repository's file system
#                                 (bs=1M, fsync: the write ceiling)
#   dd bs=1M from a fresh     vs  dd of the source image
#     mount (cold caches)
# Usage: bench/core.sh [SIZE_MIB [FILL]]   FILL: random (default) or half
# (half the chunks random, half zero).  Run as root (drops page caches).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
size=${1:-1024}
fill=${2:-random}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/cbtfs-bench.XXXXXX")
export XDG_CACHE_HOME=$W/cache
MNT=$W/mnt
cleanup() {
	mountpoint -q "$MNT" 2>/dev/null && fusermount3 -u "$MNT"
	rm -rf "$W"
}
trap cleanup EXIT

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# secs CMD...: wall seconds of CMD
secs() {
	local t0 t1
	t0=$(date +%s.%N)
	"$@" >/dev/null 2>"$W/stderr" || { cat "$W/stderr" >&2; return 1; }
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc -l
}
mbps() { echo "scale=1; $size * 1.048576 / $1" | bc -l; }

img=$W/disk.img
if [ "$fill" = half ]; then
	truncate -s ${size}M "$img"
	for ((i = 0; i < size; i += 2)); do
		head -c 1M /dev/urandom | dd of="$img" bs=1M seek=$i conv=notrunc status=none
	done
else
	head -c ${size}M /dev/urandom >"$img"
fi
"$top/cbtfs-repo" init "$W/repo" >/dev/null

drop
t_raw=$(secs dd if="$img" of=/dev/null bs=1M)
drop
t_wr=$(secs dd if="$img" of="$W/copy" bs=1M conv=fsync)
rm -f "$W/copy"
drop
t_ing=$(secs "$top/cbtfs-ingest" --repo "$W/repo" --volume bench/v \
	--snapshot s1 --device "$img" --no-progress)
mkdir -p "$MNT"
"$top/cbtfs" "$W/repo" "$MNT"
drop
t_dd=$(secs dd if="$MNT/bench/v/s1.img" of=/dev/null bs=1M)
cmp "$MNT/bench/v/s1.img" "$img" || { echo "restore differs" >&2; exit 1; }
fusermount3 -u "$MNT"

printf '%-34s %10s %8s\n' "${size} MiB image, $fill" "MB/s" "ratio"
printf '%-34s %10s %8s\n' "dd of the source image (cold)" "$(mbps "$t_raw")" "1.00"
printf '%-34s %10s %8.2f\n' "dd into the repo's fs (fsync)" "$(mbps "$t_wr")" \
	"$(echo "$t_raw / $t_wr" | bc -l)"
printf '%-34s %10s %8.2f   (%.2f of the write ceiling)\n' \
	"cbtfs-ingest scan (cold)" "$(mbps "$t_ing")" \
	"$(echo "$t_raw / $t_ing" | bc -l)" "$(echo "$t_wr / $t_ing" | bc -l)"
printf '%-34s %10s %8.2f\n' "dd bs=1M from the mount (cold)" "$(mbps "$t_dd")" \
	"$(echo "$t_raw / $t_dd" | bc -l)"
