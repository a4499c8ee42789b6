#!/bin/bash
# Client CPU per GiB of an ingest to a throw-away local Ceph RGW: the user
# + system seconds of cbtfs-ingest (GNU time) for a random (incompressible)
# image, into a new repository each run, against those of curl PUTting the
# same chunk-sized objects (P in flight, keep-alive, unsigned payload, over
# https too with HTTPS=1).
# CPU seconds, unlike wall time, hardly change with what else the machine
# runs.  Prints min/median/max of each.
# Usage: bench/ingest-cpu.sh [SIZE_MIB [RUNS [P]]]  (default 1024 MiB, 3, 8)
# INGEST_BINS="A B" compares builds of cbtfs-ingest (default: this tree's);
# HTTPS=1 goes through tests/faultproxy.py with TLS (the proxy's CPU is not
# counted), where cbtfs sends chunks with UNSIGNED-PAYLOAD.
. "$(dirname "$0")/lib.sh"
size=${1:-1024}
runs=${2:-3}
P=${3:-8}
requires bc
requires /usr/bin/time
start_rgw

img=$T/disk.img
head -c ${size}M /dev/urandom >"$img"
gib=$(echo "scale=6; $size / 1024" | bc -l)

if [ "${HTTPS:-0}" = 1 ]; then
	requires openssl
	openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
		-addext subjectAltName=IP:127.0.0.1 -keyout "$T/key.pem" \
		-out "$T/cert.pem" 2>/dev/null || fail "openssl req"
	start_proxy tls --tls-cert "$T/cert.pem" --tls-key "$T/key.pem"
	export AWS_ENDPOINT_URL=${PROXY_URL/http:/https:}
	export AWS_CA_BUNDLE=$T/cert.pem
	CACERT=(--cacert "$T/cert.pem")
else
	CACERT=()
fi

# drop_prefix P: deletes the objects under P, so that the RGW's 10 GiB of
# disk (tests/functions.sh) hold every run
drop_prefix() {
	"$top_builddir/tests/s3tool" "s3://$S3_BUCKET/$1" delete-prefix "" \
		>/dev/null || fail "cannot delete $1"
}

# cpu CMD...: user+sys seconds per GiB of CMD
cpu() {
	/usr/bin/time -f "%U %S" -o "$T/time" "$@" >/dev/null 2>"$T/stderr" ||
		{ cat "$T/stderr" >&2; fail "$*"; }
	echo "($(tail -1 "$T/time" | tr ' ' '+')) / $gib" | bc -l
}

# raw PUT: the image cut into 1 MiB files, P in flight
mkdir "$T/parts"
split -b 1M -d -a 5 "$img" "$T/parts/p"
n=0
curl_cpu=()
for ((i = 0; i < runs; i++)); do
	for f in "$T"/parts/*; do
		printf 'upload-file = "%s"\nurl = "%s/%s/raw%d/%s"\n' "$f" \
			"$AWS_ENDPOINT_URL" "$S3_BUCKET" $i "$(basename "$f")"
	done >"$T/put.cfg"
	curl_cpu+=("$(cpu curl -sSf -Z --parallel-max "$P" "${CACERT[@]}" \
		--aws-sigv4 "aws:amz:us-east-1:s3" \
		--user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
		-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -K "$T/put.cfg")")
	drop_prefix raw$i
done
echo "curl PUT           CPU s/GiB (min median max): $(stats %.2f "${curl_cpu[@]}")"

n=0
for bin in ${INGEST_BINS:-$INGEST}; do
	v=()
	for ((i = 0; i < runs; i++)); do
		n=$((n + 1))
		R=s3://$S3_BUCKET/cpu$n
		"$REPO" init "$R" >/dev/null || fail "init $R"
		v+=("$(cpu "$bin" --repo "$R" --volume bench/v \
			--snapshot s1 --device "$img" --jobs "$P" --no-progress)")
		drop_prefix cpu$n
	done
	echo "ingest $bin CPU s/GiB (min median max): $(stats %.2f "${v[@]}")"
done
