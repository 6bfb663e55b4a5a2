/*
 * outbox.c — pgcloud.emit(): the transactional outbox.
 *
 * The event row commits with the caller's domain change or not at all.
 * Events of one aggregate are serialised with a transaction-scoped advisory
 * lock taken before the row gets its id, so the outbox id order of one
 * aggregate's events is their commit order. The row is written by the
 * executor's single-row insert, not by a planned statement (outbox_insert).
 */
#include "pgcloud.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(pgcloud_outbox_emit);

/* key1 of the two-int advisory locks pgcloud takes on aggregates: 'pgcd' */
#define PGCLOUD_AGGREGATE_LOCK_SPACE 0x70676364

#define MAX_EVENT_TYPE_LEN 128
#define MAX_AGGREGATE_TYPE_LEN 64
#define MAX_AGGREGATE_ID_LEN 200
#define MAX_PAYLOAD_BYTES (1024 * 1024)

/* dotted lower-case, of any length: ^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$ */
static bool
event_type_shape(const char *s, size_t len)
{
	bool		token_start = true;
	int			dots = 0;

	for (size_t i = 0; i < len; i++)
	{
		char		c = s[i];

		if (token_start)
		{
			if (c < 'a' || c > 'z')
				return false;
			token_start = false;
		}
		else if (c == '.')
		{
			token_start = true;
			dots++;
		}
		else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			return false;
	}
	return !token_start && dots > 0;
}

/* Dotted lower-case words, of any length (also audit()'s action). */
bool
PgcloudDottedName(const char *s, size_t len)
{
	return event_type_shape(s, len);
}

/* A type emit() accepts: dotted lower-case, at most MAX_EVENT_TYPE_LEN bytes. */
bool
PgcloudValidEventType(const char *s, size_t len)
{
	return len > 0 && len <= MAX_EVENT_TYPE_LEN && event_type_shape(s, len);
}

PG_FUNCTION_INFO_V1(pgcloud_is_event_type);

/*
 * pgcloud.is_event_type(text) RETURNS boolean, STRICT: the outbox's check of
 * event_type (the shape emit() also checks, without its length limit), in C:
 * the regular expression it replaces cost more than any other part of an
 * emit() but the insert itself.
 */
