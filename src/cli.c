/*
 * Shared command-line helpers.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"

void cli_version(const char *prog)
{
	printf("%s (cbtfs) %s\n", prog, PACKAGE_VERSION);
}

bool cli_names_repo(const char *arg)
{
	char path[4096];
	struct stat sb;

	if (strncmp(arg, "s3://", 5) == 0 || strncmp(arg, "file://", 7) == 0 ||
	    arg[0] == '/' || strcmp(arg, ".") == 0 || strcmp(arg, "..") == 0 ||
	    strncmp(arg, "./", 2) == 0 || strncmp(arg, "../", 3) == 0)
		return true;
	snprintf(path, sizeof(path), "%s/config", arg);
	return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

int cli_usage_error(const char *prog, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help' for more information.\n", prog);
	return EXIT_USAGE;
}

int cli_number(const char *prog, const char *opt, const char *arg,
	       long min, long max, long *out)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(arg, &end, 10);
	if (*arg == '\0' || *end != '\0' || errno != 0 || n < min ||
	    n > max) {
		cli_usage_error(prog, "%s: expected a number from %ld to %ld, "
				"got '%s'", opt, min, max, arg);
		return -1;
	}
	*out = n;
	return 0;
}

int cli_store_option(const char *prog, int c, const char *arg,
		     struct store_opts *o)
{
	long n;

	switch (c) {
	case CLI_OPT_ENDPOINT:
		o->endpoint = arg;
		return 0;
	case CLI_OPT_REGION:
		o->region = arg;
		return 0;
	case CLI_OPT_ADDRESSING:
		if (strcmp(arg, "path") != 0 && strcmp(arg, "virtual") != 0) {
			cli_usage_error(prog, "--addressing: use 'path' or "
					"'virtual', not '%s'", arg);
			return -1;
		}
		o->addressing = arg;
		return 0;
	case CLI_OPT_CA_FILE:
		o->ca_file = arg;
		return 0;
	case CLI_OPT_RETRIES:
		if (cli_number(prog, "--retries", arg, 0, 100, &n) != 0)
			return -1;
		o->retries = (int)n;
		return 0;
	case CLI_OPT_TIMEOUT:
		if (cli_number(prog, "--timeout", arg, 1, 3600, &n) != 0)
			return -1;
		o->timeout = (unsigned)n;
		return 0;
	default:
		cli_usage_error(prog, "invalid option");
		return -1;
	}
}

int cli_open_repo(const char *url, const struct store_opts *opts,
		  const struct passphrase_src *pass, const char *cache_dir,
		  struct repo **rp, struct index **ixp)
{
	int err;

	*ixp = NULL;
	*rp = repo_open(url, opts, pass, &err);
	if (*rp == NULL)
		return err;
	*ixp = index_open(*rp, cache_dir, &err);
	if (*ixp == NULL) {
		repo_close(*rp);
		*rp = NULL;
		return err;
	}
	return 0;
}

void cli_print_json(struct json_object *obj)
{
	printf("%s\n", json_object_to_json_string_ext(
			       obj, JSON_C_TO_STRING_PRETTY |
					    JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(obj);
}

void cli_json_stats(struct json_object *obj, const struct manifest_stats *s)
{
	json_object_object_add(obj, "read_bytes",
			       json_object_new_int64((int64_t)s->bytes_read));
	json_object_object_add(obj, "chunks_read",
			       json_object_new_int64((int64_t)s->chunks_read));
	json_object_object_add(obj, "chunks_changed",
			       json_object_new_int64((int64_t)s->chunks_changed));
	json_object_object_add(obj, "chunks_new",
			       json_object_new_int64((int64_t)s->chunks_new));
	json_object_object_add(obj, "chunks_reused",
			       json_object_new_int64((int64_t)s->chunks_reused));
	json_object_object_add(obj, "chunks_zero",
			       json_object_new_int64((int64_t)s->chunks_zero));
	json_object_object_add(obj, "stored_bytes",
			       json_object_new_int64((int64_t)s->bytes_stored));
}

struct json_object *cli_json_time(int64_t secs)
{
	time_t t = (time_t)secs;
	char text[32];
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL)
		return NULL;
	strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return json_object_new_string(text);
}

struct json_object *cli_json_text(const char *s)
{
	return s != NULL && s[0] != '\0' ? json_object_new_string(s) : NULL;
}

struct json_object *cli_json_seconds(double secs)
{
	char text[32];

	snprintf(text, sizeof(text), "%.3f", secs);
	return json_object_new_double_s(secs, text);
}
