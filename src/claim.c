/*
 * claim.c
 *		What one billing batch may bill: its orgs, their wallets, and their
 *		messages, locked in that order.
 *
 * Lock order, the same for every biller: an org's wallet, then its
 * messages.  Wallets are locked FOR UPDATE, messages FOR NO KEY UPDATE
 * (so that rows referencing a message can still be inserted), both SKIP
 * LOCKED: an org whose wallet another session holds is skipped whole, so
 * one biller at a time bills an org, and billers never wait for each other.
 *
 * A run (process_all_pending, drain, the worker; all orgs or one) bills
 * whole runs of an org's messages:
 *
 *	1. it peeks at the first pending messages (no locks; at most
 *	   MB_RUN_PEEK) to learn their orgs, in the order of each org's oldest
 *	   message;
 *	2. then, org by org in that order, one statement locks the org's wallet
 *	   and claims the org's oldest pending messages, and stops when the
 *	   batch is full.  A batch thus touches few orgs: one wallet update and
 *	   one ledger entry per org per batch, however the orgs' messages are
 *	   interleaved in the table (billing in message order would touch an
 *	   org per message or two when orgs are many).
 *
 * Given messages (process_message_billing, process_batch_billing, the
 * trigger) come with the older pending messages of their orgs, which go
 * first: peek at the given messages' orgs, lock those wallets, claim.
 *
 * Either way, each org is then checked for an older message the batch did
 * not claim: an older unpaid failure (the org is out of credits or over
 * its budget: charge none) or an older pending message held by another
 * session (bill none now), so that billing never skips ahead of an unpaid
 * message.
 *
 * top_up, refund and the other wallet functions wait for the wallet; the
 * billers never wait at all, so no wait cycle can form.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"

#include "batch.h"
#include "convert.h"
#include "resume.h"
#include "wallet.h"
#include "yield.h"

/* ORDER BY of the billing order on messages alias a. */
static char *
billing_order(const MbConfig *cfg, const char *a)
{
	if (cfg->created_col)
		return psprintf("%s.%s, %s.%s", a, cfg->created_col, a, cfg->key_col);
	return psprintf("%s.%s", a, cfg->key_col);
}

/* Message a is given ($2), as an index condition on the key. */
static char *
given_key_sql(const MbConfig *cfg, MbClaimMode mode, const char *a)
{
	if (mode == MB_CLAIM_IDS)
		return psprintf("%s.%s OPERATOR(pg_catalog.=) ANY ($2)", a,
						cfg->key_col);
	return psprintf("%s.%s = $2", a, cfg->key_col);
}

/* The WHERE clause of a mode on messages m; $2 is the mode's argument. */
static char *
mode_filter(const MbConfig *cfg, MbClaimMode mode)
{
	switch (mode)
	{
		case MB_CLAIM_ALL:
			return pstrdup("m.billing_status = 'pending'");
		case MB_CLAIM_ORG:
			return psprintf("m.%s = $2 AND m.billing_status = 'pending'",
							cfg->org_col);
		default:
			return psprintf("%s AND m.billing_status IN ('pending', 'failed')",
							given_key_sql(cfg, mode, "m"));
	}
}

/*
 * Whether message a is one the caller asked for ($2), given ids or one.
 * Ids are looked up in a hashed subplan, built once per statement: the
 * kept statements run generic plans, in which "= ANY ($2)" would compare
 * each row with every id.
 */
static char *
requested_sql(const MbConfig *cfg, MbClaimMode mode, const char *a)
{
	if (mode != MB_CLAIM_IDS)
		return given_key_sql(cfg, mode, a);
	return psprintf("%s.%s IN (SELECT pg_catalog.unnest($2))", a,
					cfg->key_col);
}

/* The model and creation time of message m, NULL when not attached. */
static const char *
model_expr(const MbConfig *cfg)
{
	return cfg->model_col ? psprintf("m.%s", cfg->model_col) :
		"NULL::pg_catalog.text";
}

/*
 * What message m is billed for, as columns t (input tokens: the input or
 * the tokens column), ot (output), ct (cached), bl (billable) and hd (the
 * hold its LLM call took).
 */
static char *
billed_exprs(const MbConfig *cfg)
{
	return psprintf("%s AS t, %s AS ot, %s AS ct, %s AS bl, %s AS hd",
					mb_column_as("m", cfg->count_cols[MB_INPUT], "pg_catalog.int8"),
					mb_column_as("m", cfg->count_cols[MB_OUTPUT], "pg_catalog.int8"),
					mb_column_as("m", cfg->count_cols[MB_CACHED], "pg_catalog.int8"),
					mb_column_as("m", cfg->billable_col, "pg_catalog.bool"),
					mb_column_as("m", cfg->hold_col, "pg_catalog.int8"));
}

