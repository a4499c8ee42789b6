#!/bin/bash
# Cold reads from S3, side by side in one run against a throw-away local
# Ceph RGW, on the same random image (issue 11, Benchmarks):
#   cbtfs      cold dd bs=1M from a fresh mount (-o jobs=P,readahead=2P);
#              client CPU = dd's + the mount daemon's during the read
#   vreader    the verifying raw reader (bench/vreader.c): the same chunk
#              objects, P keep-alive libcurl handles, each SHA-256 hashed as
#              it arrives and checked against its id: the honest limit
#   raw GET    curl -Z --parallel-max P of the same objects, not verified
#   s3backer   (Debian) 1 MiB blocks, the tuned flags of
#              shared/reference/local-s3.md (block cache, max_readahead);
#              in the P sweep also --blockCacheThreads=P --readAhead=P
#   restic     restic mount + cold dd of the same image, restic's
#              repository in a bucket of the same RGW (same server, same
#              network path and the same cold-client rules as the others;
#              a local-directory repository would not measure S3 reads)
#   restore    cbtfs-repo restore --jobs P to a new file, and restic
#              restore of the same image, when cbtfs-repo has restore; both
#              write to tmpfs (RESTORE_DIR, default in /dev/shm)
# Each is run RUNS times (default 3), interleaved, after dropping the page
# cache; printed as min/median/max MB/s, with per-run ratios (min/median/
# max) against cbtfs and the issue's targets, met or not met.  That is done
# unpinned and with the server on CPU 0 and every client on CPU 1 (PIN=0
# or PIN=1 picks one; default both).  Then the median of SWEEP_RUNS (3) per
# parallelism P in PS (default 1 2 4 8 16) for cbtfs, vreader, raw GET and
# s3backer, plotted with gnuplot to OUT (default /tmp/cbtfs-bench/read.png;
# the data beside it, .dat).
# Usage: bench/read.sh [SIZE_MIB [P]]   (default 1024 MiB, P = 8)
# Env: RUNS, PIN, PS, SWEEP_RUNS, OUT, SKIP (space-separated tools to leave
# out: restic s3backer sweep).  Needs root, FUSE, the Ceph packages and
# bench/install-deps.sh.
. "$(dirname "$0")/lib.sh"
size=${1:-1024}
P=${2:-8}
RUNS=${RUNS:-3}
PINS=${PIN:-0 1}
PS=${PS:-1 2 4 8 16}
SWEEP_RUNS=${SWEEP_RUNS:-3}
OUT=${OUT:-/tmp/cbtfs-bench/read.png}
SKIP=${SKIP:-}
requires_root
requires_fuse
requires bc
requires /usr/bin/time
skipped() { [[ " $SKIP " == *" $1 "* ]]; }
skipped s3backer || requires s3backer
skipped restic || requires restic
skipped sweep || requires gnuplot
vreader_build
s3tool_build
start_rgw
SERVER=("${_pids[@]}")
note "RGW at $S3_ENDPOINT; ${size} MiB image, P=$P, RUNS=$RUNS"

img=$T/disk.img
head -c "${size}M" /dev/urandom >"$img"
R=s3://$S3_BUCKET/bench
"$REPO" init "$R" >/dev/null || fail "init"
"$INGEST" --repo "$R" --volume bench/v --snapshot s1 --device "$img" \
	--jobs "$P" --no-progress >/dev/null || fail "ingest"
"$S3TOOL" "$R" keys chunks/ >"$T/keys" || fail "keys"
nkeys=$(wc -l <"$T/keys")
[ "$nkeys" -gt 0 ] || fail "no chunk objects"
sed 's|^|bench/|' "$T/keys" >"$T/bkeys"
while read -r k; do
	printf 'url = "%s/%s/%s"\noutput = "/dev/null"\n' "$S3_ENDPOINT" \
		"$S3_BUCKET" "$k"
done <"$T/bkeys" >"$T/get.cfg"

