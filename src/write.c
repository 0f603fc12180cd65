/*
 * write.c
 *		Writing a batch's decided messages: one UPDATE of the charged ones,
 *		one of the failed ones and one of the no_charge ones, each a single
 *		TID scan.
 *
 * Each write takes one array, the ctids of its messages in ctid order,
 * and finds its rows with "ctid = ANY ($1)": one TID scan, which fetches
 * them in that order.  What differs from message to message (cost and
 * ledger entry, or failure reason) is not passed as more arrays joined to
 * the ctids (a nested loop rescanning the TID scan once per message, about
 * a fifth of the write's time): the statement reads it from the batch by
 * ctid (a binary search of its sorted rows), through
 * msgbilling._decided_cost(), _decided_ledger_id() and _decided_error(),
 * which answer only while one of these writes runs.
 *
 * In a partitioned table a ctid means something only in its partition: a
 * write of the parent by ctid would update the rows at those places in
 * every partition.  There each partition's messages are a write of their
 * own, an UPDATE of that partition.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "batch.h"
#include "convert.h"
#include "msgbilling.h"
#include "yield.h"

PG_FUNCTION_INFO_V1(decided_cost);
PG_FUNCTION_INFO_V1(decided_ledger_id);
PG_FUNCTION_INFO_V1(decided_error);

/*
 * A decided message, by the place of its row: what the writes sort by.
 * In a partitioned table every partition has its own ctids: the place is
 * in the row's partition, and each partition's rows are a write of their
 * own, of that partition.
 */
typedef struct DecidedRow
{
	Oid			rel;			/* the table or partition */
	uint64		place;			/* block number, then offset */
	const BatchRow *row;
} DecidedRow;

static int
decided_cmp(const DecidedRow *a, const DecidedRow *b)
{
	if (a->rel != b->rel)
		return a->rel > b->rel ? 1 : -1;
	return (a->place > b->place) - (a->place < b->place);
}

#define ST_SORT sort_decided
#define ST_ELEMENT_TYPE DecidedRow
#define ST_COMPARE(a, b) decided_cmp(a, b)
#define ST_SCOPE static
#define ST_DEFINE
#include "lib/sort_template.h"

/* The messages of one kind of write, by partition, in ctid order. */
typedef struct DecidedRows
{
	int			n;
	DecidedRow *rows;
} DecidedRows;

/* The write that is running, which the _decided_* functions read. */
static DecidedRows *writing = NULL;

static uint64
tid_place(ItemPointer tid)
{
	return ((uint64) ItemPointerGetBlockNumberNoCheck(tid) << 16) |
		ItemPointerGetOffsetNumberNoCheck(tid);
}

/* ---------------------------------------------------------------------
 * SQL text of the two writes
 * ---------------------------------------------------------------------
 */

static char *
write_charged_sql(const MbConfig *cfg)
{
	return psprintf("UPDATE %s m SET billing_status = '" MB_CHARGED "',"
					" cost_credits = msgbilling._decided_cost(m.ctid),"
					" charged_at = pg_catalog.now(), billing_error = NULL,"
					" billing_ledger_id = msgbilling._decided_ledger_id(m.ctid)"
					" WHERE m.ctid OPERATOR(pg_catalog.=) ANY ($1)",
					cfg->relname);
}

static char *
write_failed_sql(const MbConfig *cfg)
{
	return psprintf("UPDATE %s m SET billing_status = '" MB_FAILED "',"
					" cost_credits = NULL, charged_at = NULL,"
					" billing_error = msgbilling._decided_error(m.ctid),"
					" billing_ledger_id = NULL"
					" WHERE m.ctid OPERATOR(pg_catalog.=) ANY ($1)",
					cfg->relname);
}

