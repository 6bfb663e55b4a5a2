/*
 * http_transfer.c — one outbound request of the HTTP executor: builds the
 * libcurl easy handle (URL from the target's setting + the intent's path,
 * headers, body, credentials added here and nowhere else, TLS verification
 * on with pgcloud.ca_bundle as an extra CA file, connect and total timeouts),
 * captures the response (body cut at core.http_response_max_bytes) and turns
 * the result into an outcome for pgcloud.http_record().
 *
 * libcurl calls the write and read callbacks from inside
 * curl_multi_socket_action(): they only touch malloc'd memory and never raise
 * a PostgreSQL error. Every handle and list is freed by HttpTransferFree(),
 * on every path.
 */
#include "http.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/json.h"

#define MAX_RESPONSE_HEADERS 100
#define MAX_HEADER_VALUE 4096

const char *const HttpTargetNames[HTTP_TARGETS] = {"stripe", "maas", "smtp", "test", "s3"};

static char *
mstrdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* ---- libcurl callbacks (no palloc, no ereport) ---------------------------- */

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	HttpTransfer *t = (HttpTransfer *) userdata;
	size_t		n = size * nmemb;
	size_t		room = t->resp_max > t->resp_len ? t->resp_max - t->resp_len : 0;
	size_t		take = Min(n, room);

	if (take < n)
		t->truncated = true;
	if (take == 0)
		return n;
	if (t->resp_len + take + 1 > t->resp_cap)
	{
		size_t		cap = Max(t->resp_cap * 2, (size_t) 4096);
		char	   *grown;

		while (cap < t->resp_len + take + 1)
			cap *= 2;
		cap = Min(cap, t->resp_max + 1);
		grown = realloc(t->resp, cap);
		if (grown == NULL)
		{
			t->oom = true;
			return 0;			/* aborts the transfer with CURLE_WRITE_ERROR */
		}
		t->resp = grown;
		t->resp_cap = cap;
	}
	memcpy(t->resp + t->resp_len, ptr, take);
	t->resp_len += take;
	return n;
}

static size_t
read_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	HttpTransfer *t = (HttpTransfer *) userdata;
	size_t		room = size * nitems;
	size_t		left = t->body_len - t->body_pos;
	size_t		n = Min(room, left);

	memcpy(buffer, t->body + t->body_pos, n);
	t->body_pos += n;
	return n;
}

/* ---- building a request ----------------------------------------------------- */

static bool
add_header(HttpTransfer *t, const char *line)
{
	struct curl_slist *l = curl_slist_append(t->headers, line);

	if (l == NULL)
		return false;
	t->headers = l;
	return true;
}

/* Adds a header holding a secret and wipes our copy of it. */
static bool
add_secret_header(HttpTransfer *t, char *line)
{
	bool		ok = add_header(t, line);

	explicit_bzero(line, strlen(line));
	pfree(line);
	return ok;
}

static const char *
target_base_url(HttpTarget target, const char **setting)
{
	switch (target)
	{
		case HTTP_TARGET_STRIPE:
			*setting = "pgcloud.stripe_api_url";
			return pgcloud_stripe_api_url;
		case HTTP_TARGET_MAAS:
			*setting = "pgcloud.maas_url";
			return pgcloud_maas_url;
		case HTTP_TARGET_SMTP:
			*setting = "pgcloud.smtp_url";
			return pgcloud_smtp_url;
		case HTTP_TARGET_TEST:
			*setting = "pgcloud.test_http_url";
			return pgcloud_test_http_url;
		case HTTP_TARGET_S3:
			*setting = "pgcloud.s3_endpoint";
			return pgcloud_s3_endpoint;
		default:
			*setting = "?";
			return NULL;
	}
}

#define SETOPT(opt, val) \
	do { \
		CURLcode	rc_ = curl_easy_setopt(t->easy, (opt), (val)); \
		if (rc_ != CURLE_OK) \
		{ \
			*error = psprintf("could not set up the request: %s", curl_easy_strerror(rc_)); \
			return false; \
		} \
	} while (0)

