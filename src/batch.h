/*
 * batch.h
 *		The state of one billing batch, shared by claim.c (what the batch
 *		may bill), billing.c (deciding) and write.c (writing).
 */
#ifndef MB_BATCH_H
#define MB_BATCH_H

#include "postgres.h"

#include "storage/itemptr.h"
#include "utils/timestamp.h"

#include "billing.h"
#include "prices.h"

typedef enum WalletState
{
	WALLET_HELD,				/* locked by us: bill */
	WALLET_BUSY,				/* locked by another biller: skip */
	WALLET_MISSING				/* no wallet: fail with no_wallet */
} WalletState;

/* One org of a batch. */
typedef struct BatchOrg
{
	Datum		org;			/* org id */
	int64		peeked;			/* its messages among those peeked at */
	WalletState state;
	int			first;			/* its first row in rows[] */
	int			nrows;
	bool		exhausted;		/* an older unpaid failure: charge none */
	bool		blocked;		/* an older pending message is held
								 * elsewhere: bill none now */
	Datum		limit;			/* numeric: balance + overdraft limit */
	bool		has_budget;		/* a hard budget: */
	Datum		budget_left;	/* numeric: the least any has left */
	const char *unpaid;			/* why its first unpaid message failed */
	Datum		charge;			/* numeric: sum of charged costs */
	int			ncharged;
	int			nfree;			/* its no_charge messages */
	int64		ledger_id;
} BatchOrg;

typedef enum RowOutcome
{
	ROW_PENDING,				/* not decided: left pending */
	ROW_CHARGED,
	ROW_FAILED,
	ROW_NO_CHARGE				/* not billable: cost 0, no debit */
} RowOutcome;

/* One claimed message and what was decided for it. */
typedef struct BatchRow
{
	ItemPointerData tid;		/* where the locked row is, */
	Oid			rel;			/* in this table or partition */
	Datum		key;
	bool		counts_null;	/* a named token column is NULL */
	int64		counts[MB_NUM_KINDS];	/* by MbTokenKind; 0 when not named */
	bool		free;			/* its billable column is false */
	bool		has_hold;		/* its hold column names a hold */
	int64		hold_id;
	char	   *model;			/* NULL: none */
	bool		created_null;
	TimestampTz created;		/* for pricing */
	Datum		created_raw;	/* in the column's own type, for ordering */
	bool		requested;		/* asked for (or claimed by a run) */
	RowOutcome	outcome;
	const char *reason;			/* failure reason */
	Datum		cost;			/* numeric, valid when charged */
	int64		ledger_id;		/* its org's charge entry, when charged */
} BatchRow;

typedef struct Batch
{
	const MbConfig *cfg;
	MbClaimMode mode;
	Datum		arg;			/* org, key array or key, by mode */
	MbPriceList *prices;
	int			norgs;
	BatchOrg   *orgs;
	int			nrows;
	BatchRow   *rows;
	int64		skipped;		/* peeked messages of busy orgs */
	int64		orgless;		/* peeked messages with a NULL org */
	bool		peeked_all;		/* the peek saw every billable message */
} Batch;

/* claim.c */
extern bool mb_claim(Batch *b, int64 limit, Datum zero);

/* write.c */
extern void mb_write_messages(Batch *b, MbTotals *totals);
extern int64 mb_fail_orgless(Batch *b, MbTotals *totals);

#endif							/* MB_BATCH_H */
