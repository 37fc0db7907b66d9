/* Command-line parsing shared by the native programs (see args.h). */
#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *prog_name = "faultline";

void args_set_program(const char *prog)
{
	prog_name = prog;
}

void args_init(struct args *a, const char *prog, int argc, char **argv)
{
	prog_name = prog;
	memset(a, 0, sizeof *a);
	a->argc = argc;
	a->argv = argv;
	a->next = 1;
}

void args_fail(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: %s\n", prog_name, msg);
	exit(2);
}

int args_next(struct args *a)
{
	if (a->next >= a->argc)
		return 0;
	const char *arg = a->argv[a->next++];
	if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
		args_fail("unexpected argument '%s' (see --help)", arg);
	const char *eq = strchr(arg, '=');
	size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
	if (len >= sizeof a->name_buf)
		args_fail("unknown option '%s' (see --help)", arg);
	memcpy(a->name_buf, arg, len);
	a->name_buf[len] = '\0';
	a->name = a->name_buf;
	a->inline_value = eq ? eq + 1 : NULL;
	return 1;
}

int args_is(const struct args *a, const char *name)
{
	return strcmp(a->name, name) == 0;
}

const char *args_value(struct args *a)
{
	if (a->inline_value)
		return a->inline_value;
	if (a->next >= a->argc)
		args_fail("%s: missing value", a->name);
	return a->argv[a->next++];
}

void args_no_value(const struct args *a)
{
	if (a->inline_value)
		args_fail("%s: takes no value, got '%s'", a->name, a->inline_value);
}

uint64_t args_u64(const char *opt, const char *text, uint64_t min, uint64_t max, int suffixes)
{
	const char *kind = min ? "a positive integer" : "a non-negative integer";
	const char *p = text;
	uint64_t v = 0;
	if (*p < '0' || *p > '9')
		args_fail("%s: expected %s, got '%s'", opt, kind, text);
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			args_fail("%s: %s is too large", opt, text);
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (*p && suffixes && p[1] == '\0') {
		unsigned shift = 0;
		switch (*p) {
		case 'k': case 'K': shift = 10; break;
		case 'm': case 'M': shift = 20; break;
		case 'g': case 'G': shift = 30; break;
		}
		if (shift) {
			if (v > (UINT64_MAX >> shift))
				args_fail("%s: %s is too large", opt, text);
			v <<= shift;
			p++;
		}
	}
	if (*p)
		args_fail("%s: expected %s%s, got '%s'", opt, kind,
			  suffixes ? " (optionally with K, M or G)" : "", text);
	if (v < min)
		args_fail("%s: expected %s, got '%s'", opt, kind, text);
	if (v > max)
		args_fail("%s: %s is too large (at most %llu)", opt, text, (unsigned long long)max);
	return v;
}

double args_fraction(const char *opt, const char *text, const char *what)
{
	char *end;
	errno = 0;
	double f = strtod(text, &end);
	if (end == text || *end || errno || !isfinite(f) || f < 0 || f > 1)
		args_fail("%s: expected a fraction between 0 and 1, got '%s'", opt, what);
	return f;
}
