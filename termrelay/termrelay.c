/*
 * termrelay.c — pgcloud's terminal relay: a WebSocket server (libwebsockets)
 * that bridges a browser terminal (xterm.js) to a PTY on an allocation's node
 * over SSH (libssh).
 *
 *   pgcloud-termrelay <config file>
 *
 * The browser opens a WebSocket to /ws offering two subprotocols:
 * "pgcloud.terminal" (the one the relay answers with) and
 * "pgcloud.token.<token>" (the terminal token from api.mint_terminal_token).
 * The token is never accepted in the URL: a WebSocket request with a query
 * string is refused before anything else, and no URL is ever logged.
 *
 * Per WebSocket one session thread: redeem the token
 * (api.service_redeem_terminal_token), connect to the node through the shared
 * SSH path (nodessh.c: ephemeral key, certificate from releases), request a
 * PTY and a shell, then bridge bytes both ways. Frames from the browser: a
 * first byte '0' + input bytes, or '1' + {"cols":N,"rows":M} (resize). Frames
 * to the browser: binary = terminal output; the close frame carries a code
 * (1000 done, 4401 refused token, 4408 idle, 4410 allocation ended / session
 * revoked, 4500 node error) and the reason word.
 *
 * A heartbeat thread reports live sessions with their byte counts
 * (api.service_terminal_heartbeat) and closes those the platform wants closed
 * (allocation released, session revoked). Each session's end is recorded with
 * the bytes each way (api.service_end_terminal_session).
 */
#define _GNU_SOURCE
#include "common.h"
#include "wire.h"

#include <errno.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAME		(64 * 1024)
#define MAX_TOKEN		256
#define OUT_CHUNK		(16 * 1024)
#define MAX_PENDING_OUT	(1024 * 1024)

typedef struct Buf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} Buf;

