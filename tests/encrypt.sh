#!/bin/bash
# Encrypted repositories, in a directory and in a real Ceph RGW: two
# generations round-trip byte-exact through ingest and the mount; no stored
# object holds a marker written all over the source, raw or decompressed,
# and no object is named after the SHA-256 of a source chunk (each check
# first shown to find them in a repository without encryption); an
# independent decoder of the format cbtfs-repository(5) documents opens
# every object; a wrong or missing passphrase and a tampered config fail
# first, changing nothing; passwd, also killed at random moments; chunks and
# manifests copied onto other names are refused, never returned as data.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_root
requires_fuse
requires zstd
requires /usr/bin/python3
CRYPTOOL="/usr/bin/python3 $top_srcdir/tests/cryptool.py"
S3TOOL=$top_builddir/tests/s3tool
CS=262144
MARK=cbtfs-encryption-test-marker-5b1e0c7a
PW='correct-horse-battery-staple'
PW2='a-new-passphrase-for-the-same-key'
unset CBTFS_PASSWORD CBTFS_NEW_PASSWORD
exec </dev/null		# no terminal: nothing may prompt
MNT=$T/mnt
WRONG="wrong passphrase, or the repository's config was altered"
MISSING="is encrypted: set CBTFS_PASSWORD, or use --password-file FILE"

# 24 MiB: random data with the marker every 37 KiB, text with the marker
# in every line (compressible), zeros, random data.
python3=/usr/bin/python3
$python3 - "$T/gen1.img" "$MARK" <<'PY' || fail "cannot make the image"
import os, sys
path, mark = sys.argv[1], sys.argv[2].encode()
img = bytearray(os.urandom(8 << 20))
for off in range(100, len(img) - len(mark), 37 * 1024 + 11):
    img[off:off + len(mark)] = mark
line = b"Lorem ipsum dolor sit amet, " + mark + b"\n" + bytes(100)
img += (line * ((8 << 20) // len(line) + 1))[:8 << 20]
img += bytes(4 << 20) + os.urandom(4 << 20)
open(path, "wb").write(img)
PY
cp "$T/gen1.img" "$T/gen2.img"
random_writes "$T/gen2.img" 12 300000 7 "$T/changes2"
printf '%s\n' "$PW" >"$T/pw"
printf '%s' "$PW2" >"$T/pw2"
printf 'not-it\n' >"$T/wrong"
chmod 600 "$T/pw" "$T/pw2" "$T/wrong"

# A directory holding the objects of repository $1 (S3: a fresh copy).
n_mirror=0
objects() {
	case $1 in
	s3://*)
		n_mirror=$((n_mirror + 1))
		"$S3TOOL" "$1" mirror "$T/mirror.$n_mirror" >&2 ||
			fail "cannot copy $1"
		echo "$T/mirror.$n_mirror"
		;;
	*) echo "$1" ;;
	esac
}
repo_fp() { fingerprint "$(objects "$1")"; }

# expect_fail_same REPO "message" cmd...: cmd fails saying message, before
# writing anything: the repository, and a fresh local index, unchanged.
expect_fail_same() {
	local r=$1 before
	shift
	before=$(repo_fp "$r")
	rm -rf "$T/fresh"
	XDG_CACHE_HOME=$T/fresh expect_fail "$@"
	[ "$(repo_fp "$r")" = "$before" ] || fail "$r changed after: ${*:2}"
	[ ! -e "$T/fresh/cbtfs" ] || fail "an index was made before: ${*:2}"
}

mount_cmp() {	# mount_cmp REPO OPTIONS...: both generations, byte-exact
	local r=$1
	shift
	start_mount "$r" "$MNT" "$@"
	cmp "$MNT/ns/vol/gen1.img" "$T/gen1.img" || fail "gen1 differs ($*)"
	cmp "$MNT/ns/vol/gen2.img" "$T/gen2.img" || fail "gen2 differs ($*)"
	stop_mount "$MNT"
}

# What a repository's objects give away.  leaks DIR prints: objects
# holding the marker raw; objects whose payload (after 16 or 28 bytes)
# zstd decompresses; of those, how many hold the marker; chunk objects
# named after the SHA-256 of a chunk of either image.
leaks() {
	local d=$1 f raw=0 unz=0 unzmark=0 named=0 h off
	raw=$(grep -rlaF -- "$MARK" "$d/chunks" "$d/snapshots" | wc -l)
	while IFS= read -r -d '' f; do
		for off in 17 29; do
			if tail -c +$off "$f" | zstd -dcq >"$T/unz" 2>/dev/null
			then
				unz=$((unz + 1))
				grep -qaF -- "$MARK" "$T/unz" &&
					unzmark=$((unzmark + 1))
			fi
		done
	done < <(find "$d/chunks" "$d/snapshots" -type f -print0)
	for h in $($CRYPTOOL ids "$T/gen1.img" $CS; $CRYPTOOL ids "$T/gen2.img" $CS); do
		[ -e "$d/chunks/${h:0:2}/$h" ] && named=$((named + 1))
	done
	echo "$raw $unz $unzmark $named"
}

# Every chunk and manifest frame has ENCRYPTED (0x02) and not DIGEST.
check_flags() {
	local d=$1 f flags n=0
	while IFS= read -r -d '' f; do
		flags=$(od -An -tu1 -j5 -N1 "$f" | tr -d ' ')
		(( (flags & 2) && !(flags & 4) )) ||
			fail "$f: flags $flags, not sealed"
		n=$((n + 1))
	done < <(find "$d/chunks" "$d/snapshots" -type f -print0)
	[ "$n" -gt 10 ] || fail "only $n objects in $d"
}

# opens_with REPO PASS: the repository opens with this passphrase.
opens_with() {
	CBTFS_PASSWORD=$2 XDG_CACHE_HOME=$T/probe "$REPO" snapshots "$1" \
		>/dev/null 2>&1
}

# settled_config REPO: a repository to try passphrases on that holds REPO's
# config as it is for good: REPO itself, or for S3 a directory holding a
# copy of its config once it is stable (see stable in functions.sh).
n_settled=0
config_sum() {
	"$S3TOOL" "$1" save config "$T/config.now" && sha "$T/config.now"
}
settled_config() {
	local c
	case $1 in
	s3://*)
		n_settled=$((n_settled + 1))
		c=$T/settled.$n_settled
		mkdir -p "$c"
		stable 30 config_sum "$1" >/dev/null
		mv "$T/config.now" "$c/config"
		echo "$c"
		;;
	*) echo "$1" ;;
	esac
}

