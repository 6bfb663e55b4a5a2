/*
 * common.c — what every per-database worker does the same way: signals,
 * connecting, checking that pgcloud is installed, reporting its state in
 * shared memory, and leaving cleanly.
 */
#include "workers.h"

#include "access/xact.h"
#include "pgstat.h"
#include "tcop/tcopprot.h"
#include "postmaster/bgworker.h"
#include "storage/pmsignal.h"
#include "utils/snapmgr.h"

volatile sig_atomic_t PgcloudGotSighup = false;
int			PgcloudMySlot = -1;
PgcloudWorkerKind PgcloudMyKind;

static void
handle_sighup(SIGNAL_ARGS)
{
	int			save_errno = errno;

	PgcloudGotSighup = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

static PgcloudWorkerState *
my_state(void)
{
	return &PgcloudWorkers->slots[PgcloudMySlot].workers[PgcloudMyKind];
}

void
PgcloudWorkerTeardown(int code, Datum arg)
{
	(void) code;
	(void) arg;

	if (PgcloudWorkers == NULL || PgcloudMySlot < 0)
		return;
	LWLockAcquire(PgcloudWorkers->lock, LW_EXCLUSIVE);
	my_state()->pid = 0;
	my_state()->procno = -1;
	LWLockRelease(PgcloudWorkers->lock);
}

/* Signals, connection and the shared-memory slot of this worker. */
void
PgcloudWorkerSetup(PgcloudWorkerKind kind, int slot)
{
	char		dbname[NAMEDATALEN];

	PgcloudMyKind = kind;
	PgcloudMySlot = slot;
	pqsignal(SIGHUP, handle_sighup);
	pqsignal(SIGTERM, die);		/* exits at the next CHECK_FOR_INTERRUPTS, mid-transaction too */
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(PgcloudWorkers->lock, LW_SHARED);
	strlcpy(dbname, PgcloudWorkers->slots[slot].dbname, NAMEDATALEN);
	LWLockRelease(PgcloudWorkers->lock);

	/*
	 * The relay, consumer and HTTP executor connect as their own
	 * least-privilege roles (pgcloud_worker_<kind>), named by the launcher
	 * in bgw_extra when they exist; the scheduler (and a worker started
	 * before pgcloud_core created the roles, which only finds pgcloud not
	 * installed) as the bootstrap superuser.
	 */
	BackgroundWorkerInitializeConnection(dbname,
										 MyBgworkerEntry->bgw_extra[0] != '\0' ? MyBgworkerEntry->bgw_extra : NULL,
										 0);

	/*
	 * Nothing a user can create may be found by name resolution
	 * (CVE-2018-1058). Every name in the workers' SQL is schema-qualified,
	 * and functions they call pin their own search_path; operators resolve
	 * in pg_catalog only.
	 */
	StartTransactionCommand();
	SetConfigOption("search_path", "pg_catalog", PGC_SUSET, PGC_S_SESSION);
	CommitTransactionCommand();

	LWLockAcquire(PgcloudWorkers->lock, LW_EXCLUSIVE);
	PgcloudWorkers->slots[slot].dboid = MyDatabaseId;
	my_state()->pid = MyProcPid;
	my_state()->procno = MyProc->pgprocno;
	my_state()->started_at = GetCurrentTimestamp();
	LWLockRelease(PgcloudWorkers->lock);
	before_shmem_exit(PgcloudWorkerTeardown, (Datum) 0);
	pgstat_report_appname(psprintf("pgcloud %s", PgcloudWorkerKindName(kind)));
}

/*
 * True when pgcloud_core is installed in this database. Otherwise marks the
 * slot so the launcher re-checks later, logs that once, and returns false.
 */
bool
PgcloudWorkerCheckInstalled(void)
{
	bool		installed;
	PgcloudDbSlot *slot = &PgcloudWorkers->slots[PgcloudMySlot];

	PgcloudWorkerBeginWork(NULL);
	if (SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pgcloud_core'", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up pgcloud_core");
	installed = SPI_processed == 1;
	PgcloudWorkerEndWork();

	/*
	 * Started as the superuser because its role did not exist yet, and
	 * pgcloud has been installed since: it does no work as the superuser,
	 * but stops; the launcher starts it again as its role.
	 */
	if (installed && PgcloudMyKind != PGCLOUD_WORKER_SCHEDULER && MyBgworkerEntry->bgw_extra[0] == '\0')
	{
		ereport(LOG,
				errmsg("pgcloud %s worker of database \"%s\" restarts to connect as its own role",
					   PgcloudWorkerKindName(PgcloudMyKind), slot->dbname));
		return false;
	}

	LWLockAcquire(PgcloudWorkers->lock, LW_EXCLUSIVE);
	slot->not_installed = !installed;
	if (!installed && !slot->not_installed_logged)
	{
		slot->not_installed_logged = true;
		LWLockRelease(PgcloudWorkers->lock);
		ereport(LOG,
				errmsg("pgcloud is not installed in database \"%s\"; its workers are not started",
					   slot->dbname),
				errhint("Run CREATE EXTENSION pgcloud CASCADE there; the launcher checks again every few seconds."));
		return false;
	}
	if (installed)
		slot->not_installed_logged = false;
	LWLockRelease(PgcloudWorkers->lock);
	return installed;
}

void
PgcloudWorkerNoteActivity(int64 processed, int64 failures)
{
	PgcloudWorkerState *w = my_state();

	LWLockAcquire(PgcloudWorkers->lock, LW_EXCLUSIVE);
	w->last_activity = GetCurrentTimestamp();
	w->processed += processed;
	w->failures += failures;
	if (processed > 0 && failures == 0)
		w->last_error[0] = '\0';
	LWLockRelease(PgcloudWorkers->lock);
}

void
PgcloudWorkerNoteError(const char *message)
{
	PgcloudWorkerState *w = my_state();
	int			n;
	char	   *clean = PgcloudSanitizeCString(message, strlen(message), &n);

	LWLockAcquire(PgcloudWorkers->lock, LW_EXCLUSIVE);
	strlcpy(w->last_error, clean ? clean : message, PGCLOUD_ERRLEN);
	w->failures++;
	w->last_activity = GetCurrentTimestamp();
	LWLockRelease(PgcloudWorkers->lock);
}

/*
 * SIGHUP reloads the configuration; SIGTERM (die) ends the worker here, and
 * so does the postmaster's death: a worker busy draining work (it calls this
 * between units) must not outlive it, or the restarted postmaster finds its
 * shared memory still attached.
 */
void
PgcloudWorkerHandleInterrupts(void)
{
	CHECK_FOR_INTERRUPTS();
	if (!PostmasterIsAlive())
		proc_exit(1);
	if (PgcloudGotSighup)
	{
		PgcloudGotSighup = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/* Starts one unit of work: a transaction with SPI and a snapshot. */
void
PgcloudWorkerBeginWork(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	if (activity)
		pgstat_report_activity(STATE_RUNNING, activity);
}

/* Commits the unit of work. */
void
PgcloudWorkerEndWork(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * In PG_CATCH of a unit of work: aborts it, notes the error in shared
 * memory (scrubbed) and returns its message, allocated in cxt.
 */
static char *
abort_work(MemoryContext cxt)
{
	ErrorData  *edata;
	char	   *message;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	pgstat_report_activity(STATE_IDLE, NULL);
	message = pstrdup(edata->message);
	FreeErrorData(edata);
	PgcloudWorkerNoteError(message);
	return message;
}

char *
PgcloudRunUnit(const char *activity, PgcloudUnitFn fn, void *arg)
{
	MemoryContext caller = CurrentMemoryContext;
	char	   *volatile error = NULL;

	Assert(!IsTransactionState());
	PG_TRY();
	{
		PgcloudWorkerBeginWork(activity);
		fn(arg);
		PgcloudWorkerEndWork();
	}
	PG_CATCH();
	{
		error = abort_work(caller);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	return error;
}

long
PgcloudBackoffMs(int failures, long base_ms, int max_shift, long cap_ms)
{
	return Min(base_ms << Min(Max(failures, 0), max_shift), cap_ms);
}

/*
 * Inside a unit of work: runs fn in an internal subtransaction. Returns NULL
 * when it committed, else rolls it back alone and returns the error message,
 * allocated in keep. The caller's memory context and resource owner are
 * current again on return.
 */
char *
PgcloudRunSubUnit(PgcloudUnitFn fn, void *arg, MemoryContext keep)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	char	   *volatile error = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		error = MemoryContextStrdup(keep, edata->message ? edata->message : "unknown error");
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return error;
}
