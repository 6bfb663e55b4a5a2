/*
 * relay.c — the outbox relay, one per database.
 *
 * Woken by the commit of a transaction that emitted (shmem.c), it claims
 * pending events in id order and delivers them:
 *  - embedded mode (pgcloud.nats_url empty): pgcloud.relay_once() hands each
 *    event to the subscribing services' handlers in this database;
 *  - NATS mode: each event is published to JetStream (subject
 *    pgcloud.<event_type>, header Nats-Msg-Id = event id) asynchronously with
 *    a bounded number in flight, and marked published only once JetStream
 *    acknowledged it. An event whose aggregate had an earlier failure in the
 *    batch stays pending too, so one aggregate's events reach the stream in
 *    order (redelivery is deduplicated by Nats-Msg-Id).
 * Errors are caught per batch: the worker notes them and backs off.
 * In NATS mode the relay holds a session advisory lock so that it is the
 * only publisher of its database, which lets it claim rows without row locks.
 */
#include "workers.h"

#include <pthread.h>

#include "access/xact.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "utils/snapmgr.h"

#include "nats_link.h"

#define NATS_BATCH 2000
#define NATS_MAX_INFLIGHT 4000
#define ACK_WAIT_MS 10000

/* ---- acknowledgements (written by nats.c threads: plain C only) ------- */

typedef struct AckBook
{
	pthread_mutex_t mu;
	int			n;
	int64	   *ids;			/* outbox ids of the batch, ascending */
	bool	   *failed;
	bool	   *acked;			/* JetStream stored it (a positive ack) */
} AckBook;

/*
 * The book is complete (every id of the batch written, under the mutex)
 * before the first message is published, so a callback never searches a
 * half-written array; and an event counts as published only on a positive
 * ack, so an ack that is lost or never matched leaves it in the outbox.
 */
static AckBook acks = {PTHREAD_MUTEX_INITIALIZER, 0, NULL, NULL, NULL};

static void
ack_mark_msg(natsMsg *msg, bool ok)
{
	const char *val = NULL;

	if (natsMsgHeader_Get(msg, "Pgcloud-Outbox-Id", &val) != NATS_OK || val == NULL)
		return;
	{
		long long	id = strtoll(val, NULL, 10);
		int			lo = 0,
					hi;

		pthread_mutex_lock(&acks.mu);
		hi = acks.n - 1;
		while (lo <= hi)
		{
			int			mid = (lo + hi) / 2;

			if (acks.ids[mid] == id)
			{
				if (ok)
					acks.acked[mid] = true;
				else
					acks.failed[mid] = true;
				break;
			}
			if (acks.ids[mid] < id)
				lo = mid + 1;
			else
				hi = mid - 1;
		}
		pthread_mutex_unlock(&acks.mu);
	}
}

static void
on_pub_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	(void) js;
	(void) closure;

	ack_mark_msg(msg, pae == NULL && pa != NULL);
	natsMsg_Destroy(msg);
}

/* ---- NATS mode ---------------------------------------------------------- */

static NatsLink nlink = {0};
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr mark_plan = NULL;

static void
prepare_plans(void)
{
	Oid			claim_types[1] = {INT4OID};
	Oid			mark_types[1] = {INT8ARRAYOID};

	PgcloudPlan(&claim_plan,
				"SELECT o.id, o.event_id::text, o.event_type, o.aggregate_type || '/' || o.aggregate_id, "
				"coalesce(o.headers ->> 'correlation_id', ''), "
				"pg_catalog.jsonb_build_object('event_id', o.event_id, 'event_type', o.event_type, "
				"'aggregate_type', o.aggregate_type, 'aggregate_id', o.aggregate_id, 'payload', o.payload, "
				"'headers', o.headers, 'source', o.source, 'created_at', o.created_at)::text "
				"FROM pgcloud.outbox o WHERE o.published_at IS NULL ORDER BY o.id LIMIT $1",
				1, claim_types);
	PgcloudPlan(&mark_plan, "UPDATE pgcloud.outbox SET published_at = pg_catalog.clock_timestamp() "
				"WHERE id = ANY ($1)", 1, mark_types);
}

/*
 * Publishes one batch inside the current transaction; returns the number of
 * events marked published, or -1 when NATS failed (the caller backs off).
 */
