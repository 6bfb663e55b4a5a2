/*
 * ledger.c — the running balance of the ledger, kept by a C trigger.
 *
 *   CREATE TRIGGER ledger_entries_post BEFORE INSERT ON billing.ledger_entries
 *       FOR EACH ROW EXECUTE FUNCTION billing.ledger_post();
 *
 * For each new entry:
 *
 *   1. SELECT currency FROM billing.accounts WHERE account_id = $1 FOR NO KEY UPDATE
 *      takes the account's row lock until the end of the transaction (an
 *      account seen for the first time is opened in the entry's currency);
 *      two postings to one account are serialised, postings to different
 *      accounts are not. Locking writes no new row version, so a
 *      transaction posting thousands of entries to one account leaves no
 *      trail of dead versions behind.
 *   2. With the lock held, the account's newest entry is read through the
 *      index (account_id, id), backwards, under the latest snapshot (after a
 *      CommandCounterIncrement, so this command's own earlier rows count too):
 *      whatever the caller's isolation level, it is the last committed or own
 *      entry of the account.
 *   3. The entry gets id = nextval(billing.ledger_entries_id_seq), drawn
 *      under the lock (within an account id order is posting order), and
 *      balance_after = the newest entry's balance_after + amount, whatever
 *      the INSERT said. An entry in another currency than its account's is
 *      refused (currency_mismatch).
 *
 * The balance is therefore carried by the entries themselves: the newest
 * entry's balance_after, read with one index descent at any ledger size;
 * billing.verify_ledger() checks the chain (each balance_after = the previous
 * one + amount) and that the newest equals the sum of the entries.
 */
#include "pgcloud.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "commands/sequence.h"
#include "common/int.h"
#include "executor/tuptable.h"
#include "storage/bufmgr.h"
#include "utils/fmgroids.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(pgcloud_billing_ledger_post);

/* Column numbers of the trigger's relation, resolved once per relation. */
typedef struct LedgerRel
{
	Oid			relid;
	int			id;
	int			account_id;
	int			amount;
	int			currency;
	int			balance_after;
} LedgerRel;

static LedgerRel ledger;
static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr open_plan = NULL;

static int
column_number(Relation rel, const char *name, Oid type)
{
	int			attnum = SPI_fnumber(RelationGetDescr(rel), name);

	if (attnum <= 0 || SPI_gettypeid(RelationGetDescr(rel), attnum) != type)
		ereport(ERROR,
				errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
				errmsg("billing.ledger_post() needs column \"%s\" of type %s on \"%s\"",
					   name, format_type_be(type), RelationGetRelationName(rel)));
	return attnum;
}

static void
load_ledger(Relation rel)
{
	if (ledger.relid == RelationGetRelid(rel))
		return;
	ledger.id = column_number(rel, "id", INT8OID);
	ledger.account_id = column_number(rel, "account_id", UUIDOID);
	ledger.amount = column_number(rel, "amount", INT8OID);
	ledger.currency = column_number(rel, "currency", TEXTOID);
	ledger.balance_after = column_number(rel, "balance_after", INT8OID);
	ledger.relid = RelationGetRelid(rel);
}

/*
 * The index (account_id, id) and the id sequence beside the relation, looked
 * up by name on every call (a syscache hit): a REINDEX CONCURRENTLY gives the
 * index a new OID that a cached one would miss.
 */
static Oid
sibling(Relation rel, const char *name)
{
	Oid			oid = get_relname_relid(name, RelationGetNamespace(rel));

	if (!OidIsValid(oid))
		ereport(ERROR,
				errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
				errmsg("billing.ledger_post() needs \"%s\" beside \"%s\"", name, RelationGetRelationName(rel)));
	return oid;
}

