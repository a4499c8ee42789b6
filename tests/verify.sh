#!/bin/bash
# cbtfs-repo verify, on a directory and on S3 (a real Ceph RGW): a clean
# repository passes; a deleted chunk, a truncated one and a corrupt
# manifest are found by the structure check, a corrupt chunk only by
# --read-data; each problem names the snapshots (across volumes and
# generations, through the chains) and the byte ranges it damages;
# damage records are written, and removed once the chunk verifies; an
# ingest of the same data heals it all and the snapshots restore
# byte-exact.  'snapshots' shows an unreadable manifest.  'unlock'
# removes dead, expired and abandoned lock records and refuses live ones
# unless --force.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires /usr/bin/python3

CS=65536
MIB=1048576

# Objects of the repository under test, for damaging it: KIND is dir or
# s3, R the repository URL, PFX the S3 prefix.
obj_url() { echo "$S3_ENDPOINT/$S3_BUCKET/$PFX/$1"; }
obj_get() {	# KEY FILE
	if [ "$KIND" = dir ]; then cp "$R/$1" "$2"
	else s3_curl -o "$2" "$(obj_url "$1")"; fi
}
obj_put() {	# FILE KEY
	if [ "$KIND" = dir ]; then
		mkdir -p "$(dirname "$R/$2")" && cat "$1" >"$R/$2"
	else
		curl -sSf --aws-sigv4 "aws:amz:$AWS_REGION:s3" \
			--user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
			-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
			-T "$1" "$(obj_url "$2")"
	fi
}
obj_rm() {
	if [ "$KIND" = dir ]; then rm "$R/$1"
	else s3_curl -X DELETE "$(obj_url "$1")"; fi
}
obj_exists() {
	if [ "$KIND" = dir ]; then [ -e "$R/$1" ]
	else s3_curl -I -o /dev/null "$(obj_url "$1")" 2>/dev/null; fi
}
# flips (xor 0xff) the byte in the middle of an object
obj_flip() {
	obj_get "$1" "$T/obj" || fail "get $1"
	/usr/bin/python3 -c '
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[len(b) // 2] ^= 0xff
open(sys.argv[1], "wb").write(b)' "$T/obj"
	obj_put "$T/obj" "$1" || fail "put $1"
}
obj_truncate() {	# KEY BYTES
	obj_get "$1" "$T/obj" || fail "get $1"
	truncate -s "$2" "$T/obj"
	obj_put "$T/obj" "$1" || fail "put $1"
}

snap_id() {	# VOLUME NAME
	"$REPO" snapshots "$R" --volume "$1" --json | /usr/bin/python3 -c '
import json, sys
print([s["id"] for s in json.load(sys.stdin) if s["snapshot"] == sys.argv[1]][0])' "$2"
}
# problems FILE: "kind object" of each problem in a verify --json report
problems() {
	/usr/bin/python3 -c '
import json, sys
for p in json.load(open(sys.argv[1]))["problems"]:
    print(p["kind"], p["object"])' "$1"
}
# damage FILE OBJECT: "volume name ranges" of each snapshot it damages
damage() {
	/usr/bin/python3 -c '
import json, sys
for p in json.load(open(sys.argv[1]))["problems"]:
    if p["object"] == sys.argv[2]:
        for s in p["snapshots"]:
            print(s["volume"], s["snapshot"],
                  json.dumps(s["ranges"], separators=(",", ":")))' "$1" "$2"
}
# expect_damage FILE OBJECT WANT: damage FILE OBJECT prints WANT
expect_damage() {
	same "$2 damages" "$(damage "$1" "$2")" "$3"
}
# same WHAT GOT WANT: fails unless GOT is WANT
NL=$'\n'
same() {
	[ "$2" = "$3" ] || fail "$KIND: $1:$NL$2${NL}want$NL$3"
}
field() { json_field "$1" <"$2"; }

# verify_json OUT STATUS ARGS...: verify --json into OUT, exiting STATUS
verify_json() {
	local out=$1 want=$2 rc
	shift 2
	"$REPO" verify "$R" --json "$@" >"$out" 2>"$out.err"
	rc=$?
	[ $rc = "$want" ] ||
		fail "$KIND: verify $* exited $rc, want $want:$NL$(cat "$out" "$out.err")"
}

# forge FILE ID VOLUME NAME PARENT CAPACITY INDEX:HEXID...: a manifest
# (uncompressed, with its digest; see cbtfs-repository(5))
forge() {
	/usr/bin/python3 - "$@" <<'PY'
import hashlib, struct, sys

def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7f, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)

def field(num, value):
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    return varint(num << 3 | 2) + varint(len(value)) + value

out, mid, vol, name, parent, cap = sys.argv[1:7]
msg = (field(1, mid.encode()) + field(2, vol.encode()) +
       field(3, name.encode()) + field(4, parent.encode()) +
       field(5, int(cap)) + field(6, 65536) + field(7, 1))
for e in sys.argv[7:]:
    i, h = e.split(":")
    msg += field(12, field(1, int(i)) + field(2, bytes.fromhex(h)))
open(out, "wb").write(b"CBTc" + bytes([1, 4, 0, 0]) +
                      struct.pack("<Q", len(msg)) +
                      hashlib.sha256(msg).digest() + msg)
PY
}

