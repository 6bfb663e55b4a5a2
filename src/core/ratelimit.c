/*
 * ratelimit.c — pgcloud.pre_request(): the per-principal token bucket.
 *
 * Buckets live in a shared-memory hash (pgcloud.rate_limit_max_principals
 * entries) guarded by one named LWLock tranche. Rates come from policy
 * (core.rate_limit_per_second, core.rate_limit_burst). A principal is the
 * JWT subject (user or service), or for anonymous requests the client
 * address PostgREST forwards. When the library was not preloaded the shared
 * memory does not exist, and pre_request() says so instead of letting every
 * request through. Before taking a token it refuses access tokens of revoked
 * sessions (see reject_revoked_session).
 */
#include "pgcloud.h"

#include <arpa/inet.h>
#include <math.h>

#include "utils/hsearch.h"
#include "utils/json.h"

PG_FUNCTION_INFO_V1(pgcloud_pre_request);
PG_FUNCTION_INFO_V1(pgcloud_rate_limit_status);
PG_FUNCTION_INFO_V1(pgcloud_rate_limit_reset);

#define PRINCIPAL_LEN 96

typedef struct RateBucket
{
	char		principal[PRINCIPAL_LEN];	/* hash key, NUL-padded */
	double		tokens;
	double		rate;			/* of the bucket's endpoint class */
	double		burst;
	TimestampTz refilled_at;
	int64		allowed;
	int64		denied;
} RateBucket;

typedef struct RateLimitShared
{
	LWLock	   *lock;
} RateLimitShared;

static RateLimitShared *rl_shared = NULL;
static HTAB *rl_buckets = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
rl_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(RateLimitShared)));
	RequestAddinShmemSpace(hash_estimate_size(pgcloud_rate_limit_max_principals,
											  sizeof(RateBucket)));
	RequestNamedLWLockTranche("pgcloud_rate_limit", 1);
}

static void
rl_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	rl_shared = ShmemInitStruct("pgcloud rate limit", sizeof(RateLimitShared), &found);
	if (!found)
		rl_shared->lock = &(GetNamedLWLockTranche("pgcloud_rate_limit"))->lock;
	memset(&info, 0, sizeof(info));
	info.keysize = PRINCIPAL_LEN;
	info.entrysize = sizeof(RateBucket);
	rl_buckets = ShmemInitHash("pgcloud rate limit buckets",
							   pgcloud_rate_limit_max_principals,
							   pgcloud_rate_limit_max_principals,
							   &info, HASH_ELEM | HASH_STRINGS);
	LWLockRelease(AddinShmemInitLock);
}

void
PgcloudRateLimitInit(void)
{
	if (!process_shared_preload_libraries_in_progress || IsBinaryUpgrade)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = rl_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = rl_shmem_startup;
}

static void
require_shmem(void)
{
	if (rl_shared == NULL || rl_buckets == NULL)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("pgcloud rate limiter is not available"),
				errdetail("pgcloud is not in shared_preload_libraries, so its shared memory was not allocated."),
				errhint("Add pgcloud to shared_preload_libraries in postgresql.conf and restart the server."));
}

/*
 * Endpoint classes: each has its own bucket per principal and its own
 * policy (core.rate_limit_<class>_per_second / _burst; the default class
 * uses core.rate_limit_per_second / core.rate_limit_burst). PostgREST puts
 * the request path in request.path (/rpc/<function> behind the proxy).
 */
static const char *
endpoint_class(void)
{
	const char *path = GetConfigOption("request.path", true, false);
	const char *fn;

	if (path == NULL || (fn = strstr(path, "/rpc/")) == NULL)
		return NULL;
	fn += 5;
	if (strcmp(fn, "token_exchange") == 0 || strcmp(fn, "dev_login") == 0 || strcmp(fn, "service_token") == 0)
		return "signin";
	if (strcmp(fn, "refresh_token") == 0)
		return "refresh";
	if (strcmp(fn, "stripe_webhook") == 0)
		return "webhook";
	return NULL;
}

/*
 * The client address of an anonymous request, as the trusted proxies saw
 * it. Each proxy appends the address it received the request from to
 * X-Forwarded-For, so with N trusted proxies (policy
 * core.rate_limit_trusted_proxies) the client is the N-th entry from the
 * right; whatever the client wrote itself sits to the left of it and is
 * never used. Fewer than N entries means the request did not come through
 * the proxies: it goes to one "unattributed" bucket. IPv6 clients are keyed
 * by their /64, as one host can hold a whole /64. Returns false when there
 * is no usable address.
 */
