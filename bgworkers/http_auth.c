/*
 * http_auth.c — credentials the HTTP executor adds at send time. They come
 * from superuser-only settings, are never stored with an intent and never
 * appear in an error message.
 *
 *   Stripe: Authorization: Bearer <pgcloud.stripe_secret_key>
 *   MAAS:   OAuth 1.0 PLAINTEXT from pgcloud.maas_api_key = consumer:token:secret,
 *           a fresh nonce and timestamp per request:
 *           OAuth realm="", oauth_version="1.0", oauth_signature_method="PLAINTEXT",
 *           oauth_consumer_key="..", oauth_token="..", oauth_signature="&<secret>",
 *           oauth_nonce="..", oauth_timestamp=".."
 *   S3:     the URL itself is pre-signed (AWS SigV4 query signing, src/storage/sigv4.c)
 *           from the pgcloud.s3_* settings at send time, valid for S3_SEND_EXPIRES seconds
 */
#include "http.h"

#include "../src/storage/sigv4.h"

#include <time.h>

#define MAAS_KEY_PART_MAX 256
#define S3_SEND_EXPIRES 300

/* Characters a key part may hold: they go between double quotes unescaped. */
static bool
key_part_ok(const char *s, size_t len)
{
	if (len == 0 || len > MAAS_KEY_PART_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		char		c = s[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			  c == '-' || c == '_' || c == '.' || c == '~'))
			return false;
	}
	return true;
}

bool
HttpStripeAuthHeader(char **header, char **error)
{
	const char *key = pgcloud_stripe_secret_key;

	*header = NULL;
	if (key == NULL || key[0] == '\0')
	{
		*error = pstrdup("pgcloud.stripe_secret_key is not set");
		return false;
	}
	for (const char *p = key; *p; p++)
		if (*p < 0x21 || *p > 0x7e)
		{
			*error = pstrdup("pgcloud.stripe_secret_key holds characters that cannot go in a header");
			return false;
		}
	*header = psprintf("Authorization: Bearer %s", key);
	return true;
}

bool
HttpMaasAuthHeader(char **header, char **error)
{
	const char *key = pgcloud_maas_api_key;
	const char *c1;
	const char *c2;
	uint8		raw[16];
	char		nonce[33];
	char	   *consumer;
	char	   *token;
	char	   *secret;

	*header = NULL;
	if (key == NULL || key[0] == '\0')
	{
		*error = pstrdup("pgcloud.maas_api_key is not set");
		return false;
	}
	c1 = strchr(key, ':');
	c2 = c1 ? strchr(c1 + 1, ':') : NULL;
	if (c1 == NULL || c2 == NULL || strchr(c2 + 1, ':') != NULL ||
		!key_part_ok(key, c1 - key) || !key_part_ok(c1 + 1, c2 - c1 - 1) ||
		!key_part_ok(c2 + 1, strlen(c2 + 1)))
	{
		*error = pstrdup("pgcloud.maas_api_key must be consumer:token:secret (letters, digits, - _ . ~)");
		return false;
	}
	if (!pg_strong_random(raw, sizeof(raw)))
	{
		*error = pstrdup("could not generate an OAuth nonce");
		return false;
	}
	for (int i = 0; i < (int) sizeof(raw); i++)
		snprintf(nonce + 2 * i, 3, "%02x", raw[i]);
	consumer = pnstrdup(key, c1 - key);
	token = pnstrdup(c1 + 1, c2 - c1 - 1);
	secret = pstrdup(c2 + 1);
	*header = psprintf("Authorization: OAuth realm=\"\", oauth_version=\"1.0\", "
					   "oauth_signature_method=\"PLAINTEXT\", oauth_consumer_key=\"%s\", "
					   "oauth_token=\"%s\", oauth_signature=\"&%s\", oauth_nonce=\"%s\", "
					   "oauth_timestamp=\"%ld\"",
					   consumer, token, secret, nonce, (long) time(NULL));
	explicit_bzero(secret, strlen(secret));
	explicit_bzero(token, strlen(token));
	pfree(consumer);
	pfree(token);
	pfree(secret);
	return true;
}

/*
 * The pre-signed URL of an s3 intent: path is "/" + the URI-encoded object
 * key (the bucket and addressing style come from the settings).
 */
char *
HttpS3SignedUrl(const char *method, const char *path, char **error)
{
	Sigv4Config cfg;

	if (!Sigv4ConfigFromSettings(&cfg, error))
		return NULL;
	if (path[0] != '/' || path[1] == '\0')
	{
		*error = pstrdup("the path of an s3 intent is \"/\" followed by the URI-encoded object key");
		return NULL;
	}
	return Sigv4Presign(&cfg, method, path + 1, (int64) time(NULL), S3_SEND_EXPIRES, NULL, error);
}
