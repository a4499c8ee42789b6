/*
 * Restore: see restore.h.
 *
 * Plan, then act: the plan walks the image's chunks once (with the map of
 * `from` beside it for an incremental restore) and lists the chunks to
 * fetch and write and the runs of chunks to zero; everything else is
 * skipped.  Zeroing comes first, then the pool fetches and writes, then
 * fdatasync, then the optional read-back.  To stdout there is no plan:
 * every chunk is written in order.
 *
 * Locking: rs->lock guards the counters and, to stdout, the turn
 * (next_out) and the first error; tasks fetch without it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "array.h"
#include "mountinfo.h"
#include "pool.h"
#include "progress.h"
#include "restore.h"

struct target {
	const char *path;	/* for messages; "stdout" for "-" */
	int fd;
	bool is_stdout, is_blk, created, zeroed;
	bool durable;		/* can be flushed (not a pipe) */
	char partial[4096];	/* a new file's name until published, or
				 * "" (an O_TMPFILE has none) */
	uint64_t size;
};

/* How far a restore got, for the message that ends a failed one. */
enum stage { NOTHING_WRITTEN, WRITING, WRITTEN };

/* A chunk to fetch and write: its index and id (in the map). */
struct write_item {
	uint64_t idx;
	const unsigned char *id;
};

/* Chunks first..first+count-1, to be zeroed. */
struct zero_run {
	uint64_t first, count;
};

struct restore {
	const struct restore_conf *conf;
	struct target t;
	const struct chunk_map *map;
	const unsigned char *zeros;	/* chunk_size zero bytes */
	struct { struct write_item *v; size_t n, cap; } writes;
	struct { struct zero_run *v; size_t n, cap; } zero_runs;
	/* for --verify: the zero runs cut in pieces of VERIFY_PIECE */
	struct { struct zero_run *v; size_t n, cap; } zero_pieces;
	struct progress pr;
	const char *phase;		/* "zeroing", "writing", "verifying" */
	uint64_t phase_total;		/* items of the phase */
	uint64_t phase_bytes0;		/* bytes done before it began */
	enum stage stage;
	pthread_mutex_t lock;
	pthread_cond_t turn;		/* to stdout: next_out moved */
	uint64_t next_out;
	int err;			/* the first task error */
	uint64_t verified_bytes;	/* read back so far */
	struct restore_report *rep;
};

/* ---- the target ------------------------------------------------------- */

static int open_block_device(const struct restore_conf *conf,
			     struct target *t, const struct stat *sb)
{
	struct mount_entry m;
	int ro = 0, err;

	if (mountinfo_of_dev(sb->st_rdev, &m)) {
		log_error("%s is mounted on %s: unmount it first (restore "
			  "overwrites the whole device)", t->path, m.dir);
		return EBUSY;
	}
	/* O_EXCL: the kernel refuses a device that is mounted or held */
	t->fd = open(t->path, (conf->verify ? O_RDWR : O_WRONLY) | O_EXCL |
			      O_CLOEXEC);
	if (t->fd < 0) {
		err = errno;
		if (err == EBUSY)
			log_error("%s is in use (mounted, a partition of it "
				  "mounted, or held by device-mapper, RAID "
				  "or another program: see lsblk and "
				  "findmnt); restore needs it to itself",
				  t->path);
		else
			log_error("cannot open %s for writing: %s", t->path,
				  ERRSTR(err));
		return err;
	}
	if (ioctl(t->fd, BLKROGET, &ro) == 0 && ro) {
		log_error("%s is a read-only device", t->path);
		return EROFS;
	}
	if (ioctl(t->fd, BLKGETSIZE64, &t->size) != 0) {
		err = errno;
		log_error("cannot read the size of %s: %s", t->path,
			  ERRSTR(err));
		return err;
	}
	t->is_blk = true;
	return 0;
}

/*
 * Creates the target file, of capacity bytes, all holes, without a name
 * (O_TMPFILE in its directory) until publish_file() links it, so that a
 * restore that is killed leaves nothing that looks restored; where the
 * file system has no O_TMPFILE, under a hidden partial name renamed at
 * the end.
 */
