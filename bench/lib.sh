# What every benchmark starts with: the source and build trees, the
# test helpers (tests/functions.sh: $T, start_rgw, cleanup traps), and the
# measuring helpers below.  Source it first: . "$(dirname "$0")/lib.sh"
set -uo pipefail
top_srcdir=$(cd "$(dirname "$0")/.." && pwd)
top_builddir=${top_builddir:-$top_srcdir}
. "$top_srcdir/tests/functions.sh"

# drop: empties the page cache, for cold reads (root)
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# secs CMD...: wall seconds of CMD (its output discarded; fails loudly)
secs() {
	local t0 t1
	t0=$(date +%s.%N)
	"$@" >/dev/null 2>"$T/stderr" || { cat "$T/stderr" >&2; fail "$*"; }
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc -l
}

# mbps SECONDS: MB/s (10^6) of $size MiB in that time
mbps() { echo "scale=1; $size * 1.048576 / $1" | bc -l; }

# stats FORMAT V...: "min median max" of the values, each in FORMAT
stats() {
	local f=$1
	shift
	printf '%s\n' "$@" | grep . | sort -g | awk -v f="$f" '
		{ v[NR] = $1 }
		END { printf f " " f " " f, v[1], v[int((NR + 1) / 2)], v[NR] }'
}
