/*
 * errors.c — raising catalogued API errors in PostgREST's custom-error form:
 * SQLSTATE PGRST, message = JSON {code, message, details, hint}, detail =
 * JSON {status, headers}. PostgREST turns that into the HTTP status and body;
 * psql shows the JSON, whose "message" is a readable sentence.
 */
#include "pgcloud.h"

#include "utils/json.h"

PG_FUNCTION_INFO_V1(pgcloud_error_raise);

static void
append_json_field(StringInfo buf, const char *name, const char *value, bool first)
{
	if (!first)
		appendStringInfoString(buf, ", ");
	escape_json(buf, name);
	appendStringInfoString(buf, ": ");
	if (value)
		escape_json(buf, value);
	else
		appendStringInfoString(buf, "null");
}

/*
 * Looks the code up in pgcloud.error_codes and raises it. An unknown code is
 * itself reported as the catalogued error "unknown_error_code" (500), so a
 * typo in a service never leaks as an untyped error.
 */
void
PgcloudRaise(const char *code, const char *details, const char *hint,
			 const char *headers_json)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[1] = {TEXTOID};
	int			status = 500;
	char	   *message = NULL;
	char	   *client_message;
	char	   *client_detail;
	StringInfoData buf;
	Datum		arg;
	bool		found = false;
	int			ret;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	arg = CStringGetTextDatum(code);
	ret = SPI_execute_plan(PgcloudPlan(&plan, "SELECT http_status, message FROM pgcloud.error_codes WHERE code = $1",
									   1, argtypes),
						   &arg, NULL, true, 1);
	if (ret == SPI_OK_SELECT && SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		MemoryContext old;

		status = DatumGetInt32(d);
		old = MemoryContextSwitchTo(CurTransactionContext);
		message = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		message = message ? pstrdup(message) : NULL;
		MemoryContextSwitchTo(old);
		found = true;
	}
	SPI_finish();

	if (!found)
	{
		if (strcmp(code, "unknown_error_code") == 0)
			elog(ERROR, "error catalogue is missing \"unknown_error_code\"");
		PgcloudRaise("unknown_error_code", psprintf("code \"%s\" is not in pgcloud.error_codes", code),
					 NULL, NULL);
	}

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	append_json_field(&buf, "code", code, true);
	append_json_field(&buf, "message", message, false);
	append_json_field(&buf, "details", details, false);
	append_json_field(&buf, "hint", hint, false);
	appendStringInfoChar(&buf, '}');
	client_message = buf.data;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"status\": %d, \"headers\": %s}", status,
					 headers_json ? headers_json : "{}");
	client_detail = buf.data;

	ereport(ERROR,
			errcode(PGCLOUD_ERRCODE_PGRST),
			errmsg_internal("%s", client_message),
			errdetail_internal("%s", client_detail));
	pg_unreachable();
}

/*
 * pgcloud.raise(code text, details text, hint text, headers jsonb) RETURNS void
 */
Datum
pgcloud_error_raise(PG_FUNCTION_ARGS)
{
	char	   *code;
	char	   *details = NULL;
	char	   *hint = NULL;
	char	   *headers = NULL;

	if (PG_ARGISNULL(0))
		PgcloudRaise("unknown_error_code", "pgcloud.raise() was called with a NULL code", NULL, NULL);
	code = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!PG_ARGISNULL(1))
		details = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!PG_ARGISNULL(2))
		hint = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (!PG_ARGISNULL(3))
	{
		Jsonb	   *h = PG_GETARG_JSONB_P(3);

		if (!JB_ROOT_IS_OBJECT(h))
			PgcloudRaise("invalid_argument", "headers must be a JSON object", NULL, NULL);
		headers = JsonbToCString(NULL, &h->root, VARSIZE(h));
	}
	PgcloudRaise(code, details, hint, headers);
	PG_RETURN_VOID();
}
