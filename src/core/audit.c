/*
 * audit.c — pgcloud.audit(): one entry of the append-only audit log, and its
 * audit.recorded event for the admin service.
 *
 * The entry is written by the executor's single-row insert (the table's
 * identity, generated column, constraints and indexes, as an INSERT would),
 * as the log's owner, and announced through PgcloudEmit() as that owner (the
 * core service, audit.recorded's publisher): no PL/pgSQL, no SECURITY DEFINER
 * switch of search_path, no planned statement. Every audited API call pays
 * for this once.
 */
#include "pgcloud.h"

#include "access/table.h"
#include "catalog/namespace.h"
#include "commands/dbcommands.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(pgcloud_audit);

/* One audit entry as pgcloud.audit() writes it; at and id are set by audit_insert(). */
typedef struct AuditRow
{
	int64		id;
	TimestampTz at;
	char	   *actor;			/* uuid text, or NULL */
	char	   *role;
	text	   *action;
	text	   *target_type;	/* or NULL */
	text	   *target_id;		/* or NULL */
	text	   *result;
	Jsonb	   *details;
	char	   *correlation_id;
} AuditRow;

/*
 * Inserts the row into pgcloud.audit_logs (relid) as an INSERT statement
 * would; every column is named here, and a column this code does not know
 * is an error, not a default.
 */
static void
audit_insert(Oid relid, AuditRow *row)
{
	PgcloudRowInsert ins;
	TupleDesc	desc;
	TupleTableSlot *slot;

	PgcloudRowInsertBegin(&ins, relid);
	desc = RelationGetDescr(ins.rel);
	slot = ins.slot;
	row->at = GetCurrentTimestamp();	/* the column's default, clock_timestamp() */
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		const char *name = NameStr(att->attname);
		Datum		v = (Datum) 0;
		bool		isnull = false;

		if (att->attisdropped || att->attgenerated == ATTRIBUTE_GENERATED_STORED)
			isnull = true;		/* (target: computed by the insert) */
		else if (strcmp(name, "id") == 0)
		{
			row->id = nextval_internal(PgcloudIdentitySequence(relid, att->attnum), false);
			v = Int64GetDatum(row->id);
		}
		else if (strcmp(name, "at") == 0)
			v = TimestampTzGetDatum(row->at);
		else if (strcmp(name, "actor") == 0)
		{
			isnull = row->actor == NULL;
			if (!isnull)
				v = DirectFunctionCall1(uuid_in, CStringGetDatum(row->actor));
		}
		else if (strcmp(name, "role") == 0)
			v = CStringGetTextDatum(row->role);
		else if (strcmp(name, "action") == 0)
			v = PointerGetDatum(row->action);
		else if (strcmp(name, "target_type") == 0)
		{
			isnull = row->target_type == NULL;
			v = PointerGetDatum(row->target_type);
		}
		else if (strcmp(name, "target_id") == 0)
		{
			isnull = row->target_id == NULL;
			v = PointerGetDatum(row->target_id);
		}
		else if (strcmp(name, "result") == 0)
			v = PointerGetDatum(row->result);
		else if (strcmp(name, "details") == 0)
			v = JsonbPGetDatum(row->details);
		else if (strcmp(name, "correlation_id") == 0)
			v = CStringGetTextDatum(row->correlation_id);
		else
			elog(ERROR, "pgcloud.audit_logs has a column audit() does not know: %s", name);
		slot->tts_values[i] = isnull ? (Datum) 0 : v;
		slot->tts_isnull[i] = isnull;
	}
	PgcloudRowInsertFinish(&ins);
}

