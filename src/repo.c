/*
 * Repository layer: see repo.h.  Protobuf-c messages (proto/cbtfs.proto)
 * are converted to and from the plain structs of repo.h here and nowhere
 * else.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cbtfs.pb-c.h"
#include "repo.h"

#define CONFIG_KEY "config"
#define MAX_CONFIG_SIZE (1u << 20)
#define MAX_MANIFEST_SIZE (4ull << 30)

void manifest_clear(struct manifest *m)
{
	free(m->volume);
	free(m->name);
	free(m->csi_handle);
	free(m->csi_driver);
	free(m->changes);
	free(m->entries);
	memset(m, 0, sizeof(*m));
}

void manifest_free(struct manifest *m)
{
	if (m == NULL)
		return;
	manifest_clear(m);
	free(m);
}

struct manifest *manifest_dup_header(const struct manifest *m)
{
	struct manifest *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	*c = *m;
	c->entries = NULL;
	c->n_entries = 0;
	c->volume = strdup(m->volume);
	c->name = strdup(m->name);
	c->csi_handle = strdup(m->csi_handle);
	c->csi_driver = strdup(m->csi_driver);
	c->changes = strdup(m->changes);
	if (!c->volume || !c->name || !c->csi_handle || !c->csi_driver ||
	    !c->changes) {
		manifest_free(c);
		return NULL;
	}
	return c;
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

/* ---- config and keys ------------------------------------------------ */

/* What a config may ask of scrypt: enough to open repositories made with
 * other costs, not so much that a garbled config exhausts the host. */
#define KDF_MIN_N (1u << 10)
#define KDF_MAX_MEM (1ull << 30)	/* 128 * N * r */
#define KDF_MAX_R 32
#define KDF_MAX_P 64
#define SALT_MIN_LEN 16
#define SALT_MAX_LEN 64

static bool config_encrypted(const Cbtfs__RepoConfig *cfg)
{
	return cfg->encryption != NULL &&
	       cfg->encryption->cipher != CBTFS__CIPHER__CIPHER_NONE;
}

/* Authenticated data being assembled; err sticks at the first failure. */
struct aad {
	struct buf b;
	int err;
};

static void aad_put(struct aad *a, const void *p, size_t n)
{
	if (a->err == 0)
		a->err = buf_append(&a->b, p, n);
}

static void aad_u32(struct aad *a, uint32_t v)
{
	unsigned char le[4] = { v, v >> 8, v >> 16, v >> 24 };

	aad_put(a, le, sizeof(le));
}

static void aad_u64(struct aad *a, uint64_t v)
{
	aad_u32(a, (uint32_t)v);
	aad_u32(a, (uint32_t)(v >> 32));
}

static void aad_bytes(struct aad *a, const void *p, size_t n)
{
	aad_u32(a, (uint32_t)n);
	aad_put(a, p, n);
}

/*
 * The bytes the wrapped master key is bound to: every field of an
 * encrypted config but the wrapped key, in the fixed layout of
 * cbtfs-repository(5), so that a config altered in any field fails to
 * unwrap.  0 or ENOMEM; the caller frees a->b.
 */
static int config_aad(const Cbtfs__RepoConfig *cfg, struct aad *a)
{
	static const char label[] = "cbtfs config v1";
	const Cbtfs__Encryption *e = cfg->encryption;

	aad_put(a, label, sizeof(label));	/* with its NUL */
	aad_u32(a, cfg->format_version);
	aad_bytes(a, cfg->repo_id, strlen(cfg->repo_id));
	aad_u32(a, cfg->chunk_size);
	aad_u32(a, (uint32_t)cfg->id_hash);
	aad_u32(a, (uint32_t)cfg->compression);
	aad_u32(a, (uint32_t)cfg->compression_level);
	aad_u64(a, (uint64_t)cfg->created);
	aad_u32(a, (uint32_t)e->cipher);
	aad_bytes(a, e->kdf, strlen(e->kdf));
	aad_bytes(a, e->salt.data, e->salt.len);
	aad_u64(a, e->kdf_n);
	aad_u32(a, e->kdf_r);
	aad_u32(a, e->kdf_p);
	return a->err;
}

/* Checks the encryption fields of an encrypted config.  0, or EBADMSG or
 * ENOTSUP (logged). */
static int check_encryption(const char *url, const Cbtfs__RepoConfig *cfg)
{
	const Cbtfs__Encryption *e = cfg->encryption;

	if (e->cipher != CBTFS__CIPHER__CIPHER_AES_256_GCM ||
	    strcmp(e->kdf, "scrypt") != 0) {
		log_error("%s: the repository is encrypted with a cipher or "
			  "key derivation this cbtfs does not know", url);
		return ENOTSUP;
	}
	if (cfg->id_hash != CBTFS__ID_HASH__ID_HASH_HMAC_SHA256 ||
	    e->salt.len < SALT_MIN_LEN || e->salt.len > SALT_MAX_LEN ||
	    e->kdf_n < KDF_MIN_N || (e->kdf_n & (e->kdf_n - 1)) != 0 ||
	    e->kdf_r < 1 || e->kdf_r > KDF_MAX_R || e->kdf_p < 1 ||
	    e->kdf_p > KDF_MAX_P ||
	    e->kdf_n > KDF_MAX_MEM / 128 / e->kdf_r ||
	    e->wrapped_master_key.len != CODEC_WRAPPED_KEY_LEN) {
		log_error("%s: the encryption parameters in the repository "
			  "config are invalid (corrupt or altered config)",
			  url);
		return EBADMSG;
	}
	return 0;
}

/*
 * Gets the passphrase from pass and unwraps cfg's master key with it.  0,
 * ENOKEY (logged, saying how to give one), EACCES (logged) when it does
 * not unwrap, or another errno (logged).
 */
static int unwrap_master(const char *url, const Cbtfs__RepoConfig *cfg,
			 const struct passphrase_src *pass,
			 unsigned char master[CODEC_KEY_LEN])
{
	const Cbtfs__Encryption *e = cfg->encryption;
	unsigned char kek[CODEC_KEY_LEN];
	struct passphrase pp = { 0 };
	struct aad aad = { 0 };
	char hint[200];
	int err;

	err = passphrase_get(pass, url, "passphrase", false, &pp);
	if (err == ENOKEY)
		log_error("%s is encrypted: %s", url,
			  passphrase_hint(pass, hint, sizeof(hint)));
	if (err != 0)
		return err;
	err = codec_kdf_scrypt(pp.text, pp.len, e->salt.data, e->salt.len,
			       e->kdf_n, e->kdf_r, e->kdf_p, kek);
	passphrase_free(&pp);
	if (err == 0)
		err = config_aad(cfg, &aad);
	if (err == 0)
		err = codec_unwrap_key(kek, aad.b.data, aad.b.len,
				       e->wrapped_master_key.data,
				       e->wrapped_master_key.len, master);
	if (err == EBADMSG) {
		log_error("%s: wrong passphrase, or the repository's config "
			  "was altered (its master key does not unwrap)",
			  url);
		err = EACCES;
	}
	OPENSSL_cleanse(kek, sizeof(kek));
	buf_free(&aad.b);
	return err;
}

