/*
 * keys.c — SQL face of the SSH public key parser (sshkey.c).
 *
 *   releases.parse_key(public_key text)
 *     RETURNS (key_type text, bits int, fingerprint text, public_key text, comment text)
 *
 * public_key is returned in canonical form ("<type> <base64>", no comment).
 * Rejections are catalogued errors; their details say why, naming at most
 * the key type, never echoing key material.
 */
#include "pgcloud.h"

#include "releases.h"

PG_FUNCTION_INFO_V1(pgcloud_releases_parse_key);

SshKey *
ReleasesParseKeyOrRaise(text *line)
{
	SshKey	   *key = palloc0(sizeof(SshKey));
	char		err[SSHKEY_ERR_LEN];
	size_t		len;

	if (line == NULL)
		PgcloudRaise("ssh_key_invalid", "public_key is required",
					 "Paste one line of your .pub file, e.g. ~/.ssh/id_ed25519.pub.", NULL);
	len = VARSIZE_ANY_EXHDR(line);
	/* checked before anything else so a huge argument costs nothing more */
	if (len > SSHKEY_MAX_LINE + 2)
		PgcloudRaise("ssh_key_invalid", psprintf("the key is longer than %d bytes", SSHKEY_MAX_LINE),
					 "Paste one line of your .pub file, e.g. ~/.ssh/id_ed25519.pub.", NULL);

	err[0] = '\0';
	switch (SshKeyParseLine(VARDATA_ANY(line), len, key, err, sizeof(err)))
	{
		case SSHKEY_OK:
			return key;
		case SSHKEY_UNSUPPORTED:
			PgcloudRaise("ssh_key_type_unsupported", err,
						 "Use ssh-ed25519 (ssh-keygen -t ed25519), ecdsa-sha2-nistp256/384/521 or ssh-rsa of at least 2048 bits.", NULL);
		case SSHKEY_TOO_WEAK:
			PgcloudRaise("ssh_key_too_weak", err,
						 "Generate a stronger key, e.g. ssh-keygen -t ed25519 or ssh-keygen -t rsa -b 3072.", NULL);
		case SSHKEY_OPTIONS:
			PgcloudRaise("ssh_key_options_unsupported", err,
						 "Remove the options (command=, from=, no-pty, ...) in front of the key type: access is limited by the short-lived certificate instead.", NULL);
		case SSHKEY_INVALID:
		default:
			PgcloudRaise("ssh_key_invalid", err,
						 "Paste one line of your .pub file, e.g. ~/.ssh/id_ed25519.pub.", NULL);
	}
	pg_unreachable();
}

Datum
pgcloud_releases_parse_key(PG_FUNCTION_ARGS)
{
	SshKey	   *key = ReleasesParseKeyOrRaise(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	TupleDesc	desc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	char	   *canonical = palloc(SSHKEY_MAX_LINE + 1);

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "releases.parse_key must return a record");
	desc = BlessTupleDesc(desc);
	if (SshKeyFormat(key, NULL, canonical, SSHKEY_MAX_LINE + 1) == 0)
		elog(ERROR, "could not format a parsed key");

	values[0] = CStringGetTextDatum(key->type_name);
	values[1] = Int32GetDatum(key->bits);
	values[2] = CStringGetTextDatum(key->fingerprint);
	values[3] = CStringGetTextDatum(canonical);
	if (key->comment[0] != '\0')
		values[4] = CStringGetTextDatum(key->comment);
	else
		nulls[4] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