gen() {	# IMAGE OFFSET LENGTH: random bytes written into the image
	head -c "$3" /dev/urandom |
		dd of="$1" bs=64K seek="$2" oflag=seek_bytes conv=notrunc \
			status=none iflag=fullblock
}

scenario() {
	local v a2 a16 a60 a5 man out n want
	"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "$KIND: init"
	# ns/a: 4 MiB; gen2 rewrites chunks 16-19; gen3 shrinks to 3.5 MiB
	# (56 chunks) and rewrites chunks 48-49
	# (chunk 3 a copy of chunk 2); ns/b: 3 MiB + 1000 bytes whose first
	# MiB is ns/a's (shared chunks); gen2 rewrites chunks 32-33, gen3
	# chunk 40
	head -c $((4 * MIB)) /dev/urandom >"$T/a"
	dd if="$T/a" bs=$CS skip=2 count=1 status=none |
		dd of="$T/a" bs=$CS seek=3 conv=notrunc status=none
	{ head -c $MIB "$T/a"; head -c $((2 * MIB + 1000)) /dev/urandom; } >"$T/b"
	for g in 1 2 3; do
		case $g in
		2) gen "$T/a" $MIB 200000; gen "$T/b" $((2 * MIB)) 100000 ;;
		3) truncate -s $((56 * CS)) "$T/a"
		   gen "$T/a" $((3 * MIB)) 100000; gen "$T/b" $((40 * CS)) $CS ;;
		esac
		for v in a b; do
			cp "$T/$v" "$T/$v$g"
			base=()
			[ $g -gt 1 ] && base=(--base gen$((g - 1)))
			"$INGEST" --repo "$R" --volume ns/$v --snapshot gen$g \
				--device "$T/$v" "${base[@]}" >/dev/null ||
				fail "$KIND: ingest ns/$v gen$g"
		done
	done

	# a clean repository
	out=$("$REPO" verify "$R") || fail "$KIND: verify of a clean repository: $out"
	grep -q "^verify: 6 manifests, [0-9]* chunks checked in .*: no problems$" <<<"$out" ||
		fail "$KIND: clean verify said: $out"
	verify_json "$T/clean.json" 0 --read-data
	n=$(field chunks_checked "$T/clean.json")
	# ns/a: 63 + 4 + 2, ns/b: 33 of its own + 2 + 1 (the rest shared)
	[ "$n" = 105 ] || fail "$KIND: $n chunks checked, want 105"
	[ "$(field chunks_read "$T/clean.json")" = "$n" ] ||
		fail "$KIND: --read-data read $(field chunks_read "$T/clean.json") of $n"
	# random data is stored as it is, but for the frame header; the
	# last chunk of ns/b, mostly zero, compresses
	b=$(field read_bytes "$T/clean.json")
	[ "$b" -gt $(((n - 1) * CS)) ] && [ "$b" -le $((n * (CS + 16))) ] ||
		fail "$KIND: read_bytes $b for $n chunks"
	[ "$(field ok "$T/clean.json")" = True ] || fail "$KIND: clean not ok"
	verify_json "$T/half.json" 0 --read-data --subset 50
	[ "$(field chunks_read "$T/half.json")" = $(((n + 1) / 2)) ] ||
		fail "$KIND: --subset 50 read $(field chunks_read "$T/half.json") of $n"
	verify_json "$T/a.json" 0 --volume ns/a --read-data
	[ "$(field chunks_checked "$T/a.json")" = 69 ] ||
		fail "$KIND: --volume ns/a checked $(field chunks_checked "$T/a.json")"

	# the damage: chunk 2 of ns/a (also ns/b's) deleted; chunk 16 of
	# ns/a gen1 (rewritten in gen2) truncated; chunk 60 of ns/a corrupt;
	# the manifest of ns/b gen2 corrupt; and a stale damage record of a
	# good chunk
	a2=$(chunk_id "$T/a1" 2 $CS)
	a16=$(chunk_id "$T/a1" 16 $CS)
	a60=$(chunk_id "$T/a1" 60 $CS)
	a5=$(chunk_id "$T/a1" 5 $CS)
	man=snapshots/$(snap_id ns/b gen2)
	obj_get "$man" "$T/manifest.saved" || fail "$KIND: save $man"
	obj_rm "$(chunk_key "$a2")" || fail "$KIND: rm"
	obj_truncate "$(chunk_key "$a16")" 10
	obj_flip "$(chunk_key "$a60")"
	obj_flip "$man"
	printf 'why=test\nfound=1\nhost=x\n' >"$T/rec"
	obj_put "$T/rec" "damaged/$a5" || fail "$KIND: put record"

	# the structure check: the missing, the truncated, the manifest
	verify_json "$T/s.json" 1
	want="missing_chunk $(chunk_key "$a2")
