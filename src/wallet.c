/*
 * wallet.c
 *		Wallets and the money that moves outside billing: top_up, adjust,
 *		set_overdraft, balance, refund and retry_failed.
 *
 * Every balance change first holds the org's wallet row (hold_wallet),
 * then changes the balance and appends its ledger entry in one statement,
 * so that balance = sum of the ledger holds at every commit.  These
 * functions wait for the wallet lock; billers never wait, so no wait cycle
 * can form (see claim.c).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"

#include "access.h"
#include "config.h"
#include "convert.h"
#include "msgbilling.h"
#include "spend.h"
#include "version.h"
#include "wake.h"
#include "wallet.h"

PG_FUNCTION_INFO_V1(top_up);
PG_FUNCTION_INFO_V1(adjust);
PG_FUNCTION_INFO_V1(balance);
PG_FUNCTION_INFO_V1(set_overdraft);
PG_FUNCTION_INFO_V1(refund);
PG_FUNCTION_INFO_V1(retry_failed);

/* Amounts at or above this do not fit a numeric(20,6) balance. */
#define MB_AMOUNT_LIMIT "100000000000000"

/*
 * Longest idempotency key and text org id, in bytes: both are keys of a
 * btree index (the ledger's keys, the wallets' org ids), whose entries
 * cannot pass about 2,700 bytes.
 */
#define MB_KEY_MAX_BYTES 255

/* Column 1 of row 0 of the last result. */
static Datum
first_value(bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
						 isnull);
}

static int
num_cmp(Datum a, Datum b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, a, b));
}

/*
 * Error unless amount is a finite number of credits with at most six
 * decimals and below MB_AMOUNT_LIMIT in size; sign is 1 (must be > 0),
 * 0 (must be >= 0), -1 (any sign but zero) or 2 (any).
 */
void
mb_check_amount(Datum amount, int sign, const char *what)
{
	Datum		limit = DirectFunctionCall3(numeric_in,
											CStringGetDatum(MB_AMOUNT_LIMIT),
											ObjectIdGetDatum(InvalidOid),
											Int32GetDatum(-1));
	Datum		zero = NumericGetDatum(int64_to_numeric(0));
	Datum		absval = DirectFunctionCall1(numeric_abs, amount);
	Datum		rounded = DirectFunctionCall2(numeric_round, amount,
											  Int32GetDatum(6));
	bool		bad_sign = (sign == 1 && num_cmp(amount, zero) <= 0) ||
		(sign == 0 && num_cmp(amount, zero) < 0) ||
		(sign < 0 && num_cmp(amount, zero) == 0);

	if (numeric_is_nan(DatumGetNumeric(amount)) || bad_sign ||
		numeric_is_inf(DatumGetNumeric(amount)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be %s and finite, not %s", what,
						sign == 1 ? "greater than zero" :
						sign == 0 ? "zero or more" :
						sign == 2 ? "a number" : "non-zero",
						mb_brief(mb_datum_text(amount, NUMERICOID)))));
	if (num_cmp(absval, limit) >= 0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("%s %s is too large", what,
						mb_brief(mb_datum_text(amount, NUMERICOID))),
				 errdetail("Amounts must be below %s credits.",
						   MB_AMOUNT_LIMIT)));
	if (num_cmp(rounded, amount) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s has more than 6 decimal places: %s", what,
						mb_brief(mb_datum_text(amount, NUMERICOID))),
				 errhint("Round it to 6 decimal places; credits are kept to "
						 "the millionth.")));
}

/* Error unless a key (an idempotency key, a text org id) fits its index. */
void
mb_check_key_size(Datum value, const char *what)
{
	int			len = VARSIZE_ANY_EXHDR(DatumGetTextPP(value));

	if (len > MB_KEY_MAX_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s is too long: %d bytes", what, len),
				 errdetail("msgbilling accepts at most %d bytes.",
						   MB_KEY_MAX_BYTES)));
}

/* Create the org's wallet if it has none; never waits on an existing one. */
static void
ensure_wallet(const MbConfig *cfg, Datum org)
{
	Oid			argtypes[1] = {cfg->org_type};

	mb_exec_sql("INSERT INTO msgbilling.credits (org_id) VALUES ($1)"
				" ON CONFLICT (org_id) DO NOTHING",
				1, argtypes, &org, NULL, SPI_OK_INSERT);
}

