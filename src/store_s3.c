/*
 * S3 store: objects under s3://BUCKET/PREFIX, over libcurl, signed with
 * SigV4 by CURLOPT_AWS_SIGV4.
 *
 * Connections: a pool of at most `connections` curl easy handles.  A
 * request takes an idle handle (or makes one, or waits for one), runs, and
 * puts it back; a handle keeps its connection alive between requests, so
 * the pool bounds both the parallel transfers and the open connections.
 *
 * Retries: a request that fails in a way that may pass (connection refused
 * or reset, time-out, truncated body, HTTP 5xx, 429, SlowDown,
 * RequestTimeout) is tried again after an exponential, jittered back-off,
 * up to `retries` times.  Other failures (403, 404, other 4xx) are final.
 * Every final error is logged once, here, naming the operation, the object
 * key, the HTTP status, the S3 error code and what to check.
 *
 * Payload hashes: SigV4 signs x-amz-content-sha256, the SHA-256 of the
 * body.  Over https, PUT bodies are sent as UNSIGNED-PAYLOAD: TLS already
 * protects them on the way, the signature still covers the request, and
 * what cbtfs stores is verified against its id or digest on every read;
 * hashing every chunk a second time (its id is the SHA-256 of the
 * plaintext, not of the frame) would cost as much CPU as the id itself.
 * Over plain http the body is hashed and signed, so that nothing between
 * client and server can replace it.
 *
 * Signing with curl 7.88 needs three things (see the reference notes):
 * x-amz-content-sha256 on every request, query strings sorted by name and
 * percent-encoded as signed, and object keys of letters, digits and
 * "._~/-" only, which key_ok() enforces.
 *
 * Secrets (the secret key, the session token) are only ever handed to
 * curl; no message includes them.
 *
 * Locking: s->lock guards the pool and the counters; s->idle is signalled
 * when a handle is put back.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "aws_creds.h"
#include "status.h"
#include "store.h"

#define S3_DEFAULT_CONNECTIONS 8
#define S3_DEFAULT_RETRIES 6
#define S3_BACKOFF_BASE_MS 100
#define S3_BACKOFF_MAX_MS 5000
#define S3_MAX_KEYS 1000
#define S3_DEFAULT_TIMEOUT 30	/* seconds: connecting, or no progress */

static const char empty_sha256[] =
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

struct s3_handle {
	CURL *curl;
	struct s3_handle *next;
};

struct store_s3 {
	struct store st;	/* first: the vtable pointer */
	char *bucket;
	char *prefix;		/* "" or ending in '/' */
	char *base_url;		/* up to and including the bucket's '/' */
	char *endpoint;		/* for messages */
	char *sigv4;		/* "aws:amz:REGION:s3" */
	struct aws_creds_provider *creds;
	char *ca_file;
	unsigned retries;
	unsigned list_page;
	long timeout;		/* seconds */
	bool verbose;		/* CBTFS_CURL_VERBOSE */
	bool unsigned_payload;	/* https: PUT bodies not hashed */

	pthread_mutex_t lock;
	pthread_cond_t idle;
	struct s3_handle *free_handles;
	unsigned n_handles, max_handles;
	struct store_stats stats;
};

/* One request and what came back. */
struct s3_req {
	const char *op;		/* for messages: "GET", "list"... */
	const char *method;
	const char *key;	/* relative to the prefix; NULL: the bucket */
	const char *query;	/* sorted and encoded, or NULL */
	const void *body;
	size_t body_len;
	size_t body_pos;
	const char *range;	/* "bytes=..." or NULL */
	const char *content_md5;
	struct buf *out;	/* response body */
	struct aws_creds creds;	/* for one attempt */
	CURL *curl;		/* while running */
	long status;
	curl_off_t content_length;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- small helpers ------------------------------------------------- */

static bool key_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '~' ||
	       c == '-' || c == '/';
}

static bool key_ok(const char *key)
{
	const char *p;

	if (*key == '\0' || *key == '/' || strstr(key, "//") != NULL)
		return false;
	for (p = key; *p; p++)
		if (!key_char_ok(*p))
			return false;
	/* no "." or ".." components: URL paths would resolve them */
	for (p = key; *p; p = *p ? p + 1 : p) {
		size_t n = strcspn(p, "/");

		if ((n == 1 && p[0] == '.') ||
		    (n == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		p += n;
	}
	return true;
}

/* Percent-encodes s as SigV4 canonical query values need. */
static char *uri_encode(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = malloc(3 * strlen(s) + 1), *o = out;

	if (out == NULL)
		return NULL;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		    c == '_' || c == '~') {
			*o++ = (char)c;
		} else {
			*o++ = '%';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
		}
	}
	*o = '\0';
	return out;
}