corrupt_chunk $(chunk_key "$a16")
unreadable_manifest $man"
	same "structure check" "$(problems "$T/s.json")" "$want"
	[ "$(field ok "$T/s.json")" = False ] || fail "$KIND: ok with problems"
	expect_damage "$T/s.json" "$(chunk_key "$a2")" "ns/a gen1 [[131072,131072]]
ns/a gen2 [[131072,131072]]
ns/a gen3 [[131072,131072]]
ns/b gen1 [[131072,131072]]"
	expect_damage "$T/s.json" "$(chunk_key "$a16")" "ns/a gen1 [[1048576,65536]]"
	# ns/b gen3 has only chunk 40 of its own: the rest is lost with gen2
	# (to its capacity, 3 MiB + 1000)
	expect_damage "$T/s.json" "$man" "ns/b gen3 [[0,2621440],[2686976,459752]]"
	grep -q "truncated: 10 bytes" "$T/s.json" || fail "$KIND: truncation"
	obj_exists "damaged/$a2" || fail "$KIND: no record of the missing chunk"
	obj_exists "damaged/$a16" || fail "$KIND: no record of the truncated chunk"
	obj_exists "damaged/$a60" && fail "$KIND: corrupt chunk recorded without --read-data"
	obj_exists "damaged/$a5" && fail "$KIND: the record of a good chunk stayed"
	[ "$(field damage_marked "$T/s.json")" = 2 ] ||
		fail "$KIND: damage_marked $(field damage_marked "$T/s.json")"
	[ "$(field damage_cleared "$T/s.json")" = 1 ] ||
		fail "$KIND: damage_cleared $(field damage_cleared "$T/s.json")"
	# the same as text, with the error logged where found (ns/b gen2 is
	# unreadable: its 2 chunks are not known)
	out=$("$REPO" verify "$R" 2>&1) && fail "$KIND: text verify exited 0"
	grep -qx "missing_chunk $(chunk_key "$a2"): missing from the repository" <<<"$out" &&
		grep -qx "  ns/b gen1: bytes 131072+131072" <<<"$out" &&
		grep -qx "  ns/b gen3: bytes 0+2621440, 2686976+459752" <<<"$out" &&
		grep -q "^verify: 6 manifests, 103 chunks checked in .*: 3 problems$" <<<"$out" &&
		grep -q "manifest $man is corrupt" <<<"$out" ||
		fail "$KIND: text verify said:"$'\n'"$out"

	# reading the data finds the corrupt chunk too
	verify_json "$T/r.json" 1 --read-data
	want="missing_chunk $(chunk_key "$a2")
