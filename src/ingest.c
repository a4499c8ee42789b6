/*
 * Ingest: see ingest.h.
 *
 * Work distribution: the chunk indices to read form one array; a worker
 * pool (pool.h) hands each position to exactly one worker, which writes
 * its verdict into that position of the result arrays.  The manifest is
 * assembled from those arrays in order once every worker has finished.
 *
 * Locking: ing->lock guards the statistics and the set of chunk ids
 * claimed by this run.  Workers never hold it during I/O.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "array.h"
#include "ingest.h"
#include "pool.h"
#include "progress.h"

enum verdict { V_UNCHANGED = 0, V_ENTRY = 1 };

/* Open-addressing set of chunk ids claimed for upload by this run. */
struct claim_set {
	unsigned char (*slot)[CODEC_ID_LEN];
	size_t cap, n;
};

struct ingest {
	const struct ingest_conf *conf;
	int fd;
	/* where the device's holes are told (SEEK_DATA/SEEK_HOLE): the
	 * image itself, the backing file of a loop device (its byte 0 at
	 * holes_off), or -1: none known, all of it is read */
	int holes_fd;
	off_t holes_off;
	uint64_t capacity;
	uint32_t chunk_size;
	const struct chunk_map *base;	/* NULL without a base */
	const uint64_t *todo;		/* chunk indices to read */
	size_t n_todo;
	unsigned char *verdict;		/* per todo position */
	unsigned char (*ids)[CODEC_ID_LEN];

	bool check_store;		/* an earlier run left chunks: ask
					 * the store before uploading */
	const unsigned char (*damaged)[CODEC_ID_LEN];	/* sorted */
	size_t n_damaged;

	struct progress pr;		/* the workers' progress line */

	pthread_mutex_t lock;
	struct manifest_stats stats;
	uint64_t chunks_healed;		/* damaged chunks stored again */
	uint64_t chunks_found;		/* left in the store by a stopped
					 * run */
	bool uploaded;			/* some chunk was put */
	char manifest_id[CBTFS_UUID_LEN + 1];	/* of the snapshot made */
	struct claim_set claimed;
};

/* Inserts id; *claimed is set if it was absent (this caller claims it).
 * Returns 0 or ENOMEM. */
static int claim_set_add(struct claim_set *s, const unsigned char *id,
			bool *claimed)
{
	size_t i, mask;

	if (2 * (s->n + 1) > s->cap) {
		struct claim_set big = { 0 };

		big.cap = s->cap ? 2 * s->cap : 1024;
		big.slot = calloc(big.cap, CODEC_ID_LEN);
		if (big.slot == NULL)
			return ENOMEM;
		for (i = 0; i < s->cap; i++) {
			bool dummy;

			if (!codec_id_is_zero(s->slot[i]))
				claim_set_add(&big, s->slot[i], &dummy);
		}
		free(s->slot);
		*s = big;
	}
	mask = s->cap - 1;
	/* ids are SHA-256 or HMAC output: their first bytes hash well */
	for (i = (size_t)id[0] | (size_t)id[1] << 8 | (size_t)id[2] << 16 |
		 (size_t)id[3] << 24;; i++) {
		i &= mask;
		if (codec_id_is_zero(s->slot[i])) {
			memcpy(s->slot[i], id, CODEC_ID_LEN);
			s->n++;
			*claimed = true;
			return 0;
		}
		if (memcmp(s->slot[i], id, CODEC_ID_LEN) == 0) {
			*claimed = false;
			return 0;
		}
	}
}

/* Reads chunk idx into buf (chunk_size bytes, zero-padded past the end). */
static int read_chunk(struct ingest *ing, uint64_t idx, unsigned char *buf,
		      uint64_t *nread)
{
	uint64_t off = idx * ing->chunk_size;
	size_t want = ing->chunk_size, got = 0;

	if (ing->capacity - off < want)
		want = (size_t)(ing->capacity - off);
	while (got < want) {
		ssize_t n = pread(ing->fd, buf + got, want - got,
				  (off_t)(off + got));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? errno : EIO;

			log_error("%s: read at offset %" PRIu64 " failed: %s",
				  ing->conf->device, off + got,
				  n < 0 ? ERRSTR(err)
					: "unexpected end of device");
			return err;
		}
		got += (size_t)n;
	}
	memset(buf + got, 0, ing->chunk_size - got);
	*nread = got;
	return 0;
}

