/*
 * hold.c
 *		Holds: credits reserved for an LLM call before it is made, so that
 *		an org out of credits is refused before the call, not billed for it
 *		afterwards.  hold, release, available, and the release of a billed
 *		message's hold.
 *
 * A hold is a row of msgbilling.holds, so it is as durable as any other
 * write: it survives crashes and restarts, and an aborted hold never was.
 * It counts until it is deleted (release, or billing its message) or until
 * its expires_at, compared with the clock on every read: no sweeper is
 * needed for it to stop counting.
 *
 * Exactness.  hold() checks what the org has available and inserts its row
 * while holding the org's admission lock, a heavyweight lock on the org
 * that it releases as soon as the row is inserted, before the transaction
 * commits: the commit's WAL flush, the slow part, is outside the lock, so
 * holds of one org commit in groups.  The next hold() of the org therefore
 * runs while earlier ones may not have committed yet, and reads with a
 * dirty snapshot, which also sees rows of transactions in progress:
 *
 *	- an uncommitted hold counts (if it aborts, the check was cautious);
 *	- a hold being released (deleted, not yet committed) still counts;
 *	- a wallet being changed counts at the lower of its old and new
 *	  balance, and a wallet being created at no more than zero;
 *	- a budget being charged counts at its highest spend.
 *
 * Every uncommitted change is thus read the way that leaves less available,
 * so whichever way each one ends, the holds granted never add up to more
 * than the org had.  Billing never looks at holds: a served message is
 * charged whatever other holds exist.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "access.h"
#include "config.h"
#include "convert.h"
#include "spend.h"
#include "version.h"
#include "wallet.h"

PG_FUNCTION_INFO_V1(hold);
PG_FUNCTION_INFO_V1(release);
PG_FUNCTION_INFO_V1(available);

/*
 * The admission lock's tag: an advisory lock of this database whose fourth
 * field is this (user advisory locks have 1 or 2 there), on a hash of the
 * org id.  Two orgs with the same hash share a lock: slower, never wrong.
 */
#define MB_HOLD_LOCK_FIELD4 0x4D42	/* "MB" */

static int
num_cmp(Datum a, Datum b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, a, b));
}

/* Zero credits, with the scale balances print with. */
static Datum
num_zero(void)
{
	return DirectFunctionCall3(numeric_in, CStringGetDatum("0.000000"),
							   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
}

static Oid
msgbilling_rel(const char *name)
{
	Oid			relid = get_relname_relid(name, get_namespace_oid("msgbilling",
																  false));

	if (!OidIsValid(relid))
		elog(ERROR, "msgbilling.%s is missing", name);
	return relid;
}

static void
org_lock_tag(LOCKTAG *tag, const MbConfig *cfg, Datum org)
{
	char	   *text = mb_datum_text(org, cfg->org_type);

	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId,
						 hash_bytes((const unsigned char *) text, strlen(text)),
						 0, MB_HOLD_LOCK_FIELD4);
}

/* ---------------------------------------------------------------------
 * Dirty reads of an org's rows
 * ---------------------------------------------------------------------
 */

typedef void (*VersionFn) (TupleTableSlot *slot, bool in_progress, void *arg);

/*
 * Call fn for every version of relname's rows whose first index column
 * (of index indexname) is org that a dirty snapshot sees: committed ones,
 * and those of transactions in progress (in_progress: inserted by one).
 * With after, only rows whose second index column is later than it.
 */
static void
scan_org_versions(const char *relname, const char *indexname,
				  const MbConfig *cfg, Datum org, const TimestampTz *after,
				  VersionFn fn, void *arg)
{
	Relation	heap = table_open(msgbilling_rel(relname), AccessShareLock);
	Relation	index = index_open(msgbilling_rel(indexname), AccessShareLock);
	TupleTableSlot *slot = table_slot_create(heap, NULL);
	SnapshotData dirty;
	ScanKeyData keys[2];
	IndexScanDesc scan;
	Oid			opno = get_opfamily_member(index->rd_opfamily[0], cfg->org_type,
										   cfg->org_type, BTEqualStrategyNumber);
	int			nkeys = after ? 2 : 1;

	if (!OidIsValid(opno))
		elog(ERROR, "no equality operator for the org ids of %s", indexname);
	InitDirtySnapshot(dirty);
	ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[0], get_opcode(opno), org);
	if (after)
		ScanKeyEntryInitialize(&keys[1], 0, 2, BTGreaterStrategyNumber,
							   InvalidOid, InvalidOid, F_TIMESTAMPTZ_GT,
							   TimestampTzGetDatum(*after));
