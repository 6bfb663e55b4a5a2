/*
 * launcher.c — the pgcloud launcher, started from shared_preload_libraries.
 *
 * For each database named in pgcloud.databases it starts the per-database
 * workers (relay; NATS consumer when pgcloud.nats_url is set; HTTP intent
 * executor; job scheduler), and starts them again when they stop. A worker that finds
 * pgcloud not installed marks its slot and exits; the launcher then
 * re-checks that database every RECHECK_SECONDS without restarting in a
 * loop, and the worker logs that once.
 */
#include "workers.h"

#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "tcop/tcopprot.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "utils/acl.h"
#include "utils/snapmgr.h"
#include "utils/varlena.h"

#define RECHECK_SECONDS 5

typedef struct LauncherEntry
{
	BackgroundWorkerHandle *handle[PGCLOUD_WORKER_KINDS];
	TimestampTz next_start[PGCLOUD_WORKER_KINDS];
} LauncherEntry;

static LauncherEntry entries[PGCLOUD_MAX_DATABASES];

static bool
kind_wanted(PgcloudWorkerKind kind)
{
	switch (kind)
	{
		case PGCLOUD_WORKER_RELAY:
			return true;
		case PGCLOUD_WORKER_CONSUMER:
			return PgcloudNatsMode();
		case PGCLOUD_WORKER_HTTP:
		case PGCLOUD_WORKER_SCHEDULER:
			return true;
		default:
			return false;
	}
}

static const char *const kind_functions[PGCLOUD_WORKER_KINDS] = {
	"pgcloud_relay_main", "pgcloud_consumer_main", "pgcloud_http_main", "pgcloud_scheduler_main"
};

/*
 * The role a worker connects as: its own least-privilege role
 * (sql/core/00_roles.sql) once pgcloud_core has created it, else NULL (the
 * bootstrap superuser, only to find that pgcloud is not installed yet and
 * exit). The scheduler stays superuser: it runs each job as the job's own
 * service role. The roles are cluster-wide: the launcher reads pg_authid, a
 * shared catalog.
 */
static const char *const kind_roles[PGCLOUD_WORKER_KINDS] = {
	"pgcloud_worker_relay", "pgcloud_worker_consumer", "pgcloud_worker_http", NULL
};

static bool
worker_role_exists(const char *role)
{
	bool		found;

	StartTransactionCommand();
	found = OidIsValid(get_role_oid(role, true));
	CommitTransactionCommand();
	return found;
}

static bool
start_worker(int slot, PgcloudWorkerKind kind)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;

	/*
	 * The launcher restarts its workers itself (tend_workers). Restarted by
	 * the postmaster instead, they would survive a crash-restart of the
	 * cluster as registrations the new launcher knows nothing of: they came
	 * back beside the workers it starts, held max_worker_processes slots
	 * (its own workers then could not start) and ran twice per database.
	 */
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "pgcloud");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", kind_functions[kind]);
	snprintf(worker.bgw_name, BGW_MAXLEN, "pgcloud %s %s", PgcloudWorkerKindName(kind),
			 PgcloudWorkers->slots[slot].dbname);
	snprintf(worker.bgw_type, BGW_MAXLEN, "pgcloud %s", PgcloudWorkerKindName(kind));
	worker.bgw_main_arg = Int32GetDatum(slot);
	if (kind_roles[kind] != NULL && worker_role_exists(kind_roles[kind]))
		strlcpy(worker.bgw_extra, kind_roles[kind], BGW_EXTRALEN);
	worker.bgw_notify_pid = MyProcPid;
	elog(DEBUG1, "pgcloud launcher: starting the %s worker of database \"%s\"",
		 PgcloudWorkerKindName(kind), PgcloudWorkers->slots[slot].dbname);
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		ereport(WARNING,
				errmsg("pgcloud could not start its %s worker for database \"%s\"",
					   PgcloudWorkerKindName(kind), PgcloudWorkers->slots[slot].dbname),
				errhint("Raise max_worker_processes."));
		return false;
	}
	entries[slot].handle[kind] = handle;
	return true;
}

static void
stop_worker(int slot, PgcloudWorkerKind kind)
{
	if (entries[slot].handle[kind] != NULL)
	{
		TerminateBackgroundWorker(entries[slot].handle[kind]);
		pfree(entries[slot].handle[kind]);
		entries[slot].handle[kind] = NULL;
	}
}

