/*
 * cbtfs-repo: create, list, verify and maintain repositories.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <signal.h>

#include "array.h"
#include "browse.h"
#include "cli.h"
#include "prune.h"
#include "restore.h"
#include "verify.h"

static const char prog[] = "cbtfs-repo";

/* Options of some commands only; each has a bit in struct command. */
enum {
	OPT_CHUNK_SIZE = 256,
	OPT_VOLUME,
	OPT_JSON,
	OPT_CACHE_DIR,
	OPT_READ_DATA,
	OPT_SUBSET,
	OPT_JOBS,
	OPT_FORCE,
	OPT_ENCRYPT,
	OPT_NEW_PASSWORD_FILE,
	OPT_KEEP_LAST,
	OPT_KEEP_HOURLY,
	OPT_KEEP_DAILY,
	OPT_KEEP_WEEKLY,
	OPT_KEEP_MONTHLY,
	OPT_DRY_RUN,
	OPT_TO,
	OPT_FROM,
	OPT_TARGET_ZEROED,
	OPT_VERIFY,
	OPT_UNMOUNT,
	OPT_PASSWORD_FILE,	/* every command from here */
};
#define OPT_BIT(opt) (1u << ((opt) - OPT_CHUNK_SIZE))
/* a command that takes arguments after REPO */
#define TAKES_OPERANDS (1u << 31)

static const struct option long_opts[] = {
	{ "chunk-size", required_argument, NULL, OPT_CHUNK_SIZE },
	{ "volume", required_argument, NULL, OPT_VOLUME },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "cache-dir", required_argument, NULL, OPT_CACHE_DIR },
	{ "read-data", no_argument, NULL, OPT_READ_DATA },
	{ "subset", required_argument, NULL, OPT_SUBSET },
	{ "jobs", required_argument, NULL, OPT_JOBS },
	{ "force", no_argument, NULL, OPT_FORCE },
	{ "encrypt", no_argument, NULL, OPT_ENCRYPT },
	{ "password-file", required_argument, NULL, OPT_PASSWORD_FILE },
	{ "new-password-file", required_argument, NULL,
	  OPT_NEW_PASSWORD_FILE },
	{ "keep-last", required_argument, NULL, OPT_KEEP_LAST },
	{ "keep-hourly", required_argument, NULL, OPT_KEEP_HOURLY },
	{ "keep-daily", required_argument, NULL, OPT_KEEP_DAILY },
	{ "keep-weekly", required_argument, NULL, OPT_KEEP_WEEKLY },
	{ "keep-monthly", required_argument, NULL, OPT_KEEP_MONTHLY },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ "to", required_argument, NULL, OPT_TO },
	{ "from", required_argument, NULL, OPT_FROM },
	{ "target-zeroed", no_argument, NULL, OPT_TARGET_ZEROED },
	{ "verify", no_argument, NULL, OPT_VERIFY },
	{ "unmount", no_argument, NULL, OPT_UNMOUNT },
	CLI_STORE_LONG_OPTS,
	CLI_COMMON_LONG_OPTS,
	{ NULL, 0, NULL, 0 }
};

/*
 * Help: each option's lines, and for each command its synopsis and what it
 * does (in commands[] below).  `cbtfs-repo --help` prints every command
 * and option; `cbtfs-repo COMMAND --help` that command and its options.
 */
static const struct opt_help {
	int opt;
	const char *text;
} opt_helps[] = {
	{ OPT_CHUNK_SIZE,
"      --chunk-size SIZE  chunk size, a power of two from 64K to 16M\n"
"                         (default 1M)\n" },
	{ OPT_ENCRYPT,
"      --encrypt          encrypt the repository (AES-256-GCM under a\n"
"                         random key, wrapped with one derived from the\n"
"                         passphrase by scrypt)\n" },
	{ OPT_NEW_PASSWORD_FILE,
"      --new-password-file FILE  the new passphrase is the file's content\n"
"                         but a trailing newline (default\n"
"                         $CBTFS_NEW_PASSWORD, or asked twice)\n" },
	{ OPT_VOLUME,
"      --volume VOLUME    only this volume's snapshots or locks\n" },
	{ OPT_JSON,
"      --json             machine-readable output\n" },
	{ OPT_READ_DATA,
"      --read-data        fetch every chunk and verify its content\n" },
	{ OPT_SUBSET,
"      --subset PCT       with --read-data: only PCT percent (1-100) of\n"
"                         the chunks, chosen at random\n" },
	{ OPT_JOBS,
"  -j, --jobs N           requests in parallel (default: CPUs for a\n"
"                         directory, 8 for S3)\n" },
	{ OPT_FORCE,
"      --force            unlock: remove live and unreadable lock records\n"
"                         too; forget: the names may be every snapshot of\n"
"                         the volume\n" },
	{ OPT_KEEP_LAST,
"      --keep-last N      keep the N newest snapshots\n" },
	{ OPT_KEEP_HOURLY,
"      --keep-hourly N    keep the newest snapshot of each of the last N\n"
"                         hours that have one (UTC)\n" },
	{ OPT_KEEP_DAILY,
"      --keep-daily N     the same for days\n" },
	{ OPT_KEEP_WEEKLY,
"      --keep-weekly N    the same for ISO weeks\n" },
	{ OPT_KEEP_MONTHLY,
"      --keep-monthly N   the same for months\n" },
	{ OPT_DRY_RUN,
"      --dry-run          say what would go; change nothing\n" },
	{ OPT_TO,
"      --to PATH          the block device, file or - (stdout) to write\n"
"                         the image to\n" },
	{ OPT_FROM,
"      --from SNAPSHOT    PATH holds this snapshot of the volume already:\n"
"                         write only the chunks that differ\n" },
	{ OPT_TARGET_ZEROED,
"      --target-zeroed    PATH reads zeros (a new thin volume): skip the\n"
"                         zero chunks\n" },
	{ OPT_VERIFY,
"      --verify           read back what was written, and check it\n"
"                         against the chunk ids\n" },
	{ OPT_UNMOUNT,
"      --unmount          undo the browse at MOUNTPOINT\n" },
	{ OPT_CACHE_DIR,
"      --cache-dir DIR    where the local index lives (browse: and its\n"
"                         overlay; default $XDG_CACHE_HOME/cbtfs or\n"
"                         ~/.cache/cbtfs)\n" },
};

/* What every command takes. */
static const char common_help[] =
"  -r, --repo REPO        the repository (default $CBTFS_REPOSITORY); or\n"
"                         give REPO right after the command\n"
"      --password-file FILE  the passphrase of an encrypted repository is\n"
"                         the file's content but a trailing newline\n"
"                         (default $CBTFS_PASSWORD, or asked on a terminal;\n"
"                         twice by init)\n"
"  -v, --verbose          more messages\n"
"  -h, --help             show this help and exit\n"
"  -V, --version          show the version and exit\n";

