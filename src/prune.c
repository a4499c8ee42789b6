/*
 * Forget and prune: see prune.h.
 *
 * Forget, for each volume: the manifests are read once for the whole
 * repository without a lock, to find the volumes with something to
 * forget; each such volume is then locked and its manifests read again
 * (those of the volume and any new one), since until the lock an ingest
 * or another forget may have changed them.  The decisions are taken anew
 * on what was read under the lock, then carried out: rewrites first, then
 * deletions, children before parents, each after confirming the lock.
 *
 * Prune: the lock, every manifest, the set of chunks they refer to
 * (sorted ids), the listing of chunks/ and damaged/, then deletions in
 * batches of PRUNE_BATCH keys, on up to jobs threads, each batch after
 * confirming the lock.
 *
 * Everything runs on the calling thread but the manifest reads and the
 * deletion batches (pool_run()), which write only their own items and,
 * under the batch lock, the counters.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "array.h"
#include "pool.h"
#include "progress.h"
#include "prune.h"
#include "snapset.h"

#define PRUNE_BATCH 1000	/* keys per deletion request (S3's limit) */

/* snapset_read() progress: the listing, then the manifests read. */
static void manifests_progress(void *arg, size_t done, size_t n)
{
	struct progress *pr = arg;

	if (n == 0) {
		progress_phase(pr);
		progress_show(pr, false, 0, 0, "listing snapshots/");
		return;
	}
	progress_show(pr, false, done, n, "reading manifests %zu/%zu", done,
		      n);
}

/* Refuses to go on when set holds an unreadable manifest. */
static int check_readable(const struct snapset *set, const char *what)
{
	const struct snapset_item *bad = snapset_unreadable(set);

	if (bad == NULL)
		return 0;
	log_error("cannot %s: the manifest snapshots/%s cannot be read (%s), "
		  "so what it refers to is unknown; 'cbtfs-repo verify' "
		  "reports it: a newer cbtfs may read it, and a corrupt one "
		  "can only be deleted by hand (its snapshot is lost)", what,
		  bad->id, bad->err == ENOTSUP ? "a format this cbtfs cannot "
						 "read"
					       : "corrupt");
	return EBADMSG;
}

/* ---- retention policy --------------------------------------------------- */

const char *forget_reason_name(unsigned bit_index)
{
	static const char *const names[] = {
#define FORGET_RULE_NAME(f, bit, name) name,
		FORGET_RULES(FORGET_RULE_NAME)
#undef FORGET_RULE_NAME
		"newest", "not named",
	};

	return bit_index < sizeof(names) / sizeof(names[0])
		       ? names[bit_index]
		       : NULL;
}

bool forget_policy_any(const struct forget_policy *p)
{
	return p->last || p->hourly || p->daily || p->weekly || p->monthly;
}

/* The period of time t for each rule (UTC); "last": i itself. */
static int64_t bucket_last(int64_t t, size_t i)
{
	return (int64_t)i;
}

static int64_t bucket_hourly(int64_t t, size_t i)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	return (((int64_t)tm.tm_year * 12 + tm.tm_mon) * 32 + tm.tm_mday) *
		       24 + tm.tm_hour;
}

static int64_t bucket_daily(int64_t t, size_t i)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	return ((int64_t)tm.tm_year * 12 + tm.tm_mon) * 32 + tm.tm_mday;
}

static int64_t bucket_weekly(int64_t t, size_t i)
{
	time_t tt = (time_t)t;
	struct tm tm;
	char buf[16];

	gmtime_r(&tt, &tm);
	strftime(buf, sizeof(buf), "%G%V", &tm);	/* ISO year, week */
	return strtoll(buf, NULL, 10);
}

static int64_t bucket_monthly(int64_t t, size_t i)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	return (int64_t)tm.tm_year * 12 + tm.tm_mon;
}

