/*
 * yield.h
 *		Billing gives its core to processes waiting for one (yield.c).
 */
#ifndef MB_YIELD_H
#define MB_YIELD_H

#include "postgres.h"

/* msgbilling.yield_interval and worker_yield_interval, in ms (0: never) */
extern double mb_yield_interval_ms;
extern double mb_worker_yield_interval_ms;
/* set by the billing worker: its own settings apply (yield.c, pace.c) */
extern bool mb_in_billing_worker;

extern void mb_yield_begin(void);
extern void mb_yield_point(void);
extern void mb_yield_row(bool paced);

#endif							/* MB_YIELD_H */