# s3backer: filled once through a mount, then every read is a fresh mount
SB_FLAGS=()
sb_start() {
	mkdir -p "$T/sb"
	"${CLIENT[@]}" s3backer --baseURL="$S3_ENDPOINT/" \
		--accessId="$AWS_ACCESS_KEY_ID" \
		--accessKey="$AWS_SECRET_ACCESS_KEY" --authVersion=aws4 \
		--blockSize=1M --size="${size}M" --listBlocks \
		--blockCacheSize=$((size + 76)) -o big_writes \
		-o max_readahead=1048576 "${SB_FLAGS[@]}" -f s3backer "$T/sb" \
		>"$T/sb.log" 2>&1 &
	SB_PID=$!
	_pids+=("$SB_PID")
	_mounts+=("$T/sb")
	wait_for 30 test -e "$T/sb/file" || { cat "$T/sb.log" >&2; fail "s3backer did not mount"; }
}
sb_stop() {
	fusermount3 -u "$T/sb" || fail "unmount s3backer"
	wait "$SB_PID"
}
if ! skipped s3backer; then
	s3_curl -X PUT "$S3_ENDPOINT/s3backer" || fail "bucket for s3backer"
	sb_start
	dd if="$img" of="$T/sb/file" bs=1M conv=notrunc status=none ||
		fail "fill s3backer"
	sb_stop
fi

# restic: its repository in another bucket of the same RGW
if ! skipped restic; then
	export RESTIC_PASSWORD=bench-$RANDOM RESTIC_CACHE_DIR=$T/restic-cache
	RR=s3:$S3_ENDPOINT/restic
	s3_curl -X PUT "$S3_ENDPOINT/restic" || fail "bucket for restic"
	restic -r "$RR" init >/dev/null 2>"$T/restic.log" ||
		{ cat "$T/restic.log" >&2; fail "restic init"; }
	(cd "$T" && restic -r "$RR" backup disk.img) >/dev/null 2>"$T/restic.log" ||
		{ cat "$T/restic.log" >&2; fail "restic backup"; }
fi
RESTORE=0
has_restore && RESTORE=1
# restores write to tmpfs (RESTORE_DIR, default a new directory in
# /dev/shm): the readers they are compared with write nothing, so a disk's
# writeback must not be what is measured
if [ -n "${RESTORE_DIR:-}" ]; then
	RD=$RESTORE_DIR
else
	RD=$(mktemp -d /dev/shm/cbtfs-bench.XXXXXX) || RD=$T
	[ "$RD" = "$T" ] || cleanup_fn rm -rf "$RD"
fi
[ $RESTORE = 1 ] || note "restore: not built (cbtfs-repo has no restore command)"

# ---- one cold read each: every m_* sets MBS (MB/s) and CPU (seconds) ----