/* Storage for the encryption fields wrap_master() fills. */
struct wrapped {
	Cbtfs__Encryption enc;
	unsigned char salt[REPO_SALT_LEN];
	unsigned char key[CODEC_WRAPPED_KEY_LEN];
};

/*
 * Makes cfg encrypted with master, wrapped under pp with a new salt and
 * the default scrypt cost: cfg->encryption then points into w.  0, or
 * an errno (logged).
 */
static int wrap_master(Cbtfs__RepoConfig *cfg, struct wrapped *w,
		       const struct passphrase *pp,
		       const unsigned char master[CODEC_KEY_LEN])
{
	unsigned char kek[CODEC_KEY_LEN];
	struct aad aad = { 0 };
	int err;

	cbtfs__encryption__init(&w->enc);
	w->enc.cipher = CBTFS__CIPHER__CIPHER_AES_256_GCM;
	w->enc.kdf = "scrypt";
	w->enc.salt.data = w->salt;
	w->enc.salt.len = sizeof(w->salt);
	w->enc.kdf_n = REPO_KDF_N;
	w->enc.kdf_r = REPO_KDF_R;
	w->enc.kdf_p = REPO_KDF_P;
	cfg->encryption = &w->enc;
	cfg->id_hash = CBTFS__ID_HASH__ID_HASH_HMAC_SHA256;
	err = codec_random(w->salt, sizeof(w->salt));
	if (err == 0)
		err = codec_kdf_scrypt(pp->text, pp->len, w->salt,
				       sizeof(w->salt), w->enc.kdf_n,
				       w->enc.kdf_r, w->enc.kdf_p, kek);
	if (err == 0)
		err = config_aad(cfg, &aad);
	if (err == 0)
		err = codec_wrap_key(kek, aad.b.data, aad.b.len, master,
				     w->key);
	w->enc.wrapped_master_key.data = w->key;
	w->enc.wrapped_master_key.len = sizeof(w->key);
	OPENSSL_cleanse(kek, sizeof(kek));
	buf_free(&aad.b);
	return err;
}

/* Packs cfg and writes it as the config object, in one put.  *packedp
 * (may be NULL) receives the bytes written, freed by the caller. */
static int config_write(struct store *st, const Cbtfs__RepoConfig *cfg,
			struct buf *packedp)
{
	struct buf b = { 0 };
	size_t len = cbtfs__repo_config__get_packed_size(cfg);
	int err;

	if (buf_reserve(&b, len ? len : 1) != 0)
		return ENOMEM;
	b.len = cbtfs__repo_config__pack(cfg, b.data);
	err = store_put(st, CONFIG_KEY, b.data, b.len);
	if (err == 0 && packedp != NULL)
		*packedp = b;
	else
		buf_free(&b);
	return err;
}

/* Reads and checks the config of the repository in st.  *cfgp is freed
 * with cbtfs__repo_config__free_unpacked().  0 or an errno (logged). */
static int config_read(struct store *st, const char *url,
		       Cbtfs__RepoConfig **cfgp)
{
	Cbtfs__RepoConfig *cfg = NULL;
	struct buf b = { 0 };
	int err;

	*cfgp = NULL;
	err = store_get(st, CONFIG_KEY, 0, STORE_TO_END, &b);
	if (err == ENOENT)
		log_error("%s: not a cbtfs repository (no config object); "
			  "create one with 'cbtfs-repo init %s'", url, url);
	if (err != 0)
		goto out;
	if (b.len <= MAX_CONFIG_SIZE)
		cfg = cbtfs__repo_config__unpack(NULL, b.len, b.data);
	if (cfg == NULL) {
		log_error("%s: the config object is not a cbtfs repository "
			  "config (corrupt or foreign)", url);
		err = EBADMSG;
		goto out;
	}
	if (cfg->format_version != REPO_FORMAT_VERSION) {
		log_error("%s: repository format version %" PRIu32 " is not "
			  "supported by this cbtfs (it reads version %d)", url,
			  cfg->format_version, REPO_FORMAT_VERSION);
		err = ENOTSUP;
		goto out;
	}
	if (!uuid_valid(cfg->repo_id) ||
	    cfg->chunk_size < REPO_MIN_CHUNK_SIZE ||
	    cfg->chunk_size > REPO_MAX_CHUNK_SIZE ||
	    (cfg->chunk_size & (cfg->chunk_size - 1)) != 0) {
		log_error("%s: repository config has an invalid id or chunk "
			  "size", url);
		err = EBADMSG;
		goto out;
	}
	if (config_encrypted(cfg)) {
		err = check_encryption(url, cfg);
	} else if (cfg->id_hash != CBTFS__ID_HASH__ID_HASH_SHA256) {
		log_error("%s: unsupported chunk id hash", url);
		err = ENOTSUP;
	}
out:
	if (err != 0 && cfg != NULL)
		cbtfs__repo_config__free_unpacked(cfg, NULL);
	else
		*cfgp = cfg;
	buf_free(&b);
	return err;
}

int repo_init(const char *url, const struct store_opts *opts,
	      uint32_t chunk_size, const struct passphrase_src *encrypt,
	      char *id_out)
{
	Cbtfs__RepoConfig cfg = CBTFS__REPO_CONFIG__INIT;
	unsigned char master[CODEC_KEY_LEN];
	struct passphrase pp = { 0 };
	struct wrapped w;
	bool found = false;
	struct store *st;
	char hint[200];
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
	err = 0;
	if (encrypt != NULL) {
		err = passphrase_get(encrypt, url, "new passphrase", true,
				     &pp);
		if (err == ENOKEY)
			log_error("%s: no passphrase for the new encrypted "
				  "repository: %s, or run it on a terminal",
				  url,
				  passphrase_hint(encrypt, hint,
						  sizeof(hint)));
		if (err == 0)
			err = codec_random(master, sizeof(master));
		if (err == 0)
			err = wrap_master(&cfg, &w, &pp, master);
		OPENSSL_cleanse(master, sizeof(master));
		passphrase_free(&pp);
	}
	if (err == 0)
		err = config_write(st, &cfg, NULL);
	store_destroy(st);
	return err;
}