static const char *
created_expr(const MbConfig *cfg)
{
	return cfg->created_col ? psprintf("m.%s", cfg->created_col) :
		"NULL::pg_catalog.timestamptz";
}

/*
 * A lower bound on the creation time of pending message a: the oldest
 * pending message's, read once per statement (an InitPlan), in the
 * statement's own snapshot, so that it leaves out no row the statement
 * sees.  On a table partitioned by creation time, run-time pruning then
 * skips the partitions that hold no pending message, where each org's
 * look would otherwise probe every partition; elsewhere it costs one index
 * probe per statement.  Empty without a created column.
 */
static char *
pending_floor_sql(const MbConfig *cfg, const char *a)
{
	if (!cfg->created_col)
		return "";
	return psprintf(" AND %s.%s >= (SELECT pg_catalog.min(p.%s) FROM %s p"
					" WHERE p.billing_status = 'pending')",
					a, cfg->created_col, cfg->created_col, cfg->relname);
}

/* Peek: the orgs of the first $1 billable messages, with their counts and
 * the creation time of their oldest, in the order of each org's oldest
 * message (the order a run bills them in).  after adds a lower bound ($2)
 * on the creation time (resume.c).
 */
static char *
peek_sql(const MbConfig *cfg, MbClaimMode mode, const char *after)
{
	return psprintf("SELECT s.o, pg_catalog.count(*), pg_catalog.min(s.cr)"
					" FROM (SELECT p.o, p.cr, pg_catalog.row_number() OVER () AS n"
					" FROM (SELECT m.%s AS o, %s AS cr FROM %s m WHERE %s%s"
					" ORDER BY %s LIMIT $1) p) s"
					" GROUP BY s.o ORDER BY pg_catalog.min(s.n)",
					cfg->org_col, created_expr(cfg), cfg->relname,
					mode_filter(cfg, mode), after, billing_order(cfg, "m"));
}

static char *
peek_all_sql(const MbConfig *cfg)
{
	return peek_sql(cfg, MB_CLAIM_ALL, "");
}

/* Only with a created column (resume.c). */
static char *
peek_resume_sql(const MbConfig *cfg)
{
	return peek_sql(cfg, MB_CLAIM_ALL,
					psprintf(" AND m.%s >= $2", cfg->created_col));
}

static char *
peek_org_sql(const MbConfig *cfg)
{
	return peek_sql(cfg, MB_CLAIM_ORG, "");
}

static char *
peek_ids_sql(const MbConfig *cfg)
{
	return peek_sql(cfg, MB_CLAIM_IDS, "");
}

static char *
peek_one_sql(const MbConfig *cfg)
{
	return peek_sql(cfg, MB_CLAIM_ONE, "");
}

/*
 * The newest of the given messages ($2) of each org, in billing order, as
 * q(o, rc, rk); the org's pending messages up to it are billed with it.
 */
static char *
newest_given_sql(const MbConfig *cfg, MbClaimMode mode)
{
	const char *ids = given_key_sql(cfg, mode, "r");

	if (cfg->created_col)
		return psprintf("SELECT DISTINCT ON (r.%s) r.%s AS o, r.%s AS rc,"
						" r.%s AS rk FROM %s r WHERE %s"
						" ORDER BY r.%s, r.%s DESC NULLS LAST, r.%s DESC",
						cfg->org_col, cfg->org_col, cfg->created_col,
						cfg->key_col, cfg->relname, ids,
						cfg->org_col, cfg->created_col, cfg->key_col);
	return psprintf("SELECT DISTINCT ON (r.%s) r.%s AS o, r.%s AS rk"
					" FROM %s r WHERE %s ORDER BY r.%s, r.%s DESC",
					cfg->org_col, cfg->org_col, cfg->key_col, cfg->relname,
					ids, cfg->org_col, cfg->key_col);
}

/* Whether message m is older than the newest given one of its org, q. */
static char *
older_than_given_sql(const MbConfig *cfg)
{
	if (cfg->created_col)
		return psprintf("(m.%s, m.%s) < (q.rc, q.rk)", cfg->created_col,
						cfg->key_col);
	return psprintf("m.%s < q.rk", cfg->key_col);
}