Datum
pgcloud_is_event_type(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);

	PG_RETURN_BOOL(event_type_shape(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
}

/*
 * Whether an event type matches a subscription pattern: the pattern itself,
 * or a pattern ending in ".*" (one more token) or ".>" (one or more tokens).
 * Used by pgcloud.event_matches() and by the NATS consumer, which must agree.
 */
bool
PgcloudEventMatches(const char *pattern, size_t plen, const char *type, size_t tlen)
{
	if (plen >= 2 && pattern[plen - 2] == '.' && (pattern[plen - 1] == '>' || pattern[plen - 1] == '*'))
	{
		size_t		prefix = plen - 1;	/* up to and with the dot */

		if (tlen < prefix || memcmp(pattern, type, prefix) != 0)
			return false;
		return pattern[plen - 1] == '>' || memchr(type + prefix, '.', tlen - prefix) == NULL;
	}
	return plen == tlen && memcmp(pattern, type, plen) == 0;
}

PG_FUNCTION_INFO_V1(pgcloud_event_matches);

/* pgcloud.event_matches(pattern text, event_type text) RETURNS boolean, STRICT */
Datum
pgcloud_event_matches(PG_FUNCTION_ARGS)
{
	text	   *pattern = PG_GETARG_TEXT_PP(0);
	text	   *type = PG_GETARG_TEXT_PP(1);

	PG_RETURN_BOOL(PgcloudEventMatches(VARDATA_ANY(pattern), VARSIZE_ANY_EXHDR(pattern),
									   VARDATA_ANY(type), VARSIZE_ANY_EXHDR(type)));
}

static bool
valid_identifier(const char *s, size_t len, size_t max)
{
	if (len == 0 || len > max || s[0] < 'a' || s[0] > 'z')
		return false;
	for (size_t i = 1; i < len; i++)
	{
		char		c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			return false;
	}
	return true;
}

/* The service that emits: pgcloud_svc_<name> → <name>; otherwise the role. */
static char *
emitting_source(void)
{
	char	   *role = GetUserNameFromId(GetUserId(), false);

	if (strncmp(role, "pgcloud_svc_", 12) == 0)
		return role + 12;
	return role;
}

/*
 * The publisher of each event type this backend emitted, as
 * pgcloud.publisher_of() answered it: emit() asks the database only the
 * first time. Any change to pgcloud.services (its statement trigger
 * pgcloud.services_changed() invalidates the table's relcache entry, in
 * this backend at once and in every other one at commit) empties it; an
 * answer computed while an invalidation arrived is not kept.
 */
typedef struct PublisherEntry
{
	char		event_type[MAX_EVENT_TYPE_LEN + 1];	/* hash key */
	bool		has_owner;
	char		owner[NAMEDATALEN];
} PublisherEntry;

static HTAB *publisher_cache = NULL;
static uint64 publisher_cache_generation = 0;
static bool publisher_callback_registered = false;
static Oid	services_relid = InvalidOid;	/* of the cache's pgcloud.services */

static void
publisher_cache_invalidate(Datum arg, Oid relid)
{
	(void) arg;
	if (OidIsValid(relid) && relid != services_relid)
		return;
	publisher_cache_generation++;
	if (publisher_cache != NULL)
	{
		hash_destroy(publisher_cache);
		publisher_cache = NULL;
	}
}

/* The owner of an event type (pgcloud.publisher_of()), NULL when none; inside SPI. */
static char *
publisher_of(text *event_type)
{
	static SPIPlanPtr plan = NULL;
	MemoryContext caller = CurrentMemoryContext;
	Oid			argtypes[1] = {TEXTOID};
	char	   *type = text_to_cstring(event_type);
	PublisherEntry *e;
	bool		found;
	uint64		generation;
	Datum		values[1];
	int			ret;
	char	   *owner;

	if (!publisher_callback_registered)
	{
		CacheRegisterRelcacheCallback(publisher_cache_invalidate, (Datum) 0);
		publisher_callback_registered = true;
	}
	if (strlen(type) <= MAX_EVENT_TYPE_LEN && publisher_cache != NULL)
	{
		e = hash_search(publisher_cache, type, HASH_FIND, NULL);
		if (e != NULL)
			return e->has_owner ? pstrdup(e->owner) : NULL;
	}

	generation = publisher_cache_generation;
	values[0] = PointerGetDatum(event_type);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* The latest snapshot, as pgcloud.policy() reads for its cache (policy.c says why). */
	ret = PgcloudExecPlanLatest(PgcloudPlan(&plan, "SELECT pgcloud.publisher_of($1)", 1, argtypes),
								values, NULL, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "event publisher lookup failed: %s", SPI_result_code_string(ret));
	owner = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (owner != NULL)
		owner = MemoryContextStrdup(caller, owner);
	SPI_finish();

	/* Kept only when no invalidation arrived meanwhile (it could be older than the change). */
	if (generation == publisher_cache_generation && strlen(type) <= MAX_EVENT_TYPE_LEN
		&& (owner == NULL || strlen(owner) < NAMEDATALEN))
	{
		if (publisher_cache == NULL)
		{
			HASHCTL		ctl;

			services_relid = get_relname_relid("services", get_namespace_oid("pgcloud", false));

			ctl.keysize = MAX_EVENT_TYPE_LEN + 1;
			ctl.entrysize = sizeof(PublisherEntry);
			ctl.hcxt = CacheMemoryContext;
			publisher_cache = hash_create("pgcloud event publishers", 64, &ctl,
										  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		}
		e = hash_search(publisher_cache, type, HASH_ENTER, &found);
		e->has_owner = owner != NULL;
		if (owner != NULL)
			strlcpy(e->owner, owner, NAMEDATALEN);
	}
	return owner;
}

/*
 * Event authority (registry): a service role emits only the event types its
 * registry entry publishes; pgcloud_svc_core only the core's own types
 * (platform.*, see pgcloud.publisher_of()); any other member of pgcloud_services nothing. Roles outside
 * the service group (the operator, superusers) may emit any well-formed type
 * that no service owns (PRODUCT.md: operators may emit their own), and none
 * that a service owns. Superusers stand outside every boundary and may emit
 * anything; subscribers accept that because the source is a superuser role.
 */
static void
check_event_authority(const char *source, text *event_type)
{
	char	   *owner;
	char	   *type;
	bool		is_service_role;

	owner = publisher_of(event_type);
	/* the publisher itself, the common case: nothing more to look up */
	if (owner != NULL && strcmp(owner, source) == 0)
		return;
	if (superuser())
		return;					/* the operator: outside every boundary */
	type = text_to_cstring(event_type);
	if (owner != NULL)
		PgcloudRaise("event_not_permitted",
					 psprintf("event type %s is published by service %s, not by %s", type, owner, source),
					 "A service emits only the event types registry/services.conf lists under its publishes.",
					 NULL);
	/* a type no service owns */
	is_service_role = is_member_of_role(GetUserId(), get_role_oid("pgcloud_services", false))
		|| strncmp(GetUserNameFromId(GetUserId(), false), "pgcloud_svc_", 12) == 0;
	if (!is_service_role)
		return;
	PgcloudRaise("event_not_permitted",
				 psprintf("event type %s is not among the types service %s publishes", type, source),
				 "A service emits only the event types registry/services.conf lists under its publishes.",
				 NULL);
}

/* One outbox row as emit() writes it; id and created_at are the table's. */
typedef struct OutboxRow
{
	pg_uuid_t  *event_id;
	text	   *event_type;
	text	   *aggregate_type;
	text	   *aggregate_id;
	Jsonb	   *payload;
	Jsonb	   *headers;
	text	   *source;
} OutboxRow;

/* {} */
Jsonb *
PgcloudEmptyJsonbObject(void)
{
	JsonbParseState *st = NULL;

	(void) pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/* An object's key, while building it with pushJsonbValue(). */
void
PgcloudJsonbPushKey(JsonbParseState **st, const char *key)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) key;
	v.val.string.len = strlen(key);
	(void) pushJsonbValue(st, WJB_KEY, &v);
}

/* key and a string value of len bytes (len < 0: up to its NUL), or null when s is NULL. */
void
PgcloudJsonbPushString(JsonbParseState **st, const char *key, const char *s, int len)
{
	JsonbValue	v;

	PgcloudJsonbPushKey(st, key);
	if (s == NULL)
		v.type = jbvNull;
	else
	{
		v.type = jbvString;
		v.val.string.val = (char *) s;
		v.val.string.len = len < 0 ? (int) strlen(s) : len;
	}
	(void) pushJsonbValue(st, WJB_VALUE, &v);
}

/* The event's headers: {correlation_id, actor (when there is one), actor_role, source}. */
static Jsonb *
event_headers(const char *correlation_id, const char *actor, const char *actor_role, const char *source)
{
	JsonbParseState *st = NULL;

	(void) pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	PgcloudJsonbPushString(&st, "correlation_id", correlation_id, -1);
	if (actor != NULL)
		PgcloudJsonbPushString(&st, "actor", actor, -1);
	PgcloudJsonbPushString(&st, "actor_role", actor_role, -1);
	PgcloudJsonbPushString(&st, "source", source, -1);
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

/*
 * The identity sequence of a core table's id (pgcloud.outbox, and
 * pgcloud.audit_logs for audit.c), looked up in pg_depend once per backend
 * and table (a lookup cost more than the heap insert): forgotten when the
 * table's relcache entry is invalidated (any ALTER TABLE of it).
 */
#define IDENTITY_CACHE_SIZE 4
typedef struct IdentityEntry
{
	Oid			rel;
	AttrNumber	attnum;
	Oid			seq;
} IdentityEntry;

static IdentityEntry identity_cache[IDENTITY_CACHE_SIZE];
static int	identity_next = 0;	/* the entry replaced next when all are taken */
static uint64 identity_generation = 0;
static bool identity_callback_registered = false;

static void
identity_invalidate(Datum arg, Oid relid)
{
	(void) arg;
	identity_generation++;
	for (int i = 0; i < IDENTITY_CACHE_SIZE; i++)
	{
		if (!OidIsValid(relid) || identity_cache[i].rel == relid)
			identity_cache[i].rel = identity_cache[i].seq = InvalidOid;
	}
}

Oid
PgcloudIdentitySequence(Oid relid, AttrNumber attnum)
{
	Oid			seq;
	uint64		generation;

	if (!identity_callback_registered)
	{
		CacheRegisterRelcacheCallback(identity_invalidate, (Datum) 0);
		identity_callback_registered = true;
	}
	for (int i = 0; i < IDENTITY_CACHE_SIZE; i++)
	{
		if (identity_cache[i].rel == relid && identity_cache[i].attnum == attnum && OidIsValid(identity_cache[i].seq))
			return identity_cache[i].seq;
	}
	generation = identity_generation;
	seq = getIdentitySequence(relid, attnum, false);
	if (generation == identity_generation)	/* kept only when no invalidation came meanwhile */
	{
		int			slot = -1;

		for (int i = 0; i < IDENTITY_CACHE_SIZE && slot < 0; i++)
		{
			if (!OidIsValid(identity_cache[i].rel))
				slot = i;
		}
		if (slot < 0)
		{
			slot = identity_next;
			identity_next = (identity_next + 1) % IDENTITY_CACHE_SIZE;
		}
		identity_cache[slot].rel = relid;
		identity_cache[slot].attnum = attnum;
		identity_cache[slot].seq = seq;
	}
	return seq;
}

/*
 * The outbox's check constraints, ready to run: the executor parses and
 * plans them again for each ResultRelInfo, which for a single-row insert
 * means at every emit() (a sixtieth of its cost). Built once per backend in
 * their own memory context and handed to each insert's ResultRelInfo; a
 * relcache invalidation of the outbox (any ALTER TABLE, a new or dropped
 * check) or a change to any function (a check calls one) makes them stale.
 * Stale expressions are freed only when no insert is using them (a row
 * trigger of the outbox may emit again); until then they are moved under
 * check_exprs_old.
 */
static MemoryContext check_exprs_cxt = NULL;
static MemoryContext check_exprs_old = NULL;
static ExprState **check_exprs = NULL;
static int	check_exprs_n = 0;
static uint64 check_exprs_built_at = 0;
static uint64 check_exprs_generation = 1;
static Oid	check_exprs_rel = InvalidOid;
static int	check_exprs_users = 0;	/* inserts under way (nested by a row trigger that emits) */
static bool check_callbacks_registered = false;

static void
check_exprs_relcache_invalidate(Datum arg, Oid relid)
{
	(void) arg;
	if (!OidIsValid(relid) || relid == check_exprs_rel)
		check_exprs_generation++;
}

static void
check_exprs_syscache_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	(void) arg;
	(void) cacheid;
	(void) hashvalue;
	check_exprs_generation++;
}

/* The ready check expressions of rel (open and locked), in rel's constraint order. */
static ExprState **
outbox_check_exprs(Relation rel)
{
	TupleConstr *constr = rel->rd_att->constr;
	int			ncheck = constr != NULL ? constr->num_check : 0;
	uint64		generation;
	MemoryContext old;

	if (!check_callbacks_registered)
	{
		CacheRegisterRelcacheCallback(check_exprs_relcache_invalidate, (Datum) 0);
		CacheRegisterSyscacheCallback(PROCOID, check_exprs_syscache_invalidate, (Datum) 0);
		check_callbacks_registered = true;
	}
	if (ncheck == 0)
		return NULL;
	if (check_exprs != NULL && check_exprs_built_at == check_exprs_generation && check_exprs_n == ncheck
		&& check_exprs_rel == RelationGetRelid(rel))
		return check_exprs;

	/* Stale: set aside, freed once no insert uses it. */
	if (check_exprs_cxt != NULL)
	{
		if (check_exprs_old == NULL)
			check_exprs_old = AllocSetContextCreate(CacheMemoryContext, "pgcloud outbox stale checks",
													ALLOCSET_SMALL_SIZES);
		MemoryContextSetParent(check_exprs_cxt, check_exprs_old);
		check_exprs_cxt = NULL;
		check_exprs = NULL;
	}
	/* Only this insert (which has not used them) is under way: free them. */
	if (check_exprs_users <= 1 && check_exprs_old != NULL)
		MemoryContextReset(check_exprs_old);

	check_exprs_built_at = 0;
	check_exprs_rel = RelationGetRelid(rel);
	generation = check_exprs_generation;
	check_exprs_cxt = AllocSetContextCreate(CacheMemoryContext, "pgcloud outbox checks", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(check_exprs_cxt);
	check_exprs = palloc0(sizeof(ExprState *) * ncheck);
	for (int i = 0; i < ncheck; i++)
	{
		/* as the executor prepares them (ExecRelCheck, ExecPrepareExpr) */
		Expr	   *expr = expression_planner((Expr *) stringToNode(constr->check[i].ccbin));

		check_exprs[i] = ExecInitExpr(expr, NULL);
	}
	MemoryContextSwitchTo(old);
	check_exprs_n = ncheck;
	/* An invalidation taken in while building: used once, built again next time. */
	check_exprs_built_at = generation == check_exprs_generation ? generation : 0;
	return check_exprs;
}

/*
 * A single-row insert into a core table as an INSERT statement would do it
 * (its constraints, indexes and row triggers), without planning or starting
 * a statement: the executor's single-row insert, as logical replication
 * applies a row. PgcloudRowInsertBegin() opens the table and hands back an
 * empty virtual slot; the caller fills every column and calls
 * PgcloudRowInsertFinish(). Used by emit() (the outbox) and audit() (the log).
 */
void
PgcloudRowInsertBegin(PgcloudRowInsert *ins, Oid relid)
{
	RangeTblEntry *rte = makeNode(RangeTblEntry);

	ins->rel = table_open(relid, RowExclusiveLock);
	ins->estate = CreateExecutorState();
	ins->rri = makeNode(ResultRelInfo);
	rte->rtekind = RTE_RELATION;
	rte->relid = relid;
	rte->relkind = ins->rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(ins->estate, list_make1(rte));
	InitResultRelInfo(ins->rri, ins->rel, 1, NULL, 0);
	/* Listed as opened, so that an AFTER trigger finds it (ExecGetTriggerResultRel). */
	ins->estate->es_opened_result_relations = lappend(ins->estate->es_opened_result_relations, ins->rri);
	ins->estate->es_output_cid = GetCurrentCommandId(true);
	ExecOpenIndices(ins->rri, false);
	ins->slot = ExecInitExtraTupleSlot(ins->estate, RelationGetDescr(ins->rel), &TTSOpsVirtual);
	ExecClearTuple(ins->slot);
}

void
PgcloudRowInsertFinish(PgcloudRowInsert *ins)
{
	ExecStoreVirtualTuple(ins->slot);
	AfterTriggerBeginQuery();
	ExecSimpleRelationInsert(ins->rri, ins->estate, ins->slot);
	AfterTriggerEndQuery(ins->estate);
	ExecCloseIndices(ins->rri);
	ExecResetTupleTable(ins->estate->es_tupleTable, false);
	FreeExecutorState(ins->estate);
	table_close(ins->rel, NoLock);
}

/*
 * Inserts the row as an INSERT statement would (the identity and the
 * defaults of pgcloud.outbox, its constraints, its indexes, any row
 * triggers), without planning or starting a statement: the executor's
 * single-row insert, as logical replication applies a row. Every column is
 * named here; a column this code does not know is an error, not a default.
 */
static void
outbox_insert(Oid relid, OutboxRow *row)
{
	PgcloudRowInsert ins;
	TupleDesc	desc;
	TupleTableSlot *slot;

	PgcloudRowInsertBegin(&ins, relid);
	ins.rri->ri_ConstraintExprs = outbox_check_exprs(ins.rel);
	desc = RelationGetDescr(ins.rel);
	slot = ins.slot;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		const char *name = NameStr(att->attname);
		Datum		v = (Datum) 0;

		if (att->attisdropped || strcmp(name, "published_at") == 0)
		{
			slot->tts_values[i] = (Datum) 0;
			slot->tts_isnull[i] = true;
			continue;
		}
		if (strcmp(name, "id") == 0)
			v = Int64GetDatum(nextval_internal(PgcloudIdentitySequence(relid, att->attnum), false));
		else if (strcmp(name, "event_id") == 0)
			v = UUIDPGetDatum(row->event_id);
		else if (strcmp(name, "event_type") == 0)
			v = PointerGetDatum(row->event_type);
		else if (strcmp(name, "aggregate_type") == 0)
			v = PointerGetDatum(row->aggregate_type);
		else if (strcmp(name, "aggregate_id") == 0)
			v = PointerGetDatum(row->aggregate_id);
		else if (strcmp(name, "payload") == 0)
			v = JsonbPGetDatum(row->payload);
		else if (strcmp(name, "headers") == 0)
			v = JsonbPGetDatum(row->headers);
		else if (strcmp(name, "source") == 0)
			v = PointerGetDatum(row->source);
		else if (strcmp(name, "created_at") == 0)
			v = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());	/* now() */
		else
			elog(ERROR, "pgcloud.outbox has a column emit() does not know: %s", name);
		slot->tts_values[i] = v;
		slot->tts_isnull[i] = false;
	}
	PgcloudRowInsertFinish(&ins);
}

