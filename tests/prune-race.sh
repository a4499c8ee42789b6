#!/bin/bash
# Races, on S3 (Ceph RGW):
#  1. an ingest of one volume whose data are the chunks of another volume's
#     snapshot (it stores none of them: the index knows them), slowed down
#     by a proxy, while that snapshot is forgotten and prunes are started
#     over and over: each prune is refused while the ingest runs (or the
#     ingest while a prune does, and is run again); the new snapshot
#     restores byte-exact afterwards, and verify finds nothing missing;
#  2. a mount read in a loop while snapshots are forgotten and pruned: the
#     kept snapshots read correctly throughout, the forgotten ones leave
#     the mount.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires /usr/bin/python3
requires_root
requires_fuse

start_rgw
S=s3://$S3_BUCKET/race
start_proxy slow --delay 1.0 --delay-ms 150
"$REPO" init "$S" --chunk-size 64K >/dev/null || fail "init"

# 1. prune against an ingest that deduplicates
head -c 8M /dev/urandom >"$T/a1"
# at least 3 rounds, and more (up to 10) until the two have met: whether
# a round's prunes come while the ingest runs depends on timing
refused=0 ingest_refused=0
for ((round = 1; round <= 10; round++)); do
	"$INGEST" --repo "$S" --volume ns/src --snapshot "a$round" \
		--device "$T/a1" >/dev/null || fail "ingest a$round"
	# a later snapshot overwrites everything: once a$round is forgotten,
	# only the new ingest of ns/dst uses its chunks
	head -c 8M /dev/urandom >"$T/a2"
	"$INGEST" --repo "$S" --volume ns/src --snapshot "b$round" \
		--device "$T/a2" --base "a$round" >/dev/null || fail "ingest b$round"
	AWS_ENDPOINT_URL=$PROXY_URL "$INGEST" --repo "$S" --volume ns/dst \
		--snapshot "d$round" --device "$T/a1" --json \
		>"$T/ing.out" 2>"$T/ing.err" &
	pid=$!
	sleep "0.$((RANDOM % 10))"
	"$REPO" forget "$S" ns/src "a$round" >/dev/null ||
		fail "round $round: forget a$round"
	while kill -0 $pid 2>/dev/null; do
		if "$REPO" prune "$S" >/dev/null 2>"$T/prune.err"; then
			continue
		fi
		grep -q "cannot prune now: volume 'ns/dst' is locked by an ingest" \
			"$T/prune.err" || fail "round $round: prune: $(cat "$T/prune.err")"
		refused=$((refused + 1))
		sleep 0.2
	done
	if ! wait $pid; then
		grep -q "the repository is being pruned" "$T/ing.err" ||
			fail "round $round: ingest: $(cat "$T/ing.err")"
		note "round $round: the ingest met a prune and is run again"
		ingest_refused=$((ingest_refused + 1))
		"$INGEST" --repo "$S" --volume ns/dst --snapshot "d$round" \
			--device "$T/a1" --json >"$T/ing.out" ||
			fail "round $round: ingest again"
	fi
	"$REPO" prune "$S" >/dev/null || fail "round $round: last prune"
	start_mount "$S" "$T/mnt"
	cmp "$T/mnt/ns/dst/d$round.img" "$T/a1" ||
		fail "round $round: d$round does not restore byte-exact"
	[ -e "$T/mnt/ns/src/a$round.img" ] && fail "a$round still mounted"
	stop_mount "$T/mnt"
	out=$("$REPO" verify "$S" --json) || fail "round $round: verify: $out"
	head -c 8M /dev/urandom >"$T/a1"
	[ $round -ge 3 ] && [ $((refused + ingest_refused)) -gt 0 ] && break
done
# the two met: a prune refused by the running ingest, or the ingest by a
# running prune (which side wins depends on timing)
[ $((refused + ingest_refused)) -gt 0 ] ||
	fail "no prune met the running ingest in 10 rounds"
note "in $round rounds, prune was refused $refused times while an" \
	"ingest ran, an ingest $ingest_refused times while a prune ran"

# 2. a mount read in a loop while snapshots are forgotten and pruned
head -c 8M /dev/urandom >"$T/img"
declare -A sum
for i in $(seq 1 8); do
	# the first 2 MiB each time (what a forgotten one had there goes),
	# and 1 MiB elsewhere
	head -c 2M /dev/urandom | dd of="$T/img" conv=notrunc status=none
	head -c 1M /dev/urandom | dd of="$T/img" bs=1M seek=$((2 + RANDOM % 6)) \
		conv=notrunc status=none
	base=()
	[ "$i" -gt 1 ] && base=(--base "c$((i - 1))")
	"$INGEST" --repo "$S" --volume ns/m --snapshot "c$i" --device "$T/img" \
		"${base[@]}" >/dev/null || fail "ingest c$i"
	sum[c$i]=$(sha "$T/img")
done
start_mount "$S" "$T/mnt" -o refresh=1
# reader NAME...: reads the images in a loop until $T/stop exists,
# appending "ok NAME" or "BAD NAME" to $T/reads
reader() {
	local g
	while [ ! -e "$T/stop" ]; do
		for g in "$@"; do
			if [ "$(sha "$T/mnt/ns/m/$g.img")" = "${sum[$g]}" ]; then
				echo "ok $g"
			else
				echo "BAD $g"
			fi
		done
	done >>"$T/reads" 2>&1
}
reader c8 c6 &
r1=$!
reader c4 c1 &
r2=$!
_pids+=($r1 $r2)
sleep 1
for names in c7 c5 "c3 c2"; do
	# shellcheck disable=SC2086
	"$REPO" forget "$S" ns/m $names >/dev/null || fail "forget $names"
	"$REPO" prune "$S" >/dev/null || fail "prune after forget $names"
	for g in $names; do
		wait_for 10 sh -c "! ls '$T/mnt/ns/m' | grep -qx '$g.img'" ||
			fail "$g.img is still in the mount"
	done
	sleep 1
done
touch "$T/stop"
wait $r1 $r2
grep -q BAD "$T/reads" && fail "wrong bytes read: $(grep -c BAD "$T/reads") times"
n=$(grep -c "^ok" "$T/reads")
[ "$n" -ge 8 ] || fail "only $n reads"
stop_mount "$T/mnt"
note "mount: $n reads of kept snapshots while 4 were forgotten and pruned, all right"
exit 0
