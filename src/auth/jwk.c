/*
 * jwk.c — JSON Web Keys (RFC 7517, RFC 7518 §6, RFC 8037) to and from
 * OpenSSL keys, RFC 7638 thumbprints, and the SQL functions that validate a
 * provider's JWKS and make keys for tests and tooling.
 *
 * Members are read from jsonb and checked by jwk_decode() (jwt_parse.c)
 * before OpenSSL sees them; OpenSSL then checks the key itself (point on the
 * curve, RSA parameters). Public keys are cached per backend by a SHA-256 of
 * their material, so verifying many tokens against one JWKS does not import
 * the same key again and again.
 */
#include "pgcloud.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>

#include "utils/json.h"

#include "base64.h"
#include "jwt.h"

PG_FUNCTION_INFO_V1(pgcloud_auth_jwk_thumbprint);
PG_FUNCTION_INFO_V1(pgcloud_auth_jwks_validate);
PG_FUNCTION_INFO_V1(pgcloud_auth_jwk_generate);

/* ---- members from jsonb ------------------------------------------------ */

/* The slot of a member name, or NULL for members we do not read. */
static JwkStr *
member_slot(JwkMembers *m, JwkStr *kid, const char *name, int len)
{
#define IS(lit) (len == (int) sizeof(lit) - 1 && memcmp(name, lit, len) == 0)
	if (IS("kty"))
		return &m->kty;
	if (IS("crv"))
		return &m->crv;
	if (IS("alg"))
		return &m->alg;
	if (IS("use"))
		return &m->use;
	if (IS("kid"))
		return kid;
	if (IS("n"))
		return &m->n;
	if (IS("e"))
		return &m->e;
	if (IS("x"))
		return &m->x;
	if (IS("y"))
		return &m->y;
	if (IS("k"))
		return &m->k;
	if (IS("d"))
		return &m->d;
	if (IS("p"))
		return &m->p;
	if (IS("q"))
		return &m->q;
	if (IS("dp"))
		return &m->dp;
	if (IS("dq"))
		return &m->dq;
	if (IS("qi"))
		return &m->qi;
#undef IS
	return NULL;
}

/* One pass over the JWK object; a member that is not a string reads as "". */
void
JwkMembersFromJsonb(JsonbContainer *jwk, JwkMembers *m, JwkStr *kid)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	JwkStr		ignored_kid;

	memset(m, 0, sizeof(*m));
	if (kid == NULL)
		kid = &ignored_kid;
	kid->ptr = NULL;
	kid->len = 0;
	if (!JsonContainerIsObject(jwk))
		return;
	it = JsonbIteratorInit(jwk);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		JwkStr	   *slot;

		if (tok != WJB_KEY)
			continue;
		slot = member_slot(m, kid, v.val.string.val, v.val.string.len);
		tok = JsonbIteratorNext(&it, &v, true);
		if (slot == NULL || tok != WJB_VALUE)
			continue;
		if (v.type == jbvString)
		{
			slot->ptr = v.val.string.val;
			slot->len = v.val.string.len;
		}
		else
		{
			slot->ptr = "";
			slot->len = 0;
		}
	}
}

/* ---- import ------------------------------------------------------------ */

#define PKEY_CACHE_SIZE 32

typedef struct PkeyCacheEntry
{
	unsigned char digest[32];
	EVP_PKEY   *pkey;
} PkeyCacheEntry;

static PkeyCacheEntry pkey_cache[PKEY_CACHE_SIZE];
static int	pkey_cache_next = 0;

static void
public_digest(const JwkDecoded *k, unsigned char *out)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char kty = (unsigned char) k->kty;
	unsigned int len = 0;

	if (ctx == NULL
		|| EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1
		|| EVP_DigestUpdate(ctx, &kty, 1) != 1
		|| EVP_DigestUpdate(ctx, k->n, k->n_len) != 1
		|| EVP_DigestUpdate(ctx, "|", 1) != 1
		|| EVP_DigestUpdate(ctx, k->e, k->e_len) != 1
		|| EVP_DigestUpdate(ctx, "|", 1) != 1
		|| EVP_DigestUpdate(ctx, k->x, k->x_len) != 1
		|| EVP_DigestUpdate(ctx, "|", 1) != 1
		|| EVP_DigestUpdate(ctx, k->y, k->y_len) != 1
		|| EVP_DigestFinal_ex(ctx, out, &len) != 1)
	{
		EVP_MD_CTX_free(ctx);
		elog(ERROR, "SHA-256 failed");
	}
	EVP_MD_CTX_free(ctx);
}

