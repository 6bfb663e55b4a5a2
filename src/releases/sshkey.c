/*
 * sshkey.c — parsing SSH public keys (see sshkey.h).
 *
 * Plain C with OpenSSL 3, no PostgreSQL headers: compiled into the extension
 * and standalone into test/fuzz/fuzz_releases_sshkey.c. PostgreSQL style (declarations
 * first) so it builds under PGXS's -Wdeclaration-after-statement -Werror.
 *
 * Wire format (RFC 4253 section 6.6, RFC 5656 section 3.1, RFC 8709 section 4):
 *	ssh-ed25519			string "ssh-ed25519", string key (32 bytes)
 *	ecdsa-sha2-<curve>	string "ecdsa-sha2-<curve>", string <curve>, string Q
 *						(Q = 0x04 || X || Y, uncompressed, on the curve)
 *	ssh-rsa				string "ssh-rsa", mpint e, mpint n
 * A string is a uint32 length in network order and that many bytes; every
 * length is checked against what is left before it is used. An mpint must be
 * minimal (no needless leading zero byte) and positive here.
 */
#include "sshkey.h"

#include "base64.h"

#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

typedef struct KeyTypeInfo
{
	const char *name;
	const char *cert_name;
	SshKeyType	type;
	const char *curve;			/* SSH curve name, ECDSA only */
	const char *group;			/* OpenSSL group name, ECDSA only */
	int			bits;
	size_t		point_len;		/* uncompressed point, ECDSA only */
} KeyTypeInfo;

static const KeyTypeInfo key_types[] = {
	{"ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com", SSHKEY_ED25519, NULL, NULL, 256, 0},
	{"ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256-cert-v01@openssh.com", SSHKEY_ECDSA_P256,
	"nistp256", "prime256v1", 256, 1 + 2 * 32},
	{"ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384-cert-v01@openssh.com", SSHKEY_ECDSA_P384,
	"nistp384", "secp384r1", 384, 1 + 2 * 48},
	{"ecdsa-sha2-nistp521", "ecdsa-sha2-nistp521-cert-v01@openssh.com", SSHKEY_ECDSA_P521,
	"nistp521", "secp521r1", 521, 1 + 2 * 66},
	{"ssh-rsa", "ssh-rsa-cert-v01@openssh.com", SSHKEY_RSA, NULL, NULL, 0, 0},
};

/* Key types OpenSSH knows that we refuse (and use to recognise an options prefix). */
static const char *const refused_types[] = {
	"ssh-dss",
	"sk-ssh-ed25519@openssh.com",
	"sk-ecdsa-sha2-nistp256@openssh.com",
	"ssh-xmss@openssh.com",
	"ssh-ed448",
};

#define CERT_SUFFIX "-cert-v01@openssh.com"

static void
set_err(char *err, size_t errlen, const char *msg)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s", msg);
}

static const KeyTypeInfo *
find_type(const char *name, size_t len)
{
	size_t		i;

	for (i = 0; i < sizeof(key_types) / sizeof(key_types[0]); i++)
		if (strlen(key_types[i].name) == len && memcmp(key_types[i].name, name, len) == 0)
			return &key_types[i];
	return NULL;
}

static int
is_refused_type(const char *name, size_t len)
{
	size_t		i;
	size_t		slen = strlen(CERT_SUFFIX);

	for (i = 0; i < sizeof(refused_types) / sizeof(refused_types[0]); i++)
		if (strlen(refused_types[i]) == len && memcmp(refused_types[i], name, len) == 0)
			return 1;
	if (len > slen && memcmp(name + len - slen, CERT_SUFFIX, slen) == 0)
		return 1;
	if (len > 7 && memcmp(name, "x509v3-", 7) == 0)
		return 1;
	return 0;
}

/*
 * Why a type is refused, in words that do not contain the '@' of OpenSSH's
 * vendor names (the log scrubber would read "x@openssh.com" as an e-mail
 * address and redact it from the message).
 */
