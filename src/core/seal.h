/*
 * seal.h — sealing secrets with the platform master key.
 *
 * The master key lives outside the database: the file named by
 * pgcloud.key_file, or $PGDATA/pgcloud.key (32 random bytes, mode 0600,
 * created on first use). Sealed values are
 *   0x01 | nonce (12) | AES-256-GCM ciphertext | tag (16)
 * under a key derived with HKDF-SHA256 from the master key and a context
 * string, which is also the additional authenticated data: a value sealed
 * for one context cannot be opened for another.
 */
#ifndef PGCLOUD_SEAL_H
#define PGCLOUD_SEAL_H

#include "postgres.h"

#define PGCLOUD_SEAL_OVERHEAD (1 + 12 + 16)

/* Derives len bytes for context from the master key (HKDF-SHA256). */
extern void PgcloudDeriveKey(const char *context, unsigned char *out, size_t len);

/* palloc'd bytea of the sealed value. */
extern bytea *PgcloudSeal(const unsigned char *plain, size_t len, const char *context);

/* palloc'd bytea of the plaintext; ERROR when the value was tampered with or sealed for another context. */
extern bytea *PgcloudUnseal(const bytea *sealed, const char *context);

#endif
