#!/bin/bash
# cbtfs-ingest --metrics-file: Prometheus text format (checked by a strict
# parser, tests/promcheck.py) whose counts are the run's JSON summary, on
# RGW behind a proxy that fails some requests (so retries count); written
# atomically, also when the ingest fails (success 0, the last success
# kept); a directory that cannot take it is a usage error.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires /usr/bin/python3
PROM="/usr/bin/python3 $top_srcdir/tests/promcheck.py --json"

start_rgw
start_proxy flaky --error 0.1 --seed 7
export AWS_ENDPOINT_URL=$PROXY_URL
R=s3://$S3_BUCKET/metrics
"$REPO" init "$R" >/dev/null || fail "init"

# chunks: data, the same data again (reused), zeros, other data, holes
img=$T/img
truncate -s 8M "$img"
head -c 1M /dev/urandom >"$T/a"
dd if="$T/a" of="$img" bs=1M seek=0 conv=notrunc status=none
dd if="$T/a" of="$img" bs=1M seek=1 conv=notrunc status=none
dd if=/dev/zero of="$img" bs=1M seek=2 count=1 conv=notrunc status=none
head -c 1M /dev/urandom | dd of="$img" bs=1M seek=3 conv=notrunc status=none
mkdir "$T/m"
M=$T/m/ingest.prom

"$INGEST" --repo "$R" --volume ns/pvc --snapshot s1 --device "$img" \
	--no-progress --json --metrics-file "$M" >"$T/s1.json" ||
	fail "ingest s1"
$PROM "$M" >"$T/s1.metrics" || fail "not Prometheus text: $(cat "$M")"
/usr/bin/python3 - "$T/s1.json" "$T/s1.metrics" <<'PY' || fail "s1 metrics"
import json, sys
s = json.load(open(sys.argv[1]))
m = json.load(open(sys.argv[2]))
def get(name, kind=None):
    k = "cbtfs_ingest_%s{%svolume=ns/pvc}" % (
        name, "kind=%s," % kind if kind else "")
    return m.pop(k)
want = {
    ("bytes_read_total",): s["read_bytes"],
    ("chunks_read_total",): s["chunks_read"],
    ("chunks_changed_total",): s["chunks_changed"],
    ("chunks_total", "new"): s["chunks_new"],
    ("chunks_total", "reused"): s["chunks_reused"],
    ("chunks_total", "zero"): s["chunks_zero"],
    ("bytes_uploaded_total",): s["stored_bytes"] + s["manifest_bytes"],
    ("requests_total",): s["requests"],
    ("retries_total",): s["retries"],
    ("capacity_bytes",): s["capacity"],
    ("success",): 1,
}
bad = ["%s: %s in the metrics, %s in the summary" % (k, got, v)
       for k, v in want.items() if (got := get(*k)) != v]
# what the image holds, so that equal-but-wrong counts fail too
if (s["chunks_new"], s["chunks_reused"], s["chunks_zero"]) != (2, 1, 1):
    bad.append("new/reused/zero: %s" % [s["chunks_new"], s["chunks_reused"],
                                        s["chunks_zero"]])
if s["retries"] == 0:
    bad.append("no retries through a failing proxy")
run = get("last_run_timestamp_seconds")
if get("last_success_timestamp_seconds") != run:
    bad.append("last success is not this run")
if not 0 < get("duration_seconds") < 600:
    bad.append("duration")
if m:
    bad.append("unexpected series: %s" % sorted(m))
sys.exit("\n".join(bad) if bad else 0)
PY
success1=$(grep '^cbtfs_ingest_last_success_timestamp_seconds' "$M")

# a failed run: success 0, the last success kept, no temporary file left
sleep 1
expect_fail "base snapshot 'nope' of volume 'ns/pvc' is not in the repository" \
	"$INGEST" --repo "$R" --volume ns/pvc --snapshot s2 --base nope \
	--device "$img" --no-progress --metrics-file "$M"
$PROM "$M" >"$T/s2.metrics" || fail "not Prometheus text: $(cat "$M")"
grep -qx 'cbtfs_ingest_success{volume="ns/pvc"} 0' "$M" ||
	fail "a failed run says success: $(cat "$M")"
[ "$(grep '^cbtfs_ingest_last_success_timestamp_seconds' "$M")" = \
	"$success1" ] || fail "the failed run lost the last success"
[ "$(ls "$T/m")" = ingest.prom ] || fail "left behind: $(ls "$T/m")"

# an interrupted run (SIGTERM while its requests stall) writes them too
start_proxy stall --delay 1 --delay-ms 2000
AWS_ENDPOINT_URL=$PROXY_URL "$INGEST" --repo "$R" --volume ns/pvc \
	--snapshot s3 --device "$img" --no-progress --metrics-file "$M" \
	2>"$T/s3.err" &
pid=$!
_pids+=($pid)
# the proxy holds its first request (its handler for SIGTERM is in place)
wait_for 30 test -s "$T/stall.stats" || fail "the ingest sent no request"
kill -TERM $pid
wait $pid && fail "an interrupted ingest succeeded"
grep -q "interrupted" "$T/s3.err" || fail "not interrupted: $(cat "$T/s3.err")"
$PROM "$M" >/dev/null || fail "not Prometheus text: $(cat "$M")"
grep -qx 'cbtfs_ingest_success{volume="ns/pvc"} 0' "$M" ||
	fail "an interrupted run: $(cat "$M")"

expect_fail "--metrics-file $T/none/m.prom: its directory does not exist" \
	"$INGEST" --repo "$R" --volume ns/pvc --snapshot s4 --device "$img" \
	--metrics-file "$T/none/m.prom"
exit 0
