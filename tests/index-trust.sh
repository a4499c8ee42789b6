#!/bin/bash
# The local index is a cache that cannot lie: random bit flips in index.db,
# swapped and deleted rows, a truncated or garbage file, another
# repository's index: every read through the mount returns the snapshot's
# own bytes or fails (EIO, with a message that says the index is damaged
# and how to repair it); never other bytes.  'reindex' repairs any index.
# Processes that start together on a host without an index all work.
#
# INDEX_TRIALS (default 100) sets the number of damage trials.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_root
requires_fuse
requires /usr/bin/python3
TRIALS=${INDEX_TRIALS:-100}

R=$T/repo
MNT=$T/mnt
"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init"
# two volumes, three generations each; every generation kept for comparison
for v in a b; do
	img=$T/img.$v
	head -c 3M /dev/urandom >"$img"
	truncate -s 4M "$img"
	for g in 1 2 3; do
		[ $g -gt 1 ] && random_writes "$img" 6 200000 "$g$RANDOM" "$T/w"
		base=()
		[ $g -gt 1 ] && base=(--base "g$((g - 1))")
		"$INGEST" --repo "$R" --volume "ns/$v" --snapshot "g$g" \
			--device "$img" "${base[@]}" >/dev/null ||
			fail "ingest ns/$v g$g"
		cp "$img" "$T/expect.$v.$g"
	done
done
id=$(/usr/bin/python3 -c 'import os,sys; print(os.listdir(sys.argv[1])[0])' \
	"$XDG_CACHE_HOME/cbtfs")
DB=$XDG_CACHE_HOME/cbtfs/$id/index.db
"$REPO" snapshots "$R" >/dev/null || fail "snapshots"
[ -s "$DB" ] && [ ! -e "$DB-wal" ] || fail "no checkpointed index at $DB"
cp "$DB" "$T/pristine.db"

# damage KIND SEED: damages the index in one way
damage() {
	/usr/bin/python3 - "$DB" "$1" "$2" <<'PY'
import random, sqlite3, sys
db, kind, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
if kind == "flip":
    data = bytearray(open(db, "rb").read())
    for _ in range(rnd.randint(1, 4)):
        i = rnd.randrange(len(data))
        data[i] ^= 1 << rnd.randrange(8)
    open(db, "wb").write(data)
    sys.exit(0)
c = sqlite3.connect(db)
rows = c.execute("SELECT sid, idx, chunk_id FROM entries").fetchall()
a, b = rnd.sample(rows, 2)
while a[2] == b[2]:
    a, b = rnd.sample(rows, 2)
if kind == "swap":       # two entries exchange their chunks
    c.execute("UPDATE entries SET chunk_id=? WHERE sid=? AND idx=?",
              (b[2], a[0], a[1]))
    c.execute("UPDATE entries SET chunk_id=? WHERE sid=? AND idx=?",
              (a[2], b[0], b[1]))
elif kind == "move":     # an entry moves to another snapshot
    c.execute("UPDATE OR IGNORE entries SET sid=? WHERE sid=? AND idx=?",
              (b[0], a[0], a[1]))
elif kind == "delete":   # an entry is lost
    c.execute("DELETE FROM entries WHERE sid=? AND idx=?", (a[0], a[1]))
elif kind == "snapswap": # two snapshots exchange their names
    s = c.execute("SELECT sid, volume, name FROM snapshots").fetchall()
    x, y = rnd.sample(s, 2)
    c.execute("UPDATE snapshots SET volume=?, name=? WHERE sid=?",
              (y[1], y[2], x[0]))
    c.execute("UPDATE snapshots SET volume=?, name=? WHERE sid=?",
              (x[1], x[2], y[0]))
c.commit()
c.close()
PY
}

# check_reads TRIAL: every image read through the mount is right or an
# error; counts into good/errors; wrong bytes fail the test
good=0 errors=0 mount_errors=0
check_reads() {
	local v g f
	if ! "$CBTFS" "$R" "$MNT" -f >"$T/mount.log" 2>&1 & then :; fi
	MOUNT_PID=$!
	_pids+=("$MOUNT_PID")
	_mounts+=("$MNT")
	if ! wait_for 10 mountpoint -q "$MNT"; then
		wait "$MOUNT_PID"
		grep -q "index" "$T/mount.log" ||
			fail "trial $1: the mount failed without naming the index: $(cat "$T/mount.log")"
		note "trial $1: the mount refused: $(tail -1 "$T/mount.log")"
		mount_errors=$((mount_errors + 1))
		return
	fi
	for v in a b; do
		for g in 1 2 3; do
			f=$MNT/ns/$v/g$g.img
			if [ ! -e "$f" ]; then
				fail "trial $1: ns/$v/g$g is not listed"
			elif dd if="$f" of="$T/got" bs=1M status=none 2>"$T/dd.err"; then
				cmp -s "$T/got" "$T/expect.$v.$g" ||
					fail "trial $1: ns/$v/g$g read WRONG BYTES without an error"
				good=$((good + 1))
			else
				grep -q "Input/output error" "$T/dd.err" ||
					fail "trial $1: ns/$v/g$g: $(cat "$T/dd.err")"
				errors=$((errors + 1))
			fi
		done
	done
	stop_mount "$MNT"
	if [ "$errors" -gt "${last_errors:-0}" ]; then
		grep -q "the local index is damaged; 'cbtfs-repo reindex REPO' rebuilds it" "$T/mount.log" ||
			fail "trial $1: EIO without saying the index is damaged: $(cat "$T/mount.log")"
	fi
	last_errors=$errors
}

