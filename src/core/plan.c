/*
 * plan.c — prepared SPI plans kept for the life of the backend.
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
 */
#include "pgcloud.h"

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
