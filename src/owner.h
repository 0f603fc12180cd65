/*
 * owner.h
 *		Running msgbilling's writes of the app's table as the table's owner.
 */
#ifndef MB_OWNER_H
#define MB_OWNER_H

#include "postgres.h"

/* What mb_owner_enter changed, for mb_owner_leave to undo. */
typedef struct MbOwnerSwitch
{
	Oid			saved_user;
	int			saved_sec_context;
	int			guc_level;
} MbOwnerSwitch;

extern void mb_owner_enter(Oid relid, MbOwnerSwitch *sw);
extern void mb_owner_leave(const MbOwnerSwitch *sw, bool ok);

#endif							/* MB_OWNER_H */
