/*
 * Chunk codec: round trips, corruption detection, zero detection.
 */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "codec.h"
#include "tests.h"

static void fill(unsigned char *p, size_t n, unsigned seed)
{
	size_t i;

	for (i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (unsigned char)(seed >> 16);
	}
}

static void test_round_trip(int level, bool digest, bool compressible)
{
	enum { N = 256 * 1024 };
	static unsigned char data[N];
	unsigned char id[CODEC_ID_LEN];
	struct buf frame = { 0 }, out = { 0 };
	const char *why = "unset";

	if (compressible)
		memset(data, 'a', N);
	else
		fill(data, N, 7);
	codec_chunk_id(data, N, id);
	CHECK_EQ(codec_encode(data, N, level, digest, NULL, &frame), 0);
	if (compressible && level > 0)
		CHECK(frame.len < N / 10);
	CHECK_EQ(memcmp(frame.data, "CBTc", 4), 0);
	CHECK_EQ(codec_decode(frame.data, frame.len, NULL, id, N, &out,
			      &why), 0);
	CHECK(why == NULL);
	CHECK_EQ(out.len, (size_t)N);
	CHECK_EQ(memcmp(out.data, data, N), 0);
	/* frames with a digest verify without an expected id */
	CHECK_EQ(codec_decode(frame.data, frame.len, NULL, NULL, N, &out,
			      &why), 0);
	buf_free(&frame);
	buf_free(&out);
}

static void test_corruption(int level, bool digest)
{
	enum { N = 64 * 1024 };
	static unsigned char data[N];
	unsigned char id[CODEC_ID_LEN], other[CODEC_ID_LEN];
	struct buf frame = { 0 }, out = { 0 };
	const char *why;
	size_t i, hdr = CODEC_HEADER_LEN + (digest ? CODEC_ID_LEN : 0);

	fill(data, N, 42);
	codec_chunk_id(data, N, id);
	CHECK_EQ(codec_encode(data, N, level, digest, NULL, &frame), 0);

	/* every single-byte flip in header or payload is caught */
	for (i = 0; i < frame.len; i += (i < hdr ? 1 : 997)) {
		frame.data[i] ^= 0x40;
		why = NULL;
		CHECK(codec_decode(frame.data, frame.len, NULL, id, N, &out,
				   &why) != 0);
		CHECK(why != NULL);
		CHECK_EQ(out.len, (size_t)0);
		/* a manifest has no expected id: its digest catches it */
		if (digest)
			CHECK(codec_decode(frame.data, frame.len, NULL, NULL,
					   N, &out, &why) != 0);
		frame.data[i] ^= 0x40;
	}
	/* truncation */
	CHECK_EQ(codec_decode(frame.data, frame.len - 1, NULL, id, N, &out,
			      &why), EBADMSG);
	CHECK_EQ(codec_decode(frame.data, 3, NULL, id, N, &out, &why),
		 EBADMSG);
	/* a good frame under the wrong name */
	memcpy(other, id, sizeof(other));
	other[5] ^= 1;
	CHECK_EQ(codec_decode(frame.data, frame.len, NULL, other, N, &out,
			      &why), EBADMSG);
	CHECK(strstr(why, "checksum") != NULL);
	/* plaintext longer than the caller allows */
	CHECK_EQ(codec_decode(frame.data, frame.len, NULL, id, N - 1, &out,
			      &why), EBADMSG);
	/* an encrypted frame where none is expected is corruption */
	frame.data[5] |= CODEC_F_ENCRYPTED;
	CHECK_EQ(codec_decode(frame.data, frame.len, NULL, id, N, &out, &why),
		 EBADMSG);
	CHECK(strstr(why, "encrypted") != NULL);
	buf_free(&frame);
	buf_free(&out);
}

/* Decoding in the frame's buffer gives the same answers as codec_decode(). */
static void test_decode_buf(int level, bool digest, bool compressible)
{
	enum { N = 128 * 1024 };
	static unsigned char data[N];
	unsigned char id[CODEC_ID_LEN];
	struct buf b = { 0 };
	const char *why;
	size_t i, off;

	if (compressible)
		memset(data, 'z', N);
	else
		fill(data, N, 99);
	codec_chunk_id(data, N, id);
	CHECK_EQ(codec_encode(data, N, level, digest, NULL, &b), 0);
	CHECK_EQ(codec_decode_buf(&b, NULL, id, N, &off, &why), 0);
	CHECK_EQ(b.len - off, (size_t)N);
	CHECK_EQ(memcmp(b.data + off, data, N), 0);

	/* corruption anywhere is caught and leaves no bytes */
	for (i = 0; i < 3; i++) {
		CHECK_EQ(codec_encode(data, N, level, digest, NULL, &b), 0);
		b.data[i == 0 ? 9 : i == 1 ? b.len / 2 : b.len - 1] ^= 1;
		CHECK(codec_decode_buf(&b, NULL, id, N, &off, &why) != 0);
		CHECK_EQ(b.len, (size_t)0);
	}
	CHECK_EQ(codec_encode(data, N, level, digest, NULL, &b), 0);
	b.len--;
	CHECK_EQ(codec_decode_buf(&b, NULL, id, N, &off, &why), EBADMSG);
	buf_free(&b);
}