static void
buf_append(Buf *b, const char *p, size_t n)
{
	if (b->len + n > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 4096;

		while (cap < b->len + n)
			cap *= 2;
		b->data = realloc(b->data, cap);
		if (!b->data)
			abort();
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static void
buf_consume(Buf *b, size_t n)
{
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

typedef struct Session
{
	pthread_mutex_t mu;
	int			refs;			/* the WebSocket and the thread */
	struct lws *wsi;			/* NULL once the WebSocket is gone */
	int			wake[2];		/* lws thread -> session thread */
	char		token[MAX_TOKEN];
	Buf			to_node;
	Buf			to_ws;
	int			cols,
				rows,
				resize;
	int			ws_gone;
	int			done;			/* session thread finished */
	int			close_code;
	char		close_reason[96];
	char		kill_reason[64];	/* set by the heartbeat */
	char		id[40];			/* terminal session id once redeemed */
	uint64_t	bytes_in,
				bytes_out;
	struct Session *next;
} Session;

typedef struct Pss
{
	Session    *s;
	char		token[MAX_TOKEN];
	Buf			frame;
} Pss;

static Config cfg;
static Db  *db;
static struct lws_context *context;
static pthread_mutex_t sessions_mu = PTHREAD_MUTEX_INITIALIZER;
static Session *sessions;
static int	nsessions;
static volatile sig_atomic_t stopping;
static int	idle_timeout;
static int	max_sessions;
static int	ssh_port;
static const char *known_hosts;

/* Wakes the libwebsockets loop from a session thread; never after the context is gone. */
static pthread_rwlock_t context_lock = PTHREAD_RWLOCK_INITIALIZER;
static int	context_alive;

static void
kick(void)
{
	pthread_rwlock_rdlock(&context_lock);
	if (context_alive)
		lws_cancel_service(context);
	pthread_rwlock_unlock(&context_lock);
}

static void
session_unref(Session *s)
{
	int			last;

	pthread_mutex_lock(&s->mu);
	last = --s->refs == 0;
	pthread_mutex_unlock(&s->mu);
	if (!last)
		return;
	pthread_mutex_lock(&sessions_mu);
	for (Session **p = &sessions; *p; p = &(*p)->next)
		if (*p == s)
		{
			*p = s->next;
			nsessions--;
			break;
		}
	pthread_mutex_unlock(&sessions_mu);
	close(s->wake[0]);
	close(s->wake[1]);
	free(s->to_node.data);
	free(s->to_ws.data);
	explicit_bzero(s->token, sizeof(s->token));
	pthread_mutex_destroy(&s->mu);
	free(s);
}

static void
wake(Session *s)
{
	char		c = 1;
	ssize_t		r = write(s->wake[1], &c, 1);

	(void) r;
}

/* Output for the browser (session thread); the lws thread picks it up. */
static void
to_browser(Session *s, const char *p, size_t n)
{
	pthread_mutex_lock(&s->mu);
	buf_append(&s->to_ws, p, n);
	s->bytes_out += n;
	pthread_mutex_unlock(&s->mu);
	kick();
}

static void
finish(Session *s, int code, const char *reason)
{
	pthread_mutex_lock(&s->mu);
	s->done = 1;
	s->close_code = code;
	snprintf(s->close_reason, sizeof(s->close_reason), "%s", reason);
	pthread_mutex_unlock(&s->mu);
	kick();
}

static int
refusal_code(const char *code)
{
	if (strncmp(code, "terminal_token_", 15) == 0 || strcmp(code, "session_revoked") == 0
		|| strcmp(code, "forbidden") == 0)
		return 4401;
	if (strcmp(code, "allocation_not_active") == 0)
		return 4410;
	return 4500;
}

static void
parse_resize(Session *s, const char *p, size_t n)
{
	int			cols,
				rows;

	if (wire_parse_resize(p, n, &cols, &rows) < 0)
		return;
	s->cols = cols;
	s->rows = rows;
	s->resize = 1;
}

static void *
session_thread(void *arg)
{
	Session    *s = arg;
	const char *params[1];
	char		code[80],
				msg[512];
	PGresult   *res;
	char		alloc[40],
				user[40],
				login[64],
				address[256];
	NodeSsh		ns;
	NodeTarget	t;
	char		err[80];
	ssh_channel ch = NULL;
	const char *reason = "closed";
	int			close_code = 1000;
	time_t		last = time(NULL);

	params[0] = s->token;
	res = db_call(db,
				  "SELECT r ->> 'terminal_session_id', r ->> 'allocation_id', r ->> 'user_id', r ->> 'posix_username', r ->> 'address' "
				  "FROM (SELECT api.service_redeem_terminal_token($1) AS r) x",
				  1, params, code, sizeof(code), msg, sizeof(msg));
	if (!res)
	{
		char		line[160];
		const char *ap[2] = {s->token, code};
		char		acode[80],
					amsg[256];
		PGresult   *ares;

		/* The redeem's audit rolled back with its error: record the refusal. */
		ares = db_call(db, "SELECT api.service_terminal_refused($1, $2)", 2, ap, acode, sizeof(acode), amsg, sizeof(amsg));
		if (ares)
			PQclear(ares);
		explicit_bzero(s->token, sizeof(s->token));
		log_msg("info", "terminal token refused: %s", code);
		snprintf(line, sizeof(line), "\r\n[pgcloud] terminal refused: %s\r\n", code);
		to_browser(s, line, strlen(line));
		finish(s, refusal_code(code), code);
		session_unref(s);
		return NULL;
	}
	explicit_bzero(s->token, sizeof(s->token));
	pthread_mutex_lock(&s->mu);
	snprintf(s->id, sizeof(s->id), "%s", PQgetvalue(res, 0, 0));
	pthread_mutex_unlock(&s->mu);
	snprintf(alloc, sizeof(alloc), "%s", PQgetvalue(res, 0, 1));
	snprintf(user, sizeof(user), "%s", PQgetvalue(res, 0, 2));
	snprintf(login, sizeof(login), "%s", PQgetvalue(res, 0, 3));
	snprintf(address, sizeof(address), "%s", PQgetisnull(res, 0, 4) ? "" : PQgetvalue(res, 0, 4));
	PQclear(res);
	log_msg("info", "session %s: allocation %s, login %s at %s", s->id, alloc, login, address);

	t.address = config_get(&cfg, "node_address_override", address);
	t.port = ssh_port;
	t.user = login;
	t.allocation_id = alloc;
	t.on_behalf_of = user;
	t.purpose = "terminal";
	t.known_hosts = known_hosts;
	t.timeout_seconds = 10;
	if (node_ssh_connect(db, &t, &ns, err, sizeof(err)) < 0)
	{
		char		line[160];

		snprintf(line, sizeof(line), "\r\n[pgcloud] cannot open the node: %s\r\n", err);
		to_browser(s, line, strlen(line));
		reason = err;
		close_code = refusal_code(err);
		goto end;
	}
	ch = ssh_channel_new(ns.session);
	pthread_mutex_lock(&s->mu);
	{
		int			cols = s->cols ? s->cols : 80,
					rows = s->rows ? s->rows : 24;

		s->resize = 0;
		pthread_mutex_unlock(&s->mu);
		if (!ch || ssh_channel_open_session(ch) != SSH_OK
			|| ssh_channel_request_pty_size(ch, "xterm-256color", cols, rows) != SSH_OK
			|| ssh_channel_request_shell(ch) != SSH_OK)
		{
			log_msg("warning", "session %s: no shell on the node: %s", s->id, ssh_get_error(ns.session));
			reason = "node_error";
			close_code = 4500;
			goto end;
		}
	}

	for (;;)
	{
		char		buf[OUT_CHUNK];
		int			n,
					progressed = 0;
		struct pollfd pfd[2];
		Buf			in = {0};
		int			resize = 0,
					cols = 0,
					rows = 0;

		/* node -> browser (back-pressure: wait while the browser lags) */
		pthread_mutex_lock(&s->mu);
		n = s->to_ws.len < MAX_PENDING_OUT;
		pthread_mutex_unlock(&s->mu);
		while (n && (n = ssh_channel_read_nonblocking(ch, buf, sizeof(buf), 0)) > 0)
		{
			to_browser(s, buf, (size_t) n);
			progressed = 1;
		}
		while (ssh_channel_read_nonblocking(ch, buf, sizeof(buf), 1) > 0)
			progressed = 1;		/* a PTY merges stderr; drain anything else */
		if (n == SSH_ERROR || ssh_channel_is_eof(ch) || ssh_channel_is_closed(ch))
		{
			reason = "node_closed";
			break;
		}
		/* browser -> node */
		pthread_mutex_lock(&s->mu);
		if (s->to_node.len)
		{
			in = s->to_node;
			memset(&s->to_node, 0, sizeof(s->to_node));
		}
		resize = s->resize;
		cols = s->cols;
		rows = s->rows;
		s->resize = 0;
		if (s->ws_gone)
			reason = "closed";
		else if (s->kill_reason[0])
		{
			reason = strcmp(s->kill_reason, "allocation_ended") == 0 ? "allocation_ended"
				: strcmp(s->kill_reason, "session_revoked") == 0 ? "session_revoked"
				: strcmp(s->kill_reason, "member_removed") == 0 ? "member_removed" : "not_live";
			close_code = 4410;
		}
		pthread_mutex_unlock(&s->mu);
		if (s->ws_gone || close_code == 4410)
		{
			free(in.data);
			break;
		}
		if (in.len)
		{
			if (ssh_channel_write(ch, in.data, (uint32_t) in.len) == SSH_ERROR)
			{
				free(in.data);
				reason = "node_closed";
				break;
			}
			progressed = 1;
		}
		free(in.data);
		if (resize)
			ssh_channel_change_pty_size(ch, cols, rows);
		if (progressed)
			last = time(NULL);
		else if (idle_timeout > 0 && time(NULL) - last >= idle_timeout)
		{
			const char *line = "\r\n[pgcloud] closed after inactivity\r\n";

			to_browser(s, line, strlen(line));
			reason = "idle";
			close_code = 4408;
			break;
		}
		if (progressed)
			continue;
		pfd[0].fd = ssh_get_fd(ns.session);
		pfd[0].events = POLLIN;
		pfd[1].fd = s->wake[0];
		pfd[1].events = POLLIN;
		if (poll(pfd, 2, 250) > 0 && (pfd[1].revents & POLLIN))
		{
			char		drain[64];

			while (read(s->wake[0], drain, sizeof(drain)) > 0)
				;
		}
	}

end:
	if (ch)
	{
		ssh_channel_close(ch);
		ssh_channel_free(ch);
	}
	node_ssh_close(&ns);
	{
		char		bin[24],
					bout[24];
		const char *p[4];

		pthread_mutex_lock(&s->mu);
		snprintf(bin, sizeof(bin), "%llu", (unsigned long long) s->bytes_in);
		snprintf(bout, sizeof(bout), "%llu", (unsigned long long) s->bytes_out);
		pthread_mutex_unlock(&s->mu);
		p[0] = s->id;
		p[1] = reason;
		p[2] = bin;
		p[3] = bout;
		res = db_call(db, "SELECT api.service_end_terminal_session($1::uuid, $2, $3::bigint, $4::bigint)", 4, p,
					  code, sizeof(code), msg, sizeof(msg));
		if (res)
			PQclear(res);
		else
			log_msg("warning", "session %s: could not record its end: %s", s->id, msg);
		log_msg("info", "session %s ended: %s, %s bytes in, %s bytes out", s->id, reason, bin, bout);
	}
	finish(s, close_code, reason);
	session_unref(s);
	return NULL;
}

/* The token offered as subprotocol "pgcloud.token.<token>"; 0 when found. */
static int
token_from_protocols(struct lws *wsi, char *token, size_t len)
{
	char		hdr[2048];
	int			n = lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL);
	int			rc;

	if (n <= 0 || n >= (int) sizeof(hdr) || lws_hdr_copy(wsi, hdr, sizeof(hdr), WSI_TOKEN_PROTOCOL) < 0)
		return -1;
	rc = wire_token_from_protocols(hdr, strlen(hdr), token, len);
	explicit_bzero(hdr, sizeof(hdr));
	return rc;
}

static int
has_query(struct lws *wsi)
{
	return lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS) > 0;
}

static int
callback_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	if (reason == LWS_CALLBACK_FILTER_HTTP_CONNECTION && has_query(wsi))
	{
		/* Nothing this server serves takes a query string; a token there is refused, never logged. */
		log_msg("warning", "refused an HTTP request with a query string (credentials are never accepted in a URL)");
		lws_return_http_status(wsi, HTTP_STATUS_BAD_REQUEST, "query strings are refused");
		return -1;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static int
callback_terminal(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	Pss		   *pss = user;

	switch (reason)
	{
		case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
			if (has_query(wsi))
			{
				log_msg("warning", "refused a terminal connection with a query string (a token in the URL is never accepted)");
				return 1;
			}
			if (!pss || token_from_protocols(wsi, pss->token, sizeof(pss->token)) < 0)
			{
				log_msg("warning", "refused a terminal connection without a pgcloud.token subprotocol");
				return 1;
			}
			pthread_mutex_lock(&sessions_mu);
			if (nsessions >= max_sessions)
			{
				pthread_mutex_unlock(&sessions_mu);
				log_msg("warning", "refused a terminal connection: %d sessions already", max_sessions);
				return 1;
			}
			pthread_mutex_unlock(&sessions_mu);
			return 0;

		case LWS_CALLBACK_ESTABLISHED:
			{
				Session    *s = calloc(1, sizeof(Session));
				pthread_t	th;
				pthread_attr_t attr;

				pthread_mutex_init(&s->mu, NULL);
				if (pipe2(s->wake, O_NONBLOCK | O_CLOEXEC) < 0)
				{
					free(s);
					return -1;
				}
				s->refs = 2;
				s->wsi = wsi;
				memcpy(s->token, pss->token, sizeof(s->token));
				explicit_bzero(pss->token, sizeof(pss->token));
				pss->s = s;
				pthread_mutex_lock(&sessions_mu);
				s->next = sessions;
				sessions = s;
				nsessions++;
				pthread_mutex_unlock(&sessions_mu);
				pthread_attr_init(&attr);
				pthread_attr_setstacksize(&attr, 256 * 1024);
				pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
				if (pthread_create(&th, &attr, session_thread, s) != 0)
				{
					pthread_attr_destroy(&attr);
					s->refs = 1;
					pss->s = NULL;
					s->wsi = NULL;
					session_unref(s);
					return -1;
				}
				pthread_attr_destroy(&attr);
				return 0;
			}

		case LWS_CALLBACK_RECEIVE:
			if (!pss->s)
				return -1;
			if (pss->frame.len + len > MAX_FRAME)
				return -1;
			buf_append(&pss->frame, in, len);
			if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi))
				return 0;
			if (pss->frame.len > 0)
			{
				Session    *s = pss->s;

				pthread_mutex_lock(&s->mu);
				if (pss->frame.data[0] == '0')
				{
					buf_append(&s->to_node, pss->frame.data + 1, pss->frame.len - 1);
					s->bytes_in += pss->frame.len - 1;
				}
				else if (pss->frame.data[0] == '1')
					parse_resize(s, pss->frame.data + 1, pss->frame.len - 1);
				pthread_mutex_unlock(&s->mu);
				wake(s);
			}
			pss->frame.len = 0;
			return 0;

		case LWS_CALLBACK_SERVER_WRITEABLE:
			{
				Session    *s = pss->s;
				unsigned char out[LWS_PRE + OUT_CHUNK];
				size_t		n;
				int			done;

				if (!s)
					return -1;
				pthread_mutex_lock(&s->mu);
				n = s->to_ws.len < OUT_CHUNK ? s->to_ws.len : OUT_CHUNK;
				if (n)
				{
					memcpy(out + LWS_PRE, s->to_ws.data, n);
					buf_consume(&s->to_ws, n);
				}
				done = s->done && s->to_ws.len == 0;
				pthread_mutex_unlock(&s->mu);
				if (n && lws_write(wsi, out + LWS_PRE, n, LWS_WRITE_BINARY) < (int) n)
					return -1;
				if (done)
				{
					lws_close_reason(wsi, (enum lws_close_status) s->close_code,
									 (unsigned char *) s->close_reason, strlen(s->close_reason));
					return -1;
				}
				pthread_mutex_lock(&s->mu);
				n = s->to_ws.len;
				pthread_mutex_unlock(&s->mu);
				if (n)
					lws_callback_on_writable(wsi);
				if (n < MAX_PENDING_OUT)
					wake(s);
				return 0;
			}

		case LWS_CALLBACK_CLOSED:
			free(pss->frame.data);
			pss->frame.data = NULL;
			if (pss->s)
			{
				Session    *s = pss->s;

				pthread_mutex_lock(&s->mu);
				s->ws_gone = 1;
				s->wsi = NULL;
				pthread_mutex_unlock(&s->mu);
				wake(s);
				pss->s = NULL;
				session_unref(s);
			}
			return 0;

		case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
			pthread_mutex_lock(&sessions_mu);
			for (Session *s = sessions; s; s = s->next)
			{
				pthread_mutex_lock(&s->mu);
				if (s->wsi && (s->to_ws.len || s->done))
					lws_callback_on_writable(s->wsi);
				pthread_mutex_unlock(&s->mu);
			}
			pthread_mutex_unlock(&sessions_mu);
			return 0;

		default:
			return 0;
	}
}

