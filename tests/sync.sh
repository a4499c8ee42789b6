#!/bin/bash
# A new host starts cheaply: the first sync of a repository of many
# manifests (on RGW, every request 100 ms late through tests/faultproxy.py)
# fetches them in parallel (the proxy saw at least 4 requests at once,
# which one fetch after another never makes) and is complete (every
# snapshot listed, every chain resolves to the data it was made from); an
# ingest lists snapshots/ once.  (The wall-clock time, a fraction of one
# fetch after another, is only noted: it follows the machine's load.)
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires /usr/bin/python3
requires curl

N=200		# manifests, on 4 volumes, each the child of the one before
DELAY_MS=100
start_rgw

# the repository is made in a directory (fast), then copied to RGW
D=$T/dir
"$REPO" init "$D" --chunk-size 64K >/dev/null || fail "init"
for v in 0 1 2 3; do
	head -c 256K /dev/urandom >"$T/img$v"
done
for ((i = 0; i < N; i++)); do
	v=$((i % 4))
	base=()
	[ $i -ge 4 ] && base=(--base s$((i - 4)))
	# each snapshot changes one chunk of its volume
	head -c 64K /dev/urandom | dd of="$T/img$v" bs=64K seek=$((i / 4 % 4)) \
		conv=notrunc status=none
	"$INGEST" --repo "$D" --volume ns/v$v --snapshot s$i "${base[@]}" \
		--device "$T/img$v" --no-progress >/dev/null || fail "ingest s$i"
done
(cd "$D" && find . -type f -printf '%P\n') | while read -r k; do
	printf 'upload-file = "%s/%s"\nurl = "%s/%s/sync/%s"\n' "$D" "$k" \
		"$S3_ENDPOINT" "$S3_BUCKET" "$k"
done >"$T/put.cfg"
curl -sSf -Z --parallel-max 8 --aws-sigv4 "aws:amz:us-east-1:s3" \
	--user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
	-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -K "$T/put.cfg" \
	2>"$T/curl.err" ||
	fail "copying the repository to RGW: $(cat "$T/curl.err")"
R=s3://$S3_BUCKET/sync

# max_in_flight NAME: the most requests proxy NAME held at once
max_in_flight() {
	/usr/bin/python3 -c 'import json, sys
print(json.load(open(sys.argv[1]))["max_in_flight"])' "$T/$1.stats"
}
start_proxy slow --delay 1 --delay-ms $DELAY_MS --log "$T/requests"
export AWS_ENDPOINT_URL=$PROXY_URL

# 1. first sync on a new host: complete, and parallel
export XDG_CACHE_HOME=$T/cache1
t0=$(date +%s%N)
"$REPO" snapshots "$R" --json >"$T/list" || fail "snapshots"
ms=$((($(date +%s%N) - t0) / 1000000))
got=$(/usr/bin/python3 -c 'import json, sys
print(len(json.load(open(sys.argv[1]))))' "$T/list")
[ "$got" = $N ] || fail "the first sync listed $got snapshots of $N"
gets=$(grep -c '^GET /[^?]*/snapshots/' "$T/requests")
[ "$gets" = $N ] || fail "$gets manifest GETs for $N manifests"
par=$(max_in_flight slow) || fail "no proxy stats"
note "first sync of $N manifests: $ms ms, up to $par requests at once;" \
	"one at a time >= $((N * DELAY_MS)) ms"
[ "$par" -ge 4 ] ||
	fail "first sync: at most $par requests at once, not parallel"

# every chain resolves to what its last snapshot was made from: an ingest
# of the same image on it finds nothing changed
for v in 0 1 2 3; do
	: >"$T/requests"
	"$INGEST" --repo "$R" --volume ns/v$v --snapshot again \
		--base s$((N - 4 + v)) --device "$T/img$v" --no-progress \
		--json >"$T/again$v" || fail "ingest on s$((N - 4 + v))"
	changed=$(json_field chunks_changed <"$T/again$v")
	[ "$changed" = 0 ] ||
		fail "ns/v$v: $changed chunks differ from the resolved chain"
	# 2. an ingest lists snapshots/ once
	lists=$(grep -c '^GET /[^ ]*list-type=2[^ ]*prefix=sync%2Fsnapshots%2F' \
		"$T/requests")
	[ "$lists" = 1 ] || fail "an ingest listed snapshots/ $lists times:
$(grep list-type "$T/requests")"
done

# 3. a rebuild fetches in parallel too, and is complete (through a proxy
#    of its own, which has seen nothing else)
start_proxy reindex --delay 1 --delay-ms $DELAY_MS --log "$T/requests.3"
export AWS_ENDPOINT_URL=$PROXY_URL
t0=$(date +%s%N)
"$REPO" reindex "$R" >/dev/null || fail "reindex"
ms=$((($(date +%s%N) - t0) / 1000000))
gets=$(grep -c '^GET /[^?]*/snapshots/' "$T/requests.3")
[ "$gets" = $((N + 4)) ] || fail "reindex: $gets GETs for $((N + 4)) manifests"
par=$(max_in_flight reindex) || fail "no proxy stats"
note "reindex: $ms ms, up to $par requests at once"
[ "$par" -ge 4 ] || fail "reindex: at most $par requests at once"
"$REPO" snapshots "$R" --json >"$T/list" || fail "snapshots"
got=$(/usr/bin/python3 -c 'import json, sys
print(len(json.load(open(sys.argv[1]))))' "$T/list")
[ "$got" = $((N + 4)) ] || fail "after reindex: $got snapshots"
exit 0
