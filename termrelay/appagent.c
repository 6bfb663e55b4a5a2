/*
 * appagent.c — pgcloud's app runtime agent: starts and stops applications on
 * allocations' nodes over SSH, through the same client path as the terminal
 * relay (nodessh.c: ephemeral key + certificate from releases, purpose
 * "appruntime").
 *
 *   pgcloud-appagent <config file>
 *
 * It polls api.service_app_work() (pgcloud_service, scope apps:run) and for
 * each instance:
 *   start    runs the manifest's start command as a systemd-run --user unit
 *            where a user manager answers, else as a detached process group
 *            (setsid; pid in ~/.pgcloud/apps/<unit>.pid), and reports starting;
 *   probe    opens a direct-tcpip channel to 127.0.0.1:<port> on the node:
 *            running once it opens; failed if the process died;
 *   timeout  stops the process and reports failed;
 *   stop     runs the manifest's stop command, stops the unit / kills the
 *            process group, checks the process and port are gone, reports
 *            stopped.
 * Reports go to api.service_app_report().
 */
#define _GNU_SOURCE
#include "common.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CACHE_SIZE 64
#define CACHE_SECONDS 60

typedef struct Conn
{
	char		allocation_id[40];
	time_t		opened;
	NodeSsh		ns;
	int			used;
} Conn;

static Config cfg;
static Db  *db;
static Conn cache[CACHE_SIZE];
static volatile sig_atomic_t stopping;
static int	ssh_port;
static const char *known_hosts;

static void
on_signal(int sig)
{
	(void) sig;

	stopping = 1;
}

/* Appends s to out as one shell word in single quotes. */
static void
shq(char *out, size_t outlen, const char *s)
{
	size_t		o = strlen(out);

	if (o + 3 >= outlen)
		return;
	out[o++] = '\'';
	for (; *s && o + 6 < outlen; s++)
	{
		if (*s == '\'')
		{
			memcpy(out + o, "'\\''", 4);
			o += 4;
		}
		else
			out[o++] = *s;
	}
	out[o++] = '\'';
	out[o] = '\0';
}

static void
cat(char *out, size_t outlen, const char *s)
{
	size_t		o = strlen(out);

	snprintf(out + o, outlen - o, "%s", s);
}

static void
report(const char *instance, const char *state, const char *detail)
{
	const char *p[3] = {instance, state, detail};
	char		code[80],
				msg[512];
	PGresult   *res = db_call(db, "SELECT api.service_app_report($1::uuid, $2, $3) ->> 'applied'", 3, p,
							  code, sizeof(code), msg, sizeof(msg));

	if (!res)
	{
		log_msg("warning", "instance %s: report %s failed: %s", instance, state, msg);
		return;
	}
	log_msg("info", "instance %s: %s%s%s (applied: %s)", instance, state, detail ? " — " : "", detail ? detail : "",
			PQgetvalue(res, 0, 0));
	PQclear(res);
}

static NodeSsh *
connect_node(const char *alloc, const char *owner, const char *user, const char *address, char *err, size_t errlen)
{
	time_t		now = time(NULL);
	Conn	   *free_slot = NULL;
	NodeTarget	t;

	for (int i = 0; i < CACHE_SIZE; i++)
	{
		Conn	   *c = &cache[i];

		if (c->used && (now - c->opened > CACHE_SECONDS || !ssh_is_connected(c->ns.session)))
		{
			node_ssh_close(&c->ns);
			c->used = 0;
		}
		if (c->used && strcmp(c->allocation_id, alloc) == 0)
			return &c->ns;
		if (!c->used && !free_slot)
			free_slot = c;
	}
	if (!free_slot)
	{
		node_ssh_close(&cache[0].ns);
		cache[0].used = 0;
		free_slot = &cache[0];
	}
	t.address = config_get(&cfg, "node_address_override", address);
	t.port = ssh_port;
	t.user = user;
	t.allocation_id = alloc;
	t.on_behalf_of = owner;
	t.purpose = "appruntime";
	t.known_hosts = known_hosts;
	t.timeout_seconds = 10;
	if (node_ssh_connect(db, &t, &free_slot->ns, err, errlen) < 0)
		return NULL;
	snprintf(free_slot->allocation_id, sizeof(free_slot->allocation_id), "%s", alloc);
	free_slot->opened = now;
	free_slot->used = 1;
	return &free_slot->ns;
}

static void
drop_node(const char *alloc)
{
	for (int i = 0; i < CACHE_SIZE; i++)
		if (cache[i].used && strcmp(cache[i].allocation_id, alloc) == 0)
		{
			node_ssh_close(&cache[i].ns);
			cache[i].used = 0;
		}
}

