/*
 * consumer.c — NATS mode: receives events from the durable JetStream consumer
 * of each subscribing service installed in this database, applies each
 * (inbox row + handler, pgcloud.consume_event) and acks after commit. A
 * message that keeps failing is dead-lettered once JetStream's delivery
 * count reaches core.max_delivery_attempts (with a platform.alert event) and
 * terminated; earlier failures are nak'ed with a growing delay.
 *
 * One inbox for every durable: the process subscribes once per connection
 * to <inbox prefix>.<token>.> and keeps one pull request open per durable
 * (JetStream's $JS.API.CONSUMER.MSG.NEXT, up to PULL_BATCH messages, expiring
 * after PULL_EXPIRES_MS), whose replies come on <...>.<list generation>.<the
 * durable's index>. The inbox is destroyed only after its connection is
 * closed (nats.c 3.4's reader thread may crash delivering to a subscription
 * destroyed on a live connection: nats-io/nats.c#637). The
 * server pushes each message as soon as it is stored, so no message waits for
 * another service's fetch or for a polling interval; a request that was
 * answered in full, or ended with a status (408 expired, 409), is renewed
 * before the batch is applied, and one that stayed silent past its expiry is
 * renewed too. A round takes what arrived (up to ROUND_MAX messages), applies
 * each durable's share in one transaction (a subtransaction per message) and
 * acks the applied ones together after the commit.
 *
 * The pull protocol is spoken here rather than through nats.c's
 * natsSubscription_Fetch: in nats.c 3.4.1 (Debian 12), a Fetch that starts
 * with more than half of its batch already pending (answers to an earlier
 * request that came after its timeout) keeps collecting past the batch and
 * writes beyond its message array (seen in a core: Count = 548 in an array of
 * 256, then "double free or corruption" in natsMsgList_Destroy).
 *
 * Single-threaded on purpose: nats.c's own threads read the socket and queue
 * the messages; nothing of PostgreSQL runs on them.
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

#define PULL_BATCH 256			/* messages one pull request asks for */
/*
 * How long a pull request waits on the server. Short, so that a request
 * that ends without a word stalls its durable briefly: it is renewed
 * PULL_EXPIRES_MS + PULL_GRACE_MS after it was made (at most 2.5 s; it was
 * 7 s). The ends we know of do say so (a 408 when it expires, a 409
 * "Leadership Change" when the consumer's leader moves, which nats-server
 * announces since 2.7.1; a broken link makes a new connection and new
 * requests); this bounds the rest. Idle, it costs one request and one 408
 * per durable per 2 s.
 */
#define PULL_EXPIRES_MS 2000
#define PULL_GRACE_MS 500		/* a request silent this long after its expiry is renewed */
#define PULL_HOLD_MS 250		/* a refused request is renewed after this long */
#define ROUND_MAX 1024			/* messages taken from the inbox per round */
#define WAIT_MS 50				/* longest wait for a message before interrupts are checked */
#define MAX_SUBSCRIBERS 32
#define CONFIG_RELOAD_MS 5000	/* the subscribers are read again at least this often */

typedef struct Subscriber
{
	char		name[NAMEDATALEN];
	bool		ready;			/* its durable exists on this connection */
	bool		resumed;		/* this process has taken the durable over */
	bool		open;			/* a pull request of ours is outstanding */
	int			owed;			/* messages that request may still deliver */
	TimestampTz asked_at;
	TimestampTz hold_until;		/* after a refusal (503, 409...): no new request before */
	natsMsg   **got;			/* this round's messages, in arrival order */
	int			ngot;
	char	  **applied;		/* the event types and patterns it applies (nats_applied_patterns) */
	int			napplied;
	bool		applied_known;	/* read since the last wake-up */
} Subscriber;

