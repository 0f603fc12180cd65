/*
 * access.h
 *		Tenant isolation of billing data (access.c).
 */
#ifndef MB_ACCESS_H
#define MB_ACCESS_H

#include "postgres.h"

#include "config.h"

extern bool mb_caller_sees_all(void);
extern bool mb_caller_may_read_org(const MbConfig *cfg, Datum org);
extern void mb_require_sees_all(const char *what);

#endif							/* MB_ACCESS_H */
