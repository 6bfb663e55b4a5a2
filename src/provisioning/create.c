/*
 * create.c — api.create_allocation(): authorize, idempotency, standing,
 * keys, the live allocation limit and the balance reservation, placement
 * (find and claim in one statement), the events and the audit entry, in one
 * C function.
 *
 * It was a chain of PL/pgSQL functions (api.create_allocation, authorize,
 * idempotent, idempotent_done, create_allocation_apply, require_user), each
 * with its own SET clauses, saved and restored per call, and each statement
 * and expression interpreted. Here the statements are the same SQL, prepared
 * once per backend with generic plans (SPI_prepare_cursor with
 * CURSOR_OPT_GENERIC_PLAN + SPI_keepplan: a custom plan per placement would
 * cost as much as running it) and planned by index (the function's SET
 * enable_seqscan = off: a plan made while a table is nearly empty would
 * otherwise read it whole as it fills). The function is SECURITY DEFINER
 * with its search_path pinned; every name below is qualified anyway.
 *
 * Placement policy, preferences and guarantees: see 00_catalogue.sql and
 * 30_create.sql (claim_node(), which the second attempt calls).
 */
#include "pgcloud.h"

#include "catalog/pg_collation.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/numeric.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(pgcloud_provisioning_create_allocation);

extern Datum pgcloud_audit(PG_FUNCTION_ARGS);

#define OPERATION "provisioning.create_allocation"

/* What the allocation's insert (and the shortfall's update) return. */
#define ALLOCATION_OUT \
	"x.id::text, x.node_hostname, pg_catalog.cardinality(x.slot_indexes), provisioning.allocation_json(x), " \
	"pg_catalog.jsonb_build_object('allocation_id', x.id, 'user_id', x.user_id, 'sku', x.sku, 'image', x.image, " \
	"    'gpu_count', x.gpu_count, 'region', x.region, 'node_id', x.node_id, " \
	"    'node_hostname', x.node_hostname, 'slots', pg_catalog.to_jsonb(x.slot_indexes), " \
	"    'price_per_hour', x.price_per_hour, 'currency', x.currency, 'requested_at', x.requested_at), " \
	"pg_catalog.jsonb_build_object('allocation_id', x.id, 'user_id', x.user_id, 'node_id', x.node_id, " \
	"    'maas_system_id', x.maas_system_id, 'node_hostname', x.node_hostname, " \
	"    'image', x.image, 'distro_series', x.distro_series, " \
	"    'ssh_public_keys', pg_catalog.to_jsonb(x.ssh_public_keys)), " \
	"pg_catalog.jsonb_build_object('allocation_id', x.id, 'user_id', x.user_id, 'sku', x.sku, 'node_id', x.node_id, " \
	"    'node_hostname', x.node_hostname, 'provisioning_at', x.provisioning_at), " \
	"pg_catalog.jsonb_build_object('sku', x.sku, 'image', x.image, 'node', x.node_hostname, " \
	"    'slots', pg_catalog.to_jsonb(x.slot_indexes), 'price_per_hour', x.price_per_hour, 'currency', x.currency)"

enum
{
	OUT_ID = 1, OUT_HOSTNAME, OUT_NSLOTS, OUT_JSON, OUT_REQUESTED, OUT_DEPLOY, OUT_PROVISIONING, OUT_AUDIT
};

/*
 * Under the user's lock (taken just before: one user's creations are
 * serialised), with a snapshot taken after it was granted: the SKU, the
 * image, billing's report as it is now, the user's live allocations (how
 * many, what their first intervals reserve: $4 is the accrual interval, NULL
 * without the reservation) and what this one reserves on top.
 */
