/*
 * FUSE layer: see fuse_ops.h.
 *
 * State: a tree of nodes (rebuilt, never edited in place), the images open
 * now (each a resolved chunk map shared by every open of one snapshot and
 * freed with its last close), and the chunk cache.
 *
 * FUSE threads never wait on the network for metadata: lookups and
 * listings answer from the current tree; a miss or a listing only asks the
 * background thread for a sync.  That thread also syncs every
 * refresh_seconds, writes the records of damaged chunks that reads found
 * (a read fails with EIO at once) and writes the metrics file.
 *
 * Locking, in this order:
 *   fs->sync_lock   serialises syncs (index sync + tree rebuild)
 *   fs->lock        guards fs->root, fs->images, fs->last_sync,
 *                   fs->n_snapshots
 *   fs->bg_lock     guards what the background thread is asked to do
 *   (index lock)    taken inside index_* calls
 * Nothing is held during chunk I/O.  fs->lock is never held while calling
 * index_* functions, so the index lock always nests innermost.
 */
#include "config.h"

#define FUSE_USE_VERSION 35

#include <errno.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chunk_cache.h"
#include "fuse_ops.h"
#include "index.h"

struct node {
	char *name;
	bool is_dir;
	struct node **kids;	/* sorted by name */
	size_t n_kids, cap_kids;
	/* files */
	char snap_id[CBTFS_UUID_LEN + 1];
	uint64_t size;
	int64_t created;
	uint64_t stored;	/* bytes in non-zero chunks, once known */
	bool stored_known;
};

struct image {
	char snap_id[CBTFS_UUID_LEN + 1];
	struct chunk_map *map;
	unsigned refs;
	struct image *next;
};

/* One open file: fi->fh points to it. */
struct open_file {
	struct image *img;	/* NULL: the metrics file */
	struct buf text;	/* the metrics file's content at open */
	uint64_t next_off;	/* where a sequential read would go on */
	uint64_t ahead;		/* chunks below this were asked for ahead */
};

/* The metrics file at the root: hidden, not listed, read-only. */
#define STATS_PATH "/.stats"

/* A chunk a read found damaged, for the background thread to record. */
struct damage {
	unsigned char id[CODEC_ID_LEN];
	bool missing;		/* else corrupt */
	char snap_id[CBTFS_UUID_LEN + 1];
};

#define DAMAGE_QUEUE 64

struct cbtfs_fs {
	const struct mount_conf *conf;
	struct repo *repo;
	struct index *index;
	struct chunk_cache *cache;
	uid_t uid;
	gid_t gid;
	time_t mount_time;	/* times of directories */

	struct fuse_conn_info_opts *conn_opts;	/* -o splice_read, ... */
	unsigned readahead;		/* conf's, bounded by the cache */

	pthread_mutex_t sync_lock;
	pthread_mutex_t lock;
	struct node *root;
	size_t n_snapshots;
	struct image *images;
	double last_sync;

	pthread_t bg;
	bool bg_running;
	pthread_mutex_t bg_lock;
	pthread_cond_t bg_cond;		/* work for the background */
	bool stop;
	bool sync_wanted;
	struct damage damage[DAMAGE_QUEUE];
	size_t n_damage;

	uint64_t read_errors;		/* atomics */
	uint64_t open_files;
};

static struct cbtfs_fs *get_fs(void)
{
	return fuse_get_context()->private_data;
}

/* ---- tree ---------------------------------------------------------- */

static void node_free(struct node *n)
{
	size_t i;

	if (n == NULL)
		return;
	for (i = 0; i < n->n_kids; i++)
		node_free(n->kids[i]);
	free(n->kids);
	free(n->name);
	free(n);
}

static struct node *node_new(const char *name, size_t len, bool is_dir)
{
	struct node *n = calloc(1, sizeof(*n));

	if (n == NULL)
		return NULL;
	n->name = strndup(name, len);
	if (n->name == NULL) {
		free(n);
		return NULL;
	}
	n->is_dir = is_dir;
	return n;
}

static int kid_cmp(const void *key, const void *elem)
{
	return strcmp(key, (*(struct node *const *)elem)->name);
}

static struct node *node_kid(const struct node *dir, const char *name)
{
	struct node **p;

	if (dir->n_kids == 0)
		return NULL;
	p = bsearch(name, dir->kids, dir->n_kids, sizeof(*dir->kids), kid_cmp);
	return p ? *p : NULL;
}

/* Finds or adds the child name[0..len) of dir (kept sorted). */
static struct node *node_add(struct node *dir, const char *name, size_t len,
			     bool is_dir)
{
	char tmp[512];
	struct node *n;
	size_t pos;

	snprintf(tmp, sizeof(tmp), "%.*s", (int)len, name);
	n = node_kid(dir, tmp);
	if (n != NULL)
		return n->is_dir == is_dir ? n : NULL;	/* clash: skip */
	if (dir->n_kids == dir->cap_kids) {
		size_t cap = dir->cap_kids ? 2 * dir->cap_kids : 8;
		void *p = realloc(dir->kids, cap * sizeof(*dir->kids));

		if (p == NULL)
			return NULL;
		dir->kids = p;
		dir->cap_kids = cap;
	}
	n = node_new(name, len, is_dir);
	if (n == NULL)
		return NULL;
	for (pos = dir->n_kids; pos > 0 && strcmp(dir->kids[pos - 1]->name,
						  n->name) > 0; pos--)
		dir->kids[pos] = dir->kids[pos - 1];
	dir->kids[pos] = n;
	dir->n_kids++;
	return n;
}

