/*
 * wallet.h
 *		What the spend controls (hold.c, spend.c) use of wallet.c.
 */
#ifndef MB_WALLET_H
#define MB_WALLET_H

#include "postgres.h"

#include "config.h"

/* The unpaid failure reasons: an org's later messages fail behind them. */
#define MB_UNPAID_SQL "('insufficient_credits', 'budget_exceeded')"

extern void mb_check_amount(Datum amount, int sign, const char *what);
extern void mb_check_key_size(Datum value, const char *what);
extern Datum mb_hold_wallet(const MbConfig *cfg, Datum org);
extern uint64 mb_repend_unpaid(const MbConfig *cfg, Datum org);

#endif							/* MB_WALLET_H */
