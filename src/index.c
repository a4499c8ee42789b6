/*
 * SQLite index: see index.h.
 *
 * Schema (version 3):
 *   meta(key, value)                 repo_id, schema
 *   snapshots(sid, id, volume, name, parent_id, capacity, chunk_size,
 *             created, csi_handle, csi_driver, changes, <stats>, digest)
 *   entries(sid, idx, chunk_id)      one row per manifest entry
 *   damaged(chunk_id, local)         chunks known missing or corrupt
 *
 * Size: an entry costs about 70 bytes of file (200,000 random entries).
 * The index that finds entries by chunk keeps only the first 8 bytes of
 * the id, not all 32: version 2 indexed whole ids and
 * took 96-99 bytes an entry.  A file of another version is replaced by
 * an empty one at open, and the next sync fills it.
 *
 * Trust: the index is a cache of verified manifests, never an authority.
 * Each snapshot row carries a digest of everything the manifest said (its
 * fields and all its entries, keyed with the repository id), computed when
 * the manifest was fetched and verified.  index_resolve_chain() recomputes
 * it from the rows it reads for every link of the chain, so flipped bits,
 * swapped, added or deleted rows, or another repository's index never
 * yield a chunk map: they give EUCLEAN.  A file SQLite cannot read (or
 * the index of another repository, or of another schema) is replaced at
 * open; SQLite errors that mean corruption also give EUCLEAN, which
 * index_rebuild() answers by replacing the file.
 *
 * Locking: ix->lock guards the connection and ix->bad; every public
 * function but index_sync() takes it for its whole duration, and none calls
 * another public function.  index_sync() takes it only around SQLite work,
 * never across store requests.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "array.h"
#include "index.h"
#include "pool.h"

#define INDEX_SCHEMA "3"

/* A sorted array of snapshot ids, for comparing store and index. */
struct id_set {
	char (*v)[CBTFS_UUID_LEN + 1];
	size_t n, cap;
};

struct index {
	pthread_mutex_t lock;
	sqlite3 *db;
	struct repo *repo;
	char *dir;
	char *path;
	sqlite3_int64 data_version;	/* as of the last index_sync() */
	struct id_set bad;		/* manifests that cannot be read */
	struct id_set orphans;		/* re-read, and their parent is
					 * still missing: not read again */
};

static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS meta("
	"  key TEXT PRIMARY KEY, value TEXT NOT NULL);"
	"CREATE TABLE IF NOT EXISTS snapshots("
	"  sid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
	"  volume TEXT NOT NULL, name TEXT NOT NULL, parent_id TEXT NOT NULL,"
	"  capacity INTEGER NOT NULL, chunk_size INTEGER NOT NULL,"
	"  created INTEGER NOT NULL, csi_handle TEXT NOT NULL,"
	"  csi_driver TEXT NOT NULL, changes TEXT NOT NULL,"
	"  bytes_read INTEGER, chunks_read INTEGER, chunks_changed INTEGER,"
	"  chunks_new INTEGER, chunks_reused INTEGER, chunks_zero INTEGER,"
	"  bytes_stored INTEGER, digest BLOB NOT NULL);"
	"CREATE INDEX IF NOT EXISTS snapshots_by_name"
	"  ON snapshots(volume, name);"
	"CREATE TABLE IF NOT EXISTS entries("
	"  sid INTEGER NOT NULL, idx INTEGER NOT NULL, chunk_id BLOB NOT NULL,"
	"  PRIMARY KEY(sid, idx)) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS entries_by_chunk"
	"  ON entries(substr(chunk_id, 1, 8));"
	"CREATE TABLE IF NOT EXISTS damaged("
	"  chunk_id BLOB PRIMARY KEY, local INTEGER NOT NULL) WITHOUT ROWID;";

#define SNAPSHOT_COLUMNS                                                    \
	"id, volume, name, parent_id, capacity, chunk_size, created, "     \
	"csi_handle, csi_driver, changes, bytes_read, chunks_read, "      \
	"chunks_changed, chunks_new, chunks_reused, chunks_zero, "        \
	"bytes_stored, digest"

/*
 * The statistics columns above and in the snapshots table are spelled out
 * rather than expanded from MANIFEST_STATS: the schema is what a reader
 * of this file (or of the database) looks for, and a new field means a
 * new INDEX_SCHEMA, not just one more column.  The binds and reads below
 * do expand the list, from the column after "changes"; this assertion
 * stops the build when the list and the SQL no longer agree.
 */
#define X(field, json) + 1
_Static_assert(0 MANIFEST_STATS(X) == 7,
	       "MANIFEST_STATS changed: update the snapshots table, "
	       "SNAPSHOT_COLUMNS and INDEX_SCHEMA");
#undef X

#define REPAIR_HINT INDEX_REPAIR_HINT

/*
 * Whether a failed SQLite call means a damaged file: SQLite says so, or a
 * statement of ours (fixed text that worked when the file was made) no
 * longer fits the stored schema, or a row breaks a constraint of it.
 * Busy, protocol, memory, I/O, full-disk and permission errors say
 * nothing of the file.
 */
static bool db_corrupt(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
	case SQLITE_ERROR:
	case SQLITE_CONSTRAINT:
	case SQLITE_MISMATCH:
	case SQLITE_FORMAT:
		return true;
	default:
		return false;
	}
}

/* Logs a failed SQLite call; EUCLEAN if it means a damaged file. */
static int db_error(struct index *ix, const char *what)
{
	int rc = sqlite3_extended_errcode(ix->db);

	log_error("index %s: %s: %s%s", ix->path, what,
		  sqlite3_errmsg(ix->db),
		  db_corrupt(rc) ? ": " REPAIR_HINT : "");
	return db_corrupt(rc) ? EUCLEAN : EIO;
}

static int db_exec(struct index *ix, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(ix->db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		log_error("index %s: %s%s", ix->path, msg ? msg : "error",
			  db_corrupt(rc) ? ": " REPAIR_HINT : "");
		sqlite3_free(msg);
		return db_corrupt(rc) ? EUCLEAN : EIO;
	}
	return 0;
}

