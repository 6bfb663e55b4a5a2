/*
 * policy.c — the one typed accessor of pgcloud.policy_values.
 *
 *   pgcloud.policy(key text, as_type anyelement) RETURNS anyelement
 *
 * The second argument only names the wanted type (pass a typed NULL, e.g.
 * NULL::bigint); the stored jsonb value is converted with that type's input
 * function. A missing key raises policy_missing; a value that cannot be read
 * as the wanted type raises policy_invalid.
 */
#include "pgcloud.h"

#include "utils/inval.h"

PG_FUNCTION_INFO_V1(pgcloud_policy_get);

/* keys are checked as <service>.<name> words; longer ones are read, not cached */
#define POLICY_KEY_MAX 127

typedef struct PolicyRow
{
	bool		found;
	Jsonb	   *value;			/* palloc'd in the caller's context */
	char	   *scalar;			/* value #>> '{}' (NULL for JSON null) */
	char	   *jtype;			/* jsonb_typeof(value) */
} PolicyRow;

/*
 * The policies this backend read, by key: a request reads a dozen of them,
 * and they change rarely. Any change to pgcloud.policy_values (its statement
 * trigger pgcloud.policy_changed() invalidates the table's relcache entry:
 * in this backend at the next command, in every other one at commit, and
 * in this one again if the change rolls back) empties it; an answer read
 * while an invalidation arrived is not kept. Keys that are missing are not
 * kept (they raise).
 */
typedef struct PolicyCacheEntry
{
	char		key[POLICY_KEY_MAX + 1];	/* hash key */
	PolicyRow	row;			/* in policy_cache_cxt */
} PolicyCacheEntry;

static HTAB *policy_cache = NULL;
static MemoryContext policy_cache_cxt = NULL;
static uint64 policy_cache_generation = 0;
static bool policy_callback_registered = false;
static Oid	policy_relid = InvalidOid;

static void
policy_cache_invalidate(Datum arg, Oid relid)
{
	(void) arg;
	if (OidIsValid(relid) && relid != policy_relid)
		return;
	policy_cache_generation++;
	if (policy_cache != NULL)
	{
		hash_destroy(policy_cache);
		policy_cache = NULL;
	}
	if (policy_cache_cxt != NULL)
	{
		MemoryContextDelete(policy_cache_cxt);
		policy_cache_cxt = NULL;
	}
}

/* The row of key, read as the table's owner (callers need no privilege on it). */
static PolicyRow
policy_read(const char *key)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[1] = {TEXTOID};
	MemoryContext caller = CurrentMemoryContext;
	PolicyRow	row = {0};
	Datum		arg;
	volatile int ret = 0;
	Oid			save_userid;
	int			save_sec_context;
	Oid			owner = PgcloudCoreRelOwner("policy_values", &policy_relid);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	arg = CStringGetTextDatum(key);
	/* every name qualified: the caller's search_path is not trusted */
	PgcloudPlan(&plan, "SELECT value, value OPERATOR(pg_catalog.#>>) '{}'::text[], pg_catalog.jsonb_typeof(value) "
				"FROM pgcloud.policy_values WHERE key OPERATOR(pg_catalog.=) $1", 1, argtypes);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		/*
		 * With the latest snapshot, not the statement's: the invalidation of
		 * a change may have been taken in (emptying the cache) after the
		 * statement's snapshot was, and a value read with that snapshot would
		 * then be kept for good. Every commit whose invalidation was taken in
		 * is in the latest snapshot. (PgcloudExecPlanLatest also runs it under
		 * pg_catalog alone: its names are qualified, and callers with
		 * different search_paths do not make it plan again.)
		 */
		ret = PgcloudExecPlanLatest(plan, &arg, NULL, 1);
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec_context);
	}
	PG_END_TRY();
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "policy lookup failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		v = SPI_getbinval(tup, desc, 1, &isnull);
		char	   *scalar = SPI_getvalue(tup, desc, 2);
		char	   *jtype = SPI_getvalue(tup, desc, 3);
		MemoryContext old = MemoryContextSwitchTo(caller);

		row.found = true;
		row.value = DatumGetJsonbPCopy(v);
		row.scalar = scalar ? pstrdup(scalar) : NULL;
		row.jtype = pstrdup(jtype);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return row;
}

/* A copy of row in the current memory context. */
static PolicyRow
policy_row_copy(const PolicyRow *row)
{
	PolicyRow	copy = *row;

	copy.value = palloc(VARSIZE(row->value));
	memcpy(copy.value, row->value, VARSIZE(row->value));
	copy.scalar = row->scalar ? pstrdup(row->scalar) : NULL;
	copy.jtype = pstrdup(row->jtype);
	return copy;
}

