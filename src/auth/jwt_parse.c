/*
 * jwt_parse.c — the untrusted-bytes layer of JWT and JWK handling (see
 * jwt_parse.h). Plain C99 without PostgreSQL or OpenSSL headers, written in
 * PostgreSQL style (declarations first) so it builds under PGXS's
 * -Wdeclaration-after-statement -Werror and standalone for libFuzzer.
 */
#include "jwt_parse.h"

#include "base64.h"

#include <string.h>

static const char *const err_messages[JWT_ERR__COUNT] = {
	[JWT_OK] = "ok",
	[JWT_ERR_EMPTY] = "the token is empty",
	[JWT_ERR_TOKEN_TOO_LARGE] = "the token is too large",
	[JWT_ERR_NOT_THREE_PARTS] = "the token is not three base64url parts separated by dots",
	[JWT_ERR_EMPTY_PART] = "a part of the token is empty",
	[JWT_ERR_PART_TOO_LARGE] = "a part of the token is too large",
	[JWT_ERR_BASE64URL] = "a part of the token is not valid base64url",
	[JWT_ERR_UTF8] = "a part of the token is not valid UTF-8 text",
	[JWT_ERR_JSON] = "a part of the token is not valid JSON",
	[JWT_ERR_JSON_NOT_OBJECT] = "a part of the token is not a JSON object",
	[JWT_ERR_JSON_DEPTH] = "a part of the token nests JSON too deeply",
	[JWT_ERR_JSON_NUMBER] = "a part of the token has a number that is too long",
	[JWT_ERR_JSON_ESCAPE] = "a part of the token has a forbidden unicode escape",
	[JWK_ERR_KTY] = "the key type (kty) is not RSA, EC, OKP or oct",
	[JWK_ERR_CRV] = "the curve (crv) is not P-256 (EC) or Ed25519 (OKP)",
	[JWK_ERR_ALG] = "the key's alg does not match its key type",
	[JWK_ERR_USE] = "the key's use is not \"sig\"",
	[JWK_ERR_MEMBER_MISSING] = "a required key member is missing",
	[JWK_ERR_MEMBER_SIZE] = "a key member has the wrong size or is not valid base64url",
	[JWK_ERR_RSA_TOO_SMALL] = "the RSA modulus is shorter than 2048 bits",
	[JWK_ERR_PRIVATE_INCOMPLETE] = "the private RSA key lacks some of d, p, q, dp, dq, qi",
};

const char *
jwt_err_message(JwtErr err)
{
	if ((int) err < 0 || err >= JWT_ERR__COUNT || err_messages[err] == NULL)
		return "the token is not valid";
	return err_messages[err];
}

/* ---- compact serialization ------------------------------------------ */

JwtErr
jwt_split(const char *token, size_t len, JwtParts *parts)
{
	size_t		dots[2];
	int			ndots = 0;
	size_t		i;

	memset(parts, 0, sizeof(*parts));
	if (token == NULL || len == 0)
		return JWT_ERR_EMPTY;
	if (len > JWT_MAX_TOKEN_LEN)
		return JWT_ERR_TOKEN_TOO_LARGE;
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) token[i];

		if (c == '.')
		{
			if (ndots == 2)
				return JWT_ERR_NOT_THREE_PARTS;
			dots[ndots++] = i;
		}
		else if (!pgcloud_b64_char((unsigned char) c, PGCLOUD_B64_URL))
			return JWT_ERR_BASE64URL;
	}
	if (ndots != 2)
		return JWT_ERR_NOT_THREE_PARTS;
	parts->header = token;
	parts->header_len = dots[0];
	parts->payload = token + dots[0] + 1;
	parts->payload_len = dots[1] - dots[0] - 1;
	parts->signature = token + dots[1] + 1;
	parts->signature_len = len - dots[1] - 1;
	parts->signing_input_len = dots[1];
	if (parts->header_len == 0 || parts->payload_len == 0 || parts->signature_len == 0)
		return JWT_ERR_EMPTY_PART;
	if (pgcloud_b64_decoded_max(parts->header_len) > JWT_MAX_HEADER_LEN
		|| pgcloud_b64_decoded_max(parts->payload_len) > JWT_MAX_PAYLOAD_LEN
		|| pgcloud_b64_decoded_max(parts->signature_len) > JWT_MAX_SIGNATURE_LEN)
		return JWT_ERR_PART_TOO_LARGE;
	if (parts->header_len % 4 == 1 || parts->payload_len % 4 == 1 || parts->signature_len % 4 == 1)
		return JWT_ERR_BASE64URL;
	return JWT_OK;
}

