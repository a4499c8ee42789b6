#!/bin/bash
# The repository in S3 (a real Ceph RGW on 127.0.0.1): the generations
# scenario restored byte-exact through the mount; signing errors named
# clearly with no secret in any message; prefixes with every allowed
# character; listings of several pages; multi-object delete.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_fuse
requires /usr/bin/python3
start_rgw
S3TOOL=$top_builddir/tests/s3tool

# 1. generations, scan and ranges, mounted, restored byte for byte
R=s3://$S3_BUCKET/gen
MNT=$T/mnt
. "$top_srcdir/tests/generations.inc"
note "generations scenario passed on S3"

# 2. signing and configuration errors: clear, final, and secret-free
secret=$AWS_SECRET_ACCESS_KEY
out=$(AWS_SECRET_ACCESS_KEY=wrong-secret-x9 "$REPO" snapshots "$R" 2>&1) &&
	fail "a wrong secret was accepted"
grep -q "HTTP 403 SignatureDoesNotMatch: check AWS_SECRET_ACCESS_KEY" <<<"$out" ||
	fail "wrong secret: $out"
grep -q "wrong-secret-x9" <<<"$out" && fail "the secret appears in a message"
out=$(AWS_ACCESS_KEY_ID=nosuchkey "$REPO" snapshots "$R" 2>&1) &&
	fail "a wrong access key was accepted"
grep -q "InvalidAccessKeyId: check AWS_ACCESS_KEY_ID" <<<"$out" ||
	fail "wrong key: $out"
grep -qF -- "$secret" <<<"$out" && fail "the secret appears in a message"
expect_fail "NoSuchBucket: the bucket does not exist" \
	"$REPO" snapshots "s3://no-such-bucket/x"
expect_fail "no S3 credentials: environment: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not" \
	env -u AWS_SECRET_ACCESS_KEY "$REPO" snapshots "$R"
port=$CLOSED_PORT
expect_fail "check AWS_ENDPOINT_URL" \
	"$REPO" snapshots "$R" --endpoint "http://127.0.0.1:$port" --retries 1
expect_fail "invalid bucket name" "$REPO" snapshots "s3://A_B/x"
expect_fail "the prefix may hold only letters, digits and ._~/-" \
	"$REPO" init "s3://$S3_BUCKET/bad+prefix"
expect_fail "not a cbtfs repository (no config object)" \
	"$REPO" snapshots "s3://$S3_BUCKET/nothing-here"
expect_fail "not empty" "$REPO" init "s3://$S3_BUCKET/gen/chunks"

# 3. a prefix with every character cbtfs allows, and a URL-style base
P=s3://$S3_BUCKET/All.the_chars~here-0123456789/Z/
"$REPO" init "$P" --chunk-size 64K >/dev/null || fail "init odd prefix"
head -c 300K /dev/urandom >"$T/small"
"$INGEST" --repo "$P" --volume ns/odd --snapshot s --device "$T/small" \
	>/dev/null || fail "ingest odd prefix"
start_mount "$P" "$T/mnt2"
cmp "$T/mnt2/ns/odd/s.img" "$T/small" || fail "odd prefix restore"
stop_mount "$T/mnt2"
[ "$("$S3TOOL" "s3://$S3_BUCKET" count "All.the_chars~here-0123456789/Z/snapshots/")" = 1 ] ||
	fail "odd prefix objects not where expected"

# 4. listings across pages: 1100 objects (two pages of 1000), and the
#    index rebuilt through pages of 3 snapshots
"$S3TOOL" "s3://$S3_BUCKET/many" put-many obj 1100 || fail "put-many"
[ "$("$S3TOOL" "s3://$S3_BUCKET/many" count obj/)" = 1100 ] ||
	fail "a 1100-object listing did not see everything"
CBTFS_S3_LIST_PAGE=3 CBTFS_CURL_VERBOSE= XDG_CACHE_HOME=$T/cache-paged \
	"$REPO" reindex "$R" >/dev/null 2>"$T/paged.log" || fail "paged reindex"
# 8 snapshot manifests in pages of 3: at least 3 requests for them
pages=$(grep -c '^> GET .*list-type=2&max-keys=3&prefix=[^ ]*snapshots' \
	"$T/paged.log")
[ "$pages" -ge 3 ] || fail "paged reindex made $pages listing requests of 3"
n=$(XDG_CACHE_HOME=$T/cache-paged "$REPO" snapshots "$R" --json |
	/usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$n" = 8 ] || fail "paged listing saw $n of 8 snapshots"

# 5. multi-object delete, more than one batch of 1000
"$S3TOOL" "s3://$S3_BUCKET/many" delete-prefix obj/ || fail "delete-prefix"
[ "$("$S3TOOL" "s3://$S3_BUCKET/many" count obj/)" = 0 ] ||
	fail "objects left after DeleteObjects"
exit 0
