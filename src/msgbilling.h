/*
 * msgbilling.h
 *		What every msgbilling module shares: the log prefix, the message
 *		statuses and the billing settings.
 */
#ifndef MSGBILLING_H
#define MSGBILLING_H

#include "postgres.h"

/* CI builds and tests 15, 17 and 18 (scripts/test.sh); 15 is the oldest. */
#if PG_VERSION_NUM < 150000
#error "msgbilling needs PostgreSQL 15 or later"
#endif

/* Prefix of every log line, so log tooling can follow billing. */
#define MB_LOG_PREFIX "[msgbilling] "

/*
 * Billing statuses of a message: the guard trigger (guard.c) refuses any
 * other, and attach's _adopt_status accepts these five.
 */
#define MB_PENDING	"pending"
#define MB_CHARGED	"charged"
#define MB_FAILED	"failed"
#define MB_REFUNDED "refunded"
#define MB_LEGACY	"legacy"
#define MB_NO_CHARGE "no_charge"

/* The failure reason of a message whose org column is NULL. */
#define MB_NO_ORG	"no_org"

extern int	mb_batch_size;
extern int	mb_log_level;
extern int	mb_drain_progress;

#endif							/* MSGBILLING_H */
