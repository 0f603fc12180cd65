/*
 * spend.h
 *		Spend control in billing: hard budgets (spend.c) and the holds of
 *		billed messages (hold.c).
 */
#ifndef MB_SPEND_H
#define MB_SPEND_H

#include "postgres.h"

#include "batch.h"

/* spend.c */
extern char *mb_spent_now_sql(const char *b, const char *at);
extern void mb_ledger_added(Datum *ids, int n);
extern void mb_budget_limits(Batch *b);
extern void mb_mark_budget_exceeded(Batch *b);
extern void mb_spend_housekeeping(const MbConfig *cfg, Datum org, bool org_null);

/* hold.c */
extern void mb_release_batch_holds(Batch *b);
extern void mb_sweep_holds(void);

#endif							/* MB_SPEND_H */
