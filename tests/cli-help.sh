#!/bin/bash
# --help and --version work, and every option --help names is documented in
# the program's man page.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"

for p in cbtfs cbtfs-ingest cbtfs-repo; do
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