static int
publish_batch(void)
{
	Datum		arg = Int32GetDatum(NATS_BATCH);
	int			n;
	int			published = 0;
	bool		broken = false;
	natsStatus	s = NATS_OK;
	char	  **aggregates;
	Datum	   *done;
	int			ndone = 0;
	jsPubOptions popts;

	prepare_plans();
	if (SPI_execute_plan(claim_plan, &arg, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "outbox claim failed");
	n = (int) SPI_processed;
	if (n == 0)
		return 0;

	aggregates = palloc(sizeof(char *) * n);
	done = palloc(sizeof(Datum) * n);
	pthread_mutex_lock(&acks.mu);
	acks.ids = palloc(sizeof(int64) * n);
	acks.failed = palloc0(sizeof(bool) * n);
	acks.acked = palloc0(sizeof(bool) * n);
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		acks.ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}
	acks.n = n;
	pthread_mutex_unlock(&acks.mu);

	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		char	   *event_id = SPI_getvalue(tup, desc, 2);
		char	   *event_type = SPI_getvalue(tup, desc, 3);
		char	   *correlation = SPI_getvalue(tup, desc, 5);
		char	   *body = SPI_getvalue(tup, desc, 6);
		char	   *subject = psprintf(PGCLOUD_SUBJECT_PREFIX "%s", event_type);
		char		idbuf[32];
		natsMsg    *msg = NULL;

		Assert(acks.ids[i] == id);
		aggregates[i] = SPI_getvalue(tup, desc, 4);
		if (broken)
		{
			pthread_mutex_lock(&acks.mu);
			acks.failed[i] = true;
			pthread_mutex_unlock(&acks.mu);
			continue;
		}
		snprintf(idbuf, sizeof(idbuf), INT64_FORMAT, id);
		s = natsMsg_Create(&msg, subject, NULL, body, (int) strlen(body));
		if (s == NATS_OK)
			s = natsMsgHeader_Set(msg, "Nats-Msg-Id", event_id);
		if (s == NATS_OK)
			s = natsMsgHeader_Set(msg, "Pgcloud-Correlation-Id", correlation);
		if (s == NATS_OK)
			s = natsMsgHeader_Set(msg, "Pgcloud-Event-Type", event_type);
		if (s == NATS_OK)
			s = natsMsgHeader_Set(msg, "Pgcloud-Outbox-Id", idbuf);
		if (s == NATS_OK)
			s = js_PublishMsgAsync(nlink.js, &msg, NULL);
		if (msg != NULL)
			natsMsg_Destroy(msg);	/* not handed over */
		if (s != NATS_OK)
		{
			pthread_mutex_lock(&acks.mu);
			acks.failed[i] = true;
			pthread_mutex_unlock(&acks.mu);
			broken = true;
		}
	}

	jsPubOptions_Init(&popts);
	popts.MaxWait = ACK_WAIT_MS;
	s = js_PublishAsyncComplete(nlink.js, &popts);
	if (s != NATS_OK)
	{
		natsMsgList pending = {0};

		broken = true;
		if (js_PublishAsyncGetPendingList(&pending, nlink.js) == NATS_OK)
		{
			for (int i = 0; i < pending.Count; i++)
				if (pending.Msgs[i] != NULL)
					ack_mark_msg(pending.Msgs[i], false);
			natsMsgList_Destroy(&pending);
		}
	}

	/* Published: acknowledged, and no earlier failure of the same aggregate. */
	pthread_mutex_lock(&acks.mu);
	for (int i = 0; i < n; i++)
	{
		bool		blocked = acks.failed[i] || !acks.acked[i];

		for (int j = 0; j < i && !blocked; j++)
			if ((acks.failed[j] || !acks.acked[j]) && strcmp(aggregates[j], aggregates[i]) == 0)
				blocked = true;
		if (!blocked)
			done[ndone++] = Int64GetDatum(acks.ids[i]);
	}
	acks.n = 0;
	pthread_mutex_unlock(&acks.mu);

	if (ndone > 0)
	{
		Datum		arr = PointerGetDatum(construct_array(done, ndone, INT8OID, 8, true, TYPALIGN_DOUBLE));

		if (SPI_execute_plan(mark_plan, &arr, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "outbox update failed");
		published = ndone;
	}
	if (broken)
	{
		NatsLinkFailed(&nlink, "publish to JetStream", s != NATS_OK ? s : NATS_CONNECTION_CLOSED);
		return published > 0 ? published : -1;
	}
	return published;
}

