/*
 * wire.c — see wire.h. Bounded scans only: every loop advances through
 * [0, len) once; no allocation, no recursion.
 */
#include "wire.h"

#include <string.h>

static int
token_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

int
wire_token_from_protocols(const char *hdr, size_t len, char *token, size_t toklen)
{
	size_t		plen = strlen(WIRE_TOKEN_PREFIX);
	size_t		i = 0;

	if (toklen <= WIRE_MAX_TOKEN)
		return -1;
	while (i < len)
	{
		size_t		start,
					end,
					j;

		while (i < len && (hdr[i] == ' ' || hdr[i] == '\t'))
			i++;
		start = i;
		while (i < len && hdr[i] != ',')
			i++;
		end = i;
		while (end > start && (hdr[end - 1] == ' ' || hdr[end - 1] == '\t'))
			end--;
		if (i < len)
			i++;				/* the comma */
		if (end - start <= plen || memcmp(hdr + start, WIRE_TOKEN_PREFIX, plen) != 0)
			continue;
		start += plen;
		if (end - start > WIRE_MAX_TOKEN)
			return -1;
		for (j = start; j < end; j++)
			if (!token_char(hdr[j]))
				return -1;
		memcpy(token, hdr + start, end - start);
		token[end - start] = '\0';
		return 0;
	}
	return -1;
}

/* The integer after "key": in p[0..n), or -1. */
static int
field(const char *p, size_t n, const char *key)
{
	size_t		kl = strlen(key);
	size_t		i;

	for (i = 0; i + kl <= n; i++)
	{
		size_t		j;
		int			v = 0,
					digits = 0;

		if (memcmp(p + i, key, kl) != 0)
			continue;
		j = i + kl;
		while (j < n && p[j] == ' ')
			j++;
		if (j >= n || p[j] != ':')
			continue;
		j++;
		while (j < n && p[j] == ' ')
			j++;
		while (j < n && p[j] >= '0' && p[j] <= '9' && digits < 5)
		{
			v = v * 10 + (p[j] - '0');
			digits++;
			j++;
		}
		return digits ? v : -1;
	}
	return -1;
}

int
wire_parse_resize(const char *p, size_t n, int *cols, int *rows)
{
	int			c,
				r;

	if (n > 256)
		return -1;
	c = field(p, n, "\"cols\"");
	r = field(p, n, "\"rows\"");
	if (c < 2 || c > 1000 || r < 2 || r > 1000)
		return -1;
	*cols = c;
	*rows = r;
	return 0;
}
