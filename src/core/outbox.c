/*
 * outbox.c — pgcloud.emit(): the transactional outbox.
 *
 * The event row commits with the caller's domain change or not at all.
 * Events of one aggregate are serialised with a transaction-scoped advisory
 * lock taken before the row gets its id, so the outbox id order of one
 * aggregate's events is their commit order.
 */
#include "pgcloud.h"

#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "commands/trigger.h"
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
	ret = PgcloudExecPlan(PgcloudPlan(&plan, "SELECT pgcloud.publisher_of($1)", 1, argtypes),
						  values, NULL, true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "event publisher lookup failed: %s", SPI_result_code_string(ret));
	owner = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

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
 * Called inside SPI.
 */
static void
check_event_authority(const char *source, text *event_type)
{
	char	   *owner;
	char	   *type = text_to_cstring(event_type);
	bool		is_service_role = is_member_of_role(GetUserId(), get_role_oid("pgcloud_services", false))
		|| strncmp(GetUserNameFromId(GetUserId(), false), "pgcloud_svc_", 12) == 0;

	owner = publisher_of(event_type);

	if (superuser())
		return;					/* the operator: outside every boundary */
	if (owner != NULL)
	{
		if (strcmp(owner, source) == 0)
			return;
		PgcloudRaise("event_not_permitted",
					 psprintf("event type %s is published by service %s, not by %s", type, owner, source),
					 "A service emits only the event types registry/services.conf lists under its publishes.",
					 NULL);
	}
	/* a type no service owns */
	if (!is_service_role)
		return;
	PgcloudRaise("event_not_permitted",
				 psprintf("event type %s is not among the types service %s publishes", type, source),
				 "A service emits only the event types registry/services.conf lists under its publishes.",
				 NULL);
}

/*
 * pgcloud.emit(event_type text, aggregate_type text, aggregate_id text,
 *              payload jsonb) RETURNS uuid
 */
Datum
pgcloud_outbox_emit(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[9] = {UUIDOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID,
							   TEXTOID, TEXTOID, TEXTOID};
	text	   *event_type;
	text	   *aggregate_type;
	text	   *aggregate_id;
	Jsonb	   *payload;
	pg_uuid_t  *event_id;
	Datum		values[9];
	char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	char	   *actor;
	uint32		lockkey;
	StringInfoData agg;
	volatile int ret = 0;
	char	   *source;
	Oid			save_userid;
	int			save_sec_context;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PgcloudRaise("invalid_event", "event_type, aggregate_type and aggregate_id are required",
					 NULL, NULL);
	event_type = PG_GETARG_TEXT_PP(0);
	aggregate_type = PG_GETARG_TEXT_PP(1);
	aggregate_id = PG_GETARG_TEXT_PP(2);

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

	if (PG_ARGISNULL(3))
		payload = NULL;
	else
	{
		payload = PG_GETARG_JSONB_P(3);
		if (!JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
			PgcloudRaise("invalid_event", "payload must be a JSON object", NULL, NULL);
		if (VARSIZE(payload) > MAX_PAYLOAD_BYTES)
			PgcloudRaise("invalid_event", "payload is larger than 1 MB", NULL, NULL);
	}

	/* Serialise this aggregate's events until commit. */
	initStringInfo(&agg);
	appendBinaryStringInfo(&agg, VARDATA_ANY(aggregate_type), VARSIZE_ANY_EXHDR(aggregate_type));
	appendStringInfoChar(&agg, '\0');
	appendBinaryStringInfo(&agg, VARDATA_ANY(aggregate_id), VARSIZE_ANY_EXHDR(aggregate_id));
	lockkey = hash_bytes((const unsigned char *) agg.data, agg.len);
	DirectFunctionCall2(pg_advisory_xact_lock_int4,
						Int32GetDatum(PGCLOUD_AGGREGATE_LOCK_SPACE),
						Int32GetDatum((int32) lockkey));

	event_id = palloc(sizeof(pg_uuid_t));
	if (!pg_strong_random(event_id->data, UUID_LEN))
		elog(ERROR, "could not generate a random event id");
	event_id->data[6] = (event_id->data[6] & 0x0f) | 0x40;	/* version 4 */
	event_id->data[8] = (event_id->data[8] & 0x3f) | 0x80;	/* RFC 4122 variant */

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	source = emitting_source();
	check_event_authority(source, event_type);
	PgcloudPlan(&plan,
				"INSERT INTO pgcloud.outbox "
				"(event_id, event_type, aggregate_type, aggregate_id, payload, headers, source) "
				"VALUES ($1, $2, $3, $4, coalesce($5, '{}'::jsonb), "
				"pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object("
				"'correlation_id', $7, 'actor', $8, 'actor_role', $9, 'source', $6)), $6)",
				9, argtypes);
	values[0] = UUIDPGetDatum(event_id);
	values[1] = PointerGetDatum(event_type);
	values[2] = PointerGetDatum(aggregate_type);
	values[3] = PointerGetDatum(aggregate_id);
	if (payload)
		values[4] = JsonbPGetDatum(payload);
	else
	{
		values[4] = (Datum) 0;
		nulls[4] = 'n';
	}
	values[5] = CStringGetTextDatum(source);
	values[6] = CStringGetTextDatum(PgcloudCorrelationId());
	actor = PgcloudRequestUserId();
	values[7] = actor ? CStringGetTextDatum(actor) : (Datum) 0;
	nulls[7] = actor ? ' ' : 'n';
	values[8] = CStringGetTextDatum(PgcloudRequestRole());
	/*
	 * No service role may write the outbox directly (its source and headers
	 * would be whatever it claims): the row is written as the outbox's
	 * owner, after the authority check above.
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(PgcloudCoreRelOwner("outbox", NULL), save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		ret = PgcloudExecPlan(plan, values, nulls, false, 0);
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec_context);
	}
	PG_END_TRY();
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "outbox insert failed: %s", SPI_result_code_string(ret));
	SPI_finish();

	PgcloudRelayWakeAtCommit();
	PG_RETURN_UUID_P(event_id);
}