/* Whether chunk id is recorded as damaged. */
static bool is_damaged(const struct ingest *ing, const unsigned char *id)
{
	return array_find(id, ing->damaged, ing->n_damaged, CODEC_ID_LEN,
			  codec_id_cmp) != NULL;
}

/*
 * Uploads chunk id unless the repository has it: the index knows every
 * chunk a committed snapshot uses, whichever host wrote it, and the store
 * confirms it is there; after a run that stopped early (check_store),
 * chunks the index does not know are looked for in the store too, so that
 * what the stopped run stored is not sent again.  A chunk recorded as
 * damaged is uploaded again and its record removed.  entry: the chunk is
 * an entry of the new manifest (else it is the base's, uploaded only to
 * heal it).
 */
static int store_chunk(struct ingest *ing, const unsigned char *id,
		       struct buf *b, bool entry)
{
	const struct ingest_conf *conf = ing->conf;
	bool damaged = is_damaged(ing, id), exists = false, found = false;
	char key[REPO_CHUNK_KEY_LEN + 1];
	uint64_t stored = 0;
	int err = 0;

	repo_chunk_key(id, key);
	if (!damaged) {
		err = index_chunk_known(conf->index, id, &exists);
		/* the store is the truth: what the index knows must be there
		 * (one HEAD per chunk deduplicated), and after a stopped run
		 * what it does not know may be */
		if (err == 0 && (exists || ing->check_store)) {
			bool known = exists;

			err = repo_chunk_exists(conf->repo, id, &exists);
			found = exists && !known;
			if (err == 0 && known && !exists)
				log_warn("chunk %s, used by snapshots in the "
					 "index, is missing from the "
					 "repository; storing it again", key);
		}
	}
	if (err == 0 && !exists)
		err = repo_put_chunk(conf->repo, id, b, &stored);
	if (err == 0 && damaged) {
		log_info("stored chunk %s again: it was recorded as damaged",
			 key);
		err = index_clear_damaged(conf->index, id);
	}
	if (err != 0)
		return err;

	pthread_mutex_lock(&ing->lock);
	if (!exists) {
		ing->uploaded = true;
		ing->stats.chunks_new++;
		ing->stats.bytes_stored += stored;
	} else if (entry) {
		ing->stats.chunks_reused++;
	}
	if (found)
		ing->chunks_found++;
	if (damaged)
		ing->chunks_healed++;
	pthread_mutex_unlock(&ing->lock);
	return 0;
}

/* Handles the chunk at todo position k, read into b (see
 * repo_chunk_room()). */
static int process_chunk(struct ingest *ing, size_t k, struct buf *b)
{
	unsigned char *buf = b->data + repo_chunk_offset(ing->conf->repo);
	uint64_t idx = ing->todo[k], nread = 0;
	unsigned char id[CODEC_ID_LEN];
	const unsigned char *base_id = codec_zero_id;
	bool zero, same, claimed = false;
	int err;

	if ((err = read_chunk(ing, idx, buf, &nread)) != 0)
		return err;
	zero = codec_is_zero(buf, ing->chunk_size);
	if (zero)
		memset(id, 0, sizeof(id));
	else if ((err = repo_chunk_id(ing->conf->repo, buf, id)) != 0)
		return err;
	if (ing->base != NULL && idx < ing->base->nchunks)
		base_id = chunk_map_id(ing->base, idx);
	same = memcmp(id, base_id, CODEC_ID_LEN) == 0;

	pthread_mutex_lock(&ing->lock);
	ing->stats.bytes_read += nread;
	ing->stats.chunks_read++;
	if (zero)
		ing->stats.chunks_zero++;
	if (!same) {
		ing->verdict[k] = V_ENTRY;
		memcpy(ing->ids[k], id, CODEC_ID_LEN);
		ing->stats.chunks_changed++;
	}
	/* the same as the base: nothing to store, unless it is damaged */
	if (zero || (same && !is_damaged(ing, id))) {
		pthread_mutex_unlock(&ing->lock);
		return 0;
	}
	err = claim_set_add(&ing->claimed, id, &claimed);
	if (!claimed && err == 0 && !same)
		ing->stats.chunks_reused++;	/* another worker has it */
	pthread_mutex_unlock(&ing->lock);
	if (!claimed || err != 0)
		return err;
	return store_chunk(ing, id, b, !same);
}

