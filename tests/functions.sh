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
# image comparisons: changed, nonzero, chunks, preads (see imgtool.py)
IMGTOOL="/usr/bin/python3 $top_srcdir/tests/imgtool.py"

# what the machine has set must not reach what the tests check: system
# messages in English, no proxy between cbtfs and the servers on 127.0.0.1,
# no AWS settings of the person who runs the tests
export LC_ALL=C.UTF-8
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY \
	no_proxy NO_PROXY AWS_CA_BUNDLE AWS_PROFILE AWS_DEFAULT_PROFILE \
	AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE

T=$(mktemp -d "${TMPDIR:-/tmp}/cbtfs-test.XXXXXX")
export XDG_CACHE_HOME=$T/cache

_cleanups=()
_mounts=()
_pids=()

# Runs cmd at exit (LIFO, after unmounts and process stops).
cleanup_fn() { _cleanups+=("$*"); }

# _our_child PID: PID is a process (or zombie) whose parent is this shell.
_our_child() {
	local st
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	st=${st##*) }
	set -- $st
	[ "$2" = "$$" ]
}

_cleanup() {
	local rc=$? i m p alive
	set +e
	for ((i = ${#_mounts[@]} - 1; i >= 0; i--)); do
		m=${_mounts[i]}
		if mountpoint -q "$m" 2>/dev/null; then
			umount "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null \
				|| umount -l "$m" 2>/dev/null
		fi
	done
	# stop everything we started, newest first; what ignores SIGTERM for
	# 10 s is killed.  Only PIDs that are still our children: one that
	# was waited for may since belong to another test's process.
	local ours=()
	for ((i = ${#_pids[@]} - 1; i >= 0; i--)); do
		_our_child "${_pids[i]}" && ours+=("${_pids[i]}")
	done
	for p in "${ours[@]}"; do
		kill "$p" 2>/dev/null
	done
	for ((i = 0; i < 50; i++)); do
		alive=0
		for p in "${ours[@]}"; do
			kill -0 "$p" 2>/dev/null && alive=1
		done
		[ $alive = 0 ] && break
		sleep 0.2
	done
	for p in "${ours[@]}"; do
		kill -9 "$p" 2>/dev/null
		wait "$p" 2>/dev/null
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

# expect_fail_unchanged DIR "message" cmd...: cmd fails saying message and
# leaves every file under DIR (a repository) as it was.
expect_fail_unchanged() {
	local dir=$1 before
	shift
	before=$(fingerprint "$dir")
	expect_fail "$@"
	[ "$(fingerprint "$dir")" = "$before" ] ||
		fail "$dir changed after a failed: ${*:2}"
}

# A fingerprint of every file under a directory: names and contents.
fingerprint() {
	(cd "$1" && find . -type f -print0 | sort -z |
		xargs -0 -r sha256sum) | sha256sum | cut -d' ' -f1
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# chunk_id IMAGE INDEX [SIZE]: the id (SHA-256) of chunk INDEX of IMAGE,
# in chunks of SIZE bytes (default 65536); chunk_key ID: the name of that
# chunk's object in a repository
chunk_id() {
	dd if="$1" bs="${3:-65536}" skip="$2" count=1 status=none |
		sha256sum | cut -d' ' -f1
}
chunk_key() { echo "chunks/${1:0:2}/$1"; }

# damage_byte FILE OFFSET: inverts the byte at OFFSET, so the file always
# changes (writing a fixed byte leaves random data unchanged 1 time in 256).
damage_byte() {
	local b
	b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	[ -n "$b" ] || fail "damage_byte: $1 has no byte at offset $2"
	printf "\\$(printf %03o $((b ^ 255)))" |
		dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

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

# MOUNT_NS_PREP: sh code that a new mount namespace (unshare --mount
# --propagation slave) runs first.  The namespace starts with a copy of
# every mount, other tests' too; the copies of FUSE, overlay, loop and
# device-mapper mounts are detached, or they would keep those filesystems
# busy (the FUSE server running, the loop device bound) after their tests
# unmount them.  Slave propagation carries such an unmount into the
# namespace only where mounts are shared (systemd makes them so); without
# systemd they are private.  umount -c -i -n: no stat of the target, no
# helper, no utab update.
MOUNT_NS_PREP='mi=$(cat /proc/self/mountinfo)
printf "%s\n" "$mi" | while read -r _ _ _ _ mp rest; do
	fs=${rest#* - }
	src=${fs#* }
	case ${fs%% *}:${src%% *} in
	fuse*|overlay:*|*:/dev/loop*|*:/dev/mapper/*|*:/dev/dm-*)
		umount -l -c -i -n "$(printf %b "$mp")" 2>/dev/null ;;
	esac
done
'

# stable SECONDS CMD...: waits until CMD prints the same twice, half a
# second apart, and prints that; fails after SECONDS.  For a store that a
# killed client may still change: a request whose body the server (or a
# proxy in front of it) had in full completes after the client is gone.
stable() {
	local limit=$1 prev now i
	shift
	prev=$("$@") || fail "$*: failed"
	for ((i = 0; i < limit * 2; i++)); do
		sleep 0.5
		now=$("$@") || fail "$*: failed"
		if [ "$now" = "$prev" ]; then
			printf '%s\n' "$now"
			return 0
		fi
		prev=$now
	done
	fail "$*: still changing after $limit s"
}

# CLOSED_PORT: a TCP port at 127.0.0.1 that nothing listens on (free_port
# never picks it, so no test's server can take it).
CLOSED_PORT=1

# free_port: a TCP port nobody uses at 127.0.0.1 right now, chosen below
# the kernel's ephemeral range: a port from that range can be taken by the
# local end of any outgoing connection (other tests run in parallel) before
# the server that is meant to listen on it binds it.
free_port() {
	/usr/bin/python3 - <<'PY'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(200):
    port = random.randrange(max(10000, low - 12000), low) if low > 10100 else 0
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        print(s.getsockname()[1])
        break
    except OSError:
        pass
    finally:
        s.close()
PY
}

# wait_for SECONDS CMD...: retries CMD every 0.2 s until it succeeds.
wait_for() {
	local limit=$1 i
	shift
	for ((i = 0; i < limit * 5; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	return 1
}

# rgw_up_or_failed PID LOG: radosgw answers at $S3_ENDPOINT, or it has
# failed (its process exited, or its frontend did not start: it then takes
# minutes to exit), so that waiting for it stops at once.
rgw_up_or_failed() {
	kill -0 "$1" 2>/dev/null || return 0
	grep -qs "failed initializing frontend" "$2" && return 0
	curl -sf -m 5 -o /dev/null "$S3_ENDPOINT/"
}

# start_rgw: a single-node Ceph cluster with a RADOS gateway on 127.0.0.1,
# under $T/ceph, every daemon in the foreground of a background job and
# stopped by PID at exit.  Sets S3_ENDPOINT, S3_BUCKET and the AWS_*
# variables for a user "test" and creates the bucket.  Skips (77) only if
# the Ceph packages are missing.
start_rgw() {
	local d=$T/ceph fsid uuid mon_v2 mon_v1 rgw_port rgw_pid try
	for c in ceph-mon ceph-osd ceph-mgr radosgw radosgw-admin monmaptool curl; do
		command -v $c >/dev/null || skip "$c is not installed (Ceph RGW)"
	done
	mkdir -p "$d"/{run,log,crash,mon/mon.a,mgr/mgr.x,osd/osd.0,rgw/client.rgw.a}
	fsid=$(uuidgen)
	mon_v2=$(free_port)
	mon_v1=$(free_port)
	while [ "$mon_v1" = "$mon_v2" ]; do mon_v1=$(free_port); done
	cat >"$d/ceph.conf" <<CONF
[global]
fsid = $fsid
mon initial members = a
mon host = [v2:127.0.0.1:$mon_v2,v1:127.0.0.1:$mon_v1]
public network = 127.0.0.0/8
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
run dir = $d/run
admin socket = $d/run/\$name.asok
pid file = $d/run/\$name.pid
log file = $d/log/\$name.log
mon data = $d/mon/\$name
mgr data = $d/mgr/\$name
osd data = $d/osd/\$name
rgw data = $d/rgw/\$name
crash dir = $d/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 5
mon data avail crit = 1
ms bind ipv6 = false
[osd]
osd objectstore = bluestore
osd memory target = 1073741824
bluestore block create = true
bluestore block size = 10737418240
osd op num shards = 2
osd op num threads per shard = 2
[mgr]
mgr initial modules = status
[client.rgw.a]
ms mon client mode = crc
rgw dns name = 127.0.0.1
rgw thread pool size = 64
CONF
	export CEPH_CONF=$d/ceph.conf
	monmaptool --create --addv a "[v2:127.0.0.1:$mon_v2,v1:127.0.0.1:$mon_v1]" \
		--fsid "$fsid" "$d/monmap" >/dev/null || fail "monmaptool"
	ceph-mon --mkfs -i a --monmap "$d/monmap" || fail "ceph-mon --mkfs"
	ceph-mon -i a -f >"$d/log/mon.out" 2>&1 &
	_pids+=($!)
	wait_for 30 timeout 5 ceph -s || fail "ceph-mon did not come up"
	ceph-mgr -i x -f >"$d/log/mgr.out" 2>&1 &
	_pids+=($!)
	uuid=$(uuidgen)
	ceph osd new "$uuid" >/dev/null || fail "ceph osd new"
	ceph-osd -i 0 --mkfs --osd-uuid "$uuid" >"$d/log/osd-mkfs.out" 2>&1 ||
		fail "ceph-osd --mkfs"
	ceph-osd -i 0 -f >"$d/log/osd.out" 2>&1 &
	_pids+=($!)
	wait_for 60 sh -c 'ceph osd dump | grep -q "^osd.0 up"' ||
		fail "ceph-osd did not come up"
	# a radosgw that cannot bind its port is started again on another
	for try in 1 2 3; do
		rgw_port=$(free_port)
		[ -f "$d/log/client.rgw.a.log" ] &&
			mv "$d/log/client.rgw.a.log" "$d/log/client.rgw.a.log.$try"
		S3_ENDPOINT=http://127.0.0.1:$rgw_port
		radosgw -n client.rgw.a -f --rgw-frontends \
			"beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=1" \
			>"$d/log/rgw.out" 2>&1 &
		rgw_pid=$!
		_pids+=($rgw_pid)
		wait_for 120 rgw_up_or_failed "$rgw_pid" \
			"$d/log/client.rgw.a.log"
		curl -sf -m 5 -o /dev/null "$S3_ENDPOINT/" && break
		echo "radosgw failed (try $try):" >&2
		tail -n 3 "$d/log/client.rgw.a.log" >&2
		kill -9 "$rgw_pid" 2>/dev/null
		wait "$rgw_pid" 2>/dev/null
	done
	if ! curl -sf -m 5 -o /dev/null "$S3_ENDPOINT/"; then
		tail -n 15 "$d/log/rgw.out" "$d/log/client.rgw.a.log" >&2
		ceph -s >&2
		fail "radosgw did not answer at $S3_ENDPOINT"
	fi
	export AWS_ACCESS_KEY_ID=cbtfstestkey
	export AWS_SECRET_ACCESS_KEY=cbtfs-test-secret-$RANDOM$RANDOM
	export AWS_ENDPOINT_URL=$S3_ENDPOINT
	export AWS_REGION=us-east-1
	unset AWS_SESSION_TOKEN AWS_ENDPOINT_URL_S3 AWS_DEFAULT_REGION
	radosgw-admin user create --uid=test --display-name=test \
		--access-key="$AWS_ACCESS_KEY_ID" \
		--secret-key="$AWS_SECRET_ACCESS_KEY" >/dev/null ||
		fail "radosgw-admin user create"
	S3_BUCKET=cbtfs-test
	s3_curl -X PUT "$S3_ENDPOINT/$S3_BUCKET" || fail "cannot create bucket"
}

# start_proxy NAME ARGS...: tests/faultproxy.py in front of the RGW of
# start_rgw, with ARGS; sets PROXY_URL.
start_proxy() {
	local name=$1
	shift
	/usr/bin/python3 "$top_srcdir/tests/faultproxy.py" \
		--upstream "${S3_ENDPOINT#http://}" --port-file "$T/$name.port" \
		--stats "$T/$name.stats" "$@" 2>"$T/$name.log" &
	_pids+=($!)
	wait_for 10 test -s "$T/$name.port" || fail "proxy $name did not start"
	PROXY_URL=http://127.0.0.1:$(cat "$T/$name.port")
}
# s3_curl ARGS...: curl signed as the test user (for fixtures, not cbtfs).
s3_curl() {
	curl -sSf --aws-sigv4 "aws:amz:${AWS_REGION:-us-east-1}:s3" \
		--user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
		-H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
		"$@"
}
