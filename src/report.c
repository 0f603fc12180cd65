/*
 * report.c
 *		Read-only views of billing: stats(), history() and verify().
 *
 * Each runs one query over the attached table and the msgbilling tables
 * and returns its rows as they are.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

#include "access.h"
#include "config.h"
#include "guard.h"
#include "convert.h"
#include "report.h"
#include "version.h"

PG_FUNCTION_INFO_V1(stats);
PG_FUNCTION_INFO_V1(history);
PG_FUNCTION_INFO_V1(verify);

/* Set up materialize mode; return the tuplestore to fill. */
Tuplestorestate *
mb_begin_rows(FunctionCallInfo fcinfo, TupleDesc *desc)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext old;
	Tuplestorestate *store;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	*desc = BlessTupleDesc(CreateTupleDescCopy(*desc));
	store = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = store;
	rsinfo->setDesc = *desc;
	MemoryContextSwitchTo(old);
	return store;
}

/* Return one row of the function's result type. */
void
mb_return_one_row(FunctionCallInfo fcinfo, Datum *values, bool *nulls)
{
	TupleDesc	desc;
	Tuplestorestate *store = mb_begin_rows(fcinfo, &desc);

	tuplestore_putvalues(store, desc, values, nulls);
}

/*
 * Return the rows of SPI_tuptable; the query's columns match the
 * function's result type.
 */
void
mb_return_spi_rows(FunctionCallInfo fcinfo)
{
	TupleDesc	desc;
	Tuplestorestate *store = mb_begin_rows(fcinfo, &desc);
	uint64		i;

	for (i = 0; i < SPI_processed; i++)
		tuplestore_puttuple(store, SPI_tuptable->vals[i]);
}

/* Run a read-only query and return its rows. */
static void
return_query(FunctionCallInfo fcinfo, const char *sql, int nargs,
			 Oid *argtypes, Datum *values, const char *nulls)
{
	int			ret = SPI_execute_with_args(sql, nargs, argtypes, values, nulls,
											true, 0);

	if (ret != SPI_OK_SELECT)
		elog(ERROR, "report query returned %s", SPI_result_code_string(ret));
	mb_return_spi_rows(fcinfo);
}

/*
 * stats(org_id) -> (pending, charged, failed, refunded, credits_charged,
 *					 oldest_pending, no_charge)
 *		Counts by status, of one org or all; credits_charged is the sum of
 *		costs of messages charged and not refunded.  Charged, refunded and
 *		no_charge come from the counters billing and refund keep in the
 *		wallets;
 *		pending and failed from the partial indexes on them: no scan of the
 *		messages, however many were ever billed.
 */
Datum
stats(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	bool		one = !PG_ARGISNULL(0);
	const char *t_org;
	const char *c_org;
	const char *hidden = "";
	Oid			argtypes[1];
	Datum		values[1];

	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	argtypes[0] = cfg->org_type;
	if (one)
	{
		values[0] = mb_arg_as(fcinfo, 0, cfg->org_type, "org id");
		/* an org the caller may not read looks like one without data */
		if (!mb_caller_may_read_org(cfg, values[0]))
			hidden = " AND false";
	}
	else
		mb_require_sees_all("stats() without an org id");
	t_org = one ? psprintf(" AND %s = $1%s", cfg->org_col, hidden) : "";
	c_org = one ? psprintf(" WHERE org_id = $1%s", hidden) : "";
	return_query(fcinfo,
				 psprintf("SELECT (SELECT pg_catalog.count(*) FROM %s"
						  " WHERE billing_status = 'pending'%s),"
						  " (SELECT COALESCE(pg_catalog.sum(charged_messages), 0)::pg_catalog.int8"
						  " FROM msgbilling.credits%s),"
						  " (SELECT pg_catalog.count(*) FROM %s"
						  " WHERE billing_status = 'failed'%s),"
						  " (SELECT COALESCE(pg_catalog.sum(refunded_messages), 0)::pg_catalog.int8"
						  " FROM msgbilling.credits%s),"
						  " (SELECT COALESCE(pg_catalog.sum(credits_charged), 0)::pg_catalog.numeric"
						  " FROM msgbilling.credits%s),"
						  " (SELECT pg_catalog.min(%s) FROM %s"
						  " WHERE billing_status = 'pending'%s),"
						  " (SELECT COALESCE(pg_catalog.sum(no_charge_messages), 0)::pg_catalog.int8"
						  " FROM msgbilling.credits%s)",
						  cfg->relname, t_org, c_org, cfg->relname, t_org,
						  c_org, c_org,
						  mb_created_tz(cfg, cfg->created_col),
						  cfg->relname, t_org, c_org),
				 one ? 1 : 0, argtypes, values, NULL);
	SPI_finish();
	return (Datum) 0;
}