/* pool_task: the chunk at todo position k, read into scratch (one
 * buffer for every chunk of a worker, framed where it is read). */
static int chunk_task(void *arg, size_t k, struct buf *scratch)
{
	struct ingest *ing = arg;

	if (buf_reserve(scratch, repo_chunk_room(ing->conf->repo)) != 0)
		return ENOMEM;
	return process_chunk(ing, k, scratch);
}

/* pool_tick: the progress line. */
static void draw_progress(void *arg, size_t done, bool final)
{
	struct ingest *ing = arg;
	double secs = now_seconds() - ing->pr.phase;
	uint64_t bytes;

	pthread_mutex_lock(&ing->lock);
	bytes = ing->stats.bytes_read;
	pthread_mutex_unlock(&ing->lock);
	progress_show(&ing->pr, final, done, ing->n_todo,
		      "%.0f%% %zu/%zu chunks, %s at %.0f MB/s",
		      ing->n_todo ? 100.0 * (double)done / (double)ing->n_todo
				  : 100.0,
		      done, ing->n_todo, HUMAN(bytes),
		      secs > 0 ? (double)bytes / secs / 1e6 : 0.0);
}

/* Runs the workers over ing->todo; returns the first error. */
static int run_workers(struct ingest *ing, unsigned jobs, bool progress)
{
	struct pool_conf pc = {
		.n = ing->n_todo, .jobs = jobs, .task = chunk_task,
		.tick = progress ? draw_progress : NULL, .arg = ing,
		.stop = ing->conf->interrupted,
	};
	int err;

	progress_init(&ing->pr, "ingest", progress);
	err = pool_run(&pc);
	progress_end(&ing->pr);
	if (err == EINTR)
		log_error("interrupted: no snapshot was committed");
	return err;
}

/* Refuses what is not a block device or a regular file; EINVAL
 * (logged). */
static int check_device_type(const char *path, const struct stat *sb)
{
	if (S_ISBLK(sb->st_mode) || S_ISREG(sb->st_mode))
		return 0;
	log_error("device %s: is a %s; --device must be a block device or "
		  "a regular file (an image)", path,
		  S_ISDIR(sb->st_mode) ? "directory"
		  : S_ISFIFO(sb->st_mode) ? "FIFO"
		  : S_ISSOCK(sb->st_mode) ? "socket"
		  : S_ISCHR(sb->st_mode) ? "character device"
		  : "special file");
	return EINVAL;
}

/* Opens the device and finds its size. */
static int open_device(const char *path, int *fdp, uint64_t *sizep)
{
	struct stat sb;
	int fd, err;

	/* a socket cannot be opened, a FIFO would block: say what they are */
	if (stat(path, &sb) == 0 && (err = check_device_type(path, &sb)) != 0)
		return err;
	/* O_NONBLOCK: what was swapped in meanwhile cannot hang the open */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		err = errno;
		log_error("device %s: cannot open: %s", path, ERRSTR(err));
		return err;
	}
	if (fstat(fd, &sb) != 0 || fcntl(fd, F_SETFL, 0) != 0) {
		err = errno;
		log_error("device %s: %s", path, ERRSTR(err));
		close(fd);
		return err;
	}
	if ((err = check_device_type(path, &sb)) != 0) {
		close(fd);
		return err;
	}
	if (S_ISBLK(sb.st_mode) && ioctl(fd, BLKGETSIZE64, sizep) != 0) {
		err = errno;
		log_error("device %s: cannot get size: %s", path, ERRSTR(err));
		close(fd);
		return err;
	}
	if (S_ISREG(sb.st_mode))
		*sizep = (uint64_t)sb.st_size;
	if (*sizep == 0) {
		log_error("device %s: is empty (size 0)", path);
		close(fd);
		return EINVAL;
	}
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	*fdp = fd;
	return 0;
}

/*
 * Where the holes of the loop device fd (st: its stat) can be learnt: its
 * backing file, opened into *bfdp, in which the device begins at *offp.
 * The file is the one the loop device uses (same device and inode as
 * LOOP_GET_STATUS64 reports), and the device's own cache is flushed to it
 * first, so that its holes are the device's.  ENOENT (not logged) when
 * that cannot be told: not a loop device, or its file is gone.
 */
