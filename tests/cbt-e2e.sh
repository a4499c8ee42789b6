#!/bin/bash
# Changed Block Tracking end to end: three generations of a 64 MiB image,
# each "snapshotted" by copying it into the fixture driver's state, ingested
# with --changes csi and with --changes sidecar, FIXED_LENGTH and
# VARIABLE_LENGTH, max_results 7, 1 and 0 (the server's 256).  Only the
# chunks the allocated or changed blocks touch are read from the device, and
# every generation restores byte-exact from the mount.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
. "$top_srcdir/tests/cbt-fixture.inc"
requires_fuse
requires_grpc_fixture

CS=$((256 * 1024))
R=$T/repo
MNT=$T/mnt
STATE=$T/state
"$REPO" init "$R" --chunk-size 256K >/dev/null || fail "init"
start_cbt_server "$STATE"

img=$T/img
truncate -s 64M "$img"

# volume  api      block type       max_results
VOLUMES="
csi-fixed csi      FIXED_LENGTH     7
csi-var   csi      VARIABLE_LENGTH  1
sc-fixed  sidecar  FIXED_LENGTH     0
sc-var    sidecar  VARIABLE_LENGTH  7
"

# snapshot N: the image as it is now becomes handle hN, VolumeSnapshot
# ns/genN of the sidecar, and the reference copy $T/genN.img.
snapshot() {
	local n=$1 map="" i
	cp --sparse=always "$img" "$STATE/h$n.snap"
	cp --sparse=always "$img" "$T/gen$n.img"
	for ((i = 1; i <= n; i++)); do
		map="$map${map:+,} \"ns/gen$i\": \"h$i\""
	done
	SIDECAR_MAP="{$map}"
}

# ingest_gen N BASE: ingests genN into every volume and checks what each
# summary says against the images.
ingest_gen() {
	local n=$1 base=$2 vol api type mr args want out dev=$img
	if [ -n "$base" ]; then
		want=$($IMGTOOL changed "$T/$base.img" "$img" $CS)
	else
		want=$($IMGTOOL nonzero "$img" $CS)
	fi
	while read -r vol api type mr; do
		[ -n "$vol" ] || continue
		cbt_config "$STATE" "{\"block_type\": \"$type\",
			\"sidecar_snapshots\": $SIDECAR_MAP}"
		args=(--changes "$api" --max-results "$mr" --snapshot-id "h$n")
		if [ "$api" = csi ]; then
			args+=(--csi-endpoint "$CSI_TARGET")
		else
			args+=(--cbt-address "$SIDECAR_TARGET" --ca-file "$CBT_CA"
				--namespace ns --token-file "$CBT_TOKEN_FILE")
		fi
		[ -n "$base" ] && args+=(--base "$base")
		# a volume restored from a snapshot may be larger than the
		# snapshot: only the capacity the service reports is backed up
		if [ "$vol" = csi-fixed ] && [ "$n" = 1 ]; then
			dev=$T/bigger.img
			cp --sparse=always "$img" "$dev"
			truncate -s +1M "$dev"
		else
			dev=$img
		fi
		out=$("$INGEST" --repo "$R" --volume "ns/$vol" \
			--snapshot "gen$n" --device "$dev" "${args[@]}" \
			--json 2>"$T/err") || {
			cat "$T/err" >&2
			fail "$vol gen$n: ingest failed"
		}
		[ "$(json_field changes <<<"$out")" = "$api" ] ||
			fail "$vol gen$n: changes"
		[ "$(json_field capacity <<<"$out")" = $((64 << 20)) ] ||
			fail "$vol gen$n: capacity $(json_field capacity <<<"$out")"
		[ "$(json_field full_fallback <<<"$out")" = False ] ||
			fail "$vol gen$n: fell back to a full backup"
		# read exactly the chunks the service's ranges touch
		[ "$(json_field chunks_read <<<"$out")" = "$want" ] ||
			fail "$vol gen$n read $(json_field chunks_read <<<"$out") chunks, want $want"
		[ "$(json_field read_bytes <<<"$out")" = $((want * CS)) ] ||
			fail "$vol gen$n read $(json_field read_bytes <<<"$out") bytes, want $((want * CS))"
		[ "$(json_field chunks_changed <<<"$out")" = "$want" ] ||
			fail "$vol gen$n changed $(json_field chunks_changed <<<"$out"), want $want"
	done <<<"$VOLUMES"
	note "gen$n: $want chunks read and changed in each of 4 volumes"
}

# generation 1: about 12 MiB of random data, the rest never written
random_writes "$img" 12 2097152 1 "$T/r1"
snapshot 1
ingest_gen 1 ""
# nothing but the allocated chunks: a full scan would read 256
[ "$($IMGTOOL nonzero "$img" $CS)" -lt 200 ] || fail "gen1 too dense"

# generations 2 and 3: small writes, deltas against the previous one
random_writes "$img" 8 300000 2 "$T/r2"
snapshot 2
ingest_gen 2 gen1
random_writes "$img" 10 20000 3 "$T/r3"
dd if=/dev/zero of="$img" bs=4096 seek=100 count=3 conv=notrunc status=none
snapshot 3
ingest_gen 3 gen2

# the calls made: Allocated once per volume, then Delta with the recorded
# base handle, with the max_results of each volume
cbt_calls "$STATE" | /usr/bin/python3 -c '
import json, sys
calls = [json.loads(l) for l in sys.stdin if l.strip()]
calls = [c for c in calls if c["method"] != "plugin_info"]
assert len(calls) == 12, len(calls)
for c in calls:
    assert c["status"] == "OK" and c["starting_offset"] == 0, c
alloc = [c for c in calls if c["method"] == "allocated"]
assert len(alloc) == 4, alloc
deltas = sorted((c["api"], c["base"], c["snapshot"]) for c in calls
                if c["method"] == "delta")
want = sorted([("csi", "h1", "h2"), ("csi", "h2", "h3")] * 2 +
              [("sidecar", "h1", "gen2"), ("sidecar", "h2", "gen3")] * 2)
assert deltas == want, deltas
assert sorted(set(c["max_results"] for c in calls)) == [0, 1, 7]
' || fail "calls: $(cbt_calls "$STATE")"

# the manifests record each snapshot's CSI handle and the driver's name
out=$("$REPO" snapshots "$R" --volume ns/csi-var --json) || fail "snapshots"
/usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)
assert [x["csi_snapshot_handle"] for x in s] == ["h1", "h2", "h3"], s
assert all(x["csi_driver"] == "hostpath.csi.k8s.io" for x in s), s
assert all(x["changes"] == "csi" for x in s), s
assert [x["parent"] for x in s] == [None, "gen1", "gen2"], s
' <<<"$out" || fail "manifests: $out"

start_mount "$R" "$MNT"
while read -r vol api type mr; do
	[ -n "$vol" ] || continue
	for n in 1 2 3; do
		f=$MNT/ns/$vol/gen$n.img
		[ "$(stat -c %s "$f")" = $((64 << 20)) ] || fail "$f: size"
		[ "$(sha "$f")" = "$(sha "$T/gen$n.img")" ] ||
			fail "$f differs from the snapshot"
	done
done <<<"$VOLUMES"
dd if="$MNT/ns/sc-var/gen3.img" of="$T/restored" bs=1M status=none ||
	fail "dd restore"
cmp "$T/restored" "$T/gen3.img" || fail "dd restore differs"
stop_mount "$MNT"
note "3 generations x 4 volumes restored byte-exact"
exit 0
