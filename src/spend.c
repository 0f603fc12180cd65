/*
 * spend.c
 *		Low-balance alerts and period budgets: set_alert, drop_alert,
 *		set_budget, budget_status, and what billing does with budgets.
 *
 * The crossings themselves are found by msgbilling._ledger_added (SQL),
 * which billing and the wallet functions call with the ledger entries they
 * write (mb_ledger_added): every balance change has a ledger entry made
 * while its wallet is held, so it sees each change once, in order, in the
 * transaction that made it.  set_alert and drop_alert change
 * the thresholds under the rules lock (SHARE ROW EXCLUSIVE on
 * msgbilling.alert_rules, which _ledger_added takes in SHARE mode), so that a
 * threshold never appears between a balance change and its check: a change
 * made before the lock is committed and read here ("already below": its
 * 'low' now), one made after sees the threshold.  Budgets are per org, and
 * set_budget holds the org's wallet instead.
 *
 * A hard budget limits what billing charges an org in a period: its
 * messages fail with budget_exceeded, in order like insufficient_credits,
 * and go back to pending when the budget changes or the next period starts
 * (mb_spend_housekeeping, at the start of every run of billing).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "access.h"
#include "config.h"
#include "convert.h"
#include "report.h"
#include "spend.h"
#include "version.h"
#include "wallet.h"

PG_FUNCTION_INFO_V1(set_alert);
PG_FUNCTION_INFO_V1(drop_alert);
PG_FUNCTION_INFO_V1(set_budget);
PG_FUNCTION_INFO_V1(budget_status);

/* Send the alerts a CTE i inserted (RETURNING a): at commit, as NOTIFY. */
#define NOTIFY_INSERTED \
	" SELECT pg_catalog.count(msgbilling._notify_alert(i.a)) FROM i"

/* How often a backend that bills deletes long-expired holds. */
#define MB_SWEEP_INTERVAL_MS 10000

static void
take_rules_lock(void)
{
	mb_exec_sql("LOCK TABLE msgbilling.alert_rules IN SHARE ROW EXCLUSIVE MODE",
				0, NULL, NULL, NULL, SPI_OK_UTILITY);
}

/* The org argument, or NULL (0) for every org; *org_null says which. */
static Datum
org_or_all(FunctionCallInfo fcinfo, const MbConfig *cfg, bool *org_null)
{
	*org_null = PG_ARGISNULL(0);
	return *org_null ? (Datum) 0 :
		mb_arg_as(fcinfo, 0, cfg->org_type, "org id");
}

/*
 * The 'low' alerts of a new threshold ($2): for its org ($1), or with $1
 * NULL for every org without thresholds of its own, whose balance is below
 * it already.
 */
static void
alert_already_low(const MbConfig *cfg, Datum org, bool org_null,
				  Datum threshold)
{
	Oid			argtypes[2] = {cfg->org_type, NUMERICOID};
	Datum		values[2] = {org, threshold};
	char		nulls[2] = {org_null ? 'n' : ' ', ' '};

	mb_exec_sql("WITH i AS (INSERT INTO msgbilling.alerts AS a"
				" (org_id, threshold, kind, balance)"
				" SELECT c.org_id, $2, 'low', c.balance FROM msgbilling.credits c"
				" WHERE c.balance < $2 AND CASE WHEN $1 IS NULL"
				" THEN NOT EXISTS (SELECT 1 FROM msgbilling.alert_rules r"
				" WHERE r.org_id = c.org_id) ELSE c.org_id = $1 END"
				" ORDER BY c.org_id RETURNING a)" NOTIFY_INSERTED,
				2, argtypes, values, nulls, SPI_OK_SELECT);
}

/*
 * set_alert(org_id, threshold)
 *		Alert when the org's balance goes below threshold, and when it is
 *		back; org NULL: every org that has no threshold of its own.
 */
