/*
 * consumer.c — NATS mode: pulls events from the durable JetStream consumer
 * of each subscribing service installed in this database, applies each in
 * one transaction (inbox row + handler, pgcloud.consume_event) and acks
 * after commit. A message that keeps failing is dead-lettered once
 * JetStream's delivery count reaches core.max_delivery_attempts (with a
 * platform.alert event) and terminated; earlier failures are nak'ed with
 * a growing delay.
 *
 * Every durable is fetched at the same time: one fetcher thread per durable
 * (plain C and nats.c only, no PostgreSQL calls) waits in a pull request and
 * queues what arrives; the worker's own thread waits on its latch and a pipe
 * the fetchers write to, applies the queued messages in arrival order (each
 * durable's in its own order) and acks a fetched batch together after the
 * commits. No message waits for another service's fetch timeout.
 */
#include "workers.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "access/xact.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "utils/snapmgr.h"

#include "nats_link.h"

#define FETCH_BATCH 100
#define FETCH_WAIT_MS 1000		/* a fetcher's pull request; only bounds how fast it stops */
#define MAX_SUBSCRIBERS 32

/* A fetched batch, handed from a fetcher thread to the worker (malloc'ed). */
typedef struct FetchedBatch
{
	int			subscriber;
	natsMsgList list;
	struct FetchedBatch *next;
} FetchedBatch;

typedef struct Subscriber
{
	char		name[NAMEDATALEN];
	natsSubscription *sub;
	pthread_t	thread;
	bool		running;
} Subscriber;

static NatsLink nlink = {0};
static Subscriber subscribers[MAX_SUBSCRIBERS];
static int	nsubscribers = 0;
static int	max_attempts = 5;
static long retry_base_ms = 200;

/* ---- shared with the fetcher threads (under qmu) ---------------------- */
static pthread_mutex_t qmu = PTHREAD_MUTEX_INITIALIZER;
static FetchedBatch *qhead = NULL;
static FetchedBatch *qtail = NULL;
static volatile int fetch_stop = 0;
static natsStatus fetch_error = NATS_OK;	/* the first fetcher failure */
static int	wake_pipe[2] = {-1, -1};
static WaitEventSet *wait_set = NULL;

static void
wake_worker_from_thread(void)
{
	char		b = 1;
	ssize_t		rc pg_attribute_unused();

	rc = write(wake_pipe[1], &b, 1);	/* non-blocking: a full pipe is awake already */
}