static int tree_add_snapshot(void *arg, const struct manifest *m)
{
	struct node *dir = arg, *file;
	const char *p = m->volume;
	char fname[300];

	for (;;) {
		const char *end = strchrnul(p, '/');

		dir = node_add(dir, p, (size_t)(end - p), true);
		if (dir == NULL)
			return 0;	/* name clash or no memory: skip */
		if (*end == '\0')
			break;
		p = end + 1;
	}
	snprintf(fname, sizeof(fname), "%s.img", m->name);
	if (node_kid(dir, fname) != NULL)
		return 0;	/* duplicate name: the oldest wins */
	file = node_add(dir, fname, strlen(fname), false);
	if (file == NULL)
		return 0;
	snprintf(file->snap_id, sizeof(file->snap_id), "%s", m->id);
	file->size = m->capacity;
	file->created = m->created;
	return 0;
}

static size_t count_files(const struct node *n)
{
	size_t i, count = n->is_dir ? 0 : 1;

	for (i = 0; i < n->n_kids; i++)
		count += count_files(n->kids[i]);
	return count;
}

/* Builds a new tree from the index and swaps it in. */
static int rebuild_tree(struct cbtfs_fs *fs)
{
	struct node *root = node_new("", 0, true), *old;
	int err;

	if (root == NULL)
		return ENOMEM;
	err = index_list_snapshots(fs->index, NULL, tree_add_snapshot, root);
	if (err != 0) {
		node_free(root);
		return err;
	}
	pthread_mutex_lock(&fs->lock);
	old = fs->root;
	fs->root = root;
	fs->n_snapshots = count_files(root);
	pthread_mutex_unlock(&fs->lock);
	node_free(old);
	return 0;
}

/* Syncs the index with the store and rebuilds the tree if it changed. */
static void sync_now(struct cbtfs_fs *fs)
{
	bool changed = false;

	pthread_mutex_lock(&fs->sync_lock);
	pthread_mutex_lock(&fs->lock);
	fs->last_sync = now_seconds();
	pthread_mutex_unlock(&fs->lock);
	if (index_sync(fs->index, &changed) == 0 && changed)
		rebuild_tree(fs);
	pthread_mutex_unlock(&fs->sync_lock);
}

/*
 * Asks the background thread for a sync unless the last one is younger
 * than a second: a lookup miss or a listing may be about a snapshot just
 * made.  Never waits.
 */
static void want_sync(struct cbtfs_fs *fs)
{
	double age;

	pthread_mutex_lock(&fs->lock);
	age = now_seconds() - fs->last_sync;
	pthread_mutex_unlock(&fs->lock);
	if (age < 1.0)
		return;
	pthread_mutex_lock(&fs->bg_lock);
	if (!fs->sync_wanted) {
		fs->sync_wanted = true;
		pthread_cond_signal(&fs->bg_cond);
	}
	pthread_mutex_unlock(&fs->bg_lock);
}

/*
 * Hands chunk id, which a read of snapshot snap_id found missing or
 * corrupt, to the background thread for its damage record.  Never waits;
 * a full queue drops it (the next read of the chunk asks again).
 */
static void want_damage_record(struct cbtfs_fs *fs, const unsigned char *id,
			       bool missing, const char *snap_id)
{
	size_t i;

	pthread_mutex_lock(&fs->bg_lock);
	for (i = 0; i < fs->n_damage; i++)
		if (memcmp(fs->damage[i].id, id, CODEC_ID_LEN) == 0)
			break;
	if (i == fs->n_damage && i < DAMAGE_QUEUE) {
		memcpy(fs->damage[i].id, id, CODEC_ID_LEN);
		fs->damage[i].missing = missing;
		snprintf(fs->damage[i].snap_id, sizeof(fs->damage[i].snap_id),
			 "%s", snap_id);
		fs->n_damage++;
		pthread_cond_signal(&fs->bg_cond);
	}
	pthread_mutex_unlock(&fs->bg_lock);
}

/* Whether snapshot id is gone from the store: it was forgotten while
 * open, so a chunk missing since (pruned) is no damage. */
static bool snapshot_gone(struct cbtfs_fs *fs, const char *id)
{
	bool exists = true;

	if (repo_has_manifest(fs->repo, id, &exists) != 0 || exists)
		return false;
	log_error("snapshot %s was forgotten while its image was open, and "
		  "its data pruned: it cannot be read any more", id);
	return true;
}

static void record_damage(struct cbtfs_fs *fs, const struct damage *d)
{
	if (d->missing && snapshot_gone(fs, d->snap_id))
		return;
	index_mark_damaged(fs->index, d->id, d->missing ? "missing"
							: "corrupt");
}

static void write_metrics_file(struct cbtfs_fs *fs);

