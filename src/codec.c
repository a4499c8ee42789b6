/*
 * Chunk codec: see codec.h for the frame layout, the verification rule and
 * the keys.  OpenSSL's algorithms are fetched once per struct codec_keys;
 * every call works on contexts of its own, so calls never share state.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
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

/* Logs what failed with OpenSSL's message; returns EIO. */
static int ossl_error(const char *what)
{
	char msg[256];
	unsigned long e = ERR_get_error();

	if (e != 0)
		ERR_error_string_n(e, msg, sizeof(msg));
	else
		snprintf(msg, sizeof(msg), "unknown error");
	ERR_clear_error();
	log_error("%s failed: %s", what, msg);
	return EIO;
}

/* ---- keys --------------------------------------------------------------- */

struct codec_keys {
	unsigned char data_key[CODEC_KEY_LEN];
	EVP_CIPHER *gcm;		/* AES-256-GCM */
	EVP_MAC_CTX *id_mac;		/* HMAC-SHA256 keyed with the id key:
					 * copied for every id, never used */
};

/* HKDF-Expand-SHA256(prk, info) into out (CODEC_KEY_LEN bytes). */
static int hkdf_expand(const unsigned char *prk, const char *info,
		       unsigned char out[CODEC_KEY_LEN])
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_HKDF, NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM params[5], *p = params;
	int ok;

	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MODE,
						"EXPAND_ONLY", 0);
	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
						"SHA256", 0);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
						 (void *)prk, CODEC_KEY_LEN);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
						 (void *)info, strlen(info));
	*p = OSSL_PARAM_construct_end();
	ok = ctx != NULL && EVP_KDF_derive(ctx, out, CODEC_KEY_LEN, params);
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	return ok ? 0 : ossl_error("deriving a key (HKDF-SHA256)");
}

struct codec_keys *codec_keys_create(const unsigned char master[CODEC_KEY_LEN],
				     int *errp)
{
	struct codec_keys *k = calloc(1, sizeof(*k));
	unsigned char id_key[CODEC_KEY_LEN];
	OSSL_PARAM params[2];
	EVP_MAC *mac = NULL;
	int err;

	if (k == NULL) {
		*errp = ENOMEM;
		return NULL;
	}
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
						     "SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	err = hkdf_expand(master, "cbtfs v1 data key", k->data_key);
	if (err == 0)
		err = hkdf_expand(master, "cbtfs v1 chunk id key", id_key);
	if (err == 0) {
		k->gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
		mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
		k->id_mac = mac ? EVP_MAC_CTX_new(mac) : NULL;
		if (k->gcm == NULL || k->id_mac == NULL ||
		    !EVP_MAC_init(k->id_mac, id_key, sizeof(id_key), params))
			err = ossl_error("setting up AES-256-GCM and "
					 "HMAC-SHA256");
	}
	EVP_MAC_free(mac);
	OPENSSL_cleanse(id_key, sizeof(id_key));
	if (err != 0) {
		codec_keys_destroy(k);
		*errp = err;
		return NULL;
	}
	return k;
}

void codec_keys_destroy(struct codec_keys *k)
{
	if (k == NULL)
		return;
	EVP_CIPHER_free(k->gcm);
	EVP_MAC_CTX_free(k->id_mac);
	OPENSSL_cleanse(k, sizeof(*k));
	free(k);
}

int codec_keyed_id(const struct codec_keys *k, const void *data, size_t len,
		   unsigned char id[CODEC_ID_LEN])
{
	EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(k->id_mac);
	size_t n = 0;
	int ok;

	if (ctx == NULL)
		return ENOMEM;
	ok = EVP_MAC_update(ctx, data, len) &&
	     EVP_MAC_final(ctx, id, &n, CODEC_ID_LEN) && n == CODEC_ID_LEN;
	EVP_MAC_CTX_free(ctx);
	return ok ? 0 : ossl_error("computing a chunk id (HMAC-SHA256)");
}

int codec_random(void *buf, size_t n)
{
	if (n > INT_MAX || RAND_bytes(buf, (int)n) != 1)
		return ossl_error("drawing random bytes");
	return 0;
}