/*
 * Claim given messages ($2) and their orgs' older pending ones: lock the
 * billable messages of the orgs in $3, oldest first; each row comes with
 * the ordinal of its org in $3, sorted by it.  Two parts: the pending
 * messages of those orgs (through the partial index by org) that are given
 * or older than the newest given one of their org, found once (q), rather
 * than compared with every given message; and the given failed ones
 * (through the key).  The arrays are looked up in hashed subplans where a
 * row is checked against them: in the generic plans of the kept
 * statements, "= ANY ($n)" compares a row with every element, and as an
 * index condition rescans the index once per element.  No limit: the
 * given messages come with all their orgs' older pending ones ($1, the
 * limit of a run's claim, is not used).
 */
static char *
claim_sql(const MbConfig *cfg, MbClaimMode mode)
{
	const char *cols = psprintf("m.ctid AS tid, m.tableoid AS rel, m.%s AS k, m.%s AS o,"
								" %s, %s AS md, %s AS cr, %s AS req",
								cfg->key_col, cfg->org_col, billed_exprs(cfg),
								model_expr(cfg), created_expr(cfg),
								requested_sql(cfg, mode, "m"));
	const char *given = given_key_sql(cfg, mode, "m");

	return psprintf("WITH q AS MATERIALIZED (%s),"
					" p AS MATERIALIZED (SELECT %s FROM q JOIN %s m ON m.%s = q.o"
					" WHERE q.o IN (SELECT pg_catalog.unnest($3))"
					" AND m.billing_status = 'pending'%s AND (%s OR %s)"
					" FOR NO KEY UPDATE OF m SKIP LOCKED),"
					" f AS MATERIALIZED (SELECT %s FROM %s m WHERE %s"
					" AND m.billing_status = 'failed'"
					" AND m.%s IN (SELECT pg_catalog.unnest($3))"
					" FOR NO KEY UPDATE OF m SKIP LOCKED),"
					" c AS (SELECT * FROM p UNION ALL SELECT * FROM f)"
					" SELECT c.tid, c.rel, c.k, c.t, c.ot, c.ct, c.bl, c.hd,"
					" c.md::pg_catalog.text, %s,"
					" c.cr, u.ix, c.req FROM c JOIN pg_catalog.unnest($3)"
					" WITH ORDINALITY AS u(o, ix) ON u.o = c.o"
					" ORDER BY u.ix, c.cr, c.k",
					newest_given_sql(cfg, mode),
					cols, cfg->relname, cfg->org_col, pending_floor_sql(cfg, "m"),
					older_than_given_sql(cfg), requested_sql(cfg, mode, "m"),
					cols, cfg->relname, given, cfg->org_col,
					mb_created_tz(cfg, "c.cr"));
}

/*
 * A run's claim: org by org in the order of $2, lock the wallet (SKIP
 * LOCKED) and claim the org's oldest pending messages (SKIP LOCKED), until
 * $1 rows.  The nested loop is forced by LATERAL and the outer LIMIT stops
 * it: orgs after the batch is full are neither locked nor read.  An org
 * without a wallet has its messages claimed, to fail them; an org whose
 * wallet another session holds, or with nothing left to claim, yields one
 * row with a NULL ctid, which says which of the two it is.
 */
static char *
run_claim_sql(const MbConfig *cfg)
{
	return psprintf("SELECT r.tid, r.rel, r.k, r.t, r.ot, r.ct, r.bl, r.hd,"
					" r.md::pg_catalog.text, %s, r.cr,"
					" u.ix, true, s.held, s.missing, w.lim"
					" FROM pg_catalog.unnest($2) WITH ORDINALITY AS u(o, ix)"
					" LEFT JOIN LATERAL (SELECT c.balance OPERATOR(pg_catalog.+)"
					" c.overdraft_limit AS lim FROM msgbilling.credits c"
					" WHERE c.org_id = u.o FOR UPDATE OF c SKIP LOCKED) w ON true"
					" CROSS JOIN LATERAL (SELECT w.lim IS NOT NULL AS held,"
					" w.lim IS NULL AND NOT EXISTS (SELECT 1 FROM msgbilling.credits c"
					" WHERE c.org_id = u.o) AS missing) s"
					" LEFT JOIN LATERAL (SELECT m.ctid AS tid, m.tableoid AS rel,"
					" m.%s AS k, %s,"
					" %s AS md, %s AS cr FROM %s m"
					" WHERE m.%s = u.o AND m.billing_status = 'pending'%s"
					" AND (s.held OR s.missing)"
					" ORDER BY %s LIMIT $1 FOR NO KEY UPDATE OF m SKIP LOCKED) r ON true"
					" LIMIT $1",
					mb_created_tz(cfg, "r.cr"),
					cfg->key_col, billed_exprs(cfg), model_expr(cfg),
					created_expr(cfg), cfg->relname, cfg->org_col,
					pending_floor_sql(cfg, "m"), billing_order(cfg, "m"));
}

