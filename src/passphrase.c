/*
 * Passphrases: see passphrase.h.  Every buffer that held a passphrase is
 * erased before it is freed; nothing here grows a buffer by realloc(),
 * which would leave copies behind.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "passphrase.h"
#include "util.h"

/* A buffer for one passphrase, its terminating NUL and one byte more (to
 * tell a passphrase that is too long). */
static char *pass_alloc(void)
{
	return calloc(1, PASSPHRASE_MAX + 2);
}

static void pass_erase_free(char *p)
{
	if (p != NULL) {
		OPENSSL_cleanse(p, PASSPHRASE_MAX + 2);
		free(p);
	}
}

/* Ends a read: on success p (len bytes) becomes *pp's, else it is erased
 * and freed.  Returns err. */
static int pass_hand_over(char *p, size_t len, int err,
			  struct passphrase *pp)
{
	if (err != 0) {
		pass_erase_free(p);
		return err;
	}
	pp->text = p;
	pp->len = len;
	return 0;
}

void passphrase_free(struct passphrase *pp)
{
	pass_erase_free(pp->text);	/* every text is from pass_alloc() */
	pp->text = NULL;
	pp->len = 0;
}

static int read_file(const char *path, struct passphrase *pp)
{
	char *p = pass_alloc();
	size_t len = 0;
	struct stat st;
	ssize_t n;
	int fd, err = 0;

	if (p == NULL)
		return ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = errno;
		log_error("cannot read the passphrase file %s: %s", path,
			  ERRSTR(err));
		pass_erase_free(p);
		return err;
	}
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    (st.st_mode & S_IROTH))
		log_warn("the passphrase file %s is readable by every user of "
			 "this host; make it private (chmod o-r %s)", path,
			 path);
	while (len <= PASSPHRASE_MAX &&
	       (n = read(fd, p + len, PASSPHRASE_MAX + 1 - len)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err = errno;
			log_error("cannot read the passphrase file %s: %s",
				  path, ERRSTR(err));
			break;
		}
		len += (size_t)n;
	}
	close(fd);
	if (err == 0 && len > PASSPHRASE_MAX) {
		log_error("the passphrase file %s is longer than %d bytes; "
			  "is it the right file?", path, PASSPHRASE_MAX);
		err = EFBIG;
	}
	if (err == 0 && len > 0 && p[len - 1] == '\n')
		p[--len] = '\0';
	if (err == 0 && len == 0) {
		log_error("the passphrase file %s is empty", path);
		err = ENODATA;
	}
	return pass_hand_over(p, len, err, pp);
}

static volatile sig_atomic_t prompt_signal;

static void on_prompt_signal(int sig)
{
	prompt_signal = sig;
}

static const int prompt_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
#define N_PROMPT_SIGNALS (sizeof(prompt_signals) / sizeof(prompt_signals[0]))

/*
 * Asks for one line on the terminal with echo off into p.  The terminal's
 * mode is restored whatever happens; a signal that interrupts the prompt
 * is delivered again once it is restored.  0, or EINTR/EIO (logged).
 */
static int prompt_line(const char *prompt, char *p, size_t *lenp)
{
	struct sigaction sa = { .sa_handler = on_prompt_signal };
	struct sigaction old[N_PROMPT_SIGNALS];
	struct termios saved, quiet;
	size_t len = 0, i;
	bool echo_off;
	char c;
	ssize_t n;
	int err = 0;

	prompt_signal = 0;
	sigemptyset(&sa.sa_mask);	/* no SA_RESTART: read() returns */
	for (i = 0; i < N_PROMPT_SIGNALS; i++)
		sigaction(prompt_signals[i], &sa, &old[i]);
	echo_off = tcgetattr(STDIN_FILENO, &saved) == 0;
	if (echo_off) {
		quiet = saved;
		quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
		quiet.c_lflag |= ICANON;
		echo_off = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
	}
	fprintf(stderr, "%s", prompt);
	fflush(stderr);
	for (;;) {
		n = read(STDIN_FILENO, &c, 1);
		if (n < 0 && errno == EINTR && prompt_signal == 0)
			continue;
		if (n < 0) {
			err = prompt_signal != 0 ? EINTR : errno;
			break;
		}
		if (n == 0 || c == '\n')
			break;
		if (len <= PASSPHRASE_MAX)
			p[len++] = c;
	}
	c = 0;
	if (echo_off)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
	fprintf(stderr, "\n");
	for (i = 0; i < N_PROMPT_SIGNALS; i++)
		sigaction(prompt_signals[i], &old[i], NULL);
	if (prompt_signal != 0) {
		log_error("interrupted while asking for the passphrase");
		raise(prompt_signal);
		return EINTR;
	}
	if (err != 0) {
		log_error("cannot read the passphrase from the terminal: %s",
			  ERRSTR(err));
		return err;
	}
	if (len > PASSPHRASE_MAX) {
		log_error("the passphrase is longer than %d bytes",
			  PASSPHRASE_MAX);
		return EFBIG;
	}
	p[len] = '\0';
	*lenp = len;
	return 0;
}

static int prompt(const char *repo, const char *what, bool confirm,
		  struct passphrase *pp)
{
	char *p = pass_alloc(), *again = NULL, text[600];
	size_t len = 0, len2 = 0;
	int err;

	if (p == NULL)
		return ENOMEM;
	snprintf(text, sizeof(text), "Enter the %s of %s: ", what, repo);
	err = prompt_line(text, p, &len);
	if (err == 0 && len == 0) {
		log_error("the %s is empty", what);
		err = ENODATA;
	}
	if (err == 0 && confirm) {
		again = pass_alloc();
		snprintf(text, sizeof(text), "Enter the %s again: ", what);
		err = again == NULL ? ENOMEM : prompt_line(text, again, &len2);
		if (err == 0 &&
		    (len2 != len || memcmp(p, again, len) != 0)) {
			log_error("the two %ss differ; nothing was changed",
				  what);
			err = EINVAL;
		}
		pass_erase_free(again);
	}
	return pass_hand_over(p, len, err, pp);
}

int passphrase_get(const struct passphrase_src *src, const char *repo,
		   const char *what, bool confirm, struct passphrase *pp)
{
	static const struct passphrase_src none;
	const char *env, *v;

	if (src == NULL)
		src = &none;
	env = src->env ? src->env : PASSPHRASE_ENV;
	pp->text = NULL;
	pp->len = 0;
	if (src->file != NULL)
		return read_file(src->file, pp);
	v = getenv(env);
	if (v != NULL && *v != '\0') {
		size_t len = strlen(v);

		if (len > PASSPHRASE_MAX) {
			log_error("%s is longer than %d bytes", env,
				  PASSPHRASE_MAX);
			return EFBIG;
		}
		pp->text = pass_alloc();
		if (pp->text == NULL)
			return ENOMEM;
		memcpy(pp->text, v, len);
		pp->len = len;
		return 0;
	}
	if (!src->no_prompt && isatty(STDIN_FILENO))
		return prompt(repo, what, confirm, pp);
	return ENOKEY;
}

const char *passphrase_hint(const struct passphrase_src *src, char *buf,
			    size_t size)
{
	snprintf(buf, size, "set %s, or use %s",
		 src && src->env ? src->env : PASSPHRASE_ENV,
		 src && src->file_opt ? src->file_opt
				      : "--password-file FILE");
	return buf;
}