static void test_zero(void)
{
	static unsigned char z[1 << 20];

	CHECK(codec_is_zero(z, 0));
	CHECK(codec_is_zero(z, 1));
	CHECK(codec_is_zero(z, sizeof(z)));
	z[sizeof(z) - 1] = 1;
	CHECK(!codec_is_zero(z, sizeof(z)));
	CHECK(codec_is_zero(z, sizeof(z) - 1));
	z[sizeof(z) - 1] = 0;
	z[0] = 0x80;
	CHECK(!codec_is_zero(z, sizeof(z)));
	CHECK(!codec_is_zero(z, 1));
	z[0] = 0;
	z[4097] = 1;
	CHECK(!codec_is_zero(z, sizeof(z)));
	z[4097] = 0;

	CHECK(codec_id_is_zero(codec_zero_id));
	{
		unsigned char id[CODEC_ID_LEN];

		codec_chunk_id(z, sizeof(z), id);
		CHECK(!codec_id_is_zero(id));
	}
}

static void test_known_id(void)
{
	/* SHA-256("abc") */
	static const char expect[] = "ba7816bf8f01cfea414140de5dae2223"
				     "b00361a396177a9cb410ff61f20015ad";
	unsigned char id[CODEC_ID_LEN];
	char hex[CODEC_ID_HEX_LEN + 1];

	codec_chunk_id("abc", 3, id);
	hex_encode(id, CODEC_ID_LEN, hex);
	CHECK_EQ(strcmp(hex, expect), 0);
}

/* ---- encryption --------------------------------------------------------- */

static struct codec_keys *keys_of(unsigned char seed)
{
	unsigned char master[CODEC_KEY_LEN];
	struct codec_keys *k;
	int err = 0;

	memset(master, seed, sizeof(master));
	k = codec_keys_create(master, &err);
	CHECK(k != NULL);
	CHECK_EQ(err, 0);
	return k;
}

static const char chunk_name[] =
	"chunks/9c/9c608c48d82cc607555a3df7c303c418be78137242d6de2527c7b4"
	"7f332b9586";

/* The documented rules, checked against values computed elsewhere: the
 * id key is HKDF-Expand-SHA256(master, "cbtfs v1 chunk id key"), the id
 * HMAC-SHA256 under it; scrypt is RFC 7914's. */
static void test_known_keys(void)
{
	/* Python: hmac(hkdf_expand(bytes(range(32)), info), b"abc") */
	static const char expect_id[] =
		"9c608c48d82cc607555a3df7c303c418"
		"be78137242d6de2527c7b47f332b9586";
	/* RFC 7914 section 12, "password", "NaCl", N=1024, r=8, p=16 */
	static const char expect_kdf[] =
		"fdbabe1c9d3472007856e7190d01e9fe"
		"7c6ad7cbc8237830e77376634b373162";
	unsigned char master[CODEC_KEY_LEN], id[CODEC_ID_LEN];
	unsigned char sha[CODEC_ID_LEN];
	char hex[CODEC_ID_HEX_LEN + 1];
	struct codec_keys *k;
	size_t i;
	int err = 0;

	for (i = 0; i < sizeof(master); i++)
		master[i] = (unsigned char)i;
	k = codec_keys_create(master, &err);
	CHECK(k != NULL);
	CHECK_EQ(codec_keyed_id(k, "abc", 3, id), 0);
	hex_encode(id, CODEC_ID_LEN, hex);
	CHECK_EQ(strcmp(hex, expect_id), 0);
	/* not the SHA-256 */
	codec_chunk_id("abc", 3, sha);
	CHECK(memcmp(id, sha, CODEC_ID_LEN) != 0);
	codec_keys_destroy(k);

	CHECK_EQ(codec_kdf_scrypt("password", 8, (const unsigned char *)"NaCl",
				  4, 1024, 8, 16, id), 0);
	hex_encode(id, CODEC_ID_LEN, hex);
	CHECK_EQ(strcmp(hex, expect_kdf), 0);
}