int codec_kdf_scrypt(const void *pass, size_t pass_len,
		     const unsigned char *salt, size_t salt_len, uint64_t n,
		     uint32_t r, uint32_t p, unsigned char key[CODEC_KEY_LEN])
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_SCRYPT, NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	/* what scrypt needs, and room for OpenSSL's own accounting */
	uint64_t maxmem = 128 * n * r + 128 * (uint64_t)r * p + (16u << 20);
	OSSL_PARAM params[7], *q = params;
	int ok;

	*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD,
						 (void *)pass, pass_len);
	*q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
						 (void *)salt, salt_len);
	*q++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n);
	*q++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r);
	*q++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p);
	*q++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM,
					   &maxmem);
	*q = OSSL_PARAM_construct_end();
	ok = ctx != NULL && EVP_KDF_derive(ctx, key, CODEC_KEY_LEN, params);
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	return ok ? 0 : ossl_error("deriving a key from the passphrase "
				   "(scrypt)");
}

/*
 * AES-256-GCM of len bytes from in to out (in == out is fine) under key
 * and nonce, authenticating aad1 and aad2 (either may be empty) too.
 * Sealing writes the tag; opening checks it.  Returns 0, EBADMSG (not
 * logged) when opening does not authenticate, or EIO/ENOMEM (logged).
 */
static int gcm(const EVP_CIPHER *cipher, bool seal, const unsigned char *key,
	       const unsigned char *nonce, const void *aad1, size_t aad1_len,
	       const void *aad2, size_t aad2_len, const unsigned char *in,
	       size_t len, unsigned char *out, unsigned char *tag)
{
	const size_t step = 1u << 30;	/* OpenSSL takes int lengths */
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	const void *aad[2] = { aad1, aad2 };
	size_t aad_len[2] = { aad1_len, aad2_len }, done, i;
	int n, err = EIO;

	if (ctx == NULL)
		return ENOMEM;
	if (!EVP_CipherInit_ex(ctx, cipher, NULL, key, nonce, seal ? 1 : 0))
		goto out;
	for (i = 0; i < 2; i++)
		if (aad_len[i] > step ||
		    (aad_len[i] > 0 &&
		     !EVP_CipherUpdate(ctx, NULL, &n, aad[i],
				       (int)aad_len[i])))
			goto out;
	for (done = 0; done < len; done += (size_t)n) {
		size_t m = len - done < step ? len - done : step;

		if (!EVP_CipherUpdate(ctx, out + done, &n, in + done, (int)m))
			goto out;
	}
	if (!seal && !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG,
					  CODEC_TAG_LEN, tag))
		goto out;
	if (!EVP_CipherFinal_ex(ctx, out + done, &n)) {
		if (!seal) {
			ERR_clear_error();
			err = EBADMSG;
			goto out_free;
		}
		goto out;
	}
	if (seal && !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG,
					 CODEC_TAG_LEN, tag))
		goto out;
	err = 0;
out:
	if (err != 0)
		err = ossl_error(seal ? "encrypting (AES-256-GCM)"
				      : "decrypting (AES-256-GCM)");
out_free:
	EVP_CIPHER_CTX_free(ctx);
	return err;
}

int codec_wrap_key(const unsigned char kek[CODEC_KEY_LEN], const void *aad,
		   size_t aad_len, const unsigned char key[CODEC_KEY_LEN],
		   unsigned char wrapped[CODEC_WRAPPED_KEY_LEN])
{
	int err = codec_random(wrapped, CODEC_NONCE_LEN);

	if (err == 0)
		err = gcm(EVP_aes_256_gcm(), true, kek, wrapped, aad, aad_len,
			  NULL, 0, key, CODEC_KEY_LEN,
			  wrapped + CODEC_NONCE_LEN,
			  wrapped + CODEC_NONCE_LEN + CODEC_KEY_LEN);
	return err;
}

int codec_unwrap_key(const unsigned char kek[CODEC_KEY_LEN], const void *aad,
		     size_t aad_len, const unsigned char *wrapped,
		     size_t wrapped_len, unsigned char key[CODEC_KEY_LEN])
{
	unsigned char tag[CODEC_TAG_LEN];
	int err;

	if (wrapped_len != CODEC_WRAPPED_KEY_LEN)
		return EBADMSG;
	memcpy(tag, wrapped + CODEC_NONCE_LEN + CODEC_KEY_LEN, sizeof(tag));
	err = gcm(EVP_aes_256_gcm(), false, kek, wrapped, aad, aad_len,
		  NULL, 0, wrapped + CODEC_NONCE_LEN, CODEC_KEY_LEN, key,
		  tag);
	if (err != 0)
		OPENSSL_cleanse(key, CODEC_KEY_LEN);
	return err;
}

/* ---- frames ------------------------------------------------------------- */

