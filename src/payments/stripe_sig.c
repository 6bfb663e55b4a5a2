/*
 * stripe_sig.c — Stripe-Signature parsing and verification (see
 * stripe_sig.h). Plain C and OpenSSL 3: also built into the libFuzzer
 * target test/fuzz/fuzz_stripe_sig.c.
 */
#include "stripe_sig.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

const char *
StripeSigStatusName(StripeSigStatus status)
{
	switch (status)
	{
		case STRIPE_SIG_OK:
			return "ok";
		case STRIPE_SIG_MISSING:
			return "missing_header";
		case STRIPE_SIG_TOO_LONG:
			return "header_too_long";
		case STRIPE_SIG_MALFORMED:
			return "malformed_header";
		case STRIPE_SIG_NO_V1:
			return "no_v1_signature";
		case STRIPE_SIG_NO_SECRETS:
			return "no_secrets_configured";
		case STRIPE_SIG_MISMATCH:
			return "signature_mismatch";
		case STRIPE_SIG_STALE:
			return "timestamp_too_old";
		case STRIPE_SIG_FUTURE:
			return "timestamp_in_future";
		case STRIPE_SIG_INTERNAL:
			return "internal_error";
	}
	return "unknown";
}

static bool
is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes exactly 2 * STRIPE_SIG_MAC_LEN hex digits; false otherwise. */
static bool
decode_mac(const char *s, size_t len, unsigned char out[STRIPE_SIG_MAC_LEN])
{
	if (len != 2 * STRIPE_SIG_MAC_LEN)
		return false;
	for (size_t i = 0; i < STRIPE_SIG_MAC_LEN; i++)
	{
		int			hi = hex_value(s[2 * i]);
		int			lo = hex_value(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		out[i] = (unsigned char) ((hi << 4) | lo);
	}
	return true;
}

StripeSigStatus
StripeSigParse(const char *header, size_t len, StripeSig *out)
{
	size_t		pos = 0;
	int			items = 0;
	bool		have_t = false;

	memset(out, 0, sizeof(*out));
	if (header == NULL || len == 0)
		return STRIPE_SIG_MISSING;
	if (len > STRIPE_SIG_MAX_HEADER)
		return STRIPE_SIG_TOO_LONG;

	while (pos <= len)
	{
		size_t		start = pos;
		size_t		end;
		size_t		eq;
		const char *key;
		size_t		key_len;
		const char *val;
		size_t		val_len;

		/* One item: up to the next comma or the end. */
		while (pos < len && header[pos] != ',')
			pos++;
		end = pos;
		pos++;					/* past the comma (or past the end: loop ends) */

		while (start < end && is_blank(header[start]))
			start++;
		while (end > start && is_blank(header[end - 1]))
			end--;
		if (start == end)
			continue;			/* empty item, e.g. a trailing comma */
		if (++items > STRIPE_SIG_MAX_ITEMS)
			return STRIPE_SIG_MALFORMED;

		for (eq = start; eq < end && header[eq] != '='; eq++)
			;
		if (eq == end)
		{
			out->ignored++;		/* no "=": not a key=value item */
			continue;
		}
		key = header + start;
		key_len = eq - start;
		val = header + eq + 1;
		val_len = end - eq - 1;

		if (key_len == 1 && key[0] == 't')
		{
			int64_t		t = 0;

			if (have_t)
				return STRIPE_SIG_MALFORMED;	/* two timestamps: which one was signed? */
			if (val_len == 0 || val_len > STRIPE_SIG_MAX_TIMESTAMP_DIGITS)
				return STRIPE_SIG_MALFORMED;
			for (size_t i = 0; i < val_len; i++)
			{
				if (val[i] < '0' || val[i] > '9')
					return STRIPE_SIG_MALFORMED;
				t = t * 10 + (val[i] - '0');
			}
			have_t = true;
			out->timestamp = t;
			out->timestamp_len = val_len;
			memcpy(out->timestamp_text, val, val_len);
			out->timestamp_text[val_len] = '\0';
		}
		else if (key_len == 2 && key[0] == 'v' && key[1] == '1')
		{
			if (out->nv1 >= STRIPE_SIG_MAX_V1)
				return STRIPE_SIG_MALFORMED;
			if (decode_mac(val, val_len, out->v1[out->nv1]))
				out->nv1++;
			else
				out->ignored++;	/* cannot match anything */
		}
		else
			out->ignored++;		/* v0, unknown schemes and keys */
	}

	if (!have_t)
		return STRIPE_SIG_MALFORMED;
	if (out->nv1 == 0)
		return STRIPE_SIG_NO_V1;
	return STRIPE_SIG_OK;
}

int
StripeSigSplitSecrets(const char *list, const char *secrets[], size_t lens[])
{
	int			n = 0;
	const char *p = list;

	if (list == NULL)
		return 0;
	while (*p && n < STRIPE_SIG_MAX_SECRETS)
	{
		const char *start = p;
		const char *end;

		while (*p && *p != ',')
			p++;
		end = p;
		if (*p == ',')
			p++;
		while (start < end && (is_blank(*start) || *start == '\n' || *start == '\r'))
			start++;
		while (end > start && (is_blank(end[-1]) || end[-1] == '\n' || end[-1] == '\r'))
			end--;
		if (start == end || (size_t) (end - start) > STRIPE_SIG_MAX_SECRET_LEN)
			continue;
		secrets[n] = start;
		lens[n] = (size_t) (end - start);
		n++;
	}
	return n;
}

/* The HMAC implementation, fetched once per process. */
static EVP_MAC *
hmac_algorithm(void)
{
	static EVP_MAC *mac = NULL;

	if (mac == NULL)
		mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	return mac;
}

bool
StripeSigCompute(const char *secret, size_t secret_len, const char *timestamp, size_t timestamp_len,
				 const char *body, size_t body_len, unsigned char mac[STRIPE_SIG_MAC_LEN])
{
	EVP_MAC	   *alg = hmac_algorithm();
	EVP_MAC_CTX *ctx;
	OSSL_PARAM	params[2];
	char		digest[] = "SHA256";
	size_t		out_len = 0;
	bool		ok;

	if (alg == NULL)
		return false;
	ctx = EVP_MAC_CTX_new(alg);
	if (ctx == NULL)
		return false;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
	params[1] = OSSL_PARAM_construct_end();
	/* The payload is hashed in place: "<t>" "." "<body>", never copied. */
	ok = EVP_MAC_init(ctx, (const unsigned char *) secret, secret_len, params) == 1
		&& EVP_MAC_update(ctx, (const unsigned char *) timestamp, timestamp_len) == 1
		&& EVP_MAC_update(ctx, (const unsigned char *) ".", 1) == 1
		&& (body_len == 0 || EVP_MAC_update(ctx, (const unsigned char *) body, body_len) == 1)
		&& EVP_MAC_final(ctx, mac, &out_len, STRIPE_SIG_MAC_LEN) == 1
		&& out_len == STRIPE_SIG_MAC_LEN;
	EVP_MAC_CTX_free(ctx);
	return ok;
}

StripeSigStatus
StripeSigVerify(const char *header, size_t header_len, const char *body, size_t body_len,
				const char *secrets_list, int64_t now, int64_t tolerance,
				int64_t *signed_at, int *matched)
{
	StripeSig	sig;
	StripeSigStatus status;
	const char *secrets[STRIPE_SIG_MAX_SECRETS];
	size_t		lens[STRIPE_SIG_MAX_SECRETS];
	int			nsecrets;
	int			found = 0;

	*signed_at = 0;
	*matched = 0;
	status = StripeSigParse(header, header_len, &sig);
	if (status != STRIPE_SIG_OK)
		return status;
	*signed_at = sig.timestamp;

	nsecrets = StripeSigSplitSecrets(secrets_list, secrets, lens);
	if (nsecrets == 0)
		return STRIPE_SIG_NO_SECRETS;

	for (int s = 0; s < nsecrets; s++)
	{
		unsigned char expected[STRIPE_SIG_MAC_LEN];

		if (!StripeSigCompute(secrets[s], lens[s], sig.timestamp_text, sig.timestamp_len, body, body_len,
							  expected))
		{
			OPENSSL_cleanse(expected, sizeof(expected));
			return STRIPE_SIG_INTERNAL;
		}
		/* Every candidate is compared, whatever matched before: no early exit. */
		for (int v = 0; v < sig.nv1; v++)
			if (CRYPTO_memcmp(expected, sig.v1[v], STRIPE_SIG_MAC_LEN) == 0 && found == 0)
				found = s + 1;
		OPENSSL_cleanse(expected, sizeof(expected));
	}
	if (found == 0)
		return STRIPE_SIG_MISMATCH;
	*matched = found;
	if (tolerance >= 0)
	{
		if (sig.timestamp < now - tolerance)
			return STRIPE_SIG_STALE;
		if (sig.timestamp > now + tolerance)
			return STRIPE_SIG_FUTURE;
	}
	return STRIPE_SIG_OK;
}
