#!/bin/bash
# Holes for free (issue 11, Benchmarks): a sparse image of CAP (default 1T)
# holding DATA MiB (default 1024) of random data in REGIONS regions
# (default 4: at the start, the end and two in between), in a repository in
# a local directory (the issue's setting for incremental restore; S3=1 puts
# it on a throw-away Ceph RGW instead).
#   scan ingest     bytes it reads from the source (rchar of /proc/PID/io,
#                   read when it has exited and before it is reaped, so
#                   every read counts, the index's included): <= 1.1 x DATA
#   cp --sparse     cold cp --sparse=always of the image from the mount,
#                   against cold cp of a plain DATA MiB file (the data
#                   alone): within 1.5 x; the copy must be sparse and hold
#                   the data
#   restore         cold cbtfs-repo restore to a new file: within 1.5 x the
#                   data alone ("restore: not built" while cbtfs-repo has
#                   no restore command)
#   incremental     4 MiB of the image changed, ingested as s2 (the changed
#                   range given as --changes ranges:, as CBT would), then
#                   cbtfs-repo restore s2 --from s1 onto the file that holds
#                   s1: under 2 s
# Each timing is taken RUNS times (default 3): min/median/max, and the
# median against the target, met or not met.
# Usage: bench/sparse.sh   Env: CAP, DATA, REGIONS, RUNS, S3.  Root (drop).
. "$(dirname "$0")/lib.sh"
CAP=${CAP:-1T}
DATA=${DATA:-1024}
REGIONS=${REGIONS:-4}
RUNS=${RUNS:-3}
requires_root
requires_fuse
requires bc
requires /usr/bin/time

img=$T/disk.img
truncate -s "$CAP" "$img" || fail "cannot make a $CAP sparse file in $T"
cap=$(stat -c %s "$img")
per=$((DATA / REGIONS))
[ "$per" -ge 1 ] || fail "DATA must be at least REGIONS MiB"
# regions: MiB offsets spread over the image, the last one ending at its end
offs=()
for ((i = 0; i < REGIONS; i++)); do
	if [ "$i" = $((REGIONS - 1)) ] && [ "$REGIONS" -gt 1 ]; then
		offs+=($((cap / 1048576 - per)))
	else
		offs+=($((cap / 1048576 / REGIONS * i + i * 3)))
	fi
done
: >"$T/data"
for o in "${offs[@]}"; do
	head -c "${per}M" /dev/urandom | tee -a "$T/data" |
		dd of="$img" bs=1M seek="$o" conv=notrunc status=none iflag=fullblock ||
		fail "write a region"
done
data_bytes=$(stat -c %s "$T/data")
note "$CAP sparse image ($cap bytes) with $REGIONS regions of $per MiB at MiB ${offs[*]}"

# regions_equal FILE: FILE holds the data regions of the image
regions_equal() {
	local o
	for o in "${offs[@]}"; do
		cmp <(dd if="$1" bs=1M skip="$o" count="$per" status=none) \
			<(dd if="$img" bs=1M skip="$o" count="$per" status=none) ||
			fail "$1 differs from the image at MiB $o"
	done
}
# sparse_ok FILE: FILE allocates no more than the data (plus 10 %)
sparse_ok() {
	local used=$(($(stat -c %b "$1") * 512))
	[ "$used" -le $((data_bytes * 11 / 10)) ] ||
		fail "$1 is not sparse: $used bytes allocated"
}

# rchar_of CMD...: runs CMD, prints the bytes it read (rchar) and its wall
# seconds; fails if it fails
rchar_of() {
	/usr/bin/python3 - "$@" <<'PY'
import os, subprocess, sys, time
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
t1 = time.monotonic()
io = dict(l.split(": ") for l in open("/proc/%d/io" % p.pid).read().splitlines())
sys.exit(p.wait() or print(int(io["rchar"]), "%.3f" % (t1 - t0)))
PY
}

if [ "${S3:-0}" = 1 ]; then
	start_rgw
	R=s3://$S3_BUCKET/sparse
else
	R=$T/repo
fi
"$REPO" init "$R" >/dev/null || fail "init"

# ---- scan ingest ---------------------------------------------------------
drop
read -r rchar t_scan < <(rchar_of "$INGEST" --repo "$R" --volume v \
	--snapshot s1 --device "$img" --no-progress) || fail "scan ingest"
[ -n "${rchar:-}" ] || fail "scan ingest failed"

