/*
 * jwt.c — JWT verification and signing, SQL-callable:
 *
 *   auth.jwt_verify(token text, keys jsonb, options jsonb) RETURNS jsonb
 *   auth.jwt_decode(token text) RETURNS jsonb            (unverified, {header, claims})
 *   auth.jwt_sign(claims jsonb, jwk jsonb, header jsonb) RETURNS text
 *
 * Verification is strict: the token's alg must be one the caller allows and
 * must match the type of the key that verifies it ("none" is never accepted,
 * an HS256 token is never checked against an RSA or EC key, whatever bytes
 * it was signed with); "crit" is refused; keys embedded in the header (jwk,
 * jku, x5u, x5c) are ignored; exp, nbf and iat are checked against the clock
 * with a small leeway; iss and aud against the expected values. Every
 * failure is the catalogued invalid_token, token_expired or
 * token_not_yet_valid error with a detail that never contains token bytes.
 * The signature is checked before the claims, so claims errors are not an
 * oracle for forged tokens.
 */
#include "pgcloud.h"

#include <math.h>

#include "access/detoast.h"
#include "utils/datetime.h"
#include "utils/json.h"

#include "base64.h"
#include "jwt.h"

PG_FUNCTION_INFO_V1(pgcloud_auth_jwt_verify);
PG_FUNCTION_INFO_V1(pgcloud_auth_jwt_decode);
PG_FUNCTION_INFO_V1(pgcloud_auth_jwt_sign);

#define MAX_LEEWAY_SECONDS 3600
#define MAX_NUMERIC_DATE 253402300799.0	/* 9999-12-31T23:59:59Z */

typedef struct VerifyOptions
{
	char	   *iss;
	char	   *aud;
	bool		algs[JWT_ALG_EDDSA + 1];
	double		leeway;
	bool		has_now;
	double		now;
	bool		require_exp;
	bool		require_nbf;
	bool		require_iat;
	bool		require_sub;
	bool		require_jti;
} VerifyOptions;

/* A decoded, structurally valid token. */
typedef struct DecodedToken
{
	JwtParts	parts;
	Jsonb	   *header;
	Jsonb	   *claims;
	unsigned char sig[JWT_MAX_SIGNATURE_LEN];
	size_t		sig_len;
} DecodedToken;

static void
invalid(const char *detail)
{
	PgcloudRaise("invalid_token", detail, NULL, NULL);
}

static void
invalid_err(JwtErr err)
{
	invalid(jwt_err_message(err));
}

static char *
jb_string(JsonbContainer *obj, const char *key, const char *what)
{
	JsonbValue *v = JwtJsonbMember(obj, key);

	if (v == NULL)
		return NULL;
	if (v->type != jbvString)
		PgcloudRaise("invalid_argument", psprintf("option \"%s\" must be a string", what), NULL, NULL);
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static double
jb_number(JsonbValue *v)
{
	char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));

	return strtod(s, NULL);
}

