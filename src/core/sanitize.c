/*
 * sanitize.c — log/text scrubber.
 *
 * Plain C99, no PostgreSQL headers: compiled into the extension (log_scrub.c)
 * and standalone into test/fuzz/fuzz_sanitize.c and sanitize_vectors.c.
 * Written in PostgreSQL style (declarations first) so it builds under PGXS's
 * -Wdeclaration-after-statement -Werror.
 *
 * Properties
 *	- never reads outside in[0..len); NUL and non-UTF-8 bytes are plain data;
 *	- linear time: every rule is tried only at its trigger byte and either does
 *	  bounded look-ahead/look-behind or consumes what it scans; scans that fail
 *	  cover disjoint stretches (see the comment on each rule);
 *	- allocates only through PgcBuf.grow;
 *	- output length <= 2 * len + 1: each replacement is paid for by the bytes
 *	  of its match plus the byte that must follow it (a value terminator, the
 *	  byte after a bearer token, the URI scheme before "://"); the shortest
 *	  cases, "secret=a," and "ab://u:p@", exactly double.  That is why a
 *	  1-byte URI password needs len(scheme) + len(user) >= 3;
 *	- idempotent: a replacement token never matches again and never makes a
 *	  neighbouring rule match (left-boundary tests see the end of a redacted
 *	  span as ']', as a second pass would);
 *	- JSON-safe: replacement tokens contain no '"' or '\', and a redacted span
 *	  never contains an unescaped '"' nor splits a backslash escape pair, so a
 *	  JSON string stays a valid JSON string.
 *
 * Rules, scanned left to right; at each position the first rule that matches
 * wins, unmatched bytes are copied.  Rules fire at a trigger byte; the e-mail
 * rule fires at '@' and looks back for its local part (never further back than
 * the end of the previous match), the URI rule fires at "://".
 *
 *	private key	"-----BEGIN <LABEL>-----" where LABEL is [A-Z0-9 ]{0,64} and
 *				contains "PRIVATE KEY", through "-----END <LABEL>-----";
 *				without END, up to end of input or the first unescaped '"'
 *				(so a JSON string is not eaten).  -> [private_key]
 *	key = value	names (case-insensitive, '_' and '-' interchangeable, any
 *				prefix allowed, so PGPASSWORD and db_password match):
 *				authorization password passwd secret client_secret api_key
 *				apikey stripe-signature x-api-key cookie set-cookie
 *				refresh_token access_token id_token; then an optional closing
 *				quote (" ' \"), blanks, a separator (= : => :=), blanks, value:
 *				  "..." or \"...\"  the inside is replaced, quotes kept;
 *				  '...' after ':'   likewise (Python reprs);
 *				  '...' after '='   replaced together with its quotes and
 *				                    anything glued to them (libpq conninfo);
 *				  ["..."] ['...']   first element's inside replaced;
 *				  unquoted, after '=' (conninfo, query string, env): up to a
 *				                    blank & ; ' , } " \ or line end;
 *				  unquoted, after ':' or '=>': up to , } " \ or line end;
 *				  unquoted, header keys (authorization cookie set-cookie
 *				                    stripe-signature, key not quoted), any
 *				                    separator: up to " \ or line end.
 *				The name and separator are kept; the value -> [redacted].
 *				An empty value, a value that already is [redacted], or an
 *				unquoted null/true/false is kept.  "Line end" is CR, LF or
 *				NUL; an unterminated quoted value also stops at CR/LF.
 *	bearer		"bearer" (case-insensitive, not preceded by [A-Za-z0-9_]), one
 *				or more blanks, token [A-Za-z0-9._~+/=-]+ -> Bearer [redacted]
 *				(Basic credentials are covered by the authorization key).
 *	URI password	scheme "://" user ":" password "@" host: the authority is
 *				read up to / ? # whitespace " \ < > ` { } | ^ [ ]; the userinfo
 *				ends at its last '@', the password starts after its first ':'.
 *				-> scheme://user:[redacted]@host.  A userinfo without
 *				password is left alone (and not taken for an e-mail).
 *	JWT			"eyJ" header (>= 10 base64url chars, not preceded by one) "."
 *				payload (>= 1) "." signature (>= 0, so "h.p." matches) -> [jwt]
 *	Stripe		sk_live_ sk_test_ rk_live_ rk_test_ whsec_ (and pgcloud's own
 *			secrets pgrt_ pgcs_ pgtt_ with base64url bodies) (not preceded by
 *				[A-Za-z0-9]) + >= 8 [A-Za-z0-9] -> [stripe_key]
 *	e-mail		local [A-Za-z0-9._%+-]+ "@" domain labels [A-Za-z0-9-]+ joined
 *				by '.', >= 2 labels, ending with a label of >= 2 letters (the
 *				longest such prefix of the domain is taken) -> [email]
 *	card		13-19 digits in groups joined by single ' ' or '-', Luhn-valid,
 *				not preceded by [A-Za-z0-9_] or "<digit>.", not followed by
 *				[A-Za-z0-9_] or ".<digit>".  From each start the longest valid
 *				chain is taken (so "2024-01-15 4111111111111111" still finds
 *				the card); a first group longer than 19 digits never matches.
 *				-> [card]
 */
