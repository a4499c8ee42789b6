/*
 * AWS credential provider chain: see aws_creds.h.
 *
 * Each source has a configure step (reads the environment and files,
 * answers "not configured" with ENOENT, "configured but broken" with
 * EACCES, each with a reason for the message) and, for the temporary
 * ones, a fetch step that the provider runs again to refresh.  The
 * provider remembers which source answered and what it needs to fetch
 * again.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/crypto.h>

#include "aws_creds.h"
#include "util.h"

#define IMDS_DEFAULT "http://169.254.169.254"
#define IMDS_DEFAULT_V6 "http://[fd00:ec2::254]"
#define IMDS_TOKEN_TTL "21600"
#define IMDS_TIMEOUT_MS 1000L
#define HTTP_TIMEOUT_MS 10000L	/* STS and the container endpoint */
#define ECS_HOST "http://169.254.170.2"
#define FILE_MAX (1 << 20)
#define WHY_MAX 512

enum src_kind { SRC_ENV, SRC_FILES, SRC_WEB, SRC_CONTAINER, SRC_IMDS };

struct aws_creds_provider {
	pthread_mutex_t lock;	/* guards cur and last_try */
	struct aws_creds cur;
	time_t last_try;	/* of a refresh; 0: none yet */

	enum src_kind kind;
	char *what;		/* "s3://bucket", for messages */
	char *source;		/* for messages */
	/* what a fetch needs: */
	char *url;		/* STS, container or IMDS endpoint */
	char *token_file;	/* web identity or container token */
	char *auth_token;	/* AWS_CONTAINER_AUTHORIZATION_TOKEN */
	char *role_arn;
	char *session_name;
};

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v != NULL && v[0] != '\0' ? v : NULL;
}

static void wipe_free(char *s)
{
	if (s != NULL) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

void aws_creds_clear(struct aws_creds *c)
{
	free(c->access_key);
	wipe_free(c->secret_key);
	wipe_free(c->token);
	memset(c, 0, sizeof(*c));
}

static int creds_set(struct aws_creds *c, const char *ak, const char *sk,
		     const char *tok, time_t expires)
{
	c->access_key = strdup(ak);
	c->secret_key = strdup(sk);
	c->token = tok != NULL && *tok != '\0' ? strdup(tok) : NULL;
	c->expires = expires;
	if (c->access_key == NULL || c->secret_key == NULL ||
	    (tok != NULL && *tok != '\0' && c->token == NULL)) {
		aws_creds_clear(c);
		return ENOMEM;
	}
	return 0;
}

/* "~/x" from the environment means $HOME/x, as in the SDKs. */
static char *expand_home(const char *p)
{
	const char *home = getenv("HOME");
	char *out;

	if (p[0] == '~' && p[1] == '/' && home != NULL) {
		if (asprintf(&out, "%s%s", home, p + 1) < 0)
			return NULL;
		return out;
	}
	return strdup(p);
}

/* ---- HTTP ------------------------------------------------------------ */

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct buf *b = arg;

	if (b->len + size * n > FILE_MAX)
		return 0;
	return buf_append(b, p, size * n) == 0 ? size * n : 0;
}

/*
 * One request to a credentials endpoint.  Returns 0 with the HTTP status
 * and the body (NUL-terminated), or EACCES with why = what curl said.
 */
static int http_run(const char *method, const char *url,
		    struct curl_slist *hdrs, const char *body, long timeout_ms,
		    bool direct, long *status, struct buf *out, char *why)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	const char *ca = env("AWS_CA_BUNDLE");
	CURL *c = curl_easy_init();
	CURLcode rc;

	out->len = 0;
	if (c == NULL)
		return ENOMEM;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2 * timeout_ms);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	if (direct)	/* link-local agents are never behind a proxy */
		curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	if (ca != NULL)
		curl_easy_setopt(c, CURLOPT_CAINFO, ca);
	if (strcmp(method, "POST") == 0)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	else if (strcmp(method, "GET") != 0)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (getenv("CBTFS_CURL_VERBOSE") != NULL)
		curl_easy_setopt(c, CURLOPT_VERBOSE, 1L);
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	curl_easy_cleanup(c);
	if (rc != CURLE_OK) {
		snprintf(why, WHY_MAX, "%s: %s", url,
			 errbuf[0] ? errbuf : curl_easy_strerror(rc));
		return EACCES;
	}
	if (buf_append(out, "", 1) != 0)
		return ENOMEM;
	out->len--;
	return 0;
}

