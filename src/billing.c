/*
 * billing.c
 *		One billing batch: claim, price, decide, write.
 *
 * A batch runs five statements whatever its size:
 *
 *	1. claim: lock up to N billable messages with FOR UPDATE SKIP LOCKED, so
 *	   concurrent billers never wait for each other's messages and never
 *	   claim the same one; rows come back sorted by org, then creation time
 *	   and key;
 *	2. lock the wallets of those orgs, also with SKIP LOCKED: an org whose
 *	   wallet another biller holds is left pending for a later batch, which
 *	   keeps one biller per org at a time and makes waits impossible;
 *	3. (only when some wallet was not returned) tell missing wallets from
 *	   busy ones;
 *	4. one UPDATE of the wallets and one INSERT into the ledger, one row per
 *	   org, in a single statement;
 *	5. one UPDATE of the messages from arrays, by ctid.
 *
 * Deciding happens here in C, per org in order: a running sum of costs is
 * compared with balance + overdraft limit, and the first message that does
 * not fit fails the org's later ones too, so billing stays in order.
 *
 * Billers never wait on a row lock (every lock they take is SKIP LOCKED),
 * so they cannot deadlock with each other or with top_up and refund, which
 * do wait.  They take no lock that an INSERT into the messages table needs.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "billing.h"
#include "msgbilling.h"
#include "prices.h"

/* Largest cost numeric(10,6) holds, plus one millionth. */
#define MB_COST_LIMIT "10000"
/* Tokens above this are not a real message. */
#define MB_TOKENS_LIMIT "1000000000000000"

typedef enum WalletState
{
	WALLET_HELD,				/* locked by us: bill */
	WALLET_BUSY,				/* locked by another biller: skip */
	WALLET_MISSING				/* no wallet: fail with no_wallet */
} WalletState;

/* One org of a batch. */
typedef struct BatchOrg
{
	Datum		org;			/* org id, from the claim's tuples */
	int			first;			/* first row of the org in the claim */
	int			nrows;
	WalletState state;
	bool		exhausted;		/* has an older unpaid message: charge none */
	Datum		limit;			/* numeric: balance + overdraft limit */
	Datum		charge;			/* numeric: sum of charged costs */
	int			ncharged;
	int64		ledger_id;
} BatchOrg;

typedef enum RowOutcome
{
	ROW_PENDING,				/* not decided: left pending */
	ROW_CHARGED,
	ROW_FAILED
} RowOutcome;

/* One claimed message and what was decided for it. */
typedef struct BatchRow
{
	ItemPointerData tid;		/* where the locked row is */
	Datum		key;
	bool		tokens_null;
	Datum		tokens;			/* numeric */
	char	   *model;			/* NULL: none */
	bool		created_null;
	TimestampTz created;
	RowOutcome	outcome;
	const char *reason;			/* failure reason */
	Datum		cost;			/* numeric, valid when charged */
} BatchRow;

typedef struct Batch
{
	const MbConfig *cfg;
	MbPriceList *prices;
	int			nrows;
	BatchRow   *rows;
	int			norgs;
	BatchOrg   *orgs;
} Batch;

static Datum cost_limit;
static Datum tokens_limit;
static Datum numeric_zero;

/* Numeric constants, built once in TopMemoryContext. */
static void
init_constants(void)
{
	MemoryContext old;

	if (numeric_zero != (Datum) 0)
		return;
	old = MemoryContextSwitchTo(TopMemoryContext);
	cost_limit = DirectFunctionCall3(numeric_in, CStringGetDatum(MB_COST_LIMIT),
									 ObjectIdGetDatum(InvalidOid),
									 Int32GetDatum(-1));
	tokens_limit = DirectFunctionCall3(numeric_in,
									   CStringGetDatum(MB_TOKENS_LIMIT),
									   ObjectIdGetDatum(InvalidOid),
									   Int32GetDatum(-1));
	/* zero with the scale of a cost, so that totals print alike */
	numeric_zero = DirectFunctionCall3(numeric_in, CStringGetDatum("0.000000"),
									   ObjectIdGetDatum(InvalidOid),
									   Int32GetDatum(-1));
	MemoryContextSwitchTo(old);
}