#if PG_VERSION_NUM >= 180000
	scan = index_beginscan(heap, index, &dirty, NULL, nkeys, 0);
#else
	scan = index_beginscan(heap, index, &dirty, nkeys, 0);
#endif
	index_rescan(scan, keys, nkeys, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
		fn(slot, TransactionIdIsValid(dirty.xmin), arg);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
}

/* The least balance + overdraft limit among the wallet's versions. */
typedef struct WalletLow
{
	AttrNumber	balance;
	AttrNumber	overdraft;
	bool		committed;		/* a version not inserted in progress */
	bool		found;
	Datum		low;
} WalletLow;

static void
wallet_version(TupleTableSlot *slot, bool in_progress, void *arg)
{
	WalletLow  *w = (WalletLow *) arg;
	bool		isnull;
	Datum		limit = DirectFunctionCall2(numeric_add,
											slot_getattr(slot, w->balance, &isnull),
											slot_getattr(slot, w->overdraft, &isnull));

	if (!in_progress)
		w->committed = true;
	if (!w->found || num_cmp(limit, w->low) < 0)
		w->low = limit;
	w->found = true;
}

/* The sum of the unexpired holds among the versions. */
typedef struct HeldSum
{
	AttrNumber	amount;
	Datum		sum;
} HeldSum;

static void
hold_version(TupleTableSlot *slot, bool in_progress, void *arg)
{
	HeldSum    *h = (HeldSum *) arg;
	bool		isnull;

	h->sum = DirectFunctionCall2(numeric_add, h->sum,
								 slot_getattr(slot, h->amount, &isnull));
}

/* The least any hard budget has left among the versions. */
typedef struct BudgetLow
{
	TimestampTz now;
	bool		found;
	Datum		low;
} BudgetLow;

static Datum
slot_col(TupleTableSlot *slot, TupleDesc desc, const char *col, bool *isnull)
{
	int			i;

	for (i = 0; i < desc->natts; i++)
		if (strcmp(NameStr(TupleDescAttr(desc, i)->attname), col) == 0)
			return slot_getattr(slot, i + 1, isnull);
	elog(ERROR, "msgbilling.budgets has no column %s", col);
	return (Datum) 0;
}

/* What a budget row has left in the period of now (mb_spent_now_sql's rule). */
static Datum
budget_left_at(TupleTableSlot *slot, TupleDesc desc, TimestampTz now)
{
	bool		isnull;
	Datum		start = DirectFunctionCall3(timestamptz_trunc_zone,
											slot_col(slot, desc, "period", &isnull),
											TimestampTzGetDatum(now),
											slot_col(slot, desc, "time_zone", &isnull));
	Datum		spent = slot_col(slot, desc, "spent", &isnull);
	Datum		amount = slot_col(slot, desc, "amount", &isnull);

	if (DatumGetTimestampTz(slot_col(slot, desc, "period_start", &isnull)) !=
		DatumGetTimestampTz(start))
		spent = num_zero();
	return DirectFunctionCall2(numeric_sub, amount, spent);
}

static void
budget_version(TupleTableSlot *slot, bool in_progress, void *arg)
{
	BudgetLow  *b = (BudgetLow *) arg;
	bool		isnull;
	Datum		left;

	if (!DatumGetBool(slot_col(slot, slot->tts_tupleDescriptor, "hard", &isnull)))
		return;
	left = budget_left_at(slot, slot->tts_tupleDescriptor, b->now);
	if (!b->found || num_cmp(left, b->low) < 0)
		b->low = left;
	b->found = true;
}

/*
 * What a hold of org may take now, read cautiously (see the file header):
 * the least of its wallet's balance + overdraft limit and its hard budgets'
 * remainders, minus its unexpired holds.  Zero without a wallet.
 */
