/*
 * common.c — configuration, scrubbed logging, database access as a service
 * account. See common.h.
 */
#define _GNU_SOURCE
#include "common.h"

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sanitize.h"

/* ---- configuration ------------------------------------------------------ */

static char *
trim(char *s)
{
	char	   *e;

	while (*s && isspace((unsigned char) *s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char) e[-1]))
		*--e = '\0';
	return s;
}

int
config_load(Config *cfg, const char *path)
{
	FILE	   *f = fopen(path, "r");
	char		line[4096];
	int			lineno = 0;

	memset(cfg, 0, sizeof(*cfg));
	if (!f)
	{
		log_msg("error", "cannot open configuration file %s", path);
		return -1;
	}
	while (fgets(line, sizeof(line), f))
	{
		char	   *eq,
				   *k,
				   *v;

		lineno++;
		if (strlen(line) == sizeof(line) - 1 && line[sizeof(line) - 2] != '\n')
		{
			log_msg("error", "%s:%d: line too long", path, lineno);
			fclose(f);
			return -1;
		}
		k = trim(line);
		if (*k == '\0' || *k == '#')
			continue;
		eq = strchr(k, '=');
		if (!eq)
		{
			log_msg("error", "%s:%d: expected key = value", path, lineno);
			fclose(f);
			return -1;
		}
		*eq = '\0';
		v = trim(eq + 1);
		k = trim(k);
		if (cfg->n == CFG_MAX)
		{
			log_msg("error", "%s: too many settings", path);
			fclose(f);
			return -1;
		}
		cfg->keys[cfg->n] = strdup(k);
		cfg->values[cfg->n] = strdup(v);
		cfg->n++;
	}
	fclose(f);
	return 0;
}

const char *
config_get(const Config *cfg, const char *key, const char *dflt)
{
	int			i;

	for (i = cfg->n - 1; i >= 0; i--)
		if (strcmp(cfg->keys[i], key) == 0)
			return cfg->values[i][0] ? cfg->values[i] : dflt;
	return dflt;
}

long
config_int(const Config *cfg, const char *key, long dflt, long min, long max)
{
	const char *v = config_get(cfg, key, NULL);
	char	   *end;
	long		n;

	if (!v)
		return dflt;
	n = strtol(v, &end, 10);
	if (*end || n < min || n > max)
	{
		log_msg("error", "setting %s must be an integer from %ld to %ld; using %ld", key, min, max, dflt);
		return dflt;
	}
	return n;
}

/* ---- logging ------------------------------------------------------------ */

static const char *log_program = "termrelay";
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

void
log_init(const char *program)
{
	log_program = program;
}

static void *
grow(void *p, size_t n, void *arg)
{
	void	   *q = realloc(p, n);

	(void) arg;

	if (!q)
		abort();
	return q;
}

void
log_msg(const char *level, const char *fmt,...)
{
	char		raw[2048];
	char		ts[32];
	va_list		ap;
	PgcBuf		out = {NULL, 0, 0, grow, NULL};
	time_t		now = time(NULL);
	struct tm	tm;

	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	pgc_sanitize(raw, strlen(raw), &out);
	gmtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	pthread_mutex_lock(&log_mu);
	fprintf(stderr, "%s %s[%s]: %s\n", ts, log_program, level, out.data ? out.data : "");
	fflush(stderr);
	pthread_mutex_unlock(&log_mu);
	free(out.data);
}

void
json_escape(char *out, size_t outlen, const char *in)
{
	size_t		o = 0;

	for (; *in && o + 7 < outlen; in++)
	{
		unsigned char c = (unsigned char) *in;

		if (c == '"' || c == '\\')
		{
			out[o++] = '\\';
			out[o++] = (char) c;
		}
		else if (c < 0x20)
			o += snprintf(out + o, outlen - o, "\\u%04x", c);
		else
			out[o++] = (char) c;
	}
	out[o] = '\0';
}

