/*
 * http_executor.c — the HTTP intent executor, one per database.
 *
 * Sends the rows of pgcloud.http_intents (sql/core/67_http.sql) with
 * libcurl's multi interface, inside the worker's latch loop: the sockets
 * libcurl asks for and the latch are waited on together (a WaitEventSet), so
 * the worker sleeps until a socket is ready, libcurl's timer is due, the next
 * retry is due, or a transaction that wrote an intent commits (it sets the
 * latch, shmem.c). No busy polling.
 *
 * One loop turn:
 *  1. when woken, or when transfers finished or a retry fell due, one
 *     round: claim due intents per target up to the target's free
 *     concurrency (core.http_concurrency, one statement for every target),
 *     committed in_flight (asynchronously) before anything is sent, and
 *     start their transfers (credentials added at send time,
 *     http_transfer.c) on the one multi handle, which keeps its connections
 *     open across rounds: HTTP/1.1 keep-alive, HTTP/2 multiplexing where the
 *     target offers it over TLS;
 *  2. while those are on the wire, in a second transaction, record the
 *     transfers finished since the last wake-up with one
 *     pgcloud.http_record_all() statement (which runs their callbacks, each
 *     in a subtransaction of its own: one that fails is undone alone and
 *     tried again later or given up; should the statement fail, each outcome
 *     is recorded on its own, see record_outcomes_in_work), committed
 *     synchronously (then run the failed final callbacks that are due
 *     again). A round that has just started new transfers may instead keep
 *     the outcomes of its window and record them with a later window's
 *     (one record statement and one synchronous commit for up to
 *     CARRY_WINDOWS + 1 windows), at most CARRY_MS after the first was
 *     kept (carry_outcomes). A round
 *     with nothing to record claims in one transaction;
 *  3. wait; let libcurl act on ready sockets and its timer.
 *
 * Crash safety: an intent is committed in_flight before it is sent (and
 * stays so until its outcome is recorded, carried or not); at start
 * the worker puts every in_flight intent back to pending (the new try sends
 * the same Idempotency-Key, so the remote side deduplicates), and a final
 * callback commits together with the record that it ran. The transaction
 * that records outcomes commits synchronously (callback effects must not be
 * seen, and acted on, then lost); a claim does not (lost in a crash, the
 * intent is pending, as recovery would make it).
 *
 * Errors are caught per intent and per round (each a unit of work,
 * PgcloudRunUnit in common.c): one bad row does not
 * stop the worker. SIGTERM ends the worker at its next interrupt check — the
 * wait returns at once, whatever the targets do — and every curl handle is
 * freed on the way out.
 */
#include "http.h"

#include "access/xact.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

PG_FUNCTION_INFO_V1(pgcloud_http_wake);

#define CALLBACK_BATCH 20
#define IDLE_WAIT_MS 60000L
/*
 * However it is woken, the worker claims again and lets libcurl look at
 * every transfer at least this often: a wake-up that went missing (a due
 * retry at a target that looked full, a socket event not delivered) costs
 * seconds, not IDLE_WAIT_MS. One claim statement per interval when idle.
 */
#define SAFETY_ROUND_MS 2000L
#define MAX_CONCURRENCY 256
/* How long a round waits for the transfers still in flight (gather_finished). */
#define GATHER_MS 1L
/*
 * How long the outcomes of one window may wait to be recorded with those of
 * the next (carry_outcomes): a round that has just started new transfers
 * records the finished ones together with the next window's, one
 * synchronous commit for two windows, but never later than this.
 */
#define CARRY_MS 3L
/*
 * How many windows' outcomes may be carried before they are recorded, and
 * while fewer than how many are kept: small windows (a concurrency of 8)
 * share one record among three; a large one already shares its round's
 * fixed cost among many, and carrying more would only leave more answered
 * intents in flight for the claim to skip.
 */
#define CARRY_WINDOWS 2
#define CARRY_MAX_OUTCOMES 16

typedef struct SockEntry
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN / OUT / INOUT */
	int			pos;			/* its event in wait_set, -1 when not in it */
	bool		changed;		/* what changed since it was put in wait_set */
} SockEntry;

typedef struct ClaimedItem
{
	HttpTarget	target;
	HttpClaimed c;
} ClaimedItem;

static CURLM *multi = NULL;
static HttpTransfer *transfers = NULL;	/* in flight */
static int	inflight[HTTP_TARGETS];
static SockEntry *socks = NULL;
static int	nsocks = 0;
static int	socks_cap = 0;
/*
 * The latch and libcurl's sockets, kept across waits: built again only when
 * libcurl adds or removes a socket; a socket whose direction changed is
 * modified in place (one epoll_ctl, not a new epoll set per wait).
 */
static WaitEventSet *wait_set = NULL;
static bool wait_set_stale = true;
static bool curl_timer_set = false;
static TimestampTz curl_deadline = 0;
static TimestampTz next_due_at = 0;	/* 0: nothing known to be due */
static int	round_errors = 0;

/*
 * Outcomes of windows kept to be recorded with a later one's (carry_outcomes),
 * in carry_cxt; their intents are still in_flight in the table (should the
 * worker stop now, they are sent again with the same key, like any intent in
 * flight). Recorded no later than carry_deadline.
 */
static MemoryContext carry_cxt = NULL;
static struct Finished *carried = NULL;
static int	ncarried = 0;
static int	carried_windows = 0;
static TimestampTz carry_deadline = 0;
static HttpPolicy policy;
static TimestampTz policy_loaded_at = 0;	/* 0: read them at the next claim */

#define POLICY_TTL_MS 1000

static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr record_plan = NULL;
static SPIPlanPtr record_all_plan = NULL;
static SPIPlanPtr next_due_plan = NULL;
static SPIPlanPtr callback_plan = NULL;
static SPIPlanPtr due_callbacks_plan = NULL;
static SPIPlanPtr async_commit_plan = NULL;

