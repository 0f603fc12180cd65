/*
 * wake.h
 *		Shared memory for the billing workers, and waking them when an
 *		INSERT into the attached table commits.
 */
#ifndef MB_WAKE_H
#define MB_WAKE_H

#include "postgres.h"

/* Most databases msgbilling.database may name. */
#define MB_MAX_DATABASES 64

extern void mb_wake_init(void);
extern void mb_worker_publish(int slot, Oid relid);
extern void mb_wake_at_commit(void);
extern bool mb_worker_take_look_all(int slot);
extern void mb_worker_report(int slot, const char *state, int64 billed,
							 bool ran, const char *error);
extern void mb_worker_gone(int slot);
extern bool mb_wake_enabled;

#endif							/* MB_WAKE_H */
