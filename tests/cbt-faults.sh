#!/bin/bash
# Changed Block Tracking when things go wrong: streams cut, reset and hung
# are resumed from where they broke and the result is byte-exact; streams
# that break the protocol, refusals and dead services fail with a clear
# message and leave the repository unchanged; a delta the driver cannot
# give becomes a full backup (or, with --no-fallback, an error).
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
. "$top_srcdir/tests/cbt-fixture.inc"
requires_fuse
requires_grpc_fixture

CS=$((256 * 1024))
R=$T/repo
MNT=$T/mnt
STATE=$T/state
"$REPO" init "$R" --chunk-size 256K >/dev/null || fail "init"
start_cbt_server "$STATE"

img=$T/img
truncate -s 16M "$img"
random_writes "$img" 12 1000000 1 "$T/r1"
cp --sparse=always "$img" "$STATE/h1.snap"
cp --sparse=always "$img" "$T/gen1.img"
random_writes "$img" 6 100000 2 "$T/r2"
cp --sparse=always "$img" "$STATE/h2.snap"
cp --sparse=always "$img" "$T/gen2.img"
NONZERO2=$($IMGTOOL nonzero "$img" $CS)
CHANGED2=$($IMGTOOL changed "$T/gen1.img" "$img" $CS)
SNAPS='"sidecar_snapshots": {"ns/gen1": "h1", "ns/gen2": "h2"}'

# csi VOLUME NAME HANDLE [args...]: an ingest through the CSI API, of
# $T/NAME.img if there is one (gen1, gen2), else of $img.
csi() {
	local vol=$1 name=$2 handle=$3 dev=$img
	shift 3
	[ -f "$T/$name.img" ] && dev=$T/$name.img
	"$INGEST" --repo "$R" --volume "$vol" --snapshot "$name" \
		--device "$dev" --changes csi --csi-endpoint "$CSI_TARGET" \
		--snapshot-id "$handle" --max-results 7 "$@"
}

# sidecar VOLUME NAME [args...]: the same through the sidecar API.
sidecar() {
	local vol=$1 name=$2 dev=$img
	shift 2
	[ -f "$T/$name.img" ] && dev=$T/$name.img
	"$INGEST" --repo "$R" --volume "$vol" --snapshot "$name" \
		--device "$dev" --changes sidecar --cbt-address "$SIDECAR_TARGET" \
		--ca-file "$CBT_CA" --namespace ns --token-file "$CBT_TOKEN_FILE" \
		--max-results 7 "$@"
}

# unchanged MESSAGE CMD...: CMD fails saying MESSAGE, and the repository
# is exactly as it was.
unchanged() { expect_fail_unchanged "$R" "$@"; }

# ----------------------------------------------------------------------
# Resume: the stream is cut twice during one ingest

cbt_config "$STATE" '{"faults": [{"kind": "abort", "after": 3, "times": 2}]}'
: >"$STATE/calls.log"
csi ns/resume gen1 h1 --json >"$T/out" 2>"$T/err" || {
	cat "$T/err" >&2
	fail "resume: ingest failed"
}
[ "$(grep -c 'resuming' "$T/err")" = 2 ] || fail "resume: $(cat "$T/err")"
cbt_calls "$STATE" | /usr/bin/python3 -c '
import json, sys
calls = [json.loads(l) for l in sys.stdin if l.strip()]
calls = [c for c in calls if c["method"] == "allocated"]
assert [c["status"] for c in calls] == ["UNAVAILABLE", "UNAVAILABLE", "OK"], calls
offs = [c["starting_offset"] for c in calls]
assert offs[0] == 0 < offs[1] < offs[2], offs
assert [c["messages"] for c in calls[:2]] == [3, 3], calls
' || fail "resume calls: $(cbt_calls "$STATE")"
[ "$(json_field chunks_read <"$T/out")" = "$($IMGTOOL nonzero "$T/gen1.img" $CS)" ] ||
	fail "resume read the wrong chunks"
note "stream cut twice: resumed from the last range each time"

