/*
 * access.c
 *		Tenant isolation: an org's billing data (stats, history, balance)
 *		goes only to a caller who may read that org's messages.
 *
 * The reports are SECURITY DEFINER functions: they read wallets and the
 * ledger, which no caller may read, and the messages, under the owner's
 * privileges, past the table's row level security.  A role granted them
 * would see every org's data.  So they ask, for the calling role, what its
 * own privileges and policies let it see of the attached table: it sees an
 * org's billing data when it may read at least one of that org's messages
 * there (its SELECT privilege, then its RLS policies, decide).  An org it
 * may not read looks like an org without data.  Superusers and roles
 * granted billing (EXECUTE on process_all_pending) see every org.
 *
 * The calling role is the session's current role (GetOuterUserId): inside
 * a SECURITY DEFINER function the current user is the function's owner,
 * and the role that called it is the one SET ROLE or the login chose.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/inval.h"
#include "utils/syscache.h"

#include "access.h"

/*
 * The last answer of mb_caller_sees_all, for one role: holds and available()
 * ask on every call.  A change to a function's privileges (pg_proc) or to
 * role memberships or attributes drops it.
 */
static Oid	sees_all_role = InvalidOid;
static bool sees_all_answer;
static bool sees_all_callbacks;

static void
forget_sees_all(Datum arg, int cacheid, uint32 hashvalue)
{
	sees_all_role = InvalidOid;
}

/* Whether the calling role is a superuser or may bill. */
bool
mb_caller_sees_all(void)
{
	Oid			caller = GetOuterUserId();
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(caller)};
	bool		isnull;

	if (superuser_arg(caller))
		return true;
	if (caller == sees_all_role)
		return sees_all_answer;
	if (!sees_all_callbacks)
	{
		CacheRegisterSyscacheCallback(PROCOID, forget_sees_all, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, forget_sees_all, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, forget_sees_all, (Datum) 0);
		sees_all_callbacks = true;
	}
	mb_exec_sql("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p"
				" WHERE p.proname = 'process_all_pending'"
				" AND p.pronamespace = 'msgbilling'::pg_catalog.regnamespace"
				" AND pg_catalog.has_function_privilege($1, p.oid, 'EXECUTE'))",
				1, argtypes, values, NULL, SPI_OK_SELECT);
	sees_all_answer = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1,
												 &isnull));
	sees_all_role = caller;
	return sees_all_answer;
}

/*
 * Kept: the plan cache plans it again for another role when row level
 * security applies, and the privileges are checked as each call runs.
 */
static char *
reads_org_sql(const MbConfig *cfg)
{
	return psprintf("SELECT EXISTS (SELECT 1 FROM %s m WHERE m.%s = $1)",
					cfg->relname, cfg->org_col);
}

/*
 * Whether the calling role may read one of org's messages in the attached
 * table, as that role: its privileges and its row level security policies
 * decide, with the table owner's code run as for any query of that role.
 */
static bool
caller_reads_org(const MbConfig *cfg, Datum org)
{
	Oid			caller = GetOuterUserId();
	Oid			saved_user;
	int			saved_sec;
	Oid			argtypes[1] = {cfg->org_type};
	bool		isnull;
	bool		found;

	if (pg_class_aclcheck(cfg->relid, caller, ACL_SELECT) != ACLCHECK_OK)
		return false;
	GetUserIdAndSecContext(&saved_user, &saved_sec);
	SetUserIdAndSecContext(caller, saved_sec | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		mb_exec_plan(mb_plan(MB_STMT_CALLER_READS_ORG, reads_org_sql, 1, argtypes),
					 &org, NULL, SPI_OK_SELECT);
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(saved_user, saved_sec);
	}
	PG_END_TRY();
	found = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
	return found;
}

/* Whether the calling role may see org's billing data. */
bool
mb_caller_may_read_org(const MbConfig *cfg, Datum org)
{
	return mb_caller_sees_all() || caller_reads_org(cfg, org);
}

/* Error unless the calling role may see every org's billing data. */
void
mb_require_sees_all(const char *what)
{
	if (!mb_caller_sees_all())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("%s reads the billing data of every org", what),
				 errdetail("Role \"%s\" may see an org's billing data only "
						   "where it may read that org's messages.",
						   GetUserNameFromId(GetOuterUserId(), false)),
				 errhint("Call it as a superuser or as a role granted billing "
						 "(EXECUTE on msgbilling.process_all_pending).")));
}
