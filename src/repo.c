/*
 * Repository layer: see repo.h.  Protobuf-c messages (proto/cbtfs.proto)
 * are converted to and from the plain structs of repo.h here and nowhere
 * else.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cbtfs.pb-c.h"
#include "repo.h"

#define CONFIG_KEY "config"
#define MAX_CONFIG_SIZE (1u << 20)
#define MAX_MANIFEST_SIZE (4ull << 30)

void manifest_free(struct manifest *m)
{
	if (m == NULL)
		return;
	free(m->volume);
	free(m->name);
	free(m->csi_handle);
	free(m->csi_driver);
	free(m->changes);
	free(m->entries);
	free(m);
}

static bool name_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || strchr("._-+:@", c) != NULL;
}

static int check_component(const char *what, const char *full,
			   const char *p, size_t n)
{
	size_t i;

	if (n == 0 || (n == 1 && p[0] == '.') ||
	    (n == 2 && p[0] == '.' && p[1] == '.')) {
		log_error("invalid %s '%s': empty, '.' and '..' components "
			  "are not allowed", what, full);
		return EINVAL;
	}
	if (n > 250) {
		log_error("invalid %s '%s': a name or path component may "
			  "have at most 250 characters", what, full);
		return EINVAL;
	}
	for (i = 0; i < n; i++) {
		if (!name_char_ok(p[i])) {
			log_error("invalid %s '%s': only letters, digits and "
				  "._-+:@ are allowed%s", what, full,
				  p[i] == '/' ? " ('/' separates volume path "
						"components only)" : "");
			return EINVAL;
		}
	}
	return 0;
}

int repo_check_volume_name(const char *volume)
{
	const char *p = volume;

	if (strlen(volume) > 512) {
		log_error("invalid volume name: longer than 512 characters");
		return EINVAL;
	}
	for (;;) {
		const char *end = strchrnul(p, '/');
		size_t n = (size_t)(end - p);

		if (check_component("volume name", volume, p, n) != 0)
			return EINVAL;
		if (n >= 4 && memcmp(end - 4, ".img", 4) == 0) {
			log_error("invalid volume name '%s': a component may "
				  "not end in .img (it would clash with "
				  "snapshot images in the mount)", volume);
			return EINVAL;
		}
		if (*end == '\0')
			return 0;
		p = end + 1;
	}
}

int repo_check_snapshot_name(const char *name)
{
	return check_component("snapshot name", name, name, strlen(name));
}

/* Stops a listing at its first key. */
static int found_key_cb(void *arg, const char *key, uint64_t size)
{
	*(bool *)arg = true;
	return EEXIST;
}

int repo_check_chunk_size(uint64_t chunk_size)
{
	if (chunk_size < REPO_MIN_CHUNK_SIZE ||
	    chunk_size > REPO_MAX_CHUNK_SIZE ||
	    (chunk_size & (chunk_size - 1)) != 0) {
		log_error("chunk size %" PRIu64 " is not a power of two "
			  "from 64 KiB to 16 MiB", chunk_size);
		return EINVAL;
	}
	return 0;
}

int repo_init(const char *url, const struct store_opts *opts,
	      uint32_t chunk_size, char *id_out)
{
	Cbtfs__RepoConfig cfg = CBTFS__REPO_CONFIG__INIT;
	bool found = false;
	struct store *st;
	unsigned char *packed;
	size_t len;
	int err;

	if ((err = repo_check_chunk_size(chunk_size)) != 0)
		return err;
	st = store_open(url, true, opts, &err);
	if (st == NULL)
		return err;
	if (store_head(st, CONFIG_KEY, NULL) == 0) {
		log_error("%s: already a cbtfs repository", url);
		store_destroy(st);
		return EEXIST;
	}
	err = store_list(st, "", found_key_cb, &found);
	if (err != 0 && err != EEXIST) {
		store_destroy(st);
		return err;
	}
	if (found) {
		log_error("%s: not empty; a repository must be created in an "
			  "empty directory or prefix", url);
		store_destroy(st);
		return EEXIST;
	}

	uuid_new(id_out);
	cfg.format_version = REPO_FORMAT_VERSION;
	cfg.repo_id = id_out;
	cfg.chunk_size = chunk_size;
	cfg.id_hash = CBTFS__ID_HASH__ID_HASH_SHA256;
	cfg.compression = CBTFS__COMPRESSION__COMPRESSION_ZSTD;
	cfg.compression_level = REPO_DEFAULT_ZSTD_LEVEL;
	cfg.created = (int64_t)time(NULL);
	len = cbtfs__repo_config__get_packed_size(&cfg);
	packed = malloc(len ? len : 1);
	if (packed == NULL) {
		store_destroy(st);
		return ENOMEM;
	}
	cbtfs__repo_config__pack(&cfg, packed);
	err = store_put(st, CONFIG_KEY, packed, len);
	free(packed);
	store_destroy(st);
	return err;
}