static void
unsupported_reason(const char *name, size_t len, char *err, size_t errlen)
{
	char		msg[SSHKEY_ERR_LEN];
	size_t		slen = strlen(CERT_SUFFIX);

	if (len > slen && memcmp(name + len - slen, CERT_SUFFIX, slen) == 0)
		snprintf(msg, sizeof(msg), "this is an OpenSSH certificate, not a public key; give the key itself");
	else if (len > 3 && memcmp(name, "sk-", 3) == 0)
		snprintf(msg, sizeof(msg), "security-key (FIDO) keys are not supported");
	else if (len > 7 && memcmp(name, "x509v3-", 7) == 0)
		snprintf(msg, sizeof(msg), "X.509 keys are not supported");
	else if (memchr(name, '@', len) != NULL)
		snprintf(msg, sizeof(msg), "this key type is not supported");
	else
		snprintf(msg, sizeof(msg), "%s key type \"%.*s\" is not supported",
				 is_refused_type(name, len) ? "the" : "the unknown", (int) len, name);
	set_err(err, errlen, msg);
}

static int
name_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		|| c == '@' || c == '.' || c == '_' || c == '-';
}

static int
name_valid_len(const char *s, size_t len, size_t max)
{
	size_t		i;

	if (len == 0 || len > max)
		return 0;
	for (i = 0; i < len; i++)
		if (!name_char((unsigned char) s[i]))
			return 0;
	return 1;
}

int
SshNameValid(const char *s, size_t max)
{
	if (s == NULL)
		return 0;
	return name_valid_len(s, strnlen(s, max + 1), max);
}

/* ---- wire reader -------------------------------------------------------- */

typedef struct Reader
{
	const unsigned char *p;
	size_t		len;
	size_t		off;
} Reader;

static int
rd_u32(Reader *r, uint32_t *v)
{
	if (r->len - r->off < 4)
		return -1;
	*v = ((uint32_t) r->p[r->off] << 24) | ((uint32_t) r->p[r->off + 1] << 16)
		| ((uint32_t) r->p[r->off + 2] << 8) | (uint32_t) r->p[r->off + 3];
	r->off += 4;
	return 0;
}

static int
rd_string(Reader *r, const unsigned char **s, size_t *slen)
{
	uint32_t	n;

	if (rd_u32(r, &n) != 0)
		return -1;
	if ((size_t) n > r->len - r->off)
		return -1;
	*s = r->p + r->off;
	*slen = n;
	r->off += n;
	return 0;
}

/*
 * An mpint that must be positive and minimal: returns its magnitude (no
 * leading zero). 0 on success, -1 truncated, -2 negative or zero, -3 not
 * minimal.
 */
static int
rd_mpint_positive(Reader *r, const unsigned char **mag, size_t *maglen)
{
	const unsigned char *s;
	size_t		n;

	if (rd_string(r, &s, &n) != 0)
		return -1;
	if (n == 0 || (s[0] & 0x80) != 0)
		return -2;
	if (s[0] == 0)
	{
		if (n == 1 || (s[1] & 0x80) == 0)
			return -3;
		s++;
		n--;
	}
	*mag = s;
	*maglen = n;
	return 0;
}

static int
bits_of(const unsigned char *mag, size_t len)
{
	int			top = 0;
	unsigned char c;

	if (len == 0)
		return 0;
	c = mag[0];
	while (c)
	{
		top++;
		c >>= 1;
	}
	return (int) ((len - 1) * 8) + top;
}

/* ---- OpenSSL validation ------------------------------------------------- */

static int
rsa_valid(const unsigned char *e, size_t elen, const unsigned char *n, size_t nlen)
{
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY   *pkey = NULL;
	BIGNUM	   *bn_n = NULL;
	BIGNUM	   *bn_e = NULL;
	int			ok = 0;

	bn_n = BN_bin2bn(n, (int) nlen, NULL);
	bn_e = BN_bin2bn(e, (int) elen, NULL);
	bld = OSSL_PARAM_BLD_new();
	if (bn_n == NULL || bn_e == NULL || bld == NULL)
		goto done;
	if (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n)
		|| !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e))
		goto done;
	params = OSSL_PARAM_BLD_to_param(bld);
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	if (params == NULL || ctx == NULL)
		goto done;
	if (EVP_PKEY_fromdata_init(ctx) != 1
		|| EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		goto done;
	ok = EVP_PKEY_get_bits(pkey) == bits_of(n, nlen);
done:
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn_n);
	BN_free(bn_e);
	return ok;
}

