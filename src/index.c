/*
 * SQLite index: see index.h.
 *
 * Schema (version 1):
 *   meta(key, value)                 repo_id, schema
 *   snapshots(sid, id, volume, name, parent_id, capacity, chunk_size,
 *             created, csi_handle, csi_driver, changes, <stats>)
 *   entries(sid, idx, chunk_id)      one row per manifest entry
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
#include <sys/stat.h>

#include <sqlite3.h>

#include "index.h"

#define INDEX_SCHEMA "1"

/* A sorted array of snapshot ids, for comparing store and index. */
struct id_set {
	char (*v)[CBTFS_UUID_LEN + 1];
	size_t n, cap;
};

struct index {
	pthread_mutex_t lock;
	sqlite3 *db;
	struct repo *repo;
	char *path;
	sqlite3_int64 data_version;	/* as of the last index_sync() */
	struct id_set bad;		/* manifests that cannot be read */
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
	"  bytes_stored INTEGER);"
	"CREATE INDEX IF NOT EXISTS snapshots_by_name"
	"  ON snapshots(volume, name);"
	"CREATE TABLE IF NOT EXISTS entries("
	"  sid INTEGER NOT NULL, idx INTEGER NOT NULL, chunk_id BLOB NOT NULL,"
	"  PRIMARY KEY(sid, idx)) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS entries_by_chunk ON entries(chunk_id);";

#define SNAPSHOT_COLUMNS                                                    \
	"id, volume, name, parent_id, capacity, chunk_size, created, "     \
	"csi_handle, csi_driver, changes, bytes_read, chunks_read, "      \
	"chunks_changed, chunks_new, chunks_reused, chunks_zero, "        \
	"bytes_stored"

static int db_error(struct index *ix, const char *what)
{
	log_error("index %s: %s: %s", ix->path, what, sqlite3_errmsg(ix->db));
	return EIO;
}

static int db_exec(struct index *ix, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(ix->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		log_error("index %s: %s", ix->path, msg ? msg : "error");
		sqlite3_free(msg);
		return EIO;
	}
	return 0;
}

static int db_prepare(struct index *ix, const char *sql, sqlite3_stmt **st)
{
	if (sqlite3_prepare_v2(ix->db, sql, -1, st, NULL) != SQLITE_OK)
		return db_error(ix, "prepare");
	return 0;
}

void chunk_map_free(struct chunk_map *map)
{
	if (map == NULL)
		return;
	free(map->ids);
	free(map);
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

struct index *index_open(struct repo *repo, const char *cache_dir, int *errp)
{
	char dir[PATH_MAX], *def = NULL;
	struct index *ix;
	sqlite3_stmt *st = NULL;
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
	ix = calloc(1, sizeof(*ix));
	if (ix == NULL || asprintf(&ix->path, "%s/index.db", dir) < 0) {
		free(ix);
		*errp = ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&ix->lock, NULL);
	ix->repo = repo;
	if (sqlite3_open_v2(ix->path, &ix->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				    SQLITE_OPEN_FULLMUTEX,
			    NULL) != SQLITE_OK) {
		err = db_error(ix, "cannot open");
		goto fail;
	}
	sqlite3_busy_timeout(ix->db, 30000);
	if ((err = db_exec(ix, "PRAGMA journal_mode=WAL;"
			       "PRAGMA synchronous=NORMAL;")) != 0 ||
	    (err = db_exec(ix, schema_sql)) != 0)
		goto fail;

	/* the directory is named by repo id; make sure the db agrees */
	if ((err = db_prepare(ix, "SELECT value FROM meta WHERE key='repo_id'",
			      &st)) != 0)
		goto fail;
	if (sqlite3_step(st) == SQLITE_ROW) {
		if (strcmp((const char *)sqlite3_column_text(st, 0),
			   repo->id) != 0) {
			log_error("index %s belongs to another repository; "
				  "delete it and it will be rebuilt",
				  ix->path);
			err = EINVAL;
			goto fail;
		}
	} else {
		char sql[256];

		snprintf(sql, sizeof(sql),
			 "INSERT OR REPLACE INTO meta VALUES('repo_id', '%s');"
			 "INSERT OR REPLACE INTO meta VALUES('schema', '"
			 INDEX_SCHEMA "');", repo->id);
		if ((err = db_exec(ix, sql)) != 0)
			goto fail;
	}
	sqlite3_finalize(st);
	return ix;

fail:
	sqlite3_finalize(st);
	index_close(ix);
	*errp = err;
	return NULL;
}

void index_close(struct index *ix)
{
	if (ix == NULL)
		return;
	sqlite3_close(ix->db);
	free(ix->bad.v);
	pthread_mutex_destroy(&ix->lock);
	free(ix->path);
	free(ix);
}

const char *index_path(const struct index *ix)
{
	return ix->path;
}

/* Inserts m and its entries, inside the caller's transaction; the caller
 * holds the lock. */
static int insert_manifest(struct index *ix, const struct manifest *m)
{
	sqlite3_stmt *st = NULL;
	sqlite3_int64 sid;
	size_t i;
	int err;

	if ((err = db_prepare(ix,
			      "INSERT OR IGNORE INTO snapshots(" SNAPSHOT_COLUMNS
			      ") VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
	sqlite3_bind_int64(st, 11, (sqlite3_int64)m->stats.bytes_read);
	sqlite3_bind_int64(st, 12, (sqlite3_int64)m->stats.chunks_read);
	sqlite3_bind_int64(st, 13, (sqlite3_int64)m->stats.chunks_changed);
	sqlite3_bind_int64(st, 14, (sqlite3_int64)m->stats.chunks_new);
	sqlite3_bind_int64(st, 15, (sqlite3_int64)m->stats.chunks_reused);
	sqlite3_bind_int64(st, 16, (sqlite3_int64)m->stats.chunks_zero);
	sqlite3_bind_int64(st, 17, (sqlite3_int64)m->stats.bytes_stored);
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

	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		void *p = realloc(s->v, cap * sizeof(*s->v));

		if (p == NULL)
			return ENOMEM;
		s->v = p;
		s->cap = cap;
	}
	snprintf(s->v[s->n++], CBTFS_UUID_LEN + 1, "%s", id);
	return 0;
}

static int id_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

static bool id_set_has(const struct id_set *s, const char *id)
{
	return bsearch(id, s->v, s->n, sizeof(*s->v), id_cmp) != NULL;
}

/* The ids of every indexed snapshot, sorted. */
static int index_ids(struct index *ix, struct id_set *ids)
{
	sqlite3_stmt *st = NULL;
	int err, rc;

	if ((err = db_prepare(ix, "SELECT id FROM snapshots", &st)) != 0)
		return err;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		if ((err = id_set_add(ids, (const char *)
				      sqlite3_column_text(st, 0))) != 0)
			break;
	if (err == 0 && rc != SQLITE_DONE)
		err = db_error(ix, "list snapshots");
	sqlite3_finalize(st);
	qsort(ids->v, ids->n, sizeof(*ids->v), id_cmp);
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
		qsort(ix->bad.v, ix->bad.n, sizeof(*ix->bad.v), id_cmp);
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
	struct id_set store_ids = { 0 }, known = { 0 };
	bool dropping = false;
	size_t i;
	int err;

	pthread_mutex_lock(&ix->lock);
	err = index_ids(ix, &known);
	pthread_mutex_unlock(&ix->lock);
	if (err != 0)
		goto out;
	if ((err = repo_list_manifests(ix->repo, id_set_add, &store_ids)) != 0)
		goto out;
	qsort(store_ids.v, store_ids.n, sizeof(*store_ids.v), id_cmp);

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

	/* fetch manifests the index does not know yet */
	for (i = 0; i < store_ids.n; i++) {
		struct manifest *m;
		bool bad;

		if (id_set_has(&known, store_ids.v[i]))
			continue;
		pthread_mutex_lock(&ix->lock);
		bad = id_set_has(&ix->bad, store_ids.v[i]);
		pthread_mutex_unlock(&ix->lock);
		if (bad)
			continue;
		err = repo_get_manifest(ix->repo, store_ids.v[i], &m);
		if (err == ENOENT || err == EBADMSG || err == ENOTSUP) {
			if (err != ENOENT) {
				pthread_mutex_lock(&ix->lock);
				mark_bad(ix, store_ids.v[i]);	/* logged once */
				pthread_mutex_unlock(&ix->lock);
			}
			err = 0;	/* deleted meanwhile, or unreadable */
			continue;
		}
		if (err != 0)
			goto out;
		pthread_mutex_lock(&ix->lock);
		err = add_manifest_locked(ix, m);
		pthread_mutex_unlock(&ix->lock);
		manifest_free(m);
		if (err != 0)
			goto out;
		if (changed != NULL)
			*changed = true;
	}
out:
	free(store_ids.v);
	free(known.v);
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

int index_sync(struct index *ix, bool *changed)
{
	sqlite3_int64 v;

	if (changed != NULL)
		*changed = false;
	pthread_mutex_lock(&ix->lock);
	v = data_version(ix);
	if (changed != NULL && v != ix->data_version)
		*changed = true;
	ix->data_version = v;
	pthread_mutex_unlock(&ix->lock);
	return sync_store(ix, changed);
}

/* Collects the manifests of the store for index_rebuild(). */
struct manifest_list {
	struct repo *repo;
	struct manifest **v;
	size_t n, cap;
};

static int fetch_manifest(void *arg, const char *id)
{
	struct manifest_list *l = arg;
	struct manifest *m;
	int err;

	err = repo_get_manifest(l->repo, id, &m);
	if (err == ENOENT || err == EBADMSG || err == ENOTSUP)
		return 0;	/* deleted meanwhile, or logged */
	if (err != 0)
		return err;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		void *p = realloc(l->v, cap * sizeof(*l->v));

		if (p == NULL) {
			manifest_free(m);
			return ENOMEM;
		}
		l->v = p;
		l->cap = cap;
	}
	l->v[l->n++] = m;
	return 0;
}

/*
 * Fetches every manifest first, then replaces the index's contents in one
 * transaction, so that no reader ever sees it half empty.
 */
int index_rebuild(struct index *ix)
{
	struct manifest_list l = { .repo = ix->repo };
	size_t i;
	int err;

	pthread_mutex_lock(&ix->lock);
	err = repo_list_manifests(ix->repo, fetch_manifest, &l);
	if (err == 0)
		err = db_exec(ix, "BEGIN IMMEDIATE");
	if (err == 0) {
		err = db_exec(ix, "DELETE FROM entries; DELETE FROM snapshots;");
		for (i = 0; i < l.n && err == 0; i++)
			err = insert_manifest(ix, l.v[i]);
		if (err == 0)
			err = db_exec(ix, "COMMIT");
		else
			db_exec(ix, "ROLLBACK");
	}
	ix->bad.n = 0;
	pthread_mutex_unlock(&ix->lock);
	for (i = 0; i < l.n; i++)
		manifest_free(l.v[i]);
	free(l.v);
	return err;
}

static char *col_strdup(sqlite3_stmt *st, int col)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	return strdup(t ? (const char *)t : "");
}

/* Fills m (no entries) from a row of SNAPSHOT_COLUMNS. */
static int row_to_manifest(sqlite3_stmt *st, struct manifest *m)
{
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
	m->stats.bytes_read = (uint64_t)sqlite3_column_int64(st, 10);
	m->stats.chunks_read = (uint64_t)sqlite3_column_int64(st, 11);
	m->stats.chunks_changed = (uint64_t)sqlite3_column_int64(st, 12);
	m->stats.chunks_new = (uint64_t)sqlite3_column_int64(st, 13);
	m->stats.chunks_reused = (uint64_t)sqlite3_column_int64(st, 14);
	m->stats.chunks_zero = (uint64_t)sqlite3_column_int64(st, 15);
	m->stats.bytes_stored = (uint64_t)sqlite3_column_int64(st, 16);
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
		free(m.volume);
		free(m.name);
		free(m.csi_handle);
		free(m.csi_driver);
		free(m.changes);
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
	err = db_prepare(ix, "SELECT 1 FROM entries WHERE chunk_id = ? LIMIT 1",
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

/* One link of a chain, leaf first. */
struct chain_link {
	sqlite3_int64 sid;
	uint64_t nchunks;
	char id[CBTFS_UUID_LEN + 1];
};

static int resolve_locked(struct index *ix, const char *snap_id,
			  struct chunk_map **mapp)
{
	struct chain_link *chain = NULL;
	size_t n = 0, cap = 0, i;
	sqlite3_stmt *st = NULL;
	struct chunk_map *map = NULL;
	char cur[CBTFS_UUID_LEN + 1];
	int err = 0;

	snprintf(cur, sizeof(cur), "%s", snap_id);
	if ((err = db_prepare(ix,
			      "SELECT sid, parent_id, capacity, chunk_size "
			      "FROM snapshots WHERE id = ?", &st)) != 0)
		goto out;
	while (cur[0] != '\0') {
		int rc;

		sqlite3_reset(st);
		sqlite3_bind_text(st, 1, cur, -1, SQLITE_TRANSIENT);
		rc = sqlite3_step(st);
		if (rc != SQLITE_ROW) {
			if (rc != SQLITE_DONE)
				err = db_error(ix, "resolve chain");
			else if (n == 0)
				err = ENOENT;
			else {
				log_error("snapshot %s: its ancestor %s is "
					  "missing from the repository",
					  snap_id, cur);
				err = EIO;
			}
			goto out;
		}
		if (n == cap) {
			void *p;

			cap = cap ? 2 * cap : 16;
			p = realloc(chain, cap * sizeof(*chain));
			if (p == NULL) {
				err = ENOMEM;
				goto out;
			}
			chain = p;
		}
		chain[n].sid = sqlite3_column_int64(st, 0);
		chain[n].nchunks = ((uint64_t)sqlite3_column_int64(st, 2) +
				    (uint64_t)sqlite3_column_int64(st, 3) - 1) /
				   (uint64_t)sqlite3_column_int64(st, 3);
		snprintf(chain[n].id, sizeof(chain[n].id), "%s", cur);
		if (n == 0) {
			map = calloc(1, sizeof(*map));
			if (map == NULL) {
				err = ENOMEM;
				goto out;
			}
			map->capacity = (uint64_t)sqlite3_column_int64(st, 2);
			map->chunk_size = (uint32_t)sqlite3_column_int64(st, 3);
		}
		for (i = 0; i < n; i++) {
			if (chain[i].sid == chain[n].sid) {
				log_error("snapshot %s: its chain of parents "
					  "loops at %s", snap_id, cur);
				err = EIO;
				goto out;
			}
		}
		n++;
		snprintf(cur, sizeof(cur), "%s", sqlite3_column_text(st, 1));
	}
	sqlite3_finalize(st);
	st = NULL;

	map->nchunks = chain[0].nchunks;
	map->ids = calloc(map->nchunks ? map->nchunks : 1, CODEC_ID_LEN);
	if (map->ids == NULL) {
		err = ENOMEM;
		goto out;
	}
	/*
	 * Apply entries from the root down, later ones overriding.  Chunks
	 * beyond a link's capacity do not exist in it, so whatever its
	 * ancestors had there is cleared before its own entries apply.
	 */
	if ((err = db_prepare(ix,
			      "SELECT idx, chunk_id FROM entries "
			      "WHERE sid = ?1 AND idx < ?2", &st)) != 0)
		goto out;
	for (i = n; i-- > 0;) {
		int rc;

		if (chain[i].nchunks < map->nchunks)
			memset(map->ids[chain[i].nchunks], 0,
			       (map->nchunks - chain[i].nchunks) * CODEC_ID_LEN);
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, chain[i].sid);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)(
			chain[i].nchunks < map->nchunks ? chain[i].nchunks
							: map->nchunks));
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			uint64_t idx = (uint64_t)sqlite3_column_int64(st, 0);

			if (sqlite3_column_bytes(st, 1) != CODEC_ID_LEN) {
				err = db_error(ix, "bad chunk id");
				goto out;
			}
			memcpy(map->ids[idx], sqlite3_column_blob(st, 1),
			       CODEC_ID_LEN);
		}
		if (rc != SQLITE_DONE) {
			err = db_error(ix, "read entries");
			goto out;
		}
	}
out:
	sqlite3_finalize(st);
	free(chain);
	if (err != 0) {
		chunk_map_free(map);
		map = NULL;
	}
	*mapp = map;
	return err;
}

int index_resolve_chain(struct index *ix, const char *snap_id,
			struct chunk_map **mapp)
{
	int err;

	pthread_mutex_lock(&ix->lock);
	/* one read transaction: a consistent view of the whole chain */
	err = db_exec(ix, "BEGIN");
	if (err == 0) {
		err = resolve_locked(ix, snap_id, mapp);
		db_exec(ix, "COMMIT");
	}
	pthread_mutex_unlock(&ix->lock);
	return err;
}