static int
num_cmp(Datum a, Datum b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, a, b));
}

static Datum
num_add(Datum a, Datum b)
{
	return DirectFunctionCall2(numeric_add, a, b);
}

/* Reset a batch total; credits start at zero. */
void
mb_totals_init(MbTotals *totals)
{
	init_constants();
	memset(totals, 0, sizeof(MbTotals));
	totals->credits = numeric_zero;
}

/* ---------------------------------------------------------------------
 * SQL text of the batch statements
 * ---------------------------------------------------------------------
 */

/*
 * The claim statement with the given WHERE clause on messages m.  It locks
 * the oldest billable messages (creation time, then key: the heap order of
 * an append-mostly table, so a batch touches few pages), then sorts them
 * by org so that each org's messages are adjacent for deciding.
 */
static char *
claim_sql(const MbConfig *cfg, const char *filter)
{
	StringInfoData s;

	initStringInfo(&s);
	appendStringInfo(&s,
					 "WITH c AS (SELECT m.ctid AS tid, m.%s AS k, m.%s AS o, m.%s AS t,",
					 cfg->key_col, cfg->org_col, cfg->tokens_col);
	if (cfg->model_col)
		appendStringInfo(&s, " m.%s AS md,", cfg->model_col);
	else
		appendStringInfoString(&s, " NULL::pg_catalog.text AS md,");
	if (cfg->created_col)
		appendStringInfo(&s, " m.%s AS cr", cfg->created_col);
	else
		appendStringInfoString(&s, " NULL::pg_catalog.timestamptz AS cr");
	appendStringInfo(&s, " FROM %s m WHERE %s ORDER BY ", cfg->relname, filter);
	if (cfg->created_col)
		appendStringInfo(&s, "m.%s, ", cfg->created_col);
	appendStringInfo(&s, "m.%s LIMIT $1 FOR UPDATE OF m SKIP LOCKED)"
					 " SELECT c.tid, c.k, c.o, c.t::pg_catalog.numeric,"
					 " c.md::pg_catalog.text, c.cr::pg_catalog.timestamptz"
					 " FROM c ORDER BY c.o, c.cr, c.k", cfg->key_col);
	return s.data;
}

static char *
claim_all_sql(const MbConfig *cfg)
{
	return claim_sql(cfg, "m.billing_status = 'pending'");
}

static char *
claim_org_sql(const MbConfig *cfg)
{
	return claim_sql(cfg, psprintf("m.%s = $2 AND m.billing_status = 'pending'",
								   cfg->org_col));
}

static char *
claim_ids_sql(const MbConfig *cfg)
{
	return claim_sql(cfg, psprintf("m.%s OPERATOR(pg_catalog.=) ANY ($2)"
								   " AND m.billing_status IN ('pending', 'failed')",
								   cfg->key_col));
}

static char *
claim_one_sql(const MbConfig *cfg)
{
	return claim_sql(cfg, psprintf("m.%s = $2"
								   " AND m.billing_status IN ('pending', 'failed')",
								   cfg->key_col));
}

static char *
lock_wallets_sql(const MbConfig *cfg)
{
	return pstrdup("SELECT u.ix, c.balance, c.overdraft_limit"
				   " FROM pg_catalog.unnest($1) WITH ORDINALITY AS u(o, ix)"
				   " JOIN msgbilling.credits c ON c.org_id = u.o"
				   " ORDER BY u.ix FOR UPDATE OF c SKIP LOCKED");
}

/*
 * Orgs (by ordinal) with an insufficient_credits failure outside this
 * batch: an older unpaid message, so that billing their later messages
 * would skip ahead of it.
 */
static char *
exhausted_sql(const MbConfig *cfg)
{
	return psprintf("SELECT u.ix"
					" FROM pg_catalog.unnest($1) WITH ORDINALITY AS u(o, ix)"
					" WHERE EXISTS (SELECT 1 FROM %s f WHERE f.%s = u.o"
					" AND f.billing_status = 'failed'"
					" AND f.billing_error = 'insufficient_credits'"
					" AND f.%s OPERATOR(pg_catalog.<>) ALL ($2))",
					cfg->relname, cfg->org_col, cfg->key_col);
}

