/*
 * secrets.c — the opaque secrets auth hands out (refresh tokens, client
 * secrets) and their comparison.
 *
 *   auth.random_token(prefix text, nbytes int) RETURNS text
 *       prefix || base64url of nbytes from the OS CSPRNG (pg_strong_random)
 *   auth.secret_hash(secret text) RETURNS bytea
 *       SHA-256 of the secret: what the tables store (the secrets carry
 *       >= 256 bits of entropy, so a fast hash is the right one)
 *   auth.secret_matches(secret text, hash bytea) RETURNS boolean
 *       constant-time comparison of the secret's hash with a stored hash
 */
#include "pgcloud.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "base64.h"

PG_FUNCTION_INFO_V1(pgcloud_auth_random_token);
PG_FUNCTION_INFO_V1(pgcloud_auth_secret_hash);
PG_FUNCTION_INFO_V1(pgcloud_auth_secret_matches);

#define MAX_SECRET_BYTES 64
#define MAX_SECRET_TEXT 512

Datum
pgcloud_auth_random_token(PG_FUNCTION_ARGS)
{
	char	   *prefix = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int32		nbytes = PG_GETARG_INT32(1);
	unsigned char raw[MAX_SECRET_BYTES];
	char		enc[MAX_SECRET_BYTES * 2];
	char	   *result;

	if (nbytes < 16 || nbytes > MAX_SECRET_BYTES)
		PgcloudRaise("invalid_argument", "a random token has 16 to 64 bytes", NULL, NULL);
	if (strlen(prefix) > 16)
		PgcloudRaise("invalid_argument", "a token prefix has at most 16 characters", NULL, NULL);
	if (!pg_strong_random(raw, nbytes))
		elog(ERROR, "could not generate random bytes");
	pgcloud_b64_encode(raw, (size_t) nbytes, enc, sizeof(enc), PGCLOUD_B64_URL, false);
	result = psprintf("%s%s", prefix, enc);
	explicit_bzero(raw, sizeof(raw));
	explicit_bzero(enc, sizeof(enc));
	PG_RETURN_TEXT_P(cstring_to_text(result));
}

static void
hash_text(text *t, unsigned char *md)
{
	unsigned int len = 0;

	if (VARSIZE_ANY_EXHDR(t) > MAX_SECRET_TEXT)
		PgcloudRaise("invalid_argument", psprintf("a secret has at most %d characters", MAX_SECRET_TEXT),
					 NULL, NULL);
	if (EVP_Digest(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), md, &len, EVP_sha256(), NULL) != 1 || len != 32)
		elog(ERROR, "SHA-256 failed");
}

Datum
pgcloud_auth_secret_hash(PG_FUNCTION_ARGS)
{
	unsigned char md[32];
	bytea	   *result = palloc(VARHDRSZ + 32);

	hash_text(PG_GETARG_TEXT_PP(0), md);
	SET_VARSIZE(result, VARHDRSZ + 32);
	memcpy(VARDATA(result), md, 32);
	PG_RETURN_BYTEA_P(result);
}

Datum
pgcloud_auth_secret_matches(PG_FUNCTION_ARGS)
{
	unsigned char md[32];
	bytea	   *stored = PG_GETARG_BYTEA_PP(1);

	hash_text(PG_GETARG_TEXT_PP(0), md);
	if (VARSIZE_ANY_EXHDR(stored) != 32)
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(CRYPTO_memcmp(md, VARDATA_ANY(stored), 32) == 0);
}