void forget_policy_apply(const struct forget_policy *p,
			 const int64_t *created, size_t n, unsigned *keep)
{
	struct rule {
		unsigned left, bit;
		int64_t (*bucket)(int64_t t, size_t i);
		bool seen;
		int64_t last;
	} rules[] = {
#define FORGET_RULE_INIT(f, b, name) { p->f, b, bucket_##f, false, 0 },
		FORGET_RULES(FORGET_RULE_INIT)
#undef FORGET_RULE_INIT
	};
	size_t i, k;

	for (i = 0; i < n; i++) {
		keep[i] = i == 0 ? FORGET_KEEP_NEWEST : 0;
		for (k = 0; k < sizeof(rules) / sizeof(rules[0]); k++) {
			struct rule *r = &rules[k];
			int64_t b;

			if (r->left == 0)
				continue;
			b = r->bucket(created[i], i);
			if (r->seen && b == r->last)
				continue;	/* a newer one has it */
			r->seen = true;
			r->last = b;
			r->left--;
			keep[i] |= r->bit;
		}
	}
}

/* ---- folding ------------------------------------------------------------ */

static uint64_t nchunks(const struct manifest *m)
{
	return (m->capacity + m->chunk_size - 1) / m->chunk_size;
}

struct entries {
	struct manifest_entry *v;
	size_t n, cap;
};

/*
 * Merges into *r (sorted) the entries of f with an index below lim that
 * *r lacks.  0 or ENOMEM.
 */
static int merge_entries(struct entries *r, const struct manifest *f,
			 uint64_t lim)
{
	struct entries out = { 0 };
	size_t i = 0, j = 0;
	int err = 0;

	while (err == 0 && (i < r->n || (j < f->n_entries &&
					 f->entries[j].index < lim))) {
		const struct manifest_entry *e;

		if (j >= f->n_entries || f->entries[j].index >= lim ||
		    (i < r->n && r->v[i].index <= f->entries[j].index)) {
			if (j < f->n_entries && i < r->n &&
			    r->v[i].index == f->entries[j].index)
				j++;	/* the nearer snapshot's entry wins */
			e = &r->v[i++];
		} else {
			e = &f->entries[j++];
		}
		if ((err = ARRAY_GROW(&out)) == 0)
			out.v[out.n++] = *e;
	}
	free(r->v);
	*r = out;
	return err;
}

/* Adds zero entries to *r (sorted) for every index in [lo, hi) it lacks. */
static int add_zero_range(struct entries *r, uint64_t lo, uint64_t hi)
{
	struct manifest zero = { 0 };
	struct entries z = { 0 };
	uint64_t idx;
	int err = 0;

	for (idx = lo; idx < hi && err == 0; idx++) {
		if ((err = ARRAY_GROW(&z)) != 0)
			break;
		memset(&z.v[z.n], 0, sizeof(z.v[z.n]));
		z.v[z.n++].index = idx;
	}
	zero.entries = z.v;
	zero.n_entries = z.n;
	if (err == 0)
		err = merge_entries(r, &zero, UINT64_MAX);
	free(z.v);
	return err;
}

/*
 * Folds into *out (a shallow copy of k, with entries of its own) the
 * chain of forgotten ancestors chain[0..n) (k's parent first), whose
 * nearest kept ancestor is parent_id (its manifest pm, NULL when
 * parent_id is "" or not in the repository).  See prune.h for why it
 * resolves to the same chunks as k.
 */
static int fold(const struct manifest *k, struct manifest *const *chain,
		size_t n, const char *parent_id, const struct manifest *pm,
		struct manifest *out)
{
	struct entries r = { 0 };
	uint64_t lim = nchunks(k), hi;
	size_t j;
	int err = 0;