# a delta through the sidecar whose TCP connection is reset, then one
# that hangs (caught by --cbt-timeout), then a clean end
cbt_config "$STATE" "{$SNAPS, \"faults\": [
	{\"kind\": \"reset\", \"after\": 1},
	{\"kind\": \"hang\", \"after\": 1}]}"
sidecar ns/resume gen2 --base gen1 --cbt-timeout 1 --json >"$T/out" \
	2>"$T/err" || {
	cat "$T/err" >&2
	fail "reset+hang: ingest failed"
}
grep -q 'reset by peer\|Socket closed\|UNAVAILABLE' "$T/err" ||
	fail "reset not reported: $(cat "$T/err")"
grep -q 'no response for 1 s' "$T/err" || fail "hang not reported: $(cat "$T/err")"
[ "$(json_field chunks_read <"$T/out")" = "$CHANGED2" ] ||
	fail "reset+hang read $(json_field chunks_read <"$T/out") chunks, want $CHANGED2"
note "reset and hung streams resumed"

# ----------------------------------------------------------------------
# Streams that break the protocol: an error naming the rule, no snapshot

for f in "disorder:starts before the end of the previous one" \
	"overlap:starts before the end of the previous one" \
	"capacity:volume_capacity_bytes changed" \
	"type:block_metadata_type changed" \
	"outside:ends beyond the volume's capacity" \
	"zero_size:must be greater than 0"; do
	kind=${f%%:*}
	cbt_config "$STATE" "{\"faults\": [{\"kind\": \"$kind\", \"after\": 1}]}"
	unchanged "${f#*:}" csi ns/bad "gen-$kind" h1
done
note "6 kinds of bad streams refused, repository unchanged"

# ----------------------------------------------------------------------
# Refusals and dead services

cbt_config "$STATE" "{$SNAPS}"
echo wrong-token >"$T/bad-token"
unchanged "--token-file must hold an unexpired ServiceAccount token" \
	sidecar ns/bad gen1 --token-file "$T/bad-token"
cbt_config "$STATE" "{$SNAPS, \"faults\": [{\"kind\": \"abort\",
	\"code\": \"PERMISSION_DENIED\", \"details\": \"user may not\"}]}"
unchanged "needs 'get' on volumesnapshots" sidecar ns/bad gen1
cbt_config "$STATE" "{$SNAPS, \"faults\": [{\"kind\": \"abort\",
	\"code\": \"INVALID_ARGUMENT\", \"details\": \"bad\"}]}"
unchanged "INVALID_ARGUMENT: bad; check --namespace" sidecar ns/bad gen1
cbt_config "$STATE" "{$SNAPS}"
# the sidecar reports an unknown VolumeSnapshot as UNAVAILABLE: retried,
# then given up
unchanged "gave up after 2 attempts" sidecar ns/bad nosuch --cbt-retries 1
unchanged "failed: NOT_FOUND" csi ns/bad gen1 no-such-handle
unchanged "does the driver have the SNAPSHOT_METADATA_SERVICE capability" \
	"$INGEST" --repo "$R" --volume ns/bad --snapshot gen1 --device "$img" \
	--changes csi --csi-endpoint "$SIDECAR_TARGET" --ca-file "$CBT_CA" \
	--snapshot-id h1
unchanged "check the address and that the service runs" \
	csi ns/bad gen1 h1 --csi-endpoint "unix://$T/nothing.sock" --cbt-retries 1
cbt_config "$STATE" '{"faults": [{"kind": "hang", "times": -1}]}'
unchanged "no response for 1 s" csi ns/bad gen1 h1 --cbt-timeout 1 \
	--cbt-retries 1
cbt_config "$STATE" '{}'
# Ctrl-C while the service hangs: the call is cancelled, nothing committed
cbt_config "$STATE" '{"faults": [{"kind": "hang", "times": -1}]}'
before=$(fingerprint "$R")
n=$(cbt_calls "$STATE" | wc -l)
"$INGEST" --repo "$R" --volume ns/bad --snapshot gen1 --device "$img" \
	--changes csi --csi-endpoint "$CSI_TARGET" --snapshot-id h1 \
	>"$T/int.out" 2>&1 &
pid=$!	# the ingest itself, not a subshell
# it asked the driver's name (logged when answered), so its handler for
# SIGINT is in place, and the call that hangs comes next
wait_for 20 sh -c "tail -n +$((n + 1)) '$STATE/calls.log' |
	grep -q plugin_info" || fail "the ingest made no CBT call"
kill -INT $pid
wait $pid && fail "an interrupted ingest exited 0"
grep -q "interrupted: no snapshot was committed" "$T/int.out" ||
	fail "interrupted CBT call: $(cat "$T/int.out")"
[ "$(fingerprint "$R")" = "$before" ] || fail "interrupted ingest changed the repository"
cbt_config "$STATE" '{}'
note "refusals, a dead socket, a hung service and Ctrl-C fail cleanly"

# ----------------------------------------------------------------------
# TLS: the CA and the name are checked; the name can be overridden

unchanged "check the address, --ca-file and --tls-server-name" \
	sidecar ns/bad gen1 --ca-file "$T/cbt-certs/other-ca.pem" --cbt-retries 0
unchanged "check the address, --ca-file and --tls-server-name" \
	sidecar ns/bad gen1 --tls-server-name wrong.example.test --cbt-retries 0
cbt_config "$STATE" "{$SNAPS}"
sidecar ns/tls gen1 --tls-server-name cbt.example.test --snapshot-id h1 \
	>/dev/null 2>"$T/err" || fail "--tls-server-name: $(cat "$T/err")"
csi ns/csi-tls gen1 h1 --csi-endpoint "$CSI_TLS_TARGET" --ca-file "$CBT_CA" \
	>/dev/null 2>"$T/err" || fail "csi over TLS: $(cat "$T/err")"
unchanged "holds no PEM certificate" sidecar ns/bad gen1 --ca-file "$T/r1"
note "TLS: wrong CA and wrong name refused; override and CSI over TLS work"

# ----------------------------------------------------------------------
# Fallbacks: a delta the driver cannot give becomes a full backup

cbt_config "$STATE" '{"faults": [{"kind": "abort", "method": "delta",
	"code": "FAILED_PRECONDITION", "details": "CBT is not enabled",
	"times": -1}]}'