m_cbtfs() {
	local p=$1 c0 c1
	start_mount "$R" "$T/mnt" -o "jobs=$p,readahead=$((2 * p))"
	on_client "$MOUNT_PID"
	ls "$T/mnt/bench/v" >/dev/null
	drop
	c0=$(pid_cpu "$MOUNT_PID")
	timed "${CLIENT[@]}" dd if="$T/mnt/bench/v/s1.img" of=/dev/null bs=1M
	c1=$(pid_cpu "$MOUNT_PID")
	if [ "${CHECKED:-0}" = 0 ]; then
		cmp "$T/mnt/bench/v/s1.img" "$img" || fail "the mount's image differs"
		CHECKED=1
	fi
	stop_mount "$T/mnt"
	MBS=$(mbps "$WALL")
	CPU=$(calc "$CPU + $c1 - $c0")
}
m_vreader() {
	drop
	timed "${CLIENT[@]}" "$VREADER" -P "$1" "$S3_ENDPOINT" "$S3_BUCKET" \
		<"$T/bkeys"
	MBS=$(mbps "$WALL")
}
m_get() {
	drop
	timed "${CLIENT[@]}" curl -sSf -Z --parallel-max "$1" \
		--aws-sigv4 "aws:amz:us-east-1:s3" \
		--user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
		-H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
		-K "$T/get.cfg"
	MBS=$(mbps "$WALL")
}
m_s3backer() {
	local c0 c1
	if [ "${1:-}" ]; then
		SB_FLAGS=(--blockCacheThreads="$1" --readAhead="$1")
	else
		SB_FLAGS=()
	fi
	sb_start
	drop
	c0=$(pid_cpu "$SB_PID")
	timed "${CLIENT[@]}" dd if="$T/sb/file" of=/dev/null bs=1M
	c1=$(pid_cpu "$SB_PID")
	sb_stop
	MBS=$(mbps "$WALL")
	CPU=$(calc "$CPU + $c1 - $c0")
}
m_restic() {
	local f c0 c1 pid
	mkdir -p "$T/rm"
	"${CLIENT[@]}" restic -r "$RR" mount "$T/rm" >"$T/rm.log" 2>&1 &
	pid=$!
	_pids+=("$pid")
	_mounts+=("$T/rm")
	wait_for 60 test -e "$T/rm/snapshots/latest/disk.img" ||
		{ cat "$T/rm.log" >&2; fail "restic mount"; }
	f=$T/rm/snapshots/latest/disk.img
	drop
	c0=$(pid_cpu "$pid")
	timed "${CLIENT[@]}" dd if="$f" of=/dev/null bs=1M
	c1=$(pid_cpu "$pid")
	fusermount -u "$T/rm" 2>/dev/null || fusermount3 -u "$T/rm" ||
		fail "unmount restic"
	wait "$pid"
	MBS=$(mbps "$WALL")
	CPU=$(calc "$CPU + $c1 - $c0")
}
m_restore() {
	rm -f "$RD/restored"
	drop
	timed "${CLIENT[@]}" "$REPO" restore "$R" bench/v s1 --to "$RD/restored" --jobs "$1"
	MBS=$(mbps "$WALL")
	if [ "${RCHECKED:-0}" = 0 ]; then
		cmp "$RD/restored" "$img" || fail "restored image differs"
		RCHECKED=1
	fi
	rm -f "$RD/restored"
}
m_resticrestore() {
	rm -rf "$RD/rr"
	drop
	timed "${CLIENT[@]}" restic -r "$RR" restore latest --target "$RD/rr"
	MBS=$(mbps "$WALL")
	rm -rf "$RD/rr"
}

tools=(cbtfs vreader get)
skipped s3backer || tools+=(s3backer)
skipped restic || tools+=(restic)
[ $RESTORE = 1 ] && tools+=(restore)
[ $RESTORE = 1 ] && ! skipped restic && tools+=(resticrestore)
declare -A label=([cbtfs]="cold dd from the cbtfs mount"
	[vreader]="verifying raw reader (vreader)"
	[get]="raw curl GET (not verified)"
	[s3backer]="cold dd from s3backer (tuned)"
	[restic]="restic mount + cold dd"
	[restore]="cbtfs-repo restore to a tmpfs file"
	[resticrestore]="restic restore to a tmpfs directory")

# ratio_stats A B: min/median/max over runs of A's MB/s / B's MB/s
ratio_stats() {
	local i v=()
	for ((i = 0; i < RUNS; i++)); do
		v+=("$(calc "${M[$1.$i]} / ${M[$2.$i]}")")
	done
	stats %.2f "${v[@]}"
}
ratio_median() { ratio_stats "$1" "$2" | awk '{ print $2 }'; }