static EVP_PKEY *
pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld, int selection)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY   *pkey = NULL;

	if (params == NULL || ctx == NULL
		|| EVP_PKEY_fromdata_init(ctx) != 1
		|| EVP_PKEY_fromdata(ctx, &pkey, selection, params) != 1)
		pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return pkey;
}

/* Checks the public part (and with private, the pair) with OpenSSL. */
static bool
pkey_check(EVP_PKEY *pkey, bool private)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	bool		ok;

	if (ctx == NULL)
		return false;
	ok = private ? EVP_PKEY_pairwise_check(ctx) == 1 : EVP_PKEY_public_check(ctx) == 1;
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

static EVP_PKEY *
import_rsa(const JwkDecoded *k, bool want_private)
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	BIGNUM	   *bn[8] = {0};
	const unsigned char *src[8] = {k->n, k->e, k->d, k->p, k->q, k->dp, k->dq, k->qi};
	size_t		len[8] = {k->n_len, k->e_len, k->d_len, k->p_len, k->q_len, k->dp_len, k->dq_len, k->qi_len};
	const char *names[8] = {OSSL_PKEY_PARAM_RSA_N, OSSL_PKEY_PARAM_RSA_E, OSSL_PKEY_PARAM_RSA_D,
		OSSL_PKEY_PARAM_RSA_FACTOR1, OSSL_PKEY_PARAM_RSA_FACTOR2, OSSL_PKEY_PARAM_RSA_EXPONENT1,
	OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
	int			count = want_private ? 8 : 2;
	bool		ok = bld != NULL;
	EVP_PKEY   *pkey = NULL;
	int			i;

	for (i = 0; ok && i < count; i++)
	{
		bn[i] = BN_bin2bn(src[i], (int) len[i], NULL);
		ok = bn[i] != NULL && OSSL_PARAM_BLD_push_BN(bld, names[i], bn[i]) == 1;
	}
	if (ok)
		pkey = pkey_fromdata("RSA", bld, want_private ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY);
	for (i = 0; i < 8; i++)
		BN_clear_free(bn[i]);
	OSSL_PARAM_BLD_free(bld);
	return pkey;
}

static EVP_PKEY *
import_ec(const JwkDecoded *k, bool want_private)
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	unsigned char point[1 + 2 * JWK_EC_P256_BYTES];
	BIGNUM	   *d = NULL;
	bool		ok;
	EVP_PKEY   *pkey = NULL;

	point[0] = 0x04;
	memcpy(point + 1, k->x, JWK_EC_P256_BYTES);
	memcpy(point + 1 + JWK_EC_P256_BYTES, k->y, JWK_EC_P256_BYTES);
	ok = bld != NULL
		&& OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "P-256", 0) == 1
		&& OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)) == 1;
	if (ok && want_private)
		ok = (d = BN_bin2bn(k->d, (int) k->d_len, NULL)) != NULL
			&& OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, d) == 1;
	if (ok)
		pkey = pkey_fromdata("EC", bld, want_private ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY);
	BN_clear_free(d);
	OSSL_PARAM_BLD_free(bld);
	return pkey;
}

static EVP_PKEY *
import_ed25519(const JwkDecoded *k, bool want_private)
{
	EVP_PKEY   *pkey;
	unsigned char pub[JWK_ED25519_BYTES];
	size_t		pub_len = sizeof(pub);

	if (!want_private)
		return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, k->x, k->x_len);
	pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, k->d, k->d_len);
	if (pkey == NULL)
		return NULL;
	/* the public key must be the one derived from d */
	if (EVP_PKEY_get_raw_public_key(pkey, pub, &pub_len) != 1 || pub_len != k->x_len
		|| CRYPTO_memcmp(pub, k->x, pub_len) != 0)
	{
		EVP_PKEY_free(pkey);
		return NULL;
	}
	return pkey;
}

