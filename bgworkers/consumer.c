/*
 * consumer.c — NATS mode: pulls events from the durable JetStream consumer
 * of each subscribing service installed in this database, applies each in
 * one transaction (inbox row + handler, pgcloud.consume_event) and acks
 * after commit. A message that keeps failing is dead-lettered once
 * JetStream's delivery count reaches core.max_delivery_attempts (with a
 * platform.alert event) and terminated; earlier failures are nak'ed with
 * a growing delay.
 *
 * Every durable is pulled at the same time, on one subscription: the
 * worker keeps one pull request outstanding per durable
 * ($JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>, replies to
 * <inbox>.<durable>.<request number>; the events come with their own
 * subjects and the durable in their ack subjects) and waits on that one inbox
 * for whatever any durable delivers, so no message waits for another
 * service's fetch timeout. Each message is applied in its own transaction
 * as before; the acks of what one wait returned go out together after the
 * commits. A durable's request is renewed when it is used up, expired or
 * refused (its status reply) or past its expiry.
 */
#include "workers.h"

#include "access/xact.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/pmsignal.h"
#include "utils/snapmgr.h"

#include "nats_link.h"

#define PULL_BATCH 100
#define PULL_EXPIRES_MS 5000	/* a pull request's life on the server */
#define WAIT_SLICE_MS 100		/* the longest wait before looking at the latch */
#define MAX_SUBSCRIBERS 32
#define MAX_ROUND 500			/* messages applied before the acks go out */

typedef struct Subscriber
{
	char		name[NAMEDATALEN];
	bool		ensured;		/* the durable consumer exists */
	uint64		request;		/* number of the outstanding pull request, 0 = none */
	int			left;			/* messages it may still deliver */
	TimestampTz expires_at;
} Subscriber;

static NatsLink nlink = {0};
static Subscriber subscribers[MAX_SUBSCRIBERS];
static int	nsubscribers = 0;
static int	max_attempts = 5;
static long retry_base_ms = 200;
static natsSubscription *inbox_sub = NULL;
static char inbox[160];
static uint64 request_counter = 0;

/* Drops the inbox subscription; every pull request is forgotten (the server lets them expire). */
static void
drop_subscriptions(void)
{
	if (inbox_sub != NULL)
	{
		natsSubscription_Destroy(inbox_sub);
		inbox_sub = NULL;
	}
	for (int i = 0; i < nsubscribers; i++)
	{
		subscribers[i].ensured = false;
		subscribers[i].request = 0;
	}
}

static void
close_all(int code, Datum arg)
{
	drop_subscriptions();
	NatsLinkClose(&nlink);
}

/*
 * Reads the subscriber list and the retry policy (own transaction); the
 * pull state is kept when the list did not change.
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
	/* A durable still listed keeps its pull request (replies name the durable, not its place). */
	{
		Subscriber	old[MAX_SUBSCRIBERS];
		int			nold = nsubscribers;

		memcpy(old, subscribers, sizeof(Subscriber) * nold);
		nsubscribers = n;
		for (int i = 0; i < n; i++)
		{
			memset(&subscribers[i], 0, sizeof(Subscriber));
			strlcpy(subscribers[i].name, names[i], NAMEDATALEN);
			for (int j = 0; j < nold; j++)
				if (strcmp(old[j].name, names[i]) == 0)
					subscribers[i] = old[j];
		}
	}
}

/* Ensures the durable (pull) consumer of one service. */
static natsStatus
ensure_durable(Subscriber *s)
{
	jsConsumerConfig cc;
	jsConsumerInfo *ci = NULL;
	jsErrCode	jerr = 0;
	natsStatus	st;

	if (s->ensured)
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
	s->ensured = true;
	return NATS_OK;
}

/* Sends a new pull request for durable i. */
static natsStatus
send_pull(int i)
{
	Subscriber *s = &subscribers[i];
	char		subject[256];
	char		reply[256];
	char		body[96];

	s->request = ++request_counter;
	s->left = PULL_BATCH;
	/* The client stops counting on it a little after the server does. */
	s->expires_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), PULL_EXPIRES_MS + 500);
	snprintf(subject, sizeof(subject), "$JS.API.CONSUMER.MSG.NEXT.%s.%s", PGCLOUD_STREAM, s->name);
	snprintf(reply, sizeof(reply), "%s.%s." UINT64_FORMAT, inbox, s->name, s->request);
	snprintf(body, sizeof(body), "{\"batch\":%d,\"expires\":" INT64_FORMAT "}", PULL_BATCH,
			 (int64) PULL_EXPIRES_MS * 1000000);
	return natsConnection_PublishRequest(nlink.conn, subject, reply, body, (int) strlen(body));
}