static void sha256_hex(const void *data, size_t len, char hex[65])
{
	unsigned char md[32];
	unsigned int n = sizeof(md);

	EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
	hex_encode(md, sizeof(md), hex);
}

static void md5_base64(const void *data, size_t len, char out[25])
{
	unsigned char md[16];
	unsigned int n = sizeof(md);

	EVP_Digest(data, len, md, &n, EVP_md5(), NULL);
	EVP_EncodeBlock((unsigned char *)out, md, sizeof(md));
}

/*
 * Finds the text of the first <tag>...</tag> at or after p, XML entities
 * decoded, into out (size bytes).  Returns a pointer past the closing tag,
 * or NULL when absent.
 */
static const char *xml_text(const char *p, const char *tag, char *out,
			    size_t size)
{
	char open[64], close[64];
	const char *start, *end;
	size_t o = 0;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	start = strstr(p, open);
	if (start == NULL)
		return NULL;
	start += strlen(open);
	end = strstr(start, close);
	if (end == NULL)
		return NULL;
	while (start < end && o + 1 < size) {
		static const struct { const char *ent; char c; } ents[] = {
			{ "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' },
			{ "&quot;", '"' }, { "&apos;", '\'' },
		};
		size_t i;

		for (i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
			size_t n = strlen(ents[i].ent);

			if ((size_t)(end - start) >= n &&
			    strncmp(start, ents[i].ent, n) == 0) {
				out[o++] = ents[i].c;
				start += n;
				break;
			}
		}
		if (i == sizeof(ents) / sizeof(ents[0]))
			out[o++] = *start++;
	}
	out[o] = '\0';
	return end + strlen(close);
}

/* What a user should check for an S3 error code; NULL if nothing useful. */
/* What to check after a transfer that failed with rc (errbuf: curl's
 * message): "; ..." or "". */
static const char *curl_hint(CURLcode rc, const char *errbuf)
{
	bool tls = rc == CURLE_PEER_FAILED_VERIFICATION;

	if (tls && strstr(errbuf, "subject name") != NULL)
		return "; the certificate is for another host name: check "
		       "AWS_ENDPOINT_URL";
	if (tls || rc == CURLE_SSL_CACERT_BADFILE)
		return "; for a private CA set AWS_CA_BUNDLE or the ca-file "
		       "option";
	if (rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_CONNECT)
		return "; check AWS_ENDPOINT_URL";
	return "";
}

static const char *s3_hint(const struct store_s3 *s, const char *code,
			   long status)
{
	if (strcmp(code, "NoSuchBucket") == 0)
		return "the bucket does not exist: create it, or check the "
		       "bucket name and AWS_ENDPOINT_URL";
	if (strcmp(code, "SignatureDoesNotMatch") == 0)
		return "check AWS_SECRET_ACCESS_KEY, and AWS_REGION";
	if (strcmp(code, "InvalidAccessKeyId") == 0)
		return "check AWS_ACCESS_KEY_ID";
	if (strcmp(code, "AccessDenied") == 0 || status == 403)
		return "check the credentials and that they may use this "
		       "bucket and prefix";
	if (strcmp(code, "AuthorizationHeaderMalformed") == 0 ||
	    strcmp(code, "PermanentRedirect") == 0 || status == 301)
		return "the bucket is in another region: set AWS_REGION";
	if (strcmp(code, "InvalidBucketName") == 0)
		return "check the bucket name in the repository URL";
	if (strcmp(code, "RequestTimeTooSkewed") == 0)
		return "this host's clock is wrong";
	if (status == 503 || status == 429 || status >= 500)
		return s->retries > 0 ? "the server is overloaded or failing, "
					"also when retried"
				      : "the server is overloaded or failing";
	return NULL;
}

static bool curl_retryable(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:	/* DNS can be briefly away */
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

static bool status_retryable(long status, const char *code)
{
	return (status >= 500 && status != 501) || status == 429 ||
	       strcmp(code, "SlowDown") == 0 ||
	       strcmp(code, "RequestTimeout") == 0;
}

/* Sleeps before retry number attempt (1, 2, ...): exponential, jittered. */
static void backoff(unsigned attempt)
{
	sleep_ms(backoff_ms(attempt, S3_BACKOFF_BASE_MS, S3_BACKOFF_MAX_MS),
		 NULL);
}

/* ---- the handle pool ----------------------------------------------- */

static struct s3_handle *take_handle(struct store_s3 *s)
{
	struct s3_handle *h;

	pthread_mutex_lock(&s->lock);
	while (s->free_handles == NULL && s->n_handles >= s->max_handles)
		pthread_cond_wait(&s->idle, &s->lock);
	h = s->free_handles;
	if (h != NULL) {
		s->free_handles = h->next;
	} else {
		h = calloc(1, sizeof(*h));
		if (h != NULL && (h->curl = curl_easy_init()) == NULL) {
			free(h);
			h = NULL;
		}
		if (h != NULL)
			s->n_handles++;
	}
	pthread_mutex_unlock(&s->lock);
	return h;
}

static void give_handle(struct store_s3 *s, struct s3_handle *h)
{
	pthread_mutex_lock(&s->lock);
	h->next = s->free_handles;
	s->free_handles = h;
	pthread_cond_signal(&s->idle);
	pthread_mutex_unlock(&s->lock);
}

/* ---- one request --------------------------------------------------- */

static size_t on_write(char *data, size_t size, size_t n, void *arg)
{
	struct s3_req *r = arg;

	/* one allocation for the whole body when its length is known */
	if (r->out->len == 0) {
		curl_off_t cl = -1;

		curl_easy_getinfo(r->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T,
				  &cl);
		if (cl > 0 && cl < (curl_off_t)1 << 30 &&
		    buf_reserve(r->out, (size_t)cl) != 0)
			return 0;
	}

	if (buf_append(r->out, data, size * n) != 0)
		return 0;	/* curl fails with CURLE_WRITE_ERROR */
	return size * n;
}

static size_t on_read(char *dst, size_t size, size_t n, void *arg)
{
	struct s3_req *r = arg;
	size_t left = r->body_len - r->body_pos;

	if (left > size * n)
		left = size * n;
	memcpy(dst, (const char *)r->body + r->body_pos, left);
	r->body_pos += left;
	return left;
}

static int on_seek(void *arg, curl_off_t offset, int origin)
{
	struct s3_req *r = arg;

	if (origin != SEEK_SET || offset < 0 || (size_t)offset > r->body_len)
		return CURL_SEEKFUNC_FAIL;
	r->body_pos = (size_t)offset;
	return CURL_SEEKFUNC_OK;
}

static int make_url(struct store_s3 *s, const struct s3_req *r, char **url)
{
	int n;

	n = asprintf(url, "%s%s%s%s%s", s->base_url,
		     r->key ? s->prefix : "", r->key ? r->key : "",
		     r->query ? "?" : "", r->query ? r->query : "");
	return n < 0 ? ENOMEM : 0;
}

/* Runs r once on handle h; fills r->status.  Returns the curl code. */
static CURLcode perform(struct store_s3 *s, CURL *c, struct s3_req *r,
			const char *url, const char *payload_hash,
			char *errbuf)
{
	struct curl_slist *hdrs = NULL;
	char line[160], *token = NULL;
	CURLcode rc;

	curl_easy_reset(c);	/* keeps the connection alive */
	snprintf(line, sizeof(line), "x-amz-content-sha256: %s", payload_hash);
	hdrs = curl_slist_append(hdrs, line);
	/* no "Expect:" to suppress 100-continue: curl 7.88 would sign it */
	if (r->creds.token != NULL &&
	    asprintf(&token, "x-amz-security-token: %s", r->creds.token) > 0) {
		hdrs = curl_slist_append(hdrs, token);
		OPENSSL_cleanse(token, strlen(token));
		free(token);
	}
	if (r->range != NULL) {
		snprintf(line, sizeof(line), "Range: %s", r->range);
		hdrs = curl_slist_append(hdrs, line);
	}
	if (r->content_md5 != NULL) {
		snprintf(line, sizeof(line), "Content-MD5: %s",
			 r->content_md5);
		hdrs = curl_slist_append(hdrs, line);
	}
	if (r->body != NULL)
		hdrs = curl_slist_append(
			hdrs, "Content-Type: application/octet-stream");

	errbuf[0] = '\0';
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_AWS_SIGV4, s->sigv4);
	curl_easy_setopt(c, CURLOPT_USERNAME, r->creds.access_key);
	curl_easy_setopt(c, CURLOPT_PASSWORD, r->creds.secret_key);
	/* a request that stalls (under 1 KB/s) this long is retried */
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, s->timeout);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, s->timeout);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 256L * 1024);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
	if (s->ca_file != NULL)
		curl_easy_setopt(c, CURLOPT_CAINFO, s->ca_file);
	if (s->verbose)
		curl_easy_setopt(c, CURLOPT_VERBOSE, 1L);

	if (strcmp(r->method, "HEAD") == 0) {
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	} else if (strcmp(r->method, "PUT") == 0 ||
		   strcmp(r->method, "POST") == 0) {
		r->body_pos = 0;
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(c, CURLOPT_READDATA, r);
		curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(c, CURLOPT_SEEKDATA, r);
		curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE,
				 (curl_off_t)r->body_len);
		if (strcmp(r->method, "POST") == 0)
			curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "POST");
	} else if (strcmp(r->method, "GET") != 0) {
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
	}

	r->out->len = 0;
	r->status = 0;
	r->curl = c;
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK) {
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
		curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T,
				  &r->content_length);
	}
	curl_slist_free_all(hdrs);
	return rc;
}

