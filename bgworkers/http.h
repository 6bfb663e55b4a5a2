/*
 * http.h — the HTTP intent executor (bgworkers/http_*.c): one worker per
 * database sends the rows of pgcloud.http_intents with libcurl's multi
 * interface and records each outcome (sql/core/67_http.sql).
 *
 *   http_executor.c  the worker: claim, drive libcurl inside the latch loop,
 *                    record outcomes, run due callbacks, recover at start
 *   http_transfer.c  one request: the curl easy handle, its URL, headers,
 *                    body, response capture and the outcome
 *   http_auth.c      credentials added at send time (Stripe, MAAS OAuth,
 *                    S3 SigV4 query signature)
 */
#ifndef PGCLOUD_HTTP_H
#define PGCLOUD_HTTP_H

#include "workers.h"

#include <curl/curl.h>

typedef enum HttpTarget
{
	HTTP_TARGET_STRIPE = 0,
	HTTP_TARGET_MAAS,
	HTTP_TARGET_SMTP,
	HTTP_TARGET_TEST,
	HTTP_TARGET_S3,
	HTTP_TARGETS
} HttpTarget;

extern const char *const HttpTargetNames[HTTP_TARGETS];

/* Limits read from policy once per claim round. */
typedef struct HttpPolicy
{
	int			concurrency[HTTP_TARGETS];
	long		connect_timeout_ms;
	long		total_timeout_ms;
	size_t		response_max_bytes;
	char		plaintext_hosts[2048];	/* ",host1,host2," (core.plaintext_allowed_hosts) */
} HttpPolicy;

/* What pgcloud.http_claim() returned for one intent (palloc'd strings). */
typedef struct HttpClaimed
{
	char	   *id;
	char	   *method;
	char	   *path;
	char	   *body;			/* NULL when none */
	char	   *content_type;	/* NULL when none */
	char	  **header_lines;	/* "Name: value" */
	int			nheaders;
	char	   *mail_from;		/* smtp: envelope sender */
	char	   *idempotency_key;
	int			attempt;
} HttpClaimed;

/*
 * One request in flight. Everything libcurl may touch from its callbacks is
 * malloc'd (a callback must never raise a PostgreSQL error).
 */
typedef struct HttpTransfer
{
	CURL	   *easy;
	HttpTarget	target;
	char		id[40];
	int			attempt;
	char	   *url;
	struct curl_slist *headers;
	struct curl_slist *rcpt;	/* smtp */
	char	   *mail_from;		/* smtp */
	char	   *body;
	size_t		body_len;
	size_t		body_pos;		/* smtp upload position */
	char	   *resp;
	size_t		resp_len;
	size_t		resp_cap;
	size_t		resp_max;
	bool		truncated;
	bool		oom;
	char		errbuf[CURL_ERROR_SIZE];
	struct HttpTransfer *next;
} HttpTransfer;

/* The outcome handed to pgcloud.http_record() (palloc'd). */
typedef struct HttpOutcome
{
	bool		has_status;
	int			status;
	char	   *headers_json;	/* NULL when none */
	char	   *body;			/* NULL when none */
	bool		truncated;
	char	   *error;			/* NULL on success; not yet scrubbed */
	int			retry_after;	/* seconds, -1 when absent */
} HttpOutcome;

/* http_transfer.c */
extern HttpTransfer *HttpTransferCreate(HttpTarget target, const HttpClaimed *c, const HttpPolicy *policy,
										char **error);
extern void HttpTransferFree(HttpTransfer *t);
extern void HttpTransferOutcome(HttpTransfer *t, CURLcode result, HttpOutcome *out);
extern char *HttpCleanText(const char *data, size_t len);

/* http_auth.c */
extern bool HttpStripeAuthHeader(char **header, char **error);
extern bool HttpMaasAuthHeader(char **header, char **error);
extern char *HttpS3SignedUrl(const char *method, const char *path, char **error);

#endif