/* The background thread: syncs, damage records, the metrics file. */
static void *background(void *arg)
{
	struct cbtfs_fs *fs = arg;
	const struct mount_conf *conf = fs->conf;
	double next_sync = now_seconds() + conf->refresh_seconds;
	double next_metrics = now_seconds();

	pthread_mutex_lock(&fs->bg_lock);
	while (!fs->stop) {
		struct damage batch[DAMAGE_QUEUE];
		double now = now_seconds(), until = now + 3600;
		bool sync, metrics;
		size_t i, n;

		if (conf->refresh_seconds > 0 && next_sync < until)
			until = next_sync;
		if (conf->metrics_file != NULL && next_metrics < until)
			until = next_metrics;
		if (!fs->sync_wanted && fs->n_damage == 0 && now < until) {
			struct timespec ts;
			double t = until - now;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += (time_t)t;
			ts.tv_nsec += (long)((t - (double)(time_t)t) * 1e9);
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&fs->bg_cond, &fs->bg_lock,
					       &ts);
			continue;
		}
		n = fs->n_damage;
		memcpy(batch, fs->damage, n * sizeof(*batch));
		fs->n_damage = 0;
		sync = fs->sync_wanted ||
		       (conf->refresh_seconds > 0 && now >= next_sync);
		fs->sync_wanted = false;
		metrics = conf->metrics_file != NULL && now >= next_metrics;
		pthread_mutex_unlock(&fs->bg_lock);

		for (i = 0; i < n; i++)
			record_damage(fs, &batch[i]);
		if (sync) {
			sync_now(fs);
			next_sync = now_seconds() + conf->refresh_seconds;
		}
		if (metrics) {
			write_metrics_file(fs);
			next_metrics = now_seconds() + conf->metrics_seconds;
		}
		pthread_mutex_lock(&fs->bg_lock);
	}
	pthread_mutex_unlock(&fs->bg_lock);
	return NULL;
}

/* Walks path; the caller holds fs->lock.  NULL if absent. */
static struct node *lookup_locked(struct cbtfs_fs *fs, const char *path)
{
	struct node *n = fs->root;
	char comp[512];

	while (n != NULL && *path != '\0') {
		const char *end;

		while (*path == '/')
			path++;
		if (*path == '\0')
			break;
		end = strchrnul(path, '/');
		if ((size_t)(end - path) >= sizeof(comp) || !n->is_dir)
			return NULL;
		snprintf(comp, sizeof(comp), "%.*s", (int)(end - path), path);
		n = node_kid(n, comp);
		path = end;
	}
	return n;
}

/* ---- FUSE operations ----------------------------------------------- */

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct cbtfs_fs *fs = get_fs();

	/* images never change: let the kernel cache everything */
	cfg->kernel_cache = !fs->conf->direct_io;
	cfg->direct_io = fs->conf->direct_io;
	cfg->entry_timeout = 1.0;
	cfg->attr_timeout = 1.0;
	cfg->negative_timeout = 0;
	cfg->use_ino = 0;
	conn->max_readahead = 1u << 20;
	/* -o splice_read, splice_write, splice_move, max_readahead, ... */
	if (fs->conn_opts != NULL)
		fuse_apply_conn_info_opts(fs->conn_opts, conn);
	if (pthread_create(&fs->bg, NULL, background, fs) == 0)
		fs->bg_running = true;
	else
		log_error("cannot start the background thread: new snapshots "
			  "will not appear until the next mount");
	return fs;
}

static void op_destroy(void *private_data)
{
	struct cbtfs_fs *fs = private_data;
	struct chunk_cache_stats cs;
	struct store_stats ss;

	if (fs->bg_running) {
		pthread_mutex_lock(&fs->bg_lock);
		fs->stop = true;
		pthread_cond_signal(&fs->bg_cond);
		pthread_mutex_unlock(&fs->bg_lock);
		pthread_join(fs->bg, NULL);
		fs->bg_running = false;
	}
	/* damage found since the thread's last round, and the last metrics */
	while (fs->n_damage > 0)
		record_damage(fs, &fs->damage[--fs->n_damage]);
	if (fs->conf->metrics_file != NULL)
		write_metrics_file(fs);

	chunk_cache_get_stats(fs->cache, &cs);
	store_get_stats(fs->repo->store, &ss);
	log_info("unmounted: chunks %" PRIu64 " cached reads, %" PRIu64
		 " fetched, %" PRIu64 " read ahead; store %" PRIu64
		 " requests, %" PRIu64 " retries", cs.hits, cs.misses,
		 cs.prefetched, ss.requests, ss.retries);
}

static void fill_stat(struct cbtfs_fs *fs, const struct node *n,
		      struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	if (n->is_dir) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		st->st_mtime = st->st_ctime = st->st_atime = fs->mount_time;
	} else {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)n->size;
		/* zero chunks are holes: cp --sparse, qemu-img skip them */
		st->st_blocks = (blkcnt_t)(((n->stored_known ? n->stored
							     : n->size) +
					    511) / 512);
		st->st_mtime = st->st_ctime = st->st_atime =
			(time_t)n->created;
	}
	st->st_blksize = (blksize_t)fs->repo->chunk_size;
}

/*
 * Learns how much of the image at path is stored (not holes), from an
 * open image's map or the index's (local, verified), and remembers it in
 * its node.  Failures leave it unknown: st_blocks then says all of it.
 */