EVP_PKEY *
JwkToPkey(const JwkDecoded *k, bool want_private, bool *cached, const char **why)
{
	unsigned char digest[32];
	EVP_PKEY   *pkey = NULL;
	int			i;

	*cached = false;
	*why = NULL;
	if (k->kty == JWK_KTY_OCT)
	{
		*why = "a symmetric (oct) key has no public key";
		return NULL;
	}
	if (want_private && !k->is_private)
	{
		*why = "the key has no private part (d)";
		return NULL;
	}
	if (!want_private)
	{
		public_digest(k, digest);
		for (i = 0; i < PKEY_CACHE_SIZE; i++)
			if (pkey_cache[i].pkey != NULL && memcmp(pkey_cache[i].digest, digest, 32) == 0)
			{
				*cached = true;
				return pkey_cache[i].pkey;
			}
	}
	switch (k->kty)
	{
		case JWK_KTY_RSA:
			pkey = import_rsa(k, want_private);
			break;
		case JWK_KTY_EC:
			pkey = import_ec(k, want_private);
			break;
		case JWK_KTY_OKP:
			pkey = import_ed25519(k, want_private);
			break;
		default:
			break;
	}
	if (pkey != NULL && k->kty != JWK_KTY_OKP && !pkey_check(pkey, want_private))
	{
		EVP_PKEY_free(pkey);
		pkey = NULL;
	}
	ERR_clear_error();
	if (pkey == NULL)
	{
		*why = want_private ? "OpenSSL rejects the private key (its parts do not belong together)"
			: "OpenSSL rejects the public key (e.g. a point not on the curve)";
		return NULL;
	}
	if (!want_private)
	{
		PkeyCacheEntry *e = &pkey_cache[pkey_cache_next];

		EVP_PKEY_free(e->pkey);
		memcpy(e->digest, digest, 32);
		e->pkey = pkey;
		pkey_cache_next = (pkey_cache_next + 1) % PKEY_CACHE_SIZE;
		*cached = true;
	}
	return pkey;
}

/* ---- export -------------------------------------------------------------- */

JwtAlg
JwtAlgOfPkey(EVP_PKEY *pkey)
{
	switch (EVP_PKEY_get_base_id(pkey))
	{
		case EVP_PKEY_RSA:
			return JWT_ALG_RS256;
		case EVP_PKEY_EC:
			{
				char		group[64];
				size_t		len = 0;

				if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
												   sizeof(group), &len) == 1
					&& (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0))
					return JWT_ALG_ES256;
				return JWT_ALG_NONE;
			}
		case EVP_PKEY_ED25519:
			return JWT_ALG_EDDSA;
		default:
			return JWT_ALG_NONE;
	}
}

static char *
b64url(const unsigned char *p, size_t len)
{
	size_t		cap = pgcloud_b64_encoded_len(len, false) + 1;
	char	   *out = palloc(cap);

	pgcloud_b64_encode(p, len, out, cap, PGCLOUD_B64_URL, false);
	return out;
}

/* base64url of a BIGNUM parameter, left-padded to pad bytes when pad > 0. */
static char *
bn_param_b64(EVP_PKEY *pkey, const char *name, int pad)
{
	BIGNUM	   *bn = NULL;
	unsigned char buf[JWK_MAX_RSA_BYTES];
	int			len;
	char	   *out;

	if (EVP_PKEY_get_bn_param(pkey, name, &bn) != 1 || bn == NULL)
		elog(ERROR, "could not read key parameter %s", name);
	if (BN_num_bytes(bn) > (int) sizeof(buf) || (pad > 0 && BN_num_bytes(bn) > pad))
	{
		BN_clear_free(bn);
		elog(ERROR, "key parameter %s is too large", name);
	}
	len = pad > 0 ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
	BN_clear_free(bn);
	out = b64url(buf, (size_t) len);
	explicit_bzero(buf, sizeof(buf));
	return out;
}

typedef struct PubParts
{
	const char *kty;
	const char *crv;
	char	   *n;
	char	   *e;
	char	   *x;
	char	   *y;
} PubParts;

static PubParts
public_parts(EVP_PKEY *pkey)
{
	PubParts	pp = {0};

	switch (JwtAlgOfPkey(pkey))
	{
		case JWT_ALG_RS256:
			pp.kty = "RSA";
			pp.n = bn_param_b64(pkey, OSSL_PKEY_PARAM_RSA_N, 0);
			pp.e = bn_param_b64(pkey, OSSL_PKEY_PARAM_RSA_E, 0);
			break;
		case JWT_ALG_ES256:
			pp.kty = "EC";
			pp.crv = "P-256";
			pp.x = bn_param_b64(pkey, OSSL_PKEY_PARAM_EC_PUB_X, JWK_EC_P256_BYTES);
			pp.y = bn_param_b64(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, JWK_EC_P256_BYTES);
			break;
		case JWT_ALG_EDDSA:
			{
				unsigned char raw[JWK_ED25519_BYTES];
				size_t		len = sizeof(raw);

				if (EVP_PKEY_get_raw_public_key(pkey, raw, &len) != 1 || len != sizeof(raw))
					elog(ERROR, "could not read the Ed25519 public key");
				pp.kty = "OKP";
				pp.crv = "Ed25519";
				pp.x = b64url(raw, len);
				break;
			}
		default:
			elog(ERROR, "unsupported key type for a JWK");
	}
	return pp;
}

