#!/bin/bash
# The mount's memory has a bound: with 30 images of a 1 TiB sparse volume
# open at once (a million chunks of capacity each) and read while all stay
# open -- each in turn, then six at a time, then 4 KiB of every chunk
# backwards (which fills the cache) -- more data read than the cache holds,
# the daemon's peak RSS (VmHWM) stays under cache_size + 64 MiB (149 MiB
# with cache_size=128M; the cache before recycled buffers: 325 MiB), and
# the cache's own account of its buffers under cache_size.  .stats says
# how many images and maps are open, and that the maps go with the last
# close.
# (N, DATA, CACHE and CS override the sizes, to explore.)
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_fuse
requires /usr/bin/python3

N=${N:-30}
DATA=${DATA:-8}			# MiB of data per snapshot
CACHE=${CACHE:-128}		# MiB of cache_size
R=$T/repo
MNT=$T/mnt
img=$T/img
"$REPO" init "$R" --chunk-size ${CS:-1M} >/dev/null || fail "init"
truncate -s 1T "$img"
for ((i = 1; i <= N; i++)); do
	# DATA MiB of random bytes at a place of its own, the rest holes
	head -c ${DATA}M /dev/urandom >"$T/data.$i"
	dd if="$T/data.$i" of="$img" bs=1M seek=$((i * 2048)) conv=notrunc \
		status=none || fail "write $i"
	"$INGEST" --repo "$R" --volume v --snapshot "s$i" --device "$img" \
		--no-progress >/dev/null || fail "ingest s$i"
	fallocate --punch-hole --offset $((i * 2048 << 20)) \
		--length $((DATA << 20)) "$img" || fail "punch $i"
done

# two malloc arenas: glibc otherwise gives each new thread an arena of its
# own (up to 8 per core), each keeping what its thread freed, so the
# daemon's peak would follow how many FUSE workers and loaders happened to
# run at once on a loaded machine, not what cbtfs holds
MALLOC_ARENA_MAX=2 start_mount "$R" "$MNT" \
	-o "cache_size=${CACHE}M,readahead=8"
fds=()
for ((i = 1; i <= N; i++)); do
	exec {fd}<"$MNT/v/s$i.img" || fail "open s$i"
	fds+=("$fd")
done
cleanup_fn 'for fd in "${fds[@]}"; do exec {fd}<&-; done'
for ((i = 1; i <= N; i++)); do
	dd if="$MNT/v/s$i.img" of="$T/out" bs=1M skip=$((i * 2048)) \
		count=$DATA status=none || fail "read s$i"
	cmp "$T/out" "$T/data.$i" || fail "s$i: data differs"
done
# then six at a time, backwards: more threads, more chunks pinned at once
# our images' pages out of the kernel's page cache (POSIX_FADV_DONTNEED),
# so that the daemon serves the reads again (not the global drop_caches)
uncache_images() {
	local i
	for ((i = 1; i <= N; i++)); do
		dd if="$MNT/v/s$i.img" iflag=nocache count=0 status=none ||
			fail "fadvise s$i"
	done
}
uncache_images
for ((i = N; i >= 1; i -= 6)); do
	pids=()
	for ((k = i; k > i - 6 && k >= 1; k--)); do
		dd if="$MNT/v/s$k.img" of="$T/out.$k" bs=1M \
			skip=$((k * 2048)) count=$DATA status=none &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || fail "parallel read"; done
	for ((k = i; k > i - 6 && k >= 1; k--)); do
		cmp "$T/out.$k" "$T/data.$k" || fail "s$k: data differs"
	done
done
# last, 4 KiB from every chunk of data, backwards: no read-ahead, so the
# chunks stay cached as read ones and the cache fills to its bound
uncache_images
/usr/bin/python3 - "$MNT/v" $N $DATA <<'PY' || fail "backward reads"
import os, sys
d, n, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n, 0, -1):
    fd = os.open("%s/s%d.img" % (d, i), os.O_RDONLY)
    for c in range(mib - 1, -1, -1):
        if len(os.pread(fd, 4096, ((i * 2048) + c) << 20)) != 4096:
            sys.exit("short read")
    os.close(fd)
PY

read -r rss hwm < <(awk '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 }
	END { print r, h }' "/proc/$MOUNT_PID/status")
note "VmRSS $((rss / 1024)) MiB, VmHWM $((hwm / 1024)) MiB," \
	"cache_size $CACHE MiB, $N images open"
[ "$hwm" -le $(((CACHE + 64) * 1024)) ] ||
	fail "peak RSS $((hwm / 1024)) MiB is over cache_size + 64 MiB"
/usr/bin/python3 "$top_srcdir/tests/promcheck.py" "$MNT/.stats" \
	cbtfs_open_images cbtfs_open_files cbtfs_maps_bytes cbtfs_cache_bytes \
	cbtfs_cache_max_bytes >"$T/stats" || fail "metrics"
m() { awk -v n="cbtfs_$1" '$1 == n { print $2 }' "$T/stats"; }
note "$(tr '\n' ' ' <"$T/stats")"
[ "$(m open_images)" = $N ] && [ "$(m open_files)" = $N ] ||
	fail "open images: $(cat "$T/stats")"
# compact maps: 40 bytes per stored chunk, a little per image
[ "$(m maps_bytes)" -le $((N * (DATA * 1024 * 40 + 4096))) ] ||
	fail "maps take $(m maps_bytes) bytes"
[ "$(m cache_bytes)" -le $((CACHE << 20)) ] ||
	fail "cache buffers take $(m cache_bytes) bytes, over cache_size"

for fd in "${fds[@]}"; do exec {fd}<&-; done
fds=()

# closed, the maps go
wait_for 5 sh -c "grep -qx 'cbtfs_open_images 0' '$MNT/.stats'" ||
	fail "maps kept after the last close: $(grep open_ "$MNT/.stats")"
stop_mount "$MNT"
exit 0
