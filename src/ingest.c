/*
 * Ingest: see ingest.h.
 *
 * Work distribution: the chunk indices to read form one array; workers take
 * the next position from a shared cursor, so each chunk is handled by
 * exactly one worker, and write their verdict into that position of the
 * result arrays.  The manifest is assembled from those arrays in order once
 * every worker has finished.
 *
 * Locking: ing->lock guards the cursor, the statistics, the set of chunk
 * ids claimed by this run, the error and the count of running workers;
 * ing->cond is signalled when a worker finishes.  Workers never hold the
 * lock during I/O.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ingest.h"

enum verdict { V_UNCHANGED = 0, V_ENTRY = 1 };

/* Open-addressing set of chunk ids claimed for upload by this run. */
struct claim_set {
	unsigned char (*slot)[CODEC_ID_LEN];
	size_t cap, n;
};

struct ingest {
	const struct ingest_conf *conf;
	int fd;
	uint64_t capacity;
	uint32_t chunk_size;
	const struct chunk_map *base;	/* NULL without a base */
	const uint64_t *todo;		/* chunk indices to read */
	size_t n_todo;
	unsigned char *verdict;		/* per todo position */
	unsigned char (*ids)[CODEC_ID_LEN];

	pthread_mutex_t lock;
	pthread_cond_t cond;		/* a worker finished */
	size_t next;			/* cursor into todo */
	size_t done;
	unsigned running;
	int err;			/* first error, stops everybody */
	struct manifest_stats stats;
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
	/* ids are SHA-256 output: their first bytes are a fine hash */
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

/* Handles the chunk at todo position k. */
static int process_chunk(struct ingest *ing, size_t k, unsigned char *buf)
{
	const struct ingest_conf *conf = ing->conf;
	uint64_t idx = ing->todo[k], nread = 0, stored = 0;
	unsigned char id[CODEC_ID_LEN];
	const unsigned char *base_id = codec_zero_id;
	bool zero, claimed = false, exists = false;
	int err;

	if ((err = read_chunk(ing, idx, buf, &nread)) != 0)
		return err;
	zero = codec_is_zero(buf, ing->chunk_size);
	if (zero)
		memset(id, 0, sizeof(id));
	else
		codec_chunk_id(buf, ing->chunk_size, id);
	if (ing->base != NULL && idx < ing->base->nchunks)
		base_id = ing->base->ids[idx];

	pthread_mutex_lock(&ing->lock);
	ing->stats.bytes_read += nread;
	ing->stats.chunks_read++;
	if (zero)
		ing->stats.chunks_zero++;
	if (memcmp(id, base_id, CODEC_ID_LEN) == 0) {
		pthread_mutex_unlock(&ing->lock);
		return 0;	/* same as the base: no entry */
	}
	ing->verdict[k] = V_ENTRY;
	memcpy(ing->ids[k], id, CODEC_ID_LEN);
	ing->stats.chunks_changed++;
	if (!zero)
		err = claim_set_add(&ing->claimed, id, &claimed);
	if (!zero && !claimed && err == 0)
		ing->stats.chunks_reused++;	/* another worker has it */
	pthread_mutex_unlock(&ing->lock);
	if (zero || !claimed || err != 0)
		return err;

	/*
	 * The index was synced before the workers started, so it knows every
	 * chunk a committed snapshot uses, whichever host wrote it; asking the
	 * store as well would cost a request per chunk.  What it does not
	 * know (chunks of failed ingests) is uploaded again, harmlessly.
	 */
	err = index_chunk_known(conf->index, id, &exists);
	if (err == 0 && !exists)
		err = repo_put_chunk(conf->repo, id, buf, &stored);
	if (err != 0)
		return err;

	pthread_mutex_lock(&ing->lock);
	if (exists) {
		ing->stats.chunks_reused++;
	} else {
		ing->stats.chunks_new++;
		ing->stats.bytes_stored += stored;
	}
	pthread_mutex_unlock(&ing->lock);
	return 0;
}

static void *worker(void *arg)
{
	struct ingest *ing = arg;
	unsigned char *buf = malloc(ing->chunk_size);
	int err = buf == NULL ? ENOMEM : 0;

	for (;;) {
		size_t k;

		pthread_mutex_lock(&ing->lock);
		if (err != 0 && ing->err == 0)
			ing->err = err;
		if (ing->err == 0 && ing->conf->interrupted != NULL &&
		    *ing->conf->interrupted)
			ing->err = EINTR;
		if (ing->err != 0 || ing->next == ing->n_todo) {
			ing->running--;
			pthread_cond_signal(&ing->cond);
			pthread_mutex_unlock(&ing->lock);
			break;
		}
		k = ing->next++;
		pthread_mutex_unlock(&ing->lock);

		err = process_chunk(ing, k, buf);

		pthread_mutex_lock(&ing->lock);
		ing->done++;
		pthread_mutex_unlock(&ing->lock);
	}
	free(buf);
	return NULL;
}

static void draw_progress(struct ingest *ing, double start, bool final)
{
	double secs = now_seconds() - start;
	double pct = ing->n_todo ? 100.0 * ing->done / ing->n_todo : 100.0;

	fprintf(stderr, "\r%5.1f%%  %" PRIu64 "/%zu chunks  read %s  "
		"%.1f MB/s  new %" PRIu64 "  ", pct, (uint64_t)ing->done,
		ing->n_todo, HUMAN(ing->stats.bytes_read),
		secs > 0 ? ing->stats.bytes_read / secs / 1e6 : 0.0,
		ing->stats.chunks_new);
	if (final)
		fputc('\n', stderr);
}

/* Runs the workers over ing->todo; returns the first error. */
static int run_workers(struct ingest *ing, unsigned jobs, bool progress)
{
	pthread_t *tids = calloc(jobs, sizeof(*tids));
	double start = now_seconds();
	unsigned i, started = 0;
	int err = 0;

	if (tids == NULL)
		return ENOMEM;
	pthread_mutex_lock(&ing->lock);
	for (i = 0; i < jobs; i++) {
		if (pthread_create(&tids[i], NULL, worker, ing) != 0)
			break;
		started++;
		ing->running++;
	}
	if (started == 0) {
		ing->err = EAGAIN;
		log_error("cannot start worker threads");
	}
	while (ing->running > 0) {
		if (progress) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 500000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&ing->cond, &ing->lock, &ts);
			draw_progress(ing, start, false);
		} else {
			pthread_cond_wait(&ing->cond, &ing->lock);
		}
	}
	if (progress)
		draw_progress(ing, start, true);
	err = ing->err;
	if (err == EINTR)
		log_error("interrupted: no snapshot was committed");
	pthread_mutex_unlock(&ing->lock);
	for (i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	free(tids);
	return err;
}

