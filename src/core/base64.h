/*
 * base64.h — the one base64 of pgcloud (RFC 4648): the standard alphabet
 * (§4: SSH keys and certificates, MIME mail) and the URL-safe one (§5: JWS,
 * JWK, opaque secrets and tokens), padded or not.
 *
 * Decoding is strict, for untrusted bytes: only the alphabet's characters,
 * no whitespace, '=' only as the padding of the last group (padded form) or
 * not at all (unpadded form), and the unused bits of the last group zero, so
 * every byte string has exactly one encoding (decode then encode gives the
 * input back). PostgreSQL's pg_b64_decode and OpenSSL's EVP_DecodeBlock
 * both accept more (whitespace, non-canonical trailing bits), and the
 * parsers built alone for fuzzing (no PostgreSQL, no OpenSSL) use this too.
 *
 * Plain C, no PostgreSQL headers: built into pgcloud.so and into the fuzz
 * targets (test/fuzz).
 */
#ifndef PGCLOUD_BASE64_H
#define PGCLOUD_BASE64_H

#include <stdbool.h>
#include <stddef.h>

typedef enum PgcloudB64Alphabet
{
	PGCLOUD_B64_STD,			/* A-Z a-z 0-9 + / */
	PGCLOUD_B64_URL				/* A-Z a-z 0-9 - _ */
} PgcloudB64Alphabet;

/* Decoding results below zero. */
#define PGCLOUD_B64_INVALID (-1)	/* not strict base64 of this form */
#define PGCLOUD_B64_TOO_LARGE (-2)	/* the decoded bytes would not fit */

/* Whether c is one of the alphabet's 64 characters ('=' is not). */
extern bool pgcloud_b64_char(unsigned char c, PgcloudB64Alphabet alphabet);

/* Characters (without the NUL) that len bytes encode to. */
extern size_t pgcloud_b64_encoded_len(size_t len, bool pad);

/*
 * Largest number of bytes inlen characters can decode to (unpadded form;
 * for the padded form it is exact up to the padding).
 */
extern size_t pgcloud_b64_decoded_max(size_t inlen);

/*
 * Encodes in[0..len) into out and NUL-terminates it; returns the number of
 * characters written, or 0 (and out unchanged) when outcap is smaller than
 * pgcloud_b64_encoded_len(len, pad) + 1.
 */
extern size_t pgcloud_b64_encode(const unsigned char *in, size_t len, char *out, size_t outcap,
								 PgcloudB64Alphabet alphabet, bool pad);

/*
 * Strictly decodes in[0..inlen) into out (capacity outcap). Returns the
 * number of bytes, PGCLOUD_B64_INVALID, or PGCLOUD_B64_TOO_LARGE. The length
 * is checked first (padded: a multiple of 4; unpadded: not 1 mod 4), then
 * the capacity, then the characters. The empty string decodes to 0 bytes.
 */
extern long pgcloud_b64_decode(const char *in, size_t inlen, unsigned char *out, size_t outcap,
							   PgcloudB64Alphabet alphabet, bool pad);

#endif							/* PGCLOUD_BASE64_H */
