/*
 * nats_link.c — see nats_link.h. nats.c runs its own threads: nothing here
 * is called from them, and nothing called from them touches PostgreSQL.
 */
#include "workers.h"

#include "commands/dbcommands.h"
#include "common/pg_prng.h"
#include "storage/fd.h"

#include <signal.h>
#include <sys/stat.h>

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
	link->limits_read_at = 0;	/* read again on the next connection */
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
	long		base = PgcloudBackoffMs(link->failures, 100L, 8, 30000L);	/* 100 ms .. 25.6 s */

	/* half of it, plus up to as much again at random */
	return base / 2 + (long) (pg_prng_double(&pg_global_prng_state) * base / 2);
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
		/*
		 * An existing stream belongs to the operator (a service's NATS user
		 * may not edit it): it is updated only when its subjects or its
		 * deduplication window are not what the relay relies on.
		 */
		bool		ok = si->Config != NULL && si->Config->Duplicates == cfg.Duplicates
			&& si->Config->SubjectsLen == 1 && strcmp(si->Config->Subjects[0], subjects[0]) == 0;

		jsStreamInfo_Destroy(si);
		return ok ? NATS_OK : js_UpdateStream(NULL, js, &cfg, NULL, &jerr);
	}
	if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr)
		return js_AddStream(NULL, js, &cfg, NULL, &jerr);
	return s;
}

/* This worker's database name (looked up once, in a transaction of its own). */
static const char *
database_name(void)
{
	static char *name = NULL;

	if (name == NULL)
	{
		bool		own = !IsTransactionState();
		MemoryContext cxt = CurrentMemoryContext;
		char	   *n;

		if (own)
			StartTransactionCommand();
		n = get_database_name(MyDatabaseId);
		name = MemoryContextStrdup(TopMemoryContext, n ? n : "");
		if (own)
			CommitTransactionCommand();
		MemoryContextSwitchTo(cxt);
	}
	return name;
}

/*
 * pgcloud.nats_credentials names a file (a "%d" in it is replaced by the
 * database name, so each service database can have its own): either a NATS
 * .creds file (JWT and seed), or one line "user:password" of a user of
 * deploy/nats/authorization.conf. The file must not be readable by others.
 */