/* Opens the device and finds its size. */
static int open_device(const char *path, int *fdp, uint64_t *sizep)
{
	struct stat sb;
	int fd, err;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = errno;
		log_error("device %s: cannot open: %s", path, ERRSTR(err));
		return err;
	}
	if (fstat(fd, &sb) != 0) {
		err = errno;
		log_error("device %s: %s", path, ERRSTR(err));
		close(fd);
		return err;
	}
	if (S_ISBLK(sb.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, sizep) != 0) {
			err = errno;
			log_error("device %s: cannot get size: %s", path,
				  ERRSTR(err));
			close(fd);
			return err;
		}
	} else if (S_ISREG(sb.st_mode)) {
		*sizep = (uint64_t)sb.st_size;
	} else {
		log_error("device %s: not a block device or regular file",
			  path);
		close(fd);
		return EINVAL;
	}
	if (*sizep == 0) {
		log_error("device %s: is empty (size 0)", path);
		close(fd);
		return EINVAL;
	}
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	*fdp = fd;
	return 0;
}

static int check_name_free(const struct ingest_conf *conf)
{
	struct manifest *m;
	int err;

	err = index_find_snapshot(conf->index, conf->volume, conf->name, &m);
	if (err == 0) {
		log_error("snapshot '%s' of volume '%s' already exists in the "
			  "repository (id %s); choose another name", conf->name,
			  conf->volume, m->id);
		manifest_free(m);
		return EEXIST;
	}
	return err == ENOENT ? 0 : err;
}

