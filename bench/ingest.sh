#!/bin/bash
# Ingest to S3, side by side in one run against a throw-away local Ceph
# RGW, on the same random image (issue 11, Benchmarks):
#   cbtfs-ingest   a first (full) ingest into a new repository, --jobs P
#   raw PUT        curl -Z --parallel-max P (keep-alive) of the very chunk
#                  objects cbtfs stored (mirrored once to local files), under
#                  another prefix: the same bytes, the same object count
#   restic backup  of the same image into a new restic repository in a
#                  bucket of the same RGW
# Every run starts from a new repository (otherwise dedup sends nothing),
# with the image and the objects already in the page cache (every tool
# reads warm: this measures the upload path), and what it stored is deleted
# after it (Ceph's store here is a 10 GiB file).  RUNS runs (default 3),
# interleaved; printed as min/median/max MB/s, client CPU-seconds per GiB
# (user + system of the process), per-run ratios, and the issue's targets,
# met or not met.  PIN=1 runs the server on CPU 0 and the clients on CPU 1.
# Usage: bench/ingest.sh [SIZE_MIB [P]]   (default 1024 MiB, P = 8)
# Env: RUNS, PIN, SKIP=restic.  Needs root, the Ceph packages and
# bench/install-deps.sh.
. "$(dirname "$0")/lib.sh"
size=${1:-1024}
P=${2:-8}
RUNS=${RUNS:-3}
SKIP=${SKIP:-}
requires_root
requires bc
requires /usr/bin/time
skipped() { [[ " $SKIP " == *" $1 "* ]]; }
skipped restic || requires restic
s3tool_build
start_rgw
# shellcheck disable=SC2154  # _pids: tests/functions.sh, start_rgw
pin_server "${PIN:-0}" "${_pids[@]}"
note "RGW at $S3_ENDPOINT; ${size} MiB image, P=$P, RUNS=$RUNS"

img=$T/disk.img
head -c "${size}M" /dev/urandom >"$img"

# the objects cbtfs stores for this image, as files
"$REPO" init "s3://$S3_BUCKET/seed" >/dev/null || fail "init"
"$INGEST" --repo "s3://$S3_BUCKET/seed" --volume bench/v --snapshot s1 \
	--device "$img" --jobs "$P" --no-progress >/dev/null || fail "ingest"
"$S3TOOL" "s3://$S3_BUCKET/seed" mirror "$T/objs" || fail "mirror"
"$S3TOOL" "s3://$S3_BUCKET/seed" delete-prefix "" || fail "delete seed"
find "$T/objs/chunks" -type f | sort >"$T/files"
nobj=$(wc -l <"$T/files")
warm() { cat "$img" >/dev/null && xargs -a "$T/files" cat >/dev/null; }

if ! skipped restic; then
	export RESTIC_PASSWORD=bench-$RANDOM RESTIC_CACHE_DIR=$T/restic-cache
	s3_curl -X PUT "$S3_ENDPOINT/restic" || fail "bucket for restic"
fi

m_ingest() {
	local r=s3://$S3_BUCKET/ing$1
	"$REPO" init "$r" >/dev/null || fail "init $r"
	warm
	timed "${CLIENT[@]}" "$INGEST" --repo "$r" --volume bench/v \
		--snapshot s1 --device "$img" --jobs "$P" --no-progress
	MBS=$(mbps "$WALL")
	"$S3TOOL" "$r" delete-prefix "" || fail "delete $r"
}
m_put() {
	local f
	while read -r f; do
		printf 'upload-file = "%s"\nurl = "%s/%s/raw%s/%s"\n' "$f" \
			"$S3_ENDPOINT" "$S3_BUCKET" "$1" "${f#"$T/objs/"}"
	done <"$T/files" >"$T/put.cfg"
	warm
	timed "${CLIENT[@]}" curl -sSf -Z --parallel-max "$P" \
		--aws-sigv4 "aws:amz:us-east-1:s3" \
		--user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
		-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -K "$T/put.cfg"
	MBS=$(mbps "$WALL")
	"$S3TOOL" "s3://$S3_BUCKET/raw$1" delete-prefix "" || fail "delete raw"
}
m_restic() {
	local rr=s3:$S3_ENDPOINT/restic/r$1
	restic -r "$rr" init >/dev/null 2>"$T/restic.log" ||
		{ cat "$T/restic.log" >&2; fail "restic init"; }
	warm
	cd "$T" || fail "cd"
	timed "${CLIENT[@]}" restic -r "$rr" backup disk.img
	cd - >/dev/null || fail "cd"
	MBS=$(mbps "$WALL")
	"$S3TOOL" "s3://restic/r$1" delete-prefix "" || fail "delete restic"
}

tools=(ingest put)
skipped restic || tools+=(restic)
# shellcheck disable=SC2034  # C: read through col()
declare -A M=() C=() label=([ingest]="cbtfs-ingest (new repository)"
	[put]="raw curl PUT of the same objects" [restic]="restic backup (new repository)")
gib=$(calc "$size / 1024")
for ((run = 0; run < RUNS; run++)); do
	for t in "${tools[@]}"; do
		"m_$t" "$run"
		M[$t.$run]=$MBS
		# shellcheck disable=SC2034  # C: read through col()
		C[$t.$run]=$(calc "$CPU / $gib")
		note "run $((run + 1)) $t: $MBS MB/s, $CPU CPU-s"
	done
done

ratio_stats() {
	local i v=()
	for ((i = 0; i < RUNS; i++)); do
		v+=("$(calc "${M[$1.$i]} / ${M[$2.$i]}")")
	done
	stats %.2f "${v[@]}"
}
# col NAME M|C: sets V to the runs' values of NAME in M (MB/s) or C (CPU)
col() {
	local -n a=$2
	V=()
	for ((run = 0; run < RUNS; run++)); do V+=("${a[$1.$run]}"); done
}
printf '\n%s MiB random image (%s chunk objects), Ceph RGW on 127.0.0.1, %s in flight, %s runs, %s\n' \
	"$size" "$nobj" "$P" "$RUNS" \
	"$([ "${PIN:-0}" = 1 ] && echo 'server on CPU 0, clients on CPU 1 (PIN=1)' || echo unpinned)"
printf '  shared 2-CPU machine: other work may have run at the same time\n'
printf '  %-36s %-20s %-18s %s\n' "" "MB/s min/med/max" "CPU-s/GiB median" "ingest / this (min/med/max)"
for t in "${tools[@]}"; do
	rs=""
	[ "$t" = ingest ] || rs=$(ratio_stats ingest "$t")
	col "$t" M
	mb=$(stats %.0f "${V[@]}" | tr ' ' /)
	col "$t" C
	printf '  %-36s %-20s %-18s %s\n' "${label[$t]}" "$mb" \
		"$(median "${V[@]}")" "$(echo "$rs" | tr ' ' /)"
done
col ingest C
cpu_i=$(median "${V[@]}")
col put C
cpu_p=$(median "${V[@]}")
echo "  targets (medians of per-run ratios):"
target "ingest / raw parallel PUT" "$(ratio_stats ingest put | awk '{ print $2 }')" ">=" 0.95
skipped restic || target "ingest / restic backup" "$(ratio_stats ingest restic | awk '{ print $2 }')" ">=" 2
target "ingest CPU-s/GiB / curl PUT's ($cpu_i / $cpu_p)" "$(calc "$cpu_i / $cpu_p")" "<=" 2
