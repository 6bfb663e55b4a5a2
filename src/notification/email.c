/*
 * email.c — composes the RFC 5322 message of a notification e-mail.
 *
 *   notification.compose_email(from_header text, recipient text, subject text,
 *                              body text, message_id text, sent_at timestamptz) RETURNS text
 *
 * Header fields are built here so that nothing from an event payload can
 * inject a header: the From and To fields must be printable ASCII without
 * line breaks, control characters in the subject become spaces, a non-ASCII
 * subject is sent as RFC 2047 encoded words (UTF-8, base64, folded), and the
 * body goes as 7bit text when it is plain ASCII with short lines, otherwise
 * base64 (76-character lines). Lines end in CRLF. libcurl does the SMTP
 * dot-stuffing when it sends the message.
 */
#include "pgcloud.h"

#include <time.h>

#include "lib/stringinfo.h"

#include "base64.h"

PG_FUNCTION_INFO_V1(pgcloud_notification_compose_email);

#define MAX_ADDRESS 254
#define MAX_FROM 320
#define MAX_SUBJECT_BYTES 900
#define MAX_BODY_BYTES (1024 * 1024)
#define MAX_LINE 998
#define ENCODED_WORD_BYTES 45	/* 60 base64 chars + 12 = 72 <= 75 per word */

static void
check_header_text(const char *what, const char *s, size_t maxlen)
{
	size_t		len = strlen(s);

	if (len == 0 || len > maxlen)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("e-mail %s must be 1 to %zu characters", what, maxlen));
	for (size_t i = 0; i < len; i++)
		if ((unsigned char) s[i] < 0x20 || (unsigned char) s[i] > 0x7e)
			ereport(ERROR,
					errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("e-mail %s must be printable ASCII without line breaks", what));
}

static void
check_address(const char *what, const char *s)
{
	const char *at;

	check_header_text(what, s, MAX_ADDRESS);
	at = strchr(s, '@');
	if (at == NULL || at == s || at[1] == '\0' || strchr(at + 1, '@') != NULL ||
		strpbrk(s, " <>()[],;:\"\\") != NULL)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("e-mail %s is not a plain address (local@domain)", what));
}

/* The domain of the address in a From field ("Name <a@b>" or "a@b"). */
static char *
from_domain(const char *from)
{
	const char *lt = strrchr(from, '<');
	const char *start = lt ? lt + 1 : from;
	const char *end = lt ? strchr(start, '>') : start + strlen(start);
	const char *at;

	if (end == NULL)
		end = start + strlen(start);
	at = memchr(start, '@', end - start);
	if (at == NULL || at + 1 >= end)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("e-mail sender must hold an address (local@domain)"));
	return pnstrdup(at + 1, end - at - 1);
}

static int
utf8_len(unsigned char c)
{
	if (c < 0x80)
		return 1;
	if ((c & 0xe0) == 0xc0)
		return 2;
	if ((c & 0xf0) == 0xe0)
		return 3;
	if ((c & 0xf8) == 0xf0)
		return 4;
	return 1;
}

/* Standard base64 with padding (RFC 2045), palloc'd; *n is its length. */
static char *
b64(const char *src, size_t len, size_t *n)
{
	size_t		cap = pgcloud_b64_encoded_len(len, true) + 1;
	char	   *enc = palloc(cap);

	*n = pgcloud_b64_encode((const unsigned char *) src, len, enc, cap, PGCLOUD_B64_STD, true);
	return enc;
}

static void
append_b64(StringInfo out, const char *src, int len)
{
	size_t		n;
	char	   *enc = b64(src, (size_t) len, &n);

	appendBinaryStringInfo(out, enc, (int) n);
	pfree(enc);
}

static void
append_subject(StringInfo out, const char *subject)
{
	StringInfoData clean;
	bool		ascii = true;
	size_t		len;

	/* Control characters (line breaks included) become spaces. */
	initStringInfo(&clean);
	for (const char *p = subject; *p && clean.len < MAX_SUBJECT_BYTES; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c < 0x20 || c == 0x7f)
			c = ' ';
		if (c >= 0x80)
			ascii = false;
		appendStringInfoChar(&clean, (char) c);
	}
	len = clean.len;
	appendStringInfoString(out, "Subject: ");
	if (ascii)
	{
		appendStringInfoString(out, clean.data);
		appendStringInfoString(out, "\r\n");
		return;
	}
	/* RFC 2047 encoded words, never splitting a UTF-8 sequence, folded. */
	for (size_t i = 0; i < len;)
	{
		size_t		chunk = 0;

		while (i + chunk < len)
		{
			int			l = utf8_len((unsigned char) clean.data[i + chunk]);

			if (chunk + l > ENCODED_WORD_BYTES)
				break;
			chunk += Min((size_t) l, len - i - chunk);
		}
		if (i > 0)
			appendStringInfoString(out, "\r\n ");
		appendStringInfoString(out, "=?UTF-8?B?");
		append_b64(out, clean.data + i, (int) chunk);
		appendStringInfoString(out, "?=");
		i += chunk;
	}
	appendStringInfoString(out, "\r\n");
}

