#!/bin/bash
# Retention: 10 generations of a 64 MiB image; forget a middle one, the
# first one, then by policy; prune.  Every kept generation restores
# byte-exact through the mount after each step, also through the index of
# a "second host" synced before the forget (its rows of rewritten
# manifests are re-read); after prune the store holds exactly the chunks
# the kept manifests refer to, counted by tests/manifest_chunks.py (no
# cbtfs code); damage records of unreferenced chunks and old temporaries
# go, the others stay; --dry-run changes nothing.  Bad input and lock
# conflicts are refused with clear messages, changing nothing.  Then
# forget and prune once on S3 (Ceph RGW).
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires /usr/bin/python3
requires zstd
requires_root
requires_fuse
S3TOOL=$top_builddir/tests/s3tool
CHUNKS="/usr/bin/python3 $top_srcdir/tests/manifest_chunks.py"
MIB=64
V=ns/vm
R=$T/repo

"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init"
img=$T/img
head -c ${MIB}M /dev/urandom >"$img"
declare -A sum
for i in $(seq 1 10); do
	random_writes "$img" 40 300000 "$i" "$T/w.$i"
	base=()
	[ "$i" -gt 1 ] && base=(--base "g$((i - 1))")
	"$INGEST" --repo "$R" --volume $V --snapshot "g$i" --device "$img" \
		"${base[@]}" >/dev/null || fail "ingest g$i"
	sum[g$i]=$(sha "$img")
done
rm -f "$img"

# names SNAPSHOTS_JSON: the snapshot names in it, one a line
names() {
	/usr/bin/python3 -c 'import json,sys
for s in json.load(sys.stdin): print(s["snapshot"])'
}
kept() { "$REPO" snapshots "$R" --volume $V --json | names | sort -V; }

# check_all LABEL [CACHE]: every kept generation restores byte-exact
# through a new mount (with the index under CACHE, default the test's)
check_all() {
	local label=$1 cache=${2:-$XDG_CACHE_HOME} g n=0
	XDG_CACHE_HOME=$cache start_mount "$R" "$T/mnt"
	for g in $(kept); do
		[ "$(sha "$T/mnt/$V/$g.img")" = "${sum[$g]}" ] ||
			fail "$label: $g does not restore byte-exact"
		n=$((n + 1))
	done
	stop_mount "$T/mnt"
	note "$label: $n generations restore byte-exact"
}

# 0. the second host's index knows every generation and every chain
XDG_CACHE_HOME=$T/cache2 "$REPO" snapshots "$R" >/dev/null ||
	fail "second host: snapshots"

# 1. --dry-run changes nothing, and says what would happen
before=$(fingerprint "$R")
out=$("$REPO" forget "$R" $V g5 --dry-run) || fail "forget --dry-run: $out"
grep -q "forget g5 " <<<"$out" || fail "dry run does not list g5: $out"
grep -q "g6 .*(would be rewritten)" <<<"$out" ||
	fail "dry run does not say g6 would be rewritten: $out"
grep -q "1 snapshot would be forgotten" <<<"$out" || fail "dry run: $out"
[ "$(fingerprint "$R")" = "$before" ] || fail "forget --dry-run changed $R"

# 2. a middle generation: g6 is rewritten with g5's entries
"$REPO" forget "$R" $V g5 >/dev/null || fail "forget g5"
[ "$(kept | tr '\n' ' ')" = "g1 g2 g3 g4 g6 g7 g8 g9 g10 " ] ||
	fail "after forget g5: $(kept | tr '\n' ' ')"
[ -z "$(ls "$R/locks" 2>/dev/null)" ] || fail "forget left a lock"
check_all "forget g5"
check_all "forget g5, the index synced before it" "$T/cache2"

# 3. the first generation: g2 becomes a first backup
"$REPO" forget "$R" $V g1 >/dev/null || fail "forget g1"
out=$("$REPO" snapshots "$R" --volume $V) || fail "snapshots"
grep -qE "^$V +g2 +- " <<<"$out" || fail "g2 is not a first backup: $out"
check_all "forget g1" "$T/cache2"

# 4. bad input: refused, clearly, changing nothing
expect_fail_unchanged "$R" \
	"snapshot 'nosuch' of volume 'ns/vm' is not in the repository" \
	"$REPO" forget "$R" $V nosuch
expect_fail_unchanged "$R" \
	"snapshot 'g5' of volume 'ns/vm' is not in the repository" \
	"$REPO" forget "$R" $V g2 g5
expect_fail_unchanged "$R" "nothing was forgotten" \
	"$REPO" forget "$R" $V g2 g5
