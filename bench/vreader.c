/*
 * vreader: the verifying raw reader, the honest limit for a tool that
 * checks every byte it reads from S3 (issue 11, bench/read.sh).
 *
 *   vreader [-P N] [-r REGION] ENDPOINT BUCKET[/PREFIX] < KEYS
 *
 * KEYS are the chunk objects of an unencrypted cbtfs repository, one a line
 * ("chunks/ab/ab12..."), relative to PREFIX.  P threads (default 8), each
 * with one libcurl handle kept alive across its requests, take the next key
 * from the list and GET it, path-style, signed with CURLOPT_AWS_SIGV4 from
 * AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.  As the bytes arrive, the
 * write callback parses the chunk frame (src/codec.h), hashes the plaintext
 * with OpenSSL's SHA-256 (EVP: SHA-NI where the CPU has it) and at the end
 * compares the digest with the id in the object's name.  Any object that
 * fails (HTTP error, bad frame, wrong length, wrong hash) is reported and
 * makes the exit status 1.
 *
 * What this is equivalent to.  In a repository without encryption a
 * chunk's id is SHA-256 of its plaintext (DESIGN.md, codec_chunk_id()), so
 * whatever reads a chunk and promises it is right must at least: receive
 * the object, check the frame header, decompress the payload when the frame
 * says CODEC_F_ZSTD (random data is stored as it is: codec_encode() keeps
 * the raw bytes when zstd does not shrink them), hash every plaintext byte
 * and compare with the id.  That is what this does, streaming, with no
 * buffer for the chunk: each network buffer is hashed (or decompressed into
 * one 128 KiB buffer and hashed) where curl hands it over.  The mount does
 * all that and more: it keeps the chunk in its cache, copies it into FUSE's
 * replies and the kernel copies it to the reader, so this is a limit the
 * mount can approach, not reach; bench/read.sh asks for 0.9 of it.
 * Encrypted repositories are refused (their ids are keyed: a reader would
 * need the passphrase, and AES-GCM adds its own cost).
 *
 * Prints one line: plaintext bytes, objects, wall seconds (first request to
 * last byte), MB/s (10^6), and the process's CPU seconds (user + system,
 * all threads), for CPU-seconds-per-GiB comparisons.
 *
 * Build (bench/lib.sh does it, into the run's temporary directory):
 *   cc -O2 bench/vreader.c -o vreader
 *   $(pkg-config --cflags --libs libcurl libcrypto libzstd) -lpthread
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <zstd.h>

/* the frame header of src/codec.h */
#define HDR_LEN 16
#define DIGEST_LEN 32
#define F_ZSTD 0x01
#define F_ENCRYPTED 0x02
#define F_DIGEST 0x04
#define ID_HEX_LEN 64
#define OUT_LEN (128 * 1024)

struct keylist {
	char **v;
	size_t n, cap;
};

/* Shared by the threads: the keys, the next one to fetch, the totals. */
static struct {
	const char *endpoint, *bucket, *sigv4, *userpwd;
	struct keylist keys;
	size_t next;
	uint64_t plain_bytes, wire_bytes;
	size_t objects, failures;
	pthread_mutex_t lock;
} g = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* One transfer's state, reset for every object. */
struct xfer {
	unsigned char hdr[HDR_LEN + DIGEST_LEN];
	size_t hdr_got, hdr_need;
	unsigned char flags;
	uint64_t raw_len, plain, wire;
	EVP_MD_CTX *md;
	ZSTD_DCtx *z;
	size_t zret;		/* last ZSTD_decompressStream() result */
	unsigned char *out;	/* OUT_LEN bytes of decompressed plaintext */
	const char *why;	/* the first thing wrong, or NULL */
};

static void xfer_reset(struct xfer *x)
{
	x->hdr_got = 0;
	x->hdr_need = HDR_LEN;
	x->flags = 0;
	x->raw_len = x->plain = x->wire = 0;
	x->zret = 0;
	x->why = NULL;
	EVP_DigestInit_ex(x->md, EVP_sha256(), NULL);
	ZSTD_DCtx_reset(x->z, ZSTD_reset_session_only);
}

