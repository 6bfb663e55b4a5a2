/*
 * fuzz_core_base64.c — libFuzzer target for src/core/base64.c, the one base64 of
 * pgcloud (JWS/JWK parts, SSH key blobs, MIME bodies, secrets).
 * fuzz-sources: src/core/base64.c
 *
 * Build and run from the repository root:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/core \
 *       src/core/base64.c test/fuzz/fuzz_core_base64.c -o build/fuzz_core_base64
 *   build/fuzz_core_base64 -max_total_time=60 -max_len=4096 test/fuzz/corpus/core_base64
 *
 * At start, the RFC 4648 §10 test vectors (both alphabets, padded and not)
 * and a few strings every strict decoder must refuse. For every input, in
 * each of the four forms (standard/URL-safe, padded/unpadded):
 *   - decoding it either fails or gives at most decoded_max bytes that
 *     encode back to exactly the input (one encoding per value);
 *   - encoding it gives encoded_len characters of the alphabet that decode
 *     back to exactly the input;
 *   - a buffer one byte too small is refused, never overrun.
 * Inputs are copied into exactly-sized heap buffers so that ASan sees any
 * read past the end.
 */
#include "../../src/core/base64.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const PgcloudB64Alphabet alphabets[2] = {PGCLOUD_B64_STD, PGCLOUD_B64_URL};

static void
expect_decode(const char *in, PgcloudB64Alphabet a, int pad, long want, const char *bytes)
{
	unsigned char out[64];
	long		n = pgcloud_b64_decode(in, strlen(in), out, sizeof(out), a, pad);

	if (n != want || (n > 0 && memcmp(out, bytes, (size_t) n) != 0))
		abort();
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char *const plain[7] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *const padded[7] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	static const char *const unpadded[7] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
	char		enc[64];

	(void) argc;
	(void) argv;
	for (int i = 0; i < 7; i++)
		for (int k = 0; k < 2; k++)
		{
			size_t		len = strlen(plain[i]);

			if (pgcloud_b64_encode((const unsigned char *) plain[i], len, enc, sizeof(enc), alphabets[k], 1)
				!= strlen(padded[i]) || strcmp(enc, padded[i]) != 0)
				abort();
			if (pgcloud_b64_encode((const unsigned char *) plain[i], len, enc, sizeof(enc), alphabets[k], 0)
				!= strlen(unpadded[i]) || strcmp(enc, unpadded[i]) != 0)
				abort();
			expect_decode(padded[i], alphabets[k], 1, (long) len, plain[i]);
			expect_decode(unpadded[i], alphabets[k], 0, (long) len, plain[i]);
		}
	/* The two alphabets differ in 62 and 63 only. */
	expect_decode("+/+/", PGCLOUD_B64_STD, 1, 3, "\xfb\xff\xbf");
	expect_decode("-_-_", PGCLOUD_B64_URL, 0, 3, "\xfb\xff\xbf");
	expect_decode("-_-_", PGCLOUD_B64_STD, 1, PGCLOUD_B64_INVALID, NULL);
	expect_decode("+/+/", PGCLOUD_B64_URL, 0, PGCLOUD_B64_INVALID, NULL);
	/* Strictness: padding where it does not belong, whitespace, non-zero trailing bits, lengths. */
	expect_decode("Zg==", PGCLOUD_B64_STD, 0, PGCLOUD_B64_INVALID, NULL);
	expect_decode("Zg", PGCLOUD_B64_STD, 1, PGCLOUD_B64_INVALID, NULL);
	expect_decode("Zg=", PGCLOUD_B64_STD, 1, PGCLOUD_B64_INVALID, NULL);
	expect_decode("Zm9v=", PGCLOUD_B64_STD, 1, PGCLOUD_B64_INVALID, NULL);
	expect_decode("Zm8==", PGCLOUD_B64_STD, 1, PGCLOUD_B64_INVALID, NULL);
	expect_decode("Z===", PGCLOUD_B64_STD, 1, PGCLOUD_B64_INVALID, NULL);
	expect_decode("Zm=v", PGCLOUD_B64_STD, 1, PGCLOUD_B64_INVALID, NULL);
	expect_decode("Zm9=Zm9v", PGCLOUD_B64_STD, 1, PGCLOUD_B64_INVALID, NULL);
	expect_decode("Zm9 v", PGCLOUD_B64_STD, 0, PGCLOUD_B64_INVALID, NULL);
	expect_decode("Zh==", PGCLOUD_B64_STD, 1, PGCLOUD_B64_INVALID, NULL);
	expect_decode("Zh", PGCLOUD_B64_URL, 0, PGCLOUD_B64_INVALID, NULL);
	expect_decode("Zm9", PGCLOUD_B64_URL, 0, PGCLOUD_B64_INVALID, NULL);
	expect_decode("Z", PGCLOUD_B64_URL, 0, PGCLOUD_B64_INVALID, NULL);
	return 0;
}

static void
check_decode(const char *in, size_t len, PgcloudB64Alphabet a, int pad)
{
	size_t		cap = pgcloud_b64_decoded_max(len);
	unsigned char *out = malloc(cap ? cap : 1);
	long		n = pgcloud_b64_decode(in, len, out, cap, a, pad);

	if (n >= 0)
	{
		char	   *again = malloc(len + 1);

		if ((size_t) n > cap)
			abort();
		if (pgcloud_b64_encode(out, (size_t) n, again, len + 1, a, pad) != len || memcmp(again, in, len) != 0)
			abort();
		for (size_t i = 0; i < len; i++)
			if (!pgcloud_b64_char((unsigned char) in[i], a) && in[i] != '=')
				abort();
		/* one byte less room: refused, not overrun */
		if (n > 0)
		{
			unsigned char *small = malloc((size_t) n - 1 ? (size_t) n - 1 : 1);

			if (pgcloud_b64_decode(in, len, small, (size_t) n - 1, a, pad) >= 0)
				abort();
			free(small);
		}
		free(again);
	}
	else if (n != PGCLOUD_B64_INVALID && n != PGCLOUD_B64_TOO_LARGE)
		abort();
	free(out);
}

static void
check_encode(const unsigned char *in, size_t len, PgcloudB64Alphabet a, int pad)
{
	size_t		elen = pgcloud_b64_encoded_len(len, pad);
	char	   *enc = malloc(elen + 1);
	unsigned char *back = malloc(len ? len : 1);

	if (pgcloud_b64_encode(in, len, enc, elen, a, pad) != 0)	/* no room for the NUL */
		abort();
	if (pgcloud_b64_encode(in, len, enc, elen + 1, a, pad) != elen || enc[elen] != '\0')
		abort();
	for (size_t i = 0; i < elen; i++)
		if (!pgcloud_b64_char((unsigned char) enc[i], a) && !(pad && enc[i] == '=' && i >= elen - 2))
			abort();
	if (pgcloud_b64_decode(enc, elen, back, len, a, pad) != (long) len || memcmp(back, in, len) != 0)
		abort();
	free(enc);
	free(back);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *copy = malloc(size ? size : 1);

	memcpy(copy, data, size);
	for (int k = 0; k < 2; k++)
		for (int pad = 0; pad < 2; pad++)
		{
			check_decode(copy, size, alphabets[k], pad);
			check_encode((const unsigned char *) copy, size, alphabets[k], pad);
		}
	free(copy);
	return 0;
}
