/*
 * billing_api.c
 *		The SQL entry points that bill: process_message_billing,
 *		process_batch_billing, process_all_pending and the drain procedure.
 *
 * They share one core (billing.c) and differ only in how they claim
 * messages and where their transaction boundaries are.
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "nodes/parsenodes.h"
#include "portability/instr_time.h"
#include "replication/syncrep.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "billing.h"
#include "config.h"
#include "convert.h"
#include "msgbilling.h"
#include "version.h"
#include "report.h"
#include "resume.h"
#include "spend.h"

PG_FUNCTION_INFO_V1(process_message_billing);
PG_FUNCTION_INFO_V1(process_batch_billing);
PG_FUNCTION_INFO_V1(process_all_pending);
PG_FUNCTION_INFO_V1(drain);

/* Error unless a count argument, when given, is in 1..max. */
static void
check_count(int64 value, int64 max, const char *what)
{
	if (value < 1 || value > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be between 1 and " INT64_FORMAT ", not "
						INT64_FORMAT, what, max, value)));
}

/* The one [msgbilling] line of a billing call. */
static void
log_totals(const char *fn, const MbTotals *t, instr_time start)
{
	instr_time	elapsed;

	INSTR_TIME_SET_CURRENT(elapsed);
	INSTR_TIME_SUBTRACT(elapsed, start);
	/* a call that found nothing to do is not news: the worker polls */
	ereport(t->charged + t->failed + t->skipped + t->no_charge > 0 ?
			mb_log_level : DEBUG1,
			(errmsg(MB_LOG_PREFIX "%s: charged " INT64_FORMAT ", failed "
					INT64_FORMAT ", skipped " INT64_FORMAT ", no_charge "
					INT64_FORMAT ", credits %s, %.3f ms",
					fn, t->charged, t->failed, t->skipped, t->no_charge,
					mb_datum_text(t->credits, NUMERICOID),
					INSTR_TIME_GET_MILLISEC(elapsed)),
			 errhidestmt(true)));
}

/*
 * The no_charge messages of this backend's last process_all_pending or
 * process_batch_billing call, which their result (1.0's columns) leaves
 * out: drain and the worker, which bill through process_all_pending, read
 * them here to know a batch of them was work done.
 */
static int64 last_no_charge = 0;

/* Return totals as the one row of (charged, failed, skipped, credits). */
static Datum
return_totals(FunctionCallInfo fcinfo, const MbTotals *t)
{
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	last_no_charge = t->no_charge;
	values[0] = Int64GetDatum(t->charged);
	values[1] = Int64GetDatum(t->failed);
	values[2] = Int64GetDatum(t->skipped);
	values[3] = t->credits;
	mb_return_one_row(fcinfo, values, nulls);
	return (Datum) 0;
}

/*
 * process_message_billing(message_id) -> text
 *		Bill one message now and return its status.  Charged and refunded
 *		messages are returned as they are; a failed one is tried again; one
 *		that another session is billing right now is returned as pending.
 */