/* Check history()'s arguments before anything runs. */
static void
check_history_args(FunctionCallInfo fcinfo, const MbConfig *cfg)
{
	mb_require_arg(fcinfo, 0, "org id");
	if (PG_ARGISNULL(1) || PG_GETARG_INT32(1) < 1 || PG_GETARG_INT32(1) > 10000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rows must be between 1 and 10000")));
	if (!PG_ARGISNULL(2) && cfg->created_col == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("history() cannot page by time: no created column is attached"),
				 errhint("Attach the table with created_column set, or leave "
						 "before NULL.")));
}

/* All the tokens a message is billed for: the sum of the attached counts. */
static char *
total_tokens_sql(const MbConfig *cfg)
{
	StringInfoData sum;
	int			k;

	initStringInfo(&sum);
	for (k = 0; k < MB_NUM_KINDS; k++)
		if (cfg->count_cols[k])
			appendStringInfo(&sum, "%s%s::pg_catalog.int8",
							 sum.len > 0 ? " OPERATOR(pg_catalog.+) " : "",
							 cfg->count_cols[k]);
	return sum.data;
}

/*
 * history(org_id, max_rows, before)
 *		The org's messages, newest first: the wallet page.
 */
Datum
history(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	StringInfoData sql;
	Oid			argtypes[3];
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	const char *created;

	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	check_history_args(fcinfo, cfg);
	values[0] = mb_arg_as(fcinfo, 0, cfg->org_type, "org id");
	created = mb_created_tz(cfg, cfg->created_col);
	initStringInfo(&sql);
	/* an org the caller may not read has no history for it */
	appendStringInfo(&sql,
					 "SELECT %s::pg_catalog.text, %s, %s, %s,"
					 " cost_credits::pg_catalog.numeric,"
					 " billing_status::pg_catalog.text, charged_at, billing_error, %s, %s, %s"
					 " FROM %s WHERE %s = $1 AND ($3 IS NULL OR %s < $3)%s"
					 " ORDER BY %s%s DESC LIMIT $2",
					 cfg->key_col, created, total_tokens_sql(cfg),
					 cfg->model_col ?
					 psprintf("%s::pg_catalog.text", cfg->model_col) :
					 "NULL::pg_catalog.text",
					 mb_column_as("", cfg->count_cols[MB_INPUT], "pg_catalog.int8"),
					 mb_column_as("", cfg->count_cols[MB_OUTPUT], "pg_catalog.int8"),
					 mb_column_as("", cfg->count_cols[MB_CACHED], "pg_catalog.int8"),
					 cfg->relname, cfg->org_col, created,
					 mb_caller_may_read_org(cfg, values[0]) ? "" : " AND false",
					 cfg->created_col ? psprintf("%s DESC, ", cfg->created_col) : "",
					 cfg->key_col);
	argtypes[0] = cfg->org_type;
	argtypes[1] = INT4OID;
	argtypes[2] = TIMESTAMPTZOID;
	values[1] = PG_GETARG_DATUM(1);
	values[2] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	if (PG_ARGISNULL(2))
		nulls[2] = 'n';
	return_query(fcinfo, sql.data, 3, argtypes, values, nulls);
	SPI_finish();
	return (Datum) 0;
}

/*
 * One verify() check: name, and a query that returns the number of
 * offending rows and one example.
 */
static void
append_check(StringInfo sql, const char *name, const char *what,
			 const char *offenders)
{
	if (sql->len > 0)
		appendStringInfoString(sql, " UNION ALL ");
	appendStringInfo(sql,
					 "SELECT %s::pg_catalog.text, n = 0,"
					 " CASE WHEN n = 0 THEN %s::pg_catalog.text"
					 " ELSE n || ' offending, e.g. ' || example END"
					 " FROM (SELECT pg_catalog.count(*) AS n,"
					 " pg_catalog.min(x) AS example FROM (%s) o(x)) s",
					 quote_literal_cstr(name), quote_literal_cstr(what),
					 offenders);
}

