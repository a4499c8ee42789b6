#!/bin/bash
# cbtfs-repo verify --read-data against a plain parallel GET of the same
# chunk objects, on a throw-away local Ceph RGW, with the page cache dropped
# before every run:
#   curl GET of every chunk object, P in flight (curl -Z, keep-alive)
#   cbtfs-repo verify --read-data --jobs P (lists snapshots/ and chunks/,
#       reads the manifests, fetches and verifies every chunk)
# RUNS runs of each, alternating; MB/s of the chunk objects' bytes over
# the wall time of the whole command, min / median / max.
# Usage: bench/verify.sh [SIZE_MIB [P [RUNS]]]  (default 256 MiB, 8, 3)
# CHUNK_SIZE=64K (default 1M) sets the repository's chunk size.
# Needs the Ceph packages, bc, and root (to drop the page cache).
. "$(dirname "$0")/lib.sh"
size=${1:-256}
P=${2:-8}
RUNS=${3:-3}
requires bc
requires_root
start_rgw

sigv4=(--aws-sigv4 "aws:amz:us-east-1:s3"
	--user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY")

img=$T/disk.img
head -c "${size}M" /dev/urandom >"$img"
R=s3://$S3_BUCKET/bench
"$REPO" init "$R" --chunk-size "${CHUNK_SIZE:-1M}" >/dev/null || fail "init"
"$INGEST" --repo "$R" --volume bench/v --snapshot s1 --device "$img" \
	--jobs "$P" --no-progress >/dev/null || fail "ingest"

"$top_builddir/tests/s3tool" "$R" keys chunks/ >"$T/keys" || fail "keys"
while read -r k; do
	printf 'url = "%s/%s/bench/%s"\noutput = "/dev/null"\n' \
		"$S3_ENDPOINT" "$S3_BUCKET" "$k"
done <"$T/keys" >"$T/get.cfg"
get_all() {
	curl -sSf -Z --parallel-max "$P" "${sigv4[@]}" \
		-H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
		-K "$T/get.cfg"
}
verify_all() { "$REPO" verify "$R" --read-data --jobs "$P"; }

# the bytes both read: every chunk object, once
"$REPO" verify "$R" --read-data --jobs "$P" --json >"$T/v.json" ||
	fail "verify found problems: $(cat "$T/v.json")"
bytes=$(json_field read_bytes <"$T/v.json")
[ "$(json_field chunks_read <"$T/v.json")" = "$(wc -l <"$T/keys")" ] ||
	fail "verify did not read every chunk object"

: >"$T/get.t"
: >"$T/verify.t"
for ((i = 0; i < RUNS; i++)); do
	drop
	secs get_all >>"$T/get.t"
	drop
	secs verify_all >>"$T/verify.t"
done
drop
t_struct=$(secs "$REPO" verify "$R")

# rate_stats FILE: "min median max" MB/s of the times in FILE
rate_stats() {
	local mbps
	mbps=$(while read -r t; do echo "scale=1; $bytes / $t / 1000000" | bc -l
	done <"$1" | sort -n)
	echo "$(head -1 <<<"$mbps") $(sed -n "$(((RUNS + 1) / 2))p" <<<"$mbps")" \
		"$(tail -1 <<<"$mbps")"
}
printf '\n%s MiB random image, %s chunk objects (%s bytes), Ceph RGW on ' \
	"$size" "$(wc -l <"$T/keys")" "$bytes"
printf '127.0.0.1, %s in flight, %s runs, page cache dropped\n' "$P" "$RUNS"
printf '%-36s %8s %8s %8s   (MB/s)\n' "" min median max
printf '%-36s %8s %8s %8s\n' "curl GET of the chunk objects" $(rate_stats "$T/get.t")
printf '%-36s %8s %8s %8s\n' "cbtfs-repo verify --read-data" \
	$(rate_stats "$T/verify.t")
printf '%-36s %8.2f s\n' "cbtfs-repo verify (structure)" "$t_struct"
