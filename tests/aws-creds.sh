#!/bin/bash
# S3 credentials in the AWS SDKs' order, against a real Ceph RGW and
# tests/aws_creds_server.py on 127.0.0.1 playing STS
# (AssumeRoleWithWebIdentity), the EKS Pod Identity agent and IMDSv2 with
# their real wire formats.
#
# How it is faithful: every source hands out its own key pair, a real
# extra S3 key of the RGW test user (radosgw-admin key create), plus a
# random session token.  RGW checks the key pair and ignores
# x-amz-security-token for a plain (non-STS) user, so the request cbtfs
# signs is the one it would sign for AWS, token header included (checked
# in the curl trace); which key signed each request is read from the
# Authorization header (Credential=KEY/...).  Refresh: the pod identity
# agent hands out key A valid for 308 s, so with the 300 s margin a
# refresh is due after 8 s; the test then deletes key A from RGW, so a
# request signed with it fails (checked), and a long-running mount must
# have fetched key B by itself to read on.
#
# 1. precedence: all five sources configured; each time the first is
#    removed, the next one signs, and the endpoints of the lower ones see
#    no request;  2. each source alone, profiles of both files, a web
#    identity profile;  3. a mount (container credentials) and a long
#    ingest (web identity) that outlive their first credentials;
#    4. a clear error for each broken source, and no secret in any.
. "${top_srcdir:-$(dirname "$0")/..}/tests/functions.sh"
requires_fuse
start_rgw

R=s3://$S3_BUCKET/creds
MAIN_AK=$AWS_ACCESS_KEY_ID
MAIN_SK=$AWS_SECRET_ACCESS_KEY
"$REPO" init "$R" --chunk-size 64K >/dev/null || fail "init"
head -c 640K /dev/urandom >"$T/v1"
head -c 640K /dev/urandom >"$T/v2"
"$INGEST" --repo "$R" --volume ns/vol --snapshot s1 --device "$T/v1" \
	>/dev/null || fail "ingest s1"
"$INGEST" --repo "$R" --volume ns/vol --snapshot s2 --device "$T/v2" \
	>/dev/null || fail "ingest s2"

# newkey NAME: an extra S3 key of the RGW user "test"; sets SK_<NAME>
SECRETS=("$MAIN_SK")
newkey() {
	local sk=secret-$1-$RANDOM$RANDOM
	radosgw-admin key create --uid=test --key-type=s3 --access-key="$1" \
		--secret-key="$sk" >/dev/null || fail "radosgw-admin key create $1"
	printf -v "SK_${1//-/_}" '%s' "$sk"
	SECRETS+=("$sk")
}
for k in kfile kcfg kweb kcont kimds kcontA kcontB kwebA kwebB; do
	newkey $k
done

# the endpoints
printf 'eyJhbGciOiJSUzI1NiJ9.web-identity-%s.sig' $RANDOM >"$T/web-token"
printf 'pod-identity-token-%s' $RANDOM$RANDOM >"$T/pod-token"
ROLE_ARN=arn:aws:iam::123456789012:role/cbtfs-backup
SECRETS+=("$(cat "$T/web-token")" "$(cat "$T/pod-token")")
# start_creds NAME KEYS_JSON: a credentials server; sets CREDS_URL
start_creds() {
	printf '%s\n' "$2" >"$T/$1.keys"
	/usr/bin/python3 "$top_srcdir/tests/aws_creds_server.py" \
		--keys "$T/$1.keys" --port-file "$T/$1.port" --log "$T/$1.log" \
		--web-token "$T/web-token" --role-arn "$ROLE_ARN" \
		--auth-token "$T/pod-token" 2>"$T/$1.err" &
	_pids+=($!)
	wait_for 10 test -s "$T/$1.port" || fail "aws_creds_server $1"
	: >>"$T/$1.log"
	CREDS_URL=http://127.0.0.1:$(cat "$T/$1.port")
}
start_creds main "{\"sts\": [[\"kweb\", \"$SK_kweb\"]],
	\"container\": [[\"kcont\", \"$SK_kcont\"]],
	\"imds\": [[\"kimds\", \"$SK_kimds\"]]}"

mkdir -p "$T/aws" "$T/home"
cat >"$T/aws/credentials" <<EOF
# cbtfs test
[default]
aws_access_key_id = kfile
aws_secret_access_key = $SK_kfile

[half]
aws_access_key_id = kfile
EOF
cat >"$T/aws/config" <<EOF
[default]
region = us-east-1