static int build_manifest(struct ingest *ing, const struct manifest *base,
			  struct manifest *m)
{
	const struct ingest_conf *conf = ing->conf;
	size_t k, n = 0;

	uuid_new(m->id);
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
	m->entries = calloc(ing->stats.chunks_changed ? ing->stats.chunks_changed
						      : 1,
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

/*
 * The base's last chunk, when partial, holds bytes past the base's capacity
 * that are not part of it (they read as zero only up to the capacity).  A
 * volume that grew past them must read that chunk again from the device,
 * whatever the change source reported.  Inserts its index into the sorted
 * todo list if missing.
 */
static int add_boundary_chunk(const struct chunk_map *base, uint64_t capacity,
			      uint64_t **todop, size_t *np)
{
	uint64_t b = base->capacity / base->chunk_size, *p;
	size_t pos = 0;

	if (base->capacity % base->chunk_size == 0 || capacity <= base->capacity)
		return 0;
	while (pos < *np && (*todop)[pos] < b)
		pos++;
	if (pos < *np && (*todop)[pos] == b)
		return 0;
	p = realloc(*todop, (*np + 1) * sizeof(*p));
	if (p == NULL)
		return ENOMEM;
	memmove(p + pos + 1, p + pos, (*np - pos) * sizeof(*p));
	p[pos] = b;
	*todop = p;
	(*np)++;
	return 0;
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
			  "reports a volume of %" PRIu64 " bytes: --device must "
			  "hold the whole snapshot", conf->device, *capacity,
			  conf->changes->ops->name, ans->capacity);
		return EINVAL;
	}
	log_info("device %s has %" PRIu64 " bytes; backing up the volume's "
		 "%" PRIu64 " reported by the %s source", conf->device,
		 *capacity, ans->capacity, conf->changes->ops->name);
	*capacity = ans->capacity;
	return 0;
}

