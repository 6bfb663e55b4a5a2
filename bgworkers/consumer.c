/*
 * consumer.c — NATS mode: pulls events from the durable JetStream consumer
 * of each subscribing service installed in this database, applies each in
 * one transaction (inbox row + handler, pgcloud.consume_event) and acks
 * after commit. A message that keeps failing is dead-lettered once
 * JetStream's delivery count reaches core.max_delivery_attempts (with a
 * platform.alert event) and terminated; earlier failures are nak'ed with
 * a growing delay.
 *
 * Every durable is pulled at the same time, so that no message waits for
 * another service's fetch timeout: one fetcher thread per durable waits in
 * a pull request for the next message (natsSubscription_Fetch), then takes
 * what else is there in one batch, and queues what it gets; the
 * worker's own thread waits on its latch and on a pipe the fetchers write
 * to, applies the queued batches in arrival order (each durable's in its
 * own order) and acks each batch's applied messages together after their
 * commits.
 *
 * The fetcher threads call nats.c and libc only: no PostgreSQL function, no
 * palloc, no elog; they take no signal (created with every signal blocked);
 * they are stopped and joined before any subscription, message list or the
 * connection is destroyed, and at exit. A message is never used after its
 * list or its subscription is destroyed: what is still queued when the
 * subscriptions are dropped is destroyed unacknowledged (JetStream delivers
 * it again: ensure_subscription takes the durable over from its ack floor,
 * and the inbox drops what was applied already).
 */
#include "workers.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "access/xact.h"
#include "utils/resowner.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "utils/snapmgr.h"

#include "nats_link.h"

#define FETCH_BATCH 256
#define FETCH_WAIT_MS 500		/* a fetcher's pull request for the next message; bounds how fast it stops */
#define MAX_SUBSCRIBERS 32

typedef struct Subscriber
{
	char		name[NAMEDATALEN];
	natsSubscription *sub;
	bool		resumed;		/* this process has taken the durable over */
	bool		running;		/* its fetcher thread runs */
	pthread_t	thread;
} Subscriber;

/* A fetched batch, handed from a fetcher thread to the worker (malloc'ed). */
typedef struct FetchedBatch
{
	int			subscriber;
	natsMsgList list;
	struct FetchedBatch *next;
} FetchedBatch;

static NatsLink nlink = {0};
static Subscriber subscribers[MAX_SUBSCRIBERS];
static int	nsubscribers = 0;
static int	max_attempts = 5;
static long retry_base_ms = 200;

/* Shared with the fetcher threads: the queue and the first failure, under qmu. */
static pthread_mutex_t qmu = PTHREAD_MUTEX_INITIALIZER;
static FetchedBatch *qhead = NULL;
static FetchedBatch *qtail = NULL;
static natsStatus fetch_error = NATS_OK;
static int	fetch_stop = 0;		/* __atomic */
static int	wake_pipe[2] = {-1, -1};

/* From a fetcher thread: wakes the worker (write() only; a full pipe is awake already). */
static void
wake_worker(void)
{
	char		b = 1;
	ssize_t		rc pg_attribute_unused();

	rc = write(wake_pipe[1], &b, 1);
}

/*
 * A fetcher: waits in a pull request for one message (a pull request for
 * more would be answered only when full or expired: a lone message would
 * wait for the expiry), then takes whatever else is there in batches of
 * no-wait pull requests (answered at once), until nothing is left.
 */
