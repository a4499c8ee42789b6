/*
 * Shared command-line helpers.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void cli_version(const char *prog)
{
	printf("%s (cbtfs) %s\n", prog, PACKAGE_VERSION);
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

int cli_store_option(const char *prog, int c, const char *arg,
		     struct store_opts *o)
{
	char *end;
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
		n = strtol(arg, &end, 10);
		if (*end != '\0' || n < 0 || n > 100) {
			cli_usage_error(prog, "--retries: expected a number "
					"from 0 to 100, got '%s'", arg);
			return -1;
		}
		o->retries = (int)n;
		return 0;
	case CLI_OPT_TIMEOUT:
		n = strtol(arg, &end, 10);
		if (*end != '\0' || n < 1 || n > 3600) {
			cli_usage_error(prog, "--timeout: expected seconds "
					"from 1 to 3600, got '%s'", arg);
			return -1;
		}
		o->timeout = (unsigned)n;
		return 0;
	default:
		cli_usage_error(prog, "invalid option");
		return -1;
	}
}

int cli_open_repo(const char *url, const struct store_opts *opts,
		  const char *cache_dir, struct repo **rp, struct index **ixp)
{
	int err;

	*ixp = NULL;
	*rp = repo_open(url, opts, &err);
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
	json_object_object_add(obj, "bytes_read",
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
	json_object_object_add(obj, "bytes_stored",
			       json_object_new_int64((int64_t)s->bytes_stored));
}