/* ---- database ----------------------------------------------------------- */

struct Db
{
	pthread_mutex_t mu;
	PGconn	   *conn;
	char	   *conninfo;
	char	   *claims;
};

Db *
db_open(const char *conninfo, const char *claims_json)
{
	Db		   *db = calloc(1, sizeof(Db));

	pthread_mutex_init(&db->mu, NULL);
	db->conninfo = strdup(conninfo);
	db->claims = strdup(claims_json);
	db->conn = PQconnectdb(conninfo);
	if (PQstatus(db->conn) != CONNECTION_OK)
	{
		log_msg("error", "cannot connect to the database: %s", PQerrorMessage(db->conn));
		PQfinish(db->conn);
		free(db->conninfo);
		free(db->claims);
		free(db);
		return NULL;
	}
	return db;
}

void
db_close(Db *db)
{
	if (!db)
		return;
	PQfinish(db->conn);
	free(db->conninfo);
	free(db->claims);
	free(db);
}

/* The "code" of a catalogued error: the message is JSON {"code": "...", ...}. */
static void
error_code_of(const char *message, char *code, size_t codelen)
{
	const char *p = message ? strstr(message, "\"code\": \"") : NULL;
	size_t		i = 0;

	snprintf(code, codelen, "db_error");
	if (!p)
		return;
	p += 9;
	while (p[i] && p[i] != '"' && i + 1 < codelen && i < 64 && (islower((unsigned char) p[i]) || p[i] == '_' || isdigit((unsigned char) p[i])))
	{
		code[i] = p[i];
		i++;
	}
	if (p[i] == '"' && i > 0)
		code[i] = '\0';
	else
		snprintf(code, codelen, "db_error");
}

static int
exec_simple(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	PGresult   *r = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	int			ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

	PQclear(r);
	return ok ? 0 : -1;
}

PGresult *
db_call(Db *db, const char *sql, int nparams, const char *const *params,
		char *code, size_t codelen, char *msg, size_t msglen)
{
	PGresult   *res = NULL;
	const char *claims[1];
	int			attempt;

	pthread_mutex_lock(&db->mu);
	for (attempt = 0; attempt < 2; attempt++)
	{
		if (PQstatus(db->conn) != CONNECTION_OK)
			PQreset(db->conn);
		claims[0] = db->claims;
		if (exec_simple(db->conn, "BEGIN", 0, NULL) < 0)
			continue;			/* connection lost: reset and retry once */
		if (exec_simple(db->conn, "SELECT pg_catalog.set_config('request.jwt.claims', $1, true)", 1, claims) < 0
			|| exec_simple(db->conn, "SET LOCAL ROLE pgcloud_service", 0, NULL) < 0)
		{
			snprintf(code, codelen, "db_error");
			snprintf(msg, msglen, "cannot act as pgcloud_service: %s", PQerrorMessage(db->conn));
			exec_simple(db->conn, "ROLLBACK", 0, NULL);
			pthread_mutex_unlock(&db->mu);
			return NULL;
		}
		res = PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

			error_code_of(m, code, codelen);
			snprintf(msg, msglen, "%s", m ? m : PQerrorMessage(db->conn));
			PQclear(res);
			exec_simple(db->conn, "ROLLBACK", 0, NULL);
			pthread_mutex_unlock(&db->mu);
			return NULL;
		}
		if (exec_simple(db->conn, "COMMIT", 0, NULL) < 0)
		{
			snprintf(code, codelen, "db_error");
			snprintf(msg, msglen, "commit failed: %s", PQerrorMessage(db->conn));
			PQclear(res);
			pthread_mutex_unlock(&db->mu);
			return NULL;
		}
		pthread_mutex_unlock(&db->mu);
		return res;
	}
	snprintf(code, codelen, "db_unavailable");
	snprintf(msg, msglen, "%s", PQerrorMessage(db->conn));
	pthread_mutex_unlock(&db->mu);
	return NULL;
}
