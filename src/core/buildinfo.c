/*
 * buildinfo.c — pgcloud.build_info(): the versions this library was built
 * with and runs against, for operators and bug reports.
 */
#include "pgcloud.h"

#include <curl/curl.h>
#include <nats/nats.h>
#include <openssl/crypto.h>

PG_FUNCTION_INFO_V1(pgcloud_build_info);

Datum
pgcloud_build_info(PG_FUNCTION_ARGS)
{
	curl_version_info_data *curl = curl_version_info(CURLVERSION_NOW);
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "{\"pgcloud\": \"%s\", \"postgresql\": \"%s\", \"libcurl\": \"%s\", "
					 "\"nats_c\": \"%s\", \"openssl\": \"%s\"}",
					 EXTVERSION, PG_VERSION, curl->version, nats_GetVersion(),
					 OpenSSL_version(OPENSSL_VERSION_STRING));
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