corrupt_chunk $(chunk_key "$a16")
corrupt_chunk $(chunk_key "$a60")
unreadable_manifest $man"
	[ "$(problems "$T/r.json" | sort)" = "$(sort <<<"$want")" ] ||
		fail "$KIND: --read-data found"$'\n'"$(problems "$T/r.json")"
	# not gen3: chunk 60 is beyond its capacity
	expect_damage "$T/r.json" "$(chunk_key "$a60")" "ns/a gen1 [[3932160,65536]]
ns/a gen2 [[3932160,65536]]"
	expect_damage "$T/r.json" "$man" "ns/b gen3 [[0,2621440],[2686976,459752]]"
	obj_exists "damaged/$a60" || fail "$KIND: no record of the corrupt chunk"
	verify_json "$T/r100.json" 1 --read-data --subset 100 --jobs 3
	[ "$(problems "$T/r100.json")" = "$(problems "$T/r.json")" ] ||
		fail "$KIND: --subset 100 found"$'\n'"$(problems "$T/r100.json")"
	# a known-damaged chunk is reported even without --read-data
	verify_json "$T/s2.json" 1
	[ "$(problems "$T/s2.json")" = "$(problems "$T/r.json")" ] ||
		fail "$KIND: recorded corrupt chunk not found again"
	# one volume: its snapshots only; the unreadable manifest's volume is
	# unknown, so it is reported too
	verify_json "$T/b.json" 1 --volume ns/b --read-data
	want="missing_chunk $(chunk_key "$a2")
unreadable_manifest $man"
	[ "$(problems "$T/b.json")" = "$want" ] ||
		fail "$KIND: --volume ns/b found"$'\n'"$(problems "$T/b.json")"
	expect_damage "$T/b.json" "$(chunk_key "$a2")" "ns/b gen1 [[131072,131072]]"
	expect_fail "volume 'ns/none' has no snapshot" \
		"$REPO" verify "$R" --volume ns/none

	# snapshots, as a host whose index never read the manifest, marks it
	"$REPO" snapshots "$R" --cache-dir "$T/fresh.$KIND" >"$T/snaps" 2>&1 &&
		fail "$KIND: snapshots exited 0 with an unreadable manifest"
	grep -q "^UNREADABLE *$man" "$T/snaps" ||
		fail "$KIND: snapshots did not mark $man: $(cat "$T/snaps")"
	out=$("$REPO" snapshots "$R" --cache-dir "$T/fresh.$KIND" --json 2>/dev/null) &&
		fail "$KIND: snapshots --json exited 0 with an unreadable manifest"
	/usr/bin/python3 -c '