static char *
wallets_exist_sql(const MbConfig *cfg)
{
	return pstrdup("SELECT u.ix"
				   " FROM pg_catalog.unnest($1) WITH ORDINALITY AS u(o, ix)"
				   " WHERE EXISTS (SELECT 1 FROM msgbilling.credits c"
				   " WHERE c.org_id = u.o)");
}

/*
 * Debit every org's wallet and write its one charge entry, returning the
 * entry id per org.  The ids come from the sequence in a CTE so that each
 * org's entry id is known without a second look-up.
 */
static char *
charge_wallets_sql(const MbConfig *cfg)
{
	return pstrdup("WITH u AS (SELECT * FROM ROWS FROM (pg_catalog.unnest($1),"
				   " pg_catalog.unnest($2::pg_catalog.numeric[]),"
				   " pg_catalog.unnest($3::pg_catalog.int4[]),"
				   " pg_catalog.unnest($4::pg_catalog.int4[])) AS u(o, amount, n, ix)),"
				   " w AS (UPDATE msgbilling.credits c"
				   " SET balance = c.balance - u.amount, updated_at = pg_catalog.now()"
				   " FROM u WHERE c.org_id = u.o"
				   " RETURNING c.org_id, c.balance, u.amount, u.n, u.ix),"
				   " e AS (SELECT w.*, pg_catalog.nextval("
				   "'msgbilling.ledger_id_seq'::pg_catalog.regclass) AS id FROM w),"
				   " i AS (INSERT INTO msgbilling.ledger"
				   " (id, org_id, kind, amount, balance_after, message_count)"
				   " SELECT e.id, e.org_id, 'charge', -e.amount, e.balance, e.n"
				   " FROM e)"
				   " SELECT e.ix, e.id FROM e");
}

static char *
write_messages_sql(const MbConfig *cfg)
{
	return psprintf("UPDATE %s m SET billing_status = u.st, cost_credits = u.cost,"
					" charged_at = CASE WHEN u.lid IS NULL THEN NULL"
					" ELSE pg_catalog.now() END,"
					" billing_error = u.err, billing_ledger_id = u.lid"
					" FROM ROWS FROM (pg_catalog.unnest($1),"
					" pg_catalog.unnest($2::pg_catalog.text[]),"
					" pg_catalog.unnest($3::pg_catalog.numeric[]),"
					" pg_catalog.unnest($4::pg_catalog.text[]),"
					" pg_catalog.unnest($5::pg_catalog.int8[]))"
					" AS u(tid, st, cost, err, lid)"
					" WHERE m.ctid = u.tid",
					cfg->relname);
}

/* ---------------------------------------------------------------------
 * Claim
 * ---------------------------------------------------------------------
 */

/* Run the claim statement of mode; SPI_tuptable holds the claimed rows. */
static void
run_claim(const MbConfig *cfg, MbClaimMode mode, Datum arg, int64 limit)
{
	Oid			argtypes[2] = {INT8OID, InvalidOid};
	Datum		values[2] = {Int64GetDatum(limit), arg};
	SPIPlanPtr	plan;

	switch (mode)
	{
		case MB_CLAIM_ALL:
			plan = mb_plan(MB_STMT_CLAIM_ALL, claim_all_sql, 1, argtypes);
			break;
		case MB_CLAIM_ORG:
			argtypes[1] = cfg->org_type;
			plan = mb_plan(MB_STMT_CLAIM_ORG, claim_org_sql, 2, argtypes);
			break;
		case MB_CLAIM_IDS:
			argtypes[1] = cfg->key_array_type;
			plan = mb_plan(MB_STMT_CLAIM_IDS, claim_ids_sql, 2, argtypes);
			break;
		default:
			argtypes[1] = cfg->key_type;
			plan = mb_plan(MB_STMT_CLAIM_ONE, claim_one_sql, 2, argtypes);
			break;
	}
	mb_exec_plan(plan, values, NULL, SPI_OK_SELECT);
}