/* Percent-encodes all but RFC 3986 unreserved characters; malloc'd. */
static char *form_encode(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = malloc(strlen(s) * 3 + 1), *o = out;

	if (out == NULL)
		return NULL;
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' ||
		    ch == '~') {
			*o++ = (char)ch;
		} else {
			*o++ = '%';
			*o++ = hex[ch >> 4];
			*o++ = hex[ch & 15];
		}
	}
	*o = '\0';
	return out;
}

/* The text of the first <tag>...</tag> in xml, entities decoded;
 * malloc'd, or NULL. */
static char *xml_get(const char *xml, const char *tag)
{
	char open[64], close[64];
	const char *a, *b;
	char *out, *o;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	if ((a = strstr(xml, open)) == NULL)
		return NULL;
	a += strlen(open);
	if ((b = strstr(a, close)) == NULL)
		return NULL;
	if ((out = malloc((size_t)(b - a) + 1)) == NULL)
		return NULL;
	for (o = out; a < b; a++) {
		static const struct { const char *e; char c; } ents[] = {
			{ "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' },
			{ "&quot;", '"' }, { "&apos;", '\'' },
		};
		size_t i;

		for (i = 0; i < sizeof(ents) / sizeof(ents[0]); i++)
			if (strncmp(a, ents[i].e, strlen(ents[i].e)) == 0)
				break;
		if (i < sizeof(ents) / sizeof(ents[0])) {
			*o++ = ents[i].c;
			a += strlen(ents[i].e) - 1;
		} else {
			*o++ = *a;
		}
	}
	*o = '\0';
	return out;
}

/* Takes AccessKeyId, SecretAccessKey, Token, Expiration from a JSON
 * answer (container and IMDS); 0, or EACCES with why. */
static int creds_from_json(const char *text, const char *url,
			   struct aws_creds *out, char *why)
{
	struct json_object *o = json_tokener_parse(text), *v;
	const char *f[4] = { NULL };
	static const char *const names[4] = { "AccessKeyId",
					      "SecretAccessKey", "Token",
					      "Expiration" };
	time_t exp = 0;
	int i, err = EACCES;

	if (o == NULL || !json_object_is_type(o, json_type_object)) {
		snprintf(why, WHY_MAX, "%s: the answer is not JSON", url);
		goto out;
	}
	for (i = 0; i < 4; i++)
		if (json_object_object_get_ex(o, names[i], &v) &&
		    json_object_is_type(v, json_type_string))
			f[i] = json_object_get_string(v);
	if (json_object_object_get_ex(o, "Code", &v) &&
	    strcmp(json_object_get_string(v), "Success") != 0) {
		snprintf(why, WHY_MAX, "%s: Code %.64s", url,
			 json_object_get_string(v));
		goto out;
	}
	if (f[0] == NULL || f[1] == NULL) {
		snprintf(why, WHY_MAX, "%s: the answer has no %s", url,
			 f[0] == NULL ? "AccessKeyId" : "SecretAccessKey");
		goto out;
	}
	if (f[3] != NULL && (exp = time_parse_rfc3339(f[3])) == -1) {
		snprintf(why, WHY_MAX, "%s: Expiration '%.40s' is not a "
			 "time", url, f[3]);
		goto out;
	}
	err = creds_set(out, f[0], f[1], f[2], exp);
out:
	json_object_put(o);
	return err;
}

/* ---- 1. environment -------------------------------------------------- */

static int src_env(struct aws_creds_provider *p, struct aws_creds *out,
		   char *why)
{
	const char *ak = env("AWS_ACCESS_KEY_ID");
	const char *sk = env("AWS_SECRET_ACCESS_KEY");

	(void)p;
	if (ak == NULL && sk == NULL) {
		snprintf(why, WHY_MAX, "AWS_ACCESS_KEY_ID not set");
		return ENOENT;
	}
	if (ak == NULL || sk == NULL) {
		snprintf(why, WHY_MAX, "%s is set but %s is not",
			 ak ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
			 ak ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
		return EACCES;
	}
	return creds_set(out, ak, sk, env("AWS_SESSION_TOKEN"), 0);
}

/* ---- 2. shared credentials and config files --------------------------- */

/* The keys of one profile that cbtfs reads or must refuse. */
#define PROFILE_KEYS(X) \
	X(aws_access_key_id) X(aws_secret_access_key) X(aws_session_token) \
	X(role_arn) X(web_identity_token_file) X(role_session_name) \
	X(source_profile) X(credential_source) X(credential_process) \
	X(sso_session) X(sso_start_url)

struct profile {
	bool found;
#define X(k) char *k;
	PROFILE_KEYS(X)
#undef X
};

static void profile_free(struct profile *pr)
{
#define X(k) wipe_free(pr->k);
	PROFILE_KEYS(X)
#undef X
	memset(pr, 0, sizeof(*pr));
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* Is section text (between the brackets) profile name?  The config file
 * says "profile NAME" (and "default" for the default). */
static bool section_is(char *sec, const char *name, bool config)
{
	sec = trim(sec);
	if (config && strncmp(sec, "profile", 7) == 0 &&
	    isspace((unsigned char)sec[7]))
		return strcmp(trim(sec + 8), name) == 0;
	if (config && strcmp(name, "default") != 0)
		return false;
	return strcmp(sec, name) == 0;
}

/* Reads profile name of an INI file into *pr (keys already set win).
 * Returns 0 (pr->found tells), or an errno of opening the file. */
static int profile_read(const char *path, const char *name, bool config,
			struct profile *pr)
{
	struct buf b = { 0 };
	char *line, *save = NULL;
	bool in = false;
	int err = file_read_small(path, FILE_MAX, &b);

	if (err != 0)
		return err;
	if (b.data == NULL)
		return 0;
	for (line = strtok_r((char *)b.data, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char *l = trim(line), *eq;

		if (*l == '\0' || *l == '#' || *l == ';')
			continue;
		if (*l == '[') {
			char *end = strchr(l, ']');

			if (end != NULL)
				*end = '\0';
			in = section_is(l + 1, name, config);
			pr->found |= in;
			continue;
		}
		if (!in || (eq = strchr(l, '=')) == NULL)
			continue;
		*eq = '\0';
		l = trim(l);
#define X(k)								\
		if (strcasecmp(l, #k) == 0 && pr->k == NULL &&		\
		    (pr->k = strdup(trim(eq + 1))) == NULL)		\
			err = ENOMEM;
		PROFILE_KEYS(X)
#undef X
	}
	OPENSSL_cleanse(b.data, b.len);
	buf_free(&b);
	return err;
}

static int web_configure(struct aws_creds_provider *p, const char *file,
			 const char *role, const char *session);
static int web_fetch(struct aws_creds_provider *p, struct aws_creds *out,
		     char *why);

static int src_files(struct aws_creds_provider *p, struct aws_creds *out,
		     char *why)
{
	const char *explicit = env("AWS_PROFILE");
	const char *name = explicit ? explicit : "default";
	const char *cv = env("AWS_SHARED_CREDENTIALS_FILE");
	const char *fv = env("AWS_CONFIG_FILE");
	char *cpath, *fpath;
	struct profile pr = { 0 };
	int cerr, ferr, err = EACCES;

	cpath = cv ? expand_home(cv) : expand_home("~/.aws/credentials");
	fpath = fv ? expand_home(fv) : expand_home("~/.aws/config");
	if (cpath == NULL || fpath == NULL) {
		err = ENOMEM;
		goto out;
	}
	cerr = profile_read(cpath, name, false, &pr);
	ferr = profile_read(fpath, name, true, &pr);
	if (cerr == ENOMEM || ferr == ENOMEM) {
		err = ENOMEM;
		goto out;
	}
	if (!pr.found) {
		snprintf(why, WHY_MAX, "%s: %s, %s: %s", cpath,
			 cerr ? ERRSTR(cerr) : "no such profile", fpath,
			 ferr ? ERRSTR(ferr) : "no such profile");
		if (explicit != NULL) {
			snprintf(why, WHY_MAX, "AWS_PROFILE=%s: the profile "
				 "is in neither %s (%s) nor %s (%s)", name,
				 cpath, cerr ? ERRSTR(cerr) : "not there",
				 fpath, ferr ? ERRSTR(ferr) : "not there");
			goto out;
		}
		err = ENOENT;
		goto out;
	}
	if (pr.aws_access_key_id != NULL || pr.aws_secret_access_key) {
		if (pr.aws_access_key_id == NULL ||
		    pr.aws_secret_access_key == NULL) {
			bool ak = pr.aws_access_key_id != NULL;

			snprintf(why, WHY_MAX, "profile %s has %s but no %s",
				 name,
				 ak ? "aws_access_key_id"
				    : "aws_secret_access_key",
				 ak ? "aws_secret_access_key"
				    : "aws_access_key_id");
			goto out;
		}
		err = creds_set(out, pr.aws_access_key_id,
				pr.aws_secret_access_key, pr.aws_session_token,
				0);
		if (err == 0 && asprintf(&p->source, "profile %s of %s and %s",
					 name, cpath, fpath) < 0) {
			p->source = NULL;
			err = ENOMEM;
		}
		goto out;
	}
	if (pr.role_arn != NULL && pr.web_identity_token_file != NULL &&
	    pr.source_profile == NULL && pr.credential_source == NULL) {
		char *tf = expand_home(pr.web_identity_token_file);

		err = tf ? web_configure(p, tf, pr.role_arn,
					 pr.role_session_name)
			 : ENOMEM;
		free(tf);
		if (err == 0 && (err = web_fetch(p, out, why)) == EACCES) {
			char tmp[WHY_MAX];

			snprintf(tmp, WHY_MAX, "profile %s (web identity): %s",
				 name, why);
			memcpy(why, tmp, WHY_MAX);
		}
		goto out;
	}
	if (pr.credential_process || pr.sso_session || pr.sso_start_url ||
	    pr.source_profile || pr.credential_source || pr.role_arn) {
		snprintf(why, WHY_MAX, "profile %s uses %s, which cbtfs does "
			 "not do: give it keys, or role_arn with "
			 "web_identity_token_file", name,
			 pr.credential_process ? "credential_process"
			 : pr.sso_session || pr.sso_start_url ? "SSO"
			 : pr.role_arn ? "role_arn with source_profile"
				       : "source_profile");
		goto out;
	}
	snprintf(why, WHY_MAX, "profile %s in %s has no keys", name,
		 cerr == 0 ? cpath : fpath);
	err = explicit ? EACCES : ENOENT;
out:
	profile_free(&pr);
	free(cpath);
	free(fpath);
	return err;
}

/* ---- 3. web identity: STS AssumeRoleWithWebIdentity ------------------- */

static int web_configure(struct aws_creds_provider *p, const char *file,
			 const char *role, const char *session)
{
	const char *ep = env("AWS_ENDPOINT_URL_STS");
	const char *region = env("AWS_REGION");

	if (ep == NULL)
		ep = env("AWS_ENDPOINT_URL");
	if (region == NULL)
		region = env("AWS_DEFAULT_REGION");
	if (ep != NULL)
		p->url = strdup(ep);
	else if (region != NULL) {
		if (asprintf(&p->url, "https://sts.%s.amazonaws.com",
			     region) < 0)
			p->url = NULL;
	} else {
		p->url = strdup("https://sts.amazonaws.com");
	}
	p->token_file = strdup(file);
	p->role_arn = strdup(role);
	if (session != NULL)
		p->session_name = strdup(session);
	else if (asprintf(&p->session_name, "cbtfs-%ld",
			  (long)time(NULL)) < 0)
		p->session_name = NULL;
	p->kind = SRC_WEB;
	if (p->url == NULL || p->token_file == NULL || p->role_arn == NULL ||
	    p->session_name == NULL)
		return ENOMEM;
	free(p->source);
	if (asprintf(&p->source, "web identity (role %s, STS at %s)", role,
		     p->url) < 0) {
		p->source = NULL;
		return ENOMEM;
	}
	return 0;
}

static int web_fetch(struct aws_creds_provider *p, struct aws_creds *out,
		     char *why)
{
	struct curl_slist *hdrs = NULL;
	struct buf b = { 0 };
	char *tok, *e_tok = NULL, *e_role = NULL, *e_sess = NULL;
	char *body = NULL, *cred = NULL;
	char *f[4] = { NULL };
	static const char *const tags[4] = { "AccessKeyId", "SecretAccessKey",
					     "SessionToken", "Expiration" };
	long status = 0;
	time_t exp;
	int err, i;

	tok = file_read_text(p->token_file, FILE_MAX, &err);
	if (tok == NULL) {
		snprintf(why, WHY_MAX, "token file %s: %s", p->token_file,
			 err == ENODATA ? "empty" : ERRSTR(err));
		return err == ENOMEM ? ENOMEM : EACCES;
	}
	e_tok = form_encode(tok);
	e_role = form_encode(p->role_arn);
	e_sess = form_encode(p->session_name);
	wipe_free(tok);
	err = ENOMEM;
	if (e_tok == NULL || e_role == NULL || e_sess == NULL ||
	    asprintf(&body, "Action=AssumeRoleWithWebIdentity&"
		     "Version=2011-06-15&RoleArn=%s&RoleSessionName=%s&"
		     "WebIdentityToken=%s", e_role, e_sess, e_tok) < 0) {
		body = NULL;
		goto out;
	}
	hdrs = curl_slist_append(hdrs, "Content-Type: "
				 "application/x-www-form-urlencoded");
	hdrs = curl_slist_append(hdrs, "Accept: text/xml");
	err = http_run("POST", p->url, hdrs, body, HTTP_TIMEOUT_MS, false,
		       &status, &b, why);
	if (err == EACCES) {
		char tmp[WHY_MAX];

		snprintf(tmp, WHY_MAX, "STS at %s", why);
		memcpy(why, tmp, WHY_MAX);
	}
	if (err != 0)
		goto out;
	err = EACCES;
	if (status != 200) {
		char *code = xml_get((char *)b.data, "Code");
		char *msg = xml_get((char *)b.data, "Message");

		snprintf(why, WHY_MAX, "STS at %s: HTTP %ld%s%.64s%s%.200s",
			 p->url, status, code ? " " : "", code ? code : "",
			 msg ? ": " : "", msg ? msg : "");
		free(code);
		free(msg);
		goto out;
	}
	cred = xml_get((char *)b.data, "Credentials");
	for (i = 0; cred != NULL && i < 4; i++)
		f[i] = xml_get(cred, tags[i]);
	if (f[0] == NULL || f[1] == NULL || f[2] == NULL || f[3] == NULL) {
		snprintf(why, WHY_MAX, "STS at %s: no Credentials in the "
			 "AssumeRoleWithWebIdentity answer", p->url);
		goto out;
	}
	if ((exp = time_parse_rfc3339(f[3])) == -1) {
		snprintf(why, WHY_MAX, "STS at %s: Expiration '%.40s' is "
			 "not a time", p->url, f[3]);
		goto out;
	}
	err = creds_set(out, f[0], f[1], f[2], exp);
out:
	for (i = 0; i < 4; i++)
		wipe_free(f[i]);
	wipe_free(cred);
	wipe_free(body);
	wipe_free(e_tok);
	free(e_role);
	free(e_sess);
	curl_slist_free_all(hdrs);
	if (b.data != NULL)
		OPENSSL_cleanse(b.data, b.len);
	buf_free(&b);
	return err;
}

static int src_web(struct aws_creds_provider *p, struct aws_creds *out,
		   char *why)
{
	const char *file = env("AWS_WEB_IDENTITY_TOKEN_FILE");
	const char *role = env("AWS_ROLE_ARN");
	int err;

	if (file == NULL && role == NULL) {
		snprintf(why, WHY_MAX, "AWS_WEB_IDENTITY_TOKEN_FILE not set");
		return ENOENT;
	}
	if (file == NULL || role == NULL) {
		static const char *const tf = "AWS_WEB_IDENTITY_TOKEN_FILE";

		snprintf(why, WHY_MAX, "%s is set but %s is not",
			 file ? tf : "AWS_ROLE_ARN",
			 file ? "AWS_ROLE_ARN" : tf);
		return EACCES;
	}
	if ((err = web_configure(p, file, role,
				 env("AWS_ROLE_SESSION_NAME"))) != 0)
		return err;
	return web_fetch(p, out, why);
}

/* ---- 4. container credentials (EKS Pod Identity, ECS) ----------------- */

/* May the full URI be fetched over plain HTTP?  Loopback, or the ECS and
 * EKS agents' addresses, given as literal addresses. */
static bool http_host_ok(const char *url)
{
	static const char *const ok[] = { "127.", "[::1]", "localhost",
					  "169.254.170.2", "169.254.170.23",
					  "[fd00:ec2::23]" };
	const char *h = url + strlen("http://");
	size_t i, n = strcspn(h, ":/");

	if (h[0] == '[')
		n = strcspn(h, "]") + 1;
	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		size_t m = strlen(ok[i]);

		if (ok[i][m - 1] == '.' ? strncmp(h, ok[i], m) == 0
					: n == m && strncmp(h, ok[i], m) == 0)
			return true;
	}
	return false;
}

static int container_fetch(struct aws_creds_provider *p,
			   struct aws_creds *out, char *why)
{
	struct curl_slist *hdrs = NULL;
	struct buf b = { 0 };
	char *tok = NULL, *hdr = NULL;
	long status = 0;
	int err;

	if (p->token_file != NULL) {
		tok = file_read_text(p->token_file, FILE_MAX, &err);
		if (tok == NULL) {
			snprintf(why, WHY_MAX, "%s: token file %s: %s",
				 p->url, p->token_file,
				 err == ENODATA ? "empty" : ERRSTR(err));
			return err == ENOMEM ? ENOMEM : EACCES;
		}
	} else if (p->auth_token != NULL &&
		   (tok = strdup(p->auth_token)) == NULL) {
		return ENOMEM;
	}
	if (tok != NULL) {
		if (strpbrk(tok, "\r\n") != NULL) {
			snprintf(why, WHY_MAX, "%s: the authorization token "
				 "holds a line break", p->url);
			wipe_free(tok);
			return EACCES;
		}
		if (asprintf(&hdr, "Authorization: %s", tok) < 0) {
			wipe_free(tok);
			return ENOMEM;
		}
		hdrs = curl_slist_append(hdrs, hdr);
	}
	hdrs = curl_slist_append(hdrs, "Accept: application/json");
	err = http_run("GET", p->url, hdrs, NULL, HTTP_TIMEOUT_MS, true,
		       &status, &b, why);
	if (err == 0 && status != 200) {
		snprintf(why, WHY_MAX, "%s: HTTP %ld%s%.200s", p->url, status,
			 b.len ? ": " : "", b.len ? (char *)b.data : "");
		err = EACCES;
	} else if (err == 0) {
		err = creds_from_json((char *)b.data, p->url, out, why);
	}
	wipe_free(tok);
	wipe_free(hdr);
	curl_slist_free_all(hdrs);
	if (b.data != NULL)
		OPENSSL_cleanse(b.data, b.len);
	buf_free(&b);
	return err;
}

static int src_container(struct aws_creds_provider *p, struct aws_creds *out,
			 char *why)
{
	const char *rel = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	const char *full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	const char *tf = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	const char *tok = env("AWS_CONTAINER_AUTHORIZATION_TOKEN");

	if (rel == NULL && full == NULL) {
		snprintf(why, WHY_MAX, "AWS_CONTAINER_CREDENTIALS_FULL_URI "
			 "not set");
		return ENOENT;
	}
	p->kind = SRC_CONTAINER;
	if (rel != NULL) {
		if (asprintf(&p->url, "%s%s%s", ECS_HOST,
			     rel[0] == '/' ? "" : "/", rel) < 0) {
			p->url = NULL;
			return ENOMEM;
		}
	} else {
		bool http = strncmp(full, "http://", 7) == 0;

		if (strncmp(full, "https://", 8) != 0 &&
		    !(http && http_host_ok(full))) {
			snprintf(why, WHY_MAX, "AWS_CONTAINER_CREDENTIALS_"
				 "FULL_URI=%s: use https, or http to a "
				 "loopback address, 169.254.170.2 or "
				 "169.254.170.23", full);
			return EACCES;
		}
		if ((p->url = strdup(full)) == NULL)
			return ENOMEM;
	}
	if ((tf != NULL && (p->token_file = strdup(tf)) == NULL) ||
	    (tf == NULL && tok != NULL &&
	     (p->auth_token = strdup(tok)) == NULL))
		return ENOMEM;
	if (asprintf(&p->source, "container credentials at %s", p->url) < 0) {
		p->source = NULL;
		return ENOMEM;
	}
	return container_fetch(p, out, why);
}

/* ---- 5. EC2 instance metadata, IMDSv2 --------------------------------- */

static int imds_get(const char *base, const char *path, const char *token,
		    struct buf *b, char *why)
{
	struct curl_slist *hdrs = NULL;
	char *url = NULL, *hdr = NULL;
	long status = 0;
	int err = ENOMEM;

	if (asprintf(&url, "%s%s", base, path) < 0 ||
	    asprintf(&hdr, "X-aws-ec2-metadata-token: %s", token) < 0)
		goto out;
	hdrs = curl_slist_append(hdrs, hdr);
	err = http_run("GET", url, hdrs, NULL, IMDS_TIMEOUT_MS, true, &status,
		       b, why);
	if (err == 0 && status != 200) {
		snprintf(why, WHY_MAX, "%s: HTTP %ld%s", url, status,
			 status == 404 ? ": no IAM role is attached to this "
					 "instance" : "");
		err = EACCES;
	}
out:
	free(url);
	wipe_free(hdr);
	curl_slist_free_all(hdrs);
	return err;
}

static int imds_fetch(struct aws_creds_provider *p, struct aws_creds *out,
		      char *why)
{
	static const char *const creds_path =
		"/latest/meta-data/iam/security-credentials/";
	struct curl_slist *hdrs = NULL;
	struct buf b = { 0 };
	char *url = NULL, *token = NULL, *role = NULL, *path = NULL;
	long status = 0;
	int err = ENOMEM;

	if (asprintf(&url, "%s/latest/api/token", p->url) < 0) {
		url = NULL;
		goto out;
	}
	hdrs = curl_slist_append(hdrs, "X-aws-ec2-metadata-token-ttl-seconds: "
				 IMDS_TOKEN_TTL);
	err = http_run("PUT", url, hdrs, NULL, IMDS_TIMEOUT_MS, true, &status,
		       &b, why);
	if (err == 0 && (status != 200 || b.len == 0)) {
		snprintf(why, WHY_MAX, "%s: HTTP %ld (IMDSv2 token)", url,
			 status);
		err = EACCES;
	}
	if (err != 0)
		goto out;
	if ((token = strdup(trim((char *)b.data))) == NULL) {
		err = ENOMEM;
		goto out;
	}
	if ((err = imds_get(p->url, creds_path, token, &b, why)) != 0)
		goto out;
	role = strndup((char *)b.data, strcspn((char *)b.data, "\r\n"));
	if (role == NULL) {
		err = ENOMEM;
		goto out;
	}
	if (*role == '\0' || strchr(role, '/') != NULL ||
	    strchr(role, ' ') != NULL) {
		snprintf(why, WHY_MAX, "%s%s: no IAM role", p->url,
			 creds_path);
		err = EACCES;
		goto out;
	}
	if (asprintf(&path, "%s%s", creds_path, role) < 0) {
		path = NULL;
		err = ENOMEM;
		goto out;
	}
	if ((err = imds_get(p->url, path, token, &b, why)) != 0)
		goto out;
	free(url);
	if (asprintf(&url, "%s%s", p->url, path) < 0) {
		url = NULL;
		err = ENOMEM;
		goto out;
	}
	err = creds_from_json((char *)b.data, url, out, why);
	if (err == 0 && p->source == NULL &&
	    asprintf(&p->source, "IMDS at %s, role %s", p->url, role) < 0) {
		p->source = NULL;
		err = ENOMEM;
	}
out:
	free(url);
	free(role);
	free(path);
	wipe_free(token);
	curl_slist_free_all(hdrs);
	if (b.data != NULL)
		OPENSSL_cleanse(b.data, b.len);
	buf_free(&b);
	return err;
}

static int src_imds(struct aws_creds_provider *p, struct aws_creds *out,
		    char *why)
{
	const char *off = env("AWS_EC2_METADATA_DISABLED");
	const char *ep = env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	const char *mode = env("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
	size_t n;

	if (off != NULL && strcasecmp(off, "true") == 0) {
		snprintf(why, WHY_MAX, "disabled by "
			 "AWS_EC2_METADATA_DISABLED");
		return ENOENT;
	}
	p->kind = SRC_IMDS;
	if (ep == NULL)
		ep = mode && strcasecmp(mode, "IPv6") == 0 ? IMDS_DEFAULT_V6
							   : IMDS_DEFAULT;
	if ((p->url = strdup(ep)) == NULL)
		return ENOMEM;
	n = strlen(p->url);
	while (n > 0 && p->url[n - 1] == '/')
		p->url[--n] = '\0';
	return imds_fetch(p, out, why);
}

/* ---- the chain -------------------------------------------------------- */

static const struct {
	const char *name;
	enum src_kind kind;
	int (*find)(struct aws_creds_provider *, struct aws_creds *, char *);
} sources[] = {
	{ "environment", SRC_ENV, src_env },
	{ "shared files", SRC_FILES, src_files },
	{ "web identity", SRC_WEB, src_web },
	{ "container credentials", SRC_CONTAINER, src_container },
	{ "IMDS", SRC_IMDS, src_imds },
};

static void forget_source(struct aws_creds_provider *p)
{
	free(p->url);
	free(p->token_file);
	wipe_free(p->auth_token);
	free(p->role_arn);
	free(p->session_name);
	free(p->source);
	p->url = p->token_file = p->auth_token = NULL;
	p->role_arn = p->session_name = p->source = NULL;
}

struct aws_creds_provider *aws_creds_open(const char *what, int *errp)
{
	struct aws_creds_provider *p = calloc(1, sizeof(*p));
	char tried[4 * WHY_MAX] = "", why[WHY_MAX];
	size_t i, len = 0;
	int err = ENOMEM;

	if (p == NULL || (p->what = strdup(what)) == NULL) {
		free(p);
		*errp = ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&p->lock, NULL);
	for (i = 0; i < sizeof(sources) / sizeof(sources[0]); i++) {
		why[0] = '\0';
		p->kind = sources[i].kind;
		err = sources[i].find(p, &p->cur, why);
		if (err == 0)
			break;
		forget_source(p);
		if (err == ENOMEM)
			break;
		if (len < sizeof(tried))
			len += (size_t)snprintf(tried + len,
						sizeof(tried) - len,
						"%s%s: %s", len ? "; " : "",
						sources[i].name, why);
		if (err != ENOENT)
			break;
	}
	if (err == 0 && p->source == NULL &&
	    (p->source = strdup(sources[i].name)) == NULL)
		err = ENOMEM;
	if (err != 0) {
		if (err == ENOMEM)
			log_error("%s: S3 credentials: %s", what,
				  ERRSTR(ENOMEM));
		else
			log_error("%s: no S3 credentials: %s", what, tried);
		aws_creds_close(p);
		*errp = err == ENOMEM ? ENOMEM : EACCES;
		return NULL;
	}
	log_debug("%s: S3 credentials from %s%s", what, p->source,
		  p->cur.expires ? ", temporary" : "");
	return p;
}

static int fetch_again(struct aws_creds_provider *p, struct aws_creds *out,
		       char *why)
{
	switch (p->kind) {
	case SRC_WEB:
		return web_fetch(p, out, why);
	case SRC_CONTAINER:
		return container_fetch(p, out, why);
	case SRC_IMDS:
		return imds_fetch(p, out, why);
	default:
		snprintf(why, WHY_MAX, "static credentials do not refresh");
		return EACCES;
	}
}

int aws_creds_get(struct aws_creds_provider *p, struct aws_creds *out)
{
	time_t now = time(NULL);
	int err = 0;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&p->lock);
	if (p->cur.expires != 0 &&
	    now >= p->cur.expires - AWS_CREDS_REFRESH_MARGIN &&
	    (now >= p->cur.expires ||
	     now - p->last_try >= AWS_CREDS_RETRY_INTERVAL)) {
		struct aws_creds fresh = { 0 };
		char why[WHY_MAX] = "";

		p->last_try = now;
		err = fetch_again(p, &fresh, why);
		if (err == 0) {
			aws_creds_clear(&p->cur);
			p->cur = fresh;
			log_debug("%s: S3 credentials refreshed from %s, "
				  "valid for %ld s", p->what, p->source,
				  (long)(fresh.expires - now));
		} else if (err != ENOMEM && now < p->cur.expires) {
			log_warn("%s: cannot refresh the S3 credentials from "
				 "%s: %s; the current ones expire in %ld s",
				 p->what, p->source, why,
				 (long)(p->cur.expires - now));
			err = 0;
		} else if (err != ENOMEM) {
			log_error("%s: the S3 credentials from %s expired "
				  "and cannot be refreshed: %s", p->what,
				  p->source, why);
			err = EACCES;
		}
	}
	if (err == 0)
		err = creds_set(out, p->cur.access_key, p->cur.secret_key,
				p->cur.token, p->cur.expires);
	pthread_mutex_unlock(&p->lock);
	return err;
}

const char *aws_creds_source(const struct aws_creds_provider *p)
{
	return p->source;
}

void aws_creds_close(struct aws_creds_provider *p)
{
	if (p == NULL)
		return;
	aws_creds_clear(&p->cur);
	forget_source(p);
	free(p->what);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