struct repo *repo_open(const char *url, const struct store_opts *opts,
		       int *errp)
{
	Cbtfs__RepoConfig *cfg = NULL;
	struct buf b = { 0 };
	struct repo *r;
	struct store *st;
	int err;

	st = store_open(url, false, opts, errp);
	if (st == NULL)
		return NULL;
	err = store_get(st, CONFIG_KEY, 0, STORE_TO_END, &b);
	if (err == ENOENT) {
		log_error("%s: not a cbtfs repository (no config object); "
			  "create one with 'cbtfs-repo init %s'", url, url);
		err = ENOENT;
		goto fail;
	}
	if (err != 0)
		goto fail;
	if (b.len <= MAX_CONFIG_SIZE)
		cfg = cbtfs__repo_config__unpack(NULL, b.len, b.data);
	if (cfg == NULL) {
		log_error("%s: the config object is not a cbtfs repository "
			  "config (corrupt or foreign)", url);
		err = EBADMSG;
		goto fail;
	}
	if (cfg->format_version != REPO_FORMAT_VERSION) {
		log_error("%s: repository format version %" PRIu32 " is not "
			  "supported by this cbtfs (it reads version %d)", url,
			  cfg->format_version, REPO_FORMAT_VERSION);
		err = ENOTSUP;
		goto fail;
	}
	if (!uuid_valid(cfg->repo_id) ||
	    cfg->chunk_size < REPO_MIN_CHUNK_SIZE ||
	    cfg->chunk_size > REPO_MAX_CHUNK_SIZE ||
	    (cfg->chunk_size & (cfg->chunk_size - 1)) != 0) {
		log_error("%s: repository config has an invalid id or chunk "
			  "size", url);
		err = EBADMSG;
		goto fail;
	}
	if (cfg->encryption != NULL &&
	    cfg->encryption->cipher != CBTFS__CIPHER__CIPHER_NONE) {
		log_error("%s: the repository is encrypted, which this "
			  "version of cbtfs cannot read", url);
		err = ENOTSUP;
		goto fail;
	}
	if (cfg->id_hash != CBTFS__ID_HASH__ID_HASH_SHA256) {
		log_error("%s: unsupported chunk id hash", url);
		err = ENOTSUP;
		goto fail;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		err = ENOMEM;
		goto fail;
	}
	r->store = st;
	snprintf(r->id, sizeof(r->id), "%s", cfg->repo_id);
	r->chunk_size = cfg->chunk_size;
	r->zstd_level = cfg->compression == CBTFS__COMPRESSION__COMPRESSION_ZSTD
				? (cfg->compression_level > 0
					   ? cfg->compression_level
					   : REPO_DEFAULT_ZSTD_LEVEL)
				: 0;
	cbtfs__repo_config__free_unpacked(cfg, NULL);
	buf_free(&b);
	return r;

fail:
	if (cfg != NULL)
		cbtfs__repo_config__free_unpacked(cfg, NULL);
	buf_free(&b);
	store_destroy(st);
	*errp = err;
	return NULL;
}

void repo_close(struct repo *r)
{
	if (r == NULL)
		return;
	store_destroy(r->store);
	free(r);
}

void repo_chunk_key(const unsigned char id[CODEC_ID_LEN], char *key)
{
	char hex[CODEC_ID_HEX_LEN + 1];

	hex_encode(id, CODEC_ID_LEN, hex);
	snprintf(key, REPO_CHUNK_KEY_LEN + 1, "chunks/%.2s/%s", hex, hex);
}

