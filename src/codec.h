/*
 * Chunk codec: ids, framing, compression, encryption, verification.  Pure
 * functions, no I/O, safe to call from any thread.
 *
 * Every object but "config" and the short-lived text records under "locks/"
 * and "damaged/" is a frame (all integers little-endian):
 *
 *   offset  size  field
 *   0       4     magic "CBTc"
 *   4       1     version (1)
 *   5       1     flags: CODEC_F_ZSTD, CODEC_F_ENCRYPTED, CODEC_F_DIGEST
 *   6       2     reserved, zero
 *   8       8     plaintext length
 *   16      32    SHA-256 of the plaintext (only with CODEC_F_DIGEST)
 *   ..            payload: zstd frame, or the plaintext when not compressed
 *
 * With CODEC_F_ENCRYPTED (never together with CODEC_F_DIGEST) the payload
 * is sealed with AES-256-GCM under the data key: a random 12-byte nonce,
 * the ciphertext of the (compressed) payload, the 16-byte tag.  The
 * authenticated data is the 16-byte header followed by the object's name
 * in the repository, so a frame verifies under its own name only.
 *
 * Chunks are framed without a digest: their name is their id, and decoding
 * re-hashes the plaintext and compares it with the id the caller expects
 * (SHA-256, or HMAC-SHA256 under the id key when encrypted).  Unencrypted
 * manifests carry CODEC_F_DIGEST, verified the same way; encrypted ones
 * are authenticated by the tag.  A frame that does not verify, or whose
 * encryption flag does not match the caller's keys, is corruption:
 * decoding fails with EBADMSG and never hands out the bytes.
 *
 * Keys: an encrypted repository has a random 32-byte master key, stored
 * sealed (codec_wrap_key()) under a key derived from a passphrase
 * (codec_kdf_scrypt()).  struct codec_keys holds the keys derived from the
 * master key, for the process's lifetime; nothing here stores a key.
 *
 * Returns and logs: functions return 0 or a positive errno (constructors:
 * NULL with *errp) and say at each which errors they log: a failure of
 * OpenSSL or of zstd compression is logged with the library's message;
 * EBADMSG (corruption, a zstd frame that does not decompress included)
 * never is, since the caller knows which object it was.
 */
#ifndef CBTFS_CODEC_H
#define CBTFS_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define CODEC_ID_LEN 32
#define CODEC_ID_HEX_LEN (2 * CODEC_ID_LEN)
#define CODEC_HEADER_LEN 16

#define CODEC_F_ZSTD 0x01
#define CODEC_F_ENCRYPTED 0x02
#define CODEC_F_DIGEST 0x04

/* The id of an all-zero chunk in manifests and chunk maps: 32 zero bytes. */
extern const unsigned char codec_zero_id[CODEC_ID_LEN];

/* Chunk id of data in a repository without encryption: SHA-256.  Also the
 * digest of CODEC_F_DIGEST. */
void codec_chunk_id(const void *data, size_t len,
		    unsigned char id[CODEC_ID_LEN]);

bool codec_is_zero(const void *data, size_t len);
/* memcmp() of two ids, for qsort() and bsearch(). */
int codec_id_cmp(const void *a, const void *b);
bool codec_id_is_zero(const unsigned char id[CODEC_ID_LEN]);

/* ---- keys --------------------------------------------------------------- */

#define CODEC_KEY_LEN 32
#define CODEC_NONCE_LEN 12
#define CODEC_TAG_LEN 16
/* What sealing adds to a payload: nonce and tag. */
#define CODEC_SEAL_OVERHEAD (CODEC_NONCE_LEN + CODEC_TAG_LEN)
/* A wrapped key: nonce, the sealed key, tag. */
#define CODEC_WRAPPED_KEY_LEN (CODEC_KEY_LEN + CODEC_SEAL_OVERHEAD)

/* The keys derived from a master key (data key, id key).  Opaque and
 * immutable once made: any thread may use it. */
struct codec_keys;

/*
 * Derives the keys of master: HKDF-Expand-SHA256 of the master key with
 * the labels "cbtfs v1 data key" and "cbtfs v1 chunk id key".  Returns the
 * keys, or NULL with *errp set: ENOMEM, or EIO (logged, with OpenSSL's
 * message).  The caller frees them with codec_keys_destroy().
 */
struct codec_keys *codec_keys_create(const unsigned char master[CODEC_KEY_LEN],
				     int *errp);
/* Erases and frees the keys; NULL is fine. */
void codec_keys_destroy(struct codec_keys *k);

/* Chunk id of data in an encrypted repository: HMAC-SHA256 under the id
 * key.  Returns 0, ENOMEM, or EIO (logged). */