static void learn_stored(struct cbtfs_fs *fs, const char *path,
			 const char *snap_id, struct stat *st)
{
	struct chunk_map *map = NULL;
	struct image *img;
	uint64_t stored = 0;
	struct node *n;
	bool known = false;

	pthread_mutex_lock(&fs->lock);
	for (img = fs->images; img != NULL; img = img->next)
		if (strcmp(img->snap_id, snap_id) == 0)
			break;
	if (img != NULL) {
		stored = chunk_map_stored(img->map);
		known = true;
	}
	pthread_mutex_unlock(&fs->lock);
	if (!known &&
	    index_resolve_chain(fs->index, snap_id, NULL, &map) == 0) {
		stored = chunk_map_stored(map);
		known = true;
		chunk_map_free(map);
	}
	if (!known)
		return;
	pthread_mutex_lock(&fs->lock);
	n = lookup_locked(fs, path);
	if (n != NULL && !n->is_dir && strcmp(n->snap_id, snap_id) == 0) {
		n->stored = stored;
		n->stored_known = true;
		fill_stat(fs, n, st);
	}
	pthread_mutex_unlock(&fs->lock);
}

static int op_getattr(const char *path, struct stat *st,
		      struct fuse_file_info *fi)
{
	struct cbtfs_fs *fs = get_fs();
	char snap_id[CBTFS_UUID_LEN + 1] = "";
	struct node *n;

	if (strcmp(path, STATS_PATH) == 0) {
		/* its size is known at open; reads go to EOF (direct_io) */
		memset(st, 0, sizeof(*st));
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_uid = fs->uid;
		st->st_gid = fs->gid;
		st->st_mtime = st->st_ctime = st->st_atime = time(NULL);
		return 0;
	}
	pthread_mutex_lock(&fs->lock);
	n = lookup_locked(fs, path);
	if (n != NULL)
		fill_stat(fs, n, st);
	if (n != NULL && !n->is_dir && !n->stored_known)
		snprintf(snap_id, sizeof(snap_id), "%s", n->snap_id);
	pthread_mutex_unlock(&fs->lock);
	if (snap_id[0] != '\0')
		learn_stored(fs, path, snap_id, st);
	if (n != NULL)
		return 0;
	want_sync(fs);		/* maybe it just appeared */
	return -ENOENT;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler,
		      off_t offset, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	struct cbtfs_fs *fs = get_fs();
	struct node *n;
	char **names = NULL;
	size_t i, count = 0;
	int err = 0;

	want_sync(fs);		/* the next listing may show more */
	pthread_mutex_lock(&fs->lock);
	n = lookup_locked(fs, path);
	if (n == NULL || !n->is_dir) {
		err = n == NULL ? -ENOENT : -ENOTDIR;
	} else {
		/* copy the names: the filler runs without the lock */
		names = calloc(n->n_kids ? n->n_kids : 1, sizeof(*names));
		if (names == NULL)
			err = -ENOMEM;
		for (i = 0; names != NULL && i < n->n_kids; i++) {
			names[i] = strdup(n->kids[i]->name);
			if (names[i] == NULL) {
				err = -ENOMEM;
				break;
			}
			count++;
		}
	}
	pthread_mutex_unlock(&fs->lock);

	if (err == 0) {
		filler(buf, ".", NULL, 0, 0);
		filler(buf, "..", NULL, 0, 0);
		for (i = 0; i < count; i++)
			if (filler(buf, names[i], NULL, 0, 0) != 0)
				break;
	}
	for (i = 0; i < count; i++)
		free(names[i]);
	free(names);
	return err;
}

/* Drops a reference to img, freeing it with the last. */
static void release_image(struct cbtfs_fs *fs, struct image *img)
{
	struct image **pp;

	pthread_mutex_lock(&fs->lock);
	if (--img->refs == 0) {
		for (pp = &fs->images; *pp != img; pp = &(*pp)->next)
			;
		*pp = img->next;
	} else {
		img = NULL;
	}
	pthread_mutex_unlock(&fs->lock);
	if (img != NULL) {
		chunk_map_free(img->map);
		free(img);
	}
}

/*
 * Whether the verified manifest of a snapshot is the one the tree (built
 * from the index's rows) shows at path "/VOLUME/NAME.img" with size.
 */
static bool leaf_matches(const struct manifest *m, const char *path,
			 uint64_t size)
{
	size_t vlen = strlen(m->volume), nlen = strlen(m->name);

	return m->capacity == size && path[0] == '/' &&
	       strncmp(path + 1, m->volume, vlen) == 0 &&
	       path[1 + vlen] == '/' &&
	       strncmp(path + 2 + vlen, m->name, nlen) == 0 &&
	       strcmp(path + 2 + vlen + nlen, ".img") == 0;
}

/* ---- metrics ------------------------------------------------------- */

struct metrics {
	struct chunk_cache_stats cache;
	struct store_counts store;
	struct store_stats requests;
	uint64_t read_errors, open_files, open_images, maps_bytes, snapshots;
};

