/*
 * shmem.c — the workers' shared state, the commit-time wake-up of a
 * database's workers (the relay after pgcloud.emit(), the HTTP executor
 * after pgcloud.http_request()), and pgcloud.worker_status() for operators.
 */
#include "workers.h"

#include "access/xact.h"
#include "postmaster/bgworker.h"
#include "utils/hsearch.h"
#include "utils/resowner.h"

PG_FUNCTION_INFO_V1(pgcloud_worker_status);
PG_FUNCTION_INFO_V1(pgcloud_wake_workers);
PG_FUNCTION_INFO_V1(pgcloud_wake_scheduler);

PgcloudWorkersShared *PgcloudWorkers = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static const char *const kind_names[PGCLOUD_WORKER_KINDS] = {"relay", "consumer", "http", "scheduler"};

const char *
PgcloudWorkerKindName(PgcloudWorkerKind kind)
{
	return kind_names[kind];
}

static void
workers_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(PgcloudWorkersShared)));
	RequestNamedLWLockTranche("pgcloud_workers", 1);
}

static void
workers_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	PgcloudWorkers = ShmemInitStruct("pgcloud workers", sizeof(PgcloudWorkersShared), &found);
	if (!found)
	{
		memset(PgcloudWorkers, 0, sizeof(PgcloudWorkersShared));
		PgcloudWorkers->lock = &(GetNamedLWLockTranche("pgcloud_workers"))->lock;
		PgcloudWorkers->launcher_procno = -1;
		for (int i = 0; i < PGCLOUD_MAX_DATABASES; i++)
			for (int k = 0; k < PGCLOUD_WORKER_KINDS; k++)
				PgcloudWorkers->slots[i].workers[k].procno = -1;
	}
	LWLockRelease(AddinShmemInitLock);
}

void
PgcloudWorkersInit(void)
{
	BackgroundWorker worker;

	if (!process_shared_preload_libraries_in_progress || IsBinaryUpgrade)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = workers_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = workers_shmem_startup;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "pgcloud");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "pgcloud_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "pgcloud launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "pgcloud launcher");
	RegisterBackgroundWorker(&worker);
}

/* ---- commit-time wake-up ----------------------------------------------- */

static bool wake_registered = false;
static bool wake_pending[PGCLOUD_WORKER_KINDS];	/* per kind, this database */
static bool wake_all_pending = false;

static void
wake_everyone(void)
{
	if (PgcloudWorkers == NULL)
		return;
	if (PgcloudWorkers->launcher_procno >= 0)
		SetLatch(&ProcGlobal->allProcs[PgcloudWorkers->launcher_procno].procLatch);
	for (int i = 0; i < PGCLOUD_MAX_DATABASES; i++)
		for (int k = 0; k < PGCLOUD_WORKER_KINDS; k++)
		{
			int			procno = PgcloudWorkers->slots[i].workers[k].procno;

			if (PgcloudWorkers->slots[i].in_use && procno >= 0)
				SetLatch(&ProcGlobal->allProcs[procno].procLatch);
		}
}

static void
clear_pending(void)
{
	for (int k = 0; k < PGCLOUD_WORKER_KINDS; k++)
		wake_pending[k] = false;
	wake_all_pending = false;
}

/* Sets the latches of this database's workers whose wake-up is pending. */
static void
send_wakes(void)
{
	if (PgcloudWorkers != NULL)
	{
		/* No lock: a stale procno only costs a spurious wake-up. */
		for (int i = 0; i < PGCLOUD_MAX_DATABASES; i++)
		{
			PgcloudDbSlot *slot = &PgcloudWorkers->slots[i];

			if (!slot->in_use || slot->dboid != MyDatabaseId)
				continue;
			for (int k = 0; k < PGCLOUD_WORKER_KINDS; k++)
			{
				int			procno = slot->workers[k].procno;

				if (wake_pending[k] && procno >= 0)
					SetLatch(&ProcGlobal->allProcs[procno].procLatch);
			}
			break;
		}
	}
	if (wake_all_pending)
		wake_everyone();
}

/*
 * The wake-ups are sent once the transaction has committed, after its cache
 * invalidations have been sent and its locks released: in the last phase of
 * the release of its resources. A worker woken then finds, at the start of
 * its next transaction, every invalidation of what the transaction changed.
 * (An XACT_EVENT_COMMIT callback runs before CommitTransaction sends the
 * invalidations: a scheduler woken by pgcloud.set_policy() could read the
 * job interval it had cached, and sleep the old interval out.)
 */