static char *
claim_ids_sql(const MbConfig *cfg)
{
	return claim_sql(cfg, MB_CLAIM_IDS);
}

static char *
claim_one_sql(const MbConfig *cfg)
{
	return claim_sql(cfg, MB_CLAIM_ONE);
}

static char *
lock_wallets_sql(const MbConfig *cfg)
{
	return pstrdup("SELECT u.ix, c.balance, c.overdraft_limit"
				   " FROM pg_catalog.unnest($1) WITH ORDINALITY AS u(o, ix)"
				   " JOIN msgbilling.credits c ON c.org_id = u.o"
				   " ORDER BY u.ix FOR UPDATE OF c SKIP LOCKED");
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
 * Message f is older than u, the last message its org's batch claimed.
 * With a created column, its bound on f's creation time alone lets
 * run-time pruning skip the partitions of newer messages.
 */
static char *
older_than_last_sql(const MbConfig *cfg)
{
	if (cfg->created_col)
		return psprintf("f.%s <= u.cr AND (f.%s, f.%s) < (u.cr, u.k)",
						cfg->created_col, cfg->created_col, cfg->key_col);
	return psprintf("f.%s < u.k", cfg->key_col);
}

/*
 * The reason of org u's oldest unpaid failure (insufficient_credits,
 * budget_exceeded) older than its last claimed message, or NULL: the
 * org's messages fail behind it, for the same reason.  Orgs with none are
 * the rule, so first one look for any such failure of the batch's orgs
 * ($1), an InitPlan: each org's own look probes every partition of a
 * partitioned table, and runs only if that finds one.
 */
static char *
older_unpaid_sql(const MbConfig *cfg)
{
	return psprintf("CASE WHEN (SELECT EXISTS (SELECT 1 FROM %s g"
					" WHERE g.%s OPERATOR(pg_catalog.=) ANY ($1)"
					" AND g.billing_status = 'failed'"
					" AND g.billing_error IN " MB_UNPAID_SQL "))"
					" THEN (SELECT f.billing_error::pg_catalog.text FROM %s f"
					" WHERE f.%s = u.o AND f.billing_status = 'failed'"
					" AND f.billing_error IN " MB_UNPAID_SQL " AND %s"
					" ORDER BY %s LIMIT 1) END",
					cfg->relname, cfg->org_col,
					cfg->relname, cfg->org_col, older_than_last_sql(cfg),
					billing_order(cfg, "f"));
}

/* The order checks' rows: per org ($1), its last claimed message ($3, $4) and count ($5). */
static const char *const order_check_from =
" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($3),"
" pg_catalog.unnest($4), pg_catalog.unnest($5))"
" WITH ORDINALITY AS u(o, cr, k, n, ix)";

/*
 * Per org ($1, with the creation time $3 and key $4 of its last claimed
 * message): the reason of an older unpaid failure, or is there an older
 * pending message, that the batch ($2: its keys) did not claim?
 */
static char *
order_check_ids_sql(const MbConfig *cfg)
{
	/* hashed, built once: "<> ALL ($2)" would compare each row with every key */
	const char *outside = psprintf("f.%s NOT IN (SELECT pg_catalog.unnest($2))",
								   cfg->key_col);

	return psprintf("SELECT u.ix, %s,"
					" EXISTS (SELECT 1 FROM %s f WHERE f.%s = u.o"
					" AND f.billing_status = 'pending'%s AND %s AND %s)%s",
					older_unpaid_sql(cfg), cfg->relname, cfg->org_col,
					pending_floor_sql(cfg, "f"), older_than_last_sql(cfg),
					outside, order_check_from);
}

/*
 * The same for a run over pending messages ($5: how many the batch claimed
 * of each org).  Its messages are the org's oldest pending ones, so none is
 * failed, and an older pending message it did not claim shows as more
 * older pending messages than it claimed: cheaper than excluding its keys.
 */
static char *
order_check_run_sql(const MbConfig *cfg)
{
	return psprintf("SELECT u.ix, %s,"
					" (SELECT pg_catalog.count(*) FROM %s f WHERE f.%s = u.o"
					" AND f.billing_status = 'pending'%s AND %s) > u.n - 1%s",
					older_unpaid_sql(cfg), cfg->relname, cfg->org_col,
					pending_floor_sql(cfg, "f"), older_than_last_sql(cfg),
					order_check_from);
}

/* The mode's argument type, for the statements' $2. */
static Oid
mode_arg_type(const MbConfig *cfg, MbClaimMode mode)
{
	switch (mode)
	{
		case MB_CLAIM_ORG:
			return cfg->org_type;
		case MB_CLAIM_IDS:
			return cfg->key_array_type;
		case MB_CLAIM_ONE:
			return cfg->key_type;
		default:
			return INT4OID;		/* unused */
	}
}

/*
 * How many pending messages a run peeks at for their orgs.  A batch fills
 * from whole orgs, so it needs few of them, and peeking costs per message
 * peeked: with orgs of one message each, a batch bills at most this many.
 */
#define MB_RUN_PEEK 1000

/* Run the peek of the batch's mode, or the worker's resumed one. */
static bool
exec_peek(Batch *b, int64 limit)
{
	static const MbStmt ids[] = {MB_STMT_PEEK_ALL, MB_STMT_PEEK_ORG,
	MB_STMT_PEEK_IDS, MB_STMT_PEEK_ONE};
	static const MbSqlBuilder builders[] = {peek_all_sql, peek_org_sql,
	peek_ids_sql, peek_one_sql};
	Oid			argtypes[2] = {INT8OID, mode_arg_type(b->cfg, b->mode)};
	Datum		values[2] = {Int64GetDatum(limit), b->arg};
	char		nulls[2] = {' ', b->mode == MB_CLAIM_ALL ? 'n' : ' '};

	if (b->mode == MB_CLAIM_ALL && mb_resume_from(b->cfg, &values[1]))
	{
		argtypes[1] = b->cfg->created_type;
		nulls[1] = ' ';
		mb_exec_plan(mb_plan(MB_STMT_PEEK_RESUME, peek_resume_sql, 2,
							 argtypes), values, nulls, SPI_OK_SELECT);
		return true;
	}
	mb_exec_plan(mb_plan(ids[b->mode], builders[b->mode], 2, argtypes),
				 values, nulls, SPI_OK_SELECT);
	return false;
}

/* Peek: the orgs of the first billable messages (at most limit). */
static void
peek(Batch *b, int64 limit)
{
	bool		run = b->mode == MB_CLAIM_ALL || b->mode == MB_CLAIM_ORG;
	int64		asked = run ? Min(limit, MB_RUN_PEEK) : limit;
	bool		resumed = exec_peek(b, asked);
	uint64		i;
	int64		seen = 0;
	bool		isnull;
	bool		no_oldest = true;
	Datum		oldest = (Datum) 0;

	b->norgs = 0;
	b->orgs = palloc0(sizeof(BatchOrg) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		BatchOrg   *o = &b->orgs[b->norgs];
		bool		no_org;
		int64		peeked = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
														 SPI_tuptable->tupdesc,
														 2, &isnull));

		seen += peeked;
		o->org = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
							   1, &no_org);
		/* messages without an org are not an org's: they fail apart */
		if (no_org)
		{
			b->orgless = peeked;
			continue;
		}
		o->peeked = peeked;
		o->state = WALLET_MISSING;
		b->norgs++;
	}
	/* the first row holds the oldest message: the order is by creation */
	if (b->mode == MB_CLAIM_ALL && SPI_processed > 0)
		oldest = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
							   3, &no_oldest);
	if (b->mode == MB_CLAIM_ALL)
	{
		mb_resume_note(b->cfg, resumed, !no_oldest, oldest);
		mb_last_peek_resumed = resumed;
	}
	/* fewer than it asked for: it saw them all (a resumed one: not before) */
	b->peeked_all = seen < asked && !resumed;
}