static int create_file(const struct restore_conf *conf, struct target *t,
		       uint64_t capacity)
{
	char dir[4096];
	const char *slash = strrchr(t->path, '/');
	int err;

	if (conf->from != NULL) {
		log_error("%s does not exist, but --from says it holds "
			  "snapshot %s: name the target that does, or leave "
			  "out --from", t->path, conf->from);
		return EINVAL;
	}
	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s",
			 slash == t->path ? 1 : (int)(slash - t->path),
			 t->path);
	t->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (t->fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR ||
			  errno == EINVAL)) {
		int n = snprintf(t->partial, sizeof(t->partial),
				 "%s/.%s.cbtfs-partial", dir,
				 slash ? slash + 1 : t->path);

		errno = ENAMETOOLONG;
		if (n > 0 && (size_t)n < sizeof(t->partial))
			t->fd = open(t->partial, O_RDWR | O_CREAT | O_TRUNC |
						 O_CLOEXEC, 0600);
	}
	if (t->fd < 0) {
		err = errno;
		log_error("cannot create %s: %s", t->path, ERRSTR(err));
		t->partial[0] = '\0';
		return err;
	}
	t->created = true;
	t->zeroed = true;
	if (ftruncate(t->fd, (off_t)capacity) != 0) {
		err = errno;
		log_error("cannot make %s %" PRIu64 " bytes long: %s",
			  t->path, capacity, ERRSTR(err));
		return err;
	}
	t->size = capacity;
	return 0;
}

/*
 * Renames from to to unless to exists: 0 or an errno (EEXIST when it
 * does).  File systems without RENAME_NOREPLACE (FUSE file systems that
 * lack rename2, NFS) get a hard link and an unlink, and those without hard
 * links too (vfat through FUSE) a check and a plain rename, which a file
 * created at that very moment could lose to.
 */
static int rename_noreplace(const char *from, const char *to)
{
	struct stat sb;

	if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return errno;
	if (link(from, to) == 0) {
		if (unlink(from) != 0)
			log_warn("cannot remove %s (%s), a second name of "
				 "%s: remove it by hand", from, ERRSTR(errno),
				 to);
		return 0;
	}
	if (errno != EPERM && errno != EOPNOTSUPP && errno != ENOSYS)
		return errno;
	if (lstat(to, &sb) == 0)
		return EEXIST;
	return rename(from, to) == 0 ? 0 : errno;
}

/* Gives the new file, complete and flushed, its name (never replacing a
 * file that appeared there meanwhile). */
static int publish_file(struct target *t)
{
	char proc[64];
	int err = 0;

	if (t->partial[0] != '\0') {
		err = rename_noreplace(t->partial, t->path);
		if (err == 0)
			t->partial[0] = '\0';
	} else {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", t->fd);
		if (linkat(AT_FDCWD, proc, AT_FDCWD, t->path,
			   AT_SYMLINK_FOLLOW) != 0)
			err = errno;
	}
	if (err != 0)
		log_error("cannot name the restored file %s: %s%s", t->path,
			  ERRSTR(err), err == EEXIST ? " (a file of that "
			  "name appeared meanwhile; it was left alone)" : "");
	return err;
}

/*
 * Opens the target for an image of capacity bytes, refusing what cannot
 * take it.  0 or an errno (logged); t->fd may be open either way.
 */
static int open_target(const struct restore_conf *conf, struct target *t,
		       uint64_t capacity)
{
	struct stat sb;
	int err;

	t->fd = -1;
	t->path = conf->target;
	t->zeroed = conf->target_zeroed;
	if (strcmp(conf->target, "-") == 0) {
		t->path = "stdout";
		t->is_stdout = true;
		t->fd = STDOUT_FILENO;
		if (isatty(t->fd)) {
			log_error("stdout is a terminal: redirect it to a "
				  "file or a device, or give --to PATH");
			return EINVAL;
		}
		t->durable = fstat(t->fd, &sb) == 0 &&
			     (S_ISREG(sb.st_mode) || S_ISBLK(sb.st_mode));
		return 0;
	}
	t->durable = true;
	if (stat(t->path, &sb) != 0) {
		err = errno;
		if (err == ENOENT)
			return create_file(conf, t, capacity);
		log_error("cannot use %s: %s", t->path, ERRSTR(err));
		return err;
	}
	if (S_ISBLK(sb.st_mode)) {
		err = open_block_device(conf, t, &sb);
	} else if (S_ISREG(sb.st_mode)) {
		t->fd = open(t->path, (conf->verify ? O_RDWR : O_WRONLY) |
				      O_CLOEXEC | O_NOFOLLOW);
		err = t->fd < 0 ? errno : 0;
		if (err != 0)
			log_error("cannot open %s for writing: %s", t->path,
				  ERRSTR(err));
		/* what was opened, not what was looked at */
		else if (fstat(t->fd, &sb) != 0 || !S_ISREG(sb.st_mode))
			err = EAGAIN;
		if (err == EAGAIN)
			log_error("%s changed while restore opened it: try "
				  "again", t->path);
		t->size = (uint64_t)sb.st_size;
	} else {
		log_error("%s is neither a block device nor a regular file",
			  t->path);
		return EINVAL;
	}
	if (err != 0)
		return err;
	if (t->size < capacity) {
		log_error("%s holds %" PRIu64 " bytes (%s), less than the "
			  "snapshot's %" PRIu64 " (%s): give a target at "
			  "least that large%s", t->path, t->size,
			  HUMAN(t->size), capacity, HUMAN(capacity),
			  t->is_blk ? "" : ", or a path that does not exist "
					   "(restore creates the file)");
		return EINVAL;
	}
	return 0;
}

