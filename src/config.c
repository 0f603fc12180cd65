/*
 * config.c
 *		Reads the attached-table configuration and caches the statements
 *		prepared from it.
 *
 * The configuration is one row of msgbilling.config, written by attach().
 * It is read on every call (one cheap kept-plan lookup) so that a detach or
 * re-attach in another session is seen at once; the statements built from
 * it are prepared once and kept until the configuration changes.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "config.h"
#include "convert.h"
#include "guard.h"
#include "msgbilling.h"
#include "owner.h"
#include "resume.h"
#include "version.h"
#include "yield.h"

static MemoryContext config_cxt = NULL;
static MbConfig *cached = NULL;
static SPIPlanPtr config_plan = NULL;
static SPIPlanPtr plans[MB_NUM_STMTS];

/*
 * Statements kept for the partitions of a partitioned table: the writes
 * address a partition's rows by ctid, in that partition (mb_plan_for).
 * Few: a batch's messages are recent, in one partition or two.
 */
typedef struct PartitionPlan
{
	MbStmt		id;
	Oid			relid;
	char	   *relname;		/* as the statement names it */
	SPIPlanPtr	plan;
} PartitionPlan;

static List *partition_plans = NIL;	/* in config_cxt */

#define CONFIG_SQL \
	"SELECT messages::pg_catalog.oid, key_column, org_column, tokens_column," \
	" model_column, created_column, input_tokens_column, output_tokens_column," \
	" cached_tokens_column, billable_column, hold_column FROM msgbilling.config"

/* Text of column i of the config row, or NULL. */
static char *
config_text(HeapTuple tup, TupleDesc desc, int i)
{
	return SPI_getvalue(tup, desc, i);
}

/* Types each column msgbilling uses may have (as attach checks them). */
static const Oid key_types[] = {INT4OID, INT8OID, UUIDOID, InvalidOid};
static const Oid org_types[] = {UUIDOID, INT8OID, INT4OID, TEXTOID, InvalidOid};
static const Oid tokens_types[] = {INT2OID, INT4OID, INT8OID, InvalidOid};
static const Oid model_types[] = {TEXTOID, VARCHAROID, InvalidOid};
static const Oid created_types[] = {TIMESTAMPTZOID, TIMESTAMPOID, InvalidOid};
static const Oid billable_types[] = {BOOLOID, InvalidOid};
static const Oid hold_types[] = {INT8OID, InvalidOid};
static const Oid status_types[] = {VARCHAROID, TEXTOID, InvalidOid};
static const Oid cost_types[] = {NUMERICOID, InvalidOid};
static const Oid charged_types[] = {TIMESTAMPTZOID, InvalidOid};
static const Oid error_types[] = {TEXTOID, InvalidOid};
static const Oid ledger_id_types[] = {INT8OID, InvalidOid};

/*
 * Look up one column msgbilling uses; error in the user's terms if it is
 * gone or its type changed since attach.
 */
static Oid
column_type(Oid relid, const char *col, const char *role, const Oid *allowed)
{
	AttrNumber	attnum = get_attnum(relid, col);
	Oid			type;

	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("%s column \"%s\" of attached table %s does not exist",
						role, col, get_rel_name(relid)),
				 errdetail("msgbilling.attach() recorded this column, but it "
						   "was dropped or renamed since."),
				 errhint("Detach the table with msgbilling.detach() and attach "
						 "it again with the current column names.")));
	type = get_atttype(relid, attnum);
	for (; OidIsValid(*allowed); allowed++)
		if (*allowed == type)
			return type;
	ereport(ERROR,
			(errcode(ERRCODE_DATATYPE_MISMATCH),
			 errmsg("%s column \"%s\" of attached table %s has type %s, which msgbilling cannot use",
					role, col, get_rel_name(relid), format_type_be(type)),
			 errdetail("Its type was changed after msgbilling.attach()."),
			 errhint("Change it back, or detach the table and attach it again.")));
	return InvalidOid;
}

/*
 * The created column must stay NOT NULL, as attach required: an org's
 * messages are billed in order of creation, and the order checks compare
 * creation times.
 */
