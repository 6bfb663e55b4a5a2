/*
 * fuzz_payments_stripe_sig.c — libFuzzer target for the Stripe-Signature parser and
 * verifier (src/payments/stripe_sig.c).
 *
 * The verifier uses OpenSSL's HMAC, so the sources line below also names
 * -lcrypto: the harness splices it into the clang command as it is.
 * fuzz-sources: src/payments/stripe_sig.c -lcrypto
 *
 * Build and run from the repository root:
 *
 *   mkdir -p build
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/core \
 *       src/payments/stripe_sig.c -lcrypto test/fuzz/fuzz_payments_stripe_sig.c -o build/fuzz_payments_stripe_sig
 *   build/fuzz_payments_stripe_sig -max_total_time=60 -max_len=4096 test/fuzz/corpus/payments_stripe_sig
 *
 * The input is a header, optionally followed by a NUL byte and a body. Each
 * part is handed over in an exactly-sized heap copy so ASan catches any read
 * past the end. Checked for every input:
 *	- StripeSigParse() returns a known status and never more than
 *	  STRIPE_SIG_MAX_V1 signatures; an OK parse has a timestamp whose text is
 *	  its digits;
 *	- parsing is deterministic;
 *	- StripeSigVerify() never accepts the input as it is under a secret the
 *	  fuzzer cannot know unless the header carries that secret's real
 *	  signature (which a fuzzer cannot produce);
 *	- for an OK parse, a header rebuilt from the parsed t with the correct
 *	  v1 for the body (followed by the original header's items) verifies, and
 *	  the same header with one bit of the MAC flipped does not.
 */
#include "../../src/payments/stripe_sig.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__); \
			abort(); \
		} \
	} while (0)

static const char SECRET[] = "whsec_fuzz_secret_0123456789";

static void
hex(const unsigned char *mac, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < STRIPE_SIG_MAC_LEN; i++)
	{
		out[2 * i] = digits[mac[i] >> 4];
		out[2 * i + 1] = digits[mac[i] & 15];
	}
	out[2 * STRIPE_SIG_MAC_LEN] = '\0';
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t		header_len = nul ? (size_t) (nul - data) : size;
	size_t		body_len = nul ? size - header_len - 1 : 0;
	char	   *header = malloc(header_len ? header_len : 1);
	char	   *body = malloc(body_len ? body_len : 1);
	StripeSig	sig,
				again;
	StripeSigStatus st;
	int64_t		signed_at;
	int			matched;

	memcpy(header, data, header_len);
	if (body_len)
		memcpy(body, nul + 1, body_len);

	st = StripeSigParse(header, header_len, &sig);
	CHECK(st == STRIPE_SIG_OK || st == STRIPE_SIG_MISSING || st == STRIPE_SIG_TOO_LONG
		  || st == STRIPE_SIG_MALFORMED || st == STRIPE_SIG_NO_V1);
	CHECK(sig.nv1 >= 0 && sig.nv1 <= STRIPE_SIG_MAX_V1);
	CHECK(StripeSigParse(header, header_len, &again) == st);
	CHECK(memcmp(&sig, &again, sizeof(sig)) == 0);
	CHECK(strcmp(StripeSigStatusName(st), "unknown") != 0);
	if (st == STRIPE_SIG_OK)
	{
		CHECK(sig.timestamp_len >= 1 && sig.timestamp_len <= STRIPE_SIG_MAX_TIMESTAMP_DIGITS);
		CHECK(strlen(sig.timestamp_text) == sig.timestamp_len);
		CHECK(sig.timestamp >= 0);
		CHECK(sig.nv1 >= 1);
	}

	/* The input as it is: it cannot carry the real MAC of our secret. */
	st = StripeSigVerify(header, header_len, body, body_len, SECRET, sig.timestamp, 300, &signed_at, &matched);
	CHECK(st != STRIPE_SIG_OK && st != STRIPE_SIG_INTERNAL && matched == 0);

	if (StripeSigParse(header, header_len, &sig) == STRIPE_SIG_OK
		&& header_len + 80 <= STRIPE_SIG_MAX_HEADER)
	{
		unsigned char mac[STRIPE_SIG_MAC_LEN];
		char		mac_hex[2 * STRIPE_SIG_MAC_LEN + 1];
		size_t		len;
		char	   *good;
		char	   *bad;

		CHECK(StripeSigCompute(SECRET, strlen(SECRET), sig.timestamp_text, sig.timestamp_len, body, body_len, mac));
		hex(mac, mac_hex);
		/* "t=<t>,v1=<mac>," then the original items (which may hold more v1 values). */
		len = 2 + sig.timestamp_len + 4 + 2 * STRIPE_SIG_MAC_LEN + 1 + header_len;
		good = malloc(len);
		memcpy(good, "t=", 2);
		memcpy(good + 2, sig.timestamp_text, sig.timestamp_len);
		memcpy(good + 2 + sig.timestamp_len, ",v1=", 4);
		memcpy(good + 6 + sig.timestamp_len, mac_hex, 2 * STRIPE_SIG_MAC_LEN);
		good[6 + sig.timestamp_len + 2 * STRIPE_SIG_MAC_LEN] = ',';
		memcpy(good + 7 + sig.timestamp_len + 2 * STRIPE_SIG_MAC_LEN, header, header_len);
		/* The original items repeat t: a second t is malformed. Strip nothing; expect exactly that. */
		st = StripeSigVerify(good, len, body, body_len, SECRET, sig.timestamp, 300, &signed_at, &matched);
		CHECK(st == STRIPE_SIG_MALFORMED || st == STRIPE_SIG_OK);
		/* Alone, the rebuilt header verifies; with a flipped bit it does not. */
		len = 6 + sig.timestamp_len + 2 * STRIPE_SIG_MAC_LEN;
		st = StripeSigVerify(good, len, body, body_len, SECRET, sig.timestamp, 300, &signed_at, &matched);
		CHECK(st == STRIPE_SIG_OK && matched == 1 && signed_at == sig.timestamp);
		/* The same MAC under a second, wrong secret listed first: the right one still matches, as number 2. */
		st = StripeSigVerify(good, len, body, body_len, "whsec_other," "whsec_fuzz_secret_0123456789",
							 sig.timestamp, 300, &signed_at, &matched);
		CHECK(st == STRIPE_SIG_OK && matched == 2);
		/* Too far from now, either way. */
		st = StripeSigVerify(good, len, body, body_len, SECRET, sig.timestamp + 301, 300, &signed_at, &matched);
		CHECK(st == STRIPE_SIG_STALE);
		st = StripeSigVerify(good, len, body, body_len, SECRET, sig.timestamp - 301, 300, &signed_at, &matched);
		CHECK(st == STRIPE_SIG_FUTURE);
		bad = malloc(len);
		memcpy(bad, good, len);
		bad[len - 1] = bad[len - 1] == '0' ? '1' : '0';
		st = StripeSigVerify(bad, len, body, body_len, SECRET, sig.timestamp, 300, &signed_at, &matched);
		CHECK(st == STRIPE_SIG_MISMATCH && matched == 0);
		free(bad);
		free(good);
	}
	free(header);
	free(body);
	return 0;
}
