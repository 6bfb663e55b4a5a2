/*
 * remote.c — the databases service's hands on a customer's target
 * PostgreSQL server, and the credential primitives it needs.
 *
 *   databases.remote_exec(host text, port integer, admin_user text, admin_password text,
 *                         dbname text, statements text[], timeout_ms integer) RETURNS text
 *       connects with libpq (keyword parameters, never a connection string
 *       built from user input), runs each statement in order on one
 *       connection and returns the first column of the first row of the
 *       last one (NULL when it returned no rows). Waits on the socket
 *       through WaitLatchOrSocket, so a cancel, SIGTERM or the postmaster's
 *       death interrupts it, and the connection is closed on every path.
 *       A remote error is raised with the remote SQLSTATE; the message names
 *       the server, never the password.
 *   databases.scram_secret(password text) RETURNS text
 *       the SCRAM-SHA-256 verifier of a password (salted with the server's
 *       CSPRNG): what is sent to the target, so the password itself never
 *       reaches another server, its log or pg_stat_activity.
 *   databases.random_token(nbytes integer) RETURNS text
 *       nbytes from pg_strong_random() in unpadded base64url.
 *   databases.random_hex(nbytes integer) RETURNS text
 *       nbytes from pg_strong_random() in lower-case hex.
 */
#include "pgcloud.h"

#include "base64.h"
#include "libpq-fe.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/wait_event.h"

PG_FUNCTION_INFO_V1(pgcloud_databases_remote_exec);
PG_FUNCTION_INFO_V1(pgcloud_databases_scram_secret);
PG_FUNCTION_INFO_V1(pgcloud_databases_random_token);
PG_FUNCTION_INFO_V1(pgcloud_databases_random_hex);

/*
 * From the server's libpq/scram.h, which pulls in libpq-be.h and with it
 * GSSAPI headers a build need not have.
 */
extern char *pg_be_scram_build_secret(const char *password);

#define REMOTE_MAX_STATEMENTS 64
#define REMOTE_MAX_TOKEN_BYTES 256

typedef struct RemoteError
{
	int			sqlstate;
	char	   *message;
} RemoteError;

static long
ms_left(TimestampTz deadline)
{
	long		secs;
	int			usecs;

	if (GetCurrentTimestamp() >= deadline)
		return 0;
	TimestampDifference(GetCurrentTimestamp(), deadline, &secs, &usecs);
	return secs * 1000L + usecs / 1000 + 1;
}

/* Waits until the socket is ready; false on timeout. Interruptible. */
static bool
wait_socket(PGconn *conn, int events, TimestampTz deadline)
{
	long		left = ms_left(deadline);
	int			rc;

	if (left <= 0)
		return false;
	rc = WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH | events,
						   PQsocket(conn), left, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return true;
}

static char *
trimmed(const char *s)
{
	char	   *r = pstrdup(s ? s : "");
	int			n = strlen(r);

	while (n > 0 && (r[n - 1] == '\n' || r[n - 1] == ' '))
		r[--n] = '\0';
	return r;
}

/* Remote NOTICEs (e.g. from DROP ... IF EXISTS) go nowhere, not to our log. */
static void
discard_notice(void *arg, const char *message)
{
	(void) arg;
	(void) message;
}

