/*
 * Chunk codec: see codec.h for the frame layout and the verification rule.
 */
#include "config.h"

#include <errno.h>
#include <string.h>

#include <openssl/evp.h>
#include <zstd.h>

#include "codec.h"

static const unsigned char codec_magic[4] = { 'C', 'B', 'T', 'c' };
#define CODEC_VERSION 1

const unsigned char codec_zero_id[CODEC_ID_LEN];

void codec_chunk_id(const void *data, size_t len,
		    unsigned char id[CODEC_ID_LEN])
{
	unsigned int n = CODEC_ID_LEN;

	EVP_Digest(data, len, id, &n, EVP_sha256(), NULL);
}

int codec_id_cmp(const void *a, const void *b)
{
	return memcmp(a, b, CODEC_ID_LEN);
}

bool codec_is_zero(const void *data, size_t len)
{
	const unsigned char *p = data;

	/* compare the buffer with itself shifted by one: fast and portable */
	if (len == 0)
		return true;
	return p[0] == 0 && memcmp(p, p + 1, len - 1) == 0;
}

bool codec_id_is_zero(const unsigned char id[CODEC_ID_LEN])
{
	return memcmp(id, codec_zero_id, CODEC_ID_LEN) == 0;
}

static void put_le64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

int codec_encode(const void *data, size_t len, int level, bool with_digest,
		 struct buf *out)
{
	size_t hdr = CODEC_HEADER_LEN + (with_digest ? CODEC_ID_LEN : 0);
	size_t bound = level > 0 ? ZSTD_compressBound(len) : len;
	unsigned char flags = with_digest ? CODEC_F_DIGEST : 0;

	out->len = 0;
	if (buf_reserve(out, hdr + bound) != 0)
		return ENOMEM;
	memcpy(out->data, codec_magic, 4);
	out->data[4] = CODEC_VERSION;
	out->data[6] = out->data[7] = 0;
	put_le64(out->data + 8, len);
	if (with_digest)
		codec_chunk_id(data, len, out->data + CODEC_HEADER_LEN);

	if (level > 0) {
		size_t n = ZSTD_compress(out->data + hdr, bound, data, len,
					 level);

		if (ZSTD_isError(n)) {
			log_error("zstd compression failed: %s",
				  ZSTD_getErrorName(n));
			return EIO;
		}
		out->len = hdr + n;
		if (n < len)
			flags |= CODEC_F_ZSTD;
		else	/* incompressible: stored as it is */
			level = 0;
	}
	if (level <= 0) {
		memcpy(out->data + hdr, data, len);
		out->len = hdr + len;
	}
	out->data[5] = flags;
	return 0;
}

/* What a frame's header says. */
struct frame_info {
	unsigned char flags;
	uint64_t raw_len;
	size_t hdr;		/* header length, digest included */
};

static int parse_header(const unsigned char *f, size_t flen, size_t max_len,
			struct frame_info *fi, const char **why)
{
	if (flen < CODEC_HEADER_LEN || memcmp(f, codec_magic, 4) != 0) {
		*why = "not a cbtfs object (bad magic)";
		return EBADMSG;
	}
	if (f[4] != CODEC_VERSION || f[6] != 0 || f[7] != 0) {
		*why = "unknown object format version";
		return EBADMSG;
	}
	fi->flags = f[5];
	if (fi->flags & ~(CODEC_F_ZSTD | CODEC_F_ENCRYPTED | CODEC_F_DIGEST)) {
		*why = "unknown flags in object header";
		return EBADMSG;
	}
	if (fi->flags & CODEC_F_ENCRYPTED) {
		*why = "object is encrypted, which this version cannot read";
		return ENOTSUP;
	}
	fi->raw_len = get_le64(f + 8);
	if (fi->raw_len > max_len) {
		*why = "plaintext length in header is out of range";
		return EBADMSG;
	}
	fi->hdr = CODEC_HEADER_LEN +
		  ((fi->flags & CODEC_F_DIGEST) ? CODEC_ID_LEN : 0);
	if (flen < fi->hdr) {
		*why = "object is truncated";
		return EBADMSG;
	}
	if (!(fi->flags & CODEC_F_ZSTD) && flen - fi->hdr != fi->raw_len) {
		*why = "stored length differs from header";
		return EBADMSG;
	}
	return 0;
}

/* Checks plaintext against the frame's digest and the expected id. */
static int verify(const unsigned char *plain, size_t len,
		  const unsigned char *digest, const unsigned char *expect_id,
		  const char **why)
{
	unsigned char id[CODEC_ID_LEN];

	if (digest == NULL && expect_id == NULL)
		return 0;
	codec_chunk_id(plain, len, id);
	if (digest != NULL && memcmp(id, digest, CODEC_ID_LEN) != 0) {
		*why = "checksum mismatch (content does not match its digest)";
		return EBADMSG;
	}
	if (expect_id != NULL && memcmp(id, expect_id, CODEC_ID_LEN) != 0) {
		*why = "checksum mismatch (content does not match its id)";
		return EBADMSG;
	}
	return 0;
}

/* codec_decode() of a frame whose header parse_header() accepted. */
static int decode_frame(const unsigned char *f, size_t flen,
			const struct frame_info *fi,
			const unsigned char *expect_id, struct buf *out,
			const char **why)
{
	int err;

	if (buf_reserve(out, fi->raw_len ? fi->raw_len : 1) != 0)
		return ENOMEM;
	if (fi->flags & CODEC_F_ZSTD) {
		size_t n = ZSTD_decompress(out->data, fi->raw_len, f + fi->hdr,
					   flen - fi->hdr);

		if (ZSTD_isError(n) || n != fi->raw_len) {
			*why = ZSTD_isError(n) ? ZSTD_getErrorName(n)
					       : "decompressed length differs";
			return EBADMSG;
		}
	} else {
		memcpy(out->data, f + fi->hdr, fi->raw_len);
	}
	err = verify(out->data, fi->raw_len,
		     (fi->flags & CODEC_F_DIGEST) ? f + CODEC_HEADER_LEN : NULL,
		     expect_id, why);
	out->len = err == 0 ? fi->raw_len : 0;
	return err;
}

int codec_decode(const void *frame, size_t flen,
		 const unsigned char *expect_id, size_t max_len,
		 struct buf *out, const char **why)
{
	struct frame_info fi;
	int err;

	*why = NULL;
	out->len = 0;
	if ((err = parse_header(frame, flen, max_len, &fi, why)) != 0)
		return err;
	return decode_frame(frame, flen, &fi, expect_id, out, why);
}

int codec_decode_buf(struct buf *b, const unsigned char *expect_id,
		     size_t max_len, size_t *off, const char **why)
{
	struct buf out = { 0 };
	struct frame_info fi;
	int err;

	*why = NULL;
	*off = 0;
	if ((err = parse_header(b->data, b->len, max_len, &fi, why)) != 0) {
		b->len = 0;
		return err;
	}
	if (fi.flags & CODEC_F_ZSTD) {
		err = decode_frame(b->data, b->len, &fi, expect_id, &out, why);
		buf_free(b);
		*b = out;
		return err;
	}
	err = verify(b->data + fi.hdr, fi.raw_len,
		     (fi.flags & CODEC_F_DIGEST) ? b->data + CODEC_HEADER_LEN
						 : NULL,
		     expect_id, why);
	if (err != 0)
		b->len = 0;
	else
		*off = fi.hdr;
	return err;
}