static Datum
cautious_available(const MbConfig *cfg, Datum org, TimestampTz now)
{
	Oid			credits = msgbilling_rel("credits");
	WalletLow	w = {0};
	HeldSum		h = {0};
	BudgetLow	b = {0};
	Datum		avail;

	w.balance = get_attnum(credits, "balance");
	w.overdraft = get_attnum(credits, "overdraft_limit");
	scan_org_versions("credits", "credits_pkey", cfg, org, NULL,
					  wallet_version, &w);
	if (!w.found)
		return num_zero();
	avail = w.low;
	/* a wallet inserted by a transaction in progress may never be */
	if (!w.committed && num_cmp(avail, num_zero()) > 0)
		avail = num_zero();

	b.now = now;
	scan_org_versions("budgets", "budgets_pkey", cfg, org, NULL,
					  budget_version, &b);
	if (b.found && num_cmp(b.low, avail) < 0)
		avail = b.low;

	h.amount = get_attnum(msgbilling_rel("holds"), "amount");
	h.sum = num_zero();
	scan_org_versions("holds", "holds_org_expiry", cfg, org, &now,
					  hold_version, &h);
	return DirectFunctionCall2(numeric_sub, avail, h.sum);
}

/* ---------------------------------------------------------------------
 * hold
 * ---------------------------------------------------------------------
 */

/* When a hold taken now for ttl expires; error unless ttl is positive. */
static TimestampTz
expiry_after(Interval *ttl, TimestampTz now)
{
	Interval	zero = {0};
	TimestampTz expires;

	if (DatumGetInt32(DirectFunctionCall2(interval_cmp,
										  IntervalPGetDatum(ttl),
										  IntervalPGetDatum(&zero))) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ttl must be greater than zero, not %s",
						DatumGetCString(DirectFunctionCall1(interval_out,
															IntervalPGetDatum(ttl)))),
				 errhint("A hold lasts for ttl, e.g. '10 minutes', unless released first.")));
	expires = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
													  TimestampTzGetDatum(now),
													  IntervalPGetDatum(ttl)));
	if (TIMESTAMP_NOT_FINITE(expires))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ttl must be finite")));
	return expires;
}

/*
 * The statements of hold and release, prepared once per configuration (the
 * org type): a hold and its release are two calls per LLM call.
 */
static char *
hold_by_key_sql(const MbConfig *cfg)
{
	return pstrdup("SELECT id, expires_at OPERATOR(pg_catalog.>) $3"
				   " FROM msgbilling.holds WHERE org_id = $1 AND hold_key = $2");
}

/* Without a key, a plain INSERT: ON CONFLICT would insert speculatively. */
static char *
hold_insert_sql(const MbConfig *cfg)
{
	return pstrdup("INSERT INTO msgbilling.holds (org_id, amount, expires_at)"
				   " VALUES ($1, $2, $4) RETURNING id");
}

static char *
hold_insert_keyed_sql(const MbConfig *cfg)
{
	return pstrdup("INSERT INTO msgbilling.holds (org_id, amount, hold_key, expires_at)"
				   " VALUES ($1, $2, $3, $4)"
				   " ON CONFLICT (org_id, hold_key) WHERE hold_key IS NOT NULL"
				   " DO NOTHING RETURNING id");
}

static char *
hold_delete_sql(const MbConfig *cfg)
{
	return pstrdup("DELETE FROM msgbilling.holds WHERE id = $1");
}

static char *
hold_org_sql(const MbConfig *cfg)
{
	return pstrdup("SELECT org_id FROM msgbilling.holds WHERE id = $1");
}

static char *
release_sql(const MbConfig *cfg)
{
	return pstrdup("DELETE FROM msgbilling.holds WHERE id = $1"
				   " RETURNING expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp()");
}

/*
 * The org's hold named key: its id, with *active whether it still counts;
 * 0 when there is none.
 */
static int64
keyed_hold(const MbConfig *cfg, Datum org, Datum key, TimestampTz now,
		   bool *active)
{
	Oid			argtypes[3] = {cfg->org_type, TEXTOID, TIMESTAMPTZOID};
	Datum		values[3] = {org, key, TimestampTzGetDatum(now)};
	bool		isnull;

	mb_exec_plan(mb_plan(MB_STMT_HOLD_BY_KEY, hold_by_key_sql, 3, argtypes),
				 values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return 0;
	*active = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 2, &isnull));
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

static void
delete_hold(int64 id)
{
	Datum		value = Int64GetDatum(id);
	Oid			argtypes[1] = {INT8OID};

	mb_exec_plan(mb_plan(MB_STMT_HOLD_DELETE, hold_delete_sql, 1, argtypes),
				 &value, NULL, SPI_OK_DELETE);
}