	if (k->n_entries > 0) {
		r.v = malloc(k->n_entries * sizeof(*r.v));
		if (r.v == NULL)
			return ENOMEM;
		memcpy(r.v, k->entries, k->n_entries * sizeof(*r.v));
		r.n = r.cap = k->n_entries;
	}
	/* an ancestor's entry shows through while every snapshot between
	 * has the chunk within its capacity */
	for (j = 0; j < n && err == 0; j++) {
		err = merge_entries(&r, chain[j], lim);
		if (nchunks(chain[j]) < lim)
			lim = nchunks(chain[j]);
	}
	/* chunks [lim, k's end) were cut off by a smaller forgotten
	 * ancestor: zero, whatever the kept ancestor has there */
	hi = parent_id[0] == '\0' ? 0 : pm != NULL ? nchunks(pm) : nchunks(k);
	if (hi > nchunks(k))
		hi = nchunks(k);
	if (err == 0 && lim < hi)
		err = add_zero_range(&r, lim, hi);
	if (err != 0) {
		free(r.v);
		return err;
	}
	*out = *k;
	snprintf(out->parent_id, sizeof(out->parent_id), "%s", parent_id);
	out->entries = r.v;
	out->n_entries = r.n;
	return 0;
}

/* ---- forget ------------------------------------------------------------- */

/* A snapshot of the volume being judged. */
struct judged {
	struct manifest *m;	/* owned by the snapset */
	size_t depth;		/* parents up to the first backup */
	unsigned keep;
	bool rewrite, deleted;
};

struct volume_plan {
	struct {
		struct judged *v;
		size_t n, cap;
	} snaps;		/* newest first */
	size_t forget;		/* how many are forgotten */
	size_t rewrite;		/* how many kept ones are rewritten */
};

/* Newest first: created (seconds), then the deeper in its chain (a
 * snapshot is newer than its base), then name, then id, descending. */
static int judged_cmp(const void *a, const void *b)
{
	const struct judged *ja = a, *jb = b;
	const struct manifest *x = ja->m, *y = jb->m;
	int c;

	if (x->created != y->created)
		return x->created > y->created ? -1 : 1;
	if (ja->depth != jb->depth)
		return ja->depth > jb->depth ? -1 : 1;
	if ((c = strcmp(x->name, y->name)) != 0)
		return -c;
	return -strcmp(x->id, y->id);
}

static struct judged *plan_find(const struct volume_plan *vp, const char *id)
{
	size_t i;

	for (i = 0; i < vp->snaps.n; i++)
		if (strcmp(vp->snaps.v[i].m->id, id) == 0)
			return &vp->snaps.v[i];
	return NULL;
}

/*
 * Decides what to keep of volume's snapshots in set.  predecessor: an
 * earlier forget of the volume stopped early, so named snapshots it
 * removed are not an error.  Returns 0, ENOENT or EPERM (logged).
 */
static int plan_volume(const struct forget_conf *conf, const char *volume,
		       const struct snapset *set, bool predecessor,
		       struct volume_plan *vp)
{
	int64_t *created = NULL;
	unsigned *keep = NULL;
	size_t i, j, missing = 0;
	int err = 0;

	for (i = 0; i < set->items.n; i++) {
		struct manifest *m = set->items.v[i].m;

		if (m == NULL || strcmp(m->volume, volume) != 0)
			continue;
		if ((err = ARRAY_GROW(&vp->snaps)) != 0)
			return err;
		memset(&vp->snaps.v[vp->snaps.n], 0, sizeof(*vp->snaps.v));
		vp->snaps.v[vp->snaps.n++].m = m;
	}
	if (vp->snaps.n == 0) {
		log_error("volume '%s' has no snapshot in the repository; "
			  "'cbtfs-repo snapshots' lists them", volume);
		return ENOENT;
	}
	for (i = 0; i < vp->snaps.n; i++) {
		const struct judged *p = &vp->snaps.v[i];

		/* bounded: parents may loop */
		while (p->m->parent_id[0] != '\0' &&
		       vp->snaps.v[i].depth < vp->snaps.n &&
		       (p = plan_find(vp, p->m->parent_id)) != NULL)
			vp->snaps.v[i].depth++;
	}
	array_sort(vp->snaps.v, vp->snaps.n, sizeof(*vp->snaps.v),
		   judged_cmp);

