#!/bin/bash
# Cold reads from an S3 mount: a random image ingested once into a
# throw-away local Ceph RGW, then RUNS times a fresh mount, caches dropped,
# dd bs=1M of the whole image.  Reports MB/s, the mount's CPU seconds
# (user + system, from /proc/PID/stat) per GiB read, its peak RSS (VmHWM)
# and the store GETs of the read (from the unmount summary), each as
# min, median and max.
# Usage: bench/mount.sh [SIZE_MIB [RUNS [OPTIONS]]]
#   (default 1024 MiB, 3 runs, OPTIONS the -o of the mount: jobs=8,
#   readahead=16).  CBTFS_BINS="PATH..." compares builds of cbtfs (before
#   and after a change): each run mounts each in turn, on the same
#   objects.  PIN=1 runs the Ceph daemons on CPU 0 and the mount and dd on
#   CPU 1.  PERF=1 profiles the mount during the first run of each build
#   (perf record) and prints its top symbols.
# Needs root (drops page caches), /dev/fuse, bc and the Ceph packages.
. "$(dirname "$0")/lib.sh"
size=${1:-1024}
runs=${2:-3}
mopts=${3:-jobs=8,readahead=16}
read -r -a bins <<<"${CBTFS_BINS:-$CBTFS}"
requires_fuse
requires bc
start_rgw
CLIENT=()
if [ "${PIN:-0}" = 1 ]; then
	[ "$(nproc)" -ge 2 ] || fail "PIN=1 needs 2 CPUs"
	for p in "${_pids[@]}"; do
		taskset -a -p -c 0 "$p" >/dev/null || fail "taskset $p"
	done
	CLIENT=(taskset -c 1)
fi

img=$T/disk.img
head -c "${size}M" /dev/urandom >"$img"
R=s3://$S3_BUCKET/bench
"$REPO" init "$R" >/dev/null || fail "init"
"$INGEST" --repo "$R" --volume bench/v --snapshot s1 --device "$img" \
	--jobs 8 --no-progress >/dev/null || fail "ingest"
tck=$(getconf CLK_TCK)

# cpu_ticks PID: utime + stime of every thread of PID so far
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

MNT=$T/mnt
declare -A rates cpus hwms gets
for ((n = 1; n <= runs; n++)); do
	for b in "${bins[@]}"; do
		CBTFS=$b
		start_mount "$R" "$MNT" -o "$mopts"
		[ "${PIN:-0}" = 1 ] && taskset -a -p -c 1 "$MOUNT_PID" >/dev/null
		drop
		if [ "${PERF:-0}" = 1 ] && [ $n = 1 ]; then
			perf record -q -F 999 -g -p "$MOUNT_PID" \
				-o "$T/perf.data" 2>/dev/null &
			perf_pid=$!
			sleep 0.5
		fi
		c0=$(cpu_ticks "$MOUNT_PID")
		t=$(secs "${CLIENT[@]}" dd if="$MNT/bench/v/s1.img" of=/dev/null bs=1M)
		c1=$(cpu_ticks "$MOUNT_PID")
		if [ "${PERF:-0}" = 1 ] && [ $n = 1 ]; then
			kill -INT "$perf_pid"
			wait "$perf_pid"
			note "profile of $b (self, by library, then top symbols):"
			perf report -i "$T/perf.data" --no-children --stdio \
				--sort dso 2>/dev/null | grep -E '^ +[0-9]' | head -8
			perf report -i "$T/perf.data" --no-children --stdio \
				--sort sym 2>/dev/null | grep -E '^ +[0-9]' |
				grep -v ' 0x0' | head -20
		fi
		hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$MOUNT_PID/status")
		# the mount's own counters, where it has them
		detail=$(awk '/^cbtfs_(store_gets|cache_misses|cache_hits|cache_waits|readahead_chunks|readahead_dropped|store_retries)/ {
			sub(/^cbtfs_/, ""); sub(/_total/, ""); printf "%s %s, ", $1, $2 }' \
			"$MNT/.stats" 2>/dev/null)
		stop_mount "$MNT"
		g=$(sed -n 's/.* store \([0-9]*\) requests.*/\1/p' "$MOUNT_LOG")
		if [ $n = 1 ]; then	# on a mount of its own: not counted
			start_mount "$R" "$MNT" -o "$mopts"
			cmp "$MNT/bench/v/s1.img" "$img" ||
				fail "$b: the image read back differs"
			stop_mount "$MNT"
		fi
		cpu=$(echo "($c1 - $c0) / $tck * 1024 / $size" | bc -l)
		rates[$b]+=" $(mbps "$t")"
		cpus[$b]+=" $cpu"
		hwms[$b]+=" $((hwm / 1024))"
		gets[$b]+=" ${g:-0}"
		note "run $n, $b: $(mbps "$t") MB/s, $(printf %.2f "$cpu") CPU s/GiB," \
			"VmHWM $((hwm / 1024)) MiB, ${g:-0} store requests${detail:+; $detail}"
	done
done

printf '\n%s MiB random image, Ceph RGW on 127.0.0.1, -o %s, %s runs%s\n' \
	"$size" "$mopts" "$runs" \
	"$([ "${PIN:-0}" = 1 ] && echo ', server on CPU 0, client on CPU 1')"
for b in "${bins[@]}"; do
	printf '%s\n%-28s %s\n' "$b" "" "min median max"
	printf '%-28s %s\n' "cold dd MB/s" "$(stats %.1f ${rates[$b]})"
	printf '%-28s %s\n' "mount CPU s per GiB" "$(stats %.2f ${cpus[$b]})"
	printf '%-28s %s\n' "mount VmHWM MiB" "$(stats %d ${hwms[$b]})"
	printf '%-28s %s\n' "store requests" "$(stats %d ${gets[$b]})"
done
