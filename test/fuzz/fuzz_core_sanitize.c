/*
 * fuzz_core_sanitize.c — libFuzzer target for src/core/sanitize.c.
 * fuzz-sources: src/core/sanitize.c
 *
 * Build and run from the repository root:
 *
 *   mkdir -p build
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/core \
 *       src/core/sanitize.c test/fuzz/fuzz_core_sanitize.c -o build/fuzz_core_sanitize
 *   build/fuzz_core_sanitize -max_total_time=60 -max_len=4096 test/fuzz/corpus/core_sanitize
 *
 * (or: make -C test/fuzz fuzz).  The corpus directory is also where libFuzzer
 * stores new inputs; commit only the hand-written seeds.
 *
 * Checked for every input:
 *	- the output is NUL-terminated and no longer than 2 * len + 64;
 *	- re-sanitizing the output redacts nothing and changes nothing
 *	  (idempotence: no redactable pattern survives or is created);
 *	- pgc_sanitize_needed() == 0 implies 0 redactions;
 *	- pgc_sanitize() appends: text already in the buffer is kept.
 * The input is handed over in an exactly-sized heap copy so that ASan catches
 * any read past len.
 */
#include "sanitize.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *
fuzz_realloc(void *ptr, size_t size, void *arg)
{
	void	   *p = realloc(ptr, size);

	(void) arg;
	if (p == NULL)
		abort();
	return p;
}

#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
			abort(); \
		} \
	} while (0)

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *in = malloc(size ? size : 1);
	PgcBuf		out = {NULL, 0, 0, fuzz_realloc, NULL};
	PgcBuf		again = {NULL, 0, 0, fuzz_realloc, NULL};
	PgcBuf		pre = {NULL, 0, 0, fuzz_realloc, NULL};
	int			n,
				n2,
				needed;

	if (in == NULL)
		abort();
	if (size)
		memcpy(in, data, size);

	n = pgc_sanitize(in, size, &out);
	CHECK(out.data != NULL);
	CHECK(out.len < out.cap);
	CHECK(out.data[out.len] == '\0');
	CHECK(out.len <= 2 * size + 64);
	CHECK(n >= 0);

	needed = pgc_sanitize_needed(in, size);
	if (needed == 0)
		CHECK(n == 0);

	/* idempotence */
	n2 = pgc_sanitize(out.data, out.len, &again);
	if (n2 != 0 || again.len != out.len || memcmp(again.data, out.data, out.len) != 0)
	{
		fprintf(stderr, "not idempotent: first pass %d, second pass %d redactions\n", n, n2);
		fprintf(stderr, "out:   %.*s\nagain: %.*s\n", (int) out.len, out.data, (int) again.len, again.data);
		abort();
	}
	CHECK(pgc_sanitize_needed(out.data, out.len) == 0);

	/* appending keeps what is already there */
	pre.data = fuzz_realloc(NULL, 3, NULL);
	memcpy(pre.data, "ab", 3);
	pre.len = 2;
	pre.cap = 3;
	CHECK(pgc_sanitize(in, size, &pre) == n);
	CHECK(pre.len == out.len + 2);
	CHECK(memcmp(pre.data, "ab", 2) == 0);
	CHECK(memcmp(pre.data + 2, out.data, out.len + 1) == 0);

	free(pre.data);
	free(again.data);
	free(out.data);
	free(in);
	return 0;
}
