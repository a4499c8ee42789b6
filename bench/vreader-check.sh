#!/bin/bash
# Checks the verifying raw reader (bench/vreader.c) before its numbers are
# believed: on a throw-away Ceph RGW it must read back every chunk of a
# repository holding both stored-as-is (random) and zstd-compressed
# (text) chunks, and must fail on an object whose bytes do not hash to its
# name, on a truncated object and on a missing one.
# Usage: bench/vreader-check.sh   Needs the Ceph packages.
. "$(dirname "$0")/lib.sh"
vreader_build
s3tool_build
start_rgw
R=s3://$S3_BUCKET/check
"$REPO" init "$R" >/dev/null || fail "init"
img=$T/disk.img
head -c 8M /dev/urandom >"$img"
# compressible chunks: text that zstd shrinks
for ((i = 0; i < 8; i++)); do seq 1 200000; done | head -c 8M >>"$img"
"$INGEST" --repo "$R" --volume v --snapshot s1 --device "$img" \
	--no-progress >/dev/null || fail "ingest"
"$S3TOOL" "$R" keys chunks/ | sed 's|^|check/|' >"$T/keys"
[ "$(wc -l <"$T/keys")" = 16 ] || fail "expected 16 chunk objects"
"$S3TOOL" "$R" mirror "$T/objs" || fail "mirror"
compressed=0 a="" b=""
while read -r k; do
	f=$T/objs/${k#check/}
	if [ "$(stat -c %s "$f")" -lt 1048576 ]; then
		compressed=$((compressed + 1))
	elif [ -z "$a" ]; then
		a=$k	# a chunk stored as it is
	else
		b=$k
	fi
done <"$T/keys"
[ "$compressed" -ge 1 ] || fail "no compressed chunk to check zstd with"
out=$("$VREADER" -P 4 "$S3_ENDPOINT" "$S3_BUCKET" <"$T/keys") ||
	fail "vreader failed on a good repository: $out"
echo "$out" | grep -q "bytes=16777216 objects=16 failures=0" ||
	fail "vreader read the wrong amount: $out"
note "good repository ($compressed compressed chunks): $out"

# bad objects under another prefix, so the repository stays intact
"$S3TOOL" "s3://$S3_BUCKET/bad" put-file "${b#check/}" "$T/objs/${a#check/}" ||
	fail "plant a wrong object"
expect_fail "SHA-256 of the plaintext differs" \
	"$VREADER" -P 1 "$S3_ENDPOINT" "$S3_BUCKET" <<<"bad/${b#check/}"
head -c 1000 "$T/objs/${a#check/}" >"$T/short"
"$S3TOOL" "s3://$S3_BUCKET/bad" put-file "${a#check/}" "$T/short" ||
	fail "plant a short object"
expect_fail "plaintext length differs" \
	"$VREADER" -P 1 "$S3_ENDPOINT" "$S3_BUCKET" <<<"bad/${a#check/}"
expect_fail "HTTP 404" \
	"$VREADER" -P 1 "$S3_ENDPOINT" "$S3_BUCKET" <<<"bad/chunks/00/missing"
note "vreader rejects a wrong, a truncated and a missing object"
echo "vreader-check: ok"