static bool
setup_common(HttpTransfer *t, const HttpPolicy *policy, char **error)
{
	SETOPT(CURLOPT_URL, t->url);
	SETOPT(CURLOPT_PRIVATE, (void *) t);
	SETOPT(CURLOPT_ERRORBUFFER, t->errbuf);
	SETOPT(CURLOPT_NOSIGNAL, 1L);
	SETOPT(CURLOPT_CONNECTTIMEOUT_MS, policy->connect_timeout_ms);
	SETOPT(CURLOPT_TIMEOUT_MS, policy->total_timeout_ms);
	SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
	SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
	if (pgcloud_ca_bundle != NULL && pgcloud_ca_bundle[0] != '\0')
		SETOPT(CURLOPT_CAINFO, pgcloud_ca_bundle);
	SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
	SETOPT(CURLOPT_WRITEDATA, (void *) t);
	return true;
}

static bool
setup_http(HttpTransfer *t, const HttpClaimed *c, char **error)
{
	char	   *auth = NULL;

	SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
	/*
	 * HTTP/2 where the target offers it over TLS (ALPN), its streams
	 * multiplexed on the connections already open. No CURLOPT_PIPEWAIT: with
	 * it a request waits until the first answer on a new HTTP/1.1
	 * connection says it cannot be shared, which serialises the first
	 * requests to a slow target (core_http_crash saw that).
	 */
	SETOPT(CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
	if (!add_header(t, "User-Agent: pgcloud/" EXTVERSION) || !add_header(t, "Expect:"))
		goto oom;
	if (c->content_type != NULL && !add_header(t, psprintf("Content-Type: %s", c->content_type)))
		goto oom;
	if (!add_header(t, psprintf("Idempotency-Key: %s", c->idempotency_key)))
		goto oom;
	for (int i = 0; i < c->nheaders; i++)
		if (!add_header(t, c->header_lines[i]))
			goto oom;
	if (t->target == HTTP_TARGET_STRIPE && !HttpStripeAuthHeader(&auth, error))
		return false;
	if (t->target == HTTP_TARGET_MAAS && !HttpMaasAuthHeader(&auth, error))
		return false;
	if (auth != NULL && !add_secret_header(t, auth))
		goto oom;
	SETOPT(CURLOPT_HTTPHEADER, t->headers);

	if (strcmp(c->method, "GET") == 0)
		SETOPT(CURLOPT_HTTPGET, 1L);
	else if (strcmp(c->method, "HEAD") == 0)
		SETOPT(CURLOPT_NOBODY, 1L);
	else
	{
		if (strcmp(c->method, "POST") != 0)
			SETOPT(CURLOPT_CUSTOMREQUEST, c->method);
		if (t->body != NULL || strcmp(c->method, "DELETE") != 0)
		{
			SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) t->body_len);
			SETOPT(CURLOPT_POSTFIELDS, t->body ? t->body : "");
		}
	}
	return true;

oom:
	*error = pstrdup("out of memory while building the request");
	return false;
}

/*
 * Whether the URL's host is one the policy core.plaintext_allowed_hosts
 * names (credentials may travel to it unencrypted).
 */
static bool
plaintext_allowed(const char *url, const HttpPolicy *policy)
{
	CURLU	   *u = curl_url();
	char	   *host = NULL;
	bool		ok = false;

	if (u == NULL)
		return false;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK
		&& curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host != NULL)
	{
		char	   *needle = psprintf(",%s,", host);

		for (char *p = needle; *p; p++)
			*p = pg_tolower((unsigned char) *p);
		/* curl keeps IPv6 literals in brackets; the policy may list them bare */
		ok = strstr(policy->plaintext_hosts, needle) != NULL;
		if (!ok && host[0] == '[')
		{
			needle = psprintf(",%.*s,", (int) strlen(host) - 2, host + 1);
			ok = strstr(policy->plaintext_hosts, needle) != NULL;
		}
		curl_free(host);
	}
	curl_url_cleanup(u);
	return ok;
}

static bool
setup_smtp(HttpTransfer *t, const HttpClaimed *c, const HttpPolicy *policy, char **error)
{
	struct curl_slist *l;

	SETOPT(CURLOPT_PROTOCOLS_STR, "smtp,smtps");
	/*
	 * smtps:// is TLS from the start; smtp:// must upgrade with STARTTLS
	 * (verified) or the transfer fails, unless the policy allows the host
	 * in plaintext (a local relay, the tests' fake).
	 */
	SETOPT(CURLOPT_USE_SSL, plaintext_allowed(t->url, policy) ? (long) CURLUSESSL_TRY : (long) CURLUSESSL_ALL);
	t->mail_from = mstrdup(psprintf("<%s>", c->mail_from ? c->mail_from : ""));
	l = curl_slist_append(NULL, psprintf("<%s>", c->path));
	if (t->mail_from == NULL || l == NULL)
	{
		*error = pstrdup("out of memory while building the message");
		return false;
	}
	t->rcpt = l;
	SETOPT(CURLOPT_MAIL_FROM, t->mail_from);
	SETOPT(CURLOPT_MAIL_RCPT, t->rcpt);
	SETOPT(CURLOPT_UPLOAD, 1L);
	SETOPT(CURLOPT_READFUNCTION, read_cb);
	SETOPT(CURLOPT_READDATA, (void *) t);
	SETOPT(CURLOPT_INFILESIZE_LARGE, (curl_off_t) t->body_len);
	return true;
}

