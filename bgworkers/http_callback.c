/*
 * http_callback.c — calls an HTTP intent's result callback.
 *
 * pgcloud.http_record_all() and pgcloud.http_run_callback() (sql/core/
 * 67_http.sql) call each callback through here rather than with a dynamic
 * EXECUTE: that parsed and planned a "SELECT callback(...)" for every
 * intent, which with the set_config() calls around it cost the executor as
 * much as recording the outcome itself. The checks are those the SQL did:
 * the function still exists and is SECURITY DEFINER (it runs as the
 * service that owns it), and the caller may execute it. The callback runs
 * under the correlation id of the request that wrote the intent; every
 * setting it changes is undone when it returns, so one callback cannot
 * change the settings the next one runs under.
 */
#include "http.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/datum.h"
#include "utils/uuid.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_proc.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(pgcloud_http_call_callback);
PG_FUNCTION_INFO_V1(pgcloud_http_record_all);

#define CALLBACK_NARGS 6

/*
 * Calls callback fn with args (intent_id, status, response_headers,
 * response_body, context, final) under correlation id corr (NULL: none).
 */
static void
call_callback(Oid fn, NullableDatum *args, const char *corr)
{
	HeapTuple	tup;
	bool		ok;
	bool		strict = false;
	bool		retset = false;
	bool		anynull = false;
	AclResult	aclresult;
	FmgrInfo	flinfo;
	int			nest;

	LOCAL_FCINFO(cbinfo, CALLBACK_NARGS);

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	ok = HeapTupleIsValid(tup) && ((Form_pg_proc) GETSTRUCT(tup))->prosecdef;
	if (ok)
	{
		strict = ((Form_pg_proc) GETSTRUCT(tup))->proisstrict;
		retset = ((Form_pg_proc) GETSTRUCT(tup))->proretset;
	}
	if (HeapTupleIsValid(tup))
		ReleaseSysCache(tup);
	if (!ok)
		ereport(ERROR, errcode(ERRCODE_UNDEFINED_FUNCTION),
				errmsg("callback function %u of intent %s no longer exists or is not SECURITY DEFINER", fn,
					   DatumGetCString(DirectFunctionCall1(uuid_out, args[0].value))));
	/* The intent guard admits only functions returning void; not a set of it either. */
	if (retset)
		ereport(ERROR, errcode(ERRCODE_WRONG_OBJECT_TYPE),
				errmsg("callback function %u of intent %s returns a set", fn,
					   DatumGetCString(DirectFunctionCall1(uuid_out, args[0].value))));
	aclresult = pg_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_FUNCTION, get_func_name(fn));

	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*cbinfo, &flinfo, CALLBACK_NARGS, DEFAULT_COLLATION_OID, NULL, NULL);
	for (int i = 0; i < CALLBACK_NARGS; i++)
	{
		cbinfo->args[i] = args[i];
		anynull |= args[i].isnull;
	}

	/*
	 * Settings changed from here on (the correlation id, and whatever the
	 * callback sets) are undone when it returns, as for a function with SET
	 * clauses; an error undoes them with the caller's subtransaction.
	 */
	nest = NewGUCNestLevel();
	(void) set_config_option("pgcloud.correlation_id", corr ? corr : "",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	if (!(strict && anynull))
		(void) FunctionCallInvoke(cbinfo);
	AtEOXact_GUC(false, nest);

	/* What follows in this transaction gets a correlation id of its own. */
	(void) set_config_option("pgcloud.correlation_id", "", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0,
							 false);
}

/*
 * pgcloud.http_call_callback(callback regprocedure, intent_id uuid,
 *     status integer, response_headers jsonb, response_body text,
 *     context jsonb, final boolean, correlation_id text) RETURNS void
 *
 * Calls callback(intent_id, status, response_headers, response_body,
 * context, final) as "SELECT callback(...)" would: a strict callback is not
 * called when an argument is NULL.
 */
Datum
pgcloud_http_call_callback(PG_FUNCTION_ARGS)
{
	NullableDatum args[CALLBACK_NARGS];

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR, errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("a callback and an intent id are required"));
	for (int i = 0; i < CALLBACK_NARGS; i++)
	{
		args[i].value = PG_ARGISNULL(i + 1) ? (Datum) 0 : PG_GETARG_DATUM(i + 1);
		args[i].isnull = PG_ARGISNULL(i + 1);
	}
	call_callback(PG_GETARG_OID(0), args, PG_ARGISNULL(7) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(7)));
	PG_RETURN_VOID();
}

