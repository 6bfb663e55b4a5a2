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
 */
#include "http.h"

#include <time.h>

#define MAAS_KEY_PART_MAX 256

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