/*
 * An array of the ids of the batch's orgs, or only of those whose wallet
 * is not busy (held, or missing: their messages are claimed to fail them);
 * map gets each element's org index.
 */
static Datum
org_array(const Batch *b, bool skip_busy, int *map, int *n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(b->norgs, 1));
	int			i;

	*n = 0;
	for (i = 0; i < b->norgs; i++)
	{
		if (skip_busy && b->orgs[i].state == WALLET_BUSY)
			continue;
		if (map)
			map[*n] = i;
		elems[(*n)++] = b->orgs[i].org;
	}
	return mb_array(elems, NULL, *n, b->cfg->org_type);
}

/* Tell the wallets that were not locked apart: busy or missing. */
static void
classify_unlocked(Batch *b, Datum orgs)
{
	Oid			argtypes[1] = {b->cfg->org_array_type};
	uint64		i;

	mb_exec_plan(mb_plan(MB_STMT_WALLETS_EXIST, wallets_exist_sql, 1, argtypes),
				 &orgs, NULL, SPI_OK_SELECT);
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		ix = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc,
													 1, &isnull));

		if (b->orgs[ix - 1].state == WALLET_MISSING)
			b->orgs[ix - 1].state = WALLET_BUSY;
	}
}

/* Given messages: lock their orgs' wallets, with each one's spending limit. */
static void
lock_wallets(Batch *b)
{
	Oid			argtypes[1] = {b->cfg->org_array_type};
	int			n;
	Datum		orgs = org_array(b, false, NULL, &n);
	uint64		i;
	uint64		locked;

	mb_exec_plan(mb_plan(MB_STMT_LOCK_WALLETS, lock_wallets_sql, 1, argtypes),
				 &orgs, NULL, SPI_OK_SELECT);
	locked = SPI_processed;
	for (i = 0; i < locked; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		BatchOrg   *o = &b->orgs[DatumGetInt64(SPI_getbinval(tup, desc, 1,
															 &isnull)) - 1];

		o->state = WALLET_HELD;
		o->limit = DirectFunctionCall2(numeric_add,
									   SPI_getbinval(tup, desc, 2, &isnull),
									   SPI_getbinval(tup, desc, 3, &isnull));
	}
	if (locked < (uint64) b->norgs)
		classify_unlocked(b, orgs);
	for (i = 0; i < (uint64) b->norgs; i++)
		if (b->orgs[i].state == WALLET_BUSY)
			b->skipped += b->orgs[i].peeked;
}

