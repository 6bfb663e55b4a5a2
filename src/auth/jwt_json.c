/*
 * jwt_json.c — JSON in and out of JWTs. Decoded header and claims bytes
 * reach PostgreSQL's jsonb only after jwt_json_check() (jwt_parse.c) and a
 * non-throwing pass of PostgreSQL's own JSON parser in the server encoding,
 * so a hostile token ends in a catalogued invalid_token, never in an
 * uncatalogued error that would echo its bytes. Output is compact JSON
 * (jsonb's text form has blanks after ':' and ','), which keeps tokens short.
 */
#include "pgcloud.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/json.h"
#include "utils/numeric.h"

#include "jwt.h"

static void
append_scalar(StringInfo out, JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			appendStringInfoString(out, "null");
			break;
		case jbvBool:
			appendStringInfoString(out, v->val.boolean ? "true" : "false");
			break;
		case jbvNumeric:
			appendStringInfoString(out, DatumGetCString(DirectFunctionCall1(numeric_out,
																			 NumericGetDatum(v->val.numeric))));
			break;
		case jbvString:
			{
				char	   *s = pnstrdup(v->val.string.val, v->val.string.len);

				escape_json(out, s);
				pfree(s);
				break;
			}
		default:
			elog(ERROR, "unexpected jsonb value type %d", (int) v->type);
	}
}

void
JwtJsonbToCompact(StringInfo out, Jsonb *jb)
{
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		first = true;	/* no comma before the next element or key */
	bool		raw_scalar = JB_ROOT_IS_SCALAR(jb);
	int			depth = 0;

	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		switch (tok)
		{
			case WJB_BEGIN_OBJECT:
			case WJB_BEGIN_ARRAY:
				depth++;
				if (raw_scalar && depth == 1)
					break;		/* a scalar at the top: its ELEM follows */
				if (!first)
					appendStringInfoChar(out, ',');
				appendStringInfoChar(out, tok == WJB_BEGIN_OBJECT ? '{' : '[');
				first = true;
				break;
			case WJB_END_OBJECT:
			case WJB_END_ARRAY:
				depth--;
				if (!(raw_scalar && depth == 0))
					appendStringInfoChar(out, tok == WJB_END_OBJECT ? '}' : ']');
				first = false;
				break;
			case WJB_KEY:
				if (!first)
					appendStringInfoChar(out, ',');
				append_scalar(out, &v);
				appendStringInfoChar(out, ':');
				first = true;	/* the value follows the colon directly */
				break;
			case WJB_VALUE:
			case WJB_ELEM:
				if (!first)
					appendStringInfoChar(out, ',');
				append_scalar(out, &v);
				first = false;
				break;
			default:
				break;
		}
	}
}

Jsonb *
JwtBytesToJsonb(const unsigned char *s, size_t len)
{
	char	   *text;
	JsonLexContext *lex;
	JsonParseErrorType perr;

	if (jwt_json_check(s, len, 1) != JWT_OK)
		return NULL;
	if (!pg_verify_mbstr(GetDatabaseEncoding(), (const char *) s, (int) len, true))
		return NULL;
	text = palloc(len + 1);
	memcpy(text, s, len);
	text[len] = '\0';

	/*
	 * In a UTF-8 database, what jwt_json_check() accepts (valid UTF-8, no
	 * NUL or \u0000, paired surrogates, bounded numbers and depth) is what
	 * jsonb_in accepts. In another encoding, a \u escape may name a
	 * character the encoding cannot hold: ask PostgreSQL's parser first,
	 * without throwing.
	 */
	if (GetDatabaseEncoding() != PG_UTF8)
	{
		lex = makeJsonLexContextCstringLen(text, (int) len, GetDatabaseEncoding(), true);
		perr = pg_parse_json(lex, &nullSemAction);
		if (perr != JSON_SUCCESS)
		{
			pfree(text);
			return NULL;
		}
	}
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
}

JsonbValue *
JwtJsonbMember(JsonbContainer *obj, const char *key)
{
	JsonbValue	k;

	if (!JsonContainerIsObject(obj))
		return NULL;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(obj, JB_FOBJECT, &k);
}