expect_fail_unchanged "$R" \
	"that would forget every snapshot of volume 'ns/vm' (8); nothing was forgotten: add --force" \
	"$REPO" forget "$R" $V $(kept)
expect_fail_unchanged "$R" "--keep-last: expected a number from 1 to" \
	"$REPO" forget "$R" --keep-last 0
expect_fail_unchanged "$R" "--keep-daily: expected a number from 1 to 1000000, got '-1'" \
	"$REPO" forget "$R" --keep-daily -1
expect_fail_unchanged "$R" "forget: name the snapshots to forget" \
	"$REPO" forget "$R"
expect_fail_unchanged "$R" "forget: name the snapshots to forget" \
	"$REPO" forget "$R" --volume $V
expect_fail_unchanged "$R" "name the snapshots of volume 'ns/vm' to forget" \
	"$REPO" forget "$R" $V
expect_fail_unchanged "$R" "not both" \
	"$REPO" forget "$R" $V g2 --keep-last 2
expect_fail_unchanged "$R" "--force applies to named snapshots only" \
	"$REPO" forget "$R" --keep-last 2 --force
expect_fail_unchanged "$R" "volume 'ns/nope' has no snapshot" \
	"$REPO" forget "$R" --volume ns/nope --keep-last 2
"$REPO" forget "$R" $V g2 --keep-last 2 >/dev/null 2>&1
[ $? = 2 ] || fail "names and a policy: not a usage error (2)"

# an unreadable manifest: what it refers to is unknown, so neither
# forget nor prune runs
bad=12345678-1234-4234-8234-123456789abc
echo garbage >"$R/snapshots/$bad"
expect_fail_unchanged "$R" \
	"cannot forget: the manifest snapshots/$bad cannot be read (corrupt)" \
	"$REPO" forget "$R" --keep-last 1
expect_fail_unchanged "$R" \
	"cannot prune: the manifest snapshots/$bad cannot be read (corrupt)" \
	"$REPO" prune "$R"
rm "$R/snapshots/$bad"

# 5. locks: a live prune blocks ingests, forgets and prunes; a live ingest
#    or forget blocks a prune; dead and expired prune records are removed
now=$(date +%s)
L=11111111-2222-4333-8444-555555555555
# write_lock KIND VOLUME STATE RENEWED: a record of another host
write_lock() {
	{
		echo "kind=$1"
		[ "$1" != prune ] && printf '%s\n' "volume=$2" "snapshot=other"
		printf '%s\n' "state=$3" "host=elsewhere" \
			"boot_id=00000000-1111-2222-3333-444444444444" \
			"pidns=4026531836" "pid=4242" "start=12345" \
			"created=$4" "renewed=$4" "lease=300"
	} >"$R/locks/$L"
}
mkdir -p "$R/locks"
head -c 1M /dev/urandom >"$T/small"
write_lock prune "" held "$now"
expect_fail_unchanged "$R" \
	"the repository is being pruned (cbtfs-repo prune pid 4242 on elsewhere, renewed" \
	"$INGEST" --repo "$R" --volume ns/other --snapshot s --device "$T/small"
expect_fail_unchanged "$R" "the repository is being pruned" \
	"$REPO" forget "$R" $V g2
expect_fail_unchanged "$R" "the repository is being pruned" \
	"$REPO" prune "$R"
write_lock ingest ns/other held "$now"
expect_fail_unchanged "$R" \
	"cannot prune now: volume 'ns/other' is locked by an ingest (cbtfs-ingest pid 4242 on elsewhere, making snapshot 'other'" \
	"$REPO" prune "$R"
write_lock forget $V held "$now"
expect_fail_unchanged "$R" \
	"volume 'ns/vm' is locked by a forget (cbtfs-repo forget pid 4242 on elsewhere" \
	"$INGEST" --repo "$R" --volume $V --snapshot s --device "$T/small"
expect_fail_unchanged "$R" \
	"cannot prune now: volume 'ns/vm' is locked by a forget" \
	"$REPO" prune "$R"
# abandoned and expired ingest records block no prune, and stay for the
# next ingest of their volume
write_lock ingest ns/other abandoned "$now"
"$REPO" prune "$R" --dry-run >/dev/null || fail "an abandoned record blocked"
"$REPO" prune "$R" >/dev/null || fail "an abandoned record blocked a prune"
[ -e "$R/locks/$L" ] || fail "prune removed another volume's record"
write_lock prune "" held $((now - 1000))
"$INGEST" --repo "$R" --volume ns/other --snapshot s --device "$T/small" \
	>/dev/null 2>"$T/err" || fail "an expired prune record blocked"
