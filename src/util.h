/*
 * Small helpers shared by every layer: logging, growable buffers, sizes,
 * hex and UUID strings.
 *
 * Logging: every error is logged once, where it is found, through log_msg();
 * the message says what failed, on what, and what to do.  Messages go to
 * stderr, or to syslog once log_use_syslog() was called (a daemonized
 * mount).
 */
#ifndef CBTFS_UTIL_H
#define CBTFS_UTIL_H

#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define CBTFS_UUID_LEN 36

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_init(const char *progname);
void log_use_syslog(void);
void log_set_verbose(int verbose);
void log_msg(enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* The progress line (progress.h) says whether it is on stderr, so that a
 * message logged meanwhile starts a line of its own. */
void log_progress_drawn(bool drawn);
#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

/* Thread-safe strerror(): returns a message for a positive errno. */
const char *errstr(int err, char *buf, size_t size);
#define ERRSTR(err) errstr((err), (char[128]){0}, 128)

/* A growable byte buffer.  Zero-initialise, then use; buf_free() at end. */
struct buf {
	unsigned char *data;
	size_t len;
	size_t cap;
};
int buf_reserve(struct buf *b, size_t cap);	/* 0 or ENOMEM */
int buf_append(struct buf *b, const void *p, size_t n);
void buf_free(struct buf *b);
/* Reads a whole file of at most max bytes into b, NUL-terminated (the NUL
 * is not in b->len).  Returns 0 or an errno (EFBIG if larger); logs
 * nothing. */
int file_read_small(const char *path, size_t max, struct buf *b);

/* Reads a small text file (a token, a namespace) without its trailing
 * whitespace, malloc'd; NULL with *errp (EFBIG if larger than max, ENODATA
 * if nothing is left).  Logs nothing. */
char *file_read_text(const char *path, size_t max, int *errp);

/*
 * Whole transfers, retrying short ones and EINTR.  pread_full() returns
 * the bytes read (fewer than n only at the end of the file) or -errno;
 * pwrite_full() and write_full() return 0 or an errno.  They log
 * nothing.
 */
ssize_t pread_full(int fd, void *buf, size_t n, uint64_t off);
int pwrite_full(int fd, const void *buf, size_t n, uint64_t off);
int write_full(int fd, const void *buf, size_t n);

/* Decodes standard base64 into *outp (malloc'd, NUL-terminated beyond
 * *lenp, so PEM text can be used as a string); 0, EINVAL or ENOMEM. */
int base64_decode(const char *in, unsigned char **outp, size_t *lenp);

/* The wait before retry number attempt (1, 2, ...): base_ms doubled each
 * time up to max_ms, of which a random half. */
unsigned long backoff_ms(unsigned attempt, unsigned long base_ms,
			 unsigned long max_ms);
/* Sleeps ms milliseconds, or less once *stop is set (stop may be NULL). */
void sleep_ms(unsigned long ms, volatile sig_atomic_t *stop);

/* Parses "1M", "64KiB", "4096"; returns 0 or EINVAL. */
int parse_size(const char *s, uint64_t *out);
/* Formats bytes as "1.5 MiB" into buf; returns buf. */
const char *human_size(uint64_t bytes, char *buf, size_t size);
#define HUMAN(n) human_size((n), (char[32]){0}, 32)

void hex_encode(const unsigned char *in, size_t n, char *out);	/* 2n+1 */
int hex_decode(const char *in, unsigned char *out, size_t n);	/* 0/EINVAL */

void uuid_new(char out[CBTFS_UUID_LEN + 1]);
bool uuid_valid(const char *s);

double now_seconds(void);	/* monotonic */

/* Parses an RFC 3339 time ("2026-11-30T22:30:00Z", with an optional
 * fraction and a Z or +hh:mm offset); returns it, or -1. */
time_t time_parse_rfc3339(const char *s);

/* "1:02:03" or "2:03" for a duration in seconds, into buf; returns buf. */
const char *clock_str(double secs, char *buf, size_t size);
#define CLOCK(s) clock_str((s), (char[32]){ 0 }, 32)

/*
 * Who a process is, precisely enough to tell later, from the same host,
 * whether it is still running: host name, boot id, PID namespace, pid and
 * the process's start time (clock ticks after boot, /proc/PID/stat field
 * 22, which a reused pid does not share).  Lock records and the names of
 * temporary files carry one.
 */
struct proc_id {
	char host[65];
	char boot_id[37];
	char pidns[24];		/* inode of /proc/self/ns/pid */
	long pid;
	unsigned long long start;
};

/* Fills p for the calling process; fields it cannot read stay empty or
 * zero (such a record is never judged dead).  Logs nothing. */
void proc_id_self(struct proc_id *p);

enum proc_state {
	PROC_ALIVE,
	PROC_DEAD,	/* same host, boot and PID namespace; gone or
			 * the pid reused */
	PROC_UNKNOWN,	/* another host, boot or namespace: cannot tell */
};
/* Judges p from this process's point of view.  Logs nothing. */
enum proc_state proc_id_state(const struct proc_id *p);

#endif