/* Every metric once: name, type, help, value (of struct metrics m). */
#define METRICS(X)							\
	X(cache_hits_total, counter,					\
	  "Chunk reads served by the cache or by a load under way",	\
	  m->cache.hits)						\
	X(cache_misses_total, counter,					\
	  "Chunk reads that had to load their chunk", m->cache.misses)	\
	X(cache_waits_total, counter,					\
	  "Chunk reads that waited for a load under way (read-ahead "	\
	  "too late)", m->cache.waits)					\
	X(readahead_chunks_total, counter,				\
	  "Chunks loaded ahead of sequential readers", m->cache.prefetched) \
	X(readahead_dropped_total, counter,				\
	  "Read-aheads given up because only unread chunks filled the "	\
	  "cache", m->cache.prefetch_dropped)				\
	X(chunk_load_errors_total, counter,				\
	  "Chunk loads that failed (missing, corrupt, store errors)",	\
	  m->cache.load_errors)						\
	X(read_errors_total, counter,					\
	  "Reads answered with an error", m->read_errors)		\
	X(store_gets_total, counter,					\
	  "GETs of objects (chunks, manifests) from the store",		\
	  m->store.gets)						\
	X(store_get_bytes_total, counter,				\
	  "Bytes those GETs returned", m->store.get_bytes)		\
	X(store_get_errors_total, counter,				\
	  "GETs that failed other than with a missing object",		\
	  m->store.get_errors)						\
	X(store_requests_total, counter,				\
	  "Requests to the store of any kind, retries included",	\
	  m->requests.requests)						\
	X(store_retries_total, counter,					\
	  "Store requests retried", m->requests.retries)		\
	X(cache_bytes, gauge,						\
	  "Memory of the chunk cache's buffers", m->cache.bytes)	\
	X(cache_max_bytes, gauge,					\
	  "The bound of that memory (cache_size)", m->cache.max_bytes)	\
	X(cache_chunks, gauge, "Chunks in the cache", m->cache.chunks)	\
	X(open_files, gauge, "Images open now", m->open_files)		\
	X(open_images, gauge,						\
	  "Snapshots with an open image (each holds one chunk map)",	\
	  m->open_images)						\
	X(maps_bytes, gauge,						\
	  "Memory of the chunk maps of the open snapshots", m->maps_bytes) \
	X(snapshots, gauge, "Snapshots in the tree", m->snapshots)

static void metrics_collect(struct cbtfs_fs *fs, struct metrics *m)
{
	struct image *img;

	memset(m, 0, sizeof(*m));
	if (fs->cache != NULL)
		chunk_cache_get_stats(fs->cache, &m->cache);
	store_count_get(fs->repo->store, &m->store);
	store_get_stats(fs->repo->store, &m->requests);
	m->read_errors = __atomic_load_n(&fs->read_errors, __ATOMIC_RELAXED);
	m->open_files = __atomic_load_n(&fs->open_files, __ATOMIC_RELAXED);
	pthread_mutex_lock(&fs->lock);
	for (img = fs->images; img != NULL; img = img->next) {
		m->open_images++;
		m->maps_bytes += sizeof(*img) + sizeof(*img->map) +
				 img->map->n * sizeof(*img->map->v);
	}
	m->snapshots = fs->n_snapshots;
	pthread_mutex_unlock(&fs->lock);
}

/* The metrics in the Prometheus text exposition format (version 0.0.4)
 * into out; 0 or ENOMEM. */