int repo_put_chunk(struct repo *r, const unsigned char id[CODEC_ID_LEN],
		   const void *data, uint64_t *stored)
{
	char key[REPO_CHUNK_KEY_LEN + 1];
	struct buf frame = { 0 };
	int err;

	repo_chunk_key(id, key);
	err = codec_encode(data, r->chunk_size, r->zstd_level, false, &frame);
	if (err == 0)
		err = store_put(r->store, key, frame.data, frame.len);
	if (err == 0)
		*stored = frame.len;
	buf_free(&frame);
	return err;
}

int repo_get_chunk(struct repo *r, const unsigned char id[CODEC_ID_LEN],
		   struct buf *out, size_t *off)
{
	char key[REPO_CHUNK_KEY_LEN + 1];
	const char *why;
	int err;

	repo_chunk_key(id, key);
	err = store_get(r->store, key, 0, STORE_TO_END, out);
	if (err == ENOENT) {
		log_error("chunk %s is missing from the repository (deleted "
			  "or lost outside cbtfs); the snapshots that use it "
			  "cannot be restored in full", key);
		err = EIO;
	}
	if (err == 0) {
		err = codec_decode_buf(out, id, r->chunk_size, off, &why);
		if (err == 0 && out->len - *off != r->chunk_size) {
			why = "wrong length";
			err = EBADMSG;
		}
		if (err != 0) {
			log_error("chunk %s is corrupt: %s", key,
				  why ? why : ERRSTR(err));
			out->len = 0;
			err = EIO;
		}
	}
	return err;
}

static char *xstrdup_or_empty(const char *s)
{
	return strdup(s ? s : "");
}

int repo_put_manifest(struct repo *r, const struct manifest *m,
		      uint64_t *stored)
{
	Cbtfs__Snapshot snap = CBTFS__SNAPSHOT__INIT;
	Cbtfs__SnapshotStats stats = CBTFS__SNAPSHOT_STATS__INIT;
	Cbtfs__ChunkEntry *ents = NULL, **ptrs = NULL;
	struct buf frame = { 0 };
	char key[16 + CBTFS_UUID_LEN];
	unsigned char *packed = NULL;
	size_t i, len;
	int err = ENOMEM;

	snap.id = (char *)m->id;
	snap.volume = m->volume;
	snap.name = m->name;
	snap.parent_id = (char *)m->parent_id;
	snap.capacity = m->capacity;
	snap.chunk_size = m->chunk_size;
	snap.created = m->created;
	snap.csi_snapshot_handle = m->csi_handle ? m->csi_handle : "";
	snap.csi_driver = m->csi_driver ? m->csi_driver : "";
	snap.changes = m->changes ? m->changes : "";
	stats.bytes_read = m->stats.bytes_read;
	stats.chunks_read = m->stats.chunks_read;
	stats.chunks_changed = m->stats.chunks_changed;
	stats.chunks_new = m->stats.chunks_new;
	stats.chunks_reused = m->stats.chunks_reused;
	stats.chunks_zero = m->stats.chunks_zero;
	stats.bytes_stored = m->stats.bytes_stored;
	snap.stats = &stats;

	if (m->n_entries > 0) {
		ents = calloc(m->n_entries, sizeof(*ents));
		ptrs = calloc(m->n_entries, sizeof(*ptrs));
		if (ents == NULL || ptrs == NULL)
			goto out;
	}
	for (i = 0; i < m->n_entries; i++) {
		cbtfs__chunk_entry__init(&ents[i]);
		ents[i].index = m->entries[i].index;
		ents[i].id.len = CODEC_ID_LEN;
		ents[i].id.data = (uint8_t *)m->entries[i].id;
		ptrs[i] = &ents[i];
	}
	snap.n_chunks = m->n_entries;
	snap.chunks = ptrs;

	len = cbtfs__snapshot__get_packed_size(&snap);
	packed = malloc(len ? len : 1);
	if (packed == NULL)
		goto out;
	cbtfs__snapshot__pack(&snap, packed);
	err = codec_encode(packed, len, r->zstd_level, true, &frame);
	if (err != 0)
		goto out;
	snprintf(key, sizeof(key), "snapshots/%s", m->id);
	err = store_put(r->store, key, frame.data, frame.len);
	if (err == 0 && stored != NULL)
		*stored = frame.len;
out:
	free(packed);
	free(ents);
	free(ptrs);
	buf_free(&frame);
	return err;
}

