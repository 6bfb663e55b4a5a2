/*
 * consumer.c — NATS mode: pulls events from the durable JetStream consumer
 * of each subscribing service installed in this database, applies each in
 * one transaction (inbox row + handler, pgcloud.consume_event) and acks
 * after commit. A message that keeps failing is dead-lettered once
 * JetStream's delivery count reaches core.max_delivery_attempts (with a
 * platform.alert event) and terminated; earlier failures are nak'ed with
 * a growing delay.
 */
#include "workers.h"

#include "access/xact.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "utils/snapmgr.h"

#include "nats_link.h"

#define FETCH_BATCH 100
#define FETCH_TIMEOUT_MS 100
#define MAX_SUBSCRIBERS 32

typedef struct Subscriber
{
	char		name[NAMEDATALEN];
	natsSubscription *sub;
} Subscriber;

static NatsLink nlink = {0};
static Subscriber subscribers[MAX_SUBSCRIBERS];
static int	nsubscribers = 0;
static int	max_attempts = 5;
static long retry_base_ms = 200;

static void
drop_subscriptions(void)
{
	for (int i = 0; i < nsubscribers; i++)
		if (subscribers[i].sub != NULL)
		{
			natsSubscription_Destroy(subscribers[i].sub);
			subscribers[i].sub = NULL;
		}
}

static void
close_all(int code, Datum arg)
{
	drop_subscriptions();
	NatsLinkClose(&nlink);
}

/* Reads the subscriber list and the retry policy (own transaction). */
static void
load_config(void)
{
	PgcloudWorkerBeginWork(NULL);
	if (SPI_execute("SELECT name FROM pgcloud.nats_subscribers() AS name", true, MAX_SUBSCRIBERS) != SPI_OK_SELECT)
		elog(ERROR, "could not list subscribers");
	drop_subscriptions();
	nsubscribers = (int) SPI_processed;
	for (int i = 0; i < nsubscribers; i++)
	{
		strlcpy(subscribers[i].name, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1), NAMEDATALEN);
		subscribers[i].sub = NULL;
	}
	max_attempts = (int) PgcloudPolicyNumber("core.max_delivery_attempts");
	retry_base_ms = (long) PgcloudPolicyNumber("core.delivery_retry_base_ms");
	PgcloudWorkerEndWork();
}

/* Ensures the durable consumer and a bound pull subscription of one service. */
static natsStatus
ensure_subscription(Subscriber *s)
{
	jsConsumerConfig cc;
	jsSubOptions so;
	jsConsumerInfo *ci = NULL;
	jsErrCode	jerr = 0;
	natsStatus	st;

	if (s->sub != NULL)
		return NATS_OK;
	jsConsumerConfig_Init(&cc);
	cc.Durable = s->name;
	cc.AckPolicy = js_AckExplicit;
	cc.DeliverPolicy = js_DeliverAll;
	cc.FilterSubject = PGCLOUD_SUBJECT_PREFIX ">";
	cc.AckWait = (int64_t) 30 * 1000 * 1000 * 1000;
	cc.MaxAckPending = 1000;
	st = js_GetConsumerInfo(&ci, nlink.js, PGCLOUD_STREAM, s->name, NULL, &jerr);
	if (st == NATS_OK)
		jsConsumerInfo_Destroy(ci);
	else if (st == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr)
	{
		st = js_AddConsumer(NULL, nlink.js, PGCLOUD_STREAM, &cc, NULL, &jerr);
		if (st != NATS_OK)
			return st;
	}
	else
		return st;

	jsSubOptions_Init(&so);
	so.Stream = PGCLOUD_STREAM;
	so.Consumer = s->name;
	return js_PullSubscribe(&s->sub, nlink.js, PGCLOUD_SUBJECT_PREFIX ">", s->name, NULL, &so, &jerr);
}