static NatsLink nlink = {0};
static natsSubscription *inbox = NULL;	/* <inbox_base>.>: every durable's replies */
static char inbox_base[NAMEDATALEN + 48];
static Subscriber subscribers[MAX_SUBSCRIBERS];
static int	nsubscribers = 0;
static uint32 list_generation = 0;	/* requests reply on <inbox_base>.<generation>.<index> */
static natsMsg *round_msgs[MAX_SUBSCRIBERS][ROUND_MAX];	/* a round takes at most ROUND_MAX in all */
static int	max_attempts = 5;
static long retry_base_ms = 200;
static MemoryContext config_cxt = NULL;	/* the subscribers' applied patterns */
static SPIPlanPtr consume_plan = NULL;

/*
 * Forgets the inbox and what the durables had on the connection. Called only
 * once the connection is closed: nats.c 3.4's reader thread may still be
 * delivering to a subscription destroyed under it on a live connection
 * (nats-io/nats.c#637, fixed after 3.5.0), and this inbox receives
 * continuously.
 */
static void
drop_inbox(void)
{
	Assert(nlink.conn == NULL);
	if (inbox != NULL)
		natsSubscription_Destroy(inbox);
	inbox = NULL;
	for (int i = 0; i < nsubscribers; i++)
	{
		subscribers[i].ready = false;
		subscribers[i].resumed = false;
		subscribers[i].open = false;
	}
}

/* A NATS failure: the connection closed (the failure logged, backoff follows), then the inbox dropped. */
static void
link_failed(const char *what, natsStatus st)
{
	NatsLinkFailed(&nlink, what, st);
	drop_inbox();
}

static void
close_all(int code, Datum arg)
{
	(void) code;
	(void) arg;

	NatsLinkClose(&nlink);
	drop_inbox();
}

/*
 * True when the message's event type (its subject, pgcloud.<type>) is one
 * the subscriber does not apply: pgcloud.consume_event would answer
 * 'ignored' (matched as pgcloud.event_matches() matches).
 */
static bool
is_ignored(Subscriber *s, natsMsg *msg)
{
	const char *subject = natsMsg_GetSubject(msg);
	const size_t prefix_len = sizeof(PGCLOUD_SUBJECT_PREFIX) - 1;
	const char *type;
	size_t		tlen;

	if (!s->applied_known || subject == NULL || strncmp(subject, PGCLOUD_SUBJECT_PREFIX, prefix_len) != 0)
		return false;
	type = subject + prefix_len;
	tlen = strlen(type);
	for (int i = 0; i < s->napplied; i++)
		if (PgcloudEventMatches(s->applied[i], strlen(s->applied[i]), type, tlen))
			return false;
	return true;
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

	if (config_cxt == NULL)
		config_cxt = AllocSetContextCreate(TopMemoryContext, "pgcloud consumer config", ALLOCSET_SMALL_SIZES);
	MemoryContextReset(config_cxt);
	for (int i = 0; i < nsubscribers; i++)
		subscribers[i].applied_known = false;	/* until read again below (an error may come first) */
	PgcloudWorkerBeginWork(NULL);
	if (SPI_execute("SELECT name FROM pgcloud.nats_subscribers() AS name", true, MAX_SUBSCRIBERS) != SPI_OK_SELECT)
		elog(ERROR, "could not list subscribers");
	n = (int) SPI_processed;
	for (int i = 0; i < n; i++)
		strlcpy(names[i], SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1), NAMEDATALEN);
	max_attempts = (int) PgcloudPolicyNumber("core.max_delivery_attempts");
	retry_base_ms = (long) PgcloudPolicyNumber("core.delivery_retry_base_ms");

	same = n == nsubscribers;
	for (int i = 0; i < n && same; i++)
		same = strcmp(names[i], subscribers[i].name) == 0;
	if (!same)
	{
		/*
		 * The inbox stays (see drop_inbox); requests of the new list reply on
		 * a new generation's subjects, so a status for an old request finds
		 * no subscriber by index. Deliveries of an old request are filed by
		 * their durable's name. A durable kept keeps its state.
		 */
		Subscriber old[MAX_SUBSCRIBERS];
		int			nold = nsubscribers;

		memcpy(old, subscribers, sizeof(Subscriber) * nold);
		nsubscribers = n;
		list_generation++;
		for (int i = 0; i < nsubscribers; i++)
		{
			memset(&subscribers[i], 0, sizeof(Subscriber));
			strlcpy(subscribers[i].name, names[i], NAMEDATALEN);
			subscribers[i].got = round_msgs[i];
			for (int j = 0; j < nold; j++)
				if (strcmp(old[j].name, names[i]) == 0)
				{
					subscribers[i].ready = old[j].ready;
					subscribers[i].resumed = old[j].resumed;
				}
		}
	}
	/* What each one applies (re-read at every wake-up: installing a service or an upgrade changes it). */
	for (int i = 0; i < nsubscribers; i++)
	{
		Oid			argtypes[1] = {TEXTOID};
		Datum		values[1] = {CStringGetTextDatum(subscribers[i].name)};
		Subscriber *s = &subscribers[i];

		if (SPI_execute_with_args("SELECT pgcloud.nats_applied_patterns($1)", 1, argtypes, values, NULL, true, 0)
			!= SPI_OK_SELECT)
			elog(ERROR, "could not list the applied event types");
		s->napplied = (int) SPI_processed;
		s->applied = MemoryContextAlloc(config_cxt, sizeof(char *) * Max(s->napplied, 1));
		for (uint64 r = 0; r < SPI_processed; r++)
			s->applied[r] = MemoryContextStrdup(config_cxt,
												SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1));
		s->applied_known = true;
	}
	PgcloudWorkerEndWork();
}