/* One recorded outcome whose callback is to run (copied out of SPI's memory). */
typedef struct RecordedCallback
{
	Oid			callback;
	NullableDatum args[CALLBACK_NARGS];
	char	   *corr;
} RecordedCallback;

static void
recorded_callback_unit(void *arg)
{
	RecordedCallback *r = (RecordedCallback *) arg;

	call_callback(r->callback, r->args, r->corr);
}

/*
 * pgcloud.http_record_all(intent_ids uuid[], attempts integer[],
 *     statuses integer[], response_headers jsonb[], response_bodies text[],
 *     truncated boolean[], errors text[], retry_after_seconds integer[])
 *     RETURNS TABLE (intent_id uuid, state text)
 *
 * pgcloud.http_record_outcomes() (one UPDATE for every outcome, which marks
 * final callbacks done), then each callback in a subtransaction of its own,
 * called directly: a failing one is undone alone and noted by
 * pgcloud.http_callback_failed() (which takes the mark back). What a
 * plpgsql loop did with a PERFORM and an exception block per intent.
 */
Datum
pgcloud_http_record_all(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr outcomes_plan = NULL;
	static SPIPlanPtr failed_plan = NULL;
	Oid			outcome_types[8] = {UUIDARRAYOID, INT4ARRAYOID, INT4ARRAYOID, JSONBARRAYOID, TEXTARRAYOID,
	BOOLARRAYOID, TEXTARRAYOID, INT4ARRAYOID};
	Oid			failed_types[3] = {UUIDOID, BOOLOID, TEXTOID};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext cxt;
	Datum		args[8];
	char		nulls[8];
	RecordedCallback *rec;
	uint64		n;

	InitMaterializedSRF(fcinfo, 0);
	cxt = CurrentMemoryContext;
	for (int i = 0; i < 8; i++)
	{
		args[i] = PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PgcloudPlan(&outcomes_plan,
				"SELECT intent_id, state, callback, status, headers, body, context, correlation_id "
				"FROM pgcloud.http_record_outcomes($1, $2, $3, $4, $5, $6, $7, $8)", 8, outcome_types);
	PgcloudPlan(&failed_plan, "SELECT pgcloud.http_callback_failed($1, $2, $3)", 3, failed_types);
	if (SPI_execute_plan(outcomes_plan, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pgcloud.http_record_outcomes() failed");

	/* Copied out first: the callbacks run SPI statements of their own. */
	n = SPI_processed;
	rec = MemoryContextAllocZero(cxt, sizeof(RecordedCallback) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext spicxt = MemoryContextSwitchTo(cxt);
		bool		isnull;
		Datum		out[2];
		bool		outnull[2] = {false, false};
		char	   *state;

		out[0] = datumCopy(SPI_getbinval(tup, desc, 1, &isnull), false, UUID_LEN);
		state = SPI_getvalue(tup, desc, 2);
		out[1] = CStringGetTextDatum(state ? state : "");
		outnull[1] = state == NULL;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, outnull);

		rec[i].callback = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
		if (isnull)
			rec[i].callback = InvalidOid;
		rec[i].args[0].value = out[0];
		rec[i].args[0].isnull = false;
		for (int a = 1; a <= 4; a++)
		{
			/* status, headers, body, context: columns 4 to 7 */
			Datum		v = SPI_getbinval(tup, desc, a + 3, &isnull);

			rec[i].args[a].isnull = isnull;
			rec[i].args[a].value = isnull ? (Datum) 0 :
				(a == 1 ? v : PointerGetDatum(PG_DETOAST_DATUM_COPY(v)));
		}
		/* The final outcome's callback, or the best-effort one of a try that will be retried. */
		rec[i].args[5].value = BoolGetDatum(state == NULL || strcmp(state, "failed") != 0);
		rec[i].args[5].isnull = false;
		rec[i].corr = SPI_getvalue(tup, desc, 8);
		MemoryContextSwitchTo(spicxt);
	}

	for (uint64 i = 0; i < n; i++)
	{
		char	   *err;
		Datum		fargs[3];

		if (!OidIsValid(rec[i].callback))
			continue;
		err = PgcloudRunSubUnit(recorded_callback_unit, &rec[i], cxt);
		if (err == NULL)
			continue;
		fargs[0] = rec[i].args[0].value;
		fargs[1] = rec[i].args[5].value;
		fargs[2] = CStringGetTextDatum(err);
		if (SPI_execute_plan(failed_plan, fargs, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "pgcloud.http_callback_failed() failed");
	}
	SPI_finish();
	return (Datum) 0;
}