static uint64_t get_le64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* The frame header is complete: checks it.  0, or -1 with x->why. */
static int header_done(struct xfer *x)
{
	if (memcmp(x->hdr, "CBTc", 4) != 0 || x->hdr[4] != 1) {
		x->why = "not a cbtfs chunk frame (magic or version)";
		return -1;
	}
	x->flags = x->hdr[5];
	if (x->flags & F_ENCRYPTED) {
		x->why = "encrypted frame: vreader reads unencrypted "
			 "repositories only";
		return -1;
	}
	x->raw_len = get_le64(x->hdr + 8);
	return 0;
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t n = size * nmemb, take;
	const unsigned char *d = (const unsigned char *)p;

	x->wire += n;
	if (x->why != NULL)
		return n;	/* drain; reported at the end */
	while (x->hdr_got < x->hdr_need && n > 0) {
		take = x->hdr_need - x->hdr_got;
		if (take > n)
			take = n;
		memcpy(x->hdr + x->hdr_got, d, take);
		x->hdr_got += take;
		d += take;
		n -= take;
		if (x->hdr_got == HDR_LEN) {
			if (header_done(x) != 0)
				return size * nmemb;
			if (x->flags & F_DIGEST)
				x->hdr_need += DIGEST_LEN;
		}
	}
	if (n == 0)
		return size * nmemb;
	if (!(x->flags & F_ZSTD)) {
		EVP_DigestUpdate(x->md, d, n);
		x->plain += n;
		return size * nmemb;
	}
	{
		ZSTD_inBuffer in = { d, n, 0 };

		while (in.pos < in.size) {
			ZSTD_outBuffer out = { x->out, OUT_LEN, 0 };

			x->zret = ZSTD_decompressStream(x->z, &out, &in);
			if (ZSTD_isError(x->zret)) {
				x->why = "zstd payload does not decompress";
				break;
			}
			EVP_DigestUpdate(x->md, x->out, out.pos);
			x->plain += out.pos;
		}
	}
	return size * nmemb;
}

/* Flushes what zstd still holds once the body is complete. */
static void zstd_finish(struct xfer *x)
{
	ZSTD_inBuffer in = { NULL, 0, 0 };

	while (x->why == NULL && x->zret != 0) {
		ZSTD_outBuffer out = { x->out, OUT_LEN, 0 };

		x->zret = ZSTD_decompressStream(x->z, &out, &in);
		if (ZSTD_isError(x->zret)) {
			x->why = "zstd payload does not decompress";
			break;
		}
		if (out.pos == 0) {
			x->why = "zstd payload is truncated";
			break;
		}
		EVP_DigestUpdate(x->md, x->out, out.pos);
		x->plain += out.pos;
	}
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* The id the plaintext must hash to: the last path component of key. */
static int id_of(const char *key, unsigned char id[DIGEST_LEN])
{
	const char *h = strrchr(key, '/');
	int i, a, b;

	h = h ? h + 1 : key;
	if (strlen(h) != ID_HEX_LEN)
		return -1;
	for (i = 0; i < DIGEST_LEN; i++) {
		a = hexval(h[2 * i]);
		b = hexval(h[2 * i + 1]);
		if (a < 0 || b < 0)
			return -1;
		id[i] = (unsigned char)(a << 4 | b);
	}
	return 0;
}

static void *worker(void *arg)
{
	struct xfer x = { 0 };
	struct curl_slist *hdrs = NULL;
	char url[4096], errbuf[CURL_ERROR_SIZE];
	unsigned char id[DIGEST_LEN], md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;
	uint64_t plain = 0, wire = 0;
	size_t objects = 0, failures = 0, i;
	CURL *c = curl_easy_init();
	long status;
	CURLcode rc;

	(void)arg;
	x.md = EVP_MD_CTX_new();
	x.z = ZSTD_createDCtx();
	x.out = malloc(OUT_LEN);
	if (c == NULL || x.md == NULL || x.z == NULL || x.out == NULL) {
		fprintf(stderr, "vreader: out of memory\n");
		exit(1);
	}
	/* the hash of an empty body: what a GET signs (local-s3.md) */
	hdrs = curl_slist_append(
		hdrs,
		"x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb924"
		"27ae41e4649b934ca495991b7852b855");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_AWS_SIGV4, g.sigv4);
	curl_easy_setopt(c, CURLOPT_USERPWD, g.userpwd);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	for (;;) {
		pthread_mutex_lock(&g.lock);
		i = g.next < g.keys.n ? g.next++ : SIZE_MAX;
		pthread_mutex_unlock(&g.lock);
		if (i == SIZE_MAX)
			break;
		snprintf(url, sizeof(url), "%s/%s/%s", g.endpoint, g.bucket,
			 g.keys.v[i]);
		curl_easy_setopt(c, CURLOPT_URL, url);
		xfer_reset(&x);
		errbuf[0] = '\0';
		rc = curl_easy_perform(c);
		status = 0;
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
		if (rc != CURLE_OK) {
			fprintf(stderr, "vreader: %s: %s\n", url,
				errbuf[0] ? errbuf : curl_easy_strerror(rc));
			failures++;
			continue;
		}
		if (status != 200) {
			fprintf(stderr, "vreader: %s: HTTP %ld\n", url,
				status);
			failures++;
			continue;
		}
		if (x.why == NULL && x.hdr_got < x.hdr_need)
			x.why = "object shorter than a frame header";
		if (x.why == NULL && (x.flags & F_ZSTD))
			zstd_finish(&x);
		if (x.why == NULL && x.plain != x.raw_len)
			x.why = "plaintext length differs from the header's";
		EVP_DigestFinal_ex(x.md, md, &mdlen);
		if (x.why == NULL && id_of(g.keys.v[i], id) != 0)
			x.why = "the key does not end in a 64-hex chunk id";
		if (x.why == NULL && memcmp(md, id, DIGEST_LEN) != 0)
			x.why = "SHA-256 of the plaintext differs from its id";
		if (x.why != NULL) {
			fprintf(stderr, "vreader: %s: %s\n", url, x.why);
			failures++;
			continue;
		}
		plain += x.plain;
		wire += x.wire;
		objects++;
	}
	pthread_mutex_lock(&g.lock);
	g.plain_bytes += plain;
	g.wire_bytes += wire;
	g.objects += objects;
	g.failures += failures;
	pthread_mutex_unlock(&g.lock);
	curl_easy_cleanup(c);
	curl_slist_free_all(hdrs);
	EVP_MD_CTX_free(x.md);
	ZSTD_freeDCtx(x.z);
	free(x.out);
	return NULL;
}