[profile cfg]
aws_access_key_id=kcfg
aws_secret_access_key=$SK_kcfg

[profile irsa]
role_arn = $ROLE_ARN
web_identity_token_file = $T/web-token
role_session_name = cbtfs-profile

[profile proc]
credential_process = /bin/false
EOF

AWS_VARS="AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
	AWS_PROFILE AWS_SHARED_CREDENTIALS_FILE AWS_CONFIG_FILE
	AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN AWS_ROLE_SESSION_NAME
	AWS_ENDPOINT_URL_STS AWS_CONTAINER_CREDENTIALS_FULL_URI
	AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
	AWS_CONTAINER_AUTHORIZATION_TOKEN AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
	AWS_EC2_METADATA_SERVICE_ENDPOINT AWS_EC2_METADATA_DISABLED"
no_sources() {
	unset $AWS_VARS
	export HOME=$T/home AWS_EC2_METADATA_DISABLED=true
}
set_env() { export AWS_ACCESS_KEY_ID=$MAIN_AK AWS_SECRET_ACCESS_KEY=$MAIN_SK; }
set_files() {
	export AWS_SHARED_CREDENTIALS_FILE=$T/aws/credentials
	export AWS_CONFIG_FILE=$T/aws/config
}
set_web() {
	export AWS_WEB_IDENTITY_TOKEN_FILE=$T/web-token AWS_ROLE_ARN=$ROLE_ARN
	export AWS_ENDPOINT_URL_STS=$CREDS_URL
}
set_container() {
	export AWS_CONTAINER_CREDENTIALS_FULL_URI=$CREDS_URL/v1/credentials
	export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=$T/pod-token
}
set_imds() {
	unset AWS_EC2_METADATA_DISABLED
	export AWS_EC2_METADATA_SERVICE_ENDPOINT=$CREDS_URL
}

# signs_with KEY [token]: 'cbtfs-repo snapshots' works, lists s1 and s2,
# and every request is signed with KEY (and carries a session token, or
# none)
signs_with() {
	local keys
	CBTFS_CURL_VERBOSE= "$REPO" snapshots "$R" >"$T/out" 2>"$T/trace" || {
		grep -v '^[<>*{}]' "$T/trace" >&2
		fail "snapshots with $1's credentials"
	}
	grep -q s1 "$T/out" && grep -q s2 "$T/out" || fail "$1: no s1, s2"
	keys=$(grep -o 'Credential=[^/]*' "$T/trace" | sort -u | tr '\n' ' ')
	[ "$keys" = "Credential=$1 " ] ||
		fail "signed with '$keys', want $1"
	if [ "${2:-}" = token ]; then
		grep -qi '^x-amz-security-token: [A-Za-z0-9+/=]\{64,\}' \
			"$T/trace" || fail "$1: no session token sent"
	else
		grep -qi '^x-amz-security-token: ' "$T/trace" &&
			fail "$1: a session token was sent"
	fi
	return 0
}
# served SERVICE...: the services the credentials server answered (200)
# since the last call, in order
served() {
	/usr/bin/python3 -c '
import json, sys
print(" ".join(r["service"] for r in map(json.loads, open(sys.argv[1]))
               if r["status"] == 200))' "$T/main.log"
	: >"$T/main.log"
}

# 1. precedence: environment > files > web identity > container > IMDS
no_sources
set_env; set_files; set_web; set_container; set_imds
signs_with "$MAIN_AK"
[ -z "$(served)" ] || fail "the environment won, yet an endpoint was asked"
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
signs_with kfile
[ -z "$(served)" ] || fail "the files won, yet an endpoint was asked"
unset AWS_SHARED_CREDENTIALS_FILE AWS_CONFIG_FILE
signs_with kweb token
[ "$(served)" = sts ] || fail "web identity: not one STS request"
unset AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN
signs_with kcont token
[ "$(served)" = container ] || fail "container: not one request"
unset AWS_CONTAINER_CREDENTIALS_FULL_URI
signs_with kimds token
[ "$(served)" = "imds-token imds-role imds-creds" ] ||
	fail "IMDS: not token, role, credentials"
note "precedence: environment, files, web identity, container, IMDS"

# 2. each source alone; profiles
for src in env files web container imds; do
	no_sources
	set_$src
	case $src in
	env) signs_with "$MAIN_AK" ;;
	files) signs_with kfile ;;
	web) signs_with kweb token ;;
	container) signs_with kcont token ;;
	imds) signs_with kimds token ;;
	esac
