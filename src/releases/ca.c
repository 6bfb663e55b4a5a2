/*
 * ca.c — the platform SSH certificate authority (SQL face of sshcert.c).
 *
 *   releases.ca_generate()
 *     RETURNS (public_key text, fingerprint text, public_blob bytea, private_sealed bytea)
 *   releases.sign_certificate(public_key text, ca_private_sealed bytea, ca_public_blob bytea,
 *                             serial bigint, key_id text, principals text[],
 *                             valid_after timestamptz, valid_before timestamptz,
 *                             extensions text[], comment text) RETURNS text
 *
 * The CA is an Ed25519 key made by OpenSSL. Its 32-byte private seed leaves
 * this file only sealed with the platform master key (PgcloudSeal, context
 * "releases.ssh_ca"); it is unsealed for one signature and wiped at once.
 */
#include "pgcloud.h"

#include <openssl/evp.h>

#include "catalog/pg_type.h"
#include "seal.h"
#include "utils/array.h"

#include "base64.h"
#include "releases.h"

PG_FUNCTION_INFO_V1(pgcloud_releases_ca_generate);
PG_FUNCTION_INFO_V1(pgcloud_releases_sign_certificate);

static bytea *
bytes_to_bytea(const unsigned char *p, size_t len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), p, len);
	return b;
}

Datum
pgcloud_releases_ca_generate(PG_FUNCTION_ARGS)
{
	EVP_PKEY   *pkey = NULL;
	unsigned char seed[32];
	unsigned char pub[32];
	size_t		seed_len = sizeof(seed);
	size_t		pub_len = sizeof(pub);
	unsigned char blob[SSH_ED25519_BLOB_LEN];
	char		b64[SSH_ED25519_BLOB_LEN * 2];
	char		fp[SSHKEY_FP_LEN + 1];
	bytea	   *sealed;
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	int			ok;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "releases.ca_generate must return a record");
	desc = BlessTupleDesc(desc);

	pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	ok = pkey != NULL
		&& EVP_PKEY_get_raw_private_key(pkey, seed, &seed_len) == 1 && seed_len == 32
		&& EVP_PKEY_get_raw_public_key(pkey, pub, &pub_len) == 1 && pub_len == 32;
	EVP_PKEY_free(pkey);
	if (!ok)
	{
		explicit_bzero(seed, sizeof(seed));
		elog(ERROR, "could not generate an Ed25519 key");
	}
	sealed = PgcloudSeal(seed, sizeof(seed), RELEASES_CA_SEAL_CONTEXT);
	explicit_bzero(seed, sizeof(seed));

	if (SshEd25519Blob(pub, blob) != SSH_ED25519_BLOB_LEN || SshFingerprint(blob, sizeof(blob), fp) != 0)
		elog(ERROR, "could not encode the CA public key");
	pgcloud_b64_encode(blob, sizeof(blob), b64, sizeof(b64), PGCLOUD_B64_STD, true);

	values[0] = CStringGetTextDatum(psprintf("ssh-ed25519 %s pgcloud-ssh-ca", b64));
	values[1] = CStringGetTextDatum(fp);
	values[2] = PointerGetDatum(bytes_to_bytea(blob, sizeof(blob)));
	values[3] = PointerGetDatum(sealed);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/* A text[] without NULLs as C strings (palloc'd), at most max of them. */
static int
text_array_to_cstrings(ArrayType *arr, const char **out, int max, const char *what)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;

	if (ARR_NDIM(arr) > 1)
		PgcloudRaise("invalid_argument", psprintf("%s must be a one-dimensional array", what), NULL, NULL);
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n > max)
		PgcloudRaise("invalid_argument", psprintf("at most %d %s", max, what), NULL, NULL);
	for (i = 0; i < n; i++)
	{
		if (nulls[i])
			PgcloudRaise("invalid_argument", psprintf("%s must not contain NULL", what), NULL, NULL);
		out[i] = TextDatumGetCString(elems[i]);
	}
	return n;
}