/*
 * The claims' rows go straight into the batch, one at a time, with no
 * SPI_tuptable in between (mb_exec_plan_to).  Columns: ctid, the table
 * (a partition, in a partitioned table) the row is in, key, tokens,
 * model, creation time (as timestamptz, then in its own type), the org's
 * ordinal in the org array, whether the message was asked for; a run's
 * claim adds its org's wallet: held, missing and spending limit.
 */
typedef struct ClaimReceiver
{
	DestReceiver pub;
	Batch	   *b;
	const int  *map;			/* org array ordinal - 1 -> org index */
	bool		run;			/* a run's claim (run_claim_sql) */
	int64		last_ix;		/* the org of the previous row */
	int			cap;			/* rows allocated */
	MemoryContext cxt;			/* the batch's: what the rows live in */
	int16		key_len;
	bool		key_byval;
	int16		created_len;
	bool		created_byval;
} ClaimReceiver;

enum
{
	CL_TID, CL_REL, CL_KEY, CL_INPUT, CL_OUTPUT, CL_CACHED, CL_BILLABLE, CL_HOLD,
	CL_MODEL,
	CL_CREATED, CL_CREATED_RAW, CL_IX, CL_REQUESTED, CL_HELD, CL_MISSING, CL_LIMIT
};

/*
 * Take the wallet of org o from its first row in a run claim: held (with
 * its spending limit), missing or busy.
 */
static void
run_org_wallet(ClaimReceiver *cr, const Datum *v, BatchOrg *o)
{
	Batch	   *b = cr->b;
	bool		held = DatumGetBool(v[CL_HELD]);

	o->state = held ? WALLET_HELD : DatumGetBool(v[CL_MISSING]) ?
		WALLET_MISSING : WALLET_BUSY;
	if (held)
		o->limit = datumCopy(v[CL_LIMIT], false, -1);
	if (o->state == WALLET_BUSY)
		b->skipped += o->peeked;
}

/*
 * A message's token counts (a column not attached counts 0; a NULL in one
 * that is makes it invalid_tokens) and whether it is billable (NULL is).
 */
static void
add_counts(const MbConfig *cfg, BatchRow *r, const Datum *v, const bool *isnull)
{
	int			k;

	for (k = 0; k < MB_NUM_KINDS; k++)
	{
		if (cfg->count_cols[k] == NULL)
			continue;
		if (isnull[CL_INPUT + k])
			r->counts_null = true;
		else
			r->counts[k] = DatumGetInt64(v[CL_INPUT + k]);
	}
	r->free = !isnull[CL_BILLABLE] && !DatumGetBool(v[CL_BILLABLE]);
	r->has_hold = !isnull[CL_HOLD];
	if (r->has_hold)
		r->hold_id = DatumGetInt64(v[CL_HOLD]);
}