Datum
set_alert(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	Datum		org;
	bool		org_null;
	Oid			argtypes[2];
	Datum		values[2];
	char		nulls[2];

	mb_require_arg(fcinfo, 1, "threshold");
	mb_check_amount(PG_GETARG_DATUM(1), 2, "threshold");
	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	org = org_or_all(fcinfo, cfg, &org_null);
	take_rules_lock();
	argtypes[0] = cfg->org_type;
	argtypes[1] = NUMERICOID;
	values[0] = org;
	values[1] = PG_GETARG_DATUM(1);
	nulls[0] = org_null ? 'n' : ' ';
	nulls[1] = ' ';
	/* the 'low' alerts first: an org's first own threshold replaces the defaults */
	mb_exec_sql("SELECT 1 FROM msgbilling.alert_rules"
				" WHERE org_id IS NOT DISTINCT FROM $1 AND threshold = $2",
				2, argtypes, values, nulls, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		alert_already_low(cfg, org, org_null, values[1]);
		mb_exec_sql("INSERT INTO msgbilling.alert_rules (org_id, threshold)"
					" VALUES ($1, $2)",
					2, argtypes, values, nulls, SPI_OK_INSERT);
	}
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * drop_alert(org_id, threshold) -> boolean
 *		Stop alerting at threshold; false if there was no such alert.
 */
Datum
drop_alert(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	Oid			argtypes[2];
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	bool		org_null;
	bool		dropped;

	mb_require_arg(fcinfo, 1, "threshold");
	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	values[0] = org_or_all(fcinfo, cfg, &org_null);
	values[1] = PG_GETARG_DATUM(1);
	nulls[0] = org_null ? 'n' : ' ';
	argtypes[0] = cfg->org_type;
	argtypes[1] = NUMERICOID;
	take_rules_lock();
	mb_exec_sql("DELETE FROM msgbilling.alert_rules"
				" WHERE org_id IS NOT DISTINCT FROM $1 AND threshold = $2",
				2, argtypes, values, nulls, SPI_OK_DELETE);
	dropped = SPI_processed > 0;
	SPI_finish();
	PG_RETURN_BOOL(dropped);
}

/* ---------------------------------------------------------------------
 * Budgets
 * ---------------------------------------------------------------------
 */

/* Error unless period is day, week or month, and time_zone a time zone. */
static void
check_period(Datum period, Datum time_zone)
{
	char	   *p = TextDatumGetCString(period);
	Datum		tz = time_zone;

	if (strcmp(p, "day") != 0 && strcmp(p, "week") != 0 &&
		strcmp(p, "month") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("budget period must be day, week or month, not \"%s\"",
						mb_brief(p)),
				 errdetail("A week starts on Monday (ISO); a month is a calendar month.")));
	/* PostgreSQL's own error for an unknown zone */
	mb_exec_sql("SELECT pg_catalog.timezone($1, pg_catalog.now())",
				1, (Oid[1]) {TEXTOID}, &tz, NULL, SPI_OK_SELECT);
}

/*
 * Set (or with amount NULL remove) the org's budget of period ($2).  Its
 * spend so far in the current period comes from the ledger.  A soft
 * budget already reached this period keeps the alert it sent.
 */
static void
write_budget(const MbConfig *cfg, Datum *values, const char *nulls)
{
	Oid			argtypes[5] = {cfg->org_type, TEXTOID, NUMERICOID, BOOLOID, TEXTOID};

	if (nulls[2] == 'n')
	{
		mb_exec_sql("DELETE FROM msgbilling.budgets WHERE org_id = $1 AND period = $2",
					2, argtypes, values, nulls, SPI_OK_DELETE);
		return;
	}
	mb_exec_sql("WITH p AS (SELECT msgbilling._period_start($2, $5, pg_catalog.now()) AS ps),"
				" s AS (SELECT COALESCE(-pg_catalog.sum(l.amount), 0) AS spent"
				" FROM msgbilling.ledger l, p WHERE l.org_id = $1"
				" AND l.kind IN ('charge', 'refund') AND l.created_at >= p.ps)"
				" INSERT INTO msgbilling.budgets AS b (org_id, period, amount, hard,"
				" time_zone, period_start, spent)"
				" SELECT $1, $2, $3, $4, $5, p.ps, s.spent FROM p, s"
				" ON CONFLICT (org_id, period) DO UPDATE SET amount = EXCLUDED.amount,"
				" hard = EXCLUDED.hard, time_zone = EXCLUDED.time_zone,"
				" period_start = EXCLUDED.period_start, spent = EXCLUDED.spent,"
				" alerted_start = CASE WHEN b.alerted_start = EXCLUDED.period_start"
				" THEN b.alerted_start END, exceeded_start = NULL,"
				" updated_at = pg_catalog.now()",
				5, argtypes, values, nulls, SPI_OK_INSERT);
}