static const char read_sql[] =
	"SELECT s.code, s.gpu_model, s.gpu_count, s.region, s.price_per_hour, s.currency, "
	"       i.code, i.distro_series, "
	"       x.user_id IS NOT NULL, x.standing, x.balance::text, x.currency, x.balance, x.min_balance_to_allocate, "
	"       l.n, l.reserved::text, l.reserved + pg_catalog.ceil(s.price_per_hour::numeric * $4 / 3600) "
	"  FROM (SELECT pg_catalog.count(*) AS n, "
	"               coalesce(pg_catalog.sum(pg_catalog.ceil(y.price_per_hour::numeric * $4 / 3600)), 0) AS reserved "
	"          FROM provisioning.allocations y "
	"         WHERE y.user_id = $3 AND y.state IN ('requested', 'provisioning', 'active', 'releasing')) l "
	"  LEFT JOIN provisioning.skus s ON s.code = $1 "
	"  LEFT JOIN provisioning.images i ON i.code = $2 "
	"  LEFT JOIN provisioning.account_standing x ON x.user_id = $3";

/* The caller's keys asked for, in the order given, each once. */
static const char key_ids_sql[] =
	"SELECT ARRAY(SELECT u.id FROM (SELECT x.e AS id, pg_catalog.min(x.o) AS o "
	"                                 FROM pg_catalog.unnest($1::uuid[]) WITH ORDINALITY x (e, o) "
	"                                GROUP BY 1) u "
	"              WHERE u.id IS NOT NULL ORDER BY u.o)";
static const char keys_sql[] =
	"SELECT ARRAY(SELECT s.public_key FROM pg_catalog.unnest($1::uuid[]) WITH ORDINALITY u (id, o) "
	"               JOIN provisioning.ssh_keys s ON s.key_id = u.id AND s.user_id = $2 ORDER BY u.o)";
static const char missing_keys_sql[] =
	"SELECT pg_catalog.string_agg(u.id::text, ', ') FROM pg_catalog.unnest($1::uuid[]) u (id) "
	" WHERE NOT EXISTS (SELECT 1 FROM provisioning.ssh_keys s WHERE s.key_id = u.id AND s.user_id = $2)";

/*
 * Find and claim in one statement: the node (a node of the user's already
 * running the image, else an idle one with the image cached, else the
 * fullest idle one that fits; each preference read in index order, nodes
 * held by concurrent placements skipped, and a preference read only when
 * the ones before it found nothing), locked, with the allocation and its
 * lowest free slots, and the node's counts updated. The primary key of the
 * claims is the last line: a slot taken by a transaction that committed
 * after this statement's snapshot is skipped (ON CONFLICT), never double
 * booked.
 * The allocation is written once, as it leaves this transaction: placed,
 * with its deploy intent (requested -> provisioning happens within this
 * transaction, which no other one sees; the row starts in provisioning, an
 * initial state allocation_transitions allows). maas deploys the node (or
 * joins the deployment it already has) and answers with
 * maas.machine_deployed or maas.deploy_failed.
 */
/* (after the node CTE: the claims, the node's counts, the allocation) */
#define PLACE_CLAIM_AND_WRITE \
	"), claim AS ( " \
	"    INSERT INTO provisioning.slot_claims (node_id, slot_index, allocation_id) " \
	/* the node's claimed slots read once, by its index (an anti-join would hash every claim of the fleet) */ \
	"    SELECT node.node_id, i, $7 " \
	"      FROM node " \
	"     CROSS JOIN LATERAL (SELECT ARRAY(SELECT c.slot_index FROM provisioning.slot_claims c " \
	"                                       WHERE c.node_id = node.node_id) OFFSET 0) t (taken) " \
	"     CROSS JOIN LATERAL pg_catalog.generate_series(0, node.slot_count - 1) i " \
	"     WHERE i <> ALL (t.taken) " \
	"     ORDER BY i LIMIT $6 " \
	"    ON CONFLICT DO NOTHING " \
	"    RETURNING slot_index " \
	"), taken AS ( " \
	/* the node's counts, image and user (the row is ours: locked above) */ \
	"    UPDATE provisioning.nodes x " \
	"       SET free_slots = x.free_slots - $6, live_allocations = x.live_allocations + 1, " \
	"           current_image = $3, current_user_id = coalesce(x.current_user_id, $2) " \
	"      FROM node " \
	"     WHERE x.node_id = node.node_id " \
	") " \
	"INSERT INTO provisioning.allocations AS x (id, user_id, sku, image, distro_series, gpu_count, region, " \
	"                                          price_per_hour, currency, node_id, node_hostname, maas_system_id, " \
	"                                          ssh_key_ids, ssh_public_keys, slot_indexes, state, provisioning_at) " \
	"SELECT $7, $2, $8, $3, $9, $6, $5, $10, $11, node.node_id, node.hostname, node.maas_system_id, $12, $13, " \
	"       coalesce((SELECT pg_catalog.array_agg(c.slot_index ORDER BY c.slot_index) FROM claim c), '{}'), " \
	"       'provisioning', pg_catalog.now() " \
	"  FROM node " \
	"RETURNING " ALLOCATION_OUT