static void *
fetcher_main(void *arg)
{
	Subscriber *s = (Subscriber *) arg;
	int			index = (int) (s - subscribers);
	bool		draining = false;

	while (!__atomic_load_n(&fetch_stop, __ATOMIC_ACQUIRE))
	{
		natsMsgList list = {0};
		FetchedBatch *b;
		natsStatus	st;

		if (draining)
		{
			jsFetchRequest req;

			jsFetchRequest_Init(&req);
			req.Batch = FETCH_BATCH;
			req.NoWait = true;
			req.Expires = (int64_t) FETCH_WAIT_MS * 1000 * 1000;
			st = natsSubscription_FetchRequest(&list, s->sub, &req);
		}
		else
			st = natsSubscription_Fetch(&list, s->sub, 1, FETCH_WAIT_MS, NULL);
		if (st == NATS_TIMEOUT || (draining && st == NATS_NOT_FOUND))
		{
			draining = false;
			continue;
		}
		if (st != NATS_OK)
		{
			pthread_mutex_lock(&qmu);
			if (fetch_error == NATS_OK)
				fetch_error = st;
			pthread_mutex_unlock(&qmu);
			wake_worker();
			break;
		}
		draining = true;
		if (__atomic_load_n(&fetch_stop, __ATOMIC_ACQUIRE) || (b = malloc(sizeof(FetchedBatch))) == NULL)
		{
			/* Not applied: JetStream delivers them again. */
			natsMsgList_Destroy(&list);
			continue;
		}
		b->subscriber = index;
		b->list = list;
		b->next = NULL;
		pthread_mutex_lock(&qmu);
		if (qtail)
			qtail->next = b;
		else
			qhead = b;
		qtail = b;
		pthread_mutex_unlock(&qmu);
		wake_worker();
	}
	return NULL;
}

/* Takes the oldest queued batch, or NULL; *error gets the first fetcher failure. */
static FetchedBatch *
dequeue(natsStatus *error)
{
	FetchedBatch *b;

	pthread_mutex_lock(&qmu);
	b = qhead;
	if (b)
	{
		qhead = b->next;
		if (qhead == NULL)
			qtail = NULL;
	}
	*error = fetch_error;
	pthread_mutex_unlock(&qmu);
	return b;
}

static void
free_batch(FetchedBatch *b)
{
	natsMsgList_Destroy(&b->list);
	free(b);
}

/*
 * Stops and joins every fetcher, destroys what is still queued (not acked:
 * delivered again) and then the subscriptions. Before the connection is
 * closed, on every path.
 */