#include "sanitize.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

typedef unsigned char uchar;

#define TOK_REDACTED	"[redacted]"
#define TOK_REDACTED_LEN 10

/* Which bytes can start (or, for '@' and ':', anchor) a rule. */
static const uchar trigger[256] = {
	['-'] = 1, [':'] = 1, ['@'] = 1,
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,
	['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
	/* key names: a c i p r s x; bearer: b; JWT: e; Stripe: r s w; pgcloud secrets: p */
	['a'] = 1, ['b'] = 1, ['c'] = 1, ['e'] = 1, ['i'] = 1, ['p'] = 1,
	['r'] = 1, ['s'] = 1, ['w'] = 1, ['x'] = 1,
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['I'] = 1, ['P'] = 1,
	['R'] = 1, ['S'] = 1, ['X'] = 1,
};

typedef struct Scan
{
	const uchar *in;
	size_t		len;
	size_t		floor;			/* end of the previous match: look-behind limit */
	size_t		red_end;		/* end of the last redacted span (0: none) */
} Scan;

/*
 * A match covers in[s..e): in[s..rs) and in[re..e) are kept, in[rs..re) is
 * replaced by tok.  tok == NULL: in[s..e) is kept as is (but consumed).
 */
typedef struct Match
{
	size_t		s,
				rs,
				re,
				e;
	const char *tok;
} Match;

static int
is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static int
is_alpha(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
is_alnum(int c)
{
	return is_digit(c) || is_alpha(c);
}

static int
is_word(int c)
{
	return is_alnum(c) || c == '_';
}

static int
is_b64url(int c)
{
	return is_alnum(c) || c == '_' || c == '-';
}

static int
is_local(int c)
{
	return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}

static int
is_domain(int c)
{
	return is_alnum(c) || c == '-' || c == '.';
}

static int
is_scheme(int c)
{
	return is_alnum(c) || c == '+' || c == '.' || c == '-';
}

static int
is_btok(int c)
{
	return is_alnum(c) || c == '.' || c == '_' || c == '~' || c == '+' ||
		c == '/' || c == '=' || c == '-';
}

static int
is_blank(int c)
{
	return c == ' ' || c == '\t';
}

static int
to_lower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/*
 * Bytes that end the authority part of a URI.  '[' is one (a redaction token
 * inside a failed authority must not let a second pass read further than the
 * first did), but try_uri() steps over "[redacted]@", its own output, so
 * that "user:[redacted]@host" is still a URI on a second pass and its user
 * part (kept verbatim) stays inside a match.
 */
static int
uri_term(int c)
{
	if (c <= 0x20 || c == 0x7f)
		return 1;
	switch (c)
	{
		case '/':
		case '?':
		case '#':
		case '"':
		case '\\':
		case '<':
		case '>':
		case '`':
		case '{':
		case '}':
		case '|':
		case '^':
		case '[':
		case ']':
			return 1;
		default:
			return 0;
	}
}

/* How far an unquoted key value runs. */
#define VT_EQ		0			/* key=value: stops at blanks & ; ' too */
#define VT_JSON		1			/* key: value, "key": value: stops at , } */
#define VT_LINE		2			/* header keys: to end of line */

/* Bytes that end an unquoted key value in mode vt. */
static int
value_term(int c, int vt)
{
	switch (c)
	{
		case '\0':
		case '\r':
		case '\n':
		case '"':
		case '\\':
			return 1;
		case ',':
		case '}':
			return vt != VT_LINE;
		case ' ':
		case '\t':
		case '\v':
		case '\f':
		case '&':
		case ';':
		case '\'':
			return vt == VT_EQ;
		default:
			return 0;
	}
}

/*
 * The byte at in[i] as a second pass over our output would see it: the last
 * redacted span reads as its token, which ends in ']'.
 */
static int
vch(const Scan *s, size_t i)
{
	return (i < s->red_end) ? ']' : s->in[i];
}

/* The byte k positions before p (as vch), or -1 before the start. */
static int
prevc(const Scan *s, size_t p, size_t k)
{
	return (p < k) ? -1 : vch(s, p - k);
}

static int
lit_at(const Scan *s, size_t i, const char *lit, size_t n)
{
	return n <= s->len - i && memcmp(s->in + i, lit, n) == 0;
}

static int
lit_ci_at(const Scan *s, size_t i, const char *lit, size_t n)
{
	size_t		k;

	if (n > s->len - i)
		return 0;
	for (k = 0; k < n; k++)
		if (to_lower(s->in[i + k]) != (uchar) lit[k])
			return 0;
	return 1;
}

static int
span_is(const Scan *s, size_t a, size_t b, const char *lit, size_t n)
{
	return b - a == n && memcmp(s->in + a, lit, n) == 0;
}

static int
set_red(Match *m, size_t s, size_t rs, size_t re, size_t e, const char *tok)
{
	m->s = s;
	m->rs = rs;
	m->re = re;
	m->e = e;
	m->tok = tok;
	return 1;
}

static int
set_keep(Match *m, size_t s, size_t e)
{
	return set_red(m, s, e, e, e, NULL);
}

/* ---------------------------------------------------------------- private key */

/*
 * Trigger '-'.  Look-ahead for the header is bounded (11 + 64 + 5); the END
 * search consumes what it scans.
 */
static int
try_private_key(const Scan *s, size_t i, Match *m)
{
	const uchar *in = s->in;
	size_t		len = s->len;
	size_t		ls,
				j,
				ll,
				k,
				end;
	int			found = 0;

	if (!lit_at(s, i, "-----BEGIN ", 11))
		return 0;
	ls = j = i + 11;
	while (j < len && j - ls < 64 &&
		   ((in[j] >= 'A' && in[j] <= 'Z') || is_digit(in[j]) || in[j] == ' '))
		j++;
	if (!lit_at(s, j, "-----", 5))
		return 0;
	ll = j - ls;
	for (k = ls; k + 11 <= j; k++)
		if (memcmp(in + k, "PRIVATE KEY", 11) == 0)
		{
			found = 1;
			break;
		}
	if (!found)
		return 0;

	end = len;
	k = j + 5;
	while (k < len)
	{
		uchar		c = in[k];

		if (c == '"')
		{
			end = k;
			break;
		}
		if (c == '\\' && k + 1 < len)
		{
			if (in[k + 1] == '"')
			{
				end = k;
				break;
			}
			if (in[k + 1] != '-')
			{
				k += 2;			/* keep escape pairs whole */
				continue;
			}
		}
		if (c == '-' && lit_at(s, k, "-----END ", 9) &&
			ll + 5 <= len - (k + 9) &&
			memcmp(in + k + 9, in + ls, ll) == 0 &&
			lit_at(s, k + 9 + ll, "-----", 5))
		{
			end = k + 9 + ll + 5;
			break;
		}
		k++;
	}
	return set_red(m, i, i, end, end, "[private_key]");
}

/* ---------------------------------------------------------------- key = value */

typedef struct KeyName
{
	const char *name;			/* lower case; '_' also matches '-' */
	unsigned char len;
	unsigned char header;		/* unquoted value runs to end of line */
} KeyName;

static const KeyName key_names[] = {
	{"authorization", 13, 1},
	{"password", 8, 0},
	{"passwd", 6, 0},
	{"secret", 6, 0},
	{"client_secret", 13, 0},
	{"api_key", 7, 0},
	{"apikey", 6, 0},
	{"stripe_signature", 16, 1},
	{"x_api_key", 9, 0},
	{"cookie", 6, 1},
	{"set_cookie", 10, 1},
	{"refresh_token", 13, 0},
	{"access_token", 12, 0},
	{"id_token", 8, 0},
};

static int
key_name_at(const Scan *s, size_t i, const KeyName *k)
{
	size_t		n;

	if (k->len > s->len - i)
		return 0;
	for (n = 0; n < k->len; n++)
	{
		int			c = to_lower(s->in[i + n]);
		int			want = (uchar) k->name[n];

		if (c == want || (want == '_' && c == '-'))
			continue;
		return 0;
	}
	return 1;
}

/* Body of "..." from k: index of the closing quote, line end or len. */
static size_t
scan_dquoted(const Scan *s, size_t k)
{
	while (k < s->len)
	{
		uchar		c = s->in[k];

		if (c == '"' || c == '\n' || c == '\r')
			break;
		if (c == '\\' && k + 1 < s->len && s->in[k + 1] != '\n' && s->in[k + 1] != '\r')
		{
			k += 2;
			continue;
		}
		k++;
	}
	return k;
}

/* Body of \"...\" from k: index of the closing \", a bare '"', line end or len. */
static size_t
scan_edquoted(const Scan *s, size_t k)
{
	while (k < s->len)
	{
		uchar		c = s->in[k];

		if (c == '"' || c == '\n' || c == '\r')
			break;
		if (c == '\\' && k + 1 < s->len)
		{
			if (s->in[k + 1] == '"')
				break;
			if (s->in[k + 1] != '\n' && s->in[k + 1] != '\r')
			{
				k += 2;
				continue;
			}
		}
		k++;
	}
	return k;
}

/* Body of '...' from k: index of the closing quote, a bare '"', line end or len. */
static size_t
scan_squoted(const Scan *s, size_t k)
{
	while (k < s->len)
	{
		uchar		c = s->in[k];

		if (c == '\'' || c == '"' || c == '\n' || c == '\r')
			break;
		if (c == '\\' && k + 1 < s->len && s->in[k + 1] != '\n' && s->in[k + 1] != '\r')
		{
			k += 2;
			continue;
		}
		k++;
	}
	return k;
}

/*
 * The name ended at j; parse separator and value.  Returns 0 when there is no
 * separator (bounded work plus blanks, which no other key scan revisits), else
 * a match that consumes the value.
 */
static int
key_value(const Scan *s, size_t i, size_t j, int header, Match *m)
{
	const uchar *in = s->in;
	size_t		len = s->len;
	size_t		q = j,
				v,
				a,
				b,
				e;
	int			eq;
	int			vt;
	int			quoted = 1;
	int			arr = 0;
	uchar		c;

	if (q < len && (in[q] == '"' || in[q] == '\''))
		q++;
	else if (q + 1 < len && in[q] == '\\' && in[q + 1] == '"')
		q += 2;
	else
		quoted = 0;
	while (q < len && is_blank(in[q]))
		q++;
	if (q >= len)
		return 0;
	if (in[q] == '=')
	{
		q++;
		eq = 1;
		if (q < len && in[q] == '>')
		{
			q++;
			eq = 0;
		}
	}
	else if (in[q] == ':')
	{
		q++;
		eq = 0;
		if (q < len && in[q] == '=')
			q++;
	}
	else
		return 0;
	if (header)
		vt = quoted ? VT_JSON : VT_LINE;
	else
		vt = eq ? VT_EQ : VT_JSON;
	while (q < len && is_blank(in[q]))
		q++;
	v = q;
	if (v >= len)
		return set_keep(m, i, v);

	/* ["..."] / ['...']: look at the first element */
	if (in[v] == '[')
	{
		size_t		w = v + 1;

		while (w < len && is_blank(in[w]))
			w++;
		if (w < len && (in[w] == '"' || in[w] == '\'' ||
						(in[w] == '\\' && w + 1 < len && in[w + 1] == '"')))
		{
			v = w;
			arr = 1;
		}
	}

	c = in[v];
	if (c == '"')
	{
		a = v + 1;
		b = scan_dquoted(s, a);
		e = (b < len && in[b] == '"') ? b + 1 : b;
	}
	else if (c == '\\' && v + 1 < len && in[v + 1] == '"')
	{
		a = v + 2;
		b = scan_edquoted(s, a);
		e = (b + 1 < len && in[b] == '\\' && in[b + 1] == '"') ? b + 2 : b;
	}
	else if (c == '\'' && (arr || !eq))
	{
		a = v + 1;
		b = scan_squoted(s, a);
		e = (b < len && in[b] == '\'') ? b + 1 : b;
	}
	else if (c == '\'')
	{
		/* libpq key='value': the quotes go too, and whatever sticks to them */
		a = v;
		b = scan_squoted(s, v + 1);
		if (b < len && in[b] == '\'')
		{
			b++;
			while (b < len && !value_term(in[b], vt))
				b++;
		}
		e = b;
	}
	else
	{
		a = b = v;
		while (b < len && !value_term(in[b], vt))
			b++;
		e = b;
		if (span_is(s, a, b, "null", 4) || span_is(s, a, b, "true", 4) ||
			span_is(s, a, b, "false", 5))
			return set_keep(m, i, e);
	}
	if (b == a || span_is(s, a, b, TOK_REDACTED, TOK_REDACTED_LEN))
		return set_keep(m, i, e > i ? e : i + 1);
	return set_red(m, i, a, b, e, TOK_REDACTED);
}

/* Trigger: first letter of a key name (no left boundary). */
static int
try_key(const Scan *s, size_t i, Match *m)
{
	int			c0 = to_lower(s->in[i]);
	size_t		k;

	for (k = 0; k < sizeof(key_names) / sizeof(key_names[0]); k++)
	{
		const KeyName *kn = &key_names[k];

		if ((uchar) kn->name[0] != c0 || !key_name_at(s, i, kn))
			continue;
		if (key_value(s, i, i + kn->len, kn->header, m))
			return 1;
	}
	return 0;
}

/* ---------------------------------------------------------------- bearer */

/* Trigger 'b'/'B'; blanks and token are consumed on success. */
static int
try_bearer(const Scan *s, size_t i, Match *m)
{
	const uchar *in = s->in;
	size_t		len = s->len;
	size_t		j,
				t;
	int			pv = prevc(s, i, 1);

	if (pv >= 0 && is_word(pv))
		return 0;
	if (!lit_ci_at(s, i, "bearer", 6))
		return 0;
	j = i + 6;
	if (j >= len || !is_blank(in[j]))
		return 0;
	while (j < len && is_blank(in[j]))
		j++;
	t = j;
	while (t < len && is_btok(in[t]))
		t++;
	if (t == j)
		return 0;
	return set_red(m, i, j, t, t, TOK_REDACTED);
}

/* ---------------------------------------------------------------- URI */

/*
 * Trigger ':' of "://".  Look-behind for the scheme is bounded (64); the
 * authority scan stops at the first '/', so the scans of two "://" never
 * overlap.
 */
static int
try_uri(const Scan *s, size_t i, Match *m)
{
	const uchar *in = s->in;
	size_t		len = s->len;
	size_t		k,
				a,
				at,
				col,
				slen,
				ulen,
				plen;
	int			alpha = 0;

	if (len - i < 3 || in[i + 1] != '/' || in[i + 2] != '/')
		return 0;
	k = i;
	while (k > s->floor && i - k < 64 && is_scheme(in[k - 1]))
	{
		k--;
		if (is_alpha(in[k]))
			alpha = 1;
	}
	slen = i - k;
	if (slen == 0 || !alpha)
		return 0;

	a = i + 3;
	at = SIZE_MAX;
	for (k = a; k < len; k++)
	{
		if (in[k] == '[' && lit_at(s, k, TOK_REDACTED "@", TOK_REDACTED_LEN + 1))
			k += TOK_REDACTED_LEN;
		else if (uri_term(in[k]))
			break;
		if (in[k] == '@')
			at = k;
	}
	if (at == SIZE_MAX)
		return 0;
	for (col = a; col < at && in[col] != ':'; col++)
		;
	if (col == at)
		return set_keep(m, i, at + 1);	/* user only: leave it alone */
	ulen = col - a;
	plen = at - col - 1;
	/* 10-byte token must be paid for: keeps output <= 2 * input */
	if (plen == 0 || (plen == 1 && slen + ulen < 3) ||
		span_is(s, col + 1, at, TOK_REDACTED, TOK_REDACTED_LEN))
		return set_keep(m, i, at + 1);
	return set_red(m, i, col + 1, at, at + 1, TOK_REDACTED);
}

/* ---------------------------------------------------------------- JWT */

/*
 * Trigger 'e' not preceded by a base64url byte, so a run is scanned as a
 * header only from its start; each run is scanned at most three times (as
 * header, payload, signature of different attempts).
 */
static int
try_jwt(const Scan *s, size_t i, Match *m)
{
	const uchar *in = s->in;
	size_t		len = s->len;
	size_t		k,
				t;
	int			pv = prevc(s, i, 1);

	if (pv >= 0 && is_b64url(pv))
		return 0;
	if (!lit_at(s, i, "eyJ", 3))
		return 0;
	k = i + 3;
	while (k < len && is_b64url(in[k]))
		k++;
	if (k - i < 10 || k >= len || in[k] != '.')
		return 0;
	t = ++k;
	while (k < len && is_b64url(in[k]))
		k++;
	if (k == t || k >= len || in[k] != '.')
		return 0;
	k++;
	while (k < len && is_b64url(in[k]))
		k++;
	return set_red(m, i, i, k, k, "[jwt]");
}

/* ---------------------------------------------------------------- Stripe */

static int
try_stripe(const Scan *s, size_t i, Match *m)
{
	/* Stripe keys (alphanumeric bodies) and pgcloud's own opaque secrets
	 * (refresh tokens pgrt_, client secrets pgcs_, terminal tokens pgtt_:
	 * base64url bodies). */
	static const struct
	{
		const char *prefix;
		int			b64url;
		const char *token;
	}			kinds[] = {
		{"sk_live_", 0, "[stripe_key]"}, {"sk_test_", 0, "[stripe_key]"},
		{"rk_live_", 0, "[stripe_key]"}, {"rk_test_", 0, "[stripe_key]"},
		{"whsec_", 0, "[stripe_key]"},
		{"pgrt_", 1, "[redacted]"}, {"pgcs_", 1, "[redacted]"}, {"pgtt_", 1, "[redacted]"}
	};
	size_t		p,
				k,
				t;
	int			pv = prevc(s, i, 1);

	if (pv >= 0 && is_alnum(pv))
		return 0;
	for (p = 0; p < sizeof(kinds) / sizeof(kinds[0]); p++)
	{
		size_t		n = strlen(kinds[p].prefix);

		if (!lit_at(s, i, kinds[p].prefix, n))
			continue;
		k = t = i + n;
		while (t < s->len && (is_alnum(s->in[t]) ||
							  (kinds[p].b64url && (s->in[t] == '-' || s->in[t] == '_'))))
			t++;
		if (t - k < 8)
			return 0;
		return set_red(m, i, i, t, t, kinds[p].token);
	}
	return 0;
}

/* ---------------------------------------------------------------- e-mail */

/*
 * Trigger '@'.  The local part is looked for backwards (down to the end of
 * the previous match); neither the local part nor the domain contains '@',
 * so the scans of different '@' are disjoint.
 */
static int
try_email(const Scan *s, size_t i, Match *m)
{
	const uchar *in = s->in;
	size_t		len = s->len;
	size_t		k,
				t,
				pos,
				best = 0;
	int			nlabels = 0;

	k = i;
	while (k > s->floor && is_local(in[k - 1]))
		k--;
	if (k == i)
		return 0;

	/*
	 * The domain run stops before "-----" so that a PEM header glued to it
	 * cannot turn a label into a TLD on a second pass.
	 */
	t = i + 1;
	while (t < len && is_domain(in[t]))
	{
		if (in[t] == '-' && lit_at(s, t, "-----", 5))
			break;
		t++;
	}
	pos = i + 1;
	while (pos < t)
	{
		size_t		ls = pos;
		int			alpha = 1;

		while (pos < t && in[pos] != '.')
		{
			if (!is_alpha(in[pos]))
				alpha = 0;
			pos++;
		}
		if (pos == ls)
			break;
		nlabels++;
		if (nlabels >= 2 && alpha && pos - ls >= 2)
			best = pos;
		if (pos < t)
			pos++;				/* the dot */
	}
	if (!best)
		return 0;
	return set_red(m, k, k, best, best, "[email]");
}

/* ---------------------------------------------------------------- card */

static int
luhn_ok(const uchar *d, int n)
{
	int			sum = 0,
				dbl = 0,
				k;

	for (k = n - 1; k >= 0; k--)
	{
		int			x = d[k];

		if (dbl)
		{
			x *= 2;
			if (x > 9)
				x -= 9;
		}
		sum += x;
		dbl = !dbl;
	}
	return sum % 10 == 0;
}

static int
card_end_ok(const Scan *s, size_t p)
{
	if (p >= s->len)
		return 1;
	if (is_word(s->in[p]))
		return 0;
	if (s->in[p] == '.' && p + 1 < s->len && is_digit(s->in[p + 1]))
		return 0;
	return 1;
}

/* Trigger: a digit at a left boundary.  Look-ahead <= 19 digits + 18 separators. */
static int
try_card(const Scan *s, size_t i, Match *m)
{
	const uchar *in = s->in;
	size_t		len = s->len;
	size_t		pos = i,
				best = 0;
	uchar		d[19];
	int			nd = 0;
	int			pv = prevc(s, i, 1);

	if (pv >= 0)
	{
		if (is_word(pv))
			return 0;
		if (pv == '.')
		{
			int			pv2 = prevc(s, i, 2);

			if (pv2 >= 0 && is_digit(pv2))
				return 0;
		}
	}
	for (;;)
	{
		while (pos < len && is_digit(in[pos]))
		{
			if (nd == 19)
				goto done;		/* too long: no candidate ends here or later */
			d[nd++] = (uchar) (in[pos] - '0');
			pos++;
		}
		if (nd >= 13 && card_end_ok(s, pos) && luhn_ok(d, nd))
			best = pos;
		if (pos + 1 < len && (in[pos] == ' ' || in[pos] == '-') && is_digit(in[pos + 1]))
		{
			pos++;
			continue;
		}
		break;
	}
done:
	if (!best)
		return 0;
	return set_red(m, i, i, best, best, "[card]");
}

/* ---------------------------------------------------------------- driver */

static int
try_at(const Scan *s, size_t i, Match *m)
{
	int			c = s->in[i];

	switch (c)
	{
		case '-':
			return try_private_key(s, i, m);
		case ':':
			return try_uri(s, i, m);
		case '@':
			return try_email(s, i, m);
		default:
			break;
	}
	if (is_digit(c))
		return try_card(s, i, m);
	if (try_key(s, i, m))
		return 1;
	if (c == 'b' || c == 'B')
		return try_bearer(s, i, m);
	if (c == 'e')
		return try_jwt(s, i, m);
	if (c == 's' || c == 'r' || c == 'w' || c == 'p')
		return try_stripe(s, i, m);
	return 0;
}

static void
buf_reserve(PgcBuf *b, size_t add)
{
	size_t		need,
				ncap;

	if (add > SIZE_MAX - 1 - b->len)
		need = SIZE_MAX;		/* cannot be satisfied: let grow() fail */
	else
		need = b->len + add + 1;
	if (b->data != NULL && need <= b->cap)
		return;
	ncap = (b->data != NULL && b->cap > 0) ? b->cap : 64;
	while (ncap < need)
	{
		if (ncap > SIZE_MAX / 2)
		{
			ncap = need;
			break;
		}
		ncap *= 2;
	}
	b->data = (char *) b->grow(b->data, ncap, b->arg);
	b->cap = ncap;
}

static void
buf_append(PgcBuf *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

/*
 * The scanner.  out == NULL: count only; first_only: stop at the first
 * redaction.
 */
static int
scrub(const uchar *in, size_t len, PgcBuf *out, int first_only)
{
	Scan		s;
	Match		m;
	size_t		i = 0,
				copy = 0;
	int			n = 0;

	s.in = in;
	s.len = len;
	s.floor = 0;
	s.red_end = 0;
	while (i < len)
	{
		if (!trigger[in[i]] || !try_at(&s, i, &m))
		{
			i++;
			continue;
		}
		if (m.tok != NULL)
		{
			if (first_only)
				return 1;
			if (out != NULL)
			{
				buf_append(out, in + copy, m.rs - copy);
				buf_append(out, m.tok, strlen(m.tok));
			}
			copy = m.re;
			s.red_end = m.re;
			if (n < INT_MAX)
				n++;
		}
		i = m.e;
		s.floor = m.e;
	}
	if (out != NULL)
		buf_append(out, in + copy, len - copy);
	return n;
}

int
pgc_sanitize(const char *in, size_t len, PgcBuf *out)
{
	int			n;

	if (in == NULL)
		len = 0;
	if (out == NULL)
		return scrub((const uchar *) in, len, NULL, 0);
	/* most text shrinks or stays: reserve the input size up front */
	buf_reserve(out, len);
	n = scrub((const uchar *) in, len, out, 0);
	buf_reserve(out, 0);
	out->data[out->len] = '\0';
	return n;
}

int
pgc_sanitize_needed(const char *in, size_t len)
{
	if (in == NULL || len == 0)
		return 0;
	return scrub((const uchar *) in, len, NULL, 1);
}
