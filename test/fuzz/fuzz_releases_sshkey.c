/*
 * fuzz_releases_sshkey.c — libFuzzer target for the SSH key parser and the
 * certificate builder (src/releases/sshkey.c, src/releases/sshcert.c).
 *
 * The parser uses OpenSSL (SHA-256, key validation) and src/core/base64.c, so the
 * sources line below also names -lcrypto: the harness splices it into the
 * clang command as it is.
 * fuzz-sources: src/releases/sshkey.c src/releases/sshcert.c src/core/base64.c -lcrypto
 *
 * Build and run from the repository root:
 *
 *   mkdir -p build
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/core \
 *       src/releases/sshkey.c src/releases/sshcert.c src/core/base64.c -lcrypto \
 *       test/fuzz/fuzz_releases_sshkey.c -o build/fuzz_releases_sshkey
 *   build/fuzz_releases_sshkey -max_total_time=60 -max_len=4096 test/fuzz/corpus/releases_sshkey
 *
 * Checked for every input (handed over in an exactly-sized heap copy so
 * ASan catches any read past the end):
 *	- SshKeyParseLine() returns a known status; a rejection has a reason;
 *	- an accepted key has a 50-character SHA256: fingerprint equal to the
 *	  SHA-256 of its blob, plausible bits, and the text form it formats to
 *	  parses again to the same blob and fingerprint;
 *	- the input as a raw blob: SshKeyParseBlob() agrees with itself the same way;
 *	- for an accepted key, a certificate signed by a fixed test CA starts with
 *	  the certificate type, embeds the key's fields, and its Ed25519
 *	  signature verifies over everything before it.
 */
#include "../../src/releases/sshkey.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
			abort(); \
		} \
	} while (0)

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const unsigned char test_ca_seed[32] = {
	1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
	17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32
};

static uint32_t
get_u32(const unsigned char *p)
{
	return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) | ((uint32_t) p[2] << 8) | p[3];
}

static void
check_accepted(const SshKey *key)
{
	static SshKey again;
	static char line[SSHKEY_MAX_LINE + 1];
	char		fp[SSHKEY_FP_LEN + 1];
	char		err[SSHKEY_ERR_LEN];
	size_t		n;

	CHECK(key->type != SSHKEY_NONE);
	CHECK(key->blob_len > key->fields_off && key->blob_len <= SSHKEY_MAX_BLOB);
	CHECK(strlen(key->fingerprint) == 50 && memcmp(key->fingerprint, "SHA256:", 7) == 0);
	CHECK(SshFingerprint(key->blob, key->blob_len, fp) == 0 && strcmp(fp, key->fingerprint) == 0);
	switch (key->type)
	{
		case SSHKEY_ED25519:
			CHECK(key->bits == 256);
			break;
		case SSHKEY_ECDSA_P256:
			CHECK(key->bits == 256);
			break;
		case SSHKEY_ECDSA_P384:
			CHECK(key->bits == 384);
			break;
		case SSHKEY_ECDSA_P521:
			CHECK(key->bits == 521);
			break;
		case SSHKEY_RSA:
			CHECK(key->bits >= SSHKEY_RSA_MIN_BITS && key->bits <= SSHKEY_RSA_MAX_BITS);
			break;
		default:
			CHECK(0);
	}
	n = SshKeyFormat(key, key->comment, line, sizeof(line));
	if (n == 0)
		return;					/* a maximal comment may not fit; not an error */
	CHECK(SshKeyParseLine(line, n, &again, err, sizeof(err)) == SSHKEY_OK);
	CHECK(again.blob_len == key->blob_len && memcmp(again.blob, key->blob, key->blob_len) == 0);
	CHECK(strcmp(again.fingerprint, key->fingerprint) == 0);
	CHECK(SshKeyParseBlob(key->blob, key->blob_len, key->type_name, &again, err, sizeof(err)) == SSHKEY_OK);
	CHECK(strcmp(again.fingerprint, key->fingerprint) == 0);
}

