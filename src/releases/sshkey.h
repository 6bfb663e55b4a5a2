/*
 * sshkey.h — SSH public keys and OpenSSH user certificates (plain C with
 * OpenSSL 3, no PostgreSQL headers).
 *
 * Compiled into the pgcloud extension (src/releases/keys.c, ca.c) and
 * standalone into the libFuzzer target test/fuzz/fuzz_releases_sshkey.c.
 *
 * Accepted: one OpenSSH authorized_keys line without options,
 *   <type> SP <base64 of the key blob> [SP <comment>]
 * with type ssh-ed25519 (RFC 8709), ecdsa-sha2-nistp256/384/521 (RFC 5656,
 * uncompressed point) or ssh-rsa (RFC 4253) of 2048 to 16384 bits. The blob
 * is parsed with explicit bounds (RFC 4253 string and mpint), must be
 * canonical (strict base64 that re-encodes to itself, minimal mpints, no
 * trailing bytes, its type equal to the text prefix) and must make a real
 * OpenSSL key (RSA n/e; EC point on the named curve; Ed25519 32 bytes).
 * Anything else is rejected with a status and a one-sentence reason.
 *
 * The functions never allocate with malloc; OpenSSL objects they create are
 * freed before they return. They never read outside the buffers they are
 * given.
 */
#ifndef PGCLOUD_SSHKEY_H
#define PGCLOUD_SSHKEY_H

#include <stddef.h>
#include <stdint.h>

/* Limits: a 16384-bit RSA key line is about 2.8 kB. */
#define SSHKEY_MAX_LINE 8192
#define SSHKEY_MAX_B64 8192
#define SSHKEY_MAX_BLOB 6144
#define SSHKEY_MAX_COMMENT 1024
#define SSHKEY_MAX_TYPE_NAME 64
#define SSHKEY_RSA_MIN_BITS 2048
#define SSHKEY_RSA_MAX_BITS 16384
#define SSHKEY_ERR_LEN 256
/* "SHA256:" + 43 characters of unpadded base64 + NUL */
#define SSHKEY_FP_LEN 51

/* Certificates */
#define SSHCERT_MAX_PRINCIPALS 16
#define SSHCERT_MAX_EXTENSIONS 16
#define SSHCERT_MAX_NAME 64		/* principal and extension names */
#define SSHCERT_MAX_KEY_ID 256
#define SSHCERT_MAX_BLOB (SSHKEY_MAX_BLOB + 4096)
#define SSHCERT_MAX_LINE (SSHCERT_MAX_BLOB / 3 * 4 + 4 + 64 + SSHKEY_MAX_COMMENT + 2)
#define SSHCERT_NONCE_LEN 32
#define SSHCERT_TYPE_USER 1

typedef enum SshKeyStatus
{
	SSHKEY_OK = 0,
	SSHKEY_INVALID,				/* malformed: empty, too long, bad base64, truncated, trailing bytes, ... */
	SSHKEY_UNSUPPORTED,			/* a key type we do not accept (ssh-dss, sk-*, certificates, unknown) */
	SSHKEY_TOO_WEAK,			/* RSA under SSHKEY_RSA_MIN_BITS */
	SSHKEY_OPTIONS				/* authorized_keys options before the key type */
} SshKeyStatus;

typedef enum SshKeyType
{
	SSHKEY_NONE = 0,
	SSHKEY_ED25519,
	SSHKEY_ECDSA_P256,
	SSHKEY_ECDSA_P384,
	SSHKEY_ECDSA_P521,
	SSHKEY_RSA
} SshKeyType;

typedef struct SshKey
{
	SshKeyType	type;
	int			bits;			/* 256 for ed25519, the curve size, RSA modulus bits */
	const char *type_name;		/* "ssh-ed25519", ... (static) */
	const char *cert_type_name; /* "ssh-ed25519-cert-v01@openssh.com", ... (static) */
	unsigned char blob[SSHKEY_MAX_BLOB];	/* the public key blob */
	size_t		blob_len;
	size_t		fields_off;		/* offset in blob of the fields after the type string */
	char		fingerprint[SSHKEY_FP_LEN + 1]; /* SHA256:<unpadded base64>, as ssh-keygen -l */
	char		comment[SSHKEY_MAX_COMMENT + 1];	/* may be empty */
} SshKey;

/*
 * Parses one authorized_keys line (line[0..len), need not be NUL-terminated).
 * Leading and trailing blanks and one final newline are ignored. On
 * SSHKEY_OK fills *key; otherwise writes a reason (one sentence, no key
 * material beyond the type name) into err.
 */
extern SshKeyStatus SshKeyParseLine(const char *line, size_t len, SshKey *key,
									char *err, size_t errlen);

/* Parses a key blob (no text prefix) the same way; expected_type may be NULL. */
extern SshKeyStatus SshKeyParseBlob(const unsigned char *blob, size_t len, const char *expected_type,
									SshKey *key, char *err, size_t errlen);

/* SHA256:<unpadded base64 of SHA-256(blob)>; returns 0 on success. */
extern int	SshFingerprint(const unsigned char *blob, size_t len, char out[SSHKEY_FP_LEN + 1]);

/* "ssh-ed25519 AAAA...[ comment]" for a parsed key; out holds SSHKEY_MAX_LINE + 1 bytes. Returns the length. */
extern size_t SshKeyFormat(const SshKey *key, const char *comment, char *out, size_t outcap);

/*
 * An OpenSSH user certificate (PROTOCOL.certkeys) for key, signed by an
 * Ed25519 CA given by its 32-byte private seed.
 */
typedef struct SshCertSpec
{
	uint64_t	serial;
	const char *key_id;
	const char *principals[SSHCERT_MAX_PRINCIPALS];
	int			nprincipals;
	uint64_t	valid_after;	/* seconds since the epoch */
	uint64_t	valid_before;
	const char *extensions[SSHCERT_MAX_EXTENSIONS]; /* flag extensions; sorted and deduplicated here */
	int			nextensions;
	unsigned char nonce[SSHCERT_NONCE_LEN];
} SshCertSpec;

/*
 * Builds and signs the certificate into out (SSHCERT_MAX_BLOB bytes),
 * setting *out_len. ca_public_blob, when not NULL, must be the blob of the
 * seed's public key (a guard against a mismatched CA row). Returns 0, or -1
 * with a reason in err.
 */
extern int	SshCertBuild(const SshKey *key, const SshCertSpec *spec,
						 const unsigned char ca_seed[32],
						 const unsigned char *ca_public_blob, size_t ca_public_blob_len,
						 unsigned char *out, size_t *out_len, size_t *signed_len,
						 char *err, size_t errlen);

/* The ssh-ed25519 public key blob of an Ed25519 public key (51 bytes). */
#define SSH_ED25519_BLOB_LEN (4 + 11 + 4 + 32)
extern size_t SshEd25519Blob(const unsigned char pub[32], unsigned char out[SSH_ED25519_BLOB_LEN]);

/* Whether s is a name allowed as a principal / extension / type: [A-Za-z0-9@._-]{1,max}. */
extern int	SshNameValid(const char *s, size_t max);

#endif							/* PGCLOUD_SSHKEY_H */