/* Append a claimed message to the batch; each org's rows are adjacent. */
static void
add_row(ClaimReceiver *cr, const Datum *v, const bool *isnull, BatchOrg *o)
{
	Batch	   *b = cr->b;
	BatchRow   *r;

	if (b->nrows == cr->cap)
	{
		cr->cap *= 2;
		b->rows = repalloc(b->rows, sizeof(BatchRow) * cr->cap);
	}
	r = &b->rows[b->nrows];
	memset(r, 0, sizeof(BatchRow));
	r->tid = *(ItemPointer) DatumGetPointer(v[CL_TID]);
	r->rel = DatumGetObjectId(v[CL_REL]);
	r->key = datumCopy(v[CL_KEY], cr->key_byval, cr->key_len);
	add_counts(cr->b->cfg, r, v, isnull);
	/* text (the claim casts it): no output function call per row */
	r->model = isnull[CL_MODEL] ? NULL : TextDatumGetCString(v[CL_MODEL]);
	r->created_null = isnull[CL_CREATED];
	if (!r->created_null)
	{
		r->created = DatumGetTimestampTz(v[CL_CREATED]);
		r->created_raw = datumCopy(v[CL_CREATED_RAW], cr->created_byval,
								   cr->created_len);
	}
	/* NULL when the given ids hold a NULL and this is not one of them */
	r->requested = !isnull[CL_REQUESTED] && DatumGetBool(v[CL_REQUESTED]);
	if (o->nrows++ == 0)
		o->first = b->nrows;
	b->nrows++;
}

static bool
claim_receive(TupleTableSlot *slot, DestReceiver *self)
{
	ClaimReceiver *cr = (ClaimReceiver *) self;
	MemoryContext old = MemoryContextSwitchTo(cr->cxt);
	int64		ix;
	BatchOrg   *o;

	/* between two rows the executor holds no buffer lock: a place to yield */
	mb_yield_row(true);
	slot_getallattrs(slot);
	ix = DatumGetInt64(slot->tts_values[CL_IX]);
	o = &cr->b->orgs[cr->map[ix - 1]];
	if (ix < cr->last_ix)
		elog(ERROR, "msgbilling claim returned org %ld after org %ld",
			 (long) ix, (long) cr->last_ix);
	/* a run's NULL-ctid rows only carry their org's state */
	if (cr->run && ix != cr->last_ix)
		run_org_wallet(cr, slot->tts_values, o);
	cr->last_ix = ix;
	if (!slot->tts_isnull[CL_TID])
		add_row(cr, slot->tts_values, slot->tts_isnull, o);
	MemoryContextSwitchTo(old);
	return true;
}

static void
claim_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
claim_shutdown(DestReceiver *self)
{
}

static void
claim_destroy(DestReceiver *self)
{
}

/* Run a claim statement with the rows going into the batch. */
static void
exec_claim(Batch *b, SPIPlanPtr plan, Datum *values, const int *map,
		   bool run, int64 expected)
{
	ClaimReceiver cr;

	memset(&cr, 0, sizeof(cr));
	cr.pub.receiveSlot = claim_receive;
	cr.pub.rStartup = claim_startup;
	cr.pub.rShutdown = claim_shutdown;
	cr.pub.rDestroy = claim_destroy;
	cr.pub.mydest = DestNone;
	cr.b = b;
	cr.map = map;
	cr.run = run;
	cr.cxt = CurrentMemoryContext;
	cr.cap = (int) Min(Max(expected, 16), 65536);
	get_typlenbyval(b->cfg->key_type, &cr.key_len, &cr.key_byval);
	if (b->cfg->created_col)
		get_typlenbyval(b->cfg->created_type, &cr.created_len,
						&cr.created_byval);
	b->nrows = 0;
	b->rows = palloc(sizeof(BatchRow) * cr.cap);
	mb_exec_plan_to(plan, values, NULL, &cr.pub);
}

/* Claim given messages: those of the held orgs and of orgs with no wallet. */
static void
claim_given(Batch *b)
{
	Oid			argtypes[3] = {INT8OID, mode_arg_type(b->cfg, b->mode),
	b->cfg->org_array_type};
	int		   *map = palloc(sizeof(int) * Max(b->norgs, 1));
	int			n;
	Datum		values[3];
	SPIPlanPtr	plan;

	values[2] = org_array(b, true, map, &n);
	if (n == 0)
		return;
	/* they come with their orgs' older pending ones, however many */
	values[0] = Int64GetDatum(PG_INT64_MAX);
	values[1] = b->arg;
	if (b->mode == MB_CLAIM_IDS)
		plan = mb_plan(MB_STMT_CLAIM_IDS, claim_ids_sql, 3, argtypes);
	else
		plan = mb_plan(MB_STMT_CLAIM_ONE, claim_one_sql, 3, argtypes);
	exec_claim(b, plan, values, map, false, 0);
}

/*
 * Claim a run: org by org, in peek order, until the batch holds `limit`
 * rows (run_claim_sql).  Rows come grouped by org, in the org's order.
 */