/*
 * Hold the org's wallet, creating it if it has none: lock it (waiting for
 * a biller that holds it) and return its balance.
 */
Datum
mb_hold_wallet(const MbConfig *cfg, Datum org)
{
	Oid			argtypes[1] = {cfg->org_type};
	bool		isnull;

	if (cfg->org_type == TEXTOID)
		mb_check_key_size(org, "org id");
	ensure_wallet(cfg, org);
	mb_exec_sql("SELECT balance FROM msgbilling.credits WHERE org_id = $1 FOR UPDATE",
				1, argtypes, &org, NULL, SPI_OK_SELECT);
	if (SPI_processed != 1)
		elog(ERROR, "wallet to hold was not found");
	return first_value(&isnull);
}

/*
 * Add amount to the org's locked wallet and append its ledger entry, with
 * its alerts and budget spend (spend.c).  Returns the new balance.
 */
static Datum
move_money(const MbConfig *cfg, Datum org, Datum amount, const char *kind,
		   Datum note, bool note_null, Datum key, bool key_null,
		   const char *message_id, Datum charge_id)
{
	Oid			argtypes[7] = {cfg->org_type, NUMERICOID, TEXTOID, TEXTOID,
	TEXTOID, TEXTOID, INT8OID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	Datum		balance;
	Datum		entry;

	values[0] = org;
	values[1] = amount;
	values[2] = CStringGetTextDatum(kind);
	values[3] = note;
	values[4] = key;
	values[5] = message_id ? CStringGetTextDatum(message_id) : (Datum) 0;
	values[6] = charge_id;
	nulls[3] = note_null ? 'n' : ' ';
	nulls[4] = key_null ? 'n' : ' ';
	nulls[5] = message_id ? ' ' : 'n';
	nulls[6] = message_id ? ' ' : 'n';
	mb_exec_sql("WITH w AS (UPDATE msgbilling.credits"
				" SET balance = balance + $2, updated_at = pg_catalog.now()"
				" WHERE org_id = $1 RETURNING org_id, balance)"
				" INSERT INTO msgbilling.ledger (org_id, kind, amount, balance_after,"
				" note, idempotency_key, message_id, charge_id)"
				" SELECT w.org_id, $3, $2, w.balance, $4, $5, $6, $7 FROM w"
				" RETURNING balance_after, id",
				7, argtypes, values, nulls, SPI_OK_INSERT_RETURNING);
	if (SPI_processed != 1)
		elog(ERROR, "wallet to credit was not found");
	balance = datumCopy(first_value(&isnull), false, -1);
	entry = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
						  &isnull);
	mb_ledger_added(&entry, 1);
	return balance;
}

/*
 * The unpaid reasons go back together: a top-up may not lift a budget, nor
 * a new period an empty wallet, but billing them again in order finds out.
 */
static const char *const unpaid_reasons[] = {"insufficient_credits",
"budget_exceeded", NULL};
static const char *const no_price_reasons[] = {"no_price", NULL};

/* reasons (NULL-terminated) as a text array */
static Datum
reason_array(const char *const *reasons)
{
	Datum		elems[2];
	int			n = 0;

	while (reasons[n] != NULL)
	{
		Assert(n < lengthof(elems));
		elems[n] = CStringGetTextDatum(reasons[n]);
		n++;
	}
	return mb_array(elems, NULL, n, TEXTOID);
}

/*
 * Make failures for reasons (NULL: any) pending again, of one org (org_null false) or
 * all; returns how many.  With wait (the caller holds the org's wallet),
 * rows another session holds are waited for.  Without (retry_failed, a new
 * price), they are skipped, and a later call catches them; an org's
 * insufficient_credits failures then go back only if the caller holds its
 * wallet (held_orgs, see lock_idle_wallets) and only all together: while
 * another session holds one of them, the others stay failed too.  Either
 * way a failure never stays behind older ones made pending, cheap enough
 * for a wallet that has not changed.  Wakes the worker when there is new
 * work.
 */
