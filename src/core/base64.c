/*
 * base64.c — strict RFC 4648 base64, standard and URL-safe (see base64.h).
 */
#include "base64.h"

static const char std_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Value of a character in the alphabet, -1 outside it. */
static int
b64_value(unsigned char c, PgcloudB64Alphabet alphabet)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (alphabet == PGCLOUD_B64_STD)
		return c == '+' ? 62 : c == '/' ? 63 : -1;
	return c == '-' ? 62 : c == '_' ? 63 : -1;
}

bool
pgcloud_b64_char(unsigned char c, PgcloudB64Alphabet alphabet)
{
	return b64_value(c, alphabet) >= 0;
}

size_t
pgcloud_b64_encoded_len(size_t len, bool pad)
{
	if (pad)
		return (len + 2) / 3 * 4;
	return len / 3 * 4 + (len % 3 == 0 ? 0 : len % 3 + 1);
}

size_t
pgcloud_b64_decoded_max(size_t inlen)
{
	return inlen / 4 * 3 + (inlen % 4 == 0 ? 0 : inlen % 4 - 1);
}

size_t
pgcloud_b64_encode(const unsigned char *in, size_t len, char *out, size_t outcap,
				   PgcloudB64Alphabet alphabet, bool pad)
{
	const char *chars = alphabet == PGCLOUD_B64_STD ? std_chars : url_chars;
	size_t		i;
	size_t		o = 0;

	if (outcap < pgcloud_b64_encoded_len(len, pad) + 1)
		return 0;
	for (i = 0; i + 2 < len; i += 3)
	{
		unsigned int v = ((unsigned int) in[i] << 16) | ((unsigned int) in[i + 1] << 8) | in[i + 2];

		out[o++] = chars[(v >> 18) & 63];
		out[o++] = chars[(v >> 12) & 63];
		out[o++] = chars[(v >> 6) & 63];
		out[o++] = chars[v & 63];
	}
	if (len - i == 1)
	{
		unsigned int v = (unsigned int) in[i] << 16;

		out[o++] = chars[(v >> 18) & 63];
		out[o++] = chars[(v >> 12) & 63];
		if (pad)
		{
			out[o++] = '=';
			out[o++] = '=';
		}
	}
	else if (len - i == 2)
	{
		unsigned int v = ((unsigned int) in[i] << 16) | ((unsigned int) in[i + 1] << 8);

		out[o++] = chars[(v >> 18) & 63];
		out[o++] = chars[(v >> 12) & 63];
		out[o++] = chars[(v >> 6) & 63];
		if (pad)
			out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

long
pgcloud_b64_decode(const char *in, size_t inlen, unsigned char *out, size_t outcap,
				   PgcloudB64Alphabet alphabet, bool pad)
{
	const unsigned char *p = (const unsigned char *) in;
	size_t		npad = 0;
	size_t		len;
	size_t		full;
	size_t		rest;
	size_t		i;
	size_t		o = 0;

	if (pad)
	{
		/* Groups of four; the padding is the last one or two characters. */
		if (inlen % 4 != 0)
			return PGCLOUD_B64_INVALID;
		if (inlen > 0 && p[inlen - 1] == '=')
			npad = p[inlen - 2] == '=' ? 2 : 1;
	}
	len = inlen - npad;
	full = len / 4 * 4;
	rest = len - full;
	if (rest == 1)
		return PGCLOUD_B64_INVALID;
	if (pgcloud_b64_decoded_max(len) > outcap)
		return PGCLOUD_B64_TOO_LARGE;
	for (i = 0; i < full; i += 4)
	{
		int			a = b64_value(p[i], alphabet);
		int			b = b64_value(p[i + 1], alphabet);
		int			c = b64_value(p[i + 2], alphabet);
		int			d = b64_value(p[i + 3], alphabet);
		unsigned int v;

		if ((a | b | c | d) < 0)
			return PGCLOUD_B64_INVALID;
		v = ((unsigned int) a << 18) | ((unsigned int) b << 12) | ((unsigned int) c << 6) | (unsigned int) d;
		out[o++] = (unsigned char) (v >> 16);
		out[o++] = (unsigned char) (v >> 8);
		out[o++] = (unsigned char) v;
	}
	if (rest > 0)
	{
		int			a = b64_value(p[full], alphabet);
		int			b = b64_value(p[full + 1], alphabet);
		int			c = rest == 3 ? b64_value(p[full + 2], alphabet) : 0;
		unsigned int v;

		if ((a | b | c) < 0)
			return PGCLOUD_B64_INVALID;
		v = ((unsigned int) a << 18) | ((unsigned int) b << 12) | ((unsigned int) c << 6);
		/* Unused trailing bits must be zero: one encoding per value. */
		if ((rest == 2 && (v & 0xFFFF) != 0) || (rest == 3 && (v & 0xFF) != 0))
			return PGCLOUD_B64_INVALID;
		out[o++] = (unsigned char) (v >> 16);
		if (rest == 3)
			out[o++] = (unsigned char) (v >> 8);
	}
	/* Padded: exactly the padding the last group needs (none when it is full). */
	if (pad && npad != (rest == 0 ? 0 : 4 - rest))
		return PGCLOUD_B64_INVALID;
	return (long) o;
}
