/*
 * guard.h
 *		Keeping the money's columns and the ledger out of reach of
 *		anything but msgbilling.
 */
#ifndef MB_GUARD_H
#define MB_GUARD_H

#include "postgres.h"

/* The guard triggers attach puts on the app's table (_create_guards). */
#define MB_GUARD_INSERT_TRIGGER "msgbilling_guard_insert"
#define MB_GUARD_UPDATE_TRIGGER "msgbilling_guard_update"
#define MB_GUARD_ORG_TRIGGER "msgbilling_guard_org"
#define MB_GUARD_DELETE_TRIGGER "msgbilling_guard_delete"
#define MB_GUARD_TRUNCATE_TRIGGER "msgbilling_guard_truncate"

extern bool mb_repair;
extern int	mb_write_depth;

extern void mb_guard_init(void);
extern int	mb_guard_begin(void);
extern void mb_guard_end(int saved);

#endif							/* MB_GUARD_H */