static void
check_certificate(const SshKey *key)
{
	static unsigned char cert[SSHCERT_MAX_BLOB];
	SshCertSpec spec;
	size_t		len = 0;
	size_t		tbs = 0;
	size_t		tlen = strlen(key->cert_type_name);
	size_t		flen = key->blob_len - key->fields_off;
	char		err[SSHKEY_ERR_LEN];
	EVP_PKEY   *ca;
	EVP_MD_CTX *mctx;
	unsigned char pub[32];
	size_t		publen = sizeof(pub);
	const unsigned char *sig;

	memset(&spec, 0, sizeof(spec));
	spec.serial = 42;
	spec.key_id = "user=00000000-0000-4000-8000-000000000000,allocation=fuzz";
	spec.principals[0] = "fuzz";
	spec.nprincipals = 1;
	spec.valid_after = 1700000000;
	spec.valid_before = 1700000900;
	spec.extensions[0] = "permit-pty";
	spec.extensions[1] = "permit-X11-forwarding";
	spec.extensions[2] = "permit-pty";
	spec.nextensions = 3;
	memset(spec.nonce, 0xab, sizeof(spec.nonce));

	CHECK(SshCertBuild(key, &spec, test_ca_seed, NULL, 0, cert, &len, &tbs, err, sizeof(err)) == 0);
	CHECK(len > tbs && tbs > 4 + tlen + 4 + SSHCERT_NONCE_LEN + flen);
	CHECK(get_u32(cert) == tlen && memcmp(cert + 4, key->cert_type_name, tlen) == 0);
	CHECK(get_u32(cert + 4 + tlen) == SSHCERT_NONCE_LEN);
	CHECK(memcmp(cert + 4 + tlen + 4 + SSHCERT_NONCE_LEN, key->blob + key->fields_off, flen) == 0);
	/* signature: string(string "ssh-ed25519", string sig[64]) at tbs */
	CHECK(len - tbs == 4 + 4 + 11 + 4 + 64 && get_u32(cert + tbs) == 4 + 11 + 4 + 64);
	CHECK(memcmp(cert + tbs + 8, "ssh-ed25519", 11) == 0);
	sig = cert + tbs + 4 + 4 + 11 + 4;

	ca = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, test_ca_seed, 32);
	CHECK(ca != NULL && EVP_PKEY_get_raw_public_key(ca, pub, &publen) == 1);
	EVP_PKEY_free(ca);
	ca = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, publen);
	mctx = EVP_MD_CTX_new();
	CHECK(ca != NULL && mctx != NULL);
	CHECK(EVP_DigestVerifyInit(mctx, NULL, NULL, NULL, ca) == 1);
	CHECK(EVP_DigestVerify(mctx, sig, 64, cert, tbs) == 1);
	EVP_MD_CTX_free(mctx);
	EVP_PKEY_free(ca);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static SshKey key;
	char	   *in = malloc(size ? size : 1);
	char		err[SSHKEY_ERR_LEN];
	SshKeyStatus st;

	if (in == NULL)
		abort();
	if (size)
		memcpy(in, data, size);

	err[0] = '\0';
	st = SshKeyParseLine(in, size, &key, err, sizeof(err));
	CHECK(st >= SSHKEY_OK && st <= SSHKEY_OPTIONS);
	if (st == SSHKEY_OK)
	{
		check_accepted(&key);
		check_certificate(&key);
	}
	else
		CHECK(err[0] != '\0' && strlen(err) < sizeof(err));

	err[0] = '\0';
	st = SshKeyParseBlob((const unsigned char *) in, size, NULL, &key, err, sizeof(err));
	CHECK(st >= SSHKEY_OK && st <= SSHKEY_OPTIONS);
	if (st == SSHKEY_OK)
		check_accepted(&key);
	else
		CHECK(err[0] != '\0');

	free(in);
	return 0;
}
