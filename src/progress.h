/*
 * The progress line of every long command: one line on stderr, redrawn in
 * place at most every PROGRESS_EVERY seconds, ending in how long the
 * command has run and, once something is done, an estimate of the time
 * left:
 *
 *	restore: 41.0%  420/1024 chunks  310 MB/s  0:07 elapsed, 0:10 left
 *
 * Off (every call a no-op) unless asked for, which the programs do when
 * stderr is a terminal.  Not thread-safe: one thread draws.
 */
#ifndef CBTFS_PROGRESS_H
#define CBTFS_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

#define PROGRESS_EVERY 0.5	/* seconds between redraws */

struct progress {
	bool on;
	const char *what;	/* "restore", "prune", ... */
	double start;		/* of the command */
	double phase;		/* of the phase the estimate is about */
	double last;		/* last drawn */
	bool drawn;
	int width;		/* columns drawn */
};

void progress_init(struct progress *p, const char *what, bool on);

/* Starts a new phase: the estimate of the time left restarts from now. */
void progress_phase(struct progress *p);

/*
 * Redraws the line (unless drawn less than PROGRESS_EVERY ago and not
 * force) as "WHAT: TEXT, E elapsed, L left", TEXT from fmt; the estimate
 * comes from done of total (any unit; total 0: none) in this phase.
 */
void progress_show(struct progress *p, bool force, uint64_t done,
		   uint64_t total, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* Clears the line, so that what follows starts on a clean one. */
void progress_end(struct progress *p);

#endif