/*
 * The 'budget' alert of a soft budget that its spend this period has
 * reached already when it is set.
 */
static void
alert_budget_reached(const MbConfig *cfg, Datum org, Datum period)
{
	Oid			argtypes[2] = {cfg->org_type, TEXTOID};
	Datum		values[2] = {org, period};

	mb_exec_sql("WITH u AS (UPDATE msgbilling.budgets b"
				" SET alerted_start = b.period_start"
				" WHERE b.org_id = $1 AND b.period = $2 AND NOT b.hard"
				" AND b.spent >= b.amount"
				" AND b.alerted_start IS DISTINCT FROM b.period_start"
				" RETURNING b.org_id, b.amount),"
				" i AS (INSERT INTO msgbilling.alerts AS a (org_id, threshold, kind, balance)"
				" SELECT u.org_id, u.amount, 'budget', c.balance"
				" FROM u JOIN msgbilling.credits c ON c.org_id = u.org_id RETURNING a)" NOTIFY_INSERTED,
				2, argtypes, values, NULL, SPI_OK_SELECT);
}

/*
 * set_budget(org_id, period, amount, hard, time_zone)
 *		The most the org may spend per period (net charges in the ledger);
 *		amount NULL removes the budget.  Hard: billing fails what would go
 *		past it with budget_exceeded, and holds beyond it are refused.
 *		Soft: one 'budget' alert per period when spend reaches it.
 */