static void
parse_options(Jsonb *opts, VerifyOptions *o)
{
	JsonbValue *v;
	JsonbIterator *it;
	JsonbValue	key;
	JsonbIteratorToken tok;

	memset(o, 0, sizeof(*o));
	o->algs[JWT_ALG_HS256] = o->algs[JWT_ALG_RS256] = o->algs[JWT_ALG_ES256] = o->algs[JWT_ALG_EDDSA] = true;
	o->leeway = 0;
	o->require_exp = true;
	if (opts == NULL)
		return;
	if (!JB_ROOT_IS_OBJECT(opts))
		PgcloudRaise("invalid_argument", "verification options must be a JSON object", NULL, NULL);

	/* Unknown options are mistakes: say so rather than ignore a check. */
	it = JsonbIteratorInit(&opts->root);
	while ((tok = JsonbIteratorNext(&it, &key, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			static const char *const known[] = {"iss", "aud", "algs", "leeway", "now", "require", NULL};
			int			i;
			bool		ok = false;

			for (i = 0; known[i]; i++)
				if ((size_t) key.val.string.len == strlen(known[i])
					&& memcmp(key.val.string.val, known[i], key.val.string.len) == 0)
					ok = true;
			if (!ok)
				PgcloudRaise("invalid_argument",
							 psprintf("unknown verification option \"%s\"",
									  pnstrdup(key.val.string.val, Min(key.val.string.len, 64))),
							 "Known options: iss, aud, algs, leeway, now, require.", NULL);
		}
	}

	o->iss = jb_string(&opts->root, "iss", "iss");
	o->aud = jb_string(&opts->root, "aud", "aud");
	if ((v = JwtJsonbMember(&opts->root, "leeway")) != NULL)
	{
		if (v->type != jbvNumeric)
			PgcloudRaise("invalid_argument", "option \"leeway\" must be a number of seconds", NULL, NULL);
		o->leeway = jb_number(v);
		if (!(o->leeway >= 0 && o->leeway <= MAX_LEEWAY_SECONDS))
			PgcloudRaise("invalid_argument", "option \"leeway\" must be between 0 and 3600 seconds", NULL, NULL);
	}
	if ((v = JwtJsonbMember(&opts->root, "now")) != NULL)
	{
		if (v->type != jbvNumeric)
			PgcloudRaise("invalid_argument", "option \"now\" must be a NumericDate", NULL, NULL);
		o->has_now = true;
		o->now = jb_number(v);
	}
	if ((v = JwtJsonbMember(&opts->root, "algs")) != NULL)
	{
		JsonbContainer *c;
		int			i;
		int			n;

		if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
			PgcloudRaise("invalid_argument", "option \"algs\" must be an array of algorithm names", NULL, NULL);
		c = v->val.binary.data;
		n = JsonContainerSize(c);
		memset(o->algs, 0, sizeof(o->algs));
		for (i = 0; i < n; i++)
		{
			JsonbValue *a = getIthJsonbValueFromContainer(c, i);
			JwtAlg		alg;

			if (a == NULL || a->type != jbvString)
				PgcloudRaise("invalid_argument", "option \"algs\" must be an array of algorithm names", NULL, NULL);
			alg = jwt_alg_from_name(a->val.string.val, a->val.string.len);
			if (alg == JWT_ALG_NONE)
				PgcloudRaise("invalid_argument", "option \"algs\" may name only HS256, RS256, ES256 and EdDSA",
							 NULL, NULL);
			o->algs[alg] = true;
		}
	}
	if ((v = JwtJsonbMember(&opts->root, "require")) != NULL)
	{
		JsonbContainer *c;
		int			i;
		int			n;

		if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
			PgcloudRaise("invalid_argument", "option \"require\" must be an array of claim names", NULL, NULL);
		c = v->val.binary.data;
		n = JsonContainerSize(c);
		o->require_exp = false;
		for (i = 0; i < n; i++)
		{
			JsonbValue *a = getIthJsonbValueFromContainer(c, i);
			char	   *name;

			if (a == NULL || a->type != jbvString)
				PgcloudRaise("invalid_argument", "option \"require\" must be an array of claim names", NULL, NULL);
			name = pnstrdup(a->val.string.val, a->val.string.len);
			if (strcmp(name, "exp") == 0)
				o->require_exp = true;
			else if (strcmp(name, "nbf") == 0)
				o->require_nbf = true;
			else if (strcmp(name, "iat") == 0)
				o->require_iat = true;
			else if (strcmp(name, "sub") == 0)
				o->require_sub = true;
			else if (strcmp(name, "jti") == 0)
				o->require_jti = true;
			else if (strcmp(name, "iss") != 0 && strcmp(name, "aud") != 0)
				PgcloudRaise("invalid_argument",
							 "option \"require\" may name exp, nbf, iat, iss, aud, sub and jti", NULL, NULL);
		}
	}
}

/* Size check before detoasting: a huge argument is refused without being read. */
static text *
token_arg(FunctionCallInfo fcinfo, int argno)
{
	Datum		d = PG_GETARG_DATUM(argno);

	if (toast_raw_datum_size(d) - VARHDRSZ > JWT_MAX_TOKEN_LEN)
		invalid(psprintf("the token is larger than %d bytes", JWT_MAX_TOKEN_LEN));
	return DatumGetTextPP(d);
}

static void
decode_token(text *t, DecodedToken *tok)
{
	const char *s = VARDATA_ANY(t);
	size_t		len = VARSIZE_ANY_EXHDR(t);
	unsigned char hbuf[JWT_MAX_HEADER_LEN];
	unsigned char pbuf[JWT_MAX_PAYLOAD_LEN];
	size_t		hlen;
	size_t		plen;
	JwtErr		err;

	err = jwt_split(s, len, &tok->parts);
	if (err != JWT_OK)
		invalid_err(err);
	err = jwt_decode_json_part(tok->parts.header, tok->parts.header_len, hbuf, sizeof(hbuf), &hlen);
	if (err != JWT_OK)
		invalid(psprintf("header: %s", jwt_err_message(err)));
	err = jwt_decode_json_part(tok->parts.payload, tok->parts.payload_len, pbuf, sizeof(pbuf), &plen);
	if (err != JWT_OK)
		invalid(psprintf("claims: %s", jwt_err_message(err)));
	err = jwt_b64url_decode(tok->parts.signature, tok->parts.signature_len, tok->sig, sizeof(tok->sig),
							&tok->sig_len);
	if (err != JWT_OK)
		invalid(psprintf("signature: %s", jwt_err_message(err)));
	tok->header = JwtBytesToJsonb(hbuf, hlen);
	if (tok->header == NULL)
		invalid("header: the JSON cannot be represented in the database encoding");
	tok->claims = JwtBytesToJsonb(pbuf, plen);
	if (tok->claims == NULL)
		invalid("claims: the JSON cannot be represented in the database encoding");
}

/* The token's alg, checked against what is allowed. */
static JwtAlg
header_alg(DecodedToken *tok, const VerifyOptions *o)
{
	JsonbValue *v = JwtJsonbMember(&tok->header->root, "alg");
	JwtAlg		alg;

	if (v == NULL || v->type != jbvString)
		invalid("the header has no alg");
	if (v->val.string.len == 4 && pg_strncasecmp(v->val.string.val, "none", 4) == 0)
		invalid("alg \"none\" (an unsigned token) is never accepted");
	alg = jwt_alg_from_name(v->val.string.val, v->val.string.len);
	if (alg == JWT_ALG_NONE)
		invalid("alg is not one of HS256, RS256, ES256, EdDSA");
	if (!o->algs[alg])
		invalid(psprintf("alg %s is not accepted here", jwt_alg_name(alg)));
	if (JwtJsonbMember(&tok->header->root, "crit") != NULL)
		invalid("the header has critical extensions (crit), which are not supported");
	return alg;
}

static const char *
kty_name(JwkKty kty)
{
	switch (kty)
	{
		case JWK_KTY_RSA:
			return "RSA";
		case JWK_KTY_EC:
			return "EC";
		case JWK_KTY_OKP:
			return "OKP";
		case JWK_KTY_OCT:
			return "oct";
		default:
			return "unknown";
	}
}

/*
 * Tries every key of keys (a JWKS object, an array of JWKs, or one JWK)
 * that the token's kid and alg select. Raises when none verifies.
 */
static void
verify_signature(DecodedToken *tok, JwtAlg alg, Jsonb *keys, const char *input, size_t input_len)
{
	JsonbValue *kidv = JwtJsonbMember(&tok->header->root, "kid");
	JsonbContainer *list = NULL;
	JsonbContainer *single = NULL;
	int			n;
	int			i;
	int			kid_matches = 0;
	int			tried = 0;
	const char *mismatch = NULL;
	JwkDecoded *k = palloc(sizeof(JwkDecoded));

	if (kidv != NULL && (kidv->type != jbvString || kidv->val.string.len == 0
						 || kidv->val.string.len > JWT_MAX_KID_LEN))
		invalid("the header's kid is not a short string");

	if (JB_ROOT_IS_OBJECT(keys))
	{
		JsonbValue *kv = JwtJsonbMember(&keys->root, "keys");

		if (kv != NULL)
		{
			if (kv->type != jbvBinary || !JsonContainerIsArray(kv->val.binary.data))
				PgcloudRaise("invalid_jwks", "\"keys\" must be an array of JWKs", NULL, NULL);
			list = kv->val.binary.data;
		}
		else
			single = &keys->root;
	}
	else if (JB_ROOT_IS_ARRAY(keys) && !JB_ROOT_IS_SCALAR(keys))
		list = &keys->root;
	else
		PgcloudRaise("invalid_jwks", "keys must be a JWKS, an array of JWKs or one JWK", NULL, NULL);

	n = single ? 1 : JsonContainerSize(list);
	if (n > JWT_MAX_KEYS)
		PgcloudRaise("invalid_jwks", psprintf("at most %d keys are accepted", JWT_MAX_KEYS), NULL, NULL);
	for (i = 0; i < n; i++)
	{
		JsonbContainer *jwk;
		JwkMembers	m;
		JwkStr		kid;
		EVP_PKEY   *pkey = NULL;
		bool		cached = false;
		const char *why;
		bool		ok;

		if (single)
			jwk = single;
		else
		{
			JsonbValue *v = getIthJsonbValueFromContainer(list, i);

			if (v == NULL || v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
				continue;
			jwk = v->val.binary.data;
		}
		JwkMembersFromJsonb(jwk, &m, &kid);
		if (kidv != NULL)
		{
			if (kid.ptr == NULL || kid.len != (size_t) kidv->val.string.len
				|| memcmp(kid.ptr, kidv->val.string.val, kid.len) != 0)
				continue;
			kid_matches++;
		}
		if (jwk_decode(&m, k) != JWT_OK)
		{
			mismatch = "the selected key is not a valid JWK";
			continue;
		}
		if (k->kty != jwt_alg_kty(alg))
		{
			mismatch = psprintf("alg %s does not match the key type %s", jwt_alg_name(alg), kty_name(k->kty));
			continue;
		}
		if (k->alg != alg)
		{
			mismatch = psprintf("alg %s does not match the key's alg %s", jwt_alg_name(alg), jwt_alg_name(k->alg));
			continue;
		}
		if (alg != JWT_ALG_HS256)
		{
			pkey = JwkToPkey(k, false, &cached, &why);
			if (pkey == NULL)
			{
				mismatch = why;
				continue;
			}
		}
		tried++;
		ok = JwsVerify(alg, pkey, k->k, k->k_len, (const unsigned char *) input, input_len,
					   tok->sig, tok->sig_len);
		if (!cached && pkey != NULL)
			EVP_PKEY_free(pkey);
		if (ok)
		{
			explicit_bzero(k, sizeof(JwkDecoded));
			pfree(k);
			return;
		}
	}
	explicit_bzero(k, sizeof(JwkDecoded));
	pfree(k);
	if (kidv != NULL && kid_matches == 0)
		invalid("no key has the token's kid");
	if (tried == 0)
		invalid(mismatch ? mismatch : "no key can verify this alg");
	invalid("the signature does not verify");
}

static double
unix_now(const VerifyOptions *o)
{
	TimestampTz now;

	if (o->has_now)
		return o->now;
	now = GetCurrentTimestamp();
	return (double) now / USECS_PER_SEC + (double) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

/* A NumericDate claim, or NAN when absent. */
static double
numeric_date(Jsonb *claims, const char *name)
{
	JsonbValue *v = JwtJsonbMember(&claims->root, name);
	double		d;

	if (v == NULL)
		return NAN;
	if (v->type != jbvNumeric)
		invalid(psprintf("the %s claim is not a number", name));
	d = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow, NumericGetDatum(v->val.numeric)));
	if (!isfinite(d) || d < 0 || d > MAX_NUMERIC_DATE)
		invalid(psprintf("the %s claim is not a valid NumericDate", name));
	return d;
}

static bool
string_claim_is(Jsonb *claims, const char *name, const char *want)
{
	JsonbValue *v = JwtJsonbMember(&claims->root, name);

	return v != NULL && v->type == jbvString && (size_t) v->val.string.len == strlen(want)
		&& memcmp(v->val.string.val, want, v->val.string.len) == 0;
}

static void
check_claims(Jsonb *claims, const VerifyOptions *o)
{
	double		now = unix_now(o);
	double		exp = numeric_date(claims, "exp");
	double		nbf = numeric_date(claims, "nbf");
	double		iat = numeric_date(claims, "iat");

	if (o->require_exp && isnan(exp))
		invalid("the token has no exp claim");
	if (o->require_nbf && isnan(nbf))
		invalid("the token has no nbf claim");
	if (o->require_iat && isnan(iat))
		invalid("the token has no iat claim");
	if (!isnan(exp) && now >= exp + o->leeway)
		PgcloudRaise("token_expired", "the token's exp is in the past", "Get a new token.", NULL);
	if (!isnan(nbf) && now + o->leeway < nbf)
		PgcloudRaise("token_not_yet_valid", "the token's nbf is in the future",
					 "Check the clocks of the issuer and of this server.", NULL);
	if (!isnan(iat) && iat > now + o->leeway)
		invalid("the token's iat is in the future");
	if (o->require_sub)
	{
		JsonbValue *v = JwtJsonbMember(&claims->root, "sub");

		if (v == NULL || v->type != jbvString || v->val.string.len == 0)
			invalid("the token has no sub claim");
	}
	if (o->require_jti)
	{
		JsonbValue *v = JwtJsonbMember(&claims->root, "jti");

		if (v == NULL || v->type != jbvString || v->val.string.len == 0)
			invalid("the token has no jti claim");
	}
	if (o->iss != NULL && !string_claim_is(claims, "iss", o->iss))
		invalid("the token's issuer (iss) is not the expected one");
	if (o->aud != NULL)
	{
		JsonbValue *v = JwtJsonbMember(&claims->root, "aud");
		bool		ok = false;

		if (v != NULL && v->type == jbvString)
			ok = string_claim_is(claims, "aud", o->aud);
		else if (v != NULL && v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data))
		{
			JsonbContainer *c = v->val.binary.data;
			int			n = JsonContainerSize(c);
			int			i;

			for (i = 0; i < n && !ok; i++)
			{
				JsonbValue *a = getIthJsonbValueFromContainer(c, i);

				ok = a != NULL && a->type == jbvString && (size_t) a->val.string.len == strlen(o->aud)
					&& memcmp(a->val.string.val, o->aud, a->val.string.len) == 0;
			}
		}
		if (!ok)
			invalid("the token's audience (aud) does not include the expected one");
	}
}

