/*
 * The progress line: see progress.h.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "progress.h"
#include "util.h"

#define WIDTH 79

void progress_init(struct progress *p, const char *what, bool on)
{
	struct winsize ws;

	/* one column short of the terminal's width: no wrap, no scroll */
	p->width = WIDTH;
	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20 &&
	    ws.ws_col - 1 < WIDTH)
		p->width = ws.ws_col - 1;
	p->on = on;
	p->what = what;
	p->start = p->phase = now_seconds();
	p->last = 0;
	p->drawn = false;
}

void progress_phase(struct progress *p)
{
	p->phase = now_seconds();
}

void progress_show(struct progress *p, bool force, uint64_t done,
		   uint64_t total, const char *fmt, ...)
{
	double now = now_seconds(), secs = now - p->phase;
	char text[160], line[256], left[48] = "";
	va_list ap;

	if (!p->on || (!force && now - p->last < PROGRESS_EVERY))
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	/* an estimate once the rate means something */
	if (done > 0 && done < total && secs >= 1.0)
		snprintf(left, sizeof(left), ", %s left",
			 CLOCK(secs * (double)(total - done) / (double)done));
	snprintf(line, sizeof(line), "%s: %s, %s elapsed%s", p->what, text,
		 CLOCK(now - p->start), left);
	/* padded, so that a shorter line covers a longer one */
	fprintf(stderr, "\r%-*.*s", p->width, p->width, line);
	fflush(stderr);
	p->last = now;
	p->drawn = true;
	log_progress_drawn(true);
}

void progress_end(struct progress *p)
{
	if (p->drawn)
		fprintf(stderr, "\r%*s\r", p->width, "");
	p->drawn = false;
	log_progress_drawn(false);
}