/*
 * The guard triggers that are missing or disabled now, on the attached
 * table or any of its partitions (each has its own clones), and the time the
 * guards were found off by the event trigger that watches them
 * (msgbilling._watch_guards), until a superuser clears it.  A table's
 * owner can disable the guards, and with them off change billing columns
 * unseen: once done, it stays visible.
 */
static char *
guards_offenders_sql(const MbConfig *cfg)
{
	return psprintf("SELECT 'trigger ' || g.name || ' of ' || r.rel::pg_catalog.regclass"
					" || CASE WHEN t.oid IS NULL THEN ' is missing' ELSE ' is disabled' END"
					" FROM (SELECT %u::pg_catalog.oid UNION SELECT p.relid"
					" FROM pg_catalog.pg_partition_tree(%u) p) r(rel)"
					" CROSS JOIN pg_catalog.unnest(ARRAY['%s', '%s', '%s', '%s', '%s']) g(name)"
					" LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = r.rel"
					" AND t.tgname = g.name"
					" WHERE t.oid IS NULL OR t.tgenabled IN ('D', 'R')"
					" UNION ALL SELECT 'the guards were off at ' || c.guards_off_since"
					" FROM msgbilling.config c WHERE c.guards_off_since IS NOT NULL",
					cfg->relid, cfg->relid, MB_GUARD_INSERT_TRIGGER,
					MB_GUARD_UPDATE_TRIGGER, MB_GUARD_ORG_TRIGGER,
					MB_GUARD_DELETE_TRIGGER, MB_GUARD_TRUNCATE_TRIGGER);
}

/*
 * verify() -> (check_name, ok, detail)
 *		The invariants that make the books reconcile.
 */