struct opts {
	const char *repo;
	unsigned given;		/* OPT_BIT()s of the options given */
	uint64_t chunk_size;
	const char *volume;
	bool json;
	const char *cache_dir;
	bool read_data;
	unsigned subset;
	unsigned jobs;
	bool force;
	struct forget_policy policy;
	bool dry_run;
	const char *to, *from;	/* restore */
	bool target_zeroed, verify;
	char *const *operands;	/* after REPO, for commands that take them */
	size_t n_operands;
	/* the operands as a volume and snapshot names (split_operands()) */
	const char *volume_arg;
	const char **names;
	size_t n_names;
	struct store_opts store;
	struct passphrase_src pass;	/* of an encrypted repository */
	struct passphrase_src new_pass;	/* passwd */
};

static int cmd_init(const struct opts *o)
{
	char id[CBTFS_UUID_LEN + 1];
	uint64_t cs = o->given & OPT_BIT(OPT_CHUNK_SIZE)
			      ? o->chunk_size
			      : REPO_DEFAULT_CHUNK_SIZE;
	int err;

	bool encrypt = o->given & OPT_BIT(OPT_ENCRYPT);

	if (repo_check_chunk_size(cs) != 0)
		return EXIT_USAGE;
	if (o->pass.file != NULL && !encrypt)
		return cli_usage_error(prog, "init: --password-file needs "
				       "--encrypt");
	err = repo_init(o->repo, &o->store, (uint32_t)cs,
			encrypt ? &o->pass : NULL, id);
	if (err != 0)
		return EXIT_FAIL;
	printf("initialised %scbtfs repository %s (id %s, chunk size %s)\n",
	       encrypt ? "encrypted " : "", o->repo, id, HUMAN(cs));
	return EXIT_OK;
}

/* ---- snapshots ---------------------------------------------------------- */

/* All snapshots, gathered so parents can be named, and the manifests the
 * index could not read. */
struct snap_list {
	struct {
		struct manifest **v;
		size_t n, cap;
	} snaps;
	struct {
		char (*v)[CBTFS_UUID_LEN + 1];
		size_t n, cap;
	} bad;
};

static int gather(void *arg, const struct manifest *m)
{
	struct snap_list *l = arg;
	struct manifest *c;
	int err;

	if ((err = ARRAY_GROW(&l->snaps)) != 0)
		return err;
	c = manifest_dup_header(m);
	if (c == NULL)
		return ENOMEM;
	l->snaps.v[l->snaps.n++] = c;
	return 0;
}

static int gather_bad(void *arg, const char *id)
{
	struct snap_list *l = arg;
	int err;

	if ((err = ARRAY_GROW(&l->bad)) != 0)
		return err;
	snprintf(l->bad.v[l->bad.n++], sizeof(*l->bad.v), "%s", id);
	return 0;
}

static const char *parent_name(const struct snap_list *l,
			       const struct manifest *m)
{
	size_t i;

	if (m->parent_id[0] == '\0')
		return NULL;
	for (i = 0; i < l->snaps.n; i++)
		if (strcmp(l->snaps.v[i]->id, m->parent_id) == 0)
			return l->snaps.v[i]->name;
	return "?";
}

static void snap_list_free(struct snap_list *l)
{
	size_t i;

	for (i = 0; i < l->snaps.n; i++)
		manifest_free(l->snaps.v[i]);
	free(l->snaps.v);
	free(l->bad.v);
}

/* Local time with its zone, for tables. */
static const char *local_time(int64_t secs, char *buf, size_t size)
{
	time_t t = (time_t)secs;
	struct tm tm;

	if (localtime_r(&t, &tm) == NULL ||
	    strftime(buf, size, "%Y-%m-%d %H:%M:%S %Z", &tm) == 0)
		snprintf(buf, size, "@%lld", (long long)secs);
	return buf;
}

/* Widens *w to the length of s. */
static void widen(int *w, const char *s)
{
	int n = (int)strlen(s);

	if (n > *w)
		*w = n;
}

/* The table: each column as wide as its widest cell. */
static void print_table(const struct snap_list *l)
{
	int wv = 6, wn = 4, wp = 6, wc = 8, wt = 7, ws = 6;
	char when[64];
	size_t i;

	for (i = 0; i < l->snaps.n; i++) {
		const struct manifest *m = l->snaps.v[i];
		const char *parent = parent_name(l, m);

		widen(&wv, m->volume);
		widen(&wn, m->name);
		widen(&wp, parent ? parent : "-");
		widen(&wc, HUMAN(m->capacity));
		widen(&wt, local_time(m->created, when, sizeof(when)));
		widen(&ws, HUMAN(m->stats.bytes_stored));
	}
	printf("%-*s  %-*s  %-*s  %*s  %-*s  %*s\n", wv, "VOLUME", wn, "NAME",
	       wp, "PARENT", wc, "CAPACITY", wt, "CREATED", ws, "STORED");
	for (i = 0; i < l->snaps.n; i++) {
		const struct manifest *m = l->snaps.v[i];
		const char *parent = parent_name(l, m);

		printf("%-*s  %-*s  %-*s  %*s  %-*s  %*s\n", wv, m->volume, wn,
		       m->name, wp, parent ? parent : "-", wc,
		       HUMAN(m->capacity), wt,
		       local_time(m->created, when, sizeof(when)), ws,
		       HUMAN(m->stats.bytes_stored));
	}
	for (i = 0; i < l->bad.n; i++)
		printf("%-*s  snapshots/%s: its manifest cannot be read; see "
		       "'cbtfs-repo verify'\n", wv, "UNREADABLE",
		       l->bad.v[i]);
}

static void print_json(const struct snap_list *l)
{
	struct json_object *arr = json_object_new_array();
	size_t i;

	for (i = 0; i < l->snaps.n; i++) {
		const struct manifest *m = l->snaps.v[i];
		const char *parent = parent_name(l, m);
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "volume",
				       json_object_new_string(m->volume));
		json_object_object_add(o, "snapshot",
				       json_object_new_string(m->name));
		json_object_object_add(o, "id", json_object_new_string(m->id));
		json_object_object_add(o, "parent",
				       parent ? json_object_new_string(parent)
					      : NULL);
		json_object_object_add(
			o, "parent_id",
			parent ? json_object_new_string(m->parent_id) : NULL);
		json_object_object_add(
			o, "capacity",
			json_object_new_int64((int64_t)m->capacity));
		json_object_object_add(o, "chunk_size",
				       json_object_new_int64(m->chunk_size));
		json_object_object_add(o, "created",
				       cli_json_time(m->created));
		json_object_object_add(o, "changes",
				       cli_json_text(m->changes));
		json_object_object_add(o, "csi_snapshot_handle",
				       cli_json_text(m->csi_handle));
		json_object_object_add(o, "csi_driver",
				       cli_json_text(m->csi_driver));
		cli_json_stats(o, &m->stats);
		json_object_array_add(arr, o);
	}
	for (i = 0; i < l->bad.n; i++) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "id",
				       json_object_new_string(l->bad.v[i]));
		json_object_object_add(o, "unreadable",
				       json_object_new_boolean(1));
		json_object_array_add(arr, o);
	}
	cli_print_json(arr);
}

