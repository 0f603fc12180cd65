/*
 * guard.c
 *		Trigger functions that keep the billing columns of the attached
 *		table and the ledger unchanged by anything but msgbilling.
 *
 * msgbilling.attach() puts three triggers on the app's table: BEFORE INSERT,
 * which lets a plain pending message through; BEFORE UPDATE OF the
 * billing columns when one of them changes (its column list and WHEN
 * clause keep the app's ordinary UPDATEs from calling any function); and
 * BEFORE UPDATE OF the org column of a charged or refunded message, whose
 * org is its ledger entry's.  The
 * extension script puts BEFORE UPDATE/DELETE/TRUNCATE triggers on the
 * ledger.  msgbilling's own statements get through (see mb_exec_plan);
 * so does msgbilling.repair, a superuser-only setting for repairing data by
 * hand, as long as the status it writes is one msgbilling knows.
 *
 * Only msgbilling's own statement gets through, not one that code of the
 * table's owner runs inside it (a trigger of the table that updates other
 * messages): msgbilling notes the executor depth its statement runs at
 * (mb_write_depth), and the guard lets a row through only at that depth.
 * The depth is counted around ExecutorRun, where BEFORE triggers fire, and
 * ExecutorFinish, where AFTER triggers fire, as pg_stat_statements counts
 * its nesting level.
 *
 * The known statuses are checked here, not by a CHECK constraint: the
 * executor deserialises and plans a CHECK's expression at the start of
 * every statement, which made the app's one-row INSERT cost about 15 %
 * more CPU, while this trigger runs anyway and compares a few bytes.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"

#include "guard.h"
#include "msgbilling.h"

PG_FUNCTION_INFO_V1(guard_messages);
PG_FUNCTION_INFO_V1(guard_ledger);

bool		mb_repair = false;
int			mb_write_depth = -1;

/* How many ExecutorRun and ExecutorFinish calls are running. */
static int	exec_depth = 0;
static ExecutorRun_hook_type prev_run = NULL;
static ExecutorFinish_hook_type prev_finish = NULL;

#if PG_VERSION_NUM >= 180000
static void
count_run(QueryDesc *queryDesc, ScanDirection direction, uint64 count)
#else
static void
count_run(QueryDesc *queryDesc, ScanDirection direction, uint64 count,
		  bool execute_once)
#endif
{
	exec_depth++;
	PG_TRY();
	{
#if PG_VERSION_NUM >= 180000
		if (prev_run)
			prev_run(queryDesc, direction, count);
		else
			standard_ExecutorRun(queryDesc, direction, count);
#else
		if (prev_run)
			prev_run(queryDesc, direction, count, execute_once);
		else
			standard_ExecutorRun(queryDesc, direction, count, execute_once);
#endif
	}
	PG_FINALLY();
	{
		exec_depth--;
	}
	PG_END_TRY();
}

static void
count_finish(QueryDesc *queryDesc)
{
	exec_depth++;
	PG_TRY();
	{
		if (prev_finish)
			prev_finish(queryDesc);
		else
			standard_ExecutorFinish(queryDesc);
	}
	PG_FINALLY();
	{
		exec_depth--;
	}
	PG_END_TRY();
}

/* Count the executor's depth from now on (_PG_init). */
void
mb_guard_init(void)
{
	prev_run = ExecutorRun_hook;
	ExecutorRun_hook = count_run;
	prev_finish = ExecutorFinish_hook;
	ExecutorFinish_hook = count_finish;
}

/*
 * Let the guards pass msgbilling's next statement, which runs one level
 * below the current one; returns what mb_guard_end restores.
 */
int
mb_guard_begin(void)
{
	int			saved = mb_write_depth;

	mb_write_depth = exec_depth + 1;
	return saved;
}

void
mb_guard_end(int saved)
{
	mb_write_depth = saved;
}

/* The row an INSERT or UPDATE writes (the row a DELETE removes). */
static HeapTuple
new_row(TriggerData *td)
{
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		return td->tg_newtuple;
	return td->tg_trigtuple;
}

/* The row a BEFORE trigger lets through (none for a statement trigger). */
static Datum
pass(TriggerData *td)
{
	return PointerGetDatum(new_row(td));
}

/* Error unless called as a trigger. */
static TriggerData *
trigger_data(FunctionCallInfo fcinfo)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("msgbilling guard functions must be called as triggers")));
	return (TriggerData *) fcinfo->context;
}

/* The billing columns' numbers in the trigger's table (0: none such). */
typedef struct BillingAttnums
{
	AttrNumber	status;
	AttrNumber	valued[4];		/* NULL in a new row */
} BillingAttnums;

static const char *const valued_names[4] = {"cost_credits", "charged_at",
"billing_error", "billing_ledger_id"};

/*
 * The billing columns' numbers, found once per statement: fn_extra lives
 * as long as the trigger's FmgrInfo, one per statement and table.
 */
static const BillingAttnums *
billing_attnums(FunctionCallInfo fcinfo, TupleDesc desc)
{
	BillingAttnums *a = fcinfo->flinfo->fn_extra;
	int			i;
	int			j;

	if (a != NULL)
		return a;
	a = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(BillingAttnums));
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		if (strcmp(NameStr(att->attname), "billing_status") == 0)
			a->status = att->attnum;
		for (j = 0; j < lengthof(valued_names); j++)
			if (strcmp(NameStr(att->attname), valued_names[j]) == 0)
				a->valued[j] = att->attnum;
	}
	fcinfo->flinfo->fn_extra = a;
	return a;
}