/* Read the claimed rows into the batch and group them by org. */
static void
read_claim(Batch *b, SPITupleTable *tt, int n)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			i;

	get_typlenbyvalalign(b->cfg->org_type, &typlen, &typbyval, &typalign);
	b->nrows = n;
	b->rows = palloc0(sizeof(BatchRow) * Max(n, 1));
	b->orgs = palloc0(sizeof(BatchOrg) * Max(n, 1));
	b->norgs = 0;
	for (i = 0; i < n; i++)
	{
		HeapTuple	tup = tt->vals[i];
		BatchRow   *r = &b->rows[i];
		bool		isnull;
		Datum		org = SPI_getbinval(tup, tt->tupdesc, 3, &isnull);

		r->tid = *(ItemPointer) DatumGetPointer(SPI_getbinval(tup, tt->tupdesc, 1,
																	  &isnull));
		r->key = SPI_getbinval(tup, tt->tupdesc, 2, &isnull);
		r->tokens = SPI_getbinval(tup, tt->tupdesc, 4, &r->tokens_null);
		r->model = SPI_getvalue(tup, tt->tupdesc, 5);
		r->created = DatumGetTimestampTz(SPI_getbinval(tup, tt->tupdesc, 6,
													   &r->created_null));
		/* rows come sorted by org: a new org starts a new group */
		if (b->norgs == 0 ||
			!datumIsEqual(org, b->orgs[b->norgs - 1].org, typbyval, typlen))
		{
			BatchOrg   *o = &b->orgs[b->norgs++];

			o->org = org;
			o->first = i;
			o->charge = numeric_zero;
		}
		b->orgs[b->norgs - 1].nrows++;
	}
}

/* ---------------------------------------------------------------------
 * Wallets
 * ---------------------------------------------------------------------
 */

/* An array of the batch's org ids, in org order. */
static Datum
org_array(const Batch *b)
{
	Datum	   *elems = palloc(sizeof(Datum) * b->norgs);
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			i;

	for (i = 0; i < b->norgs; i++)
		elems[i] = b->orgs[i].org;
	get_typlenbyvalalign(b->cfg->org_type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_array(elems, b->norgs, b->cfg->org_type,
										   typlen, typbyval, typalign));
}

/* Tell the wallets that were not locked apart: busy or missing. */
static void
classify_unlocked(Batch *b, Datum orgs)
{
	Oid			argtypes[1] = {b->cfg->org_array_type};
	SPIPlanPtr	plan = mb_plan(MB_STMT_WALLETS_EXIST, wallets_exist_sql,
							   1, argtypes);
	uint64		i;

	mb_exec_plan(plan, &orgs, NULL, SPI_OK_SELECT);
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		ix = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc,
													 1, &isnull));
		BatchOrg   *o = &b->orgs[ix - 1];

		if (o->state == WALLET_MISSING)
			o->state = WALLET_BUSY;
	}
	SPI_freetuptable(SPI_tuptable);
}

/* The keys of the claimed rows, as an array of the key type. */
static Datum
claimed_keys(const Batch *b)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(b->nrows, 1));
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			i;

	if (b->nrows == 0)
		return PointerGetDatum(construct_empty_array(b->cfg->key_type));
	for (i = 0; i < b->nrows; i++)
		elems[i] = b->rows[i].key;
	get_typlenbyvalalign(b->cfg->key_type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_array(elems, b->nrows, b->cfg->key_type,
										   typlen, typbyval, typalign));
}

/*
 * Mark the orgs that already have an unpaid message.  Run after the
 * wallets are locked: a biller that fails an org's messages holds its
 * wallet until it commits, so this statement's snapshot sees every such
 * failure.  Batches that claim only pending messages pass no keys; those
 * that may claim failed ones exclude them, since they are being retried.
 */
