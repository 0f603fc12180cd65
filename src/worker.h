/*
 * worker.h
 *		The billing background worker and its settings.
 */
#ifndef MB_WORKER_H
#define MB_WORKER_H

#include "postgres.h"

extern char *mb_databases;
extern char *mb_role;
extern int	mb_naptime_ms;
extern int	mb_wake_interval_ms;
extern bool mb_enabled;

extern void mb_worker_register(void);

#endif							/* MB_WORKER_H */