static void
drop_subscriptions(void)
{
	FetchedBatch *b;
	natsStatus	ignored;

	__atomic_store_n(&fetch_stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < nsubscribers; i++)
		if (subscribers[i].running)
		{
			pthread_join(subscribers[i].thread, NULL);
			subscribers[i].running = false;
		}
	while ((b = dequeue(&ignored)) != NULL)
		free_batch(b);
	/* The acks sent so far reach the server before the durables are looked at again. */
	if (NatsLinkConnected(&nlink))
		natsConnection_FlushTimeout(nlink.conn, 1000);
	pthread_mutex_lock(&qmu);
	fetch_error = NATS_OK;
	pthread_mutex_unlock(&qmu);
	for (int i = 0; i < nsubscribers; i++)
	{
		if (subscribers[i].sub != NULL)
			natsSubscription_Destroy(subscribers[i].sub);
		subscribers[i].sub = NULL;
		subscribers[i].resumed = false;
	}
	__atomic_store_n(&fetch_stop, 0, __ATOMIC_RELEASE);
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
 * subscriptions and fetchers are kept when the list did not change (a
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
		subscribers[i].running = false;
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

/* Subscribes every durable and starts its fetcher; false (after link_failed) on a NATS failure. */
static bool
start_fetchers(void)
{
	for (int i = 0; i < nsubscribers; i++)
	{
		Subscriber *s = &subscribers[i];
		natsStatus	st;
		sigset_t	saved;
		int			rc;

		if (s->running)
			continue;
		NatsLinkBlockSignals(&saved);
		st = ensure_subscription(s);
		NatsLinkRestoreSignals(&saved);
		if (st != NATS_OK)
		{
			link_failed("set up a durable consumer", st);
			return false;
		}
		/* The fetcher takes no signal: PostgreSQL's handlers run on this thread. */
		NatsLinkBlockSignals(&saved);
		rc = pthread_create(&s->thread, NULL, fetcher_main, s);
		NatsLinkRestoreSignals(&saved);
		if (rc != 0)
			elog(ERROR, "could not start a NATS fetcher thread: %s", strerror(rc));
		s->running = true;
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

	for (volatile int m = 0; m < u->count; m++)
	{
		MemoryContext cxt = CurrentMemoryContext;
		ResourceOwner owner = CurrentResourceOwner;

		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(cxt);
		PG_TRY();
		{
			consume_one(u->subscriber, u->msgs[m]);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
			u->applied[m] = true;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
			u->errors[m] = MemoryContextStrdup(u->keep, edata->message ? edata->message : "unknown error");
			FreeErrorData(edata);
			PgcloudWorkerNoteError(u->errors[m]);
		}
		PG_END_TRY();
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
apply_batch(FetchedBatch *b)
{
	Subscriber *s = &subscribers[b->subscriber];
	int			count = b->list.Count;
	int			nack = 0;
	natsMsg   **ackable = palloc(sizeof(natsMsg *) * Max(count, 1));
	BatchUnit	u = {.subscriber = s->name, .msgs = b->list.Msgs, .count = count,
		.applied = palloc0(sizeof(bool) * Max(count, 1)), .errors = palloc0(sizeof(char *) * Max(count, 1)),
	.keep = CurrentMemoryContext};

	if (PgcloudRunUnit("applying NATS events", apply_batch_unit, &u) != NULL)
		for (int m = 0; m < count; m++)
		{
			u.applied[m] = apply_message(s->name, b->list.Msgs[m], &u.errors[m]);
			PgcloudWorkerHandleInterrupts();
		}

	for (int m = 0; m < count; m++)
	{
		natsMsg    *msg = b->list.Msgs[m];

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
 * Applies every queued batch; returns the messages applied, or -1 after a
 * NATS failure (a fetcher's, or the connection's).
 */
static int
drain_queue(void)
{
	int			handled = 0;

	for (;;)
	{
		natsStatus	error;
		FetchedBatch *b = dequeue(&error);

		if (b == NULL)
		{
			if (error != NATS_OK)
			{
				link_failed("fetch from JetStream", error);
				return -1;
			}
			return handled;
		}
		handled += apply_batch(b);
		free_batch(b);
		/* Between batches (a batch is acked whole): SIGTERM, the postmaster's death, SIGHUP. */
		PgcloudWorkerHandleInterrupts();
	}
}

static void
drain_pipe(void)
{
	char		buf[256];

	while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
		;
}

void
pgcloud_consumer_main(Datum arg)
{
	MemoryContext loopcxt;
	jsOptions	jsopts;
	WaitEventSet *wait_set;

	PgcloudWorkerSetup(PGCLOUD_WORKER_CONSUMER, DatumGetInt32(arg));
	if (!PgcloudWorkerCheckInstalled())
		proc_exit(0);
	if (pipe(wake_pipe) != 0 || fcntl(wake_pipe[0], F_SETFL, O_NONBLOCK) != 0
		|| fcntl(wake_pipe[1], F_SETFL, O_NONBLOCK) != 0)
		elog(ERROR, "could not create the consumer's wake-up pipe: %m");
	wait_set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, wake_pipe[0], NULL, NULL);
	before_shmem_exit(close_all, (Datum) 0);
	jsOptions_Init(&jsopts);
	loopcxt = AllocSetContextCreate(TopMemoryContext, "pgcloud consumer loop", ALLOCSET_DEFAULT_SIZES);
	load_config();
	ereport(LOG, errmsg("pgcloud NATS consumer started for %d subscribing services", nsubscribers));

	for (;;)
	{
		int			n;
		long		timeout;
		WaitEvent	ev[3];
		int			nev;
		bool		latch = false;

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
		else if (!start_fetchers())
			n = -1;
		else
			n = drain_queue();
		if (n > 0)
			PgcloudWorkerNoteActivity(n, 0);
		if (n < 0)
			timeout = NatsLinkBackoffMs(&nlink);
		else if (n > 0)
			timeout = 0;		/* look at the queue again, after the wake-ups below */
		else
			timeout = 10000L;	/* idle: the fetchers and wake-ups end the wait */
		nev = WaitEventSetWait(wait_set, timeout, ev, lengthof(ev), PG_WAIT_EXTENSION);
		for (int i = 0; i < nev; i++)
		{
			if (ev[i].events & WL_LATCH_SET)
				latch = true;
			if (ev[i].events & WL_SOCKET_READABLE)
				drain_pipe();
		}
		if (latch)
			ResetLatch(MyLatch);
		/* pgcloud.wake_workers() (e.g. a service installed) or nothing to subscribe: re-read the subscribers. */
		if (latch || nsubscribers == 0)
			load_config();
	}
}
