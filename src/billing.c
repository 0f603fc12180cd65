/*
 * billing.c
 *		One billing batch: claim, price, decide, write.
 *
 * claim.c fills the batch: its orgs, their wallets (locked), their messages
 * (locked) and the order checks.  This file prices and decides, then writes
 * set-based, whatever the batch's size:
 *
 *	1. one UPDATE of the wallets and one INSERT into the ledger, one row per
 *	   org, in a single statement (with the counters stats() reads);
 *	2. one UPDATE of the charged messages and one of the failed ones, by
 *	   ctid (write.c).
 *
 * Deciding happens here in C, per org in order: a running sum of costs is
 * compared with balance + overdraft limit, and the first message that does
 * not fit fails the org's later ones too, so billing stays in order.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "jit/jit.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "batch.h"
#include "billing.h"
#include "convert.h"
#include "msgbilling.h"
#include "prices.h"
#include "spend.h"
#include "yield.h"

/* Tokens above this are not a real message. */
#define MB_TOKENS_LIMIT INT64CONST(1000000000000000)

static Datum numeric_zero;

/* Numeric zero, built once in TopMemoryContext. */
static void
init_constants(void)
{
	MemoryContext old;

	if (numeric_zero != (Datum) 0)
		return;
	old = MemoryContextSwitchTo(TopMemoryContext);
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
 * Debit every org's wallet and write its one charge entry, returning the
 * entry id per org; an org with only no_charge messages ($5) gets its
 * counter and no entry.  The ids come from the sequence in a CTE so that
 * each org's entry id is known without a second look-up, in the batch's
 * org order.
 */
static char *
charge_wallets_sql(const MbConfig *cfg)
{
	return pstrdup("WITH u AS (SELECT * FROM ROWS FROM (pg_catalog.unnest($1),"
				   " pg_catalog.unnest($2::pg_catalog.numeric[]),"
				   " pg_catalog.unnest($3::pg_catalog.int4[]),"
				   " pg_catalog.unnest($4::pg_catalog.int4[]),"
				   " pg_catalog.unnest($5::pg_catalog.int4[])) AS u(o, amount, n, ix, f)),"
				   " w AS (UPDATE msgbilling.credits c"
				   " SET balance = c.balance - u.amount,"
				   " charged_messages = c.charged_messages + u.n,"
				   " credits_charged = c.credits_charged + u.amount,"
				   " no_charge_messages = c.no_charge_messages + u.f,"
				   " updated_at = pg_catalog.now()"
				   " FROM u WHERE c.org_id = u.o"
				   " RETURNING c.org_id, c.balance, u.amount, u.n, u.ix),"
				   " e AS (SELECT w.*, CASE WHEN w.n > 0 THEN pg_catalog.nextval("
				   "'msgbilling.ledger_id_seq'::pg_catalog.regclass) END AS id"
				   " FROM (SELECT * FROM w ORDER BY w.ix) w),"
				   " i AS (INSERT INTO msgbilling.ledger"
				   " (id, org_id, kind, amount, balance_after, message_count)"
				   " SELECT e.id, e.org_id, 'charge', -e.amount, e.balance, e.n"
				   " FROM e WHERE e.n > 0)"
				   " SELECT e.ix, e.id FROM e");
}

/* ---------------------------------------------------------------------
 * Deciding
 * ---------------------------------------------------------------------
 */

/* Whether every token count named is from 0 to MB_TOKENS_LIMIT. */
static bool
valid_tokens(const BatchRow *r)
{
	int			k;

	if (r->counts_null)
		return false;
	for (k = 0; k < MB_NUM_KINDS; k++)
		if (r->counts[k] < 0 || r->counts[k] > MB_TOKENS_LIMIT)
			return false;
	return true;
}

/*
 * Price a message: its reason to fail, or NULL with *cost set at the
 * tariff in effect at its creation (prices.c).
 */
static const char *
price_row(const Batch *b, BatchRow *r, TimestampTz now)
{
	const MbPrice *price;

	if (!valid_tokens(r))
		return "invalid_tokens";
	price = mb_price_at(b->prices, r->model, r->created_null ? now : r->created);
	if (price == NULL)
		return "no_price";
	if (!mb_cost(price, r->counts, &r->cost))
		return "cost_out_of_range";
	return NULL;
}

/* Whether charging up to after would take a hard budget of o past it. */
static bool
over_budget(const BatchOrg *o, Datum after)
{
	return o->has_budget && num_cmp(after, o->budget_left) > 0;
}

/*
 * Why a message that does not fit, or comes after one that did not, fails:
 * behind the org's first unpaid message (of this batch, or an older one
 * the claim found), for its reason;
 * otherwise budget_exceeded when a hard budget has too little left (a
 * top-up would not help), else insufficient_credits.
 */
static const char *
unpaid_reason(const BatchOrg *o, Datum after, bool exhausted)
{
	if (exhausted && o->unpaid != NULL)
		return o->unpaid;
	return over_budget(o, after) ? "budget_exceeded" : "insufficient_credits";
}

/*
 * Decide an org's messages in order.  Once one does not fit the limit, the
 * org's later messages fail too, even cheaper ones, so that billing never
 * skips ahead of an unpaid message; an org that has one from an earlier
 * batch starts exhausted.  The limit is the wallet's and the least any
 * hard budget has left.  A change to the wallet or the budgets, or a new
 * budget period, makes those failures pending again (wallet.c, spend.c),
 * which lifts this.
 */
static void
decide_org(Batch *b, BatchOrg *o, TimestampTz now)
{
	bool		exhausted = o->exhausted;
	int			i;

	/* an org whose wallet is busy has no rows: nothing of it was claimed */
	Assert(o->state != WALLET_BUSY || o->nrows == 0);
	if (o->blocked)
		return;
	for (i = o->first; i < o->first + o->nrows; i++)
	{
		BatchRow   *r = &b->rows[i];
		Datum		after;

		r->outcome = ROW_FAILED;
		/*
		 * Not billable: costs nothing and is not held back by an unpaid
		 * message.  It counts in its wallet (stats()), so an org without
		 * one fails it as it fails its other messages.
		 */
		if (r->free)
		{
			if (o->state == WALLET_MISSING)
				r->reason = "no_wallet";
			else
			{
				r->outcome = ROW_NO_CHARGE;
				o->nfree++;
			}
			continue;
		}
		r->reason = price_row(b, r, now);
		if (r->reason != NULL)
			continue;
		if (o->state == WALLET_MISSING)
		{
			r->reason = "no_wallet";
			continue;
		}
		after = num_add(o->charge, r->cost);
		if (exhausted || num_cmp(after, o->limit) > 0 || over_budget(o, after))
		{
			r->reason = unpaid_reason(o, after, exhausted);
			o->unpaid = r->reason;
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

/*
 * Debit the wallets of orgs with charges; set each org's ledger entry id.
 * Then the entries' alerts and budget spend (spend.c).
 */
static void
charge_wallets(Batch *b)
{
	Oid			argtypes[5] = {b->cfg->org_array_type, NUMERICARRAYOID,
	INT4ARRAYOID, INT4ARRAYOID, INT4ARRAYOID};
	Datum	   *orgs = palloc(sizeof(Datum) * b->norgs);
	Datum	   *amounts = palloc(sizeof(Datum) * b->norgs);
	Datum	   *counts = palloc(sizeof(Datum) * b->norgs);
	Datum	   *ixs = palloc(sizeof(Datum) * b->norgs);
	Datum	   *frees = palloc(sizeof(Datum) * b->norgs);
	Datum	   *entries = palloc(sizeof(Datum) * b->norgs);
	int			nentries = 0;
	Datum		values[5];
	int			n = 0;
	int			i;
	uint64		j;

	for (i = 0; i < b->norgs; i++)
	{
		if (b->orgs[i].ncharged == 0 && b->orgs[i].nfree == 0)
			continue;
		orgs[n] = b->orgs[i].org;
		amounts[n] = b->orgs[i].charge;
		counts[n] = Int32GetDatum(b->orgs[i].ncharged);
		ixs[n] = Int32GetDatum(i);
		frees[n] = Int32GetDatum(b->orgs[i].nfree);
		n++;
	}
	if (n == 0)
		return;
	values[0] = mb_array(orgs, NULL, n, b->cfg->org_type);
	values[1] = mb_array(amounts, NULL, n, NUMERICOID);
	values[2] = mb_array(counts, NULL, n, INT4OID);
	values[3] = mb_array(ixs, NULL, n, INT4OID);
	values[4] = mb_array(frees, NULL, n, INT4OID);
	mb_exec_plan(mb_plan(MB_STMT_CHARGE_WALLETS, charge_wallets_sql,
						 5, argtypes),
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

		Datum		id = SPI_getbinval(SPI_tuptable->vals[j],
									   SPI_tuptable->tupdesc, 2, &isnull);

		b->orgs[ix].ledger_id = isnull ? 0 : DatumGetInt64(id);
		if (!isnull)
			entries[nentries++] = id;
	}
	SPI_freetuptable(SPI_tuptable);
	mb_ledger_added(entries, nentries);
}

/* ---------------------------------------------------------------------
 * The batch
 * ---------------------------------------------------------------------
 */

/*
 * Bill one batch of at most limit messages claimed by mode (arg is the org
 * id, the key array or the key).  Adds to totals; returns how many messages
 * the batch looked at (billed or skipped), so that callers can stop when a
 * batch finds none.  A run's batch may hold fewer than limit while more
 * are pending: it fills from the orgs of the first messages it peeks at.
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
	Batch		b;
	int64		looked = 0;
	int64		skipped_before = totals->skipped;
	int			guc_level;
	int			i;

	init_constants();
	mb_require_indexes();
	mb_yield_begin();
	MemoryContextSwitchTo(cxt);
	/*
	 * No JIT for the batch statements: their plans are generic and their
	 * estimates rough, and compiling costs more than a batch's work.
	 */
	guc_level = NewGUCNestLevel();
	if (jit_enabled)
		(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	memset(&b, 0, sizeof(b));
	b.cfg = cfg;
	b.mode = mode;
	b.arg = arg;
	if (mb_claim(&b, limit, numeric_zero))
	{
		/* failed, or held by another session and skipped */
		(void) mb_fail_orgless(&b, totals);
		looked = b.orgless;
		b.prices = mb_prices_load();
		mb_budget_limits(&b);
		for (i = 0; i < b.norgs; i++)
			decide_org(&b, &b.orgs[i], GetCurrentTransactionStartTimestamp());
		looked += b.nrows + b.skipped;
		charge_wallets(&b);
		for (i = 0; i < b.norgs; i++)
			if (b.orgs[i].ncharged > 0)
				totals->credits = num_add(totals->credits, b.orgs[i].charge);
		mb_write_messages(&b, totals);
		mb_mark_budget_exceeded(&b);
		mb_release_batch_holds(&b);
		totals->skipped += b.skipped;
	}
	/*
	 * A run that saw every pending message and claimed them all (its claims
	 * take whole orgs, so fewer than limit means no org was cut short)
	 * leaves nothing behind: the caller need not look again.
	 */
	totals->drained = (mode == MB_CLAIM_ALL || mode == MB_CLAIM_ORG) &&
		((b.norgs == 0 && b.orgless == 0) ||
		 (b.peeked_all && looked < limit &&
		  totals->skipped == skipped_before));
	AtEOXact_GUC(true, guc_level);
	MemoryContextSwitchTo(caller);
	totals->credits = datumCopy(totals->credits, false, -1);
	MemoryContextDelete(cxt);
	return looked;
}