static struct lws_protocols protocols[] = {
	{"http", callback_http, 0, 0, 0, NULL, 0},
	{"pgcloud.terminal", callback_terminal, sizeof(Pss), MAX_FRAME, 0, NULL, 0},
	{NULL, NULL, 0, 0, 0, NULL, 0}
};

/* Headers on every HTTP response: no referrer, no framing, scripts from here only. */
static const struct lws_protocol_vhost_options hdr_nosniff = {NULL, NULL, "x-content-type-options:", "nosniff"};
static const struct lws_protocol_vhost_options hdr_referrer = {&hdr_nosniff, NULL, "referrer-policy:", "no-referrer"};
static const struct lws_protocol_vhost_options hdr_frame = {&hdr_referrer, NULL, "x-frame-options:", "DENY"};
static const struct lws_protocol_vhost_options hdr_csp = {&hdr_frame, NULL, "content-security-policy:",
	"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"};

static void *
heartbeat_thread(void *arg)
{
	long		interval_ms = config_int(&cfg, "heartbeat_ms", 1000, 100, 60000);

	(void) arg;

	while (!stopping)
	{
		char	   *json;
		size_t		cap = 64,
					used;
		const char *params[1];
		char		code[80],
					msg[512];
		PGresult   *res;

		usleep((useconds_t) interval_ms * 1000);
		pthread_mutex_lock(&sessions_mu);
		for (Session *s = sessions; s; s = s->next)
			cap += 128;
		json = malloc(cap);
		used = (size_t) snprintf(json, cap, "[");
		for (Session *s = sessions; s; s = s->next)
		{
			pthread_mutex_lock(&s->mu);
			if (s->id[0] && !s->done)
				used += (size_t) snprintf(json + used, cap - used, "%s{\"id\":\"%s\",\"bytes_in\":%llu,\"bytes_out\":%llu}",
										  used > 1 ? "," : "", s->id, (unsigned long long) s->bytes_in,
										  (unsigned long long) s->bytes_out);
			pthread_mutex_unlock(&s->mu);
		}
		pthread_mutex_unlock(&sessions_mu);
		snprintf(json + used, cap - used, "]");
		params[0] = json;
		res = db_call(db, "SELECT e ->> 'id', e ->> 'reason' FROM jsonb_array_elements((api.service_terminal_heartbeat($1::jsonb)) -> 'close') e",
					  1, params, code, sizeof(code), msg, sizeof(msg));
		free(json);
		if (!res)
		{
			log_msg("warning", "heartbeat failed: %s", msg);
			continue;
		}
		for (int i = 0; i < PQntuples(res); i++)
		{
			pthread_mutex_lock(&sessions_mu);
			for (Session *s = sessions; s; s = s->next)
			{
				pthread_mutex_lock(&s->mu);
				if (strcmp(s->id, PQgetvalue(res, i, 0)) == 0 && !s->kill_reason[0])
				{
					snprintf(s->kill_reason, sizeof(s->kill_reason), "%s", PQgetvalue(res, i, 1));
					log_msg("info", "session %s: closing (%s)", s->id, s->kill_reason);
					wake(s);
				}
				pthread_mutex_unlock(&s->mu);
			}
			pthread_mutex_unlock(&sessions_mu);
		}
		PQclear(res);
	}
	return NULL;
}

