/*
 * immutable.c — the append-only guard. Attached as
 *   BEFORE UPDATE OR DELETE ... FOR EACH ROW
 *   BEFORE TRUNCATE ... FOR EACH STATEMENT
 * it rejects the change for every role, the table's owner included.
 */
#include "pgcloud.h"

PG_FUNCTION_INFO_V1(pgcloud_trigger_immutable);

Datum
pgcloud_trigger_immutable(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	const char *verb;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "pgcloud.immutable() must be called as a trigger");
	if (!TRIGGER_FIRED_BEFORE(trigdata->tg_event))
		elog(ERROR, "pgcloud.immutable() must be a BEFORE trigger");

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		return PointerGetDatum(trigdata->tg_trigtuple);
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		verb = "UPDATE";
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		verb = "DELETE";
	else
		verb = "TRUNCATE";

	ereport(ERROR,
			errcode(ERRCODE_RESTRICT_VIOLATION),
			errmsg("table \"%s.%s\" is append-only",
				   get_namespace_name(RelationGetNamespace(trigdata->tg_relation)),
				   RelationGetRelationName(trigdata->tg_relation)),
			errdetail("%s is not allowed on it, for any role.", verb),
			errhint("Corrections are new rows."));
	PG_RETURN_NULL();
}
