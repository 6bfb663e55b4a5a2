/*
 * sigv4.h — AWS Signature Version 4 for S3 pre-signed URLs (query signing),
 * with OpenSSL's HMAC-SHA256 and SHA-256.
 *
 *   signing key = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, yyyymmdd), region), service), "aws4_request")
 *   string to sign = "AWS4-HMAC-SHA256\n" + amz_date + "\n" + scope + "\n" + hex(SHA256(canonical request))
 *   signature = hex(HMAC(signing key, string to sign))
 *
 * A pre-signed URL signs only the host header, with payload UNSIGNED-PAYLOAD,
 * and carries X-Amz-Algorithm, -Credential, -Date, -Expires, -SignedHeaders
 * and -Signature in its query (what botocore's generate_presigned_url makes).
 * Used by api.presign() (src/storage/storage.c) and by the HTTP executor for
 * target s3 (bgworkers/http_auth.c), which signs each request at send time.
 */
#ifndef PGCLOUD_SIGV4_H
#define PGCLOUD_SIGV4_H

#include "pgcloud.h"

#define SIGV4_MAX_EXPIRES 604800	/* seven days: AWS's limit */

typedef struct Sigv4Config
{
	const char *endpoint;		/* scheme://host[:port] */
	const char *region;
	const char *bucket;
	const char *access_key_id;
	const char *secret_access_key;
	bool		path_style;	/* else virtual-hosted, unless the endpoint is an IP address */
} Sigv4Config;

/* hex(HMAC-SHA256(signing key, string to sign)) of a canonical request; out holds 65 bytes. */
extern void Sigv4Signature(const char *secret, const char *amz_date, const char *region,
						   const char *service, const char *creq, size_t creq_len, char *out);

/* Appends s[0..n) URI-encoded as SigV4 wants (unreserved kept, %XX upper case; '/' kept when keep_slash). */
extern void Sigv4UriEncode(StringInfo buf, const char *s, size_t n, bool keep_slash);

/* The settings pgcloud.s3_*; false with *error (no secret in it) when one is missing or invalid. */
extern bool Sigv4ConfigFromSettings(Sigv4Config *cfg, char **error);

/*
 * A pre-signed URL for method on the object whose key is given URI-encoded
 * (Sigv4UriEncode with keep_slash), signed at unix time at for expires
 * seconds; NULL with *error when the configuration is unusable. When
 * canonical is not NULL it receives the canonical request (tests).
 */
extern char *Sigv4Presign(const Sigv4Config *cfg, const char *method, const char *encoded_key,
						  int64 at, int expires, char **canonical, char **error);

#endif