/*
 * A transfer ready for curl_multi_add_handle(), or NULL with *error set
 * (palloc'd, no secret in it) when the request cannot be made.
 */
HttpTransfer *
HttpTransferCreate(HttpTarget target, const HttpClaimed *c, const HttpPolicy *policy, char **error)
{
	HttpTransfer *t = calloc(1, sizeof(HttpTransfer));
	const char *setting;
	const char *base = target_base_url(target, &setting);
	bool		ok;

	*error = NULL;
	if (t == NULL)
	{
		*error = pstrdup("out of memory");
		return NULL;
	}
	t->target = target;
	strlcpy(t->id, c->id, sizeof(t->id));
	t->attempt = c->attempt;
	t->resp_max = policy->response_max_bytes;
	if (base == NULL || base[0] == '\0')
	{
		*error = psprintf("%s is not set", setting);
		HttpTransferFree(t);
		return NULL;
	}
	if (target == HTTP_TARGET_SMTP)
		t->url = mstrdup(base);
	else if (target == HTTP_TARGET_S3)
	{
		/* The path is the URI-encoded object key; the URL is signed now (SigV4, query). */
		char	   *signed_url = HttpS3SignedUrl(c->method, c->path, error);

		if (signed_url == NULL)
		{
			HttpTransferFree(t);
			return NULL;
		}
		t->url = mstrdup(signed_url);
	}
	else
	{
		size_t		blen = strlen(base);

		while (blen > 0 && base[blen - 1] == '/')
			blen--;
		t->url = mstrdup(psprintf("%.*s%s", (int) blen, base, c->path));
	}
	if (c->body != NULL)
	{
		t->body_len = strlen(c->body);
		t->body = malloc(t->body_len + 1);
		if (t->body != NULL)
			memcpy(t->body, c->body, t->body_len + 1);
	}
	t->easy = curl_easy_init();
	if (t->url == NULL || t->easy == NULL || (c->body != NULL && t->body == NULL))
	{
		*error = pstrdup("out of memory while building the request");
		HttpTransferFree(t);
		return NULL;
	}
	/* Credentials (Stripe key, MAAS OAuth secret) never cross the network in plaintext. */
	if ((target == HTTP_TARGET_STRIPE || target == HTTP_TARGET_MAAS)
		&& pg_strncasecmp(t->url, "https://", 8) != 0 && !plaintext_allowed(t->url, policy))
	{
		*error = psprintf("insecure transport: %s is not https, and policy core.plaintext_allowed_hosts does not name its host",
						  setting);
		HttpTransferFree(t);
		return NULL;
	}
	ok = setup_common(t, policy, error) &&
		(target == HTTP_TARGET_SMTP ? setup_smtp(t, c, policy, error) : setup_http(t, c, error));
	if (!ok)
	{
		HttpTransferFree(t);
		return NULL;
	}
	return t;
}

void
HttpTransferFree(HttpTransfer *t)
{
	if (t == NULL)
		return;
	if (t->easy != NULL)
		curl_easy_cleanup(t->easy);
	if (t->headers != NULL)
		curl_slist_free_all(t->headers);	/* holds the credentials: gone with it */
	if (t->rcpt != NULL)
		curl_slist_free_all(t->rcpt);
	free(t->mail_from);
	free(t->url);
	free(t->body);
	free(t->resp);
	free(t);
}

/* ---- the outcome ------------------------------------------------------------- */

/*
 * data[0..len) as text the database accepts: invalid byte sequences and NUL
 * bytes become '?'. palloc'd, NUL-terminated.
 */
