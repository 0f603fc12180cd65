/*
 * pace.h
 *		Billing at no more than a set number of messages a second (pace.c).
 */
#ifndef MB_PACE_H
#define MB_PACE_H

#include "postgres.h"

/* msgbilling.max_rate and worker_max_rate, messages a second (0: no limit) */
extern int	mb_max_rate;
extern int	mb_worker_max_rate;

extern void mb_pace_begin(void);
extern void mb_pace(int row_visits);

#endif							/* MB_PACE_H */
