/*
 * context.c — the request context in C: the JWT claims and headers PostgREST
 * sets (request.jwt.claims, request.headers), the request role, the user id
 * and the correlation id. The SQL functions pgcloud.request_role(),
 * pgcloud.user_id() and pgcloud.correlation_id() are these; C callers (emit,
 * the rate limiter) use them directly.
 */
#include "pgcloud.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "catalog/pg_collation.h"
#include "utils/formatting.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(pgcloud_context_role);
PG_FUNCTION_INFO_V1(pgcloud_context_user_id);
PG_FUNCTION_INFO_V1(pgcloud_context_correlation_id);
PG_FUNCTION_INFO_V1(pgcloud_context_claims);
PG_FUNCTION_INFO_V1(pgcloud_context_headers);
PG_FUNCTION_INFO_V1(pgcloud_context_is_operator);
PG_FUNCTION_INFO_V1(pgcloud_context_header);

/*
 * The parsed value of a JSON request setting, kept while the setting holds
 * the same text: an api call reads the claims and headers several times
 * (authorization, user id, idempotency key, correlation id, audit), and
 * PostgREST sets them once per transaction.
 */
typedef struct RequestJsonCache
{
	char	   *raw;			/* the setting's text when parsed (TopMemoryContext) */
	Jsonb	   *jb;				/* its value (TopMemoryContext) */
} RequestJsonCache;

static RequestJsonCache claims_cache;
static RequestJsonCache headers_cache;
static RequestJsonCache other_cache;

/*
 * The JSON object a request setting holds, or NULL when it is unset or
 * empty. Text that is not JSON, or JSON that is not an object, raises
 * invalid_request_context. The text is checked with the JSON lexer, which
 * reports errors instead of raising them (with the escapes processed, so it
 * refuses what jsonb_in would, such as \u0000): jsonb_in then cannot fail,
 * and no error is caught (catching one without a subtransaction would not
 * be safe; with one, every request would pay for it).
 * The result is shared: callers must not modify it.
 */
Jsonb *
PgcloudRequestJson(const char *setting)
{
	const char *raw = GetConfigOption(setting, true, false);
	RequestJsonCache *cache;
	JsonLexContext *lex;
	Jsonb	   *jb;
	MemoryContext oldcxt;

	if (raw == NULL || raw[0] == '\0')
		return NULL;
	if (strcmp(setting, "request.jwt.claims") == 0)
		cache = &claims_cache;
	else if (strcmp(setting, "request.headers") == 0)
		cache = &headers_cache;
	else
		cache = &other_cache;
	if (cache->raw != NULL && strcmp(cache->raw, raw) == 0)
		return cache->jb;

	lex = makeJsonLexContextCstringLen(pstrdup(raw), strlen(raw), GetDatabaseEncoding(), true);
	if (pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		PgcloudRaise("invalid_request_context", psprintf("%s is not valid JSON", setting), NULL, NULL);
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(raw)));
	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		PgcloudRaise("invalid_request_context", psprintf("%s must be a JSON object", setting), NULL, NULL);

	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	if (cache->raw != NULL)
	{
		pfree(cache->raw);
		pfree(cache->jb);
		cache->raw = NULL;
	}
	cache->jb = palloc(VARSIZE(jb));
	memcpy(cache->jb, jb, VARSIZE(jb));
	cache->raw = pstrdup(raw);
	MemoryContextSwitchTo(oldcxt);
	return cache->jb;
}

/* The value of a field of a JSON request setting, or NULL (unset setting, absent field). */
static JsonbValue *
request_value(const char *setting, const char *field)
{
	Jsonb	   *jb = PgcloudRequestJson(setting);
	JsonbValue	key;

	if (jb == NULL)
		return NULL;
	key.type = jbvString;
	key.val.string.val = (char *) field;
	key.val.string.len = strlen(field);
	return findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &key);
}

/* A string field of a JSON request setting, or NULL. Bad JSON is a catalogued error. */
char *
PgcloudRequestField(const char *setting, const char *field)
{
	JsonbValue *val = request_value(setting, field);

	if (val == NULL || val->type != jbvString)
		return NULL;
	return pnstrdup(val->val.string.val, val->val.string.len);
}

char *
PgcloudRequestRole(void)
{
	char	   *role = PgcloudRequestField("request.jwt.claims", "role");
	const char *setrole;

	if (role != NULL && role[0] != '\0')
		return role;
	setrole = GetConfigOption("role", false, false);
	if (setrole != NULL && strcmp(setrole, "none") != 0)
		return pstrdup(setrole);
	return GetUserNameFromId(GetSessionUserId(), false);
}

/*
 * Whether the request has the header (its lower-case name) with a value
 * other than JSON null: whether pgcloud.header(name) is not NULL.
 */
bool
PgcloudRequestHasHeader(const char *lname)
{
	JsonbValue *val = request_value("request.headers", lname);

	return val != NULL && val->type != jbvNull;
}