gib=$(calc "$size / 1024")
for pin in $PINS; do
	pin_server "$pin" "${SERVER[@]}"
	declare -A M=() C=()
	for ((run = 0; run < RUNS; run++)); do
		for t in "${tools[@]}"; do
			"m_$t" "$P"
			M[$t.$run]=$MBS
			C[$t.$run]=$(calc "$CPU / $gib")
			note "pin=$pin run $((run + 1)) $t: $MBS MB/s, $CPU CPU-s"
		done
	done
	printf '\n%s MiB random image (%s chunk objects), Ceph RGW on 127.0.0.1, %s in flight, %s runs, %s\n' \
		"$size" "$nkeys" "$P" "$RUNS" \
		"$([ "$pin" = 1 ] && echo 'server on CPU 0, clients on CPU 1 (PIN=1)' || echo unpinned)"
	printf '  shared 2-CPU machine: other work may have run at the same time\n'
	printf '  %-36s %-20s %-18s %s\n' "" "MB/s min/med/max" "CPU-s/GiB median" "cbtfs / this (min/med/max)"
	for t in "${tools[@]}"; do
		vals=() cpus=()
		for ((run = 0; run < RUNS; run++)); do
			vals+=("${M[$t.$run]}")
			cpus+=("${C[$t.$run]}")
		done
		rs=""
		case $t in
		cbtfs | restore | resticrestore) ;;
		*) rs=$(ratio_stats cbtfs "$t") ;;
		esac
		printf '  %-36s %-20s %-18s %s\n' "${label[$t]}" \
			"$(stats %.0f "${vals[@]}" | tr ' ' /)" \
			"$(median "${cpus[@]}")" "$(echo "$rs" | tr ' ' /)"
	done
	cc=() cv=()
	for ((run = 0; run < RUNS; run++)); do
		cc+=("${C[cbtfs.$run]}")
		cv+=("${C[vreader.$run]}")
	done
	cpu_c=$(median "${cc[@]}")
	cpu_v=$(median "${cv[@]}")
	echo "  targets (medians of per-run ratios):"
	target "cbtfs / verifying reader" "$(ratio_median cbtfs vreader)" ">=" 0.9
	skipped s3backer || target "cbtfs / s3backer tuned" "$(ratio_median cbtfs s3backer)" ">=" 1.5
	skipped restic || target "cbtfs / restic mount + dd" "$(ratio_median cbtfs restic)" ">=" 3
	target "cbtfs CPU-s/GiB / vreader's ($cpu_c / $cpu_v)" "$(calc "$cpu_c / $cpu_v")" "<=" 1.3
	if [ $RESTORE = 1 ]; then
		target "restore / verifying reader" "$(ratio_median restore vreader)" ">=" 0.95
		skipped restic || target "restore / restic restore" "$(ratio_median restore resticrestore)" ">=" 1.5
	else
		echo "  restore: not built"
	fi
done

skipped sweep && exit 0

# ---- cold read MB/s against parallelism, for the plot --------------------
stools=(cbtfs vreader get)
skipped s3backer || stools+=(s3backer)
pin=${PINS%% *}
pin_server "$pin" "${SERVER[@]}"
mkdir -p "$(dirname "$OUT")"
dat=${OUT%.png}.dat
{
	echo "# cold read MB/s of a $size MiB image against parallelism P (median of $SWEEP_RUNS), pin=$pin"
	echo "# P ${stools[*]}"
} >"$dat"
for p in $PS; do
	row=$p
	for t in "${stools[@]}"; do
		v=()
		for ((run = 0; run < SWEEP_RUNS; run++)); do
			"m_$t" "$p"
			v+=("$MBS")
		done
		row="$row $(median "${v[@]}")"
		note "P=$p $t: ${v[*]} MB/s"
	done
	echo "$row" >>"$dat"
done
declare -A title=([cbtfs]="cbtfs (cold dd)" [vreader]="verifying raw reader"
	[get]="raw GET (curl)" [s3backer]="s3backer (threads=readAhead=P)")
plot=""
for ((i = 0; i < ${#stools[@]}; i++)); do
	plot="$plot${plot:+, }'$dat' using 1:$((i + 2)) with linespoints title '${title[${stools[i]}]}'"
done
gnuplot <<GP || fail "gnuplot"
set terminal pngcairo size 900,600 noenhanced
set output '$OUT'
set title 'Cold read of a $size MiB image from Ceph RGW on 127.0.0.1 ($([ "$pin" = 1 ] && echo pinned || echo unpinned), shared 2-CPU machine)'
set xlabel 'parallelism P (requests in flight)'
set ylabel 'MB/s'
set logscale x 2
set xrange [0.8:$(($(printf '%s\n' $PS | sort -n | tail -1) * 5 / 4 + 1))]
set xtics ($(echo $PS | tr ' ' ,))
set yrange [0:*]
set key bottom right
set grid
plot $plot
GP
printf '\ncold read MB/s against P (%s):\n' "$dat"
cat "$dat"
echo "plot: $OUT"