grep -q "removing the lock locks/$L of a prune that stopped renewing it (cbtfs-repo prune pid 4242 on elsewhere" "$T/err" ||
	fail "no notice for the expired prune record: $(cat "$T/err")"
[ -e "$R/locks/$L" ] && fail "the expired prune record is still there"
"$REPO" forget "$R" ns/other s --force >/dev/null || fail "forget ns/other"

# 6. by policy: --keep-last 3 --keep-daily 2: the 3 newest, and the
#    newest of each of the 2 newest days (UTC, as cbtfs counts them).
#    When all generations were made the same day, g8, g9 and g10 stay (g10
#    for all three reasons); a run that crossed midnight (UTC) also keeps
#    the newest of the day before, so the expectation is computed from the
#    generations' creation times (g10 is the newest)
"$REPO" snapshots "$R" --volume $V --json >"$T/gens.json" ||
	fail "snapshots --json"
/usr/bin/python3 - "$T/gens.json" >"$T/policy" <<'PY' || fail "expectation"
import json, sys
gens = sorted(json.load(open(sys.argv[1])),
              key=lambda s: -int(s["snapshot"][1:]))
reasons = {s["snapshot"]: [] for s in gens}
for s in gens[:3]:
    reasons[s["snapshot"]].append("last")
days = []
for s in gens:
    day = s["created"][:10]
    if day not in days and len(days) < 2:
        days.append(day)
        reasons[s["snapshot"]].append("daily")
reasons[gens[0]["snapshot"]].append("newest")
kept = {n: r for n, r in reasons.items() if r}
rewritten = sum(1 for s in gens if s["snapshot"] in kept and
                s["parent"] is not None and s["parent"] not in kept)
print(len(gens) - len(kept), rewritten, len(days) > 1)
print(json.dumps(kept))
print(" ".join(sorted(kept, key=lambda n: int(n[1:]))))
PY
{ read -r want_forgotten want_rewritten two_days; read -r want_reasons
	read -r want_kept; } <"$T/policy"
if [ "$two_days" = False ]; then
	[ "$want_kept" = "g8 g9 g10" ] &&
		[ "$want_reasons" = '{"g10": ["last", "daily", "newest"], "g9": ["last"], "g8": ["last"]}' ] ||
		fail "expectation for one day: $want_kept $want_reasons"
else
	note "the generations were made on two days (UTC): keeping $want_kept"
fi
before=$(fingerprint "$R")
out=$("$REPO" forget "$R" --keep-last 3 --keep-daily 2 --dry-run --json) ||
	fail "policy --dry-run"
[ "$(json_field forgotten <<<"$out")" = "$want_forgotten" ] ||
	fail "policy dry run, want $want_forgotten forgotten: $out"
[ "$(fingerprint "$R")" = "$before" ] || fail "policy --dry-run changed $R"
out=$("$REPO" forget "$R" --volume $V --keep-last 3 --keep-daily 2 --json) ||
	fail "forget by policy"
[ "$(json_field forgotten <<<"$out")" = "$want_forgotten" ] ||
	fail "policy, want $want_forgotten forgotten: $out"
[ "$(json_field rewritten <<<"$out")" = "$want_rewritten" ] ||
	fail "policy rewrote, want $want_rewritten: $out"
/usr/bin/python3 -c 'import json,sys
d = json.load(sys.stdin)
r = {s["snapshot"]: s["reasons"] for s in d["snapshots"] if s["keep"]}
assert r == json.loads(sys.argv[1]), r' "$want_reasons" <<<"$out" ||
	fail "policy reasons, want $want_reasons: $out"
[ "$(kept | tr '\n' ' ')" = "$want_kept " ] ||
	fail "after the policy: $(kept | tr '\n' ' '), want $want_kept"
check_all "policy" "$T/cache2"

# 7. prune: plant a damage record of a chunk no manifest will use, one of
#    a chunk in use, an old temporary and a fresh one
ls "$R"/snapshots/* >/dev/null || fail "no manifests"
$CHUNKS "$R"/snapshots/* >"$T/ref" || fail "manifest_chunks.py"
(cd "$R" && find chunks -type f | sed 's|.*/||' | sort) >"$T/stored"
unused=$(comm -13 "$T/ref" "$T/stored" | head -1)
used=$(head -1 "$T/ref")
[ -n "$unused" ] || fail "forget left no unused chunk"
mkdir -p "$R/damaged" "$R/.tmp"
echo "why=test" >"$R/damaged/$unused"
echo "why=test" >"$R/damaged/$used"
echo old >"$R/.tmp/leftover.old"
touch -d '2 hours ago' "$R/.tmp/leftover.old"
echo new >"$R/.tmp/leftover.new"
before=$(fingerprint "$R")
out=$("$REPO" prune "$R" --dry-run --json) || fail "prune --dry-run: $out"
[ "$(fingerprint "$R")" = "$before" ] || fail "prune --dry-run changed $R"
want=$(comm -13 "$T/ref" "$T/stored" | wc -l)
[ "$(json_field chunks_deleted <<<"$out")" = "$want" ] ||
	fail "prune --dry-run would delete $(json_field chunks_deleted <<<"$out"), expected $want"