csi ns/fb1 gen1 h1 >/dev/null 2>&1 || fail "fb1 gen1"
unchanged "--no-fallback: giving up" csi ns/fb1 gen2 h2 --base gen1 \
	--no-fallback
csi ns/fb1 gen2 h2 --base gen1 --json >"$T/out" 2>"$T/err" ||
	fail "fallback: $(cat "$T/err")"
grep -q 'FAILED_PRECONDITION: CBT is not enabled.*backing up every allocated block instead' \
	"$T/err" || fail "fallback warning: $(cat "$T/err")"
[ "$(json_field full_fallback <"$T/out")" = True ] || fail "full_fallback"
[ "$(json_field parent <"$T/out")" = None ] || fail "fallback base"
[ "$(json_field chunks_read <"$T/out")" = "$NONZERO2" ] ||
	fail "fallback read $(json_field chunks_read <"$T/out"), want $NONZERO2"

# a base handle the driver does not know (NOT_FOUND)
cbt_config "$STATE" '{}'
csi ns/fb2 gen1 h1 >/dev/null 2>&1 || fail "fb2 gen1"
csi ns/fb2 gen2 h2 --base gen1 --base-snapshot-id deleted-handle --json \
	>"$T/out" 2>"$T/err" || fail "NOT_FOUND fallback: $(cat "$T/err")"
grep -q 'handle deleted-handle (NOT_FOUND' "$T/err" ||
	fail "NOT_FOUND warning: $(cat "$T/err")"
[ "$(json_field full_fallback <"$T/out")" = True ] || fail "fb2 full_fallback"

# a base ingested without CBT has no handle to ask about
"$INGEST" --repo "$R" --volume ns/fb3 --snapshot gen1 --device "$T/gen1.img" \
	>/dev/null || fail "fb3 scan"
csi ns/fb3 gen2 h2 --base gen1 --json >"$T/out" 2>"$T/err" ||
	fail "no-handle fallback: $(cat "$T/err")"
grep -q 'no CSI snapshot handle recorded' "$T/err" ||
	fail "no-handle warning: $(cat "$T/err")"
note "FAILED_PRECONDITION, NOT_FOUND and a missing handle fall back"

# ----------------------------------------------------------------------
# Capacity: the device must hold the volume; an empty stream is valid

head -c 8M "$img" >"$T/small.img"
unchanged "must hold the whole snapshot" "$INGEST" --repo "$R" \
	--volume ns/bad --snapshot gen1 --device "$T/small.img" \
	--changes csi --csi-endpoint "$CSI_TARGET" --snapshot-id h1