static int manifest_from_pb(const Cbtfs__Snapshot *s, struct manifest *m)
{
	size_t i;

	if (!uuid_valid(s->id) ||
	    (s->parent_id[0] != '\0' && !uuid_valid(s->parent_id)))
		return EBADMSG;
	snprintf(m->id, sizeof(m->id), "%s", s->id);
	snprintf(m->parent_id, sizeof(m->parent_id), "%s", s->parent_id);
	m->volume = xstrdup_or_empty(s->volume);
	m->name = xstrdup_or_empty(s->name);
	m->csi_handle = xstrdup_or_empty(s->csi_snapshot_handle);
	m->csi_driver = xstrdup_or_empty(s->csi_driver);
	m->changes = xstrdup_or_empty(s->changes);
	if (!m->volume || !m->name || !m->csi_handle || !m->csi_driver ||
	    !m->changes)
		return ENOMEM;
	m->capacity = s->capacity;
	m->chunk_size = s->chunk_size;
	m->created = s->created;
	if (s->stats != NULL) {
		m->stats.bytes_read = s->stats->bytes_read;
		m->stats.chunks_read = s->stats->chunks_read;
		m->stats.chunks_changed = s->stats->chunks_changed;
		m->stats.chunks_new = s->stats->chunks_new;
		m->stats.chunks_reused = s->stats->chunks_reused;
		m->stats.chunks_zero = s->stats->chunks_zero;
		m->stats.bytes_stored = s->stats->bytes_stored;
	}
	m->n_entries = s->n_chunks;
	if (s->n_chunks > 0) {
		m->entries = calloc(s->n_chunks, sizeof(*m->entries));
		if (m->entries == NULL)
			return ENOMEM;
	}
	for (i = 0; i < s->n_chunks; i++) {
		if (s->chunks[i]->id.len != CODEC_ID_LEN ||
		    (i > 0 && s->chunks[i]->index <= m->entries[i - 1].index))
			return EBADMSG;
		m->entries[i].index = s->chunks[i]->index;
		memcpy(m->entries[i].id, s->chunks[i]->id.data, CODEC_ID_LEN);
	}
	return 0;
}

int repo_get_manifest(struct repo *r, const char *id, struct manifest **mp)
{
	char key[16 + CBTFS_UUID_LEN];
	struct buf frame = { 0 }, plain = { 0 };
	Cbtfs__Snapshot *s = NULL;
	struct manifest *m = NULL;
	const char *why = NULL;
	int err;

	*mp = NULL;
	snprintf(key, sizeof(key), "snapshots/%s", id);
	err = store_get(r->store, key, 0, STORE_TO_END, &frame);
	if (err != 0)
		goto out;
	err = codec_decode(frame.data, frame.len, NULL, MAX_MANIFEST_SIZE,
			   &plain, &why);
	if (err == 0 && !(frame.data[5] & CODEC_F_DIGEST)) {
		why = "manifest has no digest";
		err = EBADMSG;
	}
	if (err != 0)
		goto out;
	s = cbtfs__snapshot__unpack(NULL, plain.len, plain.data);
	if (s == NULL) {
		why = "not a snapshot manifest";
		err = EBADMSG;
		goto out;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		err = ENOMEM;
		goto out;
	}
	err = manifest_from_pb(s, m);
	if (err == EBADMSG)
		why = "invalid ids or chunk entries";
	else if (err == 0 && strcmp(m->id, id) != 0) {
		why = "manifest id differs from its object name";
		err = EBADMSG;
	} else if (err == 0 && m->chunk_size != r->chunk_size) {
		why = "chunk size differs from the repository's";
		err = EBADMSG;
	} else if (err == 0 && (m->capacity == 0 ||
				m->capacity > (uint64_t)INT64_MAX / 2)) {
		why = "capacity out of range";
		err = EBADMSG;
	} else if (err == 0 && m->n_entries > 0 &&
		   m->entries[m->n_entries - 1].index >=
			   (m->capacity + m->chunk_size - 1) / m->chunk_size) {
		why = "chunk entry beyond the capacity";
		err = EBADMSG;
	}
out:
	if (err == EBADMSG || err == ENOTSUP)
		log_error("manifest %s is corrupt or unreadable: %s", key,
			  why ? why : ERRSTR(err));
	if (err == 0)
		*mp = m;
	else
		manifest_free(m);
	if (s != NULL)
		cbtfs__snapshot__free_unpacked(s, NULL);
	buf_free(&frame);
	buf_free(&plain);
	return err;
}