static PolicyRow
policy_fetch(const char *key)
{
	PolicyRow	row = {0};
	PolicyCacheEntry *entry;
	bool		found;
	uint64		generation;

	if (strlen(key) <= POLICY_KEY_MAX && policy_cache != NULL)
	{
		entry = hash_search(policy_cache, key, HASH_FIND, NULL);
		if (entry != NULL)
			return policy_row_copy(&entry->row);
	}

	if (!policy_callback_registered)
	{
		CacheRegisterRelcacheCallback(policy_cache_invalidate, (Datum) 0);
		policy_callback_registered = true;
	}
	generation = policy_cache_generation;
	row = policy_read(key);
	if (!row.found)
		PgcloudRaise("policy_missing",
					 psprintf("policy \"%s\" is not set in pgcloud.policy_values", key),
					 "An operator sets it with pgcloud.set_policy(key, value).", NULL);

	if (strlen(key) <= POLICY_KEY_MAX && generation == policy_cache_generation)
	{
		MemoryContext old;

		if (policy_cache == NULL)
		{
			HASHCTL		ctl = {0};

			policy_cache_cxt = AllocSetContextCreate(CacheMemoryContext, "pgcloud policy cache",
													 ALLOCSET_SMALL_SIZES);
			ctl.keysize = POLICY_KEY_MAX + 1;
			ctl.entrysize = sizeof(PolicyCacheEntry);
			ctl.hcxt = policy_cache_cxt;
			policy_cache = hash_create("pgcloud policies", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		}
		entry = hash_search(policy_cache, key, HASH_ENTER, &found);
		old = MemoryContextSwitchTo(policy_cache_cxt);
		entry->row = policy_row_copy(&row);
		MemoryContextSwitchTo(old);
	}
	return row;
}

Jsonb *
PgcloudPolicyJsonb(const char *key)
{
	return policy_fetch(key).value;
}

double
PgcloudPolicyNumber(const char *key)
{
	PolicyRow	row = policy_fetch(key);

	if (strcmp(row.jtype, "number") != 0)
		PgcloudRaise("policy_invalid",
					 psprintf("policy \"%s\" must be a number, not %s", key, row.jtype), NULL, NULL);
	return strtod(row.scalar, NULL);
}

static bool
type_accepts(Oid typid, const char *jtype)
{
	if (typid == TEXTOID || typid == VARCHAROID || typid == BPCHAROID)
		return strcmp(jtype, "object") != 0 && strcmp(jtype, "array") != 0;
	if (strcmp(jtype, "string") == 0)
		return true;			/* intervals, timestamps, uuids, ... */
	if (strcmp(jtype, "number") == 0)
		return typid == INT2OID || typid == INT4OID || typid == INT8OID ||
			typid == NUMERICOID || typid == FLOAT4OID || typid == FLOAT8OID;
	if (strcmp(jtype, "boolean") == 0)
		return typid == BOOLOID;
	return false;
}

/*
 * pgcloud.policy(key, NULL::<typid>) for C code: the value as typid, *isnull
 * for a JSON null; the same errors (policy_missing, policy_invalid).
 */
Datum
PgcloudPolicyDatum(const char *key, Oid typid, bool *isnull)
{
	PolicyRow	row;
	Oid			infunc;
	Oid			ioparam;
	Datum		result = (Datum) 0;

	row = policy_fetch(key);
	*isnull = false;
	if (typid == JSONBOID)
		return JsonbPGetDatum(row.value);
	if (strcmp(row.jtype, "null") == 0)
	{
		*isnull = true;
		return (Datum) 0;
	}
	if (typid == JSONOID)
		return CStringGetTextDatum(JsonbToCString(NULL, &row.value->root, VARSIZE(row.value)));
	if (!type_accepts(typid, row.jtype))
		PgcloudRaise("policy_invalid",
					 psprintf("policy \"%s\" holds a JSON %s, which cannot be read as %s",
							  key, row.jtype, format_type_be(typid)),
					 NULL, NULL);

	getTypeInputInfo(typid, &infunc, &ioparam);
	{
		MemoryContext oldcxt = CurrentMemoryContext;

		PG_TRY();
		{
			result = OidInputFunctionCall(infunc, row.scalar, ioparam, -1);
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(oldcxt);
			FlushErrorState();
			PgcloudRaise("policy_invalid",
						 psprintf("policy \"%s\" cannot be read as %s", key, format_type_be(typid)),
						 NULL, NULL);
		}
		PG_END_TRY();
	}
	return result;
}

Datum
pgcloud_policy_get(PG_FUNCTION_ARGS)
{
	Oid			typid = get_fn_expr_argtype(fcinfo->flinfo, 1);
	Datum		result;
	bool		isnull;

	if (PG_ARGISNULL(0))
		PgcloudRaise("invalid_argument", "policy key must not be NULL", NULL, NULL);
	if (!OidIsValid(typid))
		elog(ERROR, "could not determine the requested policy type");
	result = PgcloudPolicyDatum(text_to_cstring(PG_GETARG_TEXT_PP(0)), typid, &isnull);
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}
