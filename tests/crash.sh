#!/bin/bash
# Crash recovery: ingests of a 256 MiB image killed with SIGKILL at random
# moments, each followed by a plain re-run, on a directory and on S3.
# Every re-run succeeds with no manual step; what the killed run stored is
# not sent again (the chunks the re-run uploads are exactly the ones the
# store lacked); no partial snapshot ever appears; no temporary file
# remains; the last snapshot of each round restores byte-exact.
#
# CRASH_ROUNDS (default 10) sets how many runs are killed per store.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires /usr/bin/python3
S3TOOL=$top_builddir/tests/s3tool
ROUNDS=${CRASH_ROUNDS:-10}
MIB=256

# count_chunks REPO: chunk objects in the repository
count_chunks() {
	case $1 in
	s3://*) "$S3TOOL" "$1" count chunks/ ;;
	*) find "$1/chunks" -type f 2>/dev/null | wc -l ;;
	esac
}
count_snapshots() {
	case $1 in
	s3://*) "$S3TOOL" "$1" count snapshots/ ;;
	*) find "$1/snapshots" -type f 2>/dev/null | wc -l ;;
	esac
}

count_locks() {
	case $1 in
	s3://*) "$S3TOOL" "$1" count locks/ ;;
	*) find "$1/locks" -type f 2>/dev/null | wc -l ;;
	esac
}

# store_state REPO: the counts of chunks, snapshots and locks
store_state() {
	echo "$(count_chunks "$1") $(count_snapshots "$1") $(count_locks "$1")"
}

# a random delay in milliseconds from 0 to $1
rand_ms() { echo $((RANDOM % ($1 + 1))); }

# crash_rounds REPO LABEL MAXKILLMS: the rounds on one repository; the
# first kill falls within MAXKILLMS, later ones within 1.25 times the last
# re-run's time
crash_rounds() {
	local R=$1 label=$2 maxms=$3 img=$T/img.$2 i pid ms before after
	local snaps out new resent=0 kills=0 done_before=0 round_new killed rc
	local finished=0 nolock t0 last
	"$REPO" init "$R" >/dev/null || fail "$label: init"
	head -c ${MIB}M /dev/urandom >"$img"
	for ((i = 1; kills < ROUNDS && i <= 3 * ROUNDS; i++)); do
		# new data for this round: 64 random MiB at random chunk
		# offsets, so every round has chunks to upload
		for ((w = 0; w < 64; w++)); do
			head -c 1M /dev/urandom | dd of="$img" bs=1M \
				seek=$((RANDOM % MIB)) conv=notrunc status=none
		done
		snaps=$(count_snapshots "$R")
		base=()
		[ $i -gt 1 ] && base=(--base "s$((i - 1))")
		"$INGEST" --repo "$R" --volume ns/db --snapshot "s$i" \
			--device "$img" "${base[@]}" --jobs 4 \
			>"$T/killed.$label.$i" 2>&1 &
		pid=$!
		ms=$(rand_ms "$maxms")
		sleep "$(printf '0.%03d' "$ms")"
		killed=0
		kill -9 "$pid" 2>/dev/null && killed=1
		wait "$pid" 2>/dev/null
		rc=$?
		if [ $killed = 0 ]; then
			# it finished before the kill: nothing to recover
			[ $rc = 0 ] || fail "$label round $i: the ingest failed"
			finished=$((finished + 1))
			cp "$img" "$T/expect.$label.$i"
			continue
		fi
		kills=$((kills + 1))
		# on S3 what the killed run sent lands first (see stable)
		case $R in
		s3://*) stable 20 store_state "$R" >/dev/null ;;
		esac
		# a killed run commits all or nothing
		after=$(count_snapshots "$R")
		[ "$after" = "$snaps" ] || [ "$after" = $((snaps + 1)) ] ||
			fail "$label round $i: $after snapshots after a kill"
		before=$(count_chunks "$R")
		nolock=0
		[ "$(count_locks "$R")" = 0 ] && nolock=1
		t0=$(date +%s%N)
		if ! out=$("$INGEST" --repo "$R" --volume ns/db --snapshot "s$i" \
			--device "$img" "${base[@]}" --jobs 4 --json \
			2>"$T/rerun.$label.$i"); then
			# killed after it had released its lock, on its way out:
			# it had finished, and the name is taken
			if [ $nolock = 1 ] && [ "$after" = $((snaps + 1)) ] &&
				grep -q "already exists" "$T/rerun.$label.$i"; then
				finished=$((finished + 1))
				cp "$img" "$T/expect.$label.$i"
				continue
			fi
			fail "$label round $i: the re-run failed:"$'\n'"$(cat "$T/rerun.$label.$i")"
		fi
		# the next kill falls anywhere in a run that long
		maxms=$((($(date +%s%N) - t0) / 800000 + 50))
		after=$(count_chunks "$R")
		if [ "$(json_field already_committed <<<"$out")" = True ]; then
			done_before=$((done_before + 1))
			[ "$after" = "$before" ] ||
				fail "$label round $i: nothing to do, yet chunks were added"
		else
			new=$(json_field chunks_new <<<"$out")
			round_new=$((after - before))
			# every upload of the re-run created an object the store
			# lacked: none of the killed run's chunks was sent again
			[ "$new" = "$round_new" ] ||
				fail "$label round $i: re-run uploaded $new chunks, $round_new were missing"
			resent=$((resent + new - round_new))
		fi
		[ "$(count_snapshots "$R")" = $((snaps + 1)) ] ||
			fail "$label round $i: expected $((snaps + 1)) snapshots"
		case $R in
		s3://*) ;;
		*)
			leftover=$(find "$R/.tmp" -type f 2>/dev/null | head -3)
			leftover+=$(find "$R" -name '.tmp.*' -type f | head -3)
			[ -z "$leftover" ] ||
				fail "$label round $i: temporary files remain: $leftover"
			;;
		esac
		cp "$img" "$T/expect.$label.$i"
		[ $i -gt 2 ] && rm -f "$T/expect.$label.$((i - 2))"
	done
	last=$((i - 1))
	note "$label: $last rounds, $kills killed, $done_before of them" \
		"after their commit, $finished finished before the kill;" \
		"$resent chunks sent again"
	[ $kills = $ROUNDS ] ||
		fail "$label: only $kills runs were killed mid-run"
	# the last two generations restore byte-exact
	if [ -c /dev/fuse ] && [ "$(id -u)" = 0 ]; then
		start_mount "$R" "$T/mnt.$label"
		for j in $((last - 1)) $last; do
			cmp "$T/mnt.$label/ns/db/s$j.img" "$T/expect.$label.$j" ||
				fail "$label: s$j does not restore byte-exact"
		done
		stop_mount "$T/mnt.$label"
	fi
	rm -f "$img" "$T"/expect.$label.*
}

crash_rounds "$T/repo" dir 1500
note "directory repository: passed"

start_rgw
crash_rounds "s3://$S3_BUCKET/crash" s3 3000
note "S3 repository: passed"
exit 0