/* Ensures the durable consumer of one service (taken over from its ack floor when a predecessor left it mid-batch). */
static natsStatus
ensure_durable(Subscriber *s)
{
	jsConsumerConfig cc;
	jsConsumerInfo *ci = NULL;
	jsErrCode	jerr = 0;
	natsStatus	st;

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
	s->resumed = true;
	return NATS_OK;
}

/*
 * The inbox (once per connection) and every durable; false (after
 * link_failed) on a NATS failure.
 */
static bool
ensure_all(void)
{
	sigset_t	saved;
	natsStatus	st = NATS_OK;

	if (inbox == NULL)
	{
		uint8		token[8];

		if (!pg_strong_random(token, sizeof(token)))
			elog(ERROR, "could not generate a random inbox token");
		snprintf(inbox_base, sizeof(inbox_base), "%s.%02x%02x%02x%02x%02x%02x%02x%02x", nlink.inbox_prefix,
				 token[0], token[1], token[2], token[3], token[4], token[5], token[6], token[7]);
		NatsLinkBlockSignals(&saved);
		st = natsConnection_SubscribeSync(&inbox, nlink.conn, psprintf("%s.>", inbox_base));
		/* every durable's unacknowledged messages fit (MaxAckPending each) */
		if (st == NATS_OK)
			st = natsSubscription_SetPendingLimits(inbox, MAX_SUBSCRIBERS * 2000, 256 * 1024 * 1024);
		NatsLinkRestoreSignals(&saved);
		if (st != NATS_OK)
		{
			link_failed("subscribe to the pull inbox", st);
			return false;
		}
	}
	for (int i = 0; i < nsubscribers; i++)
	{
		if (subscribers[i].ready)
			continue;
		NatsLinkBlockSignals(&saved);
		st = ensure_durable(&subscribers[i]);
		NatsLinkRestoreSignals(&saved);
		if (st != NATS_OK)
		{
			link_failed("set up a durable consumer", st);
			return false;
		}
		subscribers[i].ready = true;
		subscribers[i].open = false;
	}
	return true;
}

/*
 * Renews the pull request of every durable that has none outstanding (or
 * whose request stayed silent past its expiry): JetStream pushes up to
 * PULL_BATCH messages to <inbox_base>.<generation>.<i> as they come, for
 * PULL_EXPIRES_MS.
 */
