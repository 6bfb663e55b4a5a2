/*
 * sshcert.c — OpenSSH user certificates signed by an Ed25519 CA (see
 * sshkey.h). Plain C with OpenSSL 3, no PostgreSQL headers.
 *
 * Layout (OpenSSH PROTOCOL.certkeys), every field bounded:
 *	string	"<type>-cert-v01@openssh.com"
 *	string	nonce (32 random bytes)
 *	...		the key's own fields (ed25519: string pk; ecdsa: string curve,
 *			string Q; rsa: mpint e, mpint n), copied from the parsed blob
 *	uint64	serial
 *	uint32	type (1 = user)
 *	string	key id
 *	string	valid principals (a sequence of strings)
 *	uint64	valid after
 *	uint64	valid before
 *	string	critical options (none)
 *	string	extensions (name, empty data) pairs sorted by name
 *	string	reserved (empty)
 *	string	signature key (the CA's ssh-ed25519 blob)
 *	string	signature (string "ssh-ed25519", string 64-byte signature) over
 *			everything before it
 */
#include "sshkey.h"

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

typedef struct Writer
{
	unsigned char *p;
	size_t		cap;
	size_t		len;
	int			overflow;
} Writer;

static void
put_bytes(Writer *w, const void *data, size_t n)
{
	if (w->overflow || n > w->cap - w->len)
	{
		w->overflow = 1;
		return;
	}
	if (n > 0)
		memcpy(w->p + w->len, data, n);
	w->len += n;
}

static void
put_u32(Writer *w, uint32_t v)
{
	unsigned char b[4];

	b[0] = (unsigned char) (v >> 24);
	b[1] = (unsigned char) (v >> 16);
	b[2] = (unsigned char) (v >> 8);
	b[3] = (unsigned char) v;
	put_bytes(w, b, 4);
}

static void
put_u64(Writer *w, uint64_t v)
{
	put_u32(w, (uint32_t) (v >> 32));
	put_u32(w, (uint32_t) v);
}

static void
put_string(Writer *w, const void *data, size_t n)
{
	if (n > UINT32_MAX)
	{
		w->overflow = 1;
		return;
	}
	put_u32(w, (uint32_t) n);
	put_bytes(w, data, n);
}

static void
put_cstring(Writer *w, const char *s)
{
	put_string(w, s, strlen(s));
}

static void
set_err(char *err, size_t errlen, const char *msg)
{
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s", msg);
}

size_t
SshEd25519Blob(const unsigned char pub[32], unsigned char out[SSH_ED25519_BLOB_LEN])
{
	Writer		w = {out, SSH_ED25519_BLOB_LEN, 0, 0};

	put_cstring(&w, "ssh-ed25519");
	put_string(&w, pub, 32);
	return w.overflow ? 0 : w.len;
}

static int
key_id_valid(const char *s)
{
	size_t		i;
	size_t		n;

	if (s == NULL)
		return 0;
	n = strnlen(s, SSHCERT_MAX_KEY_ID + 1);
	if (n == 0 || n > SSHCERT_MAX_KEY_ID)
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] > 0x7e)
			return 0;
	return 1;
}

/*
 * Checks what the certificate is to say; fills ext with the extension
 * names validated, sorted by name (strcmp = byte order) and unique, and
 * *next with their number. 0, or -1 with err set.
 */
static int
check_cert_spec(const SshKey *key, const SshCertSpec *spec,
				const char *ext[SSHCERT_MAX_EXTENSIONS], int *next, char *err, size_t errlen)
{
	int			i,
				j;

	*next = 0;
	if (key == NULL || key->type == SSHKEY_NONE || key->blob_len <= key->fields_off
		|| key->blob_len > SSHKEY_MAX_BLOB)
	{
		set_err(err, errlen, "no parsed key to certify");
		return -1;
	}
	if (spec->nprincipals < 1 || spec->nprincipals > SSHCERT_MAX_PRINCIPALS)
	{
		set_err(err, errlen, "a certificate needs 1 to 16 principals");
		return -1;
	}
	for (i = 0; i < spec->nprincipals; i++)
		if (!SshNameValid(spec->principals[i], SSHCERT_MAX_NAME))
		{
			set_err(err, errlen, "a principal must be 1 to 64 of [A-Za-z0-9@._-]");
			return -1;
		}
	if (!key_id_valid(spec->key_id))
	{
		set_err(err, errlen, "the key id must be 1 to 256 printable ASCII characters");
		return -1;
	}
	if (spec->valid_after >= spec->valid_before)
	{
		set_err(err, errlen, "valid_after must be before valid_before");
		return -1;
	}
	if (spec->nextensions < 0 || spec->nextensions > SSHCERT_MAX_EXTENSIONS)
	{
		set_err(err, errlen, "at most 16 extensions");
		return -1;
	}
	for (i = 0; i < spec->nextensions; i++)
	{
		const char *e = spec->extensions[i];
		int			dup = 0;

		if (!SshNameValid(e, SSHCERT_MAX_NAME))
		{
			set_err(err, errlen, "an extension name must be 1 to 64 of [A-Za-z0-9@._-]");
			return -1;
		}
		for (j = 0; j < *next; j++)
			if (strcmp(ext[j], e) == 0)
				dup = 1;
		if (dup)
			continue;
		for (j = *next; j > 0 && strcmp(ext[j - 1], e) > 0; j--)
			ext[j] = ext[j - 1];
		ext[j] = e;
		(*next)++;
	}
	return 0;
}

/*
 * The CA's key from its seed, and its public blob in ca_blob; its public
 * key must be the one the caller publishes (ca_public_blob, when given).
 * NULL with err set when not.
 */
