/*
 * nats_link.c — see nats_link.h. nats.c runs its own threads: nothing here
 * is called from them, and nothing called from them touches PostgreSQL.
 */
#include "workers.h"

#include "common/pg_prng.h"

#include "nats_link.h"

bool
PgcloudNatsMode(void)
{
	return pgcloud_nats_url != NULL && pgcloud_nats_url[0] != '\0';
}

void
NatsLinkClose(NatsLink *link)
{
	if (link->js)
		jsCtx_Destroy(link->js);
	link->js = NULL;
	if (link->conn)
	{
		natsConnection_Close(link->conn);
		natsConnection_Destroy(link->conn);
	}
	link->conn = NULL;
}

void
NatsLinkFailed(NatsLink *link, const char *what, natsStatus s)
{
	if (link->failures == 0)
		ereport(WARNING,
				errmsg("pgcloud %s: %s failed: %s", PgcloudWorkerKindName(PgcloudMyKind), what,
					   natsStatus_GetText(s)),
				errdetail("Events stay in the outbox; retrying with backoff."));
	PgcloudWorkerNoteError(psprintf("%s: %s", what, natsStatus_GetText(s)));
	link->failures++;
	NatsLinkClose(link);
}

long
NatsLinkBackoffMs(NatsLink *link)
{
	long		base = 100L << Min(link->failures, 8);	/* 100 ms .. 25.6 s */

	return Min(base, 30000L) / 2 + (long) (pg_prng_double(&pg_global_prng_state) * Min(base, 30000L) / 2);
}

static natsStatus
ensure_stream(jsCtx *js)
{
	jsStreamConfig cfg;
	jsStreamInfo *si = NULL;
	jsErrCode	jerr = 0;
	const char *subjects[1] = {PGCLOUD_SUBJECT_PREFIX ">"};
	natsStatus	s;

	jsStreamConfig_Init(&cfg);
	cfg.Name = PGCLOUD_STREAM;
	cfg.Subjects = subjects;
	cfg.SubjectsLen = 1;
	cfg.Storage = js_FileStorage;
	cfg.Retention = js_LimitsPolicy;
	cfg.Duplicates = (int64_t) 120 * 1000 * 1000 * 1000;	/* ns: the Nats-Msg-Id window */
	s = js_GetStreamInfo(&si, js, PGCLOUD_STREAM, NULL, &jerr);
	if (s == NATS_OK)
	{
		jsStreamInfo_Destroy(si);
		return js_UpdateStream(NULL, js, &cfg, NULL, &jerr);
	}
	if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr)
		return js_AddStream(NULL, js, &cfg, NULL, &jerr);
	return s;
}

bool
NatsLinkEnsure(NatsLink *link, jsOptions *jsopts)
{
	natsOptions *opts = NULL;
	natsStatus	s;

	if (link->conn != NULL && natsConnection_Status(link->conn) == NATS_CONN_STATUS_CONNECTED)
		return true;
	NatsLinkClose(link);

	s = natsOptions_Create(&opts);
	if (s == NATS_OK)
		s = natsOptions_SetURL(opts, pgcloud_nats_url);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(opts, 2000);
	if (s == NATS_OK)
		s = natsOptions_SetAllowReconnect(opts, false);	/* we reconnect, with backoff */
	if (s == NATS_OK && pgcloud_nats_credentials != NULL && pgcloud_nats_credentials[0] != '\0')
		s = natsOptions_SetUserCredentialsFromFiles(opts, pgcloud_nats_credentials, NULL);
	if (s == NATS_OK && pgcloud_ca_bundle != NULL && pgcloud_ca_bundle[0] != '\0')
		s = natsOptions_LoadCATrustedCertificates(opts, pgcloud_ca_bundle);
	if (s == NATS_OK)
		s = natsConnection_Connect(&link->conn, opts);
	natsOptions_Destroy(opts);
	if (s != NATS_OK)
	{
		NatsLinkFailed(link, "connect to NATS", s);
		return false;
	}
	s = natsConnection_JetStream(&link->js, link->conn, jsopts);
	if (s == NATS_OK)
		s = ensure_stream(link->js);
	if (s != NATS_OK)
	{
		NatsLinkFailed(link, "set up the JetStream stream", s);
		return false;
	}
	if (link->failures > 0)
		ereport(LOG, errmsg("pgcloud %s: connected to NATS again after %d failed attempts",
							PgcloudWorkerKindName(PgcloudMyKind), link->failures));
	link->failures = 0;
	return true;
}
