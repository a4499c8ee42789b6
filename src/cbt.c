/*
 * Range lists, range-to-chunk mapping, and the two change sources that need
 * no peer: "scan" and "ranges:FILE".
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbt.h"
#include "util.h"

void cbt_ranges_free(struct cbt_ranges *rl)
{
	free(rl->v);
	rl->v = NULL;
	rl->n = rl->cap = 0;
}

int cbt_ranges_add(struct cbt_ranges *rl, uint64_t offset, uint64_t length)
{
	if (length == 0 || offset + length < offset)
		return EINVAL;
	if (rl->n > 0) {
		struct cbt_range *last = &rl->v[rl->n - 1];

		if (offset < last->offset + last->length)
			return EINVAL;
		/* touching ranges become one: a FIXED_LENGTH answer of many
		 * small blocks takes little memory */
		if (offset == last->offset + last->length) {
			last->length += length;
			return 0;
		}
	}
	if (rl->n == rl->cap) {
		size_t cap = rl->cap ? 2 * rl->cap : 64;
		void *p = realloc(rl->v, cap * sizeof(*rl->v));

		if (p == NULL)
			return ENOMEM;
		rl->v = p;
		rl->cap = cap;
	}
	rl->v[rl->n].offset = offset;
	rl->v[rl->n].length = length;
	rl->n++;
	return 0;
}

int cbt_ranges_to_chunks(const struct cbt_ranges *rl, uint32_t chunk_size,
			 uint64_t **idxp, size_t *np)
{
	uint64_t *idx = NULL;
	size_t n = 0, cap = 0, i;

	for (i = 0; i < rl->n; i++) {
		uint64_t first = rl->v[i].offset / chunk_size;
		uint64_t last = (rl->v[i].offset + rl->v[i].length - 1) /
				chunk_size;
		uint64_t c;

		/* ranges are sorted, so only the previous chunk can repeat */
		if (n > 0 && idx[n - 1] >= first)
			first = idx[n - 1] + 1;
		for (c = first; c <= last; c++) {
			if (n == cap) {
				size_t ncap = cap ? 2 * cap : 256;
				void *p = realloc(idx, ncap * sizeof(*idx));

				if (p == NULL) {
					free(idx);
					return ENOMEM;
				}
				idx = p;
				cap = ncap;
			}
			idx[n++] = c;
		}
	}
	*idxp = idx;
	*np = n;
	return 0;
}

/* scan: no ranges; ingest reads everything. */

static void scan_destroy(struct cbt_source *src)
{
	free(src);
}

static const struct cbt_source_ops scan_ops = {
	.name = "scan",
	.get_ranges = NULL,
	.destroy = scan_destroy,
};

struct cbt_source *cbt_scan_create(void)
{
	struct cbt_source *src = calloc(1, sizeof(*src));

	if (src != NULL)
		src->ops = &scan_ops;
	return src;
}

/* ranges:FILE: "offset length" lines in bytes; '#' comments. */

struct cbt_ranges_file {
	struct cbt_source src;
	char *path;
};

static int parse_u64(const char *s, char **end, uint64_t *v)
{
	unsigned long long x;

	if (*s < '0' || *s > '9')
		return EINVAL;
	errno = 0;
	/* decimal, or hexadecimal with 0x; never octal */
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
		x = strtoull(s + 2, end, 16);
	else
		x = strtoull(s, end, 10);
	if (errno != 0)
		return EINVAL;
	*v = x;
	return 0;
}

static int ranges_file_get(struct cbt_source *src,
			   const struct cbt_request *req,
			   struct cbt_answer *ans)
{
	struct cbt_ranges *out = &ans->ranges;
	struct cbt_ranges_file *rf = (struct cbt_ranges_file *)src;
	char *line = NULL;
	size_t cap = 0;
	unsigned long lineno = 0;
	FILE *f;
	int err = 0;

	f = fopen(rf->path, "re");
	if (f == NULL) {
		err = errno;
		log_error("ranges file %s: %s", rf->path, ERRSTR(err));
		return err;
	}
	while (getline(&line, &cap, f) >= 0) {
		uint64_t off, len;
		char *p = line, *end;

		lineno++;
		p += strspn(p, " \t");
		if (*p == '#' || *p == '\n' || *p == '\0')
			continue;
		if (parse_u64(p, &end, &off) != 0 ||
		    (end += strspn(end, " \t"),
		     parse_u64(end, &end, &len) != 0) ||
		    end[strspn(end, " \t\r\n")] != '\0') {
			log_error("ranges file %s line %lu: expected "
				  "'OFFSET LENGTH' in bytes",
				  rf->path, lineno);
			err = EINVAL;
			break;
		}
		if (len == 0) {
			log_error("ranges file %s line %lu: length must be "
				  "greater than 0", rf->path, lineno);
			err = EINVAL;
			break;
		}
		if (off + len < off || off + len > req->device_size) {
			log_error("ranges file %s line %lu: range %" PRIu64
				  "+%" PRIu64 " ends beyond the end of the "
				  "device (%" PRIu64 " bytes)", rf->path,
				  lineno, off, len, req->device_size);
			err = EINVAL;
			break;
		}
		err = cbt_ranges_add(out, off, len);
		if (err == EINVAL)
			log_error("ranges file %s line %lu: range at %" PRIu64
				  " %s the previous one, which ends at "
				  "%" PRIu64 "; ranges must be sorted by "
				  "offset and must not overlap",
				  rf->path, lineno, off,
				  off < out->v[out->n - 1].offset
					  ? "comes before"
					  : "overlaps",
				  out->v[out->n - 1].offset +
					  out->v[out->n - 1].length);
		if (err != 0)
			break;
	}
	if (err == 0 && ferror(f)) {
		err = EIO;
		log_error("ranges file %s: read error", rf->path);
	}
	free(line);
	fclose(f);
	if (err != 0)
		cbt_ranges_free(out);
	return err;
}

static void ranges_file_destroy(struct cbt_source *src)
{
	struct cbt_ranges_file *rf = (struct cbt_ranges_file *)src;

	free(rf->path);
	free(rf);
}

static const struct cbt_source_ops ranges_file_ops = {
	.name = "ranges",
	.get_ranges = ranges_file_get,
	.destroy = ranges_file_destroy,
};

struct cbt_source *cbt_ranges_file_create(const char *path, int *errp)
{
	struct cbt_ranges_file *rf = calloc(1, sizeof(*rf));

	if (rf == NULL || (rf->path = strdup(path)) == NULL) {
		free(rf);
		*errp = ENOMEM;
		return NULL;
	}
	rf->src.ops = &ranges_file_ops;
	return &rf->src;
}

struct cbt_source *cbt_source_create(const char *spec, int *errp)
{
	struct cbt_source *src;

	if (strcmp(spec, "scan") == 0) {
		src = cbt_scan_create();
		if (src == NULL)
			*errp = ENOMEM;
		return src;
	}
	if (strncmp(spec, "ranges:", 7) == 0 && spec[7] != '\0')
		return cbt_ranges_file_create(spec + 7, errp);
	log_error("--changes %s: unknown change source; use 'scan', "
		  "'ranges:FILE', 'csi' or 'sidecar'", spec);
	*errp = EINVAL;
	return NULL;
}