static int db_prepare(struct index *ix, const char *sql, sqlite3_stmt **st)
{
	if (sqlite3_prepare_v2(ix->db, sql, -1, st, NULL) != SQLITE_OK)
		return db_error(ix, "prepare");
	return 0;
}

char *index_default_cache_dir(void)
{
	const char *xdg = getenv("XDG_CACHE_HOME");
	const char *home = getenv("HOME");
	char path[PATH_MAX];

	if (xdg != NULL && xdg[0] == '/')
		snprintf(path, sizeof(path), "%s/cbtfs", xdg);
	else if (home != NULL && home[0] == '/')
		snprintf(path, sizeof(path), "%s/.cache/cbtfs", home);
	else
		snprintf(path, sizeof(path), "/var/cache/cbtfs");
	return strdup(path);
}

static int mkdir_p(char *path)
{
	char *p;

	for (p = strchr(path + 1, '/');; p = strchr(p + 1, '/')) {
		if (p != NULL)
			*p = '\0';
		if (mkdir(path, 0700) != 0 && errno != EEXIST) {
			int err = errno;

			log_error("%s: cannot create cache directory: %s",
				  path, ERRSTR(err));
			if (p != NULL)
				*p = '/';
			return err;
		}
		if (p == NULL)
			return 0;
		*p = '/';
	}
}

/*
 * Opens the connection and checks the file: EUCLEAN (with *why) if it is
 * not a usable index of this repository, so the caller replaces it.
 */
static int db_init(struct index *ix, const char **why)
{
	sqlite3_stmt *st = NULL;
	const char *have_repo = NULL, *have_schema = NULL;
	char sql[256];
	int fd, rc, err;

	/* created here, private: SQLite gives its -wal and -shm files the
	 * database file's mode */
	fd = open(ix->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || fchmod(fd, 0600) != 0) {
		err = errno;
		log_error("index %s: cannot create: %s", ix->path,
			  ERRSTR(err));
		if (fd >= 0)
			close(fd);
		return err;
	}
	close(fd);
	if (sqlite3_open_v2(ix->path, &ix->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX,
			    NULL) != SQLITE_OK)
		return db_error(ix, "cannot open");
	sqlite3_busy_timeout(ix->db, 30000);
	*why = "cannot be read by SQLite";
	if ((err = db_exec(ix, "PRAGMA journal_mode=WAL;"
			       "PRAGMA synchronous=NORMAL;")) != 0 ||
	    (err = db_exec(ix, "CREATE TABLE IF NOT EXISTS meta("
			       "  key TEXT PRIMARY KEY, value TEXT NOT NULL)"))
		    != 0 ||
	    (err = db_prepare(ix, "SELECT (SELECT value FROM meta WHERE "
			      "key='repo_id'), (SELECT value FROM meta "
			      "WHERE key='schema')", &st)) != 0)
		return err;
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		err = db_error(ix, "read meta");
		sqlite3_finalize(st);
		return err;
	}
	have_repo = (const char *)sqlite3_column_text(st, 0);
	have_schema = (const char *)sqlite3_column_text(st, 1);
	if (have_repo != NULL && strcmp(have_repo, ix->repo->id) != 0) {
		*why = "belongs to another repository";
		err = EUCLEAN;
	} else if (have_repo != NULL && (have_schema == NULL ||
		   strcmp(have_schema, INDEX_SCHEMA) != 0)) {
		*why = "has another format";
		err = EUCLEAN;
	}
	sqlite3_finalize(st);
	if (err != 0 || have_repo != NULL)
		return err == 0 ? db_exec(ix, schema_sql) : err;
	snprintf(sql, sizeof(sql),
		 "BEGIN IMMEDIATE;"
		 "INSERT OR REPLACE INTO meta VALUES('repo_id', '%s');"
		 "INSERT OR REPLACE INTO meta VALUES('schema', '"
		 INDEX_SCHEMA "');COMMIT;", ix->repo->id);
	if ((err = db_exec(ix, schema_sql)) != 0 ||
	    (err = db_exec(ix, sql)) != 0)
		db_exec(ix, "ROLLBACK");
	return err;
}

/* Deletes the database file and its companions. */
static int db_remove_files(struct index *ix)
{
	static const char *const suffix[] = { "", "-wal", "-shm", "-journal" };
	char path[PATH_MAX];
	size_t i;

	for (i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
		snprintf(path, sizeof(path), "%s%s", ix->path, suffix[i]);
		if (unlink(path) != 0 && errno != ENOENT) {
			int err = errno;

			log_error("index %s: cannot remove: %s", path,
				  ERRSTR(err));
			return err;
		}
	}
	return 0;
}

/*
 * Opens the database, replacing a damaged or foreign one, while holding an
 * exclusive lock on <dir>/index.lock, so that processes starting together
 * on a host without an index create it once, one after the other.
 */
static int db_open_locked(struct index *ix, bool replace)
{
	char lock_path[PATH_MAX];
	const char *why = NULL;
	int fd, err;

	snprintf(lock_path, sizeof(lock_path), "%s/index.lock", ix->dir);
	fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = errno;
		log_error("index %s: cannot create: %s", lock_path,
			  ERRSTR(err));
		return err;
	}
	while (flock(fd, LOCK_EX) != 0 && errno == EINTR)
		;
	err = replace ? EUCLEAN : db_init(ix, &why);
	if (err == EUCLEAN) {
		if (why != NULL)
			log_warn("index %s %s; replacing it with a new one, "
				 "filled from the repository", ix->path, why);
		sqlite3_close(ix->db);
		ix->db = NULL;
		err = db_remove_files(ix);
		if (err == 0)
			err = db_init(ix, &why);
	}
	close(fd);	/* releases the lock */
	return err;
}

struct index *index_open(struct repo *repo, const char *cache_dir, int *errp)
{
	char dir[PATH_MAX], *def = NULL;
	struct index *ix;
	int err;