/* "export K='v'; ..." and "--setenv=K=v ..." for the instance's environment. */
static int
env_words(const char *env_json, char *exports, size_t elen, char *setenv, size_t slen)
{
	const char *p[1] = {env_json};
	char		code[80],
				msg[512];
	PGresult   *res = db_call(db, "SELECT key, value FROM jsonb_each_text($1::jsonb) ORDER BY key", 1, p,
							  code, sizeof(code), msg, sizeof(msg));

	exports[0] = setenv[0] = '\0';
	if (!res)
		return -1;
	for (int i = 0; i < PQntuples(res); i++)
	{
		char		kv[8192];

		cat(exports, elen, "export ");
		cat(exports, elen, PQgetvalue(res, i, 0));
		cat(exports, elen, "=");
		shq(exports, elen, PQgetvalue(res, i, 1));
		cat(exports, elen, "; ");
		snprintf(kv, sizeof(kv), "%s=%s", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
		cat(setenv, slen, "--setenv=");
		shq(setenv, slen, kv);
		cat(setenv, slen, " ");
	}
	PQclear(res);
	return 0;
}

static const char *STOP_SCRIPT =
"cd \"$HOME/.pgcloud/apps\" 2>/dev/null || { echo gone; exit 0; }; "
"if [ \"$(cat U.mode 2>/dev/null)\" = systemd ]; then systemctl --user stop U >/dev/null 2>&1; "
"  if systemctl --user is-active --quiet U; then echo still-running; exit 1; fi; echo gone; exit 0; fi; "
"[ -f U.pid ] || { echo gone; exit 0; }; pid=$(cat U.pid); "
"kill -TERM -- -$pid 2>/dev/null; i=0; "
"while kill -0 -- -$pid 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; "
"kill -KILL -- -$pid 2>/dev/null; sleep 0.1; "
"if kill -0 -- -$pid 2>/dev/null; then echo still-running; exit 1; fi; rm -f U.pid; echo gone";

static void
with_unit(char *out, size_t outlen, const char *tmpl, const char *unit)
{
	size_t		o = 0;

	for (const char *s = tmpl; *s && o + 64 < outlen; s++)
	{
		if (*s == 'U' && (s[1] == '.' || s[1] == ' ' || s[1] == ';' || s[1] == '\0') && (s == tmpl || s[-1] == ' '))
			o += (size_t) snprintf(out + o, outlen - o, "%s", unit);
		else
			out[o++] = *s;
	}
	out[o] = '\0';
}

static void
act(PGresult *res, int row)
{
	const char *inst = PQgetvalue(res, row, 0);
	const char *action = PQgetvalue(res, row, 1);
	const char *alloc = PQgetvalue(res, row, 2);
	const char *owner = PQgetvalue(res, row, 3);
	const char *user = PQgetvalue(res, row, 4);
	const char *address = PQgetvalue(res, row, 5);
	const char *unit = PQgetvalue(res, row, 6);
	const char *start = PQgetvalue(res, row, 7);
	const char *stop = PQgetisnull(res, row, 8) ? NULL : PQgetvalue(res, row, 8);
	int			port = atoi(PQgetvalue(res, row, 9));
	const char *env = PQgetvalue(res, row, 10);
	char		err[80];
	NodeSsh    *ns;
	static char cmd[65536],
				exports[16384],
				setenv[16384],
				out[4096];
	int			rc;

	if (PQgetisnull(res, row, 4) || strspn(unit, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(unit))
	{
		report(inst, strcmp(action, "stop") == 0 ? "stopped" : "failed", "no POSIX login is known for the allocation's owner");
		return;
	}
	ns = connect_node(alloc, owner, user, address, err, sizeof(err));
	if (!ns)
	{
		log_msg("warning", "instance %s: cannot reach the node: %s", inst, err);
		return;					/* tried again on the next round */
	}
	if (env_words(env, exports, sizeof(exports), setenv, sizeof(setenv)) < 0)
		return;

	if (strcmp(action, "start") == 0)
	{
		snprintf(cmd, sizeof(cmd), "set -e; d=\"$HOME/.pgcloud/apps\"; mkdir -p \"$d\"; cd \"$d\"; %s"
				 "if command -v systemd-run >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1; then "
				 "systemd-run --user --quiet --collect --unit=%s %s/bin/sh -c ", exports, unit, setenv);
		shq(cmd, sizeof(cmd), start);
		cat(cmd, sizeof(cmd), "; echo systemd > ");
		cat(cmd, sizeof(cmd), unit);
		cat(cmd, sizeof(cmd), ".mode; echo systemd; else setsid /bin/sh -c ");
		shq(cmd, sizeof(cmd), start);
		snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd),
				 " > %s.log 2>&1 < /dev/null & echo $! > %s.pid; echo process > %s.mode; echo process; fi", unit, unit, unit);
		rc = node_ssh_exec(ns, cmd, out, sizeof(out), 30);
		if (rc == 0)
		{
			char		detail[128];

			snprintf(detail, sizeof(detail), "started as %s (%.*s)", unit, (int) strcspn(out, "\n"), out);
			report(inst, "starting", detail);
		}
		else
		{
			report(inst, "failed", "the start command could not be run on the node");
			drop_node(alloc);
		}
	}
	else if (strcmp(action, "probe") == 0)
	{
		if (node_ssh_port_open(ns, port))
		{
			char		detail[64];

			snprintf(detail, sizeof(detail), "port %d answers", port);
			report(inst, "running", detail);
			return;
		}
		snprintf(cmd, sizeof(cmd), "cd \"$HOME/.pgcloud/apps\" && if [ \"$(cat %s.mode 2>/dev/null)\" = systemd ]; then "
				 "systemctl --user is-active --quiet %s; else kill -0 -- -$(cat %s.pid) 2>/dev/null; fi && echo alive || "
				 "{ echo dead; tail -c 400 %s.log 2>/dev/null; }", unit, unit, unit, unit);
		rc = node_ssh_exec(ns, cmd, out, sizeof(out), 15);
		if (strncmp(out, "dead", 4) == 0)
			report(inst, "failed", out);
	}
	else if (strcmp(action, "stop") == 0 || strcmp(action, "timeout") == 0)
	{
		cmd[0] = '\0';
		if (stop && strcmp(action, "stop") == 0)
		{
			snprintf(cmd, sizeof(cmd), "cd \"$HOME/.pgcloud/apps\" 2>/dev/null; (%s/bin/sh -c ", exports);
			shq(cmd, sizeof(cmd), stop);
			cat(cmd, sizeof(cmd), ") >/dev/null 2>&1 </dev/null || true; ");
		}
		with_unit(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), STOP_SCRIPT, unit);
		rc = node_ssh_exec(ns, cmd, out, sizeof(out), 30);
		if (rc != 0 || strncmp(out, "gone", 4) != 0)
		{
			report(inst, "failed", "the process did not stop");
			return;
		}
		if (node_ssh_port_open(ns, port))
		{
			report(inst, "failed", "the process stopped but its port still answers");
			return;
		}
		if (strcmp(action, "timeout") == 0)
		{
			char		detail[96];

			snprintf(detail, sizeof(detail), "port %d did not answer in time; the process was stopped", port);
			report(inst, "failed", detail);
		}
		else
			report(inst, "stopped", "process and port gone");
	}
}

