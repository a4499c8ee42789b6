/*
 * Passphrases of encrypted repositories: from a file, an environment
 * variable, or a prompt on the terminal; never from the command line (argv
 * is visible to every user of the host), never logged.
 *
 * Sources are tried in this order: the file, if one is given (its whole
 * content but one trailing newline); the variable, if set and not empty;
 * a prompt without echo, if standard input is a terminal and prompting is
 * allowed.  Passphrases are handed out in memory the caller erases with
 * passphrase_free().
 */
#ifndef CBTFS_PASSPHRASE_H
#define CBTFS_PASSPHRASE_H

#include <stdbool.h>
#include <stddef.h>

#define PASSPHRASE_ENV "CBTFS_PASSWORD"
#define PASSPHRASE_NEW_ENV "CBTFS_NEW_PASSWORD"
#define PASSPHRASE_MAX 4096

/* Where a passphrase comes from.  All zero is a usable default: the
 * variable CBTFS_PASSWORD, else a prompt on a terminal. */
struct passphrase_src {
	const char *file;	/* a file holding it; NULL: none */
	const char *env;	/* the variable; NULL: CBTFS_PASSWORD */
	const char *file_opt;	/* how the user names a file, for messages;
				 * NULL: "--password-file FILE" */
	bool no_prompt;		/* never ask on the terminal */
};

struct passphrase {
	char *text;		/* NUL-terminated; may hold other NULs if
				 * read from a file */
	size_t len;
};

/*
 * Gets a passphrase for repo (named in prompts and messages) from src.
 * what says what it is for in a prompt ("passphrase", "new passphrase");
 * confirm asks twice on a terminal, for a new passphrase.  Returns 0 with
 * *pp filled; ENOKEY (not logged: the caller says what to do) when no
 * source gives one; or an errno (logged: an unreadable or empty file, a
 * prompt answered differently twice or interrupted).
 */
int passphrase_get(const struct passphrase_src *src, const char *repo,
		   const char *what, bool confirm, struct passphrase *pp);

/* Erases and frees pp's text; fine on a zeroed struct. */
void passphrase_free(struct passphrase *pp);

/* The words that tell the user how to give a passphrase from src:
 * "set CBTFS_PASSWORD, or use --password-file FILE". */
const char *passphrase_hint(const struct passphrase_src *src, char *buf,
			    size_t size);

#endif