struct repo *repo_open(const char *url, const struct store_opts *opts,
		       const struct passphrase_src *pass, int *errp)
{
	unsigned char master[CODEC_KEY_LEN];
	Cbtfs__RepoConfig *cfg = NULL;
	struct repo *r = NULL;
	struct store *st;
	int err;

	st = store_open(url, false, opts, errp);
	if (st == NULL)
		return NULL;
	if ((err = config_read(st, url, &cfg)) != 0)
		goto fail;
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		err = ENOMEM;
		goto fail;
	}
	if (config_encrypted(cfg)) {
		err = unwrap_master(url, cfg, pass, master);
		if (err == 0)
			r->keys = codec_keys_create(master, &err);
		OPENSSL_cleanse(master, sizeof(master));
		if (err != 0)
			goto fail;
	}
	r->store = st;
	snprintf(r->id, sizeof(r->id), "%s", cfg->repo_id);
	r->chunk_size = cfg->chunk_size;
	r->zstd_level =
		cfg->compression == CBTFS__COMPRESSION__COMPRESSION_ZSTD
			? (cfg->compression_level > 0
				   ? cfg->compression_level
				   : REPO_DEFAULT_ZSTD_LEVEL)
			: 0;
	cbtfs__repo_config__free_unpacked(cfg, NULL);
	return r;

fail:
	if (cfg != NULL)
		cbtfs__repo_config__free_unpacked(cfg, NULL);
	free(r);
	store_destroy(st);
	*errp = err;
	return NULL;
}

int repo_passwd(const char *url, const struct store_opts *opts,
		const struct passphrase_src *old,
		const struct passphrase_src *new_pass)
{
	unsigned char master[CODEC_KEY_LEN];
	Cbtfs__RepoConfig *cfg = NULL;
	Cbtfs__Encryption *was = NULL;
	struct buf written = { 0 }, back = { 0 };
	struct passphrase pp = { 0 };
	struct wrapped w;
	struct store *st;
	char hint[200];
	int err;

	st = store_open(url, false, opts, &err);
	if (st == NULL)
		return err;
	if ((err = config_read(st, url, &cfg)) != 0)
		goto out;
	if (!config_encrypted(cfg)) {
		log_error("%s is not encrypted: it has no passphrase to "
			  "change (an encrypted repository is made with "
			  "'cbtfs-repo init --encrypt')", url);
		err = EINVAL;
		goto out;
	}
	if ((err = unwrap_master(url, cfg, old, master)) != 0)
		goto out;
	err = passphrase_get(new_pass, url, "new passphrase", true, &pp);
	if (err == ENOKEY)
		log_error("%s: no new passphrase: %s", url,
			  passphrase_hint(new_pass, hint, sizeof(hint)));
	was = cfg->encryption;
	if (err == 0)
		err = wrap_master(cfg, &w, &pp, master);
	OPENSSL_cleanse(master, sizeof(master));
	passphrase_free(&pp);
	/* the one step that changes anything: a put is atomic */
	if (err == 0)
		err = config_write(st, cfg, &written);
	if (err == 0)
		err = store_get(st, CONFIG_KEY, 0, STORE_TO_END, &back);
	if (err == 0 && (back.len != written.len ||
			 memcmp(back.data, written.data, back.len) != 0)) {
		log_error("%s: the config read back differs from the one "
			  "just written (another passwd at the same time?); "
			  "check which passphrase opens it", url);
		err = EIO;
	}
	cfg->encryption = was;
out:
	if (cfg != NULL)
		cbtfs__repo_config__free_unpacked(cfg, NULL);
	buf_free(&written);
	buf_free(&back);
	store_destroy(st);
	return err;
}

void repo_close(struct repo *r)
{
	if (r == NULL)
		return;
	codec_keys_destroy(r->keys);
	store_destroy(r->store);
	free(r);
}

int repo_chunk_id(struct repo *r, const void *data,
		  unsigned char id[CODEC_ID_LEN])
{
	int err;

	if (r->keys == NULL) {
		codec_chunk_id(data, r->chunk_size, id);
		return 0;
	}
	err = codec_keyed_id(r->keys, data, r->chunk_size, id);
	if (err == ENOMEM)
		log_error("computing a chunk id: out of memory");
	return err;
}

void repo_chunk_key(const unsigned char id[CODEC_ID_LEN], char *key)
{
	char hex[CODEC_ID_HEX_LEN + 1];

	hex_encode(id, CODEC_ID_LEN, hex);
	snprintf(key, REPO_CHUNK_KEY_LEN + 1, "chunks/%.2s/%s", hex, hex);
}

size_t repo_chunk_room(const struct repo *r)
{
	return codec_frame_room(r->chunk_size, r->zstd_level, r->keys != NULL);
}

size_t repo_chunk_offset(const struct repo *r)
{
	return codec_plain_offset(r->keys != NULL);
}

int repo_put_chunk(struct repo *r, const unsigned char id[CODEC_ID_LEN],
		   struct buf *b, uint64_t *stored)
{
	char key[REPO_CHUNK_KEY_LEN + 1];
	struct codec_seal seal = { r->keys, key };
	int err;

	repo_chunk_key(id, key);
	err = codec_encode_in_place(b, r->chunk_size, r->zstd_level,
				    r->keys ? &seal : NULL);
	if (err == 0)
		err = store_put(r->store, key, b->data, b->len);
	if (err == 0)
		*stored = b->len;
	return err;
}

int repo_chunk_exists(struct repo *r, const unsigned char id[CODEC_ID_LEN],
		      bool *exists)
{
	char key[REPO_CHUNK_KEY_LEN + 1];
	int err;

	repo_chunk_key(id, key);
	err = store_head(r->store, key, NULL);
	*exists = err == 0;
	return err == ENOENT ? 0 : err;
}

int repo_get_chunk(struct repo *r, const unsigned char id[CODEC_ID_LEN],
		   struct buf *out, size_t *off)
{
	char key[REPO_CHUNK_KEY_LEN + 1];
	struct codec_seal seal = { r->keys, key };
	const char *why;
	int err;