/* Not billable: no cost to read, the same for every one. */
static char *
write_no_charge_sql(const MbConfig *cfg)
{
	return psprintf("UPDATE %s m SET billing_status = '" MB_NO_CHARGE "',"
					" cost_credits = 0, charged_at = pg_catalog.now(),"
					" billing_error = NULL, billing_ledger_id = NULL"
					" WHERE m.ctid OPERATOR(pg_catalog.=) ANY ($1)",
					cfg->relname);
}

/*
 * Fail messages without an org (NULL in the org column): no wallet can pay
 * for them, and they must not stop the orgs billed with them.  $1 is how
 * many a run fails at most, oldest first; given ones ($2) fail whatever
 * their number, and so do given ones that failed before.
 */
static char *
fail_orgless_sql(const MbConfig *cfg, const char *which)
{
	const char *order = cfg->created_col ?
		psprintf("f.%s, f.%s", cfg->created_col, cfg->key_col) :
		psprintf("f.%s", cfg->key_col);

	return psprintf("UPDATE %s m SET billing_status = '" MB_FAILED "',"
					" billing_error = '" MB_NO_ORG "', cost_credits = NULL,"
					" charged_at = NULL, billing_ledger_id = NULL"
					" WHERE m.%s IN (SELECT f.%s FROM %s f WHERE f.%s IS NULL"
					" AND %s ORDER BY %s LIMIT $1"
					" FOR NO KEY UPDATE OF f SKIP LOCKED) AND m.%s IS NULL",
					cfg->relname, cfg->key_col, cfg->key_col, cfg->relname,
					cfg->org_col, which, order, cfg->org_col);
}

static char *
fail_orgless_all_sql(const MbConfig *cfg)
{
	return fail_orgless_sql(cfg, "f.billing_status = 'pending'");
}

static char *
fail_orgless_ids_sql(const MbConfig *cfg)
{
	return fail_orgless_sql(cfg,
							psprintf("f.%s OPERATOR(pg_catalog.=) ANY ($2)"
									 " AND f.billing_status IN ('pending', 'failed')",
									 cfg->key_col));
}

static char *
fail_orgless_one_sql(const MbConfig *cfg)
{
	return fail_orgless_sql(cfg,
							psprintf("f.%s = $2 AND f.billing_status IN"
									 " ('pending', 'failed')", cfg->key_col));
}

/* ---------------------------------------------------------------------
 * What the writes read, by ctid
 * ---------------------------------------------------------------------
 */

/* Order of DecidedRows by place, for bsearch. */
static int
place_cmp(const void *a, const void *b)
{
	uint64		pa = ((const DecidedRow *) a)->place;
	uint64		pb = ((const DecidedRow *) b)->place;

	return (pa > pb) - (pa < pb);
}

/* The decided message at tid in the running write (its rows are sorted). */
static const BatchRow *
decided_row(ItemPointer tid, const char *fname, bool paced)
{
	DecidedRow	key;
	const DecidedRow *found;

	if (writing == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s can only be called by msgbilling's own writes",
						fname),
				 errdetail("It reads the batch of messages msgbilling is writing."),
				 errhint("Bill messages with msgbilling.process_message_billing(),"
						 " process_batch_billing() or process_all_pending().")));
	/*
	 * Called between rows, with no buffer lock held: a place to yield.  A
	 * charged row calls twice, for its cost and its ledger entry; the cost
	 * is the one that counts towards its pace (pace.c).
	 */
	mb_yield_row(paced);
	key.place = tid_place(tid);
	found = bsearch(&key, writing->rows, writing->n, sizeof(DecidedRow),
					place_cmp);
	if (found == NULL)
		elog(ERROR, "msgbilling write found no decision for ctid (%u,%u)",
			 ItemPointerGetBlockNumberNoCheck(tid),
			 ItemPointerGetOffsetNumberNoCheck(tid));
	return found->row;
}

Datum
decided_cost(PG_FUNCTION_ARGS)
{
	const BatchRow *r = decided_row((ItemPointer) PG_GETARG_POINTER(0),
									"msgbilling._decided_cost()", true);

	Assert(r->outcome == ROW_CHARGED);
	PG_RETURN_DATUM(r->cost);
}

