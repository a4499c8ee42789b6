/*
 * Chunk codec: ids, framing, compression, verification.  Pure functions, no
 * I/O, safe to call from any thread.
 *
 * Every object but "config" and the short-lived text records under "locks/"
 * is a frame (all integers little-endian):
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
 * CODEC_F_ENCRYPTED (AES-256-GCM, nonce before and tag after the payload) is
 * reserved in format v1; this version neither writes nor reads it.
 *
 * Chunks are framed without a digest: their name is their id, and decoding
 * re-hashes the plaintext and compares it with the id the caller expects.
 * Manifests carry CODEC_F_DIGEST, verified the same way.  A frame that does
 * not verify is corruption: codec_decode() fails with EBADMSG and never
 * hands out the bytes.
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

/* Chunk id of data: SHA-256. */
void codec_chunk_id(const void *data, size_t len,
		    unsigned char id[CODEC_ID_LEN]);

bool codec_is_zero(const void *data, size_t len);
/* memcmp() of two ids, for qsort() and bsearch(). */
int codec_id_cmp(const void *a, const void *b);
bool codec_id_is_zero(const unsigned char id[CODEC_ID_LEN]);

/*
 * Frames len bytes of data into out (replacing its contents).  level is the
 * zstd level, 0 for no compression (stored raw).  with_digest adds the
 * plaintext SHA-256 (for objects not named by their id).  Returns 0 or
 * ENOMEM/EIO.
 */
int codec_encode(const void *data, size_t len, int level, bool with_digest,
		 struct buf *out);

/*
 * Decodes a frame into out (replacing its contents).  expect_id, if not
 * NULL, is the id the plaintext must hash to; frames with a digest are
 * checked against it too.  max_len bounds the plaintext length.  Returns 0,
 * EBADMSG for a corrupt or unverifiable frame (*why says what is wrong),
 * ENOTSUP for an encrypted frame, or ENOMEM.
 */
int codec_decode(const void *frame, size_t flen,
		 const unsigned char *expect_id, size_t max_len,
		 struct buf *out, const char **why);

/*
 * As codec_decode(), but leaves the plaintext in b itself, at offset *off
 * (b->len - *off bytes): an uncompressed frame is verified where it is,
 * without a copy; a compressed one is replaced by its plaintext (*off 0).
 */
int codec_decode_buf(struct buf *b, const unsigned char *expect_id,
		     size_t max_len, size_t *off, const char **why);

#endif