/*
 * Whether the row's billing_status is a status msgbilling knows ('pending'
 * alone with pending_only); NULL is not.  A table without the column
 * passes.
 */
static bool
status_is(const BillingAttnums *a, TupleDesc desc, HeapTuple tup,
		  bool pending_only)
{
	/* pending first; attach's _adopt_status accepts the same six */
	static const char *const known[] = {MB_PENDING, MB_CHARGED, MB_FAILED,
	MB_REFUNDED, MB_LEGACY, MB_NO_CHARGE};
	bool		isnull;
	Datum		value;
	text	   *status;
	int			i;

	if (a->status == 0)
		return true;
	value = heap_getattr(tup, a->status, desc, &isnull);
	if (isnull)
		return false;
	/* varchar, like text: compared in place, no copy per INSERT */
	status = DatumGetTextPP(value);
	for (i = 0; i < (pending_only ? 1 : lengthof(known)); i++)
		if (VARSIZE_ANY_EXHDR(status) == strlen(known[i]) &&
			memcmp(VARDATA_ANY(status), known[i], strlen(known[i])) == 0)
			return true;
	return false;
}

/*
 * Whether a new row is a plain pending message: billing_status 'pending',
 * the other billing columns NULL.
 */
static bool
plain_pending(const BillingAttnums *a, TupleDesc desc, HeapTuple tup)
{
	int			j;

	if (!status_is(a, desc, tup, true))
		return false;
	for (j = 0; j < lengthof(a->valued); j++)
		if (a->valued[j] != 0 && !heap_attisnull(tup, a->valued[j], desc))
			return false;
	return true;
}

/* Under msgbilling.repair: any change, but to a known status only. */
static Datum
pass_repair(FunctionCallInfo fcinfo, TriggerData *td)
{
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	const BillingAttnums *a = billing_attnums(fcinfo, desc);
	HeapTuple	tup = new_row(td);
	bool		isnull = true;
	Datum		value = (Datum) 0;

	if (status_is(a, desc, tup, false))
		return pass(td);
	value = heap_getattr(tup, a->status, desc, &isnull);
	ereport(ERROR,
			(errcode(isnull ? ERRCODE_NOT_NULL_VIOLATION : ERRCODE_CHECK_VIOLATION),
			 isnull ?
			 errmsg("billing_status of a message in %s cannot be NULL",
					get_rel_name(RelationGetRelid(td->tg_relation))) :
			 errmsg("unknown billing_status \"%s\" in %s",
					TextDatumGetCString(value),
					get_rel_name(RelationGetRelid(td->tg_relation))),
			 errdetail("A message is pending, charged, failed, refunded, "
					   "no_charge or legacy.")));
	return (Datum) 0;
}

/*
 * Whether this is a superuser's restore, which loads billed messages: a
 * parallel pg_restore may create the parent's guards, cloned onto every
 * partition, while other sessions still load the partitions' rows.  Its
 * sessions run with row_security off, as pg_dump's scripts set it; a
 * superuser could bypass the guards anyway (msgbilling.repair).
 */
static bool
superuser_restoring(void)
{
	return !row_security && superuser();
}

/* msgbilling._guard_messages(): the attached table's billing columns. */
Datum
guard_messages(PG_FUNCTION_ARGS)
{
	TriggerData *td = trigger_data(fcinfo);
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	char	   *rel;

	/* billing's own writes come here once per row: pass them at once */
	if (mb_write_depth == exec_depth)
		return pass(td);
	if (mb_repair)
		return pass_repair(fcinfo, td);
	/* an INSERT trigger has no WHEN: parsing one costs more than this */
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event) &&
		(plain_pending(billing_attnums(fcinfo, desc), desc, td->tg_trigtuple) ||
		 superuser_restoring()))
		return pass(td);
	rel = get_rel_name(RelationGetRelid(td->tg_relation));
	if (strcmp(td->tg_trigger->tgname, MB_GUARD_ORG_TRIGGER) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the org of a billed message in %s cannot change", rel),
				 errdetail("Its charge was debited from its org's wallet, and "
						   "its ledger entry names that org."),
				 errhint("Refunds follow the ledger; to bill another org, "
						 "insert a new message.")));
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("new messages in %s must be pending", rel),
				 errdetail("msgbilling alone sets billing_status, cost_credits, "
						   "charged_at, billing_error and billing_ledger_id."),
				 errhint("Leave the billing columns out of the INSERT.")));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("the billing columns of %s change only through msgbilling",
					rel),
			 errdetail("billing_status, cost_credits, charged_at, billing_error "
					   "and billing_ledger_id are written by billing, refunds "
					   "and retries."),
			 errhint("Use msgbilling's functions; a superuser can repair data "
					 "with SET msgbilling.repair = on.")));
	return (Datum) 0;
}

/* msgbilling._guard_ledger(): the ledger is append-only. */
Datum
guard_ledger(PG_FUNCTION_ARGS)
{
	TriggerData *td = trigger_data(fcinfo);

	/* (TRUNCATE fires a statement trigger: no row, and pass() returns 0) */
	if (mb_repair)
		return pass(td);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("msgbilling.ledger is append-only"),
			 errdetail("Every balance reconciles with the ledger: its entries "
					   "are never updated, deleted or truncated."),
			 errhint("Correct a balance with msgbilling.adjust(); a superuser "
					 "can repair data with SET msgbilling.repair = on.")));
	return (Datum) 0;
}