static int cmd_snapshots(const struct opts *o)
{
	struct snap_list l = { 0 };
	struct repo *r;
	struct index *ix;
	int err;

	if (o->volume != NULL && repo_check_volume_name(o->volume) != 0)
		return EXIT_USAGE;
	if (cli_open_repo(o->repo, &o->store, &o->pass, o->cache_dir, &r,
			  &ix) != 0)
		return EXIT_FAIL;
	/* a parent is always of the same volume, so l can name it; an
	 * unreadable manifest's volume is unknown, so it is always shown */
	err = index_sync(ix, NULL);
	if (err == 0)
		err = index_list_snapshots(ix, o->volume, gather, &l);
	if (err == 0)
		err = index_bad_manifests(ix, gather_bad, &l);
	if (err == ENOMEM)
		log_error("listing snapshots: out of memory");
	if (err == 0 && o->json)
		print_json(&l);
	else if (err == 0)
		print_table(&l);
	if (err == 0 && l.bad.n > 0)
		err = EBADMSG;	/* logged by the sync */
	snap_list_free(&l);
	index_close(ix);
	repo_close(r);
	return err == 0 ? EXIT_OK : EXIT_FAIL;
}

/* ---- verify ------------------------------------------------------------- */

/* {"volume":.., "snapshot":.., "id":.., "ranges":[[off,len],...]} */
static struct json_object *json_damaged(const struct verify_snapshot *s)
{
	struct json_object *o = json_object_new_object();
	struct json_object *ranges = json_object_new_array();
	size_t i;

	json_object_object_add(o, "volume", json_object_new_string(s->volume));
	json_object_object_add(o, "snapshot", json_object_new_string(s->name));
	json_object_object_add(o, "id", json_object_new_string(s->id));
	for (i = 0; i < s->ranges.n; i++) {
		struct json_object *r = json_object_new_array();

		json_object_array_add(r, json_object_new_int64(
					      (int64_t)s->ranges.v[i].off));
		json_object_array_add(r, json_object_new_int64(
					      (int64_t)s->ranges.v[i].len));
		json_object_array_add(ranges, r);
	}
	json_object_object_add(o, "ranges", ranges);
	return o;
}

static void print_verify_json(const struct verify_report *rep)
{
	struct json_object *o = json_object_new_object();
	struct json_object *probs = json_object_new_array();
	size_t i, j;

	json_object_object_add(o, "ok",
			       json_object_new_boolean(rep->problems.n == 0));
#define VERIFY_COUNTER_JSON(f)                                            \
	json_object_object_add(o, #f, json_object_new_int64((int64_t)rep->f));
	VERIFY_COUNTERS(VERIFY_COUNTER_JSON)
#undef VERIFY_COUNTER_JSON
	json_object_object_add(o, "seconds",
			       cli_json_seconds(rep->seconds));
	for (i = 0; i < rep->problems.n; i++) {
		const struct verify_problem *p = &rep->problems.v[i];
		struct json_object *jp = json_object_new_object();
		struct json_object *snaps = json_object_new_array();

		json_object_object_add(jp, "kind", json_object_new_string(
						   verify_kind_name(p->kind)));
		json_object_object_add(jp, "object",
				       json_object_new_string(p->object));
		json_object_object_add(jp, "why",
				       json_object_new_string(p->why));
		for (j = 0; j < p->snapshots.n; j++) {
			const struct verify_snapshot *s = &p->snapshots.v[j];

			json_object_array_add(snaps, json_damaged(s));
		}
		json_object_object_add(jp, "snapshots", snaps);
		json_object_array_add(probs, jp);
	}
	json_object_object_add(o, "problems", probs);
	cli_print_json(o);
}

static void print_verify(const struct verify_report *rep)
{
	double mbps = rep->seconds > 0 ? rep->read_bytes / rep->seconds / 1e6
				       : 0.0;
	size_t i, j, k;

	for (i = 0; i < rep->problems.n; i++) {
		const struct verify_problem *p = &rep->problems.v[i];

		printf("%s %s: %s\n", verify_kind_name(p->kind), p->object,
		       p->why);
		if (p->snapshots.n == 0)
			printf("  no other snapshot depends on it\n");
		for (j = 0; j < p->snapshots.n; j++) {
			const struct verify_snapshot *s = &p->snapshots.v[j];

			printf("  %s %s: bytes", s->volume, s->name);
			for (k = 0; k < s->ranges.n; k++)
				printf("%s %" PRIu64 "+%" PRIu64,
				       k > 0 ? "," : "", s->ranges.v[k].off,
				       s->ranges.v[k].len);
			printf("\n");
		}
	}
	printf("verify: %" PRIu64 " manifests, %" PRIu64 " chunks checked",
	       rep->manifests, rep->chunks_checked);
	if (rep->chunks_read > 0)
		printf(", %" PRIu64 " read (%s, %.1f MB/s)", rep->chunks_read,
		       HUMAN(rep->read_bytes), mbps);
	printf(" in %.1f s: ", rep->seconds);
	if (rep->problems.n == 0)
		printf("no problems");
	else
		printf("%zu problem%s", rep->problems.n,
		       rep->problems.n == 1 ? "" : "s");
	if (rep->damage_marked > 0)
		printf("; %" PRIu64 " damaged chunk%s recorded",
		       rep->damage_marked, rep->damage_marked == 1 ? "" : "s");
	if (rep->damage_cleared > 0)
		printf("; %" PRIu64 " damage record%s removed",
		       rep->damage_cleared,
		       rep->damage_cleared == 1 ? "" : "s");
	printf("\n");
}

static int cmd_verify(const struct opts *o)
{
	struct verify_conf conf = {
		.volume = o->volume,
		.read_data = o->read_data,
		.subset = o->subset,
		.jobs = o->jobs,
		.progress = isatty(STDERR_FILENO),
	};
	struct store_opts sopts = o->store;
	struct verify_report rep;
	int err;

	if (o->volume != NULL && repo_check_volume_name(o->volume) != 0)
		return EXIT_USAGE;
	sopts.connections = o->jobs;
	conf.repo = repo_open(o->repo, &sopts, &o->pass, &err);
	if (conf.repo == NULL)
		return EXIT_FAIL;
	err = verify_run(&conf, &rep);
	if (err != 0)
		log_error("verify of %s stopped before the end (see above); "
			  "what it did not reach is unchecked: run it again",
			  o->repo);
	else if (o->json)
		print_verify_json(&rep);
	else
		print_verify(&rep);
	if (err == 0 && rep.problems.n > 0)
		err = EBADMSG;
	verify_report_free(&rep);
	repo_close(conf.repo);
	return err == 0 ? EXIT_OK : EXIT_FAIL;
}

/* ---- unlock ------------------------------------------------------------- */

struct lock_list {
	struct repo_lock_info *v;
	size_t n, cap;
};

static int gather_lock(void *arg, const struct repo_lock_info *li)
{
	struct lock_list *l = arg;
	int err;

	if ((err = ARRAY_GROW(l)) != 0)
		return err;
	l->v[l->n++] = *li;
	return 0;
}

static int cmd_unlock(const struct opts *o)
{
	struct lock_list l = { 0 };
	size_t i, removed = 0, refused = 0, failed = 0;
	struct repo *r;
	int err;

	if (o->volume != NULL && repo_check_volume_name(o->volume) != 0)
		return EXIT_USAGE;
	r = repo_open(o->repo, &o->store, &o->pass, &err);
	if (r == NULL)
		return EXIT_FAIL;
	err = repo_list_locks(r, gather_lock, &l);
	if (err == ENOMEM)
		log_error("listing locks: out of memory");
	for (i = 0; i < l.n && err == 0; i++) {
		const struct repo_lock_info *li = &l.v[i];
		bool garbled = li->status == REPO_LOCK_GARBLED;
		char holder[512];

		/* a garbled record may be of any volume, and blocks all;
		 * so does a prune's */
		if (o->volume != NULL && !garbled &&
		    li->kind != REPO_LOCK_PRUNE &&
		    strcmp(li->volume, o->volume) != 0)
			continue;
		if (garbled)
			snprintf(holder, sizeof(holder), "a record that "
				 "cannot be read");
		else
			repo_lock_holder(li, holder, sizeof(holder));
		if ((garbled || li->status == REPO_LOCK_LIVE) && !o->force) {
			if (garbled)
				log_error("not removing locks/%s: the record "
					  "cannot be read; if no ingest is "
					  "running, remove it with --force",
					  li->id);
			else if (li->kind == REPO_LOCK_PRUNE)
				log_error("not removing locks/%s of a prune "
					  "of the repository: it is live "
					  "(%s); if that prune is gone, "
					  "remove it with --force, or wait "
					  "until its lease of %u s runs out",
					  li->id,
					  holder, li->lease);
			else
				log_error("not removing locks/%s of volume "
					  "'%s': it is live (%s); if that "
					  "%s is gone, remove it with "
					  "--force, or wait until its lease "
					  "of %u s runs out", li->id,
					  li->volume, holder,
					  repo_lock_kind_name(li->kind),
					  li->lease);
			refused++;
			continue;
		}
		if (repo_remove_lock(r, li->id) != 0) {
			failed++;	/* logged */
			continue;
		}
		printf("removed locks/%s (%s, %s, %s)\n", li->id,
		       repo_lock_status_name(li->status),
		       garbled			     ? "volume unknown"
		       : li->kind == REPO_LOCK_PRUNE ? "repository"
						     : li->volume,
		       holder);
		removed++;
	}
	if (err == 0 && removed + refused + failed == 0)
		printf("no lock records%s%s%s to remove\n",
		       o->volume ? " of volume '" : "",
		       o->volume ? o->volume : "", o->volume ? "'" : "");
	free(l.v);
	repo_close(r);
	return err == 0 && refused + failed == 0 ? EXIT_OK : EXIT_FAIL;
}

/* ---- forget and prune --------------------------------------------------- */

/* "last, daily" for reason bits into buf. */
static const char *reasons_str(unsigned keep, char *buf, size_t size)
{
	const char *name;
	size_t n = 0;
	unsigned b;

	buf[0] = '\0';
	for (b = 0; (name = forget_reason_name(b)) != NULL; b++)
		if (keep & (1u << b))
			n += (size_t)snprintf(buf + n, n < size ? size - n : 0,
					      "%s%s", n ? ", " : "", name);
	return buf;
}

static void print_forget(const struct forget_report *rep, bool dry_run)
{
	const char *vol = NULL;
	size_t i;

	for (i = 0; i < rep->snapshots.n; i++) {
		const struct forget_snapshot *s = &rep->snapshots.v[i];
		time_t t = (time_t)s->created;
		char when[32], why[128];

		if (vol == NULL || strcmp(vol, s->volume) != 0) {
			printf("volume %s:\n", s->volume);
			vol = s->volume;
		}
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S",
			 localtime(&t));
		printf("  %-6s %-20s %s  %s%s\n", s->keep ? "keep" : "forget",
		       s->name, when,
		       reasons_str(s->keep, why, sizeof(why)),
		       s->rewritten ? (dry_run ? " (would be rewritten)"
					       : " (rewritten)")
				    : "");
	}
	printf("forget%s: %" PRIu64 " snapshot%s %sforgotten, %" PRIu64
	       " kept (%" PRIu64 " rewritten), of %" PRIu64 " volume%s, in "
	       "%.1f s%s\n", dry_run ? " (dry run)" : "", rep->forgotten,
	       rep->forgotten == 1 ? "" : "s", dry_run ? "would be " : "",
	       rep->kept, rep->rewritten, rep->volumes,
	       rep->volumes == 1 ? "" : "s", rep->seconds,
	       dry_run ? "; nothing was changed" : "");
}