/* Closes the target; a file this restore created is removed unless
 * keep. */
static void close_target(struct target *t, bool keep)
{
	if (t->fd >= 0 && !t->is_stdout)
		close(t->fd);
	t->fd = -1;
	if (t->partial[0] != '\0' && !keep)
		unlink(t->partial);
}

/*
 * Zeroes len bytes at off: BLKZEROOUT on a block device, a punched hole
 * (or a zeroed range) in a file, and written zeros where neither works.
 */
static int zero_range(struct restore *rs, uint64_t off, uint64_t len)
{
	struct target *t = &rs->t;
	uint32_t cs = rs->map->chunk_size;
	int err;

	if (t->is_blk && off % 512 == 0 && len % 512 == 0) {
		uint64_t range[2] = { off, len };

		if (ioctl(t->fd, BLKZEROOUT, range) == 0)
			return 0;
	} else if (!t->is_blk) {
		if (fallocate(t->fd, FALLOC_FL_PUNCH_HOLE |
				     FALLOC_FL_KEEP_SIZE,
			      (off_t)off, (off_t)len) == 0 ||
		    fallocate(t->fd, FALLOC_FL_ZERO_RANGE, (off_t)off,
			      (off_t)len) == 0)
			return 0;
	}
	while (len > 0) {
		size_t n = len < cs ? (size_t)len : cs;

		if ((err = pwrite_full(t->fd, rs->zeros, n, off)) != 0)
			return err;
		off += n;
		len -= n;
	}
	return 0;
}

/* ---- fetching and writing --------------------------------------------- */

/* Bytes of chunk idx within the image (the last one may be short). */
static size_t chunk_len(const struct restore *rs, uint64_t idx)
{
	uint64_t off = idx * rs->map->chunk_size;
	uint64_t left = rs->map->capacity - off;

	return left < rs->map->chunk_size ? (size_t)left
					  : rs->map->chunk_size;
}

/* Says what a chunk that cannot be fetched damages, and records it. */
static void chunk_failed(struct restore *rs, uint64_t idx,
			 const unsigned char *id, int err)
{
	const struct restore_conf *conf = rs->conf;
	uint64_t off = idx * rs->map->chunk_size;

	if (err == EBADMSG || err == ENOENT) {
		index_mark_damaged(conf->index, id,
				   err == ENOENT ? "missing" : "corrupt");
		log_error("bytes %" PRIu64 "-%" PRIu64 " of %s@%s cannot be "
			  "restored: their chunk is damaged, and recorded so "
			  "(an ingest of the same data repairs it; "
			  "'cbtfs-repo verify REPO' lists what is damaged)",
			  off, off + chunk_len(rs, idx) - 1, conf->volume,
			  conf->snapshot);
	} else if (err != ENOMEM) {
		log_error("bytes %" PRIu64 "-%" PRIu64 " of %s@%s cannot be "
			  "fetched: %s", off, off + chunk_len(rs, idx) - 1,
			  conf->volume, conf->snapshot, ERRSTR(err));
	}
}

/* Keeps the first error of a task. */
static void set_error(struct restore *rs, int err)
{
	pthread_mutex_lock(&rs->lock);
	if (rs->err == 0)
		rs->err = err;
	pthread_cond_broadcast(&rs->turn);
	pthread_mutex_unlock(&rs->lock);
}

