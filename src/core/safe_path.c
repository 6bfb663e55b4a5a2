/*
 * safe_path.c — the object path checker (see safe_path.h). Plain C.
 */
#include "safe_path.h"

#include <string.h>

const char *
SafePathStatusName(SafePathStatus s)
{
	switch (s)
	{
		case SAFE_PATH_OK:
			return "ok";
		case SAFE_PATH_EMPTY:
			return "empty";
		case SAFE_PATH_TOO_LONG:
			return "too_long";
		case SAFE_PATH_ABSOLUTE:
			return "absolute";
		case SAFE_PATH_EMPTY_SEGMENT:
			return "empty_segment";
		case SAFE_PATH_DOT_SEGMENT:
			return "dot_segment";
		case SAFE_PATH_SEGMENT_TOO_LONG:
			return "segment_too_long";
		case SAFE_PATH_TOO_MANY_SEGMENTS:
			return "too_many_segments";
		case SAFE_PATH_CONTROL:
			return "control_character";
		case SAFE_PATH_BACKSLASH:
			return "backslash";
		case SAFE_PATH_INVALID_UTF8:
			return "invalid_utf8";
		case SAFE_PATH_LOOKALIKE:
			return "lookalike";
		case SAFE_PATH_INVISIBLE:
			return "invisible_character";
	}
	return "unknown";
}

const char *
SafePathStatusMessage(SafePathStatus s)
{
	switch (s)
	{
		case SAFE_PATH_OK:
			return "The path is safe.";
		case SAFE_PATH_EMPTY:
			return "The path is empty.";
		case SAFE_PATH_TOO_LONG:
			return "The path is longer than 1024 bytes.";
		case SAFE_PATH_ABSOLUTE:
			return "The path starts with \"/\"; paths are relative to the namespace.";
		case SAFE_PATH_EMPTY_SEGMENT:
			return "The path has an empty segment (\"//\" or a trailing \"/\").";
		case SAFE_PATH_DOT_SEGMENT:
			return "The path has a \"..\" segment (or another segment made only of dots).";
		case SAFE_PATH_SEGMENT_TOO_LONG:
			return "A segment of the path is longer than 255 bytes.";
		case SAFE_PATH_TOO_MANY_SEGMENTS:
			return "The path has more than 64 segments.";
		case SAFE_PATH_CONTROL:
			return "The path holds a NUL byte or a control character.";
		case SAFE_PATH_BACKSLASH:
			return "The path holds a backslash.";
		case SAFE_PATH_INVALID_UTF8:
			return "The path is not valid UTF-8.";
		case SAFE_PATH_LOOKALIKE:
			return "The path holds a character that looks like \"/\", \"\\\" or \".\".";
		case SAFE_PATH_INVISIBLE:
			return "The path holds an invisible or non-character code point.";
	}
	return "The path is refused.";
}

/* Characters that render like '/', '\' or '.' (Unicode confusables of those three). */
static const uint32_t lookalikes[] = {
	0x00B7,						/* MIDDLE DOT */
	0x0338,						/* COMBINING LONG SOLIDUS OVERLAY */
	0x0589,						/* ARMENIAN FULL STOP */
	0x05C3,						/* HEBREW PUNCTUATION SOF PASUQ */
	0x06D4,						/* ARABIC FULL STOP */
	0x0701, 0x0702,				/* SYRIAC SUPRALINEAR / SUBLINEAR FULL STOP */
	0x0964,						/* DEVANAGARI DANDA */
	0x1735,						/* PHILIPPINE SINGLE PUNCTUATION */
	0x2024, 0x2025, 0x2026,		/* ONE / TWO DOT LEADER, HORIZONTAL ELLIPSIS */
	0x2027,						/* HYPHENATION POINT */
	0x2044,						/* FRACTION SLASH */
	0x2215, 0x2216,				/* DIVISION SLASH, SET MINUS */
	0x2219, 0x22C5,				/* BULLET OPERATOR, DOT OPERATOR */
	0x2571, 0x2572,				/* BOX DRAWINGS LIGHT DIAGONALS */
	0x27CB, 0x27CD,				/* MATHEMATICAL RISING / FALLING DIAGONAL */
	0x29F5, 0x29F8, 0x29F9,		/* REVERSE SOLIDUS OPERATOR, BIG SOLIDUS, BIG REVERSE SOLIDUS */
	0x2CF9, 0x2CFE,				/* COPTIC full stops */
	0x2E3C,						/* STENOGRAPHIC FULL STOP */
	0x2F03, 0x2F02,				/* KANGXI RADICAL SLASH, DOT */
	0x3002,						/* IDEOGRAPHIC FULL STOP */
	0x3033,						/* VERTICAL KANA REPEAT MARK UPPER HALF */
	0x30FB,						/* KATAKANA MIDDLE DOT */
	0x31D3, 0x31D4,				/* CJK STROKE SP, D */
	0xA4F8,						/* LISU LETTER TONE MYA TI */
	0xA60E,						/* VAI FULL STOP */
	0xFE52,						/* SMALL FULL STOP */
	0xFE68,						/* SMALL REVERSE SOLIDUS */
	0xFF0E, 0xFF0F,				/* FULLWIDTH FULL STOP, FULLWIDTH SOLIDUS */
	0xFF3C,						/* FULLWIDTH REVERSE SOLIDUS */
	0xFF61,						/* HALFWIDTH IDEOGRAPHIC FULL STOP */
	0xFF65,						/* HALFWIDTH KATAKANA MIDDLE DOT */
	0x10A50,					/* KHAROSHTHI PUNCTUATION DOT */
	0x1D16D,					/* MUSICAL SYMBOL COMBINING AUGMENTATION DOT */
	0x1D23A						/* GREEK INSTRUMENTAL NOTATION SYMBOL-47 */
};

