#!/bin/bash
# S3 speed, side by side in one run against a throw-away local Ceph RGW,
# on the same random image and the same objects:
#   ingest MB/s                      vs  curl PUT of the same chunk-sized
#                                        objects, P in flight (curl -Z,
#                                        keep-alive)
#   cold dd bs=1M from a fresh mount vs  curl GET of the stored chunk
#                                        objects, P in flight (curl -Z)
#                                    vs  s3backer (Debian) with 1 MiB blocks
#                                        and the tuned flags, cold dd
# Usage: bench/s3.sh [SIZE_MIB [P]]   (default 1024 MiB, P = 8)
# PIN=1 runs the Ceph daemons on CPU 0 and every client (curl, cbtfs,
# s3backer, dd) on CPU 1, as if the server were another machine: on a
# small box the clients otherwise take CPU from the server, and the
# clients that do more per byte (cbtfs verifies every chunk) pay twice.
# Needs the Ceph packages and s3backer (apt-get install s3backer); root.
. "$(dirname "$0")/lib.sh"
size=${1:-1024}
P=${2:-8}
requires_fuse
requires s3backer
requires bc
start_rgw
# on_client PID: moves every thread of PID to the client CPU (PIN=1)
on_client() { [ "${PIN:-0}" = 1 ] && taskset -a -p -c 1 "$1" >/dev/null; return 0; }
CLIENT=()
if [ "${PIN:-0}" = 1 ]; then
	[ "$(nproc)" -ge 2 ] || fail "PIN=1 needs 2 CPUs"
	for p in "${_pids[@]}"; do
		taskset -a -p -c 0 "$p" >/dev/null || fail "taskset $p"
	done
	CLIENT=(taskset -c 1)
fi

sigv4=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY")

img=$T/disk.img
head -c ${size}M /dev/urandom >"$img"
R=s3://$S3_BUCKET/bench

# raw PUT: the image cut into 1 MiB files, uploaded by one curl with P
# transfers in flight on keep-alive connections (curl --parallel)
mkdir "$T/parts"
split -b 1M -d -a 5 "$img" "$T/parts/p"
for f in "$T"/parts/*; do
	printf 'upload-file = "%s"\nurl = "%s/%s/raw/%s"\n' "$f" "$S3_ENDPOINT" \
		"$S3_BUCKET" "$(basename "$f")"
done >"$T/put.cfg"
put_all() {
	"${CLIENT[@]}" curl -sSf -Z --parallel-max "$P" "${sigv4[@]}" \
		-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -K "$T/put.cfg"
}
t_put=$(secs put_all)

"$REPO" init "$R" >/dev/null || fail "init"
drop
t_ing=$(secs "${CLIENT[@]}" "$INGEST" --repo "$R" --volume bench/v --snapshot s1 \
	--device "$img" --jobs "$P" --no-progress)

# raw GET of the very chunk objects cbtfs stored
"$top_builddir/tests/s3tool" "$R" keys chunks/ >"$T/keys" || fail "keys"
while read -r k; do
	printf 'url = "%s/%s/bench/%s"\noutput = "/dev/null"\n' "$S3_ENDPOINT" \
		"$S3_BUCKET" "$k"
done <"$T/keys" >"$T/get.cfg"
get_all() {
	"${CLIENT[@]}" curl -sSf -Z --parallel-max "$P" "${sigv4[@]}" \
		-H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
		-K "$T/get.cfg"
}
drop
t_get=$(secs get_all)

start_mount "$R" "$T/mnt" -o "jobs=$P,readahead=$((2 * P))"
on_client "$MOUNT_PID"
drop
t_dd=$(secs "${CLIENT[@]}" dd if="$T/mnt/bench/v/s1.img" of=/dev/null bs=1M)
cmp "$T/mnt/bench/v/s1.img" "$img" || fail "restore differs"
stop_mount "$T/mnt"

# s3backer: fill it, then a fresh mount for the cold read
s3_curl -X PUT "$S3_ENDPOINT/s3backer" || fail "bucket for s3backer"
sb() {
	mkdir -p "$T/sb"
	s3backer --baseURL="$S3_ENDPOINT/" --accessId="$AWS_ACCESS_KEY_ID" \
		--accessKey="$AWS_SECRET_ACCESS_KEY" --authVersion=aws4 \
		--blockSize=1M --size=${size}M --listBlocks --blockCacheSize=1100 \
		-o big_writes -o max_readahead=1048576 -f "$@" s3backer "$T/sb" \
		>"$T/sb.log" 2>&1 &
	SB_PID=$!
	_pids+=($SB_PID)
	on_client $SB_PID
	_mounts+=("$T/sb")
	wait_for 30 test -e "$T/sb/file" || fail "s3backer did not mount"
}
sb_stop() {
	fusermount3 -u "$T/sb" || fail "unmount s3backer"
	wait $SB_PID
}
sb
dd if="$img" of="$T/sb/file" bs=1M conv=notrunc status=none || fail "fill s3backer"
sb_stop
sb
drop
t_sb=$(secs "${CLIENT[@]}" dd if="$T/sb/file" of=/dev/null bs=1M)
cmp "$T/sb/file" "$img" || fail "s3backer data differs"
sb_stop

r() { echo "scale=2; $1 / $2" | bc -l; }
printf '\n%s MiB random image, Ceph RGW on 127.0.0.1, %s in flight%s\n' \
	"$size" "$P" "$([ "${PIN:-0}" = 1 ] && echo ', server on CPU 0, clients on CPU 1')"
printf '%-40s %8s\n' "" "MB/s"
printf '%-40s %8s\n' "curl PUT of 1 MiB objects" "$(mbps "$t_put")"
printf '%-40s %8s   %s of raw PUT\n' "cbtfs-ingest" "$(mbps "$t_ing")" "$(r "$t_put" "$t_ing")"
printf '%-40s %8s\n' "curl GET of the chunk objects" "$(mbps "$t_get")"
printf '%-40s %8s   %s of raw GET, %s of s3backer\n' "cold dd from the cbtfs mount" \
	"$(mbps "$t_dd")" "$(r "$t_get" "$t_dd")" "$(r "$t_sb" "$t_dd")"
printf '%-40s %8s\n' "cold dd from s3backer (tuned)" "$(mbps "$t_sb")"
