/*
 * yield.h
 *		Billing gives its core to processes waiting for one (yield.c).
 */
#ifndef MB_YIELD_H
#define MB_YIELD_H

#include "postgres.h"

/* msgbilling.yield_interval, in milliseconds (0: never yield) */
extern double mb_yield_interval_ms;

extern void mb_yield_begin(void);
extern void mb_yield_point(void);
extern void mb_yield_row(void);

#endif							/* MB_YIELD_H */