Datum
set_budget(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	mb_require_arg(fcinfo, 0, "org id");
	mb_require_arg(fcinfo, 1, "period");
	mb_require_arg(fcinfo, 3, "hard");
	mb_require_arg(fcinfo, 4, "time_zone");
	if (!PG_ARGISNULL(2))
		mb_check_amount(PG_GETARG_DATUM(2), 0, "budget amount");
	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	check_period(PG_GETARG_DATUM(1), PG_GETARG_DATUM(4));
	values[0] = mb_arg_as(fcinfo, 0, cfg->org_type, "org id");
	values[1] = PG_GETARG_DATUM(1);
	values[2] = PG_GETARG_DATUM(2);
	nulls[2] = PG_ARGISNULL(2) ? 'n' : ' ';
	values[3] = PG_GETARG_DATUM(3);
	values[4] = PG_GETARG_DATUM(4);
	/*
	 * Holding the wallet is enough: every charge of the org holds it from
	 * its claim to its commit, so none is between the ledger, read here,
	 * and _ledger_added, which sees the new budget.
	 */
	(void) mb_hold_wallet(cfg, values[0]);
	write_budget(cfg, values, nulls);
	alert_budget_reached(cfg, values[0], values[1]);
	/* a new amount may let the org's unpaid messages through, or not */
	(void) mb_repend_unpaid(cfg, values[0]);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * budget_status(org_id) -> (period_start, period_end, amount, spent,
 *		remaining, hard), one row per budget of the org, for its current
 *		period.  No rows for an org whose messages the caller may not read.
 */
Datum
budget_status(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	Datum		org;
	Oid			argtypes[1];

	mb_require_arg(fcinfo, 0, "org id");
	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	org = mb_arg_as(fcinfo, 0, cfg->org_type, "org id");
	argtypes[0] = cfg->org_type;
	if (!mb_caller_may_read_org(cfg, org))
		mb_exec_sql("SELECT NULL::pg_catalog.timestamptz, NULL::pg_catalog.timestamptz,"
					" NULL::pg_catalog.numeric, NULL::pg_catalog.numeric,"
					" NULL::pg_catalog.numeric, NULL::pg_catalog.bool WHERE false",
					0, NULL, NULL, NULL, SPI_OK_SELECT);
	else
		mb_exec_sql(psprintf("SELECT msgbilling._period_start(b.period, b.time_zone,"
							 " pg_catalog.now()), msgbilling._period_end(b.period,"
							 " b.time_zone, pg_catalog.now()), b.amount::pg_catalog.numeric,"
							 " s.spent, b.amount - s.spent, b.hard"
							 " FROM msgbilling.budgets b,"
							 " LATERAL (SELECT (%s)::pg_catalog.numeric AS spent) s"
							 " WHERE b.org_id = $1 ORDER BY"
							 " CASE b.period WHEN 'day' THEN 1 WHEN 'week' THEN 2 ELSE 3 END",
							 mb_spent_now_sql("b", "pg_catalog.now()")),
					1, argtypes, &org, NULL, SPI_OK_SELECT);
	mb_return_spi_rows(fcinfo);
	SPI_finish();
	PG_RETURN_NULL();
}

/*
 * What budget row b has spent in the period that contains at: its spend,
 * if it is of that period, else nothing yet (hold.c has the same rule in C).
 */
char *
mb_spent_now_sql(const char *b, const char *at)
{
	return psprintf("CASE WHEN %s.period_start OPERATOR(pg_catalog.=)"
					" msgbilling._period_start(%s.period, %s.time_zone, %s)"
					" THEN %s.spent ELSE 0.000000 END", b, b, b, at, b);
}

/* ---------------------------------------------------------------------
 * In billing and the wallet functions
 * ---------------------------------------------------------------------
 */

static char *
ledger_added_sql(const MbConfig *cfg)
{
	return pstrdup("SELECT msgbilling._ledger_added($1)");
}

/*
 * After writing the ledger entries ids (n of them), in their transaction:
 * their alerts, and their spend in the orgs' budgets.
 */
void
mb_ledger_added(Datum *ids, int n)
{
	Oid			argtypes[1] = {INT8ARRAYOID};
	Datum		value;

	if (n == 0)
		return;
	value = mb_array(ids, NULL, n, INT8OID);
	mb_exec_plan(mb_plan(MB_STMT_LEDGER_ADDED, ledger_added_sql, 1, argtypes),
				 &value, NULL, SPI_OK_SELECT);
}

/*
 * Per org of the batch ($1), the least its hard budgets have left this
 * period.  The batch holds the wallets, and every charge holds its wallet
 * while _ledger_added adds to the spend, so this cannot change under it.
 */
static char *
budget_limits_sql(const MbConfig *cfg)
{
	return psprintf("SELECT u.ix, pg_catalog.min(b.amount OPERATOR(pg_catalog.-) %s)"
					" FROM pg_catalog.unnest($1) WITH ORDINALITY AS u(o, ix)"
					" JOIN msgbilling.budgets b ON b.org_id = u.o"
					" WHERE b.hard GROUP BY u.ix",
					mb_spent_now_sql("b", "pg_catalog.now()"));
}

/* Set has_budget and budget_left of the batch's orgs with hard budgets. */
void
mb_budget_limits(Batch *b)
{
	Oid			argtypes[1] = {b->cfg->org_array_type};
	Datum	   *orgs = palloc(sizeof(Datum) * Max(b->norgs, 1));
	Datum		value;
	uint64		i;

	if (b->norgs == 0)
		return;
	for (i = 0; i < (uint64) b->norgs; i++)
		orgs[i] = b->orgs[i].org;
	value = mb_array(orgs, NULL, b->norgs, b->cfg->org_type);
	mb_exec_plan(mb_plan(MB_STMT_BUDGET_LIMITS, budget_limits_sql, 1, argtypes),
				 &value, NULL, SPI_OK_SELECT);
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		HeapTuple	tup = SPI_tuptable->vals[i];
		BatchOrg   *o = &b->orgs[DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc,
															 1, &isnull)) - 1];

		o->has_budget = true;
		o->budget_left = datumCopy(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2,
												 &isnull), false, -1);
	}
}