# The scenario every store goes through.  $1: the repository; $2: "full"
# for every failure case (the directory), else the ones that touch the
# store (S3).
scenario() {
	local R=$1 D C out n before ids id1 id2 a b i t took old new
	local sr=$T/repo-$2	# scratch, for copies of objects

	# 1. init, two generations, mounted with the variable and the file
	out=$(CBTFS_PASSWORD=$PW "$REPO" init "$R" --encrypt \
		--chunk-size $CS) || fail "init --encrypt $R"
	grep -q "^initialised encrypted cbtfs repository" <<<"$out" ||
		fail "init: $out"
	CBTFS_PASSWORD=$PW "$INGEST" --repo "$R" --volume ns/vol \
		--snapshot gen1 --device "$T/gen1.img" >/dev/null ||
		fail "ingest gen1"
	"$INGEST" --repo "$R" --volume ns/vol --snapshot gen2 --base gen1 \
		--changes "ranges:$T/changes2" --device "$T/gen2.img" \
		--password-file "$T/pw" >/dev/null || fail "ingest gen2"
	CBTFS_PASSWORD=$PW mount_cmp "$R"
	mount_cmp "$R" -o "password_file=$T/pw"
	CBTFS_PASSWORD=$PW "$REPO" verify "$R" --read-data >"$T/verify.out" ||
		fail "verify --read-data: $(cat "$T/verify.out")"

	# 2. what the objects give away: nothing
	D=$(objects "$R")
	check_flags "$D"
	out=$(leaks "$D")
	[ "$out" = "0 0 0 0" ] || fail "objects of $R give away (raw, " \
		"decompressed, with the marker, named by SHA-256): $out"
	n=$(find "$D/chunks" -type f | wc -l)
	out=$(CBTFS_PASSWORD=$PW $CRYPTOOL check "$D") ||
		fail "the independent decoder failed on $R: $out"
	[ "$out" = "checked $n chunks, 2 manifests" ] ||
		fail "independent decoder: $out ($n chunk objects)"

	# 3. no passphrase, or a wrong one: one clear error, before anything
	expect_fail_same "$R" "$WRONG" env CBTFS_PASSWORD=not-it \
		"$INGEST" --repo "$R" --volume ns/vol --snapshot gen3 \
		--device "$T/no-such-device"
	expect_fail_same "$R" "$MISSING" "$REPO" snapshots "$R"
	if [ "$2" = full ]; then
		expect_fail_same "$R" "$WRONG" "$INGEST" --repo "$R" \
			--volume ns/vol --snapshot gen3 --device "$T/gen2.img" \
			--password-file "$T/wrong"
		expect_fail_same "$R" "$MISSING" "$INGEST" --repo "$R" \
			--volume ns/vol --snapshot gen3 --device "$T/gen2.img"
		for cmd in snapshots verify unlock reindex passwd prune; do
			expect_fail_same "$R" "$WRONG" env CBTFS_PASSWORD=not-it \
				CBTFS_NEW_PASSWORD=x "$REPO" $cmd "$R"
		done
		expect_fail_same "$R" "$WRONG" "$REPO" verify "$R" \
			--password-file "$T/wrong"
		expect_fail_same "$R" "$MISSING" "$REPO" verify "$R"
		expect_fail_same "$R" "$MISSING" "$REPO" prune "$R"
		expect_fail_same "$R" "$MISSING" "$REPO" forget "$R" \
			--keep-last 1
		: >"$T/empty"
		expect_fail_same "$R" "passphrase file $T/empty is empty" \
			"$REPO" snapshots "$R" --password-file "$T/empty"
		expect_fail_same "$R" "$WRONG" env CBTFS_PASSWORD=not-it \
			timeout 60 "$CBTFS" "$R" "$MNT" -f
		expect_fail_same "$R" "$WRONG" timeout 60 "$CBTFS" "$R" "$MNT" \
			-f -o "password_file=$T/wrong"
		expect_fail_same "$R" \
			"is encrypted: set CBTFS_PASSWORD, or use -o password_file=FILE" \
			timeout 60 "$CBTFS" "$R" "$MNT" -f
		mountpoint -q "$MNT" && fail "mounted with a wrong passphrase"
		# the file wins over the variable
		CBTFS_PASSWORD=not-it "$REPO" snapshots "$R" \
			--password-file "$T/pw" >/dev/null ||
			fail "--password-file did not win over CBTFS_PASSWORD"

		# 4. a tampered config: the key does not unwrap
		cp "$R/config" "$T/config.good"
		for field in salt wrapped_key chunk_size kdf_n created; do
			cp "$T/config.good" "$R/config"
			$CRYPTOOL tamper "$R/config" $field || fail "tamper $field"
			cmp -s "$R/config" "$T/config.good" &&
				fail "tamper $field changed nothing"
			expect_fail_same "$R" "$WRONG" env CBTFS_PASSWORD=$PW \
				"$REPO" snapshots "$R"
			expect_fail_same "$R" "$WRONG" env CBTFS_PASSWORD=$PW \
				"$INGEST" --repo "$R" --volume ns/vol \
				--snapshot gen3 --device "$T/gen2.img"
		done
		cp "$T/config.good" "$R/config"
		opens_with "$R" "$PW" || fail "the restored config does not open"
	fi

	# 5. passwd: same keys and objects, the new passphrase only
	before=$(cd "$D" && find chunks snapshots -type f -print0 | sort -z |
		xargs -0 sha256sum | sha256sum)
	expect_fail_same "$R" "no new passphrase: set CBTFS_NEW_PASSWORD, or use --new-password-file FILE" \
		env CBTFS_PASSWORD=$PW "$REPO" passwd "$R"
	out=$(CBTFS_PASSWORD=$PW "$REPO" passwd "$R" \
		--new-password-file "$T/pw2") || fail "passwd: $out"
	grep -q "^changed the passphrase of $R" <<<"$out" || fail "passwd: $out"
	expect_fail "$WRONG" env CBTFS_PASSWORD=$PW "$REPO" snapshots "$R"
	D=$(objects "$R")
	[ "$(cd "$D" && find chunks snapshots -type f -print0 | sort -z |
		xargs -0 sha256sum | sha256sum)" = "$before" ] ||
		fail "passwd changed chunks or manifests"
	CBTFS_PASSWORD=$PW2 mount_cmp "$R"
	t=$(date +%s%N)
	CBTFS_PASSWORD=$PW2 CBTFS_NEW_PASSWORD=$PW "$REPO" passwd "$R" \
		>/dev/null || fail "passwd back"
	took=$((($(date +%s%N) - t) / 1000000))
	opens_with "$R" "$PW" || fail "passwd back: old passphrase refused"

	# 6. passwd killed at random moments (up to 1.3 times as long as it
	# takes): the config is the old one or the new one, whichever opens
	old=$PW new=$PW2
	for i in $(seq 1 "$3"); do
		CBTFS_PASSWORD=$old CBTFS_NEW_PASSWORD=$new \
			"$REPO" passwd "$R" >/dev/null 2>&1 &
		if [ "$i" = 1 ] && [ "$2" = full ]; then
			# once just after the config was replaced, before exit
			a=$(stat -c %i "$R/config")
			for t in $(seq 3000); do
				[ "$(stat -c %i "$R/config")" != "$a" ] && break
				sleep 0.01
			done
			[ "$t" -lt 3000 ] || fail "passwd did not replace config"
			t="just after it replaced the config"
		else
			t=$(( RANDOM % (took * 13 / 10 + 1) ))
			sleep "$((t / 1000)).$(printf %03d $((t % 1000)))"
			t="after $t ms of $took"
		fi
		kill -9 $! 2>/dev/null
		wait $! 2>/dev/null
		# both passphrases tried on one config (a put the killed
		# passwd had sent may still land in RGW after it died)
		C=$(settled_config "$R") || exit 1
		a=0 b=0
		opens_with "$C" "$old" && a=1
		opens_with "$C" "$new" && b=1
		[ $((a + b)) = 1 ] || fail "passwd killed $t: opens with the" \
			"old passphrase: $a, with the new: $b"
		note "passwd killed $t: the $([ $a = 1 ] && echo old ||
			echo new) config"
		[ $b = 1 ] && { t=$old; old=$new; new=$t; }
	done
	if [ "$old" != "$PW" ]; then
		CBTFS_PASSWORD=$old CBTFS_NEW_PASSWORD=$PW "$REPO" passwd "$R" \
			>/dev/null || fail "passwd back after the kills"
	fi
	CBTFS_PASSWORD=$PW mount_cmp "$R"

	# 7. a chunk copied onto another chunk's name: EIO, never data
	export CBTFS_PASSWORD=$PW
	D=$(objects "$R")
	mapfile -t ids < <(cd "$D" && find chunks -type f | sort | head -n 2)
	a=${ids[0]} b=${ids[1]}
	mkdir -p "$sr"
	cp "$D/$b" "$sr/b"
	put_object "$R" "$b" "$D/$a"
	read_images "$R" "$b"
	# ... and a frame of a repository without encryption, likewise
	put_object "$R" "$b" "$PLAIN_CHUNK"
	read_images "$R" "$b"
	put_object "$R" "$b" "$sr/b"
	"$REPO" verify "$R" --read-data >/dev/null ||
		fail "verify after the chunk was put back"

	# 8. a manifest copied onto another's name: unreadable, left out
	id1=$("$REPO" snapshots "$R" --json | $python3 -c \
		'import json,sys; print([s["id"] for s in json.load(sys.stdin) if s["snapshot"] == "gen1"][0])')
	id2=$("$REPO" snapshots "$R" --json | $python3 -c \
		'import json,sys; print([s["id"] for s in json.load(sys.stdin) if s["snapshot"] == "gen2"][0])')
	cp "$D/snapshots/$id2" "$sr/m2"
	put_object "$R" "snapshots/$id2" "$D/snapshots/$id1"
	out=$(XDG_CACHE_HOME=$T/cache-m "$REPO" snapshots "$R" 2>&1) &&
		fail "snapshots accepted a manifest under another name: $out"
	grep -q "snapshots/$id2 is corrupt or unreadable: authentication failed" \
		<<<"$out" || fail "manifest under another name: $out"
	grep -q "^UNREADABLE .*snapshots/$id2" <<<"$out" ||
		fail "the moved manifest is not listed as unreadable: $out"
	XDG_CACHE_HOME=$T/cache-m start_mount "$R" "$MNT"
	[ -e "$MNT/ns/vol/gen2.img" ] && fail "a moved manifest was mounted"
	cmp "$MNT/ns/vol/gen1.img" "$T/gen1.img" || fail "gen1 after the move"
	stop_mount "$MNT"
	put_object "$R" "snapshots/$id2" "$sr/m2"
	"$REPO" verify "$R" --read-data >/dev/null ||
		fail "verify after the manifest was put back"

	# 9. forget and prune: gen1 folded into gen2 (a sealed manifest
	#    rewritten), its own chunks deleted; gen2 still byte-exact
	"$REPO" forget "$R" ns/vol gen1 >/dev/null || fail "forget gen1"
	"$REPO" prune "$R" >/dev/null || fail "prune"
	start_mount "$R" "$MNT"
	[ -e "$MNT/ns/vol/gen1.img" ] && fail "gen1 still mounted"
	cmp "$MNT/ns/vol/gen2.img" "$T/gen2.img" ||
		fail "gen2 after forget and prune"
	stop_mount "$MNT"
	"$REPO" verify "$R" --read-data >/dev/null ||
		fail "verify after forget and prune"
	unset CBTFS_PASSWORD
}

