#!/bin/bash
# The cost of encryption, in one run, on the same random image, in a local
# directory and in a throw-away local Ceph RGW:
#   ingest MB/s (wall time of cbtfs-ingest into a fresh repository, key
#     derivation included)
#   cold read MB/s (caches dropped, a fresh mount, dd bs=1M of the image)
#   the time to open the repository (cbtfs-repo snapshots of an empty one:
#     with encryption, mostly scrypt), and the ingest rate without it
#     (size / (ingest time - open time)), the rate of a long ingest, and
#     the CPU seconds (user + system) of the ingest
# each RUNS times, without and with encryption taking turns; min, median
# and max, and the ratio of the medians (encrypted / plain).
# Usage: bench/crypt.sh [SIZE_MIB [RUNS]]   (default 256 MiB, 3 runs)
# Needs root (drops page caches), /dev/fuse, bc and the Ceph packages.
. "$(dirname "$0")/lib.sh"
size=${1:-256}
runs=${2:-3}
requires_fuse
requires bc
requires /usr/bin/time
export CBTFS_PASSWORD=bench-passphrase-$RANDOM$RANDOM
MNT=$T/mnt


img=$T/disk.img
head -c "${size}M" /dev/urandom >"$img"

# one_run STORE MODE N: a fresh repository; sets run_ing, run_steady and
# run_rd (MB/s), run_open and run_cpu (seconds)
one_run() {
	local store=$1 mode=$2 n=$3 r enc=() t_ing t_dd
	case $store in
	dir) r=$T/repo-$mode-$n ;;
	rgw) r=s3://$S3_BUCKET/$mode-$n ;;
	esac
	[ "$mode" = encrypted ] && enc=(--encrypt)
	"$REPO" init "$r" "${enc[@]}" >/dev/null || fail "init $r"
	run_open=$(secs "$REPO" snapshots "$r" --cache-dir "$T/cache-open")
	drop
	t_ing=$(secs /usr/bin/time -f "%U %S" -o "$T/cpu" "$INGEST" \
		--repo "$r" --volume bench/v --snapshot s1 --device "$img" \
		--no-progress)
	run_cpu=$(awk '{ print $1 + $2 }' "$T/cpu")
	drop
	start_mount "$r" "$MNT"
	t_dd=$(secs dd if="$MNT/bench/v/s1.img" of=/dev/null bs=1M)
	cmp "$MNT/bench/v/s1.img" "$img" || fail "$r: the image differs"
	stop_mount "$MNT"
	[ "$store" = dir ] && rm -rf "$r"
	run_ing=$(mbps "$t_ing")
	run_steady=$(mbps "$(echo "$t_ing - $run_open" | bc -l)")
	run_rd=$(mbps "$t_dd")
}

report() {	# report STORE: runs, then prints its lines
	local store=$1 n mode k
	local -A v med
	for ((n = 1; n <= runs; n++)); do
		for mode in plain encrypted; do
			one_run "$store" "$mode" "$n"
			v[ing.$mode]+="$run_ing " v[steady.$mode]+="$run_steady "
			v[rd.$mode]+="$run_rd " v[open.$mode]+="$run_open "
			v[cpu.$mode]+="$run_cpu "
		done
	done
	for mode in plain encrypted; do
		for k in ing steady rd; do
			# shellcheck disable=SC2086
			med[$k.$mode]=$(stats %.1f ${v[$k.$mode]} | cut -d' ' -f2)
		done
		# shellcheck disable=SC2086
		printf '%-4s %-9s %18s %18s %18s %16s %16s\n' "$store" \
			"$mode" "$(stats %.1f ${v[ing.$mode]})" \
			"$(stats %.1f ${v[steady.$mode]})" \
			"$(stats %.1f ${v[rd.$mode]})" \
			"$(stats %.2f ${v[open.$mode]})" \
			"$(stats %.2f ${v[cpu.$mode]})"
	done
	printf '%-4s %-9s %18.2f %18.2f %18.2f\n' "$store" "enc/plain" \
		"$(echo "${med[ing.encrypted]} / ${med[ing.plain]}" | bc -l)" \
		"$(echo "${med[steady.encrypted]} / ${med[steady.plain]}" | bc -l)" \
		"$(echo "${med[rd.encrypted]} / ${med[rd.plain]}" | bc -l)"
}

printf '%s MiB random image, %s runs; min median max; last line of each\n' \
	"$size" "$runs"
printf 'enc/plain: the ratio of the medians\n'
printf '%-4s %-9s %18s %18s %18s %16s %16s\n' store mode "ingest MB/s" \
	"ingest-open MB/s" "cold read MB/s" "open s" "ingest CPU s"
report dir
start_rgw >/dev/null
report rgw
