#!/bin/bash
# --help and --version work, and every option --help names is documented in
# the program's man page; each cbtfs-repo command has its own --help; the
# repository is taken from -r, --repo, a first argument or
# CBTFS_REPOSITORY; snapshots are named VOLUME SNAPSHOT or VOLUME@SNAPSHOT;
# init creates missing parents.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

for p in cbtfs cbtfs-ingest cbtfs-repo cbtfs-k8s; do
	bin=$top_builddir/$p
	out=$("$bin" --help) || fail "$p --help exited non-zero"
	grep -q "^Usage: $p " <<<"$out" || fail "$p --help has no usage line"
	"$bin" --version | grep -q "0\.1\.0" || fail "$p --version"
	man=$top_srcdir/man/$p.1
	[ -f "$man" ] || fail "no man page for $p"
	# each option needs an entry of its own: a .B/.BI/.BR line naming it
	for opt in $(grep -oE -- '^ +(-[a-zA-Z], )?--[a-z][a-z-]+' <<<"$out" |
		grep -oE -- '--[a-z-]+' | sort -u); do
		grep -qE -- "^\.B[IR]? .*${opt//-/\\\\-}([^a-z\\-]|\$)" "$man" ||
			fail "$p: $opt is in --help but has no entry in $man"
	done
	for opt in $(grep -oE -- '^ +-o [a-z_]+' <<<"$out" | awk '{print $2}' |
		sort -u); do
		grep -qE -- "^\.B[IR]? \"?\\\\-o $opt([^a-z_]|\$)" "$man" ||
			fail "$p: -o $opt has no entry in $man"
	done
done

# every cbtfs-repo command's --help: its usage line, only its options, each
# documented
man=$top_srcdir/man/cbtfs-repo.1
cmds=$("$REPO" --help | sed -n 's/^  cbtfs-repo \([a-z]*\) REPO.*/\1/p' | sort -u)
[ "$(wc -w <<<"$cmds")" -ge 9 ] || fail "commands in --help: $cmds"
for c in $cmds; do
	out=$("$REPO" "$c" --help) || fail "cbtfs-repo $c --help"
	grep -q "^Usage: cbtfs-repo $c REPO" <<<"$out" ||
		fail "cbtfs-repo $c --help: $out"
	"$REPO" -h "$c" | cmp -s - <(echo "$out") || fail "-h $c differs"
	for opt in $(grep -oE -- '^ +(-[a-zA-Z], )?--[a-z][a-z-]+' <<<"$out" |
		grep -oE -- '--[a-z-]+' | sort -u); do
		grep -qE -- "^\.B[IR]? .*${opt//-/\\\\-}([^a-z\\-]|\$)" "$man" ||
			fail "cbtfs-repo $c: $opt has no entry in $man"
	done
done
"$REPO" restore --help | grep -q -- "--to PATH" || fail "restore --help"
"$REPO" restore --help | grep -q -- "--keep-last" && fail "restore --help lists forget's options"
"$REPO" -V | grep -q "0\.1\.0" || fail "cbtfs-repo -V"

# the repository: REPO, -r, --repo, CBTFS_REPOSITORY; init makes parents
R=$T/a/b/repo
"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init with missing parents"
head -c 300K /dev/urandom >"$T/img"
"$INGEST" --repo "$R" --volume ns/v --snapshot s1 --device "$T/img" \
	>/dev/null || fail "ingest s1"
"$INGEST" --repo "$R" --volume ns/v --snapshot s2 --device "$T/img" \
	--base s1 >/dev/null || fail "ingest s2"
for form in "$R" "-r $R" "--repo=$R"; do
	# shellcheck disable=SC2086 # the form is split on purpose
	"$REPO" snapshots $form --json >"$T/out" || fail "snapshots $form"
	grep -q '"snapshot":"s2"' "$T/out" || fail "snapshots $form: $(cat "$T/out")"
done
CBTFS_REPOSITORY=$R "$REPO" snapshots --json | grep -q '"snapshot":"s2"' ||
	fail "snapshots with CBTFS_REPOSITORY"
CBTFS_REPOSITORY=$R "$REPO" restore ns/v@s1 --to "$T/r1" >/dev/null ||
	fail "restore VOLUME@SNAPSHOT with CBTFS_REPOSITORY"