/* The point must decode on the named curve and pass OpenSSL's public key check. */
static int
ec_valid(const char *group, const unsigned char *q, size_t qlen)
{
	OSSL_PARAM	params[3];
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY_CTX *check = NULL;
	EVP_PKEY   *pkey = NULL;
	int			ok = 0;

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *) group, 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *) q, qlen);
	params[2] = OSSL_PARAM_construct_end();
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (ctx == NULL)
		goto done;
	if (EVP_PKEY_fromdata_init(ctx) != 1
		|| EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		goto done;
	check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (check == NULL)
		goto done;
	ok = EVP_PKEY_public_check(check) == 1;
done:
	EVP_PKEY_CTX_free(check);
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

static int
ed25519_valid(const unsigned char *k, size_t klen)
{
	EVP_PKEY   *pkey;

	if (klen != 32)
		return 0;
	pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, k, klen);
	if (pkey == NULL)
		return 0;
	EVP_PKEY_free(pkey);
	return 1;
}

/* ---- base64 and fingerprints -------------------------------------------- */

int
SshFingerprint(const unsigned char *blob, size_t len, char out[SSHKEY_FP_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char		b64[64];
	size_t		n;

	if (EVP_Digest(blob, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
		return -1;
	n = pgcloud_b64_encode(md, mdlen, b64, sizeof(b64), PGCLOUD_B64_STD, false);
	if (n != 43)
		return -1;
	memcpy(out, "SHA256:", 7);
	memcpy(out + 7, b64, n);
	out[7 + n] = '\0';
	return 0;
}

size_t
SshKeyFormat(const SshKey *key, const char *comment, char *out, size_t outcap)
{
	char		b64[SSHKEY_MAX_B64 + 1];
	int			n;

	if (key->blob_len > SSHKEY_MAX_BLOB)
		return 0;
	pgcloud_b64_encode(key->blob, key->blob_len, b64, sizeof(b64), PGCLOUD_B64_STD, true);
	if (comment != NULL && comment[0] != '\0')
		n = snprintf(out, outcap, "%s %s %s", key->type_name, b64, comment);
	else
		n = snprintf(out, outcap, "%s %s", key->type_name, b64);
	if (n < 0 || (size_t) n >= outcap)
		return 0;
	return (size_t) n;
}

/* ---- blob --------------------------------------------------------------- */

/* The key's fields must end the blob. */
static SshKeyStatus
trailing_bytes(char *err, size_t errlen)
{
	set_err(err, errlen, "the key blob has trailing bytes after the key");
	return SSHKEY_INVALID;
}

/* The fields of an ssh-ed25519 blob after its type name: a 32-byte point. */
static SshKeyStatus
parse_ed25519_fields(Reader *r, SshKey *key, char *err, size_t errlen)
{
	const unsigned char *k;
	size_t		klen;

	if (rd_string(r, &k, &klen) != 0)
	{
		set_err(err, errlen, "the key blob is truncated");
		return SSHKEY_INVALID;
	}
	if (klen != 32)
	{
		set_err(err, errlen, "an ssh-ed25519 key must be 32 bytes");
		return SSHKEY_INVALID;
	}
	if (r->off != r->len)
		return trailing_bytes(err, errlen);
	if (!ed25519_valid(k, klen))
	{
		set_err(err, errlen, "the ssh-ed25519 key is not valid");
		return SSHKEY_INVALID;
	}
	key->bits = 256;
	return SSHKEY_OK;
}

/* The fields of an ecdsa-sha2-* blob: the curve's name and an uncompressed point on it. */
static SshKeyStatus
parse_ecdsa_fields(Reader *r, const KeyTypeInfo *info, SshKey *key, char *err, size_t errlen)
{
	const unsigned char *curve;
	size_t		clen;
	const unsigned char *q;
	size_t		qlen;
	char		msg[SSHKEY_ERR_LEN];

	if (rd_string(r, &curve, &clen) != 0)
	{
		set_err(err, errlen, "the key blob is truncated");
		return SSHKEY_INVALID;
	}
	if (clen != strlen(info->curve) || memcmp(curve, info->curve, clen) != 0)
	{
		snprintf(msg, sizeof(msg), "the curve inside an %s key must be %s",
				 info->name, info->curve);
		set_err(err, errlen, msg);
		return SSHKEY_INVALID;
	}
	if (rd_string(r, &q, &qlen) != 0)
	{
		set_err(err, errlen, "the key blob is truncated");
		return SSHKEY_INVALID;
	}
	if (qlen != info->point_len || q[0] != 0x04)
	{
		snprintf(msg, sizeof(msg), "the %s point must be uncompressed (%zu bytes starting with 0x04)",
				 info->curve, info->point_len);
		set_err(err, errlen, msg);
		return SSHKEY_INVALID;
	}
	if (r->off != r->len)
		return trailing_bytes(err, errlen);
	if (!ec_valid(info->group, q, qlen))
	{
		snprintf(msg, sizeof(msg), "the point is not on the curve %s", info->curve);
		set_err(err, errlen, msg);
		return SSHKEY_INVALID;
	}
	key->bits = info->bits;
	return SSHKEY_OK;
}

/* The fields of an ssh-rsa blob: exponent and modulus, minimal positive mpints, within the size limits. */
static SshKeyStatus
parse_rsa_fields(Reader *r, SshKey *key, char *err, size_t errlen)
{
	const unsigned char *e;
	size_t		elen;
	const unsigned char *n;
	size_t		nlen;
	int			rc;
	int			bits;
	char		msg[SSHKEY_ERR_LEN];

	if ((rc = rd_mpint_positive(r, &e, &elen)) != 0
		|| (rc = rd_mpint_positive(r, &n, &nlen)) != 0)
	{
		set_err(err, errlen,
				rc == -1 ? "the key blob is truncated"
				: rc == -2 ? "an RSA number must be positive"
				: "an RSA number has a needless leading zero byte");
		return SSHKEY_INVALID;
	}
	if (r->off != r->len)
		return trailing_bytes(err, errlen);
	if (elen > 8 || (e[elen - 1] & 1) == 0 || (elen == 1 && e[0] < 3))
	{
		set_err(err, errlen, "the RSA public exponent must be odd, at least 3 and at most 64 bits");
		return SSHKEY_INVALID;
	}
	bits = bits_of(n, nlen);
	if ((n[nlen - 1] & 1) == 0)
	{
		set_err(err, errlen, "the RSA modulus must be odd");
		return SSHKEY_INVALID;
	}
	if (bits > SSHKEY_RSA_MAX_BITS)
	{
		snprintf(msg, sizeof(msg), "RSA keys of more than %d bits are not accepted", SSHKEY_RSA_MAX_BITS);
		set_err(err, errlen, msg);
		return SSHKEY_INVALID;
	}
	if (bits < SSHKEY_RSA_MIN_BITS)
	{
		snprintf(msg, sizeof(msg), "the RSA key has %d bits; at least %d are required",
				 bits, SSHKEY_RSA_MIN_BITS);
		set_err(err, errlen, msg);
		return SSHKEY_TOO_WEAK;
	}
	if (!rsa_valid(e, elen, n, nlen))
	{
		set_err(err, errlen, "the RSA key is not valid");
		return SSHKEY_INVALID;
	}
	key->bits = bits;
	return SSHKEY_OK;
}

/*
 * Reads the key type name that starts a blob of at most SSHKEY_MAX_BLOB
 * bytes; sets *info to the accepted type it names (expected_type, when not
 * NULL).
 */
static SshKeyStatus
parse_blob_type(Reader *r, const char *expected_type, const KeyTypeInfo **info, char *err, size_t errlen)
{
	const unsigned char *tname;
	size_t		tlen;
	char		msg[SSHKEY_ERR_LEN];

	if (r->len == 0)
	{
		set_err(err, errlen, "the key blob is empty");
		return SSHKEY_INVALID;
	}
	if (r->len > SSHKEY_MAX_BLOB)
	{
		set_err(err, errlen, "the key blob is too large");
		return SSHKEY_INVALID;
	}
	if (rd_string(r, &tname, &tlen) != 0)
	{
		set_err(err, errlen, "the key blob is truncated");
		return SSHKEY_INVALID;
	}
	if (!name_valid_len((const char *) tname, tlen, SSHKEY_MAX_TYPE_NAME))
	{
		set_err(err, errlen, "the key blob does not start with a key type name");
		return SSHKEY_INVALID;
	}
	if (expected_type != NULL
		&& (strlen(expected_type) != tlen || memcmp(expected_type, tname, tlen) != 0))
	{
		snprintf(msg, sizeof(msg), "the key type \"%s\" does not match the type \"%.*s\" inside the key",
				 expected_type, (int) tlen, (const char *) tname);
		set_err(err, errlen, msg);
		return SSHKEY_INVALID;
	}
	*info = find_type((const char *) tname, tlen);
	if (*info == NULL)
	{
		unsupported_reason((const char *) tname, tlen, err, errlen);
		return SSHKEY_UNSUPPORTED;
	}
	return SSHKEY_OK;
}

SshKeyStatus
SshKeyParseBlob(const unsigned char *blob, size_t len, const char *expected_type,
				SshKey *key, char *err, size_t errlen)
{
	Reader		r = {blob, len, 0};
	const KeyTypeInfo *info = NULL;
	SshKeyStatus st;

	memset(key, 0, offsetof(SshKey, blob));
	key->blob_len = 0;
	key->fingerprint[0] = '\0';
	key->comment[0] = '\0';

	st = parse_blob_type(&r, expected_type, &info, err, errlen);
	if (st != SSHKEY_OK)
		return st;
	key->type = info->type;
	key->type_name = info->name;
	key->cert_type_name = info->cert_name;
	key->fields_off = r.off;

	switch (info->type)
	{
		case SSHKEY_ED25519:
			st = parse_ed25519_fields(&r, key, err, errlen);
			break;
		case SSHKEY_ECDSA_P256:
		case SSHKEY_ECDSA_P384:
		case SSHKEY_ECDSA_P521:
			st = parse_ecdsa_fields(&r, info, key, err, errlen);
			break;
		case SSHKEY_RSA:
			st = parse_rsa_fields(&r, key, err, errlen);
			break;
		default:
			set_err(err, errlen, "the key type is not supported");
			return SSHKEY_UNSUPPORTED;
	}
	if (st != SSHKEY_OK)
		return st;

	memcpy(key->blob, blob, len);
	key->blob_len = len;
	if (SshFingerprint(key->blob, key->blob_len, key->fingerprint) != 0)
	{
		set_err(err, errlen, "the key could not be fingerprinted");
		return SSHKEY_INVALID;
	}
	return SSHKEY_OK;
}

/* ---- authorized_keys line ----------------------------------------------- */

static int
is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static int
known_type_token(const char *s, size_t len)
{
	return find_type(s, len) != NULL || is_refused_type(s, len);
}

/*
 * After an options field that starts at line[0] (quoted strings may hold
 * blanks, as in OpenSSH's authorized_keys), is the next token a key type?
 */
static int
options_then_type(const char *line, size_t len)
{
	size_t		i = 0;
	size_t		start;
	int			quoted = 0;

	for (; i < len; i++)
	{
		if (line[i] == '\\' && quoted && i + 1 < len)
			i++;
		else if (line[i] == '"')
			quoted = !quoted;
		else if (!quoted && is_blank(line[i]))
			break;
	}
	while (i < len && is_blank(line[i]))
		i++;
	start = i;
	while (i < len && !is_blank(line[i]))
		i++;
	return i > start && known_type_token(line + start, i - start);
}

SshKeyStatus
SshKeyParseLine(const char *line, size_t len, SshKey *key, char *err, size_t errlen)
{
	size_t		i;
	size_t		tstart,
				tlen,
				bstart,
				blen,
				cstart,
				clen;
	unsigned char blob[SSHKEY_MAX_BLOB];
	long		n;
	SshKeyStatus st;
	char		type_name[SSHKEY_MAX_TYPE_NAME + 1];
	char		msg[SSHKEY_ERR_LEN];

	memset(key, 0, offsetof(SshKey, blob));
	key->blob_len = 0;
	key->fingerprint[0] = '\0';
	key->comment[0] = '\0';

	/* trim blanks and line ends on both sides */
	while (len > 0 && (is_blank(line[0]) || line[0] == '\n' || line[0] == '\r'))
	{
		line++;
		len--;
	}
	while (len > 0 && (is_blank(line[len - 1]) || line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (len == 0)
	{
		set_err(err, errlen, "the key is empty");
		return SSHKEY_INVALID;
	}
	if (len > SSHKEY_MAX_LINE)
	{
		snprintf(msg, sizeof(msg), "the key is longer than %d bytes", SSHKEY_MAX_LINE);
		set_err(err, errlen, msg);
		return SSHKEY_INVALID;
	}
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) line[i];

		if (c == '\n' || c == '\r')
		{
			set_err(err, errlen, "give one key on a single line");
			return SSHKEY_INVALID;
		}
		if ((c < 0x20 && c != '\t') || c == 0x7f)
		{
			set_err(err, errlen, "the key contains control characters");
			return SSHKEY_INVALID;
		}
	}
	if (line[0] == '#')
	{
		set_err(err, errlen, "the line is a comment, not a key");
		return SSHKEY_INVALID;
	}

	/* type */
	tstart = 0;
	for (i = 0; i < len && !is_blank(line[i]); i++)
		;
	tlen = i;
	if (!name_valid_len(line + tstart, tlen, SSHKEY_MAX_TYPE_NAME))
	{
		if (options_then_type(line, len))
		{
			set_err(err, errlen, "authorized_keys options before the key type are not accepted");
			return SSHKEY_OPTIONS;
		}
		set_err(err, errlen, "the key does not start with a key type such as ssh-ed25519");
		return SSHKEY_INVALID;
	}
	memcpy(type_name, line + tstart, tlen);
	type_name[tlen] = '\0';
	if (find_type(type_name, tlen) == NULL)
	{
		if (!is_refused_type(type_name, tlen) && options_then_type(line, len))
		{
			set_err(err, errlen, "authorized_keys options before the key type are not accepted");
			return SSHKEY_OPTIONS;
		}
		unsupported_reason(type_name, tlen, err, errlen);
		return SSHKEY_UNSUPPORTED;
	}

	/* base64 blob */
	while (i < len && is_blank(line[i]))
		i++;
	bstart = i;
	while (i < len && !is_blank(line[i]))
		i++;
	blen = i - bstart;
	if (blen == 0)
	{
		set_err(err, errlen, "the key data after the key type is missing");
		return SSHKEY_INVALID;
	}
	if (blen > SSHKEY_MAX_B64)
	{
		set_err(err, errlen, "the key data is too long");
		return SSHKEY_INVALID;
	}

	/* comment: the rest, blanks around it trimmed */
	while (i < len && is_blank(line[i]))
		i++;
	cstart = i;
	clen = len - cstart;
	if (clen > SSHKEY_MAX_COMMENT)
	{
		snprintf(msg, sizeof(msg), "the key comment is longer than %d bytes", SSHKEY_MAX_COMMENT);
		set_err(err, errlen, msg);
		return SSHKEY_INVALID;
	}

	n = pgcloud_b64_decode(line + bstart, blen, blob, sizeof(blob), PGCLOUD_B64_STD, true);
	if (n < 0)
	{
		set_err(err, errlen, "the key data is not valid base64");
		return SSHKEY_INVALID;
	}
	st = SshKeyParseBlob(blob, (size_t) n, type_name, key, err, errlen);
	if (st != SSHKEY_OK)
		return st;
	memcpy(key->comment, line + cstart, clen);
	key->comment[clen] = '\0';
	return SSHKEY_OK;
}