static void print_forget_json(const struct forget_report *rep, bool dry_run)
{
	struct json_object *o = json_object_new_object();
	struct json_object *snaps = json_object_new_array();
	size_t i;

	json_object_object_add(o, "dry_run", json_object_new_boolean(dry_run));
#define FORGET_COUNTER_JSON(f)                                            \
	json_object_object_add(o, #f, json_object_new_int64((int64_t)rep->f));
	FORGET_COUNTERS(FORGET_COUNTER_JSON)
#undef FORGET_COUNTER_JSON
	json_object_object_add(o, "seconds",
			       cli_json_seconds(rep->seconds));
	for (i = 0; i < rep->snapshots.n; i++) {
		const struct forget_snapshot *s = &rep->snapshots.v[i];
		struct json_object *js = json_object_new_object();
		struct json_object *why = json_object_new_array();
		const char *name;
		unsigned b;

		json_object_object_add(js, "volume",
				       json_object_new_string(s->volume));
		json_object_object_add(js, "snapshot",
				       json_object_new_string(s->name));
		json_object_object_add(js, "id",
				       json_object_new_string(s->id));
		json_object_object_add(js, "created",
				       cli_json_time(s->created));
		json_object_object_add(js, "keep",
				       json_object_new_boolean(s->keep != 0));
		for (b = 0; (name = forget_reason_name(b)) != NULL; b++)
			if (s->keep & (1u << b))
				json_object_array_add(
					why, json_object_new_string(name));
		json_object_object_add(js, "reasons", why);
		json_object_object_add(js, "rewritten",
				       json_object_new_boolean(s->rewritten));
		json_object_array_add(snaps, js);
	}
	json_object_object_add(o, "snapshots", snaps);
	cli_print_json(o);
}

static int cmd_forget(const struct opts *o)
{
	struct forget_conf conf = {
		.volume = o->volume,
		.policy = o->policy,
		.force = o->force,
		.dry_run = o->dry_run,
		.jobs = o->jobs,
		.progress = isatty(STDERR_FILENO),
	};
	bool policy = forget_policy_any(&o->policy);
	struct store_opts sopts = o->store;
	struct forget_report rep;
	size_t i;
	int err;

	if (o->n_operands > 0 && o->volume != NULL)
		return cli_usage_error(prog, "forget: give the volume either "
				       "as --volume or after REPO, not both");
	if (o->n_operands > 0 && policy)
		return cli_usage_error(prog, "forget: name snapshots, or give "
				       "a --keep policy with --volume, not "
				       "both");
	if (o->n_operands > 0 && o->n_names == 0)
		return cli_usage_error(prog, "forget: name the snapshots of "
				       "volume '%s' to forget after it",
				       o->volume_arg);
	if (o->n_operands == 0 && !policy)
		return cli_usage_error(prog, "forget: name the snapshots to "
				       "forget (REPO VOLUME SNAPSHOT...), or "
				       "give a policy (--keep-last, "
				       "--keep-hourly, --keep-daily, "
				       "--keep-weekly or --keep-monthly)");
	if (policy && o->force)
		return cli_usage_error(prog, "forget: --force applies to "
				       "named snapshots only (a policy always "
				       "keeps the newest)");
	if (o->n_operands > 0) {
		conf.volume = o->volume_arg;
		conf.names = o->names;
		conf.n_names = o->n_names;
	}
	if (conf.volume != NULL && repo_check_volume_name(conf.volume) != 0)
		return EXIT_USAGE;
	for (i = 0; i < conf.n_names; i++)
		if (repo_check_snapshot_name(conf.names[i]) != 0)
			return EXIT_USAGE;
	sopts.connections = o->jobs;
	conf.repo = repo_open(o->repo, &sopts, &o->pass, &err);
	if (conf.repo == NULL)
		return EXIT_FAIL;
	err = forget_run(&conf, &rep);
	if (err == 0 && o->json)
		print_forget_json(&rep, o->dry_run);
	else if (err == 0)
		print_forget(&rep, o->dry_run);
	forget_report_free(&rep);
	repo_close(conf.repo);
	return err == 0 ? EXIT_OK : EXIT_FAIL;
}

static void print_prune(const struct prune_report *rep, bool dry_run)
{
	const char *verb = dry_run ? "would delete" : "deleted";

	printf("prune%s: %" PRIu64 " manifests, %" PRIu64 " chunks in the "
	       "repository, %" PRIu64 " in use; %s %" PRIu64 " chunk%s (%s), "
	       "%" PRIu64 " damage record%s and %" PRIu64 " temporary "
	       "file%s (%s) in %.1f s%s\n", dry_run ? " (dry run)" : "",
	       rep->manifests, rep->chunks_listed, rep->chunks_referenced,
	       verb, rep->chunks_deleted, rep->chunks_deleted == 1 ? "" : "s",
	       HUMAN(rep->freed_bytes), rep->damage_removed,
	       rep->damage_removed == 1 ? "" : "s", rep->temp_removed,
	       rep->temp_removed == 1 ? "" : "s", HUMAN(rep->temp_bytes),
	       rep->seconds, dry_run ? "; nothing was changed" : "");
}

static void print_prune_json(const struct prune_report *rep, bool dry_run)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "dry_run", json_object_new_boolean(dry_run));
#define PRUNE_COUNTER_JSON(f)                                             \
	json_object_object_add(o, #f, json_object_new_int64((int64_t)rep->f));
	PRUNE_COUNTERS(PRUNE_COUNTER_JSON)
#undef PRUNE_COUNTER_JSON
	json_object_object_add(o, "seconds",
			       cli_json_seconds(rep->seconds));
	cli_print_json(o);
}

