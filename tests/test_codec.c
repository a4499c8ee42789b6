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
	CHECK_EQ(codec_encode(data, N, level, digest, &frame), 0);
	if (compressible && level > 0)
		CHECK(frame.len < N / 10);
	CHECK_EQ(memcmp(frame.data, "CBTc", 4), 0);
	CHECK_EQ(codec_decode(frame.data, frame.len, id, N, &out, &why), 0);
	CHECK(why == NULL);
	CHECK_EQ(out.len, (size_t)N);
	CHECK_EQ(memcmp(out.data, data, N), 0);
	/* frames with a digest verify without an expected id */
	CHECK_EQ(codec_decode(frame.data, frame.len, NULL, N, &out, &why), 0);
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
	CHECK_EQ(codec_encode(data, N, level, digest, &frame), 0);

	/* every single-byte flip in header or payload is caught */
	for (i = 0; i < frame.len; i += (i < hdr ? 1 : 997)) {
		frame.data[i] ^= 0x40;
		why = NULL;
		CHECK(codec_decode(frame.data, frame.len, id, N, &out, &why) !=
		      0);
		CHECK(why != NULL);
		CHECK_EQ(out.len, (size_t)0);
		/* a manifest has no expected id: its digest alone catches it */
		if (digest)
			CHECK(codec_decode(frame.data, frame.len, NULL, N, &out,
					   &why) != 0);
		frame.data[i] ^= 0x40;
	}
	/* truncation */
	CHECK_EQ(codec_decode(frame.data, frame.len - 1, id, N, &out, &why),
		 EBADMSG);
	CHECK_EQ(codec_decode(frame.data, 3, id, N, &out, &why), EBADMSG);
	/* a good frame under the wrong name */
	memcpy(other, id, sizeof(other));
	other[5] ^= 1;
	CHECK_EQ(codec_decode(frame.data, frame.len, other, N, &out, &why),
		 EBADMSG);
	CHECK(strstr(why, "checksum") != NULL);
	/* plaintext longer than the caller allows */
	CHECK_EQ(codec_decode(frame.data, frame.len, id, N - 1, &out, &why),
		 EBADMSG);
	/* encrypted frames are refused, not misread */
	frame.data[5] |= CODEC_F_ENCRYPTED;
	CHECK_EQ(codec_decode(frame.data, frame.len, id, N, &out, &why),
		 ENOTSUP);
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
	CHECK_EQ(codec_encode(data, N, level, digest, &b), 0);
	CHECK_EQ(codec_decode_buf(&b, id, N, &off, &why), 0);
	CHECK_EQ(b.len - off, (size_t)N);
	CHECK_EQ(memcmp(b.data + off, data, N), 0);

	/* corruption anywhere is caught and leaves no bytes */
	for (i = 0; i < 3; i++) {
		CHECK_EQ(codec_encode(data, N, level, digest, &b), 0);
		b.data[i == 0 ? 9 : i == 1 ? b.len / 2 : b.len - 1] ^= 1;
		CHECK(codec_decode_buf(&b, id, N, &off, &why) != 0);
		CHECK_EQ(b.len, (size_t)0);
	}
	CHECK_EQ(codec_encode(data, N, level, digest, &b), 0);
	b.len--;
	CHECK_EQ(codec_decode_buf(&b, id, N, &off, &why), EBADMSG);
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
	static const char expect[] =
		"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
	unsigned char id[CODEC_ID_LEN];
	char hex[CODEC_ID_HEX_LEN + 1];

	codec_chunk_id("abc", 3, id);
	hex_encode(id, CODEC_ID_LEN, hex);
	CHECK_EQ(strcmp(hex, expect), 0);
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
	printf("test_codec: ok\n");
	return 0;
}