static void
push_text(JsonbParseState **st, const char *key, text *t)
{
	if (t == NULL)
		PgcloudJsonbPushString(st, key, NULL, 0);
	else
		PgcloudJsonbPushString(st, key, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

/*
 * audit.recorded's payload, as jsonb_build_object() built it from the row:
 * {database, audit_id, at, actor, role, action, target_type, target_id,
 * result, details, correlation_id}.
 */
static Jsonb *
recorded_payload(AuditRow *row)
{
	JsonbParseState *st = NULL;
	JsonbValue	v;
	char		buf[MAXDATELEN + 1];

	(void) pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	PgcloudJsonbPushString(&st, "database", get_database_name(MyDatabaseId), -1);
	PgcloudJsonbPushKey(&st, "audit_id");
	v.type = jbvNumeric;
	v.val.numeric = DatumGetNumeric(DirectFunctionCall1(int8_numeric, Int64GetDatum(row->id)));
	(void) pushJsonbValue(&st, WJB_VALUE, &v);
	PgcloudJsonbPushString(&st, "at", JsonEncodeDateTime(buf, TimestampTzGetDatum(row->at), TIMESTAMPTZOID, NULL), -1);
	PgcloudJsonbPushString(&st, "actor", row->actor, -1);
	PgcloudJsonbPushString(&st, "role", row->role, -1);
	push_text(&st, "action", row->action);
	push_text(&st, "target_type", row->target_type);
	push_text(&st, "target_id", row->target_id);
	push_text(&st, "result", row->result);
	PgcloudJsonbPushKey(&st, "details");
	v.type = jbvBinary;
	v.val.binary.data = &row->details->root;
	v.val.binary.len = VARSIZE(row->details) - VARHDRSZ;
	(void) pushJsonbValue(&st, WJB_VALUE, &v);
	PgcloudJsonbPushString(&st, "correlation_id", row->correlation_id, -1);
	return JsonbValueToJsonb(pushJsonbValue(&st, WJB_END_OBJECT, NULL));
}

static bool
text_is(text *t, const char *s)
{
	size_t		len = strlen(s);

	return VARSIZE_ANY_EXHDR(t) == len && memcmp(VARDATA_ANY(t), s, len) == 0;
}

/*
 * pgcloud.audit(action text, target_type text, target_id text,
 *               result text DEFAULT 'ok', details jsonb DEFAULT '{}') RETURNS bigint
 */
Datum
pgcloud_audit(PG_FUNCTION_ARGS)
{
	AuditRow	row;
	Oid			relid;
	Oid			owner;
	Oid			save_userid;
	int			save_sec_context;
	StringInfoData aggregate_id;

	memset(&row, 0, sizeof(row));
	row.action = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	if (row.action == NULL || !PgcloudDottedName(VARDATA_ANY(row.action), VARSIZE_ANY_EXHDR(row.action)))
		PgcloudRaise("invalid_argument", "audit action must be dotted lower-case words, e.g. policy.set", NULL, NULL);
	row.result = PG_ARGISNULL(3) ? NULL : PG_GETARG_TEXT_PP(3);
	if (row.result == NULL || !(text_is(row.result, "ok") || text_is(row.result, "denied") ||
								text_is(row.result, "rejected") || text_is(row.result, "failed")))
		PgcloudRaise("invalid_argument", "audit result must be ok, denied, rejected or failed", NULL, NULL);
	row.target_type = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
	row.target_id = PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2);
	row.details = PgcloudSanitizeJsonb(PG_ARGISNULL(4) ? PgcloudEmptyJsonbObject() : PG_GETARG_JSONB_P(4));
	row.actor = PgcloudRequestUserId();
	row.role = PgcloudRequestRole();
	row.correlation_id = PgcloudCorrelationId();

	/* Written and announced as the log's owner (the core service). */
	owner = PgcloudCoreRelOwner("audit_logs", &relid);
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		audit_insert(relid, &row);
		initStringInfo(&aggregate_id);
		appendStringInfo(&aggregate_id, "%s:" INT64_FORMAT, get_database_name(MyDatabaseId), row.id);
		/*
		 * The aggregate is the entry just inserted, which no other
		 * transaction can see: nothing else emits for it before this
		 * commits, so emit()'s advisory lock is not needed.
		 */
		(void) PgcloudEmit(cstring_to_text("audit.recorded"), cstring_to_text("audit"),
						   cstring_to_text(aggregate_id.data), recorded_payload(&row), true);
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec_context);
	}
	PG_END_TRY();
	PG_RETURN_INT64(row.id);
}