# put_object REPO NAME FILE: stores FILE's bytes as object NAME.
put_object() {
	case $1 in
	s3://*) "$S3TOOL" "$1" put-file "$2" "$3" || fail "put $2" ;;
	*) { cp "$3" "$1/$2.new" && mv "$1/$2.new" "$1/$2"; } ||
		fail "put $2" ;;
	esac
}

# read_images REPO CHUNK: with CHUNK replaced, each image reads whole and
# exact, or fails with EIO; at least one fails, and the log names CHUNK.
read_images() {
	local r=$1 chunk=$2 g failed=0
	rm -rf "$T/cache-swap"
	XDG_CACHE_HOME=$T/cache-swap start_mount "$r" "$MNT"
	for g in gen1 gen2; do
		if cat "$MNT/ns/vol/$g.img" >"$T/read.img" 2>"$T/read.err"; then
			cmp -s "$T/read.img" "$T/$g.img" ||
				fail "$g read without an error, but wrong"
		else
			grep -q "Input/output error" "$T/read.err" ||
				fail "$g: not EIO: $(cat "$T/read.err")"
			failed=$((failed + 1))
		fi
	done
	stop_mount "$MNT"
	[ $failed -gt 0 ] || fail "no image read failed with $chunk replaced"
	grep -q "chunk $chunk is corrupt" "$MOUNT_LOG" ||
		fail "the mount did not name $chunk: $(cat "$MOUNT_LOG")"
}