	if (conf->n_names > 0) {
		for (i = 0; i < vp->snaps.n; i++)
			vp->snaps.v[i].keep = FORGET_KEEP_UNNAMED;
		for (j = 0; j < conf->n_names; j++) {
			bool found = false;

			for (i = 0; i < vp->snaps.n; i++) {
				if (strcmp(vp->snaps.v[i].m->name,
					   conf->names[j]) != 0)
					continue;
				vp->snaps.v[i].keep = 0;
				found = true;
			}
			if (found)
				continue;
			if (predecessor) {
				log_info("snapshot '%s' of volume '%s' is "
					 "gone already: an earlier forget "
					 "that stopped early removed it",
					 conf->names[j], volume);
				continue;
			}
			log_error("snapshot '%s' of volume '%s' is not in the "
				  "repository; 'cbtfs-repo snapshots --volume "
				  "%s' lists them", conf->names[j], volume,
				  volume);
			missing++;
		}
		if (missing > 0) {
			log_error("nothing was forgotten");
			return ENOENT;
		}
	} else {
		created = malloc(vp->snaps.n * sizeof(*created));
		keep = malloc(vp->snaps.n * sizeof(*keep));
		if (created == NULL || keep == NULL) {
			free(created);
			free(keep);
			return ENOMEM;
		}
		for (i = 0; i < vp->snaps.n; i++)
			created[i] = vp->snaps.v[i].m->created;
		forget_policy_apply(&conf->policy, created, vp->snaps.n, keep);
		for (i = 0; i < vp->snaps.n; i++)
			vp->snaps.v[i].keep = keep[i];
		free(created);
		free(keep);
	}

	for (i = 0; i < vp->snaps.n; i++)
		if (vp->snaps.v[i].keep == 0)
			vp->forget++;
	if (vp->forget == vp->snaps.n && !conf->force) {
		log_error("that would forget every snapshot of volume '%s' "
			  "(%zu); nothing was forgotten: add --force to do "
			  "it", volume, vp->snaps.n);
		return EPERM;
	}
	/* kept snapshots whose parent goes are rewritten */
	for (i = 0; i < vp->snaps.n; i++) {
		struct judged *s = &vp->snaps.v[i], *p;

		if (s->keep == 0 || s->m->parent_id[0] == '\0')
			continue;
		p = plan_find(vp, s->m->parent_id);
		if (p != NULL && p->keep == 0) {
			s->rewrite = true;
			vp->rewrite++;
		}
	}
	return 0;
}

/*
 * Rewrites kept snapshot s: folds in its forgotten ancestors.  EBADMSG
 * (logged) for a chain that loops.
 */
static int rewrite_kept(const struct forget_conf *conf,
			const struct volume_plan *vp,
			const struct snapset *set, const struct judged *s)
{
	struct {
		struct manifest **v;
		size_t n, cap;
	} chain = { 0 };
	const struct snapset_item *pit;
	const char *pid = s->m->parent_id;
	struct manifest folded;
	struct judged *p;
	int err = 0;

	while (pid[0] != '\0' && (p = plan_find(vp, pid)) != NULL &&
	       p->keep == 0) {
		if (chain.n > vp->snaps.n) {
			log_error("snapshot '%s' of volume '%s': its chain of "
				  "parents loops; nothing more is forgotten "
				  "('cbtfs-repo verify' reports it)",
				  s->m->name, s->m->volume);
			err = EBADMSG;
			goto out;
		}
		if ((err = ARRAY_GROW(&chain)) != 0)
			goto out;
		chain.v[chain.n++] = p->m;
		pid = p->m->parent_id;
	}
	pit = pid[0] != '\0' ? snapset_find(set, pid) : NULL;
	err = fold(s->m, chain.v, chain.n, pid, pit != NULL ? pit->m : NULL,
		   &folded);
	if (err == 0) {
		err = repo_put_manifest(conf->repo, &folded, NULL);
		free(folded.entries);
	}
out:
	free(chain.v);
	return err;
}

/* Whether some snapshot of vp not yet deleted names id as its parent. */
static bool has_child(const struct volume_plan *vp, const char *id)
{
	size_t i;

	for (i = 0; i < vp->snaps.n; i++) {
		const struct judged *s = &vp->snaps.v[i];

		/* a rewritten snapshot names a kept parent now */
		if (!s->deleted && (s->keep == 0 || !s->rewrite) &&
		    strcmp(s->m->parent_id, id) == 0)
			return true;
	}
	return false;
}

