/*
 * workers.h — pgcloud's background workers: the launcher and, per database
 * of pgcloud.databases, the outbox relay, the NATS consumer, the HTTP
 * intent executor and the job scheduler. Their state lives in one shared-memory array of
 * per-database slots, read by pgcloud.worker_status().
 */
#ifndef PGCLOUD_WORKERS_H
#define PGCLOUD_WORKERS_H

#include "pgcloud.h"

#include "storage/latch.h"
#include "storage/proc.h"

#define PGCLOUD_MAX_DATABASES 32
#define PGCLOUD_ERRLEN 256

typedef enum PgcloudWorkerKind
{
	PGCLOUD_WORKER_RELAY = 0,
	PGCLOUD_WORKER_CONSUMER,
	PGCLOUD_WORKER_HTTP,
	PGCLOUD_WORKER_SCHEDULER,
	PGCLOUD_WORKER_KINDS
} PgcloudWorkerKind;

typedef struct PgcloudWorkerState
{
	pid_t		pid;			/* 0 when not running */
	int			procno;			/* pgprocno, for SetLatch; -1 when not running */
	TimestampTz started_at;
	TimestampTz last_activity;
	int64		processed;		/* events relayed / consumed, intents done */
	int64		failures;
	char		last_error[PGCLOUD_ERRLEN];	/* scrubbed */
} PgcloudWorkerState;

typedef struct PgcloudDbSlot
{
	bool		in_use;
	char		dbname[NAMEDATALEN];
	Oid			dboid;			/* set by the first worker that connects */
	bool		not_installed;	/* pgcloud_core is missing there */
	bool		not_installed_logged;
	PgcloudWorkerState workers[PGCLOUD_WORKER_KINDS];
} PgcloudDbSlot;

typedef struct PgcloudWorkersShared
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	int			launcher_procno;
	PgcloudDbSlot slots[PGCLOUD_MAX_DATABASES];
} PgcloudWorkersShared;

extern PgcloudWorkersShared *PgcloudWorkers;

extern void PgcloudWorkersInit(void);
extern const char *PgcloudWorkerKindName(PgcloudWorkerKind kind);

/* Wakes this database's worker of a kind when the current transaction commits. */
extern void PgcloudWakeAtCommit(PgcloudWorkerKind kind);
extern bool PgcloudWakePending(PgcloudWorkerKind kind);
extern void PgcloudRelayWakeAtCommit(void);

/* Worker plumbing shared by the per-database workers (common.c). */
extern volatile sig_atomic_t PgcloudGotSighup;
extern void PgcloudWorkerSetup(PgcloudWorkerKind kind, int slot);
extern bool PgcloudWorkerCheckInstalled(void);
extern void PgcloudWorkerTeardown(int code, Datum arg);
extern void PgcloudWorkerNoteActivity(int64 processed, int64 failures);
extern void PgcloudWorkerNoteError(const char *message);
extern void PgcloudWorkerHandleInterrupts(void);
extern void PgcloudWorkerBeginWork(const char *activity);
extern void PgcloudWorkerEndWork(void);

/*
 * One unit of work: fn(arg) in a transaction of its own (SPI connected, a
 * snapshot, activity reported to pgstat), committed. Returns NULL when it
 * committed; when it raised an error, rolls it back, notes the error
 * (scrubbed) in this worker's shared-memory state and returns its message,
 * allocated in the caller's memory context (which is current again on
 * return). Called outside a transaction. The caller logs and backs off.
 */
typedef void (*PgcloudUnitFn) (void *arg);
extern char *PgcloudRunUnit(const char *activity, PgcloudUnitFn fn, void *arg);

/*
 * Inside a unit of work: fn in a subtransaction of its own; NULL, or the
 * error message (allocated in keep) after rolling back that subtransaction.
 */
extern char *PgcloudRunSubUnit(PgcloudUnitFn fn, void *arg, MemoryContext keep);

/* Exponential back-off: Min(base_ms << Min(failures, max_shift), cap_ms). */
extern long PgcloudBackoffMs(int failures, long base_ms, int max_shift, long cap_ms);
extern int	PgcloudMySlot;
extern PgcloudWorkerKind PgcloudMyKind;

PGDLLEXPORT void pgcloud_launcher_main(Datum arg);
PGDLLEXPORT void pgcloud_relay_main(Datum arg);
PGDLLEXPORT void pgcloud_consumer_main(Datum arg);
PGDLLEXPORT void pgcloud_http_main(Datum arg);
PGDLLEXPORT void pgcloud_scheduler_main(Datum arg);

/* nats.c (bgworkers/nats_link.c) */
struct natsConnection;
extern bool PgcloudNatsMode(void);

#endif