static int read_keys(FILE *f, struct keylist *k)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	while ((n = getline(&line, &cap, f)) > 0) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n == 0)
			continue;
		if (k->n == k->cap) {
			k->cap = k->cap ? 2 * k->cap : 1024;
			k->v = realloc(k->v, k->cap * sizeof(*k->v));
			if (k->v == NULL)
				return ENOMEM;
		}
		if ((k->v[k->n++] = strdup(line)) == NULL)
			return ENOMEM;
	}
	free(line);
	return 0;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double tv(struct timeval t)
{
	return t.tv_sec + t.tv_usec / 1e6;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: vreader [-P N] [-r REGION] ENDPOINT BUCKET[/PREFIX] "
		"< KEYS\n"
		"Fetches the chunk objects named in KEYS (one a line, e.g. "
		"chunks/ab/ab12...)\nwith N keep-alive connections (default "
		"8), verifying each as it arrives.\nCredentials: "
		"AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.\n");
}

int main(int argc, char **argv)
{
	const char *region = getenv("AWS_REGION");
	const char *ak = getenv("AWS_ACCESS_KEY_ID");
	const char *sk = getenv("AWS_SECRET_ACCESS_KEY");
	char sigv4[256], *userpwd;
	pthread_t *th;
	struct rusage ru;
	double t0, t1, cpu;
	long p = 8;
	int c, i;

	while ((c = getopt(argc, argv, "P:r:h")) != -1) {
		switch (c) {
		case 'P':
			p = strtol(optarg, NULL, 10);
			if (p < 1 || p > 1024) {
				fprintf(stderr, "vreader: -P 1..1024\n");
				return 2;
			}
			break;
		case 'r':
			region = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (argc - optind != 2) {
		usage(stderr);
		return 2;
	}
	if (ak == NULL || sk == NULL) {
		fprintf(stderr, "vreader: set AWS_ACCESS_KEY_ID and "
			"AWS_SECRET_ACCESS_KEY\n");
		return 2;
	}
	g.endpoint = argv[optind];
	g.bucket = argv[optind + 1];
	snprintf(sigv4, sizeof(sigv4), "aws:amz:%s:s3",
		 region && *region ? region : "us-east-1");
	g.sigv4 = sigv4;
	if (asprintf(&userpwd, "%s:%s", ak, sk) < 0)
		return 1;
	g.userpwd = userpwd;
	if (read_keys(stdin, &g.keys) != 0) {
		fprintf(stderr, "vreader: out of memory reading keys\n");
		return 1;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		fprintf(stderr, "vreader: curl_global_init failed\n");
		return 1;
	}
	th = calloc((size_t)p, sizeof(*th));
	if (th == NULL)
		return 1;
	t0 = now();
	for (i = 0; i < p; i++) {
		if (pthread_create(&th[i], NULL, worker, NULL) != 0) {
			fprintf(stderr, "vreader: cannot start thread\n");
			return 1;
		}
	}
	for (i = 0; i < p; i++)
		pthread_join(th[i], NULL);
	t1 = now();
	getrusage(RUSAGE_SELF, &ru);
	cpu = tv(ru.ru_utime) + tv(ru.ru_stime);
	printf("bytes=%" PRIu64 " objects=%zu failures=%zu seconds=%.3f "
	       "mbps=%.1f cpu=%.3f user=%.3f sys=%.3f wire=%" PRIu64
	       " P=%ld\n", g.plain_bytes, g.objects, g.failures, t1 - t0,
	       g.plain_bytes / (t1 - t0) / 1e6, cpu, tv(ru.ru_utime),
	       tv(ru.ru_stime), g.wire_bytes, p);
	curl_global_cleanup();
	return g.failures ? 1 : 0;
}
