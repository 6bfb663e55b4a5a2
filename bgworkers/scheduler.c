/*
 * scheduler.c — the job scheduler, one per database of pgcloud.databases.
 *
 * Services register their periodic jobs in pgcloud.scheduled_jobs when they
 * are installed (pgcloud.register_job()): the MAAS poller, the accrual, the
 * expiry and pruning jobs. This worker runs each job when it is due, every
 * "interval policy" (so an operator changes a cadence with set_policy and no
 * restart), in its own transaction, as the role that owns the job's function
 * (the owning service role), with a statement timeout. The outcome (result
 * or scrubbed error, duration) is recorded on the job's row, which
 * pgcloud.jobs shows. A wake-up (pgcloud.wake_scheduler() at commit, e.g.
 * when a MAAS goal is set) runs the jobs marked run_on_wake at once.
 *
 * pg_cron (Debian's 1.4) schedules by the minute and in one database; the
 * platform needs sub-second cadences (MAAS) and every service's jobs in its
 * own database, so the launcher runs this worker instead. pg_cron's own run
 * history is pruned by a job of this scheduler.
 */
#include "workers.h"

#include "executor/spi.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define SCHEDULER_MAX_WAIT_MS 60000L

typedef struct DueJob
{
	char	   *name;
	char	   *call;			/* schema-qualified function name */
	char	   *run_as;			/* role name, or NULL: the worker's own role */
	int			timeout_ms;
} DueJob;

/* The jobs due now (or on a wake-up, those marked run_on_wake too). */
static List *
due_jobs(bool woken, MemoryContext cxt)
{
	List	   *jobs = NIL;
	Oid			argtypes[1] = {BOOLOID};
	Datum		values[1] = {BoolGetDatum(woken)};

	PgcloudWorkerBeginWork(NULL);
	if (SPI_execute_with_args("SELECT name, call, run_as, timeout_ms FROM pgcloud.due_jobs($1)",
							  1, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pgcloud scheduler: could not read the due jobs");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext old = MemoryContextSwitchTo(cxt);
		DueJob	   *job = palloc0(sizeof(DueJob));
		bool		isnull;
		char	   *run_as = SPI_getvalue(tup, desc, 3);

		job->name = SPI_getvalue(tup, desc, 1);
		job->call = SPI_getvalue(tup, desc, 2);
		job->run_as = run_as;
		job->timeout_ms = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		if (isnull)
			job->timeout_ms = 0;
		jobs = lappend(jobs, job);
		MemoryContextSwitchTo(old);
	}
	PgcloudWorkerEndWork();
	return jobs;
}

/* Records a job's outcome on its row (and when it runs next). */
static void
record_outcome(const char *name, bool ok, const char *result, const char *error, TimestampTz started)
{
	Oid			argtypes[5] = {TEXTOID, BOOLOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	values[0] = CStringGetTextDatum(name);
	values[1] = BoolGetDatum(ok);
	if (result)
		values[2] = CStringGetTextDatum(result);
	else
		nulls[2] = 'n';
	if (error)
		values[3] = CStringGetTextDatum(error);
	else
		nulls[3] = 'n';
	values[4] = TimestampTzGetDatum(started);
	if (SPI_execute_with_args("SELECT pgcloud.job_finished($1, $2, $3, $4, $5)",
							  5, argtypes, values, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pgcloud scheduler: could not record the outcome of job %s", name);
}

/* Runs one job in its own transaction; true when it succeeded. */
static bool
run_job(DueJob *job, MemoryContext cxt)
{
	TimestampTz started = GetCurrentTimestamp();
	volatile bool ok = false;

	PG_TRY();
	{
		char	   *result = NULL;

		PgcloudWorkerBeginWork(job->name);
		if (job->timeout_ms > 0 &&
			SPI_execute(psprintf("SET LOCAL statement_timeout = %d", job->timeout_ms), false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not set the job's statement timeout");
		if (job->run_as &&
			SPI_execute(psprintf("SET LOCAL ROLE %s", quote_identifier(job->run_as)), false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not take the role of job %s", job->name);
		if (SPI_execute(psprintf("SELECT %s()::text", job->call), false, 1) != SPI_OK_SELECT)
			elog(ERROR, "job %s did not return a result", job->name);
		if (SPI_processed == 1)
			result = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		if (job->run_as && SPI_execute("RESET ROLE", false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not leave the role of job %s", job->name);
		record_outcome(job->name, true, result, NULL, started);
		PgcloudWorkerEndWork();
		ok = true;
	}
	PG_CATCH();
	{
		char	   *message = PgcloudWorkerAbortWork(cxt);

		/* The failure is recorded in a transaction of its own. */
		PgcloudWorkerBeginWork(NULL);
		record_outcome(job->name, false, NULL, message, started);
		PgcloudWorkerEndWork();
	}
	PG_END_TRY();
	return ok;
}

/* Milliseconds until the next job is due (at most SCHEDULER_MAX_WAIT_MS). */
static long
next_wait_ms(void)
{
	long		ms = SCHEDULER_MAX_WAIT_MS;
	bool		isnull;

	PgcloudWorkerBeginWork(NULL);
	if (SPI_execute("SELECT pgcloud.jobs_next_in_ms()", true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "pgcloud scheduler: could not read when the next job is due");
	ms = (long) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		ms = SCHEDULER_MAX_WAIT_MS;
	PgcloudWorkerEndWork();
	return Max(Min(ms, SCHEDULER_MAX_WAIT_MS), 0L);
}

void
pgcloud_scheduler_main(Datum arg)
{
	MemoryContext loopcxt;
	volatile bool woken = true; /* at start, run what runs on a wake-up */
	volatile int errors = 0;

	PgcloudWorkerSetup(PGCLOUD_WORKER_SCHEDULER, DatumGetInt32(arg));
	if (!PgcloudWorkerCheckInstalled())
		proc_exit(0);
	ereport(LOG, errmsg("pgcloud scheduler started"));

	loopcxt = AllocSetContextCreate(TopMemoryContext, "pgcloud scheduler loop", ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		volatile long wait_ms = 0;
		List	   *jobs = NIL;
		ListCell   *lc;
		volatile int64 done = 0;
		volatile int64 failed = 0;

		PgcloudWorkerHandleInterrupts();
		MemoryContextReset(loopcxt);
		MemoryContextSwitchTo(loopcxt);

		PG_TRY();
		{
			jobs = due_jobs(woken, loopcxt);
			woken = false;
			foreach(lc, jobs)
			{
				PgcloudWorkerHandleInterrupts();
				if (run_job((DueJob *) lfirst(lc), loopcxt))
					done++;
				else
					failed++;
			}
			wait_ms = next_wait_ms();
			errors = 0;
		}
		PG_CATCH();
		{
			/* The bookkeeping itself failed (e.g. pgcloud dropped): back off. */
			char	   *message = PgcloudWorkerAbortWork(loopcxt);

			errors++;
			ereport(LOG, errmsg("pgcloud scheduler: %s", message));
			wait_ms = Min(1000L << Min(errors, 6), SCHEDULER_MAX_WAIT_MS);
		}
		PG_END_TRY();
		MemoryContextSwitchTo(TopMemoryContext);
		if (done + failed > 0)
			PgcloudWorkerNoteActivity(done, 0);

		if (wait_ms > 0)
		{
			int			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
									   wait_ms, PG_WAIT_EXTENSION);

			ResetLatch(MyLatch);
			if (rc & WL_LATCH_SET)
				woken = true;
		}
	}
}
