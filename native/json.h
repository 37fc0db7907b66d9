/* Minimal JSON for the one-line outputs and the handshake's replies: escaping, so anything
 * user-supplied (paths, error text) can't break a line parser, and finding a key's value in a
 * line of the other side's. Never allocates (the shim runs the handshake inside mmap()). */
#ifndef FAULTLINE_JSON_H
#define FAULTLINE_JSON_H

#include <stdio.h>
#include <string.h>

/* Writes src escaped (without the surrounding quotes) into dst, always NUL-terminated;
 * truncates rather than overflow, because these strings are diagnostics. */
static inline void json_escape(char *dst, size_t cap, const char *src)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;
	if (cap == 0)
		return;
	for (; *src; src++) {
		unsigned char c = (unsigned char)*src;
		char tmp[7];
		size_t k = 0;
		if (c == '"' || c == '\\') {
			tmp[k++] = '\\';
			tmp[k++] = (char)c;
		} else if (c < 0x20) {
			tmp[k++] = '\\';
			tmp[k++] = 'u';
			tmp[k++] = '0';
			tmp[k++] = '0';
			tmp[k++] = hex[c >> 4];
			tmp[k++] = hex[c & 15];
		} else {
			tmp[k++] = (char)c;
		}
		if (n + k >= cap)
			break;
		for (size_t i = 0; i < k; i++)
			dst[n++] = tmp[i];
	}
	dst[n] = '\0';
}

/* The first char of key's value in a one-line JSON object ("key" then optional spaces, ':'),
 * or NULL. Enough for the flat objects the protocol's lines are. */
static inline const char *json_find_value(const char *json, const char *key)
{
	size_t klen = strlen(key);
	for (const char *p = strchr(json, '"'); p; p = strchr(p + 1, '"')) {
		if (strncmp(p + 1, key, klen) != 0 || p[1 + klen] != '"')
			continue;
		const char *v = p + 2 + klen;
		while (*v == ' ' || *v == '\t')
			v++;
		if (*v != ':')
			continue;
		v++;
		while (*v == ' ' || *v == '\t')
			v++;
		return v;
	}
	return NULL;
}

/* Copies a JSON string value (v at its opening quote) into out, as one printable line. */
static inline void json_copy_string(const char *v, char *out, size_t cap)
{
	size_t at = 0;
	if (*v++ != '"') {
		snprintf(out, cap, "%s", v - 1);
		return;
	}
	while (*v && *v != '"' && at + 1 < cap) {
		char c = *v++;
		if (c == '\\' && *v && *v != 'u') {
			/* A one-line message: control escapes become spaces; \uXXXX stays verbatim. */
			char e = *v++;
			c = e == 'n' || e == 't' || e == 'r' ? ' ' : e;
		}
		out[at++] = c;
	}
	out[at] = '\0';
}

#endif