/* RFC 7638 §3.2: required members only, lexicographic order, no whitespace. */
static char *
thumbprint_input(const PubParts *pp)
{
	if (strcmp(pp->kty, "RSA") == 0)
		return psprintf("{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", pp->e, pp->n);
	if (strcmp(pp->kty, "EC") == 0)
		return psprintf("{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", pp->crv, pp->x, pp->y);
	return psprintf("{\"crv\":\"%s\",\"kty\":\"OKP\",\"x\":\"%s\"}", pp->crv, pp->x);
}

static char *
sha256_b64url(const char *s, size_t len)
{
	unsigned char md[32];
	unsigned int mdlen = 0;

	if (EVP_Digest(s, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
		elog(ERROR, "SHA-256 failed");
	return b64url(md, 32);
}

char *
JwkThumbprintFromPkey(EVP_PKEY *pkey)
{
	PubParts	pp = public_parts(pkey);
	char	   *in = thumbprint_input(&pp);

	return sha256_b64url(in, strlen(in));
}

static void
append_member(StringInfo buf, const char *name, const char *value)
{
	if (value == NULL)
		return;
	if (buf->len > 1)
		appendStringInfoChar(buf, ',');
	escape_json(buf, name);
	appendStringInfoChar(buf, ':');
	escape_json(buf, value);
}

static Jsonb *
jsonb_from_text(const char *s)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(s)));
}

Jsonb *
JwkPublicFromPkey(EVP_PKEY *pkey, const char *kid)
{
	PubParts	pp = public_parts(pkey);
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	append_member(&buf, "kty", pp.kty);
	append_member(&buf, "crv", pp.crv);
	append_member(&buf, "n", pp.n);
	append_member(&buf, "e", pp.e);
	append_member(&buf, "x", pp.x);
	append_member(&buf, "y", pp.y);
	append_member(&buf, "use", "sig");
	append_member(&buf, "alg", jwt_alg_name(JwtAlgOfPkey(pkey)));
	append_member(&buf, "kid", kid);
	appendStringInfoChar(&buf, '}');
	return jsonb_from_text(buf.data);
}

/* ---- SQL ------------------------------------------------------------------ */

static void
raise_jwk(const char *code, const char *what, JwtErr err)
{
	PgcloudRaise(code, psprintf("%s: %s", what, jwt_err_message(err)), NULL, NULL);
}

/* auth.jwk_thumbprint(jwk jsonb) RETURNS text — RFC 7638 */
Datum
pgcloud_auth_jwk_thumbprint(PG_FUNCTION_ARGS)
{
	Jsonb	   *jwk = PG_GETARG_JSONB_P(0);
	JwkMembers	m;
	JwkDecoded *k = palloc(sizeof(JwkDecoded));
	JwtErr		err;
	char	   *in;

	if (!JB_ROOT_IS_OBJECT(jwk))
		PgcloudRaise("invalid_jwks", "a JWK must be a JSON object", NULL, NULL);
	JwkMembersFromJsonb(&jwk->root, &m, NULL);
	err = jwk_decode(&m, k);
	if (err != JWT_OK)
		raise_jwk("invalid_jwks", "the JWK is not valid", err);
	if (k->kty == JWK_KTY_OCT)
		in = psprintf("{\"k\":\"%s\",\"kty\":\"oct\"}", b64url(k->k, k->k_len));
	else
	{
		bool		cached;
		const char *why;
		EVP_PKEY   *pkey = JwkToPkey(k, false, &cached, &why);

		PubParts	pp;

		if (pkey == NULL)
			PgcloudRaise("invalid_jwks", psprintf("the JWK is not valid: %s", why), NULL, NULL);
		pp = public_parts(pkey);
		in = thumbprint_input(&pp);
	}
	explicit_bzero(k, sizeof(JwkDecoded));
	PG_RETURN_TEXT_P(cstring_to_text(sha256_b64url(in, strlen(in))));
}