static void
wake_release_callback(ResourceReleasePhase phase, bool isCommit, bool isTopLevel, void *arg)
{
	(void) arg;
	if (phase != RESOURCE_RELEASE_AFTER_LOCKS || !isTopLevel)
		return;
	if (isCommit)
	{
		bool		any = wake_all_pending;

		for (int k = 0; k < PGCLOUD_WORKER_KINDS && !any; k++)
			any = wake_pending[k];
		if (any)
			send_wakes();
	}
	clear_pending();
}

/*
 * A prepared transaction commits elsewhere, later: it wakes nobody (its
 * resources are released as if it committed). An aborted one is cleared by
 * wake_release_callback.
 */
static void
wake_xact_callback(XactEvent event, void *arg)
{
	(void) arg;
	if (event == XACT_EVENT_PREPARE)
		clear_pending();
}

static void
register_wake(void)
{
	if (!wake_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		RegisterResourceReleaseCallback(wake_release_callback, NULL);
		wake_registered = true;
	}
}

void
PgcloudWakeAtCommit(PgcloudWorkerKind kind)
{
	Assert(kind >= 0 && kind < PGCLOUD_WORKER_KINDS);
	register_wake();
	wake_pending[kind] = true;
}

/* Whether the current transaction will wake this database's worker of a kind at commit. */
bool
PgcloudWakePending(PgcloudWorkerKind kind)
{
	Assert(kind >= 0 && kind < PGCLOUD_WORKER_KINDS);
	return wake_pending[kind];
}

void
PgcloudRelayWakeAtCommit(void)
{
	PgcloudWakeAtCommit(PGCLOUD_WORKER_RELAY);
}

/*
 * pgcloud.wake_scheduler() RETURNS boolean — wakes this database's job
 * scheduler when the current transaction commits, so the jobs that run on a
 * wake-up (the MAAS poller, when a goal is set) run at once.
 */
Datum
pgcloud_wake_scheduler(PG_FUNCTION_ARGS)
{
	if (PgcloudWorkers == NULL)
		PG_RETURN_BOOL(false);
	PgcloudWakeAtCommit(PGCLOUD_WORKER_SCHEDULER);
	PG_RETURN_BOOL(true);
}

/*
 * pgcloud.wake_workers() RETURNS boolean — wakes the launcher and every
 * worker when the current transaction commits (e.g. the one that installed
 * pgcloud). False when the workers' shared memory does not exist.
 */
Datum
pgcloud_wake_workers(PG_FUNCTION_ARGS)
{
	if (PgcloudWorkers == NULL)
		PG_RETURN_BOOL(false);
	register_wake();
	wake_all_pending = true;
	PG_RETURN_BOOL(true);
}

/*
 * pgcloud.worker_status() RETURNS TABLE (database text, worker text, pid int,
 *   state text, started_at timestamptz, last_activity timestamptz,
 *   processed bigint, failures bigint, last_error text)
 */
Datum
pgcloud_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	if (PgcloudWorkers == NULL)
		ereport(ERROR,
				errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				errmsg("pgcloud background workers are not available"),
				errdetail("pgcloud is not in shared_preload_libraries."),
				errhint("Add pgcloud to shared_preload_libraries and restart the server."));

	LWLockAcquire(PgcloudWorkers->lock, LW_SHARED);
	for (int i = 0; i < PGCLOUD_MAX_DATABASES; i++)
	{
		PgcloudDbSlot *slot = &PgcloudWorkers->slots[i];

		if (!slot->in_use)
			continue;
		for (int k = 0; k < PGCLOUD_WORKER_KINDS; k++)
		{
			PgcloudWorkerState *w = &slot->workers[k];
			Datum		values[9];
			bool		nulls[9] = {0};
			const char *state;

			if (slot->not_installed)
				state = "not installed";
			else if (w->pid != 0)
				state = "running";
			else
				state = "stopped";
			values[0] = CStringGetTextDatum(slot->dbname);
			values[1] = CStringGetTextDatum(kind_names[k]);
			values[2] = Int32GetDatum(w->pid);
			nulls[2] = w->pid == 0;
			values[3] = CStringGetTextDatum(state);
			values[4] = TimestampTzGetDatum(w->started_at);
			nulls[4] = w->started_at == 0;
			values[5] = TimestampTzGetDatum(w->last_activity);
			nulls[5] = w->last_activity == 0;
			values[6] = Int64GetDatum(w->processed);
			values[7] = Int64GetDatum(w->failures);
			values[8] = CStringGetTextDatum(w->last_error);
			nulls[8] = w->last_error[0] == '\0';
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	LWLockRelease(PgcloudWorkers->lock);
	return (Datum) 0;
}
