/*
 * guard.h
 *		Keeping the money's columns and the ledger out of reach of
 *		anything but msgbilling.
 */
#ifndef MB_GUARD_H
#define MB_GUARD_H

#include "postgres.h"

extern bool mb_repair;
extern int	mb_writing;

#endif							/* MB_GUARD_H */