/*
 * Runs a request with retries.  Returns 0 for a 2xx answer, else an errno;
 * quiet leaves a 404 (ENOENT, often expected) and a 416 (ERANGE, a read
 * past the end) unlogged.
 */
static int s3_request(struct store_s3 *s, struct s3_req *r, bool quiet)
{
	char payload_hash[65], errbuf[CURL_ERROR_SIZE], code[128] = "";
	char *url = NULL;
	unsigned attempt;
	int err;

	if ((err = make_url(s, r, &url)) != 0)
		return err;
	if (r->body != NULL && s->unsigned_payload &&
	    strcmp(r->method, "PUT") == 0)
		snprintf(payload_hash, sizeof(payload_hash), "%s",
			 "UNSIGNED-PAYLOAD");
	else if (r->body != NULL)
		sha256_hex(r->body, r->body_len, payload_hash);
	else
		memcpy(payload_hash, empty_sha256, sizeof(payload_hash));

	for (attempt = 0;; attempt++) {
		struct s3_handle *h;
		CURLcode rc;
		bool retry;

		/* current credentials: refreshed before they expire */
		if ((err = aws_creds_get(s->creds, &r->creds)) != 0)
			break;
		if ((h = take_handle(s)) == NULL) {
			aws_creds_clear(&r->creds);
			free(url);
			return ENOMEM;
		}
		rc = perform(s, h->curl, r, url, payload_hash, errbuf);
		give_handle(s, h);
		aws_creds_clear(&r->creds);

		code[0] = '\0';
		if (rc == CURLE_OK && r->status >= 300 && r->out->len > 0 &&
		    buf_append(r->out, "", 1) == 0) {
			xml_text((const char *)r->out->data, "Code", code,
				 sizeof(code));
			r->out->len--;
		}
		retry = rc != CURLE_OK ? curl_retryable(rc)
				       : status_retryable(r->status, code);

		pthread_mutex_lock(&s->lock);
		s->stats.requests++;
		if (retry && attempt < s->retries)
			s->stats.retries++;
		pthread_mutex_unlock(&s->lock);

		if (rc == CURLE_OK && r->status >= 200 && r->status < 300) {
			err = 0;
			break;
		}
		if (retry && attempt < s->retries) {
			log_debug("%s %s%s: %s, retrying (%u)", r->op,
				  s->prefix, r->key ? r->key : "",
				  rc != CURLE_OK ? curl_easy_strerror(rc)
						 : "server error",
				  attempt + 1);
			backoff(attempt + 1);
			continue;
		}

		if (rc != CURLE_OK) {
			const char *hint = curl_hint(rc, errbuf);

			log_error("S3 %s %s/%s%s at %s failed%s: %s: %s%s",
				  r->op, s->bucket, s->prefix,
				  r->key ? r->key : "", s->endpoint,
				  attempt > 0 ? " after retries" : "",
				  curl_easy_strerror(rc),
				  errbuf[0] ? errbuf : "-", hint);
			err = rc == CURLE_OPERATION_TIMEDOUT ? ETIMEDOUT : EIO;
			break;
		}
		err = http_status_to_errno(r->status);
		if (quiet &&
		    (err == ERANGE ||
		     (err == ENOENT && strcmp(code, "NoSuchBucket") != 0)))
			break;
		{
			const char *hint = s3_hint(s, code, r->status);

			log_error("S3 %s %s/%s%s failed: HTTP %ld%s%s%s%s",
				  r->op, s->bucket, s->prefix,
				  r->key ? r->key : "", r->status,
				  code[0] ? " " : "", code, hint ? ": " : "",
				  hint ? hint : "");
		}
		/* refines the map's ENOENT: the repository is missing,
		 * not a key in it */
		if (strcmp(code, "NoSuchBucket") == 0)
			err = ENXIO;
		break;
	}
	free(url);
	return err;
}