static int metrics_text(struct cbtfs_fs *fs, struct buf *out)
{
	struct metrics mv, *m = &mv;
	char line[512];
	int err = 0;

	metrics_collect(fs, m);
	out->len = 0;
#define X(name, type, help, value)					\
	snprintf(line, sizeof(line),					\
		 "# HELP cbtfs_" #name " " help "\n"			\
		 "# TYPE cbtfs_" #name " " #type "\n"			\
		 "cbtfs_" #name " %" PRIu64 "\n", (uint64_t)(value));	\
	err |= buf_append(out, line, strlen(line));
	METRICS(X)
#undef X
	return err ? ENOMEM : 0;
}

/*
 * Writes the metrics to conf->metrics_file through a temporary file and a
 * rename, so a reader sees the old or the new text whole.  Failures are
 * logged, once until a write succeeds again.
 */
static void write_metrics_file(struct cbtfs_fs *fs)
{
	static bool failed;
	const char *path = fs->conf->metrics_file;
	struct buf text = { 0 };
	char *tmp = NULL;
	FILE *f = NULL;
	int err;

	err = metrics_text(fs, &text);
	if (err == 0 && asprintf(&tmp, "%s.tmp.%ld", path, (long)getpid()) < 0)
		err = ENOMEM;
	if (err == 0 && (f = fopen(tmp, "we")) == NULL)
		err = errno;
	if (err == 0 && fwrite(text.data, 1, text.len, f) != text.len)
		err = errno ? errno : EIO;
	if (f != NULL && fclose(f) != 0 && err == 0)
		err = errno;
	if (err == 0 && rename(tmp, path) != 0)
		err = errno;
	if (err != 0 && tmp != NULL)
		unlink(tmp);
	if (err != 0 && !failed)
		log_error("cannot write the metrics file %s: %s", path,
			  ERRSTR(err));
	failed = err != 0;
	free(tmp);
	buf_free(&text);
}

/* Opens the metrics file: its text, taken now, is what reads return. */
static int open_stats(struct cbtfs_fs *fs, struct fuse_file_info *fi)
{
	struct open_file *of = calloc(1, sizeof(*of));

	if (of == NULL || metrics_text(fs, &of->text) != 0) {
		if (of != NULL)
			buf_free(&of->text);
		free(of);
		return -ENOMEM;
	}
	fi->fh = (uint64_t)(uintptr_t)of;
	fi->direct_io = 1;	/* its size in stat is 0: read to EOF */
	fi->keep_cache = 0;
	return 0;
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
	struct cbtfs_fs *fs = get_fs();
	struct image *img;
	struct chunk_map *map = NULL;
	struct manifest *leaf = NULL;
	struct open_file *of;
	char snap_id[CBTFS_UUID_LEN + 1];
	uint64_t size = 0;
	struct node *n;
	int err = 0;

	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		return -EROFS;
	if (strcmp(path, STATS_PATH) == 0)
		return open_stats(fs, fi);
	pthread_mutex_lock(&fs->lock);
	n = lookup_locked(fs, path);
	if (n == NULL)
		err = -ENOENT;
	else if (n->is_dir)
		err = -EISDIR;
	else {
		snprintf(snap_id, sizeof(snap_id), "%s", n->snap_id);
		size = n->size;
	}
	pthread_mutex_unlock(&fs->lock);
	if (err != 0)
		return err;

	pthread_mutex_lock(&fs->lock);
	for (img = fs->images; img != NULL; img = img->next)
		if (strcmp(img->snap_id, snap_id) == 0)
			break;
	if (img != NULL)
		img->refs++;
	pthread_mutex_unlock(&fs->lock);

	if (img == NULL) {
		/* failures were logged by the index; ENOENT: just deleted */
		err = index_resolve_chain(fs->index, snap_id, &leaf, &map);
		if (err == 0 && !leaf_matches(leaf, path, size)) {
			log_error("index %s: %s is listed under the name "
				  "of another snapshot (%s/%s): "
				  INDEX_REPAIR_HINT, index_path(fs->index),
				  path, leaf->volume, leaf->name);
			err = EUCLEAN;
		}
		manifest_free(leaf);
		if (err != 0) {
			chunk_map_free(map);
			return err == ENOENT   ? -ENOENT
			       : err == ENOMEM ? -ENOMEM
					       : -EIO;
		}
		pthread_mutex_lock(&fs->lock);
		/* another open may have resolved it meanwhile */
		for (img = fs->images; img != NULL; img = img->next)
			if (strcmp(img->snap_id, snap_id) == 0)
				break;
		if (img == NULL) {
			img = calloc(1, sizeof(*img));
			if (img != NULL) {
				snprintf(img->snap_id, sizeof(img->snap_id),
					 "%s", snap_id);
				img->map = map;
				map = NULL;
				img->next = fs->images;
				fs->images = img;
			}
		}
		if (img != NULL)
			img->refs++;
		pthread_mutex_unlock(&fs->lock);
		chunk_map_free(map);
		if (img == NULL)
			return -ENOMEM;
	}
	of = calloc(1, sizeof(*of));
	if (of == NULL) {
		release_image(fs, img);
		return -ENOMEM;
	}
	of->img = img;
	fi->fh = (uint64_t)(uintptr_t)of;
	fi->keep_cache = 1;
	__atomic_add_fetch(&fs->open_files, 1, __ATOMIC_RELAXED);
	return 0;
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
	struct cbtfs_fs *fs = get_fs();
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;

	if (of->img != NULL) {
		release_image(fs, of->img);
		__atomic_sub_fetch(&fs->open_files, 1, __ATOMIC_RELAXED);
	}
	buf_free(&of->text);
	free(of);
	return 0;
}

/*
 * Asks for the non-zero chunks after idx to be loaded in the background,
 * skipping those this open file asked for already: a sequential reader
 * then adds about one chunk per chunk it reads.
 */
static void read_ahead(struct cbtfs_fs *fs, struct open_file *of,
		       const struct chunk_map *map, uint64_t idx)
{
	uint64_t end = idx + 1 + fs->readahead, i;
	size_t k;

	i = __atomic_exchange_n(&of->ahead, end, __ATOMIC_RELAXED);
	if (i < idx + 1 || i > end)
		i = idx + 1;	/* first time, or the reader jumped */
	for (k = chunk_map_lower(map, i);
	     k < map->n && map->v[k].index < end; k++) {
		if (!chunk_cache_prefetch(fs->cache, map->v[k].id)) {
			/* queue full: the next read asks from here on */
			__atomic_store_n(&of->ahead, map->v[k].index,
					 __ATOMIC_RELAXED);
			break;
		}
	}
}

/*
 * One copy, from the cached chunk into libfuse's buffer.  read_buf cannot
 * avoid it with libfuse 3.14's high-level API: libfuse free()s every
 * memory buffer a read_buf hands it after the reply, with no call back to
 * release a pin, and copies any buffer that does not start at its
 * malloc'd address (a verified frame's chunk follows its header).
 */
static int op_read(const char *path, char *buf, size_t size, off_t offset,
		   struct fuse_file_info *fi)
{
	struct cbtfs_fs *fs = get_fs();
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	const struct chunk_map *map;
	uint64_t off = (uint64_t)offset, done = 0;
	uint32_t csize;
	bool sequential;

	if (offset < 0)
		return -EINVAL;
	if (of->img == NULL) {	/* the metrics file */
		if (off >= of->text.len)
			return 0;
		if (size > of->text.len - off)
			size = (size_t)(of->text.len - off);
		memcpy(buf, of->text.data + off, size);
		return (int)size;
	}
	map = of->img->map;
	csize = map->chunk_size;
	if (off >= map->capacity)
		return 0;
	if (size > map->capacity - off)
		size = (size_t)(map->capacity - off);
	/* a hint only: concurrent reads of one open file may race here */
	sequential = __atomic_exchange_n(&of->next_off, off + size,
					 __ATOMIC_RELAXED) == off;
	if (sequential)
		read_ahead(fs, of, map, (off + size - 1) / csize);
	while (done < size) {
		uint64_t pos = off + done, idx = pos / csize;
		uint32_t within = (uint32_t)(pos % csize);
		uint32_t n = csize - within;
		const unsigned char *id = chunk_map_id(map, idx);
		int err;

		if (n > size - done)
			n = (uint32_t)(size - done);
		if (codec_id_is_zero(id)) {
			memset(buf + done, 0, n);
		} else {
			err = chunk_cache_read(fs->cache, id, within,
					       n, buf + done);
			if (err == ENOENT || err == EBADMSG)
				want_damage_record(fs, id, err == ENOENT,
						   of->img->snap_id);
			if (err != 0) {
				__atomic_add_fetch(&fs->read_errors, 1,
						   __ATOMIC_RELAXED);
				return -(err == ENOMEM ? ENOMEM : EIO);
			}
		}
		done += n;
	}
	return (int)done;
}

/*
 * SEEK_DATA and SEEK_HOLE: zero chunks are holes.  Other whences never
 * reach here (the kernel handles them).
 */
static off_t op_lseek(const char *path, off_t off, int whence,
		      struct fuse_file_info *fi)
{
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	const struct chunk_map *map;
	uint64_t i, pos = (uint64_t)off;

	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	if (of->img == NULL) {	/* the metrics file: all data */
		if (off < 0 || pos >= of->text.len)
			return -ENXIO;
		return whence == SEEK_DATA ? off : (off_t)of->text.len;
	}
	map = of->img->map;
	if (off < 0 || pos >= map->capacity)
		return -ENXIO;
	i = chunk_map_next(map, pos / map->chunk_size, whence == SEEK_DATA);
	if (i == map->nchunks)
		return whence == SEEK_HOLE ? (off_t)map->capacity : -ENXIO;
	if (i * map->chunk_size > pos)
		pos = i * map->chunk_size;
	return (off_t)pos;
}

static int op_statfs(const char *path, struct statvfs *sv)
{
	memset(sv, 0, sizeof(*sv));
	sv->f_bsize = get_fs()->repo->chunk_size;
	sv->f_frsize = 512;
	sv->f_namemax = 255;
	return 0;
}

static const struct fuse_operations cbtfs_ops = {
	.init = op_init,
	.destroy = op_destroy,
	.getattr = op_getattr,
	.readdir = op_readdir,
	.open = op_open,
	.release = op_release,
	.read = op_read,
	.lseek = op_lseek,
	.statfs = op_statfs,
};

/* ---- main loop ----------------------------------------------------- */

/*
 * Raises the kernel's read-ahead for this mount (128 KiB by default) so
 * that a sequential reader asks for whole chunks in few requests.  Needs
 * root; without it the default stays, which is only slower.
 */
static void set_kernel_read_ahead(const char *mountpoint, unsigned kb)
{
	char *real = realpath(mountpoint, NULL), *line = NULL, path[96];
	unsigned maj, min;
	size_t cap = 0;
	bool found = false;
	FILE *f;

	if (real == NULL ||
	    (f = fopen("/proc/self/mountinfo", "re")) == NULL) {
		free(real);
		return;
	}
	/* "id parent MAJ:MIN root mountpoint ..." */
	while (!found && getline(&line, &cap, f) > 0) {
		char mp[4096];

		if (sscanf(line, "%*d %*d %u:%u %*s %4095s", &maj, &min, mp) ==
			    3 &&
		    strcmp(mp, real) == 0 &&
		    strstr(line, " fuse.cbtfs ") != NULL)
			found = true;
	}
	fclose(f);
	free(line);
	free(real);
	if (!found)
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj,
		 min);
	f = fopen(path, "we");
	if (f == NULL) {
		log_debug("cannot raise the kernel read-ahead (%s): %s", path,
			  ERRSTR(errno));
		return;
	}
	fprintf(f, "%u\n", kb);
	fclose(f);
}