static int cmd_prune(const struct opts *o)
{
	struct prune_conf conf = {
		.dry_run = o->dry_run,
		.jobs = o->jobs,
		.progress = isatty(STDERR_FILENO),
	};
	struct store_opts sopts = o->store;
	struct prune_report rep;
	int err;

	sopts.connections = o->jobs;
	conf.repo = repo_open(o->repo, &sopts, &o->pass, &err);
	if (conf.repo == NULL)
		return EXIT_FAIL;
	err = prune_run(&conf, &rep);
	if (err != 0)
		log_error("prune of %s stopped (see above); what it deleted "
			  "was not in use, and running it again finishes the "
			  "job", o->repo);
	else if (o->json)
		print_prune_json(&rep, o->dry_run);
	else
		print_prune(&rep, o->dry_run);
	repo_close(conf.repo);
	return err == 0 ? EXIT_OK : EXIT_FAIL;
}

/* ---- restore ------------------------------------------------------------ */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void print_restore(const struct restore_conf *conf,
			  const struct restore_report *rep, FILE *out)
{
	double secs = rep->seconds > 0 ? rep->seconds : 1e-9;

	fprintf(out, "restored %s@%s (%s) to %s%s in %.1f s: wrote %" PRIu64
		" chunk%s (%s, %.0f MB/s)", conf->volume, conf->snapshot,
		HUMAN(rep->capacity),
		strcmp(conf->target, "-") == 0 ? "stdout" : conf->target,
		rep->new_file ? " (a new file)" : "", rep->seconds,
		rep->chunks_written, rep->chunks_written == 1 ? "" : "s",
		HUMAN(rep->written_bytes),
		(double)rep->written_bytes / secs / 1e6);
	if (rep->chunks_zeroed > 0)
		fprintf(out, ", zeroed %" PRIu64 " (%s)", rep->chunks_zeroed,
			HUMAN(rep->zeroed_bytes));
	if (rep->chunks_skipped > 0)
		fprintf(out, ", skipped %" PRIu64 " %s", rep->chunks_skipped,
			conf->from != NULL ? "unchanged since --from"
					   : "zero chunks");
	if (conf->verify)
		fprintf(out, "; read back and verified %" PRIu64 " chunk%s%s",
			rep->chunks_verified,
			rep->chunks_verified == 1 ? "" : "s",
			rep->chunks_skipped > 0 ? " (the skipped ones were "
						  "not read)" : "");
	fputc('\n', out);
}

static void print_restore_json(const struct restore_conf *conf,
			       const struct restore_report *rep)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "volume",
			       json_object_new_string(conf->volume));
	json_object_object_add(o, "snapshot",
			       json_object_new_string(conf->snapshot));
	json_object_object_add(o, "from", conf->from
			       ? json_object_new_string(conf->from) : NULL);
	json_object_object_add(o, "target",
			       json_object_new_string(conf->target));
	json_object_object_add(o, "new_file",
			       json_object_new_boolean(rep->new_file));
	json_object_object_add(o, "verified",
			       json_object_new_boolean(conf->verify));
#define RESTORE_JSON(f)                                                    \
	json_object_object_add(o, #f, json_object_new_int64((int64_t)rep->f));
	RESTORE_COUNTERS(RESTORE_JSON)
#undef RESTORE_JSON
	json_object_object_add(o, "seconds", cli_json_seconds(rep->seconds));
	cli_print_json(o);
}