static void *
fetcher_main(void *arg)
{
	Subscriber *s = (Subscriber *) arg;
	int			index = (int) (s - subscribers);

	while (!__atomic_load_n(&fetch_stop, __ATOMIC_ACQUIRE))
	{
		natsMsgList list = {0};
		natsStatus	st = natsSubscription_Fetch(&list, s->sub, FETCH_BATCH, FETCH_WAIT_MS, NULL);

		if (st == NATS_TIMEOUT)
			continue;
		if (st != NATS_OK || __atomic_load_n(&fetch_stop, __ATOMIC_ACQUIRE))
		{
			/* Unfetched (stopping): JetStream redelivers them after AckWait. */
			if (st == NATS_OK)
				natsMsgList_Destroy(&list);
			else
			{
				pthread_mutex_lock(&qmu);
				if (fetch_error == NATS_OK && !fetch_stop)
					fetch_error = st;
				pthread_mutex_unlock(&qmu);
				wake_worker_from_thread();
			}
			break;
		}
		{
			FetchedBatch *b = malloc(sizeof(FetchedBatch));

			if (b == NULL)
			{
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
			wake_worker_from_thread();
		}
	}
	return NULL;
}

/* Stops every fetcher, then drops the subscriptions and whatever is queued. */
static void
drop_subscriptions(void)
{
	FetchedBatch *b;

	__atomic_store_n(&fetch_stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < nsubscribers; i++)
		if (subscribers[i].running)
		{
			pthread_join(subscribers[i].thread, NULL);
			subscribers[i].running = false;
		}
	for (int i = 0; i < nsubscribers; i++)
		if (subscribers[i].sub != NULL)
		{
			natsSubscription_Destroy(subscribers[i].sub);
			subscribers[i].sub = NULL;
		}
	pthread_mutex_lock(&qmu);
	b = qhead;
	qhead = qtail = NULL;
	fetch_error = NATS_OK;
	pthread_mutex_unlock(&qmu);
	while (b)
	{
		FetchedBatch *next = b->next;

		natsMsgList_Destroy(&b->list);	/* unacked: redelivered after AckWait */
		free(b);
		b = next;
	}
	__atomic_store_n(&fetch_stop, 0, __ATOMIC_RELEASE);
}

static void
close_all(int code, Datum arg)
{
	drop_subscriptions();
	NatsLinkClose(&nlink);
}

/*
 * Reads the subscriber list and the retry policy (own transaction); the
 * subscriptions are kept when the list did not change.
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

/* Subscribes every durable and starts its fetcher; false (logged) on a NATS failure. */
static bool
start_fetchers(void)
{
	sigset_t	all,
				old;

	for (int i = 0; i < nsubscribers; i++)
	{
		Subscriber *s = &subscribers[i];
		natsStatus	st;

		if (s->running)
			continue;
		st = ensure_subscription(s);
		if (st != NATS_OK)
		{
			NatsLinkFailed(&nlink, "set up a durable consumer", st);
			drop_subscriptions();
			return false;
		}
		/* The fetchers take no signal: PostgreSQL's handlers belong to this thread. */
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		if (pthread_create(&s->thread, NULL, fetcher_main, s) == 0)
			s->running = true;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (!s->running)
			elog(ERROR, "could not start a NATS fetcher thread");
	}
	return true;
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

/* Applies one fetched batch of one durable; acks its applied messages together after their commits. */
static int
apply_batch(FetchedBatch *b, MemoryContext loopcxt)
{
	Subscriber *s = &subscribers[b->subscriber];
	int			handled = 0;
	int			nack = 0;
	natsMsg   **ackable = palloc(sizeof(natsMsg *) * Max(b->list.Count, 1));

	for (int m = 0; m < b->list.Count; m++)
	{
		natsMsg    *msg = b->list.Msgs[m];
		char	   *error = NULL;

		PgcloudWorkerHandleInterrupts();
		if (apply_message(s->name, msg, loopcxt, &error))
		{
			ackable[nack++] = msg;
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
	/* Every one committed: the acks go out together (one flush). */
	for (int m = 0; m < nack; m++)
		natsMsg_Ack(ackable[m], NULL);
	pfree(ackable);
	return handled;
}

/*
 * Applies whatever the fetchers queued; returns messages handled, or -1 on
 * a NATS failure (the fetchers are stopped then).
 */
static int
consume_round(MemoryContext loopcxt)
{
	int			handled = 0;
	natsStatus	err;

	if (!start_fetchers())
		return -1;
	for (;;)
	{
		FetchedBatch *b;

		pthread_mutex_lock(&qmu);
		err = fetch_error;
		b = qhead;
		if (b)
		{
			qhead = b->next;
			if (qhead == NULL)
				qtail = NULL;
		}
		pthread_mutex_unlock(&qmu);
		if (b == NULL)
			break;
		handled += apply_batch(b, loopcxt);
		natsMsgList_Destroy(&b->list);
		free(b);
	}
	if (err != NATS_OK)
	{
		NatsLinkFailed(&nlink, "fetch from JetStream", err);
		drop_subscriptions();
		return handled > 0 ? handled : -1;
	}
	return handled;
}

/* Empties the fetchers' wake-up pipe. */
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
		WaitEvent	ev;
		bool		latch = false;

		PgcloudWorkerHandleInterrupts();
		MemoryContextReset(loopcxt);
		MemoryContextSwitchTo(loopcxt);
		if (!PgcloudNatsMode())
			proc_exit(0);		/* the launcher stops us; don't linger */
		drain_pipe();
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
		/* Wait for the fetchers (the pipe), a wake-up (the latch) or the backoff. */
		timeout = n < 0 ? NatsLinkBackoffMs(&nlink) : (nsubscribers == 0 ? 10000L : 60000L);
		if (n < 0)
			drain_pipe();		/* backing off: the fetchers are stopped */
		(void) WaitEventSetWait(wait_set, timeout, &ev, 1, PG_WAIT_EXTENSION);
		latch = MyLatch->is_set;
		ResetLatch(MyLatch);
		/* pgcloud.wake_workers() (e.g. a service installed) or nothing to do: re-read the subscribers. */
		if (latch || nsubscribers == 0)
			load_config();
	}
}