static int loop_backing_file(const char *device, int fd,
			     const struct stat *st, int *bfdp, off_t *offp)
{
	char path[PATH_MAX], sys[96];
	struct loop_info64 li;
	struct stat bst;
	size_t n;
	FILE *f;
	int bfd;

	snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u/loop/backing_file",
		 major(st->st_rdev), minor(st->st_rdev));
	f = fopen(sys, "re");
	if (f == NULL)
		return ENOENT;
	n = fgets(path, sizeof(path), f) ? strlen(path) : 0;
	fclose(f);
	if (n > 0 && path[n - 1] == '\n')
		path[--n] = '\0';
	if (n == 0 || ioctl(fd, LOOP_GET_STATUS64, &li) != 0 ||
	    li.lo_offset > (uint64_t)INT64_MAX || fsync(fd) != 0)
		return ENOENT;
	bfd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (bfd < 0)
		return ENOENT;
	if (fstat(bfd, &bst) != 0 || !S_ISREG(bst.st_mode) ||
	    (uint64_t)bst.st_dev != li.lo_device ||
	    (uint64_t)bst.st_ino != li.lo_inode) {
		close(bfd);
		return ENOENT;
	}
	log_debug("device %s: its holes are those of its backing file %s "
		  "(from offset %" PRIu64 ")", device, path,
		  (uint64_t)li.lo_offset);
	*bfdp = bfd;
	*offp = (off_t)li.lo_offset;
	return 0;
}

/* Finds where ing->fd's holes are told (ing->holes_fd). */
static void find_holes_source(struct ingest *ing)
{
	struct stat st;

	ing->holes_fd = -1;
	ing->holes_off = 0;
	if (fstat(ing->fd, &st) != 0)
		return;
	if (S_ISREG(st.st_mode)) {
		ing->holes_fd = ing->fd;
		return;
	}
	if (loop_backing_file(ing->conf->device, ing->fd, &st,
			      &ing->holes_fd, &ing->holes_off) != 0)
		log_debug("device %s: its holes are not known (only those of "
			  "a loop device whose backing file is still there "
			  "are): reading all of it", ing->conf->device);
}

/*
 * Checks, under the volume's lock, that no snapshot of that name exists.
 * *existing receives the id of one that does if an ingest of it stopped
 * right after committing it: a plain re-run then has nothing to do.  That
 * is so when the stopped run's lock record (found by taking the lock:
 * predecessor, "" if none) names the manifest the name has, and that
 * manifest is there and verifies.  EEXIST (logged) for a name in use.
 */
static int check_name_free(const struct ingest_conf *conf,
			   const char *predecessor,
			   char existing[CBTFS_UUID_LEN + 1])
{
	struct manifest *m, *stored = NULL;
	int err;

	existing[0] = '\0';
	err = index_find_snapshot(conf->index, conf->volume, conf->name, &m);
	if (err != 0)
		return err == ENOENT ? 0 : err;
	if (strcmp(predecessor, m->id) == 0 &&
	    repo_get_manifest(conf->repo, m->id, &stored) == 0 &&
	    strcmp(stored->volume, conf->volume) == 0 &&
	    strcmp(stored->name, conf->name) == 0) {
		snprintf(existing, CBTFS_UUID_LEN + 1, "%s", m->id);
		err = 0;
	} else {
		log_error("snapshot '%s' of volume '%s' already exists in the "
			  "repository (id %s); choose another name",
			  conf->name, conf->volume, m->id);
		err = EEXIST;
	}
	manifest_free(stored);
	manifest_free(m);
	return err;
}

/* index_list_snapshots(): keeps the name of the last (newest) one. */
static int keep_newest(void *arg, const struct manifest *m)
{
	snprintf(arg, 256, "%s", m->name);
	return 0;
}

/*
 * Finds the base snapshot by name (INGEST_BASE_LATEST: the volume's
 * newest; none yet leaves *basep NULL, a full backup) and resolves its
 * chain (verified).
 */
static int find_base(const struct ingest_conf *conf, struct manifest **basep,
		     struct chunk_map **mapp)
{
	const char *name = conf->base;
	char newest[256] = "";
	struct manifest *row;
	int err;