static int cmd_restore(const struct opts *o)
{
	struct restore_conf conf = {
		.from = o->from,
		.target = o->to,
		.target_zeroed = o->target_zeroed,
		.verify = o->verify,
		.jobs = o->jobs,
		.progress = isatty(STDERR_FILENO),
		.interrupted = &interrupted,
	};
	struct store_opts sopts = o->store;
	struct restore_report rep;
	struct sigaction sa = { .sa_handler = on_signal };
	bool to_stdout;
	int err;

	if (o->n_operands == 0)
		return cli_usage_error(prog,
				       "restore: give REPO (or -r REPO, "
				       "or $%s), then the snapshot as VOLUME "
				       "SNAPSHOT or VOLUME@SNAPSHOT",
				       REPO_ENV);
	if (o->n_names != 1)
		return cli_usage_error(prog, "restore: name one snapshot, as "
				       "VOLUME SNAPSHOT or VOLUME@SNAPSHOT, "
				       "after REPO");
	conf.volume = o->volume_arg;
	conf.snapshot = o->names[0];
	if (o->to == NULL)
		return cli_usage_error(prog, "restore: say where to with --to "
				       "PATH (a block device, a file, or - "
				       "for stdout)");
	to_stdout = strcmp(o->to, "-") == 0;
	if (to_stdout && (o->verify || o->from))
		return cli_usage_error(prog, "restore --to -: --verify and "
				       "--from need a target that can be read "
				       "back or written in place");
	if (to_stdout && o->json)
		return cli_usage_error(prog,
				       "restore --to -: --json would mix "
				       "the summary into the image on stdout");
	if (o->from != NULL && o->target_zeroed)
		return cli_usage_error(prog, "restore: --from says what the "
				       "target holds; --target-zeroed says it "
				       "holds zeros: give one");
	if (repo_check_volume_name(conf.volume) != 0 ||
	    repo_check_snapshot_name(conf.snapshot) != 0 ||
	    (o->from != NULL && repo_check_snapshot_name(o->from) != 0))
		return EXIT_USAGE;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	/* a reader of stdout that stops is an error to report, not death */
	signal(SIGPIPE, SIG_IGN);
	sopts.connections = o->jobs;
	if (cli_open_repo(o->repo, &sopts, &o->pass, o->cache_dir,
			  &conf.repo, &conf.index) != 0)
		return EXIT_FAIL;
	err = restore_run(&conf, &rep);
	if (err == 0 && o->json)
		print_restore_json(&conf, &rep);
	else if (err == 0)
		print_restore(&conf, &rep, to_stdout ? stderr : stdout);
	index_close(conf.index);
	repo_close(conf.repo);
	return err == 0 ? EXIT_OK : EXIT_FAIL;
}

/* ---- browse (browse.c) ------------------------------------------------- */

static int cmd_browse(const struct opts *o)
{
	struct browse_conf conf = {
		.repo = o->repo,
		.store = &o->store,
		.password_file = o->pass.file,
		.cache_dir = o->cache_dir,
	};
	const char *at;
	char volume[520];

	if (o->given & OPT_BIT(OPT_UNMOUNT)) {
		/* MOUNTPOINT, where REPO or an operand would stand */
		if (o->n_operands > 1)
			return cli_usage_error(prog, "browse --unmount: give "
					       "only the MOUNTPOINT");
		return browse_stop(o->n_operands == 1 ? o->operands[0]
						      : o->repo) == 0
			       ? EXIT_OK
			       : EXIT_FAIL;
	}
	if (o->n_operands == 3) {
		conf.volume = o->operands[0];
		conf.snapshot = o->operands[1];
	} else if (o->n_operands == 2 &&
		   (at = strrchr(o->operands[0], '@')) != NULL &&
		   (size_t)(at - o->operands[0]) < sizeof(volume)) {
		snprintf(volume, sizeof(volume), "%.*s",
			 (int)(at - o->operands[0]), o->operands[0]);
		conf.volume = volume;
		conf.snapshot = at + 1;
	} else {
		return cli_usage_error(prog, "browse: give REPO "
				       "VOLUME@SNAPSHOT MOUNTPOINT");
	}
	if (repo_check_volume_name(conf.volume) != 0 ||
	    repo_check_snapshot_name(conf.snapshot) != 0)
		return EXIT_USAGE;
	conf.mountpoint = o->operands[o->n_operands - 1];
	return browse_start(&conf) == 0 ? EXIT_OK : EXIT_FAIL;
}

/* ---- reindex, and the commands ----------------------------------------- */

static int cmd_reindex(const struct opts *o)
{
	struct repo *r;
	struct index *ix;
	int err;

	if (cli_open_repo(o->repo, &o->store, &o->pass, o->cache_dir, &r,
			  &ix) != 0)
		return EXIT_FAIL;
	err = index_rebuild(ix);
	if (err == 0)
		printf("rebuilt index %s\n", index_path(ix));
	index_close(ix);
	repo_close(r);
	return err == 0 ? EXIT_OK : EXIT_FAIL;
}

static int cmd_passwd(const struct opts *o)
{
	if (repo_passwd(o->repo, &o->store, &o->pass, &o->new_pass) != 0)
		return EXIT_FAIL;
	printf("changed the passphrase of %s\n", o->repo);
	return EXIT_OK;
}

/*
 * Reads the operands as snapshots of one volume: VOLUME SNAPSHOT..., or
 * VOLUME@SNAPSHOT... (split at the last '@': a snapshot whose name holds
 * an '@' is named the first way), all of one volume.  0, or ENOMEM.
 */
static int split_operands(struct opts *o, char *vol, size_t size)
{
	const char *at = NULL;
	size_t i, len = 0;
	bool all_at = o->n_operands > 0;

	for (i = 0; i < o->n_operands && all_at; i++) {
		at = strrchr(o->operands[i], '@');
		if (at == NULL || (i > 0 && ((size_t)(at - o->operands[i]) !=
					     len || strncmp(o->operands[i],
							    o->operands[0],
							    len) != 0)))
			all_at = false;
		else
			len = (size_t)(at - o->operands[i]);
	}
	if (all_at && len >= size)
		all_at = false;
	o->names = calloc(o->n_operands + 1, sizeof(*o->names));
	if (o->names == NULL)
		return ENOMEM;
	if (all_at) {
		snprintf(vol, size, "%.*s", (int)len, o->operands[0]);
		o->volume_arg = vol;
		for (i = 0; i < o->n_operands; i++)
			o->names[i] = o->operands[i] + len + 1;
		o->n_names = o->n_operands;
	} else if (o->n_operands > 0) {
		o->volume_arg = o->operands[0];
		for (i = 1; i < o->n_operands; i++)
			o->names[i - 1] = o->operands[i];
		o->n_names = o->n_operands - 1;
	}
	return 0;
}