static natsStatus
apply_credentials(natsOptions *opts, char **user)
{
	StringInfoData path;
	FILE	   *f;
	char		line[1024];
	size_t		n;
	char	   *colon;
	struct stat st;

	*user = NULL;
	if (pgcloud_nats_credentials == NULL || pgcloud_nats_credentials[0] == '\0')
		return NATS_OK;
	initStringInfo(&path);
	for (const char *p = pgcloud_nats_credentials; *p; p++)
	{
		if (p[0] == '%' && p[1] == 'd')
		{
			appendStringInfoString(&path, database_name());
			p++;
		}
		else
			appendStringInfoChar(&path, *p);
	}
	if (stat(path.data, &st) != 0 || (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
	{
		ereport(WARNING, errmsg("pgcloud: NATS credentials file \"%s\" is missing or readable by others", path.data),
				errhint("Create it with mode 0600, owned by the server's user."));
		return NATS_INVALID_ARG;
	}
	f = AllocateFile(path.data, "r");
	if (f == NULL)
		return NATS_INVALID_ARG;
	n = fread(line, 1, sizeof(line) - 1, f);
	FreeFile(f);
	line[n] = '\0';
	if (strstr(line, "-----BEGIN NATS USER JWT-----") != NULL)
		return natsOptions_SetUserCredentialsFromFiles(opts, path.data, NULL);
	line[strcspn(line, "\r\n")] = '\0';
	colon = strchr(line, ':');
	if (colon == NULL || colon == line)
		return NATS_INVALID_ARG;
	*colon = '\0';
	*user = pstrdup(line);
	return natsOptions_SetUserInfo(opts, line, colon + 1);
}

/* The user named in a nats://user:password@host URL, if any. */
static char *
url_user(const char *url)
{
	const char *start = strstr(url, "://");
	const char *at;
	size_t		len;

	if (start == NULL)
		return NULL;
	start += 3;
	at = strchr(start, '@');
	if (at == NULL)
		return NULL;
	len = strcspn(start, ":@");
	return len > 0 ? pnstrdup(start, len) : NULL;
}

/*
 * nats.c starts threads of its own (at its first use: timers, asynchronous
 * callbacks, garbage collection; per connection: reader and flusher). A
 * thread inherits the signal mask of its creator, and this process's signals
 * belong to PostgreSQL's handlers, which must run on this thread only (they
 * touch the latch, InterruptPending, timeout.c's state). So every nats.c call
 * that may start a thread runs with all signals blocked; those that arrive
 * meanwhile are delivered to this thread when the mask is restored.
 */
void
NatsLinkBlockSignals(sigset_t *saved)
{
	sigset_t	all;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, saved);
}

void
NatsLinkRestoreSignals(const sigset_t *saved)
{
	pthread_sigmask(SIG_SETMASK, saved, NULL);
}

void
NatsLinkReadLimits(NatsLink *link, long max_age_ms)
{
	jsStreamInfo *si = NULL;
	jsErrCode	jerr = 0;
	jsOptions	o;
	int64		limit;
	sigset_t	saved;
	natsStatus	s;

	if (link->js == NULL || link->conn == NULL)
		return;
	if (max_age_ms > 0 && link->limits_read_at != 0
		&& !TimestampDifferenceExceeds(link->limits_read_at, GetCurrentTimestamp(), (int) max_age_ms))
		return;
	limit = natsConnection_GetMaxPayload(link->conn);
	/* Briefly: a stream without a leader (a JetStream cluster electing) must not hold the relay up. */
	jsOptions_Init(&o);
	o.Wait = 250;
	NatsLinkBlockSignals(&saved);
	s = js_GetStreamInfo(&si, link->js, PGCLOUD_STREAM, &o, &jerr);
	NatsLinkRestoreSignals(&saved);
	if (s == NATS_OK)
	{
		if (si->Config != NULL && si->Config->MaxMsgSize > 0 && (limit <= 0 || si->Config->MaxMsgSize < limit))
			limit = si->Config->MaxMsgSize;
		jsStreamInfo_Destroy(si);
	}
	else if (link->max_msg_bytes > 0)
		return;					/* keep what was known; asked again next time */
	link->max_msg_bytes = Max(limit, 0);
	link->limits_read_at = GetCurrentTimestamp();
}

bool
NatsLinkConnected(NatsLink *link)
{
	return link->conn != NULL && natsConnection_Status(link->conn) == NATS_CONN_STATUS_CONNECTED;
}

static bool link_connect(NatsLink *link, jsOptions *jsopts);

bool
NatsLinkEnsure(NatsLink *link, jsOptions *jsopts)
{
	sigset_t	saved;
	bool		ok;

	if (NatsLinkConnected(link))
		return true;
	NatsLinkBlockSignals(&saved);
	ok = link_connect(link, jsopts);
	NatsLinkRestoreSignals(&saved);
	return ok;
}

static bool
link_connect(NatsLink *link, jsOptions *jsopts)
{
	natsOptions *opts = NULL;
	natsStatus	s;
	char	   *user = NULL;

	NatsLinkClose(link);

	s = natsOptions_Create(&opts);
	if (s == NATS_OK && strchr(pgcloud_nats_url, ',') == NULL)
		s = natsOptions_SetURL(opts, pgcloud_nats_url);
	else if (s == NATS_OK)
	{
		/*
		 * A NATS cluster: "url1,url2,...". nats.c 3.4's SetURL takes such a
		 * list but then connects to none of its tls:// servers; SetServers
		 * does (in random order, so the databases spread over the nodes).
		 */
		char	   *copy = pstrdup(pgcloud_nats_url);
		const char **servers = palloc(sizeof(char *) * (strlen(copy) / 2 + 1));
		int			i = 0;

		for (char *tok = strtok(copy, ", "); tok != NULL; tok = strtok(NULL, ", "))
			servers[i++] = tok;
		s = natsOptions_SetServers(opts, servers, i);
	}
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(opts, 2000);
	if (s == NATS_OK)
		s = natsOptions_SetAllowReconnect(opts, false);	/* we reconnect, with backoff */
	if (s == NATS_OK)
		s = apply_credentials(opts, &user);
	if (user == NULL)
		user = url_user(pgcloud_nats_url);
	/* Replies (acks, pulled messages) on an inbox only this user may read. */
	strlcpy(link->inbox_prefix, "_INBOX", sizeof(link->inbox_prefix));
	if (s == NATS_OK && user != NULL && strlen(user) < NAMEDATALEN
		&& strspn(user, "abcdefghijklmnopqrstuvwxyz0123456789_-") == strlen(user))
	{
		snprintf(link->inbox_prefix, sizeof(link->inbox_prefix), "_INBOX_%s", user);
		s = natsOptions_SetCustomInboxPrefix(opts, link->inbox_prefix);
	}
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
