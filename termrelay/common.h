/*
 * common.h — shared by the terminal relay (pgcloud-termrelay) and the app
 * runtime agent (pgcloud-appagent): configuration, scrubbed logging, the
 * database as a service account, and the one SSH client path to nodes.
 */
#ifndef TERMRELAY_COMMON_H
#define TERMRELAY_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>
#include <libssh/libssh.h>

#define CFG_MAX 64

typedef struct Config
{
	int			n;
	char	   *keys[CFG_MAX];
	char	   *values[CFG_MAX];
} Config;

int			config_load(Config *cfg, const char *path);
const char *config_get(const Config *cfg, const char *key, const char *dflt);
long		config_int(const Config *cfg, const char *key, long dflt, long min, long max);

/* Logging: every line passes through the platform's scrubber (src/core/sanitize.c). */
void		log_init(const char *program);
void		log_msg(const char *level, const char *fmt,...) __attribute__((format(printf, 2, 3)));

/* The database, as a service account (pgcloud_service + claims). Thread-safe. */
typedef struct Db Db;
Db		   *db_open(const char *conninfo, const char *claims_json);
void		db_close(Db *db);

/*
 * Runs one statement as the service inside its own transaction. On success
 * returns the result (caller PQclear()s); on failure returns NULL and writes
 * the catalogued error code (or "db_error") to code and a scrubbed message to msg.
 */
PGresult   *db_call(Db *db, const char *sql, int nparams, const char *const *params,
					char *code, size_t codelen, char *msg, size_t msglen);

/* JSON string escaping for small hand-built documents. */
void		json_escape(char *out, size_t outlen, const char *in);

/* The SSH client path: ephemeral key, certificate from releases, login. */
typedef struct NodeSsh
{
	ssh_session session;
	ssh_key		key;
} NodeSsh;

typedef struct NodeTarget
{
	const char *address;		/* host or IP */
	int			port;
	const char *user;			/* POSIX user on the node */
	const char *allocation_id;
	const char *on_behalf_of;	/* user uuid or NULL */
	const char *purpose;		/* terminal, appruntime */
	const char *known_hosts;	/* file, or NULL when host_key_check = no */
	int			timeout_seconds;
} NodeTarget;

/* Returns 0 and fills ns, or -1 with a reason (an error code word) in err. */
int			node_ssh_connect(Db *db, const NodeTarget *t, NodeSsh *ns, char *err, size_t errlen);
void		node_ssh_close(NodeSsh *ns);

/* Runs a command, collects up to outlen-1 bytes of stdout; returns the exit status or -1. */
int			node_ssh_exec(NodeSsh *ns, const char *cmd, char *out, size_t outlen, int timeout_seconds);

/* Whether a TCP port on the node's loopback answers (a direct-tcpip channel opens). */
int			node_ssh_port_open(NodeSsh *ns, int port);

#endif
