/*
 * transition.c — the state-machine guard.
 *
 *   CREATE TRIGGER ... BEFORE INSERT OR UPDATE OF state ON svc.thing
 *     FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state', 'svc.thing_transitions');
 *
 * The transitions table has columns (from_state text, to_state text); a row
 * with from_state NULL names an allowed initial state. Any other change of the
 * column raises the catalogued error invalid_state_transition (409).
 */
#include "pgcloud.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "storage/proc.h"
#include "utils/regproc.h"

PG_FUNCTION_INFO_V1(pgcloud_trigger_transition);

/*
 * The lookup's plan, prepared once per backend and transitions table (a few
 * tables have transitions; the plan is kept by its SQL, which names the
 * table, so a renamed or recreated table gets a plan of its own).
 */
#define TRANSITION_PLANS 32

static struct
{
	char	   *sql;
	SPIPlanPtr	plan;
}			transition_plans[TRANSITION_PLANS];
static int	ntransition_plans = 0;

static SPIPlanPtr
transition_plan(const char *sql, Oid *argtypes)
{
	SPIPlanPtr	plan;
	int			slot;

	for (int i = 0; i < ntransition_plans; i++)
		if (strcmp(transition_plans[i].sql, sql) == 0)
			return transition_plans[i].plan;
	slot = ntransition_plans < TRANSITION_PLANS ? ntransition_plans : TRANSITION_PLANS - 1;
	if (slot < ntransition_plans)
	{
		/* Full (not expected): the last slot is reused. */
		SPI_freeplan(transition_plans[slot].plan);
		pfree(transition_plans[slot].sql);
		transition_plans[slot].plan = NULL;
		transition_plans[slot].sql = NULL;
		ntransition_plans--;
	}
	plan = SPI_prepare(sql, 2, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed for \"%s\"", sql);
	transition_plans[slot].sql = MemoryContextStrdup(TopMemoryContext, sql);
	transition_plans[slot].plan = plan;
	ntransition_plans++;
	return plan;
}

/*
 * Transitions found allowed within the current command. A statement that
 * changes many rows (the HTTP executor's claim and record of a round, a
 * service's batch update) asks the same question once per row; the answer
 * cannot change within one command of one transaction (the lookup reads with
 * the command's snapshot, and a change of the transitions table by this
 * transaction is seen only after the command counter moves on), so it is
 * asked once. Only allowed transitions are kept: a refused one raises.
 */
#define TRANSITION_MEMO 8
#define TRANSITION_MEMO_STATE 64

typedef struct TransitionMemo
{
	Oid			trigger;		/* the trigger names the table and column */
	bool		from_null;
	char		from[TRANSITION_MEMO_STATE];
	char		to[TRANSITION_MEMO_STATE];
} TransitionMemo;

static TransitionMemo transition_memo[TRANSITION_MEMO];
static int	ntransition_memo = 0;
static LocalTransactionId transition_memo_lxid = InvalidLocalTransactionId;
static CommandId transition_memo_cid = InvalidCommandId;

/* The memo of the current command (emptied when the command or transaction changed). */
static void
transition_memo_scope(void)
{
	CommandId	cid = GetCurrentCommandId(false);

	if (transition_memo_lxid != MyProc->lxid || transition_memo_cid != cid)
	{
		ntransition_memo = 0;
		transition_memo_lxid = MyProc->lxid;
		transition_memo_cid = cid;
	}
}

static bool
transition_memo_has(Oid trigger, const char *from, const char *to)
{
	transition_memo_scope();
	for (int i = 0; i < ntransition_memo; i++)
	{
		TransitionMemo *m = &transition_memo[i];

		if (m->trigger == trigger && m->from_null == (from == NULL) &&
			(from == NULL || strcmp(m->from, from) == 0) && strcmp(m->to, to) == 0)
			return true;
	}
	return false;
}

static void
transition_memo_add(Oid trigger, const char *from, const char *to)
{
	TransitionMemo *m;

	transition_memo_scope();
	if (ntransition_memo == TRANSITION_MEMO || strlen(to) >= TRANSITION_MEMO_STATE ||
		(from != NULL && strlen(from) >= TRANSITION_MEMO_STATE))
		return;
	m = &transition_memo[ntransition_memo++];
	m->trigger = trigger;
	m->from_null = from == NULL;
	strlcpy(m->from, from ? from : "", sizeof(m->from));
	strlcpy(m->to, to, sizeof(m->to));
}

static bool
transition_allowed(Oid table, const char *from, const char *to)
{
	char	   *sql;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	bool		allowed;
	int			ret;

	sql = psprintf("SELECT 1 FROM %s WHERE from_state IS NOT DISTINCT FROM $1 AND to_state = $2",
				   quote_qualified_identifier(get_namespace_name(get_rel_namespace(table)),
											  get_rel_name(table)));
	values[0] = from ? CStringGetTextDatum(from) : (Datum) 0;
	nulls[0] = from ? ' ' : 'n';
	values[1] = CStringGetTextDatum(to);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute_plan(transition_plan(sql, argtypes), values, nulls, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "transition lookup failed: %s", SPI_result_code_string(ret));
	allowed = SPI_processed > 0;
	SPI_finish();
	return allowed;
}

Datum
pgcloud_trigger_transition(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	TupleDesc	desc;
	int			attnum;
	Oid			table;
	char	   *from = NULL;
	char	   *to;
	HeapTuple	result;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "pgcloud.transition() must be called as a trigger");
	if (!TRIGGER_FIRED_BEFORE(trigdata->tg_event) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		elog(ERROR, "pgcloud.transition() must be a BEFORE ... FOR EACH ROW trigger");
	trigger = trigdata->tg_trigger;
	if (trigger->tgnargs != 2)
		ereport(ERROR,
				errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				errmsg("pgcloud.transition() needs two arguments: the state column and the transitions table"));

	desc = RelationGetDescr(trigdata->tg_relation);
	attnum = SPI_fnumber(desc, trigger->tgargs[0]);
	if (attnum <= 0)
		ereport(ERROR,
				errcode(ERRCODE_UNDEFINED_COLUMN),
				errmsg("column \"%s\" of the transition trigger does not exist", trigger->tgargs[0]));
	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		result = trigdata->tg_trigtuple;
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		result = trigdata->tg_newtuple;
		from = SPI_getvalue(trigdata->tg_trigtuple, desc, attnum);
	}
	else
		return PointerGetDatum(trigdata->tg_trigtuple);

	to = SPI_getvalue(result, desc, attnum);
	if (to == NULL)
		PgcloudRaise("invalid_state_transition",
					 psprintf("%s.%s must not be NULL", RelationGetRelationName(trigdata->tg_relation),
							  trigger->tgargs[0]),
					 NULL, NULL);
	if (from != NULL && strcmp(from, to) == 0)
		return PointerGetDatum(result);
	if (transition_memo_has(trigger->tgoid, from, to))
		return PointerGetDatum(result);

	table = DatumGetObjectId(DirectFunctionCall1(regclassin, CStringGetDatum(trigger->tgargs[1])));
	if (!transition_allowed(table, from, to))
		PgcloudRaise("invalid_state_transition",
					 from ? psprintf("%s cannot go from \"%s\" to \"%s\"",
									 RelationGetRelationName(trigdata->tg_relation), from, to)
					 : psprintf("%s cannot start in \"%s\"",
								RelationGetRelationName(trigdata->tg_relation), to),
					 NULL, NULL);
	transition_memo_add(trigger->tgoid, from, to);
	return PointerGetDatum(result);
}
