/*
 * A bounded pool of worker threads over n items, for the commands that
 * work on many chunks or manifests at once (ingest, verify).
 *
 * task(arg, k, scratch) is called once for each k in 0..n-1, by one of up
 * to jobs threads; each thread has a scratch buffer of its own (empty at
 * first, freed at the end) so that tasks need not allocate per item.  The
 * first task error, or *stop becoming set, stops the threads from taking
 * more items.  Meanwhile the calling thread calls tick(arg, done, false)
 * every half second, and tick(arg, n_done, true) once at the end, for a
 * progress line.  The pool's own state is private; tasks share theirs
 * through arg under their own lock.
 */
#ifndef CBTFS_POOL_H
#define CBTFS_POOL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include "util.h"

typedef int pool_task(void *arg, size_t k, struct buf *scratch);
typedef void pool_tick(void *arg, size_t done, bool final);

struct pool_conf {
	size_t n;
	unsigned jobs;			/* >= 1; no more threads than items */
	pool_task *task;
	pool_tick *tick;		/* may be NULL */
	void *arg;
	volatile sig_atomic_t *stop;	/* may be NULL */
};

/*
 * Runs the pool to its end.  Returns 0, the first task error, EINTR if
 * *stop was set, or an errno (logged) if no thread could be started.
 */
int pool_run(const struct pool_conf *pc);

#endif