[ "$(json_field temp_removed <<<"$out")" = 1 ] || fail "dry run temp: $out"
out=$("$REPO" prune "$R" --json) || fail "prune: $out"
[ "$(json_field chunks_deleted <<<"$out")" = "$want" ] || fail "prune: $out"
[ "$(json_field damage_removed <<<"$out")" = 1 ] || fail "damage: $out"
(cd "$R" && find chunks -type f | sed 's|.*/||' | sort) >"$T/stored"
cmp -s "$T/ref" "$T/stored" ||
	fail "the store does not hold exactly the chunks the manifests use: $(diff "$T/ref" "$T/stored" | head -5)"
note "prune: $want chunks deleted, $(wc -l <"$T/ref") remain, all in use"
[ -e "$R/damaged/$unused" ] && fail "the damage record of an unused chunk stayed"
[ -e "$R/damaged/$used" ] || fail "the damage record of a chunk in use went"
rm "$R/damaged/$used"
[ -e "$R/.tmp/leftover.old" ] && fail "an old temporary stayed"
[ -e "$R/.tmp/leftover.new" ] || fail "a fresh temporary was removed"
out=$("$REPO" prune "$R" --json) || fail "second prune: $out"
[ "$(json_field chunks_deleted <<<"$out")" = 0 ] || fail "second prune: $out"
"$REPO" verify "$R" >/dev/null || fail "verify after prune"
check_all "prune"
check_all "prune, the index synced before" "$T/cache2"

# 8. the same on S3: three generations, forget the middle one, prune
for c in ceph-mon ceph-osd ceph-mgr radosgw radosgw-admin monmaptool curl; do
	if ! command -v $c >/dev/null; then
		note "SKIPPED the S3 part: $c is not installed (Ceph RGW)"
		exit 0
	fi
done
start_rgw
S=s3://$S3_BUCKET/retention
"$REPO" init "$S" --chunk-size 64K >/dev/null || fail "S3 init"
head -c 16M /dev/urandom >"$T/img"
for i in 1 2 3; do
	random_writes "$T/img" 30 200000 "$((i + 100))" "$T/w.$i"
	# h3 overwrites all h2 wrote: some of h2's chunks are unused then
	[ "$i" = 3 ] && while read -r off len; do
		head -c "$len" /dev/urandom | dd of="$T/img" bs=64K \
			seek="$off" oflag=seek_bytes conv=notrunc status=none \
			iflag=fullblock
	done <"$T/w.2"
	base=()
	[ "$i" -gt 1 ] && base=(--base "h$((i - 1))")
	"$INGEST" --repo "$S" --volume ns/s3 --snapshot "h$i" \
		--device "$T/img" "${base[@]}" >/dev/null || fail "S3 ingest h$i"
	sum[h$i]=$(sha "$T/img")
done
"$REPO" forget "$S" ns/s3 h2 >/dev/null || fail "S3 forget h2"
out=$("$REPO" prune "$S" --json) || fail "S3 prune: $out"
[ "$(json_field chunks_deleted <<<"$out")" -gt 0 ] || fail "S3 prune: $out"
mkdir -p "$T/s3m"
n=0
for k in $("$S3TOOL" "$S" keys snapshots/); do
	"$S3TOOL" "$S" save "$k" "$T/s3m/$n" || fail "get $k"
	n=$((n + 1))
done
[ $n = 2 ] || fail "S3: $n manifests"
$CHUNKS "$T"/s3m/* >"$T/ref"
"$S3TOOL" "$S" keys chunks/ | sed 's|.*/||' | sort >"$T/stored"
cmp -s "$T/ref" "$T/stored" ||
	fail "S3: the store does not hold exactly the chunks in use"
start_mount "$S" "$T/mnt"
for g in h1 h3; do
	[ "$(sha "$T/mnt/ns/s3/$g.img")" = "${sum[$g]}" ] ||
		fail "S3: $g does not restore byte-exact"
done
[ -e "$T/mnt/ns/s3/h2.img" ] && fail "S3: the forgotten h2 is still mounted"
stop_mount "$T/mnt"
note "S3: forget and prune: $(wc -l <"$T/ref") chunks remain, all in use"
exit 0
