/*
 * safe_path.h — object paths users give us (plain C, no PostgreSQL headers).
 *
 * Compiled into the pgcloud extension (src/storage/storage.c:
 * pgcloud.safe_path()) and standalone into the libFuzzer target
 * test/fuzz/fuzz_safe_path.c.
 *
 * A path is a relative, '/'-separated list of segments, checked in one
 * linear pass with explicit limits (no allocation, no recursion, never a
 * read outside the given buffer). Refused:
 *	- empty input, more than SAFE_PATH_MAX_BYTES bytes;
 *	- an absolute path (leading '/');
 *	- an empty segment ("a//b", a trailing '/'), a ".." segment or any
 *	  segment made only of dots other than ".";
 *	- a segment longer than SAFE_PATH_MAX_SEGMENT bytes, more than
 *	  SAFE_PATH_MAX_SEGMENTS segments;
 *	- NUL, C0 and C1 control characters and DEL; a backslash;
 *	- invalid UTF-8 (overlong forms, surrogates, beyond U+10FFFF, truncated);
 *	- Unicode look-alikes of '/', '\' and '.' (full-width solidus, division
 *	  and fraction slash, one-dot leader, full-width and ideographic full
 *	  stops, ...), invisible format characters (zero-width, bidi controls,
 *	  BOM) and noncharacters.
 * A "." segment is dropped: the normalised path never holds one.
 */
#ifndef PGCLOUD_SAFE_PATH_H
#define PGCLOUD_SAFE_PATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SAFE_PATH_MAX_BYTES 1024	/* S3's limit on a key */
#define SAFE_PATH_MAX_SEGMENT 255
#define SAFE_PATH_MAX_SEGMENTS 64

typedef enum SafePathStatus
{
	SAFE_PATH_OK = 0,
	SAFE_PATH_EMPTY,
	SAFE_PATH_TOO_LONG,
	SAFE_PATH_ABSOLUTE,
	SAFE_PATH_EMPTY_SEGMENT,
	SAFE_PATH_DOT_SEGMENT,
	SAFE_PATH_SEGMENT_TOO_LONG,
	SAFE_PATH_TOO_MANY_SEGMENTS,
	SAFE_PATH_CONTROL,
	SAFE_PATH_BACKSLASH,
	SAFE_PATH_INVALID_UTF8,
	SAFE_PATH_LOOKALIKE,
	SAFE_PATH_INVISIBLE
} SafePathStatus;

/* A stable lower-case name of a status, e.g. "dot_segment". */
extern const char *SafePathStatusName(SafePathStatus s);

/* A sentence saying what is wrong, for error details. */
extern const char *SafePathStatusMessage(SafePathStatus s);

/*
 * Checks in[0..len) and writes the normalised path to out (at least len + 1
 * bytes; NUL-terminated; *out_len its length). On a refusal, *at is the byte
 * offset of the offending input (0 when it concerns the whole path) and out
 * holds an empty string.
 */
extern SafePathStatus SafePathCheck(const char *in, size_t len, char *out, size_t *out_len, size_t *at);

/* Whether code point cp is refused as a look-alike or invisible (exposed for tests). */
extern SafePathStatus SafePathCodePoint(uint32_t cp);

#endif