static void
on_signal(int sig)
{
	(void) sig;

	stopping = 1;
	if (context_alive)
		lws_cancel_service(context);	/* async-signal-safe: it writes to a pipe */
}

static void
lws_log(int level, const char *line)
{
	/* lws lines end in a newline; they go through the same scrubber. */
	char		tmp[1024];
	size_t		n = strcspn(line, "\n");

	if (n >= sizeof(tmp))
		n = sizeof(tmp) - 1;
	memcpy(tmp, line, n);
	tmp[n] = '\0';
	log_msg(level == LLL_ERR ? "error" : "warning", "lws: %s", tmp);
}

int
main(int argc, char **argv)
{
	struct lws_context_creation_info info;
	static struct lws_http_mount mount;
	char		claims[1024],
				esc_relay[256],
				esc_sub[128];
	const char *tls_cert,
			   *tls_key,
			   *conninfo;
	PGresult   *res;
	char		code[80],
				msg[512];
	pthread_t	hb;

	log_init("pgcloud-termrelay");
	if (argc != 2)
	{
		fprintf(stderr, "usage: %s <config file>\n", argv[0]);
		return 2;
	}
	if (config_load(&cfg, argv[1]) < 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	lws_set_log_level(LLL_ERR | LLL_WARN, lws_log);
	ssh_init();

	idle_timeout = (int) config_int(&cfg, "idle_timeout_seconds", 900, 0, 86400);
	max_sessions = (int) config_int(&cfg, "max_sessions", 1000, 1, 100000);
	ssh_port = (int) config_int(&cfg, "ssh_port", 22, 1, 65535);
	known_hosts = config_get(&cfg, "known_hosts", NULL);
	if (!known_hosts && strcmp(config_get(&cfg, "host_key_check", "yes"), "no") != 0)
	{
		log_msg("error", "set known_hosts (the nodes' host keys), or host_key_check = no");
		return 1;
	}
	conninfo = config_get(&cfg, "conninfo", NULL);
	if (!conninfo || !config_get(&cfg, "service_account", NULL))
	{
		log_msg("error", "conninfo and service_account are required");
		return 1;
	}
	json_escape(esc_relay, sizeof(esc_relay), config_get(&cfg, "relay_name", "termrelay"));
	json_escape(esc_sub, sizeof(esc_sub), config_get(&cfg, "service_account", ""));
	snprintf(claims, sizeof(claims),
			 "{\"role\":\"pgcloud_service\",\"sub\":\"%s\",\"relay\":\"%s\",\"scopes\":\"terminal:redeem access:mint\"}",
			 esc_sub, esc_relay);
	db = db_open(conninfo, claims);
	if (!db)
		return 1;
	res = db_call(db, "SELECT api.service_terminal_relay_started() ->> 'ended_sessions'", 0, NULL,
				  code, sizeof(code), msg, sizeof(msg));
	if (!res)
	{
		log_msg("error", "cannot register with the terminal service: %s", msg);
		return 1;
	}
	log_msg("info", "registered; %s sessions left live by an earlier run were ended", PQgetvalue(res, 0, 0));
	PQclear(res);

	memset(&mount, 0, sizeof(mount));
	mount.mountpoint = "/";
	mount.mountpoint_len = 1;
	mount.origin = config_get(&cfg, "static_dir", "/usr/share/pgcloud/termrelay");
	mount.def = "index.html";
	mount.origin_protocol = LWSMPRO_FILE;

	memset(&info, 0, sizeof(info));
	info.port = (int) config_int(&cfg, "port", 8443, 1, 65535);
	info.iface = config_get(&cfg, "listen", "127.0.0.1");
	info.protocols = protocols;
	info.mounts = &mount;
	info.vhost_name = "termrelay";
	info.headers = &hdr_csp;
	tls_cert = config_get(&cfg, "tls_certificate", NULL);
	tls_key = config_get(&cfg, "tls_private_key", NULL);
	if (tls_cert && tls_key)
	{
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
		info.ssl_cert_filepath = tls_cert;
		info.ssl_private_key_filepath = tls_key;
	}
	else if (strcmp(config_get(&cfg, "tls", "required"), "off") != 0)
	{
		log_msg("error", "set tls_certificate and tls_private_key (or tls = off for a loopback-only test)");
		return 1;
	}
	context = lws_create_context(&info);
	if (!context)
	{
		log_msg("error", "cannot listen on %s port %d", info.iface, info.port);
		return 1;
	}
	context_alive = 1;
	log_msg("info", "listening on %s port %d (%s)", info.iface, info.port, tls_cert ? "TLS" : "plain");
	pthread_create(&hb, NULL, heartbeat_thread, NULL);
	while (!stopping)
		if (lws_service(context, 0) < 0)
			break;
	log_msg("info", "stopping");
	pthread_rwlock_wrlock(&context_lock);
	context_alive = 0;
	pthread_rwlock_unlock(&context_lock);
	lws_context_destroy(context);	/* closes every WebSocket: the session threads end their sessions */
	for (int i = 0; i < 100; i++)
	{
		int			left;

		pthread_mutex_lock(&sessions_mu);
		left = nsessions;
		pthread_mutex_unlock(&sessions_mu);
		if (left == 0)
			break;
		usleep(100 * 1000);
	}
	return 0;
}