/* Applies one message; returns true when it should be acked. */
static bool
apply_message(const char *subscriber, natsMsg *msg, MemoryContext loopcxt, char **error)
{
	volatile bool ok = false;
	MemoryContext oldcxt = CurrentMemoryContext;

	PG_TRY();
	{
		Oid			argtypes[3] = {TEXTOID, TEXTOID, TEXTOID};
		Datum		values[3];
		const char *data = natsMsg_GetData(msg);
		int			len = natsMsg_GetDataLength(msg);
		const char *subject = natsMsg_GetSubject(msg);

		values[0] = CStringGetTextDatum(subscriber);
		values[1] = PointerGetDatum(cstring_to_text_with_len(data ? data : "", len));
		values[2] = CStringGetTextDatum(subject ? subject : "");
		PgcloudWorkerBeginWork("applying a NATS event");
		if (SPI_execute_with_args("SELECT pgcloud.consume_event($1, $2::jsonb, $3)", 3, argtypes, values, NULL,
								  false, 1) != SPI_OK_SELECT)
			elog(ERROR, "pgcloud.consume_event() failed");
		PgcloudWorkerEndWork();
		ok = true;
	}
	PG_CATCH();
	{
		*error = PgcloudWorkerAbortWork(loopcxt);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	return ok;
}

/* Records a failed message; true when it was dead-lettered. */
static bool
record_failure(const char *subscriber, natsMsg *msg, const char *error, int deliveries,
			   MemoryContext loopcxt)
{
	Oid			argtypes[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	const char *msgid = NULL;
	const char *data = natsMsg_GetData(msg);
	bool		dead = false;
	bool		isnull;

	MemoryContext oldcxt = CurrentMemoryContext;

	natsMsgHeader_Get(msg, "Nats-Msg-Id", &msgid);
	values[0] = CStringGetTextDatum(subscriber);
	values[1] = CStringGetTextDatum(msgid ? msgid : "");
	values[2] = PointerGetDatum(cstring_to_text_with_len(data ? data : "", natsMsg_GetDataLength(msg)));
	values[3] = CStringGetTextDatum(error);
	values[4] = Int32GetDatum(deliveries);
	/*
	 * A message that cannot even be recorded must not take the worker down
	 * (it would be fetched again after the restart, forever): note the error
	 * and let JetStream redeliver it; once its deliveries reach the limit it
	 * is terminated below without a record.
	 */
	PG_TRY();
	{
		PgcloudWorkerBeginWork("recording a failed NATS event");
		if (SPI_execute_with_args("SELECT pgcloud.consume_failed($1, $2, $3, $4, $5)", 5, argtypes, values, nulls,
								  false, 1) == SPI_OK_SELECT && SPI_processed == 1)
			dead = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		PgcloudWorkerEndWork();
	}
	PG_CATCH();
	{
		char	   *why = PgcloudWorkerAbortWork(loopcxt);

		ereport(WARNING, errmsg("pgcloud consumer: could not record a failed message for %s: %s", subscriber,
								why ? why : "unknown error"));
		dead = deliveries >= max_attempts;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	return dead;
}

/* One round over every subscriber; returns messages handled or -1 on a NATS failure. */
static int
consume_round(MemoryContext loopcxt)
{
	int			handled = 0;

	for (int i = 0; i < nsubscribers; i++)
	{
		Subscriber *s = &subscribers[i];
		natsMsgList list = {0};
		natsStatus	st = ensure_subscription(s);

		if (st != NATS_OK)
		{
			NatsLinkFailed(&nlink, "set up a durable consumer", st);
			drop_subscriptions();
			return -1;
		}
		st = natsSubscription_Fetch(&list, s->sub, FETCH_BATCH, FETCH_TIMEOUT_MS, NULL);
		if (st == NATS_TIMEOUT)
			continue;
		if (st != NATS_OK)
		{
			NatsLinkFailed(&nlink, "fetch from JetStream", st);
			drop_subscriptions();
			return -1;
		}
		for (int m = 0; m < list.Count; m++)
		{
			natsMsg    *msg = list.Msgs[m];
			char	   *error = NULL;

			PgcloudWorkerHandleInterrupts();
			if (apply_message(s->name, msg, loopcxt, &error))
			{
				natsMsg_Ack(msg, NULL);
				handled++;
			}
			else
			{
				jsMsgMetaData *meta = NULL;
				int			deliveries = 1;

				if (natsMsg_GetMetaData(&meta, msg) == NATS_OK)
				{
					deliveries = (int) meta->NumDelivered;
					jsMsgMetaData_Destroy(meta);
				}
				if (deliveries >= max_attempts && record_failure(s->name, msg, error, deliveries, loopcxt))
					natsMsg_Term(msg, NULL);
				else
					natsMsg_NakWithDelay(msg, Min(retry_base_ms << Min(deliveries, 10), 60000L), NULL);
			}
		}
		natsMsgList_Destroy(&list);
	}
	return handled;
}

void
pgcloud_consumer_main(Datum arg)
{
	MemoryContext loopcxt;
	jsOptions	jsopts;

	PgcloudWorkerSetup(PGCLOUD_WORKER_CONSUMER, DatumGetInt32(arg));
	if (!PgcloudWorkerCheckInstalled())
		proc_exit(0);
	before_shmem_exit(close_all, (Datum) 0);
	jsOptions_Init(&jsopts);
	loopcxt = AllocSetContextCreate(TopMemoryContext, "pgcloud consumer loop", ALLOCSET_DEFAULT_SIZES);
	load_config();
	ereport(LOG, errmsg("pgcloud NATS consumer started for %d subscribing services", nsubscribers));

	for (;;)
	{
		int			n;
		int			rc;
		long		timeout;

		PgcloudWorkerHandleInterrupts();
		MemoryContextReset(loopcxt);
		MemoryContextSwitchTo(loopcxt);
		if (!PgcloudNatsMode())
			proc_exit(0);		/* the launcher stops us; don't linger */
		if (!NatsLinkEnsure(&nlink, &jsopts))
		{
			drop_subscriptions();
			n = -1;
		}
		else
			n = consume_round(loopcxt);
		if (n > 0)
		{
			PgcloudWorkerNoteActivity(n, 0);
			/* A wake-up while busy (e.g. a service installed) re-reads the subscribers too. */
			if (MyLatch->is_set)
			{
				ResetLatch(MyLatch);
				load_config();
			}
			continue;
		}
		timeout = n < 0 ? NatsLinkBackoffMs(&nlink) : (nsubscribers == 0 ? 10000L : 1L);
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		/* pgcloud.wake_workers() (e.g. a service installed) or nothing to do: re-read the subscribers. */
		if ((rc & WL_LATCH_SET) || nsubscribers == 0)
			load_config();
	}
}
