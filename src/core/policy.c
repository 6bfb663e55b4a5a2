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

PG_FUNCTION_INFO_V1(pgcloud_policy_get);

typedef struct PolicyRow
{
	bool		found;
	Jsonb	   *value;			/* palloc'd in the caller's context */
	char	   *scalar;			/* value #>> '{}' (NULL for JSON null) */
	char	   *jtype;			/* jsonb_typeof(value) */
} PolicyRow;

static PolicyRow
policy_fetch(const char *key)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[1] = {TEXTOID};
	MemoryContext caller = CurrentMemoryContext;
	PolicyRow	row = {0};
	Datum		arg;
	int			ret;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	arg = CStringGetTextDatum(key);
	ret = SPI_execute_plan(PgcloudPlan(&plan, "SELECT value, value #>> '{}', jsonb_typeof(value) "
									   "FROM pgcloud.policy_values WHERE key = $1", 1, argtypes),
						   &arg, NULL, true, 1);
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

	if (!row.found)
		PgcloudRaise("policy_missing",
					 psprintf("policy \"%s\" is not set in pgcloud.policy_values", key),
					 "An operator sets it with pgcloud.set_policy(key, value).", NULL);
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

Datum
pgcloud_policy_get(PG_FUNCTION_ARGS)
{
	Oid			typid = get_fn_expr_argtype(fcinfo->flinfo, 1);
	char	   *key;
	PolicyRow	row;
	Oid			infunc;
	Oid			ioparam;
	Datum		result = (Datum) 0;

	if (PG_ARGISNULL(0))
		PgcloudRaise("invalid_argument", "policy key must not be NULL", NULL, NULL);
	if (!OidIsValid(typid))
		elog(ERROR, "could not determine the requested policy type");
	key = text_to_cstring(PG_GETARG_TEXT_PP(0));
	row = policy_fetch(key);

	if (typid == JSONBOID)
		PG_RETURN_JSONB_P(row.value);
	if (strcmp(row.jtype, "null") == 0)
		PG_RETURN_NULL();
	if (typid == JSONOID)
		PG_RETURN_DATUM(CStringGetTextDatum(JsonbToCString(NULL, &row.value->root,
														   VARSIZE(row.value))));
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
	PG_RETURN_DATUM(result);
}