# ---- cold copies ---------------------------------------------------------
start_mount "$R" "$T/mnt"
t_plain=() t_sync=() t_cp=() t_rs=() t_inc=()
for ((run = 0; run < RUNS; run++)); do
	rm -f "$T/plain.copy"
	drop
	t_plain+=("$(secs cp "$T/data" "$T/plain.copy")")
	# restore makes what it wrote durable (fdatasync): its baseline too
	rm -f "$T/plain.copy"
	drop
	t_sync+=("$(secs sh -c 'cp "$1" "$2" && sync "$2"' _ "$T/data" \
		"$T/plain.copy")")
	rm -f "$T/sparse.copy"
	drop
	t_cp+=("$(secs cp --sparse=always "$T/mnt/v/s1.img" "$T/sparse.copy")")
	note "run $((run + 1)): cp of the data alone ${t_plain[-1]} s, cp --sparse=always from the mount ${t_cp[-1]} s"
done
[ "$(stat -c %s "$T/sparse.copy")" = "$cap" ] || fail "copy has the wrong size"
sparse_ok "$T/sparse.copy"
regions_equal "$T/sparse.copy"
rm -f "$T/sparse.copy" "$T/plain.copy"
stop_mount "$T/mnt"

# ---- restore, full and incremental ---------------------------------------
RESTORE=0
has_restore && RESTORE=1
if [ $RESTORE = 1 ]; then
	for ((run = 0; run < RUNS; run++)); do
		rm -f "$T/restored"
		drop
		t_rs+=("$(secs "$REPO" restore "$R" v s1 --to "$T/restored")")
		note "run $((run + 1)): restore ${t_rs[-1]} s"
	done
	[ "$(stat -c %s "$T/restored")" = "$cap" ] || fail "restored image has the wrong size"
	sparse_ok "$T/restored"
	regions_equal "$T/restored"
	# 4 MiB changed inside the second region (or the first if only one)
	ch=$((offs[REGIONS > 1 ? 1 : 0] + per / 2))
	head -c 4M /dev/urandom | dd of="$img" bs=1M seek="$ch" conv=notrunc \
		status=none iflag=fullblock || fail "change"
	echo "$((ch * 1048576)) $((4 * 1048576))" >"$T/ranges"
	"$INGEST" --repo "$R" --volume v --snapshot s2 --base s1 \
		--changes "ranges:$T/ranges" --device "$img" --no-progress \
		>/dev/null || fail "incremental ingest"
	cp --sparse=always "$T/restored" "$T/s1.copy" || fail "keep s1"
	for ((run = 0; run < RUNS; run++)); do
		# every run starts from a target holding s1
		[ "$run" = 0 ] || cp --sparse=always "$T/s1.copy" "$T/restored"
		drop
		t_inc+=("$(secs "$REPO" restore "$R" v s2 --from s1 --to "$T/restored")")
		note "run $((run + 1)): incremental restore ${t_inc[-1]} s"
	done
	regions_equal "$T/restored"
fi

# ---- report --------------------------------------------------------------
gib_read=$(calc "$rchar / 1073741824")
printf '\n%s sparse image, %s MiB of data in %s regions, %s repository, %s runs\n' \
	"$CAP" "$DATA" "$REGIONS" "$([ "${S3:-0}" = 1 ] && echo 'S3 (RGW)' || echo directory)" "$RUNS"
printf '  shared 2-CPU machine: other work may have run at the same time\n'
printf '  %-48s %s\n' "scan ingest: bytes read from the source (rchar)" "$rchar ($gib_read GiB) in $t_scan s"
printf '  %-48s %s s\n' "cold cp of the data alone (min/med/max)" "$(stats %.2f "${t_plain[@]}" | tr ' ' /)"
printf '  %-48s %s s\n' "cold cp of the data alone, then sync" "$(stats %.2f "${t_sync[@]}" | tr ' ' /)"
printf '  %-48s %s s\n' "cold cp --sparse=always from the mount" "$(stats %.2f "${t_cp[@]}" | tr ' ' /)"
[ $RESTORE = 1 ] && printf '  %-48s %s s\n' "cold cbtfs-repo restore to a new file" "$(stats %.2f "${t_rs[@]}" | tr ' ' /)"
[ $RESTORE = 1 ] && printf '  %-48s %s s\n' "incremental restore (--from s1, 4 MiB changed)" "$(stats %.2f "${t_inc[@]}" | tr ' ' /)"
echo "  targets (medians):"
target "scan ingest read / data" "$(calc "$rchar / $data_bytes")" "<=" 1.1
tp=$(median "${t_plain[@]}")
target "cp --sparse=always from the mount / data alone" "$(calc "$(median "${t_cp[@]}") / $tp")" "<=" 1.5
if [ $RESTORE = 1 ]; then
	# restore flushes what it writes: against cp + sync of the data
	target "restore / data alone (cp + sync)" \
		"$(calc "$(median "${t_rs[@]}") / $(median "${t_sync[@]}")")" "<=" 1.5
	target "incremental restore seconds" "$(median "${t_inc[@]}")" "<" 2
else
	echo "  restore: not built"
fi
