# shellcheck shell=bash
# Helpers shared by the k8s/ scripts (sourced, never run).  Also sourced by
# tests/k8s-manifests.sh, which renders the templates with render() below.
#
# Templates are YAML files with ${NAME} placeholders, NAME from
# CBTFS_TEMPLATE_VARS.  render() replaces each with the value of the shell
# variable of that name and fails on a placeholder it does not know or a
# variable that is unset, so a typo never reaches the cluster.  The scripts
# that run inside the containers therefore never write ${...}: they use
# $NAME, and no $$ either (the kubelet turns $$ into $ in command/args).

CBTFS_K8S_DIR=${CBTFS_K8S_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}

CBTFS_TEMPLATE_VARS=(
	NAMESPACE JOB PVC SRC_PVC TARGET SIZE VOLUME SNAPSHOT BASE
	STORAGE_CLASS SNAPSHOT_CLASS IMAGE IMAGE_PULL_POLICY REPO
	S3_ENDPOINT S3_REGION DEADLINE SOURCE_SHA256 EXPECT_SHA256 TARGET_ZEROED
	SMS_NAME SMS_AUDIENCE SMS_ADDRESS SMS_CA_CERT
)

# Defaults for the demo deployment; every script lets flags override them.
: "${CBTFS_NAMESPACE:=cbtfs}"
: "${CBTFS_REPO:=s3://cbtfs/backups}"
: "${CBTFS_IMAGE:=cbtfs:dev}"
: "${CBTFS_IMAGE_PULL_POLICY:=IfNotPresent}"
: "${CBTFS_S3_ENDPOINT:=http://minio.cbtfs.svc.cluster.local:9000}"
: "${CBTFS_S3_REGION:=us-east-1}"
: "${CBTFS_SNAPSHOT_CLASS:=csi-hostpath-snapclass}"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { log "WARNING: $*"; }
die() {
	log "ERROR: $*"
	exit 1
}

need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || die "$c is not installed (needed by $(basename "$0"))"
	done
}

