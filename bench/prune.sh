#!/bin/bash
# cbtfs-repo prune of about 10,000 unused chunks on a throw-away local Ceph
# RGW.  Each run ingests a SIZE MiB image of random data (64 KiB chunks:
# SIZE * 16 chunks) as a volume of its own, forgets that volume's snapshot,
# and times 'cbtfs-repo prune --jobs P' (the wall time of the whole
# command: lock, every manifest read, chunks/ and damaged/ listed, the
# unused chunks deleted with DeleteObjects in batches of 1000).  A kept
# volume of 64 MiB stays throughout, so that prune has chunks to keep.
# RUNS runs; seconds and chunks deleted per second, min / median / max.
# Usage: bench/prune.sh [SIZE_MIB [P [RUNS]]]  (default 640, 8, 3)
# Needs the Ceph packages and bc.
. "$(dirname "$0")/lib.sh"
size=${1:-640}
P=${2:-8}
RUNS=${3:-3}
requires bc
start_rgw

R=s3://$S3_BUCKET/bench
"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init"
head -c 64M /dev/urandom >"$T/kept.img"
"$INGEST" --repo "$R" --volume bench/kept --snapshot k --device \
	"$T/kept.img" --jobs "$P" --no-progress >/dev/null || fail "ingest kept"
head -c "${size}M" /dev/urandom >"$T/img"

secs=()
rates=()
for ((i = 1; i <= RUNS; i++)); do
	"$INGEST" --repo "$R" --volume "bench/r$i" --snapshot s --device \
		"$T/img" --jobs "$P" --no-progress >/dev/null ||
		fail "ingest run $i"
	"$REPO" forget "$R" "bench/r$i" s --force >/dev/null ||
		fail "forget run $i"
	t0=$(date +%s.%N)
	"$REPO" prune "$R" --jobs "$P" --json >"$T/p.json" ||
		fail "prune run $i"
	t1=$(date +%s.%N)
	n=$(json_field chunks_deleted <"$T/p.json")
	s=$(echo "$t1 - $t0" | bc -l)
	secs+=("$s")
	rates+=("$(echo "$n / $s" | bc -l)")
	printf 'run %d: %d chunks (%s MiB) deleted, %d kept, in %.2f s\n' \
		"$i" "$n" "$(echo "$(json_field bytes_freed <"$T/p.json") / 1048576" |
		bc)" "$(json_field chunks_referenced <"$T/p.json")" "$s"
done

echo "prune seconds (min median max):        $(stats %.2f "${secs[@]}")"
echo "chunks deleted per s (min median max): $(stats %.0f "${rates[@]}")"
