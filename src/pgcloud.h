/*
 * pgcloud.h — the prelude: PostgreSQL headers included once, shared
 * declarations of the core subsystems.
 */
#ifndef PGCLOUD_H
#define PGCLOUD_H

#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/elog.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#if PG_VERSION_NUM < 150000
#error "pgcloud requires PostgreSQL 15 or later"
#endif

#ifndef EXTVERSION
#error "EXTVERSION must be defined by the build"
#endif

/* SQLSTATE of PostgREST's custom errors: the message and detail carry JSON. */
#define PGCLOUD_ERRCODE_PGRST MAKE_SQLSTATE('P', 'G', 'R', 'S', 'T')

/* guc.c */
extern char *pgcloud_databases;
extern char *pgcloud_nats_url;
extern char *pgcloud_nats_credentials;
extern char *pgcloud_stripe_api_url;
extern char *pgcloud_stripe_secret_key;
extern char *pgcloud_stripe_webhook_secrets;
extern char *pgcloud_maas_url;
extern char *pgcloud_maas_api_key;
extern char *pgcloud_smtp_url;
extern char *pgcloud_test_http_url;
extern char *pgcloud_ca_bundle;
extern char *pgcloud_key_file;
extern char *pgcloud_correlation_id;
extern int	pgcloud_rate_limit_max_principals;
extern char *pgcloud_s3_endpoint;
extern char *pgcloud_s3_region;
extern char *pgcloud_s3_bucket;
extern char *pgcloud_s3_access_key_id;
extern char *pgcloud_s3_secret_access_key;
extern bool pgcloud_s3_path_style;
extern void PgcloudGucInit(void);

/* context.c: the request context. */
extern Jsonb *PgcloudRequestJson(const char *setting);
extern char *PgcloudRequestField(const char *setting, const char *field);
extern char *PgcloudRequestRole(void);
extern char *PgcloudRequestUserId(void);
extern char *PgcloudCorrelationId(void);
/* A new random (version 4) uuid, palloc'd. */
extern struct pg_uuid_t *PgcloudRandomUuid(void);
extern bool PgcloudRequestHasHeader(const char *lname);
extern void PgcloudAuthorizeUser(void);

/* errors.c: raise a catalogued API error (never returns). */
extern void PgcloudRaise(const char *code, const char *details,
						 const char *hint, const char *headers_json) pg_attribute_noreturn();

/* plan.c: a prepared SPI plan, kept and cached in *cache on first use. */
extern SPIPlanPtr PgcloudPlan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes);
extern int	PgcloudExecPlan(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only, long count);
extern int	PgcloudExecPlanLatest(SPIPlanPtr plan, Datum *values, const char *nulls, long count);
extern Oid	PgcloudCoreRelOwner(const char *relname, Oid *relid);

/* policy.c: read a policy value; raises policy_missing when absent. */
extern Jsonb *PgcloudPolicyJsonb(const char *key);
extern double PgcloudPolicyNumber(const char *key);
extern Datum PgcloudPolicyDatum(const char *key, Oid typid, bool *isnull);

/* outbox.c: dotted lower-case event type, at most 128 bytes; emit() for C callers. */
extern bool PgcloudValidEventType(const char *s, size_t len);
extern bool PgcloudDottedName(const char *s, size_t len);
/* Building jsonb objects with pushJsonbValue() (outbox.c). */
extern Jsonb *PgcloudEmptyJsonbObject(void);
extern void PgcloudJsonbPushKey(JsonbParseState **st, const char *key);
extern void PgcloudJsonbPushString(JsonbParseState **st, const char *key, const char *s, int len);

/* A single-row insert into a core table, without a planned statement (outbox.c). */
typedef struct PgcloudRowInsert
{
	Relation	rel;
	struct EState *estate;
	struct ResultRelInfo *rri;
	struct TupleTableSlot *slot;
} PgcloudRowInsert;
extern void PgcloudRowInsertBegin(PgcloudRowInsert *ins, Oid relid);
extern void PgcloudRowInsertFinish(PgcloudRowInsert *ins);
extern struct pg_uuid_t *PgcloudEmit(text *event_type, text *aggregate_type, text *aggregate_id, Jsonb *payload,
									 bool aggregate_locked);
extern Oid	PgcloudIdentitySequence(Oid relid, AttrNumber attnum);
extern bool PgcloudEventMatches(const char *pattern, size_t plen, const char *type, size_t tlen);

/* log_scrub.c */
extern void PgcloudLogScrubInit(void);
extern char *PgcloudSanitizeCString(const char *in, size_t len, int *nredacted);
extern Jsonb *PgcloudSanitizeJsonb(Jsonb *in);

/* bgworkers/shmem.c: wake this database's relay when the transaction commits. */
extern void PgcloudRelayWakeAtCommit(void);
extern void PgcloudWorkersInit(void);

/* ratelimit.c */
extern void PgcloudRateLimitInit(void);

#endif							/* PGCLOUD_H */
