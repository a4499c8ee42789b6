#!/bin/bash
# Forget and prune killed with SIGKILL at random moments, on S3 (Ceph RGW)
# behind a proxy that delays every request, so that they are killed
# midway: after every kill, every snapshot still listed restores
# byte-exact; a plain re-run of the same command finishes the job (the
# names are gone, the store holds exactly the chunks in use).
#
# PRUNE_CRASH_KILLS (default 5) sets how many runs of each are killed.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires /usr/bin/python3
requires zstd
requires_root
requires_fuse
S3TOOL=$top_builddir/tests/s3tool
CHUNKS="/usr/bin/python3 $top_srcdir/tests/manifest_chunks.py"
KILLS=${PRUNE_CRASH_KILLS:-5}
V=ns/pc
GENS=32

start_rgw
S=s3://$S3_BUCKET/pc
start_proxy slow --delay 1.0 --delay-ms 20
slow() { AWS_ENDPOINT_URL=$PROXY_URL "$@"; }

"$REPO" init "$S" --chunk-size 64K >/dev/null || fail "init"
img=$T/img
head -c 4M /dev/urandom >"$img"
declare -A sum
# every generation rewrites the first MiB: a forgotten generation's 16
# chunks there are unused once it is folded into its child
for i in $(seq 1 $GENS); do
	head -c 1M /dev/urandom | dd of="$img" conv=notrunc status=none
	dd if=/dev/urandom of="$img" bs=64K count=1 seek=$((16 + RANDOM % 48)) \
		conv=notrunc status=none
	base=()
	[ "$i" -gt 1 ] && base=(--base "g$((i - 1))")
	"$INGEST" --repo "$S" --volume $V --snapshot "g$i" --device "$img" \
		"${base[@]}" >/dev/null || fail "ingest g$i"
	sum[g$i]=$(sha "$img")
done

present() {
	"$REPO" snapshots "$S" --volume $V --json | /usr/bin/python3 -c '
import json, sys
for s in json.load(sys.stdin): print(s["snapshot"])' | sort -V
}

# check LABEL: every snapshot listed restores byte-exact
check() {
	local g n=0
	start_mount "$S" "$T/mnt"
	for g in $(present); do
		[ "$(sha "$T/mnt/$V/$g.img")" = "${sum[$g]}" ] ||
			fail "$1: $g does not restore byte-exact"
		n=$((n + 1))
	done
	stop_mount "$T/mnt"
}

# exact: the store holds exactly the chunks the manifests use
exact() {
	local k n=0
	rm -rf "$T/m"
	mkdir "$T/m"
	for k in $("$S3TOOL" "$S" keys snapshots/); do
		"$S3TOOL" "$S" save "$k" "$T/m/$n" || fail "get $k"
		n=$((n + 1))
	done
	$CHUNKS "$T"/m/* >"$T/ref" || fail "manifest_chunks.py"
	"$S3TOOL" "$S" keys chunks/ | sed 's|.*/||' | sort >"$T/stored"
	cmp -s "$T/ref" "$T/stored" ||
		fail "$1: the store does not hold exactly the chunks in use ($(wc -l <"$T/ref") used, $(wc -l <"$T/stored") stored)"
}

# names: the lock records and the snapshot names in the store
names() {
	"$S3TOOL" "$S" keys locks/ && "$S3TOOL" "$S" keys snapshots/
}

# killed MAXMS CMD...: runs CMD through the proxy and kills it after a
# random 0..MAXMS ms; true if it was killed before it finished
killed() {
	local ms=$((RANDOM % ($1 + 1))) pid
	shift
	# not through a function: $! must be the program itself
	AWS_ENDPOINT_URL=$PROXY_URL "$@" >"$T/killed.out" 2>&1 &
	pid=$!
	sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
	if kill -9 $pid 2>/dev/null; then
		wait $pid 2>/dev/null
		# what the proxy holds lands first (see stable)
		stable 20 names >/dev/null
		return 0
	fi
	wait $pid || fail "$* failed: $(cat "$T/killed.out")"
	return 1
}

ms_of() {
	local t0
	t0=$(date +%s%N)
	slow "$@" >/dev/null 2>&1 || fail "$* failed"
	echo $((($(date +%s%N) - t0) / 1000000))
}
# how long the slow runs take: a forget reads the manifests twice and
# writes; a dry run reads them once
fms=$(($(ms_of "$REPO" forget "$S" $V g2 --dry-run) * 2))
pms=$(($(ms_of "$REPO" prune "$S" --dry-run) * 2))
note "slow forget of two snapshots: about $fms ms; prune about $pms ms"

fk=0
pk=0
held=0
for ((round = 1; (fk < KILLS || pk < KILLS) && round <= 4 * KILLS; round++)); do
	mapfile -t snaps < <(present)
	[ ${#snaps[@]} -ge 4 ] || break
	# two neighbours, never the newest: the next is rewritten
	k=$((RANDOM % (${#snaps[@]} - 2)))
	a=${snaps[k]}
	b=${snaps[k + 1]}
	if killed "$fms" "$REPO" forget "$S" $V "$a" "$b"; then
		nolock=0
		[ -z "$("$S3TOOL" "$S" keys locks/)" ] && nolock=1
		check "round $round, forget $a $b killed"
		if out=$("$REPO" forget "$S" $V "$a" "$b" 2>&1); then
			fk=$((fk + 1))
			[ $nolock = 0 ] && held=$((held + 1))
		elif [ $nolock = 1 ] && ! present | grep -qxE "$a|$b" &&
			grep -q "is not in the repository" <<<"$out"; then
			# killed on its way out, after it had released its
			# lock: it had finished, and the names are gone
			:
		else
			fail "round $round: re-run of forget $a $b: $out"
		fi
	else
		fms=$((fms * 2 / 3))	# it finished first: kill sooner
	fi
	present | grep -qxE "$a|$b" && fail "round $round: $a or $b left"
	check "round $round, forget $a $b"
	if killed "$pms" "$REPO" prune "$S"; then
		pk=$((pk + 1))
		check "round $round, prune killed"
	else
		pms=$((pms * 2 / 3))
	fi
	out=$("$REPO" prune "$S" 2>&1) || fail "round $round: re-run of prune: $out"
	exact "round $round"
done
note "$((round - 1)) rounds: $fk forgets ($held holding their lock) and $pk prunes killed midway"
[ $fk -ge $KILLS ] || fail "only $fk forgets were killed midway"
[ $pk -ge $KILLS ] || fail "only $pk prunes were killed midway"
out=$("$REPO" verify "$S") || fail "verify: $out"
[ -z "$("$S3TOOL" "$S" keys locks/)" ] || fail "lock records remain"
exit 0
