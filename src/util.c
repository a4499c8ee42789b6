/*
 * Shared helpers: logging, buffers, size parsing and formatting, hex, UUIDs.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "util.h"

static const char *log_progname = "cbtfs";
static bool log_syslog;
static FILE *log_file;
static int log_verbose;

void log_init(const char *progname)
{
	const char *slash = strrchr(progname, '/');

	log_progname = slash ? slash + 1 : progname;
}

void log_use_syslog(void)
{
	openlog(log_progname, LOG_PID, LOG_DAEMON);
	log_syslog = true;
}

void log_use_file(int fd)
{
	log_file = fdopen(fd, "a");
	if (log_file != NULL)
		setvbuf(log_file, NULL, _IOLBF, 0);
}

void log_set_verbose(int verbose)
{
	log_verbose = verbose;
}

/* a progress line is on stderr, without its newline */
static bool log_progress_line;

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	static const char *const prefix[] = {
		"error: ", "warning: ", "", "debug: "
	};
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO,
				    LOG_DEBUG };
	char msg[1024];
	va_list ap;

	if (lvl == LOG_LVL_DEBUG && log_verbose < 1)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (log_syslog) {
		syslog(prio[lvl], "%s%s", prefix[lvl], msg);
		return;
	}
	if (log_file != NULL) {
		char when[32];
		struct tm tm;
		time_t t = time(NULL);

		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ",
			 gmtime_r(&t, &tm));
		fprintf(log_file, "%s %s[%ld]: %s%s\n", when, log_progname,
			(long)getpid(), prefix[lvl], msg);
		return;
	}
	/* a message starts its own line, not the end of a progress line */
	if (__atomic_exchange_n(&log_progress_line, false, __ATOMIC_RELAXED))
		fputc('\n', stderr);
	fprintf(stderr, "%s: %s%s\n", log_progname, prefix[lvl], msg);
}

void log_progress_drawn(bool drawn)
{
	__atomic_store_n(&log_progress_line, drawn, __ATOMIC_RELAXED);
}

const char *errstr(int err, char *buf, size_t size)
{
	/* GNU strerror_r may return a static string instead of filling buf */
	return strerror_r(err, buf, size);
}

