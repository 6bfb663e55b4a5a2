/*
 * stripe_sig.h — Stripe webhook signatures (plain C with OpenSSL 3, no
 * PostgreSQL headers).
 *
 * Compiled into the pgcloud extension (src/payments/webhook.c) and
 * standalone into the libFuzzer target test/fuzz/fuzz_stripe_sig.c.
 *
 * The Stripe-Signature header is a comma-separated list of key=value items:
 *
 *     t=1700000000,v1=<64 hex>,v1=<64 hex>,v0=<...>
 *
 * t is the signing time (unix seconds); each v1 is
 * hex(HMAC-SHA256(endpoint secret, "<t>.<raw body>")), one per endpoint
 * secret Stripe is signing with (several during a secret rotation). Other
 * schemes (v0, test-mode signatures) and unknown keys are ignored, as
 * Stripe's libraries do. Parsing is bounded: at most STRIPE_SIG_MAX_HEADER
 * bytes, STRIPE_SIG_MAX_ITEMS items and STRIPE_SIG_MAX_V1 v1 values; no
 * allocation, no recursion, never a read outside the given buffer.
 */
#ifndef PGCLOUD_STRIPE_SIG_H
#define PGCLOUD_STRIPE_SIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STRIPE_SIG_MAX_HEADER 8192
#define STRIPE_SIG_MAX_ITEMS 64
#define STRIPE_SIG_MAX_V1 16
#define STRIPE_SIG_MAX_SECRETS 16
#define STRIPE_SIG_MAX_SECRET_LEN 256
#define STRIPE_SIG_MAC_LEN 32
/* 12 digits: good until the year 33658; refuses absurd values early. */
#define STRIPE_SIG_MAX_TIMESTAMP_DIGITS 12

typedef enum StripeSigStatus
{
	STRIPE_SIG_OK = 0,
	STRIPE_SIG_MISSING,			/* no header, or an empty one */
	STRIPE_SIG_TOO_LONG,		/* longer than STRIPE_SIG_MAX_HEADER */
	STRIPE_SIG_MALFORMED,		/* no t, bad t, duplicate t, too many items */
	STRIPE_SIG_NO_V1,			/* no well-formed v1 value */
	STRIPE_SIG_NO_SECRETS,		/* no endpoint secret configured */
	STRIPE_SIG_MISMATCH,		/* no v1 matches any secret */
	STRIPE_SIG_STALE,			/* signed more than tolerance seconds ago */
	STRIPE_SIG_FUTURE,			/* signed more than tolerance seconds ahead */
	STRIPE_SIG_INTERNAL			/* OpenSSL failed */
} StripeSigStatus;

typedef struct StripeSig
{
	int64_t		timestamp;
	size_t		timestamp_len;	/* digits of t, for the signed prefix */
	char		timestamp_text[STRIPE_SIG_MAX_TIMESTAMP_DIGITS + 1];
	int			nv1;
	unsigned char v1[STRIPE_SIG_MAX_V1][STRIPE_SIG_MAC_LEN];
	int			ignored;		/* items that were not t or a well-formed v1 */
} StripeSig;

/* A stable lower-case name of a status, e.g. "mismatch". */
extern const char *StripeSigStatusName(StripeSigStatus status);

/*
 * Parses a Stripe-Signature header value of len bytes (not NUL-terminated).
 * Returns STRIPE_SIG_OK, MISSING, TOO_LONG, MALFORMED or NO_V1; *out is
 * filled as far as parsing got.
 */
extern StripeSigStatus StripeSigParse(const char *header, size_t len, StripeSig *out);

/*
 * Splits a comma-separated list of endpoint secrets (surrounding blanks
 * trimmed, empty entries skipped) into at most STRIPE_SIG_MAX_SECRETS
 * pointer/length pairs into list. Returns how many; entries longer than
 * STRIPE_SIG_MAX_SECRET_LEN are skipped.
 */
extern int	StripeSigSplitSecrets(const char *list, const char *secrets[], size_t lens[]);

/*
 * HMAC-SHA256(secret, "<t>.<body>") into mac. Returns false when OpenSSL
 * fails.
 */
extern bool StripeSigCompute(const char *secret, size_t secret_len, const char *timestamp, size_t timestamp_len,
							 const char *body, size_t body_len, unsigned char mac[STRIPE_SIG_MAC_LEN]);

/*
 * The whole check: parses header, computes the HMAC for each secret and
 * compares it with every v1 value in constant time (CRYPTO_memcmp), then
 * checks |now - t| <= tolerance. The signature is checked before the time,
 * so a tampered request is reported as a mismatch even when it is also
 * stale. *signed_at receives t when the header parsed (else 0); *matched the
 * 1-based index of the secret that matched (else 0).
 */
extern StripeSigStatus StripeSigVerify(const char *header, size_t header_len, const char *body, size_t body_len,
									   const char *secrets_list, int64_t now, int64_t tolerance,
									   int64_t *signed_at, int *matched);

#endif