SafePathStatus
SafePathCodePoint(uint32_t cp)
{
	if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F))
		return SAFE_PATH_CONTROL;
	if (cp == '\\')
		return SAFE_PATH_BACKSLASH;
	for (size_t i = 0; i < sizeof(lookalikes) / sizeof(lookalikes[0]); i++)
		if (lookalikes[i] == cp)
			return SAFE_PATH_LOOKALIKE;
	/* Invisible: soft hyphen, zero-width and bidi controls, word joiners, BOM. */
	if (cp == 0x00AD || cp == 0x034F || cp == 0x061C || cp == 0x115F || cp == 0x1160 ||
		cp == 0x180E || (cp >= 0x200B && cp <= 0x200F) || (cp >= 0x202A && cp <= 0x202E) ||
		(cp >= 0x2060 && cp <= 0x206F) || cp == 0x3164 || cp == 0xFEFF || cp == 0xFFA0 ||
		(cp >= 0xFFF0 && cp <= 0xFFFB) || (cp >= 0xE0000 && cp <= 0xE0FFF) ||
		(cp >= 0xFE00 && cp <= 0xFE0F))
		return SAFE_PATH_INVISIBLE;
	/* Noncharacters (U+FDD0..U+FDEF and the last two of every plane). */
	if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE)
		return SAFE_PATH_INVISIBLE;
	return SAFE_PATH_OK;
}

/*
 * Decodes one UTF-8 sequence at p[0..n) (n >= 1). Returns its length, or 0
 * when it is invalid (RFC 3629: no overlongs, no surrogates, <= U+10FFFF).
 */
static size_t
utf8_decode(const unsigned char *p, size_t n, uint32_t *cp)
{
	unsigned char c = p[0];
	size_t		len;
	uint32_t	v;

	if (c < 0x80)
	{
		*cp = c;
		return 1;
	}
	if (c >= 0xC2 && c <= 0xDF)
	{
		len = 2;
		v = c & 0x1F;
	}
	else if (c >= 0xE0 && c <= 0xEF)
	{
		len = 3;
		v = c & 0x0F;
	}
	else if (c >= 0xF0 && c <= 0xF4)
	{
		len = 4;
		v = c & 0x07;
	}
	else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++)
	{
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		v = (v << 6) | (p[i] & 0x3F);
	}
	if ((len == 3 && v < 0x800) || (len == 4 && v < 0x10000) || v > 0x10FFFF ||
		(v >= 0xD800 && v <= 0xDFFF))
		return 0;
	*cp = v;
	return len;
}

static SafePathStatus
refuse(SafePathStatus s, size_t offset, char *out, size_t *out_len, size_t *at)
{
	out[0] = '\0';
	*out_len = 0;
	*at = offset;
	return s;
}

SafePathStatus
SafePathCheck(const char *in, size_t len, char *out, size_t *out_len, size_t *at)
{
	const unsigned char *p = (const unsigned char *) in;
	size_t		i = 0;
	size_t		o = 0;
	int			segments = 0;

	*at = 0;
	if (len == 0)
		return refuse(SAFE_PATH_EMPTY, 0, out, out_len, at);
	if (len > SAFE_PATH_MAX_BYTES)
		return refuse(SAFE_PATH_TOO_LONG, 0, out, out_len, at);
	if (p[0] == '/')
		return refuse(SAFE_PATH_ABSOLUTE, 0, out, out_len, at);

	/* One segment per iteration: [start, i) up to the next '/' or the end. */
	while (i <= len)
	{
		size_t		start = i;
		bool		only_dots = true;

		while (i < len && p[i] != '/')
		{
			uint32_t	cp;
			size_t		n = utf8_decode(p + i, len - i, &cp);
			SafePathStatus s;

			if (n == 0)
				return refuse(SAFE_PATH_INVALID_UTF8, i, out, out_len, at);
			s = SafePathCodePoint(cp);
			if (s != SAFE_PATH_OK)
				return refuse(s, i, out, out_len, at);
			if (cp != '.')
				only_dots = false;
			i += n;
		}
		if (i == start)
			return refuse(SAFE_PATH_EMPTY_SEGMENT, start, out, out_len, at);
		if (i - start > SAFE_PATH_MAX_SEGMENT)
			return refuse(SAFE_PATH_SEGMENT_TOO_LONG, start, out, out_len, at);
		if (only_dots && i - start > 1)
			return refuse(SAFE_PATH_DOT_SEGMENT, start, out, out_len, at);
		if (!(only_dots && i - start == 1))
		{
			/* Keep it (a "." segment is dropped). */
			if (++segments > SAFE_PATH_MAX_SEGMENTS)
				return refuse(SAFE_PATH_TOO_MANY_SEGMENTS, start, out, out_len, at);
			if (o > 0)
				out[o++] = '/';
			memcpy(out + o, in + start, i - start);
			o += i - start;
		}
		if (i == len)
			break;
		i++;					/* the '/' */
		if (i == len)
			return refuse(SAFE_PATH_EMPTY_SEGMENT, i, out, out_len, at);
	}
	if (o == 0)
		return refuse(SAFE_PATH_EMPTY, 0, out, out_len, at);
	out[o] = '\0';
	*out_len = o;
	return SAFE_PATH_OK;
}
