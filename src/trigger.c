/*
 * trigger.c
 *		msgbilling.bill_on_insert(): bill messages inside the transaction
 *		that inserts them.
 *
 * As a row-level AFTER INSERT trigger it bills each new message; as a
 * statement-level one (REFERENCING NEW TABLE) it bills all the rows of a
 * multi-row INSERT in one batch.  Billing runs in a subtransaction: a lack
 * of credits marks the row failed like any billing run, and an error
 * (a missing price table, a dropped column) is reported as a WARNING and
 * leaves the rows pending.  Neither aborts the app's INSERT; only a cancel,
 * a timeout or a shutdown does, as it would without the trigger.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/partition.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/resowner.h"
#include "utils/tuplestore.h"

#include "billing.h"
#include "config.h"
#include "convert.h"
#include "msgbilling.h"

PG_FUNCTION_INFO_V1(bill_on_insert);

/*
 * The key column's number in the trigger's table: the attached table, or
 * one of its partitions (a row trigger of a partitioned table fires on the
 * partition, whose column numbers may differ).
 */
static AttrNumber
key_attnum(const MbConfig *cfg, TriggerData *td)
{
	Oid			relid = RelationGetRelid(td->tg_relation);

	if (relid == cfg->relid)
		return cfg->key_attnum;
	if (!get_rel_relispartition(relid) ||
		!list_member_oid(get_partition_ancestors(relid), cfg->relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table %s is not the table attached to msgbilling",
						get_rel_name(relid)),
				 errhint("Put msgbilling.bill_on_insert() on %s.",
						 cfg->relname)));
	return get_attnum(relid, get_attname(cfg->relid, cfg->key_attnum, false));
}

/* The keys of the rows of the statement's transition table. */
static Datum
inserted_keys(const MbConfig *cfg, TriggerData *td, AttrNumber attnum,
			  int *n)
{
	TupleTableSlot *slot = MakeSingleTupleTableSlot(td->tg_relation->rd_att,
													&TTSOpsMinimalTuple);
	int			cap = 64;
	Datum	   *keys = palloc(sizeof(Datum) * cap);
	int16		typlen;
	bool		typbyval;

	get_typlenbyval(cfg->key_type, &typlen, &typbyval);
	*n = 0;
	tuplestore_rescan(td->tg_newtable);
	while (tuplestore_gettupleslot(td->tg_newtable, true, false, slot))
	{
		bool		isnull;
		Datum		key = slot_getattr(slot, attnum, &isnull);

		if (*n == cap)
			keys = repalloc(keys, sizeof(Datum) * (cap *= 2));
		keys[(*n)++] = datumCopy(key, typbyval, typlen);
	}
	ExecDropSingleTupleTableSlot(slot);
	return mb_array(keys, NULL, *n, cfg->key_type);
}

/* Bill the rows the trigger fired for. */
static void
bill_inserted(TriggerData *td)
{
	const MbConfig *cfg = mb_config();
	AttrNumber	attnum = key_attnum(cfg, td);
	MbTotals	t;

	mb_totals_init(&t);
	if (TRIGGER_FIRED_FOR_ROW(td->tg_event))
	{
		bool		isnull;
		Datum		key = heap_getattr(td->tg_trigtuple, attnum,
									   RelationGetDescr(td->tg_relation),
									   &isnull);

		(void) mb_bill_batch(cfg, MB_CLAIM_ONE, key, 1, &t);
	}
	else
	{
		int			n;
		Datum		keys = inserted_keys(cfg, td, attnum, &n);

		if (n > 0)
			(void) mb_bill_batch(cfg, MB_CLAIM_IDS, keys, n, &t);
	}
}

/*
 * Whether an error must abort the INSERT after all: a cancel (by the user
 * or statement_timeout), a shutdown, a terminated backend.  Those were
 * asked for to stop what the session runs, and a warning would let the
 * INSERT go on.
 */
static bool
stops_the_insert(int sqlerrcode)
{
	return ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_OPERATOR_INTERVENTION;
}

/*
 * Bill in a subtransaction; on error, warn and leave the rows pending,
 * unless the error stops the INSERT (stops_the_insert).  The pattern of
 * PL/Python's and PL/Tcl's subtransactions.
 */
static void
bill_inserted_guarded(TriggerData *td)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		bill_inserted(td);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (stops_the_insert(edata->sqlerrcode))
			ReThrowError(edata);
		/* the error's own detail and hint still say what to do about it */
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg(MB_LOG_PREFIX "could not bill the inserted messages: %s",
						edata->message),
				 edata->detail ?
				 errdetail("%s The messages stay pending; a later billing run "
						   "bills them.", edata->detail) :
				 errdetail("The messages stay pending; a later billing run "
						   "bills them."),
				 edata->hint ? errhint("%s", edata->hint) : 0));
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

/* The trigger function. */
Datum
bill_on_insert(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("bill_on_insert() must be called as a trigger")));
	if (!TRIGGER_FIRED_AFTER(td->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("bill_on_insert() must be an AFTER INSERT trigger")));
	if (!TRIGGER_FIRED_FOR_ROW(td->tg_event) && td->tg_newtable == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("a statement-level bill_on_insert() needs the inserted rows"),
				 errhint("Create it with REFERENCING NEW TABLE AS new_messages.")));
	SPI_connect();
	bill_inserted_guarded(td);
	SPI_finish();
	return PointerGetDatum(NULL);
}
