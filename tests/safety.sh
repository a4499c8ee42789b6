#!/bin/bash
# Small safety properties, each checked on its own (every failure is
# reported, then the test fails):
#  - a repository path cannot inject mount options: the mount stays ro,
#    nosuid, nodev, without allow_other, and shows the path as it is;
#  - a directory repository and the local index are private to the owner
#    (files 0600, directories 0700) whatever the umask;
#  - a FIFO, a socket or a directory as --device is refused at once;
#  - temporaries of killed writers are removed when the store is opened.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_root
requires_fuse
requires /usr/bin/python3

failed=0
problem() { echo "FAIL: $*" >&2; failed=1; }

img=$T/img
head -c 300K /dev/urandom >"$img"

# new_repo PATH: a repository holding img as volume v, snapshot s1
new_repo() {
	"$REPO" init "$1" --chunk-size 64K >/dev/null || fail "init $1"
	"$INGEST" --repo "$1" --volume v --snapshot s1 --device "$img" \
		>/dev/null || fail "ingest into $1"
}

# 1. Mount options from the repository path.  mountinfo fields: 5 mount
# point, 6 per-mount options, then after " - ": type, source, super
# options; the source escapes '\' as \134.
check_mount() {
	local repo=$1 mnt=$2 line opts fstype src super o
	line=$(awk -v m="$mnt" '$5 == m' /proc/self/mountinfo)
	[ -n "$line" ] || { problem "$mnt is not in mountinfo"; return; }
	opts=$(cut -d' ' -f6 <<<"$line")
	read -r fstype src super <<<"${line#* - }"
	note "$repo: $opts - $fstype $src $super"
	[ "$fstype" = fuse.cbtfs ] || problem "$repo: type $fstype"
	[ "$src" = "cbtfs:${repo//\\/\\134}" ] ||
		problem "$repo: mount source is '$src'"
	for o in ro nosuid nodev; do
		[[ ,$opts, == *,$o,* ]] ||
			problem "$repo: mounted without $o ($opts)"
	done
	[[ ,$opts,$super, == *,allow_other,* ]] &&
		problem "$repo: mounted with allow_other ($opts $super)"
	[[ ,$opts,$super, == *,rw,* ]] &&
		problem "$repo: mounted read-write ($opts $super)"
}

i=0
for r in "$T/repo,allow_other" "$T/repo,rw,dev,suid" \
	"$T/repo\\054allow_other,dev,suid\\"; do
	i=$((i + 1))
	new_repo "$r"
	start_mount "$r" "$T/mnt$i"
	check_mount "$r" "$T/mnt$i"
	[ "$(sha "$T/mnt$i/v/s1.img")" = "$(sha "$img")" ] ||
		problem "$r: the image does not read back byte-exact"
	stop_mount "$T/mnt$i"
done

# 2. Modes, whatever the umask (277 takes the owner's bits too).
# not_private DIR: what under DIR is not a 0600 file or 0700 directory
not_private() {
	find "$1" \( -type f ! -perm 0600 \) -o \( -type d ! -perm 0700 \) \
		-o \( ! -type f ! -type d \) | while read -r f; do
		echo "$(stat -c %a "$f") $f"
	done
}
for um in 000 022 277; do
	r=$T/modes-$um
	(
		umask $um
		export XDG_CACHE_HOME=$T/cache-$um
		new_repo "$r"
		"$REPO" snapshots "$r" >/dev/null || fail "snapshots $r"
	) || fail "umask $um: cannot create the repository"
	for d in "" /.tmp /chunks /snapshots /locks; do
		[ -d "$r$d" ] || problem "umask $um: no directory $r$d"
	done
	[ -n "$(find "$r/chunks" -type f)" ] || problem "umask $um: no chunks"
	bad=$(not_private "$r")
	[ -z "$bad" ] ||
		problem "umask $um: repository not private:"$'\n'"$bad"
	[ $um = 277 ] && continue
	idx=$(dirname "$(find "$T/cache-$um" -name index.db)")
	if [ ! -f "$idx/index.db" ]; then
		problem "umask $um: no index.db"
		continue
	fi
	bad=$(not_private "$idx")
	[ -z "$bad" ] ||
		problem "umask $um: local index not private:"$'\n'"$bad"
done
# a root directory the user made keeps its mode; what cbtfs makes in it
# is private
mkdir -m 0755 "$T/own"
new_repo "$T/own"
[ "$(stat -c %a "$T/own")" = 755 ] || problem "init changed the mode of $T/own"
bad=$(not_private "$T/own" | grep -v " $T/own\$")
[ -z "$bad" ] || problem "$T/own: not private:"$'\n'"$bad"

