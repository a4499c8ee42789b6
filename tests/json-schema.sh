#!/bin/bash
# Every JSON output (ingest, snapshots, verify with a problem, forget,
# prune, restore) has exactly the documented fields, each of its type,
# times in RFC 3339 UTC, null for what is unset; and the man page names
# every field (tests/jsonschema.py holds the schema).
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires /usr/bin/python3
SCHEMA="/usr/bin/python3 $top_srcdir/tests/jsonschema.py"
MAN=$top_srcdir/man

R=$T/repo
"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init"
head -c 1M /dev/urandom >"$T/img"
"$INGEST" --repo "$R" --volume ns/v --snapshot s1 --device "$T/img" --json \
	>"$T/ingest1.json" || fail "ingest s1"
head -c 64K /dev/urandom | dd of="$T/img" conv=notrunc status=none
"$INGEST" --repo "$R" --volume ns/v --snapshot s2 --device "$T/img" \
	--base s1 --json >"$T/ingest2.json" || fail "ingest s2"
for f in ingest1 ingest2; do
	$SCHEMA ingest "$T/$f.json" "$MAN/cbtfs-ingest.1" || fail "$f"
done
[ "$(json_field parent <"$T/ingest2.json")" = s1 ] || fail "parent of s2"
[ "$(json_field parent <"$T/ingest1.json")" = None ] || fail "parent of s1"

"$REPO" snapshots "$R" --json >"$T/snapshots.json" || fail "snapshots"
$SCHEMA snapshots "$T/snapshots.json" "$MAN/cbtfs-repo.1" || fail "snapshots"
"$REPO" restore "$R" ns/v@s2 --to "$T/out" --verify --json \
	>"$T/restore.json" || fail "restore"
$SCHEMA restore "$T/restore.json" "$MAN/cbtfs-repo.1" || fail "restore"
"$REPO" forget "$R" ns/v@s1 --dry-run --json >"$T/forget.json" ||
	fail "forget"
$SCHEMA forget "$T/forget.json" "$MAN/cbtfs-repo.1" || fail "forget"
"$REPO" prune "$R" --dry-run --json >"$T/prune.json" || fail "prune"
$SCHEMA prune "$T/prune.json" "$MAN/cbtfs-repo.1" || fail "prune"
# verify with a problem, so that its nested objects are checked too
rm "$(find "$R/chunks" -type f | head -n 1)"
"$REPO" verify "$R" --json >"$T/verify.json" && fail "verify missed it"
$SCHEMA verify "$T/verify.json" "$MAN/cbtfs-repo.1" || fail "verify"
grep -q '"snapshot":' "$T/verify.json" || fail "verify names no snapshot"
exit 0