/* ---- JSON checking ---------------------------------------------------- */

/*
 * Length of the UTF-8 sequence at s[0..avail) if it is well-formed (RFC 3629:
 * no overlongs, no surrogates, at most U+10FFFF), else 0.
 */
static size_t
utf8_seq_len(const unsigned char *s, size_t avail)
{
	unsigned char c = s[0];

	if (c < 0x80)
		return c == 0 ? 0 : 1;
	if (c >= 0xC2 && c <= 0xDF)
		return (avail >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
	if (c >= 0xE0 && c <= 0xEF)
	{
		if (avail < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
			return 0;
		if (c == 0xE0 && s[1] < 0xA0)
			return 0;			/* overlong */
		if (c == 0xED && s[1] >= 0xA0)
			return 0;			/* surrogate */
		return 3;
	}
	if (c >= 0xF0 && c <= 0xF4)
	{
		if (avail < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
			return 0;
		if (c == 0xF0 && s[1] < 0x90)
			return 0;			/* overlong */
		if (c == 0xF4 && s[1] >= 0x90)
			return 0;			/* above U+10FFFF */
		return 4;
	}
	return 0;
}

static int
hex4(const unsigned char *s, unsigned int *out)
{
	unsigned int v = 0;
	int			i;

	for (i = 0; i < 4; i++)
	{
		unsigned char c = s[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned int) (c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned int) (c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned int) (c - 'A' + 10);
		else
			return 0;
	}
	*out = v;
	return 1;
}

/* Scans a string starting after its opening quote; returns the index after the closing quote, or 0. */
static size_t
scan_string(const unsigned char *s, size_t len, size_t i, JwtErr *err)
{
	while (i < len)
	{
		unsigned char c = s[i];

		if (c == '"')
			return i + 1;
		if (c < 0x20)
		{
			*err = c == 0 ? JWT_ERR_UTF8 : JWT_ERR_JSON;
			return 0;
		}
		if (c == '\\')
		{
			if (i + 1 >= len)
				break;
			c = s[i + 1];
			if (c == 'u')
			{
				unsigned int cp;

				if (i + 6 > len || !hex4(s + i + 2, &cp))
					break;
				if (cp == 0)
				{
					*err = JWT_ERR_JSON_ESCAPE;
					return 0;
				}
				if (cp >= 0xDC00 && cp <= 0xDFFF)
				{
					*err = JWT_ERR_JSON_ESCAPE;	/* lone low surrogate */
					return 0;
				}
				if (cp >= 0xD800 && cp <= 0xDBFF)
				{
					unsigned int lo;

					if (i + 12 > len || s[i + 6] != '\\' || s[i + 7] != 'u'
						|| !hex4(s + i + 8, &lo) || lo < 0xDC00 || lo > 0xDFFF)
					{
						*err = JWT_ERR_JSON_ESCAPE;
						return 0;
					}
					i += 12;
				}
				else
					i += 6;
				continue;
			}
			if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't')
			{
				i += 2;
				continue;
			}
			break;
		}
		if (c < 0x80)
			i++;
		else
		{
			size_t		n = utf8_seq_len(s + i, len - i);

			if (n == 0)
			{
				*err = JWT_ERR_UTF8;
				return 0;
			}
			i += n;
		}
	}
	*err = JWT_ERR_JSON;
	return 0;
}

/* Scans a number starting at s[i]; returns the index after it, or 0. */
static size_t
scan_number(const unsigned char *s, size_t len, size_t i, JwtErr *err)
{
	size_t		start = i;
	size_t		exp_digits = 0;

	*err = JWT_ERR_JSON;
	if (i < len && s[i] == '-')
		i++;
	if (i >= len)
		return 0;
	if (s[i] == '0')
		i++;
	else if (s[i] >= '1' && s[i] <= '9')
	{
		while (i < len && s[i] >= '0' && s[i] <= '9')
			i++;
	}
	else
		return 0;
	if (i < len && s[i] == '.')
	{
		i++;
		if (i >= len || s[i] < '0' || s[i] > '9')
			return 0;
		while (i < len && s[i] >= '0' && s[i] <= '9')
			i++;
	}
	if (i < len && (s[i] == 'e' || s[i] == 'E'))
	{
		i++;
		if (i < len && (s[i] == '+' || s[i] == '-'))
			i++;
		if (i >= len || s[i] < '0' || s[i] > '9')
			return 0;
		while (i < len && s[i] >= '0' && s[i] <= '9')
		{
			i++;
			exp_digits++;
		}
	}
	if (i - start > JWT_MAX_NUMBER_LEN || exp_digits > JWT_MAX_EXPONENT_DIGITS)
	{
		*err = JWT_ERR_JSON_NUMBER;
		return 0;
	}
	*err = JWT_OK;
	return i;
}

static int
is_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * A pushdown automaton with an explicit stack: each container remembers
 * whether it is an object or an array; "expect" says what may come next.
 */
enum expect
{
	EXP_VALUE,					/* a value (top level, after ':' or ',' in an array) */
	EXP_VALUE_OR_CLOSE,			/* after '[' */
	EXP_KEY,					/* after ',' in an object */
	EXP_KEY_OR_CLOSE,			/* after '{' */
	EXP_COLON,
	EXP_COMMA_OR_CLOSE,
	EXP_END						/* the top-level value is complete */
};

JwtErr
jwt_json_check(const unsigned char *s, size_t len, int require_object)
{
	char		stack[JWT_MAX_JSON_DEPTH];
	int			depth = 0;
	enum expect ex = EXP_VALUE;
	size_t		i = 0;
	JwtErr		err = JWT_OK;
	int			first = 1;

	while (i < len)
	{
		unsigned char c = s[i];

		if (is_ws(c))
		{
			i++;
			continue;
		}
		if (first)
		{
			first = 0;
			if (require_object && c != '{')
				return JWT_ERR_JSON_NOT_OBJECT;
		}
		switch (ex)
		{
			case EXP_END:
				return c == 0 ? JWT_ERR_UTF8 : JWT_ERR_JSON;
			case EXP_COLON:
				if (c != ':')
					return JWT_ERR_JSON;
				i++;
				ex = EXP_VALUE;
				continue;
			case EXP_COMMA_OR_CLOSE:
				if (c == ',')
				{
					i++;
					ex = stack[depth - 1] == '{' ? EXP_KEY : EXP_VALUE;
					continue;
				}
				if ((c == '}' && stack[depth - 1] == '{') || (c == ']' && stack[depth - 1] == '['))
				{
					i++;
					depth--;
					ex = depth == 0 ? EXP_END : EXP_COMMA_OR_CLOSE;
					continue;
				}
				return JWT_ERR_JSON;
			case EXP_KEY_OR_CLOSE:
			case EXP_KEY:
				if (c == '}' && ex == EXP_KEY_OR_CLOSE)
				{
					i++;
					depth--;
					ex = depth == 0 ? EXP_END : EXP_COMMA_OR_CLOSE;
					continue;
				}
				if (c != '"')
					return JWT_ERR_JSON;
				i = scan_string(s, len, i + 1, &err);
				if (i == 0)
					return err;
				ex = EXP_COLON;
				continue;
			case EXP_VALUE_OR_CLOSE:
				if (c == ']')
				{
					i++;
					depth--;
					ex = depth == 0 ? EXP_END : EXP_COMMA_OR_CLOSE;
					continue;
				}
				/* FALLTHROUGH */
			case EXP_VALUE:
				if (c == '{' || c == '[')
				{
					if (depth >= JWT_MAX_JSON_DEPTH)
						return JWT_ERR_JSON_DEPTH;
					stack[depth++] = (char) c;
					i++;
					ex = c == '{' ? EXP_KEY_OR_CLOSE : EXP_VALUE_OR_CLOSE;
					continue;
				}
				if (c == '"')
				{
					i = scan_string(s, len, i + 1, &err);
					if (i == 0)
						return err;
				}
				else if (c == '-' || (c >= '0' && c <= '9'))
				{
					i = scan_number(s, len, i, &err);
					if (i == 0)
						return err;
				}
				else if (len - i >= 4 && memcmp(s + i, "true", 4) == 0)
					i += 4;
				else if (len - i >= 5 && memcmp(s + i, "false", 5) == 0)
					i += 5;
				else if (len - i >= 4 && memcmp(s + i, "null", 4) == 0)
					i += 4;
				else
					return c == 0 ? JWT_ERR_UTF8 : JWT_ERR_JSON;
				ex = depth == 0 ? EXP_END : EXP_COMMA_OR_CLOSE;
				continue;
		}
	}
	if (first)
		return require_object ? JWT_ERR_JSON_NOT_OBJECT : JWT_ERR_JSON;
	return ex == EXP_END ? JWT_OK : JWT_ERR_JSON;
}

JwtErr
jwt_decode_json_part(const char *b64, size_t b64len, unsigned char *out, size_t outcap,
					 size_t *outlen)
{
	JwtErr		err = jwt_b64url_decode(b64, b64len, out, outcap, outlen);

	if (err != JWT_OK)
		return err;
	return jwt_json_check(out, *outlen, 1);
}

JwtErr
jwt_b64url_decode(const char *in, size_t inlen, unsigned char *out, size_t outcap, size_t *outlen)
{
	long		n = pgcloud_b64_decode(in, inlen, out, outcap, PGCLOUD_B64_URL, false);

	*outlen = n < 0 ? 0 : (size_t) n;
	if (n == PGCLOUD_B64_TOO_LARGE)
		return JWT_ERR_PART_TOO_LARGE;
	return n < 0 ? JWT_ERR_BASE64URL : JWT_OK;
}

/* ---- algorithms and JWK members --------------------------------------- */

static int
str_is(const char *s, size_t len, const char *lit)
{
	size_t		n = strlen(lit);

	return s != NULL && len == n && memcmp(s, lit, n) == 0;
}

JwtAlg
jwt_alg_from_name(const char *s, size_t len)
{
	if (str_is(s, len, "HS256"))
		return JWT_ALG_HS256;
	if (str_is(s, len, "RS256"))
		return JWT_ALG_RS256;
	if (str_is(s, len, "ES256"))
		return JWT_ALG_ES256;
	if (str_is(s, len, "EdDSA"))
		return JWT_ALG_EDDSA;
	return JWT_ALG_NONE;
}

const char *
jwt_alg_name(JwtAlg alg)
{
	switch (alg)
	{
		case JWT_ALG_HS256:
			return "HS256";
		case JWT_ALG_RS256:
			return "RS256";
		case JWT_ALG_ES256:
			return "ES256";
		case JWT_ALG_EDDSA:
			return "EdDSA";
		default:
			return "none";
	}
}

JwkKty
jwt_alg_kty(JwtAlg alg)
{
	switch (alg)
	{
		case JWT_ALG_HS256:
			return JWK_KTY_OCT;
		case JWT_ALG_RS256:
			return JWK_KTY_RSA;
		case JWT_ALG_ES256:
			return JWK_KTY_EC;
		case JWT_ALG_EDDSA:
			return JWK_KTY_OKP;
		default:
			return JWK_KTY_NONE;
	}
}

/* Decodes a base64url member into out; exact size when exact, else 1..cap bytes. */
static JwtErr
member_decode(JwkStr m, unsigned char *out, size_t cap, size_t *outlen, size_t exact)
{
	JwtErr		err;

	if (m.ptr == NULL)
		return JWK_ERR_MEMBER_MISSING;
	if (m.len == 0 || pgcloud_b64_decoded_max(m.len) > cap)
		return JWK_ERR_MEMBER_SIZE;
	err = jwt_b64url_decode(m.ptr, m.len, out, cap, outlen);
	if (err != JWT_OK)
		return JWK_ERR_MEMBER_SIZE;
	if (exact != 0 && *outlen != exact)
		return JWK_ERR_MEMBER_SIZE;
	if (*outlen == 0)
		return JWK_ERR_MEMBER_SIZE;
	return JWT_OK;
}

JwtErr
jwk_decode(const JwkMembers *m, JwkDecoded *out)
{
	JwtErr		err;
	JwtAlg		want;

	memset(out, 0, sizeof(*out));
	if (m->kty.ptr == NULL)
		return JWK_ERR_MEMBER_MISSING;
	if (str_is(m->kty.ptr, m->kty.len, "RSA"))
		out->kty = JWK_KTY_RSA;
	else if (str_is(m->kty.ptr, m->kty.len, "EC"))
		out->kty = JWK_KTY_EC;
	else if (str_is(m->kty.ptr, m->kty.len, "OKP"))
		out->kty = JWK_KTY_OKP;
	else if (str_is(m->kty.ptr, m->kty.len, "oct"))
		out->kty = JWK_KTY_OCT;
	else
		return JWK_ERR_KTY;

	switch (out->kty)
	{
		case JWK_KTY_RSA:
			want = JWT_ALG_RS256;
			break;
		case JWK_KTY_EC:
			want = JWT_ALG_ES256;
			break;
		case JWK_KTY_OKP:
			want = JWT_ALG_EDDSA;
			break;
		default:
			want = JWT_ALG_HS256;
			break;
	}
	if (m->alg.ptr != NULL && jwt_alg_from_name(m->alg.ptr, m->alg.len) != want)
		return JWK_ERR_ALG;
	if (m->use.ptr != NULL && !str_is(m->use.ptr, m->use.len, "sig"))
		return JWK_ERR_USE;
	out->alg = want;

	switch (out->kty)
	{
		case JWK_KTY_RSA:
			{
				size_t		skip = 0;

				if ((err = member_decode(m->n, out->n, sizeof(out->n), &out->n_len, 0)) != JWT_OK)
					return err;
				if ((err = member_decode(m->e, out->e, sizeof(out->e), &out->e_len, 0)) != JWT_OK)
					return err;
				while (skip < out->n_len && out->n[skip] == 0)
					skip++;
				if (out->n_len - skip < JWK_MIN_RSA_BYTES || (out->n[out->n_len - 1] & 1) == 0)
					return out->n_len - skip < JWK_MIN_RSA_BYTES ? JWK_ERR_RSA_TOO_SMALL : JWK_ERR_MEMBER_SIZE;
				if (m->d.ptr != NULL)
				{
					out->is_private = 1;
					if (m->p.ptr == NULL || m->q.ptr == NULL || m->dp.ptr == NULL
						|| m->dq.ptr == NULL || m->qi.ptr == NULL)
						return JWK_ERR_PRIVATE_INCOMPLETE;
					if ((err = member_decode(m->d, out->d, sizeof(out->d), &out->d_len, 0)) != JWT_OK
						|| (err = member_decode(m->p, out->p, sizeof(out->p), &out->p_len, 0)) != JWT_OK
						|| (err = member_decode(m->q, out->q, sizeof(out->q), &out->q_len, 0)) != JWT_OK
						|| (err = member_decode(m->dp, out->dp, sizeof(out->dp), &out->dp_len, 0)) != JWT_OK
						|| (err = member_decode(m->dq, out->dq, sizeof(out->dq), &out->dq_len, 0)) != JWT_OK
						|| (err = member_decode(m->qi, out->qi, sizeof(out->qi), &out->qi_len, 0)) != JWT_OK)
						return err;
				}
				break;
			}
		case JWK_KTY_EC:
			if (m->crv.ptr == NULL)
				return JWK_ERR_MEMBER_MISSING;
			if (!str_is(m->crv.ptr, m->crv.len, "P-256"))
				return JWK_ERR_CRV;
			if ((err = member_decode(m->x, out->x, sizeof(out->x), &out->x_len, JWK_EC_P256_BYTES)) != JWT_OK
				|| (err = member_decode(m->y, out->y, sizeof(out->y), &out->y_len, JWK_EC_P256_BYTES)) != JWT_OK)
				return err;
			if (m->d.ptr != NULL)
			{
				out->is_private = 1;
				if ((err = member_decode(m->d, out->d, JWK_EC_P256_BYTES, &out->d_len, JWK_EC_P256_BYTES)) != JWT_OK)
					return err;
			}
			break;
		case JWK_KTY_OKP:
			if (m->crv.ptr == NULL)
				return JWK_ERR_MEMBER_MISSING;
			if (!str_is(m->crv.ptr, m->crv.len, "Ed25519"))
				return JWK_ERR_CRV;
			if ((err = member_decode(m->x, out->x, sizeof(out->x), &out->x_len, JWK_ED25519_BYTES)) != JWT_OK)
				return err;
			if (m->d.ptr != NULL)
			{
				out->is_private = 1;
				if ((err = member_decode(m->d, out->d, JWK_ED25519_BYTES, &out->d_len, JWK_ED25519_BYTES)) != JWT_OK)
					return err;
			}
			break;
		case JWK_KTY_OCT:
			if ((err = member_decode(m->k, out->k, sizeof(out->k), &out->k_len, 0)) != JWT_OK)
				return err;
			if (out->k_len < JWK_MIN_OCT_BYTES)
				return JWK_ERR_MEMBER_SIZE;
			out->is_private = 1;
			break;
		default:
			return JWK_ERR_KTY;
	}
	return JWT_OK;
}