/* pool_task: fetches writes.v[k] and writes it where it belongs. */
static int write_task(void *arg, size_t k, struct buf *scratch)
{
	struct restore *rs = arg;
	const struct write_item *w = &rs->writes.v[k];
	size_t off = 0, len = chunk_len(rs, w->idx);
	int err;

	err = repo_get_chunk(rs->conf->repo, w->id, scratch, &off);
	if (err != 0) {
		chunk_failed(rs, w->idx, w->id, err);
	} else {
		err = pwrite_full(rs->t.fd, scratch->data + off, len,
				 w->idx * rs->map->chunk_size);
		if (err != 0)
			log_error("cannot write to %s at byte %" PRIu64 ": %s",
				  rs->t.path, w->idx * rs->map->chunk_size,
				  ERRSTR(err));
	}
	if (err != 0) {
		set_error(rs, err);
		return err;
	}
	pthread_mutex_lock(&rs->lock);
	rs->rep->chunks_written++;
	rs->rep->written_bytes += len;
	pthread_mutex_unlock(&rs->lock);
	return 0;
}

/*
 * pool_task, to stdout: fetches chunk k, then waits for its turn and
 * writes it.  The pool hands out k in order, so the chunks before k are
 * all taken, and waiting cannot deadlock.
 */
static int stream_task(void *arg, size_t k, struct buf *scratch)
{
	struct restore *rs = arg;
	const unsigned char *id = chunk_map_id(rs->map, k), *data = rs->zeros;
	size_t off = 0, len = chunk_len(rs, k);
	bool zero = codec_id_is_zero(id);
	int err = 0;

	if (!zero) {
		err = repo_get_chunk(rs->conf->repo, id, scratch, &off);
		if (err != 0) {
			chunk_failed(rs, k, id, err);
			set_error(rs, err);
			return err;
		}
		data = scratch->data + off;
	}
	pthread_mutex_lock(&rs->lock);
	while (rs->next_out != k && rs->err == 0)
		pthread_cond_wait(&rs->turn, &rs->lock);
	if (rs->err != 0) {
		/* an earlier chunk failed: this one can never be written */
		pthread_mutex_unlock(&rs->lock);
		return ECANCELED;
	}
	err = write_full(rs->t.fd, data, len);
	if (err != 0) {
		log_error("cannot write to stdout at byte %" PRIu64 ": %s",
			  k * rs->map->chunk_size, err == EPIPE
			  ? "its reader stopped" : ERRSTR(err));
		rs->err = err;
	} else if (zero) {
		rs->rep->chunks_zeroed++;
		rs->rep->zeroed_bytes += len;
	} else {
		rs->rep->chunks_written++;
		rs->rep->written_bytes += len;
	}
	rs->next_out++;
	pthread_cond_broadcast(&rs->turn);
	pthread_mutex_unlock(&rs->lock);
	return err;
}

/* Bytes written, zeroed or read back so far; rs->lock held or no pool
 * running. */
static uint64_t bytes_done(const struct restore *rs)
{
	return rs->rep->written_bytes + rs->rep->zeroed_bytes +
	       rs->verified_bytes;
}

static void begin_phase(struct restore *rs, const char *phase,
			uint64_t total)
{
	rs->phase = phase;
	rs->phase_total = total;
	rs->phase_bytes0 = bytes_done(rs);
	progress_phase(&rs->pr);
}

/* pool_tick, and zero_runs(): the progress line; done counts items of
 * the phase (chunks). */
static void draw_progress(void *arg, size_t done, bool final)
{
	struct restore *rs = arg;
	double secs = now_seconds() - rs->pr.phase;
	uint64_t bytes, total = rs->phase_total;

	pthread_mutex_lock(&rs->lock);
	bytes = bytes_done(rs) - rs->phase_bytes0;
	pthread_mutex_unlock(&rs->lock);
	if (strcmp(rs->phase, "zeroing") == 0) {
		progress_show(&rs->pr, final, bytes, total,
			      "zeroing %s of %s", HUMAN(bytes),
			      HUMAN(total));
		return;
	}
	progress_show(&rs->pr, final, done, total,
		      "%s %.0f%% %zu/%" PRIu64 " chunks, %.0f MB/s",
		      rs->phase, total ? 100.0 * (double)done / (double)total
				       : 100.0,
		      done, total,
		      secs > 0 ? (double)bytes / secs / 1e6 : 0.0);
}