static const char place_sql[] =
	"WITH node AS ( "
	"    SELECT u.node_id, u.slot_count, u.hostname, u.maas_system_id FROM ( "
	"        (SELECT y.* FROM ( "
	"            SELECT x.node_id, x.slot_count, x.hostname, x.maas_system_id FROM provisioning.nodes x "
	"             WHERE x.state = 'ready' AND x.current_user_id = $2 "
	"               AND x.current_image = $3 AND x.gpu_model = $4 AND x.region = $5 "
	"               AND x.free_slots >= $6 "
	"             ORDER BY x.free_slots, x.node_id LIMIT 1 "
	"               FOR UPDATE SKIP LOCKED) y) "
	"        UNION ALL "
	"        (SELECT y.* FROM ( "
	"            SELECT x.node_id, x.slot_count, x.hostname, x.maas_system_id "
	"              FROM provisioning.idle_node_images c JOIN provisioning.nodes x ON x.node_id = c.node_id "
	"             WHERE c.image = $3 AND c.gpu_model = $4 "
	"               AND c.region = $5 AND c.free_slots >= $6 "
	"               AND x.state = 'ready' AND x.current_image IS NULL AND x.free_slots >= $6 "
	"             ORDER BY c.free_slots, c.node_id LIMIT 1 "
	"               FOR UPDATE OF x SKIP LOCKED) y) "
	"        UNION ALL "
	"        (SELECT y.* FROM ( "
	"            SELECT x.node_id, x.slot_count, x.hostname, x.maas_system_id FROM provisioning.nodes x "
	"             WHERE x.state = 'ready' AND x.current_image IS NULL "
	"               AND x.gpu_model = $4 AND x.region = $5 AND x.free_slots >= $6 "
	"             ORDER BY x.free_slots, x.node_id LIMIT 1 "
	"               FOR UPDATE SKIP LOCKED) y) "
	"    ) u LIMIT 1 "
	PLACE_CLAIM_AND_WRITE;

/* The same onto the node claim_node() locked ($1), on the second attempt. */
static const char place_on_sql[] =
	"WITH node AS ( "
	"    SELECT x.node_id, x.slot_count, x.hostname, x.maas_system_id FROM provisioning.nodes x WHERE x.node_id = $1 "
	PLACE_CLAIM_AND_WRITE;

/*
 * Every fitting node is held by a concurrent placement, or none fits:
 * claim_node() waits for the best one (or raises capacity_unavailable).
 */
static const char claim_node_sql[] =
	"SELECT (provisioning.claim_node(k, $2, $3)).node_id FROM provisioning.skus k WHERE k.code = $1";

/*
 * A placement that committed after the find-and-claim's snapshot took some
 * of the slots. The node's lock is ours now, so a fresh look sees every
 * claim: take the rest (and write the allocation's slots again; this path
 * alone updates the row).
 */
