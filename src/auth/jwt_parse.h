/*
 * jwt_parse.h — the untrusted-bytes layer of JWT and JWK handling.
 *
 * Plain C99, no PostgreSQL and no OpenSSL headers: compiled into pgcloud.so
 * (src/auth/jwt.c, jwk.c) and standalone into the libFuzzer target
 * test/fuzz/fuzz_auth_jwt.c. Nothing here allocates: every output goes to a
 * caller-provided buffer of a stated capacity, every loop is bounded by its
 * input, and the JSON checker keeps its nesting on a fixed-size stack.
 *
 * What it does:
 *   - splits a compact JWS (RFC 7515 §7.1) into its three base64url parts,
 *     with size limits on the whole token and on every part;
 *   - decodes strict base64url (RFC 7515 §2: no padding, no whitespace, no
 *     non-zero trailing bits);
 *   - checks that a decoded part is a JSON object (RFC 8259) in valid UTF-8
 *     with bounded depth, bounded number literals, no NUL and no lone
 *     surrogate escapes: whatever passes is accepted by PostgreSQL's jsonb
 *     input, so the server never raises an unexpected error (nor echoes the
 *     bytes) for a hostile token;
 *   - checks and decodes the members of a JWK (RFC 7517/7518/8037): key type,
 *     curve, algorithm, and the exact or bounded sizes of n, e, x, y, d, k and
 *     the RSA CRT members.
 */
#ifndef PGCLOUD_JWT_PARSE_H
#define PGCLOUD_JWT_PARSE_H

#include <stddef.h>

/* Size limits (bytes). */
#define JWT_MAX_TOKEN_LEN		16384	/* the whole compact token */
#define JWT_MAX_HEADER_LEN		1024	/* decoded protected header */
#define JWT_MAX_PAYLOAD_LEN		8192	/* decoded claims set */
#define JWT_MAX_SIGNATURE_LEN	1024	/* decoded signature (RSA-8192) */
#define JWT_MAX_JSON_DEPTH		16		/* nesting of objects and arrays */
#define JWT_MAX_NUMBER_LEN		40		/* one JSON number literal */
#define JWT_MAX_EXPONENT_DIGITS 3		/* 1e999 at most */

#define JWK_MAX_RSA_BYTES		1024	/* modulus of 8192 bits */
#define JWK_MIN_RSA_BYTES		256		/* modulus of 2048 bits */
#define JWK_MAX_RSA_E_BYTES		8
#define JWK_EC_P256_BYTES		32
#define JWK_ED25519_BYTES		32
#define JWK_MIN_OCT_BYTES		32		/* HS256 key >= hash size (RFC 7518 §3.2) */
#define JWK_MAX_OCT_BYTES		512
#define JWK_MAX_MEMBER_LEN		64		/* kty, crv, alg, use, kid strings */

typedef enum JwtErr
{
	JWT_OK = 0,
	JWT_ERR_EMPTY,
	JWT_ERR_TOKEN_TOO_LARGE,
	JWT_ERR_NOT_THREE_PARTS,
	JWT_ERR_EMPTY_PART,
	JWT_ERR_PART_TOO_LARGE,
	JWT_ERR_BASE64URL,
	JWT_ERR_UTF8,
	JWT_ERR_JSON,
	JWT_ERR_JSON_NOT_OBJECT,
	JWT_ERR_JSON_DEPTH,
	JWT_ERR_JSON_NUMBER,
	JWT_ERR_JSON_ESCAPE,
	JWK_ERR_KTY,
	JWK_ERR_CRV,
	JWK_ERR_ALG,
	JWK_ERR_USE,
	JWK_ERR_MEMBER_MISSING,
	JWK_ERR_MEMBER_SIZE,
	JWK_ERR_RSA_TOO_SMALL,
	JWK_ERR_PRIVATE_INCOMPLETE,
	JWT_ERR__COUNT
} JwtErr;

/* A short lower-case sentence for an error (never contains input bytes). */
extern const char *jwt_err_message(JwtErr err);

/* The three base64url parts of a compact JWS, pointing into the token. */
typedef struct JwtParts
{
	const char *header;
	size_t		header_len;
	const char *payload;
	size_t		payload_len;
	const char *signature;
	size_t		signature_len;
	size_t		signing_input_len;	/* header "." payload, from the start */
} JwtParts;

/*
 * Splits token[0..len) into its parts: exactly two '.', a non-empty header,
 * payload and signature, only base64url characters, and each part small
 * enough to decode within the limits above.
 */
extern JwtErr jwt_split(const char *token, size_t len, JwtParts *parts);