	repo_chunk_key(id, key);
	err = store_get(r->store, key, 0, STORE_TO_END, out);
	if (err == ENOENT)
		log_error("chunk %s is missing from the repository (deleted "
			  "or lost outside cbtfs); the snapshots that use it "
			  "cannot be restored in full until an ingest of the "
			  "same data stores it again", key);
	if (err == 0) {
		err = codec_decode_buf(out, r->keys ? &seal : NULL, id,
				       r->chunk_size, off, &why);
		if (err == 0 && out->len - *off != r->chunk_size) {
			why = "wrong length";
			err = EBADMSG;
		}
		if (err == ENOMEM) {
			log_error("chunk %s: out of memory decoding it", key);
			out->len = 0;
		} else if (err == EBADMSG) {
			log_error("chunk %s is corrupt: %s", key,
				  why ? why : ERRSTR(err));
			out->len = 0;
		} else if (err != 0) {
			out->len = 0;	/* OpenSSL failed (logged) */
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
	struct codec_seal seal = { r->keys, key };
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
#define X(field, json) stats.field = m->stats.field;
	MANIFEST_STATS(X)
#undef X
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
	snprintf(key, sizeof(key), "snapshots/%s", m->id);
	/* sealed in an encrypted repository, else with a digest */
	err = codec_encode(packed, len, r->zstd_level, r->keys == NULL,
			   r->keys ? &seal : NULL, &frame);
	if (err != 0)
		goto out;
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
#define X(field, json) m->stats.field = s->stats->field;
		MANIFEST_STATS(X)
#undef X
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
	struct codec_seal seal = { r->keys, key };
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
	err = codec_decode(frame.data, frame.len, r->keys ? &seal : NULL, NULL,
			   MAX_MANIFEST_SIZE, &plain, &why);
	/* unencrypted, a manifest must carry a digest; sealed, the codec
	 * has authenticated it under its name */
	if (err == 0 && r->keys == NULL && !(frame.data[5] & CODEC_F_DIGEST)) {
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


/* ---- damage records ------------------------------------------------ */

#define DAMAGE_PREFIX "damaged/"

static void damage_key(const unsigned char id[CODEC_ID_LEN], char *key)
{
	memcpy(key, DAMAGE_PREFIX, strlen(DAMAGE_PREFIX));
	hex_encode(id, CODEC_ID_LEN, key + strlen(DAMAGE_PREFIX));
}

int repo_mark_damaged(struct repo *r, const unsigned char id[CODEC_ID_LEN],
		      const char *why)
{
	char key[sizeof(DAMAGE_PREFIX) + CODEC_ID_HEX_LEN], rec[512];
	struct proc_id self;
	int n;

	damage_key(id, key);
	proc_id_self(&self);
	n = snprintf(rec, sizeof(rec), "why=%s\nfound=%lld\nhost=%s\n", why,
		     (long long)time(NULL), self.host);
	return store_put(r->store, key, rec, (size_t)n);
}

int repo_clear_damaged(struct repo *r, const unsigned char id[CODEC_ID_LEN])
{
	char key[sizeof(DAMAGE_PREFIX) + CODEC_ID_HEX_LEN];

	damage_key(id, key);
	return store_del(r->store, key);
}

struct list_damaged_ctx {
	repo_damage_cb *cb;
	void *arg;
};

static int list_damaged_cb(void *arg, const char *key, uint64_t size)
{
	struct list_damaged_ctx *ctx = arg;
	unsigned char id[CODEC_ID_LEN];
	const char *hex = key + strlen(DAMAGE_PREFIX);

	if (strlen(hex) != CODEC_ID_HEX_LEN ||
	    hex_decode(hex, id, CODEC_ID_LEN) != 0) {
		log_warn("ignoring unexpected object %s", key);
		return 0;
	}
	return ctx->cb(ctx->arg, id);
}

int repo_list_damaged(struct repo *r, repo_damage_cb *cb, void *arg)
{
	struct list_damaged_ctx ctx = { cb, arg };

	return store_list(r->store, DAMAGE_PREFIX, list_damaged_cb, &ctx);
}

/* ---- locks ----------------------------------------------------------- */

/*
 * Record format (text, one key=value a line, unknown keys ignored):
 *   kind      ingest (also when absent: records of older versions), forget
 *             or prune
 *   volume    the volume (ingest, forget); absent for a prune, so that a
 *             cbtfs older than prune records finds it garbled and is
 *             blocked by it
 *   snapshot  the snapshot being made (ingest), "(forget)" (forget)
 *   manifest  the id of the manifest an ingest will commit
 *   state     pending, held, or abandoned (ingest only)
 *   host, boot_id, pidns, pid, start   the holder (struct proc_id)
 *   created, renewed   Unix seconds
 *   lease     seconds
 * A record of cbtfs before leases has only volume, holder and created.
 */

#define LOCK_PREFIX "locks/"
#define LOCK_KEY_SIZE (sizeof(LOCK_PREFIX) + CBTFS_UUID_LEN)
#define LOCK_MAX_RECORD 4096
/* how long a starting taker waits for others starting with it */
#define LOCK_SETTLE_SECONDS 30
#define LOCK_FORGET_SNAPSHOT "(forget)"
/* records of cbtfs before leases expire this long after their creation */
#define LOCK_LEGACY_SECONDS (24 * 3600)

struct repo_lock {
	struct repo *repo;
	struct repo_lock_info info;	/* our record, as last written */

	/* guards info, last_ok, lost and stop; held across record writes */
	pthread_mutex_t lock;
	pthread_cond_t wake;		/* stop was set (CLOCK_MONOTONIC) */
	bool stop;
	bool lost;			/* a renewal came too late */
	double last_ok;			/* boot_seconds() of the last write */
	pthread_t renewer;
	bool renewing;
};

/* Seconds on a clock that also counts time suspended. */
static double boot_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned lease_seconds(void)
{
	const char *s = getenv("CBTFS_LOCK_LEASE");
	char *end;
	unsigned long v;

	if (s == NULL || *s == '\0')
		return REPO_LOCK_LEASE_SECONDS;
	v = strtoul(s, &end, 10);
	if (*end != '\0' || v < 2 || v > 86400) {
		log_warn("CBTFS_LOCK_LEASE=%s is not 2 to 86400 seconds; "
			 "using %d", s, REPO_LOCK_LEASE_SECONDS);
		return REPO_LOCK_LEASE_SECONDS;
	}
	return (unsigned)v;
}

const char *repo_lock_status_name(enum repo_lock_status s)
{
	static const char *const names[] = {
		"live", "dead", "expired", "abandoned", "garbled"
	};

	return names[s];
}

const char *repo_lock_kind_name(enum repo_lock_kind k)
{
	static const char *const names[] = { "ingest", "forget", "prune" };

	return names[k];
}

const char *repo_lock_holder(const struct repo_lock_info *li, char *buf,
			     size_t size)
{
	const char *host = li->holder.host[0] ? li->holder.host : "?";
	long long ago = (long long)time(NULL) - (long long)li->renewed;

	if (li->kind == REPO_LOCK_INGEST)
		snprintf(buf, size, "cbtfs-ingest pid %ld on %s, making "
			 "snapshot '%s', renewed %llds ago", li->holder.pid,
			 host, li->snapshot, ago);
	else
		snprintf(buf, size, "cbtfs-repo %s pid %ld on %s, renewed "
			 "%llds ago", repo_lock_kind_name(li->kind),
			 li->holder.pid, host, ago);
	return buf;
}

static int lock_format(const struct repo_lock_info *li, char *rec,
		       size_t size)
{
	int n = snprintf(rec, size, "kind=%s\n",
			 repo_lock_kind_name(li->kind));

	if (li->kind != REPO_LOCK_PRUNE)
		n += snprintf(rec + n, size - (size_t)n,
			      "volume=%s\nsnapshot=%s\n", li->volume,
			      li->snapshot);
	if (li->manifest[0] != '\0')
		n += snprintf(rec + n, size - (size_t)n, "manifest=%s\n",
			      li->manifest);
	return n + snprintf(rec + n, size - (size_t)n,
			    "state=%s\nhost=%s\n"
			    "boot_id=%s\npidns=%s\npid=%ld\nstart=%llu\n"
			    "created=%lld\nrenewed=%lld\nlease=%u\n",
			    li->state, li->holder.host, li->holder.boot_id,
			    li->holder.pidns, li->holder.pid,
			    li->holder.start, (long long)li->created,
			    (long long)li->renewed, li->lease);
}

/* Parses a decimal field; false if it is not one. */
static bool parse_ll(const char *s, long long *v)
{
	char *end;

	errno = 0;
	*v = strtoll(s, &end, 10);
	return *s != '\0' && *end == '\0' && errno == 0 && *v >= 0;
}

/* Copies the value v of a text field into dst of size n. */
#define LOCK_TEXT(dst, v) snprintf((dst), sizeof(dst), "%s", (v))

/*
 * Parses a record (NUL-terminated, modified); EBADMSG if garbled.  A
 * record of cbtfs before leases (holder= and created=, no state=) is read
 * as held, with a lease ending LOCK_LEGACY_SECONDS after its creation.
 */
static int lock_parse(char *text, struct repo_lock_info *li)
{
	long long pid = -1, start = -1, created = -1, renewed = -1;
	long long lease = -1;
	bool legacy = false;
	char *line, *save = NULL;

	for (line = strtok_r(text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char *eq = strchr(line, '=');
		const char *k = line, *v;

		if (eq == NULL)
			return EBADMSG;
		*eq = '\0';
		v = eq + 1;
		if (strcmp(k, "kind") == 0) {
			if (strcmp(v, "ingest") == 0)
				li->kind = REPO_LOCK_INGEST;
			else if (strcmp(v, "forget") == 0)
				li->kind = REPO_LOCK_FORGET;
			else if (strcmp(v, "prune") == 0)
				li->kind = REPO_LOCK_PRUNE;
			else
				return EBADMSG;
		} else if (strcmp(k, "volume") == 0)
			LOCK_TEXT(li->volume, v);
		else if (strcmp(k, "snapshot") == 0)
			LOCK_TEXT(li->snapshot, v);
		else if (strcmp(k, "manifest") == 0)
			LOCK_TEXT(li->manifest, v);
		else if (strcmp(k, "state") == 0)
			LOCK_TEXT(li->state, v);
		else if (strcmp(k, "host") == 0)
			LOCK_TEXT(li->holder.host, v);
		else if (strcmp(k, "boot_id") == 0)
			LOCK_TEXT(li->holder.boot_id, v);
		else if (strcmp(k, "pidns") == 0)
			LOCK_TEXT(li->holder.pidns, v);
		else if (strcmp(k, "holder") == 0)
			legacy = true;
		else if ((strcmp(k, "pid") == 0 && !parse_ll(v, &pid)) ||
			 (strcmp(k, "start") == 0 && !parse_ll(v, &start)) ||
			 (strcmp(k, "created") == 0 &&
			  !parse_ll(v, &created)) ||
			 (strcmp(k, "renewed") == 0 &&
			  !parse_ll(v, &renewed)) ||
			 (strcmp(k, "lease") == 0 && !parse_ll(v, &lease)))
			return EBADMSG;
	}
	if (legacy && li->state[0] == '\0' && created >= 0) {
		LOCK_TEXT(li->state, "held");
		LOCK_TEXT(li->snapshot, "?");
		renewed = created;
		lease = LOCK_LEGACY_SECONDS;
	}
	if ((li->volume[0] == '\0') != (li->kind == REPO_LOCK_PRUNE) ||
	    created < 0 || renewed < 0 || lease <= 0 || lease > 86400 ||
	    (li->manifest[0] != '\0' && !uuid_valid(li->manifest)) ||
	    (strcmp(li->state, "pending") != 0 &&
	     strcmp(li->state, "held") != 0 &&
	     (strcmp(li->state, "abandoned") != 0 ||
	      li->kind != REPO_LOCK_INGEST)))
		return EBADMSG;
	li->holder.pid = pid > 0 ? (long)pid : 0;
	li->holder.start = start > 0 ? (unsigned long long)start : 0;
	li->created = created;
	li->renewed = renewed;
	li->lease = (unsigned)lease;
	return 0;
}

static enum repo_lock_status lock_judge(const struct repo_lock_info *li)
{
	long long now = (long long)time(NULL);

	if (strcmp(li->state, "abandoned") == 0)
		return REPO_LOCK_ABANDONED;
	if (proc_id_state(&li->holder) == PROC_DEAD)
		return REPO_LOCK_DEAD;
	/* renewed in the future beyond its lease: a wrong clock */
	if (li->renewed > now + li->lease || now > li->renewed + li->lease)
		return REPO_LOCK_EXPIRED;
	return REPO_LOCK_LIVE;
}

struct list_locks_ctx {
	struct repo *repo;
	repo_lock_cb *cb;
	void *arg;
};

static int list_locks_cb(void *arg, const char *key, uint64_t size)
{
	struct list_locks_ctx *ctx = arg;
	struct repo_lock_info li = { 0 };
	struct buf b = { 0 };
	int err;

	LOCK_TEXT(li.id, key + strlen(LOCK_PREFIX));
	if (!uuid_valid(li.id)) {
		log_warn("ignoring unexpected object %s", key);
		return 0;
	}
	err = size > LOCK_MAX_RECORD ? EFBIG
				     : store_get(ctx->repo->store, key, 0,
						 STORE_TO_END, &b);
	if (err == ENOENT)
		return 0;	/* released meanwhile */
	if (err == 0)
		err = buf_append(&b, "", 1);
	if (err == 0 || err == EFBIG) {
		if (err != 0 || memchr(b.data, '\0', b.len - 1) != NULL ||
		    lock_parse((char *)b.data, &li) != 0)
			li.status = REPO_LOCK_GARBLED;
		else
			li.status = lock_judge(&li);
		err = ctx->cb(ctx->arg, &li);
	}
	buf_free(&b);
	return err;
}

int repo_list_locks(struct repo *r, repo_lock_cb *cb, void *arg)
{
	struct list_locks_ctx ctx = { r, cb, arg };

	return store_list(r->store, LOCK_PREFIX, list_locks_cb, &ctx);
}

int repo_remove_lock(struct repo *r, const char *id)
{
	char key[LOCK_KEY_SIZE];

	snprintf(key, sizeof(key), LOCK_PREFIX "%s", id);
	return store_del(r->store, key);
}

/* "volume 'ns/pvc'" or "the repository", for messages about li. */
static const char *lock_what(const struct repo_lock_info *li, char *buf,
			     size_t size)
{
	if (li->kind == REPO_LOCK_PRUNE)
		snprintf(buf, size, "the repository (prune)");
	else
		snprintf(buf, size, "volume '%s'", li->volume);
	return buf;
}
#define LOCK_WHAT(li) lock_what((li), (char[560]){ 0 }, 560)

/*
 * Writes l's record with a fresh renewal time; the caller holds l->lock.
 * A write later than the lease after the last one would bring back a
 * record others may have judged expired: the lock is lost instead
 * (ESTALE, logged once), and never written again.
 */
static int lock_write(struct repo_lock *l)
{
	char key[LOCK_KEY_SIZE], rec[LOCK_MAX_RECORD];
	double now = boot_seconds();
	int n, err;

	if (!l->lost && l->last_ok > 0 && now - l->last_ok > l->info.lease) {
		log_error("the lock of %s (locks/%s) was not renewed for "
			  "%.0f s, longer than its lease of %u s: another "
			  "ingest, forget or prune may have run meanwhile, so "
			  "this %s stops here", LOCK_WHAT(&l->info),
			  l->info.id, now - l->last_ok, l->info.lease,
			  repo_lock_kind_name(l->info.kind));
		l->lost = true;
	}
	if (l->lost)
		return ESTALE;
	l->info.renewed = (int64_t)time(NULL);
	n = lock_format(&l->info, rec, sizeof(rec));
	snprintf(key, sizeof(key), LOCK_PREFIX "%s", l->info.id);
	err = store_put(l->repo->store, key, rec, (size_t)n);
	if (err == 0)
		l->last_ok = now;
	return err;
}

static unsigned renew_every(const struct repo_lock *l)
{
	return l->info.lease / 5 ? l->info.lease / 5 : 1;
}

static void *lock_renewer(void *arg)
{
	struct repo_lock *l = arg;
	unsigned every = renew_every(l);

	pthread_mutex_lock(&l->lock);
	while (!l->stop && !l->lost) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += every;
		pthread_cond_timedwait(&l->wake, &l->lock, &ts);
		if (!l->stop && lock_write(l) != 0 && !l->lost)
			log_warn("cannot renew the lock of %s (locks/%s); "
				 "trying again in %u s", LOCK_WHAT(&l->info),
				 l->info.id, every);
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

/* What a scan of the other records found. */
struct lock_scan {
	struct repo_lock *self;
	bool wait;			/* pending records after ours */
	struct repo_lock_found found;
	bool stopped_same;		/* a stopped record of our kind and
					 * snapshot was removed */
	struct repo_lock_info blocker;	/* set when the scan gives EBUSY */
};

/* Whether a comes before b in the order of pending locks. */
static bool lock_before(const struct repo_lock_info *a,
			const struct repo_lock_info *b)
{
	if (a->created != b->created)
		return a->created < b->created;
	return strcmp(a->id, b->id) < 0;
}

/* Whether records a and b (both readable) exclude each other: the same
 * volume, or either a prune. */
static bool lock_conflicts(const struct repo_lock_info *a,
			   const struct repo_lock_info *b)
{
	return a->kind == REPO_LOCK_PRUNE || b->kind == REPO_LOCK_PRUNE ||
	       strcmp(a->volume, b->volume) == 0;
}

/*
 * Whether taker me removes li, a conflicting record that blocks nothing
 * (dead, expired or abandoned; see repo.h): an ingest removes any, a
 * forget those of forgets, a prune those of prunes.  What is left tells
 * the next ingest, or forget, of the volume what a stopped run did.
 */
static bool lock_removes(const struct repo_lock_info *me,
			 const struct repo_lock_info *li)
{
	return li->kind == REPO_LOCK_PRUNE || me->kind == REPO_LOCK_INGEST ||
	       li->kind == me->kind;
}

/* "an ingest", "a forget", "a prune" */
static const char *lock_a(enum repo_lock_kind k)
{
	static const char *const a[] = { "an ingest", "a forget", "a prune" };

	return a[k];
}

/* "an ingest", "another ingest", "a forget"... of li, seen by me. */
static const char *lock_who(const struct repo_lock_info *me,
			    const struct repo_lock_info *li)
{
	static const char *const other[] = { "another ingest",
					     "another forget",
					     "another prune" };

	return li->kind == me->kind ? other[li->kind] : lock_a(li->kind);
}

/* Removes a record that blocks nothing, noting what it tells. */
static int lock_clear_stopped(struct lock_scan *ls,
			      const struct repo_lock_info *li)
{
	const struct repo_lock_info *me = &ls->self->info;
	char holder[512];

	if (li->status == REPO_LOCK_ABANDONED)
		log_info("volume '%s': an earlier ingest of snapshot '%s' "
			 "stopped early (locks/%s); chunks it stored are not "
			 "sent again", li->volume, li->snapshot, li->id);
	else
		log_warn("%s: removing the lock locks/%s of %s that %s (%s)",
			 LOCK_WHAT(li), li->id, lock_a(li->kind),
			 li->status == REPO_LOCK_DEAD ? "is no longer running"
						      : "stopped renewing it",
			 repo_lock_holder(li, holder, sizeof(holder)));
	if (repo_remove_lock(ls->self->repo, li->id) != 0)
		return EIO;	/* logged */
	/* a pending record never reached the point of changing anything */
	if (strcmp(li->state, "pending") == 0)
		return 0;
	if (li->kind == me->kind && strcmp(li->snapshot, me->snapshot) == 0)
		ls->stopped_same = true;
	if (li->kind != REPO_LOCK_INGEST)
		return 0;
	ls->found.leftovers = true;
	if (strcmp(li->snapshot, me->snapshot) == 0 && li->manifest[0])
		LOCK_TEXT(ls->found.predecessor, li->manifest);
	return 0;
}

static int lock_scan_cb(void *arg, const struct repo_lock_info *li)
{
	struct lock_scan *ls = arg;
	const struct repo_lock_info *me = &ls->self->info;

	if (strcmp(li->id, me->id) == 0 ||
	    (li->status != REPO_LOCK_GARBLED && !lock_conflicts(me, li)))
		return 0;
	switch (li->status) {
	case REPO_LOCK_DEAD:
	case REPO_LOCK_EXPIRED:
	case REPO_LOCK_ABANDONED:
		return lock_removes(me, li) ? lock_clear_stopped(ls, li) : 0;
	case REPO_LOCK_GARBLED:
		ls->blocker = *li;
		return EBUSY;
	case REPO_LOCK_LIVE:
		break;
	}
	if (strcmp(li->state, "held") == 0 || lock_before(li, me)) {
		ls->blocker = *li;
		return EBUSY;
	}
	if (!ls->wait)
		log_debug("%s: %s is starting at the same time (locks/%s); "
			  "waiting for it to give way", LOCK_WHAT(me),
			  lock_who(me, li), li->id);
	ls->wait = true;
	return 0;
}

/* Says why taker me cannot have its lock: b holds it. */
static void lock_refused(const struct repo_lock_info *me,
			 const struct repo_lock_info *b)
{
	char holder[512];

	if (b->status == REPO_LOCK_GARBLED) {
		if (me->kind == REPO_LOCK_PRUNE)
			log_error("the repository may be locked: the lock "
				  "record locks/%s cannot be read; if no "
				  "ingest, forget or prune runs, remove it "
				  "with 'cbtfs-repo unlock REPO --force'",
				  b->id);
		else
			log_error("volume '%s' may be locked: the lock record "
				  "locks/%s cannot be read; if no ingest of "
				  "the volume runs, remove it with "
				  "'cbtfs-repo unlock REPO --force'",
				  me->volume, b->id);
		return;
	}
	repo_lock_holder(b, holder, sizeof(holder));
	if (b->kind == REPO_LOCK_PRUNE)
		log_error("the repository is being pruned (%s; object "
			  "locks/%s): no ingest, forget or other prune may "
			  "start until it ends; run this again then, or if "
			  "that prune is dead, once its lease of %u s has "
			  "run out ('cbtfs-repo unlock REPO --force' removes "
			  "it before)", holder, b->id, b->lease);
	else if (me->kind == REPO_LOCK_PRUNE)
		log_error("cannot prune now: volume '%s' is locked by %s "
			  "(%s; object locks/%s), which may use chunks that "
			  "no manifest refers to yet; prune when it has "
			  "finished, or if it is dead, once its lease of %u s "
			  "has run out ('cbtfs-repo unlock REPO --force' "
			  "removes it before)", b->volume, lock_who(me, b),
			  holder, b->id, b->lease);
	else
		log_error("volume '%s' is locked by %s (%s; object locks/%s); "
			  "wait for it to finish; if you know it is dead, "
			  "'cbtfs-repo unlock REPO --volume %s --force' "
			  "removes the lock, which otherwise ends %us after "
			  "its last renewal", me->volume, lock_who(me, b),
			  holder, b->id, b->volume, b->lease);
}

static void lock_free(struct repo_lock *l)
{
	pthread_mutex_destroy(&l->lock);
	pthread_cond_destroy(&l->wake);
	free(l);
}

/*
 * Lists the records until no conflicting one is live (0), one blocks
 * (EBUSY, logged), or the wait for pending ones ordered after ours ends
 * (EBUSY or EINTR, logged); renews our pending record meanwhile.  The
 * caller holds l->lock.
 */
static int lock_settle(struct repo_lock *l, struct lock_scan *ls,
		       volatile sig_atomic_t *stop)
{
	double limit = l->info.lease / 2.0 < LOCK_SETTLE_SECONDS
			       ? l->info.lease / 2.0
			       : LOCK_SETTLE_SECONDS;
	double deadline = boot_seconds() + limit;
	int err;

	for (;;) {
		ls->wait = false;
		err = repo_list_locks(l->repo, lock_scan_cb, ls);
		if (err == EBUSY)
			lock_refused(&l->info, &ls->blocker);
		if (err != 0 || !ls->wait)
			return err;
		if (stop != NULL && *stop) {
			log_error("interrupted while waiting for the lock of "
				  "%s", LOCK_WHAT(&l->info));
			return EINTR;
		}
		if (boot_seconds() > deadline) {
			log_error("%s: another ingest, forget or prune "
				  "started at the same time and neither "
				  "finished starting within %.0f s; try again",
				  LOCK_WHAT(&l->info), limit);
			return EBUSY;
		}
		sleep_ms(100 + backoff_ms(1, 100, 200), stop);
		if (boot_seconds() - l->last_ok >= renew_every(l) &&
		    (err = lock_write(l)) != 0)
			return err;
	}
}

/* Takes a lock of kind for req (see repo.h); *ls receives what the scan
 * found. */
static int lock_take(struct repo *r, enum repo_lock_kind kind,
		     const struct repo_lock_request *req,
		     struct repo_lock **lp, struct lock_scan *ls)
{
	struct repo_lock *l = calloc(1, sizeof(*l));
	pthread_condattr_t ca;
	int err;

	*lp = NULL;
	memset(ls, 0, sizeof(*ls));
	if (l == NULL)
		return ENOMEM;
	ls->self = l;
	l->repo = r;
	pthread_mutex_init(&l->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->wake, &ca);
	pthread_condattr_destroy(&ca);
	uuid_new(l->info.id);
	l->info.kind = kind;
	LOCK_TEXT(l->info.volume, req->volume);
	LOCK_TEXT(l->info.snapshot, req->snapshot);
	LOCK_TEXT(l->info.manifest, req->manifest ? req->manifest : "");
	LOCK_TEXT(l->info.state, "pending");
	proc_id_self(&l->info.holder);
	l->info.created = (int64_t)time(NULL);
	l->info.lease = lease_seconds();

	pthread_mutex_lock(&l->lock);
	err = lock_write(l);
	if (err == 0)
		err = lock_settle(l, ls, req->stop);
	if (err == 0) {
		LOCK_TEXT(l->info.state, "held");
		err = lock_write(l);
	}
	pthread_mutex_unlock(&l->lock);
	if (err == 0) {
		err = pthread_create(&l->renewer, NULL, lock_renewer, l);
		if (err != 0)
			log_error("cannot start the thread renewing the lock "
				  "of %s: %s", LOCK_WHAT(&l->info),
				  ERRSTR(err));
		l->renewing = err == 0;
	}
	if (err != 0) {
		repo_remove_lock(r, l->info.id);
		lock_free(l);
		return err;
	}
	*lp = l;
	return 0;
}

int repo_lock_volume(struct repo *r, const struct repo_lock_request *req,
		     struct repo_lock **lp, struct repo_lock_found *found)
{
	struct lock_scan ls;
	int err = lock_take(r, REPO_LOCK_INGEST, req, lp, &ls);

	*found = ls.found;
	return err;
}

int repo_lock_forget(struct repo *r, const char *volume,
		     struct repo_lock **lp, bool *predecessor)
{
	struct repo_lock_request req = { volume, LOCK_FORGET_SNAPSHOT, NULL,
					 NULL };
	struct lock_scan ls;
	int err = lock_take(r, REPO_LOCK_FORGET, &req, lp, &ls);

	if (predecessor != NULL)
		*predecessor = ls.stopped_same;
	return err;
}

int repo_lock_prune(struct repo *r, struct repo_lock **lp)
{
	struct repo_lock_request req = { "", "", NULL, NULL };
	struct lock_scan ls;

	return lock_take(r, REPO_LOCK_PRUNE, &req, lp, &ls);
}

int repo_lock_confirm(struct repo_lock *l)
{
	char key[LOCK_KEY_SIZE];
	int err;

	pthread_mutex_lock(&l->lock);
	snprintf(key, sizeof(key), LOCK_PREFIX "%s", l->info.id);
	err = l->lost ? ESTALE : store_head(l->repo->store, key, NULL);
	if (err == ENOENT) {
		log_error("the lock of %s (locks/%s) was removed by someone "
			  "else: another ingest, forget or prune may have run "
			  "meanwhile, so this %s stops here",
			  LOCK_WHAT(&l->info), l->info.id,
			  repo_lock_kind_name(l->info.kind));
		l->lost = true;
		err = ESTALE;
	}
	if (err == 0)
		err = lock_write(l);
	pthread_mutex_unlock(&l->lock);
	return err;
}

void repo_unlock(struct repo_lock *l, bool clean)
{
	int err;

	if (l == NULL)
		return;
	if (l->renewing) {
		pthread_mutex_lock(&l->lock);
		l->stop = true;
		pthread_cond_signal(&l->wake);
		pthread_mutex_unlock(&l->lock);
		pthread_join(l->renewer, NULL);
	}
	if (l->lost) {
		lock_free(l);	/* the record is not ours to touch */
		return;
	}
	if (clean || l->info.kind != REPO_LOCK_INGEST) {
		err = repo_remove_lock(l->repo, l->info.id);
	} else {
		LOCK_TEXT(l->info.state, "abandoned");
		err = lock_write(l);
	}
	if (err != 0)
		log_warn("could not release the lock of %s (locks/%s); it "
			 "stops blocking others when its lease ends, %u s "
			 "from now", LOCK_WHAT(&l->info), l->info.id,
			 l->info.lease);
	lock_free(l);
}

/* ---- forget and prune ------------------------------------------------ */

int repo_delete_manifest(struct repo *r, const char *id)
{
	char key[16 + CBTFS_UUID_LEN];

	snprintf(key, sizeof(key), "snapshots/%s", id);
	return store_del(r->store, key);
}

int repo_has_manifest(struct repo *r, const char *id, bool *exists)
{
	char key[16 + CBTFS_UUID_LEN];
	int err;

	snprintf(key, sizeof(key), "snapshots/%s", id);
	err = store_head(r->store, key, NULL);
	*exists = err == 0;
	return err == ENOENT ? 0 : err;
}

struct list_chunks_ctx {
	repo_chunk_cb *cb;
	void *arg;
};

/* One key of the listing of chunks/: "chunks/<2 hex>/<64 hex>". */
static int list_chunks_cb(void *arg, const char *key, uint64_t size)
{
	struct list_chunks_ctx *ctx = arg;
	char canon[REPO_CHUNK_KEY_LEN + 1];
	unsigned char id[CODEC_ID_LEN];

	if (strlen(key) != REPO_CHUNK_KEY_LEN ||
	    hex_decode(key + strlen("chunks/xx/"), id, CODEC_ID_LEN) != 0)
		return 0;	/* not a chunk object */
	repo_chunk_key(id, canon);
	if (strcmp(key, canon) != 0)
		return 0;	/* not where a read would look for it */
	return ctx->cb(ctx->arg, id, size);
}

int repo_list_chunks(struct repo *r, repo_chunk_cb *cb, void *arg)
{
	struct list_chunks_ctx ctx = { cb, arg };

	return store_list(r->store, "chunks/", list_chunks_cb, &ctx);
}

/* Deletes the objects of n ids, each named by keyf into keys of size
 * klen + 1. */
static int delete_ids(struct repo *r, const unsigned char (*ids)[CODEC_ID_LEN],
		      size_t n, size_t klen,
		      void (*keyf)(const unsigned char *, char *))
{
	char *text, **keys;
	size_t i;
	int err;

	if (n == 0)
		return 0;
	text = malloc(n * (klen + 1));
	keys = malloc(n * sizeof(*keys));
	if (text == NULL || keys == NULL) {
		free(text);
		free(keys);
		log_error("deleting %zu objects: out of memory", n);
		return ENOMEM;
	}
	for (i = 0; i < n; i++) {
		keys[i] = text + i * (klen + 1);
		keyf(ids[i], keys[i]);
	}
	err = store_del_many(r->store, (const char *const *)keys, n);
	free(text);
	free(keys);
	return err;
}

int repo_delete_chunks(struct repo *r,
		       const unsigned char (*ids)[CODEC_ID_LEN], size_t n)
{
	return delete_ids(r, ids, n, REPO_CHUNK_KEY_LEN, repo_chunk_key);
}

int repo_delete_damage_records(struct repo *r,
			       const unsigned char (*ids)[CODEC_ID_LEN],
			       size_t n)
{
	return delete_ids(r, ids, n, strlen(DAMAGE_PREFIX) + CODEC_ID_HEX_LEN,
			  damage_key);
}
