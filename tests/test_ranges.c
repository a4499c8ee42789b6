/*
 * Range lists, range-to-chunk mapping and the ranges file source.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cbt.h"
#include "tests.h"
#include "util.h"

#define K 1024ull

static void check_chunks(const struct cbt_ranges *rl, uint32_t cs,
			 const uint64_t *expect, size_t n_expect)
{
	uint64_t *idx;
	size_t n, i;

	CHECK_EQ(cbt_ranges_to_chunks(rl, cs, &idx, &n), 0);
	CHECK_EQ(n, n_expect);
	for (i = 0; i < n; i++)
		CHECK_EQ(idx[i], expect[i]);
	free(idx);
}

static void test_add(void)
{
	struct cbt_ranges rl = { 0 };

	CHECK_EQ(cbt_ranges_add(&rl, 0, 0), EINVAL);		/* empty */
	CHECK_EQ(cbt_ranges_add(&rl, 100, 50), 0);
	CHECK_EQ(cbt_ranges_add(&rl, 150, 10), 0);		/* adjacent */
	CHECK_EQ(rl.n, (size_t)1);				/* merged */
	CHECK_EQ(rl.v[0].length, 60ull);
	CHECK_EQ(cbt_ranges_add(&rl, 159, 10), EINVAL);	/* overlaps */
	CHECK_EQ(cbt_ranges_add(&rl, 10, 10), EINVAL);		/* unsorted */
	CHECK_EQ(cbt_ranges_add(&rl, UINT64_MAX - 5, 10), EINVAL); /* wraps */
	CHECK_EQ(cbt_ranges_add(&rl, 200, 1), 0);		/* a gap */
	CHECK_EQ(rl.n, (size_t)2);
	cbt_ranges_free(&rl);
}

static void test_to_chunks(void)
{
	struct cbt_ranges rl = { 0 };
	static const uint64_t e1[] = { 0 };
	static const uint64_t e2[] = { 0, 1 };
	static const uint64_t e3[] = { 0, 1, 3, 4, 5, 9 };
	static const uint64_t e4[] = { 1000000 };

	/* empty list: no chunks */
	check_chunks(&rl, 64 * K, NULL, 0);

	/* unaligned range inside one chunk */
	CHECK_EQ(cbt_ranges_add(&rl, 5, 7), 0);
	check_chunks(&rl, 64 * K, e1, 1);
	/* a second range in the same chunk adds nothing */
	CHECK_EQ(cbt_ranges_add(&rl, 4000, 1), 0);
	check_chunks(&rl, 64 * K, e1, 1);
	/* ending exactly at a boundary stays in chunk 0 */
	CHECK_EQ(cbt_ranges_add(&rl, 64 * K - 1, 1), 0);
	check_chunks(&rl, 64 * K, e1, 1);
	/* starting at a boundary moves on */
	CHECK_EQ(cbt_ranges_add(&rl, 64 * K, 1), 0);
	check_chunks(&rl, 64 * K, e2, 2);
	cbt_ranges_free(&rl);

	/* ranges spanning chunks, sharing chunks, and a far one */
	CHECK_EQ(cbt_ranges_add(&rl, 10, 64 * K), 0);		/* 0,1 */
	CHECK_EQ(cbt_ranges_add(&rl, 3 * 64 * K + 7, 2 * 64 * K), 0); /* 3-5 */
	CHECK_EQ(cbt_ranges_add(&rl, 5 * 64 * K + 9000, 5), 0);	/* 5 again */
	CHECK_EQ(cbt_ranges_add(&rl, 9 * 64 * K, 64 * K), 0);	/* 9 */
	check_chunks(&rl, 64 * K, e3, 6);
	cbt_ranges_free(&rl);

	/* 1 MiB chunks, large offsets */
	CHECK_EQ(cbt_ranges_add(&rl, 1000000ull << 20, 4096), 0);
	check_chunks(&rl, 1u << 20, e4, 1);
	cbt_ranges_free(&rl);
}

/* Writes text to a temp file and runs the ranges source over it. */
static int parse(const char *text, uint64_t device_size,
		 struct cbt_ranges *out)
{
	char path[] = "/tmp/cbtfs-test-ranges-XXXXXX";
	int fd = mkstemp(path), err;
	struct cbt_request req = { .device_size = device_size };
	struct cbt_answer ans = { 0 };
	struct cbt_source *src;

	CHECK(fd >= 0);
	CHECK_EQ(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	{
		char spec[64];

		snprintf(spec, sizeof(spec), "ranges:%s", path);
		src = cbt_source_create(spec, &err);
	}
	CHECK(src != NULL);
	CHECK(strcmp(src->ops->name, "ranges") == 0);
	err = src->ops->get_ranges(src, &req, &ans);
	*out = ans.ranges;
	cbt_source_destroy(src);
	unlink(path);
	return err;
}

static void test_file(void)
{
	struct cbt_ranges rl = { 0 };
	int err;

	CHECK_EQ(parse("# changed\n0 4096\n\n  8192 100\n0x10000 0x10\n",
		       1 << 20, &rl), 0);
	CHECK_EQ(rl.n, (size_t)3);
	CHECK_EQ(rl.v[2].offset, 0x10000ull);
	CHECK_EQ(rl.v[2].length, 16ull);
	cbt_ranges_free(&rl);

	CHECK_EQ(parse("010 5\n", 1 << 20, &rl), 0);		/* not octal */
	CHECK_EQ(rl.v[0].offset, 10ull);
	cbt_ranges_free(&rl);
	CHECK_EQ(parse("", 1 << 20, &rl), 0);			/* empty */
	CHECK_EQ(rl.n, (size_t)0);
	CHECK_EQ(parse("100 10\n50 10\n", 1 << 20, &rl), EINVAL); /* order */
	CHECK_EQ(rl.n, (size_t)0);
	CHECK_EQ(parse("100 10\n105 10\n", 1 << 20, &rl),
		 EINVAL); /* overlap */
	CHECK_EQ(parse("0 1048577\n", 1 << 20, &rl), EINVAL);	/* past end */
	CHECK_EQ(parse("0 1048576\n", 1 << 20, &rl), 0); /* to the end */
	cbt_ranges_free(&rl);
	CHECK_EQ(parse("10\n", 1 << 20, &rl), EINVAL);		/* syntax */
	CHECK_EQ(parse("10 x\n", 1 << 20, &rl), EINVAL);
	CHECK_EQ(parse("-1 10\n", 1 << 20, &rl), EINVAL);
	CHECK_EQ(parse("10 0\n", 1 << 20, &rl), EINVAL);	/* empty */
	CHECK_EQ(parse("10 10 10\n", 1 << 20, &rl), EINVAL);

	CHECK(cbt_source_create("bogus", &err) == NULL);
	CHECK_EQ(err, EINVAL);
	CHECK(cbt_source_create("ranges:", &err) == NULL);
}

int main(void)
{
	log_init("test_ranges");
	test_add();
	test_to_chunks();
	test_file();
	printf("test_ranges: ok\n");
	return 0;
}