import json, sys
s = json.loads(sys.argv[1])
assert {"id": sys.argv[2], "unreadable": True} in s, s
assert len(s) == 6, s' "$out" "${man#snapshots/}" ||
		fail "$KIND: snapshots --json: $out"

	# healing: the manifest put back, the same data ingested again
	obj_put "$T/manifest.saved" "$man" || fail "$KIND: put back $man"
	"$INGEST" --repo "$R" --volume ns/a --snapshot heal --device "$T/a1" \
		>/dev/null || fail "$KIND: healing ingest"
	out=$("$REPO" verify "$R" --read-data 2>&1) ||
		fail "$KIND: verify after healing (the healing is not there?):"$'\n'"$out"
	for id in $a2 $a16 $a60 $a5; do
		obj_exists "damaged/$id" && fail "$KIND: damage record $id left"
	done
	if [ -c /dev/fuse ] && command -v fusermount3 >/dev/null; then
		start_mount "$R" "$T/mnt.$KIND"
		for v in a b; do
			for g in 1 2 3; do
				cmp "$T/mnt.$KIND/ns/$v/gen$g.img" "$T/$v$g" ||
					fail "$KIND: ns/$v gen$g differs after healing"
			done
		done
		stop_mount "$T/mnt.$KIND"
	else
		note "no FUSE: healed snapshots not restored"
	fi

	# chains: a missing parent, a loop, a parent of another volume (the
	# last two in manifests forged for the purpose)
	g1=snapshots/$(snap_id ns/a gen1)
	b1id=$(snap_id ns/b gen1)
	obj_get "$g1" "$T/g1.saved" || fail "$KIND: get $g1"
	obj_rm "$g1" || fail "$KIND: rm $g1"
	x=$(uuidgen) y=$(uuidgen) z=$(uuidgen)
	forge "$T/x" "$x" ns/loop x "$y" $((2 * CS)) "0:$a2"
	forge "$T/y" "$y" ns/loop y "$x" $((2 * CS)) "0:$a2"
	forge "$T/z" "$z" ns/c z "$b1id" $((2 * CS)) "0:$a2"
	for m in x y z; do
		obj_put "$T/$m" "snapshots/${!m}" || fail "$KIND: put $m"
	done
	verify_json "$T/c.json" 1
	least=$(printf '%s\n' "$x" "$y" | sort | head -1)
	want=$(printf 'broken_chain %s\n' "$g1" "snapshots/$least" \
		"snapshots/$z" | sort)
	same "chain problems" "$(problems "$T/c.json")" "$want"
	# what no manifest below the missing one names: gen2 has chunks
	# 16-19, gen3 (56 chunks) 48-49 and, through gen2, 16-19
	expect_damage "$T/c.json" "$g1" "ns/a gen2 [[0,1048576],[1310720,2883584]]
ns/a gen3 [[0,1048576],[1310720,1835008],[3276800,393216]]"
	expect_damage "$T/c.json" "snapshots/$least" "ns/loop x [[65536,65536]]
ns/loop y [[65536,65536]]"
	expect_damage "$T/c.json" "snapshots/$z" "ns/c z [[65536,65536]]"
	grep -q "its parent links form a loop" "$T/c.json" &&
		grep -q "another volume, 'ns/b'" "$T/c.json" &&
		grep -q "missing: snapshots name it as their parent" "$T/c.json" ||
		fail "$KIND: chain problems: $(cat "$T/c.json")"
	for m in x y z; do
		obj_rm "snapshots/${!m}" || fail "$KIND: rm $m"
	done
	obj_put "$T/g1.saved" "$g1" || fail "$KIND: put back $g1"
	"$REPO" verify "$R" >/dev/null || fail "$KIND: verify after the chain checks"
	note "$KIND: verify scenario passed"
}

KIND=dir
R=$T/repo
scenario

# usage errors
for args in "--subset 50" "--read-data --subset 0" "--read-data --subset 101" \
	"--jobs 0" "--force" "--chunk-size 1M"; do
	"$REPO" verify "$R" $args >/dev/null 2>&1
	[ $? = 2 ] || fail "verify $args: not a usage error"
done
"$REPO" unlock "$R" --json >/dev/null 2>&1
[ $? = 2 ] || fail "unlock --json: not a usage error"

# progress on a terminal only: none in a pipe, a redrawn line on a tty
"$REPO" verify "$R" --read-data 2>"$T/err" >/dev/null
grep -q $'\r' "$T/err" && fail "progress drawn without a terminal"
if command -v script >/dev/null; then
	script -qec "'$REPO' verify '$R' --read-data --jobs 1" /dev/null \
		>"$T/tty" </dev/null || fail "verify on a terminal"
	grep -q $'\rverify: ' "$T/tty" ||
		fail "no progress on a terminal: $(cat -v "$T/tty")"