static bool
client_address(char *out, size_t outlen)
{
	int			hops = (int) PgcloudPolicyNumber("core.rate_limit_trusted_proxies");
	char	   *xff;
	char	   *entries[64];
	int			n = 0;
	char	   *p;
	char	   *addr;
	unsigned char buf[sizeof(struct in6_addr)];

	if (hops < 1)
		return false;
	xff = PgcloudRequestField("request.headers", "x-forwarded-for");
	if (xff == NULL)
		return false;
	/* split on commas, trimming blanks; keep the last 64 entries */
	for (p = strtok(xff, ","); p != NULL; p = strtok(NULL, ","))
	{
		char	   *e;

		while (*p == ' ' || *p == '\t')
			p++;
		e = p + strlen(p);
		while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
			*--e = '\0';
		if (n == lengthof(entries))
		{
			memmove(entries, entries + 1, sizeof(entries[0]) * (n - 1));
			n--;
		}
		entries[n++] = p;
	}
	if (n < hops)
		return false;
	addr = entries[n - hops];
	if (inet_pton(AF_INET, addr, buf) == 1)
	{
		inet_ntop(AF_INET, buf, out, outlen);
		return true;
	}
	if (inet_pton(AF_INET6, addr, buf) == 1)
	{
		memset(buf + 8, 0, 8);	/* the /64 */
		inet_ntop(AF_INET6, buf, out, outlen);
		strlcat(out, "/64", outlen);
		return true;
	}
	return false;
}

/*
 * The bucket key of this request: "[<class>/]sub:<subject>" when the JWT
 * has a subject, otherwise "[<class>/]anon:<client address>" (or
 * anon:unattributed, see client_address).
 */
static void
request_principal(char *out, const char *cls)
{
	char	   *sub = PgcloudRequestField("request.jwt.claims", "sub");
	char		addr[INET6_ADDRSTRLEN + 8];
	const char *prefix = cls ? cls : "";
	const char *slash = cls ? "/" : "";

	memset(out, 0, PRINCIPAL_LEN);
	if (sub != NULL && sub[0] != '\0')
	{
		snprintf(out, PRINCIPAL_LEN, "%s%ssub:%s", prefix, slash, sub);
		return;
	}
	if (!client_address(addr, sizeof(addr)))
		strlcpy(addr, "unattributed", sizeof(addr));
	snprintf(out, PRINCIPAL_LEN, "%s%sanon:%s", prefix, slash, addr);
}

/* Drops buckets idle long enough to be full again; returns how many. */
static int
evict_idle(TimestampTz now)
{
	HASH_SEQ_STATUS status;
	RateBucket *b;
	RateBucket *oldest = NULL;
	int			evicted = 0;

	hash_seq_init(&status, rl_buckets);
	while ((b = hash_seq_search(&status)) != NULL)
	{
		double		idle = (double) (now - b->refilled_at) / USECS_PER_SEC;

		if (b->tokens + idle * b->rate >= b->burst)
		{
			hash_search(rl_buckets, b->principal, HASH_REMOVE, NULL);
			evicted++;
		}
		else if (oldest == NULL || b->refilled_at < oldest->refilled_at)
			oldest = b;
	}
	if (evicted == 0 && oldest != NULL)
	{
		hash_search(rl_buckets, oldest->principal, HASH_REMOVE, NULL);
		evicted = 1;
	}
	return evicted;
}

/*
 * Takes one token; returns 0 when allowed, else the seconds until a token
 * is available.
 */
static double
take_token(const char *principal, double rate, double burst)
{
	TimestampTz now = GetCurrentTimestamp();
	RateBucket *b;
	bool		found;
	double		wait = 0;

	LWLockAcquire(rl_shared->lock, LW_EXCLUSIVE);
	b = hash_search(rl_buckets, principal, HASH_ENTER_NULL, &found);
	if (b == NULL && evict_idle(now) > 0)
		b = hash_search(rl_buckets, principal, HASH_ENTER_NULL, &found);
	if (b == NULL)
	{
		LWLockRelease(rl_shared->lock);
		elog(ERROR, "rate limiter table is full");
	}
	b->rate = rate;
	b->burst = burst;
	if (!found)
	{
		b->tokens = burst;
		b->refilled_at = now;
		b->allowed = 0;
		b->denied = 0;
	}
	else
	{
		double		elapsed = (double) (now - b->refilled_at) / USECS_PER_SEC;

		if (elapsed > 0)
			b->tokens = Min(burst, b->tokens + elapsed * rate);
		b->refilled_at = now;
	}
	if (b->tokens >= 1.0)
	{
		b->tokens -= 1.0;
		b->allowed++;
	}
	else
	{
		wait = (1.0 - b->tokens) / rate;
		b->denied++;
	}
	LWLockRelease(rl_shared->lock);
	return wait;
}

/*
 * Refuses a request whose access token names a revoked session (the sid
 * claim of pgcloud's own tokens): one primary-key lookup in
 * pgcloud.revoked_sessions. A sid that is not a uuid is not one of ours.
 */
