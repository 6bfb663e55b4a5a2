/*
 * storage.c — SQL face of the path checker (safe_path.c) and of the SigV4
 * pre-signer (sigv4.c).
 *
 *   pgcloud.safe_path(text) RETURNS text                      (catalogued path_invalid)
 *   storage.presign_url(method, key, at, expires) RETURNS text  (pgcloud.s3_* settings)
 *   storage.presign_with(...) RETURNS record                    (explicit settings: tests)
 *   storage.sigv4_signature(secret, amz_date, region, service, canonical_request) RETURNS text
 *   storage.uri_encode(text, keep_slash boolean) RETURNS text
 *
 * The secret access key is read here, in C, from a superuser-only setting;
 * it never reaches SQL, a log line or an error message.
 */
#include "pgcloud.h"

#include "mb/pg_wchar.h"
#include "utils/fmgrprotos.h"

#include "safe_path.h"
#include "sigv4.h"

PG_FUNCTION_INFO_V1(pgcloud_storage_safe_path);
PG_FUNCTION_INFO_V1(pgcloud_storage_presign_url);
PG_FUNCTION_INFO_V1(pgcloud_storage_presign_with);
PG_FUNCTION_INFO_V1(pgcloud_storage_sigv4_signature);
PG_FUNCTION_INFO_V1(pgcloud_storage_uri_encode);

static text *
check_path(const char *data, size_t len)
{
	char	   *out = palloc(len + 1);
	size_t		out_len = 0;
	size_t		at = 0;
	SafePathStatus s = SafePathCheck(data, len, out, &out_len, &at);

	if (s != SAFE_PATH_OK)
		PgcloudRaise("path_invalid",
					 psprintf("%s (%s at byte %zu)", SafePathStatusMessage(s), SafePathStatusName(s), at),
					 "Use a relative path of UTF-8 segments separated by \"/\", without \"..\", control characters or backslashes.",
					 NULL);
	return cstring_to_text_with_len(out, out_len);
}

Datum
pgcloud_storage_safe_path(PG_FUNCTION_ARGS)
{
	text	   *in = PG_GETARG_TEXT_PP(0);
	text	   *checked = check_path(VARDATA_ANY(in), VARSIZE_ANY_EXHDR(in));
	text	   *nfc;

	/*
	 * NFC, then check again: composition never yields '/', '.' or a control
	 * character, but the second check costs little and proves it.
	 */
	if (GetDatabaseEncoding() != PG_UTF8)
		PG_RETURN_TEXT_P(checked);
	nfc = DatumGetTextPP(DirectFunctionCall2(unicode_normalize_func, PointerGetDatum(checked),
											 CStringGetTextDatum("NFC")));
	PG_RETURN_TEXT_P(check_path(VARDATA_ANY(nfc), VARSIZE_ANY_EXHDR(nfc)));
}

static int64
unix_seconds(TimestampTz ts)
{
	return (int64) (ts / USECS_PER_SEC) + (int64) ((POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY)
		- (ts < 0 && ts % USECS_PER_SEC != 0 ? 1 : 0);
}

static char *
encoded_key(text *key)
{
	StringInfoData buf;

	initStringInfo(&buf);
	Sigv4UriEncode(&buf, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), true);
	return buf.data;
}

Datum
pgcloud_storage_presign_url(PG_FUNCTION_ARGS)
{
	Sigv4Config cfg;
	char	   *error = NULL;
	char	   *url;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		elog(ERROR, "storage.presign_url() takes no NULL argument");
	if (!Sigv4ConfigFromSettings(&cfg, &error))
		PgcloudRaise("storage_not_configured", error, "The operator sets the pgcloud.s3_* settings.", NULL);
	url = Sigv4Presign(&cfg, text_to_cstring(PG_GETARG_TEXT_PP(0)), encoded_key(PG_GETARG_TEXT_PP(1)),
					   unix_seconds(PG_GETARG_TIMESTAMPTZ(2)), PG_GETARG_INT32(3), NULL, &error);
	if (url == NULL)
		PgcloudRaise("storage_not_configured", error, "The operator checks the pgcloud.s3_* settings.", NULL);
	PG_RETURN_TEXT_P(cstring_to_text(url));
}

/*
 * storage.presign_with(method, key, at, expires, endpoint, region, bucket,
 * access_key_id, secret_access_key, path_style, OUT url, OUT canonical_request):
 * the same signer with explicit settings, for the test suites.
 */
Datum
pgcloud_storage_presign_with(PG_FUNCTION_ARGS)
{
	Sigv4Config cfg;
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	char	   *error = NULL;
	char	   *canonical = NULL;
	char	   *url;

	for (int i = 0; i < 10; i++)
		if (PG_ARGISNULL(i))
			elog(ERROR, "storage.presign_with() takes no NULL argument");
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "storage.presign_with() must return a record");
	desc = BlessTupleDesc(desc);
	cfg.endpoint = text_to_cstring(PG_GETARG_TEXT_PP(4));
	cfg.region = text_to_cstring(PG_GETARG_TEXT_PP(5));
	cfg.bucket = text_to_cstring(PG_GETARG_TEXT_PP(6));
	cfg.access_key_id = text_to_cstring(PG_GETARG_TEXT_PP(7));
	cfg.secret_access_key = text_to_cstring(PG_GETARG_TEXT_PP(8));
	cfg.path_style = PG_GETARG_BOOL(9);
	url = Sigv4Presign(&cfg, text_to_cstring(PG_GETARG_TEXT_PP(0)), encoded_key(PG_GETARG_TEXT_PP(1)),
					   unix_seconds(PG_GETARG_TIMESTAMPTZ(2)), PG_GETARG_INT32(3), &canonical, &error);
	if (url == NULL)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("could not pre-sign the URL"),
				errdetail("%s.", error));
	values[0] = CStringGetTextDatum(url);
	values[1] = CStringGetTextDatum(canonical);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

Datum
pgcloud_storage_sigv4_signature(PG_FUNCTION_ARGS)
{
	char		out[65];
	char	   *amz_date;
	text	   *creq;

	for (int i = 0; i < 5; i++)
		if (PG_ARGISNULL(i))
			PG_RETURN_NULL();
	amz_date = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (strlen(amz_date) != 16 || amz_date[8] != 'T' || amz_date[15] != 'Z')
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("amz_date must look like 20150830T123600Z"));
	creq = PG_GETARG_TEXT_PP(4);
	Sigv4Signature(text_to_cstring(PG_GETARG_TEXT_PP(0)), amz_date, text_to_cstring(PG_GETARG_TEXT_PP(2)),
				   text_to_cstring(PG_GETARG_TEXT_PP(3)), VARDATA_ANY(creq), VARSIZE_ANY_EXHDR(creq), out);
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

Datum
pgcloud_storage_uri_encode(PG_FUNCTION_ARGS)
{
	text	   *in = PG_GETARG_TEXT_PP(0);
	StringInfoData buf;

	initStringInfo(&buf);
	Sigv4UriEncode(&buf, VARDATA_ANY(in), VARSIZE_ANY_EXHDR(in), PG_GETARG_BOOL(1));
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}