/* The inbox subscription and a pull request for every durable that has none. */
static bool
ensure_pulls(void)
{
	natsStatus	st = NATS_OK;
	TimestampTz now = GetCurrentTimestamp();

	if (inbox_sub == NULL)
	{
		natsInbox  *ib = NULL;
		char		wildcard[200];

		/* <the connection's inbox prefix (the only one this user may read)>.<unique> */
		st = natsInbox_Create(&ib);
		if (st == NATS_OK)
		{
			const char *unique = strrchr((const char *) ib, '.');

			snprintf(inbox, sizeof(inbox), "%s.%s", nlink.inbox_prefix, unique ? unique + 1 : (const char *) ib);
			natsInbox_Destroy(ib);
			snprintf(wildcard, sizeof(wildcard), "%s.>", inbox);
			st = natsConnection_SubscribeSync(&inbox_sub, nlink.conn, wildcard);
		}
		if (st == NATS_OK)
			natsSubscription_SetPendingLimits(inbox_sub, -1, -1);
		if (st != NATS_OK)
		{
			drop_subscriptions();
			NatsLinkFailed(&nlink, "subscribe to the pull inbox", st);
			return false;
		}
	}
	for (int i = 0; i < nsubscribers && st == NATS_OK; i++)
	{
		Subscriber *s = &subscribers[i];

		st = ensure_durable(s);
		if (st == NATS_OK && (s->request == 0 || s->left <= 0 || now >= s->expires_at))
			st = send_pull(i);
		if (st != NATS_OK)
		{
			drop_subscriptions();
			NatsLinkFailed(&nlink, "set up a durable consumer", st);
			return false;
		}
	}
	return true;
}

static int
durable_index(const char *name, size_t len)
{
	for (int i = 0; i < nsubscribers; i++)
		if (strlen(subscribers[i].name) == len && strncmp(subscribers[i].name, name, len) == 0)
			return i;
	return -1;
}

/*
 * Which durable a message is for; -1 when none listed. The server's status
 * replies come on <inbox>.<durable>.<request> (*request gets the number);
 * a delivered event keeps its own subject and names its consumer in its ack
 * subject ($JS.ACK.[<domain>.<hash>.]<stream>.<consumer>.<delivered>.…;
 * *request is 0 then).
 */
static int
message_durable(natsMsg *msg, uint64 *request)
{
	const char *subj = natsMsg_GetSubject(msg);
	const char *r = natsMsg_GetReply(msg);
	size_t		len = strlen(inbox);

	*request = 0;
	if (subj != NULL && strncmp(subj, inbox, len) == 0 && subj[len] == '.')
	{
		const char *name = subj + len + 1;
		const char *dot = strrchr(name, '.');

		if (dot == NULL)
			return -1;
		*request = strtoull(dot + 1, NULL, 10);
		return durable_index(name, dot - name);
	}
	if (r != NULL && strncmp(r, "$JS.ACK.", 8) == 0)
	{
		const char *tok[16];
		int			n = 0;

		tok[n++] = r + 8;
		for (const char *p = r + 8; *p && n < 16; p++)
			if (*p == '.')
				tok[n++] = p + 1;
		/* the consumer is the 2nd token after $JS.ACK. (7 in all), or the 4th (9 or more) */
		if (n == 7)
			return durable_index(tok[1], tok[2] - tok[1] - 1);
		if (n >= 9)
			return durable_index(tok[3], tok[4] - tok[3] - 1);
	}
	return -1;
}

/* JetStream's delivery count of a message, from its ack subject ($JS.ACK.[<domain>.<hash>.]<stream>.<consumer>.<delivered>.…). */
static int
deliveries_of(natsMsg *msg)
{
	const char *r = natsMsg_GetReply(msg);
	const char *tok[16];
	int			n = 0;

	if (r == NULL || strncmp(r, "$JS.ACK.", 8) != 0)
		return 1;
	tok[n++] = r + 8;
	for (const char *p = r + 8; *p && n < 16; p++)
		if (*p == '.')
			tok[n++] = p + 1;
	/* 7 tokens after $JS.ACK. in the old form, 9 or more with domain and account hash */
	if (n == 7)
		return (int) strtol(tok[2], NULL, 10);
	if (n >= 9)
		return (int) strtol(tok[4], NULL, 10);
	return 1;
}