	if (cache_dir == NULL)
		cache_dir = def = index_default_cache_dir();
	if (cache_dir == NULL) {
		*errp = ENOMEM;
		return NULL;
	}
	snprintf(dir, sizeof(dir), "%s/%s", cache_dir, repo->id);
	free(def);
	if ((err = mkdir_p(dir)) != 0) {
		*errp = err;
		return NULL;
	}
	if (chmod(dir, 0700) != 0) {
		*errp = errno;
		log_error("%s: %s", dir, ERRSTR(*errp));
		return NULL;
	}
	ix = calloc(1, sizeof(*ix));
	if (ix == NULL || (ix->dir = strdup(dir)) == NULL ||
	    asprintf(&ix->path, "%s/index.db", dir) < 0) {
		if (ix != NULL)
			free(ix->dir);
		free(ix);
		*errp = ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&ix->lock, NULL);
	ix->repo = repo;
	if ((err = db_open_locked(ix, false)) != 0) {
		index_close(ix);
		*errp = err;
		return NULL;
	}
	return ix;
}

void index_close(struct index *ix)
{
	if (ix == NULL)
		return;
	sqlite3_close(ix->db);
	free(ix->bad.v);
	free(ix->orphans.v);
	pthread_mutex_destroy(&ix->lock);
	free(ix->dir);
	free(ix->path);
	free(ix);
}

const char *index_path(const struct index *ix)
{
	return ix->path;
}

static void digest_u64(EVP_MD_CTX *ctx, uint64_t v)
{
	unsigned char b[8];
	int i;

	for (i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (8 * i));
	EVP_DigestUpdate(ctx, b, sizeof(b));
}

static void digest_str(EVP_MD_CTX *ctx, const char *s)
{
	s = s ? s : "";
	digest_u64(ctx, strlen(s));
	EVP_DigestUpdate(ctx, s, strlen(s));
}

/*
 * The digest of everything the index keeps of manifest m, keyed with the
 * repository id.  0 or ENOMEM.
 */
static int manifest_digest(const char *repo_id, const struct manifest *m,
			   unsigned char out[CODEC_ID_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	size_t i;

	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(ctx);
		return ENOMEM;
	}
	digest_str(ctx, "cbtfs index v" INDEX_SCHEMA);
	digest_str(ctx, repo_id);
	digest_str(ctx, m->id);
	digest_str(ctx, m->volume);
	digest_str(ctx, m->name);
	digest_str(ctx, m->parent_id);
	digest_u64(ctx, m->capacity);
	digest_u64(ctx, m->chunk_size);
	digest_u64(ctx, (uint64_t)m->created);
	digest_str(ctx, m->csi_handle);
	digest_str(ctx, m->csi_driver);
	digest_str(ctx, m->changes);
#define X(field, json) digest_u64(ctx, m->stats.field);
	MANIFEST_STATS(X)
#undef X
	digest_u64(ctx, m->n_entries);
	for (i = 0; i < m->n_entries; i++) {
		digest_u64(ctx, m->entries[i].index);
		EVP_DigestUpdate(ctx, m->entries[i].id, CODEC_ID_LEN);
	}
	EVP_DigestFinal_ex(ctx, out, NULL);
	EVP_MD_CTX_free(ctx);
	return 0;
}

/* Inserts m and its entries, inside the caller's transaction; the caller
 * holds the lock. */
static int insert_manifest(struct index *ix, const struct manifest *m)
{
	unsigned char digest[CODEC_ID_LEN];
	sqlite3_stmt *st = NULL;
	sqlite3_int64 sid;
	size_t i;
	int err, col;

	if ((err = manifest_digest(ix->repo->id, m, digest)) != 0)
		return err;
	if ((err = db_prepare(
		     ix,
		     "INSERT OR IGNORE INTO snapshots(" SNAPSHOT_COLUMNS
		     ") VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
		     &st)) != 0)
		return err;
	sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, m->volume, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, m->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, m->parent_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)m->capacity);
	sqlite3_bind_int64(st, 6, m->chunk_size);
	sqlite3_bind_int64(st, 7, m->created);
	sqlite3_bind_text(st, 8, m->csi_handle ? m->csi_handle : "", -1,
			  SQLITE_STATIC);
	sqlite3_bind_text(st, 9, m->csi_driver ? m->csi_driver : "", -1,
			  SQLITE_STATIC);
	sqlite3_bind_text(st, 10, m->changes ? m->changes : "", -1,
			  SQLITE_STATIC);
	col = 11;
#define X(field, json)                                                      \
	sqlite3_bind_int64(st, col++, (sqlite3_int64)m->stats.field);
	MANIFEST_STATS(X)
#undef X
	sqlite3_bind_blob(st, col, digest, CODEC_ID_LEN, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE) {
		err = db_error(ix, "insert snapshot");
		goto out;
	}
	sqlite3_finalize(st);
	st = NULL;
	if (sqlite3_changes(ix->db) == 0)	/* already indexed */
		return 0;
	sid = sqlite3_last_insert_rowid(ix->db);

	if ((err = db_prepare(ix, "INSERT INTO entries VALUES(?,?,?)", &st)) !=
	    0)
		return err;
	for (i = 0; i < m->n_entries; i++) {
		sqlite3_bind_int64(st, 1, sid);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)m->entries[i].index);
		sqlite3_bind_blob(st, 3, m->entries[i].id, CODEC_ID_LEN,
				  SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE) {
			err = db_error(ix, "insert entries");
			goto out;
		}
		sqlite3_reset(st);
	}
out:
	sqlite3_finalize(st);
	return err;
}

/* Runs insert_manifest() in a transaction of its own. */
static int add_manifest_locked(struct index *ix, const struct manifest *m)
{
	int err;

	if ((err = db_exec(ix, "BEGIN IMMEDIATE")) != 0)
		return err;
	err = insert_manifest(ix, m);
	if (err == 0)
		return db_exec(ix, "COMMIT");
	db_exec(ix, "ROLLBACK");
	return err;
}

int index_add_manifest(struct index *ix, const struct manifest *m)
{
	int err;

	pthread_mutex_lock(&ix->lock);
	err = add_manifest_locked(ix, m);
	pthread_mutex_unlock(&ix->lock);
	return err;
}

static int id_set_add(void *arg, const char *id)
{
	struct id_set *s = arg;

	if (ARRAY_GROW(s) != 0)
		return ENOMEM;
	snprintf(s->v[s->n++], CBTFS_UUID_LEN + 1, "%s", id);
	return 0;
}

static int id_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

