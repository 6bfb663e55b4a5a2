/*
 * webhook.c — SQL face of the Stripe webhook signature check (stripe_sig.c)
 * and of the form encoder Stripe's API takes.
 *
 *   payments.verify_signature(body text, signature text, tolerance_seconds integer,
 *                             OUT verdict text, OUT signed_at bigint, OUT secret_index integer)
 *   payments.form_encode(names text[], vals text[]) RETURNS text
 *
 * The endpoint secrets come from pgcloud.stripe_webhook_secrets (superuser
 * only, comma-separated); they are read here, in C, and never reach SQL,
 * a log line or an error message.
 */
#include "pgcloud.h"

#include "utils/array.h"

#include "stripe_sig.h"

PG_FUNCTION_INFO_V1(pgcloud_payments_verify_signature);
PG_FUNCTION_INFO_V1(pgcloud_payments_form_encode);

Datum
pgcloud_payments_verify_signature(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	text	   *body;
	const char *header = NULL;
	size_t		header_len = 0;
	int64		tolerance;
	int64		now;
	int64		signed_at = 0;
	int			matched = 0;
	StripeSigStatus status;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "payments.verify_signature() must return a record");
	desc = BlessTupleDesc(desc);

	if (PG_ARGISNULL(0))
		body = cstring_to_text("");
	else
		body = PG_GETARG_TEXT_PP(0);
	if (!PG_ARGISNULL(1))
	{
		text	   *h = PG_GETARG_TEXT_PP(1);

		header = VARDATA_ANY(h);
		header_len = VARSIZE_ANY_EXHDR(h);
	}
	tolerance = PG_ARGISNULL(2) ? 300 : PG_GETARG_INT32(2);
	if (tolerance < 0)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("tolerance_seconds must not be negative"));

	/* Unix seconds of the current time (not the transaction start). */
	now = (int64) (GetCurrentTimestamp() / USECS_PER_SEC)
		+ (int64) ((POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY);

	status = StripeSigVerify(header, header_len, VARDATA_ANY(body), VARSIZE_ANY_EXHDR(body),
							 pgcloud_stripe_webhook_secrets, now, tolerance, &signed_at, &matched);
	if (status == STRIPE_SIG_INTERNAL)
		ereport(ERROR,
				errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				errmsg("could not compute the webhook signature"),
				errdetail("OpenSSL's HMAC-SHA256 failed."));

	values[0] = CStringGetTextDatum(StripeSigStatusName(status));
	values[1] = Int64GetDatum(signed_at);
	nulls[1] = signed_at == 0;
	values[2] = Int32GetDatum(matched);
	nulls[2] = matched == 0;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/* application/x-www-form-urlencoded: unreserved bytes as they are, space as +, the rest %XX. */
static void
append_form_escaped(StringInfo buf, const char *s, int len)
{
	static const char hex[] = "0123456789ABCDEF";

	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '*')
			appendStringInfoChar(buf, (char) c);
		else if (c == ' ')
			appendStringInfoChar(buf, '+');
		else
		{
			appendStringInfoChar(buf, '%');
			appendStringInfoChar(buf, hex[c >> 4]);
			appendStringInfoChar(buf, hex[c & 15]);
		}
	}
}

Datum
pgcloud_payments_form_encode(PG_FUNCTION_ARGS)
{
	ArrayType  *names;
	ArrayType  *vals;
	Datum	   *name_datums;
	Datum	   *val_datums;
	bool	   *name_nulls;
	bool	   *val_nulls;
	int			nnames;
	int			nvals;
	StringInfoData buf;
	bool		first = true;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	names = PG_GETARG_ARRAYTYPE_P(0);
	vals = PG_GETARG_ARRAYTYPE_P(1);
	if (ARR_NDIM(names) > 1 || ARR_NDIM(vals) > 1)
		ereport(ERROR,
				errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				errmsg("names and values must be one-dimensional arrays"));
	deconstruct_array(names, TEXTOID, -1, false, TYPALIGN_INT, &name_datums, &name_nulls, &nnames);
	deconstruct_array(vals, TEXTOID, -1, false, TYPALIGN_INT, &val_datums, &val_nulls, &nvals);
	if (nnames != nvals)
		ereport(ERROR,
				errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				errmsg("names and values must have the same length"),
				errdetail("There are %d names and %d values.", nnames, nvals));

	initStringInfo(&buf);
	for (int i = 0; i < nnames; i++)
	{
		text	   *n;
		text	   *v;

		/* A NULL value leaves the field out; a NULL name is an error. */
		if (name_nulls[i])
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("a form field name must not be NULL"));
		if (val_nulls[i])
			continue;
		n = DatumGetTextPP(name_datums[i]);
		v = DatumGetTextPP(val_datums[i]);
		if (!first)
			appendStringInfoChar(&buf, '&');
		first = false;
		append_form_escaped(&buf, VARDATA_ANY(n), VARSIZE_ANY_EXHDR(n));
		appendStringInfoChar(&buf, '=');
		append_form_escaped(&buf, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
	}
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}