	if (strcmp(name, INGEST_BASE_LATEST) == 0) {
		err = index_list_snapshots(conf->index, conf->volume,
					   keep_newest, newest);
		if (err != 0)
			return err;
		if (newest[0] == '\0') {
			log_info("volume '%s' has no snapshot yet: --base "
				 "latest makes a full backup", conf->volume);
			return 0;
		}
		name = newest;
		log_info("--base latest: snapshot '%s'", name);
	}
	err = index_find_snapshot(conf->index, conf->volume, name, &row);
	if (err == ENOENT)
		log_error("base snapshot '%s' of volume '%s' is not in the "
			  "repository; 'cbtfs-repo snapshots REPO --volume "
			  "%s' lists the snapshots", name, conf->volume,
			  conf->volume);
	if (err != 0)
		return err;
	err = index_resolve_chain(conf->index, row->id, basep, mapp);
	if (err == ENOENT)
		log_error("base snapshot '%s' vanished from the repository "
			  "meanwhile", name);
	if (err == 0 && (strcmp((*basep)->volume, conf->volume) != 0 ||
			 strcmp((*basep)->name, name) != 0)) {
		log_error("index %s: the row of snapshot '%s' names another "
			  "snapshot than its manifest",
			  index_path(conf->index), name);
		err = EUCLEAN;
	}
	if (err != 0) {
		manifest_free(*basep);
		chunk_map_free(*mapp);
		*basep = NULL;
		*mapp = NULL;
	}
	manifest_free(row);
	return err;
}

static int build_manifest(struct ingest *ing, const struct manifest *base,
			  struct manifest *m)
{
	const struct ingest_conf *conf = ing->conf;
	size_t k, n = 0;

	snprintf(m->id, sizeof(m->id), "%s", ing->manifest_id);
	m->volume = (char *)conf->volume;
	m->name = (char *)conf->name;
	snprintf(m->parent_id, sizeof(m->parent_id), "%s",
		 base ? base->id : "");
	m->capacity = ing->capacity;
	m->chunk_size = ing->chunk_size;
	m->created = (int64_t)time(NULL);
	m->csi_handle = (char *)(conf->csi_handle ? conf->csi_handle : "");
	m->csi_driver = (char *)(conf->csi_driver ? conf->csi_driver : "");
	m->changes = (char *)conf->changes->ops->name;
	m->stats = ing->stats;
	m->entries = calloc(
		ing->stats.chunks_changed ? ing->stats.chunks_changed : 1,
		sizeof(*m->entries));
	if (m->entries == NULL)
		return ENOMEM;
	for (k = 0; k < ing->n_todo; k++) {
		if (ing->verdict[k] != V_ENTRY)
			continue;
		m->entries[n].index = ing->todo[k];
		memcpy(m->entries[n].id, ing->ids[k], CODEC_ID_LEN);
		n++;
	}
	m->n_entries = n;
	return 0;
}

/* Merges the sorted chunk indices extra into the sorted list *todop,
 * each index once. */
static int todo_merge(uint64_t **todop, size_t *np, const uint64_t *extra,
		      size_t n_extra)
{
	const uint64_t *todo = *todop;
	size_t i = 0, j = 0, n = 0;
	uint64_t *out;

	if (n_extra == 0)
		return 0;
	out = malloc((*np + n_extra) * sizeof(*out));
	if (out == NULL)
		return ENOMEM;
	while (i < *np || j < n_extra) {
		uint64_t next = j == n_extra || (i < *np && todo[i] < extra[j])
					? todo[i++] : extra[j++];

		if (n == 0 || out[n - 1] != next)
			out[n++] = next;
	}
	free(*todop);
	*todop = out;
	*np = n;
	return 0;
}

/*
 * Chunks to read whatever the change source said: the base's last chunk,
 * when partial, holds bytes past the base's capacity that are not part of
 * it, so a volume that grew past them must read it again; and chunks of
 * the base recorded as damaged are read, so that the same data, if the
 * device still holds it, is stored again.
 */
