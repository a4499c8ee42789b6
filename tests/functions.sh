# Shared helpers for the cbtfs shell tests.  Source it first thing:
#   . "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
#
# Every test gets its own temporary directory $T (with XDG_CACHE_HOME
# inside it, so the local index is private to the test), and an EXIT trap
# that unmounts what the test mounted and stops what it started, by PID,
# whether it passed or failed.  Exit 77 means "skipped".

set -u
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
CBTFS=$top_builddir/cbtfs
INGEST=$top_builddir/cbtfs-ingest
REPO=$top_builddir/cbtfs-repo

T=$(mktemp -d "${TMPDIR:-/tmp}/cbtfs-test.XXXXXX")
export XDG_CACHE_HOME=$T/cache

_cleanups=()
_mounts=()
_pids=()

# Runs cmd at exit (LIFO, after unmounts and process stops).
cleanup_fn() { _cleanups+=("$*"); }

_cleanup() {
	local rc=$? i m p
	set +e
	for ((i = ${#_mounts[@]} - 1; i >= 0; i--)); do
		m=${_mounts[i]}
		if mountpoint -q "$m" 2>/dev/null; then
			umount "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null \
				|| umount -l "$m" 2>/dev/null
		fi
	done
	for p in "${_pids[@]}"; do
		kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	for ((i = ${#_cleanups[@]} - 1; i >= 0; i--)); do
		eval "${_cleanups[i]}"
	done
	rm -rf "$T"
	exit $rc
}
trap _cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
note() { echo "# $*"; }

requires() {
	command -v "$1" >/dev/null 2>&1 || skip "$1 is not installed"
}

requires_root() {
	[ "$(id -u)" = 0 ] || skip "needs root"
}

requires_fuse() {
	[ -c /dev/fuse ] || skip "/dev/fuse is missing"
	requires fusermount3
}

# expect_fail "message" cmd...: cmd must exit non-zero and say message.
expect_fail() {
	local want=$1 out rc
	shift
	out=$("$@" 2>&1) && fail "expected failure: $*"$'\n'"$out"
	printf '%s\n' "$out" | grep -qF -- "$want" ||
		fail "'$*' did not say '$want'; it said:"$'\n'"$out"
	return 0
}

# A fingerprint of every file under a directory: names and contents.
fingerprint() {
	(cd "$1" && find . -type f -print0 | sort -z |
		xargs -0 -r sha256sum) | sha256sum | cut -d' ' -f1
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# json_field FIELD < json: the value of a top-level scalar field.
json_field() {
	/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# start_mount REPO MOUNTPOINT [options...]: mounts in the foreground
# process of a background job, logging to $MOUNT_LOG; waits for it.
start_mount() {
	local repo=$1 mnt=$2 i
	shift 2
	mkdir -p "$mnt"
	MOUNT_LOG=$T/mount.$(basename "$mnt").log
	"$CBTFS" "$repo" "$mnt" -f "$@" >"$MOUNT_LOG" 2>&1 &
	MOUNT_PID=$!
	_pids+=("$MOUNT_PID")
	_mounts+=("$mnt")
	for ((i = 0; i < 100; i++)); do
		mountpoint -q "$mnt" && return 0
		kill -0 "$MOUNT_PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$MOUNT_LOG" >&2
	fail "cbtfs did not mount $repo at $mnt"
}

# stop_mount MOUNTPOINT: unmounts and waits for the daemon to exit.
stop_mount() {
	fusermount3 -u "$1" || fail "cannot unmount $1"
	wait "$MOUNT_PID" 2>/dev/null
	return 0
}

# random_writes IMAGE COUNT MAXLEN SEED RANGES_OUT: writes COUNT chunks of
# random bytes (1..MAXLEN long) at random offsets inside IMAGE, and writes
# the written byte ranges, sorted and merged, to RANGES_OUT.
random_writes() {
	local img=$1 count=$2 maxlen=$3 seed=$4 out=$5 size off len
	size=$(stat -c %s "$img")
	awk -v n="$count" -v max="$maxlen" -v size="$size" -v seed="$seed" '
		BEGIN {
			srand(seed)
			for (i = 0; i < n; i++) {
				len = 1 + int(rand() * max)
				if (len > size) len = size
				off = int(rand() * (size - len + 1))
				print off, len
			}
		}' >"$T/writes.$seed"
	while read -r off len; do
		head -c "$len" /dev/urandom |
			dd of="$img" bs=64K seek="$off" oflag=seek_bytes \
				conv=notrunc status=none iflag=fullblock
	done <"$T/writes.$seed"
	sort -n "$T/writes.$seed" | awk '
		NR == 1 { s = $1; e = $1 + $2; next }
		$1 <= e { if ($1 + $2 > e) e = $1 + $2; next }
		{ print s, e - s; s = $1; e = $1 + $2 }
		END { if (NR) print s, e - s }' >"$out"
}

# chunks_touched RANGES CHUNK_SIZE: how many distinct chunks the ranges hit.
chunks_touched() {
	awk -v cs="$2" '{
		for (c = int($1 / cs); c <= int(($1 + $2 - 1) / cs); c++)
			seen[c] = 1
	} END { n = 0; for (c in seen) n++; print n }' "$1"
}