static const char rest_sql[] =
	"WITH c AS ( "
	"    INSERT INTO provisioning.slot_claims (node_id, slot_index, allocation_id) "
	"    SELECT a.node_id, i, a.id FROM provisioning.allocations a, provisioning.nodes x, "
	"           pg_catalog.generate_series(0, x.slot_count - 1) i "
	"     WHERE a.id = $1 AND x.node_id = a.node_id "
	"       AND i <> ALL (ARRAY(SELECT y.slot_index FROM provisioning.slot_claims y WHERE y.node_id = a.node_id)) "
	"     ORDER BY i LIMIT $2 - (SELECT pg_catalog.cardinality(a.slot_indexes) FROM provisioning.allocations a "
	"                            WHERE a.id = $1) "
	"    ON CONFLICT DO NOTHING "
	"    RETURNING slot_index) "
	"SELECT pg_catalog.array_agg(s ORDER BY s) FROM ( "
	"    SELECT pg_catalog.unnest(a.slot_indexes) FROM provisioning.allocations a WHERE a.id = $1 "
	"    UNION ALL SELECT c.slot_index FROM c) z (s)";
static const char rewrite_slots_sql[] =
	"UPDATE provisioning.allocations x SET slot_indexes = $2 WHERE x.id = $1 RETURNING " ALLOCATION_OUT;

static const char idempotent_sql[] =
	"SELECT pgcloud.idempotent('" OPERATION "', "
	"    pg_catalog.jsonb_build_object('sku', $1, 'image', $2, 'ssh_key_ids', pg_catalog.to_jsonb($3)))";
static const char idempotent_done_sql[] =
	"SELECT pgcloud.idempotent_done('" OPERATION "', $1)";

static SPIPlanPtr read_plan, key_ids_plan, keys_plan, missing_keys_plan, place_plan, place_on_plan,
			claim_node_plan, rest_plan, rewrite_slots_plan, idempotent_plan, idempotent_done_plan;

/* A kept plan, generic from its first run (see the top of the file). */
static SPIPlanPtr
generic_plan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan;

	if (*cache != NULL)
		return *cache;
	plan = SPI_prepare_cursor(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed for \"%s\"", sql);
	*cache = plan;
	return plan;
}

/*
 * Not read-only: each takes a new snapshot, as a
 * PL/pgSQL statement of a VOLATILE function does. The live count relies on
 * it: its snapshot is taken after the user's lock was granted, so it sees
 * the creation that held the lock before (provisioning_user_limit).
 */
static void
run(SPIPlanPtr plan, Datum *values, const char *nulls, int expected)
{
	int			ret = SPI_execute_plan(plan, values, nulls, false, 0);

	if (ret != expected)
		elog(ERROR, "placement statement failed: %s", SPI_result_code_string(ret));
}

/* Column n of the first row of the last statement; *isnull set. */
static Datum
col(int n, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, n, isnull);
}

/* Column n as text, or NULL (format('%s') shows it as ""). */
static char *
col_text(int n)
{
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, n);
}

/* The same, of a row kept from an earlier statement. */
static Datum
row_col(SPITupleTable *t, int n, bool *isnull)
{
	return SPI_getbinval(t->vals[0], t->tupdesc, n, isnull);
}

static char *
row_text(SPITupleTable *t, int n)
{
	return SPI_getvalue(t->vals[0], t->tupdesc, n);
}

static const char *
or_empty(const char *s)
{
	return s == NULL ? "" : s;
}

/* left(s, 64) */
static char *
left64(text *t)
{
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);

	return pnstrdup(s, pg_mbcharcliplen(s, len, 64));
}

static int64
policy_int(const char *key, Oid typid, bool *isnull)
{
	Datum		d = PgcloudPolicyDatum(key, typid, isnull);

	if (*isnull)
		return 0;
	return typid == INT4OID ? DatumGetInt32(d) : DatumGetInt64(d);
}

/*
 * api.create_allocation(sku text, image text, ssh_key_ids uuid[] DEFAULT '{}') RETURNS jsonb
 */