static int add_forced_chunks(const struct ingest *ing, uint64_t **todop,
			     size_t *np)
{
	const struct chunk_map *base = ing->base;
	uint64_t last = base->capacity / base->chunk_size, i;
	bool grown = base->capacity % base->chunk_size != 0 &&
		     ing->capacity > base->capacity;
	struct { uint64_t *v; size_t n, cap; } extra = { 0 };
	int err = 0;

	if (!grown && ing->n_damaged == 0)
		return 0;
	for (i = 0; err == 0 && i < base->nchunks &&
		    i * ing->chunk_size < ing->capacity; i++) {
		if ((grown && i == last) ||
		    is_damaged(ing, chunk_map_id(base, i))) {
			err = ARRAY_GROW(&extra);
			if (err == 0)
				extra.v[extra.n++] = i;
		}
	}
	if (err == 0)
		err = todo_merge(todop, np, extra.v, extra.n);
	free(extra.v);
	return err;
}

/*
 * Takes the volume's capacity from the change source when it knows it:
 * the device (a volume restored from the snapshot, maybe rounded up) must
 * hold at least that much, and only that much is backed up.
 */
static int take_answer(const struct ingest_conf *conf,
		       const struct cbt_answer *ans, uint64_t *capacity)
{
	if (ans->capacity == 0 || ans->capacity == *capacity)
		return 0;
	if (ans->capacity > *capacity) {
		log_error("device %s has %" PRIu64 " bytes, but the %s source "
			  "reports a volume of %" PRIu64
			  " bytes: --device must "
			  "hold the whole snapshot",
			  conf->device, *capacity, conf->changes->ops->name,
			  ans->capacity);
		return EINVAL;
	}
	log_info("device %s has %" PRIu64 " bytes; backing up the volume's "
		 "%" PRIu64 " reported by the %s source", conf->device,
		 *capacity, ans->capacity, conf->changes->ops->name);
	*capacity = ans->capacity;
	return 0;
}

/* What one attempt of ingest_run() works with. */
struct plan {
	struct manifest *base;		/* verified, or NULL */
	char base_name[256];		/* of the base found, or "" */
	struct chunk_map *base_map;
	struct cbt_answer ans;
	uint64_t *todo;
	size_t n_todo;
	uint64_t nchunks;
	unsigned char (*damaged)[CODEC_ID_LEN];
	size_t n_damaged;
};

static void plan_free(struct plan *p)
{
	free(p->todo);
	free(p->damaged);
	cbt_ranges_free(&p->ans.ranges);
	chunk_map_free(p->base_map);
	manifest_free(p->base);
}

/* Where the next data (whence SEEK_DATA) or hole (SEEK_HOLE) of the
 * device begins at or after off, at most the capacity: the source of
 * holes' answer, or with none known all is data. */
static uint64_t seek_holes(const struct ingest *ing, uint64_t off,
			   int whence)
{
	off_t r;

	if (ing->holes_fd < 0)
		return whence == SEEK_DATA ? off : ing->capacity;
	r = lseek(ing->holes_fd, ing->holes_off + (off_t)off, whence);
	if (r < 0 && errno == ENXIO)	/* no data after off */
		return ing->capacity;
	if (r < 0)			/* holes not known */
		return whence == SEEK_DATA ? off : ing->capacity;
	r -= ing->holes_off;
	return (uint64_t)r < ing->capacity ? (uint64_t)r : ing->capacity;
}

/*
 * Scan mode: every chunk but those in the holes of the device (an image
 * file, or the backing file of a loop device; other block devices report
 * no holes): a chunk without data is zero without being read, and is read
 * only where the base has data, so that it becomes a zero entry.  Cost
 * grows with the data, not the capacity.
 */
static int scan_todo(struct ingest *ing, struct plan *p)
{
	uint64_t cs = ing->chunk_size, cap = ing->capacity, i = 0;
	uint64_t data, hole;
	/* grown as chunks are found: memory follows the data */
	struct { uint64_t *v; size_t n, cap; } todo = { 0 };
	int err = 0;

	find_holes_source(ing);
	while (i < p->nchunks && err == 0) {
		data = seek_holes(ing, i * cs, SEEK_DATA);
		for (; i < p->nchunks && (i + 1) * cs <= data && err == 0; i++)
			if (ing->base != NULL &&
			    !codec_id_is_zero(chunk_map_id(ing->base, i)) &&
			    (err = ARRAY_GROW(&todo)) == 0)
				todo.v[todo.n++] = i;
		if (data >= cap)
			break;
		hole = seek_holes(ing, data, SEEK_HOLE);
		for (; i < p->nchunks && i * cs < hole && err == 0; i++)
			if ((err = ARRAY_GROW(&todo)) == 0)
				todo.v[todo.n++] = i;
	}
	p->todo = todo.v;
	p->n_todo = todo.n;
	return err;
}