static bool
looks_like_uuid(const char *s)
{
	static const char pattern[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

	if (strlen(s) != sizeof(pattern) - 1)
		return false;
	for (int i = 0; pattern[i]; i++)
	{
		if (pattern[i] == '-' ? s[i] != '-' : !isxdigit((unsigned char) s[i]))
			return false;
	}
	return true;
}

/* The JWT subject as uuid text, or NULL; a sub that is not a uuid is an error. */
char *
PgcloudRequestUserId(void)
{
	char	   *sub = PgcloudRequestField("request.jwt.claims", "sub");

	if (sub == NULL || sub[0] == '\0')
		return NULL;
	if (!looks_like_uuid(sub))
		PgcloudRaise("invalid_request_context", "the sub claim must be a uuid", NULL, NULL);
	return sub;
}

static bool
valid_correlation_id(const char *s)
{
	size_t		len = strlen(s);

	if (len == 0 || len > 128)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		char		c = s[i];

		if (!(isalnum((unsigned char) c) || c == '.' || c == '_' || c == ':' || c == '-'))
			return false;
	}
	return true;
}

/* A new random (version 4) uuid, from the OS CSPRNG, as gen_random_uuid() makes it. */
pg_uuid_t *
PgcloudRandomUuid(void)
{
	pg_uuid_t  *uuid = palloc(sizeof(pg_uuid_t));

	if (!pg_strong_random(uuid->data, UUID_LEN))
		elog(ERROR, "could not generate a random uuid");
	uuid->data[6] = (uuid->data[6] & 0x0f) | 0x40;	/* version 4 */
	uuid->data[8] = (uuid->data[8] & 0x3f) | 0x80;	/* RFC 4122 variant */
	return uuid;
}

/*
 * The correlation id of this transaction: X-Correlation-Id when well-formed,
 * else a new uuid; kept in pgcloud.correlation_id (transaction-local).
 */
char *
PgcloudCorrelationId(void)
{
	char	   *cid;

	if (pgcloud_correlation_id != NULL && pgcloud_correlation_id[0] != '\0')
		return pstrdup(pgcloud_correlation_id);
	cid = PgcloudRequestField("request.headers", "x-correlation-id");
	if (cid == NULL || !valid_correlation_id(cid))
		cid = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(PgcloudRandomUuid())));
	(void) set_config_option("pgcloud.correlation_id", cid, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
	return cid;
}

Datum
pgcloud_context_role(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(PgcloudRequestRole()));
}

Datum
pgcloud_context_user_id(PG_FUNCTION_ARGS)
{
	char	   *id = PgcloudRequestUserId();

	if (id == NULL)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(DirectFunctionCall1(uuid_in, CStringGetDatum(id)));
}

Datum
pgcloud_context_correlation_id(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(PgcloudCorrelationId()));
}

/* A request setting's object for SQL: a copy, or {} when unset. */
static Datum
request_json_datum(const char *setting)
{
	Jsonb	   *jb = PgcloudRequestJson(setting);
	Jsonb	   *copy;

	if (jb == NULL)
		return JsonbPGetDatum(PgcloudEmptyJsonbObject());
	copy = palloc(VARSIZE(jb));
	memcpy(copy, jb, VARSIZE(jb));
	return JsonbPGetDatum(copy);
}

Datum
pgcloud_context_claims(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(request_json_datum("request.jwt.claims"));
}

Datum
pgcloud_context_headers(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(request_json_datum("request.headers"));
}

/*
 * A superuser's own session (psql, a job) with no JWT claims and no SET
 * ROLE acts as an operator.
 */
Datum
pgcloud_context_is_operator(PG_FUNCTION_ARGS)
{
	Jsonb	   *claims = PgcloudRequestJson("request.jwt.claims");
	const char *role = GetConfigOption("role", false, false);

	if (claims != NULL && JB_ROOT_COUNT(claims) > 0)
		PG_RETURN_BOOL(false);
	if (role == NULL || strcmp(role, "none") != 0)
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(superuser_arg(GetSessionUserId()));
}

/* pgcloud.header(name): one request header, by its name in any case, or NULL. */
Datum
pgcloud_context_header(PG_FUNCTION_ARGS)
{
	text	   *name = PG_GETARG_TEXT_PP(0);
	JsonbValue *val = request_value("request.headers",
									str_tolower(VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name),
												DEFAULT_COLLATION_OID));

	if (val == NULL || val->type == jbvNull)
		PG_RETURN_NULL();
	if (val->type == jbvString)
		PG_RETURN_TEXT_P(cstring_to_text_with_len(val->val.string.val, val->val.string.len));
	/* an array or object, a number or boolean: its JSON text, as ->> gives it */
	if (val->type == jbvBinary)
		PG_RETURN_TEXT_P(cstring_to_text(JsonbToCString(NULL, val->val.binary.data, val->val.binary.len)));
	else
	{
		Jsonb	   *scalar = JsonbValueToJsonb(val);

		PG_RETURN_TEXT_P(cstring_to_text(JsonbToCString(NULL, &scalar->root, VARSIZE(scalar))));
	}
}