/* ---- the plan --------------------------------------------------------- */

static int add_zero(struct restore *rs, uint64_t idx)
{
	struct zero_run *last = rs->zero_runs.n
					? &rs->zero_runs.v[rs->zero_runs.n - 1]
					: NULL;
	int err;

	if (last != NULL && last->first + last->count == idx) {
		last->count++;
	} else {
		if ((err = ARRAY_GROW(&rs->zero_runs)) != 0)
			return err;
		rs->zero_runs.v[rs->zero_runs.n++] =
			(struct zero_run){ .first = idx, .count = 1 };
	}
	return 0;
}

/*
 * Walks the chunks once, beside from's map if given: a chunk the target
 * is known to hold already is skipped, a zero one is zeroed, any other
 * fetched and written.  The target holds from's chunks only where from
 * had whole chunks of the same geometry; past them nothing is known.
 */
static int make_plan(struct restore *rs, const struct chunk_map *from)
{
	const struct chunk_map *map = rs->map;
	uint64_t known_end = 0, i;
	size_t ka = 0, kb = 0;
	int err = 0;

	if (from != NULL)
		known_end = from->capacity == map->capacity
				    ? map->nchunks
				    : from->capacity / from->chunk_size;
	else if (rs->t.zeroed)
		known_end = map->nchunks;
	for (i = 0; err == 0 && i < map->nchunks; i++) {
		const unsigned char *id = codec_zero_id, *had = codec_zero_id;

		if (ka < map->n && map->v[ka].index == i)
			id = map->v[ka++].id;
		if (from != NULL) {
			while (kb < from->n && from->v[kb].index < i)
				kb++;
			if (kb < from->n && from->v[kb].index == i)
				had = from->v[kb].id;
		}
		if (i < known_end && memcmp(id, had, CODEC_ID_LEN) == 0) {
			rs->rep->chunks_skipped++;
		} else if (codec_id_is_zero(id)) {
			err = add_zero(rs, i);
		} else {
			err = ARRAY_GROW(&rs->writes);
			if (err == 0)
				rs->writes.v[rs->writes.n++] =
					(struct write_item){ i, id };
		}
	}
	return err;
}

#define ZERO_SLICE (1ull << 30)	/* bytes zeroed between checks */

/* Zeroes the planned runs, a slice at a time: interruptible, and drawn
 * as a phase of its own. */
static int zero_runs(struct restore *rs)
{
	uint32_t cs = rs->map->chunk_size;
	uint64_t total = 0, done = 0;
	size_t i;
	int err;

	for (i = 0; i < rs->zero_runs.n; i++)
		total += rs->zero_runs.v[i].count * cs;
	begin_phase(rs, "zeroing", total);
	for (i = 0; i < rs->zero_runs.n; i++) {
		const struct zero_run *z = &rs->zero_runs.v[i];
		uint64_t off = z->first * cs, end = off + z->count * cs;

		if (end > rs->map->capacity)
			end = rs->map->capacity;
		while (off < end) {
			uint64_t len = end - off < ZERO_SLICE ? end - off
							       : ZERO_SLICE;

			if (rs->conf->interrupted && *rs->conf->interrupted)
				return EINTR;
			rs->stage = WRITING;
			if ((err = zero_range(rs, off, len)) != 0) {
				log_error("cannot zero bytes %" PRIu64 "-%"
					  PRIu64 " of %s: %s", off,
					  off + len - 1, rs->t.path,
					  ERRSTR(err));
				return err;
			}
			rs->rep->zeroed_bytes += len;
			done += len;
			off += len;
			draw_progress(rs, (size_t)(done / cs), false);
		}
		rs->rep->chunks_zeroed += z->count;
	}
	return 0;
}

/* ---- read-back -------------------------------------------------------- */

#define VERIFY_PIECE 64	/* zero chunks read back by one task */

/* Checks that chunk idx of the target reads as id (a zero id: zeros);
 * scratch holds chunk_size bytes. */
