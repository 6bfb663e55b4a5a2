/*
 * ledger.c — the running balance of the ledger, kept by a C trigger.
 *
 *   CREATE TRIGGER ledger_entries_post BEFORE INSERT ON billing.ledger_entries
 *       FOR EACH ROW EXECUTE FUNCTION billing.ledger_post();
 *
 * For each new entry, in one statement on the account's row:
 *
 *   UPDATE billing.accounts
 *      SET balance = balance + amount, entry_count = entry_count + 1,
 *          last_entry_id = nextval('billing.ledger_entries_id_seq')
 *    WHERE account_id = $1
 *   RETURNING balance, currency, last_entry_id
 *
 * and the entry gets id = last_entry_id and balance_after = balance, whatever
 * the INSERT said. The UPDATE takes the account's row lock until the end of
 * the transaction: two postings to one account are serialised (under READ
 * COMMITTED the second re-reads the committed balance; nothing is lost),
 * postings to different accounts are not. The entry id is drawn after the
 * lock is held (a waiting UPDATE re-evaluates its SET list on the new row
 * version), so within an account id order is posting order and each
 * entry's balance_after = the previous entry's + its amount — the chain
 * billing.verify_ledger() checks. An account seen for the first time is
 * created in the entry's currency; an entry in another currency than its
 * account's is refused (currency_mismatch).
 *
 * Plans are prepared once per backend (SPI_keepplan); the trigger does one
 * SPI statement per entry (two more for a new account).
 */
#include "pgcloud.h"

#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(pgcloud_billing_ledger_post);

/* Attribute numbers of the columns the trigger reads and writes, per relation. */
typedef struct LedgerAttrs
{
	Oid			relid;
	int			id;
	int			account_id;
	int			amount;
	int			currency;
	int			balance_after;
} LedgerAttrs;

static LedgerAttrs attrs;
static SPIPlanPtr post_plan = NULL;
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
load_attrs(Relation rel)
{
	if (attrs.relid == RelationGetRelid(rel))
		return;
	attrs.id = column_number(rel, "id", INT8OID);
	attrs.account_id = column_number(rel, "account_id", UUIDOID);
	attrs.amount = column_number(rel, "amount", INT8OID);
	attrs.currency = column_number(rel, "currency", TEXTOID);
	attrs.balance_after = column_number(rel, "balance_after", INT8OID);
	attrs.relid = RelationGetRelid(rel);
}

static SPIPlanPtr
prepare(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

/* Runs the posting UPDATE; true when the account exists. */
static bool
post(Datum account, Datum amount, int64 *balance, int64 *entry_id, char **currency)
{
	Datum		args[2] = {account, amount};
	int			ret;
	bool		isnull;
	HeapTuple	row;
	TupleDesc	desc;

	ret = SPI_execute_plan(post_plan, args, NULL, false, 0);
	if (ret != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "posting to billing.accounts failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return false;
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	*balance = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
	*currency = SPI_getvalue(row, desc, 2);
	*entry_id = DatumGetInt64(SPI_getbinval(row, desc, 3, &isnull));
	return true;
}

Datum
pgcloud_billing_ledger_post(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	HeapTuple	tuple;
	Datum		account;
	Datum		amount;
	Datum		currency_datum;
	char	   *currency;
	char	   *account_currency = NULL;
	bool		isnull;
	int64		balance = 0;
	int64		entry_id = 0;
	int			cols[2];
	Datum		newvals[2];
	bool		newnulls[2] = {false, false};

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "billing.ledger_post() must be called as a trigger");
	if (!TRIGGER_FIRED_BEFORE(trigdata->tg_event) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event)
		|| !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		elog(ERROR, "billing.ledger_post() must be a BEFORE INSERT ... FOR EACH ROW trigger");

	rel = trigdata->tg_relation;
	tuple = trigdata->tg_trigtuple;
	load_attrs(rel);

	account = heap_getattr(tuple, attrs.account_id, RelationGetDescr(rel), &isnull);
	if (isnull)
		ereport(ERROR,
				errcode(ERRCODE_NOT_NULL_VIOLATION),
				errmsg("a ledger entry needs an account_id"));
	amount = heap_getattr(tuple, attrs.amount, RelationGetDescr(rel), &isnull);
	if (isnull)
		ereport(ERROR,
				errcode(ERRCODE_NOT_NULL_VIOLATION),
				errmsg("a ledger entry needs an amount"));
	currency_datum = heap_getattr(tuple, attrs.currency, RelationGetDescr(rel), &isnull);
	if (isnull)
		ereport(ERROR,
				errcode(ERRCODE_NOT_NULL_VIOLATION),
				errmsg("a ledger entry needs a currency"));
	currency = TextDatumGetCString(currency_datum);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (post_plan == NULL)
	{
		Oid			types[2] = {UUIDOID, INT8OID};

		post_plan = prepare("UPDATE billing.accounts"
							"   SET balance = balance + $2, entry_count = entry_count + 1,"
							"       last_entry_id = pg_catalog.nextval('billing.ledger_entries_id_seq'::pg_catalog.regclass)"
							" WHERE account_id = $1"
							" RETURNING balance, currency, last_entry_id", 2, types);
	}
	if (!post(account, amount, &balance, &entry_id, &account_currency))
	{
		Datum		args[2] = {account, currency_datum};
		int			ret;

		/* First posting of an account nobody announced: open it in the entry's currency. */
		if (open_plan == NULL)
		{
			Oid			types[2] = {UUIDOID, TEXTOID};

			open_plan = prepare("INSERT INTO billing.accounts (account_id, currency) VALUES ($1, $2)"
								" ON CONFLICT (account_id) DO NOTHING", 2, types);
		}
		ret = SPI_execute_plan(open_plan, args, NULL, false, 0);
		if (ret != SPI_OK_INSERT)
			elog(ERROR, "opening a billing account failed: %s", SPI_result_code_string(ret));
		if (!post(account, amount, &balance, &entry_id, &account_currency))
			elog(ERROR, "billing account vanished while posting");
	}
	if (account_currency == NULL || strcmp(account_currency, currency) != 0)
		PgcloudRaise("currency_mismatch",
					 psprintf("the entry is in %s, the account %s is in %s", currency,
							  DatumGetCString(DirectFunctionCall1(uuid_out, account)),
							  account_currency ? account_currency : "no currency"),
					 "An account holds one currency; convert before posting.", NULL);
	SPI_finish();

	cols[0] = attrs.id;
	newvals[0] = Int64GetDatum(entry_id);
	cols[1] = attrs.balance_after;
	newvals[1] = Int64GetDatum(balance);
	tuple = heap_modify_tuple_by_cols(tuple, RelationGetDescr(rel), 2, cols, newvals, newnulls);
	return PointerGetDatum(tuple);
}