int
main(int argc, char **argv)
{
	char		claims[1024],
				esc_name[256],
				esc_sub[128];
	long		poll_ms;

	log_init("pgcloud-appagent");
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
	ssh_init();
	ssh_port = (int) config_int(&cfg, "ssh_port", 22, 1, 65535);
	known_hosts = config_get(&cfg, "known_hosts", NULL);
	poll_ms = config_int(&cfg, "poll_ms", 1000, 50, 60000);
	if (!known_hosts && strcmp(config_get(&cfg, "host_key_check", "yes"), "no") != 0)
	{
		log_msg("error", "set known_hosts (the nodes' host keys), or host_key_check = no");
		return 1;
	}
	if (!config_get(&cfg, "conninfo", NULL) || !config_get(&cfg, "service_account", NULL))
	{
		log_msg("error", "conninfo and service_account are required");
		return 1;
	}
	json_escape(esc_name, sizeof(esc_name), config_get(&cfg, "agent_name", "appagent"));
	json_escape(esc_sub, sizeof(esc_sub), config_get(&cfg, "service_account", ""));
	snprintf(claims, sizeof(claims),
			 "{\"role\":\"pgcloud_service\",\"sub\":\"%s\",\"agent\":\"%s\",\"scopes\":\"apps:run access:mint\"}",
			 esc_sub, esc_name);
	db = db_open(config_get(&cfg, "conninfo", ""), claims);
	if (!db)
		return 1;
	log_msg("info", "polling every %ld ms", poll_ms);
	while (!stopping)
	{
		char		code[80],
					msg[512];
		PGresult   *res = db_call(db,
								  "SELECT e ->> 'instance_id', e ->> 'action', e ->> 'allocation_id', e ->> 'owner_id', "
								  "e ->> 'posix_username', e ->> 'address', e ->> 'unit', e ->> 'start', e ->> 'stop', "
								  "e ->> 'port', e -> 'env' FROM jsonb_array_elements(api.service_app_work()) e",
								  0, NULL, code, sizeof(code), msg, sizeof(msg));

		if (!res)
			log_msg("warning", "cannot fetch work: %s", msg);
		else
		{
			for (int i = 0; i < PQntuples(res) && !stopping; i++)
				act(res, i);
			PQclear(res);
		}
		usleep((useconds_t) poll_ms * 1000);
	}
	for (int i = 0; i < CACHE_SIZE; i++)
		if (cache[i].used)
			node_ssh_close(&cache[i].ns);
	log_msg("info", "stopping");
	return 0;
}