int buf_reserve(struct buf *b, size_t cap)
{
	unsigned char *p;

	if (cap <= b->cap)
		return 0;
	p = realloc(b->data, cap);
	if (p == NULL)
		return ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;

		while (cap < b->len + n)
			cap *= 2;
		if (buf_reserve(b, cap) != 0)
			return ENOMEM;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

int file_read_small(const char *path, size_t max, struct buf *b)
{
	char tmp[4096];
	size_t n;
	int err = 0;
	FILE *f = fopen(path, "re");

	if (f == NULL)
		return errno;
	while (err == 0 && (n = fread(tmp, 1, sizeof(tmp), f)) > 0) {
		if (b->len + n > max)
			err = EFBIG;
		else
			err = buf_append(b, tmp, n);
	}
	if (err == 0 && ferror(f))
		err = EIO;
	fclose(f);
	if (err == 0)
		err = buf_append(b, "", 1);	/* NUL, not counted */
	if (err == 0)
		b->len--;
	else
		buf_free(b);
	return err;
}

char *file_read_text(const char *path, size_t max, int *errp)
{
	struct buf b = { 0 };
	int err = file_read_small(path, max, &b);

	if (err != 0) {
		*errp = err;
		return NULL;
	}
	while (b.len > 0 && strchr(" \t\r\n", b.data[b.len - 1]) != NULL)
		b.data[--b.len] = '\0';
	if (b.len == 0) {
		buf_free(&b);
		*errp = ENODATA;
		return NULL;
	}
	return (char *)b.data;
}

int base64_decode(const char *in, unsigned char **outp, size_t *lenp)
{
	size_t n = strlen(in), pad = 0;
	unsigned char *out;
	int len;

	if (n % 4 != 0)
		return EINVAL;
	out = malloc(n / 4 * 3 + 1);
	if (out == NULL)
		return ENOMEM;
	len = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
	if (len < 0) {
		free(out);
		return EINVAL;
	}
	/* EVP_DecodeBlock counts the padding as zero bytes */
	while (pad < 2 && n > pad && in[n - 1 - pad] == '=')
		pad++;
	out[len - pad] = '\0';
	*outp = out;
	*lenp = (size_t)len - pad;
	return 0;
}

unsigned long backoff_ms(unsigned attempt, unsigned long base_ms,
			 unsigned long max_ms)
{
	unsigned long cap = base_ms << (attempt > 0 && attempt < 16
					? attempt - 1 : 15);
	unsigned int r = 0;

	if (cap > max_ms)
		cap = max_ms;
	RAND_bytes((unsigned char *)&r, sizeof(r));
	return cap / 2 + r % (cap / 2 + 1);	/* half fixed, half random */
}

void sleep_ms(unsigned long ms, volatile sig_atomic_t *stop)
{
	struct timespec ts = { (time_t)(ms / 1000),
			       (long)(ms % 1000) * 1000000L };
	double end = now_seconds() + ms / 1000.0;

	if (stop == NULL) {
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
		return;
	}
	/* look at the flag every 20 ms */
	while (now_seconds() < end && !*stop)
		nanosleep(&(struct timespec){ 0, 20 * 1000 * 1000 }, NULL);
}

int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mult = 1;

	if (s == NULL || !isdigit((unsigned char)*s))
		return EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return EINVAL;
	switch (toupper((unsigned char)*end)) {
	case '\0':
		break;
	case 'K':
		mult = 1ULL << 10;
		break;
	case 'M':
		mult = 1ULL << 20;
		break;
	case 'G':
		mult = 1ULL << 30;
		break;
	case 'T':
		mult = 1ULL << 40;
		break;
	default:
		return EINVAL;
	}
	if (*end != '\0') {
		end++;
		if (strcasecmp(end, "iB") == 0 || strcasecmp(end, "B") == 0)
			end += strlen(end);
		if (*end != '\0')
			return EINVAL;
	}
	if (v > UINT64_MAX / mult)
		return EINVAL;
	*out = v * mult;
	return 0;
}

const char *human_size(uint64_t bytes, char *buf, size_t size)
{
	static const char *const unit[] = { "B",   "KiB", "MiB",
					    "GiB", "TiB", "PiB" };
	double v = (double)bytes;
	int u = 0;

	if (bytes < 1024) {
		snprintf(buf, size, "%" PRIu64 " B", bytes);
		return buf;
	}
	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	snprintf(buf, size, "%.1f %s", v, unit[u]);
	return buf;
}

void hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hex_nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int hex_decode(const char *in, unsigned char *out, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		int hi = hex_nibble(in[2 * i]), lo;

		if (hi < 0)
			return EINVAL;
		lo = hex_nibble(in[2 * i + 1]);
		if (lo < 0)
			return EINVAL;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return in[2 * n] == '\0' ? 0 : EINVAL;
}

void uuid_new(char out[CBTFS_UUID_LEN + 1])
{
	uuid_t u;

	uuid_generate_random(u);
	uuid_unparse_lower(u, out);
}

bool uuid_valid(const char *s)
{
	uuid_t u;
	size_t i;

	if (strlen(s) != CBTFS_UUID_LEN || uuid_parse(s, u) != 0)
		return false;
	for (i = 0; s[i]; i++)
		if (isupper((unsigned char)s[i]))
			return false;
	return true;
}

time_t time_parse_rfc3339(const char *s)
{
	struct tm tm = { 0 };
	int n = 0, oh = 0, om = 0;
	time_t t;

	if (s == NULL ||
	    sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon,
		   &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) < 6)
		return -1;
	s += n;
	if (*s == '.')
		while (isdigit((unsigned char)*++s))
			;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	t = timegm(&tm);
	if (*s == 'Z' || *s == 'z')
		return s[1] == '\0' ? t : -1;
	if ((*s == '+' || *s == '-') &&
	    sscanf(s + 1, "%2d:%2d", &oh, &om) == 2)
		return *s == '+' ? t - oh * 3600 - om * 60
				 : t + oh * 3600 + om * 60;
	return -1;
}

