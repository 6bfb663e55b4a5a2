/*
 * deployer.c — the databases service's deploy worker, one per database.
 *
 * Does the work the databases service leaves for after commit: deployments
 * to provision or retry, services whose deletion grace is over, retired
 * credentials to remove. Each unit is one call of databases.work_once() in
 * its own transaction (the SQL side claims a due row with SKIP LOCKED, talks
 * to the target server and records the outcome); a deployment attempt takes
 * two, so that its "provisioning" state is committed (and visible) before
 * the remote work of databases.work_continue(). Errors are caught per unit.
 * It sleeps until databases.next_due_ms() or until a commit that queued work
 * wakes it (databases.wake_deployer()). Where pgcloud_databases is not
 * installed it stays and only checks again now and then.
 */
#include "workers.h"

#include "access/xact.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "catalog/namespace.h"
#include "storage/lmgr.h"
#include "utils/snapmgr.h"

PG_FUNCTION_INFO_V1(pgcloud_databases_wake_deployer);

#define IDLE_MS 60000L
#define NOT_INSTALLED_MS 10000L

/* databases.wake_deployer() RETURNS boolean: wake the deploy worker at commit. */
Datum
pgcloud_databases_wake_deployer(PG_FUNCTION_ARGS)
{
	if (PgcloudWorkers == NULL)
		PG_RETURN_BOOL(false);
	PgcloudWakeAtCommit(PGCLOUD_WORKER_DEPLOYER);
	PG_RETURN_BOOL(true);
}

/*
 * The databases service's tables, locked without waiting before a unit of
 * work: a DROP EXTENSION (or anything else holding them exclusively) makes
 * the worker step aside for a second instead of deadlocking with it.
 */
static bool
lock_tables(void)
{
	static const char *const names[] = {
		"environments", "servers", "services", "credentials", "config",
		"deployments", "deployment_history", "deployment_transitions"
	};
	Oid			nsp = get_namespace_oid("databases", true);

	if (!OidIsValid(nsp))
		return false;
	for (int i = 0; i < lengthof(names); i++)
	{
		Oid			rel = get_relname_relid(names[i], nsp);

		if (!OidIsValid(rel) || !ConditionalLockRelationOid(rel, AccessShareLock))
			return false;
	}
	return true;
}

/* One unit of work; returns 1 when something was done, 0 when idle, -1 on error. */
static int
run_unit(MemoryContext loopcxt, long *wait_ms)
{
	volatile int result = 0;
	MemoryContext oldcxt = CurrentMemoryContext;

	PG_TRY();
	{
		bool		isnull;

		PgcloudWorkerBeginWork("databases.work_once()");
		if (SPI_execute("SELECT pg_catalog.to_regprocedure('databases.work_once()') IS NOT NULL", true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not look up databases.work_once()");
		if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		{
			*wait_ms = NOT_INSTALLED_MS;
			result = 0;
		}
		else if (!lock_tables())
		{
			*wait_ms = 1000;
			result = 0;
		}
		else
		{
			char	   *unit;

			if (SPI_execute("SELECT databases.work_once(), databases.next_due_ms()", false, 1) != SPI_OK_SELECT)
				elog(ERROR, "databases.work_once() failed");
			unit = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			{
				Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);

				*wait_ms = isnull ? IDLE_MS : Min(Max(DatumGetInt64(d), 10L), IDLE_MS);
			}
			result = unit != NULL ? 1 : 0;
			if (unit != NULL && strcmp(unit, "done") != 0)
			{
				/* A begun deployment attempt: commit "provisioning", then do the remote work. */
				Oid			argtypes[1] = {TEXTOID};
				Datum		args[1];

				unit = MemoryContextStrdup(loopcxt, unit);
				PgcloudWorkerEndWork();
				PgcloudWorkerBeginWork("databases.work_continue()");
				args[0] = CStringGetTextDatum(unit);
				if (SPI_execute_with_args("SELECT databases.work_continue($1)", 1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT)
					elog(ERROR, "databases.work_continue() failed");
			}
		}
		PgcloudWorkerEndWork();
	}
	PG_CATCH();
	{
		char	   *message = PgcloudWorkerAbortWork(loopcxt);

		ereport(LOG, errmsg("pgcloud deployer: %s", message));
		result = -1;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	return result;
}

void
pgcloud_deployer_main(Datum arg)
{
	MemoryContext loopcxt;
	int			errors = 0;

	PgcloudWorkerSetup(PGCLOUD_WORKER_DEPLOYER, DatumGetInt32(arg));
	/*
	 * No PgcloudWorkerCheckInstalled(): that marks the whole slot, and a
	 * deployer checking while pgcloud is being installed would then mark a
	 * slot whose relay already runs. Where the databases service is missing
	 * the deployer just looks again every NOT_INSTALLED_MS.
	 */
	loopcxt = AllocSetContextCreate(TopMemoryContext, "pgcloud deployer loop", ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		long		wait_ms = IDLE_MS;
		int			n;

		PgcloudWorkerHandleInterrupts();
		MemoryContextReset(loopcxt);
		MemoryContextSwitchTo(loopcxt);
		n = run_unit(loopcxt, &wait_ms);
		if (n > 0)
		{
			errors = 0;
			PgcloudWorkerNoteActivity(1, 0);
			continue;			/* drain what is due */
		}
		if (n < 0)
		{
			errors++;
			wait_ms = Min(100L << Min(errors, 8), 30000L);
		}
		else
			errors = 0;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, wait_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