static char *
mark_exceeded_sql(const MbConfig *cfg)
{
	return pstrdup("UPDATE msgbilling.budgets b SET exceeded_start ="
				   " msgbilling._period_start(b.period, b.time_zone, pg_catalog.now())"
				   " WHERE b.org_id OPERATOR(pg_catalog.=) ANY ($1) AND b.hard");
}

/*
 * Orgs with budget_exceeded failures in the batch: their hard budgets note
 * the period, so that the failures go back to pending when it ends.
 */
void
mb_mark_budget_exceeded(Batch *b)
{
	Oid			argtypes[1] = {b->cfg->org_array_type};
	Datum	   *orgs = palloc(sizeof(Datum) * Max(b->norgs, 1));
	Datum		value;
	int			n = 0;
	int			i;

	for (i = 0; i < b->norgs; i++)
		if (b->orgs[i].unpaid != NULL &&
			strcmp(b->orgs[i].unpaid, "budget_exceeded") == 0)
			orgs[n++] = b->orgs[i].org;
	if (n == 0)
		return;
	value = mb_array(orgs, NULL, n, b->cfg->org_type);
	mb_exec_plan(mb_plan(MB_STMT_MARK_EXCEEDED, mark_exceeded_sql, 1, argtypes),
				 &value, NULL, SPI_OK_UPDATE);
}

/*
 * The wallets, locked, of orgs ($1, or all) with budget failures of a
 * period that has ended; prepared, as it runs before every run of billing.
 */
static char *
rolled_budgets_sql(const MbConfig *cfg)
{
	return pstrdup("SELECT c.org_id FROM msgbilling.credits c WHERE c.org_id IN"
				   " (SELECT b.org_id FROM msgbilling.budgets b"
				   " WHERE b.exceeded_start IS NOT NULL AND ($1 IS NULL OR b.org_id = $1)"
				   " AND b.exceeded_start < msgbilling._period_start(b.period,"
				   " b.time_zone, pg_catalog.now()))"
				   " FOR UPDATE OF c SKIP LOCKED");
}

/*
 * Budget failures of a period that has ended back to pending: per org
 * whose wallet no other session holds (a biller holding it bills the org;
 * a later run catches it), of one org or all.
 */
static void
repend_new_periods(const MbConfig *cfg, Datum org, bool org_null)
{
	Oid			argtypes[1] = {cfg->org_type};
	char		nulls[1] = {org_null ? 'n' : ' '};
	SPITupleTable *orgs;
	uint64		n;
	uint64		i;

	mb_exec_plan(mb_plan(MB_STMT_ROLLED_BUDGETS, rolled_budgets_sql, 1, argtypes),
				 &org, nulls, SPI_OK_SELECT);
	orgs = SPI_tuptable;
	n = SPI_processed;
	for (i = 0; i < n; i++)
	{
		bool		isnull;
		Datum		o = SPI_getbinval(orgs->vals[i], orgs->tupdesc, 1, &isnull);

		mb_exec_sql("UPDATE msgbilling.budgets SET exceeded_start = NULL"
					" WHERE org_id = $1",
					1, argtypes, &o, NULL, SPI_OK_UPDATE);
		(void) mb_repend_unpaid(cfg, o);
	}
}

/*
 * Before a run of billing: the failures of budget periods that ended go
 * back to pending, and every MB_SWEEP_INTERVAL_MS long-expired holds go.
 */
void
mb_spend_housekeeping(const MbConfig *cfg, Datum org, bool org_null)
{
	static TimestampTz last_sweep = 0;
	TimestampTz now = GetCurrentTimestamp();

	repend_new_periods(cfg, org, org_null);
	if (TimestampDifferenceExceeds(last_sweep, now, MB_SWEEP_INTERVAL_MS))
	{
		mb_sweep_holds();
		last_sweep = now;
	}
}