/* Carries out vp under lock l: rewrites, then deletions, children first. */
static int apply_plan(const struct forget_conf *conf, const char *volume,
		      struct volume_plan *vp, const struct snapset *set,
		      struct repo_lock *l, struct progress *pr)
{
	size_t i, done = 0, total = vp->rewrite + vp->forget;
	bool progressed;
	int err = 0;

	for (i = 0; i < vp->snaps.n && err == 0; i++) {
		if (!vp->snaps.v[i].rewrite)
			continue;
		progress_show(pr, false, done, total, "%s: rewriting and "
			      "deleting %zu/%zu", volume, done, total);
		if ((err = repo_lock_confirm(l)) == 0)
			err = rewrite_kept(conf, vp, set, &vp->snaps.v[i]);
		done++;
	}
	/* a forgotten snapshot goes once no other names it as parent */
	do {
		progressed = false;
		for (i = 0; i < vp->snaps.n && err == 0; i++) {
			struct judged *s = &vp->snaps.v[i];

			if (s->keep != 0 || s->deleted ||
			    has_child(vp, s->m->id))
				continue;
			progress_show(pr, false, done, total, "%s: rewriting "
				      "and deleting %zu/%zu", volume, done,
				      total);
			if ((err = repo_lock_confirm(l)) == 0)
				err = repo_delete_manifest(conf->repo,
							   s->m->id);
			if (err == 0) {
				s->deleted = true;
				progressed = true;
				done++;
			}
		}
	} while (progressed && err == 0);
	for (i = 0; i < vp->snaps.n && err == 0; i++) {
		if (vp->snaps.v[i].keep == 0 && !vp->snaps.v[i].deleted) {
			log_error("volume '%s': the parents of its snapshots "
				  "loop, so snapshot '%s' cannot be deleted "
				  "('cbtfs-repo verify' reports it)", volume,
				  vp->snaps.v[i].m->name);
			err = EBADMSG;
		}
	}
	return err;
}

/* Adds vp's snapshots to the report. */
static int report_plan(struct forget_report *rep,
		       const struct volume_plan *vp)
{
	size_t i;
	int err;

	rep->volumes++;
	for (i = 0; i < vp->snaps.n; i++) {
		const struct judged *s = &vp->snaps.v[i];
		struct forget_snapshot *fs;

		if ((err = ARRAY_GROW(&rep->snapshots)) != 0)
			return err;
		fs = &rep->snapshots.v[rep->snapshots.n++];
		memset(fs, 0, sizeof(*fs));
		snprintf(fs->id, sizeof(fs->id), "%s", s->m->id);
		fs->volume = strdup(s->m->volume);
		fs->name = strdup(s->m->name);
		fs->created = s->m->created;
		fs->keep = s->keep;
		fs->rewritten = s->rewrite;
		if (fs->volume == NULL || fs->name == NULL)
			return ENOMEM;
		if (s->keep != 0)
			rep->kept++;
		else
			rep->forgotten++;
		if (s->rewrite)
			rep->rewritten++;
	}
	return 0;
}

/* Under the lock: the manifests of the volume as seen before, and any
 * that were not there (or not readable) then. */
struct refresh {
	const struct snapset *before;
	const char *volume;
};

static bool refresh_want(void *arg, const char *id)
{
	const struct refresh *rf = arg;
	const struct snapset_item *it = snapset_find(rf->before, id);

	return it == NULL || it->m == NULL ||
	       strcmp(it->m->volume, rf->volume) == 0;
}

/* Locks volume, reads its manifests again, decides and carries out. */
static int forget_volume(const struct forget_conf *conf, const char *volume,
			 const struct snapset *before,
			 struct forget_report *rep, struct progress *pr)
{
	struct refresh rf = { before, volume };
	struct volume_plan vp = { 0 };
	struct repo_lock *l = NULL;
	struct snapset set = { 0 };
	bool predecessor = false;
	int err;

