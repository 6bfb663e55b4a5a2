/*
 * context.c — the request context in C: the JWT claims and headers PostgREST
 * sets (request.jwt.claims, request.headers), the request role, the user id
 * and the correlation id. The SQL functions pgcloud.request_role(),
 * pgcloud.user_id() and pgcloud.correlation_id() are these; C callers (emit,
 * the rate limiter) use them directly.
 */
#include "pgcloud.h"

#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(pgcloud_context_role);
PG_FUNCTION_INFO_V1(pgcloud_context_user_id);
PG_FUNCTION_INFO_V1(pgcloud_context_correlation_id);

/* A string field of a JSON request setting, or NULL. Bad JSON is a catalogued error. */
char *
PgcloudRequestField(const char *setting, const char *field)
{
	const char *raw = GetConfigOption(setting, true, false);
	Jsonb	   *jb;
	JsonbValue	key;
	JsonbValue *val;
	MemoryContext oldcxt = CurrentMemoryContext;

	if (raw == NULL || raw[0] == '\0')
		return NULL;
	PG_TRY();
	{
		jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(raw)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		FlushErrorState();
		PgcloudRaise("invalid_request_context", psprintf("%s is not valid JSON", setting), NULL, NULL);
	}
	PG_END_TRY();
	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		PgcloudRaise("invalid_request_context", psprintf("%s must be a JSON object", setting), NULL, NULL);
	key.type = jbvString;
	key.val.string.val = (char *) field;
	key.val.string.len = strlen(field);
	val = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &key);
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

/*
 * The correlation id of this transaction: X-Correlation-Id when well-formed,
 * else a new uuid; kept in pgcloud.correlation_id (transaction-local).
 */
char *
PgcloudCorrelationId(void)
{
	char	   *cid;
	unsigned char uuid[UUID_LEN];

	if (pgcloud_correlation_id != NULL && pgcloud_correlation_id[0] != '\0')
		return pstrdup(pgcloud_correlation_id);
	cid = PgcloudRequestField("request.headers", "x-correlation-id");
	if (cid == NULL || !valid_correlation_id(cid))
	{
		if (!pg_strong_random(uuid, UUID_LEN))
			elog(ERROR, "could not generate a correlation id");
		uuid[6] = (uuid[6] & 0x0f) | 0x40;
		uuid[8] = (uuid[8] & 0x3f) | 0x80;
		cid = psprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
					   uuid[0], uuid[1], uuid[2], uuid[3], uuid[4], uuid[5], uuid[6], uuid[7],
					   uuid[8], uuid[9], uuid[10], uuid[11], uuid[12], uuid[13], uuid[14], uuid[15]);
	}
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