static bool
renew_pulls(void)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < nsubscribers; i++)
	{
		Subscriber *s = &subscribers[i];
		char		subject[NAMEDATALEN + 64];
		char		reply[sizeof(inbox_base) + 32];
		char		body[96];
		natsStatus	st;

		if (!s->ready || now < s->hold_until
			|| (s->open && !TimestampDifferenceExceeds(s->asked_at, now, PULL_EXPIRES_MS + PULL_GRACE_MS)))
			continue;
		snprintf(subject, sizeof(subject), "$JS.API.CONSUMER.MSG.NEXT.%s.%s", PGCLOUD_STREAM, s->name);
		snprintf(reply, sizeof(reply), "%s.%u.%d", inbox_base, list_generation, i);
		snprintf(body, sizeof(body), "{\"batch\":%d,\"expires\":%lld}", PULL_BATCH,
				 (long long) PULL_EXPIRES_MS * 1000000LL);
		st = natsConnection_PublishRequestString(nlink.conn, subject, reply, body);
		if (st != NATS_OK)
		{
			link_failed("ask JetStream for messages", st);
			return false;
		}
		s->open = true;
		s->owed = PULL_BATCH;
		s->asked_at = now;
	}
	return true;
}

/*
 * Publishes an acknowledgement ("+ACK", "+TERM", "-NAK {...}") to a delivered
 * message's reply subject: JetStream's ack protocol. nats.c's natsMsg_Ack and
 * its siblings cannot serve here: they read the message's JetStream
 * subscription (sub->jsi), which a plain inbox subscription has not.
 */
static void
ack_with(natsMsg *msg, const char *what)
{
	natsConnection_PublishString(nlink.conn, natsMsg_GetReply(msg), what);
}

/* The subscriber whose durable is named so, or NULL. */
static Subscriber *
subscriber_named(const char *name)
{
	for (int i = 0; i < nsubscribers; i++)
		if (strcmp(subscribers[i].name, name) == 0)
			return &subscribers[i];
	return NULL;
}

/*
 * Files one message of the inbox under its durable, or takes note of a
 * status. A delivery keeps its stream subject and names its durable in its
 * ack subject ($JS.ACK.<stream>.<durable>...); a status comes on the reply
 * subject of the request it ends (<inbox_base>.<generation>.<i>): 408 (the request
 * expired), 409 (the durable was deleted, too many waiting requests...) and
 * 404 end it, a 409 "Consumer Deleted" also makes the durable be ensured
 * again. Returns true when the message was kept (the caller destroys the rest).
 */