static uint64
repend_failed(const MbConfig *cfg, const char *const *reasons, Datum org,
			  bool org_null, bool wait, Datum held_orgs)
{
	Oid			argtypes[3] = {cfg->org_type, TEXTARRAYOID, cfg->org_array_type};
	Datum		values[3] = {org, reasons ? reason_array(reasons) : (Datum) 0,
	held_orgs};
	char		nulls[3] = {org_null ? 'n' : ' ', reasons ? ' ' : 'n',
	held_orgs == (Datum) 0 ? 'n' : ' '};
	const char *whole_orgs = wait ? "" :
		psprintf(" AND (l.e IS NULL OR l.e NOT IN " MB_UNPAID_SQL
				 " OR (l.o OPERATOR(pg_catalog.=) ANY ($3)"
				 " AND NOT EXISTS (SELECT 1 FROM %s s WHERE s.%s = l.o"
				 " AND s.billing_status = 'failed'"
				 " AND s.billing_error IN " MB_UNPAID_SQL
				 " AND NOT EXISTS (SELECT 1 FROM l h WHERE h.k = s.%s))))",
				 cfg->relname, cfg->org_col, cfg->key_col);
	char	   *sql = psprintf("WITH l AS (SELECT f.%s AS k, f.%s AS o,"
							   " f.billing_error AS e FROM %s f"
							   " WHERE f.billing_status = 'failed'"
							   " AND ($1 IS NULL OR f.%s = $1)"
							   " AND ($2 IS NULL OR f.billing_error"
							   " OPERATOR(pg_catalog.=) ANY ($2))"
							   " FOR UPDATE%s)"
							   " UPDATE %s m SET billing_status = 'pending',"
							   " billing_error = NULL FROM l"
							   " WHERE m.%s = l.k%s",
							   cfg->key_col, cfg->org_col, cfg->relname,
							   cfg->org_col, wait ? "" : " SKIP LOCKED",
							   cfg->relname, cfg->key_col, whole_orgs);

	mb_exec_sql_as_owner(cfg, sql, 3, argtypes, values, nulls, SPI_OK_UPDATE);
	if (SPI_processed > 0)
		mb_wake_at_commit();
	return SPI_processed;
}

/*
 * retry_failed: lock, without waiting, the wallets of the orgs (one, or
 * all) that have insufficient_credits failures; returns their ids, or 0
 * when none.  A separate statement, so that the re-pending after it sees
 * what a biller that held a wallet until now committed: holding the wallet
 * while a retry re-pended the older failures, a biller could fail newer
 * messages behind them.  A wallet another session holds is skipped, and
 * its org's insufficient_credits failures are left for a later call.
 */
static Datum
lock_idle_wallets(const MbConfig *cfg, Datum org, bool org_null)
{
	Oid			argtypes[1] = {cfg->org_type};
	char		nulls[1] = {org_null ? 'n' : ' '};
	bool		isnull;
	Datum		orgs;

	mb_exec_sql(psprintf("SELECT pg_catalog.array_agg(w.org_id) FROM"
						 " (SELECT c.org_id FROM msgbilling.credits c"
						 " WHERE ($1 IS NULL OR c.org_id = $1) AND EXISTS"
						 " (SELECT 1 FROM %s f WHERE f.%s = c.org_id"
						 " AND f.billing_status = 'failed'"
						 " AND f.billing_error IN " MB_UNPAID_SQL ")"
						 " FOR UPDATE OF c SKIP LOCKED) w",
						 cfg->relname, cfg->org_col),
				 1, argtypes, &org, nulls, SPI_OK_SELECT);
	orgs = first_value(&isnull);
	/* a copy: the next statement's result may reuse the row's memory */
	return isnull ? (Datum) 0 : datumCopy(orgs, false, -1);
}

/*
 * After a change to the org's wallet or budgets: its unpaid failures
 * (insufficient_credits, budget_exceeded) back to pending.  They are waited
 * for, not skipped: a failure left behind would block the org's later
 * messages until the wallet changes again.  The caller holds the wallet,
 * so no biller holds them; only the app (an open transaction editing a
 * message) or another wallet function can, and those end.
 */
uint64
mb_repend_unpaid(const MbConfig *cfg, Datum org)
{
	return repend_failed(cfg, unpaid_reasons, org, false, true, (Datum) 0);
}

