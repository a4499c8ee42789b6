/*
 * Test helper: drives a store directly, for what no cbtfs command does yet.
 *   s3tool URL put-many PREFIX N     puts N small objects PREFIX/00000...
 *   s3tool URL count PREFIX          prints how many keys begin with PREFIX
 *   s3tool URL keys PREFIX           prints those keys, one a line
 *   s3tool URL delete-prefix PREFIX  deletes them all with store_del_many()
 *   s3tool URL put KEY TEXT / get KEY
 *   s3tool URL put-file KEY FILE     puts the content of FILE as KEY
 *   s3tool URL mirror DIR            copies every object to DIR/KEY
 *   s3tool URL save KEY FILE         writes the object's bytes to FILE
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store.h"

struct keys {
	char **v;
	size_t n, cap;
};

static int collect(void *arg, const char *key, uint64_t size)
{
	struct keys *k = arg;

	if (k->n == k->cap) {
		k->cap = k->cap ? 2 * k->cap : 256;
		k->v = realloc(k->v, k->cap * sizeof(*k->v));
		if (k->v == NULL)
			return ENOMEM;
	}
	k->v[k->n++] = strdup(key);
	return 0;
}

/* Writes b to dir/key, making the directories key names. */
static int write_under(const char *dir, const char *key, const struct buf *b)
{
	char path[4096], *p;
	FILE *f;
	int err = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, key);
	for (p = strchr(path + strlen(dir) + 1, '/'); p != NULL;
	     p = strchr(p + 1, '/')) {
		*p = '\0';
		mkdir(path, 0700);
		*p = '/';
	}
	f = fopen(path, "we");
	if (f == NULL || fwrite(b->data, 1, b->len, f) != b->len)
		err = EIO;
	if (f != NULL && fclose(f) != 0)
		err = EIO;
	if (err != 0)
		fprintf(stderr, "s3tool: cannot write %s\n", path);
	return err;
}

int main(int argc, char *argv[])
{
	struct store_opts opts = { .retries = -1, .connections = 4 };
	struct keys k = { 0 };
	struct store *st;
	int err = 0;
	size_t i;

	log_init("s3tool");
	if (argc < 4) {
		fprintf(stderr, "usage: s3tool URL put-many|count|keys|"
			"delete-prefix|put|get|put-file|mirror|save ARGS\n");
		return 2;
	}
	st = store_open(argv[1], false, &opts, &err);
	if (st == NULL)
		return 1;
	if (strcmp(argv[2], "put-many") == 0 && argc == 5) {
		long n = atol(argv[4]);
		char key[256];

		for (i = 0; err == 0 && i < (size_t)n; i++) {
			snprintf(key, sizeof(key), "%s/%05zu", argv[3], i);
			err = store_put(st, key, key, strlen(key));
		}
	} else if (strcmp(argv[2], "count") == 0) {
		err = store_list(st, argv[3], collect, &k);
		if (err == 0)
			printf("%zu\n", k.n);
	} else if (strcmp(argv[2], "keys") == 0) {
		err = store_list(st, argv[3], collect, &k);
		for (i = 0; err == 0 && i < k.n; i++)
			printf("%s\n", k.v[i]);
	} else if (strcmp(argv[2], "delete-prefix") == 0) {
		err = store_list(st, argv[3], collect, &k);
		if (err == 0)
			err = store_del_many(st, (const char *const *)k.v,
					     k.n);
	} else if (strcmp(argv[2], "put") == 0 && argc == 5) {
		err = store_put(st, argv[3], argv[4], strlen(argv[4]));
	} else if (strcmp(argv[2], "get") == 0) {
		struct buf b = { 0 };

		err = store_get(st, argv[3], 0, STORE_TO_END, &b);
		if (err == 0)
			printf("%.*s\n", (int)b.len, (const char *)b.data);
		buf_free(&b);
	} else if (strcmp(argv[2], "put-file") == 0 && argc == 5) {
		struct buf b = { 0 };

		err = file_read_small(argv[4], 1u << 30, &b);
		if (err == 0)
			err = store_put(st, argv[3], b.data, b.len);
		buf_free(&b);
	} else if (strcmp(argv[2], "mirror") == 0) {
		mkdir(argv[3], 0700);
		err = store_list(st, "", collect, &k);
		for (i = 0; err == 0 && i < k.n; i++) {
			struct buf b = { 0 };

			err = store_get(st, k.v[i], 0, STORE_TO_END, &b);
			if (err == 0)
				err = write_under(argv[3], k.v[i], &b);
			buf_free(&b);
		}
	} else if (strcmp(argv[2], "save") == 0 && argc == 5) {
		struct buf b = { 0 };
		FILE *f;

		err = store_get(st, argv[3], 0, STORE_TO_END, &b);
		if (err == 0 && ((f = fopen(argv[4], "wb")) == NULL ||
				 fwrite(b.data, 1, b.len, f) != b.len ||
				 fclose(f) != 0))
			err = EIO;
		buf_free(&b);
	} else {
		fprintf(stderr, "s3tool: bad command\n");
		err = EINVAL;
	}
	for (i = 0; i < k.n; i++)
		free(k.v[i]);
	free(k.v);
	store_destroy(st);
	return err == 0 ? 0 : 1;
}