/* ---- store operations ---------------------------------------------- */

static int bad_key(struct store_s3 *s, const char *key)
{
	log_error("object key '%s' has characters cbtfs does not use with S3 "
		  "(letters, digits and ._~/- only)", key);
	return EINVAL;
}

static int s3_get(struct store *st, const char *key, uint64_t off,
		  uint64_t len, struct buf *out)
{
	struct store_s3 *s = (struct store_s3 *)st;
	struct s3_req r = { .op = "GET", .method = "GET", .key = key,
			    .out = out };
	char range[64];
	int err;

	if (!key_ok(key))
		return bad_key(s, key);
	if (len == 0) {
		out->len = 0;
		return 0;
	}
	if (off > 0 || len != STORE_TO_END) {
		if (len == STORE_TO_END)
			snprintf(range, sizeof(range), "bytes=%" PRIu64 "-",
				 off);
		else
			snprintf(range, sizeof(range),
				 "bytes=%" PRIu64 "-%" PRIu64, off,
				 off + len - 1);
		r.range = range;
	}
	err = s3_request(s, &r, true);
	if (err == ERANGE) {	/* 416: the range starts past the end */
		out->len = 0;
		return 0;
	}
	if (err != 0)
		out->len = 0;
	return err;
}

static int s3_put(struct store *st, const char *key, const void *data,
		  size_t len)
{
	struct store_s3 *s = (struct store_s3 *)st;
	struct buf resp = { 0 };
	struct s3_req r = { .op = "PUT", .method = "PUT", .key = key,
			    .body = data ? data : "", .body_len = len,
			    .out = &resp };
	int err;

	if (!key_ok(key))
		return bad_key(s, key);
	err = s3_request(s, &r, false);
	buf_free(&resp);
	return err;
}

