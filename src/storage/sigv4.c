/*
 * sigv4.c — AWS Signature Version 4 query signing for S3 (see sigv4.h).
 */
#include "sigv4.h"

#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

static const char hexdigits[] = "0123456789abcdef";

static void
to_hex(const unsigned char *d, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
	{
		out[2 * i] = hexdigits[d[i] >> 4];
		out[2 * i + 1] = hexdigits[d[i] & 15];
	}
	out[2 * n] = '\0';
}

static void
hmac_sha256(const unsigned char *key, size_t klen, const char *msg, size_t mlen, unsigned char *out)
{
	unsigned int outlen = 0;

	if (HMAC(EVP_sha256(), key, (int) klen, (const unsigned char *) msg, mlen, out, &outlen) == NULL ||
		outlen != 32)
		ereport(ERROR,
				errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				errmsg("could not compute an HMAC-SHA256"),
				errdetail("OpenSSL's HMAC failed."));
}

void
Sigv4Signature(const char *secret, const char *amz_date, const char *region,
			   const char *service, const char *creq, size_t creq_len, char *out)
{
	unsigned char k[32];
	unsigned char digest[32];
	char		creq_hex[65];
	char	   *first;
	StringInfoData sts;

	if (SHA256((const unsigned char *) creq, creq_len, digest) == NULL)
		elog(ERROR, "SHA-256 failed");
	to_hex(digest, 32, creq_hex);

	initStringInfo(&sts);
	appendStringInfo(&sts, "AWS4-HMAC-SHA256\n%s\n%.8s/%s/%s/aws4_request\n%s",
					 amz_date, amz_date, region, service, creq_hex);

	first = psprintf("AWS4%s", secret);
	hmac_sha256((unsigned char *) first, strlen(first), amz_date, 8, k);
	explicit_bzero(first, strlen(first));
	pfree(first);
	hmac_sha256(k, 32, region, strlen(region), k);
	hmac_sha256(k, 32, service, strlen(service), k);
	hmac_sha256(k, 32, "aws4_request", 12, k);
	hmac_sha256(k, 32, sts.data, sts.len, digest);
	explicit_bzero(k, sizeof(k));
	to_hex(digest, 32, out);
	pfree(sts.data);
}

void
Sigv4UriEncode(StringInfo buf, const char *s, size_t n, bool keep_slash)
{
	for (size_t i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			c == '-' || c == '_' || c == '.' || c == '~' || (c == '/' && keep_slash))
			appendStringInfoChar(buf, (char) c);
		else
			appendStringInfo(buf, "%%%c%c", "0123456789ABCDEF"[c >> 4], "0123456789ABCDEF"[c & 15]);
	}
}

static bool
printable_token(const char *s, size_t max)
{
	size_t		n = strlen(s);

	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return false;
	return true;
}

static bool
region_ok(const char *s)
{
	size_t		n = strlen(s);

	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

/* S3 bucket names: 3 to 63 of a-z 0-9 . -, starting and ending with a letter or digit. */
static bool
bucket_ok(const char *s)
{
	size_t		n = strlen(s);

	if (n < 3 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'))
			return false;
	return s[0] != '.' && s[0] != '-' && s[n - 1] != '.' && s[n - 1] != '-';
}

bool
Sigv4ConfigFromSettings(Sigv4Config *cfg, char **error)
{
	cfg->endpoint = pgcloud_s3_endpoint;
	cfg->region = pgcloud_s3_region;
	cfg->bucket = pgcloud_s3_bucket;
	cfg->access_key_id = pgcloud_s3_access_key_id;
	cfg->secret_access_key = pgcloud_s3_secret_access_key;
	cfg->path_style = pgcloud_s3_path_style;
#define REQUIRE(v, name) \
	if ((v) == NULL || (v)[0] == '\0') \
	{ \
		*error = pstrdup(name " is not set"); \
		return false; \
	}
	REQUIRE(cfg->endpoint, "pgcloud.s3_endpoint");
	REQUIRE(cfg->region, "pgcloud.s3_region");
	REQUIRE(cfg->bucket, "pgcloud.s3_bucket");
	REQUIRE(cfg->access_key_id, "pgcloud.s3_access_key_id");
	REQUIRE(cfg->secret_access_key, "pgcloud.s3_secret_access_key");
#undef REQUIRE
	return true;
}

/*
 * Splits endpoint scheme://authority[/] into the scheme and the Host value
 * (the port left out when it is the scheme's default).
 */
static bool
parse_endpoint(const char *endpoint, char **scheme, char **host, char **error)
{
	const char *rest;
	const char *end;
	const char *colon;

	if (strncmp(endpoint, "https://", 8) == 0)
	{
		*scheme = "https";
		rest = endpoint + 8;
	}
	else if (strncmp(endpoint, "http://", 7) == 0)
	{
		*scheme = "http";
		rest = endpoint + 7;
	}
	else
	{
		*error = pstrdup("pgcloud.s3_endpoint must start with http:// or https://");
		return false;
	}
	end = rest;
	while (*end && *end != '/')
	{
		char		c = *end;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  c == '.' || c == '-' || c == ':' || c == '[' || c == ']'))
		{
			*error = pstrdup("pgcloud.s3_endpoint must be scheme://host[:port] with no user, path or query");
			return false;
		}
		end++;
	}
	if (end == rest || (*end == '/' && end[1] != '\0') || end - rest > 255)
	{
		*error = pstrdup("pgcloud.s3_endpoint must be scheme://host[:port] with no path");
		return false;
	}
	*host = pnstrdup(rest, end - rest);
	colon = strrchr(*host, ':');
	if (colon != NULL && strchr(colon, ']') == NULL)
	{
		if ((strcmp(*scheme, "http") == 0 && strcmp(colon, ":80") == 0) ||
			(strcmp(*scheme, "https") == 0 && strcmp(colon, ":443") == 0))
			(*host)[colon - *host] = '\0';
	}
	return true;
}