static void fs_free(struct cbtfs_fs *fs)
{
	while (fs->images != NULL) {
		struct image *img = fs->images;

		fs->images = img->next;
		chunk_map_free(img->map);
		free(img);
	}
	node_free(fs->root);
	chunk_cache_destroy(fs->cache);
	index_close(fs->index);
	repo_close(fs->repo);
	free(fs->conn_opts);
	pthread_mutex_destroy(&fs->sync_lock);
	pthread_mutex_destroy(&fs->lock);
	pthread_mutex_destroy(&fs->bg_lock);
	pthread_cond_destroy(&fs->bg_cond);
	free(fs);
}

/* Opens repository and index and builds the first tree. */
static struct cbtfs_fs *fs_open(const struct mount_conf *conf)
{
	struct cbtfs_fs *fs = calloc(1, sizeof(*fs));
	pthread_condattr_t ca;
	struct store *counted;
	int err;

	if (fs == NULL)
		return NULL;
	fs->conf = conf;
	fs->uid = getuid();
	fs->gid = getgid();
	fs->mount_time = time(NULL);
	pthread_mutex_init(&fs->sync_lock, NULL);
	pthread_mutex_init(&fs->lock, NULL);
	pthread_mutex_init(&fs->bg_lock, NULL);
	/* the background thread's timeouts follow now_seconds() */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&fs->bg_cond, &ca);
	pthread_condattr_destroy(&ca);
	fs->repo = repo_open(conf->repo_url, &conf->store, &conf->pass, &err);
	if (fs->repo == NULL)
		goto fail;
	/* GETs counted for the metrics */
	counted = store_count_create(fs->repo->store, &err);
	if (counted == NULL) {
		log_error("cannot open %s: %s", conf->repo_url, ERRSTR(err));
		goto fail;
	}
	fs->repo->store = counted;
	fs->index = index_open(fs->repo, conf->cache_dir, &err);
	if (fs->index == NULL)
		goto fail;
	err = index_sync(fs->index, NULL);
	if (err == 0 && (err = rebuild_tree(fs)) == EUCLEAN) {
		/* a damaged index the sync did not touch: start afresh */
		log_warn("rebuilding the damaged index %s from the repository",
			 index_path(fs->index));
		if ((err = index_rebuild(fs->index)) == 0)
			err = rebuild_tree(fs);
	}
	if (err != 0)
		goto fail;
	fs->last_sync = now_seconds();
	return fs;