# ---- a repository without encryption: what the checks find there --------
P=$T/plain
"$REPO" init "$P" --chunk-size $CS >/dev/null || fail "init plain"
"$INGEST" --repo "$P" --volume ns/vol --snapshot gen1 \
	--device "$T/gen1.img" >/dev/null || fail "ingest plain gen1"
"$INGEST" --repo "$P" --volume ns/vol --snapshot gen2 --base gen1 \
	--changes "ranges:$T/changes2" --device "$T/gen2.img" >/dev/null ||
	fail "ingest plain gen2"
read -r raw unz unzmark named <<<"$(leaks "$P")"
[ "$raw" -gt 0 ] && [ "$unzmark" -gt 0 ] && [ "$named" -gt 0 ] ||
	fail "the checks find nothing even without encryption:" \
		"$raw $unz $unzmark $named"
note "without encryption: $raw objects hold the marker, $unzmark more" \
	"once decompressed, $named are named by SHA-256"
expect_fail "$P is not encrypted" env CBTFS_PASSWORD=x \
	CBTFS_NEW_PASSWORD=y "$REPO" passwd "$P"
expect_fail "init: --password-file needs --encrypt" \
	"$REPO" init "$T/other" --password-file "$T/pw"
expect_fail "$T/new: no passphrase for the new encrypted repository" \
	"$REPO" init "$T/new" --encrypt
