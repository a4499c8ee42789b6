/*
 * One growable-array style for every layer: a struct (often anonymous)
 * with an element pointer v, a count n and a capacity cap, all zero to
 * begin with, grown by ARRAY_GROW() before an element is added:
 *
 *	struct { struct thing *v; size_t n, cap; } things = { 0 };
 *
 *	if ((err = ARRAY_GROW(&things)) != 0)
 *		return err;
 *	things.v[things.n++] = t;
 *	...
 *	free(things.v);
 *
 * Header-only, so that any file can use it without a link dependency.
 */
#ifndef CBTFS_ARRAY_H
#define CBTFS_ARRAY_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/*
 * Makes room for need elements of size elem in the array whose element
 * pointer is at vpp and capacity at *capp, doubling it.  Returns 0 or
 * ENOMEM (the array is unchanged).
 */
static inline int array_reserve(void *vpp, size_t *capp, size_t need,
				size_t elem)
{
	size_t cap = *capp ? *capp : 16;
	void *v, *p;

	if (need <= *capp)
		return 0;
	while (cap < need) {
		if (cap > SIZE_MAX / 2)
			return ENOMEM;
		cap *= 2;
	}
	if (cap > SIZE_MAX / elem)
		return ENOMEM;
	memcpy(&v, vpp, sizeof(v));
	p = realloc(v, cap * elem);
	if (p == NULL)
		return ENOMEM;
	memcpy(vpp, &p, sizeof(p));
	*capp = cap;
	return 0;
}

/* Room for one more element in array a (a pointer to the struct). */
#define ARRAY_GROW(a) \
	array_reserve(&(a)->v, &(a)->cap, (a)->n + 1, sizeof(*(a)->v))

/* qsort() and bsearch() that accept the NULL of an empty array. */
static inline void array_sort(void *v, size_t n, size_t elem,
			      int (*cmp)(const void *, const void *))
{
	if (n > 1)
		qsort(v, n, elem, cmp);
}

static inline void *array_find(const void *key, const void *v, size_t n,
			       size_t elem,
			       int (*cmp)(const void *, const void *))
{
	return n > 0 ? bsearch(key, v, n, elem, cmp) : NULL;
}

#endif