static void
reject_revoked_session(void)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[1] = {UUIDOID};
	char	   *sid = PgcloudRequestField("request.jwt.claims", "sid");
	Datum		arg;
	bool		revoked;
	int			ret;

	if (sid == NULL || strlen(sid) != 36
		|| strspn(sid, "0123456789abcdefABCDEF-") != 36)
		return;
	arg = DirectFunctionCall1(uuid_in, CStringGetDatum(sid));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute_plan(PgcloudPlan(&plan, "SELECT 1 FROM pgcloud.revoked_sessions WHERE session_id = $1",
									   1, argtypes),
						   &arg, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "revoked session lookup failed: %s", SPI_result_code_string(ret));
	revoked = SPI_processed > 0;
	SPI_finish();
	if (revoked)
		PgcloudRaise("session_revoked", "this access token belongs to a session that has been revoked",
					 "Sign in again.", "{\"WWW-Authenticate\": \"Bearer error=\\\"invalid_token\\\"\"}");
}

/*
 * pgcloud.pre_request() RETURNS void — PostgREST's db-pre-request.
 */
Datum
pgcloud_pre_request(PG_FUNCTION_ARGS)
{
	char		principal[PRINCIPAL_LEN];
	double		rate;
	double		burst;
	double		wait;

	const char *cls;

	require_shmem();
	cls = endpoint_class();
	if (cls == NULL)
	{
		rate = PgcloudPolicyNumber("core.rate_limit_per_second");
		burst = PgcloudPolicyNumber("core.rate_limit_burst");
	}
	else
	{
		rate = PgcloudPolicyNumber(psprintf("core.rate_limit_%s_per_second", cls));
		burst = PgcloudPolicyNumber(psprintf("core.rate_limit_%s_burst", cls));
	}
	if (!(rate > 0) || !(burst >= 1))
		PgcloudRaise("policy_invalid",
					 psprintf("core.rate_limit%s%s_per_second must be > 0 and core.rate_limit%s%s_burst >= 1",
							  cls ? "_" : "", cls ? cls : "", cls ? "_" : "", cls ? cls : ""),
					 NULL, NULL);

	request_principal(principal, cls);
	reject_revoked_session();
	wait = take_token(principal, rate, burst);
	if (wait > 0)
	{
		int			retry_after = (int) ceil(wait);

		PgcloudRaise("rate_limited",
					 psprintf("at most %g requests per second are allowed (burst %g)%s%s", rate, burst,
							  cls ? " for endpoint class " : "", cls ? cls : ""),
					 psprintf("Retry after %d second%s.", retry_after, retry_after == 1 ? "" : "s"),
					 psprintf("{\"Retry-After\": \"%d\"}", retry_after));
	}
	PG_RETURN_VOID();
}

/*
 * pgcloud.rate_limit_status() RETURNS TABLE (principal text, tokens float8,
 *   refilled_at timestamptz, allowed bigint, denied bigint) — for operators.
 */
Datum
pgcloud_rate_limit_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	RateBucket *b;

	require_shmem();
	InitMaterializedSRF(fcinfo, 0);
	LWLockAcquire(rl_shared->lock, LW_SHARED);
	hash_seq_init(&status, rl_buckets);
	while ((b = hash_seq_search(&status)) != NULL)
	{
		Datum		values[5];
		bool		nulls[5] = {0};

		values[0] = CStringGetTextDatum(b->principal);
		values[1] = Float8GetDatum(b->tokens);
		values[2] = TimestampTzGetDatum(b->refilled_at);
		values[3] = Int64GetDatum(b->allowed);
		values[4] = Int64GetDatum(b->denied);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(rl_shared->lock);
	return (Datum) 0;
}

/* pgcloud.rate_limit_reset(principal text DEFAULT NULL) RETURNS bigint */
Datum
pgcloud_rate_limit_reset(PG_FUNCTION_ARGS)
{
	int64		removed = 0;

	require_shmem();
	LWLockAcquire(rl_shared->lock, LW_EXCLUSIVE);
	if (PG_ARGISNULL(0))
	{
		HASH_SEQ_STATUS status;
		RateBucket *b;

		hash_seq_init(&status, rl_buckets);
		while ((b = hash_seq_search(&status)) != NULL)
		{
			hash_search(rl_buckets, b->principal, HASH_REMOVE, NULL);
			removed++;
		}
	}
	else
	{
		char		key[PRINCIPAL_LEN];
		char	   *p = text_to_cstring(PG_GETARG_TEXT_PP(0));
		bool		found;

		memset(key, 0, sizeof(key));
		strlcpy(key, p, sizeof(key));
		hash_search(rl_buckets, key, HASH_REMOVE, &found);
		removed = found ? 1 : 0;
	}
	LWLockRelease(rl_shared->lock);
	PG_RETURN_INT64(removed);
}