static bool id_set_has(const struct id_set *s, const char *id)
{
	return array_find(id, s->v, s->n, sizeof(*s->v), id_cmp) != NULL;
}

/* Appends the text columns of each row of sql to set. */
static int query_ids(struct index *ix, const char *sql, struct id_set *set)
{
	sqlite3_stmt *st = NULL;
	int err, rc, col;

	if ((err = db_prepare(ix, sql, &st)) != 0)
		return err;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && err == 0)
		for (col = 0; col < sqlite3_column_count(st) && err == 0;
		     col++)
			err = id_set_add(set, (const char *)
					 sqlite3_column_text(st, col));
	if (err == 0 && rc != SQLITE_DONE)
		err = db_error(ix, "list snapshots");
	sqlite3_finalize(st);
	return err;
}

/*
 * The ids of every indexed snapshot, sorted, and into parents (may be
 * NULL) those of the snapshots whose row names a parent, as pairs: the
 * snapshot's id, then its parent's.  The ids alone are read with a query
 * of their own, which SQLite answers from the index on id: an entry
 * damaged there then names a snapshot the store lacks, which the sync
 * drops and fetches again.
 */
static int index_ids(struct index *ix, struct id_set *ids,
		     struct id_set *parents)
{
	int err = query_ids(ix, "SELECT id FROM snapshots", ids);

	if (err == 0 && parents != NULL)
		err = query_ids(ix, "SELECT id, parent_id FROM snapshots "
				"WHERE parent_id <> ''", parents);
	array_sort(ids->v, ids->n, sizeof(*ids->v), id_cmp);
	return err;
}

/* Drops one snapshot and its entries, inside the caller's transaction. */
static int drop_snapshot(struct index *ix, const char *id)
{
	static const char *const sql[] = {
		"DELETE FROM entries WHERE sid = "
		"(SELECT sid FROM snapshots WHERE id = ?1)",
		"DELETE FROM snapshots WHERE id = ?1",
	};
	size_t i;
	int err = 0;

	for (i = 0; i < 2 && err == 0; i++) {
		sqlite3_stmt *st = NULL;

		if ((err = db_prepare(ix, sql[i], &st)) != 0)
			break;
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			err = db_error(ix, "drop snapshot");
		sqlite3_finalize(st);
	}
	return err;
}

/* Remembers a manifest that cannot be read, so it is logged only once. */
static void mark_bad(struct index *ix, const char *id)
{
	if (id_set_add(&ix->bad, id) == 0)
		array_sort(ix->bad.v, ix->bad.n, sizeof(*ix->bad.v), id_cmp);
}

/*
 * Re-reads snapshot id, whose parent vanished from the store: a forget
 * folded the parent into it and rewrote its manifest (same id, new parent
 * and entries), so the row is replaced.  A manifest that still names the
 * vanished parent is remembered, and not read again by later syncs.
 * *replaced is set when the row changed.
 */
static int reread_orphan(struct index *ix, const char *id,
			 const char *old_parent, bool *replaced)
{
	struct manifest *m = NULL;
	int err;

	*replaced = false;
	err = repo_get_manifest(ix->repo, id, &m);
	if (err == ENOENT)
		return 0;	/* deleted meanwhile: the next sync drops it */
	pthread_mutex_lock(&ix->lock);
	if (err == EBADMSG || err == ENOTSUP) {
		mark_bad(ix, id);	/* logged; dropped, listed as bad */
	} else if (err == 0 && strcmp(m->parent_id, old_parent) == 0) {
		if (id_set_add(&ix->orphans, id) == 0)
			array_sort(ix->orphans.v, ix->orphans.n,
				   sizeof(*ix->orphans.v), id_cmp);
		goto out;
	} else if (err != 0) {
		goto out;
	}
	if ((err = db_exec(ix, "BEGIN IMMEDIATE")) != 0)
		goto out;
	err = drop_snapshot(ix, id);
	if (err == 0 && m != NULL)
		err = insert_manifest(ix, m);
	if (err == 0)
		err = db_exec(ix, "COMMIT");
	else
		db_exec(ix, "ROLLBACK");
	*replaced = err == 0;
out:
	pthread_mutex_unlock(&ix->lock);
	manifest_free(m);
	return err;
}

/* Manifests fetched at once by a sync or a rebuild: a new host's first
 * sync is bounded by the store's latency, not by the number of
 * manifests.  The S3 store's pool of connections bounds what is in
 * flight. */
#define INDEX_FETCH_JOBS 8

/* A sync indexes what it fetched this many manifests at a time, in one
 * transaction: a commit per manifest would cost more than its fetch. */
#define INDEX_BATCH 64

struct fetching {
	struct index *ix;
	const struct id_set *ids;
	struct manifest **v;	/* index_rebuild(): kept, by position */
	struct id_set *bad;	/* index_rebuild(): unreadable ones */
	/* index_sync(), under ix->lock: fetched, not indexed yet */
	struct manifest *batch[INDEX_BATCH];
	size_t n_batch;
	bool added;		/* some manifest indexed */
};

/* Indexes f's batch in one transaction and empties it; ix->lock held. */
static int flush_batch(struct fetching *f)
{
	struct index *ix = f->ix;
	size_t i;
	int err;

	if (f->n_batch == 0)
		return 0;
	err = db_exec(ix, "BEGIN IMMEDIATE");
	for (i = 0; i < f->n_batch && err == 0; i++)
		err = insert_manifest(ix, f->batch[i]);
	if (err == 0 && (err = db_exec(ix, "COMMIT")) == 0)
		f->added = true;
	else if (i > 0)
		db_exec(ix, "ROLLBACK");
	for (i = 0; i < f->n_batch; i++)
		manifest_free(f->batch[i]);
	f->n_batch = 0;
	return err;
}

/*
 * pool_task: fetches manifest k of f->ids; a sync indexes it with the
 * batch it joins (so that memory does not grow with the number of
 * manifests), a rebuild keeps it for one transaction.  Deleted since the
 * listing: skipped; unreadable: remembered (logged once).
 */