/* Sealed frames round-trip, in both decoders, and hide the plaintext. */
static void test_sealed_round_trip(int level, bool compressible,
				   bool digest)
{
	enum { N = 256 * 1024 };
	static unsigned char data[N];
	struct codec_keys *k = keys_of(1);
	struct codec_seal seal = { k, chunk_name };
	unsigned char id[CODEC_ID_LEN];
	struct buf frame = { 0 }, out = { 0 };
	const char *why = "unset";
	size_t off;

	if (compressible)
		memset(data, 'a', N);
	else
		fill(data, N, 7);
	CHECK_EQ(codec_keyed_id(k, data, N, id), 0);
	CHECK_EQ(codec_encode(data, N, level, digest, &seal, &frame), 0);
	CHECK_EQ(memcmp(frame.data, "CBTc", 4), 0);
	/* encrypted, never with a plaintext digest */
	CHECK((frame.data[5] & CODEC_F_ENCRYPTED) != 0);
	CHECK((frame.data[5] & CODEC_F_DIGEST) == 0);
	if (compressible && level > 0) {
		CHECK((frame.data[5] & CODEC_F_ZSTD) != 0);
		CHECK(frame.len < N / 10);
	} else {
		CHECK_EQ(frame.len, CODEC_HEADER_LEN + CODEC_SEAL_OVERHEAD +
					    (size_t)N);
	}
	/* no 16 bytes of the plaintext appear in the frame */
	CHECK(memmem(frame.data, frame.len, data + N / 2, 16) == NULL);

	CHECK_EQ(codec_decode(frame.data, frame.len, &seal, id, N, &out,
			      &why), 0);
	CHECK(why == NULL);
	CHECK_EQ(out.len, (size_t)N);
	CHECK_EQ(memcmp(out.data, data, N), 0);
	/* without an expected id (a manifest): the tag alone verifies */
	CHECK_EQ(codec_decode(frame.data, frame.len, &seal, NULL, N, &out,
			      &why), 0);
	CHECK_EQ(memcmp(out.data, data, N), 0);
	CHECK_EQ(codec_decode_buf(&frame, &seal, id, N, &off, &why), 0);
	CHECK_EQ(frame.len - off, (size_t)N);
	CHECK_EQ(memcmp(frame.data + off, data, N), 0);

	/* two seals of the same data differ (random nonce) */
	{
		struct buf f2 = { 0 };

		CHECK_EQ(codec_encode(data, N, level, false, &seal, &frame),
			 0);
		CHECK_EQ(codec_encode(data, N, level, false, &seal, &f2), 0);
		CHECK_EQ(f2.len, frame.len);
		CHECK(memcmp(f2.data, frame.data, f2.len) != 0);
		buf_free(&f2);
	}
	buf_free(&frame);
	buf_free(&out);
	codec_keys_destroy(k);
}

/* A flipped bit anywhere, another name, other keys, or a plain frame
 * where a sealed one belongs: each fails, and hands out no bytes. */