char *
HttpCleanText(const char *data, size_t len)
{
	int			enc = GetDatabaseEncoding();
	char	   *out = palloc(len + 1);
	size_t		i = 0;
	size_t		o = 0;

	while (i < len)
	{
		int			l = pg_encoding_verifymbchar(enc, data + i, (int) Min(len - i, (size_t) 8));

		if (l <= 0)
		{
			out[o++] = '?';
			i++;
			continue;
		}
		memcpy(out + o, data + i, l);
		o += l;
		i += l;
	}
	out[o] = '\0';
	return out;
}

static char *
headers_json(CURL *easy)
{
	StringInfoData buf;
	struct curl_header *h = NULL;
	struct curl_header *prev = NULL;
	char	   *names[MAX_RESPONSE_HEADERS];
	StringInfoData values[MAX_RESPONSE_HEADERS];
	int			n = 0;

	while ((h = curl_easy_nextheader(easy, CURLH_HEADER, -1, prev)) != NULL)
	{
		char	   *name = HttpCleanText(h->name, strlen(h->name));
		char	   *value = HttpCleanText(h->value, Min(strlen(h->value), (size_t) MAX_HEADER_VALUE));
		int			i;

		prev = h;
		for (char *p = name; *p; p++)
			*p = pg_ascii_tolower((unsigned char) *p);
		for (i = 0; i < n; i++)
			if (strcmp(names[i], name) == 0)
				break;
		if (i < n)
		{
			appendStringInfoString(&values[i], ", ");
			appendStringInfoString(&values[i], value);
			continue;
		}
		if (n == MAX_RESPONSE_HEADERS)
			continue;
		names[n] = name;
		initStringInfo(&values[n]);
		appendStringInfoString(&values[n], value);
		n++;
	}
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		escape_json(&buf, names[i]);
		appendStringInfoString(&buf, ": ");
		escape_json(&buf, values[i].data);
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

static char *
describe_error(HttpTransfer *t, CURLcode result, long code)
{
	StringInfoData buf;

	initStringInfo(&buf);
	if (t->oom)
		appendStringInfoString(&buf, "out of memory while receiving the response");
	else
	{
		appendStringInfo(&buf, "%s (curl error %d)", curl_easy_strerror(result), (int) result);
		if (t->errbuf[0] != '\0')
			appendStringInfo(&buf, ": %s", t->errbuf);
	}
	if (code > 0)
		appendStringInfo(&buf, t->target == HTTP_TARGET_SMTP ? " (SMTP reply %ld)" : " (after HTTP %ld)", code);
	return HttpCleanText(buf.data, buf.len);
}

void
HttpTransferOutcome(HttpTransfer *t, CURLcode result, HttpOutcome *out)
{
	long		code = 0;

	memset(out, 0, sizeof(*out));
	out->retry_after = -1;
	(void) curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);

	if (t->target == HTTP_TARGET_SMTP)
	{
		if (result == CURLE_OK)
		{
			out->has_status = true;
			out->status = code > 0 ? (int) code : 250;
		}
		else
		{
			/* A refusal (4xx: try again later, 5xx: permanent) or no answer at all. */
			out->has_status = code >= 400 && code <= 599;
			out->status = (int) code;
			out->error = describe_error(t, result, code);
		}
		return;
	}

	if (result != CURLE_OK || code <= 0)
	{
		out->error = describe_error(t, result, code);
		return;
	}
	out->has_status = true;
	out->status = (int) code;
	out->headers_json = headers_json(t->easy);
	out->body = HttpCleanText(t->resp ? t->resp : "", t->resp_len);
	out->truncated = t->truncated;
	{
		struct curl_header *h;

		/* Seconds, or an HTTP date (libcurl turns it into seconds from now). */
		if (curl_easy_header(t->easy, "Retry-After", 0, CURLH_HEADER, -1, &h) == CURLHE_OK)
		{
			const char *v = h->value;
			curl_off_t	secs = 0;

			while (*v == ' ' || *v == '\t')
				v++;
			if (*v >= '0' && *v <= '9')
			{
				long long	n = 0;

				for (; *v >= '0' && *v <= '9' && n < PG_INT32_MAX; v++)
					n = n * 10 + (*v - '0');
				out->retry_after = (int) Min(n, (long long) PG_INT32_MAX);
			}
			else if (curl_easy_getinfo(t->easy, CURLINFO_RETRY_AFTER, &secs) == CURLE_OK && secs > 0)
				out->retry_after = (int) Min(secs, (curl_off_t) PG_INT32_MAX);
		}
	}
}