static int s3_head(struct store *st, const char *key, uint64_t *sizep)
{
	struct store_s3 *s = (struct store_s3 *)st;
	struct buf resp = { 0 };
	struct s3_req r = { .op = "HEAD", .method = "HEAD", .key = key,
			    .out = &resp };
	int err;

	if (!key_ok(key))
		return bad_key(s, key);
	err = s3_request(s, &r, true);
	if (err == 0 && sizep != NULL)
		*sizep =
			r.content_length >= 0 ? (uint64_t)r.content_length : 0;
	buf_free(&resp);
	return err;
}

static int s3_del(struct store *st, const char *key)
{
	struct store_s3 *s = (struct store_s3 *)st;
	struct buf resp = { 0 };
	struct s3_req r = { .op = "DELETE", .method = "DELETE", .key = key,
			    .out = &resp };
	int err;

	if (!key_ok(key))
		return bad_key(s, key);
	err = s3_request(s, &r, true);
	buf_free(&resp);
	return err == ENOENT ? 0 : err;
}

/* Deletes up to 1000 keys in one request (S3 DeleteObjects). */
static int s3_del_batch(struct store_s3 *s, const char *const *keys,
			size_t n)
{
	struct buf body = { 0 }, resp = { 0 };
	struct s3_req r = { .op = "DeleteObjects", .method = "POST",
			    .query = "delete=", .out = &resp };
	char md5[25], failed[512];
	size_t i;
	int err = 0;

	err |= buf_append(&body, "<Delete><Quiet>true</Quiet>", 27);
	for (i = 0; i < n && err == 0; i++) {
		if (!key_ok(keys[i])) {
			buf_free(&body);
			return bad_key(s, keys[i]);
		}
		err |= buf_append(&body, "<Object><Key>", 13);
		err |= buf_append(&body, s->prefix, strlen(s->prefix));
		err |= buf_append(&body, keys[i], strlen(keys[i]));
		err |= buf_append(&body, "</Key></Object>", 15);
	}
	err |= buf_append(&body, "</Delete>", 9);
	if (err != 0) {
		buf_free(&body);
		return ENOMEM;
	}
	md5_base64(body.data, body.len, md5);
	r.body = body.data;
	r.body_len = body.len;
	r.content_md5 = md5;
	r.key = NULL;
	err = s3_request(s, &r, false);
	/* a 200 can still report per-key errors */
	if (err == 0 && buf_append(&resp, "", 1) == 0 &&
	    xml_text((const char *)resp.data, "Key", failed,
		     sizeof(failed)) != NULL) {
		char code[128] = "?";

		xml_text((const char *)resp.data, "Code", code, sizeof(code));
		log_error("S3 DeleteObjects in %s: %s: %s", s->bucket, failed,
			  code);
		err = EIO;
	}
	buf_free(&body);
	buf_free(&resp);
	return err;
}

