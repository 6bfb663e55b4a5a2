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
#include "catalog/pg_collation.h"
#include "catalog/pg_proc.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(pgcloud_http_call_callback);

#define CALLBACK_NARGS 6

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
	Oid			fn;
	HeapTuple	tup;
	bool		ok;
	bool		strict = false;
	bool		retset = false;
	bool		anynull = false;
	AclResult	aclresult;
	FmgrInfo	flinfo;
	int			nest;

	LOCAL_FCINFO(cbinfo, CALLBACK_NARGS);

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR, errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				errmsg("a callback and an intent id are required"));
	fn = PG_GETARG_OID(0);

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
					   DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(1)))));
	/* The intent guard admits only functions returning void; not a set of it either. */
	if (retset)
		ereport(ERROR, errcode(ERRCODE_WRONG_OBJECT_TYPE),
				errmsg("callback function %u of intent %s returns a set", fn,
					   DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(1)))));
	aclresult = pg_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_FUNCTION, get_func_name(fn));

	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*cbinfo, &flinfo, CALLBACK_NARGS, DEFAULT_COLLATION_OID, NULL, NULL);
	for (int i = 0; i < CALLBACK_NARGS; i++)
	{
		cbinfo->args[i].value = PG_ARGISNULL(i + 1) ? (Datum) 0 : PG_GETARG_DATUM(i + 1);
		cbinfo->args[i].isnull = PG_ARGISNULL(i + 1);
		anynull |= cbinfo->args[i].isnull;
	}

	/*
	 * Settings changed from here on (the correlation id, and whatever the
	 * callback sets) are undone when it returns, as for a function with SET
	 * clauses; an error undoes them with the caller's subtransaction.
	 */
	nest = NewGUCNestLevel();
	(void) set_config_option("pgcloud.correlation_id", PG_ARGISNULL(7) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(7)),
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	if (!(strict && anynull))
		(void) FunctionCallInvoke(cbinfo);
	AtEOXact_GUC(false, nest);

	/* What follows in this transaction gets a correlation id of its own. */
	(void) set_config_option("pgcloud.correlation_id", "", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0,
							 false);
	PG_RETURN_VOID();
}