static void
check_created_not_null(Oid relid, const char *relname, const char *col)
{
	HeapTuple	tup = SearchSysCacheAttName(relid, col);
	bool		not_null;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for column \"%s\" of relation %u",
			 col, relid);
	not_null = ((Form_pg_attribute) GETSTRUCT(tup))->attnotnull;
	ReleaseSysCache(tup);
	if (!not_null)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("created column \"%s\" of attached table %s must be NOT NULL",
						col, get_rel_name(relid)),
				 errdetail("msgbilling bills an org's messages in order of creation; "
						   "NOT NULL was dropped after msgbilling.attach()."),
				 errhint("ALTER TABLE %s ALTER COLUMN %s SET NOT NULL;",
						 relname, quote_identifier(col))));
}

/* The billing columns attach added must still be there, as they were. */
static void
check_billing_columns(Oid relid)
{
	(void) column_type(relid, "billing_status", "billing", status_types);
	(void) column_type(relid, "cost_credits", "billing", cost_types);
	(void) column_type(relid, "charged_at", "billing", charged_types);
	(void) column_type(relid, "billing_error", "billing", error_types);
	(void) column_type(relid, "billing_ledger_id", "billing", ledger_id_types);
}

/* Quoted column name, or NULL for an optional column that is not set. */
static char *
quoted_or_null(const char *col)
{
	return col ? pstrdup(quote_identifier(col)) : NULL;
}

/*
 * Optional column i of the config row, checked and quoted; NULL when it is
 * not set.
 */
static char *
optional_column(const MbConfig *cfg, HeapTuple tup, TupleDesc desc, int i,
				const char *role, const Oid *allowed)
{
	char	   *col = config_text(tup, desc, i);

	if (col == NULL)
		return NULL;
	(void) column_type(cfg->relid, col, role, allowed);
	return quoted_or_null(col);
}

/* Build a configuration in the current memory context from the config row. */
static MbConfig *
config_from_row(HeapTuple tup, TupleDesc desc)
{
	MbConfig   *cfg = palloc0(sizeof(MbConfig));
	bool		isnull;
	char	   *nsp;
	char	   *rel;

	cfg->relid = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
	rel = get_rel_name(cfg->relid);
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the messages table attached to msgbilling no longer exists"),
				 errhint("Attach the app's table with msgbilling.attach(): it "
						 "replaces the dropped one.")));
	nsp = get_namespace_name(get_rel_namespace(cfg->relid));
	cfg->relname = quote_qualified_identifier(nsp, rel);
	cfg->key_type = column_type(cfg->relid, config_text(tup, desc, 2), "key",
								key_types);
	cfg->key_attnum = get_attnum(cfg->relid, config_text(tup, desc, 2));
	cfg->org_type = column_type(cfg->relid, config_text(tup, desc, 3), "org",
								org_types);
	check_billing_columns(cfg->relid);
	cfg->key_col = quoted_or_null(config_text(tup, desc, 2));
	cfg->org_col = quoted_or_null(config_text(tup, desc, 3));
	/* attach sets the tokens column or the input column, never both */
	cfg->count_cols[MB_INPUT] = optional_column(cfg, tup, desc, 4, "tokens",
												tokens_types);
	if (cfg->count_cols[MB_INPUT] == NULL)
		cfg->count_cols[MB_INPUT] = optional_column(cfg, tup, desc, 7,
													"input tokens", tokens_types);
	cfg->count_cols[MB_OUTPUT] = optional_column(cfg, tup, desc, 8,
												 "output tokens", tokens_types);
	cfg->count_cols[MB_CACHED] = optional_column(cfg, tup, desc, 9,
												 "cached tokens", tokens_types);
	cfg->model_col = optional_column(cfg, tup, desc, 5, "model", model_types);
	cfg->billable_col = optional_column(cfg, tup, desc, 10, "billable",
										billable_types);
	cfg->hold_col = optional_column(cfg, tup, desc, 11, "hold", hold_types);
	cfg->created_col = quoted_or_null(config_text(tup, desc, 6));
	if (cfg->created_col)
	{
		cfg->created_type = column_type(cfg->relid, config_text(tup, desc, 6),
										"created", created_types);
		check_created_not_null(cfg->relid, cfg->relname,
							   config_text(tup, desc, 6));
	}
	cfg->key_array_type = get_array_type(cfg->key_type);
	cfg->org_array_type = get_array_type(cfg->org_type);
	return cfg;
}