/*
 * pgcloud.http_wake() RETURNS boolean — wakes this database's executor when
 * the current transaction commits; false when pgcloud is not preloaded.
 */
Datum
pgcloud_http_wake(PG_FUNCTION_ARGS)
{
	if (PgcloudWorkers == NULL)
		PG_RETURN_BOOL(false);
	PgcloudWakeAtCommit(PGCLOUD_WORKER_HTTP);
	PG_RETURN_BOOL(true);
}

/* ---- libcurl's socket and timer callbacks (plain C) --------------------- */

static int
sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	int			i;

	(void) easy;
	(void) userp;
	(void) socketp;

	for (i = 0; i < nsocks; i++)
		if (socks[i].fd == s)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < nsocks)
			socks[i] = socks[--nsocks];
		wait_set_stale = true;
		return 0;
	}
	if (i == nsocks)
	{
		if (nsocks == socks_cap)
		{
			int			cap = socks_cap ? socks_cap * 2 : 16;
			SockEntry  *grown = realloc(socks, sizeof(SockEntry) * cap);

			if (grown == NULL)
				return -1;
			socks = grown;
			socks_cap = cap;
		}
		socks[nsocks].fd = s;
		socks[nsocks].pos = -1;
		socks[nsocks].what = 0;
		nsocks++;
		wait_set_stale = true;
	}
	if (socks[i].what != what)
		socks[i].changed = true;
	socks[i].what = what;
	return 0;
}

static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	(void) m;
	(void) userp;

	if (timeout_ms < 0)
		curl_timer_set = false;
	else
	{
		curl_timer_set = true;
		curl_deadline = GetCurrentTimestamp() + (TimestampTz) timeout_ms * 1000;
	}
	return 0;
}

static void
shutdown_transfers(int code, Datum arg)
{
	(void) code;
	(void) arg;

	while (transfers != NULL)
	{
		HttpTransfer *t = transfers;

		transfers = t->next;
		if (multi != NULL)
			curl_multi_remove_handle(multi, t->easy);
		HttpTransferFree(t);
	}
	if (multi != NULL)
		curl_multi_cleanup(multi);
	multi = NULL;
	if (wait_set != NULL)
		FreeWaitEventSet(wait_set);
	wait_set = NULL;
	free(socks);
	socks = NULL;
	nsocks = socks_cap = 0;
	curl_global_cleanup();
}

/* ---- plans (prepared once per backend, PgcloudPlan) ---------------------- */

static void
prepare_plans(void)
{
	Oid			claim_types[2] = {TEXTARRAYOID, INT4ARRAYOID};
	Oid			record_types[8] = {TEXTOID, INT4OID, INT4OID, TEXTOID, TEXTOID, BOOLOID, TEXTOID, INT4OID};
	Oid			callback_types[1] = {TEXTOID};
	Oid			record_all_types[8] = {TEXTARRAYOID, INT4ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	BOOLARRAYOID, TEXTARRAYOID, INT4ARRAYOID};
	Oid			next_due_types[1] = {TEXTARRAYOID};

	PgcloudPlan(&claim_plan, "SELECT id::text, method, path, body, content_type, header_lines, mail_from, "
				"idempotency_key, attempt, target FROM pgcloud.http_claim_all($1, $2)", 2, claim_types);
	PgcloudPlan(&record_plan, "SELECT pgcloud.http_record($1::uuid, $2, $3, $4::jsonb, $5, $6, $7, $8)",
				8, record_types);
	PgcloudPlan(&record_all_plan, "SELECT intent_id::text, state FROM pgcloud.http_record_all($1::uuid[], $2, $3, "
				"$4::jsonb[], $5, $6, $7, $8)", 8, record_all_types);
	PgcloudPlan(&next_due_plan, "SELECT pgcloud.http_next_due_ms($1)", 1, next_due_types);
	PgcloudPlan(&callback_plan, "SELECT pgcloud.http_run_callback($1::uuid, true)", 1, callback_types);
	PgcloudPlan(&due_callbacks_plan, "SELECT id::text FROM pgcloud.http_callbacks_due("
				CppAsString2(CALLBACK_BATCH) ") AS id", 0, NULL);
	PgcloudPlan(&async_commit_plan, "SELECT pg_catalog.set_config('synchronous_commit', 'off', true)", 0, NULL);
}

static long
clamp_long(const char *s, long lo, long hi, long dflt)
{
	long		v;

	if (s == NULL)
		return dflt;
	v = strtol(s, NULL, 10);
	return Max(lo, Min(hi, v));
}