/* Connects; on failure fills err and returns NULL. */
static PGconn *
remote_connect(const char *host, int port, const char *user, const char *password,
			   const char *dbname, int timeout_ms, TimestampTz deadline, RemoteError *err)
{
	const char *keys[10];
	const char *vals[10];
	char		portbuf[16];
	char		timeoutbuf[16];
	char	   *options;
	PGconn	   *conn;
	int			i = 0;

	snprintf(portbuf, sizeof(portbuf), "%d", port);
	snprintf(timeoutbuf, sizeof(timeoutbuf), "%d", Max(1, (timeout_ms + 999) / 1000));
	options = psprintf("-c statement_timeout=%d -c lock_timeout=%d", timeout_ms, timeout_ms);
	keys[i] = "host"; vals[i++] = host;
	keys[i] = "port"; vals[i++] = portbuf;
	keys[i] = "user"; vals[i++] = user;
	keys[i] = "password"; vals[i++] = password;
	keys[i] = "dbname"; vals[i++] = dbname;
	keys[i] = "connect_timeout"; vals[i++] = timeoutbuf;
	keys[i] = "application_name"; vals[i++] = "pgcloud databases";
	keys[i] = "options"; vals[i++] = options;
	keys[i] = "client_encoding"; vals[i++] = "UTF8";
	keys[i] = NULL; vals[i] = NULL;

	conn = PQconnectStartParams(keys, vals, false);
	if (conn == NULL)
	{
		err->sqlstate = ERRCODE_OUT_OF_MEMORY;
		err->message = pstrdup("out of memory");
		return NULL;
	}
	for (;;)
	{
		PostgresPollingStatusType st = PQconnectPoll(conn);

		if (st == PGRES_POLLING_OK)
			break;
		if (st == PGRES_POLLING_FAILED || PQsocket(conn) < 0)
		{
			err->sqlstate = ERRCODE_CONNECTION_FAILURE;
			err->message = trimmed(PQerrorMessage(conn));
			PQfinish(conn);
			return NULL;
		}
		if (!wait_socket(conn, st == PGRES_POLLING_READING ? WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE, deadline))
		{
			err->sqlstate = ERRCODE_CONNECTION_FAILURE;
			err->message = pstrdup("timeout expired while connecting");
			PQfinish(conn);
			return NULL;
		}
	}
	PQsetNoticeProcessor(conn, discard_notice, NULL);
	return conn;
}

/*
 * Runs one statement; returns its first value (palloc'd) or NULL, and
 * fills err on failure.
 */
static char *
remote_run(PGconn *conn, const char *sql, TimestampTz deadline, bool *failed, RemoteError *err)
{
	PGresult   *res;
	char	   *value = NULL;

	*failed = false;
	if (!PQsendQuery(conn, sql))
	{
		*failed = true;
		err->sqlstate = ERRCODE_CONNECTION_FAILURE;
		err->message = trimmed(PQerrorMessage(conn));
		return NULL;
	}
	for (;;)
	{
		while (PQisBusy(conn))
		{
			if (!wait_socket(conn, WL_SOCKET_READABLE, deadline))
			{
				PQrequestCancel(conn);
				*failed = true;
				err->sqlstate = ERRCODE_QUERY_CANCELED;
				err->message = pstrdup("timeout expired while waiting for the server");
				return NULL;
			}
			if (!PQconsumeInput(conn))
			{
				*failed = true;
				err->sqlstate = ERRCODE_CONNECTION_FAILURE;
				err->message = trimmed(PQerrorMessage(conn));
				return NULL;
			}
		}
		res = PQgetResult(conn);
		if (res == NULL)
			break;
		switch (PQresultStatus(res))
		{
			case PGRES_COMMAND_OK:
			case PGRES_EMPTY_QUERY:
				break;
			case PGRES_TUPLES_OK:
				if (PQntuples(res) > 0 && PQnfields(res) > 0 && !PQgetisnull(res, 0, 0))
					value = pstrdup(PQgetvalue(res, 0, 0));
				break;
			default:
				if (!*failed)
				{
					const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
					const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

					*failed = true;
					err->sqlstate = (state && strlen(state) == 5)
						? MAKE_SQLSTATE(state[0], state[1], state[2], state[3], state[4])
						: ERRCODE_CONNECTION_FAILURE;
					err->message = trimmed(msg ? msg : PQerrorMessage(conn));
				}
				break;
		}
		PQclear(res);
	}
	return *failed ? NULL : value;
}