/*
 * Under the volume's lock: syncs the index (the one listing of snapshots/
 * an ingest makes), checks the name, finds the base and asks the change
 * source which chunks to read.  Writes nothing.  With *existing set (see
 * check_name_free()) there is nothing to plan.
 */
static int plan_ingest(const struct ingest_conf *conf, struct ingest *ing,
		       struct plan *p, const char *predecessor,
		       char existing[CBTFS_UUID_LEN + 1])
{
	struct cbt_request req = { 0 };
	int err;

	if ((err = index_sync(conf->index, NULL)) != 0 ||
	    (err = check_name_free(conf, predecessor, existing)) != 0 ||
	    existing[0] != '\0' ||
	    (err = index_damaged_ids(conf->index, &p->damaged,
				     &p->n_damaged)) != 0)
		return err;
	ing->damaged = (const unsigned char (*)[CODEC_ID_LEN])p->damaged;
	ing->n_damaged = p->n_damaged;
	if (conf->base != NULL &&
	    (err = find_base(conf, &p->base, &p->base_map)) != 0)
		return err;
	if (p->base != NULL)
		snprintf(p->base_name, sizeof(p->base_name), "%s",
			 p->base->name);
	ing->base = p->base_map;
	if (conf->changes->ops->get_ranges != NULL) {
		req.device_size = ing->capacity;
		req.has_base = p->base != NULL;
		req.base_name = p->base ? p->base->name : NULL;
		req.base_handle = p->base && p->base->csi_handle[0]
					  ? p->base->csi_handle : NULL;
		req.interrupted = conf->interrupted;
		err = conf->changes->ops->get_ranges(conf->changes, &req,
						     &p->ans);
		if (err == 0)
			err = take_answer(conf, &p->ans, &ing->capacity);
		if (err == 0)
			err = cbt_ranges_to_chunks(&p->ans.ranges,
						   ing->chunk_size, &p->todo,
						   &p->n_todo);
		if (err != 0)
			return err;
		if (p->ans.full && p->base != NULL) {
			/* unreported chunks are zero, not the base's */
			chunk_map_free(p->base_map);
			manifest_free(p->base);
			p->base_map = NULL;
			p->base = NULL;
			ing->base = NULL;
		}
	}
	p->nchunks = (ing->capacity + ing->chunk_size - 1) / ing->chunk_size;
	if (conf->changes->ops->get_ranges == NULL &&
	    (err = scan_todo(ing, p)) != 0)
		return err;
	if (ing->base != NULL &&
	    (err = add_forced_chunks(ing, &p->todo, &p->n_todo)) != 0)
		return err;
	ing->todo = p->todo;
	ing->n_todo = p->n_todo;
	ing->verdict = calloc(p->n_todo ? p->n_todo : 1, 1);
	ing->ids = calloc(p->n_todo ? p->n_todo : 1, CODEC_ID_LEN);
	if (ing->verdict == NULL || ing->ids == NULL)
		return ENOMEM;
	return 0;
}

/* Writes the manifest (the commit point) and records it in the index. */
static int commit(struct ingest *ing, struct plan *p, struct repo_lock *lock,
		  struct ingest_result *res)
{
	const struct ingest_conf *conf = ing->conf;
	struct manifest m = { 0 };
	int err;

	if ((err = build_manifest(ing, p->base, &m)) != 0)
		return err;
	if (m.csi_driver[0] == '\0' && p->ans.csi_driver != NULL)
		m.csi_driver = (char *)p->ans.csi_driver;
	if (m.csi_handle[0] == '\0' && p->ans.csi_handle != NULL)
		m.csi_handle = (char *)p->ans.csi_handle;
	if (conf->interrupted != NULL && *conf->interrupted) {
		log_error("interrupted: no snapshot was committed");
		err = EINTR;
	}
	if (err == 0)
		err = repo_lock_confirm(lock);
	if (err == 0)
		err = repo_put_manifest(conf->repo, &m, &res->manifest_bytes);
	if (err == 0 && index_add_manifest(conf->index, &m) != 0)
		log_warn("snapshot committed, but the local index could not "
			 "record it; the next sync or 'cbtfs-repo reindex' "
			 "will");
	if (err == 0)
		snprintf(res->id, sizeof(res->id), "%s", m.id);
	free(m.entries);
	return err;
}

