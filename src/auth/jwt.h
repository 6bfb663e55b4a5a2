/*
 * jwt.h — the auth subsystem's C side: JWT (RFC 7519) over JWS compact
 * serialization (RFC 7515) with HS256, RS256, ES256 and EdDSA (RFC 8037),
 * JWK/JWKS (RFC 7517) import and export, RFC 7638 thumbprints, the platform
 * signing keys (sealed with the master key), and the opaque secrets auth
 * hands out. OpenSSL does every cryptographic operation; jwt_parse.c (plain
 * C, fuzzed) does every parse of untrusted bytes before PostgreSQL's JSON
 * parser sees them.
 */
#ifndef PGCLOUD_AUTH_JWT_H
#define PGCLOUD_AUTH_JWT_H

#include "pgcloud.h"

#include <openssl/evp.h>

#include "jwt_parse.h"

#define JWT_MAX_KID_LEN 256
#define JWT_MAX_KEYS	32		/* keys in one JWKS */

/* jwk.c ------------------------------------------------------------------ */

/* The members of the JWK object jwk (pointers into it). */
extern void JwkMembersFromJsonb(JsonbContainer *jwk, JwkMembers *m, JwkStr *kid);

/*
 * An OpenSSL key for a decoded JWK (public, or private when want_private);
 * NULL with *why set when OpenSSL refuses it (e.g. a point not on the curve).
 * Public keys are cached per backend, so the caller must not free them
 * (*cached = true); private keys are the caller's to free.
 */
extern EVP_PKEY *JwkToPkey(const JwkDecoded *k, bool want_private, bool *cached,
						   const char **why);

/* The public JWK of a key as jsonb: kty, crv/n/e/x/y, use "sig", alg, kid. */
extern Jsonb *JwkPublicFromPkey(EVP_PKEY *pkey, const char *kid);

/* RFC 7638 thumbprint (base64url SHA-256) of a public key. */
extern char *JwkThumbprintFromPkey(EVP_PKEY *pkey);

/* A new key pair for alg (ES256, RS256, EdDSA); the caller frees it. */
extern EVP_PKEY *JwtGenerateKey(JwtAlg alg);

/* JWT algorithm of an OpenSSL key (RS256, ES256, EdDSA) or JWT_ALG_NONE. */
extern JwtAlg JwtAlgOfPkey(EVP_PKEY *pkey);

/* jws.c ------------------------------------------------------------------ */

/*
 * Verifies sig over input with key (EVP key, or the raw secret for HS256).
 * Returns true when the signature is valid. Never raises for bad input.
 */
extern bool JwsVerify(JwtAlg alg, EVP_PKEY *pkey, const unsigned char *secret, size_t secret_len,
					  const unsigned char *input, size_t input_len,
					  const unsigned char *sig, size_t sig_len);

/*
 * Signs input; writes the JWS signature (r||s for ES256) into sig (capacity
 * JWT_MAX_SIGNATURE_LEN) and returns its length, 0 on failure.
 */
extern size_t JwsSign(JwtAlg alg, EVP_PKEY *pkey, const unsigned char *secret, size_t secret_len,
					  const unsigned char *input, size_t input_len, unsigned char *sig);

/* jwt_json.c ------------------------------------------------------------- */

/* Compact JSON text (no insignificant whitespace) of a jsonb value. */
extern void JwtJsonbToCompact(StringInfo out, Jsonb *jb);

/*
 * Decoded bytes that jwt_json_check() accepted -> jsonb, or NULL when the
 * server's encoding or JSON parser refuses them (no error is raised and the
 * bytes are never echoed).
 */
extern Jsonb *JwtBytesToJsonb(const unsigned char *s, size_t len);

/* A member of a jsonb object container, or NULL. */
extern JsonbValue *JwtJsonbMember(JsonbContainer *obj, const char *key);

/* jwt.c ------------------------------------------------------------------ */

/* Builds header.payload.signature for the claims with key (alg from the key). */
extern char *JwtSignWith(Jsonb *claims, Jsonb *extra_header, JwtAlg alg, EVP_PKEY *pkey,
						 const unsigned char *secret, size_t secret_len, const char *kid);

#endif							/* PGCLOUD_AUTH_JWT_H */