/*
 * No service role may write the outbox directly (its source and headers
 * would be whatever it claims): emit() writes the row as the outbox's owner,
 * after its authority check.
 */
static void
insert_as_outbox_owner(OutboxRow *row)
{
	Oid			relid;
	Oid			owner = PgcloudCoreRelOwner("outbox", &relid);
	Oid			save_userid;
	int			save_sec_context;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	check_exprs_users++;
	PG_TRY();
	{
		outbox_insert(relid, row);
	}
	PG_FINALLY();
	{
		check_exprs_users--;
		SetUserIdAndSecContext(save_userid, save_sec_context);
	}
	PG_END_TRY();
}

/*
 * Writes an event to the outbox as the current user (the emitting service,
 * checked against the event type's publisher) and returns its id. payload
 * NULL is {}. For C callers (audit.c) and pgcloud.emit().
 *
 * One aggregate's events must get their ids in commit order (the relay
 * publishes in id order): emit() holds a transaction-level advisory lock on
 * the aggregate until commit, so a second transaction emitting for it waits.
 * A caller whose own lock already orders the aggregate's writers (it
 * inserted the aggregate's row in this transaction, or updated it, or
 * locked it FOR UPDATE, before emitting) passes aggregate_locked and the
 * advisory lock is not taken (issue 16: it cost more than any other part of
 * emit() but the row itself).
 */
