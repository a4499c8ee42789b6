/*
 * Repository: the config, chunk objects, snapshot manifests, locks and
 * damage records of one repository in one store.  The only code that knows
 * object names and the protobuf messages; everything above works with the
 * plain structs here.
 *
 * Object names: "config", "chunks/<2 hex>/<64 hex>", "snapshots/<uuid>",
 * "locks/<uuid>", "damaged/<64 hex>".  A snapshot exists once its manifest
 * exists (the commit point); callers put every chunk before the manifest
 * that refers to it.
 *
 * Encryption (optional, chosen at init): the repository layer owns the
 * keys and the chunk-id rule.  Callers compute ids with repo_chunk_id()
 * and hand plaintext to repo_put_chunk()/repo_put_manifest(); sealing,
 * opening and the name each frame is bound to are done here.
 *
 * Conventions: functions return 0 or a positive errno, and log what failed
 * (with the object's key) before returning it, unless their comment says
 * otherwise; the store's errors are logged by the store.  All functions
 * are thread-safe: a struct repo is immutable after repo_open() and the
 * store is thread-safe; a struct repo_lock has its own mutex.
 */
#ifndef CBTFS_REPO_H
#define CBTFS_REPO_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "codec.h"
#include "passphrase.h"
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
	struct codec_keys *keys;	/* NULL: not encrypted */
};

/* One manifest entry; an id of all zero bytes means a zero chunk. */
struct manifest_entry {
	uint64_t index;
	unsigned char id[CODEC_ID_LEN];
};

/*
 * The statistics a manifest records of the ingest that made it, listed
 * once: X(field, json) is a field of struct manifest_stats and of the
 * protobuf SnapshotStats (same name), and its name in JSON output.  The
 * order is that of the index's columns and of its manifest digest
 * (index.c): adding or moving a field changes the index schema.
 */
#define MANIFEST_STATS(X)                                                   \
	X(bytes_read, "read_bytes")	  /* read from the device */        \
	X(chunks_read, "chunks_read")                                       \
	X(chunks_changed, "chunks_changed") /* entries of the manifest */   \
	X(chunks_new, "chunks_new")	  /* uploaded by the ingest */      \
	X(chunks_reused, "chunks_reused") /* changed, already stored */     \
	X(chunks_zero, "chunks_zero")	  /* read and found all zero */     \
	X(bytes_stored, "stored_bytes")	  /* encoded bytes it uploaded */