/* Whether the Host value names an IP address (IPv4 dotted quad or [IPv6]), port aside. */
static bool
host_is_ip(const char *host)
{
	bool		digits_and_dots = true;

	if (host[0] == '[')
		return true;
	for (const char *p = host; *p && *p != ':'; p++)
		if (!((*p >= '0' && *p <= '9') || *p == '.'))
			digits_and_dots = false;
	return digits_and_dots;
}

char *
Sigv4Presign(const Sigv4Config *cfg, const char *method, const char *encoded_key,
			 int64 at, int expires, char **canonical, char **error)
{
	char	   *scheme;
	char	   *host;
	char		amz_date[17];
	char		signature[65];
	struct tm	tm;
	time_t		t = (time_t) at;
	StringInfoData uri;
	StringInfoData query;
	StringInfoData creq;
	StringInfoData cred;
	char	   *url;
	bool		path_style;

	*error = NULL;
	if (strcmp(method, "GET") != 0 && strcmp(method, "PUT") != 0 && strcmp(method, "HEAD") != 0 &&
		strcmp(method, "DELETE") != 0)
	{
		*error = pstrdup("the method must be GET, PUT, HEAD or DELETE");
		return NULL;
	}
	if (expires < 1 || expires > SIGV4_MAX_EXPIRES)
	{
		*error = pstrdup("expires must be between 1 second and 7 days");
		return NULL;
	}
	if (!region_ok(cfg->region))
	{
		*error = pstrdup("pgcloud.s3_region must be a region name such as us-east-1");
		return NULL;
	}
	if (!bucket_ok(cfg->bucket))
	{
		*error = pstrdup("pgcloud.s3_bucket is not a valid bucket name (3 to 63 of a-z 0-9 . -)");
		return NULL;
	}
	if (!printable_token(cfg->access_key_id, 128))
	{
		*error = pstrdup("pgcloud.s3_access_key_id must be 1 to 128 printable characters");
		return NULL;
	}
	if (!printable_token(cfg->secret_access_key, 256))
	{
		*error = pstrdup("pgcloud.s3_secret_access_key must be 1 to 256 printable characters");
		return NULL;
	}
	if (!printable_token(encoded_key, 4096) || strchr(encoded_key, '?') || strchr(encoded_key, '#'))
	{
		*error = pstrdup("the object key must be URI-encoded");
		return NULL;
	}
	if (!parse_endpoint(cfg->endpoint, &scheme, &host, error))
		return NULL;
	/* No virtual host under an IP address: path-style then, as botocore does. */
	path_style = cfg->path_style || host_is_ip(host);
	if (!path_style)
		host = psprintf("%s.%s", cfg->bucket, host);
	if (gmtime_r(&t, &tm) == NULL || strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", &tm) != 16)
	{
		*error = pstrdup("the signing time is out of range");
		return NULL;
	}

	initStringInfo(&uri);
	if (path_style)
		appendStringInfo(&uri, "/%s", cfg->bucket);
	appendStringInfo(&uri, "/%s", encoded_key);

	initStringInfo(&cred);
	appendStringInfo(&cred, "%s/%.8s/%s/s3/aws4_request", cfg->access_key_id, amz_date, cfg->region);
	initStringInfo(&query);
	appendStringInfoString(&query, "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=");
	Sigv4UriEncode(&query, cred.data, cred.len, false);
	appendStringInfo(&query, "&X-Amz-Date=%s&X-Amz-Expires=%d&X-Amz-SignedHeaders=host", amz_date, expires);

	initStringInfo(&creq);
	appendStringInfo(&creq, "%s\n%s\n%s\nhost:%s\n\nhost\nUNSIGNED-PAYLOAD", method, uri.data, query.data, host);
	Sigv4Signature(cfg->secret_access_key, amz_date, cfg->region, "s3", creq.data, creq.len, signature);

	url = psprintf("%s://%s%s?%s&X-Amz-Signature=%s", scheme, host, uri.data, query.data, signature);
	if (canonical != NULL)
		*canonical = creq.data;
	else
		pfree(creq.data);
	pfree(uri.data);
	pfree(query.data);
	pfree(cred.data);
	return url;
}