/* Acks, naks (with a delay) or terminates a message by its ack subject. */
static void
reply_to(natsMsg *msg, const char *body)
{
	const char *r = natsMsg_GetReply(msg);

	if (r != NULL && *r != '\0')
		(void) natsConnection_Publish(nlink.conn, r, body, (int) strlen(body));
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

/*
 * Waits up to timeout_ms for messages on the inbox and applies what came;
 * returns messages handled, or -1 on a NATS failure.
 */
static int
consume_round(MemoryContext loopcxt, long timeout_ms)
{
	int			handled = 0;
	int			nseen = 0;
	natsMsg   **ackable = palloc(sizeof(natsMsg *) * MAX_ROUND);
	int			nack = 0;
	natsStatus	st;

	if (!ensure_pulls())
		return -1;
	for (;;)
	{
		natsMsg    *msg = NULL;
		uint64		request = 0;
		int			i;
		const char *status = NULL;

		st = natsSubscription_NextMsg(&msg, inbox_sub, nseen == 0 ? timeout_ms : 0);
		if (st == NATS_TIMEOUT)
		{
			st = NATS_OK;
			break;
		}
		if (st != NATS_OK)
			break;
		nseen++;
		i = message_durable(msg, &request);
		if (i < 0)
		{
			natsMsg_Destroy(msg);
			continue;
		}
		if (natsMsg_GetDataLength(msg) == 0 && natsMsgHeader_Get(msg, "Status", &status) == NATS_OK
			&& status != NULL)
		{
			/* The server ended a request (408 expired, 409 refused, 404 nothing): renew the current one. */
			if (request == subscribers[i].request && strncmp(status, "100", 3) != 0)
				subscribers[i].left = 0;
			natsMsg_Destroy(msg);
			continue;
		}
		subscribers[i].left--;	/* of its current request, as far as the worker can tell */
		{
			char	   *error = NULL;

			PgcloudWorkerHandleInterrupts();
			if (apply_message(subscribers[i].name, msg, loopcxt, &error))
			{
				ackable[nack++] = msg;
				handled++;
				msg = NULL;
			}
			else
			{
				int			deliveries = deliveries_of(msg);

				if (deliveries >= max_attempts && record_failure(subscribers[i].name, msg, error, deliveries, loopcxt))
					reply_to(msg, "+TERM");
				else
				{
					char		nak[64];
					long		delay = Min(retry_base_ms << Min(deliveries, 10), 60000L);

					snprintf(nak, sizeof(nak), "-NAK {\"delay\":" INT64_FORMAT "}", (int64) delay * 1000000);
					reply_to(msg, nak);
				}
			}
		}
		if (msg != NULL)
			natsMsg_Destroy(msg);
		if (nack == MAX_ROUND)
			break;
		/* A used-up request is renewed before the next wait. */
	}
	/* Every one committed: the acks go out together (one flush). */
	for (int m = 0; m < nack; m++)
	{
		reply_to(ackable[m], "+ACK");
		natsMsg_Destroy(ackable[m]);
	}
	pfree(ackable);
	if (st != NATS_OK)
	{
		drop_subscriptions();
		NatsLinkFailed(&nlink, "receive from JetStream", st);
		return handled > 0 ? handled : -1;
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
		if (!PostmasterIsAlive())
			proc_exit(1);
		MemoryContextReset(loopcxt);
		MemoryContextSwitchTo(loopcxt);
		if (!PgcloudNatsMode())
			proc_exit(0);		/* the launcher stops us; don't linger */
		/* NatsLinkEnsure() replaces a connection that is down: its inbox goes first. */
		if (nlink.conn == NULL || natsConnection_Status(nlink.conn) != NATS_CONN_STATUS_CONNECTED)
			drop_subscriptions();
		if (!NatsLinkEnsure(&nlink, &jsopts))
		{
			drop_subscriptions();
			n = -1;
		}
		else if (nsubscribers == 0)
			n = 0;
		else
			n = consume_round(loopcxt, WAIT_SLICE_MS);
		if (n >= 0 && nsubscribers > 0)
		{
			if (n > 0)
				PgcloudWorkerNoteActivity(n, 0);
			/* A wake-up (e.g. a service installed) re-reads the subscribers. */
			if (MyLatch->is_set)
			{
				ResetLatch(MyLatch);
				load_config();
			}
			continue;			/* the wait was in consume_round */
		}
		timeout = n < 0 ? NatsLinkBackoffMs(&nlink) : 10000L;
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		/* pgcloud.wake_workers() (e.g. a service installed) or nothing to do: re-read the subscribers. */
		if ((rc & WL_LATCH_SET) || nsubscribers == 0)
			load_config();
	}
}
