/*
 * plan.c — prepared SPI plans kept for the life of the backend, and what
 * C code needs around them to read core tables for callers without
 * privileges on them (their owner) or to cache what it read (an
 * invalidating statement trigger).
 *
 *     static SPIPlanPtr plan = NULL;
 *     Oid         types[1] = {TEXTOID};
 *
 *     ret = SPI_execute_plan(PgcloudPlan(&plan, "SELECT ... $1", 1, types), ...);
 *
 * The first call prepares sql (SPI connected), keeps the plan (SPI_keepplan)
 * and stores it in *cache; later calls return *cache. A plan that cannot be
 * prepared or kept is an ERROR, and *cache stays NULL so the next call tries
 * again.
 *
 * A kept plan remembers the search_path it was planned under, and is
 * analysed and planned afresh whenever it runs under another one. C code
 * called from SQL functions with different SET search_path clauses (emit()
 * from a service's function and from pgcloud.audit()) would plan its
 * statement again at every switch: PgcloudExecPlan() runs a plan whose
 * names are all qualified under pg_catalog alone, whoever calls it.
 */
#include "pgcloud.h"

#include "utils/snapmgr.h"

#include "catalog/namespace.h"
#include "utils/inval.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(pgcloud_relation_changed);

SPIPlanPtr
PgcloudPlan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan;

	if (*cache != NULL)
		return *cache;
	plan = SPI_prepare(sql, nargs, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed for \"%s\"", sql);
	*cache = plan;
	return plan;
}

/* The search path of PgcloudExecPlan(): pg_catalog alone. */
static OverrideSearchPath *
fixed_search_path(void)
{
	static OverrideSearchPath *path = NULL;

	if (path == NULL)
	{
		OverrideSearchPath *p = MemoryContextAllocZero(TopMemoryContext, sizeof(OverrideSearchPath));

		p->schemas = NIL;
		p->addCatalog = true;
		p->addTemp = false;
		path = p;
	}
	return path;
}

/*
 * Runs plan under the search path pg_catalog alone (every name in the plan's
 * text must be qualified): the plan is made again only when what it reads
 * changes, not whenever the caller's search_path differs from the last
 * caller's. snapshot InvalidSnapshot: as SPI_execute_plan() does.
 */
static int
exec_fixed_path(SPIPlanPtr plan, Datum *values, const char *nulls, Snapshot snapshot, bool read_only,
				bool fire_triggers, long count)
{
	volatile int ret = 0;

	PushOverrideSearchPath(fixed_search_path());
	PG_TRY();
	{
		ret = SPI_execute_snapshot(plan, values, nulls, snapshot, InvalidSnapshot, read_only, fire_triggers, count);
	}
	PG_FINALLY();
	{
		PopOverrideSearchPath();
	}
	PG_END_TRY();
	return ret;
}

/* SPI_execute_plan() under the search path pg_catalog alone. */
int
PgcloudExecPlan(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only, long count)
{
	return exec_fixed_path(plan, values, nulls, InvalidSnapshot, read_only, true, count);
}

/*
 * PgcloudExecPlan() read-only with the latest snapshot instead of the
 * statement's: for what a backend keeps until an invalidation says it
 * changed (see policy.c).
 */
int
PgcloudExecPlanLatest(SPIPlanPtr plan, Datum *values, const char *nulls, long count)
{
	return exec_fixed_path(plan, values, nulls, GetLatestSnapshot(), true, false, count);
}

/*
 * The oid and owner of pgcloud.<relname> (the core's service role after
 * installation): C code that reads or writes a core table on behalf of a
 * caller without privileges on it switches to this owner around the SPI call.
 */
#define REL_OWNER_CACHE_SIZE 4
typedef struct RelOwnerEntry
{
	char		name[NAMEDATALEN];	/* "": free */
	Oid			rel;
	Oid			owner;
} RelOwnerEntry;

static RelOwnerEntry rel_owner_cache[REL_OWNER_CACHE_SIZE];
static bool rel_owner_callbacks = false;

/*
 * Any relcache invalidation of a cached table (ALTER ... OWNER, DROP, a
 * reinstall), or of all of them, empties the cache: looked up again.
 * A namespace change (schema dropped or renamed) drops its tables' entries too.
 */
static void
rel_owner_invalidate(Datum arg, Oid relid)
{
	(void) arg;
	for (int i = 0; i < REL_OWNER_CACHE_SIZE; i++)
		if (!OidIsValid(relid) || rel_owner_cache[i].rel == relid)
			rel_owner_cache[i].name[0] = '\0';
}

static void
rel_owner_invalidate_all(Datum arg, int cacheid, uint32 hashvalue)
{
	(void) cacheid;
	(void) hashvalue;
	rel_owner_invalidate(arg, InvalidOid);
}

Oid
PgcloudCoreRelOwner(const char *relname, Oid *relid)
{
	Oid			rel;
	HeapTuple	tup;
	Oid			owner;
	int			free_slot = -1;

	/* Kept per backend (emit() and audit() ask at every call). */
	if (!rel_owner_callbacks)
	{
		CacheRegisterRelcacheCallback(rel_owner_invalidate, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, rel_owner_invalidate_all, (Datum) 0);
		rel_owner_callbacks = true;
	}
	for (int i = 0; i < REL_OWNER_CACHE_SIZE; i++)
	{
		if (rel_owner_cache[i].name[0] == '\0')
		{
			if (free_slot < 0)
				free_slot = i;
		}
		else if (strcmp(rel_owner_cache[i].name, relname) == 0)
		{
			if (relid != NULL)
				*relid = rel_owner_cache[i].rel;
			return rel_owner_cache[i].owner;
		}
	}

	rel = get_relname_relid(relname, get_namespace_oid("pgcloud", false));
	if (!OidIsValid(rel))
		elog(ERROR, "pgcloud.%s does not exist", relname);
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(rel));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", rel);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	if (free_slot >= 0 && strlen(relname) < NAMEDATALEN)
	{
		strlcpy(rel_owner_cache[free_slot].name, relname, NAMEDATALEN);
		rel_owner_cache[free_slot].rel = rel;
		rel_owner_cache[free_slot].owner = owner;
	}
	if (relid != NULL)
		*relid = rel;
	return owner;
}

/*
 * A statement trigger on a core table that C code caches (pgcloud.services:
 * emit()'s publishers; pgcloud.policy_values: policy()'s values): the
 * table's relcache entry is invalidated, in this backend at the next
 * command and in every other one at commit, and each cache's relcache
 * callback empties it.
 */
Datum
pgcloud_relation_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "this is a trigger function");
	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	return PointerGetDatum(NULL);
}
