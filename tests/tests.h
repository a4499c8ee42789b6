/*
 * Tiny helpers for the C unit tests: CHECK() aborts with the failing
 * expression and line, whatever NDEBUG says.
 */
#ifndef CBTFS_TESTS_H
#define CBTFS_TESTS_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                        \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n",       \
				__FILE__, __LINE__, #cond);                \
			abort();                                           \
		}                                                          \
	} while (0)

#define CHECK_EQ(a, b) CHECK((a) == (b))

#endif
