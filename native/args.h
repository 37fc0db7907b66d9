/* Command-line parsing shared by the native programs: --opt VALUE and --opt=VALUE, numbers with
 * one-line errors ("guest: --mib: expected a positive integer, got 'x'") and exit status 2. */
#ifndef FAULTLINE_ARGS_H
#define FAULTLINE_ARGS_H

#include <stdint.h>

struct args {
	int argc;
	char **argv;
	int next;
	const char *name;   /* current option, e.g. "--mib" (without any "=value") */
	const char *inline_value; /* value given as --opt=value, or NULL */
	char name_buf[64];
};

void args_init(struct args *a, const char *prog, int argc, char **argv);

/* Sets the "<prog>: " prefix of messages, for callers that parse no command line (the shim). */
void args_set_program(const char *prog);

/* Advances to the next option; returns 0 when none are left. A non-option argument fails. */
int args_next(struct args *a);

/* 1 if the current option is name. */
int args_is(const struct args *a, const char *name);

/* The current option's value (fails if missing). */
const char *args_value(struct args *a);

/* For a flag: fails if it was given as --flag=value. */
void args_no_value(const struct args *a);

/* Prints "<prog>: <message>" on stderr and exits 2. */
__attribute__((noreturn, format(printf, 1, 2))) void args_fail(const char *fmt, ...);

/* Unsigned decimal integer; min is 0 or 1 (the message says "non-negative" or "positive");
 * with suffixes, K/M/G (binary) multiply. */
uint64_t args_u64(const char *opt, const char *text, uint64_t min, uint64_t max, int suffixes);

/* A decimal fraction in [0, 1]; what names the whole argument for the message. */
double args_fraction(const char *opt, const char *text, const char *what);

#endif