/* Reads the limits (inside a transaction with SPI connected). */
static void
load_policy(void)
{
	HeapTuple	tup;
	TupleDesc	desc;

	if (SPI_execute("SELECT c ->> 'stripe', c ->> 'maas', c ->> 'smtp', c ->> 'test', c ->> 's3', "
					"pgcloud.policy('core.http_connect_timeout_ms', NULL::bigint), "
					"pgcloud.policy('core.http_total_timeout_ms', NULL::bigint), "
					"pgcloud.policy('core.http_response_max_bytes', NULL::bigint), "
					"(SELECT ',' || pg_catalog.string_agg(pg_catalog.lower(h), ',') || ',' "
					"   FROM pg_catalog.jsonb_array_elements_text(pgcloud.policy('core.plaintext_allowed_hosts', NULL::jsonb)) h) "
					"FROM (SELECT pgcloud.policy('core.http_concurrency', NULL::jsonb) AS c) p",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the HTTP policies");
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	for (int t = 0; t < HTTP_TARGETS; t++)
		policy.concurrency[t] = (int) clamp_long(SPI_getvalue(tup, desc, t + 1), 0, MAX_CONCURRENCY, 0);
	policy.connect_timeout_ms = clamp_long(SPI_getvalue(tup, desc, HTTP_TARGETS + 1), 1, 3600000L, 5000);
	policy.total_timeout_ms = clamp_long(SPI_getvalue(tup, desc, HTTP_TARGETS + 2), 1, 3600000L, 30000);
	policy.response_max_bytes = (size_t) clamp_long(SPI_getvalue(tup, desc, HTTP_TARGETS + 3), 0,
													16L * 1024 * 1024, 65536);
	{
		char	   *hosts = SPI_getvalue(tup, desc, HTTP_TARGETS + 4);

		strlcpy(policy.plaintext_hosts, hosts ? hosts : "", sizeof(policy.plaintext_hosts));
	}
}

/* ---- recording outcomes ----------------------------------------------------- */

/* One finished transfer waiting to be recorded. */
typedef struct Finished
{
	char		id[40];
	int			attempt;
	HttpTarget	target;
	HttpOutcome o;
} Finished;

/* Records one outcome (and runs its callback) in the current unit of work. */
static void
record_in_work(const char *id, int attempt, HttpTarget target, const HttpOutcome *o)
{
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	char	   *state;

	prepare_plans();
	values[0] = CStringGetTextDatum(id);
	values[1] = Int32GetDatum(attempt);
	values[2] = Int32GetDatum(o->status);
	nulls[2] = o->has_status ? ' ' : 'n';
	values[3] = o->headers_json ? CStringGetTextDatum(o->headers_json) : (Datum) 0;
	nulls[3] = o->headers_json ? ' ' : 'n';
	values[4] = o->body ? CStringGetTextDatum(o->body) : (Datum) 0;
	nulls[4] = o->body ? ' ' : 'n';
	values[5] = BoolGetDatum(o->truncated);
	values[6] = o->error ? CStringGetTextDatum(o->error) : (Datum) 0;
	nulls[6] = o->error ? ' ' : 'n';
	values[7] = Int32GetDatum(o->retry_after);
	nulls[7] = o->retry_after >= 0 ? ' ' : 'n';
	if (SPI_execute_plan(record_plan, values, nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "pgcloud.http_record() failed");
	state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (state != NULL && strcmp(state, "dead") == 0)
		ereport(LOG,
				errmsg("pgcloud http: intent %s to %s is dead after %d tries: %s", id,
					   HttpTargetNames[target], attempt,
					   o->error ? o->error : psprintf("status %d", o->status)));
}

typedef struct OutcomeUnit
{
	const char *id;
	int			attempt;
	HttpTarget	target;
	const HttpOutcome *o;
} OutcomeUnit;

static void
record_outcome_unit(void *arg)
{
	OutcomeUnit *u = (OutcomeUnit *) arg;

	record_in_work(u->id, u->attempt, u->target, u->o);
}

static void
record_outcome(const char *id, int attempt, HttpTarget target, const HttpOutcome *o, bool fallback)
{
	OutcomeUnit u = {.id = id, .attempt = attempt, .target = target, .o = o};
	char	   *failure;

	failure = PgcloudRunUnit("recording an HTTP outcome", record_outcome_unit, &u);
	if (failure == NULL)
	{
		PgcloudWorkerNoteActivity(1, 0);
		return;
	}
	ereport(LOG, errmsg("pgcloud http: could not record the outcome of intent %s: %s", id, failure));

	/* Don't leave the intent in flight: record the failure as a failed try. */
	if (!fallback)
	{
		HttpOutcome f = {0};

		f.retry_after = -1;
		f.error = psprintf("could not record the outcome: %s", failure);
		record_outcome(id, attempt, target, &f, true);
	}
}

typedef struct OutcomeBatch
{
	Finished   *f;
	int			n;
	char	  **failures;		/* per outcome: why its subtransaction rolled back, or NULL */
	int			recorded;
	MemoryContext cxt;			/* the caller's, for the failure messages */
} OutcomeBatch;

/* Fallback: each outcome in a subtransaction of its own, with pgcloud.http_record(). */
static void
record_each_in_work(OutcomeBatch *b)
{
	b->recorded = 0;
	for (int i = 0; i < b->n; i++)
	{
		OutcomeUnit u = {.id = b->f[i].id, .attempt = b->f[i].attempt, .target = b->f[i].target, .o = &b->f[i].o};

		b->failures[i] = PgcloudRunSubUnit(record_outcome_unit, &u, b->cxt);
		if (b->failures[i] == NULL)
			b->recorded++;
	}
}

/* A one-dimensional array of n elements of type elemtype (nulls[i]: element i is NULL). */
static Datum
make_array(Datum *elems, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, elemtype, typlen, typbyval, typalign));
}

/*
 * Records every outcome of the batch with one pgcloud.http_record_all()
 * statement (which runs the callbacks, each in a subtransaction of its own).
 */
static void
record_all_unit(void *arg)
{
	OutcomeBatch *b = (OutcomeBatch *) arg;
	int			n = b->n;
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *attempts = palloc(sizeof(Datum) * n);
	Datum	   *statuses = palloc(sizeof(Datum) * n);
	Datum	   *headers = palloc(sizeof(Datum) * n);
	Datum	   *bodies = palloc(sizeof(Datum) * n);
	Datum	   *truncated = palloc(sizeof(Datum) * n);
	Datum	   *errors = palloc(sizeof(Datum) * n);
	Datum	   *retry_after = palloc(sizeof(Datum) * n);
	bool	   *no_status = palloc0(sizeof(bool) * n);
	bool	   *no_headers = palloc0(sizeof(bool) * n);
	bool	   *no_body = palloc0(sizeof(bool) * n);
	bool	   *no_error = palloc0(sizeof(bool) * n);
	bool	   *no_retry_after = palloc0(sizeof(bool) * n);
	Datum		args[8];

	for (int i = 0; i < n; i++)
	{
		const HttpOutcome *o = &b->f[i].o;

		ids[i] = CStringGetTextDatum(b->f[i].id);
		attempts[i] = Int32GetDatum(b->f[i].attempt);
		statuses[i] = Int32GetDatum(o->status);
		no_status[i] = !o->has_status;
		headers[i] = o->headers_json ? CStringGetTextDatum(o->headers_json) : (Datum) 0;
		no_headers[i] = o->headers_json == NULL;
		bodies[i] = o->body ? CStringGetTextDatum(o->body) : (Datum) 0;
		no_body[i] = o->body == NULL;
		truncated[i] = BoolGetDatum(o->truncated);
		errors[i] = o->error ? CStringGetTextDatum(o->error) : (Datum) 0;
		no_error[i] = o->error == NULL;
		retry_after[i] = Int32GetDatum(o->retry_after);
		no_retry_after[i] = o->retry_after < 0;
	}
	args[0] = make_array(ids, NULL, n, TEXTOID);
	args[1] = make_array(attempts, NULL, n, INT4OID);
	args[2] = make_array(statuses, no_status, n, INT4OID);
	args[3] = make_array(headers, no_headers, n, TEXTOID);
	args[4] = make_array(bodies, no_body, n, TEXTOID);
	args[5] = make_array(truncated, NULL, n, BOOLOID);
	args[6] = make_array(errors, no_error, n, TEXTOID);
	args[7] = make_array(retry_after, no_retry_after, n, INT4OID);
	if (SPI_execute_plan(record_all_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pgcloud.http_record_all() failed");
	b->recorded = (int) SPI_processed;
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		char	   *state = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2);
		char	   *id;

		if (state == NULL || strcmp(state, "dead") != 0)
			continue;
		id = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
		for (int i = 0; i < n; i++)
			if (strcmp(b->f[i].id, id) == 0)
				ereport(LOG,
						errmsg("pgcloud http: intent %s to %s is dead after %d tries: %s", id,
							   HttpTargetNames[b->f[i].target], b->f[i].attempt,
							   b->f[i].o.error ? b->f[i].o.error : psprintf("status %d", b->f[i].o.status)));
	}
}

/*
 * Inside the round's unit of work: records the outcomes of the transfers
 * finished since the last wake-up with one statement. Should that fail, it
 * is undone alone and every outcome is recorded in a subtransaction of its
 * own (b->failures: those that could not be, recorded as failed tries by
 * record_batch_followups() after the commit).
 */
static void
record_outcomes_in_work(OutcomeBatch *b)
{
	char	   *msg;

	if (b->n == 0)
		return;
	msg = PgcloudRunSubUnit(record_all_unit, b, b->cxt);
	if (msg == NULL)
		return;
	ereport(LOG, errmsg("pgcloud http: could not record %d outcomes together: %s", b->n, msg));
	PgcloudWorkerNoteError(msg);
	record_each_in_work(b);
}

/*
 * After the round committed: the outcomes whose subtransaction rolled back
 * are recorded on their own as failed tries, as record_outcome() does.
 */
static void
record_batch_followups(OutcomeBatch *b)
{
	if (b->recorded > 0)
		PgcloudWorkerNoteActivity(b->recorded, 0);
	for (int i = 0; i < b->n; i++)
		if (b->failures[i] != NULL)
		{
			HttpOutcome fo = {0};

			PgcloudWorkerNoteError(b->failures[i]);
			ereport(LOG, errmsg("pgcloud http: could not record the outcome of intent %s: %s", b->f[i].id,
								b->failures[i]));
			fo.retry_after = -1;
			fo.error = psprintf("could not record the outcome: %s", b->failures[i]);
			record_outcome(b->f[i].id, b->f[i].attempt, b->f[i].target, &fo, true);
		}
}

static void
run_callback_unit(void *arg)
{
	Datum		v = CStringGetTextDatum((const char *) arg);

	prepare_plans();
	if (SPI_execute_plan(callback_plan, &v, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "pgcloud.http_run_callback() failed");
}

/* Runs failed final callbacks that are due again, one transaction each. */
static void
run_due_callbacks(List *ids)
{
	ListCell   *lc;

	foreach(lc, ids)
	{
		char	   *id = (char *) lfirst(lc);
		char	   *msg;

		PgcloudWorkerHandleInterrupts();
		msg = PgcloudRunUnit("running an HTTP callback", run_callback_unit, id);
		if (msg != NULL)
			ereport(LOG, errmsg("pgcloud http: callback of intent %s failed: %s", id, msg));
	}
}

/* ---- claiming and starting -------------------------------------------------- */

static void
copy_claimed(HeapTuple tup, TupleDesc desc, HttpClaimed *c)
{
	bool		isnull;
	Datum		arr;

	c->id = SPI_getvalue(tup, desc, 1);
	c->method = SPI_getvalue(tup, desc, 2);
	c->path = SPI_getvalue(tup, desc, 3);
	c->body = SPI_getvalue(tup, desc, 4);
	c->content_type = SPI_getvalue(tup, desc, 5);
	c->header_lines = NULL;
	c->nheaders = 0;
	arr = SPI_getbinval(tup, desc, 6, &isnull);
	if (!isnull)
	{
		Datum	   *elems;
		bool	   *enulls;
		int			n;

		deconstruct_array(DatumGetArrayTypeP(arr), TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &n);
		c->header_lines = palloc(sizeof(char *) * Max(n, 1));
		for (int i = 0; i < n; i++)
			if (!enulls[i])
				c->header_lines[c->nheaders++] = TextDatumGetCString(elems[i]);
	}
	c->mail_from = SPI_getvalue(tup, desc, 7);
	c->idempotency_key = SPI_getvalue(tup, desc, 8);
	c->attempt = DatumGetInt32(SPI_getbinval(tup, desc, 9, &isnull));
}

/* What one round's transaction hands to the code that starts the transfers. */
typedef struct ClaimRound
{
	MemoryContext cxt;			/* where claimed and callbacks are kept */
	List	   *claimed;		/* ClaimedItem */
	List	   *callbacks;		/* ids (text) of final callbacks due again */
	HttpTarget	spare[HTTP_TARGETS];	/* targets with capacity left */
	int			nspare;
	OutcomeBatch outcomes;		/* recorded first, in the same transaction */
} ClaimRound;

/* The target named so (the test target when none is). */
static HttpTarget
target_named(const char *name)
{
	HttpTarget	target = HTTP_TARGET_TEST;

	for (int t = 0; t < HTTP_TARGETS; t++)
		if (strcmp(name, HttpTargetNames[t]) == 0)
			target = (HttpTarget) t;
	return target;
}

/*
 * Claims due intents within each target's free capacity into r->claimed;
 * the targets that keep capacity left have nothing more due now and go to
 * r->spare.
 */
static void
claim_intents(ClaimRound *r)
{
	Datum		names[HTTP_TARGETS];
	Datum		slots[HTTP_TARGETS];
	int			claimed_per[HTTP_TARGETS] = {0};
	int			nt = 0;

	for (int t = 0; t < HTTP_TARGETS; t++)
	{
		names[t] = CStringGetTextDatum(HttpTargetNames[t]);
		slots[t] = Int32GetDatum(Max(policy.concurrency[t] - inflight[t], 0));
		if (DatumGetInt32(slots[t]) > 0)
			nt++;
	}
	if (nt > 0)
	{
		Datum		args[2];

		args[0] = PointerGetDatum(construct_array(names, HTTP_TARGETS, TEXTOID, -1, false, TYPALIGN_INT));
		args[1] = PointerGetDatum(construct_array(slots, HTTP_TARGETS, INT4OID, 4, true, TYPALIGN_INT));
		if (SPI_execute_plan(claim_plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "pgcloud.http_claim_all() failed");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			char	   *target = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 10);
			MemoryContext spicxt = MemoryContextSwitchTo(r->cxt);
			ClaimedItem *item = palloc0(sizeof(ClaimedItem));

			item->target = target_named(target);
			claimed_per[item->target]++;
			copy_claimed(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &item->c);
			r->claimed = lappend(r->claimed, item);
			MemoryContextSwitchTo(spicxt);
		}
	}
	/* Targets with capacity left: nothing more is due there now. */
	for (int t = 0; t < HTTP_TARGETS; t++)
		if (claimed_per[t] < DatumGetInt32(slots[t]))
			r->spare[r->nspare++] = (HttpTarget) t;
}

/* Failed final callbacks that are due again (run after the commit). */
static void
collect_due_callbacks(ClaimRound *r)
{
	/* Not read-only: it must see what this round recorded (a fresh snapshot). */
	if (SPI_execute_plan(due_callbacks_plan, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pgcloud.http_callbacks_due() failed");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *cid = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		MemoryContext spicxt = MemoryContextSwitchTo(r->cxt);

		r->callbacks = lappend(r->callbacks, pstrdup(cid));
		MemoryContextSwitchTo(spicxt);
	}
}

/* Sets next_due_at from the next intent due at a target with capacity left. */
static void
set_next_due(ClaimRound *r)
{
	Datum		names[HTTP_TARGETS];
	Datum		arr;
	Datum		ms;
	bool		isnull;

	if (r->nspare == 0)
		return;
	/* Built here: the claim may have run in a transaction of its own, whose memory is gone. */
	for (int i = 0; i < r->nspare; i++)
		names[i] = CStringGetTextDatum(HttpTargetNames[r->spare[i]]);
	arr = PointerGetDatum(construct_array(names, r->nspare, TEXTOID, -1, false, TYPALIGN_INT));
	/* Not read-only: a retry this round scheduled must be seen (a fresh snapshot). */
	if (SPI_execute_plan(next_due_plan, &arr, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "pgcloud.http_next_due_ms() failed");
	ms = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		next_due_at = GetCurrentTimestamp() + Max(DatumGetInt64(ms), 1) * 1000;
}

/* Inside a round's transaction: the commit need not wait for its WAL flush. */
static void
commit_asynchronously(void)
{
	if (SPI_execute_plan(async_commit_plan, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not set synchronous_commit");
}

/* Claims due intents within each target's free capacity (policies read again when stale). */
static void
claim_in_work(ClaimRound *r)
{
	if (policy_loaded_at == 0 ||
		TimestampDifferenceExceeds(policy_loaded_at, GetCurrentTimestamp(), POLICY_TTL_MS))
	{
		load_policy();
		policy_loaded_at = GetCurrentTimestamp();
	}
	claim_intents(r);
}

/*
 * A claim alone need not wait for its WAL flush: lost in a crash, the
 * intent is simply pending again, which is what recovery makes of an intent
 * in flight anyway (it is sent again with the same key). A transaction that
 * records outcomes commits synchronously: the callbacks' effects are
 * committed with it, and must not be seen (and acted on: an intent a
 * callback wrote is sent at once) and then lost.
 */

/* The claim of a round that has outcomes to record too (committed before they are). */
static void
claim_unit(void *arg)
{
	ClaimRound *r = (ClaimRound *) arg;

	prepare_plans();
	commit_asynchronously();
	claim_in_work(r);
}

/*
 * The record of a round's outcomes, while the transfers its claim started
 * are on the wire; then the failed final callbacks due again and the next
 * due time (both read after the record: they must see its retries).
 */
static void
record_unit(void *arg)
{
	ClaimRound *r = (ClaimRound *) arg;

	prepare_plans();
	record_outcomes_in_work(&r->outcomes);
	collect_due_callbacks(r);
	set_next_due(r);
}

/* A round with nothing to record: claim, due callbacks and next due time, one transaction. */
static void
claim_only_unit(void *arg)
{
	ClaimRound *r = (ClaimRound *) arg;

	prepare_plans();
	commit_asynchronously();
	claim_in_work(r);
	collect_due_callbacks(r);
	set_next_due(r);
}

static void drive_timer_if_due(void);

/* Starts the transfer of each claimed intent; one that cannot start is recorded as a failed try. */
static void
start_transfers(List *claimed)
{
	ListCell   *lc;

	foreach(lc, claimed)
	{
		ClaimedItem *item = (ClaimedItem *) lfirst(lc);
		char	   *error = NULL;
		HttpTransfer *t = HttpTransferCreate(item->target, &item->c, &policy, &error);
		CURLMcode	mc;

		if (t != NULL && (mc = curl_multi_add_handle(multi, t->easy)) != CURLM_OK)
		{
			error = psprintf("could not start the transfer: %s", curl_multi_strerror(mc));
			HttpTransferFree(t);
			t = NULL;
		}
		if (t == NULL)
		{
			HttpOutcome f = {0};

			f.retry_after = -1;
			f.error = error ? error : pstrdup("could not build the request");
			record_outcome(item->c.id, item->c.attempt, item->target, &f, false);
			continue;
		}
		t->next = transfers;
		transfers = t;
		inflight[item->target]++;
	}
	/* Send now (libcurl's timer is due at once after an add), not at the next wait. */
	if (claimed != NIL)
		drive_timer_if_due();
}

/* The claim failed: nothing was committed in flight; claim again after a backoff. */
static void
claim_failed(const char *msg)
{
	ereport(LOG, errmsg("pgcloud http: claiming intents failed: %s", msg));
	round_errors++;
	next_due_at = GetCurrentTimestamp() + (TimestampTz) PgcloudBackoffMs(round_errors, 100L, 9, 30000L) * 1000;
	if (!PgcloudWorkerCheckInstalled())
		proc_exit(0);			/* pgcloud was dropped; the launcher checks again later */
}

/*
 * One round. With outcomes to record (the transfers finished since the last
 * wake-up), two transactions: first the claim of due intents within each
 * target's free capacity (one statement for every target; committed in
 * flight, asynchronously, before anything is sent) and the start of their
 * transfers; then, while those are on the wire, the record of the outcomes
 * (one statement, the callbacks each in a subtransaction of their own),
 * committed synchronously. The target answers during the record and its
 * commit: the HTTP round trip is not added to the database work. Without
 * outcomes, one transaction claims. Sets next_due_at. Should the record fail
 * as a whole, nothing of it was committed and every outcome is recorded on
 * its own; should the claim fail, the outcomes are recorded all the same and
 * the claim is tried again after a backoff.
 */
/* A palloc'd copy of s in the current memory context (NULL stays NULL). */
static char *
copy_or_null(const char *s)
{
	return s ? pstrdup(s) : NULL;
}

/* *src into *dst, its strings copied into the current memory context. */
static void
copy_finished(Finished *dst, const Finished *src)
{
	*dst = *src;
	dst->o.headers_json = copy_or_null(src->o.headers_json);
	dst->o.body = copy_or_null(src->o.body);
	dst->o.error = copy_or_null(src->o.error);
}

/* Keeps the outcomes of this window to be recorded with a later one's (the deadline set by the first). */
static void
carry_outcomes(Finished *done, int ndone)
{
	MemoryContext old;

	if (carry_cxt == NULL)
		carry_cxt = AllocSetContextCreate(TopMemoryContext, "pgcloud http carried outcomes",
										  ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(carry_cxt);
	carried = carried ? repalloc(carried, sizeof(Finished) * (ncarried + ndone))
		: palloc(sizeof(Finished) * ndone);
	for (int i = 0; i < ndone; i++)
		copy_finished(&carried[ncarried + i], &done[i]);
	MemoryContextSwitchTo(old);
	if (ncarried == 0)
		carry_deadline = GetCurrentTimestamp() + CARRY_MS * 1000;
	ncarried += ndone;
	carried_windows++;
}

/* The carried outcomes first, then done's, in the current memory context; none are carried any more. */
static Finished *
take_carried(Finished *done, int *ndone)
{
	Finished   *all;

	if (ncarried == 0)
		return done;
	all = palloc(sizeof(Finished) * (ncarried + *ndone));
	for (int i = 0; i < ncarried; i++)
		copy_finished(&all[i], &carried[i]);
	if (*ndone > 0)
		memcpy(all + ncarried, done, sizeof(Finished) * *ndone);
	*ndone += ncarried;
	ncarried = 0;
	carried_windows = 0;
	carried = NULL;
	MemoryContextReset(carry_cxt);
	return all;
}

static void
record_claim_and_start(Finished *done, int ndone, bool may_carry)
{
	ClaimRound	r = {.cxt = CurrentMemoryContext};
	char	   *claim_msg;
	char	   *msg;

	if (!may_carry)
		done = take_carried(done, &ndone);
	r.outcomes = (OutcomeBatch) {.f = done, .n = ndone, .cxt = CurrentMemoryContext};
	r.outcomes.failures = palloc0(sizeof(char *) * Max(ndone, 1));
	next_due_at = 0;
	if (ndone == 0)
	{
		msg = PgcloudRunUnit("claiming HTTP intents", claim_only_unit, &r);
		if (msg != NULL)
		{
			claim_failed(msg);	/* nothing was committed in flight */
			return;
		}
		round_errors = 0;
		start_transfers(r.claimed);
		run_due_callbacks(r.callbacks);
		return;
	}

	claim_msg = PgcloudRunUnit("claiming HTTP intents", claim_unit, &r);
	if (claim_msg == NULL)
	{
		round_errors = 0;
		start_transfers(r.claimed);
		/*
		 * New transfers are on the wire: their window finishes soon. Record
		 * this one's outcomes with a later one's (one record statement and
		 * one synchronous commit for them all), within CARRY_MS of the first
		 * carried, CARRY_WINDOWS windows at most, and only when transfers
		 * were started (something to wait for).
		 */
		if (may_carry && r.claimed != NIL && transfers != NULL)
		{
			carry_outcomes(done, ndone);
			next_due_at = 0;	/* read when the carried outcomes are recorded */
			return;
		}
	}
	else
		r.nspare = 0;			/* no claim: the next due time comes from the backoff */
	if (may_carry)
	{
		/* Not carried after all: record the carried outcomes with these. */
		done = take_carried(done, &ndone);
		r.outcomes.f = done;
		r.outcomes.n = ndone;
		r.outcomes.failures = palloc0(sizeof(char *) * Max(ndone, 1));
	}

	msg = PgcloudRunUnit("recording HTTP outcomes", record_unit, &r);
	if (msg != NULL)
	{
		ereport(LOG, errmsg("pgcloud http: could not record %d outcomes: %s", ndone, msg));
		for (int i = 0; i < ndone; i++)
			record_outcome(done[i].id, done[i].attempt, done[i].target, &done[i].o, false);
		/* The next due time was not read: a claim round at once reads it (and claims what is due). */
		next_due_at = GetCurrentTimestamp();
	}
	else
	{
		record_batch_followups(&r.outcomes);
		run_due_callbacks(r.callbacks);
	}
	if (claim_msg != NULL)
		claim_failed(claim_msg);
}

/* ---- driving libcurl -------------------------------------------------------- */

static void
drive_timer_if_due(void)
{
	int			running;

	if (curl_timer_set && GetCurrentTimestamp() >= curl_deadline)
	{
		curl_timer_set = false; /* libcurl sets it again when it needs to */
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
}

/*
 * Takes every finished transfer off the multi handle (its capacity is free
 * again) and returns their outcomes, to be recorded by the next round.
 */
static Finished *
collect_finished(int *ndone)
{
	CURLMsg    *m;
	int			left;
	int			n = 0;
	int			cap = 16;
	Finished   *done = palloc(sizeof(Finished) * cap);

	while ((m = curl_multi_info_read(multi, &left)) != NULL)
	{
		CURL	   *easy = m->easy_handle;
		CURLcode	result = m->data.result;
		HttpTransfer *t = NULL;
		HttpTransfer **pp;
		Finished   *f;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &t);
		curl_multi_remove_handle(multi, easy);	/* m is invalid from here */
		if (n == cap)
		{
			cap *= 2;
			done = repalloc(done, sizeof(Finished) * cap);
		}
		f = &done[n];
		/* Should this raise (out of memory), t is still listed and freed at exit. */
		HttpTransferOutcome(t, result, &f->o);
		for (pp = &transfers; *pp != NULL; pp = &(*pp)->next)
			if (*pp == t)
			{
				*pp = t->next;
				break;
			}
		inflight[t->target]--;
		strlcpy(f->id, t->id, sizeof(f->id));
		f->attempt = t->attempt;
		f->target = t->target;
		HttpTransferFree(t);
		n++;
	}
	*ndone = n;
	return done;
}

/* The socket's wait events as libcurl asks for them (0: none). */
static uint32
sock_events(const SockEntry *e)
{
	uint32		ev = 0;

	if (e->what & CURL_POLL_IN)
		ev |= WL_SOCKET_READABLE;
	if (e->what & CURL_POLL_OUT)
		ev |= WL_SOCKET_WRITEABLE;
	return ev;
}

/*
 * Brings wait_set up to date with libcurl's sockets: built again when a
 * socket came or went (or one wants nothing), else the sockets whose
 * direction changed are modified in place.
 */
static void
update_wait_set(void)
{
	if (!wait_set_stale)
	{
		for (int i = 0; i < nsocks; i++)
		{
			uint32		ev;

			if (!socks[i].changed)
				continue;
			ev = sock_events(&socks[i]);
			if (socks[i].pos < 0 || ev == 0)
			{
				wait_set_stale = true;
				break;
			}
			ModifyWaitEvent(wait_set, socks[i].pos, ev, NULL);
			socks[i].changed = false;
		}
	}
	if (!wait_set_stale && wait_set != NULL)
		return;
	if (wait_set != NULL)
		FreeWaitEventSet(wait_set);
	wait_set = NULL;
	wait_set_stale = true;
	wait_set = CreateWaitEventSet(TopMemoryContext, nsocks + 2);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < nsocks; i++)
	{
		uint32		ev = sock_events(&socks[i]);

		socks[i].changed = false;
		socks[i].pos = ev != 0 ? AddWaitEventToSet(wait_set, ev, socks[i].fd, NULL, NULL) : -1;
	}
	wait_set_stale = false;
}

/*
 * Waits for the latch, libcurl's sockets or a timeout, and lets libcurl act
 * on the sockets that are ready. Returns true when the latch was set.
 */
static bool
wait_for_work(long timeout_ms)
{
	WaitEvent  *events;
	int			nevents = nsocks + 2;
	int			n;
	bool		latch = false;
	int			running;

	update_wait_set();
	events = palloc(sizeof(WaitEvent) * nevents);
	n = WaitEventSetWait(wait_set, timeout_ms, events, nevents, PG_WAIT_EXTENSION);

	for (int i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			latch = true;
		}
		else if (events[i].events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
		{
			int			flags = 0;

			if (events[i].events & WL_SOCKET_READABLE)
				flags |= CURL_CSELECT_IN;
			if (events[i].events & WL_SOCKET_WRITEABLE)
				flags |= CURL_CSELECT_OUT;
			curl_multi_socket_action(multi, events[i].fd, flags, &running);
		}
	}
	pfree(events);
	drive_timer_if_due();
	return latch;
}

static long
ms_until(TimestampTz when, TimestampTz now)
{
	if (when <= now)
		return 0;
	return (long) Min((when - now + 999) / 1000, (TimestampTz) IDLE_WAIT_MS);
}

/*
 * Transfers finished while others are still in flight: waits up to
 * GATHER_MS for those to finish too, so that one round (one commit, one
 * record and one claim statement) takes them all. A fast target answers a
 * whole window within that time and a round's fixed cost is shared by the
 * whole window, not paid per half of it; a slow one costs at most GATHER_MS
 * per round. Returns done with the further outcomes appended.
 */
static Finished *
gather_finished(Finished *done, int *ndone, bool *need_claim)
{
	TimestampTz until = GetCurrentTimestamp() + GATHER_MS * 1000;
	TimestampTz now;

	while (transfers != NULL && (now = GetCurrentTimestamp()) < until)
	{
		Finished   *more;
		int			nmore;

		if (wait_for_work(ms_until(until, now)))
		{
			*need_claim = true;
			policy_loaded_at = 0;	/* woken by a commit: read the policies afresh */
		}
		more = collect_finished(&nmore);
		if (nmore > 0)
		{
			done = repalloc(done, sizeof(Finished) * (*ndone + nmore));
			memcpy(done + *ndone, more, sizeof(Finished) * nmore);
			*ndone += nmore;
		}
		pfree(more);
	}
	return done;
}

static void
recover_unit(void *arg)
{
	int		   *n = (int *) arg;
	bool		isnull;

	if (SPI_execute("SELECT pgcloud.http_recover()", false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "pgcloud.http_recover() failed");
	*n = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* Intents a previous executor left in flight are pending again (sent again with the same key). */
static void
recover_in_flight(void)
{
	int			n = 0;
	char	   *msg = PgcloudRunUnit("recovering HTTP intents", recover_unit, &n);

	if (msg != NULL)
		ereport(LOG, errmsg("pgcloud http: could not recover intents in flight: %s", msg));
	else if (n > 0)
		ereport(LOG, errmsg("pgcloud http: %d intents left in flight are sent again", n));
}

void
pgcloud_http_main(Datum arg)
{
	MemoryContext loopcxt;
	bool		need_claim = true;
	TimestampTz last_round_at = 0;

	PgcloudWorkerSetup(PGCLOUD_WORKER_HTTP, DatumGetInt32(arg));
	if (!PgcloudWorkerCheckInstalled())
		proc_exit(0);

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		ereport(FATAL, errmsg("pgcloud http: could not initialise libcurl"));
	multi = curl_multi_init();
	if (multi == NULL)
		ereport(FATAL, errmsg("pgcloud http: could not create a libcurl multi handle"));
	before_shmem_exit(shutdown_transfers, (Datum) 0);
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	/*
	 * Connections live in the multi handle's cache, across rounds: a target
	 * is reached over the connections already open to it (HTTP/1.1
	 * keep-alive; HTTP/2 streams on one connection where the target offers
	 * h2 over TLS). Enough room for every target's concurrency.
	 */
	curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) MAX_CONCURRENCY);

	loopcxt = AllocSetContextCreate(TopMemoryContext, "pgcloud http loop", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(loopcxt);
	recover_in_flight();
	ereport(LOG, errmsg("pgcloud http executor started"));

	for (;;)
	{
		TimestampTz now;
		long		timeout;
		Finished   *done;
		int			ndone;

		if (PgcloudGotSighup)
		{
			need_claim = true;	/* settings may have changed */
			policy_loaded_at = 0;
		}
		PgcloudWorkerHandleInterrupts();
		MemoryContextReset(loopcxt);
		MemoryContextSwitchTo(loopcxt);

		drive_timer_if_due();
		done = collect_finished(&ndone);
		if (ndone > 0 && transfers != NULL)
			done = gather_finished(done, &ndone, &need_claim);
		if (ndone > 0 || need_claim || (next_due_at != 0 && GetCurrentTimestamp() >= next_due_at)
			|| (ncarried > 0 && GetCurrentTimestamp() >= carry_deadline))
		{
			/*
			 * Finished transfers freed capacity: record them and claim
			 * again, in one round; a window's outcomes may be carried to a
			 * later round's record (carry_outcomes), CARRY_WINDOWS windows
			 * at most, while fewer than CARRY_MAX_OUTCOMES are kept, within
			 * CARRY_MS.
			 */
			bool		may_carry = ndone > 0 && carried_windows < CARRY_WINDOWS
				&& ncarried < CARRY_MAX_OUTCOMES
				&& (ncarried == 0 || GetCurrentTimestamp() < carry_deadline);

			need_claim = false;
			record_claim_and_start(done, ndone, may_carry);
			last_round_at = GetCurrentTimestamp();
			continue;
		}

		now = GetCurrentTimestamp();
		if (TimestampDifferenceExceeds(last_round_at, now, SAFETY_ROUND_MS))
		{
			int			running;

			if (transfers != NULL)
				curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
			need_claim = true;
			continue;
		}
		timeout = Min(IDLE_WAIT_MS, SAFETY_ROUND_MS);
		if (curl_timer_set)
			timeout = Min(timeout, ms_until(curl_deadline, now));
		if (next_due_at != 0)
			timeout = Min(timeout, ms_until(next_due_at, now));
		if (ncarried > 0)
			timeout = Min(timeout, ms_until(carry_deadline, now));
		if (wait_for_work(timeout))
		{
			need_claim = true;
			policy_loaded_at = 0;	/* woken by a commit: read the policies afresh */
		}
	}
}
