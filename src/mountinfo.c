/*
 * /proc/self/mountinfo: see mountinfo.h.
 *
 * A line is "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - TYPE
 * SOURCE SUPEROPTIONS", with spaces and backslashes in paths written as
 * octal escapes ("\040").
 */
#include "config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>

#include "mountinfo.h"

/* "\040" and friends, decoded in place. */
static void unescape(char *s)
{
	char *d = s;

	for (; *s; s++, d++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' &&
		    s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*d = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 +
				    (s[3] - '0'));
			s += 3;
		} else {
			*d = *s;
		}
	}
	*d = '\0';
}

/* Parses one line into *m; false if it is not a mount line. */
static bool parse_line(char *line, struct mount_entry *m)
{
	char *sep = strstr(line, " - "), *tok, *save = NULL;
	unsigned maj = 0, min = 0;
	int i;

	if (sep == NULL)
		return false;
	*sep = '\0';
	tok = strtok_r(line, " ", &save);
	for (i = 0; tok != NULL && i < 4; i++) {
		if (i == 2 && sscanf(tok, "%u:%u", &maj, &min) != 2)
			return false;
		tok = strtok_r(NULL, " ", &save);
	}
	if (tok == NULL)
		return false;
	snprintf(m->dir, sizeof(m->dir), "%s", tok);
	tok = strtok_r(sep + 3, " ", &save);
	snprintf(m->type, sizeof(m->type), "%s", tok ? tok : "");
	tok = strtok_r(NULL, " ", &save);
	snprintf(m->source, sizeof(m->source), "%s", tok ? tok : "");
	unescape(m->dir);
	unescape(m->source);
	m->dev = makedev(maj, min);
	return true;
}

int mountinfo_each(int (*fn)(const struct mount_entry *m, void *arg),
		   void *arg)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	struct mount_entry *m = malloc(sizeof(*m));
	char *line = NULL;
	size_t cap = 0;
	int rc = 0;

	if (f != NULL && m != NULL)
		while (rc == 0 && getline(&line, &cap, f) > 0)
			if (parse_line(line, m))
				rc = fn(m, arg);
	free(line);
	free(m);
	if (f != NULL)
		fclose(f);
	return rc;
}

struct lookup {
	const char *dir;	/* or NULL: by dev */
	dev_t dev;
	struct mount_entry *out;
	bool found;
};

static int match(const struct mount_entry *m, void *arg)
{
	struct lookup *l = arg;

	if (l->dir != NULL ? strcmp(m->dir, l->dir) != 0 : m->dev != l->dev)
		return 0;
	l->found = true;
	if (l->out != NULL)
		*l->out = *m;
	/* a mount point: the last mount there; a device: the first */
	return l->dir == NULL;
}

bool mountinfo_at(const char *dir, struct mount_entry *m)
{
	struct lookup l = { .dir = dir, .out = m };

	mountinfo_each(match, &l);
	return l.found;
}

bool mountinfo_of_dev(dev_t dev, struct mount_entry *m)
{
	struct lookup l = { .dev = dev, .out = m };

	mountinfo_each(match, &l);
	return l.found;
}