	if ((err = repo_lock_forget(conf->repo, volume, &l,
				    &predecessor)) != 0)
		return err;
	err = snapset_read(conf->repo, conf->jobs, refresh_want, &rf,
			   manifests_progress, pr, &set);
	if (err == 0)
		err = check_readable(&set, "forget");
	if (err == 0)
		err = plan_volume(conf, volume, &set, predecessor, &vp);
	if (err == 0)
		err = apply_plan(conf, volume, &vp, &set, l, pr);
	progress_end(pr);
	if (err == 0)
		err = report_plan(rep, &vp);
	repo_unlock(l, true);
	free(vp.snaps.v);
	snapset_free(&set);
	return err;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The distinct volumes of set's manifests, sorted, into *vols (pointers
 * into set). */
static int list_volumes(const struct snapset *set,
			const char ***vols, size_t *n)
{
	struct {
		const char **v;
		size_t n, cap;
	} all = { 0 };
	size_t i, k = 0;
	int err;

	for (i = 0; i < set->items.n; i++) {
		if (set->items.v[i].m == NULL)
			continue;
		if ((err = ARRAY_GROW(&all)) != 0) {
			free(all.v);
			return err;
		}
		all.v[all.n++] = set->items.v[i].m->volume;
	}
	array_sort(all.v, all.n, sizeof(*all.v), str_cmp);
	for (i = 0; i < all.n; i++)
		if (k == 0 || strcmp(all.v[k - 1], all.v[i]) != 0)
			all.v[k++] = all.v[i];
	*vols = all.v;
	*n = k;
	return 0;
}

int forget_run(const struct forget_conf *conf, struct forget_report *rep)
{
	struct progress pr;
	struct snapset all;
	const char **vols = NULL;
	size_t n_vols = 0, i;
	int err;

	memset(rep, 0, sizeof(*rep));
	progress_init(&pr, "forget", conf->progress);
	err = snapset_read(conf->repo, conf->jobs, NULL, NULL,
			   manifests_progress, &pr, &all);
	if (err == 0)
		err = check_readable(&all, "forget");
	if (err == 0 && conf->volume != NULL) {
		vols = malloc(sizeof(*vols));
		if (vols == NULL)
			err = ENOMEM;
		else
			vols[n_vols++] = conf->volume;
	} else if (err == 0) {
		err = list_volumes(&all, &vols, &n_vols);
	}
	progress_end(&pr);
	for (i = 0; i < n_vols && err == 0; i++) {
		struct volume_plan vp = { 0 };

		/* names are judged under the lock, which tells whether an
		 * earlier forget stopped early; a policy is applied to what
		 * was read without a lock first, so that only the volumes
		 * that change are locked */
		if (conf->n_names > 0 && !conf->dry_run) {
			err = forget_volume(conf, vols[i], &all, rep, &pr);
			continue;
		}
		err = plan_volume(conf, vols[i], &all, false, &vp);
		if (err == 0 && (conf->dry_run || vp.forget == 0))
			err = report_plan(rep, &vp);
		else if (err == 0)
			err = forget_volume(conf, vols[i], &all, rep, &pr);
		free(vp.snaps.v);
	}
	progress_end(&pr);
	rep->seconds = now_seconds() - pr.start;
	if (err == ENOMEM)
		log_error("forget in %s: out of memory",
			  conf->repo->store->url);
	free(vols);
	snapset_free(&all);
	return err;
}

void forget_report_free(struct forget_report *rep)
{
	size_t i;

	for (i = 0; i < rep->snapshots.n; i++) {
		free(rep->snapshots.v[i].volume);
		free(rep->snapshots.v[i].name);
	}
	free(rep->snapshots.v);
	memset(rep, 0, sizeof(*rep));
}

/* ---- prune -------------------------------------------------------------- */

struct chunk_ids {
	unsigned char (*v)[CODEC_ID_LEN];
	size_t n, cap;
};