static void test_sealed_corruption(int level, bool compressible)
{
	enum { N = 64 * 1024 };
	static unsigned char data[N];
	struct codec_keys *k = keys_of(2), *other = keys_of(3);
	struct codec_seal seal = { k, chunk_name };
	struct codec_seal renamed = { k, "chunks/9c/9c608c48d82cc607555a3df7"
					 "c303c418be78137242d6de2527c7b47f332b"
					 "9587" };
	struct codec_seal foreign = { other, chunk_name };
	unsigned char id[CODEC_ID_LEN];
	struct buf frame = { 0 }, out = { 0 }, b = { 0 };
	const char *why;
	size_t i, off, n_flips = 0;

	if (compressible)
		memset(data, 'q', N);
	else
		fill(data, N, 5);
	CHECK_EQ(codec_keyed_id(k, data, N, id), 0);
	CHECK_EQ(codec_encode(data, N, level, false, &seal, &frame), 0);

	/* every bit of the header, nonce and tag; every bit of a short
	 * ciphertext, bits all through a long one */
	for (i = 0; i < 8 * frame.len; i++) {
		size_t byte = i / 8;

		if (byte >= CODEC_HEADER_LEN + CODEC_NONCE_LEN &&
		    byte < frame.len - CODEC_TAG_LEN && frame.len > 4096 &&
		    i % 613 != 0)
			continue;
		frame.data[byte] ^= (unsigned char)(1u << (i % 8));
		why = NULL;
		CHECK(codec_decode(frame.data, frame.len, &seal, id, N, &out,
				   &why) != 0);
		CHECK(why != NULL);
		CHECK_EQ(out.len, (size_t)0);
		/* the manifest path (no id) is caught as well */
		CHECK(codec_decode(frame.data, frame.len, &seal, NULL, N, &out,
				   &why) != 0);
		CHECK_EQ(out.len, (size_t)0);
		frame.data[byte] ^= (unsigned char)(1u << (i % 8));
		n_flips++;
	}
	CHECK(n_flips > 8 * (CODEC_HEADER_LEN + CODEC_SEAL_OVERHEAD));
	/* the untouched frame still decodes: the loop restored every bit */
	CHECK_EQ(codec_decode(frame.data, frame.len, &seal, id, N, &out, &why),
		 0);

	/* under another name: the tag does not verify, even with no id */
	CHECK_EQ(codec_decode(frame.data, frame.len, &renamed, NULL, N, &out,
			      &why), EBADMSG);
	CHECK(strstr(why, "authentication") != NULL);
	CHECK_EQ(out.len, (size_t)0);
	/* under other keys */
	CHECK_EQ(codec_decode(frame.data, frame.len, &foreign, NULL, N, &out,
			      &why), EBADMSG);
	/* truncated, or with a byte more */
	CHECK_EQ(codec_decode(frame.data, frame.len - 1, &seal, id, N, &out,
			      &why), EBADMSG);
	CHECK_EQ(codec_decode(frame.data, CODEC_HEADER_LEN + 20, &seal, id, N,
			      &out, &why), EBADMSG);
	/* read without keys: corruption, not data */
	CHECK_EQ(codec_decode(frame.data, frame.len, NULL, NULL, N, &out,
			      &why), EBADMSG);
	CHECK(strstr(why, "encrypted") != NULL);
	/* the in-place decoder fails likewise and leaves no bytes */
	CHECK_EQ(buf_append(&b, frame.data, frame.len), 0);
	b.data[b.len - 1] ^= 0x80;
	CHECK_EQ(codec_decode_buf(&b, &seal, id, N, &off, &why), EBADMSG);
	CHECK_EQ(b.len, (size_t)0);

	/* a plain frame, even of the right content, where a sealed one
	 * belongs (a downgrade): corruption */
	CHECK_EQ(codec_encode(data, N, level, true, NULL, &frame), 0);
	CHECK_EQ(codec_decode(frame.data, frame.len, &seal, NULL, N, &out,
			      &why), EBADMSG);
	CHECK(strstr(why, "not encrypted") != NULL);
	/* a sealed frame whose header claims a digest */
	CHECK_EQ(codec_encode(data, N, level, false, &seal, &frame), 0);
	frame.data[5] |= CODEC_F_DIGEST;
	CHECK_EQ(codec_decode(frame.data, frame.len, &seal, NULL, N, &out,
			      &why), EBADMSG);
	/* a sealed frame whose content is not its id (right name, wrong
	 * expected id) */
	CHECK_EQ(codec_encode(data, N, level, false, &seal, &frame), 0);
	id[0] ^= 1;
	CHECK_EQ(codec_decode(frame.data, frame.len, &seal, id, N, &out, &why),
		 EBADMSG);
	CHECK(strstr(why, "checksum") != NULL);
	buf_free(&frame);
	buf_free(&out);
	buf_free(&b);
	codec_keys_destroy(k);
	codec_keys_destroy(other);
}

/* The master key wrap: round trip; another key-encryption key, other
 * authenticated data or any flipped bit fail. */
static void test_wrap(void)
{
	unsigned char kek[CODEC_KEY_LEN], kek2[CODEC_KEY_LEN];
	unsigned char key[CODEC_KEY_LEN], got[CODEC_KEY_LEN];
	unsigned char w[CODEC_WRAPPED_KEY_LEN], w2[CODEC_WRAPPED_KEY_LEN];
	static const char aad[] = "config fields";
	size_t i;

	fill(kek, sizeof(kek), 1);
	fill(kek2, sizeof(kek2), 2);
	fill(key, sizeof(key), 3);
	CHECK_EQ(codec_wrap_key(kek, aad, sizeof(aad), key, w), 0);
	CHECK(memmem(w, sizeof(w), key, 8) == NULL);
	CHECK_EQ(codec_unwrap_key(kek, aad, sizeof(aad), w, sizeof(w), got),
		 0);
	CHECK_EQ(memcmp(got, key, sizeof(key)), 0);
	CHECK_EQ(codec_wrap_key(kek, aad, sizeof(aad), key, w2), 0);
	CHECK(memcmp(w, w2, sizeof(w)) != 0);	/* a new nonce each time */

	CHECK_EQ(codec_unwrap_key(kek2, aad, sizeof(aad), w, sizeof(w), got),
		 EBADMSG);
	CHECK_EQ(codec_unwrap_key(kek, aad, sizeof(aad) - 1, w, sizeof(w),
				  got), EBADMSG);
	CHECK_EQ(codec_unwrap_key(kek, "config fieldz", sizeof(aad), w,
				  sizeof(w), got), EBADMSG);
	CHECK_EQ(codec_unwrap_key(kek, aad, sizeof(aad), w, sizeof(w) - 1,
				  got), EBADMSG);
	for (i = 0; i < 8 * sizeof(w); i++) {
		w[i / 8] ^= (unsigned char)(1u << (i % 8));
		CHECK_EQ(codec_unwrap_key(kek, aad, sizeof(aad), w, sizeof(w),
					  got), EBADMSG);
		w[i / 8] ^= (unsigned char)(1u << (i % 8));
	}
	CHECK_EQ(codec_unwrap_key(kek, aad, sizeof(aad), w, sizeof(w), got),
		 0);
}

