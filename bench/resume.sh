#!/bin/bash
# What crash recovery costs on S3, side by side in one run against a
# throw-away local Ceph RGW, on the same random image:
#   a plain first ingest                       (no earlier run stopped)
#   the same ingest in resume mode             (an abandoned lock record of
#                                               the volume makes it ask the
#                                               store, HEAD, for every chunk
#                                               its index does not know)
#   the re-run after a kill -9 halfway         (what it uploads again)
# Each R times on a fresh prefix; prints min/median/max of the seconds and
# the requests, and the ratio of the medians.
# Usage: bench/resume.sh [SIZE_MIB [R]]   (default 256 MiB, R = 3)
# Needs the Ceph packages; root.
. "$(dirname "$0")/lib.sh"
size=${1:-256}
R=${2:-3}
start_rgw
img=$T/img
head -c "${size}M" /dev/urandom >"$img"

# median LIST: the median of the numbers in LIST
median() { stats %s $1 | cut -d' ' -f2; }

# abandoned PREFIX: the record a stopped ingest of volume ns/b leaves
abandoned() {
	local now
	now=$(date +%s)
	"$top_builddir/tests/s3tool" "s3://$S3_BUCKET/$1" put \
		locks/11111111-2222-4333-8444-555555555555 \
		"$(printf '%s\n' volume=ns/b snapshot=s state=abandoned host=x \
			boot_id=x pidns=1 pid=1 start=1 "created=$now" \
			"renewed=$now" lease=300)" || fail "cannot write the record"
}

plain_s='' plain_q='' resume_s='' resume_q='' kill_new='' kill_found=''
for ((i = 1; i <= R; i++)); do
	for mode in plain resume; do
		P=bench-$mode-$i
		"$REPO" init "s3://$S3_BUCKET/$P" >/dev/null || fail "init"
		[ $mode = resume ] && abandoned "$P"
		out=$("$INGEST" --repo "s3://$S3_BUCKET/$P" --volume ns/b \
			--snapshot s --device "$img" --json --no-progress) ||
			fail "$mode ingest"
		s=$(json_field seconds <<<"$out")
		q=$(json_field requests <<<"$out")
		eval "${mode}_s=\"\$${mode}_s $s\"; ${mode}_q=\"\$${mode}_q $q\""
	done
	# kill -9 halfway through a first ingest, then the plain re-run
	P=bench-kill-$i
	"$REPO" init "s3://$S3_BUCKET/$P" >/dev/null || fail "init"
	"$INGEST" --repo "s3://$S3_BUCKET/$P" --volume ns/b --snapshot s \
		--device "$img" --no-progress >/dev/null 2>&1 &
	pid=$!
	sleep "$(bc <<<"scale=2; $(median "$plain_s") / 2")"
	kill -9 $pid
	wait $pid 2>/dev/null
	out=$("$INGEST" --repo "s3://$S3_BUCKET/$P" --volume ns/b \
		--snapshot s --device "$img" --json --no-progress 2>/dev/null) ||
		fail "re-run"
	kill_new="$kill_new $(json_field chunks_new <<<"$out")"
	kill_found="$kill_found $(json_field chunks_found <<<"$out")"
done
echo "image: $size MiB, $R runs each (min median max)"
echo "plain first ingest:  seconds $(stats %s $plain_s); requests $(stats %s $plain_q)"
echo "resume-mode ingest:  seconds $(stats %s $resume_s); requests $(stats %s $resume_q)"
echo "resume / plain (median seconds): $(bc <<<"scale=3; $(median "$resume_s") / $(median "$plain_s")")"
echo "re-run after kill -9 halfway: chunks uploaded $(stats %s $kill_new); found stored $(stats %s $kill_found)"