static uint64
to_unix_seconds(TimestampTz ts, const char *what)
{
	pg_time_t	t;

	if (TIMESTAMP_NOT_FINITE(ts))
		PgcloudRaise("invalid_argument", psprintf("%s must be finite", what), NULL, NULL);
	t = timestamptz_to_time_t(ts);
	if (t < 0)
		PgcloudRaise("invalid_argument", psprintf("%s must be after 1970", what), NULL, NULL);
	return (uint64) t;
}

Datum
pgcloud_releases_sign_certificate(PG_FUNCTION_ARGS)
{
	SshKey	   *key;
	SshCertSpec spec;
	bytea	   *sealed;
	bytea	   *ca_blob;
	bytea	   *seed;
	unsigned char *cert;
	size_t		cert_len = 0;
	char	   *b64;
	char	   *comment;
	char		err[SSHKEY_ERR_LEN];
	int			i;
	int			rc;

	for (i = 1; i < 9; i++)
		if (PG_ARGISNULL(i))
			PgcloudRaise("invalid_argument", "releases.sign_certificate() needs every argument but the comment",
						 NULL, NULL);
	key = ReleasesParseKeyOrRaise(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	sealed = PG_GETARG_BYTEA_PP(1);
	ca_blob = PG_GETARG_BYTEA_PP(2);

	memset(&spec, 0, sizeof(spec));
	if (PG_GETARG_INT64(3) <= 0)
		PgcloudRaise("invalid_argument", "the serial must be positive", NULL, NULL);
	spec.serial = (uint64) PG_GETARG_INT64(3);
	spec.key_id = text_to_cstring(PG_GETARG_TEXT_PP(4));
	spec.nprincipals = text_array_to_cstrings(PG_GETARG_ARRAYTYPE_P(5), spec.principals,
											  SSHCERT_MAX_PRINCIPALS, "principals");
	spec.valid_after = to_unix_seconds(PG_GETARG_TIMESTAMPTZ(6), "valid_after");
	spec.valid_before = to_unix_seconds(PG_GETARG_TIMESTAMPTZ(7), "valid_before");
	spec.nextensions = text_array_to_cstrings(PG_GETARG_ARRAYTYPE_P(8), spec.extensions,
											  SSHCERT_MAX_EXTENSIONS, "extensions");
	comment = PG_ARGISNULL(9) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(9));
	if (comment != NULL && !SshNameValid(comment, SSHCERT_MAX_KEY_ID))
		PgcloudRaise("invalid_argument", "the certificate comment must be 1 to 256 of [A-Za-z0-9@._-]", NULL, NULL);
	if (!pg_strong_random(spec.nonce, sizeof(spec.nonce)))
		elog(ERROR, "could not generate a certificate nonce");

	seed = PgcloudUnseal(sealed, RELEASES_CA_SEAL_CONTEXT);
	if (VARSIZE_ANY_EXHDR(seed) != 32)
	{
		explicit_bzero(VARDATA_ANY(seed), VARSIZE_ANY_EXHDR(seed));
		elog(ERROR, "the sealed CA key has the wrong length");
	}
	cert = palloc(SSHCERT_MAX_BLOB);
	rc = SshCertBuild(key, &spec, (const unsigned char *) VARDATA_ANY(seed),
					  (const unsigned char *) VARDATA_ANY(ca_blob), VARSIZE_ANY_EXHDR(ca_blob),
					  cert, &cert_len, NULL, err, sizeof(err));
	explicit_bzero(VARDATA_ANY(seed), 32);
	pfree(seed);
	if (rc != 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("could not build the certificate: %s", err));

	b64 = palloc(pgcloud_b64_encoded_len(cert_len, true) + 1);
	pgcloud_b64_encode(cert, cert_len, b64, pgcloud_b64_encoded_len(cert_len, true) + 1, PGCLOUD_B64_STD, true);
	if (comment != NULL)
		PG_RETURN_TEXT_P(cstring_to_text(psprintf("%s %s %s", key->cert_type_name, b64, comment)));
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("%s %s", key->cert_type_name, b64)));
}