# check_name WHAT VALUE [MAX]: VALUE must be a DNS-1123 label (lower-case
# letters, digits and '-', at most MAX characters, default 63): what
# Kubernetes accepts for the names and labels these scripts derive from it.
check_name() {
	local what=$1 value=$2 max=${3:-63}
	[[ $value =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] ||
		die "$what '$value' is not a valid name (lower-case letters, digits, '-')"
	((${#value} <= max)) || die "$what '$value' is longer than $max characters"
}

# render FILE: FILE with its ${NAME} placeholders replaced, on stdout.
render() {
	local file=$1 content v val
	[ -f "$file" ] || die "render: no template $file"
	content=$(<"$file")
	for v in "${CBTFS_TEMPLATE_VARS[@]}"; do
		[[ $content == *"\${$v}"* ]] || continue
		[[ -v $v ]] || die "render $file: \$$v is not set"
		val=${!v}
		[[ $val != *$'\n'* ]] || die "render $file: \$$v holds a newline"
		content=${content//"\${$v}"/"$val"}
	done
	if [[ $content =~ \$\{[A-Za-z_][A-Za-z0-9_]*\} ]]; then
		die "render $file: unknown placeholder ${BASH_REMATCH[0]}"
	fi
	printf '%s\n' "$content"
}

# wait_until SECONDS WHAT CMD...: runs CMD every 2 s until it succeeds;
# dies after SECONDS.
wait_until() {
	local limit=$1 what=$2 start=$SECONDS
	shift 2
	until "$@" >/dev/null 2>&1; do
		((SECONDS - start < limit)) || die "timed out after ${limit}s waiting for $what"
		sleep 2
	done
}

# jsonpath KIND NAME PATH [NAMESPACE]: one field of an object ('' if absent).
jsonpath() {
	local ns=${4:-$CBTFS_NAMESPACE}
	kubectl get "$1" "$2" -n "$ns" -o "jsonpath=$3" 2>/dev/null
}

# wait_job NAME NAMESPACE SECONDS: waits until Job NAME completes (0) or
# fails (1); dies on timeout.  A Failed condition ends the wait at once, and
# so does a pod that cannot start (its image missing, say).
wait_job() {
	local job=$1 ns=$2 limit=$3 start=$SECONDS conds why
	while :; do
		conds=$(kubectl get job "$job" -n "$ns" \
			-o 'jsonpath={range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}' 2>/dev/null) || conds=
		case " $conds " in
		*" Complete "*) return 0 ;;
		*" Failed "*) return 1 ;;
		esac
		why=$(kubectl get pods -n "$ns" -l "job-name=$job" \
			-o 'jsonpath={.items[*].status.containerStatuses[*].state.waiting.reason}' 2>/dev/null) || why=
		case " $why " in
		*" ErrImageNeverPull "* | *" InvalidImageName "* | *" CreateContainerConfigError "*)
			log "job $ns/$job cannot start: $why"
			return 1
			;;
		*" ImagePullBackOff "* | *" ErrImagePull "*)
			if ((SECONDS - start > 90)); then
				log "job $ns/$job cannot pull its image: $why"
				return 1
			fi
			;;
		esac
		((SECONDS - start < limit)) || die "timed out after ${limit}s waiting for job $ns/$job"
		sleep 3
	done
}

# wait_bound PVC NAMESPACE SECONDS: waits for a PVC to be Bound, unless its
# StorageClass binds only when a pod uses it (WaitForFirstConsumer).
wait_bound() {
	local pvc=$1 ns=$2 limit=$3 sc mode
	sc=$(kubectl get pvc "$pvc" -n "$ns" -o 'jsonpath={.spec.storageClassName}' 2>/dev/null) || sc=
	if [ -n "$sc" ]; then
		mode=$(kubectl get storageclass "$sc" -o 'jsonpath={.volumeBindingMode}' 2>/dev/null) || mode=
		[ "$mode" != WaitForFirstConsumer ] || return 0
	fi
	wait_until "$limit" "PVC $ns/$pvc to be Bound" pvc_bound "$pvc" "$ns"
}

pvc_bound() {
	[ "$(kubectl get pvc "$1" -n "$2" -o 'jsonpath={.status.phase}' 2>/dev/null)" = Bound ]
}

# --- running one Job: run-backup.sh, run-restore.sh ------------------------------
# These work on the caller's globals: they read NAMESPACE, JOB, TIMEOUT and
# KEEP_ON_FAILURE, and job_setup sets LOG, created_job and done (the caller
# sets done=1 once its work is complete).

# job_setup CLEANUP KEPT: makes the temporary file $LOG, sets created_job=0
# and done=0, and traps EXIT with job_cleanup and INT/TERM with exit 130.
# CLEANUP is the caller's function that deletes the objects it made besides
# the Job; KEPT names those ("pvc/NAME ...") for the --keep-on-failure message.
job_setup() {
	CBTFS_JOB_CLEANUP=$1 CBTFS_JOB_KEPT=$2
	created_job=0 done=0
	LOG=$(mktemp)
	trap job_cleanup EXIT
	trap 'exit 130' INT TERM
}

# job_cleanup: the EXIT trap of job_setup; exits with the status it was
# called with.  On failure (done=0) with KEEP_ON_FAILURE=1 it deletes nothing
# and logs what it left; else it deletes the Job (if created_job=1), then runs
# CLEANUP.  Either way it removes $LOG.
job_cleanup() {
	local rc=$?
	set +e
	if [ "$done" = 0 ] && [ "$KEEP_ON_FAILURE" = 1 ]; then
		log "failed; kept for debugging: job/$JOB $CBTFS_JOB_KEPT (namespace $NAMESPACE)"
		rm -f "$LOG"
		exit $rc
	fi
	if [ "$created_job" = 1 ]; then
		delete_job || warn "could not delete job/$JOB"
	fi
	"$CBTFS_JOB_CLEANUP"
	rm -f "$LOG"
	exit $rc
}

# delete_job: deletes Job $JOB of $NAMESPACE, if there, with its pods,
# waiting up to 120 s for them to go; fails as kubectl does.
delete_job() {
	kubectl delete job "$JOB" -n "$NAMESPACE" --ignore-not-found \
		--cascade=foreground --wait=true --timeout=120s >/dev/null
}

# run_job TEMPLATE WHAT DESC: logs "starting job NS/JOB: DESC", creates Job
# $JOB from TEMPLATE (through render), sets created_job=1 and waits for the
# Job (wait_job, $TIMEOUT s).  Returns once it completed; if it failed, prints
# its pods' logs and its description on stderr and dies "WHAT job JOB failed".
run_job() {
	local template=$1 what=$2 desc=$3
	log "starting job $NAMESPACE/$JOB: $desc"
	render "$template" | kubectl create -f - >/dev/null
	created_job=1
	if ! wait_job "$JOB" "$NAMESPACE" "$TIMEOUT"; then
		kubectl logs -n "$NAMESPACE" -l "job-name=$JOB" --tail=-1 --prefix >&2 || true
		kubectl describe job "$JOB" -n "$NAMESPACE" >&2 || true
		die "$what job $JOB failed"
	fi
}