static int check_chunk(struct restore *rs, uint64_t idx,
		       const unsigned char *id, unsigned char *scratch)
{
	uint32_t cs = rs->map->chunk_size;
	size_t len = chunk_len(rs, idx);
	unsigned char got_id[CODEC_ID_LEN];
	ssize_t got;
	bool good;
	int err;

	got = pread_full(rs->t.fd, scratch, len, idx * cs);
	if (got < 0 || (size_t)got < len) {
		err = got < 0 ? (int)-got : EIO;
		log_error("cannot read %s back at byte %" PRIu64 ": %s",
			  rs->t.path, idx * cs, got < 0 ? ERRSTR(err)
							: "it ends there");
		return err;
	}
	memset(scratch + len, 0, cs - len);
	if (codec_id_is_zero(id)) {
		good = codec_is_zero(scratch, cs);
	} else {
		if ((err = repo_chunk_id(rs->conf->repo, scratch,
					 got_id)) != 0)
			return err;
		good = memcmp(got_id, id, CODEC_ID_LEN) == 0;
	}
	if (!good) {
		log_error("verify: bytes %" PRIu64 "-%" PRIu64 " of %s do not "
			  "hold what was written to them (a failing device, "
			  "or another writer)", idx * cs, idx * cs + len - 1,
			  rs->t.path);
		return EIO;
	}
	pthread_mutex_lock(&rs->lock);
	rs->rep->chunks_verified++;
	rs->verified_bytes += len;
	pthread_mutex_unlock(&rs->lock);
	return 0;
}

/* pool_task: reads back written chunk k (k < writes.n), or a piece of
 * zeroed chunks, and checks it. */
static int verify_task(void *arg, size_t k, struct buf *scratch)
{
	struct restore *rs = arg;
	const struct zero_run *z;
	uint64_t i;
	int err = 0;

	if (buf_reserve(scratch, rs->map->chunk_size) != 0)
		return ENOMEM;
	if (k < rs->writes.n)
		return check_chunk(rs, rs->writes.v[k].idx,
				   rs->writes.v[k].id, scratch->data);
	z = &rs->zero_pieces.v[k - rs->writes.n];
	for (i = z->first; err == 0 && i < z->first + z->count; i++)
		err = check_chunk(rs, i, codec_zero_id, scratch->data);
	return err;
}

/* Cuts the zero runs in pieces of at most VERIFY_PIECE chunks. */
static int cut_zero_pieces(struct restore *rs)
{
	size_t i;
	int err;

	for (i = 0; i < rs->zero_runs.n; i++) {
		struct zero_run z = rs->zero_runs.v[i];

		while (z.count > 0) {
			uint64_t n = z.count < VERIFY_PIECE ? z.count
							    : VERIFY_PIECE;

			if ((err = ARRAY_GROW(&rs->zero_pieces)) != 0)
				return err;
			rs->zero_pieces.v[rs->zero_pieces.n++] =
				(struct zero_run){ z.first, n };
			z.first += n;
			z.count -= n;
		}
	}
	return 0;
}

static int read_back(struct restore *rs)
{
	struct pool_conf pc = {
		.jobs = rs->conf->jobs,
		.task = verify_task,
		.tick = rs->conf->progress ? draw_progress : NULL,
		.arg = rs,
		.stop = rs->conf->interrupted,
	};
	int err;

	if ((err = cut_zero_pieces(rs)) != 0)
		return err;
	pc.n = rs->writes.n + rs->zero_pieces.n;
	/* read the device, not what the page cache kept of the writes */
	posix_fadvise(rs->t.fd, 0, 0, POSIX_FADV_DONTNEED);
	if (rs->t.is_blk)
		ioctl(rs->t.fd, BLKFLSBUF, 0);	/* needs CAP_SYS_ADMIN */
	begin_phase(rs, "verifying", pc.n);
	return pool_run(&pc);
}

/* ---- the whole -------------------------------------------------------- */

/* Finds volume@name and resolves its map; ENOENT (logged) if absent. */
static int resolve(const struct restore_conf *conf, const char *name,
		   struct chunk_map **mapp)
{
	struct manifest *m = NULL;
	int err;

	err = index_find_snapshot(conf->index, conf->volume, name, &m);
	if (err == ENOENT)
		log_error("volume %s has no snapshot %s in the repository "
			  "('cbtfs-repo snapshots REPO --volume %s' lists "
			  "them)", conf->volume, name, conf->volume);
	if (err != 0)
		return err;
	err = index_resolve_chain(conf->index, m->id, NULL, mapp);
	manifest_free(m);
	return err;
}