/*
 * Frames made in place equal those of codec_encode() (sealed ones decode
 * to the plaintext): random data is stored raw, data that compresses is
 * compressed, and so is data whose samples mostly compress (half random,
 * half zeros: what a partly filled chunk looks like).
 */
static void test_in_place(int level, bool sealed)
{
	enum { N = 1024 * 1024 };
	static unsigned char data[N];
	struct codec_keys *k = sealed ? keys_of(1) : NULL;
	struct codec_seal seal = { k, chunk_name };
	unsigned char id[CODEC_ID_LEN];
	struct buf b = { 0 }, ref = { 0 }, out = { 0 };
	size_t off = codec_plain_offset(sealed);
	const char *why;
	int kind;

	for (kind = 0; kind < 3; kind++) {
		fill(data, N, 9);
		if (kind == 1)
			memset(data, 'a', N);
		if (kind == 2)
			memset(data + N / 4, 0, N / 2);
		if (sealed)
			CHECK_EQ(codec_keyed_id(k, data, N, id), 0);
		else
			codec_chunk_id(data, N, id);
		CHECK_EQ(buf_reserve(&b, codec_frame_room(N, level, sealed)),
			 0);
		memcpy(b.data + off, data, N);
		CHECK_EQ(codec_encode_in_place(&b, N, level,
					       sealed ? &seal : NULL), 0);
		CHECK_EQ(!!(b.data[5] & CODEC_F_ZSTD), level > 0 && kind > 0);
		if (kind == 0)
			CHECK_EQ(b.len,
				 off + N + (sealed ? CODEC_TAG_LEN : 0));
		if (!sealed) {
			CHECK_EQ(codec_encode(data, N, level, false, NULL,
					      &ref), 0);
			CHECK_EQ(ref.len, b.len);
			CHECK_EQ(memcmp(ref.data, b.data, b.len), 0);
		}
		CHECK_EQ(codec_decode(b.data, b.len, sealed ? &seal : NULL, id,
				      N, &out, &why), 0);
		CHECK_EQ(out.len, (size_t)N);
		CHECK_EQ(memcmp(out.data, data, N), 0);
	}
	/* too small a buffer is refused, not overrun */
	buf_free(&b);
	CHECK_EQ(buf_reserve(&b, N), 0);
	CHECK_EQ(codec_encode_in_place(&b, N, level, sealed ? &seal : NULL),
		 EINVAL);
	buf_free(&b);
	buf_free(&ref);
	buf_free(&out);
	codec_keys_destroy(k);
}

int main(void)
{
	test_known_id();
	test_round_trip(3, false, false);
	test_round_trip(3, false, true);
	test_round_trip(0, false, true);
	test_round_trip(3, true, false);
	test_round_trip(0, true, false);
	test_corruption(3, false);
	test_corruption(0, false);
	test_corruption(3, true);
	test_corruption(0, true);
	test_decode_buf(3, false, false);
	test_decode_buf(3, false, true);
	test_decode_buf(0, true, false);
	test_decode_buf(0, false, true);
	test_zero();
	test_known_keys();
	test_sealed_round_trip(3, false, false);
	test_sealed_round_trip(3, true, false);
	test_sealed_round_trip(3, true, true);
	test_sealed_round_trip(0, true, false);
	test_sealed_corruption(3, false);
	test_sealed_corruption(3, true);
	test_sealed_corruption(0, true);
	test_wrap();
	test_in_place(3, false);
	test_in_place(0, false);
	test_in_place(3, true);
	test_in_place(0, true);
	printf("test_codec: ok\n");
	return 0;
}