/* ---- the loop ------------------------------------------------------------- */

/* The publisher lock: key1 'pgcd', key2 'rlay'. */
#define RELAY_LOCK_KEY1 0x70676364
#define RELAY_LOCK_KEY2 0x726c6179

static bool
take_publisher_lock(void)
{
	bool		got;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	got = DatumGetBool(DirectFunctionCall2(pg_try_advisory_lock_int4,
										   Int32GetDatum(RELAY_LOCK_KEY1), Int32GetDatum(RELAY_LOCK_KEY2)));
	CommitTransactionCommand();
	return got;
}

static void
close_link(int code, Datum arg)
{
	(void) code;
	(void) arg;

	NatsLinkClose(&nlink);
}

typedef struct RelayBatch
{
	bool		nats;
	int			n;				/* events handled */
	long		retry_ms;		/* embedded mode: when a failed delivery is due again, or -1 */
} RelayBatch;

static void
relay_batch_unit(void *arg)
{
	RelayBatch *b = (RelayBatch *) arg;
	bool		isnull;
	Datum		d;

	if (b->nats)
	{
		b->n = publish_batch();
		return;
	}
	if (SPI_execute("SELECT pgcloud.relay_once(NULL), "
					"(SELECT ceil(extract(epoch FROM min(f.next_attempt_at) - clock_timestamp()) * 1000)::int8 "
					"FROM pgcloud.delivery_failures f)", false, 1) != SPI_OK_SELECT)
		elog(ERROR, "pgcloud.relay_once() failed");
	b->n = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
		b->retry_ms = Max(DatumGetInt64(d), 10);
}

/* One unit of work in its own transaction; returns events handled or -1. */
static int
run_batch(bool nats, long *retry_ms)
{
	RelayBatch	b = {.nats = nats, .n = 0, .retry_ms = *retry_ms};
	char	   *message;

	message = PgcloudRunUnit(nats ? "publishing outbox to NATS" : "relaying outbox", relay_batch_unit, &b);
	if (message != NULL)
	{
		ereport(LOG, errmsg("pgcloud relay: batch failed: %s", message));
		return -1;
	}
	*retry_ms = b.retry_ms;
	return b.n;
}

void
pgcloud_relay_main(Datum arg)
{
	MemoryContext loopcxt;
	int			errors = 0;
	jsOptions	jsopts;

	PgcloudWorkerSetup(PGCLOUD_WORKER_RELAY, DatumGetInt32(arg));
	if (!PgcloudWorkerCheckInstalled())
		proc_exit(0);
	before_shmem_exit(close_link, (Datum) 0);

	jsOptions_Init(&jsopts);
	jsopts.PublishAsync.AckHandler = on_pub_ack;
	jsopts.PublishAsync.MaxPending = NATS_MAX_INFLIGHT;

	loopcxt = AllocSetContextCreate(TopMemoryContext, "pgcloud relay loop", ALLOCSET_DEFAULT_SIZES);
	while (!take_publisher_lock())
	{
		/* A previous relay of this database is still exiting. */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1000, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		PgcloudWorkerHandleInterrupts();
	}
	ereport(LOG, errmsg("pgcloud relay started (%s mode)", PgcloudNatsMode() ? "NATS" : "embedded"));

	for (;;)
	{
		long		timeout;
		long		retry_ms = -1;
		bool		nats;
		int			n;

		PgcloudWorkerHandleInterrupts();
		MemoryContextReset(loopcxt);
		MemoryContextSwitchTo(loopcxt);
		nats = PgcloudNatsMode();
		if (!nats)
			NatsLinkClose(&nlink);

		if (nats && !NatsLinkEnsure(&nlink, &jsopts))
			n = -1;
		else
			n = run_batch(nats, &retry_ms);

		if (n > 0)
		{
			errors = 0;
			PgcloudWorkerNoteActivity(n, 0);
			continue;			/* drain */
		}
		if (n < 0)
		{
			errors++;
			timeout = nats ? NatsLinkBackoffMs(&nlink) : PgcloudBackoffMs(errors, 100L, 8, 30000L);
		}
		else
		{
			errors = 0;
			/* Idle: the next commit sets the latch; wake earlier only for a due retry. */
			timeout = retry_ms >= 0 ? Min(retry_ms, 60000L) : 60000L;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