static int fetch_task(void *arg, size_t k, struct buf *scratch)
{
	struct fetching *f = arg;
	struct index *ix = f->ix;
	const char *id = f->ids->v[k];
	struct manifest *m = NULL;
	int err;

	err = repo_get_manifest(ix->repo, id, &m);
	if (err == ENOENT)
		return 0;
	pthread_mutex_lock(&ix->lock);
	if ((err == EBADMSG || err == ENOTSUP) && f->bad != NULL) {
		err = id_set_add(f->bad, id);
	} else if (err == EBADMSG || err == ENOTSUP) {
		mark_bad(ix, id);
		err = 0;
	} else if (err == 0 && f->v != NULL) {
		f->v[k] = m;
		m = NULL;
	} else if (err == 0) {
		f->batch[f->n_batch++] = m;
		m = NULL;
		if (f->n_batch == INDEX_BATCH)
			err = flush_batch(f);
	}
	pthread_mutex_unlock(&ix->lock);
	manifest_free(m);
	return err;
}

/* Fetches and indexes the manifests of ids. */
static int fetch_new(struct index *ix, const struct id_set *ids,
		     bool *changed)
{
	struct fetching f = { .ix = ix, .ids = ids };
	struct pool_conf pc = { .n = ids->n, .jobs = INDEX_FETCH_JOBS,
				.task = fetch_task, .arg = &f };
	int err = pool_run(&pc), err2;

	pthread_mutex_lock(&ix->lock);
	err2 = flush_batch(&f);		/* also frees it after an error */
	pthread_mutex_unlock(&ix->lock);
	if (err == 0)
		err = err2;
	if (f.added && changed != NULL)
		*changed = true;
	return err;
}

/*
 * The index is read before the store is listed: a snapshot that another
 * process adds while the (possibly slow) listing runs must not look as if
 * it had vanished.  The lock is held only while SQLite is used, not during
 * the listing or the downloads, so opens of images go on meanwhile.
 * Concurrent syncs are harmless (inserts of a known id are ignored).
 */
static int sync_store(struct index *ix, bool *changed)
{
	struct id_set store_ids = { 0 }, known = { 0 }, parents = { 0 };
	struct id_set fresh = { 0 };
	bool dropping = false;
	size_t i;
	int err;

	pthread_mutex_lock(&ix->lock);
	err = index_ids(ix, &known, &parents);
	pthread_mutex_unlock(&ix->lock);
	if (err != 0)
		goto out;
	if ((err = repo_list_manifests(ix->repo, id_set_add, &store_ids)) != 0)
		goto out;
	array_sort(store_ids.v, store_ids.n, sizeof(*store_ids.v), id_cmp);

	/*
	 * re-read the known snapshots whose parent vanished (see above),
	 * before dropping it: an image opened meanwhile resolves through
	 * the old row and the parent's, or through the new row
	 */
	for (i = 0; i + 1 < parents.n; i += 2) {
		const char *id = parents.v[i], *parent = parents.v[i + 1];
		bool skip, replaced;

		if (!id_set_has(&store_ids, id) ||
		    id_set_has(&store_ids, parent))
			continue;
		pthread_mutex_lock(&ix->lock);
		skip = id_set_has(&ix->orphans, id) ||
		       id_set_has(&ix->bad, id);
		pthread_mutex_unlock(&ix->lock);
		if (skip)
			continue;
		if ((err = reread_orphan(ix, id, parent, &replaced)) != 0)
			goto out;
		if (replaced && changed != NULL)
			*changed = true;
	}
	/* drop snapshots whose manifest vanished from the store, at once */
	pthread_mutex_lock(&ix->lock);
	for (i = 0; i < known.n && err == 0; i++) {
		if (id_set_has(&store_ids, known.v[i]))
			continue;
		if (!dropping && (err = db_exec(ix, "BEGIN IMMEDIATE")) != 0)
			break;
		dropping = true;
		err = drop_snapshot(ix, known.v[i]);
	}
	if (dropping) {
		if (err == 0)
			err = db_exec(ix, "COMMIT");
		else
			db_exec(ix, "ROLLBACK");
		if (err == 0 && changed != NULL)
			*changed = true;
	}
	pthread_mutex_unlock(&ix->lock);
	if (err != 0)
		goto out;

	/* fetch manifests the index does not know yet, in parallel */
	pthread_mutex_lock(&ix->lock);
	for (i = 0; i < store_ids.n && err == 0; i++)
		if (!id_set_has(&known, store_ids.v[i]) &&
		    !id_set_has(&ix->bad, store_ids.v[i]))
			err = id_set_add(&fresh, store_ids.v[i]);
	pthread_mutex_unlock(&ix->lock);
	if (err == 0 && fresh.n > 0)
		err = fetch_new(ix, &fresh, changed);

out:
	free(store_ids.v);
	free(known.v);
	free(parents.v);
	free(fresh.v);
	return err;
}

/* PRAGMA data_version: changes when another connection (an ingest on this
 * host) committed to the database. */