/*
 * auth.jwt_verify(token text, keys jsonb, options jsonb DEFAULT NULL) RETURNS jsonb
 *
 * Returns the verified claims. options: {"iss": text, "aud": text,
 * "algs": [..], "leeway": seconds, "now": NumericDate (tests),
 * "require": ["exp", ...] (default ["exp"])}.
 */
Datum
pgcloud_auth_jwt_verify(PG_FUNCTION_ARGS)
{
	text	   *t;
	Jsonb	   *keys;
	VerifyOptions o;
	DecodedToken *tok = palloc0(sizeof(DecodedToken));
	JwtAlg		alg;

	if (PG_ARGISNULL(0))
		invalid("the token is missing");
	if (PG_ARGISNULL(1))
		PgcloudRaise("invalid_jwks", "no keys were given", NULL, NULL);
	t = token_arg(fcinfo, 0);
	keys = PG_GETARG_JSONB_P(1);
	parse_options(PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2), &o);

	decode_token(t, tok);
	alg = header_alg(tok, &o);
	verify_signature(tok, alg, keys, VARDATA_ANY(t), tok->parts.signing_input_len);
	check_claims(tok->claims, &o);
	PG_RETURN_JSONB_P(tok->claims);
}

/*
 * auth.jwt_decode(token text) RETURNS jsonb — {header, claims} of a
 * structurally valid token, NOT verified (to pick the issuer's keys).
 */