static int write_image(struct restore *rs, struct chunk_map *from)
{
	const struct restore_conf *conf = rs->conf;
	struct pool_conf pc = {
		.jobs = conf->jobs,
		.tick = conf->progress ? draw_progress : NULL,
		.arg = rs,
		.stop = conf->interrupted,
	};
	int err;

	if (rs->t.is_stdout) {
		pc.n = rs->map->nchunks;
		pc.task = stream_task;
	} else {
		if ((err = make_plan(rs, from)) != 0)
			return err;
		if ((err = zero_runs(rs)) != 0)
			return err;
		pc.n = rs->writes.n;
		pc.task = write_task;
	}
	begin_phase(rs, "writing", pc.n);
	if (pc.n > 0)
		rs->stage = WRITING;
	err = pool_run(&pc);
	if (rs->err != 0)
		err = rs->err;	/* not a waiter's ECANCELED */
	if (err == 0 && rs->t.durable && fdatasync(rs->t.fd) != 0) {
		err = errno;
		log_error("cannot flush %s: %s", rs->t.path, ERRSTR(err));
	}
	if (err == 0 && rs->t.created)
		err = publish_file(&rs->t);
	if (err == 0)
		rs->stage = WRITTEN;
	return err;
}

/* Says, once, where a restore that failed left its target. */
static void report_failure(const struct restore *rs, int err)
{
	const struct restore_conf *conf = rs->conf;
	const char *what;

	if (rs->stage == NOTHING_WRITTEN)
		what = "nothing was written";
	else if (rs->t.created)
		what = "the new file is removed";
	else if (rs->t.is_stdout)
		what = "the output stopped early: discard what was received";
	else if (rs->stage == WRITING)
		what = "the target holds a partial image; run the same "
		       "command again";
	else
		what = "the image was written in full, but reading it back "
		       "found the difference above";
	if (err == EINTR)
		log_error("interrupted: %s", what);
	else
		log_error("restore of %s@%s to %s failed: %s", conf->volume,
			  conf->snapshot, rs->t.path ? rs->t.path
						     : conf->target, what);
}

int restore_run(const struct restore_conf *conf, struct restore_report *rep)
{
	struct restore rs = { .conf = conf, .rep = rep };
	struct chunk_map *map = NULL, *from = NULL;
	unsigned char *zeros = NULL;
	double start = now_seconds();
	struct store_stats ss;
	int err;

	memset(rep, 0, sizeof(*rep));
	rs.t.fd = -1;
	pthread_mutex_init(&rs.lock, NULL);
	pthread_cond_init(&rs.turn, NULL);
	progress_init(&rs.pr, "restore", conf->progress);
	if ((err = index_sync(conf->index, NULL)) != 0 ||
	    (err = resolve(conf, conf->snapshot, &map)) != 0 ||
	    (conf->from != NULL &&
	     (err = resolve(conf, conf->from, &from)) != 0))
		goto out;
	rs.map = map;
	zeros = calloc(1, map->chunk_size);
	if (zeros == NULL) {
		log_error("out of memory");
		err = ENOMEM;
		goto out;
	}
	rs.zeros = zeros;
	/* an interrupt before the target is opened changes nothing */
	if (conf->interrupted && *conf->interrupted) {
		err = EINTR;
		log_error("interrupted: nothing was written");
		goto out;
	}
	if ((err = open_target(conf, &rs.t, map->capacity)) != 0)
		goto out;
	rep->capacity = map->capacity;
	rep->chunk_size = map->chunk_size;
	rep->chunks = map->nchunks;
	rep->new_file = rs.t.created;
	err = write_image(&rs, from);
	if (err == ENOMEM)
		log_error("out of memory");
	if (err == 0 && conf->verify)
		err = read_back(&rs);
	progress_end(&rs.pr);
	if (err != 0)
		report_failure(&rs, err);
out:
	/* what was written stays, unless this restore made the file */
	close_target(&rs.t, err == 0);
	store_get_stats(conf->repo->store, &ss);
	rep->requests = ss.requests;
	rep->retries = ss.retries;
	rep->seconds = now_seconds() - start;
	free(rs.writes.v);
	free(rs.zero_runs.v);
	free(rs.zero_pieces.v);
	free(zeros);
	chunk_map_free(map);
	chunk_map_free(from);
	pthread_mutex_destroy(&rs.lock);
	pthread_cond_destroy(&rs.turn);
	return err;
}
