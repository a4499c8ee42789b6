#!/bin/bash
# Ingest memory against capacity: peak RSS (VmHWM, GNU time's %M) of a
# scan ingest of sparse images of several capacities that hold the same
# amount of random data (16 extents spread over the image), into a
# directory repository each.  Memory should follow the data, not the
# capacity.
# Usage: bench/ingest-rss.sh [DATA_MIB [CAPACITIES...]]
#   (default 1024 MiB of data; capacities 64G 1T)
# INGEST_BINS="A B" compares builds (default: this tree's).
. "$(dirname "$0")/lib.sh"
data=${1:-1024}
shift
caps=("${@:-64G}")
[ $# -eq 0 ] && caps=(64G 1T)
requires /usr/bin/time
ext=$((data / 16))
head -c ${ext}M /dev/urandom >"$T/extent"
n=0
for cap in "${caps[@]}"; do
	img=$T/img
	rm -f "$img"
	truncate -s "$cap" "$img"
	size=$(stat -c %s "$img")
	for ((i = 0; i < 16; i++)); do
		# the extents differ (one byte each), so that none dedups
		printf '%08d' $i | cat - "$T/extent" | head -c ${ext}M |
			dd of="$img" bs=1M seek=$((size / 16 * i / 1048576)) \
				conv=notrunc status=none iflag=fullblock
	done
	for bin in ${INGEST_BINS:-$INGEST}; do
		n=$((n + 1))
		"$REPO" init "$T/r$n" >/dev/null || fail "init"
		/usr/bin/time -f "%M %e %U %S" -o "$T/time" "$bin" \
			--repo "$T/r$n" --volume v --snapshot s --device "$img" \
			--no-progress --json >"$T/out" || fail "ingest $cap"
		read -r kib secs user sys <"$T/time"
		echo "capacity $cap, data ${data} MiB: $bin peak RSS $((kib / 1024)) MiB, $secs s ($user user, $sys sys), read $(json_field read_bytes <"$T/out") bytes"
		rm -rf "$T/r$n"
	done
done