/*
 * Strict base64url (no padding; src/core/base64.h) decode of in[0..inlen)
 * into out (capacity outcap), the outcome as a JwtErr: JWT_ERR_BASE64URL
 * (not strict base64url, e.g. a length of 1 mod 4 or non-zero unused
 * trailing bits) or JWT_ERR_PART_TOO_LARGE.
 */
extern JwtErr jwt_b64url_decode(const char *in, size_t inlen,
								unsigned char *out, size_t outcap, size_t *outlen);

/*
 * Checks that s[0..len) is one JSON value (an object when require_object),
 * in valid UTF-8 without NUL, nested at most JWT_MAX_JSON_DEPTH deep, with
 * number literals of at most JWT_MAX_NUMBER_LEN characters and exponents of
 * at most JWT_MAX_EXPONENT_DIGITS digits, and no \u0000 or unpaired
 * surrogate escapes. Linear time, no recursion, no allocation.
 */
extern JwtErr jwt_json_check(const unsigned char *s, size_t len, int require_object);

/* Decodes a base64url part and checks it as a JSON object. */
extern JwtErr jwt_decode_json_part(const char *b64, size_t b64len,
								   unsigned char *out, size_t outcap, size_t *outlen);

/* ---- JWK members ---------------------------------------------------- */

typedef enum JwkKty
{
	JWK_KTY_NONE = 0,
	JWK_KTY_RSA,
	JWK_KTY_EC,
	JWK_KTY_OKP,
	JWK_KTY_OCT
} JwkKty;

typedef enum JwtAlg
{
	JWT_ALG_NONE = 0,			/* not an algorithm we accept */
	JWT_ALG_HS256,
	JWT_ALG_RS256,
	JWT_ALG_ES256,
	JWT_ALG_EDDSA
} JwtAlg;

/* A member as found in the JWK: pointer and length, or ptr NULL if absent. */
typedef struct JwkStr
{
	const char *ptr;
	size_t		len;
} JwkStr;

/* The members of a JWK that matter, as strings (base64url where binary). */
typedef struct JwkMembers
{
	JwkStr		kty;
	JwkStr		crv;
	JwkStr		alg;
	JwkStr		use;
	JwkStr		n;
	JwkStr		e;
	JwkStr		x;
	JwkStr		y;
	JwkStr		k;
	JwkStr		d;
	JwkStr		p;
	JwkStr		q;
	JwkStr		dp;
	JwkStr		dq;
	JwkStr		qi;
} JwkMembers;

/* A checked and decoded JWK. */
typedef struct JwkDecoded
{
	JwkKty		kty;
	JwtAlg		alg;			/* the algorithm this key is for */
	int			is_private;		/* d (or k) present: a private/secret key */
	unsigned char n[JWK_MAX_RSA_BYTES];
	size_t		n_len;
	unsigned char e[JWK_MAX_RSA_E_BYTES];
	size_t		e_len;
	unsigned char x[JWK_EC_P256_BYTES];
	size_t		x_len;
	unsigned char y[JWK_EC_P256_BYTES];
	size_t		y_len;
	unsigned char k[JWK_MAX_OCT_BYTES];
	size_t		k_len;
	unsigned char d[JWK_MAX_RSA_BYTES];
	size_t		d_len;
	unsigned char p[JWK_MAX_RSA_BYTES / 2];
	size_t		p_len;
	unsigned char q[JWK_MAX_RSA_BYTES / 2];
	size_t		q_len;
	unsigned char dp[JWK_MAX_RSA_BYTES / 2];
	size_t		dp_len;
	unsigned char dq[JWK_MAX_RSA_BYTES / 2];
	size_t		dq_len;
	unsigned char qi[JWK_MAX_RSA_BYTES / 2];
	size_t		qi_len;
} JwkDecoded;

/* "HS256" -> JWT_ALG_HS256 ...; "none" and anything unknown -> JWT_ALG_NONE. */
extern JwtAlg jwt_alg_from_name(const char *s, size_t len);
extern const char *jwt_alg_name(JwtAlg alg);

/* The key type an algorithm needs. */
extern JwkKty jwt_alg_kty(JwtAlg alg);

/*
 * Checks the members of one JWK and decodes its key material: kty is RSA,
 * EC (crv P-256), OKP (crv Ed25519) or oct; alg, when present, must be the
 * one algorithm that key type serves here (RS256, ES256, EdDSA, HS256); use,
 * when present, must be "sig"; sizes are exact for curves and bounded for
 * RSA (2048 to 8192 bits, leading zero bytes not counted) and oct keys. A
 * private RSA key needs all of d, p, q, dp, dq, qi.
 */
extern JwtErr jwk_decode(const JwkMembers *m, JwkDecoded *out);

#endif							/* PGCLOUD_JWT_PARSE_H */