Datum
pgcloud_auth_jwt_decode(PG_FUNCTION_ARGS)
{
	DecodedToken *tok = palloc0(sizeof(DecodedToken));
	StringInfoData buf;

	decode_token(token_arg(fcinfo, 0), tok);
	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"header\":");
	JwtJsonbToCompact(&buf, tok->header);
	appendStringInfoString(&buf, ",\"claims\":");
	JwtJsonbToCompact(&buf, tok->claims);
	appendStringInfoChar(&buf, '}');
	PG_RETURN_JSONB_P(DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data))));
}

static char *
b64url_part(const char *s, size_t len)
{
	size_t		cap = pgcloud_b64_encoded_len(len, false) + 1;
	char	   *out = palloc(cap);

	pgcloud_b64_encode((const unsigned char *) s, len, out, cap, PGCLOUD_B64_URL, false);
	return out;
}

char *
JwtSignWith(Jsonb *claims, Jsonb *extra_header, JwtAlg alg, EVP_PKEY *pkey,
			const unsigned char *secret, size_t secret_len, const char *kid)
{
	StringInfoData hdr;
	StringInfoData body;
	StringInfoData tokbuf;
	Jsonb	   *header;
	JsonbValue *v;
	unsigned char sig[JWT_MAX_SIGNATURE_LEN];
	size_t		sig_len;
	char	   *sigb64;

	if (!JB_ROOT_IS_OBJECT(claims))
		PgcloudRaise("invalid_argument", "claims must be a JSON object", NULL, NULL);

	initStringInfo(&hdr);
	appendStringInfo(&hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\"", jwt_alg_name(alg));
	if (kid != NULL)
	{
		appendStringInfoString(&hdr, ",\"kid\":");
		escape_json(&hdr, kid);
	}
	appendStringInfoChar(&hdr, '}');
	header = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(hdr.data)));
	if (extra_header != NULL)
	{
		if (!JB_ROOT_IS_OBJECT(extra_header))
			PgcloudRaise("invalid_argument", "header must be a JSON object", NULL, NULL);
		header = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(header),
													JsonbPGetDatum(extra_header)));
		v = JwtJsonbMember(&header->root, "alg");
		if (v == NULL || v->type != jbvString || jwt_alg_from_name(v->val.string.val, v->val.string.len) != alg)
			PgcloudRaise("invalid_argument",
						 psprintf("the header's alg must stay %s, the key's algorithm", jwt_alg_name(alg)),
						 NULL, NULL);
	}
	resetStringInfo(&hdr);
	JwtJsonbToCompact(&hdr, header);
	initStringInfo(&body);
	JwtJsonbToCompact(&body, claims);
	if (hdr.len > JWT_MAX_HEADER_LEN || body.len > JWT_MAX_PAYLOAD_LEN)
		PgcloudRaise("invalid_argument",
					 psprintf("the header must stay under %d bytes and the claims under %d bytes",
							  JWT_MAX_HEADER_LEN, JWT_MAX_PAYLOAD_LEN), NULL, NULL);

	initStringInfo(&tokbuf);
	appendStringInfoString(&tokbuf, b64url_part(hdr.data, hdr.len));
	appendStringInfoChar(&tokbuf, '.');
	appendStringInfoString(&tokbuf, b64url_part(body.data, body.len));
	sig_len = JwsSign(alg, pkey, secret, secret_len, (const unsigned char *) tokbuf.data, tokbuf.len, sig);
	if (sig_len == 0)
		elog(ERROR, "signing with %s failed", jwt_alg_name(alg));
	sigb64 = b64url_part((const char *) sig, sig_len);
	appendStringInfoChar(&tokbuf, '.');
	appendStringInfoString(&tokbuf, sigb64);
	return tokbuf.data;
}

