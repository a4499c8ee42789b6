#!/bin/bash
# Cheap start on a new host (issue 11, Benchmarks): the first sync of a
# repository of N (default 1000) snapshots on a throw-away Ceph RGW, by a
# host with an empty index (every Kubernetes Job: the cache is an
# emptyDir), against fetching the same N manifests one at a time.
#   first sync     cbtfs-repo snapshots with a new, empty --cache-dir: lists
#                  snapshots/, fetches and checks every manifest, fills the
#                  index, prints the list (which must hold N snapshots)
#   one at a time  curl GET of the N manifest objects in sequence over one
#                  keep-alive connection, nothing else: the least a sync
#                  that fetches one at a time pays (no listing, no index)
# The repository is made in a local directory (N small ingests: fast) and
# uploaded with curl --parallel; every manifest has its own chunk.  RUNS
# runs (default 3), interleaved; min/median/max seconds; target: one at a
# time / first sync >= 4, met or not met.
# Usage: bench/sync.sh   Env: N, RUNS, LATENCY_MS (added to every
# request by a proxy, default 0).  Needs the Ceph packages.
. "$(dirname "$0")/lib.sh"
N=${N:-1000}
RUNS=${RUNS:-3}
requires bc
start_rgw

d=$T/repo
"$REPO" init "$d" >/dev/null || fail "init"
img=$T/disk.img
head -c 1M /dev/urandom >"$img"
for ((i = 0; i < N; i++)); do
	head -c 4096 /dev/urandom |
		dd of="$img" conv=notrunc status=none || fail "write"
	"$INGEST" --repo "$d" --volume v --snapshot "s$i" --device "$img" \
		--no-progress >/dev/null || fail "ingest s$i"
done
sigv4=(--aws-sigv4 "aws:amz:us-east-1:s3"
	--user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY")
(cd "$d" && find config chunks snapshots -type f) >"$T/objects"
while read -r k; do
	printf 'upload-file = "%s/%s"\nurl = "%s/%s/sync/%s"\n' "$d" "$k" \
		"$S3_ENDPOINT" "$S3_BUCKET" "$k"
done <"$T/objects" >"$T/put.cfg"
curl -sSf -Z --parallel-max 16 "${sigv4[@]}" \
	-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -K "$T/put.cfg" ||
	fail "upload the repository"
grep '^snapshots/' "$T/objects" | while read -r k; do
	printf 'url = "%s/%s/sync/%s"\noutput = "/dev/null"\n' "$S3_ENDPOINT" \
		"$S3_BUCKET" "$k"
done >"$T/get.cfg"
[ "$(grep -c '^url' "$T/get.cfg")" = "$N" ] || fail "expected $N manifests"
R=s3://$S3_BUCKET/sync
note "$N snapshots in $R"
# LATENCY_MS=N: both go through a proxy that holds every answer N ms, as a
# store across a network would (on 127.0.0.1 a request costs ~1 ms, which
# leaves parallel fetching little to win)
endpoint=$S3_ENDPOINT
if [ "${LATENCY_MS:-0}" != 0 ]; then
	start_proxy lat --delay 1 --delay-ms "$LATENCY_MS"
	endpoint=$PROXY_URL
	sed -i "s|$S3_ENDPOINT|$endpoint|" "$T/get.cfg"
	note "every request held ${LATENCY_MS} ms by a proxy"
fi

one_at_a_time() {
	curl -sSf "${sigv4[@]}" \
		-H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
		-K "$T/get.cfg"
}
t_seq=() t_sync=()
for ((run = 0; run < RUNS; run++)); do
	t_seq+=("$(secs one_at_a_time)")
	rm -rf "$T/fresh"
	t0=$(date +%s.%N)
	"$REPO" snapshots "$R" --cache-dir "$T/fresh" --endpoint "$endpoint" \
		>"$T/list" 2>"$T/err" ||
		{ cat "$T/err" >&2; fail "snapshots"; }
	t_sync+=("$(calc "$(date +%s.%N) - $t0")")
	[ "$(grep -c '^v ' "$T/list")" = "$N" ] || fail "the list lacks snapshots"
	note "run $((run + 1)): one at a time ${t_seq[-1]} s, first sync ${t_sync[-1]} s"
done
printf '\nfirst sync of %s manifests on Ceph RGW (127.0.0.1), %s runs, %s ms added per request\n' \
	"$N" "$RUNS" "${LATENCY_MS:-0}"
printf '  shared 2-CPU machine: other work may have run at the same time\n'
printf '  %-46s %s s\n' "GET one at a time, one connection (min/med/max)" "$(stats %.2f "${t_seq[@]}" | tr ' ' /)"
printf '  %-46s %s s\n' "cbtfs-repo snapshots, empty index" "$(stats %.2f "${t_sync[@]}" | tr ' ' /)"
echo "  target (medians):"
target "one at a time / first sync" "$(calc "$(median "${t_seq[@]}") / $(median "${t_sync[@]}")")" ">=" 4
