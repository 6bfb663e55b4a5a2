/*
 * guc.c — every pgcloud.* setting. Targets and secrets are superuser-only;
 * the reserved prefix makes a misspelt pgcloud.* setting an error.
 */
#include "pgcloud.h"

char	   *pgcloud_databases = NULL;
char	   *pgcloud_nats_url = NULL;
char	   *pgcloud_nats_credentials = NULL;
char	   *pgcloud_stripe_api_url = NULL;
char	   *pgcloud_stripe_secret_key = NULL;
char	   *pgcloud_stripe_webhook_secrets = NULL;
char	   *pgcloud_maas_url = NULL;
char	   *pgcloud_maas_api_key = NULL;
char	   *pgcloud_smtp_url = NULL;
char	   *pgcloud_test_http_url = NULL;
char	   *pgcloud_ca_bundle = NULL;
char	   *pgcloud_key_file = NULL;
char	   *pgcloud_correlation_id = NULL;
int			pgcloud_rate_limit_max_principals = 10000;
char	   *pgcloud_s3_endpoint = NULL;
char	   *pgcloud_s3_region = NULL;
char	   *pgcloud_s3_bucket = NULL;
char	   *pgcloud_s3_access_key_id = NULL;
char	   *pgcloud_s3_secret_access_key = NULL;
bool		pgcloud_s3_path_style = true;

static void
define_target(const char *name, const char *desc, char **var, const char *def, bool secret)
{
	int			flags = GUC_SUPERUSER_ONLY;

	if (secret)
		flags |= GUC_NO_SHOW_ALL;
	DefineCustomStringVariable(name, desc, NULL, var, def, PGC_SIGHUP, flags,
							   NULL, NULL, NULL);
}

void
PgcloudGucInit(void)
{
	DefineCustomStringVariable("pgcloud.databases",
							   "Databases in which pgcloud background workers run (comma-separated).",
							   NULL, &pgcloud_databases, "", PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	define_target("pgcloud.nats_url",
				  "NATS server URL for event delivery; empty means embedded delivery.",
				  &pgcloud_nats_url, "", false);
	define_target("pgcloud.nats_credentials",
				  "Path of a NATS credentials file.", &pgcloud_nats_credentials, "", false);
	define_target("pgcloud.stripe_api_url",
				  "Base URL of the Stripe API.", &pgcloud_stripe_api_url,
				  "https://api.stripe.com", false);
	define_target("pgcloud.stripe_secret_key",
				  "Stripe secret API key.", &pgcloud_stripe_secret_key, "", true);
	/*
	 * Read by the backend that verifies a webhook, not by a worker: PGC_SUSET,
	 * so a superuser may also set it for a session (tests, a rotation drill).
	 */
	DefineCustomStringVariable("pgcloud.stripe_webhook_secrets",
							   "Stripe webhook endpoint secrets, comma-separated, for rotation.",
							   NULL, &pgcloud_stripe_webhook_secrets, "", PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, NULL, NULL, NULL);
	define_target("pgcloud.maas_url",
				  "MAAS URL as its users know it, e.g. http://maas.example:5240/MAAS.",
				  &pgcloud_maas_url, "", false);
	define_target("pgcloud.maas_api_key",
				  "MAAS API key (consumer:token:secret).", &pgcloud_maas_api_key, "", true);
	define_target("pgcloud.smtp_url",
				  "SMTP relay URL for e-mail notifications.", &pgcloud_smtp_url, "", true);
	define_target("pgcloud.test_http_url",
				  "Base URL of the HTTP intent target \"test\" (test suites only).",
				  &pgcloud_test_http_url, "", false);
	define_target("pgcloud.ca_bundle",
				  "Extra CA bundle file for outbound TLS.", &pgcloud_ca_bundle, "", false);
	define_target("pgcloud.key_file",
				  "File holding the sealing and signing key material, outside the database.",
				  &pgcloud_key_file, "", false);

	/*
	 * S3 (storage): read by the backend that pre-signs a URL and by the HTTP
	 * executor (target s3). PGC_SUSET like the webhook secrets, so a superuser
	 * may also set them for a session; superuser-only, the secret unlisted.
	 */
	DefineCustomStringVariable("pgcloud.s3_endpoint",
							   "S3 endpoint URL (scheme://host[:port]) pre-signed URLs point at.",
							   NULL, &pgcloud_s3_endpoint, "", PGC_SUSET, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("pgcloud.s3_region", "S3 region signed for (SigV4 scope).",
							   NULL, &pgcloud_s3_region, "us-east-1", PGC_SUSET, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("pgcloud.s3_bucket", "S3 bucket holding every namespace's objects.",
							   NULL, &pgcloud_s3_bucket, "", PGC_SUSET, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("pgcloud.s3_access_key_id", "S3 access key id.",
							   NULL, &pgcloud_s3_access_key_id, "", PGC_SUSET, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("pgcloud.s3_secret_access_key", "S3 secret access key.",
							   NULL, &pgcloud_s3_secret_access_key, "", PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL, NULL, NULL, NULL);
	DefineCustomBoolVariable("pgcloud.s3_path_style",
							 "Path-style S3 URLs (endpoint/bucket/key) instead of virtual-hosted (bucket.endpoint/key).",
							 NULL, &pgcloud_s3_path_style, true, PGC_SUSET, GUC_SUPERUSER_ONLY,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("pgcloud.correlation_id",
							   "Correlation id of the current request (set by pgcloud.correlation_id()).",
							   NULL, &pgcloud_correlation_id, "", PGC_USERSET,
							   GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, NULL, NULL, NULL);

	/* PGC_POSTMASTER settings can only be defined while preloading. */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("pgcloud.rate_limit_max_principals",
								"Number of principals the rate limiter tracks in shared memory.",
								NULL, &pgcloud_rate_limit_max_principals, 10000, 16, 10000000,
								PGC_POSTMASTER, 0, NULL, NULL, NULL);

	MarkGUCPrefixReserved("pgcloud");
}