truncate -s 4M "$T/zero.img"
cp "$T/zero.img" "$STATE/hz.snap"
: >"$STATE/calls.log"
"$INGEST" --repo "$R" --volume ns/zero --snapshot z --device "$T/zero.img" \
	--changes csi --csi-endpoint "$CSI_TARGET" --snapshot-id hz --json \
	>"$T/out" || fail "empty stream"
[ "$(json_field chunks_read <"$T/out")" = 0 ] || fail "empty: chunks read"
[ "$(json_field capacity <"$T/out")" = $((4 << 20)) ] || fail "empty: capacity"
cbt_calls "$STATE" | grep -q '"method": "allocated".*"messages": 0' ||
	fail "empty stream expected: $(cbt_calls "$STATE")"

# a stream that breaks after its last range reached the capacity is
# complete: nothing is asked again
head -c 4096 /dev/urandom >"$T/tail.img"
truncate -s 4M "$T/zero.img"
cp "$T/zero.img" "$T/full.img"
dd if="$T/tail.img" of="$T/full.img" bs=4096 seek=1023 conv=notrunc \
	status=none
cp "$T/full.img" "$STATE/hfull.snap"
cbt_config "$STATE" '{"faults": [{"kind": "abort", "after": 100}]}'
: >"$STATE/calls.log"
"$INGEST" --repo "$R" --volume ns/full --snapshot f --device "$T/full.img" \
	--changes csi --csi-endpoint "$CSI_TARGET" --snapshot-id hfull --json \
	>"$T/out" 2>"$T/err" || fail "abort at the end: $(cat "$T/err")"
[ "$(cbt_calls "$STATE" | grep -c '"method": "allocated"')" = 1 ] ||
	fail "asked again after the capacity: $(cbt_calls "$STATE")"
grep -q 'UNAVAILABLE' <(cbt_calls "$STATE") || fail "the fault did not act"
[ "$(json_field chunks_read <"$T/out")" = 1 ] || fail "full: chunks read"
cbt_config "$STATE" '{}'

# usage errors
expect_fail "--changes csi needs --snapshot-id" "$INGEST" --repo "$R" \
	--volume ns/x --snapshot s --device "$img" --changes csi \
	--csi-endpoint "$CSI_TARGET"
expect_fail "need --changes csi, sidecar or k8s" "$INGEST" --repo "$R" \
	--volume ns/x --snapshot s --device "$img" --snapshot-id h1
: >"$T/empty-token"
expect_fail "cannot read the token file $T/empty-token: it is empty" \
	sidecar ns/x s --token-file "$T/empty-token"
expect_fail "cannot read the token file $T/none: No such file" \
	sidecar ns/x s --token-file "$T/none"
expect_fail "cannot read CA file $T/none: No such file" \
	sidecar ns/x s --ca-file "$T/none"
expect_fail "--changes sidecar needs --namespace" "$INGEST" --repo "$R" \
	--volume ns/x --snapshot s --device "$img" --changes sidecar \
	--cbt-address "$SIDECAR_TARGET" --token-file "$CBT_TOKEN_FILE"
expect_fail "--changes csi needs --csi-endpoint" "$INGEST" --repo "$R" \
	--volume ns/x --snapshot s --device "$img" --changes csi \
	--snapshot-id h1

# every snapshot that was committed restores byte-exact
start_mount "$R" "$MNT"
for f in resume/gen1:gen1 resume/gen2:gen2 tls/gen1:gen1 csi-tls/gen1:gen1 \
	fb1/gen2:gen2 fb2/gen2:gen2 fb3/gen2:gen2; do
	[ "$(sha "$MNT/ns/${f%%:*}.img")" = "$(sha "$T/${f#*:}.img")" ] ||
		fail "ns/${f%%:*} differs from ${f#*:}"
done
cmp "$MNT/ns/zero/z.img" "$T/zero.img" || fail "empty-stream snapshot"
cmp "$MNT/ns/full/f.img" "$T/full.img" || fail "stream ended at capacity"
stop_mount "$MNT"
[ "$("$REPO" snapshots "$R" --volume ns/bad --json | tr -d ' \n')" = "[]" ] ||
	fail "a failed ingest left a snapshot of ns/bad"
note "resumed and fallback snapshots restore byte-exact"
exit 0
