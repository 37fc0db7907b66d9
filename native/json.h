/* Minimal JSON string escaping for the one-line outputs and replies: anything user-supplied
 * (paths, error text) goes through here so a quote in a file name can't break a line parser. */
#ifndef FAULTLINE_JSON_H
#define FAULTLINE_JSON_H

#include <stddef.h>

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

#endif
