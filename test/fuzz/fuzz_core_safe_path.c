/*
 * fuzz_core_safe_path.c — libFuzzer target for the object path checker
 * (src/core/safe_path.c).
 * fuzz-sources: src/core/safe_path.c
 *
 * Build and run from the repository root:
 *
 *   mkdir -p build
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/core \
 *       src/core/safe_path.c test/fuzz/fuzz_core_safe_path.c -o build/fuzz_core_safe_path
 *   build/fuzz_core_safe_path -max_total_time=60 -max_len=2048 test/fuzz/corpus/core_safe_path
 *
 * The input is handed over in an exactly-sized heap copy so ASan catches any
 * read past the end. Checked for every input:
 *	- SafePathCheck() returns a known status; a refusal leaves an empty output
 *	  and an offset inside the input;
 *	- an accepted path is at most as long as the input, within the limits, not
 *	  absolute, has no empty, "." or all-dot segment, no byte below 0x20, no DEL,
 *	  no backslash, is valid UTF-8 with no refused code point, and checking it
 *	  again gives it back unchanged (normalisation is idempotent);
 *	- the checker is deterministic.
 */
#include "safe_path.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
			abort(); \
		} \
	} while (0)

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An independent strict UTF-8 walk: every code point passes SafePathCodePoint. */
static void
check_utf8(const unsigned char *p, size_t n)
{
	size_t		i = 0;

	while (i < n)
	{
		uint32_t	cp;
		size_t		len;

		if (p[i] < 0x80)
		{
			cp = p[i];
			len = 1;
		}
		else if ((p[i] & 0xE0) == 0xC0)
		{
			cp = p[i] & 0x1F;
			len = 2;
		}
		else if ((p[i] & 0xF0) == 0xE0)
		{
			cp = p[i] & 0x0F;
			len = 3;
		}
		else
		{
			CHECK((p[i] & 0xF8) == 0xF0);
			cp = p[i] & 0x07;
			len = 4;
		}
		CHECK(i + len <= n);
		for (size_t k = 1; k < len; k++)
		{
			CHECK((p[i + k] & 0xC0) == 0x80);
			cp = (cp << 6) | (p[i + k] & 0x3F);
		}
		CHECK(!(len == 2 && cp < 0x80) && !(len == 3 && cp < 0x800) && !(len == 4 && cp < 0x10000));
		CHECK(cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF));
		CHECK(cp == '/' || SafePathCodePoint(cp) == SAFE_PATH_OK);
		i += len;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *in = malloc(size ? size : 1);
	char	   *out = malloc(size + 1);
	char	   *out2 = malloc(size + 1);
	char	   *out3 = malloc(size + 1);
	size_t		out_len = 0,
				out2_len = 0,
				out3_len = 0,
				at = 0,
				at3 = 0;
	SafePathStatus s;

	CHECK(in && out && out2 && out3);
	memcpy(in, data, size);
	s = SafePathCheck(in, size, out, &out_len, &at);
	CHECK(s >= SAFE_PATH_OK && s <= SAFE_PATH_INVISIBLE);
	CHECK(strcmp(SafePathStatusName(s), "unknown") != 0);

	/* Deterministic. */
	{
		SafePathStatus again = SafePathCheck(in, size, out3, &out3_len, &at3);

		CHECK(again == s && at3 == at && out3_len == out_len && memcmp(out, out3, out_len) == 0);
	}

	if (s != SAFE_PATH_OK)
	{
		CHECK(out[0] == '\0' && out_len == 0);
		CHECK(at <= size);
	}
	else
	{
		size_t		seg_start = 0;
		int			segments = 0;

		CHECK(out_len >= 1 && out_len <= size && out_len <= SAFE_PATH_MAX_BYTES);
		CHECK(strlen(out) == out_len);
		CHECK(out[0] != '/' && out[out_len - 1] != '/');
		for (size_t i = 0; i <= out_len; i++)
		{
			if (i == out_len || out[i] == '/')
			{
				size_t		seg = i - seg_start;
				bool		dots = true;

				CHECK(seg >= 1 && seg <= SAFE_PATH_MAX_SEGMENT);
				for (size_t k = seg_start; k < i; k++)
					if (out[k] != '.')
						dots = false;
				CHECK(!dots);
				segments++;
				seg_start = i + 1;
				continue;
			}
			CHECK((unsigned char) out[i] >= 0x20 && out[i] != 0x7F && out[i] != '\\');
		}
		CHECK(segments <= SAFE_PATH_MAX_SEGMENTS);
		check_utf8((const unsigned char *) out, out_len);

		/* Idempotent. */
		CHECK(SafePathCheck(out, out_len, out2, &out2_len, &at) == SAFE_PATH_OK);
		CHECK(out2_len == out_len && memcmp(out, out2, out_len) == 0);
	}
	free(in);
	free(out);
	free(out2);
	free(out3);
	return 0;
}
