/*
 * owner.c
 *		msgbilling's writes of the app's table run as the table's owner,
 *		inside a security-restricted operation.
 *
 * Writing the attached table runs the app's code: its triggers, the
 * expressions of its indexes and generated columns, its CHECK constraints.
 * Billing runs in SECURITY DEFINER functions owned by a superuser, or in
 * the worker, a superuser too; without a switch, that code would run with
 * their privileges, and a table's owner could have billing make it a
 * superuser.  PostgreSQL closed the same hole in VACUUM, ANALYZE and
 * REINDEX (CVE-2022-1552): they run the table's code as its owner, with
 * SECURITY_RESTRICTED_OPERATION, and undo any setting that code changed.
 * So do msgbilling's UPDATEs of the table.  SECURITY_NOFORCE_RLS keeps
 * FORCE ROW LEVEL SECURITY from hiding rows from those writes, as the
 * foreign-key checks do.
 *
 * Reads of the table (peeks, claims, order checks, reports) run as the
 * billing function's owner: a SELECT fires no trigger and evaluates no
 * index expression, the superuser it runs as bypasses row level security,
 * and the columns billing reads are of built-in types, so no code of the
 * table's owner runs in them (docs/GUARANTEES.md, "As whom code runs").
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "owner.h"

/* The owner of relation relid. */
static Oid
rel_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/* Become the owner of relid until mb_owner_leave. */
void
mb_owner_enter(Oid relid, MbOwnerSwitch *sw)
{
	Oid			owner = rel_owner(relid);

	GetUserIdAndSecContext(&sw->saved_user, &sw->saved_sec_context);
	SetUserIdAndSecContext(owner, sw->saved_sec_context |
						   SECURITY_RESTRICTED_OPERATION |
						   SECURITY_NOFORCE_RLS);
	sw->guc_level = NewGUCNestLevel();
}

/*
 * Back to the saved user.  After an error (ok false) the settings are left
 * to the (sub)transaction's abort, which pops their nest level anyway.
 */
void
mb_owner_leave(const MbOwnerSwitch *sw, bool ok)
{
	if (ok)
		AtEOXact_GUC(false, sw->guc_level);
	SetUserIdAndSecContext(sw->saved_user, sw->saved_sec_context);
}