/*
 * Compression contexts, one per thread, made at its first compression and
 * freed when it ends: a context per call would allocate (and fault in)
 * the tables of the level for every chunk.
 */
static pthread_key_t cctx_key;
static pthread_once_t cctx_once = PTHREAD_ONCE_INIT;
static int cctx_key_err;

static void cctx_free(void *p)
{
	ZSTD_freeCCtx(p);
}

static void cctx_key_make(void)
{
	cctx_key_err = pthread_key_create(&cctx_key, cctx_free);
}

/* The calling thread's context, or NULL (ENOMEM). */
static ZSTD_CCtx *thread_cctx(void)
{
	ZSTD_CCtx *c;

	pthread_once(&cctx_once, cctx_key_make);
	if (cctx_key_err != 0)
		return NULL;
	c = pthread_getspecific(cctx_key);
	if (c == NULL && (c = ZSTD_createCCtx()) != NULL &&
	    pthread_setspecific(cctx_key, c) != 0) {
		ZSTD_freeCCtx(c);
		c = NULL;
	}
	return c;
}

/*
 * Compression is given up early for data that does not compress (random,
 * already compressed or encrypted volumes): 4 samples of 4 KiB spread
 * over the data are compressed first, and unless they shrink by 1/32 the
 * whole is stored as it is, for 1/64 of the work of trying it (on a
 * MiB).  Smaller data is always tried.
 */
#define SAMPLE_LEN 4096
#define SAMPLES 4

static bool samples_incompressible(ZSTD_CCtx *c, const unsigned char *data,
				   size_t len, int level)
{
	unsigned char out[ZSTD_COMPRESSBOUND(SAMPLE_LEN)];
	size_t i, n, total = 0;

	if (len < 16 * SAMPLE_LEN)
		return false;
	for (i = 0; i < SAMPLES; i++) {
		n = ZSTD_compressCCtx(c, out, sizeof(out),
				      data + (len - SAMPLE_LEN) * i /
						     (SAMPLES - 1),
				      SAMPLE_LEN, level);
		if (ZSTD_isError(n))
			return false;	/* the real attempt reports it */
		total += n < SAMPLE_LEN ? n : SAMPLE_LEN;
	}
	return total > SAMPLES * SAMPLE_LEN - SAMPLES * SAMPLE_LEN / 32;
}

/*
 * Compresses len bytes of data into dst (room for ZSTD_compressBound()):
 * *n receives the compressed length, or len when it is not worth it (not
 * smaller, or the samples said so).  0, ENOMEM, or EIO (logged).
 */
static int compress(const void *data, size_t len, int level,
		    unsigned char *dst, size_t room, size_t *n)
{
	ZSTD_CCtx *c = thread_cctx();

	if (c == NULL)
		return ENOMEM;
	if (samples_incompressible(c, data, len, level)) {
		*n = len;
		return 0;
	}
	*n = ZSTD_compressCCtx(c, dst, room, data, len, level);
	if (ZSTD_isError(*n)) {
		log_error("zstd compression failed: %s",
			  ZSTD_getErrorName(*n));
		return EIO;
	}
	if (*n >= len)
		*n = len;
	return 0;
}

/* The header of a frame of len bytes of plaintext, but its flags. */
static void put_header(unsigned char *h, uint64_t len)
{
	memcpy(h, codec_magic, 4);
	h[4] = CODEC_VERSION;
	h[5] = 0;
	h[6] = h[7] = 0;
	put_le64(h + 8, len);
}

int codec_encode(const void *data, size_t len, int level, bool with_digest,
		 const struct codec_seal *seal, struct buf *out)
{
	size_t hdr, pay, bound = level > 0 ? ZSTD_compressBound(len) : len;
	const unsigned char *src = data;	/* the payload to store */
	size_t n = len;
	unsigned char flags;
	int err;

	if (seal != NULL)
		with_digest = false;
	flags = (with_digest ? CODEC_F_DIGEST : 0) |
		(seal != NULL ? CODEC_F_ENCRYPTED : 0);
	hdr = CODEC_HEADER_LEN + (with_digest ? CODEC_ID_LEN : 0);
	pay = hdr + (seal != NULL ? CODEC_NONCE_LEN : 0);
	out->len = 0;
	if (buf_reserve(out, pay + bound + CODEC_TAG_LEN) != 0)
		return ENOMEM;
	put_header(out->data, len);
	if (with_digest)
		codec_chunk_id(data, len, out->data + CODEC_HEADER_LEN);

	if (level > 0) {
		if ((err = compress(data, len, level, out->data + pay, bound,
				    &n)) != 0)
			return err;
		if (n < len) {
			flags |= CODEC_F_ZSTD;
			src = out->data + pay;
		} else {	/* incompressible: stored as it is */
			n = len;
		}
	}
	out->data[5] = flags;
	if (seal != NULL) {
		/* the header is final now: it is authenticated */
		err = codec_random(out->data + hdr, CODEC_NONCE_LEN);
		if (err == 0)
			err = gcm(seal->keys->gcm, true, seal->keys->data_key,
				  out->data + hdr, out->data, CODEC_HEADER_LEN,
				  seal->name, strlen(seal->name), src, n,
				  out->data + pay, out->data + pay + n);
		if (err != 0)
			return err;
		out->len = pay + n + CODEC_TAG_LEN;
		return 0;
	}
	if (src != out->data + pay)
		memcpy(out->data + pay, src, n);
	out->len = pay + n;
	return 0;
}