static bool
file_message(natsMsg *msg)
{
	const char *reply = natsMsg_GetReply(msg);
	const char *status = NULL;
	Subscriber *s = NULL;

	if (natsMsg_GetDataLength(msg) == 0 && natsMsgHeader_Get(msg, "Status", &status) == NATS_OK && status != NULL)
	{
		const char *subject = natsMsg_GetSubject(msg);
		size_t		baselen = strlen(inbox_base);
		char	   *end;
		unsigned long gen;
		long		i;

		/* <inbox_base>.<generation>.<index> of a request of the current list, or not ours */
		if (strncmp(status, "100", 3) == 0 || subject == NULL || strncmp(subject, inbox_base, baselen) != 0
			|| subject[baselen] != '.' || !isdigit((unsigned char) subject[baselen + 1]))
			return false;
		errno = 0;
		gen = strtoul(subject + baselen + 1, &end, 10);
		if (errno != 0 || *end != '.' || gen != list_generation || !isdigit((unsigned char) end[1]))
			return false;
		i = strtol(end + 1, &end, 10);
		if (errno != 0 || *end != '\0' || i < 0 || i >= nsubscribers)
			return false;
		s = &subscribers[i];
		s->open = false;
		/*
		 * 408: the request expired, ask again at once. Anything else (503:
		 * no JetStream responder, as while the stream has no leader; 409)
		 * refused it: ask again after PULL_HOLD_MS, not in a tight loop.
		 */
		if (strncmp(status, "408", 3) != 0)
			s->hold_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), PULL_HOLD_MS);
		if (strncmp(status, "409", 3) == 0)
		{
			const char *why = NULL;

			if (natsMsgHeader_Get(msg, "Description", &why) == NATS_OK && why != NULL
				&& pg_strcasecmp(why, "Consumer Deleted") == 0)
				s->ready = false;
		}
		return false;
	}
	if (reply != NULL && strncmp(reply, "$JS.ACK.", 8) == 0)
	{
		jsMsgMetaData *meta = NULL;

		if (natsMsg_GetMetaData(&meta, msg) == NATS_OK)
		{
			if (meta->Stream != NULL && strcmp(meta->Stream, PGCLOUD_STREAM) == 0 && meta->Consumer != NULL)
				s = subscriber_named(meta->Consumer);
			jsMsgMetaData_Destroy(meta);
		}
	}
	if (s == NULL)
		return false;			/* not a delivery of one of our durables: nothing to apply or ack */
	if (--s->owed <= 0)
		s->open = false;
	/*
	 * An event it would only answer 'ignored' for is acknowledged at once,
	 * without a transaction (acking it before earlier ones are applied moves
	 * no ack floor past them).
	 */
	if (is_ignored(s, msg))
	{
		ack_with(msg, "+ACK");
		return false;
	}
	s->got[s->ngot++] = msg;
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
	/* planned once per process */
	if (SPI_execute_plan(PgcloudPlan(&consume_plan, "SELECT pgcloud.consume_event($1, $2::jsonb, $3)", 3, argtypes),
						 values, NULL, false, 1) != SPI_OK_SELECT)
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
 * Applies one durable's messages of a round in one transaction (a
 * subtransaction per message: a failing message rolls back alone) and acks
 * its applied messages together after the commit; the failed ones are
 * nak'ed with a growing delay, or dead-lettered and terminated at the
 * attempts limit. When the batch's transaction itself fails (its commit),
 * each message is applied again in a transaction of its own.
 */
static int
apply_batch(Subscriber *s)
{
	int			count = s->ngot;
	int			nack = 0;
	natsMsg   **ackable = palloc(sizeof(natsMsg *) * Max(count, 1));
	BatchUnit	u = {.subscriber = s->name, .msgs = s->got, .count = count,
		.applied = palloc0(sizeof(bool) * Max(count, 1)), .errors = palloc0(sizeof(char *) * Max(count, 1)),
	.keep = CurrentMemoryContext};

	if (PgcloudRunUnit("applying NATS events", apply_batch_unit, &u) != NULL)
		for (int m = 0; m < count; m++)
		{
			u.applied[m] = apply_message(s->name, s->got[m], &u.errors[m]);
			PgcloudWorkerHandleInterrupts();
		}

	for (int m = 0; m < count; m++)
	{
		natsMsg    *msg = s->got[m];

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
				ack_with(msg, "+TERM");
			else
				ack_with(msg, psprintf("-NAK {\"delay\":%lld}",
									   (long long) PgcloudBackoffMs(deliveries, retry_base_ms, 10, 60000L) * 1000000LL));
		}
	}
	/* Every one committed: the acks go out together. */
	for (int m = 0; m < nack; m++)
		ack_with(ackable[m], "+ACK");
	pfree(ackable);
	return nack;
}

/* Destroys this round's messages (applied, or left to JetStream's redelivery). */
static void
release_round(void)
{
	for (int i = 0; i < nsubscribers; i++)
	{
		for (int m = 0; m < subscribers[i].ngot; m++)
			natsMsg_Destroy(subscribers[i].got[m]);
		subscribers[i].ngot = 0;
	}
}