static sqlite3_int64 data_version(struct index *ix)
{
	sqlite3_stmt *st = NULL;
	sqlite3_int64 v = -1;

	if (db_prepare(ix, "PRAGMA data_version", &st) == 0 &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* A sorted array of chunk ids. */
struct chunk_ids {
	unsigned char (*v)[CODEC_ID_LEN];
	size_t n, cap;
};

static int chunk_ids_add(void *arg, const unsigned char id[CODEC_ID_LEN])
{
	struct chunk_ids *s = arg;

	if (ARRAY_GROW(s) != 0)
		return ENOMEM;
	memcpy(s->v[s->n++], id, CODEC_ID_LEN);
	return 0;
}

/* The damaged ids recorded (local < 0: all; else only those with that
 * origin), sorted. */
static int damaged_rows(struct index *ix, int local, struct chunk_ids *ids)
{
	sqlite3_stmt *st = NULL;
	int err, rc;

	if ((err = db_prepare(ix, "SELECT chunk_id FROM damaged "
			      "WHERE ?1 < 0 OR local = ?1 ORDER BY chunk_id",
			      &st)) != 0)
		return err;
	sqlite3_bind_int(st, 1, local);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && err == 0)
		if (sqlite3_column_bytes(st, 0) == CODEC_ID_LEN)
			err = chunk_ids_add(ids, sqlite3_column_blob(st, 0));
	if (err == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW)
		err = db_error(ix, "read damaged chunks");
	sqlite3_finalize(st);
	return err;
}

/* Records id as damaged (local: known on this host only, the store has
 * no record of it); lock held. */
static int damaged_insert(struct index *ix, const unsigned char *id,
			  int local)
{
	sqlite3_stmt *st = NULL;
	int err;

	if ((err = db_prepare(ix, "INSERT OR REPLACE INTO damaged "
			      "VALUES(?, ?)", &st)) != 0)
		return err;
	sqlite3_bind_blob(st, 1, id, CODEC_ID_LEN, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, local);
	if (sqlite3_step(st) != SQLITE_DONE)
		err = db_error(ix, "record a damaged chunk");
	sqlite3_finalize(st);
	return err;
}

/*
 * Brings the store's damage records into the index: the store's set
 * replaces the rows learnt from it, rows found here stay until an ingest
 * stores the chunk again.  Writes only when something changed, so that a
 * quiet sync does not wake the other processes using the index.
 */
static int sync_damaged(struct index *ix)
{
	struct chunk_ids store = { 0 }, known = { 0 };
	size_t i;
	int err;

	if ((err = repo_list_damaged(ix->repo, chunk_ids_add, &store)) != 0)
		goto out;
	array_sort(store.v, store.n, sizeof(*store.v), codec_id_cmp);
	pthread_mutex_lock(&ix->lock);
	err = damaged_rows(ix, 0, &known);
	if (err == 0 && (known.n != store.n ||
			 (store.n > 0 && memcmp(known.v, store.v, store.n *
						sizeof(*store.v)) != 0))) {
		err = db_exec(ix, "BEGIN IMMEDIATE");
		if (err == 0)
			err = db_exec(ix, "DELETE FROM damaged "
				      "WHERE local = 0");
		for (i = 0; i < store.n && err == 0; i++)
			err = damaged_insert(ix, store.v[i], 0);
		if (err == 0)
			err = db_exec(ix, "COMMIT");
		else
			db_exec(ix, "ROLLBACK");
	}
	pthread_mutex_unlock(&ix->lock);
out:
	free(store.v);
	free(known.v);
	return err;
}

int index_mark_damaged(struct index *ix, const unsigned char *id,
		       const char *why)
{
	char key[REPO_CHUNK_KEY_LEN + 1];
	sqlite3_stmt *st = NULL;
	bool known = false, stored;
	int err;

	pthread_mutex_lock(&ix->lock);
	err = db_prepare(ix, "SELECT 1 FROM damaged WHERE chunk_id = ?", &st);
	if (err == 0) {
		sqlite3_bind_blob(st, 1, id, CODEC_ID_LEN, SQLITE_STATIC);
		known = sqlite3_step(st) == SQLITE_ROW;
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&ix->lock);
	if (err != 0 || known)
		return err;
	/*
	 * Tell the other hosts, where the credentials allow it; the row is
	 * then the store's, dropped by a sync once an ingest anywhere has
	 * healed the chunk.  Otherwise this host remembers it alone.
	 */
	repo_chunk_key(id, key);
	stored = repo_mark_damaged(ix->repo, id, why) == 0;
	if (!stored)
		log_warn("could not record chunk %s as damaged in the "
			 "repository; this host's index remembers it", key);
	pthread_mutex_lock(&ix->lock);
	err = damaged_insert(ix, id, stored ? 0 : 1);
	pthread_mutex_unlock(&ix->lock);
	return err;
}

int index_clear_damaged(struct index *ix, const unsigned char *id)
{
	sqlite3_stmt *st = NULL;
	int err;

	if ((err = repo_clear_damaged(ix->repo, id)) != 0)
		return err;
	pthread_mutex_lock(&ix->lock);
	err = db_prepare(ix, "DELETE FROM damaged WHERE chunk_id = ?", &st);
	if (err == 0) {
		sqlite3_bind_blob(st, 1, id, CODEC_ID_LEN, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			err = db_error(ix, "clear a damaged chunk");
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&ix->lock);
	return err;
}

int index_damaged_ids(struct index *ix, unsigned char (**idsp)[CODEC_ID_LEN],
		      size_t *np)
{
	struct chunk_ids ids = { 0 };
	int err;

	pthread_mutex_lock(&ix->lock);
	err = damaged_rows(ix, -1, &ids);
	pthread_mutex_unlock(&ix->lock);
	if (err != 0) {
		free(ids.v);
		ids.v = NULL;
		ids.n = 0;
	}
	*idsp = ids.v;
	*np = ids.n;
	return err;
}

int index_bad_manifests(struct index *ix, index_id_cb *cb, void *arg)
{
	struct id_set copy = { 0 };
	size_t i;
	int err = 0;

	pthread_mutex_lock(&ix->lock);
	for (i = 0; i < ix->bad.n && err == 0; i++)
		err = id_set_add(&copy, ix->bad.v[i]);
	pthread_mutex_unlock(&ix->lock);
	for (i = 0; i < copy.n && err == 0; i++)
		err = cb(arg, copy.v[i]);
	free(copy.v);
	return err;
}

int index_sync(struct index *ix, bool *changed)
{
	sqlite3_int64 v;
	int err;

	if (changed != NULL)
		*changed = false;
	pthread_mutex_lock(&ix->lock);
	v = data_version(ix);
	if (changed != NULL && v != ix->data_version)
		*changed = true;
	ix->data_version = v;
	pthread_mutex_unlock(&ix->lock);
	err = sync_store(ix, changed);
	if (err == EUCLEAN) {
		log_warn("rebuilding the damaged index %s from the repository",
			 ix->path);
		err = index_rebuild(ix);
		if (err == 0 && changed != NULL)
			*changed = true;
		return err;
	}
	return err == 0 ? sync_damaged(ix) : err;
}

/* Replaces the index's rows with the n manifests of v (NULL ones
 * skipped) in one transaction; the caller holds the lock. */
static int replace_rows(struct index *ix, struct manifest **v, size_t n)
{
	size_t i;
	int err;

	if ((err = db_exec(ix, "BEGIN IMMEDIATE")) != 0)
		return err;
	err = db_exec(ix, "DELETE FROM entries; DELETE FROM snapshots;");
	for (i = 0; i < n && err == 0; i++)
		if (v[i] != NULL)
			err = insert_manifest(ix, v[i]);
	if (err == 0)
		return db_exec(ix, "COMMIT");
	db_exec(ix, "ROLLBACK");
	return err;
}

/*
 * Fetches every manifest first, then replaces the index's contents in one
 * transaction, so that no reader ever sees it half empty.  A file too
 * damaged for that is replaced by a new one.
 */
int index_rebuild(struct index *ix)
{
	struct id_set ids = { 0 }, bad = { 0 };
	struct fetching f = { .ix = ix, .ids = &ids, .bad = &bad };
	struct pool_conf pc = { .jobs = INDEX_FETCH_JOBS, .task = fetch_task,
				.arg = &f };
	size_t i;
	int err;

	/* the downloads take long: opens of images go on meanwhile */
	err = repo_list_manifests(ix->repo, id_set_add, &ids);
	if (err == 0 && ids.n > 0) {
		f.v = calloc(ids.n, sizeof(*f.v));
		pc.n = ids.n;
		err = f.v == NULL ? ENOMEM : pool_run(&pc);
	}
	pthread_mutex_lock(&ix->lock);
	if (err == 0)
		err = replace_rows(ix, f.v, ids.n);
	if (err == EUCLEAN) {
		log_warn("index %s is damaged; replacing it with a new one",
			 ix->path);
		err = db_open_locked(ix, true);
		if (err == 0)
			err = replace_rows(ix, f.v, ids.n);
	}
	if (err == 0) {
		free(ix->bad.v);
		free(ix->orphans.v);
		memset(&ix->orphans, 0, sizeof(ix->orphans));
		ix->bad = bad;
		array_sort(ix->bad.v, ix->bad.n, sizeof(*ix->bad.v), id_cmp);
		memset(&bad, 0, sizeof(bad));
		ix->data_version = data_version(ix);
	}
	pthread_mutex_unlock(&ix->lock);
	for (i = 0; f.v != NULL && i < ids.n; i++)
		manifest_free(f.v[i]);
	free(f.v);
	free(ids.v);
	free(bad.v);
	if (err == ENOMEM)
		log_error("index %s: rebuilding: out of memory", ix->path);
	return err == 0 ? sync_damaged(ix) : err;
}

static char *col_strdup(sqlite3_stmt *st, int col)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	return strdup(t ? (const char *)t : "");
}

/* Fills m (no entries) from a row of SNAPSHOT_COLUMNS. */
static int row_to_manifest(sqlite3_stmt *st, struct manifest *m)
{
	int col = 10;

	snprintf(m->id, sizeof(m->id), "%s", sqlite3_column_text(st, 0));
	m->volume = col_strdup(st, 1);
	m->name = col_strdup(st, 2);
	snprintf(m->parent_id, sizeof(m->parent_id), "%s",
		 sqlite3_column_text(st, 3));
	m->capacity = (uint64_t)sqlite3_column_int64(st, 4);
	m->chunk_size = (uint32_t)sqlite3_column_int64(st, 5);
	m->created = sqlite3_column_int64(st, 6);
	m->csi_handle = col_strdup(st, 7);
	m->csi_driver = col_strdup(st, 8);
	m->changes = col_strdup(st, 9);
#define X(field, json)                                                      \
	m->stats.field = (uint64_t)sqlite3_column_int64(st, col++);
	MANIFEST_STATS(X)
#undef X
	m->n_entries = 0;
	m->entries = NULL;
	if (!m->volume || !m->name || !m->csi_handle || !m->csi_driver ||
	    !m->changes)
		return ENOMEM;
	return 0;
}

int index_find_snapshot(struct index *ix, const char *volume,
			const char *name, struct manifest **mp)
{
	sqlite3_stmt *st = NULL;
	struct manifest *m = NULL;
	int err, rc;

	*mp = NULL;
	pthread_mutex_lock(&ix->lock);
	if ((err = db_prepare(ix,
			      "SELECT " SNAPSHOT_COLUMNS " FROM snapshots "
			      "WHERE volume = ?1 AND name = ?2 "
			      "ORDER BY created, id LIMIT 1",
			      &st)) != 0)
		goto out;
	sqlite3_bind_text(st, 1, volume, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		err = ENOENT;
		goto out;
	}
	if (rc != SQLITE_ROW) {
		err = db_error(ix, "find snapshot");
		goto out;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL || (err = row_to_manifest(st, m)) != 0) {
		err = ENOMEM;
		manifest_free(m);
		goto out;
	}
	*mp = m;
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&ix->lock);
	return err;
}