static void
claim_run(Batch *b, int64 limit)
{
	Oid			argtypes[2] = {INT8OID, b->cfg->org_array_type};
	int		   *map = palloc(sizeof(int) * Max(b->norgs, 1));
	int			n;
	Datum		values[2];

	values[0] = Int64GetDatum(limit);
	values[1] = org_array(b, false, map, &n);
	exec_claim(b, mb_plan(MB_STMT_CLAIM_RUN, run_claim_sql, 2, argtypes),
			   values, map, true, limit);
}

/* Order checks: mark orgs with an older unpaid or unclaimed message. */
static void
check_order(Batch *b)
{
	Oid			cr_type = b->cfg->created_col ? b->cfg->created_type : TIMESTAMPTZOID;
	Oid			argtypes[5] = {b->cfg->org_array_type, b->cfg->key_array_type,
	get_array_type(cr_type), b->cfg->key_array_type, INT8ARRAYOID};
	bool		by_ids = b->mode == MB_CLAIM_IDS || b->mode == MB_CLAIM_ONE;
	Datum	   *orgs = palloc(sizeof(Datum) * Max(b->norgs, 1));
	Datum	   *crs = palloc(sizeof(Datum) * Max(b->norgs, 1));
	Datum	   *lasts = palloc(sizeof(Datum) * Max(b->norgs, 1));
	Datum	   *counts = palloc(sizeof(Datum) * Max(b->norgs, 1));
	Datum	   *keys = palloc(sizeof(Datum) * Max(b->nrows, 1));
	int		   *map = palloc(sizeof(int) * Max(b->norgs, 1));
	Datum		values[5];
	int			n = 0;
	int			i;
	uint64		j;

	/* a run's check needs no keys: it counts (order_check_run_sql) */
	for (i = 0; by_ids && i < b->nrows; i++)
		keys[i] = b->rows[i].key;
	for (i = 0; i < b->norgs; i++)
	{
		BatchOrg   *o = &b->orgs[i];
		BatchRow   *last;

		if (o->nrows == 0)
			continue;
		last = &b->rows[o->first + o->nrows - 1];
		map[n] = i;
		orgs[n] = o->org;
		/* used with a created column only, which is NOT NULL (config.c) */
		crs[n] = last->created_raw;
		counts[n] = Int64GetDatum(o->nrows);
		lasts[n++] = last->key;
	}
	if (n == 0)
		return;
	values[0] = mb_array(orgs, NULL, n, b->cfg->org_type);
	values[1] = mb_array(keys, NULL, by_ids ? b->nrows : 0, b->cfg->key_type);
	values[2] = b->cfg->created_col ? mb_array(crs, NULL, n, cr_type) :
		mb_array(crs, NULL, 0, cr_type);
	values[3] = mb_array(lasts, NULL, n, b->cfg->key_type);
	values[4] = mb_array(counts, NULL, n, INT8OID);
	if (by_ids)
		mb_exec_plan(mb_plan(MB_STMT_ORDER_CHECK_IDS, order_check_ids_sql,
							 5, argtypes), values, NULL, SPI_OK_SELECT);
	else
		mb_exec_plan(mb_plan(MB_STMT_ORDER_CHECK_RUN, order_check_run_sql,
							 5, argtypes), values, NULL, SPI_OK_SELECT);
	for (j = 0; j < SPI_processed; j++)
	{
		HeapTuple	tup = SPI_tuptable->vals[j];
		bool		isnull;
		Datum		reason;
		BatchOrg   *o = &b->orgs[map[DatumGetInt64(SPI_getbinval(tup,
																 SPI_tuptable->tupdesc,
																 1, &isnull)) - 1]];

		reason = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull);
		o->exhausted = !isnull;
		if (o->exhausted)
			o->unpaid = TextDatumGetCString(reason);
		o->blocked = DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc,
												3, &isnull));
	}
}

/*
 * Fill the batch with what it may bill: orgs, wallets, rows and their
 * order checks.  Returns false when nothing is billable.
 */
bool
mb_claim(Batch *b, int64 limit, Datum zero)
{
	int			i;

	peek(b, limit);
	if (b->norgs == 0)
		return b->orgless > 0;
	for (i = 0; i < b->norgs; i++)
		b->orgs[i].charge = zero;
	if (b->mode == MB_CLAIM_ALL || b->mode == MB_CLAIM_ORG)
		claim_run(b, limit);
	else
	{
		lock_wallets(b);
		claim_given(b);
	}
	if (b->nrows > 0)
		check_order(b);
	return true;
}