static int s3_del_many(struct store *st, const char *const *keys, size_t n)
{
	struct store_s3 *s = (struct store_s3 *)st;
	size_t done = 0;
	int err = 0;

	while (done < n && err == 0) {
		size_t batch = n - done > 1000 ? 1000 : n - done;

		err = s3_del_batch(s, keys + done, batch);
		done += batch;
	}
	return err;
}

static int s3_list(struct store *st, const char *prefix, store_list_cb *cb,
		   void *arg)
{
	struct store_s3 *s = (struct store_s3 *)st;
	struct buf resp = { 0 };
	char *full = NULL, *enc_prefix = NULL, *enc_token = NULL;
	char *query = NULL, *token = NULL;
	size_t plen = strlen(s->prefix);
	int err = 0;

	if (*prefix != '\0' && !key_ok(prefix))
		return bad_key(s, prefix);
	token = calloc(1, 4096);
	if (token == NULL || asprintf(&full, "%s%s", s->prefix, prefix) < 0 ||
	    (enc_prefix = uri_encode(full)) == NULL) {
		err = ENOMEM;
		goto out;
	}
	for (;;) {
		struct s3_req r = { .op = "list", .method = "GET", .key = NULL,
				    .out = &resp };
		char truncated[16] = "", key[1024], size[32];
		const char *p;
		int n;

		free(query);
		free(enc_token);
		enc_token = token[0] ? uri_encode(token) : NULL;
		/* parameters sorted by name, as SigV4 signs them */
		n = asprintf(&query, "%s%s%slist-type=2&max-keys=%u&prefix=%s",
			     enc_token ? "continuation-token=" : "",
			     enc_token ? enc_token : "", enc_token ? "&" : "",
			     s->list_page, enc_prefix);
		if (n < 0 || (token[0] && enc_token == NULL)) {
			query = NULL;
			err = ENOMEM;
			break;
		}
		r.query = query;
		if ((err = s3_request(s, &r, false)) != 0)
			break;
		if ((err = buf_append(&resp, "", 1)) != 0)
			break;
		for (p = (const char *)resp.data;
		     (p = strstr(p, "<Contents>")) != NULL;) {
			const char *next =
				xml_text(p, "Key", key, sizeof(key));

			if (next == NULL ||
			    xml_text(p, "Size", size, sizeof(size)) == NULL ||
			    strncmp(key, s->prefix, plen) != 0) {
				log_error("S3 list of %s: unexpected answer "
					  "from %s", s->bucket, s->endpoint);
				err = EIO;
				goto out;
			}
			p = next;
			if ((err = cb(arg, key + plen,
				      strtoull(size, NULL, 10))) != 0)
				goto out;
		}
		xml_text((const char *)resp.data, "IsTruncated", truncated,
			 sizeof(truncated));
		if (strcmp(truncated, "true") != 0)
			break;
		if (xml_text((const char *)resp.data, "NextContinuationToken",
			     token, 4096) == NULL || token[0] == '\0') {
			log_error("S3 list of %s: truncated answer without a "
				  "continuation token", s->bucket);
			err = EIO;
			break;
		}
	}
out:
	free(query);
	free(enc_token);
	free(enc_prefix);
	free(full);
	free(token);
	buf_free(&resp);
	return err;
}