int index_list_snapshots(struct index *ix, const char *volume,
			 index_snapshot_cb *cb, void *arg)
{
	sqlite3_stmt *st = NULL;
	int err, rc;

	pthread_mutex_lock(&ix->lock);
	if ((err = db_prepare(ix,
			      "SELECT " SNAPSHOT_COLUMNS " FROM snapshots "
			      "WHERE ?1 IS NULL OR volume = ?1 "
			      "ORDER BY volume, created, name",
			      &st)) != 0)
		goto out;
	if (volume != NULL)
		sqlite3_bind_text(st, 1, volume, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct manifest m = { 0 };

		err = row_to_manifest(st, &m);
		if (err == 0)
			err = cb(arg, &m);
		manifest_clear(&m);
		if (err != 0)
			goto out;
	}
	if (rc != SQLITE_DONE)
		err = db_error(ix, "list snapshots");
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&ix->lock);
	return err;
}

int index_chunk_known(struct index *ix, const unsigned char *id, bool *known)
{
	sqlite3_stmt *st = NULL;
	int err, rc;

	pthread_mutex_lock(&ix->lock);
	/* the expression must be the index's, word for word */
	err = db_prepare(ix, "SELECT 1 FROM entries WHERE substr(chunk_id, "
			 "1, 8) = substr(?1, 1, 8) AND chunk_id = ?1 LIMIT 1",
			 &st);
	if (err == 0) {
		sqlite3_bind_blob(st, 1, id, CODEC_ID_LEN, SQLITE_STATIC);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW || rc == SQLITE_DONE)
			*known = rc == SQLITE_ROW;
		else
			err = db_error(ix, "look up chunk");
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&ix->lock);
	return err;
}

