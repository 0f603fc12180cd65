/*
 * retain.c
 *		Retention: billed messages may be deleted, and the books still
 *		reconcile; pending and failed ones, whose charges are owed, may not.
 *
 * msgbilling._retain_deleted() is the attached table's trigger for
 * DELETE (AFTER, FOR EACH ROW, on the table and, cloned, on each of its
 * partitions; its WHEN clause lets legacy and no_charge messages go without
 * a call) and
 * TRUNCATE (BEFORE, FOR EACH STATEMENT, on the table and each partition:
 * a TRUNCATE of a partitioned table fires every partition's).  A deleted
 * charged or refunded message leaves its cost in msgbilling.deleted_messages,
 * under its charge entry, which verify() adds to the messages still there;
 * the wallets' counters, which stats() reads, keep it anyway.  A pending or
 * failed message is refused, unless msgbilling.repair is on.  Dropping or
 * detaching a partition goes through the event triggers of the 1.1 script.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "config.h"
#include "guard.h"
#include "msgbilling.h"

PG_FUNCTION_INFO_V1(retain_deleted);

/* The text of column name of a row, or NULL. */
static char *
row_text(HeapTuple tup, TupleDesc desc, const char *name)
{
	int			attnum = SPI_fnumber(desc, name);

	if (attnum <= 0)
		elog(ERROR, "column \"%s\" not found", name);
	return SPI_getvalue(tup, desc, attnum);
}

/*
 * Refuse to delete pending or failed messages of rel (a leaf table), with
 * how many the table holds; key names the first one, when known.
 */
static void
refuse_owed(Relation rel, const char *key)
{
	char	   *name = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												  RelationGetRelationName(rel));
	bool		isnull;
	int64		pending;
	int64		failed;

	if (SPI_execute(psprintf("SELECT pg_catalog.count(*) FILTER (WHERE billing_status = 'pending'),"
							 " pg_catalog.count(*) FILTER (WHERE billing_status = 'failed')"
							 " FROM ONLY %s WHERE billing_status IN ('pending', 'failed')",
							 name), true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not count the owed messages of %s", name);
	pending = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull));
	failed = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 2, &isnull));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 key ? errmsg("message %s of %s is not billed: it cannot be deleted",
						  key, RelationGetRelationName(rel)) :
			 errmsg("%s holds messages that are not billed: it cannot be truncated",
					RelationGetRelationName(rel)),
			 errdetail("%s holds " INT64_FORMAT " pending and " INT64_FORMAT
					   " failed messages; the charges they owe would be lost.",
					   RelationGetRelationName(rel), pending, failed),
			 errhint("Bill them first (CALL msgbilling.drain()), or delete only "
					 "billed ones: WHERE billing_status NOT IN ('pending', 'failed').")));
}

/* Column name of a row, as a datum; *isnull says whether it is NULL. */
static Datum
row_value(HeapTuple tup, TupleDesc desc, const char *name, bool *isnull)
{
	int			attnum = SPI_fnumber(desc, name);

	if (attnum <= 0)
		elog(ERROR, "column \"%s\" not found", name);
	return SPI_getbinval(tup, desc, attnum, isnull);
}

/* Keep a deleted charged or refunded message's cost under its charge entry. */
static void
retain_row(HeapTuple tup, TupleDesc desc, const char *status)
{
	Oid			argtypes[3] = {INT8OID, BOOLOID, NUMERICOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	bool		isnull;

	values[0] = row_value(tup, desc, "billing_ledger_id", &isnull);
	nulls[0] = isnull ? 'n' : ' ';
	values[1] = BoolGetDatum(strcmp(status, MB_REFUNDED) == 0);
	values[2] = row_value(tup, desc, "cost_credits", &isnull);
	nulls[2] = isnull ? 'n' : ' ';
	mb_exec_sql("INSERT INTO msgbilling.deleted_messages"
				" (ledger_id, charged, charged_cost, refunded, refunded_cost)"
				" SELECT $1, (NOT $2)::pg_catalog.int4,"
				" CASE WHEN $2 THEN 0 ELSE COALESCE($3, 0) END,"
				" $2::pg_catalog.int4, CASE WHEN $2 THEN COALESCE($3, 0) ELSE 0 END",
				3, argtypes, values, nulls, SPI_OK_INSERT);
}

/* A deleted row: refuse it if owed, keep its cost if billed. */
static void
retain_deleted_row(TriggerData *td)
{
	TupleDesc	desc = RelationGetDescr(td->tg_relation);
	char	   *status = row_text(td->tg_trigtuple, desc, "billing_status");

	/* legacy and no_charge messages have no cost in the books */
	if (status == NULL || strcmp(status, MB_LEGACY) == 0 ||
		strcmp(status, MB_NO_CHARGE) == 0)
		return;
	if (strcmp(status, MB_PENDING) == 0 || strcmp(status, MB_FAILED) == 0)
	{
		const MbConfig *cfg = mb_config();
		char	   *key_name = get_attname(cfg->relid, cfg->key_attnum, false);

		refuse_owed(td->tg_relation, row_text(td->tg_trigtuple, desc, key_name));
	}
	retain_row(td->tg_trigtuple, desc, status);
}

/*
 * A truncated table (a leaf: a partitioned one holds no rows of its own,
 * and each of its partitions' triggers fires): refuse if anything is owed,
 * else keep the costs of its billed messages, per charge entry.
 */
static void
retain_truncated(Relation rel)
{
	char	   *name;

	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		return;
	name = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
									  RelationGetRelationName(rel));
	if (SPI_execute(psprintf("SELECT 1 FROM ONLY %s WHERE billing_status IN"
							 " ('pending', 'failed') LIMIT 1", name),
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look for owed messages in %s", name);
	if (SPI_processed > 0)
		refuse_owed(rel, NULL);
	mb_exec_sql(psprintf("INSERT INTO msgbilling.deleted_messages"
						 " (ledger_id, charged, charged_cost, refunded, refunded_cost)"
						 " SELECT m.billing_ledger_id,"
						 " pg_catalog.count(*) FILTER (WHERE m.billing_status = 'charged'),"
						 " COALESCE(pg_catalog.sum(m.cost_credits)"
						 " FILTER (WHERE m.billing_status = 'charged'), 0),"
						 " pg_catalog.count(*) FILTER (WHERE m.billing_status = 'refunded'),"
						 " COALESCE(pg_catalog.sum(m.cost_credits)"
						 " FILTER (WHERE m.billing_status = 'refunded'), 0)"
						 " FROM ONLY %s m WHERE m.billing_status IN ('charged', 'refunded')"
						 " GROUP BY m.billing_ledger_id", name),
				0, NULL, NULL, NULL, SPI_OK_INSERT);
}

/* msgbilling._retain_deleted(): DELETE and TRUNCATE of the attached table. */
Datum
retain_deleted(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("msgbilling._retain_deleted() must be called as a trigger")));
	/* a superuser's repair may delete anything; what it deletes is its own */
	if (mb_repair)
		return PointerGetDatum(NULL);
	SPI_connect();
	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
		retain_truncated(td->tg_relation);
	else if (TRIGGER_FIRED_BY_DELETE(td->tg_event) &&
			 TRIGGER_FIRED_FOR_ROW(td->tg_event))
		retain_deleted_row(td);
	SPI_finish();
	return PointerGetDatum(NULL);
}