Datum
decided_ledger_id(PG_FUNCTION_ARGS)
{
	const BatchRow *r = decided_row((ItemPointer) PG_GETARG_POINTER(0),
									"msgbilling._decided_ledger_id()",
									false);

	Assert(r->outcome == ROW_CHARGED);
	PG_RETURN_INT64(r->ledger_id);
}

Datum
decided_error(PG_FUNCTION_ARGS)
{
	const BatchRow *r = decided_row((ItemPointer) PG_GETARG_POINTER(0),
									"msgbilling._decided_error()", true);

	Assert(r->outcome == ROW_FAILED);
	PG_RETURN_TEXT_P(cstring_to_text(r->reason));
}

/* ---------------------------------------------------------------------
 * Collecting and writing
 * ---------------------------------------------------------------------
 */

/*
 * Count a decided message in totals; returns false for one left pending
 * (it is not written).
 */
static bool
count_decision(const BatchRow *r, MbTotals *totals)
{
	const char *status;

	switch (r->outcome)
	{
		case ROW_PENDING:
			totals->skipped++;
			if (r->requested)
				totals->last_status = MB_PENDING;
			return false;
		case ROW_CHARGED:
			totals->charged++;
			status = MB_CHARGED;
			break;
		case ROW_NO_CHARGE:
			totals->no_charge++;
			status = MB_NO_CHARGE;
			break;
		default:
			totals->failed++;
			status = MB_FAILED;
			break;
	}
	if (r->requested)
	{
		totals->requested++;
		totals->last_status = status;
	}
	return true;
}

/*
 * Collect the decided messages of the batch into the two writes, each with
 * its org's ledger entry, and add them to totals.  They go in ctid order: a run's batch holds whole orgs,
 * whose messages lie all over the table, and updating them in the table's
 * order visits each page once and adds the key index entries of the new
 * row versions in order.
 */
static void
collect_decisions(Batch *b, DecidedRows *charged, DecidedRows *failed,
				  DecidedRows *unbilled, MbTotals *totals)
{
	int			cap = Max(b->nrows, 1);
	DecidedRow *decided = palloc(sizeof(DecidedRow) * cap);
	int			n = 0;
	int			i;

	for (i = 0; i < b->norgs; i++)
	{
		const BatchOrg *o = &b->orgs[i];
		int			j;

		for (j = o->first; j < o->first + o->nrows; j++)
		{
			BatchRow   *r = &b->rows[j];

			if (!count_decision(r, totals))
				continue;
			r->ledger_id = o->ledger_id;
			decided[n].rel = r->rel;
			decided[n].place = tid_place(&r->tid);
			decided[n++].row = r;
		}
	}
	sort_decided(decided, n);

	memset(charged, 0, sizeof(DecidedRows));
	memset(failed, 0, sizeof(DecidedRows));
	memset(unbilled, 0, sizeof(DecidedRows));
	charged->rows = palloc(sizeof(DecidedRow) * cap);
	failed->rows = palloc(sizeof(DecidedRow) * cap);
	unbilled->rows = palloc(sizeof(DecidedRow) * cap);
	for (i = 0; i < n; i++)
	{
		RowOutcome	outcome = decided[i].row->outcome;
		DecidedRows *w = outcome == ROW_CHARGED ? charged :
			outcome == ROW_NO_CHARGE ? unbilled : failed;

		w->rows[w->n++] = decided[i];
	}
}

/*
 * Run one write over rows, all in table or partition relid, with them
 * readable by ctid while it runs, and check that it updated every one of
 * them.  The rows are locked by the claim, so they cannot have moved.
 */