# 3. --device that is no regular file or block device: refused at once,
# naming it and saying what it must be, with the repository unchanged
what='is a (directory|socket|FIFO); --device must be a block device or a regular file'
R=$T/repo
new_repo "$R"
mkfifo "$T/fifo"
/usr/bin/python3 -c 'import socket, sys
socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$T/sock" ||
	fail "cannot create a socket"
mkdir "$T/dir"
for dev in "$T/dir" "$T/sock" "$T/fifo"; do
	before=$(fingerprint "$R")
	out=$(timeout -k 5 10 "$INGEST" --repo "$R" --volume v --snapshot s2 \
		--device "$dev" 2>&1)
	rc=$?
	if [ $rc = 124 ] || [ $rc = 137 ]; then
		problem "--device $dev: not refused within 10 s"
	elif [ $rc != 1 ] && [ $rc != 2 ]; then
		problem "--device $dev: exit status $rc, not 1 or 2: $out"
	elif ! grep -qF "device $dev: " <<<"$out" ||
		! grep -qE "$what" <<<"$out"; then
		problem "--device $dev: said '$out'"
	fi
	[ "$(fingerprint "$R")" = "$before" ] ||
		problem "--device $dev: the repository changed"
done

# 4. Temporaries in REPO/.tmp are named HOSTHASH.BOOTID.PIDNS.PID.START.RND
# after their writer (see store_dir.c).
hosthash=$(printf %s "$(uname -n)" | sha256sum | cut -c1-16)
boot=$(cat /proc/sys/kernel/random/boot_id)
pidns=$(readlink /proc/self/ns/pid)
pidns=${pidns#pid:[}
pidns=${pidns%]}
# tmp_name PID RANDOM: the name of a temporary written by process PID
tmp_name() {
	local start
	start=$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f20)
	[ -n "$start" ] || fail "no start time for pid $1"
	echo "$hosthash.$boot.$pidns.$1.$start.$2"
}

# a real writer killed while it writes: SIGKILL an ingest as soon as it
# has a temporary, until one is left behind (each try its own volume, as a
# killed ingest leaves its lock)
head -c 32M /dev/urandom >"$T/big"
caught=
for ((n = 0; n < 10 && ${#caught} == 0; n++)); do
	"$INGEST" --repo "$R" --volume big$n --snapshot big --device "$T/big" \
		--jobs 1 >/dev/null 2>&1 &
	pid=$!
	_pids+=("$pid")
	while kill -0 $pid 2>/dev/null; do
		tmps=("$R"/.tmp/*)
		[ -e "${tmps[0]}" ] && break
	done
	kill -KILL $pid 2>/dev/null
	wait $pid 2>/dev/null
	tmps=("$R"/.tmp/*)
	[ -e "${tmps[0]}" ] && caught=${tmps[0]##*/}
done
[ -n "$caught" ] || fail "no killed ingest left a temporary in 10 tries"
note "killed pid $pid, which left .tmp/$caught"
grep -qE "^[0-9a-f]{16}\.$boot\.$pidns\.$pid\.[0-9]+\.[0-9a-f]{16}\$" \
	<<<"$caught" || problem "'$caught' is not named after its writer"

# and made-up ones: a dead process's, this shell's, another host's, one
# that does not parse, and ones of this shell and another host older than
# a day
sleep 300 &
dead=$!
_pids+=("$dead")
dead_name=$(tmp_name $dead 0123456789abcdef)
kill $dead
wait $dead 2>/dev/null
live_name=$(tmp_name $$ 0123456789abcdef)
old_live_name=$(tmp_name $$ 1111111111111111)
[ "$hosthash" != ffffffffffffffff ] || skip "the host name hashes to f..f"
other_name=ffffffffffffffff.${live_name#*.}
old_other_name=ffffffffffffffff.${old_live_name#*.}
for f in "$dead_name" "$live_name" "$old_live_name" "$other_name" \
	"$old_other_name" junk; do
	touch "$R/.tmp/$f" || fail "cannot create .tmp/$f"
done
touch -d '25 hours ago' "$R/.tmp/$old_live_name" "$R/.tmp/$old_other_name"
"$REPO" snapshots "$R" >/dev/null || fail "snapshots after the kill"
for f in "$caught" "$dead_name" "$old_live_name" "$old_other_name"; do
	[ -e "$R/.tmp/$f" ] && problem "temporary $f was not removed"
done
for f in "$live_name" "$other_name" junk; do
	[ -e "$R/.tmp/$f" ] || problem "temporary $f was removed"
done
"$INGEST" --repo "$R" --volume v --snapshot s3 --device "$img" \
	>/dev/null || problem "ingest after the cleanup"
[ "$(ls -A "$R/.tmp" | sort)" = "$(printf '%s\n' "$live_name" \
	"$other_name" junk | sort)" ] ||
	problem "an ingest left temporaries: $(ls -A "$R/.tmp")"
exit $failed