pg_uuid_t *
PgcloudEmit(text *event_type, text *aggregate_type, text *aggregate_id, Jsonb *payload,
			bool aggregate_locked)
{
	OutboxRow	row;
	pg_uuid_t  *event_id;
	char	   *actor;
	char	   *source;

	if (!PgcloudValidEventType(VARDATA_ANY(event_type), VARSIZE_ANY_EXHDR(event_type)))
		PgcloudRaise("invalid_event",
					 "event_type must be dotted lower-case words, e.g. allocation.activated (at most 128 characters)",
					 NULL, NULL);
	if (!valid_identifier(VARDATA_ANY(aggregate_type), VARSIZE_ANY_EXHDR(aggregate_type),
						  MAX_AGGREGATE_TYPE_LEN))
		PgcloudRaise("invalid_event",
					 "aggregate_type must be a lower-case word, e.g. allocation (at most 64 characters)",
					 NULL, NULL);
	if (VARSIZE_ANY_EXHDR(aggregate_id) == 0 || VARSIZE_ANY_EXHDR(aggregate_id) > MAX_AGGREGATE_ID_LEN)
		PgcloudRaise("invalid_event", "aggregate_id must be 1 to 200 bytes", NULL, NULL);

	if (payload != NULL)
	{
		if (!JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
			PgcloudRaise("invalid_event", "payload must be a JSON object", NULL, NULL);
		if (VARSIZE(payload) > MAX_PAYLOAD_BYTES)
			PgcloudRaise("invalid_event", "payload is larger than 1 MB", NULL, NULL);
	}

	/* Serialise this aggregate's events until commit, unless the caller's lock does. */
	if (!aggregate_locked)
	{
		StringInfoData agg;

		initStringInfo(&agg);
		appendBinaryStringInfo(&agg, VARDATA_ANY(aggregate_type), VARSIZE_ANY_EXHDR(aggregate_type));
		appendStringInfoChar(&agg, '\0');
		appendBinaryStringInfo(&agg, VARDATA_ANY(aggregate_id), VARSIZE_ANY_EXHDR(aggregate_id));
		DirectFunctionCall2(pg_advisory_xact_lock_int4,
							Int32GetDatum(PGCLOUD_AGGREGATE_LOCK_SPACE),
							Int32GetDatum((int32) hash_bytes((const unsigned char *) agg.data, agg.len)));
	}

	event_id = PgcloudRandomUuid();

	source = emitting_source();
	check_event_authority(source, event_type);

	row.event_id = event_id;
	row.event_type = event_type;
	row.aggregate_type = aggregate_type;
	row.aggregate_id = aggregate_id;
	row.payload = payload ? payload : PgcloudEmptyJsonbObject();
	actor = PgcloudRequestUserId();
	row.headers = event_headers(PgcloudCorrelationId(), actor, PgcloudRequestRole(), source);
	row.source = cstring_to_text(source);
	insert_as_outbox_owner(&row);

	PgcloudRelayWakeAtCommit();
	return event_id;
}

/*
 * pgcloud.emit(event_type text, aggregate_type text, aggregate_id text,
 *              payload jsonb [, aggregate_locked boolean]) RETURNS uuid
 * (aggregate_locked NULL is false)
 */
Datum
pgcloud_outbox_emit(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PgcloudRaise("invalid_event", "event_type, aggregate_type and aggregate_id are required",
					 NULL, NULL);
	PG_RETURN_UUID_P(PgcloudEmit(PG_GETARG_TEXT_PP(0), PG_GETARG_TEXT_PP(1), PG_GETARG_TEXT_PP(2),
								 PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3),
								 PG_NARGS() > 4 && !PG_ARGISNULL(4) && PG_GETARG_BOOL(4)));
}