static void s3_get_stats(struct store *st, struct store_stats *stats)
{
	struct store_s3 *s = (struct store_s3 *)st;

	pthread_mutex_lock(&s->lock);
	*stats = s->stats;
	pthread_mutex_unlock(&s->lock);
}

static void s3_destroy(struct store *st)
{
	struct store_s3 *s = (struct store_s3 *)st;

	while (s->free_handles != NULL) {
		struct s3_handle *h = s->free_handles;

		s->free_handles = h->next;
		curl_easy_cleanup(h->curl);
		free(h);
	}
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->idle);
	free(s->bucket);
	free(s->prefix);
	free(s->base_url);
	free(s->endpoint);
	free(s->sigv4);
	aws_creds_close(s->creds);
	free(s->ca_file);
	free(s);
}

static const struct store_ops store_s3_ops = {
	.name = "s3",
	.get = s3_get,
	.put = s3_put,
	.head = s3_head,
	.del = s3_del,
	.del_many = s3_del_many,
	.list = s3_list,
	.get_stats = s3_get_stats,
	.destroy = s3_destroy,
};

/* ---- configuration ------------------------------------------------- */

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v != NULL && v[0] != '\0' ? v : NULL;
}

static bool bucket_ok(const char *b)
{
	size_t n = strlen(b), i;

	if (n < 3 || n > 63)
		return false;
	for (i = 0; i < n; i++)
		if (!((b[i] >= 'a' && b[i] <= 'z') ||
		      (b[i] >= '0' && b[i] <= '9') || b[i] == '.' ||
		      b[i] == '-'))
			return false;
	return true;
}

/* Fills the addressing part of s from the options and the environment. */
static int configure_endpoint(struct store_s3 *s,
			      const struct store_opts *opts,
			      const char *region)
{
	const char *ep = opts->endpoint ? opts->endpoint
			 : env("AWS_ENDPOINT_URL_S3")
				 ? env("AWS_ENDPOINT_URL_S3")
				 : env("AWS_ENDPOINT_URL");
	const char *addressing = opts->addressing;
	bool path_style;
	size_t n;

	if (addressing != NULL && strcmp(addressing, "path") != 0 &&
	    strcmp(addressing, "virtual") != 0) {
		log_error("S3 addressing '%s': use 'path' or 'virtual'",
			  addressing);
		return EINVAL;
	}
	if (ep == NULL) {
		/* AWS itself: virtual-hosted unless told otherwise */
		path_style = addressing && strcmp(addressing, "path") == 0;
		if (path_style) {
			if (asprintf(&s->endpoint,
				     "https://s3.%s.amazonaws.com",
				     region) < 0)
				return ENOMEM;
			if (asprintf(&s->base_url, "%s/%s/", s->endpoint,
				     s->bucket) < 0)
				return ENOMEM;
		} else {
			if (asprintf(&s->endpoint,
				     "https://%s.s3.%s.amazonaws.com",
				     s->bucket, region) < 0)
				return ENOMEM;
			if (asprintf(&s->base_url, "%s/", s->endpoint) < 0)
				return ENOMEM;
		}
		return 0;
	}
	if (strncmp(ep, "http://", 7) != 0 &&
	    strncmp(ep, "https://", 8) != 0) {
		log_error("S3 endpoint '%s' must begin with http:// or "
			  "https://", ep);
		return EINVAL;
	}
	s->endpoint = strdup(ep);
	if (s->endpoint == NULL)
		return ENOMEM;
	n = strlen(s->endpoint);
	while (n > 0 && s->endpoint[n - 1] == '/')
		s->endpoint[--n] = '\0';
	/* a custom endpoint: path-style unless told otherwise */
	path_style = !(addressing && strcmp(addressing, "virtual") == 0);
	if (path_style) {
		if (asprintf(&s->base_url, "%s/%s/", s->endpoint, s->bucket) <
		    0)
			return ENOMEM;
	} else {
		const char *host = strstr(s->endpoint, "://") + 3;

		if (asprintf(&s->base_url, "%.*s%s.%s/",
			     (int)(host - s->endpoint), s->endpoint, s->bucket,
			     host) < 0)
			return ENOMEM;
	}
	return 0;
}