fi

# unlock: records written by hand (see repo.c, lock_format)
U=$T/locks
"$REPO" init "$U" >/dev/null || fail "init $U"
now=$(date +%s)
lock() {	# FILE VOLUME STATE HOST RENEWED [PID START]
	cat >"$U/locks/$1" <<REC
volume=$2
snapshot=s
state=$3
host=$4
boot_id=$(cat /proc/sys/kernel/random/boot_id)
pidns=$(readlink /proc/self/ns/pid | tr -dc 0-9)
pid=${6:-4242}
start=${7:-99}
created=$5
renewed=$5
lease=300
REC
}
mkdir -p "$U/locks"
live=$(uuidgen) expired=$(uuidgen) abandoned=$(uuidgen) other=$(uuidgen)
dead=$(uuidgen)
lock "$live" ns/a held elsewhere "$now"
lock "$expired" ns/a held elsewhere $((now - 1000))
lock "$abandoned" ns/a abandoned "$(hostname)" "$now"
lock "$other" ns/b abandoned elsewhere "$now"
# a process of this host that is gone: dead
sleep 0 &
pid=$!
wait $pid
lock "$dead" ns/a pending "$(hostname)" "$now" $pid 12345
out=$("$REPO" unlock "$U" --volume ns/a 2>&1) && fail "unlock of a live lock exited 0: $out"
grep -qx "removed locks/$expired (expired, ns/a, .*on elsewhere.*)" <<<"$out" ||
	fail "expired lock: $out"
grep -qx "removed locks/$abandoned (abandoned, ns/a, .*)" <<<"$out" ||
	fail "abandoned lock: $out"
grep -qx "removed locks/$dead (dead, ns/a, .*)" <<<"$out" || fail "dead lock: $out"
grep -q "not removing locks/$live of volume 'ns/a': it is live (.*on elsewhere" <<<"$out" ||
	fail "live lock: $out"
[ -e "$U/locks/$live" ] || fail "the live lock was removed"
[ -e "$U/locks/$expired" ] || [ -e "$U/locks/$abandoned" ] ||
	[ -e "$U/locks/$dead" ] && fail "a removable lock is left"
[ -e "$U/locks/$other" ] || fail "--volume ns/a removed a lock of ns/b"
out=$("$REPO" unlock "$U" --volume ns/a --force 2>&1) || fail "unlock --force: $out"
grep -qx "removed locks/$live (live, ns/a, .*on elsewhere.*)" <<<"$out" ||
	fail "unlock --force: $out"
[ -e "$U/locks/$live" ] && fail "--force left the live lock"
out=$("$REPO" unlock "$U" --volume ns/a) || fail "unlock of nothing"
[ "$out" = "no lock records of volume 'ns/a' to remove" ] || fail "nothing: $out"
echo garbage >"$U/locks/$live"
expect_fail "not removing locks/$live: the record cannot be read" \
	"$REPO" unlock "$U"
[ -e "$U/locks/$live" ] || fail "a garbled lock was removed without --force"
out=$("$REPO" unlock "$U" --force) || fail "unlock --force of all: $out"
[ -z "$(ls "$U/locks")" ] || fail "locks left: $(ls "$U/locks")"
out=$("$REPO" unlock "$U") || fail "unlock of nothing"
[ "$out" = "no lock records to remove" ] || fail "nothing: $out"

# the same scenario on S3
for c in ceph-mon ceph-osd ceph-mgr radosgw radosgw-admin monmaptool curl; do
	if ! command -v $c >/dev/null; then
		note "SKIPPED the S3 half: $c is not installed (Ceph RGW)"
		exit 0
	fi
done
start_rgw
KIND=s3
PFX=verify
R=s3://$S3_BUCKET/$PFX
scenario
exit 0