/* Null-safe string equality. */
static bool
same_str(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* Whether two configurations would build the same SQL. */
static bool
same_config(const MbConfig *a, const MbConfig *b)
{
	return a->relid == b->relid &&
		a->key_attnum == b->key_attnum &&
		a->key_type == b->key_type &&
		a->created_type == b->created_type &&
		a->org_type == b->org_type &&
		same_str(a->relname, b->relname) &&
		same_str(a->key_col, b->key_col) &&
		same_str(a->org_col, b->org_col) &&
		same_str(a->count_cols[MB_INPUT], b->count_cols[MB_INPUT]) &&
		same_str(a->count_cols[MB_OUTPUT], b->count_cols[MB_OUTPUT]) &&
		same_str(a->count_cols[MB_CACHED], b->count_cols[MB_CACHED]) &&
		same_str(a->billable_col, b->billable_col) &&
		same_str(a->hold_col, b->hold_col) &&
		same_str(a->model_col, b->model_col) &&
		same_str(a->created_col, b->created_col);
}

/* Drop every kept statement: the configuration they were built for changed. */
static void
forget_plans(void)
{
	int			i;

	ListCell   *lc;

	for (i = 0; i < MB_NUM_STMTS; i++)
	{
		if (plans[i])
			SPI_freeplan(plans[i]);
		plans[i] = NULL;
	}
	foreach(lc, partition_plans)
		SPI_freeplan(((PartitionPlan *) lfirst(lc))->plan);
	/* the list itself goes with config_cxt's reset */
	partition_plans = NIL;
}

static char *
copy_or_null(const char *s)
{
	return s ? pstrdup(s) : NULL;
}

/* Keep a copy of cfg in our own context for the life of the backend. */
static void
remember_config(const MbConfig *cfg)
{
	MemoryContext old;
	int			k;

	if (config_cxt == NULL)
		config_cxt = AllocSetContextCreate(TopMemoryContext,
										   "msgbilling config",
										   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(config_cxt);
	old = MemoryContextSwitchTo(config_cxt);
	cached = palloc(sizeof(MbConfig));
	*cached = *cfg;
	cached->relname = pstrdup(cfg->relname);
	cached->key_col = pstrdup(cfg->key_col);
	cached->org_col = pstrdup(cfg->org_col);
	for (k = 0; k < MB_NUM_KINDS; k++)
		cached->count_cols[k] = copy_or_null(cfg->count_cols[k]);
	cached->billable_col = copy_or_null(cfg->billable_col);
	cached->hold_col = copy_or_null(cfg->hold_col);
	cached->model_col = copy_or_null(cfg->model_col);
	cached->created_col = copy_or_null(cfg->created_col);
	MemoryContextSwitchTo(old);
}

/*
 * The current configuration; errors when no table is attached.
 * The caller must be connected to SPI.
 */
const MbConfig *
mb_config(void)
{
	MbConfig   *cfg;

	mb_require_catalog();
	if (config_plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(CONFIG_SQL, 0, NULL);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		config_plan = plan;
	}
	mb_exec_plan(config_plan, NULL, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no messages table is attached to msgbilling"),
				 errhint("Attach the app's table first: "
						 "SELECT msgbilling.attach('messages');")));
	cfg = config_from_row(SPI_tuptable->vals[0], SPI_tuptable->tupdesc);
	SPI_freetuptable(SPI_tuptable);
	if (cached == NULL || !same_config(cached, cfg))
	{
		forget_plans();
		mb_resume_forget();
		remember_config(cfg);
	}
	return cached;
}

/*
 * Prepare and keep a statement; generic plans from the first execution:
 * the batch statements' costs hang on array and limit parameters, and
 * custom plans for 10,000-element arrays chose a hash join over the whole
 * messages table where a nested loop by ctid touches only the batch.
 */
static SPIPlanPtr
prepare_kept(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes,
										  CURSOR_OPT_GENERIC_PLAN);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s",
			 sql, SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/*
 * The kept plan for statement id on table or partition relid: build's SQL
 * with relid's name for the attached table's.  A renamed partition gets
 * its statement anew.
 */
SPIPlanPtr
mb_plan_for(MbStmt id, Oid relid, MbSqlBuilder build, int nargs,
			Oid *argtypes)
{
	ListCell   *lc;
	char	   *relname;
	MbConfig	part;
	PartitionPlan *p;
	SPIPlanPtr	plan;
	MemoryContext old;

	if (relid == cached->relid)
		return mb_plan(id, build, nargs, argtypes);
	relname = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
										 get_rel_name(relid));
	foreach(lc, partition_plans)
	{
		p = lfirst(lc);
		if (p->id == id && p->relid == relid && strcmp(p->relname, relname) == 0)
			return p->plan;
	}
	part = *cached;
	part.relname = relname;
	plan = prepare_kept(build(&part), nargs, argtypes);
	/* after the SPI call, which leaves SPI's own context current */
	old = MemoryContextSwitchTo(config_cxt);
	p = palloc(sizeof(PartitionPlan));
	p->id = id;
	p->relid = relid;
	p->relname = pstrdup(relname);
	p->plan = plan;
	partition_plans = lappend(partition_plans, p);
	MemoryContextSwitchTo(old);
	return plan;
}