fail:
	fs_free(fs);
	return NULL;
}

int fuse_ops_main(struct fuse_args *args, const struct mount_conf *conf)
{
	struct fuse_cmdline_opts opts = { 0 };
	struct fuse_loop_config loop = { 0 };
	struct fuse_conn_info_opts *conn_opts = NULL;
	struct cbtfs_fs *fs = NULL;
	struct fuse *fuse = NULL;
	int status = 1, err;

	if (fuse_parse_cmdline(args, &opts) != 0)
		return 2;
	if (opts.mountpoint == NULL) {
		log_error("no mountpoint given; usage: cbtfs REPO MOUNTPOINT");
		status = 2;
		goto out;
	}
	/* -o splice_read and the other connection options libfuse knows,
	 * applied in op_init(); libfuse says what it refuses */
	conn_opts = fuse_parse_conn_info_opts(args);
	if (conn_opts == NULL) {
		status = 2;
		goto out;
	}
	/*
	 * Check the repository before mounting, so errors reach the
	 * terminal.  The index is opened again after fuse_daemonize():
	 * SQLite connections must not cross a fork().
	 */
	fs = fs_open(conf);
	if (fs == NULL)
		goto out;
	fs->conn_opts = conn_opts;
	conn_opts = NULL;
	index_close(fs->index);
	fs->index = NULL;

	fuse = fuse_new(args, &cbtfs_ops, sizeof(cbtfs_ops), fs);
	if (fuse == NULL) {
		status = 2;	/* libfuse said which option it refused */
		goto out;
	}
	if (fuse_mount(fuse, opts.mountpoint) != 0)
		goto out_destroy;
	if (!conf->direct_io)
		set_kernel_read_ahead(opts.mountpoint, 1024);
	if (fuse_daemonize(opts.foreground) != 0)
		goto out_unmount;
	if (!opts.foreground) {
		if (conf->log_fd >= 0)
			log_use_file(conf->log_fd);
		else
			log_use_syslog();
		log_info("%s mounted at %s", conf->repo_url,
			 opts.mountpoint);
	}
	/* threads and SQLite connections start after the fork */
	fs->index = index_open(fs->repo, conf->cache_dir, &err);
	if (fs->index == NULL)
		goto out_unmount;
	/* more loaders than connections would only wait for one */
	fs->cache =
		chunk_cache_create(fs->repo, conf->cache_bytes,
				   conf->readahead < conf->store.connections
					   ? conf->readahead
					   : conf->store.connections,
				   &err);
	if (fs->cache == NULL) {
		log_error("cannot create the chunk cache: %s", ERRSTR(err));
		goto out_unmount;
	}
	/* a read-ahead beyond half the cache would push out its own chunks */
	{
		struct chunk_cache_stats cs;
		uint64_t half;

		chunk_cache_get_stats(fs->cache, &cs);
		half = cs.max_bytes / fs->repo->chunk_size / 2;
		fs->readahead = conf->readahead < half ? conf->readahead
						       : (unsigned)half;
		if (fs->readahead < conf->readahead)
			log_info("readahead=%u chunks: half of what "
				 "cache_size holds", fs->readahead);
	}
	if (fuse_set_signal_handlers(fuse_get_session(fuse)) != 0)
		goto out_unmount;
	if (opts.singlethread) {
		status = fuse_loop(fuse) != 0;
	} else {
		loop.clone_fd = opts.clone_fd;
		/* libfuse leaves it UINT_MAX when not given, and warns */
		loop.max_idle_threads = opts.max_idle_threads == UINT_MAX
						? 10 : opts.max_idle_threads;
		status = fuse_loop_mt(fuse, &loop) != 0;
	}
	fuse_remove_signal_handlers(fuse_get_session(fuse));
out_unmount:
	fuse_unmount(fuse);
out_destroy:
	fuse_destroy(fuse);
out:
	if (fs != NULL)
		fs_free(fs);
	free(conn_opts);
	free(opts.mountpoint);
	return status;
}