static const struct command {
	const char *name;
	int (*run)(const struct opts *o);
	unsigned options;	/* OPT_BIT()s of the options that apply,
				 * and TAKES_OPERANDS */
	const char *synopsis;	/* after "cbtfs-repo NAME REPO" */
	const char *help;	/* what it does */
} commands[] = {
	{ "init", cmd_init, OPT_BIT(OPT_CHUNK_SIZE) | OPT_BIT(OPT_ENCRYPT),
	  "[--chunk-size SIZE] [--encrypt]",
"create an empty repository in REPO (a new or empty directory, its\n"
"missing parents created, file:///path, or s3://BUCKET/PREFIX where the\n"
"bucket exists and the prefix is empty); with --encrypt, its chunks and\n"
"manifests are encrypted with keys that a passphrase unlocks\n" },
	{ "snapshots", cmd_snapshots,
	  OPT_BIT(OPT_VOLUME) | OPT_BIT(OPT_JSON) | OPT_BIT(OPT_CACHE_DIR),
	  "[--volume VOLUME] [--json]",
"list snapshots: volume, name, parent, capacity, creation time and bytes\n"
"stored by each; a manifest that cannot be read is listed as UNREADABLE,\n"
"with its id, and makes the exit status 1\n" },
	{ "verify", cmd_verify,
	  OPT_BIT(OPT_VOLUME) | OPT_BIT(OPT_JSON) | OPT_BIT(OPT_READ_DATA) |
		  OPT_BIT(OPT_SUBSET) | OPT_BIT(OPT_JOBS),
	  "[--volume VOLUME] [--read-data [--subset PCT]]\n"
	  "         [--jobs N] [--json]",
"check the repository from its objects alone: every manifest decodes,\n"
"every chain of parents is complete, every chunk the snapshots use\n"
"exists; with --read-data, fetch and verify the chunks too.  Each problem\n"
"is reported with the snapshots and byte ranges it damages; damaged\n"
"chunks are recorded, so that the next ingest of their data stores them\n"
"again\n" },
	{ "unlock", cmd_unlock, OPT_BIT(OPT_VOLUME) | OPT_BIT(OPT_FORCE),
	  "[--volume VOLUME] [--force]",
"remove the lock records of ingests that are dead, expired or abandoned;\n"
"refuse live and unreadable ones unless --force\n" },
	{ "reindex", cmd_reindex, OPT_BIT(OPT_CACHE_DIR), "",
"rebuild the local index of REPO from the repository\n" },
	{ "passwd", cmd_passwd, OPT_BIT(OPT_NEW_PASSWORD_FILE),
	  "[--new-password-file FILE]",
"change the passphrase of an encrypted repository; the new one comes\n"
"from --new-password-file, $CBTFS_NEW_PASSWORD, or is asked twice on a\n"
"terminal.  The keys and the data do not change\n" },
	{ "forget", cmd_forget,
	  OPT_BIT(OPT_VOLUME) | OPT_BIT(OPT_JSON) | OPT_BIT(OPT_JOBS) |
		  OPT_BIT(OPT_FORCE) | OPT_BIT(OPT_KEEP_LAST) |
		  OPT_BIT(OPT_KEEP_HOURLY) | OPT_BIT(OPT_KEEP_DAILY) |
		  OPT_BIT(OPT_KEEP_WEEKLY) | OPT_BIT(OPT_KEEP_MONTHLY) |
		  OPT_BIT(OPT_DRY_RUN) | TAKES_OPERANDS,
	  "VOLUME SNAPSHOT... [--force] [--dry-run] [--json]\n"
	  "  cbtfs-repo forget REPO [--volume VOLUME] --keep-last N\n"
	  "         --keep-hourly N --keep-daily N --keep-weekly N\n"
	  "         --keep-monthly N [--dry-run] [--json]",
"remove the named snapshots (VOLUME SNAPSHOT..., or VOLUME@SNAPSHOT...),\n"
"or those no --keep rule keeps (any of them; per volume; the newest of a\n"
"volume is always kept); each one's data is first folded into the\n"
"snapshots based on it, so every other snapshot reads the same; chunks\n"
"are freed by prune\n" },
	{ "prune", cmd_prune,
	  OPT_BIT(OPT_JSON) | OPT_BIT(OPT_JOBS) | OPT_BIT(OPT_DRY_RUN),
	  "[--dry-run] [--jobs N] [--json]",
"delete the chunks no snapshot uses (of forgotten snapshots and of\n"
"ingests that stopped early), their damage records, and old temporary\n"
"files; refused while an ingest or forget runs\n" },
	{ "restore", cmd_restore,
	  OPT_BIT(OPT_JSON) | OPT_BIT(OPT_JOBS) | OPT_BIT(OPT_TO) |
		  OPT_BIT(OPT_FROM) | OPT_BIT(OPT_TARGET_ZEROED) |
		  OPT_BIT(OPT_VERIFY) | OPT_BIT(OPT_CACHE_DIR) |
		  TAKES_OPERANDS,
	  "VOLUME SNAPSHOT --to PATH [--from SNAPSHOT]\n"
	  "         [--target-zeroed] [--verify] [--jobs N] [--json]",
"write the image of VOLUME's SNAPSHOT (also VOLUME@SNAPSHOT) to PATH: a\n"
"block device, a file (created if missing), or - for stdout.  Chunks are\n"
"fetched in parallel and verified; zero chunks are skipped on a new file\n"
"or with --target-zeroed, and otherwise zeroed without writing them.\n"
"Refuses a target that is smaller than the image, mounted or read-only\n" },
	{ "browse", cmd_browse,
	  OPT_BIT(OPT_UNMOUNT) | OPT_BIT(OPT_CACHE_DIR) | TAKES_OPERANDS,
	  "VOLUME@SNAPSHOT MOUNTPOINT\n"
	  "  cbtfs-repo browse --unmount MOUNTPOINT",
"(root) show the files of VOLUME's SNAPSHOT read-only at MOUNTPOINT: a\n"
"filesystem there, a partitioned disk as MOUNTPOINT/pN.  A journal or\n"
"log left dirty is replayed into a throwaway local overlay; the\n"
"repository is never written.  Uses a cbtfs mount of REPO, or starts\n"
"one; --unmount undoes it all\n" },
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void print_indented(const char *text)
{
	const char *line = text, *nl;

	for (; *line != '\0'; line = nl + 1) {
		nl = strchr(line, '\n');
		printf("    %.*s\n", (int)(nl - line), line);
	}
}

static const char exit_help[] =
"Exit status: 0 on success; 1 on failure, or when verify finds a problem,\n"
"snapshots an unreadable manifest, unlock a live lock it may not remove,\n"
"or forget a snapshot that is not there; 2 on a usage error.\n"
"See cbtfs-repo(1) and cbtfs-repository(5).\n";

/* Every command and option. */
static void usage(void)
{
	size_t i;

	printf("Usage: cbtfs-repo COMMAND [REPO] [ARGUMENTS] [OPTIONS]\n"
	       "\nCommands ('cbtfs-repo COMMAND --help' tells more):\n");
	for (i = 0; i < N_COMMANDS; i++) {
		printf("  cbtfs-repo %s REPO%s%s\n", commands[i].name,
		       commands[i].synopsis[0] ? " " : "",
		       commands[i].synopsis);
		print_indented(commands[i].help);
	}
	printf("\nOptions:\n");
	for (i = 0; i < sizeof(opt_helps) / sizeof(opt_helps[0]); i++)
		fputs(opt_helps[i].text, stdout);
	printf("%s\n%s\n%s", common_help, CLI_STORE_HELP, exit_help);
}

/* One command, and the options it takes. */
static void command_usage(const struct command *cmd)
{
	size_t i;

	printf("Usage: cbtfs-repo %s REPO%s%s [OPTIONS]\n\n", cmd->name,
	       cmd->synopsis[0] ? " " : "", cmd->synopsis);
	print_indented(cmd->help);
	printf("\nOptions:\n");
	for (i = 0; i < sizeof(opt_helps) / sizeof(opt_helps[0]); i++)
		if (cmd->options & OPT_BIT(opt_helps[i].opt))
			fputs(opt_helps[i].text, stdout);
	printf("%s\n%s\n%s", common_help, CLI_STORE_HELP, exit_help);
}

/* "--volume" for OPT_VOLUME. */
static const char *opt_name(int opt)
{
	const struct option *lo;

	for (lo = long_opts; lo->name != NULL; lo++)
		if (lo->val == opt)
			return lo->name;
	return "?";
}

int main(int argc, char *argv[])
{
	struct opts o = {
		.store.retries = -1,
		.subset = 100,
		.new_pass = { .env = PASSPHRASE_NEW_ENV,
			      .file_opt = "--new-password-file FILE" },
	};
	const struct command *cmd = NULL;
	const char *cmd_name = NULL, *repo_opt = NULL;
	const char *repo_env = getenv(REPO_ENV);
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN), n;
	int c, verbose = 0, opt, rc;
	bool help = false;
	char volume_arg[520];
	size_t i;

	log_init(prog);
	while ((c = getopt_long(argc, argv, "j:r:vhV", long_opts, NULL)) !=
	       -1) {
		if (c == 'j')
			c = OPT_JOBS;
		if (c >= OPT_CHUNK_SIZE && c < OPT_PASSWORD_FILE)
			o.given |= OPT_BIT(c);
		switch (c) {
		case OPT_CHUNK_SIZE:
			if (parse_size(optarg, &o.chunk_size) != 0)
				return cli_usage_error(prog, "--chunk-size: "
						       "invalid size '%s'",
						       optarg);
			break;
		case OPT_VOLUME:
			o.volume = optarg;
			break;
		case OPT_JSON:
			o.json = true;
			break;
		case OPT_CACHE_DIR:
			o.cache_dir = optarg;
			break;
		case OPT_READ_DATA:
			o.read_data = true;
			break;
		case OPT_SUBSET:
			if (cli_number(prog, "--subset", optarg, 1, 100, &n) !=
			    0)
				return EXIT_USAGE;
			o.subset = (unsigned)n;
			break;
		case OPT_JOBS:
			if (cli_number(prog, "--jobs", optarg, 1, 256, &n) !=
			    0)
				return EXIT_USAGE;
			o.jobs = (unsigned)n;
			break;
		case OPT_FORCE:
			o.force = true;
			break;
		case OPT_ENCRYPT:
			break;
		case OPT_PASSWORD_FILE:
			o.pass.file = optarg;
			break;
		case OPT_NEW_PASSWORD_FILE:
			o.new_pass.file = optarg;
			break;
#define KEEP_OPTION(f, OPT)                                                  \
		case OPT:                                                     \
			if (cli_number(prog, "--keep-" #f, optarg, 1,         \
				       1000000, &n) != 0)                     \
				return EXIT_USAGE;                            \
			o.policy.f = (unsigned)n;                             \
			break;
		KEEP_OPTION(last, OPT_KEEP_LAST)
		KEEP_OPTION(hourly, OPT_KEEP_HOURLY)
		KEEP_OPTION(daily, OPT_KEEP_DAILY)
		KEEP_OPTION(weekly, OPT_KEEP_WEEKLY)
		KEEP_OPTION(monthly, OPT_KEEP_MONTHLY)
#undef KEEP_OPTION
		case OPT_DRY_RUN:
			o.dry_run = true;
			break;
		case OPT_TO:
			o.to = optarg;
			break;
		case OPT_FROM:
			o.from = optarg;
			break;
		case OPT_TARGET_ZEROED:
			o.target_zeroed = true;
			break;
		case OPT_VERIFY:
			o.verify = true;
			break;
		case OPT_UNMOUNT:
			break;
		case 'v':
			verbose++;
			break;
		case 'r':
			repo_opt = optarg;
			break;
		case 'h':
			help = true;
			break;
		case 'V':
			cli_version(prog);
			return EXIT_OK;
		default:
			if (cli_store_option(prog, c, optarg, &o.store) != 0)
				return EXIT_USAGE;
		}
	}
	log_set_verbose(verbose);
	if (optind < argc)
		cmd_name = argv[optind++];
	for (i = 0; cmd_name != NULL && i < N_COMMANDS; i++)
		if (strcmp(cmd_name, commands[i].name) == 0)
			cmd = &commands[i];
	if (help && cmd_name == NULL) {
		usage();
		return EXIT_OK;
	}
	if (cmd_name == NULL)
		return cli_usage_error(prog, "no command given");
	if (cmd == NULL)
		return cli_usage_error(prog, "unknown command '%s'", cmd_name);
	if (help) {
		command_usage(cmd);
		return EXIT_OK;
	}
	/* REPO: -r, else the first argument (with $CBTFS_REPOSITORY set,
	 * only if it names a repository), else $CBTFS_REPOSITORY */
	if (repo_opt != NULL)
		o.repo = repo_opt;
	else if (optind < argc &&
		 (repo_env == NULL || !(cmd->options & TAKES_OPERANDS) ||
		  cli_names_repo(argv[optind])))
		o.repo = argv[optind++];
	else
		o.repo = repo_env != NULL && repo_env[0] != '\0' ? repo_env
								 : NULL;
	if (optind < argc && !(cmd->options & TAKES_OPERANDS))
		return cli_usage_error(prog, "unexpected argument '%s'",
				       argv[optind]);
	o.operands = argv + optind;
	o.n_operands = (size_t)(argc - optind);
	if (split_operands(&o, volume_arg, sizeof(volume_arg)) != 0) {
		log_error("out of memory");
		return EXIT_FAIL;
	}
	if (o.repo == NULL)
		return cli_usage_error(prog, "%s: no repository given (REPO, "
				       "-r REPO or $%s)", cmd->name,
				       REPO_ENV);
	for (opt = OPT_CHUNK_SIZE; opt < OPT_PASSWORD_FILE; opt++)
		if ((o.given & OPT_BIT(opt)) && !(cmd->options & OPT_BIT(opt)))
			return cli_usage_error(prog, "--%s does not apply to "
					       "%s", opt_name(opt), cmd->name);
	if ((o.given & OPT_BIT(OPT_SUBSET)) && !o.read_data)
		return cli_usage_error(prog, "--subset needs --read-data");
	/* fetches wait on the network, not the CPU: keep more in flight */
	if (!(o.given & OPT_BIT(OPT_JOBS)))
		o.jobs = strncmp(o.repo, "s3://", 5) == 0 ? 8
			 : ncpu > 0			 ? (unsigned)ncpu
							 : 2;
	rc = cmd->run(&o);
	free(o.names);
	return rc;
}
