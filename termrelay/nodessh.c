/*
 * nodessh.c — the one SSH client path to nodes, used by the terminal relay
 * and the app runtime agent: a fresh Ed25519 key per connection, an OpenSSH
 * user certificate for it from releases (api.service_mint_access, valid for
 * minutes, for that allocation only), the node's host key checked against a
 * known_hosts file, and public-key login with the certificate.
 */
#define _GNU_SOURCE
#include "common.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int
node_ssh_connect(Db *db, const NodeTarget *t, NodeSsh *ns, char *err, size_t errlen)
{
	ssh_key		pub = NULL,
				cert = NULL;
	char	   *b64 = NULL;
	char		publine[512];
	const char *params[4];
	char		code[80],
				msg[512];
	PGresult   *res;
	const char *certline;
	const char *sp;
	char	   *certb64 = NULL;
	long		timeout = t->timeout_seconds > 0 ? t->timeout_seconds : 10;
	int			port = t->port;
	int			rc;

	memset(ns, 0, sizeof(*ns));
	if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &ns->key) != SSH_OK
		|| ssh_pki_export_privkey_to_pubkey(ns->key, &pub) != SSH_OK
		|| ssh_pki_export_pubkey_base64(pub, &b64) != SSH_OK)
	{
		snprintf(err, errlen, "key_generation_failed");
		goto fail;
	}
	snprintf(publine, sizeof(publine), "ssh-ed25519 %s", b64);
	params[0] = t->allocation_id;
	params[1] = publine;
	params[2] = t->on_behalf_of;
	params[3] = t->purpose;
	res = db_call(db, "SELECT r ->> 'certificate' FROM (SELECT api.service_mint_access($1::uuid, $2, $3::uuid, $4) AS r) x",
				  4, params, code, sizeof(code), msg, sizeof(msg));
	if (!res)
	{
		log_msg("warning", "certificate for allocation %s refused: %s", t->allocation_id, msg);
		snprintf(err, errlen, "%s", code);
		goto fail;
	}
	certline = PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) ? PQgetvalue(res, 0, 0) : "";
	sp = strchr(certline, ' ');
	if (strncmp(certline, "ssh-ed25519-cert-v01@openssh.com ", 33) != 0 || !sp)
	{
		PQclear(res);
		snprintf(err, errlen, "certificate_invalid");
		goto fail;
	}
	certb64 = strndup(sp + 1, strcspn(sp + 1, " \n"));
	PQclear(res);
	if (ssh_pki_import_cert_base64(certb64, SSH_KEYTYPE_ED25519_CERT01, &cert) != SSH_OK
		|| ssh_pki_copy_cert_to_privkey(cert, ns->key) != SSH_OK)
	{
		snprintf(err, errlen, "certificate_invalid");
		goto fail;
	}

	ns->session = ssh_new();
	if (!ns->session)
	{
		snprintf(err, errlen, "ssh_error");
		goto fail;
	}
	{
		int			no = 0;

		ssh_options_set(ns->session, SSH_OPTIONS_PROCESS_CONFIG, &no);
	}
	ssh_options_set(ns->session, SSH_OPTIONS_HOST, t->address);
	ssh_options_set(ns->session, SSH_OPTIONS_PORT, &port);
	ssh_options_set(ns->session, SSH_OPTIONS_USER, t->user);
	ssh_options_set(ns->session, SSH_OPTIONS_TIMEOUT, &timeout);
	ssh_options_set(ns->session, SSH_OPTIONS_KNOWNHOSTS, t->known_hosts ? t->known_hosts : "/dev/null");
	ssh_options_set(ns->session, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null");
	if (ssh_connect(ns->session) != SSH_OK)
	{
		log_msg("warning", "cannot reach node %s port %d: %s", t->address, port, ssh_get_error(ns->session));
		snprintf(err, errlen, "node_unreachable");
		goto fail;
	}
	if (t->known_hosts)
	{
		enum ssh_known_hosts_e k = ssh_session_is_known_server(ns->session);

		if (k != SSH_KNOWN_HOSTS_OK)
		{
			log_msg("warning", "node %s port %d: host key not in %s (state %d): refusing", t->address, port,
					t->known_hosts, (int) k);
			snprintf(err, errlen, "node_host_key_unknown");
			goto fail;
		}
	}
	rc = ssh_userauth_publickey(ns->session, NULL, ns->key);
	if (rc != SSH_AUTH_SUCCESS)
	{
		log_msg("warning", "node %s refused the certificate for %s: %s", t->address, t->user,
				ssh_get_error(ns->session));
		snprintf(err, errlen, "node_login_refused");
		goto fail;
	}
	ssh_key_free(pub);
	ssh_key_free(cert);
	ssh_string_free_char(b64);
	free(certb64);
	return 0;

fail:
	if (pub)
		ssh_key_free(pub);
	if (cert)
		ssh_key_free(cert);
	if (b64)
		ssh_string_free_char(b64);
	free(certb64);
	node_ssh_close(ns);
	return -1;
}

void
node_ssh_close(NodeSsh *ns)
{
	if (ns->session)
	{
		if (ssh_is_connected(ns->session))
			ssh_disconnect(ns->session);
		ssh_free(ns->session);
	}
	if (ns->key)
		ssh_key_free(ns->key);
	ns->session = NULL;
	ns->key = NULL;
}

int
node_ssh_exec(NodeSsh *ns, const char *cmd, char *out, size_t outlen, int timeout_seconds)
{
	ssh_channel ch = ssh_channel_new(ns->session);
	size_t		used = 0;
	time_t		deadline = time(NULL) + timeout_seconds;
	int			status;

	if (out && outlen)
		out[0] = '\0';
	if (!ch)
		return -1;
	if (ssh_channel_open_session(ch) != SSH_OK || ssh_channel_request_exec(ch, cmd) != SSH_OK)
	{
		ssh_channel_free(ch);
		return -1;
	}
	while (!ssh_channel_is_eof(ch) && time(NULL) < deadline)
	{
		char		buf[4096];
		int			n = ssh_channel_read_timeout(ch, buf, sizeof(buf), 0, 500);

		if (n == SSH_ERROR)
			break;
		if (n > 0 && out && used + 1 < outlen)
		{
			size_t		c = (size_t) n < outlen - 1 - used ? (size_t) n : outlen - 1 - used;

			memcpy(out + used, buf, c);
			used += c;
			out[used] = '\0';
		}
		/* drain stderr so the command never blocks on it */
		while (ssh_channel_read_nonblocking(ch, buf, sizeof(buf), 1) > 0)
			;
	}
	ssh_channel_send_eof(ch);
	status = ssh_channel_get_exit_status(ch);
	ssh_channel_close(ch);
	ssh_channel_free(ch);
	return status;
}

int
node_ssh_port_open(NodeSsh *ns, int port)
{
	ssh_channel ch = ssh_channel_new(ns->session);
	int			ok;

	if (!ch)
		return 0;
	ok = ssh_channel_open_forward(ch, "127.0.0.1", port, "127.0.0.1", 0) == SSH_OK;
	if (ok)
		ssh_channel_close(ch);
	ssh_channel_free(ch);
	return ok;
}