/*
 * Error unless msgbilling's indexes on the attached table are built: after
 * attach(concurrently => true) they are left to attach_index_statements(),
 * and billing without them would read the whole table at every batch.
 * Once found valid, not looked at again for this configuration.
 */
void
mb_require_indexes(void)
{
	char	   *missing;

	if (cached->indexes_ready)
		return;
	mb_exec_sql("SELECT n FROM msgbilling.config c, pg_catalog.unnest(c.index_names) n"
				" WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index x"
				" WHERE x.indexrelid = pg_catalog.to_regclass(n) AND x.indisvalid)"
				" LIMIT 1", 0, NULL, NULL, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
	{
		missing = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("msgbilling's index %s on %s is not built yet",
						missing, cached->relname),
				 errdetail("attach(concurrently => true) leaves msgbilling's indexes "
						   "to be built concurrently; billing waits for them."),
				 errhint("In psql: SELECT msgbilling.attach_index_statements() \\gexec")));
	}
	cached->indexes_ready = true;
}

/* The kept plan for statement id, prepared on first use. */
SPIPlanPtr
mb_plan(MbStmt id, MbSqlBuilder build, int nargs, Oid *argtypes)
{
	if (plans[id] == NULL)
	{
		char	   *sql = build(cached);

		plans[id] = prepare_kept(sql, nargs, argtypes);
		pfree(sql);
	}
	return plans[id];
}

/*
 * Parameters of a kept plan as a ParamListInfo, for SPI_execute_plan_extended.
 */
static ParamListInfo
plan_params(SPIPlanPtr plan, Datum *values, const char *nulls)
{
	int			n = SPI_getargcount(plan);
	ParamListInfo params = makeParamList(n);
	int			i;

	for (i = 0; i < n; i++)
	{
		ParamExternData *p = &params->params[i];

		p->value = values[i];
		p->isnull = nulls != NULL && nulls[i] == 'n';
		p->pflags = PARAM_FLAG_CONST;
		p->ptype = SPI_getargtypeid(plan, i);
	}
	return params;
}

/*
 * Run a kept plan (plan), or SQL text with argument types; anything but
 * the expected SPI result is a bug.  A kept plan's rows go to dest when
 * there is one, instead of into SPI_tuptable.  The guard triggers let
 * msgbilling's own statements through (guard.c).  A write of the app's
 * table runs as its owner (owner_of, owner.c).
 */