/* The body with CRLF line ends; *plain tells whether it can go as 7bit. */
static char *
normalise_body(const char *body, bool *plain, int *outlen)
{
	StringInfoData b;
	int			line = 0;

	*plain = true;
	initStringInfo(&b);
	for (const char *p = body; *p; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c == '\r')
		{
			if (p[1] == '\n')
				p++;
			appendStringInfoString(&b, "\r\n");
			line = 0;
			continue;
		}
		if (c == '\n')
		{
			appendStringInfoString(&b, "\r\n");
			line = 0;
			continue;
		}
		if (c >= 0x80 || (c < 0x20 && c != '\t'))
			*plain = false;
		if (++line > MAX_LINE)
			*plain = false;
		appendStringInfoChar(&b, (char) c);
	}
	if (b.len < 2 || b.data[b.len - 2] != '\r' || b.data[b.len - 1] != '\n')
		appendStringInfoString(&b, "\r\n");
	*outlen = b.len;
	return b.data;
}

Datum
pgcloud_notification_compose_email(PG_FUNCTION_ARGS)
{
	char	   *from;
	char	   *to;
	char	   *subject;
	char	   *body;
	char	   *msgid;
	TimestampTz sent_at;
	StringInfoData out;
	char		date[64];
	pg_time_t	tt;
	struct tm	tm;
	time_t		t;
	bool		plain;
	int			blen;
	char	   *nbody;

	for (int i = 0; i < 6; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					errmsg("notification.compose_email() needs every argument"));
	from = text_to_cstring(PG_GETARG_TEXT_PP(0));
	to = text_to_cstring(PG_GETARG_TEXT_PP(1));
	subject = text_to_cstring(PG_GETARG_TEXT_PP(2));
	body = text_to_cstring(PG_GETARG_TEXT_PP(3));
	msgid = text_to_cstring(PG_GETARG_TEXT_PP(4));
	sent_at = PG_GETARG_TIMESTAMPTZ(5);

	check_header_text("sender", from, MAX_FROM);
	check_address("recipient", to);
	if (strlen(msgid) == 0 || strlen(msgid) > 128 || strspn(msgid, "abcdefghijklmnopqrstuvwxyz"
															"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != strlen(msgid))
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("e-mail message id must be 1 to 128 letters, digits, dots or dashes"));
	if (strlen(body) > MAX_BODY_BYTES)
		ereport(ERROR,
				errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				errmsg("e-mail body is longer than %d bytes", MAX_BODY_BYTES));

	tt = timestamptz_to_time_t(sent_at);
	t = (time_t) tt;
	if (gmtime_r(&t, &tm) == NULL || strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm) == 0)
		elog(ERROR, "could not format the e-mail date");

	initStringInfo(&out);
	appendStringInfo(&out, "From: %s\r\n", from);
	appendStringInfo(&out, "To: %s\r\n", to);
	append_subject(&out, subject);
	appendStringInfo(&out, "Date: %s\r\n", date);
	appendStringInfo(&out, "Message-ID: <%s@%s>\r\n", msgid, from_domain(from));
	appendStringInfoString(&out, "MIME-Version: 1.0\r\n");
	appendStringInfoString(&out, "Content-Type: text/plain; charset=utf-8\r\n");
	appendStringInfoString(&out, "Auto-Submitted: auto-generated\r\n");

	nbody = normalise_body(body, &plain, &blen);
	if (plain)
	{
		appendStringInfoString(&out, "Content-Transfer-Encoding: 7bit\r\n\r\n");
		appendBinaryStringInfo(&out, nbody, blen);
	}
	else
	{
		/* The canonical (CRLF) form is what gets encoded (RFC 2045). */
		size_t		n;
		char	   *enc = b64(nbody, (size_t) blen, &n);

		appendStringInfoString(&out, "Content-Transfer-Encoding: base64\r\n\r\n");
		for (size_t i = 0; i < n; i += 76)
		{
			appendBinaryStringInfo(&out, enc + i, (int) Min((size_t) 76, n - i));
			appendStringInfoString(&out, "\r\n");
		}
	}
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