/*
 * auth.jwt_sign(claims jsonb, jwk jsonb, header jsonb DEFAULT NULL) RETURNS text
 *
 * Signs claims with a private JWK (oct -> HS256, RSA -> RS256, EC P-256 ->
 * ES256, OKP Ed25519 -> EdDSA). The header gets alg, typ "JWT" and the JWK's
 * kid; extra header members may be added but alg cannot be changed.
 */
Datum
pgcloud_auth_jwt_sign(PG_FUNCTION_ARGS)
{
	Jsonb	   *claims = PG_GETARG_JSONB_P(0);
	Jsonb	   *jwk = PG_GETARG_JSONB_P(1);
	Jsonb	   *extra = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	JwkMembers	m;
	JwkStr		kid;
	JwkDecoded *k = palloc(sizeof(JwkDecoded));
	JwtErr		err;
	EVP_PKEY   *pkey = NULL;
	char	   *kidstr = NULL;
	char	   *volatile token = NULL;

	if (!JB_ROOT_IS_OBJECT(jwk))
		PgcloudRaise("invalid_jwks", "the signing key must be one JWK (a JSON object)", NULL, NULL);
	JwkMembersFromJsonb(&jwk->root, &m, &kid);
	err = jwk_decode(&m, k);
	if (err != JWT_OK)
		PgcloudRaise("invalid_jwks", psprintf("the signing key is not valid: %s", jwt_err_message(err)), NULL, NULL);
	if (!k->is_private)
		PgcloudRaise("invalid_jwks", "the signing key has no private part", NULL, NULL);
	if (kid.ptr != NULL)
	{
		if (kid.len == 0 || kid.len > JWT_MAX_KID_LEN)
			PgcloudRaise("invalid_jwks", "the signing key's kid is empty or too long", NULL, NULL);
		kidstr = pnstrdup(kid.ptr, kid.len);
	}
	if (k->kty != JWK_KTY_OCT)
	{
		bool		cached;
		const char *why;

		pkey = JwkToPkey(k, true, &cached, &why);
		if (pkey == NULL)
			PgcloudRaise("invalid_jwks", psprintf("the signing key is not valid: %s", why), NULL, NULL);
	}
	PG_TRY();
	{
		token = JwtSignWith(claims, extra, k->alg, pkey, k->k, k->k_len, kidstr);
	}
	PG_FINALLY();
	{
		EVP_PKEY_free(pkey);
		explicit_bzero(k, sizeof(JwkDecoded));
	}
	PG_END_TRY();
	PG_RETURN_TEXT_P(cstring_to_text(token));
}
