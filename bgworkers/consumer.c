/*
 * consumer.c — NATS mode: pulls events from the durable JetStream consumer
 * of each subscribing service installed in this database, applies each
 * (inbox row + handler, pgcloud.consume_event) and acks after commit. A message that keeps failing is dead-lettered once
 * JetStream's delivery count reaches core.max_delivery_attempts (with a
 * platform.alert event) and terminated; earlier failures are nak'ed with
 * a growing delay.
 *
 * No message waits for another service's long fetch timeout: every round
 * asks each durable for what it has with a no-wait pull request (the
 * server answers at once, with up to FETCH_BATCH messages or "no
 * messages"; an empty durable costs at most FETCH_TIMEOUT_MS),
 * applies a durable's batch in one transaction (a subtransaction per
 * message) and acks the batch's applied messages together after the
 * commit. A round that found nothing waits on the latch, 1 ms after a busy
 * round, doubling to IDLE_MAX_MS while idle.
 *
 * Single-threaded on purpose: a first version pulled each durable on a
 * thread of its own (blocking pull requests, nats.c only on the threads);
 * with nats.c 3.4.1 (Debian 12) it corrupted the heap within seconds of a
 * durable takeover in test/t/core_consumer_flood.pl ("malloc(): corrupted
 * top size", "corrupted size vs. prev_size" in natsMsgList_Destroy and
 * in _fetch's calloc), which this structure did not in the same test.
 */
#include "workers.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "nats_link.h"

#define FETCH_BATCH 256
#define FETCH_TIMEOUT_MS 2		/* what an empty durable costs a round, at most */
#define IDLE_MAX_MS 50
#define MAX_SUBSCRIBERS 32

typedef struct Subscriber
{
	char		name[NAMEDATALEN];
	natsSubscription *sub;
	bool		resumed;		/* this process has taken the durable over */
} Subscriber;

static NatsLink nlink = {0};
static Subscriber subscribers[MAX_SUBSCRIBERS];
static int	nsubscribers = 0;
static int	max_attempts = 5;
static long retry_base_ms = 200;

/* Destroys the subscriptions (before the connection is closed, on every path). */
static void
drop_subscriptions(void)
{
	for (int i = 0; i < nsubscribers; i++)
	{
		if (subscribers[i].sub != NULL)
			natsSubscription_Destroy(subscribers[i].sub);
		subscribers[i].sub = NULL;
		subscribers[i].resumed = false;
	}
}

/* A NATS failure: everything of the connection dropped, then the connection (backoff follows). */
static void
link_failed(const char *what, natsStatus st)
{
	drop_subscriptions();
	NatsLinkFailed(&nlink, what, st);
}

static void
close_all(int code, Datum arg)
{
	(void) code;
	(void) arg;

	drop_subscriptions();
	NatsLinkClose(&nlink);
}

/*
 * Reads the subscriber list and the retry policy (own transaction). The
 * subscriptions are kept when the list did not change (a
 * wake-up comes with every service installed, and with
 * pgcloud.wake_workers()).
 */
