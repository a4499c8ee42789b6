/*
 * cbtfs-repo: create, list and maintain repositories.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const char prog[] = "cbtfs-repo";

static void usage(void)
{
	printf(
"Usage: cbtfs-repo COMMAND REPO [OPTIONS]\n"
"\n"
"Commands:\n"
"  init REPO [--chunk-size SIZE]\n"
"        create an empty repository in REPO (a new or empty directory,\n"
"        file:///path, or s3://BUCKET/PREFIX where the bucket exists and the\n"
"        prefix is empty); SIZE is a power of two from 64K to 16M\n"
"        (default 1M)\n"
"  snapshots REPO [--volume VOLUME] [--json]\n"
"        list snapshots: volume, name, parent, capacity, creation time and\n"
"        bytes stored by each\n"
"  reindex REPO\n"
"        rebuild the local index of REPO from the repository\n"
"\n"
"Options:\n"
"      --chunk-size SIZE  chunk size for init (e.g. 256K, 1M)\n"
"      --volume VOLUME    only this volume's snapshots\n"
"      --json             machine-readable output\n"
"      --cache-dir DIR    where the local index lives\n"
"                         (default $XDG_CACHE_HOME/cbtfs or ~/.cache/cbtfs)\n"
"  -v, --verbose          more messages\n"
"  -h, --help             show this help and exit\n"
"      --version          show the version and exit\n"
"\n"
CLI_STORE_HELP
"\n"
"Exit status: 0 on success, 1 on failure, 2 on a usage error.\n"
"See cbtfs-repo(1) and cbtfs-repository(5).\n");
}

enum { OPT_CHUNK_SIZE = 256, OPT_VOLUME, OPT_JSON, OPT_CACHE_DIR,
       OPT_VERSION };

static const struct option long_opts[] = {
	{ "chunk-size", required_argument, NULL, OPT_CHUNK_SIZE },
	{ "volume", required_argument, NULL, OPT_VOLUME },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "cache-dir", required_argument, NULL, OPT_CACHE_DIR },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, OPT_VERSION },
	CLI_STORE_LONG_OPTS,
	{ NULL, 0, NULL, 0 }
};

struct opts {
	const char *repo;
	uint64_t chunk_size;
	bool chunk_size_set;
	const char *volume;
	bool json;
	const char *cache_dir;
	struct store_opts store;
};

static int cmd_init(const struct opts *o)
{
	char id[CBTFS_UUID_LEN + 1];
	uint64_t cs = o->chunk_size_set ? o->chunk_size
					: REPO_DEFAULT_CHUNK_SIZE;
	int err;

	if (repo_check_chunk_size(cs) != 0)
		return EXIT_USAGE;
	err = repo_init(o->repo, &o->store, (uint32_t)cs, id);
	if (err != 0)
		return EXIT_FAIL;
	printf("initialised cbtfs repository %s (id %s, chunk size %s)\n",
	       o->repo, id, HUMAN(cs));
	return EXIT_OK;
}

/* All snapshots, gathered so parents can be named. */
struct snap_list {
	struct manifest *v;
	size_t n, cap;
};

static int gather(void *arg, const struct manifest *m)
{
	struct snap_list *l = arg;
	struct manifest *c;

	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 32;
		void *p = realloc(l->v, cap * sizeof(*l->v));

		if (p == NULL)
			return ENOMEM;
		l->v = p;
		l->cap = cap;
	}
	c = &l->v[l->n];
	*c = *m;
	c->volume = strdup(m->volume);
	c->name = strdup(m->name);
	c->csi_handle = strdup(m->csi_handle);
	c->csi_driver = strdup(m->csi_driver);
	c->changes = strdup(m->changes);
	l->n++;
	if (!c->volume || !c->name || !c->csi_handle || !c->csi_driver ||
	    !c->changes)
		return ENOMEM;
	return 0;
}

static const char *parent_name(const struct snap_list *l,
			       const struct manifest *m)
{
	size_t i;

	if (m->parent_id[0] == '\0')
		return NULL;
	for (i = 0; i < l->n; i++)
		if (strcmp(l->v[i].id, m->parent_id) == 0)
			return l->v[i].name;
	return "?";
}

static void snap_list_free(struct snap_list *l)
{
	size_t i;

	for (i = 0; i < l->n; i++) {
		free(l->v[i].volume);
		free(l->v[i].name);
		free(l->v[i].csi_handle);
		free(l->v[i].csi_driver);
		free(l->v[i].changes);
	}
	free(l->v);
}

static void print_table(const struct snap_list *l)
{
	size_t i;

	printf("%-24s %-20s %-20s %12s  %-20s %12s\n", "VOLUME", "NAME",
	       "PARENT", "CAPACITY", "CREATED", "STORED");
	for (i = 0; i < l->n; i++) {
		const struct manifest *m = &l->v[i];
		const char *parent = parent_name(l, m);
		time_t t = (time_t)m->created;
		char when[32];

		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S",
			 localtime(&t));
		printf("%-24s %-20s %-20s %12s  %-20s %12s\n", m->volume,
		       m->name, parent ? parent : "-", HUMAN(m->capacity), when,
		       HUMAN(m->stats.bytes_stored));
	}
}