Datum
pgcloud_databases_remote_exec(PG_FUNCTION_ARGS)
{
	char	   *host;
	int			port;
	char	   *user;
	char	   *password;
	char	   *dbname;
	ArrayType  *stmts;
	int			timeout_ms;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	TimestampTz deadline;
	PGconn	   *volatile conn = NULL;
	RemoteError err = {0, NULL};
	bool		failed = false;
	char	   *volatile value = NULL;

	for (int i = 0; i < 7; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR, errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("databases.remote_exec() takes no NULL argument"));
	host = text_to_cstring(PG_GETARG_TEXT_PP(0));
	port = PG_GETARG_INT32(1);
	user = text_to_cstring(PG_GETARG_TEXT_PP(2));
	password = text_to_cstring(PG_GETARG_TEXT_PP(3));
	dbname = text_to_cstring(PG_GETARG_TEXT_PP(4));
	stmts = PG_GETARG_ARRAYTYPE_P(5);
	timeout_ms = PG_GETARG_INT32(6);
	if (port < 1 || port > 65535)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("port %d is out of range", port));
	if (timeout_ms < 100 || timeout_ms > 600000)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("timeout_ms must be between 100 and 600000"));
	deconstruct_array(stmts, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n > REMOTE_MAX_STATEMENTS)
		ereport(ERROR, errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED), errmsg("too many statements"));

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	pgstat_report_wait_start(PG_WAIT_EXTENSION);
	PG_TRY();
	{
		conn = remote_connect(host, port, user, password, dbname, timeout_ms, deadline, &err);
		failed = conn == NULL;
		for (int i = 0; i < n && !failed; i++)
		{
			if (nulls[i])
				continue;
			value = remote_run(conn, TextDatumGetCString(elems[i]), deadline, &failed, &err);
		}
	}
	PG_FINALLY();
	{
		pgstat_report_wait_end();
		if (conn != NULL)
			PQfinish(conn);
		/* The password leaves memory as soon as it is no longer needed. */
		explicit_bzero(password, strlen(password));
	}
	PG_END_TRY();

	if (failed)
		ereport(ERROR,
				errcode(err.sqlstate),
				errmsg("database server %s:%d: %s", host, port, err.message ? err.message : "unknown error"));
	if (value == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(value));
}

Datum
pgcloud_databases_scram_secret(PG_FUNCTION_ARGS)
{
	char	   *password = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *secret;

	if (strlen(password) < 16)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("a generated password has at least 16 characters"));
	secret = pg_be_scram_build_secret(password);
	explicit_bzero(password, strlen(password));
	PG_RETURN_TEXT_P(cstring_to_text(secret));
}

static unsigned char *
random_bytes(int32 nbytes)
{
	unsigned char *buf;

	if (nbytes < 1 || nbytes > REMOTE_MAX_TOKEN_BYTES)
		ereport(ERROR, errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("nbytes must be between 1 and %d", REMOTE_MAX_TOKEN_BYTES));
	buf = palloc(nbytes);
	if (!pg_strong_random(buf, nbytes))
		ereport(ERROR, errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not generate random bytes"));
	return buf;
}

Datum
pgcloud_databases_random_token(PG_FUNCTION_ARGS)
{
	int32		nbytes = PG_GETARG_INT32(0);
	unsigned char *buf = random_bytes(nbytes);
	size_t		cap = pgcloud_b64_encoded_len((size_t) nbytes, false) + 1;
	char	   *out = palloc(cap);

	pgcloud_b64_encode(buf, (size_t) nbytes, out, cap, PGCLOUD_B64_URL, false);
	explicit_bzero(buf, nbytes);
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

Datum
pgcloud_databases_random_hex(PG_FUNCTION_ARGS)
{
	static const char hex[] = "0123456789abcdef";
	int32		nbytes = PG_GETARG_INT32(0);
	unsigned char *buf = random_bytes(nbytes);
	char	   *out = palloc(nbytes * 2 + 1);

	for (int i = 0; i < nbytes; i++)
	{
		out[2 * i] = hex[buf[i] >> 4];
		out[2 * i + 1] = hex[buf[i] & 15];
	}
	out[nbytes * 2] = '\0';
	PG_RETURN_TEXT_P(cstring_to_text(out));
}