struct prune {
	const struct prune_conf *conf;
	struct prune_report *rep;
	struct progress pr;
	struct chunk_ids referenced;	/* sorted, distinct */
	bool *listed;			/* per referenced chunk */
	struct chunk_ids doomed;	/* chunks to delete */
	struct {
		uint64_t *v;		/* stored sizes, as doomed */
		size_t n, cap;
	} sizes;
	struct chunk_ids records;	/* damage records to delete */
	struct repo_lock *lock;		/* NULL in a dry run */

	pthread_mutex_t counters;	/* guards rep during deletions */
};

static int ids_add(struct chunk_ids *s, const unsigned char *id)
{
	int err;

	if ((err = ARRAY_GROW(s)) != 0)
		return err;
	memcpy(s->v[s->n++], id, CODEC_ID_LEN);
	return 0;
}

/* Sorts s and drops duplicates. */
static void ids_dedupe(struct chunk_ids *s)
{
	size_t i, n = 0;

	array_sort(s->v, s->n, sizeof(*s->v), codec_id_cmp);
	for (i = 0; i < s->n; i++)
		if (n == 0 || memcmp(s->v[n - 1], s->v[i], CODEC_ID_LEN) != 0)
			memcpy(s->v[n++], s->v[i], CODEC_ID_LEN);
	s->n = n;
}

/* The distinct non-zero chunks set's manifests refer to. */
static int collect_referenced(struct prune *p, const struct snapset *set)
{
	size_t i, j, distinct = 0;
	int err;

	for (i = 0; i < set->items.n; i++) {
		const struct manifest *m = set->items.v[i].m;

		if (m == NULL)
			continue;
		p->rep->manifests++;
		for (j = 0; j < m->n_entries; j++)
			if (!codec_id_is_zero(m->entries[j].id) &&
			    (err = ids_add(&p->referenced,
					   m->entries[j].id)) != 0)
				return err;
		/* bounds the array by twice the distinct ids */
		if (p->referenced.n > 2 * distinct + 65536) {
			ids_dedupe(&p->referenced);
			distinct = p->referenced.n;
		}
	}
	ids_dedupe(&p->referenced);
	p->rep->chunks_referenced = p->referenced.n;
	p->listed = calloc(p->referenced.n ? p->referenced.n : 1, 1);
	return p->listed != NULL ? 0 : ENOMEM;
}

static int listed_chunk(void *arg, const unsigned char id[CODEC_ID_LEN],
			uint64_t size)
{
	struct prune *p = arg;
	unsigned char (*ref)[CODEC_ID_LEN];
	int err;

	p->rep->chunks_listed++;
	progress_show(&p->pr, false, 0, 0, "listing chunks/ %" PRIu64,
		      p->rep->chunks_listed);
	ref = array_find(id, p->referenced.v, p->referenced.n,
			 sizeof(*p->referenced.v), codec_id_cmp);
	if (ref != NULL) {
		p->listed[ref - p->referenced.v] = true;
		return 0;
	}
	if ((err = ids_add(&p->doomed, id)) != 0 ||
	    (err = ARRAY_GROW(&p->sizes)) != 0)
		return err;
	p->sizes.v[p->sizes.n++] = size;
	return 0;
}

static int listed_record(void *arg, const unsigned char id[CODEC_ID_LEN])
{
	struct prune *p = arg;

	if (array_find(id, p->referenced.v, p->referenced.n,
		       sizeof(*p->referenced.v), codec_id_cmp) != NULL)
		return 0;
	return ids_add(&p->records, id);
}

/* Deletes batch i of the doomed chunks, after confirming the lock. */
static int delete_batch(void *arg, size_t i, struct buf *scratch)
{
	struct prune *p = arg;
	size_t first = i * PRUNE_BATCH, n = p->doomed.n - first, k;
	uint64_t bytes = 0;
	int err;

	if (n > PRUNE_BATCH)
		n = PRUNE_BATCH;
	if ((err = repo_lock_confirm(p->lock)) != 0)
		return err;
	if ((err = repo_delete_chunks(p->conf->repo, p->doomed.v + first,
				      n)) != 0)
		return err;
	for (k = first; k < first + n; k++)
		bytes += p->sizes.v[k];
	pthread_mutex_lock(&p->counters);
	p->rep->chunks_deleted += n;
	p->rep->freed_bytes += bytes;
	pthread_mutex_unlock(&p->counters);
	return 0;
}