/* The first request: checks endpoint, credentials and bucket at once. */
static int check_bucket(struct store_s3 *s)
{
	struct buf resp = { 0 };
	char *enc = uri_encode(s->prefix), *query = NULL;
	struct s3_req r = { .op = "list", .method = "GET", .key = NULL,
			    .out = &resp };
	int err;

	if (enc == NULL || asprintf(&query, "list-type=2&max-keys=1&prefix=%s",
				    enc) < 0) {
		free(enc);
		return ENOMEM;
	}
	r.query = query;
	err = s3_request(s, &r, false);
	free(query);
	free(enc);
	buf_free(&resp);
	return err;
}

struct store *store_s3_create(const char *bucket, const char *prefix,
			      const struct store_opts *opts, int *errp)
{
	struct store_s3 *s;
	const char *region, *v;
	size_t n;
	int err = ENOMEM;

	pthread_once(&curl_once, curl_init_once);
	if (!bucket_ok(bucket)) {
		log_error("s3://%s: invalid bucket name (3-63 lower-case "
			  "letters, digits, '.', '-')", bucket);
		*errp = EINVAL;
		return NULL;
	}
	while (*prefix == '/')
		prefix++;
	n = strlen(prefix);
	while (n > 0 && prefix[n - 1] == '/')
		n--;
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		*errp = ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->idle, NULL);
	s->st.ops = &store_s3_ops;
	s->bucket = strdup(bucket);
	if (s->bucket == NULL ||
	    asprintf(&s->prefix, "%.*s%s", (int)n, prefix, n ? "/" : "") < 0) {
		s->prefix = NULL;
		goto fail;
	}
	if (n > 0 && !key_ok(s->prefix)) {
		log_error("s3://%s/%s: the prefix may hold only letters, "
			  "digits and ._~/- (no empty, '.' or '..' "
			  "components)", bucket, prefix);
		err = EINVAL;
		goto fail;
	}

	region = opts->region ? opts->region
		 : env("AWS_REGION") ? env("AWS_REGION")
				      : env("AWS_DEFAULT_REGION");
	if (region == NULL)
		region = "us-east-1";
	if (asprintf(&s->sigv4, "aws:amz:%s:s3", region) < 0) {
		s->sigv4 = NULL;
		goto fail;
	}
	if ((err = configure_endpoint(s, opts, region)) != 0)
		goto fail;

	/* the AWS SDKs' default chain: see aws_creds.h */
	{
		char what[80];

		snprintf(what, sizeof(what), "s3://%s", bucket);
		if ((s->creds = aws_creds_open(what, &err)) == NULL)
			goto fail;
	}
	v = opts->ca_file ? opts->ca_file : env("AWS_CA_BUNDLE");
	if (v != NULL) {
		if (access(v, R_OK) != 0) {
			err = errno;
			log_error("CA bundle %s: %s", v, ERRSTR(err));
			goto fail;
		}
		if ((s->ca_file = strdup(v)) == NULL)
			goto fail;
	}
	s->max_handles = opts->connections ? opts->connections
					   : S3_DEFAULT_CONNECTIONS;
	s->retries = opts->retries >= 0 ? (unsigned)opts->retries
					: S3_DEFAULT_RETRIES;
	s->timeout = opts->timeout > 0 ? (long)opts->timeout
				       : S3_DEFAULT_TIMEOUT;
	/* CBTFS_S3_LIST_PAGE: smaller listing pages, for tests */
	if ((v = env("CBTFS_S3_LIST_PAGE")) != NULL)
		s->list_page = (unsigned)strtoul(v, NULL, 10);
	if (s->list_page == 0 || s->list_page > S3_MAX_KEYS)
		s->list_page = S3_MAX_KEYS;
	/* set, even to "": documented so in the man pages */
	s->verbose = getenv("CBTFS_CURL_VERBOSE") != NULL;
	s->unsigned_payload = strncmp(s->base_url, "https://", 8) == 0;

	if ((err = check_bucket(s)) != 0)
		goto fail;
	return &s->st;

fail:
	s3_destroy(&s->st);
	*errp = err;
	return NULL;
}