/*
 * Insert the hold; 0 when a hold of the same key was inserted by a
 * transaction that committed while this one waited for it.
 */
static int64
insert_hold(const MbConfig *cfg, Datum org, Datum amount, Datum key,
			bool key_null, TimestampTz expires)
{
	Oid			argtypes[4] = {cfg->org_type, NUMERICOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[4] = {org, amount, key, TimestampTzGetDatum(expires)};
	char		nulls[4] = {' ', ' ', key_null ? 'n' : ' ', ' '};
	bool		isnull;

	if (key_null)
		mb_exec_plan(mb_plan(MB_STMT_HOLD_INSERT, hold_insert_sql, 4, argtypes),
					 values, nulls, SPI_OK_INSERT_RETURNING);
	else
		mb_exec_plan(mb_plan(MB_STMT_HOLD_INSERT_KEYED, hold_insert_keyed_sql,
							 4, argtypes),
					 values, nulls, SPI_OK_INSERT_RETURNING);
	if (SPI_processed == 0)
		return 0;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Under the org's admission lock: the hold's id, or 0 when the org has
 * less than amount available.  A key names the same hold while it is
 * active; an expired one of the same key is replaced.
 */
static int64
grant_hold(const MbConfig *cfg, Datum org, Datum amount, Interval *ttl,
		   Datum key, bool key_null)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz expires = expiry_after(ttl, now);
	bool		active = false;
	int64		id;

	if (!key_null)
	{
		id = keyed_hold(cfg, org, key, now, &active);
		if (id != 0 && active)
			return id;
		if (id != 0)
			delete_hold(id);
	}
	if (num_cmp(cautious_available(cfg, org, now), amount) < 0)
		return 0;
	id = insert_hold(cfg, org, amount, key, key_null, expires);
	if (id == 0)
		id = keyed_hold(cfg, org, key, now, &active);
	return id;
}

/*
 * hold(org_id, amount, ttl, hold_key) -> bigint
 *		Reserve amount for an LLM call; NULL when the org has less than
 *		that available (no error: the app answers "out of credits").
 */
Datum
hold(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	Datum		org;
	LOCKTAG		tag;
	int64		id;

	mb_require_arg(fcinfo, 0, "org id");
	mb_require_arg(fcinfo, 1, "amount");
	mb_require_arg(fcinfo, 2, "ttl");
	mb_check_amount(PG_GETARG_DATUM(1), 1, "amount");
	if (!PG_ARGISNULL(3))
		mb_check_key_size(PG_GETARG_DATUM(3), "hold key");
	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	org = mb_arg_as(fcinfo, 0, cfg->org_type, "org id");
	if (cfg->org_type == TEXTOID)
		mb_check_key_size(org, "org id");
	/* an org the caller may not read has nothing available to it */
	if (!mb_caller_may_read_org(cfg, org))
	{
		SPI_finish();
		PG_RETURN_NULL();
	}
	org_lock_tag(&tag, cfg, org);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
	id = grant_hold(cfg, org, PG_GETARG_DATUM(1), PG_GETARG_INTERVAL_P(2),
					PG_GETARG_DATUM(3), PG_ARGISNULL(3));
	/* the row is in: the next hold of the org reads it, committed or not */
	LockRelease(&tag, ExclusiveLock, false);
	SPI_finish();
	if (id == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(id);
}

/*
 * release(hold_id) -> boolean
 *		End a hold before its expiry; true if it was active.  A hold of an
 *		org the caller may not read is left alone, as an unknown one.
 */
Datum
release(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	Datum		id;
	bool		isnull;
	bool		was_active;
	Oid			argtypes[1] = {INT8OID};

	mb_require_arg(fcinfo, 0, "hold id");
	id = PG_GETARG_DATUM(0);
	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	/* a tenant's role: first whose hold it is */
	if (!mb_caller_sees_all())
	{
		mb_exec_plan(mb_plan(MB_STMT_HOLD_ORG, hold_org_sql, 1, argtypes),
					 &id, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0 ||
			!mb_caller_may_read_org(cfg, SPI_getbinval(SPI_tuptable->vals[0],
													   SPI_tuptable->tupdesc,
													   1, &isnull)))
		{
			SPI_finish();
			PG_RETURN_BOOL(false);
		}
	}
	mb_exec_plan(mb_plan(MB_STMT_RELEASE, release_sql, 1, argtypes),
				 &id, NULL, SPI_OK_DELETE_RETURNING);
	was_active = SPI_processed > 0 &&
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
								   SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	PG_RETURN_BOOL(was_active);
}

/*
 * available's statement: committed state, as any report reads it.
 */
static char *
available_sql(const MbConfig *cfg)
{
	return psprintf("SELECT LEAST(c.balance OPERATOR(pg_catalog.+) c.overdraft_limit,"
					" (SELECT pg_catalog.min(b.amount OPERATOR(pg_catalog.-) %s)"
					" FROM msgbilling.budgets b WHERE b.org_id = c.org_id AND b.hard))"
					" OPERATOR(pg_catalog.-) COALESCE((SELECT pg_catalog.sum(h.amount)"
					" FROM msgbilling.holds h WHERE h.org_id = c.org_id"
					" AND h.expires_at > $2), 0)"
					" FROM msgbilling.credits c WHERE c.org_id = $1",
					mb_spent_now_sql("b", "$2"));
}

/*
 * available(org_id) -> numeric
 *		What a hold may take now: balance + overdraft limit, no more than
 *		the hard budgets have left, minus the unexpired holds.  0 for an org
 *		without a wallet, or whose messages the caller may not read.
 */
Datum
available(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	Datum		values[2];
	Oid			argtypes[2];
	Datum		result;
	bool		isnull = true;

	mb_require_arg(fcinfo, 0, "org id");
	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	values[0] = mb_arg_as(fcinfo, 0, cfg->org_type, "org id");
	values[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	argtypes[0] = cfg->org_type;
	argtypes[1] = TIMESTAMPTZOID;
	result = num_zero();
	if (mb_caller_may_read_org(cfg, values[0]))
	{
		mb_exec_plan(mb_plan(MB_STMT_AVAILABLE, available_sql, 2, argtypes),
					 values, NULL, SPI_OK_SELECT);
		if (SPI_processed > 0)
		{
			Datum		v = SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				result = SPI_datumTransfer(v, false, -1);
		}
	}
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/* ---------------------------------------------------------------------
 * Billing releases the holds of the messages it decides
 * ---------------------------------------------------------------------
 */

/* A hold counts for its own org's messages only. */
static char *
release_holds_sql(const MbConfig *cfg)
{
	return pstrdup("DELETE FROM msgbilling.holds h USING ROWS FROM"
				   " (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($2))"
				   " AS u(id, o) WHERE h.id = u.id AND h.org_id = u.o");
}

/*
 * Delete the holds named by the batch's charged, failed and no_charge
 * messages, in the batch's transaction: from its commit on, the balance
 * counts what the hold did.
 */
void
mb_release_batch_holds(Batch *b)
{
	Oid			argtypes[2] = {INT8ARRAYOID, b->cfg->org_array_type};
	Datum	   *ids;
	Datum	   *orgs;
	Datum		values[2];
	int			n = 0;
	int			i;

	if (b->cfg->hold_col == NULL)
		return;
	ids = palloc(sizeof(Datum) * Max(b->nrows, 1));
	orgs = palloc(sizeof(Datum) * Max(b->nrows, 1));
	for (i = 0; i < b->norgs; i++)
	{
		BatchOrg   *o = &b->orgs[i];
		int			j;

		for (j = o->first; j < o->first + o->nrows; j++)
		{
			BatchRow   *r = &b->rows[j];

			if (!r->has_hold || r->outcome == ROW_PENDING)
				continue;
			ids[n] = Int64GetDatum(r->hold_id);
			orgs[n] = o->org;
			n++;
		}
	}
	if (n == 0)
		return;
	values[0] = mb_array(ids, NULL, n, INT8OID);
	values[1] = mb_array(orgs, NULL, n, b->cfg->org_type);
	mb_exec_plan(mb_plan(MB_STMT_RELEASE_HOLDS, release_holds_sql, 2, argtypes),
				 values, NULL, SPI_OK_DELETE);
}

/*
 * Delete holds that expired more than a minute ago: they count for nothing
 * and only take space.  The minute keeps this from racing a hold() that
 * reads its key at the moment of expiry.
 */
void
mb_sweep_holds(void)
{
	mb_exec_sql("DELETE FROM msgbilling.holds"
				" WHERE expires_at < pg_catalog.clock_timestamp() - '1 minute'::pg_catalog.interval",
				0, NULL, NULL, NULL, SPI_OK_DELETE);
}