/*
 * One round: waits up to wait_ms for the inbox, takes what arrived (up to
 * ROUND_MAX messages), renews the pull requests that ended, then applies and
 * acks each durable's share. Returns the messages applied (at least 1 when
 * any arrived), 0 when none came, or -1 after a NATS failure.
 */
static int
consume_round(long wait_ms)
{
	natsMsg    *msg = NULL;
	natsStatus	st;
	int			taken = 0;
	int			handled = 0;
	bool		lost = false;

	if (!renew_pulls())
		return -1;
	st = natsSubscription_NextMsg(&msg, inbox, wait_ms);
	if (st == NATS_TIMEOUT)
		return 0;
	while (st == NATS_OK)
	{
		int			pending = 0;

		if (!file_message(msg))
			natsMsg_Destroy(msg);
		msg = NULL;
		if (++taken >= ROUND_MAX
			|| natsSubscription_GetPending(inbox, &pending, NULL) != NATS_OK || pending == 0)
			break;
		st = natsSubscription_NextMsg(&msg, inbox, 0);
	}
	/*
	 * A slow-consumer report means nats.c dropped messages of the inbox: they
	 * stay unacknowledged; the connection is dropped after this round so the
	 * durables are taken over from their ack floors, in order.
	 */
	if (st != NATS_OK && st != NATS_TIMEOUT)
		lost = true;
	if (!lost && !renew_pulls())
	{
		release_round();
		return -1;
	}
	for (int i = 0; i < nsubscribers; i++)
	{
		if (subscribers[i].ngot == 0)
			continue;
		handled += apply_batch(&subscribers[i]);
		/* Between batches (a batch is acked whole): SIGTERM, the postmaster's death, SIGHUP. */
		PgcloudWorkerHandleInterrupts();
	}
	release_round();
	if (lost)
	{
		link_failed("receive from JetStream", st);
		return -1;
	}
	return Max(handled, 1);
}

void
pgcloud_consumer_main(Datum arg)
{
	MemoryContext loopcxt;
	jsOptions	jsopts;
	TimestampTz loaded_at;

	PgcloudWorkerSetup(PGCLOUD_WORKER_CONSUMER, DatumGetInt32(arg));
	if (!PgcloudWorkerCheckInstalled())
		proc_exit(0);
	before_shmem_exit(close_all, (Datum) 0);
	jsOptions_Init(&jsopts);
	loopcxt = AllocSetContextCreate(TopMemoryContext, "pgcloud consumer loop", ALLOCSET_DEFAULT_SIZES);
	load_config();
	loaded_at = GetCurrentTimestamp();
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
			n = consume_round(WAIT_MS);
		if (n > 0)
			PgcloudWorkerNoteActivity(n, 0);
		if (n >= 0 && nsubscribers > 0)
		{
			/*
			 * The round waited on the inbox (up to WAIT_MS); a wake-up
			 * meanwhile (pgcloud.wake_workers(), e.g. a service installed)
			 * re-reads the subscribers. So does the passing of
			 * CONFIG_RELOAD_MS: a wake-up that came before this worker took
			 * its place, or whose latch was reset by a wait inside a round,
			 * delays a new subscriber by that much, not for good.
			 */
			if (MyLatch->is_set
				|| TimestampDifferenceExceeds(loaded_at, GetCurrentTimestamp(), CONFIG_RELOAD_MS))
			{
				ResetLatch(MyLatch);
				load_config();
				loaded_at = GetCurrentTimestamp();
			}
			continue;
		}
		timeout = n < 0 ? NatsLinkBackoffMs(&nlink) : 10000L;
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		/* pgcloud.wake_workers() (e.g. a service installed) or nothing to subscribe: re-read the subscribers. */
		if ((rc & WL_LATCH_SET) || nsubscribers == 0
			|| TimestampDifferenceExceeds(loaded_at, GetCurrentTimestamp(), CONFIG_RELOAD_MS))
		{
			load_config();
			loaded_at = GetCurrentTimestamp();
		}
	}
}