static void
load_config(void)
{
	char		names[MAX_SUBSCRIBERS][NAMEDATALEN];
	int			n;
	bool		same;

	PgcloudWorkerBeginWork(NULL);
	if (SPI_execute("SELECT name FROM pgcloud.nats_subscribers() AS name", true, MAX_SUBSCRIBERS) != SPI_OK_SELECT)
		elog(ERROR, "could not list subscribers");
	n = (int) SPI_processed;
	for (int i = 0; i < n; i++)
		strlcpy(names[i], SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1), NAMEDATALEN);
	max_attempts = (int) PgcloudPolicyNumber("core.max_delivery_attempts");
	retry_base_ms = (long) PgcloudPolicyNumber("core.delivery_retry_base_ms");
	PgcloudWorkerEndWork();

	same = n == nsubscribers;
	for (int i = 0; i < n && same; i++)
		same = strcmp(names[i], subscribers[i].name) == 0;
	if (same)
		return;
	drop_subscriptions();
	nsubscribers = n;
	for (int i = 0; i < nsubscribers; i++)
	{
		strlcpy(subscribers[i].name, names[i], NAMEDATALEN);
		subscribers[i].sub = NULL;
		subscribers[i].resumed = false;
	}
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
	if (st == NATS_OK && !s->resumed && ci->NumAckPending > 0)
	{
		/*
		 * A previous consumer process (killed, or crashed with the server)
		 * left messages delivered but neither applied-and-acked nor nak'ed.
		 * JetStream would redeliver them only after the ack wait, behind
		 * newer messages of the same aggregates: per-aggregate order would
		 * break. Take the durable over from its ack floor instead: recreate
		 * it to deliver from the first unacknowledged message, in stream
		 * order. Messages after the floor that were applied already come
		 * again and are dropped by the inbox (exactly once).
		 */
		uint64_t	floor = ci->AckFloor.Stream;

		jsConsumerInfo_Destroy(ci);
		ci = NULL;
		st = js_DeleteConsumer(nlink.js, PGCLOUD_STREAM, s->name, NULL, &jerr);
		if (st != NATS_OK && st != NATS_NOT_FOUND && jerr != JSConsumerNotFoundErr)
			return st;
		cc.DeliverPolicy = js_DeliverByStartSequence;
		cc.OptStartSeq = floor + 1;
		st = js_AddConsumer(NULL, nlink.js, PGCLOUD_STREAM, &cc, NULL, &jerr);
		if (st != NATS_OK)
			return st;
		ereport(LOG, errmsg("pgcloud consumer %s resumed from stream sequence %llu (messages were left unacknowledged)",
							s->name, (unsigned long long) (floor + 1)));
	}
	else if (st == NATS_OK)
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
	st = js_PullSubscribe(&s->sub, nlink.js, PGCLOUD_SUBJECT_PREFIX ">", s->name, NULL, &so, &jerr);
	if (st == NATS_OK)
		s->resumed = true;
	return st;
}

/* Subscribes every durable; false (after link_failed) on a NATS failure. */
static bool
ensure_all(void)
{
	for (int i = 0; i < nsubscribers; i++)
	{
		sigset_t	saved;
		natsStatus	st;

		if (subscribers[i].sub != NULL)
			continue;
		NatsLinkBlockSignals(&saved);
		st = ensure_subscription(&subscribers[i]);
		NatsLinkRestoreSignals(&saved);
		if (st != NATS_OK)
		{
			link_failed("set up a durable consumer", st);
			return false;
		}
	}
	return true;
}

static void consume_one(const char *subscriber, natsMsg *msg);

/* A message and its subscriber, for the units of work below. */
typedef struct MessageUnit
{
	const char *subscriber;
	natsMsg    *msg;
	const char *error;			/* record_failure: why it failed */
	int			deliveries;
	bool		dead;			/* record_failure: it was dead-lettered */
} MessageUnit;

static void
apply_message_unit(void *arg)
{
	MessageUnit *u = (MessageUnit *) arg;

	consume_one(u->subscriber, u->msg);
}

/* Applies one message; returns true when it should be acked, else sets *error. */
static bool
apply_message(const char *subscriber, natsMsg *msg, char **error)
{
	MessageUnit u = {.subscriber = subscriber, .msg = msg};

	*error = PgcloudRunUnit("applying a NATS event", apply_message_unit, &u);
	return *error == NULL;
}