cmp "$T/r1" "$T/img" || fail "restore through CBTFS_REPOSITORY differs"
# a first argument that names a repository wins over the variable
CBTFS_REPOSITORY=$T/nowhere "$REPO" restore "$R" ns/v s2 --to "$T/r2" \
	>/dev/null || fail "restore REPO with CBTFS_REPOSITORY set elsewhere"
expect_fail "no repository given (REPO, -r REPO or \$CBTFS_REPOSITORY)" \
	env -u CBTFS_REPOSITORY "$REPO" snapshots
CBTFS_REPOSITORY=$R "$REPO" forget ns/v@s1 --dry-run >"$T/out" ||
	fail "forget VOLUME@SNAPSHOT"
grep -q "forget s1 " "$T/out" || fail "forget --dry-run ns/v@s1: $(cat "$T/out")"
expect_fail "name one snapshot" "$REPO" restore "$R" ns/v@s1 ns/v@s2 --to "$T/x"

# cbtfs-ingest: CBTFS_REPOSITORY, --snapshot VOLUME@NAME, --base latest
# (none yet: a full backup; then the newest), -V
"$INGEST" -V | grep -q "0\.1\.0" || fail "cbtfs-ingest -V"
CBTFS_REPOSITORY=$R "$INGEST" --snapshot ns/w@a1 --device "$T/img" \
	--base latest --json >"$T/out" || fail "ingest ns/w@a1 --base latest"
[ "$(json_field parent <"$T/out")" = None ] || fail "a1: $(cat "$T/out")"
[ "$(json_field volume <"$T/out")" = ns/w ] || fail "a1 volume"
[ "$(json_field chunks_read <"$T/out")" = 5 ] || fail "a1 read"
head -c 64K /dev/urandom | dd of="$T/img" conv=notrunc status=none
CBTFS_REPOSITORY=$R "$INGEST" -s ns/w@a2 -d "$T/img" -b latest --json \
	>"$T/out" || fail "ingest ns/w@a2 -b latest"
[ "$(json_field parent <"$T/out")" = a1 ] || fail "a2: $(cat "$T/out")"
[ "$(json_field chunks_changed <"$T/out")" = 1 ] || fail "a2 changed"
"$INGEST" -r "$R" -s ns/w@a3 -d "$T/img" -b latest --json >"$T/out" ||
	fail "ingest ns/w@a3"
[ "$(json_field parent <"$T/out")" = a2 ] || fail "a3: $(cat "$T/out")"
[ "$(json_field chunks_changed <"$T/out")" = 0 ] || fail "a3 changed"

# the table sizes its columns: a 60-character volume keeps them aligned
long=ns/$(printf 'v%.0s' $(seq 57))
"$INGEST" --repo "$R" --volume "$long" --snapshot s1 --device "$T/img" \
	>/dev/null || fail "ingest $long"
"$REPO" snapshots "$R" >"$T/table" || fail "snapshots"
/usr/bin/python3 - "$T/table" <<'PY' || fail "table not aligned: $(cat "$T/table")"
import re, sys
lines = open(sys.argv[1]).read().splitlines()
head = lines[0]
cols = [head.index(c) for c in ("NAME", "PARENT", "CREATED")]
for row in lines[1:]:
    # each column starts where its heading does, after two spaces
    for c in cols:
        assert row[c - 2:c] == "  " and row[c] != " ", (row, c)
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z+-]", row[cols[2]:]), row
assert len(lines) == 7, lines
PY

# an unknown option is a usage error (exit 2) that points to --help
for p in cbtfs-ingest cbtfs-repo; do
	"$top_builddir/$p" --bogus >/dev/null 2>"$T/err"
	[ $? = 2 ] || fail "$p --bogus: exit status not 2"
	grep -q -- "--help" "$T/err" || fail "$p --bogus: no hint"
done
"$CBTFS" onlyone >/dev/null 2>"$T/err"
[ $? = 2 ] || fail "cbtfs with one argument: exit status not 2"
expect_fail "unknown command 'frobnicate'" "$REPO" frobnicate "$T"
exit 0
