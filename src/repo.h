/*
 * Repository: the config, chunk objects, snapshot manifests and locks of
 * one repository in one store.  The only code that knows object names and
 * the protobuf messages; everything above works with the plain structs here.
 *
 * Object names: "config", "chunks/<2 hex>/<64 hex>", "snapshots/<uuid>",
 * "locks/<uuid>".  A snapshot exists once its manifest exists (the commit
 * point); callers put every chunk before the manifest that refers to it.
 *
 * All functions are thread-safe: a struct repo is immutable after
 * repo_open() and the store is thread-safe.
 */
#ifndef CBTFS_REPO_H
#define CBTFS_REPO_H

#include <stdbool.h>
#include <stdint.h>

#include "codec.h"
#include "store.h"

#define REPO_FORMAT_VERSION 1
#define REPO_MIN_CHUNK_SIZE (64u << 10)
#define REPO_MAX_CHUNK_SIZE (16u << 20)
#define REPO_DEFAULT_CHUNK_SIZE (1u << 20)
#define REPO_DEFAULT_ZSTD_LEVEL 3

struct repo {
	struct store *store;
	char id[CBTFS_UUID_LEN + 1];
	uint32_t chunk_size;
	int zstd_level;		/* 0: chunks stored uncompressed */
};

/* One manifest entry; an id of all zero bytes means a zero chunk. */
struct manifest_entry {
	uint64_t index;
	unsigned char id[CODEC_ID_LEN];
};

struct manifest_stats {
	uint64_t bytes_read;
	uint64_t chunks_read;
	uint64_t chunks_changed;
	uint64_t chunks_new;
	uint64_t chunks_reused;
	uint64_t chunks_zero;
	uint64_t bytes_stored;
};

struct manifest {
	char id[CBTFS_UUID_LEN + 1];
	char *volume;
	char *name;
	char parent_id[CBTFS_UUID_LEN + 1];	/* "" for a root snapshot */
	uint64_t capacity;
	uint32_t chunk_size;
	int64_t created;
	char *csi_handle;	/* "" when unknown */
	char *csi_driver;
	char *changes;
	struct manifest_stats stats;
	size_t n_entries;
	struct manifest_entry *entries;	/* sorted by index, unique */
};

void manifest_free(struct manifest *m);

/* Checks a volume name ("ns/pvc") or snapshot name; on failure logs why
 * and returns EINVAL. */
int repo_check_volume_name(const char *volume);
int repo_check_snapshot_name(const char *name);

/* Checks a chunk size: a power of two from 64 KiB to 16 MiB. */
int repo_check_chunk_size(uint64_t chunk_size);

/*
 * Creates a repository at url (a directory that is missing or empty).
 * chunk_size: a power of two within the limits above.
 */
int repo_init(const char *url, const struct store_opts *opts,
	      uint32_t chunk_size, char *id_out);

/* Opens an existing repository.  NULL with *errp set (logged). */
struct repo *repo_open(const char *url, const struct store_opts *opts,
		       int *errp);
void repo_close(struct repo *r);

/* Object key of a chunk: buffer of at least REPO_CHUNK_KEY_LEN + 1. */
#define REPO_CHUNK_KEY_LEN (7 + 3 + CODEC_ID_HEX_LEN)
void repo_chunk_key(const unsigned char id[CODEC_ID_LEN], char *key);

/*
 * Encodes and stores one chunk of chunk_size bytes whose id is id.
 * *stored receives the encoded size.
 */
int repo_put_chunk(struct repo *r, const unsigned char id[CODEC_ID_LEN],
		   const void *data, uint64_t *stored);

/*
 * Fetches and verifies a chunk into out: its chunk_size bytes start at
 * out->data + *off.  A chunk that is missing or fails verification is
 * logged with its key and gives EIO.
 */
int repo_get_chunk(struct repo *r, const unsigned char id[CODEC_ID_LEN],
		   struct buf *out, size_t *off);

/* Writes the manifest object (the commit point); *stored receives its
 * encoded size. */
int repo_put_manifest(struct repo *r, const struct manifest *m,
		      uint64_t *stored);
/* Reads and verifies snapshots/<id>; *mp is freed with manifest_free(). */
int repo_get_manifest(struct repo *r, const char *id, struct manifest **mp);

/* Calls cb for the id of every manifest in the store. */
typedef int repo_snapshot_cb(void *arg, const char *id);
int repo_list_manifests(struct repo *r, repo_snapshot_cb *cb, void *arg);

/*
 * Takes the ingest lock for volume: writes locks/<uuid> naming the volume,
 * host and pid, then checks that no other lock on the volume younger than
 * REPO_LOCK_STALE_SECONDS exists.  EBUSY (logged, naming the other lock)
 * if one does.  lock_id receives the uuid for repo_unlock().
 */
#define REPO_LOCK_STALE_SECONDS (24 * 3600)
int repo_lock_volume(struct repo *r, const char *volume,
		     char lock_id[CBTFS_UUID_LEN + 1]);
void repo_unlock(struct repo *r, const char *lock_id);

#endif