done
served >/dev/null
no_sources
set_files
AWS_PROFILE=cfg signs_with kcfg
AWS_ENDPOINT_URL_STS=$CREDS_URL AWS_PROFILE=irsa signs_with kweb token
[ "$(served)" = sts ] || fail "profile irsa: no STS request"
note "each source alone, [profile NAME] and web identity profiles"

# 3. a mount (container credentials) and a long ingest (web identity)
#    outlive their first credentials, at the same time: each source hands
#    out key A valid for 308 s, so a refresh is due 8 s after it was
#    issued, and key B after that.  Once the ingest has fetched key B and
#    8 s have passed since the mount got its key A (times from the
#    fixture's log), both keys A are deleted from RGW; the mount must read
#    on, the ingest (RGW behind a proxy that delays every request 0.5 s, so
#    that 64 chunks take at least 32 s and it is still running) must
#    commit, each with key B, fetched by itself.
start_creds long "{\"container\": [], \"imds\": [], \"lifetime\": 308,
	\"sts\": [[\"kwebA\", \"$SK_kwebA\"], [\"kwebB\", \"$SK_kwebB\"]]}"
LONG_URL=$CREDS_URL
start_creds refresh "{\"sts\": [], \"imds\": [], \"lifetime\": 308,
	\"container\": [[\"kcontA\", \"$SK_kcontA\"], [\"kcontB\", \"$SK_kcontB\"]]}"
# issued_at NAME KEY: when server NAME issued KEY (seconds since the epoch)
issued_at() {
	/usr/bin/python3 -c '
import json, sys
print(min(r["time"] for r in map(json.loads, open(sys.argv[1]))
          if r["status"] == 200 and r["key"] == sys.argv[2]))' \
		"$T/$1.log" "$2"
}
# sleep_until TIME: sleeps until TIME (seconds since the epoch), if ahead
sleep_until() {
	sleep "$(awk -v t="$1" -v now="$(date +%s.%N)" \
		'BEGIN { d = t - now; printf "%.3f", (d > 0 ? d : 0) }')"
}
start_proxy slow --delay 1 --delay-ms 500
head -c 4M /dev/urandom >"$T/v3"
(
	no_sources
	CREDS_URL=$LONG_URL
	set_web
	exec "$INGEST" --repo "$R" --volume ns/long --snapshot s3 \
		--device "$T/v3" --jobs 1 --no-progress --endpoint "$PROXY_URL" \
		>/dev/null 2>"$T/long.err"
) &
ING_PID=$!
_pids+=("$ING_PID")
no_sources
set_container
start_mount "$R" "$T/mnt" -o refresh=0
cmp "$T/mnt/ns/vol/s1.img" "$T/v1" || fail "mount: s1 differs"
grep -c '"key": "kcontA"' "$T/refresh.log" | grep -qx 1 ||
	fail "the mount did not start with key A"
mount_a=$(issued_at refresh kcontA) || fail "refresh.log: no time for kcontA"
wait_for 30 grep -q '"key": "kwebA"' "$T/long.log" ||
	fail "the ingest got no key A: $(cat "$T/long.err")"
ingest_a=$(issued_at long kwebA) || fail "long.log: no time for kwebA"
# the ingest's refresh is due at ingest_a + 8, at its next request
wait_for 30 grep -q '"key": "kwebB"' "$T/long.log" || {
	cat "$T/long.err" >&2
	fail "the ingest did not fetch key B (key A issued $ingest_a)"
}
# the mount's refresh is due at mount_a + 8 (Expiration, in whole
# seconds, is at most mount_a + 308)
sleep_until "$(awk -v t="$mount_a" 'BEGIN { printf "%.3f", t + 8.5 }')"
for k in kcontA kwebA; do
	radosgw-admin key rm --uid=test --key-type=s3 --access-key=$k \
		>/dev/null || fail "radosgw-admin key rm $k"
done
kill -0 "$ING_PID" 2>/dev/null ||
	fail "the ingest ended before key A was deleted: make it longer"
out=$(AWS_ACCESS_KEY_ID=kcontA AWS_SECRET_ACCESS_KEY=$SK_kcontA \
	"$REPO" snapshots "$R" 2>&1) && fail "key A still works after its removal"