static void
exec_guarded(SPIPlanPtr plan, const char *sql, int nargs, Oid *argtypes,
			 Datum *values, const char *nulls, int expected,
			 DestReceiver *dest, Oid owner_of)
{
	int			ret;
	MbOwnerSwitch sw;
	int			guard;

	mb_yield_point();
	if (OidIsValid(owner_of))
		mb_owner_enter(owner_of, &sw);
	guard = mb_guard_begin();
	PG_TRY();
	{
		if (plan && dest)
		{
			SPIExecuteOptions options;

			memset(&options, 0, sizeof(options));
			options.params = plan_params(plan, values, nulls);
			options.dest = dest;
			ret = SPI_execute_plan_extended(plan, &options);
		}
		else if (plan)
			ret = SPI_execute_plan(plan, values, nulls, false, 0);
		else
			ret = SPI_execute_with_args(sql, nargs, argtypes, values, nulls,
										false, 0);
	}
	PG_CATCH();
	{
		mb_guard_end(guard);
		if (OidIsValid(owner_of))
			mb_owner_leave(&sw, false);
		PG_RE_THROW();
	}
	PG_END_TRY();
	mb_guard_end(guard);
	if (OidIsValid(owner_of))
		mb_owner_leave(&sw, true);

	if (ret != expected)
		elog(ERROR, "msgbilling statement returned %s, expected %s",
			 SPI_result_code_string(ret), SPI_result_code_string(expected));
}

void
mb_exec_plan(SPIPlanPtr plan, Datum *values, const char *nulls, int expected)
{
	exec_guarded(plan, NULL, 0, NULL, values, nulls, expected, NULL,
				 InvalidOid);
}

/*
 * The same for a write of the attached table, or of its partition relid:
 * as its owner (owner.c).
 */
void
mb_exec_plan_as_owner(Oid relid, SPIPlanPtr plan, Datum *values,
					  const char *nulls, int expected)
{
	exec_guarded(plan, NULL, 0, NULL, values, nulls, expected, NULL, relid);
}

/*
 * Run a kept SELECT and hand its rows to dest one at a time: a batch's
 * claim reads thousands of rows and keeps only some of their values, so
 * it does not build them into an SPI_tuptable first.  dest must say
 * DestNone, for which SPI returns SPI_OK_UTILITY in every version.
 */
void
mb_exec_plan_to(SPIPlanPtr plan, Datum *values, const char *nulls,
				DestReceiver *dest)
{
	Assert(dest->mydest == DestNone);
	exec_guarded(plan, NULL, 0, NULL, values, nulls, SPI_OK_UTILITY, dest,
				 InvalidOid);
}

/* The same for a statement that runs rarely (wallets, refunds): not kept. */
void
mb_exec_sql(const char *sql, int nargs, Oid *argtypes, Datum *values,
			const char *nulls, int expected)
{
	exec_guarded(NULL, sql, nargs, argtypes, values, nulls, expected, NULL,
				 InvalidOid);
}

/* The same for a rare write of the attached table: as its owner. */
void
mb_exec_sql_as_owner(const MbConfig *cfg, const char *sql, int nargs,
					 Oid *argtypes, Datum *values, const char *nulls,
					 int expected)
{
	exec_guarded(NULL, sql, nargs, argtypes, values, nulls, expected, NULL,
				 cfg->relid);
}

/*
 * A message's creation time as timestamptz: expr (the created column, or a
 * value read from it), NULL when no created column is attached.  A
 * timestamp without time zone is read as UTC, so that what a message costs
 * never depends on the TimeZone of the session that bills it.
 */
char *
mb_created_tz(const MbConfig *cfg, const char *expr)
{
	if (cfg->created_col == NULL)
		return pstrdup("NULL::pg_catalog.timestamptz");
	if (cfg->created_type == TIMESTAMPOID)
		return psprintf("pg_catalog.timezone('UTC', %s)", expr);
	return psprintf("%s::pg_catalog.timestamptz", expr);
}

/*
 * Column col of the row alias (none: "") as type, or a NULL of that type
 * for a column that is not attached.
 */
char *
mb_column_as(const char *alias, const char *col, const char *type)
{
	if (col == NULL)
		return psprintf("NULL::%s", type);
	return psprintf("%s%s%s::%s", alias, *alias ? "." : "", col, type);
}

/*
 * Column expr of the message with key, read without a lock; an unknown id
 * is an error.  The value lives until SPI_finish.
 */
Datum
mb_message_value(const MbConfig *cfg, Datum key, const char *expr)
{
	Oid			argtypes[1] = {cfg->key_type};
	bool		isnull;

	mb_exec_sql(psprintf("SELECT %s FROM %s WHERE %s = $1",
						 expr, cfg->relname, cfg->key_col),
				1, argtypes, &key, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("message %s does not exist in %s",
						mb_datum_text(key, cfg->key_type), cfg->relname)));
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
						 &isnull);
}
