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

/* One round's bookkeeping, for the units of work below. */
typedef struct SchedulerRound
{
	bool		woken;
	MemoryContext cxt;			/* where the jobs are kept */
	List	   *jobs;
	int64		done;			/* jobs that succeeded */
	int64		failed;			/* jobs that failed */
	long		wait_ms;
} SchedulerRound;

/* The jobs due now (or on a wake-up, those marked run_on_wake too). */
static void
due_jobs_unit(void *arg)
{
	SchedulerRound *r = (SchedulerRound *) arg;
	Oid			argtypes[1] = {BOOLOID};
	Datum		values[1] = {BoolGetDatum(r->woken)};

	if (SPI_execute_with_args("SELECT name, call, run_as, timeout_ms FROM pgcloud.due_jobs($1)",
							  1, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pgcloud scheduler: could not read the due jobs");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext old = MemoryContextSwitchTo(r->cxt);
		DueJob	   *job = palloc0(sizeof(DueJob));
		bool		isnull;
		char	   *run_as = SPI_getvalue(tup, desc, 3);

		job->name = SPI_getvalue(tup, desc, 1);
		job->call = SPI_getvalue(tup, desc, 2);
		job->run_as = run_as;
		job->timeout_ms = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		if (isnull)
			job->timeout_ms = 0;
		r->jobs = lappend(r->jobs, job);
		MemoryContextSwitchTo(old);
	}
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

typedef struct JobRun
{
	DueJob	   *job;
	TimestampTz started;
	const char *error;			/* the failure to record */
} JobRun;

static void
run_job_unit(void *arg)
{
	JobRun	   *run = (JobRun *) arg;
	DueJob	   *job = run->job;
	char	   *result = NULL;

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
	record_outcome(job->name, true, result, NULL, run->started);
}

static void
record_failure_unit(void *arg)
{
	JobRun	   *run = (JobRun *) arg;

	record_outcome(run->job->name, false, NULL, run->error, run->started);
}

/*
 * Runs one job in its own transaction and sets *ok to whether it succeeded.
 * A failure is recorded in a transaction of its own; when even that fails,
 * returns its message (the scheduler's bookkeeping failed), else NULL.
 */
static char *
run_job(DueJob *job, bool *ok)
{
	JobRun		run = {.job = job, .started = GetCurrentTimestamp()};

	run.error = PgcloudRunUnit(job->name, run_job_unit, &run);
	*ok = run.error == NULL;
	if (*ok)
		return NULL;
	return PgcloudRunUnit(NULL, record_failure_unit, &run);
}

/* Milliseconds until the next job is due (at most SCHEDULER_MAX_WAIT_MS). */
static void
next_wait_unit(void *arg)
{
	SchedulerRound *r = (SchedulerRound *) arg;
	long		ms;
	bool		isnull;

	if (SPI_execute("SELECT pgcloud.jobs_next_in_ms()", true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "pgcloud scheduler: could not read when the next job is due");
	ms = (long) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		ms = SCHEDULER_MAX_WAIT_MS;
	r->wait_ms = Max(Min(ms, SCHEDULER_MAX_WAIT_MS), 0L);
}

/*
 * Runs the due jobs, each in its own transaction, counting them in r, and
 * sets r->wait_ms. Returns NULL, or the message of the error when the
 * bookkeeping itself failed (e.g. pgcloud dropped).
 */
static char *
run_round(SchedulerRound *r)
{
	ListCell   *lc;
	char	   *error;

	error = PgcloudRunUnit(NULL, due_jobs_unit, r);
	if (error != NULL)
		return error;
	r->woken = false;
	foreach(lc, r->jobs)
	{
		bool		ok;

		PgcloudWorkerHandleInterrupts();
		error = run_job((DueJob *) lfirst(lc), &ok);
		if (ok)
			r->done++;
		else
			r->failed++;
		if (error != NULL)
			return error;
	}
	return PgcloudRunUnit(NULL, next_wait_unit, r);
}

void
pgcloud_scheduler_main(Datum arg)
{
	MemoryContext loopcxt;
	bool		woken = true;	/* at start, run what runs on a wake-up */
	int			errors = 0;

	PgcloudWorkerSetup(PGCLOUD_WORKER_SCHEDULER, DatumGetInt32(arg));
	if (!PgcloudWorkerCheckInstalled())
		proc_exit(0);
	ereport(LOG, errmsg("pgcloud scheduler started"));

	loopcxt = AllocSetContextCreate(TopMemoryContext, "pgcloud scheduler loop", ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		SchedulerRound r = {.woken = woken, .cxt = loopcxt, .jobs = NIL, .wait_ms = 0};
		char	   *message;

		PgcloudWorkerHandleInterrupts();
		MemoryContextReset(loopcxt);
		MemoryContextSwitchTo(loopcxt);

		message = run_round(&r);
		woken = r.woken;
		if (message == NULL)
			errors = 0;
		else
		{
			/* The bookkeeping itself failed (e.g. pgcloud dropped): back off. */
			errors++;
			ereport(LOG, errmsg("pgcloud scheduler: %s", message));
			r.wait_ms = PgcloudBackoffMs(errors, 1000L, 6, SCHEDULER_MAX_WAIT_MS);
		}
		MemoryContextSwitchTo(TopMemoryContext);
		if (r.done + r.failed > 0)
			PgcloudWorkerNoteActivity(r.done, 0);

		if (r.wait_ms > 0)
		{
			int			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
									   r.wait_ms, PG_WAIT_EXTENSION);

			ResetLatch(MyLatch);
			if (rc & WL_LATCH_SET)
				woken = true;
		}
	}
}