static EVP_PKEY *
load_ca(const unsigned char ca_seed[32], const unsigned char *ca_public_blob, size_t ca_public_blob_len,
		unsigned char ca_blob[SSH_ED25519_BLOB_LEN], char *err, size_t errlen)
{
	EVP_PKEY   *ca = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, ca_seed, 32);
	unsigned char ca_pub[32];
	size_t		ca_pub_len = sizeof(ca_pub);

	if (ca == NULL || EVP_PKEY_get_raw_public_key(ca, ca_pub, &ca_pub_len) != 1 || ca_pub_len != 32
		|| SshEd25519Blob(ca_pub, ca_blob) != SSH_ED25519_BLOB_LEN)
	{
		set_err(err, errlen, "the CA private key is not a valid Ed25519 key");
		EVP_PKEY_free(ca);
		return NULL;
	}
	if (ca_public_blob != NULL
		&& (ca_public_blob_len != SSH_ED25519_BLOB_LEN || memcmp(ca_public_blob, ca_blob, SSH_ED25519_BLOB_LEN) != 0))
	{
		set_err(err, errlen, "the CA private key does not match its published public key");
		EVP_PKEY_free(ca);
		return NULL;
	}
	return ca;
}

/* Writes everything the CA signs (up to and including its key). 0, or -1 with err set. */
static int
write_to_be_signed(Writer *w, const SshKey *key, const SshCertSpec *spec, const char *const *ext, int next,
				   const unsigned char ca_blob[SSH_ED25519_BLOB_LEN], char *err, size_t errlen)
{
	unsigned char nested_buf[SSHCERT_MAX_EXTENSIONS * (4 + SSHCERT_MAX_NAME + 4) + 16];
	Writer		nested;
	int			i;

	put_cstring(w, key->cert_type_name);
	put_string(w, spec->nonce, SSHCERT_NONCE_LEN);
	put_bytes(w, key->blob + key->fields_off, key->blob_len - key->fields_off);
	put_u64(w, spec->serial);
	put_u32(w, SSHCERT_TYPE_USER);
	put_cstring(w, spec->key_id);

	nested = (Writer)
	{
		nested_buf, sizeof(nested_buf), 0, 0
	};
	for (i = 0; i < spec->nprincipals; i++)
		put_cstring(&nested, spec->principals[i]);
	if (nested.overflow)
	{
		set_err(err, errlen, "the principals are too long");
		return -1;
	}
	put_string(w, nested.p, nested.len);

	put_u64(w, spec->valid_after);
	put_u64(w, spec->valid_before);
	put_string(w, NULL, 0);		/* critical options: none */

	nested = (Writer)
	{
		nested_buf, sizeof(nested_buf), 0, 0
	};
	for (i = 0; i < next; i++)
	{
		put_cstring(&nested, ext[i]);
		put_string(&nested, NULL, 0);	/* flag extension: empty data */
	}
	if (nested.overflow)
	{
		set_err(err, errlen, "the extensions are too long");
		return -1;
	}
	put_string(w, nested.p, nested.len);

	put_string(w, NULL, 0);		/* reserved */
	put_string(w, ca_blob, SSH_ED25519_BLOB_LEN);
	if (w->overflow)
	{
		set_err(err, errlen, "the certificate is too large");
		return -1;
	}
	return 0;
}

/* Signs w's bytes with the CA and appends the signature. 0, or -1 with err set. */
static int
append_signature(Writer *w, EVP_PKEY *ca, char *err, size_t errlen)
{
	EVP_MD_CTX *mctx = EVP_MD_CTX_new();
	unsigned char sig[64];
	size_t		siglen = sizeof(sig);
	unsigned char sigblob[4 + 11 + 4 + 64];
	Writer		sw = {sigblob, sizeof(sigblob), 0, 0};
	int			rc = -1;

	if (mctx == NULL
		|| EVP_DigestSignInit(mctx, NULL, NULL, NULL, ca) != 1
		|| EVP_DigestSign(mctx, sig, &siglen, w->p, w->len) != 1
		|| siglen != 64)
	{
		set_err(err, errlen, "signing the certificate failed");
		goto done;
	}
	put_cstring(&sw, "ssh-ed25519");
	put_string(&sw, sig, siglen);
	put_string(w, sigblob, sw.len);
	if (w->overflow || sw.overflow)
	{
		set_err(err, errlen, "the certificate is too large");
		goto done;
	}
	rc = 0;
done:
	EVP_MD_CTX_free(mctx);
	return rc;
}

int
SshCertBuild(const SshKey *key, const SshCertSpec *spec,
			 const unsigned char ca_seed[32],
			 const unsigned char *ca_public_blob, size_t ca_public_blob_len,
			 unsigned char *out, size_t *out_len, size_t *signed_len,
			 char *err, size_t errlen)
{
	Writer		w = {out, SSHCERT_MAX_BLOB, 0, 0};
	const char *ext[SSHCERT_MAX_EXTENSIONS];
	int			next;
	EVP_PKEY   *ca;
	unsigned char ca_blob[SSH_ED25519_BLOB_LEN];
	size_t		tbs_len;
	int			rc = -1;

	*out_len = 0;
	if (check_cert_spec(key, spec, ext, &next, err, errlen) != 0)
		return -1;
	ca = load_ca(ca_seed, ca_public_blob, ca_public_blob_len, ca_blob, err, errlen);
	if (ca == NULL)
		return -1;
	if (write_to_be_signed(&w, key, spec, ext, next, ca_blob, err, errlen) == 0)
	{
		tbs_len = w.len;
		if (append_signature(&w, ca, err, errlen) == 0)
		{
			*out_len = w.len;
			if (signed_len != NULL)
				*signed_len = tbs_len;
			rc = 0;
		}
	}
	EVP_PKEY_free(ca);
	return rc;
}
