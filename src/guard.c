/*
 * guard.c
 *		Trigger functions that keep the billing columns of the attached
 *		table and the ledger unchanged by anything but msgbilling.
 *
 * msgbilling.attach() puts two triggers on the app's table: BEFORE INSERT,
 * which lets a plain pending message through, and BEFORE UPDATE OF the
 * billing columns when one of them changes (its column list and WHEN
 * clause keep the app's ordinary UPDATEs from calling any function).  The
 * extension script puts BEFORE UPDATE/DELETE/TRUNCATE triggers on the
 * ledger.  msgbilling's own statements run with mb_writing raised (see
 * mb_exec_plan), which lets them through; so does msgbilling.repair, a
 * superuser-only setting for repairing data by hand.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "commands/trigger.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "guard.h"

PG_FUNCTION_INFO_V1(guard_messages);
PG_FUNCTION_INFO_V1(guard_ledger);

bool		mb_repair = false;
int			mb_writing = 0;

/* The row a BEFORE trigger lets through (none for a statement trigger). */
static Datum
pass(TriggerData *td)
{
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		return PointerGetDatum(td->tg_newtuple);
	return PointerGetDatum(td->tg_trigtuple);
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
 * Whether a new row is a plain pending message: billing_status 'pending',
 * the other billing columns NULL.
 */
static bool
plain_pending(FunctionCallInfo fcinfo, TriggerData *td)
{
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	HeapTuple	tup = td->tg_trigtuple;
	const BillingAttnums *a = billing_attnums(fcinfo, desc);
	int			j;

	if (a->status != 0)
	{
		bool		isnull;
		Datum		value = heap_getattr(tup, a->status, desc, &isnull);
		text	   *status;

		if (isnull)
			return false;
		/* varchar, like text: compared in place, no copy per INSERT */
		status = DatumGetTextPP(value);
		if (VARSIZE_ANY_EXHDR(status) != strlen("pending") ||
			memcmp(VARDATA_ANY(status), "pending", strlen("pending")) != 0)
			return false;
	}
	for (j = 0; j < lengthof(a->valued); j++)
		if (a->valued[j] != 0 && !heap_attisnull(tup, a->valued[j], desc))
			return false;
	return true;
}

/* msgbilling._guard_messages(): the attached table's billing columns. */
Datum
guard_messages(PG_FUNCTION_ARGS)
{
	TriggerData *td = trigger_data(fcinfo);
	char	   *rel;

	/* billing's own writes come here once per row: pass them at once */
	if (mb_writing > 0 || mb_repair)
		return pass(td);
	/* an INSERT trigger has no WHEN: parsing one costs more than this */
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event) && plain_pending(fcinfo, td))
		return pass(td);
	rel = get_rel_name(RelationGetRelid(td->tg_relation));
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
