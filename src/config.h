/*
 * config.h
 *		The attached messages table, as msgbilling.attach() recorded it, and
 *		the cache of prepared statements built from it.
 */
#ifndef MB_CONFIG_H
#define MB_CONFIG_H

#include "postgres.h"

#include "executor/spi.h"
#include "tcop/dest.h"

/* The token counts a message is billed for, each at its own rate. */
typedef enum MbTokenKind
{
	MB_INPUT,					/* uncached input (or the one tokens column) */
	MB_OUTPUT,
	MB_CACHED,					/* cache-read input */
	MB_NUM_KINDS
} MbTokenKind;

typedef struct MbConfig
{
	Oid			relid;			/* the app's messages table */
	char	   *relname;		/* schema-qualified, quoted, for SQL text */
	char	   *key_col;		/* quoted column names */
	char	   *org_col;
	char	   *count_cols[MB_NUM_KINDS];	/* by MbTokenKind: the input or
										 * tokens column, output, cached;
										 * NULL when not configured */
	char	   *billable_col;	/* NULL when not configured */
	char	   *hold_col;		/* NULL when not configured */
	char	   *model_col;
	char	   *created_col;	/* NULL when not configured */
	AttrNumber	key_attnum;
	Oid			key_type;
	Oid			org_type;
	Oid			created_type;	/* InvalidOid when not configured */
	Oid			key_array_type;
	Oid			org_array_type;
	bool		indexes_ready;	/* msgbilling's indexes were found valid */
} MbConfig;

/* Statements prepared once per configuration and kept. */
typedef enum MbStmt
{
	MB_STMT_PEEK_ALL,			/* in MbClaimMode order */
	MB_STMT_PEEK_ORG,
	MB_STMT_PEEK_IDS,
	MB_STMT_PEEK_ONE,
	MB_STMT_PEEK_RESUME,		/* the worker's, from a created time */
	MB_STMT_CLAIM_RUN,			/* all orgs or one */
	MB_STMT_CLAIM_IDS,
	MB_STMT_CLAIM_ONE,
	MB_STMT_LOCK_WALLETS,
	MB_STMT_ORDER_CHECK_IDS,
	MB_STMT_ORDER_CHECK_RUN,
	MB_STMT_WALLETS_EXIST,
	MB_STMT_CHARGE_WALLETS,
	MB_STMT_WRITE_CHARGED,
	MB_STMT_WRITE_FAILED,
	MB_STMT_WRITE_NO_CHARGE,
	MB_STMT_FAIL_ORGLESS_ALL,	/* by MbClaimMode, ORG excluded */
	MB_STMT_FAIL_ORGLESS_IDS,
	MB_STMT_FAIL_ORGLESS_ONE,
	MB_STMT_PRICES,
	MB_STMT_DISTINCT_IDS,
	MB_STMT_BUDGET_LIMITS,
	MB_STMT_MARK_EXCEEDED,
	MB_STMT_RELEASE_HOLDS,
	MB_STMT_AVAILABLE,
	MB_STMT_ROLLED_BUDGETS,
	MB_STMT_CALLER_READS_ORG,
	MB_STMT_HOLD_BY_KEY,
	MB_STMT_HOLD_INSERT,
	MB_STMT_HOLD_INSERT_KEYED,
	MB_STMT_HOLD_DELETE,
	MB_STMT_HOLD_ORG,
	MB_STMT_RELEASE,
	MB_STMT_LEDGER_ADDED,
	MB_NUM_STMTS
} MbStmt;

typedef char *(*MbSqlBuilder) (const MbConfig *cfg);

extern const MbConfig *mb_config(void);
extern void mb_require_indexes(void);
extern SPIPlanPtr mb_plan(MbStmt id, MbSqlBuilder build,
						  int nargs, Oid *argtypes);
extern void mb_exec_plan(SPIPlanPtr plan, Datum *values, const char *nulls,
						 int expected);
extern void mb_exec_plan_to(SPIPlanPtr plan, Datum *values, const char *nulls,
							DestReceiver *dest);
extern void mb_exec_sql(const char *sql, int nargs, Oid *argtypes,
						Datum *values, const char *nulls, int expected);
extern SPIPlanPtr mb_plan_for(MbStmt id, Oid relid, MbSqlBuilder build,
							  int nargs, Oid *argtypes);
extern void mb_exec_plan_as_owner(Oid relid, SPIPlanPtr plan,
								  Datum *values, const char *nulls,
								  int expected);
extern void mb_exec_sql_as_owner(const MbConfig *cfg, const char *sql,
								 int nargs, Oid *argtypes, Datum *values,
								 const char *nulls, int expected);
extern char *mb_created_tz(const MbConfig *cfg, const char *expr);
extern char *mb_column_as(const char *alias, const char *col, const char *type);
extern Datum mb_message_value(const MbConfig *cfg, Datum key,
							  const char *expr);

#endif							/* MB_CONFIG_H */