int codec_keyed_id(const struct codec_keys *k, const void *data, size_t len,
		   unsigned char id[CODEC_ID_LEN]);

/* Fills buf with n random bytes from OpenSSL's generator.  Returns 0 or
 * EIO (logged). */
int codec_random(void *buf, size_t n);

/*
 * Derives a key from a passphrase with scrypt (RFC 7914): n (a power of
 * two), r and p are its cost parameters, memory about 128 * n * r bytes.
 * Returns 0, or ENOMEM/EIO (logged, with OpenSSL's message).
 */
int codec_kdf_scrypt(const void *pass, size_t pass_len,
		     const unsigned char *salt, size_t salt_len, uint64_t n,
		     uint32_t r, uint32_t p, unsigned char key[CODEC_KEY_LEN]);

/*
 * Seals key under kek with AES-256-GCM, binding aad (aad_len bytes) to
 * it: wrapped = random nonce, ciphertext, tag.  Returns 0 or EIO/ENOMEM
 * (logged).
 */
int codec_wrap_key(const unsigned char kek[CODEC_KEY_LEN], const void *aad,
		   size_t aad_len, const unsigned char key[CODEC_KEY_LEN],
		   unsigned char wrapped[CODEC_WRAPPED_KEY_LEN]);
/*
 * Opens what codec_wrap_key() sealed into key.  Returns 0, EBADMSG (not
 * logged) when it does not authenticate (another kek, other aad, or
 * altered), or EIO/ENOMEM (logged).
 */
int codec_unwrap_key(const unsigned char kek[CODEC_KEY_LEN], const void *aad,
		     size_t aad_len, const unsigned char *wrapped,
		     size_t wrapped_len, unsigned char key[CODEC_KEY_LEN]);

/* ---- frames ------------------------------------------------------------- */

/* How the frames of an encrypted repository are sealed: its keys, and the
 * name of the object (e.g. "chunks/ab/ab12...", "snapshots/<uuid>"), which
 * is authenticated with the frame. */
struct codec_seal {
	const struct codec_keys *keys;
	const char *name;
};

/*
 * Frames len bytes of data into out (replacing its contents).  level is the
 * zstd level, 0 for no compression (stored raw); data that does not shrink
 * (judged on samples first, so that random data costs little) is stored
 * raw too.  with_digest adds the
 * plaintext SHA-256 (for objects not named by their id).  seal, if not
 * NULL, encrypts the frame (with_digest is then ignored: the tag
 * authenticates, and a plaintext digest would say what the content is).
 * Returns 0 or ENOMEM/EIO (logged).
 */
int codec_encode(const void *data, size_t len, int level, bool with_digest,
		 const struct codec_seal *seal, struct buf *out);

/*
 * Framing without a copy, for chunks (no digest): the caller puts len
 * bytes of plaintext at b->data + codec_plain_offset(seal != NULL), in a
 * buffer of at least codec_frame_room(len, level, seal != NULL) bytes,
 * and codec_encode_in_place() turns b into the frame (b->len set), as
 * codec_encode() would make it; data stored uncompressed is not moved.
 * The plaintext is gone afterwards.  Returns 0, or ENOMEM/EIO/EINVAL (a
 * buffer too small) logged.
 */
size_t codec_plain_offset(bool sealed);
size_t codec_frame_room(size_t len, int level, bool sealed);
int codec_encode_in_place(struct buf *b, size_t len, int level,
			  const struct codec_seal *seal);

/*
 * Decodes a frame into out (replacing its contents).  seal: NULL in a
 * repository without encryption, else its keys and the object's name.
 * expect_id, if not NULL, is the id the plaintext must hash to (under the
 * seal's id key, if any); frames with a digest are checked against it too.
 * max_len bounds the plaintext length.  Returns 0, EBADMSG for a corrupt
 * or unverifiable frame, or one whose encryption does not match seal (*why
 * says what is wrong; nothing logged), or ENOMEM/EIO (logged).
 */
int codec_decode(const void *frame, size_t flen,
		 const struct codec_seal *seal,
		 const unsigned char *expect_id, size_t max_len,
		 struct buf *out, const char **why);

/*
 * As codec_decode(), but leaves the plaintext in b itself, at offset *off
 * (b->len - *off bytes): an uncompressed frame is verified (and decrypted)
 * where it is, without a copy; a compressed one is replaced by its
 * plaintext (*off 0).  On failure b->len is 0.
 */
int codec_decode_buf(struct buf *b, const struct codec_seal *seal,
		     const unsigned char *expect_id, size_t max_len,
		     size_t *off, const char **why);

#endif