Datum
process_message_billing(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	MbTotals	t;
	Datum		key;
	char	   *status;
	Datum		result;
	instr_time	start;

	INSTR_TIME_SET_CURRENT(start);
	mb_require_arg(fcinfo, 0, "message id");
	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	key = mb_arg_as(fcinfo, 0, cfg->key_type, "message id");
	mb_totals_init(&t);
	(void) mb_bill_batch(cfg, MB_CLAIM_ONE, key, 1, &t);
	/* nothing decided: unknown, not billable, or its org is busy */
	status = t.last_status ? pstrdup(t.last_status) :
		TextDatumGetCString(mb_message_value(cfg, key,
											 "billing_status::pg_catalog.text"));
	log_totals("process_message_billing", &t, start);
	result = SPI_datumTransfer(CStringGetTextDatum(status), false, -1);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

static char *
distinct_ids_sql(const MbConfig *cfg)
{
	return pstrdup("SELECT pg_catalog.count(DISTINCT u) FROM pg_catalog.unnest($1) u");
}

/* Number of distinct, non-NULL ids in a key array. */
static int64
distinct_ids(const MbConfig *cfg, Datum ids)
{
	Oid			argtypes[1] = {cfg->key_array_type};
	bool		isnull;

	mb_exec_plan(mb_plan(MB_STMT_DISTINCT_IDS, distinct_ids_sql, 1, argtypes),
				 &ids, NULL, SPI_OK_SELECT);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * process_batch_billing(message_ids[]) -> (charged, failed, skipped, credits)
 *		Bill the given messages in one batch.  An id counts once however
 *		often it is given; ids that are not billable now (charged, unknown,
 *		or being billed by another session) are skipped.
 */
Datum
process_batch_billing(PG_FUNCTION_ARGS)
{
	const MbConfig *cfg;
	MbTotals	t;
	Datum		ids;
	int64		wanted;
	instr_time	start;

	INSTR_TIME_SET_CURRENT(start);
	mb_require_arg(fcinfo, 0, "message_ids");
	mb_require_catalog();
	SPI_connect();
	cfg = mb_config();
	ids = mb_array_arg_as(fcinfo, 0, cfg->key_type, "message_ids");
	wanted = distinct_ids(cfg, ids);
	mb_totals_init(&t);
	if (wanted > 0)
		(void) mb_bill_batch(cfg, MB_CLAIM_IDS, ids, wanted, &t);
	/* older pending messages billed with them count in charged/failed */
	t.skipped = wanted - t.requested;
	log_totals("process_batch_billing", &t, start);
	t.credits = SPI_datumTransfer(t.credits, false, -1);
	SPI_finish();
	return return_totals(fcinfo, &t);
}

/*
 * Bill in batches of batch_size until max messages were claimed, nothing
 * is left, or a batch met an org that another session is billing (its
 * messages stay pending for that session or a later run).
 */
static void
bill_pending(FunctionCallInfo fcinfo, int64 max, int64 batch_size,
			 MbTotals *t)
{
	const MbConfig *cfg = mb_config();
	MbClaimMode mode = PG_ARGISNULL(0) ? MB_CLAIM_ALL : MB_CLAIM_ORG;
	Datum		org = (mode == MB_CLAIM_ORG) ?
		mb_arg_as(fcinfo, 0, cfg->org_type, "org id") : (Datum) 0;

	mb_spend_housekeeping(cfg, org, mode == MB_CLAIM_ALL);
	for (;;)
	{
		int64		limit = Min(batch_size, max);
		int64		skipped_before = t->skipped;
		int64		claimed = mb_bill_batch(cfg, mode, org, limit, t);

		max -= claimed;
		if (claimed == 0 || t->drained || max <= 0 ||
			t->skipped > skipped_before)
			break;
	}
}

/* Whether optional argument argno was passed, and not as NULL. */
static bool
has_arg(FunctionCallInfo fcinfo, int argno)
{
	return PG_NARGS() > argno && !PG_ARGISNULL(argno);
}

/*
 * The call's max_rate argument, when given, holds for the call alone as
 * msgbilling.max_rate (pace.c): a pooled client cannot rely on a session
 * setting, which another client of the same server connection would get.
 * Returns the GUC nest level to end, or -1.
 */
static int
set_call_rate(FunctionCallInfo fcinfo, int argno)
{
	int			level;
	int32		rate;

	if (!has_arg(fcinfo, argno))
		return -1;
	rate = PG_GETARG_INT32(argno);
	if (rate < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rate must be 0 or more, not %d", rate),
				 errhint("0 bills at full speed.")));
	level = NewGUCNestLevel();
	(void) set_config_option("msgbilling.max_rate", psprintf("%d", rate),
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	return level;
}

/*
 * process_all_pending(org_id, max_messages, batch_size, max_rate)
 *		-> (charged, failed, skipped, credits)
 *		Bill pending messages, of one org or all, in the caller's transaction,
 *		in batches of batch_size (default msgbilling.batch_size), at most
 *		max_rate a second (default msgbilling.max_rate).
 */
Datum
process_all_pending(PG_FUNCTION_ARGS)
{
	MbTotals	t;
	int64		max = PG_ARGISNULL(1) ? PG_INT64_MAX : PG_GETARG_INT64(1);
	int64		batch_size = mb_batch_size;
	int			rate_level;
	instr_time	start;

	INSTR_TIME_SET_CURRENT(start);
	if (!PG_ARGISNULL(1))
		check_count(max, PG_INT64_MAX, "max_messages");
	if (has_arg(fcinfo, 2))
	{
		batch_size = PG_GETARG_INT32(2);
		check_count(batch_size, 1000000, "batch_size");
	}
	rate_level = set_call_rate(fcinfo, 3);
	mb_require_catalog();
	SPI_connect();
	mb_totals_init(&t);
	bill_pending(fcinfo, max, batch_size, &t);
	if (rate_level >= 0)
		AtEOXact_GUC(true, rate_level);
	log_totals("process_all_pending", &t, start);
	t.credits = SPI_datumTransfer(t.credits, false, -1);
	SPI_finish();
	return return_totals(fcinfo, &t);
}

/*
 * A drain's progress, every msgbilling.drain_progress batches: what it
 * billed so far and the backlog left.
 */
static void
report_progress(int64 batches, const MbTotals *t)
{
	bool		isnull;
	Datum		backlog;

	/* not read-only: a fresh snapshot sees the batch just billed */
	if (SPI_execute("SELECT msgbilling.backlog()", false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not count the backlog");
	backlog = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
							&isnull);
	ereport(NOTICE,
			(errmsg(MB_LOG_PREFIX "drain: " INT64_FORMAT " batches, charged "
					INT64_FORMAT ", failed " INT64_FORMAT ", no_charge "
					INT64_FORMAT ", credits %s; backlog %s",
					batches, t->charged, t->failed, t->no_charge,
					mb_datum_text(t->credits, NUMERICOID),
					isnull ? "unknown" : mb_datum_text(backlog, INT8OID))));
}

/* Whether a procedure was called where it may commit. */
static bool
may_commit(FunctionCallInfo fcinfo)
{
	return fcinfo->context && IsA(fcinfo->context, CallContext) &&
		!castNode(CallContext, fcinfo->context)->atomic;
}

/*
 * Bill one batch of at most limit messages through process_all_pending, a
 * SECURITY DEFINER function with a pinned search_path: drain itself cannot
 * pin one (a procedure that commits may not have SET clauses), so it runs
 * no SQL of its own under the caller's search_path.  Adds to totals and
 * returns how many messages the batch claimed.
 */
int64
mb_drain_batch(Datum org, Oid org_type, bool org_null, int64 limit,
			   int32 max_rate, bool rate_null, MbTotals *t)
{
	Oid			argtypes[3] = {org_type, INT8OID, INT4OID};
	Datum		values[3] = {org, Int64GetDatum(limit), Int32GetDatum(max_rate)};
	char		nulls[3] = {org_null ? 'n' : ' ', ' ', rate_null ? 'n' : ' '};
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	int64		charged;
	int64		failed;
	int64		skipped;
	int64		no_charge;
	int			ret;

	last_no_charge = 0;
	ret = SPI_execute_with_args("SELECT charged, failed, skipped, credits"
								" FROM msgbilling.process_all_pending($1, $2,"
								" max_rate => $3)",
								3, argtypes, values, nulls, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "process_all_pending returned %s",
			 SPI_result_code_string(ret));
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	charged = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
	failed = DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull));
	skipped = DatumGetInt64(SPI_getbinval(row, desc, 3, &isnull));
	no_charge = last_no_charge;
	t->charged += charged;
	t->failed += failed;
	t->skipped += skipped;
	t->no_charge += no_charge;
	t->credits = DirectFunctionCall2(numeric_add, t->credits,
									 SPI_getbinval(row, desc, 4, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return charged + failed + skipped + no_charge;
}

/*
 * Commit a drain's batch.  A batch that more batches follow commits
 * without waiting for its WAL to reach disk (synchronous_commit off for
 * that commit alone): a crash may undo such a batch whole, which leaves
 * its messages pending and its wallets untouched, and the next run bills
 * them.  Waiting for the flush after each batch cost a 1M drain 0.4 s of
 * its 5.7 s.  The last batch commits as the session asks.
 */
static void
commit_batch(bool last)
{
	if (!last)
		(void) set_config_option("synchronous_commit", "off", PGC_USERSET,
								 PGC_S_SESSION, GUC_ACTION_LOCAL, true,
								 ERROR, false);
	SPI_commit();
}

/*
 * Before drain returns: wait, as the session's synchronous_commit asks,
 * for every batch it committed (WAL is flushed in order, so the last
 * commit record covers them all).  The last batch's commit waited already
 * unless it had nothing to write.
 */
static void
wait_for_batches(void)
{
	if (synchronous_commit <= SYNCHRONOUS_COMMIT_OFF ||
		XLogRecPtrIsInvalid(XactLastCommitEnd))
		return;
	XLogFlush(XactLastCommitEnd);
	SyncRepWaitForLSN(XactLastCommitEnd, true);
}

/*
 * Bill batches until one finds nothing more (fewer than batch_size) or
 * meets an org another session is billing.  With all orgs, the peeks
 * resume (resume.c); a run whose last batch resumed bills one more after
 * a look at the whole backlog.
 */
static void
drain_batches(Datum org, Oid org_type, bool org_null, int64 batch_size,
			  int32 max_rate, bool rate_null, bool commit, MbTotals *t)
{
	int64		claimed;
	int64		skipped_before;
	int64		batches = 0;
	bool		more;

	mb_last_peek_resumed = false;
	do
	{
		skipped_before = t->skipped;
		claimed = mb_drain_batch(org, org_type, org_null, batch_size,
								 max_rate, rate_null, t);
		if (mb_drain_progress > 0 && ++batches % mb_drain_progress == 0)
			report_progress(batches, t);
		/* fewer than asked for: process_all_pending found nothing more */
		more = claimed == batch_size && t->skipped == skipped_before;
		if (!more && mb_last_peek_resumed)
		{
			mb_resume_forget();
			mb_last_peek_resumed = false;
			more = true;
		}
		if (commit)
			commit_batch(!more);
	} while (more);
}

/*
 * CALL drain(batch_size, org_id, max_rate)
 *		Bill every pending message, committing after each batch so that a
 *		large backlog never holds one long transaction.  Inside a
 *		transaction block it cannot commit and bills in one transaction.
 *		A batch that meets an org another session is billing ends the run.
 */
Datum
drain(PG_FUNCTION_ARGS)
{
	MbTotals	t;
	int64		batch_size;
	bool		commit = may_commit(fcinfo);
	Oid			org_type = get_fn_expr_argtype(fcinfo->flinfo, 1);
	Datum		org = PG_GETARG_DATUM(1);
	instr_time	start;

	INSTR_TIME_SET_CURRENT(start);
	mb_require_arg(fcinfo, 0, "batch_size");
	batch_size = PG_GETARG_INT32(0);
	check_count(batch_size, 1000000, "batch_size");
	if (!PG_ARGISNULL(1) && org_type == UNKNOWNOID)
	{
		/* a quoted literal: pass it on as text, like any other string */
		org = CStringGetTextDatum(DatumGetCString(PG_GETARG_DATUM(1)));
		org_type = TEXTOID;
	}
	mb_require_catalog();
	SPI_connect_ext(commit ? SPI_OPT_NONATOMIC : 0);
	mb_totals_init(&t);
	/* the first batch looks at the whole backlog */
	mb_resume_forget();
	mb_peek_resumes = true;
	PG_TRY();
	{
		drain_batches(org, OidIsValid(org_type) ? org_type : TEXTOID,
					  PG_ARGISNULL(1), batch_size,
					  has_arg(fcinfo, 2) ? PG_GETARG_INT32(2) : 0,
					  !has_arg(fcinfo, 2), commit, &t);
	}
	PG_FINALLY();
	{
		mb_peek_resumes = false;
	}
	PG_END_TRY();
	if (commit)
		wait_for_batches();
	log_totals("drain", &t, start);
	SPI_finish();
	PG_RETURN_VOID();
}