static void
exec_write_in(Oid relid, MbStmt id, MbSqlBuilder build, DecidedRows *rows,
			  const char *what)
{
	Oid			argtypes[1] = {TIDARRAYOID};
	Datum	   *tids = palloc(sizeof(Datum) * rows->n);
	Datum		tid_array;
	DecidedRows *outer = writing;
	int			i;

	for (i = 0; i < rows->n; i++)
		tids[i] = PointerGetDatum(&rows->rows[i].row->tid);
	tid_array = mb_array(tids, NULL, rows->n, TIDOID);
	/* a write may run inside another (an app trigger that bills) */
	writing = rows;
	PG_TRY();
	{
		mb_exec_plan_as_owner(relid, mb_plan_for(id, relid, build, 1, argtypes),
							  &tid_array, NULL, SPI_OK_UPDATE);
	}
	PG_FINALLY();
	{
		writing = outer;
	}
	PG_END_TRY();
	if (SPI_processed != (uint64) rows->n)
		elog(ERROR, "updated %lu %s messages, expected %d",
			 (unsigned long) SPI_processed, what, rows->n);
}

/* Run one write over rows, a statement for each partition they are in. */
static void
exec_write(MbStmt id, MbSqlBuilder build, DecidedRows *rows, const char *what)
{
	int			first = 0;

	while (first < rows->n)
	{
		DecidedRows part;

		part.rows = &rows->rows[first];
		part.n = 1;
		while (first + part.n < rows->n &&
			   part.rows[part.n].rel == part.rows[0].rel)
			part.n++;
		exec_write_in(part.rows[0].rel, id, build, &part, what);
		first += part.n;
	}
}

/*
 * Write the batch's decided messages, charged, failed, then no_charge, and
 * add them to totals.  Their orgs' ledger entries are written already.
 */
void
mb_write_messages(Batch *b, MbTotals *totals)
{
	DecidedRows charged;
	DecidedRows failed;
	DecidedRows unbilled;

	collect_decisions(b, &charged, &failed, &unbilled, totals);
	if (charged.n > 0)
		exec_write(MB_STMT_WRITE_CHARGED, write_charged_sql, &charged,
				   "charged");
	if (failed.n > 0)
		exec_write(MB_STMT_WRITE_FAILED, write_failed_sql, &failed, "failed");
	if (unbilled.n > 0)
		exec_write(MB_STMT_WRITE_NO_CHARGE, write_no_charge_sql, &unbilled,
				   "no_charge");
}

/*
 * Fail the batch's messages without an org, which its peek counted
 * (b->orgless), and add them to totals; returns how many failed.  A run's
 * that another session holds stay pending and count as skipped.
 */
int64
mb_fail_orgless(Batch *b, MbTotals *totals)
{
	const MbConfig *cfg = b->cfg;
	Oid			argtypes[2] = {INT8OID, INT4OID};
	Datum		values[2] = {Int64GetDatum(b->orgless), b->arg};
	char		nulls[2] = {' ', ' '};
	SPIPlanPtr	plan;
	int64		n;

	if (b->orgless == 0)
		return 0;
	switch (b->mode)
	{
		case MB_CLAIM_IDS:
			argtypes[1] = cfg->key_array_type;
			plan = mb_plan(MB_STMT_FAIL_ORGLESS_IDS, fail_orgless_ids_sql,
						   2, argtypes);
			break;
		case MB_CLAIM_ONE:
			argtypes[1] = cfg->key_type;
			plan = mb_plan(MB_STMT_FAIL_ORGLESS_ONE, fail_orgless_one_sql,
						   2, argtypes);
			break;
		default:
			/* a run of one org peeks at none: only a run of all gets here */
			nulls[1] = 'n';
			plan = mb_plan(MB_STMT_FAIL_ORGLESS_ALL, fail_orgless_all_sql,
						   2, argtypes);
			break;
	}
	mb_exec_plan_as_owner(cfg->relid, plan, values, nulls, SPI_OK_UPDATE);
	n = (int64) SPI_processed;
	totals->failed += n;
	if (b->mode == MB_CLAIM_ALL)
		totals->skipped += b->orgless - n;
	else if (n > 0)
	{
		totals->requested += n;
		totals->last_status = MB_FAILED;
	}
	return n;
}