grep -q InvalidAccessKeyId <<<"$out" || fail "key A: $out"
cmp "$T/mnt/ns/vol/s2.img" "$T/v2" || {
	cat "$MOUNT_LOG" >&2
	fail "mount: s2 unreadable once key A was gone"
}
stop_mount "$T/mnt"
wait "$ING_PID" || { cat "$T/long.err" >&2; fail "the long ingest failed"; }
# first key A, then key B (again every 8 s while it runs)
for f in refresh long; do
	/usr/bin/python3 -c '
import json, sys
keys = [r["key"] for r in map(json.loads, open(sys.argv[1]))
        if r["status"] == 200]
assert len(keys) >= 2 and keys[0].endswith("A") and \
    all(k.endswith("B") for k in keys[1:]), keys' "$T/$f.log" ||
		fail "$f: credentials issued: $(cat "$T/$f.log")"
done
set_env
"$REPO" restore "$R" ns/long@s3 --to "$T/v3.out" >/dev/null ||
	fail "restore ns/long@s3"
cmp "$T/v3" "$T/v3.out" || fail "ns/long@s3 differs"
note "a mount and a long ingest refreshed their credentials in time"

# 4. each broken source: a clear error naming it; no secret in any
ERRS=$T/errors
: >"$ERRS"
broken() {
	local want=$1 out
	shift
	out=$("$@" "$REPO" snapshots "$R" 2>&1) &&
		fail "expected failure: $*"$'\n'"$out"
	printf '%s\n' "$out" >>"$ERRS"
	grep -qF -- "no S3 credentials: " <<<"$out" &&
		grep -qF -- "$want" <<<"$out" ||
		fail "'$*' did not say '$want'; it said:"$'\n'"$out"
}
no_sources
CLOSED=$CLOSED_PORT
broken "environment: AWS_ACCESS_KEY_ID not set; shared files: $T/home/.aws/credentials: No such file or directory, $T/home/.aws/config: No such file or directory; web identity: AWS_WEB_IDENTITY_TOKEN_FILE not set; container credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI not set; IMDS: http://127.0.0.1:$CLOSED/latest/api/token: Failed to connect" \
	env -u AWS_EC2_METADATA_DISABLED \
	AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:$CLOSED
broken "IMDS: disabled by AWS_EC2_METADATA_DISABLED" env
broken "environment: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not" \
	env AWS_ACCESS_KEY_ID=kfile
set_files
broken "shared files: AWS_PROFILE=nosuch: the profile is in neither $T/aws/credentials (not there) nor $T/aws/config (not there)" \
	env AWS_PROFILE=nosuch
broken "shared files: profile half has aws_access_key_id but no aws_secret_access_key" \
	env AWS_PROFILE=half
broken "shared files: profile proc uses credential_process, which cbtfs does not do" \
	env AWS_PROFILE=proc
no_sources
set_web
printf 'not-the-token' >"$T/bad-token"
broken "web identity: STS at $CREDS_URL: HTTP 400 InvalidIdentityToken: Incorrect token audience" \
	env AWS_WEB_IDENTITY_TOKEN_FILE=$T/bad-token
broken "web identity: STS at $CREDS_URL: HTTP 403 AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity" \
	env AWS_ROLE_ARN=arn:aws:iam::123456789012:role/other
broken "web identity: token file $T/nothing: No such file or directory" \
	env AWS_WEB_IDENTITY_TOKEN_FILE=$T/nothing
broken "web identity: AWS_ROLE_ARN is set but AWS_WEB_IDENTITY_TOKEN_FILE is not" \
	env -u AWS_WEB_IDENTITY_TOKEN_FILE
no_sources
set_container
broken "container credentials: $CREDS_URL/v1/credentials: HTTP 401" \
	env AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=$T/bad-token
broken "container credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI=http://10.1.2.3/v1/credentials: use https, or http to a loopback address" \
	env AWS_CONTAINER_CREDENTIALS_FULL_URI=http://10.1.2.3/v1/credentials
broken "container credentials: http://127.0.0.1:$CLOSED/v1/credentials: Failed to connect" \
	env AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:$CLOSED/v1/credentials
# the fixture is strict: IMDS without the PUT's token is refused
code=$(curl -s -o /dev/null -w '%{http_code}' \
	"$CREDS_URL/latest/meta-data/iam/security-credentials/")
[ "$code" = 401 ] || fail "the IMDS fixture answered $code without a token"
for s in "${SECRETS[@]}"; do
	grep -qF -- "$s" "$ERRS" && fail "a secret appears in an error message"
done
note "each broken source named with its reason, no secret shown"
exit 0