PLAIN_CHUNK=$(find "$P/chunks" -type f | head -n 1)

# ---- on a terminal: asked without echo, twice for a new passphrase -------
TTY="$CRYPTOOL tty"
out=$($TTY "$PW,$PW" -- "$REPO" init "$T/tty" --encrypt) ||
	fail "init --encrypt on a terminal: $out"
grep -q "Enter the new passphrase again" <<<"$out" || fail "asked once: $out"
grep -qF -- "$PW" <<<"$out" && fail "the passphrase was echoed: $out"
out=$($TTY "$PW" -- "$REPO" snapshots "$T/tty") ||
	fail "snapshots on a terminal: $out"
out=$($TTY "$PW,$PW2" -- "$REPO" init "$T/tty2" --encrypt) &&
	fail "init took two different passphrases: $out"
grep -q "the two new passphrases differ" <<<"$out" || fail "differ: $out"
[ -e "$T/tty2/config" ] && fail "init wrote a config after a mismatch"
# Ctrl-C at the prompt: the terminal echoes again afterwards
out=$($TTY "^C" -- sh -c 'trap "" INT; "$0" snapshots "$1"; stty -a' \
	"$REPO" "$T/tty") || fail "Ctrl-C at the prompt: $out"
grep -q "interrupted while asking for the passphrase" <<<"$out" ||
	fail "Ctrl-C at the prompt: $out"
grep -q " echo " <<<"$out" || fail "echo left off after Ctrl-C: $out"

# ---- a directory ----------------------------------------------------------
scenario "$T/repo" full 6
note "directory: passed"

# ---- Ceph RGW ---------------------------------------------------------------
start_rgw
scenario "s3://$S3_BUCKET/enc" s3 4
note "RGW: passed"
exit 0