/* Locks the account's row; returns its currency (palloc'd in the caller's context), or NULL. */
static char *
lock_account(Datum account, MemoryContext caller)
{
	Datum		args[1] = {account};
	Oid			types[1] = {UUIDOID};
	int			ret;

	ret = SPI_execute_plan(PgcloudPlan(&lock_plan, "SELECT currency FROM billing.accounts WHERE account_id = $1 FOR NO KEY UPDATE",
									   1, types),
						   args, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "locking the billing account failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return NULL;
	return MemoryContextStrdup(caller, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
}

/* balance_after of the account's newest entry under the latest snapshot; 0 when it has none. */
static int64
newest_balance(Relation rel, Datum account)
{
	Relation	index = index_open(sibling(rel, "ledger_entries_account_idx"), AccessShareLock);
	Snapshot	snapshot;
	IndexScanDesc scan;
	ScanKeyData key;
	TupleTableSlot *slot;
	int64		balance = 0;

	/* Make this command's own earlier rows visible, then look at the latest state. */
	CommandCounterIncrement();
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_UUID_EQ, account);
	scan = index_beginscan(rel, index, snapshot, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	slot = table_slot_create(rel, NULL);
	if (index_getnext_slot(scan, BackwardScanDirection, slot))
	{
		bool		isnull;
		Datum		d = slot_getattr(slot, ledger.balance_after, &isnull);

		if (!isnull)
			balance = DatumGetInt64(d);
	}
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	UnregisterSnapshot(snapshot);
	index_close(index, AccessShareLock);
	return balance;
}

Datum
pgcloud_billing_ledger_post(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	MemoryContext caller = CurrentMemoryContext;
	Relation	rel;
	HeapTuple	tuple;
	TupleDesc	desc;
	Datum		account;
	Datum		currency_datum;
	char	   *currency;
	char	   *account_currency;
	int64		amount;
	int64		balance;
	int64		entry_id;
	bool		isnull;
	int			cols[2];
	Datum		newvals[2];
	bool		newnulls[2] = {false, false};

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "billing.ledger_post() must be called as a trigger");
	if (!TRIGGER_FIRED_BEFORE(trigdata->tg_event) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event)
		|| !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		elog(ERROR, "billing.ledger_post() must be a BEFORE INSERT ... FOR EACH ROW trigger");

	rel = trigdata->tg_relation;
	desc = RelationGetDescr(rel);
	tuple = trigdata->tg_trigtuple;
	load_ledger(rel);

	account = heap_getattr(tuple, ledger.account_id, desc, &isnull);
	if (isnull)
		ereport(ERROR,
				errcode(ERRCODE_NOT_NULL_VIOLATION),
				errmsg("a ledger entry needs an account_id"));
	amount = DatumGetInt64(heap_getattr(tuple, ledger.amount, desc, &isnull));
	if (isnull)
		ereport(ERROR,
				errcode(ERRCODE_NOT_NULL_VIOLATION),
				errmsg("a ledger entry needs an amount"));
	currency_datum = heap_getattr(tuple, ledger.currency, desc, &isnull);
	if (isnull)
		ereport(ERROR,
				errcode(ERRCODE_NOT_NULL_VIOLATION),
				errmsg("a ledger entry needs a currency"));
	currency = TextDatumGetCString(currency_datum);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	account_currency = lock_account(account, caller);
	if (account_currency == NULL)
	{
		Datum		args[2] = {account, currency_datum};
		Oid			types[2] = {UUIDOID, TEXTOID};
		int			ret;

		/* First posting of an account nobody announced: open it in the entry's currency. */
		ret = SPI_execute_plan(PgcloudPlan(&open_plan, "INSERT INTO billing.accounts (account_id, currency) VALUES ($1, $2)"
										   " ON CONFLICT (account_id) DO NOTHING", 2, types),
							   args, NULL, false, 0);
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "opening a billing account failed: %s", SPI_result_code_string(ret));
		account_currency = lock_account(account, caller);
		if (account_currency == NULL)
			elog(ERROR, "billing account vanished while posting");
	}
	if (strcmp(account_currency, currency) != 0)
		PgcloudRaise("currency_mismatch",
					 psprintf("the entry is in %s, the account %s is in %s", currency,
							  DatumGetCString(DirectFunctionCall1(uuid_out, account)), account_currency),
					 "An account holds one currency; convert before posting.", NULL);
	SPI_finish();

	balance = newest_balance(rel, account);
	if (pg_add_s64_overflow(balance, amount, &balance))
		ereport(ERROR,
				errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				errmsg("the balance would overflow bigint"));
	entry_id = nextval_internal(sibling(rel, "ledger_entries_id_seq"), true);

	cols[0] = ledger.id;
	newvals[0] = Int64GetDatum(entry_id);
	cols[1] = ledger.balance_after;
	newvals[1] = Int64GetDatum(balance);
	tuple = heap_modify_tuple_by_cols(tuple, desc, 2, cols, newvals, newnulls);
	return PointerGetDatum(tuple);
}