static void
record_failure_unit(void *arg)
{
	MessageUnit *u = (MessageUnit *) arg;
	Oid			argtypes[5] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	const char *msgid = NULL;
	const char *data = natsMsg_GetData(u->msg);
	bool		isnull;

	natsMsgHeader_Get(u->msg, "Nats-Msg-Id", &msgid);
	values[0] = CStringGetTextDatum(u->subscriber);
	values[1] = CStringGetTextDatum(msgid ? msgid : "");
	values[2] = PointerGetDatum(cstring_to_text_with_len(data ? data : "", natsMsg_GetDataLength(u->msg)));
	values[3] = CStringGetTextDatum(u->error);
	values[4] = Int32GetDatum(u->deliveries);
	if (SPI_execute_with_args("SELECT pgcloud.consume_failed($1, $2, $3, $4, $5)", 5, argtypes, values, nulls,
							  false, 1) == SPI_OK_SELECT && SPI_processed == 1)
		u->dead = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* Records a failed message; true when it was dead-lettered. */
static bool
record_failure(const char *subscriber, natsMsg *msg, const char *error, int deliveries)
{
	MessageUnit u = {.subscriber = subscriber, .msg = msg, .error = error, .deliveries = deliveries};
	char	   *why;

	/*
	 * A message that cannot even be recorded must not take the worker down
	 * (it would be fetched again after the restart, forever): note the error
	 * and let JetStream redeliver it; once its deliveries reach the limit it
	 * is terminated below without a record.
	 */
	why = PgcloudRunUnit("recording a failed NATS event", record_failure_unit, &u);
	if (why == NULL)
		return u.dead;
	ereport(WARNING, errmsg("pgcloud consumer: could not record a failed message for %s: %s", subscriber, why));
	return deliveries >= max_attempts;
}

/* A fetched batch applied in one transaction, a subtransaction per message. */
typedef struct BatchUnit
{
	const char *subscriber;
	natsMsg   **msgs;
	int			count;
	bool	   *applied;		/* out */
	char	  **errors;			/* out, allocated in keep */
	MemoryContext keep;
} BatchUnit;

static void
consume_one(const char *subscriber, natsMsg *msg)
{
	Oid			argtypes[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	const char *data = natsMsg_GetData(msg);
	int			len = natsMsg_GetDataLength(msg);
	const char *subject = natsMsg_GetSubject(msg);

	values[0] = CStringGetTextDatum(subscriber);
	values[1] = PointerGetDatum(cstring_to_text_with_len(data ? data : "", len));
	values[2] = CStringGetTextDatum(subject ? subject : "");
	if (SPI_execute_with_args("SELECT pgcloud.consume_event($1, $2::jsonb, $3)", 3, argtypes, values, NULL,
							  false, 1) != SPI_OK_SELECT)
		elog(ERROR, "pgcloud.consume_event() failed");
}

static void
apply_batch_unit(void *arg)
{
	BatchUnit  *u = (BatchUnit *) arg;

	for (int m = 0; m < u->count; m++)
	{
		MessageUnit mu = {.subscriber = u->subscriber, .msg = u->msgs[m]};

		u->errors[m] = PgcloudRunSubUnit(apply_message_unit, &mu, u->keep);
		if (u->errors[m] == NULL)
			u->applied[m] = true;
		else
			PgcloudWorkerNoteError(u->errors[m]);
	}
}

/*
 * Applies one fetched batch of one durable in one transaction (a
 * subtransaction per message: a failing message rolls back alone) and acks
 * its applied messages together after the commit; the failed ones are
 * nak'ed with a growing delay, or dead-lettered and terminated at the
 * attempts limit. When the batch's transaction itself fails (its commit),
 * each message is applied again in a transaction of its own.
 */
static int
apply_batch(Subscriber *s, natsMsgList *list)
{
	int			count = list->Count;
	int			nack = 0;
	natsMsg   **ackable = palloc(sizeof(natsMsg *) * Max(count, 1));
	BatchUnit	u = {.subscriber = s->name, .msgs = list->Msgs, .count = count,
		.applied = palloc0(sizeof(bool) * Max(count, 1)), .errors = palloc0(sizeof(char *) * Max(count, 1)),
	.keep = CurrentMemoryContext};

	if (PgcloudRunUnit("applying NATS events", apply_batch_unit, &u) != NULL)
		for (int m = 0; m < count; m++)
		{
			u.applied[m] = apply_message(s->name, list->Msgs[m], &u.errors[m]);
			PgcloudWorkerHandleInterrupts();
		}

	for (int m = 0; m < count; m++)
	{
		natsMsg    *msg = list->Msgs[m];

		if (u.applied[m])
			ackable[nack++] = msg;
		else
		{
			jsMsgMetaData *meta = NULL;
			int			deliveries = 1;

			if (natsMsg_GetMetaData(&meta, msg) == NATS_OK)
			{
				deliveries = (int) meta->NumDelivered;
				jsMsgMetaData_Destroy(meta);
			}
			if (deliveries >= max_attempts && record_failure(s->name, msg, u.errors[m], deliveries))
				natsMsg_Term(msg, NULL);
			else
				natsMsg_NakWithDelay(msg, PgcloudBackoffMs(deliveries, retry_base_ms, 10, 60000L), NULL);
		}
	}
	/* Every one committed: the acks go out together. */
	for (int m = 0; m < nack; m++)
		natsMsg_Ack(ackable[m], NULL);
	pfree(ackable);
	return nack;
}

/*
 * One round: a no-wait pull from every durable, each batch applied and
 * acked. Returns the messages applied, or -1 after a NATS failure.
 */
static int
consume_round(void)
{
	int			handled = 0;
	bool		got = false;

	for (int i = 0; i < nsubscribers; i++)
	{
		Subscriber *s = &subscribers[i];
		natsMsgList list = {0};
		natsStatus	st;

		/*
		 * nats.c sends a no-wait pull request first and returns as soon as
		 * the server answered it with messages; only an empty durable waits
		 * (at most FETCH_TIMEOUT_MS). An answer that comes later stays in
		 * the subscription for the next round.
		 */
		st = natsSubscription_Fetch(&list, s->sub, FETCH_BATCH, FETCH_TIMEOUT_MS, NULL);
		if (st == NATS_NOT_FOUND || st == NATS_TIMEOUT)
			continue;			/* nothing there */
		if (st != NATS_OK)
		{
			link_failed("fetch from JetStream", st);
			return -1;
		}
		got = true;
		handled += apply_batch(s, &list);
		natsMsgList_Destroy(&list);
		/* Between batches (a batch is acked whole): SIGTERM, the postmaster's death, SIGHUP. */
		PgcloudWorkerHandleInterrupts();
	}
	return got ? Max(handled, 1) : 0;
}

void
pgcloud_consumer_main(Datum arg)
{
	MemoryContext loopcxt;
	jsOptions	jsopts;
	long		idle_ms = 1;

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
		/* A connection nats.c closed (it does not reconnect): nothing of it may outlive it. */
		if (nlink.conn != NULL && !NatsLinkConnected(&nlink))
			link_failed("keep the connection to NATS", NATS_CONNECTION_CLOSED);
		if (nsubscribers == 0)
			n = 0;
		else if (!NatsLinkEnsure(&nlink, &jsopts))
			n = -1;
		else if (!ensure_all())
			n = -1;
		else
			n = consume_round();
		if (n > 0)
		{
			PgcloudWorkerNoteActivity(n, 0);
			idle_ms = 1;
			/* A wake-up while busy (e.g. a service installed) re-reads the subscribers too. */
			if (MyLatch->is_set)
			{
				ResetLatch(MyLatch);
				load_config();
			}
			continue;
		}
		if (n < 0)
			timeout = NatsLinkBackoffMs(&nlink);
		else if (nsubscribers == 0)
			timeout = 10000L;
		else
		{
			timeout = idle_ms;
			idle_ms = Min(idle_ms * 2, IDLE_MAX_MS);
		}
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		/* pgcloud.wake_workers() (e.g. a service installed) or nothing to subscribe: re-read the subscribers. */
		if ((rc & WL_LATCH_SET) || nsubscribers == 0)
			load_config();
	}
}