double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Field 22 of /proc/<pid>/stat (start time) into *start: 0, ESRCH if the
 * process is gone, or another errno if it cannot be told (a /proc mounted
 * with hidepid, no memory).
 */
static int proc_start_time(long pid, unsigned long long *start)
{
	char path[64], *p;
	struct buf b = { 0 };
	int field, err;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	err = file_read_small(path, 4096, &b);
	if (err == ENOENT)
		/* hidepid=2 hides processes of others: ask the kernel */
		return kill((pid_t)pid, 0) != 0 && errno == ESRCH ? ESRCH
								   : EPERM;
	if (err != 0)
		return err;
	/* the command name (field 2) may hold spaces: skip past its ')' */
	p = strrchr((char *)b.data, ')');
	for (field = 2; p != NULL && field < 22; field++)
		p = strchr(p + 1, ' ');
	*start = p != NULL ? strtoull(p + 1, NULL, 10) : 0;
	buf_free(&b);
	return *start != 0 ? 0 : EINVAL;
}

void proc_id_self(struct proc_id *p)
{
	char *boot, link[64];
	ssize_t n;
	int err;

	memset(p, 0, sizeof(*p));
	if (gethostname(p->host, sizeof(p->host) - 1) != 0)
		p->host[0] = '\0';
	boot = file_read_text("/proc/sys/kernel/random/boot_id", 64, &err);
	if (boot != NULL)
		snprintf(p->boot_id, sizeof(p->boot_id), "%s", boot);
	free(boot);
	/* "pid:[4026531836]" */
	n = readlink("/proc/self/ns/pid", link, sizeof(link) - 1);
	if (n > 0) {
		char *lb, *rb;

		link[n] = '\0';
		lb = strchr(link, '[');
		rb = strchr(link, ']');
		if (lb != NULL && rb != NULL && rb > lb)
			snprintf(p->pidns, sizeof(p->pidns), "%.*s",
				 (int)(rb - lb - 1), lb + 1);
	}
	p->pid = (long)getpid();
	if (proc_start_time(p->pid, &p->start) != 0)
		p->start = 0;
}

enum proc_state proc_id_state(const struct proc_id *p)
{
	unsigned long long start = 0;
	struct proc_id self;

	proc_id_self(&self);
	if (p->host[0] == '\0' || p->boot_id[0] == '\0' ||
	    p->pidns[0] == '\0' || p->pid <= 0 || p->start == 0 ||
	    self.boot_id[0] == '\0' || self.pidns[0] == '\0' ||
	    strcmp(p->host, self.host) != 0 ||
	    strcmp(p->boot_id, self.boot_id) != 0 ||
	    strcmp(p->pidns, self.pidns) != 0)
		return PROC_UNKNOWN;
	switch (proc_start_time(p->pid, &start)) {
	case 0:
		return start == p->start ? PROC_ALIVE : PROC_DEAD;
	case ESRCH:
		return PROC_DEAD;
	default:
		return PROC_UNKNOWN;	/* cannot tell: never judged dead */
	}
}

const char *clock_str(double secs, char *buf, size_t size)
{
	unsigned long s = secs > 0 ? (unsigned long)(secs + 0.5) : 0;

	if (s >= 3600)
		snprintf(buf, size, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60,
			 s % 60);
	else
		snprintf(buf, size, "%lu:%02lu", s / 60, s % 60);
	return buf;
}


ssize_t pread_full(int fd, void *buf, size_t n, uint64_t off)
{
	unsigned char *p = buf;
	size_t got = 0;

	while (got < n) {
		ssize_t r = pread(fd, p + got, n - got, (off_t)(off + got));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

int pwrite_full(int fd, const void *buf, size_t n, uint64_t off)
{
	const unsigned char *p = buf;
	size_t done = 0;

	while (done < n) {
		ssize_t r = pwrite(fd, p + done, n - done,
				   (off_t)(off + done));

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? errno : EIO;
		done += (size_t)r;
	}
	return 0;
}

int write_full(int fd, const void *buf, size_t n)
{
	const unsigned char *p = buf;
	size_t done = 0;

	while (done < n) {
		ssize_t r = write(fd, p + done, n - done);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? errno : EIO;
		done += (size_t)r;
	}
	return 0;
}