/*
 * Add amount to the org's held wallet, with its ledger entry, and make the
 * org's unpaid failures pending again.  Returns the new
 * balance.
 */
static Datum
credit_wallet(const MbConfig *cfg, Datum org, Datum amount, const char *kind,
			  FunctionCallInfo fcinfo, int note_argno, int key_argno)
{
	Datum		result;

	result = move_money(cfg, org, amount, kind,
						PG_GETARG_DATUM(note_argno), PG_ARGISNULL(note_argno),
						key_argno < 0 ? (Datum) 0 : PG_GETARG_DATUM(key_argno),
						key_argno < 0 || PG_ARGISNULL(key_argno), NULL,
						(Datum) 0);
	(void) mb_repend_unpaid(cfg, org);
	return result;
}

/*
 * Whether key was used before: the top-up it named is done.  A key reused
 * for another org or amount is an error.
 */
static bool
replayed_top_up(const MbConfig *cfg, Datum org, Datum amount, Datum key)
{
	Oid			argtypes[3] = {TEXTOID, cfg->org_type, NUMERICOID};
	Datum		values[3] = {key, org, amount};
	bool		isnull;

	mb_exec_sql("SELECT kind = 'top_up' AND org_id = $2 AND amount = $3"
				" FROM msgbilling.ledger WHERE idempotency_key = $1",
				3, argtypes, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	if (!DatumGetBool(first_value(&isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("idempotency key \"%s\" was already used for another top-up",
						TextDatumGetCString(key)),
				 errdetail("A key may be repeated only with the same org and amount."),
				 errhint("Use a new key for a new top-up.")));
	return true;
}

/*
 * top_up(org_id, amount, note, idempotency_key) -> numeric
 *		Credit a wallet, creating it if needed; return the new balance.
 *		A repeated idempotency key credits nothing and returns the balance.
 */
Datum
top_up(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	Datum		org;
	Datum		amount;
	Datum		result;

	mb_require_arg(fcinfo, 0, "org id");
	mb_require_arg(fcinfo, 1, "amount");
	amount = PG_GETARG_DATUM(1);
	mb_check_amount(amount, 1, "amount");
	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	org = mb_arg_as(fcinfo, 0, cfg->org_type, "org id");
	/*
	 * Lock first, so that a concurrent call with the same key waits: the
	 * key itself (it may name another org), then the wallet.
	 */
	if (!PG_ARGISNULL(3))
		mb_check_key_size(PG_GETARG_DATUM(3), "idempotency key");
	if (!PG_ARGISNULL(3))
		mb_exec_sql("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext($1))",
					1, (Oid[1]) {TEXTOID}, &PG_GETARG_DATUM(3), NULL, SPI_OK_SELECT);
	/* a replayed key credits nothing: the balance is the answer */
	result = mb_hold_wallet(cfg, org);
	if (PG_ARGISNULL(3) ||
		!replayed_top_up(cfg, org, amount, PG_GETARG_DATUM(3)))
		result = credit_wallet(cfg, org, amount, "top_up", fcinfo, 2, 3);
	result = SPI_datumTransfer(result, false, -1);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/*
 * adjust(org_id, amount, note) -> numeric
 *		A manual correction of either sign, with its reason.
 */
Datum
adjust(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	Datum		org;
	Datum		amount;
	Datum		result;

	mb_require_arg(fcinfo, 0, "org id");
	mb_require_arg(fcinfo, 1, "amount");
	mb_require_arg(fcinfo, 2, "note");
	amount = PG_GETARG_DATUM(1);
	mb_check_amount(amount, -1, "amount");
	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	org = mb_arg_as(fcinfo, 0, cfg->org_type, "org id");
	(void) mb_hold_wallet(cfg, org);
	result = credit_wallet(cfg, org, amount, "adjustment", fcinfo, 2, -1);
	result = SPI_datumTransfer(result, false, -1);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/*
 * balance(org_id) -> numeric, NULL for an org without a wallet, or whose
 * messages the caller may not read (access.c).
 */
Datum
balance(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	Datum		org;
	Oid			argtypes[1];
	bool		isnull = true;
	Datum		result = (Datum) 0;
	int			ret;

	mb_require_arg(fcinfo, 0, "org id");
	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	org = mb_arg_as(fcinfo, 0, cfg->org_type, "org id");
	/* an org the caller may not read looks like one without a wallet */
	if (!mb_caller_may_read_org(cfg, org))
	{
		SPI_finish();
		PG_RETURN_NULL();
	}
	argtypes[0] = cfg->org_type;
	ret = SPI_execute_with_args("SELECT balance FROM msgbilling.credits"
								" WHERE org_id = $1",
								1, argtypes, &org, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "balance look-up returned %s", SPI_result_code_string(ret));
	if (SPI_processed > 0)
		result = SPI_datumTransfer(first_value(&isnull), false, -1);
	SPI_finish();
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

/*
 * set_overdraft(org_id, limit)
 *		How far below zero the org's balance may go; creates the wallet.
 */
Datum
set_overdraft(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	Oid			argtypes[2];
	Datum		values[2];

	mb_require_arg(fcinfo, 0, "org id");
	mb_require_arg(fcinfo, 1, "limit");
	mb_check_amount(PG_GETARG_DATUM(1), 0, "overdraft limit");
	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	values[0] = mb_arg_as(fcinfo, 0, cfg->org_type, "org id");
	values[1] = PG_GETARG_DATUM(1);
	argtypes[0] = cfg->org_type;
	argtypes[1] = NUMERICOID;
	(void) mb_hold_wallet(cfg, values[0]);
	mb_exec_sql("UPDATE msgbilling.credits SET overdraft_limit = $2,"
				" updated_at = pg_catalog.now() WHERE org_id = $1",
				2, argtypes, values, NULL, SPI_OK_UPDATE);
	(void) mb_repend_unpaid(cfg, values[0]);
	SPI_finish();
	PG_RETURN_VOID();
}

/* Error unless a message may be refunded: charged, with its charge. */
static void
check_refundable(const MbConfig *cfg, Datum key, const char *status,
				 bool has_charge)
{
	char	   *id = mb_datum_text(key, cfg->key_type);

	if (strcmp(status, MB_REFUNDED) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("message %s was already refunded", id)));
	if (strcmp(status, MB_CHARGED) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("message %s is not charged", id),
				 errdetail("Its billing status is %s.", status),
				 errhint("Only charged messages can be refunded.")));
	if (!has_charge)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("charged message %s has no charge to refund", id),
				 errdetail("Its cost_credits or billing_ledger_id is NULL, or names "
						   "no charge entry: it was changed outside msgbilling."),
				 errhint("msgbilling.verify() shows what else does not reconcile.")));
}

/* What refund reads of a message: its status and its charge. */
typedef struct MessageCharge
{
	char	   *status;
	bool		has_charge;		/* a cost, and a charge entry (of an org) */
	Datum		ledger_id;		/* the charge entry */
	Datum		cost;
	bool		no_billing_org;
	Datum		billing_org;	/* the org its charge entry has, or, before
								 * it is charged, the org billing debits */
} MessageCharge;

/*
 * The message's status and charge; with lock, the message is locked.  The
 * org is the one its charge entry debited, never the message's org column:
 * the app may change that, and money follows the ledger.  An unknown id is
 * an error.
 */
static MessageCharge
read_charge(const MbConfig *cfg, Datum key, bool lock)
{
	MessageCharge c;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		no_id;
	bool		no_cost;
	bool		no_entry;

	mb_exec_sql(psprintf("SELECT m.billing_status::pg_catalog.text,"
						 " m.billing_ledger_id, m.cost_credits, l.org_id,"
						 " COALESCE(l.org_id, m.%s)"
						 " FROM %s m LEFT JOIN msgbilling.ledger l"
						 " ON l.id = m.billing_ledger_id AND l.kind = 'charge'"
						 " WHERE m.%s = $1%s",
						 cfg->org_col, cfg->relname, cfg->key_col,
						 lock ? " FOR UPDATE OF m" : ""),
				1, (Oid[1]) {cfg->key_type}, &key, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("message %s does not exist in %s",
						mb_datum_text(key, cfg->key_type), cfg->relname)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	c.status = SPI_getvalue(tup, desc, 1);
	c.ledger_id = SPI_getbinval(tup, desc, 2, &no_id);
	c.cost = SPI_getbinval(tup, desc, 3, &no_cost);
	(void) SPI_getbinval(tup, desc, 4, &no_entry);
	c.billing_org = SPI_getbinval(tup, desc, 5, &c.no_billing_org);
	c.has_charge = !no_id && !no_cost && !no_entry;
	if (c.has_charge)
		c.cost = datumCopy(c.cost, false, -1);
	if (!c.no_billing_org)
		c.billing_org = datumCopy(c.billing_org, get_typbyval(cfg->org_type),
								  get_typlen(cfg->org_type));
	return c;
}

/*
 * refund(message_id, note) -> numeric
 *		Credit a charged message's cost back to the org its charge debited;
 *		return that org's new balance.
 */
Datum
refund(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	Datum		key;
	MessageCharge before;
	MessageCharge now;
	Datum		result;

	mb_require_arg(fcinfo, 0, "message id");
	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	key = mb_arg_as(fcinfo, 0, cfg->key_type, "message id");
	/*
	 * The lock order of every biller: the org's wallet, then the message.
	 * A message being billed right now is refunded once its biller commits.
	 */
	before = read_charge(cfg, key, false);
	if (before.no_billing_org)
		check_refundable(cfg, key, before.status, before.has_charge);
	(void) mb_hold_wallet(cfg, before.billing_org);
	now = read_charge(cfg, key, true);
	check_refundable(cfg, key, now.status, now.has_charge);
	/* charged to another org than the one whose wallet we hold */
	if (strcmp(mb_datum_text(now.billing_org, cfg->org_type),
			   mb_datum_text(before.billing_org, cfg->org_type)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("message %s changed while it was being refunded",
						mb_datum_text(key, cfg->key_type)),
				 errhint("Try the refund again.")));
	result = move_money(cfg, now.billing_org, now.cost, "refund",
						PG_GETARG_DATUM(1), PG_ARGISNULL(1), (Datum) 0, true,
						mb_datum_text(key, cfg->key_type), now.ledger_id);
	mb_exec_sql_as_owner(cfg,
						 psprintf("UPDATE %s SET billing_status = 'refunded'"
								  " WHERE %s = $1",
								  cfg->relname, cfg->key_col),
						 1, (Oid[1]) {cfg->key_type}, &key, NULL,
						 SPI_OK_UPDATE);
	mb_exec_sql("UPDATE msgbilling.credits SET charged_messages = charged_messages - 1,"
				" refunded_messages = refunded_messages + 1,"
				" credits_charged = credits_charged - $2 WHERE org_id = $1",
				2, (Oid[2]) {cfg->org_type, NUMERICOID},
				(Datum[2]) {now.billing_org, now.cost}, NULL, SPI_OK_UPDATE);
	(void) mb_repend_unpaid(cfg, now.billing_org);
	result = SPI_datumTransfer(result, false, -1);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/*
 * retry_failed(org_id) -> bigint
 *		Make failed messages, of one org or all, pending again, without
 *		waiting: rows another session holds are skipped, and so are the
 *		insufficient_credits failures of an org whose wallet is held
 *		(repend_failed).
 */
Datum
retry_failed(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	Datum		org = (Datum) 0;
	uint64		n;

	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	if (!PG_ARGISNULL(0))
		org = mb_arg_as(fcinfo, 0, cfg->org_type, "org id");
	n = repend_failed(cfg, NULL, org, PG_ARGISNULL(0), false,
					  lock_idle_wallets(cfg, org, PG_ARGISNULL(0)));
	SPI_finish();
	PG_RETURN_INT64((int64) n);
}

PG_FUNCTION_INFO_V1(repend_no_price);

/*
 * msgbilling._repend_no_price() -> bigint
 *		After a new price: no_price failures are pending again.  Nothing
 *		when no table is attached.
 */
Datum
repend_no_price(PG_FUNCTION_ARGS)
{
	uint64		n;
	bool		isnull;

	mb_require_catalog();
	SPI_connect();
	if (SPI_execute("SELECT 1 FROM msgbilling.config", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read msgbilling.config");
	isnull = SPI_processed == 0;
	n = isnull ? 0 : repend_failed(mb_config(), no_price_reasons, (Datum) 0, true,
								   false, (Datum) 0);
	SPI_finish();
	PG_RETURN_INT64((int64) n);
}