static void
mark_exhausted(Batch *b, Datum orgs, bool may_claim_failed)
{
	Oid			argtypes[2] = {b->cfg->org_array_type, b->cfg->key_array_type};
	Datum		values[2];
	uint64		i;

	values[0] = orgs;
	values[1] = may_claim_failed ? claimed_keys(b) :
		PointerGetDatum(construct_empty_array(b->cfg->key_type));
	mb_exec_plan(mb_plan(MB_STMT_EXHAUSTED, exhausted_sql, 2, argtypes),
				 values, NULL, SPI_OK_SELECT);
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		ix = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc,
													 1, &isnull));

		b->orgs[ix - 1].exhausted = true;
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Lock the batch's wallets; record each org's spending limit and whether
 * it already has an unpaid message.
 */
static void
lock_wallets(Batch *b, bool may_claim_failed)
{
	Oid			argtypes[1] = {b->cfg->org_array_type};
	SPIPlanPtr	plan = mb_plan(MB_STMT_LOCK_WALLETS, lock_wallets_sql,
							   1, argtypes);
	Datum		orgs = org_array(b);
	uint64		i;
	uint64		locked;
	int			j;

	for (j = 0; j < b->norgs; j++)
		b->orgs[j].state = WALLET_MISSING;
	mb_exec_plan(plan, &orgs, NULL, SPI_OK_SELECT);
	locked = SPI_processed;
	for (i = 0; i < locked; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		ix = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		BatchOrg   *o = &b->orgs[ix - 1];

		o->state = WALLET_HELD;
		o->limit = num_add(SPI_getbinval(tup, desc, 2, &isnull),
						   SPI_getbinval(tup, desc, 3, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
	if (locked < (uint64) b->norgs)
		classify_unlocked(b, orgs);
	if (locked > 0)
		mark_exhausted(b, orgs, may_claim_failed);
}

/* ---------------------------------------------------------------------
 * Deciding
 * ---------------------------------------------------------------------
 */

/* Whether a token count is a whole number from 0 to MB_TOKENS_LIMIT. */
static bool
valid_tokens(const BatchRow *r)
{
	Datum		whole;

	if (r->tokens_null || num_cmp(r->tokens, numeric_zero) < 0 ||
		num_cmp(r->tokens, tokens_limit) > 0)
		return false;
	whole = DirectFunctionCall2(numeric_trunc, r->tokens, Int32GetDatum(0));
	return num_cmp(whole, r->tokens) == 0;
}

/*
 * Price a message: its reason to fail, or NULL with *cost set.
 * cost = round(tokens * price, 6).
 */
static const char *
price_row(const Batch *b, BatchRow *r, TimestampTz now)
{
	Datum		price;

	if (!valid_tokens(r))
		return "invalid_tokens";
	if (!mb_price_at(b->prices, r->model, r->created_null ? now : r->created,
					 &price))
		return "no_price";
	r->cost = DirectFunctionCall2(numeric_round,
								  DirectFunctionCall2(numeric_mul, r->tokens,
													  price),
								  Int32GetDatum(6));
	if (num_cmp(r->cost, cost_limit) >= 0)
		return "cost_out_of_range";
	return NULL;
}

/*
 * Decide an org's messages in order.  Once one does not fit the limit, the
 * org's later messages fail too, even cheaper ones, so that billing never
 * skips ahead of an unpaid message; an org that has one from an earlier
 * batch starts exhausted.  A change to the wallet makes those failures
 * pending again (wallet.c), which lifts this.
 */
static void
decide_org(Batch *b, BatchOrg *o, TimestampTz now)
{
	bool		exhausted = o->exhausted;
	int			i;

	if (o->state == WALLET_BUSY)
		return;
	for (i = o->first; i < o->first + o->nrows; i++)
	{
		BatchRow   *r = &b->rows[i];
		Datum		after;

		r->outcome = ROW_FAILED;
		r->reason = price_row(b, r, now);
		if (r->reason != NULL)
			continue;
		if (o->state == WALLET_MISSING)
		{
			r->reason = "no_wallet";
			continue;
		}
		after = num_add(o->charge, r->cost);
		if (exhausted || num_cmp(after, o->limit) > 0)
		{
			r->reason = "insufficient_credits";
			exhausted = true;
			continue;
		}
		o->charge = after;
		o->ncharged++;
		r->outcome = ROW_CHARGED;
	}
}

/* ---------------------------------------------------------------------
 * Writing
 * ---------------------------------------------------------------------
 */

/* Debit the wallets of orgs with charges; set each org's ledger entry id. */
static void
charge_wallets(Batch *b)
{
	Oid			argtypes[4] = {b->cfg->org_array_type, NUMERICARRAYOID,
	INT4ARRAYOID, INT4ARRAYOID};
	Datum	   *orgs = palloc(sizeof(Datum) * b->norgs);
	Datum	   *amounts = palloc(sizeof(Datum) * b->norgs);
	Datum	   *counts = palloc(sizeof(Datum) * b->norgs);
	Datum	   *ixs = palloc(sizeof(Datum) * b->norgs);
	Datum		values[4];
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			n = 0;
	int			i;
	uint64		j;

	for (i = 0; i < b->norgs; i++)
	{
		if (b->orgs[i].ncharged == 0)
			continue;
		orgs[n] = b->orgs[i].org;
		amounts[n] = b->orgs[i].charge;
		counts[n] = Int32GetDatum(b->orgs[i].ncharged);
		ixs[n] = Int32GetDatum(i);
		n++;
	}
	if (n == 0)
		return;
	get_typlenbyvalalign(b->cfg->org_type, &typlen, &typbyval, &typalign);
	values[0] = PointerGetDatum(construct_array(orgs, n, b->cfg->org_type,
												typlen, typbyval, typalign));
	values[1] = PointerGetDatum(construct_array(amounts, n, NUMERICOID,
												-1, false, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(counts, n, INT4OID,
												4, true, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(ixs, n, INT4OID,
												4, true, TYPALIGN_INT));
	mb_exec_plan(mb_plan(MB_STMT_CHARGE_WALLETS, charge_wallets_sql,
						 4, argtypes),
				 values, NULL, SPI_OK_SELECT);
	if (SPI_processed != (uint64) n)
		elog(ERROR, "charged %lu wallets, expected %d",
			 (unsigned long) SPI_processed, n);
	for (j = 0; j < SPI_processed; j++)
	{
		bool		isnull;
		int			ix = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[j],
													 SPI_tuptable->tupdesc,
													 1, &isnull));

		b->orgs[ix].ledger_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[j],
															SPI_tuptable->tupdesc,
															2, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
}

/* Arrays of what was decided, one element per decided message. */
typedef struct Decisions
{
	int			n;
	Datum	   *tids;
	Datum	   *statuses;
	Datum	   *costs;
	bool	   *cost_nulls;
	Datum	   *reasons;
	bool	   *reason_nulls;
	Datum	   *ledger_ids;
	bool	   *ledger_nulls;
} Decisions;

/* Collect the decided messages of the batch, and add them to totals. */
static void
collect_decisions(const Batch *b, Decisions *d, MbTotals *totals)
{
	int			cap = Max(b->nrows, 1);
	int			i;

	d->tids = palloc(sizeof(Datum) * cap);
	d->statuses = palloc(sizeof(Datum) * cap);
	d->costs = palloc(sizeof(Datum) * cap);
	d->cost_nulls = palloc(sizeof(bool) * cap);
	d->reasons = palloc(sizeof(Datum) * cap);
	d->reason_nulls = palloc(sizeof(bool) * cap);
	d->ledger_ids = palloc(sizeof(Datum) * cap);
	d->ledger_nulls = palloc(sizeof(bool) * cap);
	d->n = 0;
	for (i = 0; i < b->norgs; i++)
	{
		const BatchOrg *o = &b->orgs[i];
		int			j;

		for (j = o->first; j < o->first + o->nrows; j++)
		{
			const BatchRow *r = &b->rows[j];
			bool		charged = r->outcome == ROW_CHARGED;
			const char *status = charged ? MB_CHARGED : MB_FAILED;
			int			k = d->n;

			if (r->outcome == ROW_PENDING)
			{
				totals->skipped++;
				totals->last_status = MB_PENDING;
				continue;
			}
			d->tids[k] = PointerGetDatum(&r->tid);
			d->statuses[k] = CStringGetTextDatum(status);
			d->costs[k] = charged ? r->cost : (Datum) 0;
			d->cost_nulls[k] = !charged;
			d->reasons[k] = charged ? (Datum) 0 : CStringGetTextDatum(r->reason);
			d->reason_nulls[k] = charged;
			d->ledger_ids[k] = charged ? Int64GetDatum(o->ledger_id) : (Datum) 0;
			d->ledger_nulls[k] = !charged;
			d->n++;
			totals->last_status = status;
			if (charged)
			{
				totals->charged++;
				totals->credits = num_add(totals->credits, r->cost);
			}
			else
				totals->failed++;
		}
	}
}

/* A one-dimensional array with NULLs. */
static Datum
array_with_nulls(Datum *elems, bool *nulls, int n, Oid type)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			lbs[1] = {1};

	if (n == 0)
		return PointerGetDatum(construct_empty_array(type));
	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(elems, nulls, 1, &n, lbs, type,
											  typlen, typbyval, typalign));
}

/*
 * Write every decided message in one UPDATE, by ctid: the claim locked the
 * rows, so they cannot have moved, and a TID scan spares an index probe
 * per message.
 */
static void
write_messages(const Batch *b, Decisions *d)
{
	Oid			argtypes[5] = {TIDARRAYOID, TEXTARRAYOID,
	NUMERICARRAYOID, TEXTARRAYOID, INT8ARRAYOID};
	Datum		values[5];
	bool	   *nonulls = palloc0(sizeof(bool) * Max(d->n, 1));

	if (d->n == 0)
		return;
	values[0] = array_with_nulls(d->tids, nonulls, d->n, TIDOID);
	values[1] = array_with_nulls(d->statuses, nonulls, d->n, TEXTOID);
	values[2] = array_with_nulls(d->costs, d->cost_nulls, d->n, NUMERICOID);
	values[3] = array_with_nulls(d->reasons, d->reason_nulls, d->n, TEXTOID);
	values[4] = array_with_nulls(d->ledger_ids, d->ledger_nulls, d->n, INT8OID);
	mb_exec_plan(mb_plan(MB_STMT_WRITE_MESSAGES, write_messages_sql,
						 5, argtypes),
				 values, NULL, SPI_OK_UPDATE);
	if (SPI_processed != (uint64) d->n)
		elog(ERROR, "updated %lu messages, expected %d",
			 (unsigned long) SPI_processed, d->n);
}

/* ---------------------------------------------------------------------
 * The batch
 * ---------------------------------------------------------------------
 */

/*
 * Bill one batch of at most limit messages claimed by mode (arg is the org
 * id, the key array or the key).  Adds to totals; returns how many messages
 * were claimed, so that callers can stop when a batch claims none.
 *
 * Memory: everything is allocated in a context of its own, deleted at the
 * end, so a long run of batches does not grow; totals->credits is copied
 * out to the caller's context.
 */
int64
mb_bill_batch(const MbConfig *cfg, MbClaimMode mode, Datum arg, int64 limit,
			  MbTotals *totals)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext cxt = AllocSetContextCreate(caller, "msgbilling batch",
											  ALLOCSET_DEFAULT_SIZES);
	SPITupleTable *claimed;
	Batch		b;
	Decisions	d;
	int			i;
	int64		nclaimed;

	init_constants();
	MemoryContextSwitchTo(cxt);
	b.cfg = cfg;
	run_claim(cfg, mode, arg, limit);
	claimed = SPI_tuptable;
	nclaimed = (int64) SPI_processed;
	read_claim(&b, claimed, (int) nclaimed);
	if (nclaimed > 0)
	{
		b.prices = mb_prices_load();
		lock_wallets(&b, mode == MB_CLAIM_IDS || mode == MB_CLAIM_ONE);
		for (i = 0; i < b.norgs; i++)
			decide_org(&b, &b.orgs[i], GetCurrentTransactionStartTimestamp());
		charge_wallets(&b);
		collect_decisions(&b, &d, totals);
		write_messages(&b, &d);
	}
	SPI_freetuptable(claimed);
	MemoryContextSwitchTo(caller);
	totals->credits = datumCopy(totals->credits, false, -1);
	MemoryContextDelete(cxt);
	return nclaimed;
}
