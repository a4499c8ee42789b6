# shellcheck shell=bash disable=SC2034  # WALL, CPU, MBS...: set for the callers
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

# ---- shared by read.sh, ingest.sh, sparse.sh, memory.sh ------------------

# CLIENT: the prefix that runs a client command (empty, or taskset -c 1
# under pin_server 1)
CLIENT=()

# pin_server 0|1 PID...: 1 runs the server PIDs (every thread) on CPU 0
# and makes CLIENT run clients on CPU 1, as if the server were another
# machine; 0 lets everything run anywhere again
pin_server() {
	local mode=$1 p cpus
	shift
	if [ "$mode" = 1 ]; then
		[ "$(nproc)" -ge 2 ] || fail "PIN=1 needs 2 CPUs"
		cpus=0
		CLIENT=(taskset -c 1)
	else
		cpus=0-$(($(nproc) - 1))
		CLIENT=()
	fi
	for p in "$@"; do
		taskset -a -p -c "$cpus" "$p" >/dev/null || fail "taskset $p"
	done
}

# on_client PID: moves every thread of PID to the client CPU (when pinned)
on_client() {
	[ ${#CLIENT[@]} -gt 0 ] && taskset -a -p -c 1 "$1" >/dev/null
	return 0
}

# pid_cpu PID: CPU seconds (user + system, every thread) PID has used
pid_cpu() {
	awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' \
		"/proc/$1/stat"
}

# timed CMD...: runs CMD (an executable, not a function); sets WALL (s) and
# CPU (user + system seconds of CMD and its children); output in $T/out
timed() {
	local t0 t1
	t0=$(date +%s.%N)
	/usr/bin/time -f '%U %S' -o "$T/time" "$@" >"$T/out" 2>"$T/stderr" ||
		{ cat "$T/stderr" >&2; fail "$*"; }
	t1=$(date +%s.%N)
	WALL=$(echo "$t1 - $t0" | bc -l)
	CPU=$(tail -n 1 "$T/time" | awk '{ print $1 + $2 }')
}

# calc EXPR: bc with 3 decimals
calc() { echo "scale=3; $*" | bc -l | sed 's/^\./0./; s/^-\./-0./'; }

# target WHAT VALUE OP GOAL: one line "WHAT  VALUE  (target OP GOAL)  met"
target() {
	local verdict="not met"
	[ "$(echo "$2 $3 $4" | bc -l)" = 1 ] && verdict=met
	printf '  %-54s %8.3f  (target %s %s)  %s\n' "$1" "$2" "$3" "$4" "$verdict"
}

# median V...: the median of the values
median() { printf '%s\n' "$@" | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# VREADER: the verifying raw reader (bench/vreader.c), built for each run
# into $T, so no binary lands in the source tree (bench/ is distributed)
VREADER=$T/vreader
vreader_build() {
	# shellcheck disable=SC2046
	${CC:-cc} -O2 -Wall -Wextra -o "$VREADER" "$top_srcdir/bench/vreader.c" \
		$(pkg-config --cflags --libs libcurl libcrypto libzstd) -lpthread ||
		fail "cannot build bench/vreader.c (libcurl, OpenSSL, zstd headers)"
}

# S3TOOL: tests/s3tool (a check program), built on demand
S3TOOL=$top_builddir/tests/s3tool
s3tool_build() {
	[ -x "$S3TOOL" ] || make -C "$top_builddir" tests/s3tool >/dev/null ||
		fail "cannot build tests/s3tool"
}

# has_restore: cbtfs-repo has the restore command (issue 11): its help,
# general or per command, shows "restore ... --to PATH"
has_restore() {
	"$REPO" restore --help 2>&1 | grep -q -- 'restore REPO VOLUME SNAPSHOT --to PATH'
}