int ingest_run(const struct ingest_conf *conf, struct ingest_result *res)
{
	struct cbt_request req = { 0 };
	struct cbt_answer ans = { 0 };
	struct manifest *base = NULL, m = { 0 };
	struct chunk_map *base_map = NULL;
	struct ingest ing = { 0 };
	uint64_t *todo = NULL, nchunks;
	size_t n_todo = 0, k;
	char lock_id[CBTFS_UUID_LEN + 1] = "";
	double start = now_seconds();
	int err;

	memset(res, 0, sizeof(*res));
	ing.fd = -1;
	pthread_mutex_init(&ing.lock, NULL);
	pthread_cond_init(&ing.cond, NULL);
	ing.conf = conf;
	ing.chunk_size = conf->repo->chunk_size;

	/* 1. check every input before writing anything */
	if ((err = repo_check_volume_name(conf->volume)) != 0 ||
	    (err = repo_check_snapshot_name(conf->name)) != 0 ||
	    (conf->base && (err = repo_check_snapshot_name(conf->base)) != 0))
		goto out;
	if ((err = open_device(conf->device, &ing.fd, &ing.capacity)) != 0)
		goto out;
	if ((err = index_sync(conf->index, NULL)) != 0 ||
	    (err = check_name_free(conf)) != 0)
		goto out;
	if (conf->base != NULL) {
		err = index_find_snapshot(conf->index, conf->volume, conf->base,
					  &base);
		if (err == ENOENT)
			log_error("base snapshot '%s' of volume '%s' is not in "
				  "the repository; 'cbtfs-repo snapshots REPO "
				  "--volume %s' lists the snapshots", conf->base,
				  conf->volume, conf->volume);
		if (err != 0)
			goto out;
		err = index_resolve_chain(conf->index, base->id, &base_map);
		if (err == ENOENT)
			log_error("base snapshot '%s' vanished from the "
				  "repository meanwhile", conf->base);
		if (err != 0)
			goto out;
		ing.base = base_map;
	}
	if (conf->changes->ops->get_ranges != NULL) {
		req.device_size = ing.capacity;
		req.has_base = base != NULL;
		req.base_handle = base && base->csi_handle[0] ? base->csi_handle
							     : NULL;
		req.interrupted = conf->interrupted;
		err = conf->changes->ops->get_ranges(conf->changes, &req, &ans);
		if (err == 0)
			err = take_answer(conf, &ans, &ing.capacity);
		if (err == 0)
			err = cbt_ranges_to_chunks(&ans.ranges, ing.chunk_size,
						   &todo, &n_todo);
		if (err != 0)
			goto out;
		if (ans.full && base != NULL) {
			/* unreported chunks are zero, not the base's */
			chunk_map_free(base_map);
			manifest_free(base);
			base_map = NULL;
			base = NULL;
			ing.base = NULL;
		}
	}
	nchunks = (ing.capacity + ing.chunk_size - 1) / ing.chunk_size;
	if (conf->changes->ops->get_ranges == NULL) {
		todo = malloc((nchunks ? nchunks : 1) * sizeof(*todo));
		if (todo == NULL) {
			err = ENOMEM;
			goto out;
		}
		for (k = 0; k < nchunks; k++)
			todo[k] = k;
		n_todo = nchunks;
	}
	if (base_map != NULL && (err = add_boundary_chunk(base_map, ing.capacity,
							  &todo, &n_todo)) != 0)
		goto out;
	ing.todo = todo;
	ing.n_todo = n_todo;
	ing.verdict = calloc(n_todo ? n_todo : 1, 1);
	ing.ids = calloc(n_todo ? n_todo : 1, CODEC_ID_LEN);
	if (ing.verdict == NULL || ing.ids == NULL) {
		err = ENOMEM;
		goto out;
	}

	/* 2. lock the volume; the name may have been taken meanwhile */
	if ((err = repo_lock_volume(conf->repo, conf->volume, lock_id)) != 0) {
		lock_id[0] = '\0';
		goto out;
	}
	if ((err = index_sync(conf->index, NULL)) != 0 ||
	    (err = check_name_free(conf)) != 0)
		goto out;

	/* 3. chunks, then the manifest, then the index */
	err = run_workers(&ing, conf->jobs ? conf->jobs : 1, conf->progress);
	if (err != 0)
		goto out;
	if ((err = build_manifest(&ing, base, &m)) != 0)
		goto out;
	if (m.csi_driver[0] == '\0' && ans.csi_driver != NULL)
		m.csi_driver = (char *)ans.csi_driver;
	if (m.csi_handle[0] == '\0' && ans.csi_handle != NULL)
		m.csi_handle = (char *)ans.csi_handle;
	if (conf->interrupted != NULL && *conf->interrupted) {
		log_error("interrupted: no snapshot was committed");
		err = EINTR;
		goto out;
	}
	if ((err = repo_put_manifest(conf->repo, &m, &res->manifest_bytes)) !=
	    0)
		goto out;
	err = index_add_manifest(conf->index, &m);
	if (err != 0) {
		log_warn("snapshot committed, but the local index could not "
			 "record it; 'cbtfs-repo reindex' will");
		err = 0;
	}
	snprintf(res->id, sizeof(res->id), "%s", m.id);
	res->capacity = ing.capacity;
	res->full_fallback = ans.full && conf->base != NULL;
	res->stats = ing.stats;
	res->chunks_total = nchunks;
out:
	if (err == ENOMEM)
		log_error("out of memory (a volume of %" PRIu64 " bytes in "
			  "chunks of %" PRIu32 ")", ing.capacity, ing.chunk_size);
	res->seconds = now_seconds() - start;
	store_get_stats(conf->repo->store, &res->store);
	if (lock_id[0] != '\0')
		repo_unlock(conf->repo, lock_id);
	if (ing.fd >= 0)
		close(ing.fd);
	free(m.entries);
	free(ing.verdict);
	free(ing.ids);
	free(ing.claimed.slot);
	free(todo);
	cbt_ranges_free(&ans.ranges);
	chunk_map_free(base_map);
	manifest_free(base);
	pthread_mutex_destroy(&ing.lock);
	pthread_cond_destroy(&ing.cond);
	return err;
}