Datum
pgcloud_provisioning_create_allocation(PG_FUNCTION_ARGS)
{
	text	   *p_sku = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	text	   *p_image = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
	ArrayType  *p_keys = PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2);
	bool		keyed;
	char	   *user_text;
	Datum		user;
	Datum		result;
	MemoryContext caller_cxt = CurrentMemoryContext;

	PgcloudAuthorizeUser();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/*
	 * Idempotency: with an X-Idempotency-Key, pgcloud.idempotent() decides
	 * (a stored response is returned as it is); without one it would return
	 * NULL and idempotent_done() the response: neither is called.
	 */
	keyed = PgcloudRequestHasHeader("x-idempotency-key");
	if (keyed)
	{
		Oid			types[3] = {TEXTOID, TEXTOID, UUIDARRAYOID};
		Datum		values[3] = {PointerGetDatum(p_sku), PointerGetDatum(p_image), PointerGetDatum(p_keys)};
		char		nulls[3] = {p_sku ? ' ' : 'n', p_image ? ' ' : 'n', p_keys ? ' ' : 'n'};
		bool		isnull;
		Datum		prior;

		run(generic_plan(&idempotent_plan, idempotent_sql, 3, types), values, nulls, SPI_OK_SELECT);
		prior = col(1, &isnull);
		if (!isnull)
		{
			prior = SPI_datumTransfer(prior, false, -1);
			SPI_finish();
			PG_RETURN_DATUM(prior);
		}
	}

	/* pgcloud.require_user() */
	user_text = PgcloudRequestUserId();
	if (user_text == NULL)
		PgcloudRaise("unauthenticated", "this call needs a signed-in user (the JWT sub claim)", NULL, NULL);
	user = DirectFunctionCall1(uuid_in, CStringGetDatum(user_text));

	{
		bool		max_keys_null,
					max_live_null;
		int64		max_keys = policy_int("provisioning.max_ssh_keys_per_allocation", INT4OID, &max_keys_null);
		int64		max_live = policy_int("provisioning.max_live_allocations_per_user", INT4OID, &max_live_null);
		bool		isnull;
		char	   *sku_code,
				   *gpu_model,
				   *region,
				   *currency,
				   *distro_series,
				   *standing;
		int32		gpu_count;
		int64		price;
		int64		balance = 0;
		bool		balance_null;
		int64		need = 0;
		bool		need_null;
		Datum		key_ids;
		Datum		keys;
		bool		reserve,
					reserve_null;
		int64		secs = 0;
		bool		secs_null = true;
		Datum		alloc_id;
		Datum		node = (Datum) 0;
		bool		placed = false;
		HeapTuple	out = NULL;
		TupleDesc	outdesc = NULL;
		SPITupleTable *rd;

		if (p_sku == NULL || p_image == NULL)
			PgcloudRaise("invalid_argument", "sku and image are required", NULL, NULL);

		/*
		 * One user's creations are serialised, so the limit holds, and so
		 * does the balance check, which is a reservation: every live
		 * allocation of the user, and this one, holds its first accrual
		 * interval against the balance (policy
		 * provisioning.reserve_first_interval), so concurrent creations
		 * cannot overdraw it. The lock is taken before the one statement
		 * that reads everything (its snapshot is taken after the lock was
		 * granted: it sees what the creation that held it committed).
		 */
		{
			char	   *lock_key = psprintf("provisioning.allocations/%s",
											DatumGetCString(DirectFunctionCall1(uuid_out, user)));

			DirectFunctionCall1(pg_advisory_xact_lock_int8,
								DirectFunctionCall2Coll(hashtextextended, DEFAULT_COLLATION_OID,
														CStringGetTextDatum(lock_key), Int64GetDatum(0)));
		}
		{
			Datum		d = PgcloudPolicyDatum("provisioning.reserve_first_interval", BOOLOID, &reserve_null);

			reserve = !reserve_null && DatumGetBool(d);
		}
		if (reserve)
			secs = policy_int("billing.accrual_interval_seconds", INT8OID, &secs_null);
		{
			Oid			types[4] = {TEXTOID, TEXTOID, UUIDOID, INT8OID};
			Datum		values[4] = {PointerGetDatum(p_sku), PointerGetDatum(p_image), user, Int64GetDatum(secs)};
			char		nulls[4] = {' ', ' ', ' ', secs_null ? 'n' : ' '};

			run(generic_plan(&read_plan, read_sql, 4, types), values, nulls, SPI_OK_SELECT);
			rd = SPI_tuptable;
		}
		sku_code = row_text(rd, 1);
		if (sku_code == NULL)
			PgcloudRaise("sku_not_found", psprintf("no SKU %s", left64(p_sku)), "See api.list_skus().", NULL);
		gpu_model = row_text(rd, 2);
		gpu_count = DatumGetInt32(row_col(rd, 3, &isnull));
		region = row_text(rd, 4);
		price = DatumGetInt64(row_col(rd, 5, &isnull));
		currency = row_text(rd, 6);
		if (row_text(rd, 7) == NULL)
			PgcloudRaise("image_not_found", psprintf("no image %s", left64(p_image)), "See api.list_images().", NULL);
		distro_series = row_text(rd, 8);

		/*
		 * Standing, from billing's last report: refused unless good or low
		 * with a balance of at least min_balance_to_allocate
		 * (insufficient_balance, 402, for no report, standing insufficient
		 * or exhausted, or a low balance; account_not_in_good_standing, 403,
		 * for any other standing).
		 */
		if (!DatumGetBool(row_col(rd, 9, &isnull)))
			PgcloudRaise("insufficient_balance",
						 "billing has not reported a balance for this account yet; a new account has a balance of 0",
						 "Top up your balance; allocations can be created once it covers the minimum.", NULL);
		standing = row_text(rd, 10);
		if (strcmp(standing, "insufficient") == 0 || strcmp(standing, "exhausted") == 0)
			PgcloudRaise("insufficient_balance",
						 psprintf("billing reports the account as %s (balance %s %s)", standing,
								  or_empty(row_text(rd, 11)), or_empty(row_text(rd, 12))),
						 "Top up your balance.", NULL);
		if (strcmp(standing, "good") != 0 && strcmp(standing, "low") != 0)
			PgcloudRaise("account_not_in_good_standing",
						 psprintf("billing reports the account as %s", standing), "Contact support.", NULL);
		balance = DatumGetInt64(row_col(rd, 13, &balance_null));
		need = DatumGetInt64(row_col(rd, 14, &need_null));
		if (need_null)
			need = policy_int("billing.min_balance_to_allocate", INT8OID, &need_null);
		if (balance_null || (!need_null && balance < need))
			PgcloudRaise("insufficient_balance",
						 psprintf("the balance is %s %s; creating an allocation needs at least %s",
								  balance_null ? "unknown" : row_text(rd, 11), or_empty(row_text(rd, 12)),
								  need_null ? "" : psprintf(INT64_FORMAT, need)),
						 "Top up your balance.", NULL);

		/* SSH keys: the caller's own, in the order given, each once (none asked for: nothing to read). */
		if (p_keys == NULL || ArrayGetNItems(ARR_NDIM(p_keys), ARR_DIMS(p_keys)) == 0)
		{
			key_ids = PointerGetDatum(construct_empty_array(UUIDOID));
			keys = PointerGetDatum(construct_empty_array(TEXTOID));
		}
		else
		{
			Oid			types[2] = {UUIDARRAYOID, UUIDOID};
			Datum		values[2];
			int			nkeys;

			values[0] = PointerGetDatum(p_keys);
			run(generic_plan(&key_ids_plan, key_ids_sql, 1, types), values, NULL, SPI_OK_SELECT);
			key_ids = col(1, &isnull);
			nkeys = ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(key_ids)), ARR_DIMS(DatumGetArrayTypeP(key_ids)));
			if (!max_keys_null && nkeys > max_keys)
				PgcloudRaise("invalid_argument", psprintf("at most " INT64_FORMAT " SSH keys per allocation", max_keys),
							 NULL, NULL);
			values[0] = key_ids;
			values[1] = user;
			run(generic_plan(&keys_plan, keys_sql, 2, types), values, NULL, SPI_OK_SELECT);
			keys = col(1, &isnull);
			if (ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(keys)), ARR_DIMS(DatumGetArrayTypeP(keys))) != nkeys)
			{
				run(generic_plan(&missing_keys_plan, missing_keys_sql, 2, types), values, NULL, SPI_OK_SELECT);
				PgcloudRaise("allocation_ssh_key_not_found",
							 psprintf("not your SSH key: %s", or_empty(col_text(1))),
							 "See api.list_ssh_keys(); a key added a moment ago may take a second to be known here.",
							 NULL);
			}
		}

		/* The limit and the reservation, from the same row. */
		{
			int64		n_live = DatumGetInt64(row_col(rd, 15, &isnull));

			if (!max_live_null && n_live >= max_live)
				PgcloudRaise("allocation_limit_reached",
							 psprintf("at most " INT64_FORMAT " live allocations per user", max_live),
							 "Release an allocation you no longer use.", NULL);
			if (reserve)
			{
				bool		extra_null;
				Datum		extra = row_col(rd, 17, &extra_null);
				bool		bal_null;
				Datum		bal = row_col(rd, 13, &bal_null);
				bool		min_null;
				int64		min = DatumGetInt64(row_col(rd, 14, &min_null));
				Datum		needn = (Datum) 0;
				bool		short_of;

				if (min_null)
					min = policy_int("billing.min_balance_to_allocate", INT8OID, &min_null);
				need_null = min_null || extra_null;
				if (!need_null)
					needn = DirectFunctionCall2(numeric_add, NumericGetDatum(int64_to_numeric(min)), extra);
				short_of = bal_null ||
					(!need_null && DatumGetBool(DirectFunctionCall2(numeric_lt,
																	NumericGetDatum(int64_to_numeric(DatumGetInt64(bal))),
																	needn)));
				if (short_of)
					PgcloudRaise("insufficient_balance",
								 psprintf("the balance is %s %s; with the first interval of your " INT64_FORMAT
										  " live allocation(s) reserved (%s), another needs at least %s",
										  bal_null ? "unknown" : row_text(rd, 11), or_empty(row_text(rd, 12)), n_live,
										  or_empty(row_text(rd, 16)),
										  need_null ? "" : DatumGetCString(DirectFunctionCall1(numeric_out, needn))),
								 "Top up your balance, or release an allocation.", NULL);
			}
		}

		{
			bool		tenancy_null;
			Datum		tenancy = PgcloudPolicyDatum("provisioning.node_tenancy", TEXTOID, &tenancy_null);

			/*
			 * A deployment has one default user: co-tenants would share it
			 * and each other's keys. Refused until each tenant gets its own
			 * account.
			 */
			if (!tenancy_null && strcmp(TextDatumGetCString(tenancy), "shared") == 0)
				PgcloudRaise("policy_invalid",
							 "provisioning.node_tenancy = shared is refused: the nodes would give every co-tenant the same account and keys",
							 "Set provisioning.node_tenancy to single.", NULL);
		}

		alloc_id = DirectFunctionCall1(gen_random_uuid, (Datum) 0);
		for (int attempt = 1; attempt <= 2 && !placed; attempt++)
		{
			Oid			types[13] = {UUIDOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, UUIDOID, TEXTOID,
			TEXTOID, INT8OID, TEXTOID, UUIDARRAYOID, TEXTARRAYOID};
			Datum		values[13] = {node, user, PointerGetDatum(p_image), CStringGetTextDatum(gpu_model),
				CStringGetTextDatum(region), Int32GetDatum(gpu_count), alloc_id,
				CStringGetTextDatum(sku_code), CStringGetTextDatum(distro_series),
				Int64GetDatum(price), CStringGetTextDatum(currency), key_ids, keys};
			char		nulls[13] = {attempt == 1 ? 'n' : ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

			if (attempt == 1)
				run(generic_plan(&place_plan, place_sql, 13, types), values, nulls, SPI_OK_INSERT_RETURNING);
			else
				run(generic_plan(&place_on_plan, place_on_sql, 13, types), values, nulls, SPI_OK_INSERT_RETURNING);
			if (SPI_processed == 1)
			{
				placed = true;
				out = SPI_tuptable->vals[0];
				outdesc = SPI_tuptable->tupdesc;
				break;
			}
			if (attempt == 2)
				break;
			{
				Oid			ctypes[3] = {TEXTOID, TEXTOID, UUIDOID};
				Datum		cvalues[3] = {CStringGetTextDatum(sku_code), PointerGetDatum(p_image), user};

				run(generic_plan(&claim_node_plan, claim_node_sql, 3, ctypes), cvalues, NULL, SPI_OK_SELECT);
				if (SPI_processed != 1)
					break;
				node = col(1, &isnull);
				if (isnull)
					break;
			}
		}
		if (!placed)
			PgcloudRaise("capacity_unavailable",
						 psprintf("no ready %s node in %s has %d free slots for image %s",
								  gpu_model, region, gpu_count, text_to_cstring(p_image)),
						 "See api.marketplace() for free capacity, or try again later.", NULL);

		if (DatumGetInt32(SPI_getbinval(out, outdesc, OUT_NSLOTS, &isnull)) < gpu_count)
		{
			Oid			types[2] = {UUIDOID, INT4OID};
			Datum		values[2] = {alloc_id, Int32GetDatum(gpu_count)};
			char	   *hostname = SPI_getvalue(out, outdesc, OUT_HOSTNAME);
			Datum		slots;
			int			nslots;

			run(generic_plan(&rest_plan, rest_sql, 2, types), values, NULL, SPI_OK_SELECT);
			slots = col(1, &isnull);
			nslots = isnull ? 0 : ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(slots)),
												 ARR_DIMS(DatumGetArrayTypeP(slots)));
			if (nslots != gpu_count)
				PgcloudRaise("capacity_conflict",
							 psprintf("node %s had %d of %d slots free", hostname, nslots, gpu_count), NULL, NULL);
			types[1] = INT4ARRAYOID;
			values[1] = slots;
			run(generic_plan(&rewrite_slots_plan, rewrite_slots_sql, 2, types), values, NULL,
				SPI_OK_UPDATE_RETURNING);
			out = SPI_tuptable->vals[0];
			outdesc = SPI_tuptable->tupdesc;
		}

		/*
		 * The allocation was inserted by this transaction, which no other
		 * one sees: nothing else emits for it before this commits
		 * (aggregate_locked).
		 */
		{
			text	   *agg_type = cstring_to_text("allocation");
			text	   *agg_id = cstring_to_text(SPI_getvalue(out, outdesc, OUT_ID));

			(void) PgcloudEmit(cstring_to_text("allocation.requested"), agg_type, agg_id,
							   DatumGetJsonbP(SPI_getbinval(out, outdesc, OUT_REQUESTED, &isnull)), true);
			(void) PgcloudEmit(cstring_to_text("deploy.requested"), agg_type, agg_id,
							   DatumGetJsonbP(SPI_getbinval(out, outdesc, OUT_DEPLOY, &isnull)), true);
			(void) PgcloudEmit(cstring_to_text("allocation.provisioning"), agg_type, agg_id,
							   DatumGetJsonbP(SPI_getbinval(out, outdesc, OUT_PROVISIONING, &isnull)), true);
			(void) DirectFunctionCall5(pgcloud_audit, CStringGetTextDatum("allocation.created"),
									   PointerGetDatum(agg_type), PointerGetDatum(agg_id),
									   CStringGetTextDatum("ok"), SPI_getbinval(out, outdesc, OUT_AUDIT, &isnull));
		}
		result = SPI_getbinval(out, outdesc, OUT_JSON, &isnull);
	}

	if (keyed)
	{
		Oid			types[1] = {JSONBOID};
		Datum		values[1] = {result};
		bool		isnull;

		run(generic_plan(&idempotent_done_plan, idempotent_done_sql, 1, types), values, NULL, SPI_OK_SELECT);
		result = col(1, &isnull);
	}
	result = SPI_datumTransfer(result, false, -1);
	SPI_finish();
	MemoryContextSwitchTo(caller_cxt);
	PG_RETURN_DATUM(result);
}
