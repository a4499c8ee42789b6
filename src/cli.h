/*
 * Helpers shared by the getopt-based programs (cbtfs-ingest, cbtfs-repo).
 *
 * Returns and logs: cli_usage_error(), cli_number() and cli_store_option()
 * print the usage error themselves and return EXIT_USAGE or -1, which are
 * not errno values: the program then exits with EXIT_USAGE.
 * cli_open_repo() returns 0 or a positive errno (logged).  The cli_json_*()
 * functions log nothing; those that make a JSON value return a new json-c
 * object the caller owns (NULL is JSON null), and cli_print_json() frees
 * the one it prints.
 */
#ifndef CBTFS_CLI_H
#define CBTFS_CLI_H

#include <json-c/json.h>

#include "index.h"
#include "repo.h"

/* Exit statuses of every program. */
#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2

void cli_version(const char *prog);

/* The environment variable that names the repository when no -r (or
 * positional REPO) does. */
#define REPO_ENV "CBTFS_REPOSITORY"

/*
 * Whether arg, given where REPO or another argument may stand, names a
 * repository: an s3:// or file:// URL, a path starting with /, ./ or
 * ../ (or . or ..), or a directory holding a config object.
 */
bool cli_names_repo(const char *arg);

/* Reports a usage error and how to get help; returns EXIT_USAGE. */
int cli_usage_error(const char *prog, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Options every program has, with the same meaning in each, for
 * getopt_long tables: -r/--repo REPO, -v/--verbose, -h/--help,
 * -V/--version. */
#define CLI_COMMON_LONG_OPTS                                               \
	{ "repo", required_argument, NULL, 'r' },                          \
	{ "verbose", no_argument, NULL, 'v' },                             \
	{ "help", no_argument, NULL, 'h' },                                \
	{ "version", no_argument, NULL, 'V' }

/* Options every program has for remote stores, for getopt_long tables. */
enum {
	CLI_OPT_ENDPOINT = 1000,
	CLI_OPT_REGION,
	CLI_OPT_ADDRESSING,
	CLI_OPT_CA_FILE,
	CLI_OPT_RETRIES,
	CLI_OPT_TIMEOUT,
};
#define CLI_STORE_LONG_OPTS                                                \
	{ "endpoint", required_argument, NULL, CLI_OPT_ENDPOINT },         \
	{ "region", required_argument, NULL, CLI_OPT_REGION },             \
	{ "addressing", required_argument, NULL, CLI_OPT_ADDRESSING },     \
	{ "ca-file", required_argument, NULL, CLI_OPT_CA_FILE },           \
	{ "retries", required_argument, NULL, CLI_OPT_RETRIES },          \
	{ "timeout", required_argument, NULL, CLI_OPT_TIMEOUT }
#define CLI_STORE_HELP                                                      \
"S3 repositories (s3://BUCKET/PREFIX; credentials in the AWS SDK order:\n" \
"environment, ~/.aws files, web identity, container, IMDSv2):\n"          \
"      --endpoint URL     S3 endpoint, e.g. http://127.0.0.1:7480\n"        \
"                         (default $AWS_ENDPOINT_URL_S3,\n"                \
"                         $AWS_ENDPOINT_URL, or AWS itself)\n"             \
"      --region REGION    signing region (default $AWS_REGION,\n"          \
"                         $AWS_DEFAULT_REGION, or us-east-1)\n"            \
"      --addressing path|virtual\n"                                         \
"                         bucket in the path or in the host name (default:\n" \
"                         path for a custom endpoint, virtual for AWS)\n"  \
"      --ca-file FILE     PEM bundle of CAs to trust (default\n"           \
"                         $AWS_CA_BUNDLE, or the system's)\n"              \
"      --retries N        retries of a failed request (default 6)\n"      \
"      --timeout SECONDS  a request that cannot connect, or stalls, this\n" \
"                         long is failed and retried (default 30)\n"

/*
 * Parses the decimal value arg of option opt into *out, within min..max.
 * Returns 0, or -1 after reporting a usage error.
 */
int cli_number(const char *prog, const char *opt, const char *arg,
	       long min, long max, long *out);

/*
 * Handles a CLI_OPT_* option into o.  Returns 0, or -1 after reporting a
 * usage error (also when c is no option at all).
 */
int cli_store_option(const char *prog, int c, const char *arg,
		     struct store_opts *o);

/*
 * Opens the repository (pass: its passphrase's source, see repo_open())
 * and its index, not yet synced with the store (the caller syncs when it
 * needs to).  0 or an errno (logged).
 */
int cli_open_repo(const char *url, const struct store_opts *opts,
		  const struct passphrase_src *pass, const char *cache_dir,
		  struct repo **rp, struct index **ixp);

/* Prints a JSON object on stdout and frees it. */
void cli_print_json(struct json_object *obj);

/* A time (Unix seconds) as an RFC 3339 string in UTC; NULL (JSON null)
 * if it cannot be represented. */
struct json_object *cli_json_time(int64_t secs);

/* A string, or JSON null for NULL or "" (unset). */
struct json_object *cli_json_text(const char *s);

/* A duration in seconds as a JSON number with millisecond digits. */
struct json_object *cli_json_seconds(double secs);

/* Adds the statistics of m to obj. */
void cli_json_stats(struct json_object *obj, const struct manifest_stats *s);

#endif