size_t codec_plain_offset(bool sealed)
{
	return CODEC_HEADER_LEN + (sealed ? CODEC_NONCE_LEN : 0);
}

size_t codec_frame_room(size_t len, int level, bool sealed)
{
	return codec_plain_offset(sealed) + len +
	       (level > 0 ? ZSTD_compressBound(len) : 0) + CODEC_TAG_LEN;
}

int codec_encode_in_place(struct buf *b, size_t len, int level,
			  const struct codec_seal *seal)
{
	size_t pay = codec_plain_offset(seal != NULL), n = len;
	unsigned char *plain = b->data + pay;
	unsigned char flags = seal != NULL ? CODEC_F_ENCRYPTED : 0;
	int err;

	if (b->cap < codec_frame_room(len, level, seal != NULL)) {
		log_error("internal error: a frame buffer of %zu bytes for "
			  "%zu bytes of data", b->cap, len);
		return EINVAL;
	}
	put_header(b->data, len);
	if (level > 0) {
		/* into the room after the plaintext, then moved down */
		err = compress(plain, len, level, plain + len,
			       ZSTD_compressBound(len), &n);
		if (err != 0)
			return err;
		if (n < len) {
			flags |= CODEC_F_ZSTD;
			memmove(plain, plain + len, n);
		}
	}
	b->data[5] = flags;
	b->len = pay + n;
	if (seal == NULL)
		return 0;
	/* the header is final now: it is authenticated */
	err = codec_random(b->data + CODEC_HEADER_LEN, CODEC_NONCE_LEN);
	if (err == 0)
		err = gcm(seal->keys->gcm, true, seal->keys->data_key,
			  b->data + CODEC_HEADER_LEN, b->data,
			  CODEC_HEADER_LEN, seal->name, strlen(seal->name),
			  plain, n, plain, plain + n);
	b->len = err == 0 ? pay + n + CODEC_TAG_LEN : 0;
	return err;
}

/* What a frame's header says, and where its parts are. */
struct frame_info {
	unsigned char flags;
	uint64_t raw_len;
	size_t hdr;		/* header length, digest included */
	size_t pay;		/* offset of the payload (after the nonce) */
	size_t pay_len;		/* its length (without the tag) */
};

static int parse_header(const unsigned char *f, size_t flen, bool sealed,
			size_t max_len, struct frame_info *fi,
			const char **why)
{
	bool enc;

	if (flen < CODEC_HEADER_LEN || memcmp(f, codec_magic, 4) != 0) {
		*why = "not a cbtfs object (bad magic)";
		return EBADMSG;
	}
	if (f[4] != CODEC_VERSION || f[6] != 0 || f[7] != 0) {
		*why = "unknown object format version";
		return EBADMSG;
	}
	fi->flags = f[5];
	enc = (fi->flags & CODEC_F_ENCRYPTED) != 0;
	if (fi->flags & ~(CODEC_F_ZSTD | CODEC_F_ENCRYPTED | CODEC_F_DIGEST)) {
		*why = "unknown flags in object header";
		return EBADMSG;
	}
	if (enc != sealed) {
		*why = enc ? "object is encrypted, but the repository is not"
			   : "object is not encrypted, but the repository is";
		return EBADMSG;
	}
	if (enc && (fi->flags & CODEC_F_DIGEST)) {
		*why = "encrypted object with a plaintext digest";
		return EBADMSG;
	}
	fi->raw_len = get_le64(f + 8);
	if (fi->raw_len > max_len) {
		*why = "plaintext length in header is out of range";
		return EBADMSG;
	}
	fi->hdr = CODEC_HEADER_LEN +
		  ((fi->flags & CODEC_F_DIGEST) ? CODEC_ID_LEN : 0);
	fi->pay = fi->hdr + (enc ? CODEC_NONCE_LEN : 0);
	if (flen < fi->pay + (enc ? CODEC_TAG_LEN : 0)) {
		*why = "object is truncated";
		return EBADMSG;
	}
	fi->pay_len = flen - fi->pay - (enc ? CODEC_TAG_LEN : 0);
	if (!(fi->flags & CODEC_F_ZSTD) && fi->pay_len != fi->raw_len) {
		*why = "stored length differs from header";
		return EBADMSG;
	}
	return 0;
}

