/*
 * The shared helpers of util.c that the network layers lean on: base64,
 * small text files, back-off.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests.h"
#include "util.h"

static void check_b64(const char *in, const char *want)
{
	unsigned char *out = NULL;
	size_t len = 99;

	CHECK_EQ(base64_decode(in, &out, &len), 0);
	CHECK_EQ(len, strlen(want));
	CHECK(memcmp(out, want, len) == 0);
	CHECK_EQ(out[len], 0);		/* usable as a string */
	free(out);
}

static void test_base64(void)
{
	unsigned char *out = NULL;
	size_t len;

	check_b64("", "");
	check_b64("YWJj", "abc");	/* no padding */
	check_b64("YWI=", "ab");	/* one '=' */
	check_b64("YQ==", "a");		/* two */
	check_b64("LS0tLS1CRUdJTg==", "-----BEGIN");
	CHECK_EQ(base64_decode("YWJ", &out, &len), EINVAL);	/* length */
	CHECK_EQ(base64_decode("YW*j", &out, &len), EINVAL);	/* alphabet */
}

static void test_file_read_text(void)
{
	char path[] = "/tmp/cbtfs-test-util-XXXXXX";
	int fd = mkstemp(path), err = 0;
	char *t;

	CHECK(fd >= 0);
	CHECK_EQ(write(fd, "tok en \r\n\n", 10), 10);
	close(fd);
	t = file_read_text(path, 100, &err);
	CHECK(t != NULL && strcmp(t, "tok en") == 0);	/* only the end */
	free(t);
	CHECK(file_read_text(path, 5, &err) == NULL);
	CHECK_EQ(err, EFBIG);
	CHECK_EQ(truncate(path, 0), 0);
	CHECK(file_read_text(path, 100, &err) == NULL);
	CHECK_EQ(err, ENODATA);
	unlink(path);
	CHECK(file_read_text(path, 100, &err) == NULL);
	CHECK_EQ(err, ENOENT);
}

/* A process is alive while it runs, dead once reaped, and unknown to a
 * judge on another host, boot or PID namespace. */
static void test_proc_id(void)
{
	struct proc_id self, child, other;
	pid_t pid;
	int status;

	proc_id_self(&self);
	CHECK(self.host[0] != '\0' && self.boot_id[0] != '\0' &&
	      self.pidns[0] != '\0' && self.start > 0);
	CHECK_EQ(self.pid, (long)getpid());
	CHECK_EQ(proc_id_state(&self), PROC_ALIVE);

	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		_exit(0);
	child = self;
	child.pid = pid;
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK_EQ(proc_id_state(&child), PROC_DEAD);	/* gone */
	child = self;
	child.start = self.start + 1;			/* pid reused */
	CHECK_EQ(proc_id_state(&child), PROC_DEAD);

	other = self;
	snprintf(other.host, sizeof(other.host), "elsewhere");
	CHECK_EQ(proc_id_state(&other), PROC_UNKNOWN);
	other = self;
	other.boot_id[0] ^= 1;
	CHECK_EQ(proc_id_state(&other), PROC_UNKNOWN);
	other = self;
	snprintf(other.pidns, sizeof(other.pidns), "1");
	CHECK_EQ(proc_id_state(&other), PROC_UNKNOWN);
	other = self;
	other.start = 0;				/* unreadable */
	CHECK_EQ(proc_id_state(&other), PROC_UNKNOWN);
}

static void test_backoff(void)
{
	unsigned a;
	int i;

	for (i = 0; i < 200; i++) {
		unsigned long ms = backoff_ms(1, 100, 5000);

		CHECK(ms >= 50 && ms <= 100);
	}
	for (a = 2; a < 40; a++) {
		unsigned long cap = a < 8 ? 100ul << (a - 1) : 5000;
		unsigned long ms = backoff_ms(a, 100, 5000);

		if (cap > 5000)
			cap = 5000;
		CHECK(ms >= cap / 2 && ms <= cap);
	}
}

static void test_rfc3339(void)
{
	/* 2026-11-30T22:30:00Z */
	const time_t t = 1796077800;

	CHECK(time_parse_rfc3339("2026-11-30T22:30:00Z") == t);
	CHECK(time_parse_rfc3339("2026-11-30T22:30:00.123456Z") == t);
	CHECK(time_parse_rfc3339("2026-11-30T23:30:00+01:00") == t);
	CHECK(time_parse_rfc3339("2026-11-30T20:00:00-02:30") == t);
	CHECK(time_parse_rfc3339("2026-11-30T22:30:00z") == t);
	CHECK(time_parse_rfc3339("2026-11-30T22:30:00") == -1);
	CHECK(time_parse_rfc3339("2026-11-30T22:30:00Zjunk") == -1);
	CHECK(time_parse_rfc3339("yesterday") == -1);
	CHECK(time_parse_rfc3339(NULL) == -1);
}

int main(void)
{
	log_init("test_util");
	test_rfc3339();
	test_base64();
	test_file_read_text();
	test_backoff();
	test_proc_id();
	printf("test_util: ok\n");
	return 0;
}