struct manifest_stats {
#define X(field, json) uint64_t field;
	MANIFEST_STATS(X)
#undef X
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

/* The one copy/free pair for manifests: manifest_clear() frees what m
 * owns (strings, entries) and zeroes it; manifest_free() frees m too;
 * manifest_dup_header() copies m without its entries (NULL if out of
 * memory). */
void manifest_clear(struct manifest *m);
void manifest_free(struct manifest *m);
struct manifest *manifest_dup_header(const struct manifest *m);

/* Checks a volume name ("ns/pvc") or snapshot name; on failure logs why
 * and returns EINVAL. */
int repo_check_volume_name(const char *volume);
int repo_check_snapshot_name(const char *name);

/* Checks a chunk size: a power of two from 64 KiB to 16 MiB; EINVAL
 * (logged) if not. */
int repo_check_chunk_size(uint64_t chunk_size);

/* Cost of scrypt for new passphrases: 64 MiB, about half a second. */
#define REPO_KDF_N (1u << 16)
#define REPO_KDF_R 8
#define REPO_KDF_P 4
#define REPO_SALT_LEN 32

/*
 * Creates a repository at url (a directory that is missing or empty, or an
 * empty S3 prefix).  chunk_size: a power of two within the limits above.
 * encrypt: NULL for a repository without encryption, else where its
 * passphrase comes from (asked twice on a terminal), once url is found
 * empty.  id_out (CBTFS_UUID_LEN + 1 bytes) receives the new repository's
 * id.  EEXIST (logged) if url is a repository already or not empty; ENOKEY
 * (logged) if encrypt gives no passphrase.
 */
int repo_init(const char *url, const struct store_opts *opts,
	      uint32_t chunk_size, const struct passphrase_src *encrypt,
	      char *id_out);

/*
 * Opens an existing repository: reads and checks its config, and for an
 * encrypted one gets the passphrase from pass (NULL: CBTFS_PASSWORD or a
 * prompt on a terminal) and unwraps the master key, before anything else
 * is read.  NULL with *errp set (logged): ENOENT for no config, EBADMSG
 * for a garbled one, ENOTSUP for a version or feature this cbtfs cannot
 * read, ENOKEY when an encrypted repository gets no passphrase, EACCES
 * for a wrong passphrase (or a config altered since it was written).  The
 * caller frees it with repo_close(), which erases the keys.
 */
struct repo *repo_open(const char *url, const struct store_opts *opts,
		       const struct passphrase_src *pass, int *errp);
void repo_close(struct repo *r);

/*
 * Changes the passphrase of the encrypted repository at url: checks the
 * current one (from old) first, then gets the new one (from new_pass,
 * asked twice on a terminal) and rewrites the config with a new salt and
 * the same master key wrapped anew, in one atomic put.  Chunks, manifests
 * and ids do not change.  Errors as repo_open(); EINVAL (logged) for a
 * repository without encryption.
 */
int repo_passwd(const char *url, const struct store_opts *opts,
		const struct passphrase_src *old,
		const struct passphrase_src *new_pass);

/*
 * The id of a chunk of chunk_size bytes: SHA-256 of data, or in an
 * encrypted repository HMAC-SHA256 under a key derived from its master
 * key.  Returns 0 or ENOMEM/EIO (logged).
 */
int repo_chunk_id(struct repo *r, const void *data,
		  unsigned char id[CODEC_ID_LEN]);

/* Object key of a chunk: buffer of at least REPO_CHUNK_KEY_LEN + 1. */
#define REPO_CHUNK_KEY_LEN (7 + 3 + CODEC_ID_HEX_LEN)
void repo_chunk_key(const unsigned char id[CODEC_ID_LEN], char *key);

/*
 * Chunk buffers are framed where they are: a buffer of repo_chunk_room()
 * bytes holds the chunk's plaintext at repo_chunk_offset() (read there by
 * the caller), and repo_put_chunk() makes the frame around it, with no
 * copy when it is stored uncompressed.  One buffer serves every chunk.
 */
size_t repo_chunk_room(const struct repo *r);
size_t repo_chunk_offset(const struct repo *r);

/*
 * Encodes (and seals) and stores one chunk of chunk_size bytes, at
 * repo_chunk_offset() in b, whose id, from repo_chunk_id(), is id
 * (overwriting a damaged copy); b then holds the encoded chunk.  *stored
 * receives the encoded size.  0 or an errno (logged).
 */
int repo_put_chunk(struct repo *r, const unsigned char id[CODEC_ID_LEN],
		   struct buf *b, uint64_t *stored);

/* Sets *exists if the store holds chunk id (not checking its content).
 * 0 or an errno (logged). */
int repo_chunk_exists(struct repo *r, const unsigned char id[CODEC_ID_LEN],
		      bool *exists);

/*
 * Fetches and verifies (and in an encrypted repository opens) a chunk into
 * out: its chunk_size bytes start at out->data + *off.  Returns 0; ENOENT
 * for a chunk missing from the store and EBADMSG for one that fails
 * verification (both logged with its key; the caller may record the
 * damage); or the store's errno, ENOMEM or EIO (logged).
 */
int repo_get_chunk(struct repo *r, const unsigned char id[CODEC_ID_LEN],
		   struct buf *out, size_t *off);

/* Writes the manifest object (the commit point), sealed in an encrypted
 * repository; *stored (may be NULL) receives its encoded size. */
int repo_put_manifest(struct repo *r, const struct manifest *m,
		      uint64_t *stored);
/*
 * Reads and verifies snapshots/<id>: its digest (in an encrypted
 * repository: its seal, under its own name), fields and entries.
 * *mp is freed with manifest_free().  ENOENT (not logged) if there is no
 * such object; EBADMSG or ENOTSUP (logged, naming it) for one that cannot
 * be read.
 */
int repo_get_manifest(struct repo *r, const char *id, struct manifest **mp);

/* Calls cb for the id of every manifest in the store (other keys under
 * snapshots/ are logged and skipped).  0, cb's non-zero return, or the
 * store's errno. */
typedef int repo_snapshot_cb(void *arg, const char *id);
int repo_list_manifests(struct repo *r, repo_snapshot_cb *cb, void *arg);

/*
 * Damage records: "damaged/<64 hex>" names a chunk found missing or corrupt
 * (by verify, or by a read that failed verification).  The next ingest
 * whose data holds that chunk uploads it again and removes the record;
 * every host learns of it when its index syncs.
 */
/* Writes the record; why is a short reason.  0 or an errno (logged). */
int repo_mark_damaged(struct repo *r, const unsigned char id[CODEC_ID_LEN],
		      const char *why);
/* Removes the record (absent is fine).  0 or an errno (logged). */
int repo_clear_damaged(struct repo *r, const unsigned char id[CODEC_ID_LEN]);
/* Calls cb for the id of every damage record.  0, cb's non-zero return,
 * or an errno (logged). */
typedef int repo_damage_cb(void *arg, const unsigned char id[CODEC_ID_LEN]);
int repo_list_damaged(struct repo *r, repo_damage_cb *cb, void *arg);

/*
 * Locks: "locks/<uuid>" text records with a kind, a holder (struct
 * proc_id), a state and a lease renewed by a thread while the lock is
 * held.  Kinds:
 *   ingest     one per ingest, naming its volume and the snapshot it makes;
 *   forget     one per volume a forget changes (cbtfs-repo forget);
 *   prune      one for the whole repository (cbtfs-repo prune).
 * Two records conflict when they are of the same volume (ingest and
 * forget) or when either is a prune: so a prune excludes every ingest and
 * forget, and they exclude it.  A record is
 *   live       held or pending, its holder not provably dead, its lease
 *              not run out;
 *   dead       its holder is gone (same host, boot and PID namespace);
 *   expired    not renewed within its lease (the holder is on another
 *              host, or hung);
 *   abandoned  left by an ingest that failed after uploading chunks: it
 *              blocks nothing and tells the next ingest of the volume to
 *              look for chunks already stored;
 *   garbled    unreadable: blocks every taker until removed with 'unlock
 *              --force' (so does a prune record for a cbtfs that predates
 *              prune records: it cannot read one).
 * A record of cbtfs before leases (volume=, holder=, created=) is held
 * and expires 24 hours after it was created.  A record renewed in the
 * future by more than its lease (a wrong clock) counts as expired.
 * A taker removes, with a notice, the dead and expired records it
 * conflicts with, except that a forget leaves ingest records to the next
 * ingest of the volume, and a prune leaves every volume's records (they
 * tell that ingest where to look for chunks, and block nothing); an
 * ingest also removes the abandoned records of its volume.
 *
 * Taking a lock: write a pending record, list locks/; go on when no
 * conflicting record is live; give up when one is held, or pending and
 * ordered before ours (created time, then id); wait while only pending
 * records ordered after ours remain (they give up when they see ours),
 * renewing ours.  So of conflicting takers started at the same instant
 * exactly one proceeds, on any store with read-after-write listings: each
 * writes before it lists, so of two, at least one sees the other.
 *
 * A holder whose renewals failed (or that was stopped) for longer than the
 * lease has lost the lock for good, even if a later renewal works: it
 * stops renewing, repo_lock_confirm() says so, and the holder must not
 * commit, rewrite or delete anything after that.
 */
#define REPO_LOCK_LEASE_SECONDS 300	/* CBTFS_LOCK_LEASE overrides */

enum repo_lock_kind {
	REPO_LOCK_INGEST,
	REPO_LOCK_FORGET,
	REPO_LOCK_PRUNE,
};

enum repo_lock_status {
	REPO_LOCK_LIVE,
	REPO_LOCK_DEAD,
	REPO_LOCK_EXPIRED,
	REPO_LOCK_ABANDONED,
	REPO_LOCK_GARBLED,
};

struct repo_lock_info {
	char id[CBTFS_UUID_LEN + 1];
	enum repo_lock_kind kind;
	char volume[520];		/* "" for a prune */
	char snapshot[256];		/* "(forget)" for a forget, "" for a
					 * prune */
	char manifest[CBTFS_UUID_LEN + 1];	/* the manifest an ingest
						 * commits, "" if unknown */
	char state[16];			/* pending, held, abandoned */
	struct proc_id holder;
	int64_t created, renewed;	/* Unix seconds */
	unsigned lease;			/* seconds */
	enum repo_lock_status status;	/* as judged now, from here */
};

/* "live", "dead", ... */
const char *repo_lock_status_name(enum repo_lock_status s);
/* "ingest", "forget", "prune" */
const char *repo_lock_kind_name(enum repo_lock_kind k);
/* "cbtfs-ingest pid 123 on host, making snapshot ..." into buf; returns
 * buf. */
const char *repo_lock_holder(const struct repo_lock_info *li, char *buf,
			     size_t size);

/* Calls cb for every lock record.  0, cb's non-zero return, or an errno
 * (logged). */
typedef int repo_lock_cb(void *arg, const struct repo_lock_info *li);
int repo_list_locks(struct repo *r, repo_lock_cb *cb, void *arg);
/* Deletes locks/<id>.  0 or an errno (logged). */
int repo_remove_lock(struct repo *r, const char *id);

struct repo_lock;

/* What an ingest asks a volume lock for. */
struct repo_lock_request {
	const char *volume;
	const char *snapshot;		/* the snapshot it makes */
	const char *manifest;		/* the id its manifest will have */
	volatile sig_atomic_t *stop;	/* set: give up waiting (may be
					 * NULL) */
};

/* What taking a lock found of earlier ingests of the volume. */
struct repo_lock_found {
	/* a stopped ingest held the volume: chunks it stored may be in
	 * the repository without a manifest */
	bool leftovers;
	/* the manifest a stopped ingest of the same snapshot was about to
	 * commit, "" if none: if it exists, that ingest committed */
	char predecessor[CBTFS_UUID_LEN + 1];
};

/*
 * Takes the lock of req->volume for an ingest: removes the dead, expired
 * and abandoned records of the volume (with a notice, reported in
 * *found), then follows the protocol above.  Returns 0 with *lp set;
 * EBUSY (logged, naming the holder) when another ingest or a forget holds
 * the volume or a prune the repository; EINTR if *req->stop was set while
 * waiting; or an errno (logged).
 */
int repo_lock_volume(struct repo *r, const struct repo_lock_request *req,
		     struct repo_lock **lp, struct repo_lock_found *found);

/*
 * Takes the lock of volume for a forget.  *predecessor (may be NULL) is
 * set when the record of an earlier forget of the volume that stopped
 * early (dead or expired) was removed.  Returns 0 with *lp set, EBUSY
 * (logged, naming the holder), or an errno (logged).
 */
int repo_lock_forget(struct repo *r, const char *volume,
		     struct repo_lock **lp, bool *predecessor);

/*
 * Takes the repository's prune lock: no ingest or forget runs anywhere
 * while it is held, and none starts.  Returns 0 with *lp set, EBUSY
 * (logged, naming the holder of the first live record met), or an errno
 * (logged).
 */
int repo_lock_prune(struct repo *r, struct repo_lock **lp);

/*
 * Renews the lease now, after checking that the record is still there and
 * that no renewal came later than the lease: ESTALE (logged) otherwise,
 * as another taker may then have run.  Call it right before committing,
 * rewriting or deleting.
 */
int repo_lock_confirm(struct repo_lock *l);

/*
 * Releases and frees l.  clean: nothing of this run is left behind (it
 * committed, or stored nothing and found nothing stopped runs stored), so
 * the record is deleted; otherwise it is marked abandoned (an ingest's;
 * other records are deleted).  A record that cannot be updated ends with
 * its lease.
 */
void repo_unlock(struct repo_lock *l, bool clean);

/*
 * ---- forget and prune ----
 * Deleting snapshots and unreferenced objects (see prune.h).
 */
/* Deletes snapshots/<id> (absent is fine).  0 or an errno (logged). */
int repo_delete_manifest(struct repo *r, const char *id);
/* Sets *exists if snapshots/<id> exists.  0 or an errno (logged). */
int repo_has_manifest(struct repo *r, const char *id, bool *exists);

/*
 * Calls cb for every chunk object, with its id and stored size.  Keys
 * under chunks/ that are not where a chunk of that id is kept are skipped
 * (not cbtfs's: never judged, never deleted).  0, cb's non-zero return,
 * or the store's errno.
 */
typedef int repo_chunk_cb(void *arg, const unsigned char id[CODEC_ID_LEN],
			  uint64_t size);
int repo_list_chunks(struct repo *r, repo_chunk_cb *cb, void *arg);

/* Deletes the chunk objects, or the damage records, of n ids, in as few
 * requests as the store allows (absent is fine).  0 or an errno
 * (logged). */
int repo_delete_chunks(struct repo *r,
		       const unsigned char (*ids)[CODEC_ID_LEN], size_t n);
int repo_delete_damage_records(struct repo *r,
			       const unsigned char (*ids)[CODEC_ID_LEN],
			       size_t n);

#endif