/*
 * auth.jwks_validate(jwks jsonb) RETURNS jsonb — a provider's JWKS checked
 * and reduced to its public signing keys. Keys marked for encryption or for
 * an algorithm we do not verify are dropped; private or symmetric material,
 * a broken key, duplicate kids, too many keys or no usable key at all are
 * errors (invalid_jwks).
 */
Datum
pgcloud_auth_jwks_validate(PG_FUNCTION_ARGS)
{
	Jsonb	   *jwks = PG_GETARG_JSONB_P(0);
	JsonbValue *keys;
	JsonbContainer *arr;
	int			n;
	int			i;
	int			kept = 0;
	StringInfoData out;
	char	  **kids;
	JwkDecoded *k = palloc(sizeof(JwkDecoded));

	if (!JB_ROOT_IS_OBJECT(jwks))
		PgcloudRaise("invalid_jwks", "a JWKS must be a JSON object with a \"keys\" array", NULL, NULL);
	keys = JwtJsonbMember(&jwks->root, "keys");
	if (keys == NULL || keys->type != jbvBinary || !JsonContainerIsArray(keys->val.binary.data))
		PgcloudRaise("invalid_jwks", "a JWKS must be a JSON object with a \"keys\" array", NULL, NULL);
	arr = keys->val.binary.data;
	n = JsonContainerSize(arr);
	if (n > JWT_MAX_KEYS)
		PgcloudRaise("invalid_jwks", psprintf("a JWKS may hold at most %d keys", JWT_MAX_KEYS), NULL, NULL);
	kids = palloc0(sizeof(char *) * (n + 1));

	initStringInfo(&out);
	appendStringInfoString(&out, "{\"keys\":[");
	for (i = 0; i < n; i++)
	{
		JsonbValue *v = getIthJsonbValueFromContainer(arr, i);
		JwkMembers	m;
		JwkStr		kid;
		JwtErr		err;
		EVP_PKEY   *pkey;
		bool		cached;
		const char *why;
		char	   *kidstr = NULL;
		Jsonb	   *pub;
		int			j;

		if (v == NULL || v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
			PgcloudRaise("invalid_jwks", psprintf("key %d is not a JSON object", i), NULL, NULL);
		JwkMembersFromJsonb(v->val.binary.data, &m, &kid);
		if (m.use.ptr != NULL && m.use.len == 3 && memcmp(m.use.ptr, "enc", 3) == 0)
			continue;			/* an encryption key: not ours to use */
		if (m.alg.ptr != NULL && jwt_alg_from_name(m.alg.ptr, m.alg.len) == JWT_ALG_NONE)
			continue;			/* an algorithm we do not verify (RS384, PS256, ...) */
		if (m.k.ptr != NULL || (m.kty.ptr != NULL && m.kty.len == 3 && memcmp(m.kty.ptr, "oct", 3) == 0))
			PgcloudRaise("invalid_jwks",
						 psprintf("key %d is a symmetric (oct) key; only RSA, EC P-256 and Ed25519 public keys are accepted", i),
						 NULL, NULL);
		if (m.d.ptr != NULL)
			PgcloudRaise("invalid_jwks",
						 psprintf("key %d contains private key material (d); publish only public keys", i),
						 "Remove the private members and send the JWKS again.", NULL);
		err = jwk_decode(&m, k);
		if (err != JWT_OK)
			raise_jwk("invalid_jwks", psprintf("key %d is not valid", i), err);
		if (kid.ptr != NULL)
		{
			if (kid.len == 0 || kid.len > JWT_MAX_KID_LEN)
				PgcloudRaise("invalid_jwks", psprintf("key %d has an empty, non-string or overlong kid", i), NULL, NULL);
			kidstr = pnstrdup(kid.ptr, kid.len);
			for (j = 0; j < kept; j++)
				if (kids[j] != NULL && strcmp(kids[j], kidstr) == 0)
					PgcloudRaise("invalid_jwks", psprintf("key %d repeats the kid of another key", i), NULL, NULL);
		}
		pkey = JwkToPkey(k, false, &cached, &why);
		if (pkey == NULL)
			PgcloudRaise("invalid_jwks", psprintf("key %d is not valid: %s", i, why), NULL, NULL);
		pub = JwkPublicFromPkey(pkey, kidstr);
		if (kept > 0)
			appendStringInfoChar(&out, ',');
		JwtJsonbToCompact(&out, pub);
		kids[kept++] = kidstr;
	}
	appendStringInfoString(&out, "]}");
	if (kept == 0)
		PgcloudRaise("invalid_jwks", "the JWKS has no RSA, EC P-256 or Ed25519 signing key", NULL, NULL);
	PG_RETURN_JSONB_P(jsonb_from_text(out.data));
}

EVP_PKEY *
JwtGenerateKey(JwtAlg alg)
{
	EVP_PKEY   *pkey = NULL;

	switch (alg)
	{
		case JWT_ALG_ES256:
			pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
			break;
		case JWT_ALG_RS256:
			pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
			break;
		case JWT_ALG_EDDSA:
			pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
			break;
		default:
			break;
	}
	ERR_clear_error();
	if (pkey == NULL)
		elog(ERROR, "OpenSSL could not generate a %s key", jwt_alg_name(alg));
	return pkey;
}

/*
 * auth.jwk_generate(alg text) RETURNS jsonb — a new private JWK (with its
 * public members, alg, use and kid = thumbprint). For tests and tooling:
 * the platform's own keys never leave C unsealed.
 */
Datum
pgcloud_auth_jwk_generate(PG_FUNCTION_ARGS)
{
	char	   *algname = text_to_cstring(PG_GETARG_TEXT_PP(0));
	JwtAlg		alg = jwt_alg_from_name(algname, strlen(algname));
	StringInfoData buf;
	Jsonb	   *result;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	if (alg == JWT_ALG_HS256)
	{
		unsigned char k[32];
		char	   *kb;

		if (RAND_bytes(k, sizeof(k)) != 1)
			elog(ERROR, "could not generate random bytes");
		kb = b64url(k, sizeof(k));
		append_member(&buf, "kty", "oct");
		append_member(&buf, "k", kb);
		append_member(&buf, "alg", "HS256");
		append_member(&buf, "use", "sig");
		{
			char	   *in = psprintf("{\"k\":\"%s\",\"kty\":\"oct\"}", kb);

			append_member(&buf, "kid", sha256_b64url(in, strlen(in)));
		}
		explicit_bzero(k, sizeof(k));
	}
	else if (alg != JWT_ALG_NONE)
	{
		EVP_PKEY   *pkey = JwtGenerateKey(alg);
		PubParts	pp = public_parts(pkey);

		append_member(&buf, "kty", pp.kty);
		append_member(&buf, "crv", pp.crv);
		append_member(&buf, "n", pp.n);
		append_member(&buf, "e", pp.e);
		append_member(&buf, "x", pp.x);
		append_member(&buf, "y", pp.y);
		if (alg == JWT_ALG_RS256)
		{
			append_member(&buf, "d", bn_param_b64(pkey, OSSL_PKEY_PARAM_RSA_D, 0));
			append_member(&buf, "p", bn_param_b64(pkey, OSSL_PKEY_PARAM_RSA_FACTOR1, 0));
			append_member(&buf, "q", bn_param_b64(pkey, OSSL_PKEY_PARAM_RSA_FACTOR2, 0));
			append_member(&buf, "dp", bn_param_b64(pkey, OSSL_PKEY_PARAM_RSA_EXPONENT1, 0));
			append_member(&buf, "dq", bn_param_b64(pkey, OSSL_PKEY_PARAM_RSA_EXPONENT2, 0));
			append_member(&buf, "qi", bn_param_b64(pkey, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, 0));
		}
		else if (alg == JWT_ALG_ES256)
			append_member(&buf, "d", bn_param_b64(pkey, OSSL_PKEY_PARAM_PRIV_KEY, JWK_EC_P256_BYTES));
		else
		{
			unsigned char raw[JWK_ED25519_BYTES];
			size_t		len = sizeof(raw);

			if (EVP_PKEY_get_raw_private_key(pkey, raw, &len) != 1 || len != sizeof(raw))
			{
				EVP_PKEY_free(pkey);
				elog(ERROR, "could not read the Ed25519 private key");
			}
			append_member(&buf, "d", b64url(raw, len));
			explicit_bzero(raw, sizeof(raw));
		}
		append_member(&buf, "alg", jwt_alg_name(alg));
		append_member(&buf, "use", "sig");
		append_member(&buf, "kid", JwkThumbprintFromPkey(pkey));
		EVP_PKEY_free(pkey);
	}
	else
		PgcloudRaise("invalid_argument", "alg must be one of HS256, RS256, ES256, EdDSA", NULL, NULL);
	appendStringInfoChar(&buf, '}');
	result = jsonb_from_text(buf.data);
	explicit_bzero(buf.data, buf.len);
	PG_RETURN_JSONB_P(result);
}
