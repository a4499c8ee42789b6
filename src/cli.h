/*
 * Helpers shared by the getopt-based programs (cbtfs-ingest, cbtfs-repo).
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

/* Reports a usage error and how to get help; returns EXIT_USAGE. */
int cli_usage_error(const char *prog, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Opens the repository and its index (synced).  0 or an errno (logged). */
int cli_open_repo(const char *url, const char *cache_dir, struct repo **rp,
		  struct index **ixp);

/* Prints a JSON object on stdout and frees it. */
void cli_print_json(struct json_object *obj);

/* Adds the statistics of m to obj. */
void cli_json_stats(struct json_object *obj, const struct manifest_stats *s);

#endif
