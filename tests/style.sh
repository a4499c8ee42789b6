#!/bin/bash
# The style a machine can check: scripts/check-style (79 columns, tabs,
# no trailing whitespace) passes on every C source; and it catches a long
# line (it can fail).
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
"$top_srcdir/scripts/check-style" >"$T/out" 2>&1 ||
	fail "style offences:"$'\n'"$(cat "$T/out")"
printf 'int x;\t\t\t\t\t\t\t\t\t/* %070d */\n' 0 >"$T/long.c"
printf 'int y; \n' >>"$T/long.c"
"$top_srcdir/scripts/check-style" "$T/long.c" >"$T/out" 2>&1 &&
	fail "check-style passed a 150-column line"
grep -q "long.c:1: .* columns" "$T/out" ||
	fail "no column offence: $(cat "$T/out")"
grep -q "long.c:2: trailing whitespace" "$T/out" ||
	fail "no whitespace offence: $(cat "$T/out")"
exit 0
