/*
 * jws.c — JWS signatures (RFC 7515, RFC 7518 §3, RFC 8037) with OpenSSL:
 * HS256 (HMAC-SHA256, constant-time comparison), RS256 (RSASSA-PKCS1-v1_5
 * with SHA-256), ES256 (ECDSA P-256 with SHA-256; JWS carries r||s, OpenSSL
 * speaks DER) and EdDSA (Ed25519). Nothing here raises: results are
 * booleans and lengths, and every OpenSSL object is freed on every path.
 */
#include "pgcloud.h"

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/core_names.h>

#include "jwt.h"

/*
 * HMAC-SHA256 with a per-backend EVP_MAC context: fetching the algorithm and
 * setting a key costs more than the MAC of a token, so the context is kept
 * and re-initialised with the same key when the same key comes again.
 */
static EVP_MAC *hmac_alg = NULL;
static EVP_MAC_CTX *hmac_ctx = NULL;
static unsigned char hmac_key[JWK_MAX_OCT_BYTES];
static size_t hmac_key_len = 0;

static bool
hs256(const unsigned char *secret, size_t secret_len, const unsigned char *input, size_t input_len,
	  unsigned char *mac)
{
	size_t		maclen = 0;
	bool		same_key;

	if (secret == NULL || secret_len == 0 || secret_len > sizeof(hmac_key))
		return false;
	if (hmac_alg == NULL && (hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL)
		return false;
	if (hmac_ctx == NULL && (hmac_ctx = EVP_MAC_CTX_new(hmac_alg)) == NULL)
		return false;
	same_key = hmac_key_len == secret_len && CRYPTO_memcmp(hmac_key, secret, secret_len) == 0;
	if (same_key)
	{
		if (EVP_MAC_init(hmac_ctx, NULL, 0, NULL) != 1)
			return false;
	}
	else
	{
		OSSL_PARAM	params[2];

		params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *) "SHA256", 0);
		params[1] = OSSL_PARAM_construct_end();
		OPENSSL_cleanse(hmac_key, sizeof(hmac_key));
		hmac_key_len = 0;
		if (EVP_MAC_init(hmac_ctx, secret, secret_len, params) != 1)
			return false;
		memcpy(hmac_key, secret, secret_len);
		hmac_key_len = secret_len;
	}
	if (EVP_MAC_update(hmac_ctx, input, input_len) != 1
		|| EVP_MAC_final(hmac_ctx, mac, &maclen, EVP_MAX_MD_SIZE) != 1)
	{
		ERR_clear_error();
		return false;
	}
	return maclen == 32;
}

/* One-shot EVP_DigestVerify with md (NULL for Ed25519). */
static bool
digest_verify(EVP_PKEY *pkey, const EVP_MD *md, const unsigned char *input, size_t input_len,
			  const unsigned char *sig, size_t sig_len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool		ok;

	if (ctx == NULL)
		return false;
	ok = EVP_DigestVerifyInit(ctx, NULL, md, NULL, pkey) == 1
		&& EVP_DigestVerify(ctx, sig, sig_len, input, input_len) == 1;
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return ok;
}

/* r||s (64 bytes) -> DER ECDSA-Sig-Value; returns the DER length or 0. */
static int
es256_raw_to_der(const unsigned char *raw, unsigned char **der)
{
	ECDSA_SIG  *esig = ECDSA_SIG_new();
	BIGNUM	   *r = BN_bin2bn(raw, 32, NULL);
	BIGNUM	   *s = BN_bin2bn(raw + 32, 32, NULL);
	int			len = 0;

	if (esig == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(esig, r, s) != 1)
	{
		BN_free(r);
		BN_free(s);
		ECDSA_SIG_free(esig);
		return 0;
	}
	/* esig owns r and s now */
	*der = NULL;
	len = i2d_ECDSA_SIG(esig, der);
	ECDSA_SIG_free(esig);
	return len > 0 ? len : 0;
}

bool
JwsVerify(JwtAlg alg, EVP_PKEY *pkey, const unsigned char *secret, size_t secret_len,
		  const unsigned char *input, size_t input_len,
		  const unsigned char *sig, size_t sig_len)
{
	switch (alg)
	{
		case JWT_ALG_HS256:
			{
				unsigned char mac[EVP_MAX_MD_SIZE];
				bool		ok;

				if (sig_len != 32 || !hs256(secret, secret_len, input, input_len, mac))
					return false;
				ok = CRYPTO_memcmp(mac, sig, 32) == 0;
				OPENSSL_cleanse(mac, sizeof(mac));
				return ok;
			}
		case JWT_ALG_RS256:
			if (pkey == NULL || EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA
				|| sig_len != (size_t) EVP_PKEY_get_size(pkey))
				return false;
			return digest_verify(pkey, EVP_sha256(), input, input_len, sig, sig_len);
		case JWT_ALG_ES256:
			{
				unsigned char *der = NULL;
				int			der_len;
				bool		ok;

				if (pkey == NULL || EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC || sig_len != 64)
					return false;
				der_len = es256_raw_to_der(sig, &der);
				if (der_len == 0)
					return false;
				ok = digest_verify(pkey, EVP_sha256(), input, input_len, der, (size_t) der_len);
				OPENSSL_free(der);
				return ok;
			}
		case JWT_ALG_EDDSA:
			if (pkey == NULL || EVP_PKEY_get_base_id(pkey) != EVP_PKEY_ED25519 || sig_len != 64)
				return false;
			return digest_verify(pkey, NULL, input, input_len, sig, sig_len);
		default:
			return false;
	}
}

size_t
JwsSign(JwtAlg alg, EVP_PKEY *pkey, const unsigned char *secret, size_t secret_len,
		const unsigned char *input, size_t input_len, unsigned char *sig)
{
	EVP_MD_CTX *ctx;
	size_t		len = 0;
	bool		ok;

	if (alg == JWT_ALG_HS256)
		return hs256(secret, secret_len, input, input_len, sig) ? 32 : 0;
	if (pkey == NULL || JwtAlgOfPkey(pkey) != alg)
		return 0;

	ctx = EVP_MD_CTX_new();
	if (ctx == NULL)
		return 0;
	ok = EVP_DigestSignInit(ctx, NULL, alg == JWT_ALG_EDDSA ? NULL : EVP_sha256(), NULL, pkey) == 1
		&& EVP_DigestSign(ctx, NULL, &len, input, input_len) == 1
		&& len <= JWT_MAX_SIGNATURE_LEN;
	if (ok && alg == JWT_ALG_ES256)
	{
		unsigned char der[JWT_MAX_SIGNATURE_LEN];
		size_t		der_len = sizeof(der);
		const unsigned char *p = der;
		ECDSA_SIG  *esig = NULL;

		ok = EVP_DigestSign(ctx, der, &der_len, input, input_len) == 1
			&& (esig = d2i_ECDSA_SIG(NULL, &p, (long) der_len)) != NULL
			&& BN_bn2binpad(ECDSA_SIG_get0_r(esig), sig, 32) == 32
			&& BN_bn2binpad(ECDSA_SIG_get0_s(esig), sig + 32, 32) == 32;
		ECDSA_SIG_free(esig);
		len = ok ? 64 : 0;
	}
	else if (ok)
		ok = EVP_DigestSign(ctx, sig, &len, input, input_len) == 1;
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return ok ? len : 0;
}