/* One attempt: plan, lock, run the workers, commit. */
static int ingest_once(const struct ingest_conf *conf,
		       struct ingest_result *res)
{
	struct plan p = { 0 };
	struct ingest ing = { 0 };
	struct repo_lock *lock = NULL;
	char existing[CBTFS_UUID_LEN + 1] = "";
	struct repo_lock_request req = { conf->volume, conf->name,
					 ing.manifest_id, conf->interrupted };
	struct repo_lock_found found = { 0 };
	double start = now_seconds();
	int err;

	memset(res, 0, sizeof(*res));
	ing.fd = -1;
	ing.holes_fd = -1;
	pthread_mutex_init(&ing.lock, NULL);
	ing.conf = conf;
	ing.chunk_size = conf->repo->chunk_size;
	uuid_new(ing.manifest_id);	/* named in the lock record */

	/* 1. check every input before writing anything */
	if ((err = repo_check_volume_name(conf->volume)) != 0 ||
	    (err = repo_check_snapshot_name(conf->name)) != 0 ||
	    (conf->base && (err = repo_check_snapshot_name(conf->base)) != 0))
		goto out;
	if ((err = open_device(conf->device, &ing.fd, &ing.capacity)) != 0)
		goto out;

	/*
	 * 2. lock the volume, then read the repository: what is checked
	 * under the lock (the name is free, the base is there) stays so
	 * until the commit.  A plan that fails releases the lock, leaving
	 * the repository as it was.
	 */
	if ((err = repo_lock_volume(conf->repo, &req, &lock, &found)) != 0 ||
	    (err = plan_ingest(conf, &ing, &p, found.predecessor,
			       existing)) != 0)
		goto out;
	if (existing[0] != '\0') {
		log_info("snapshot '%s' of volume '%s' was committed by an "
			 "earlier ingest that was stopped before it finished; "
			 "nothing to do", conf->name, conf->volume);
		snprintf(res->id, sizeof(res->id), "%s", existing);
		res->already_committed = true;
		goto out;
	}
	ing.check_store = found.leftovers;
	if (found.leftovers)
		log_info("looking in the repository for chunks an earlier "
			 "ingest of volume '%s' stored before it stopped",
			 conf->volume);

	/* 3. chunks, then the manifest, then the index */
	err = run_workers(&ing, conf->jobs ? conf->jobs : 1, conf->progress);
	if (err == 0)
		err = commit(&ing, &p, lock, res);
out:
	/* what was done so far, also for a run that failed (metrics) */
	res->capacity = ing.capacity;
	res->full_fallback = p.ans.full && p.base_name[0] != '\0';
	if (!res->full_fallback)
		snprintf(res->base, sizeof(res->base), "%s", p.base_name);
	res->stats = ing.stats;
	res->chunks_total = p.nchunks;
	res->chunks_healed = ing.chunks_healed;
	res->chunks_found = ing.chunks_found;
	if (err == ENOMEM)
		log_error("out of memory (a volume of %" PRIu64 " bytes in "
			  "chunks of %" PRIu32 ")",
			  ing.capacity, ing.chunk_size);
	res->seconds = now_seconds() - start;
	store_get_stats(conf->repo->store, &res->store);
	/* a run that did not commit tells the next one of what it stored,
	 * and of what stopped runs before it had stored */
	repo_unlock(lock, err == 0 || (!ing.uploaded && !found.leftovers));
	if (ing.holes_fd >= 0 && ing.holes_fd != ing.fd)
		close(ing.holes_fd);
	if (ing.fd >= 0)
		close(ing.fd);
	free(ing.verdict);
	free(ing.ids);
	free(ing.claimed.slot);
	plan_free(&p);
	pthread_mutex_destroy(&ing.lock);
	return err;
}

int ingest_run(const struct ingest_conf *conf, struct ingest_result *res)
{
	int err = ingest_once(conf, res);

	if (err != EUCLEAN)
		return err;
	/* nothing was committed: rebuild the cache and start again */
	log_warn("rebuilding the damaged local index %s from the repository, "
		 "then starting again", index_path(conf->index));
	if ((err = index_rebuild(conf->index)) != 0)
		return err;
	return ingest_once(conf, res);
}
