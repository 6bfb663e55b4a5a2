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
 *    order (redelivery is deduplicated by Nats-Msg-Id). One claim statement
 *    and one mark statement per batch; the acknowledgements are booked
 *    without locks (see ack_slots); a full batch sizes the next one to what
 *    the stream took in NATS_BATCH_TARGET_MS; one batch is in flight while
 *    the next is claimed and written (see InFlight).
 * Commits: the relay's transactions commit without waiting for their WAL
 * flush, unless they wrote an HTTP intent. Lost in a crash, such a
 * transaction is simply undone as a whole: the events it delivered or
 * marked are pending again and delivered again (the inbox, and in NATS mode
 * Nats-Msg-Id and the subscribers' inboxes, keep that to one effect), and
 * anything it wrote that another transaction read is in the same WAL, before
 * it. What leaves the database is fenced: a transaction that wrote an HTTP
 * intent (pgcloud.http_intent_guard wakes the executor) commits
 * synchronously, and the NATS relay flushes the WAL up to its claim before
 * it publishes what it claimed.
 * Errors are caught per batch: the worker notes them and backs off.
 * In NATS mode the relay holds a session advisory lock so that it is the
 * only publisher of its database, which lets it claim rows without row locks.
 */
#include "workers.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"
#include "storage/itemptr.h"

#include "nats_link.h"

#define NATS_BATCH_MIN 100
#define NATS_BATCH_START 1000
#define NATS_BATCH_MAX 10000
#define NATS_BATCH_TARGET_MS 200	/* a full batch takes about this long at the stream's pace */
#define NATS_MAX_INFLIGHT NATS_BATCH_MAX	/* a whole batch goes out without waiting for acks */
#define ACK_WAIT_MS 10000

/* ---- acknowledgements (written by nats.c threads: plain C only) ------- */

/*
 * The book of the batch being published, written without locks: slot i
 * holds (batch generation << 2) | ACKED | FAILED for the batch's i-th
 * event. The relay stamps the slots of a batch with its new generation
 * before the first message goes out; each message carries "<generation>.
 * <slot>" (header Pgcloud-Relay-Ack), and the ack callback ORs its bit into
 * the slot with a compare-and-swap only while the slot holds that same
 * generation (a newer one wins; a late ack of an earlier batch is dropped).
 * An event counts as published only when its slot holds the batch's
 * generation with ACKED and without FAILED: an ack that is lost, late,
 * negative or never matched leaves the event in the outbox. The slots are
 * static, so a late callback never touches freed memory.
 */
#define ACK_ACKED 1
#define ACK_FAILED 2

static uint64 ack_slots[NATS_BATCH_MAX];
static uint64 ack_generation = 0;	/* written by the relay's own thread only */

static void
ack_mark_msg(natsMsg *msg, bool ok)
{
	const char *val = NULL;
	char	   *end;
	uint64		gen;
	long		slot;
	uint64		old;

	if (natsMsgHeader_Get(msg, "Pgcloud-Relay-Ack", &val) != NATS_OK || val == NULL)
		return;
	gen = strtoull(val, &end, 10);
	if (*end != '.')
		return;
	slot = strtol(end + 1, NULL, 10);
	if (slot < 0 || slot >= NATS_BATCH_MAX)
		return;
	old = __atomic_load_n(&ack_slots[slot], __ATOMIC_ACQUIRE);
	for (;;)
	{
		if ((old >> 2) != gen)
			return;				/* not this slot's batch */
		if (__atomic_compare_exchange_n(&ack_slots[slot], &old, old | (ok ? ACK_ACKED : ACK_FAILED), false,
										__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			return;
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

/* The relay's own thread: did slot i of the current batch get a positive ack and no failure? */
static bool
ack_published(int i)
{
	uint64		v = __atomic_load_n(&ack_slots[i], __ATOMIC_ACQUIRE);

	return (v >> 2) == ack_generation && (v & ACK_ACKED) && !(v & ACK_FAILED);
}

static void
ack_fail(int i)
{
	__atomic_or_fetch(&ack_slots[i], ACK_FAILED, __ATOMIC_ACQ_REL);
}

/* Events per batch: sized from the stream's measured pace (adaptive). */
static int	nats_batch = NATS_BATCH_START;

/* The current transaction commits without waiting for its WAL flush (see the header). */
static void
commit_without_flush(void)
{
	(void) set_config_option("synchronous_commit", "off", PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
							 true, 0, false);
}

/* ---- NATS mode ---------------------------------------------------------- */

static NatsLink nlink = {0};
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr mark_plan = NULL;

static void
prepare_plans(void)
{
	Oid			claim_types[1] = {INT4OID};
	Oid			mark_types[1] = {TIDARRAYOID};

	PgcloudPlan(&claim_plan,
				"SELECT o.id, o.event_id, o.event_type, o.aggregate_type, o.aggregate_id, o.payload, o.headers, "
				"o.source, o.created_at, coalesce(o.headers ->> 'correlation_id', ''), o.ctid "
				"FROM pgcloud.outbox o WHERE o.published_at IS NULL ORDER BY o.id LIMIT $1",
				1, claim_types);
	/*
	 * Marked by the rows' addresses (a TID scan, no index search per event):
	 * a pending row stays where the claim found it, as only this relay
	 * updates it (the publisher lock) and nothing deletes a pending row.
	 */
	PgcloudPlan(&mark_plan, "UPDATE pgcloud.outbox SET published_at = pg_catalog.clock_timestamp() "
				"WHERE ctid = ANY ($1) AND published_at IS NULL", 1, mark_types);
}

/* Columns of the claim. */
enum
{
	CLAIM_ID = 1, CLAIM_EVENT_ID, CLAIM_EVENT_TYPE, CLAIM_AGGREGATE_TYPE, CLAIM_AGGREGATE_ID, CLAIM_PAYLOAD,
	CLAIM_HEADERS, CLAIM_SOURCE, CLAIM_CREATED_AT, CLAIM_CORRELATION, CLAIM_CTID
};

static void
append_key(StringInfo buf, const char *key, bool first)
{
	if (!first)
		appendStringInfoString(buf, ", ");
	escape_json(buf, key);
	appendStringInfoString(buf, ": ");
}

static void
append_text_value(StringInfo buf, HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	if (isnull)
		appendStringInfoString(buf, "null");
	else
		escape_json(buf, TextDatumGetCString(d));
}

static void
append_jsonb_value(StringInfo buf, HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	Jsonb	   *jb;

	if (isnull)
	{
		appendStringInfoString(buf, "null");
		return;
	}
	jb = DatumGetJsonbP(d);
	(void) JsonbToCString(buf, &jb->root, VARSIZE(jb));
}

/*
 * The message body: the event envelope as JSON text, byte for byte what
 * jsonb_build_object('event_id', ..., 'created_at', ...)::text gives (keys
 * in jsonb's order: by length, then bytewise), written straight from the
 * row instead of built as a jsonb and printed again (which cost a fifth of
 * the relay's CPU). core_security_nats compares the two. The text columns
 * the caller has already read for the message's headers are passed in, not
 * read from the row again.
 */
static char *
envelope_text(HeapTuple tup, TupleDesc desc, const char *event_id, const char *event_type,
			  const char *aggregate_type, const char *aggregate_id, int *len)
{
	StringInfoData buf;
	bool		isnull;
	Datum		d;
	char		ts[MAXDATELEN + 1];

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	append_key(&buf, "source", true);
	append_text_value(&buf, tup, desc, CLAIM_SOURCE);
	append_key(&buf, "headers", false);
	append_jsonb_value(&buf, tup, desc, CLAIM_HEADERS);
	append_key(&buf, "payload", false);
	append_jsonb_value(&buf, tup, desc, CLAIM_PAYLOAD);
	append_key(&buf, "event_id", false);
	escape_json(&buf, event_id);
	append_key(&buf, "created_at", false);
	d = SPI_getbinval(tup, desc, CLAIM_CREATED_AT, &isnull);
	if (isnull)
		appendStringInfoString(&buf, "null");
	else
		escape_json(&buf, JsonEncodeDateTime(ts, d, TIMESTAMPTZOID, NULL));
	append_key(&buf, "event_type", false);
	escape_json(&buf, event_type);
	append_key(&buf, "aggregate_id", false);
	escape_json(&buf, aggregate_id);
	append_key(&buf, "aggregate_type", false);
	escape_json(&buf, aggregate_type);
	appendStringInfoChar(&buf, '}');
	*len = buf.len;
	return buf.data;
}

/*
 * Pipelining: one batch is in flight (handed to nats.c, its acks coming in)
 * while the relay claims the next and writes its messages. A round, in one
 * transaction: claim the next batch (skipping the rows in flight, still
 * pending), write its messages; collect the acks of the batch in flight and
 * mark its published events; hold back from the new batch every event whose
 * aggregate has an unpublished earlier event; publish the new batch, which
 * is then in flight. A batch is resolved before the next is published, so
 * each aggregate's events still reach the stream in order, and one book of
 * acks is enough. Whatever is not marked stays pending and is claimed again
 * (a copy JetStream already has is dropped by Nats-Msg-Id).
 */
typedef struct InFlight
{
	int			n;				/* events in flight; 0: none */
	bool		full;			/* the claim found as many new events as it asked for */
	int64	   *ids;			/* ascending (claim order) */
	ItemPointerData *tids;		/* where each row is */
	char	  **aggregates;		/* "type/id" of each */
	TimestampTz started;
	MemoryContext cxt;			/* holds ids and aggregates */
} InFlight;

static InFlight inflight = {0};

/* Messages written but not yet handed to nats.c (left over only by an error). */
static natsMsg *built[NATS_BATCH_MAX];
static int	nbuilt = 0;

static void
destroy_built(void)
{
	for (int i = 0; i < nbuilt; i++)
		if (built[i] != NULL)
			natsMsg_Destroy(built[i]);
	nbuilt = 0;
}

/* Forgets the batch in flight: its unmarked events stay pending. */
static void
drop_inflight(void)
{
	if (inflight.cxt != NULL)
		MemoryContextDelete(inflight.cxt);
	memset(&inflight, 0, sizeof(inflight));
}

static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y;
}

static bool
in_flight(int64 id)
{
	return inflight.n > 0 && bsearch(&id, inflight.ids, inflight.n, sizeof(int64), cmp_int64) != NULL;
}

/*
 * Walking events in id order: is this one held back? It is when it failed
 * itself (failed) or an earlier event of its aggregate was held back; its
 * aggregate is then added to held[*nheld] (room for one more), so that every
 * later event of it is held back too.
 */
static bool
hold_back(char **held, int *nheld, char *aggregate, bool failed)
{
	for (int i = 0; i < *nheld; i++)
		if (strcmp(held[i], aggregate) == 0)
			return true;
	if (failed)
		held[(*nheld)++] = aggregate;
	return failed;
}

/* After a failure of the link: smaller batches, and the link reset (with its backoff). */
static int
link_failed(natsStatus s, int published)
{
	nats_batch = NATS_BATCH_MIN > nats_batch / 2 ? NATS_BATCH_MIN : nats_batch / 2;
	NatsLinkFailed(&nlink, "publish to JetStream", s);
	return published > 0 ? published : -1;
}

/*
 * Set when a round held an event back because the stream would refuse it
 * (too large) or JetStream refused one: the limits are read again at once.
 */
static bool limits_stale = false;

/* Bytes of a header line "key: value\r\n" (the NATS/1.0 header block). */
#define HEADER_BYTES(key, value) (strlen(key) + strlen(value) + 4)
#define ACK_HEADER_VALUE_MAX 26	/* "<generation>.<slot>": 20 digits, a dot, 5 digits */

/*
 * Writes the message of one claimed row (its ack header is set at publish
 * time). NULL when it could not be written, or when it is larger than the
 * stream takes (known before it is sent, so that none of its aggregate's
 * later events goes out ahead of it: they are held back with it).
 */
static natsMsg *
build_msg(HeapTuple tup, TupleDesc desc, const char *aggregate_type, const char *aggregate_id)
{
	bool		isnull;
	char	   *event_id;
	char	   *event_type;
	char	   *correlation;
	char	   *body;
	int			body_len;
	char		subject[256];
	natsMsg    *msg = NULL;
	natsStatus	s;

	event_id = DatumGetCString(DirectFunctionCall1(uuid_out, SPI_getbinval(tup, desc, CLAIM_EVENT_ID, &isnull)));
	event_type = TextDatumGetCString(SPI_getbinval(tup, desc, CLAIM_EVENT_TYPE, &isnull));
	correlation = TextDatumGetCString(SPI_getbinval(tup, desc, CLAIM_CORRELATION, &isnull));
	body = envelope_text(tup, desc, event_id, event_type, aggregate_type, aggregate_id, &body_len);
	if (nlink.max_msg_bytes > 0
		&& (uint64) body_len + strlen("NATS/1.0\r\n\r\n") + HEADER_BYTES("Nats-Msg-Id", event_id)
		+ HEADER_BYTES("Pgcloud-Correlation-Id", correlation) + HEADER_BYTES("Pgcloud-Event-Type", event_type)
		+ strlen("Pgcloud-Relay-Ack") + ACK_HEADER_VALUE_MAX + 4 > (uint64) nlink.max_msg_bytes)
	{
		limits_stale = true;
		pfree(body);
		return NULL;
	}
	snprintf(subject, sizeof(subject), PGCLOUD_SUBJECT_PREFIX "%s", event_type);
	s = natsMsg_Create(&msg, subject, NULL, body, body_len);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(msg, "Nats-Msg-Id", event_id);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(msg, "Pgcloud-Correlation-Id", correlation);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(msg, "Pgcloud-Event-Type", event_type);
	pfree(body);
	if (s != NATS_OK)
	{
		if (msg != NULL)
			natsMsg_Destroy(msg);
		return NULL;			/* not published this time: stays pending */
	}
	return msg;
}

/*
 * Waits for the acks of the batch in flight and marks its published events:
 * acknowledged, and no earlier event of the same aggregate in the batch
 * unpublished. Returns the number marked; *bad and *nbad get the aggregates
 * left with an unpublished event (allocated in the current context),
 * *status what waiting for the acks gave. Sizes the next batch from the pace
 * of a full one.
 */
static int
resolve_inflight(char ***bad, int *nbad, natsStatus *status)
{
	jsPubOptions popts;
	natsStatus	s;
	Datum	   *done;
	Datum		arr;
	int			ndone = 0;
	char	  **badlist;
	int			nb = 0;
	int			n = inflight.n;

	*bad = NULL;
	*nbad = 0;
	*status = NATS_OK;
	if (n == 0)
		return 0;
	jsPubOptions_Init(&popts);
	popts.MaxWait = ACK_WAIT_MS;
	/* No link: it was closed since (its acks will not come; the book says what did). */
	s = nlink.js != NULL ? js_PublishAsyncComplete(nlink.js, &popts) : NATS_OK;
	if (s != NATS_OK)
	{
		natsMsgList pending = {0};

		if (js_PublishAsyncGetPendingList(&pending, nlink.js) == NATS_OK)
		{
			for (int i = 0; i < pending.Count; i++)
				if (pending.Msgs[i] != NULL)
					ack_mark_msg(pending.Msgs[i], false);
			natsMsgList_Destroy(&pending);
		}
	}

	/* The book is read once; a late ack changes nothing below. */
	done = palloc(sizeof(Datum) * n);
	badlist = palloc(sizeof(char *) * n);
	for (int i = 0; i < n; i++)
	{
		if (!hold_back(badlist, &nb, inflight.aggregates[i], !ack_published(i)))
			done[ndone++] = PointerGetDatum(&inflight.tids[i]);
	}
	/* The book of this batch is closed: any later ack of it finds another generation. */
	ack_generation++;
	for (int i = 0; i < nb; i++)
		badlist[i] = pstrdup(badlist[i]);	/* the batch's memory goes below */
	arr = ndone > 0 ? PointerGetDatum(construct_array(done, ndone, TIDOID, sizeof(ItemPointerData), false,
													   TYPALIGN_SHORT)) : (Datum) 0;
	if (nb > 0)
		limits_stale = true;	/* a refusal may be a new limit of the stream */

	/* A full batch: size the next one to what the stream took in NATS_BATCH_TARGET_MS. */
	if (s == NATS_OK && nb == 0 && inflight.full)
	{
		long		secs;
		int			usecs;
		double		ms;
		double		want;

		TimestampDifference(inflight.started, GetCurrentTimestamp(), &secs, &usecs);
		ms = secs * 1000.0 + usecs / 1000.0;
		want = ms > 0 ? n * NATS_BATCH_TARGET_MS / ms : NATS_BATCH_MAX;
		nats_batch = (int) Max(NATS_BATCH_MIN, Min(NATS_BATCH_MAX, Min(want, nats_batch * 2.0)));
	}
	drop_inflight();

	if (ndone > 0 && SPI_execute_plan(mark_plan, &arr, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "outbox update failed");
	*bad = badlist;
	*nbad = nb;
	*status = s;
	return ndone;
}

/*
 * One round of NATS mode inside the current transaction (see above).
 * Returns the number of events marked published, or -1 when NATS failed and
 * nothing was marked (the caller backs off); a batch may be left in flight.
 */
static int
publish_round(void)
{
	int			limit = nats_batch;
	int			n;
	int			published;
	int			nnew = 0;
	char	  **bad;
	int			nbad;
	bool		full;
	int64	   *ids;
	ItemPointerData *tids;
	char	  **aggregates;
	MemoryContext cxt;
	bool		broken = false;
	natsStatus	s = NATS_OK;
	int			nheld;

	destroy_built();
	prepare_plans();
	commit_without_flush();
	{
		Datum		arg = Int32GetDatum(limit + inflight.n);

		if (SPI_execute_plan(claim_plan, &arg, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "outbox claim failed");
	}
	n = (int) SPI_processed;

	/* With something to send: the stream's limits, read every second, and at once after a refusal. */
	if (n > inflight.n)
	{
		NatsLinkReadLimits(&nlink, limits_stale ? 0 : 1000);
		limits_stale = false;
	}

	/* The new batch: the claimed rows not in flight, at most `limit`. */
	ids = palloc(sizeof(int64) * Max(Min(n, limit), 1));
	tids = palloc(sizeof(ItemPointerData) * Max(Min(n, limit), 1));
	aggregates = palloc(sizeof(char *) * Max(Min(n, limit), 1));
	for (int i = 0; i < n && nbuilt < limit; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, CLAIM_ID, &isnull));
		char	   *aggregate_type;
		char	   *aggregate_id;

		if (in_flight(id))
			continue;
		aggregate_type = TextDatumGetCString(SPI_getbinval(tup, desc, CLAIM_AGGREGATE_TYPE, &isnull));
		aggregate_id = TextDatumGetCString(SPI_getbinval(tup, desc, CLAIM_AGGREGATE_ID, &isnull));
		ids[nbuilt] = id;
		ItemPointerCopy((ItemPointer) DatumGetPointer(SPI_getbinval(tup, desc, CLAIM_CTID, &isnull)), &tids[nbuilt]);
		aggregates[nbuilt] = psprintf("%s/%s", aggregate_type, aggregate_id);
		built[nbuilt] = build_msg(tup, desc, aggregate_type, aggregate_id);
		nbuilt++;
	}

	full = nbuilt == limit;

	/* The batch in flight: collect its acks, mark it. */
	published = resolve_inflight(&bad, &nbad, &s);
	if (s != NATS_OK)
	{
		/* The link failed: nothing more goes out in this round; the caller backs off. */
		destroy_built();
		return link_failed(s, published);
	}

	/*
	 * Hold back every new event whose aggregate has an unpublished earlier
	 * one (in the batch just resolved, or held back here), and any whose
	 * message could not be written.
	 */
	nheld = nbad;
	{
		char	  **held = palloc(sizeof(char *) * (nbad + nbuilt + 1));

		if (nbad > 0)
			memcpy(held, bad, sizeof(char *) * nbad);
		for (int i = 0; i < nbuilt; i++)
		{
			if (hold_back(held, &nheld, aggregates[i], built[i] == NULL))
			{
				if (built[i] != NULL)
					natsMsg_Destroy(built[i]);
				built[i] = NULL;
				continue;
			}
			ids[nnew] = ids[i];
			tids[nnew] = tids[i];
			aggregates[nnew] = aggregates[i];
			built[nnew] = built[i];
			if (nnew != i)
				built[i] = NULL;
			nnew++;
		}
		nbuilt = nnew;
	}
	if (nnew == 0)
		return published == 0 && nheld > 0 ? -1 : published;	/* only failures: back off, then retry */

	/*
	 * Nothing leaves for the stream before the transactions that wrote it
	 * are durable: every commit the claim saw lies before the current insert
	 * position (an embedded-mode delivery may have committed asynchronously
	 * just before a switch to NATS mode). Usually flushed already: no cost.
	 */
	XLogFlush(GetXLogInsertRecPtr());

	/* A new generation: every slot of the batch is stamped before the first publish. */
	ack_generation++;
	for (int i = 0; i < nnew; i++)
		__atomic_store_n(&ack_slots[i], ack_generation << 2, __ATOMIC_RELEASE);
	/* What resolving it needs outlives this transaction. */
	cxt = AllocSetContextCreate(TopMemoryContext, "pgcloud relay batch in flight", ALLOCSET_DEFAULT_SIZES);
	inflight.cxt = cxt;
	inflight.ids = MemoryContextAlloc(cxt, sizeof(int64) * nnew);
	memcpy(inflight.ids, ids, sizeof(int64) * nnew);
	inflight.tids = MemoryContextAlloc(cxt, sizeof(ItemPointerData) * nnew);
	memcpy(inflight.tids, tids, sizeof(ItemPointerData) * nnew);
	inflight.aggregates = MemoryContextAlloc(cxt, sizeof(char *) * nnew);
	for (int i = 0; i < nnew; i++)
		inflight.aggregates[i] = MemoryContextStrdup(cxt, aggregates[i]);
	inflight.full = full;
	inflight.n = nnew;
	inflight.started = GetCurrentTimestamp();
	for (int i = 0; i < nnew; i++)
	{
		char		ackbuf[48];
		natsMsg    *msg = built[i];

		built[i] = NULL;
		if (broken)
		{
			natsMsg_Destroy(msg);
			ack_fail(i);
			continue;
		}
		snprintf(ackbuf, sizeof(ackbuf), UINT64_FORMAT ".%d", ack_generation, i);
		s = natsMsgHeader_Set(msg, "Pgcloud-Relay-Ack", ackbuf);
		if (s == NATS_OK)
		{
			sigset_t	saved;

			/* The first one starts nats.c's reply thread, which must take no signal. */
			NatsLinkBlockSignals(&saved);
			s = js_PublishMsgAsync(nlink.js, &msg, NULL);
			NatsLinkRestoreSignals(&saved);
		}
		if (msg != NULL)
			natsMsg_Destroy(msg);	/* not handed over */
		if (s != NATS_OK)
		{
			ack_fail(i);
			broken = true;
		}
	}
	nbuilt = 0;
	if (broken)
	{
		/* Resolve what went out at once; the link is then reset. */
		natsStatus	failed = s;
		char	  **ignored;
		int			nignored;

		published += resolve_inflight(&ignored, &nignored, &s);
		return link_failed(failed, published);
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
		b->n = publish_round();
		return;
	}
	if (SPI_execute("SELECT pgcloud.relay_once(NULL), "
					"(SELECT ceil(extract(epoch FROM min(f.next_attempt_at) - clock_timestamp()) * 1000)::int8 "
					"FROM pgcloud.delivery_failures f)", false, 1) != SPI_OK_SELECT)
		elog(ERROR, "pgcloud.relay_once() failed");
	b->n = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	/* A handler that wrote an HTTP intent: it may be sent at once, so this commit must be durable first. */
	if (!PgcloudWakePending(PGCLOUD_WORKER_HTTP))
		commit_without_flush();
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
		b->retry_ms = Max(DatumGetInt64(d), 10);
}

/* One unit of work in its own transaction; returns events handled or -1. */
static int
run_batch(bool nats, long *retry_ms, bool *more)
{
	RelayBatch	b = {.nats = nats, .n = 0, .retry_ms = *retry_ms};
	char	   *message;

	message = PgcloudRunUnit(nats ? "publishing outbox to NATS" : "relaying outbox", relay_batch_unit, &b);
	*more = inflight.n > 0;
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
		bool		more = false;
		int			n;

		PgcloudWorkerHandleInterrupts();
		MemoryContextReset(loopcxt);
		MemoryContextSwitchTo(loopcxt);
		nats = PgcloudNatsMode();
		if (!nats)
		{
			NatsLinkClose(&nlink);
			drop_inflight();	/* its unmarked events stay pending */
		}

		if (nats && !NatsLinkEnsure(&nlink, &jsopts))
			n = -1;
		else
			n = run_batch(nats, &retry_ms, &more);

		if (n > 0 || (n == 0 && more))
		{
			errors = 0;
			if (n > 0)
				PgcloudWorkerNoteActivity(n, 0);
			continue;			/* drain; a batch in flight is resolved by the next round */
		}
		if (n < 0)
		{
			errors++;
			/*
			 * NATS mode: the link's backoff, and at least the growing one of
			 * rounds that only met refusals (an event the stream will not
			 * take is tried again at 0.1 s, 0.2 s, ... up to 25.6 s apart).
			 */
			timeout = nats ? Max(NatsLinkBackoffMs(&nlink), PgcloudBackoffMs(errors - 1, 100L, 8, 30000L))
				: PgcloudBackoffMs(errors, 100L, 8, 30000L);
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