Datum
verify(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	StringInfoData sql;
	const char *t;
	const char *o;

	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	mb_require_sees_all("verify()");
	t = cfg->relname;
	o = cfg->org_col;
	initStringInfo(&sql);
	append_check(&sql, "balance_matches_ledger",
				 "every wallet balance equals the sum of its ledger entries",
				 "SELECT 'org ' || COALESCE(c.org_id, l.org_id)::pg_catalog.text"
				 " || ': balance ' || COALESCE(c.balance::pg_catalog.text, 'missing')"
				 " || ', ledger ' || COALESCE(l.total, 0)"
				 " FROM msgbilling.credits c FULL JOIN"
				 " (SELECT org_id, pg_catalog.sum(amount) AS total"
				 " FROM msgbilling.ledger GROUP BY org_id) l ON l.org_id = c.org_id"
				 " WHERE c.org_id IS NULL"
				 " OR c.balance <> COALESCE(l.total, 0)");
	append_check(&sql, "ledger_running_balance",
				 "every ledger entry's balance_after is the running sum of its org",
				 "SELECT 'entry ' || id || ': balance_after ' || balance_after"
				 " || ', running sum ' || run FROM (SELECT id, balance_after,"
				 " pg_catalog.sum(amount) OVER (PARTITION BY org_id ORDER BY id) AS run"
				 " FROM msgbilling.ledger) r WHERE balance_after <> run");
	append_check(&sql, "charges_match_ledger",
				 "per org, the costs of charged messages equal the net ledger charges",
				 psprintf("SELECT 'org ' || COALESCE(a.org::pg_catalog.text,"
						  " b.org_id::pg_catalog.text) || ': messages '"
						  " || COALESCE(a.s, 0) || ', ledger ' || COALESCE(b.s, 0)"
						  " FROM (SELECT x.org, pg_catalog.sum(x.s) AS s FROM"
						  " (SELECT %s AS org, cost_credits AS s"
						  " FROM %s WHERE billing_status = 'charged'"
						  " UNION ALL SELECT l.org_id, d.charged_cost"
						  " FROM msgbilling.deleted_messages d"
						  " JOIN msgbilling.ledger l ON l.id = d.ledger_id) x"
						  " GROUP BY 1) a"
						  " FULL JOIN (SELECT org_id, -pg_catalog.sum(amount) AS s"
						  " FROM msgbilling.ledger WHERE kind IN ('charge', 'refund')"
						  " GROUP BY org_id) b ON b.org_id = a.org"
						  " WHERE COALESCE(a.s, 0) <> COALESCE(b.s, 0)", o, t));
	append_check(&sql, "charge_entries_match_messages",
				 "every charge entry debits exactly the messages that point to it",
				 psprintf("SELECT 'entry ' || l.id || ': amount ' || -l.amount"
						  " || ' for ' || l.message_count || ' messages, found '"
						  " || COALESCE(m.s, 0) || ' for ' || COALESCE(m.n, 0)"
						  " FROM msgbilling.ledger l LEFT JOIN"
						  " (SELECT x.id, pg_catalog.sum(x.s) AS s, pg_catalog.sum(x.n) AS n"
						  " FROM (SELECT billing_ledger_id AS id, cost_credits AS s, 1 AS n"
						  " FROM %s WHERE billing_ledger_id IS NOT NULL"
						  " UNION ALL SELECT d.ledger_id, d.charged_cost + d.refunded_cost,"
						  " d.charged + d.refunded FROM msgbilling.deleted_messages d) x"
						  " GROUP BY 1) m"
						  " ON m.id = l.id WHERE l.kind = 'charge'"
						  " AND (COALESCE(m.s, 0) <> -l.amount"
						  " OR COALESCE(m.n, 0) <> l.message_count)", t));
	append_check(&sql, "charged_messages_complete",
				 "every charged or refunded message has a cost, charged_at and ledger entry",
				 psprintf("SELECT 'message ' || %s::pg_catalog.text FROM %s"
						  " WHERE billing_status IN ('charged', 'refunded')"
						  " AND (cost_credits IS NULL OR charged_at IS NULL"
						  " OR billing_ledger_id IS NULL)", cfg->key_col, t));
	/*
	 * Legacy messages may keep the cost the old system charged them; a
	 * no_charge one costs 0 and has its charged_at.
	 */
	append_check(&sql, "no_charge_on_other_status",
				 "no message but a charged or refunded one carries a charge",
				 psprintf("SELECT 'message ' || %s::pg_catalog.text FROM %s"
						  " WHERE billing_status NOT IN ('charged', 'refunded')"
						  " AND (billing_ledger_id IS NOT NULL"
						  " OR (billing_status = 'no_charge' AND (cost_credits <> 0"
						  " OR cost_credits IS NULL OR charged_at IS NULL))"
						  " OR (billing_status NOT IN ('legacy', 'no_charge')"
						  " AND (cost_credits IS NOT NULL OR charged_at IS NOT NULL)))",
						  cfg->key_col, t));
	append_check(&sql, "counters_match_messages",
				 "every wallet's charged and refunded counters match its messages",
				 psprintf("SELECT 'org ' || c.org_id::pg_catalog.text || ': counted '"
						  " || c.charged_messages || '/' || c.refunded_messages"
						  " || '/' || c.credits_charged || ', found '"
						  " || COALESCE(m.charged, 0) || '/' || COALESCE(m.refunded, 0)"
						  " || '/' || COALESCE(m.cost, 0)"
						  " FROM msgbilling.credits c LEFT JOIN"
						  " (SELECT x.org, pg_catalog.sum(x.charged) AS charged,"
						  " pg_catalog.sum(x.refunded) AS refunded, pg_catalog.sum(x.cost) AS cost"
						  " FROM (SELECT %s AS org,"
						  " (billing_status = 'charged')::pg_catalog.int4 AS charged,"
						  " (billing_status = 'refunded')::pg_catalog.int4 AS refunded,"
						  " CASE WHEN billing_status = 'charged' THEN cost_credits END AS cost"
						  " FROM %s WHERE billing_status IN ('charged', 'refunded')"
						  " UNION ALL SELECT l.org_id, d.charged, d.refunded, d.charged_cost"
						  " FROM msgbilling.deleted_messages d"
						  " JOIN msgbilling.ledger l ON l.id = d.ledger_id) x"
						  " GROUP BY 1) m ON m.org = c.org_id"
						  " WHERE c.charged_messages <> COALESCE(m.charged, 0)"
						  " OR c.refunded_messages <> COALESCE(m.refunded, 0)"
						  " OR c.credits_charged <> COALESCE(m.cost, 0)", o, t));
	append_check(&sql, "guards_in_place",
				 "the guard triggers are on, and were never off since attach",
				 guards_offenders_sql(cfg));
	return_query(fcinfo, sql.data, 0, NULL, NULL, NULL);
	SPI_finish();
	return (Datum) 0;
}
