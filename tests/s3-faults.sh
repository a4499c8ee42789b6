#!/bin/bash
# S3 through a proxy that injects 503 SlowDown answers, connection resets,
# truncated bodies and delays: ingest and restore stay byte-exact and the
# retries are reported.  When the faults never stop, the error is clear and
# no snapshot is committed.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_fuse
requires /usr/bin/python3
start_rgw

stat_of() {
	/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

start_proxy flaky --error 0.08 --reset 0.04 --truncate 0.04 --delay 0.04 \
	--delay-ms 300 --seed 7
export AWS_ENDPOINT_URL=$PROXY_URL
R=s3://$S3_BUCKET/faults
MNT=$T/mnt

"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init through faults"
img=$T/img
truncate -s 24M "$img"
random_writes "$img" 10 1500000 11 "$T/r1"
cp --sparse=always "$img" "$T/gen1"
out1=$("$INGEST" --repo "$R" --volume v --snapshot gen1 --device "$img" \
	--json) || fail "ingest gen1 through faults"
random_writes "$img" 10 200000 12 "$T/r2"
cp --sparse=always "$img" "$T/gen2"
out2=$("$INGEST" --repo "$R" --volume v --snapshot gen2 --device "$img" \
	--base gen1 --changes "ranges:$T/r2" --json) ||
	fail "ingest gen2 through faults"
retries=$(($(json_field retries <<<"$out1") + $(json_field retries <<<"$out2")))
note "ingest: $retries retries; proxy: $(cat "$T/flaky.stats")"
[ "$retries" -gt 0 ] || fail "no retries reported by ingest"

start_mount "$R" "$MNT"
for g in gen1 gen2; do
	dd if="$MNT/v/$g.img" of="$T/$g.out" bs=1M status=none ||
		fail "restore $g through faults"
	cmp "$T/$g.out" "$T/$g" || fail "$g restored wrong through faults"
done
stop_mount "$MNT"
grep -q "store [0-9]* requests, [1-9][0-9]* retries" "$MOUNT_LOG" ||
	fail "the mount reported no retries: $(cat "$MOUNT_LOG")"
note "mount: $(grep -o 'store .*' "$MOUNT_LOG")"
injected=0
for k in error reset truncate delay; do
	injected=$((injected + $(stat_of "$T/flaky.stats" $k)))
done
[ "$injected" -gt 10 ] || fail "the proxy injected only $injected faults"

# HTTPS with a private CA: verified by default, trusted with AWS_CA_BUNDLE
# or --ca-file, refused (with a hint) without it
requires openssl
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/ca.key" \
	-out "$T/ca.pem" -days 2 -subj "/CN=cbtfs test CA" 2>/dev/null ||
	fail "make CA"
openssl req -newkey rsa:2048 -nodes -keyout "$T/srv.key" -out "$T/srv.csr" \
	-subj "/CN=127.0.0.1" 2>/dev/null || fail "make server key"
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$T/san"
openssl x509 -req -in "$T/srv.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" \
	-CAcreateserial -out "$T/srv.pem" -days 2 -extfile "$T/san" \
	2>/dev/null || fail "sign server cert"
start_proxy tls --tls-cert "$T/srv.pem" --tls-key "$T/srv.key"
https=https://127.0.0.1:${PROXY_URL##*:}
expect_fail "for a private CA set AWS_CA_BUNDLE" \
	env AWS_ENDPOINT_URL="$https" "$REPO" snapshots "$R" --retries 0
AWS_ENDPOINT_URL=$https AWS_CA_BUNDLE=$T/ca.pem "$REPO" snapshots "$R" |
	grep -q "gen2" || fail "HTTPS with AWS_CA_BUNDLE"
start_mount "$R" "$T/mnt-tls" -o "endpoint=$https,ca_file=$T/ca.pem"
cmp "$T/mnt-tls/v/gen2.img" "$T/gen2" || fail "restore over HTTPS"
stop_mount "$T/mnt-tls"
# a certificate for another name is refused even with the right CA
printf 'subjectAltName=DNS:elsewhere.example\n' >"$T/san2"
openssl x509 -req -in "$T/srv.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" \
	-CAcreateserial -out "$T/other.pem" -days 2 -extfile "$T/san2" \
	2>/dev/null || fail "sign other cert"
start_proxy tls2 --tls-cert "$T/other.pem" --tls-key "$T/srv.key"
expect_fail "no alternative certificate subject name matches target host name '127.0.0.1'; the certificate is for another host name" env \
	AWS_ENDPOINT_URL="https://127.0.0.1:${PROXY_URL##*:}" \
	AWS_CA_BUNDLE="$T/ca.pem" "$REPO" snapshots "$R" --retries 0

# stalls: a request that hangs past --timeout is abandoned and retried.
# 30% of the requests stall 5 s, well past the 2 s timeout (a request of a
# loaded machine's RGW that is merely slow stays under it); with 10
# retries a request fails only if 11 attempts in a row stall (0.3^11)
start_proxy slow --delay 0.3 --delay-ms 5000 --seed 3
out=$(AWS_ENDPOINT_URL=$PROXY_URL "$INGEST" --repo "$R" --volume v \
	--snapshot gen1b --device "$T/gen1" --base gen1 --timeout 2 \
	--retries 10 --json) || fail "ingest through stalls"
n=$(json_field retries <<<"$out")
note "stalls: $n retries; proxy: $(cat "$T/slow.stats")"
[ "$n" -gt 0 ] || fail "stalls were not retried"
start_proxy hung --delay 1.0 --delay-ms 5000
out=$(AWS_ENDPOINT_URL=$PROXY_URL "$REPO" snapshots "$R" --timeout 1 \
	--retries 1 2>&1) && fail "a hung server did not time out"
grep -q "failed after retries: Timeout was reached" <<<"$out" ||
	fail "unclear time-out error: $out"

# faults that never stop: a clear error after the retries, nothing committed
start_proxy broken --error 1.0
objs() { AWS_ENDPOINT_URL=$S3_ENDPOINT "$top_builddir/tests/s3tool" \
	"s3://$S3_BUCKET/faults" count snapshots/; }
n_before=$(objs) && [ -n "$n_before" ] || fail "cannot count the snapshots"
out=$(AWS_ENDPOINT_URL=$PROXY_URL "$INGEST" --repo "$R" --volume v \
	--snapshot gen3 --device "$img" --base gen2 --retries 2 2>&1) &&
	fail "ingest through a dead server succeeded"
grep -q "HTTP 503 SlowDown: the server is overloaded or failing" <<<"$out" ||
	fail "unclear error: $out"
[ "$(objs)" = "$n_before" ] || fail "a snapshot was committed"
exit 0
