/*
 * fuzz_auth_jwt.c — libFuzzer target for src/auth/jwt_parse.c, the layer that
 * touches every untrusted byte of a JWT or JWK before OpenSSL or
 * PostgreSQL's JSON parser does.
 * fuzz-sources: src/auth/jwt_parse.c src/core/base64.c
 *
 * Build and run from the repository root:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/core \
 *       src/auth/jwt_parse.c src/core/base64.c test/fuzz/fuzz_auth_jwt.c -o build/fuzz_auth_jwt
 *   build/fuzz_auth_jwt -max_total_time=60 -max_len=4096 test/fuzz/corpus/auth_jwt
 *
 * The first byte picks what the rest is:
 *   0 mod 3: a compact token: split, decode every part, check header and
 *            claims as JSON objects; a decoded part re-encodes to exactly its
 *            input (strict base64url: one encoding per value);
 *   1 mod 3: a JSON document (e.g. a JWKS), checked as any value and as an
 *            object; an accepted object is also an accepted value;
 *   2 mod 3: JWK members separated by '\n' (kty, crv, alg, use, n, e, x, y,
 *            k, d, p, q, dp, dq, qi), decoded by jwk_decode(); decoded sizes
 *            must respect the documented limits.
 * Inputs are copied into exactly-sized heap buffers so that ASan sees any
 * read past the end.
 */
#include "../../src/auth/jwt_parse.h"
#include "../../src/core/base64.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static unsigned char part_buf[JWT_MAX_PAYLOAD_LEN];
static char enc_buf[JWT_MAX_TOKEN_LEN + 8];

static void
check_part(const char *b64, size_t len, int json)
{
	size_t		outlen = 0;
	JwtErr		err = jwt_b64url_decode(b64, len, part_buf, sizeof(part_buf), &outlen);

	if (err != JWT_OK)
		return;
	if (outlen > sizeof(part_buf) || outlen > pgcloud_b64_decoded_max(len))
		abort();
	/* strict base64url round-trips exactly */
	if (pgcloud_b64_encode(part_buf, outlen, enc_buf, sizeof(enc_buf), PGCLOUD_B64_URL, false) != len || memcmp(enc_buf, b64, len) != 0)
		abort();
	if (json)
	{
		unsigned char *copy = malloc(outlen ? outlen : 1);

		memcpy(copy, part_buf, outlen);
		(void) jwt_json_check(copy, outlen, 1);
		free(copy);
	}
}

static void
fuzz_token(const uint8_t *data, size_t size)
{
	char	   *tok = malloc(size ? size : 1);
	JwtParts	parts;
	unsigned char *hdr;
	size_t		hlen;

	memcpy(tok, data, size);
	if (jwt_split(tok, size, &parts) == JWT_OK)
	{
		if (parts.header_len + parts.payload_len + parts.signature_len + 2 != size
			|| parts.signing_input_len != parts.header_len + 1 + parts.payload_len)
			abort();
		check_part(parts.header, parts.header_len, 1);
		check_part(parts.payload, parts.payload_len, 1);
		check_part(parts.signature, parts.signature_len, 0);
		hdr = malloc(JWT_MAX_HEADER_LEN);
		(void) jwt_decode_json_part(parts.header, parts.header_len, hdr, JWT_MAX_HEADER_LEN, &hlen);
		free(hdr);
	}
	/* any prefix of the token may be handed to the decoders directly */
	check_part(tok, size > 64 ? 64 : size, 0);
	free(tok);
}

static void
fuzz_json(const uint8_t *data, size_t size)
{
	unsigned char *doc = malloc(size ? size : 1);
	JwtErr		as_object;
	JwtErr		as_value;

	memcpy(doc, data, size);
	as_object = jwt_json_check(doc, size, 1);
	as_value = jwt_json_check(doc, size, 0);
	if (as_object == JWT_OK && as_value != JWT_OK)
		abort();
	(void) jwt_err_message(as_object);
	free(doc);
}

static void
fuzz_jwk(const uint8_t *data, size_t size)
{
	char	   *buf = malloc(size ? size : 1);
	JwkStr	   *fields[15];
	JwkMembers	m;
	JwkDecoded *k = malloc(sizeof(JwkDecoded));
	size_t		start = 0;
	size_t		i;
	int			f = 0;

	memcpy(buf, data, size);
	memset(&m, 0, sizeof(m));
	fields[0] = &m.kty;
	fields[1] = &m.crv;
	fields[2] = &m.alg;
	fields[3] = &m.use;
	fields[4] = &m.n;
	fields[5] = &m.e;
	fields[6] = &m.x;
	fields[7] = &m.y;
	fields[8] = &m.k;
	fields[9] = &m.d;
	fields[10] = &m.p;
	fields[11] = &m.q;
	fields[12] = &m.dp;
	fields[13] = &m.dq;
	fields[14] = &m.qi;
	for (i = 0; i <= size && f < 15; i++)
	{
		if (i == size || buf[i] == '\n')
		{
			/* an empty field stands for an absent member */
			if (i > start)
			{
				fields[f]->ptr = buf + start;
				fields[f]->len = i - start;
			}
			f++;
			start = i + 1;
		}
	}
	if (jwk_decode(&m, k) == JWT_OK)
	{
		switch (k->kty)
		{
			case JWK_KTY_RSA:
				if (k->n_len > JWK_MAX_RSA_BYTES || k->n_len < JWK_MIN_RSA_BYTES || k->e_len == 0)
					abort();
				break;
			case JWK_KTY_EC:
				if (k->x_len != JWK_EC_P256_BYTES || k->y_len != JWK_EC_P256_BYTES)
					abort();
				break;
			case JWK_KTY_OKP:
				if (k->x_len != JWK_ED25519_BYTES)
					abort();
				break;
			case JWK_KTY_OCT:
				if (k->k_len < JWK_MIN_OCT_BYTES || !k->is_private)
					abort();
				break;
			default:
				abort();
		}
		if (jwt_alg_kty(k->alg) != k->kty)
			abort();
	}
	(void) jwt_alg_from_name(m.alg.ptr, m.alg.len);
	free(k);
	free(buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	switch (data[0] % 3)
	{
		case 0:
			fuzz_token(data + 1, size - 1);
			break;
		case 1:
			fuzz_json(data + 1, size - 1);
			break;
		default:
			fuzz_jwk(data + 1, size - 1);
			break;
	}
	return 0;
}