/* The row of snapshot id and all its entries, as one manifest. */
static int read_link(struct index *ix, sqlite3_stmt *row_st,
		     sqlite3_stmt *ent_st, const char *id, struct manifest *m)
{
	unsigned char digest[CODEC_ID_LEN];
	size_t cap = 0;
	int err, rc;

	sqlite3_reset(row_st);
	sqlite3_bind_text(row_st, 1, id, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(row_st);
	if (rc == SQLITE_DONE)
		return ENOENT;
	if (rc != SQLITE_ROW)
		return db_error(ix, "resolve chain");
	if ((err = row_to_manifest(row_st, m)) != 0)
		return err;
	sqlite3_reset(ent_st);
	sqlite3_bind_int64(ent_st, 1, sqlite3_column_int64(row_st, 18));
	while ((rc = sqlite3_step(ent_st)) == SQLITE_ROW) {
		struct manifest_entry *e;

		if (array_reserve(&m->entries, &cap, m->n_entries + 1,
				  sizeof(*m->entries)) != 0)
			return ENOMEM;
		e = &m->entries[m->n_entries++];
		e->index = (uint64_t)sqlite3_column_int64(ent_st, 0);
		memset(e->id, 0, CODEC_ID_LEN);
		if (sqlite3_column_bytes(ent_st, 1) == CODEC_ID_LEN)
			memcpy(e->id, sqlite3_column_blob(ent_st, 1),
			       CODEC_ID_LEN);
		else
			e->index = UINT64_MAX;	/* fails the digest */
	}
	if (rc != SQLITE_DONE)
		return db_error(ix, "read entries");
	if ((err = manifest_digest(ix->repo->id, m, digest)) != 0)
		return err;
	if (sqlite3_column_bytes(row_st, 17) != CODEC_ID_LEN ||
	    memcmp(sqlite3_column_blob(row_st, 17), digest,
		   CODEC_ID_LEN) != 0 ||
	    strcmp(m->id, id) != 0 || m->chunk_size != ix->repo->chunk_size ||
	    m->capacity == 0) {
		log_error("index %s: snapshot %s does not match the manifest "
			  "it was built from: " REPAIR_HINT, ix->path, id);
		return EUCLEAN;
	}
	return 0;
}

static uint64_t link_chunks(const struct manifest *m)
{
	return (m->capacity + m->chunk_size - 1) / m->chunk_size;
}

/*
 * Reads and verifies every link of the chain, leaf first, then applies
 * their entries from the root down, later ones overriding.  Chunks beyond
 * a link's capacity do not exist in it, so whatever its ancestors had
 * there is cleared before its own entries apply.
 */
static int resolve_locked(struct index *ix, const char *snap_id,
			  struct manifest **leafp, struct chunk_map **mapp)
{
	struct manifest *chain = NULL;
	size_t n = 0, cap = 0, i;
	sqlite3_stmt *row_st = NULL, *ent_st = NULL;
	struct chunk_map *map = NULL;
	const char *cur = snap_id;
	int err = 0;

	if ((err = db_prepare(ix, "SELECT " SNAPSHOT_COLUMNS ", sid "
			      "FROM snapshots WHERE id = ?", &row_st)) != 0 ||
	    (err = db_prepare(ix, "SELECT idx, chunk_id FROM entries "
			      "WHERE sid = ?1 ORDER BY idx", &ent_st)) != 0)
		goto out;
	while (cur[0] != '\0') {
		if (array_reserve(&chain, &cap, n + 1, sizeof(*chain)) != 0) {
			err = ENOMEM;
			goto out;
		}
		memset(&chain[n], 0, sizeof(chain[n]));
		err = read_link(ix, row_st, ent_st, cur, &chain[n++]);
		if (err == ENOENT && n > 1) {
			log_error("snapshot %s: its ancestor %s is missing "
				  "from the index %s (deleted from the "
				  "repository, or unreadable: 'cbtfs-repo "
				  "verify REPO' tells)", snap_id, cur,
				  ix->path);
			err = EIO;
		}
		if (err != 0)
			goto out;
		for (i = 0; i + 1 < n; i++) {
			if (strcmp(chain[i].id, chain[n - 1].id) == 0) {
				log_error("snapshot %s: its chain of parents "
					  "loops at %s", snap_id, cur);
				err = EIO;
				goto out;
			}
		}
		cur = chain[n - 1].parent_id;
	}

	map = chunk_map_create(chain[0].capacity, chain[0].chunk_size);
	if (map == NULL) {
		err = ENOMEM;
		goto out;
	}
	for (i = n; i-- > 0;) {
		err = chunk_map_overlay(map, link_chunks(&chain[i]),
					chain[i].entries, chain[i].n_entries);
		if (err != 0)
			goto out;
	}
	if (leafp != NULL) {
		*leafp = malloc(sizeof(**leafp));
		if (*leafp == NULL) {
			err = ENOMEM;
			goto out;
		}
		**leafp = chain[0];	/* the strings move to the leaf */
		free(chain[0].entries);
		(*leafp)->entries = NULL;
		(*leafp)->n_entries = 0;
		memset(&chain[0], 0, sizeof(chain[0]));
	}
out:
	sqlite3_finalize(row_st);
	sqlite3_finalize(ent_st);
	for (i = 0; i < n; i++)
		manifest_clear(&chain[i]);
	free(chain);
	if (err != 0) {
		chunk_map_free(map);
		map = NULL;
	}
	*mapp = map;
	return err;
}

int index_resolve_chain(struct index *ix, const char *snap_id,
			struct manifest **leafp, struct chunk_map **mapp)
{
	int err;

	if (leafp != NULL)
		*leafp = NULL;
	*mapp = NULL;
	if (snap_id == NULL || snap_id[0] == '\0')
		return ENOENT;
	pthread_mutex_lock(&ix->lock);
	/* one read transaction: a consistent view of the whole chain */
	err = db_exec(ix, "BEGIN");
	if (err == 0) {
		err = resolve_locked(ix, snap_id, leafp, mapp);
		db_exec(ix, "COMMIT");
	}
	pthread_mutex_unlock(&ix->lock);
	return err;
}
