/*
 * Worker pool: see pool.h.
 *
 * Locking: p.lock guards the cursor, the count of items done, the running
 * threads and the first error; p.idle is signalled when a thread ends.
 * Tasks run without it.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "pool.h"

struct pool {
	const struct pool_conf *conf;
	pthread_mutex_t lock;
	pthread_cond_t idle;		/* a thread ended (CLOCK_MONOTONIC) */
	size_t next, done;
	unsigned running;
	int err;
};

static void *pool_thread(void *arg)
{
	struct pool *p = arg;
	const struct pool_conf *pc = p->conf;
	struct buf scratch = { 0 };
	int err = 0;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		size_t k;

		if (err != 0 && p->err == 0)
			p->err = err;
		if (p->err == 0 && pc->stop != NULL && *pc->stop)
			p->err = EINTR;
		if (p->err != 0 || p->next == pc->n)
			break;
		k = p->next++;
		pthread_mutex_unlock(&p->lock);
		err = pc->task(pc->arg, k, &scratch);
		pthread_mutex_lock(&p->lock);
		p->done++;
	}
	p->running--;
	pthread_cond_signal(&p->idle);
	pthread_mutex_unlock(&p->lock);
	buf_free(&scratch);
	return NULL;
}

int pool_run(const struct pool_conf *pc)
{
	struct pool p = { .conf = pc };
	unsigned jobs = pc->jobs ? pc->jobs : 1, i, started = 0;
	pthread_condattr_t ca;
	pthread_t *tids;
	int err = 0;

	if (pc->n == 0) {
		if (pc->tick != NULL)
			pc->tick(pc->arg, 0, true);
		return 0;
	}
	if (jobs > pc->n)
		jobs = (unsigned)pc->n;
	tids = calloc(jobs, sizeof(*tids));
	if (tids == NULL)
		return ENOMEM;
	pthread_mutex_init(&p.lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p.idle, &ca);
	pthread_condattr_destroy(&ca);

	pthread_mutex_lock(&p.lock);
	for (i = 0; i < jobs; i++) {
		if ((err = pthread_create(&tids[i], NULL, pool_thread, &p)))
			break;
		started++;
		p.running++;
	}
	if (started == 0) {
		log_error("cannot start worker threads: %s", ERRSTR(err));
		p.err = err;
	}
	while (p.running > 0) {
		if (pc->tick != NULL) {
			struct timespec ts;
			size_t done;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_nsec += 500000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&p.idle, &p.lock, &ts);
			done = p.done;
			pthread_mutex_unlock(&p.lock);
			pc->tick(pc->arg, done, false);
			pthread_mutex_lock(&p.lock);
		} else {
			pthread_cond_wait(&p.idle, &p.lock);
		}
	}
	err = p.err;
	pthread_mutex_unlock(&p.lock);
	for (i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	if (pc->tick != NULL)
		pc->tick(pc->arg, p.done, true);
	free(tids);
	pthread_mutex_destroy(&p.lock);
	pthread_cond_destroy(&p.idle);
	return err;
}
