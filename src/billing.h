/*
 * billing.h
 *		The billing core: claim a batch of messages, price them, decide each
 *		one per org in order, and write wallets, ledger and messages set-based.
 */
#ifndef MB_BILLING_H
#define MB_BILLING_H

#include "postgres.h"

#include "config.h"

typedef enum MbClaimMode
{
	MB_CLAIM_ALL,				/* pending messages of every org */
	MB_CLAIM_ORG,				/* pending messages of one org */
	MB_CLAIM_IDS,				/* pending or failed messages in an id array */
	MB_CLAIM_ONE				/* one pending or failed message */
} MbClaimMode;

/* What one billing call did, summed over its batches. */
typedef struct MbTotals
{
	int64		charged;
	int64		failed;
	int64		no_charge;		/* not billable: no_charge, cost 0 */
	int64		skipped;		/* left pending: the org's wallet was busy,
								 * or an older message held elsewhere */
	Datum		credits;		/* numeric: sum of charged costs */
	const char *last_status;	/* status of the last requested message */
	int64		requested;		/* requested messages decided */
	bool		drained;		/* the last batch saw every pending message
								 * and billed them all: none is left but
								 * those committed since */
} MbTotals;

extern void mb_totals_init(MbTotals *totals);
extern int64 mb_bill_batch(const MbConfig *cfg, MbClaimMode mode, Datum arg,
						   int64 limit, MbTotals *totals);

/* billing_api.c: one batch through process_all_pending (drain, worker) */
extern int64 mb_drain_batch(Datum org, Oid org_type, bool org_null,
							int64 limit, int32 max_rate, bool rate_null,
							MbTotals *totals);

#endif							/* MB_BILLING_H */
