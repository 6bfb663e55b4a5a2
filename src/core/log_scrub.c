/*
 * log_scrub.c — pgcloud.sanitize(text) and the emit_log_hook that passes
 * every server log line through the same scrubber (sanitize.c): the message,
 * detail, hint, context, internal query and the logged statement.
 */
#include "pgcloud.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "tcop/tcopprot.h"

#include "sanitize.h"

PG_FUNCTION_INFO_V1(pgcloud_sanitize);
PG_FUNCTION_INFO_V1(pgcloud_sanitize_json);

static emit_log_hook_type prev_emit_log_hook = NULL;

/* The scrubbed copy of the statement that debug_query_string points at. */
static char *scrubbed_statement = NULL;

static void *
buf_grow(void *ptr, size_t size, void *arg)
{
	MemoryContext cxt = (MemoryContext) arg;

	if (ptr == NULL)
		return MemoryContextAlloc(cxt, size);
	return repalloc(ptr, size);
}

/*
 * Returns a scrubbed copy of in[0..len) allocated in CurrentMemoryContext, or
 * NULL when there was nothing to scrub.
 */
char *
PgcloudSanitizeCString(const char *in, size_t len, int *nredacted)
{
	PgcBuf		out = {0};
	int			n;

	*nredacted = 0;
	if (!pgc_sanitize_needed(in, len))
		return NULL;
	out.grow = buf_grow;
	out.arg = CurrentMemoryContext;
	n = pgc_sanitize(in, len, &out);
	*nredacted = n;
	if (n == 0)
	{
		if (out.data)
			pfree(out.data);
		return NULL;
	}
	return out.data;
}

static void
scrub_field(char **field)
{
	char	   *clean;
	int			n;

	if (*field == NULL)
		return;
	clean = PgcloudSanitizeCString(*field, strlen(*field), &n);
	if (clean != NULL)
		*field = clean;
}

static void
pgcloud_emit_log_hook(ErrorData *edata)
{
	MemoryContext old = MemoryContextSwitchTo(edata->assoc_context ? edata->assoc_context
											  : ErrorContext);

	scrub_field(&edata->message);
	scrub_field(&edata->detail);
	scrub_field(&edata->detail_log);
	scrub_field(&edata->hint);
	scrub_field(&edata->context);
	scrub_field(&edata->internalquery);
	MemoryContextSwitchTo(old);

	/*
	 * The "STATEMENT:" line (and csvlog/jsonlog's query field) print
	 * debug_query_string. Point it at a scrubbed copy that lives until the
	 * next replacement; PostgreSQL resets it at the next query.
	 */
	if (debug_query_string != NULL && debug_query_string != scrubbed_statement)
	{
		char	   *clean;
		int			n;

		old = MemoryContextSwitchTo(TopMemoryContext);
		clean = PgcloudSanitizeCString(debug_query_string, strlen(debug_query_string), &n);
		MemoryContextSwitchTo(old);
		if (clean != NULL)
		{
			char	   *prev = scrubbed_statement;

			debug_query_string = clean;
			scrubbed_statement = clean;
			if (prev != NULL)
				pfree(prev);
		}
	}

	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
PgcloudLogScrubInit(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = pgcloud_emit_log_hook;
}

/* pgcloud.sanitize(text) RETURNS text */
Datum
pgcloud_sanitize(PG_FUNCTION_ARGS)
{
	text	   *in = PG_GETARG_TEXT_PP(0);
	char	   *clean;
	int			n;

	clean = PgcloudSanitizeCString(VARDATA_ANY(in), VARSIZE_ANY_EXHDR(in), &n);
	if (clean == NULL)
		PG_RETURN_TEXT_P(in);
	PG_RETURN_TEXT_P(cstring_to_text(clean));
}

/*
 * pgcloud.sanitize_json(jsonb) RETURNS jsonb: the value with secrets
 * scrubbed from its text form. Should scrubbing leave text that is not JSON
 * (a redaction cutting through syntax), the result is {"redacted": true}:
 * checked with the JSON lexer, which reports instead of raising, so the
 * audit path needs no subtransaction to survive it.
 */
Jsonb *
PgcloudSanitizeJsonb(Jsonb *in)
{
	char	   *txt = JsonbToCString(NULL, &in->root, VARSIZE(in));
	char	   *clean;
	int			n;
	JsonLexContext *lex;

	clean = PgcloudSanitizeCString(txt, strlen(txt), &n);
	if (clean == NULL)
		return in;
	lex = makeJsonLexContextCstringLen(pstrdup(clean), strlen(clean), GetDatabaseEncoding(), true);
	if (pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{\"redacted\": true}")));
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(clean)));
}

Datum
pgcloud_sanitize_json(PG_FUNCTION_ARGS)
{
	PG_RETURN_JSONB_P(PgcloudSanitizeJsonb(PG_GETARG_JSONB_P(0)));
}