struct list_manifests_ctx {
	repo_snapshot_cb *cb;
	void *arg;
};

static int list_manifests_cb(void *arg, const char *key, uint64_t size)
{
	struct list_manifests_ctx *ctx = arg;
	const char *id = key + strlen("snapshots/");

	if (!uuid_valid(id)) {
		log_warn("ignoring unexpected object %s", key);
		return 0;
	}
	return ctx->cb(ctx->arg, id);
}

int repo_list_manifests(struct repo *r, repo_snapshot_cb *cb, void *arg)
{
	struct list_manifests_ctx ctx = { cb, arg };

	return store_list(r->store, "snapshots/", list_manifests_cb, &ctx);
}

struct lock_scan {
	struct repo *repo;
	const char *volume;
	const char *self;
	char other[CBTFS_UUID_LEN + 1];
	char holder[256];
};

static int lock_scan_cb(void *arg, const char *key, uint64_t size)
{
	struct lock_scan *ls = arg;
	const char *id = key + strlen("locks/");
	struct buf b = { 0 };
	char volume[600] = "", holder[256] = "";
	long long created = 0;
	char *line, *save = NULL;

	int err;

	if (strcmp(id, ls->self) == 0 || size > 4096)
		return 0;
	err = store_get(ls->repo->store, key, 0, STORE_TO_END, &b);
	if (err == 0)
		err = buf_append(&b, "", 1);
	if (err != 0) {
		buf_free(&b);
		return err == ENOENT ? 0 : err;	/* ENOENT: released */
	}
	for (line = strtok_r((char *)b.data, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "volume=", 7) == 0)
			snprintf(volume, sizeof(volume), "%s", line + 7);
		else if (strncmp(line, "holder=", 7) == 0)
			snprintf(holder, sizeof(holder), "%s", line + 7);
		else if (strncmp(line, "created=", 8) == 0)
			created = atoll(line + 8);
	}
	buf_free(&b);
	if (strcmp(volume, ls->volume) != 0 ||
	    (long long)time(NULL) - created > REPO_LOCK_STALE_SECONDS)
		return 0;
	snprintf(ls->other, sizeof(ls->other), "%s", id);
	snprintf(ls->holder, sizeof(ls->holder), "%s", holder);
	return EBUSY;
}

int repo_lock_volume(struct repo *r, const char *volume,
		     char lock_id[CBTFS_UUID_LEN + 1])
{
	struct lock_scan ls = { .repo = r, .volume = volume, .self = lock_id };
	char key[16 + CBTFS_UUID_LEN], host[128] = "?", rec[1024];
	int err, n;

	uuid_new(lock_id);
	gethostname(host, sizeof(host) - 1);
	n = snprintf(rec, sizeof(rec),
		     "volume=%s\nholder=cbtfs-ingest pid %ld on %s\n"
		     "created=%lld\n", volume, (long)getpid(), host,
		     (long long)time(NULL));
	snprintf(key, sizeof(key), "locks/%s", lock_id);
	err = store_put(r->store, key, rec, (size_t)n);
	if (err != 0)
		return err;
	err = store_list(r->store, "locks/", lock_scan_cb, &ls);
	if (err == EBUSY)
		log_error("volume '%s' is locked by another ingest (%s, "
			  "object locks/%s); wait for it, or delete that "
			  "object if that ingest is dead", volume, ls.holder,
			  ls.other);
	if (err != 0)
		store_del(r->store, key);
	return err;
}

void repo_unlock(struct repo *r, const char *lock_id)
{
	char key[16 + CBTFS_UUID_LEN];

	snprintf(key, sizeof(key), "locks/%s", lock_id);
	store_del(r->store, key);
}