mkdir -p "$MNT"
kinds=(flip flip swap move delete snapswap)
for ((t = 1; t <= TRIALS; t++)); do
	cp "$T/pristine.db" "$DB"
	rm -f "$DB-wal" "$DB-shm"
	damage "${kinds[t % ${#kinds[@]}]}" "$t" || fail "damage trial $t"
	check_reads "$t"
done
note "$TRIALS damage trials: $good images read right, $errors refused" \
	"with EIO, $mount_errors mounts refused; 0 wrong bytes"

# an ingest that meets a damaged index (its base chain, its dedup) rebuilds
# it and goes on; what it commits restores byte-exact
cp "$T/expect.a.3" "$T/img.x"
for ((t = 1; t <= 12; t++)); do
	cp "$T/pristine.db" "$DB"
	rm -f "$DB-wal" "$DB-shm"
	damage "${kinds[t % ${#kinds[@]}]}" $((1000 + t)) || fail "damage"
	random_writes "$T/img.x" 3 100000 "$t$RANDOM" "$T/w"
	"$INGEST" --repo "$R" --volume ns/a --snapshot "x$t" --base g3 \
		--device "$T/img.x" >/dev/null 2>"$T/x.err" ||
		fail "ingest on a damaged index, trial $t: $(cat "$T/x.err")"
	cp "$T/img.x" "$T/expect.x.$t"
done
start_mount "$R" "$MNT"
for ((t = 1; t <= 12; t++)); do
	cmp "$MNT/ns/a/x$t.img" "$T/expect.x.$t" ||
		fail "x$t, made on a damaged index, does not restore"
done
stop_mount "$MNT"
rm -f "$T"/expect.x.*
cp "$T/pristine.db" "$DB"
rm -f "$DB-wal" "$DB-shm"
note "12 ingests on damaged indexes: all restore byte-exact"

# reindex repairs what SQLite cannot read, and what it can
for bad in garbage truncated; do
	case $bad in
	garbage) head -c 100000 /dev/urandom >"$DB" ;;
	truncated) head -c 5000 "$T/pristine.db" >"$DB" ;;
	esac
	rm -f "$DB-wal" "$DB-shm"
	"$REPO" reindex "$R" >/dev/null 2>"$T/err" ||
		fail "reindex of a $bad index: $(cat "$T/err")"
	n=$("$REPO" snapshots "$R" --json |
		/usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
	[ "$n" = "$(ls "$R/snapshots" | wc -l)" ] ||
		fail "after reindex of a $bad index: $n snapshots"
done
cp "$T/pristine.db" "$DB"
damage swap 7
"$REPO" reindex "$R" >/dev/null || fail "reindex of a damaged index"
last_errors=$errors
check_reads reindexed
[ "$errors" = "$last_errors" ] || fail "reads fail after reindex"

# another repository's index in this one's place is replaced, not used
R2=$T/repo2
"$REPO" init "$R2" --chunk-size 64K >/dev/null || fail "init repo2"
"$INGEST" --repo "$R2" --volume ns/a --snapshot g1 --device "$T/expect.b.3" \
	>/dev/null || fail "ingest repo2"
id2=$(ls "$XDG_CACHE_HOME/cbtfs" | grep -v "^$id$")
cp "$XDG_CACHE_HOME/cbtfs/$id2/index.db" "$DB"
rm -f "$DB-wal" "$DB-shm"
last_errors=$errors
check_reads foreign
[ "$errors" = "$last_errors" ] || fail "reads fail with a foreign index"
grep -q "belongs to another repository; replacing it" "$T/mount.log" ||
	fail "the foreign index was not named: $(cat "$T/mount.log")"

# processes starting together without an index: all of them work
for ((t = 1; t <= 20; t++)); do
	rm -rf "$XDG_CACHE_HOME"
	"$REPO" snapshots "$R" >/dev/null 2>"$T/c1" &
	p1=$!
	"$REPO" snapshots "$R" --json >/dev/null 2>"$T/c2" &
	p2=$!
	"$INGEST" --repo "$R" --volume "ns/c$t" --snapshot s \
		--device "$T/expect.a.1" >/dev/null 2>"$T/c3" &
	p3=$!
	for p in $p1 $p2 $p3; do
		wait $p || fail "concurrent first use, trial $t: $(cat "$T/c1" "$T/c2" "$T/c3")"
	done
done
note "20 trials of three processes starting on an empty cache: all worked"
exit 0