static void delete_progress(void *arg, size_t done, bool final)
{
	struct prune *p = arg;
	size_t n = (p->doomed.n + PRUNE_BATCH - 1) / PRUNE_BATCH;
	uint64_t bytes;

	pthread_mutex_lock(&p->counters);
	bytes = p->rep->freed_bytes;
	pthread_mutex_unlock(&p->counters);
	progress_show(&p->pr, false, done, n, "deleting batches %zu/%zu, %s "
		      "freed", done, n, HUMAN(bytes));
}

/* Deletes (or with dry_run counts) what no manifest refers to. */
static int sweep(struct prune *p)
{
	const struct prune_conf *conf = p->conf;
	struct prune_report *rep = p->rep;
	size_t i, batches;
	int err = 0;

	for (i = 0; i < p->referenced.n; i++)
		if (!p->listed[i])
			rep->chunks_missing++;
	if (rep->chunks_missing > 0)
		log_warn("%" PRIu64 " chunks that snapshots use are missing "
			 "from the repository; 'cbtfs-repo verify' tells "
			 "which snapshots they damage", rep->chunks_missing);
	if (conf->dry_run) {
		rep->chunks_deleted = p->doomed.n;
		for (i = 0; i < p->sizes.n; i++)
			rep->freed_bytes += p->sizes.v[i];
		rep->damage_removed = p->records.n;
		return store_clean_temp(conf->repo->store, PRUNE_TEMP_AGE,
					true, &rep->temp_removed,
					&rep->temp_bytes);
	}
	batches = (p->doomed.n + PRUNE_BATCH - 1) / PRUNE_BATCH;
	progress_phase(&p->pr);
	{
		struct pool_conf pc = {
			.n = batches, .jobs = conf->jobs,
			.task = delete_batch, .tick = delete_progress,
			.arg = p,
		};

		err = pool_run(&pc);
	}
	if (err == 0 && p->records.n > 0 &&
	    (err = repo_lock_confirm(p->lock)) == 0 &&
	    (err = repo_delete_damage_records(conf->repo, p->records.v,
					      p->records.n)) == 0)
		rep->damage_removed = p->records.n;
	if (err == 0)
		err = store_clean_temp(conf->repo->store, PRUNE_TEMP_AGE,
				       false, &rep->temp_removed,
				       &rep->temp_bytes);
	return err;
}

int prune_run(const struct prune_conf *conf, struct prune_report *rep)
{
	struct prune p = { .conf = conf, .rep = rep };
	struct snapset set = { 0 };
	int err = 0;

	memset(rep, 0, sizeof(*rep));
	progress_init(&p.pr, "prune", conf->progress);
	pthread_mutex_init(&p.counters, NULL);
	if (!conf->dry_run)
		err = repo_lock_prune(conf->repo, &p.lock);
	/* the manifests are read under the lock: none can appear or
	 * change until it is released */
	if (err == 0)
		err = snapset_read(conf->repo, conf->jobs, NULL, NULL,
				   manifests_progress, &p.pr, &set);
	if (err == 0)
		err = check_readable(&set, "prune");
	if (err == 0)
		err = collect_referenced(&p, &set);
	snapset_free(&set);
	if (err == 0)
		err = repo_list_chunks(conf->repo, listed_chunk, &p);
	if (err == 0)
		err = repo_list_damaged(conf->repo, listed_record, &p);
	if (err == 0)
		err = sweep(&p);
	progress_end(&p.pr);
	if (err == ENOMEM)
		log_error("prune of %s: out of memory",
			  conf->repo->store->url);
	repo_unlock(p.lock, true);
	rep->seconds = now_seconds() - p.pr.start;
	free(p.referenced.v);
	free(p.listed);
	free(p.doomed.v);
	free(p.sizes.v);
	free(p.records.v);
	pthread_mutex_destroy(&p.counters);
	return err;
}