/* Checks plaintext against the frame's digest and the expected id. */
static int verify(const struct codec_seal *seal, const unsigned char *plain,
		  size_t len, const unsigned char *digest,
		  const unsigned char *expect_id, const char **why)
{
	unsigned char id[CODEC_ID_LEN];
	int err;

	if (digest == NULL && expect_id == NULL)
		return 0;
	if (digest != NULL) {	/* never with a seal */
		codec_chunk_id(plain, len, id);
		if (memcmp(id, digest, CODEC_ID_LEN) != 0) {
			*why = "checksum mismatch (content does not match "
			       "its digest)";
			return EBADMSG;
		}
	}
	if (expect_id == NULL)
		return 0;
	if (seal == NULL)
		codec_chunk_id(plain, len, id);
	else if ((err = codec_keyed_id(seal->keys, plain, len, id)) != 0)
		return err;
	if (memcmp(id, expect_id, CODEC_ID_LEN) != 0) {
		*why = "checksum mismatch (content does not match its id)";
		return EBADMSG;
	}
	return 0;
}

int codec_decode_buf(struct buf *b, const struct codec_seal *seal,
		     const unsigned char *expect_id, size_t max_len,
		     size_t *off, const char **why)
{
	unsigned char digest[CODEC_ID_LEN];
	struct buf out = { 0 };
	struct frame_info fi;
	int err;

	*why = NULL;
	*off = 0;
	err = parse_header(b->data, b->len, seal != NULL, max_len, &fi, why);
	if (err == 0 && (fi.flags & CODEC_F_DIGEST))
		memcpy(digest, b->data + CODEC_HEADER_LEN, CODEC_ID_LEN);
	if (err == 0 && seal != NULL) {
		/* in place: the payload becomes what was sealed */
		err = gcm(seal->keys->gcm, false, seal->keys->data_key,
			  b->data + fi.hdr, b->data, CODEC_HEADER_LEN,
			  seal->name, strlen(seal->name), b->data + fi.pay,
			  fi.pay_len, b->data + fi.pay,
			  b->data + fi.pay + fi.pay_len);
		if (err == EBADMSG)
			*why = "authentication failed (altered, sealed with "
			       "another key, or stored under another name)";
	}
	if (err == 0 && (fi.flags & CODEC_F_ZSTD)) {
		if (buf_reserve(&out, fi.raw_len ? fi.raw_len : 1) != 0) {
			err = ENOMEM;
		} else {
			size_t n = ZSTD_decompress(out.data, fi.raw_len,
						   b->data + fi.pay,
						   fi.pay_len);

			if (ZSTD_isError(n) || n != fi.raw_len) {
				*why = ZSTD_isError(n)
					       ? ZSTD_getErrorName(n)
					       : "decompressed length differs";
				err = EBADMSG;
			}
		}
		buf_free(b);
		*b = out;
		fi.pay = 0;
	}
	if (err == 0)
		err = verify(seal, b->data + fi.pay, fi.raw_len,
			     (fi.flags & CODEC_F_DIGEST) ? digest : NULL,
			     expect_id, why);
	if (err != 0) {
		b->len = 0;
		return err;
	}
	*off = fi.pay;
	b->len = fi.pay + fi.raw_len;
	return 0;
}

int codec_decode(const void *frame, size_t flen,
		 const struct codec_seal *seal,
		 const unsigned char *expect_id, size_t max_len,
		 struct buf *out, const char **why)
{
	size_t off;
	int err;

	out->len = 0;
	if (buf_append(out, frame, flen) != 0) {
		*why = NULL;
		return ENOMEM;
	}
	err = codec_decode_buf(out, seal, expect_id, max_len, &off, why);
	if (err == 0 && off > 0) {
		memmove(out->data, out->data + off, out->len - off);
		out->len -= off;
	}
	return err;
}