/* Makes the slots match pgcloud.databases. */
static void
sync_slots(void)
{
	char	   *raw = pstrdup(pgcloud_databases ? pgcloud_databases : "");
	List	   *names = NIL;
	ListCell   *lc;

	if (!SplitIdentifierString(raw, ',', &names))
	{
		ereport(WARNING, errmsg("pgcloud.databases is not a valid list of database names"));
		names = NIL;
	}

	LWLockAcquire(PgcloudWorkers->lock, LW_EXCLUSIVE);
	/* Release slots of databases no longer listed. */
	for (int i = 0; i < PGCLOUD_MAX_DATABASES; i++)
	{
		PgcloudDbSlot *slot = &PgcloudWorkers->slots[i];
		bool		listed = false;

		if (!slot->in_use)
			continue;
		foreach(lc, names)
			if (strcmp(slot->dbname, (char *) lfirst(lc)) == 0)
				listed = true;
		if (!listed)
		{
			for (int k = 0; k < PGCLOUD_WORKER_KINDS; k++)
				stop_worker(i, k);
			memset(slot, 0, sizeof(*slot));
			for (int k = 0; k < PGCLOUD_WORKER_KINDS; k++)
				slot->workers[k].procno = -1;
		}
	}
	/* Give new databases a slot. */
	foreach(lc, names)
	{
		char	   *name = (char *) lfirst(lc);
		int			free_slot = -1;
		bool		present = false;

		for (int i = 0; i < PGCLOUD_MAX_DATABASES; i++)
		{
			if (PgcloudWorkers->slots[i].in_use && strcmp(PgcloudWorkers->slots[i].dbname, name) == 0)
				present = true;
			else if (!PgcloudWorkers->slots[i].in_use && free_slot < 0)
				free_slot = i;
		}
		if (present)
			continue;
		if (free_slot < 0)
		{
			ereport(WARNING, errmsg("pgcloud serves at most %d databases; \"%s\" is ignored",
									PGCLOUD_MAX_DATABASES, name));
			continue;
		}
		PgcloudWorkers->slots[free_slot].in_use = true;
		strlcpy(PgcloudWorkers->slots[free_slot].dbname, name, NAMEDATALEN);
		memset(&entries[free_slot], 0, sizeof(LauncherEntry));
	}
	LWLockRelease(PgcloudWorkers->lock);
}

/*
 * The oid of a database, or InvalidOid. Without a database connection only
 * shared catalogs can be read, and only by a heap scan (as the autovacuum
 * launcher does).
 */
static Oid
lookup_database(const char *name)
{
	Oid			dboid = InvalidOid;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (strcmp(NameStr(db->datname), name) == 0 && db->datconnlimit != -2)
		{
			dboid = db->oid;
			break;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return dboid;
}

/*
 * Whether the slot's database exists (the launcher sees the shared catalog
 * pg_database). A missing one is logged once and checked again later.
 */
static bool
database_exists(PgcloudDbSlot *slot)
{
	Oid			dboid;

	dboid = lookup_database(slot->dbname);
	if (!OidIsValid(dboid))
	{
		if (!slot->not_installed_logged)
			ereport(LOG,
					errmsg("database \"%s\" named in pgcloud.databases does not exist; pgcloud starts no workers for it",
						   slot->dbname),
					errhint("Create it and install pgcloud there; the launcher checks again every few seconds."));
		slot->not_installed_logged = true;
		slot->not_installed = true;
		return false;
	}
	if (slot->dboid != dboid)
	{
		slot->dboid = dboid;
		slot->not_installed_logged = false;
		slot->not_installed = false;
	}
	return true;
}

/* Starts whatever should run and doesn't; returns ms until the next check. */
static long
tend_workers(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		wait_ms = RECHECK_SECONDS * 1000L;

	for (int i = 0; i < PGCLOUD_MAX_DATABASES; i++)
	{
		PgcloudDbSlot *slot = &PgcloudWorkers->slots[i];

		if (!slot->in_use)
			continue;
		if (!database_exists(slot))
			continue;
		for (int k = 0; k < PGCLOUD_WORKER_KINDS; k++)
		{
			LauncherEntry *e = &entries[i];
			pid_t		pid;

			if (!kind_wanted(k))
			{
				stop_worker(i, k);
				continue;
			}
			if (e->handle[k] != NULL &&
				GetBackgroundWorkerPid(e->handle[k], &pid) != BGWH_STOPPED)
				continue;		/* running or starting */
			if (e->handle[k] != NULL)
			{
				elog(DEBUG1, "pgcloud launcher: the %s worker of database \"%s\" stopped%s",
					 PgcloudWorkerKindName(k), slot->dbname, slot->not_installed ? " (pgcloud not installed)" : "");
				pfree(e->handle[k]);
				e->handle[k] = NULL;
				/* A database without pgcloud is re-checked later, not in a loop. */
				e->next_start[k] = slot->not_installed
					? TimestampTzPlusMilliseconds(now, RECHECK_SECONDS * 1000L)
					: TimestampTzPlusMilliseconds(now, 1000);
			}
			if (e->next_start[k] > now)
			{
				long		ms = (long) ((e->next_start[k] - now) / 1000);

				wait_ms = Min(wait_ms, Max(ms, 10));
				continue;
			}
			if (!start_worker(i, k))
				e->next_start[k] = TimestampTzPlusMilliseconds(now, RECHECK_SECONDS * 1000L);
		}
	}
	return wait_ms;
}

void
pgcloud_launcher_main(Datum arg)
{
	(void) arg;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	/* No database: only the shared catalogs, to see which databases exist. */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	PgcloudWorkers->launcher_pid = MyProcPid;
	PgcloudWorkers->launcher_procno = MyProc->pgprocno;
	ereport(LOG, errmsg("pgcloud launcher started (databases: \"%s\")",
						pgcloud_databases ? pgcloud_databases : ""));

	sync_slots();
	while (!ShutdownRequestPending)
	{
		long		wait_ms = tend_workers();

		int			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								   wait_ms, PG_WAIT_EXTENSION);

		ResetLatch(MyLatch);
		/* Woken (pgcloud.wake_workers(), e.g. by an installation): check now. */
		if (rc & WL_LATCH_SET)
			for (int i = 0; i < PGCLOUD_MAX_DATABASES; i++)
				for (int k = 0; k < PGCLOUD_WORKER_KINDS; k++)
					entries[i].next_start[k] = 0;
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			sync_slots();
		}
	}
	PgcloudWorkers->launcher_procno = -1;
	PgcloudWorkers->launcher_pid = 0;
	proc_exit(0);
}