static void print_json(const struct snap_list *l)
{
	struct json_object *arr = json_object_new_array();
	size_t i;

	for (i = 0; i < l->n; i++) {
		const struct manifest *m = &l->v[i];
		const char *parent = parent_name(l, m);
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "volume",
				       json_object_new_string(m->volume));
		json_object_object_add(o, "name",
				       json_object_new_string(m->name));
		json_object_object_add(o, "id", json_object_new_string(m->id));
		json_object_object_add(o, "parent",
				       parent ? json_object_new_string(parent)
					      : NULL);
		json_object_object_add(o, "parent_id",
				       parent ? json_object_new_string(m->parent_id)
					      : NULL);
		json_object_object_add(o, "capacity",
				       json_object_new_int64((int64_t)m->capacity));
		json_object_object_add(o, "chunk_size",
				       json_object_new_int64(m->chunk_size));
		json_object_object_add(o, "created",
				       json_object_new_int64(m->created));
		json_object_object_add(o, "changes",
				       json_object_new_string(m->changes));
		json_object_object_add(o, "csi_snapshot_handle",
				       json_object_new_string(m->csi_handle));
		json_object_object_add(o, "csi_driver",
				       json_object_new_string(m->csi_driver));
		cli_json_stats(o, &m->stats);
		json_object_array_add(arr, o);
	}
	cli_print_json(arr);
}

static int cmd_snapshots(const struct opts *o)
{
	struct snap_list l = { 0 };
	struct repo *r;
	struct index *ix;
	int err;

	if (o->volume != NULL && repo_check_volume_name(o->volume) != 0)
		return EXIT_USAGE;
	if (cli_open_repo(o->repo, &o->store, o->cache_dir, &r, &ix) != 0)
		return EXIT_FAIL;
	/* a parent is always of the same volume, so l can name it */
	err = index_sync(ix, NULL);
	if (err == 0)
		err = index_list_snapshots(ix, o->volume, gather, &l);
	if (err == 0 && o->json)
		print_json(&l);
	else if (err == 0)
		print_table(&l);
	snap_list_free(&l);
	index_close(ix);
	repo_close(r);
	return err == 0 ? EXIT_OK : EXIT_FAIL;
}

static int cmd_reindex(const struct opts *o)
{
	struct repo *r;
	struct index *ix;
	int err;

	if (cli_open_repo(o->repo, &o->store, o->cache_dir, &r, &ix) != 0)
		return EXIT_FAIL;
	err = index_rebuild(ix);
	if (err == 0)
		printf("rebuilt index %s\n", index_path(ix));
	index_close(ix);
	repo_close(r);
	return err == 0 ? EXIT_OK : EXIT_FAIL;
}

int main(int argc, char *argv[])
{
	struct opts o = { .store.retries = -1 };
	const char *cmd = NULL;
	int c, verbose = 0;

	log_init(prog);
	while ((c = getopt_long(argc, argv, "vh", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_CHUNK_SIZE:
			if (parse_size(optarg, &o.chunk_size) != 0)
				return cli_usage_error(prog, "--chunk-size: "
						       "invalid size '%s'",
						       optarg);
			o.chunk_size_set = true;
			break;
		case OPT_VOLUME:
			o.volume = optarg;
			break;
		case OPT_JSON:
			o.json = true;
			break;
		case OPT_CACHE_DIR:
			o.cache_dir = optarg;
			break;
		case 'v':
			verbose++;
			break;
		case 'h':
			usage();
			return EXIT_OK;
		case OPT_VERSION:
			cli_version(prog);
			return EXIT_OK;
		default:
			if (cli_store_option(prog, c, optarg, &o.store) != 0)
				return EXIT_USAGE;
		}
	}
	log_set_verbose(verbose);
	if (optind < argc)
		cmd = argv[optind++];
	if (optind < argc)
		o.repo = argv[optind++];
	if (cmd == NULL)
		return cli_usage_error(prog, "no command given");
	if (optind < argc)
		return cli_usage_error(prog, "unexpected argument '%s'",
				       argv[optind]);
	if (strcmp(cmd, "init") != 0 && strcmp(cmd, "snapshots") != 0 &&
	    strcmp(cmd, "reindex") != 0)
		return cli_usage_error(prog, "unknown command '%s'", cmd);
	if (o.repo == NULL)
		return cli_usage_error(prog, "%s: no repository given", cmd);
	if (o.chunk_size_set && strcmp(cmd, "init") != 0)
		return cli_usage_error(prog, "--chunk-size applies to init "
				       "only");
	if ((o.volume || o.json) && strcmp(cmd, "snapshots") != 0)
		return cli_usage_error(prog, "--volume and --json apply to "
				       "snapshots only");

	if (strcmp(cmd, "init") == 0)
		return cmd_init(&o);
	if (strcmp(cmd, "snapshots") == 0)
		return cmd_snapshots(&o);
	return cmd_reindex(&o);
}
