/*
 * msgbilling.c
 *		Module entry point: _PG_init and the GUCs.
 *
 * The library works without shared_preload_libraries: it is loaded on the
 * first call of one of its functions, and the GUCs are defined then.
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "guard.h"
#include "msgbilling.h"
#include "pace.h"
#include "version.h"
#include "wake.h"
#include "worker.h"
#include "yield.h"

PG_MODULE_MAGIC;

int			mb_batch_size = 10000;
int			mb_log_level = LOG;
int			mb_drain_progress = 0;

static const struct config_enum_entry log_level_options[] = {
	{"debug2", DEBUG2, false},
	{"debug1", DEBUG1, false},
	{"info", INFO, false},
	{"notice", NOTICE, false},
	{"log", LOG, false},
	{NULL, 0, false}
};

void		_PG_init(void);

/* The worker's settings: defined only when the library is preloaded. */
static void
define_worker_gucs(void)
{
	DefineCustomStringVariable("msgbilling.database",
							   "Databases the billing workers bill, separated by commas.",
							   "One worker per database; it idles where msgbilling "
							   "is not installed or no table is attached.",
							   &mb_databases, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("msgbilling.role",
							   "Role the billing workers connect as (empty: the bootstrap superuser).",
							   "It needs EXECUTE on msgbilling.process_all_pending and "
							   "msgbilling.backlog, USAGE on schema msgbilling and "
							   "SELECT on msgbilling.config.",
							   &mb_role, "",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("msgbilling.naptime",
							"Time between drains of the billing workers.",
							"A committed INSERT into the attached table wakes the "
							"worker before that (msgbilling.wake_on_commit).",
							&mb_naptime_ms, 10000, 10, 24 * 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("msgbilling.wake_interval",
							"Least time between the starts of two drains of a billing worker.",
							"Commits that wake the worker within it are billed "
							"together, in one transaction, when it ends.",
							&mb_wake_interval_ms, 100, 0, 60 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomBoolVariable("msgbilling.enabled",
							 "Whether the billing workers bill.",
							 NULL, &mb_enabled, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("msgbilling.worker_yield_interval",
							 "The billing workers offer their core to waiting processes "
							 "at least this often (0: never).",
							 "A drain keeps a core busy; the app's backends that wake "
							 "up on it get it within this time.",
							 &mb_worker_yield_interval_ms,
							 0.1, 0, 1000,
							 PGC_SIGHUP, GUC_UNIT_MS,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("msgbilling.worker_max_rate",
							"The billing workers bill at most this many messages a "
							"second (0: no limit).",
							"A drain at full speed writes WAL and dirties pages as "
							"fast as a core can, which slows the app's INSERTs.",
							&mb_worker_max_rate,
							10000, 0, INT_MAX,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("msgbilling.wake_on_commit",
							 "Whether a committed INSERT into the attached table wakes its worker.",
							 NULL, &mb_wake_enabled, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
}

/* Define the GUCs and reserve the prefix. */
void
_PG_init(void)
{
	DefineCustomIntVariable("msgbilling.batch_size",
							"Messages claimed per batch by process_all_pending and drain.",
							"Each batch does one wallet update per org and one "
							"UPDATE of the messages table.",
							&mb_batch_size,
							10000, 1, 1000000,
							PGC_USERSET, 0,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("msgbilling.log_level",
							 "Level of the one [msgbilling] line written per billing call.",
							 NULL,
							 &mb_log_level,
							 LOG, log_level_options,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("msgbilling.drain_progress",
							"Report a drain's progress every this many batches (0: never).",
							"A NOTICE with what was billed so far and the backlog left.",
							&mb_drain_progress,
							0, 0, 1000000,
							PGC_USERSET, 0,
							NULL, NULL, NULL);

	DefineCustomRealVariable("msgbilling.yield_interval",
							 "Billing called from a session offers its core to waiting "
							 "processes at least this often (0: never).",
							 "The billing workers use msgbilling.worker_yield_interval.",
							 &mb_yield_interval_ms,
							 0, 0, 1000,
							 PGC_USERSET, GUC_UNIT_MS,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("msgbilling.max_rate",
							"Billing called from a session bills at most this many "
							"messages a second (0: no limit).",
							"The billing workers use msgbilling.worker_max_rate.",
							&mb_max_rate,
							0, 0, INT_MAX,
							PGC_USERSET, 0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("msgbilling.repair",
							 "Lets a superuser change billing columns and the ledger by hand.",
							 "For repairing data; msgbilling's guards refuse such "
							 "changes otherwise.",
							 &mb_repair, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	mb_guard_init();
	mb_version_init();

	/* PGC_POSTMASTER settings can only be defined at server start */
	if (process_shared_preload_libraries_in_progress)
		define_worker_gucs();
	MarkGUCPrefixReserved("msgbilling");
	if (!process_shared_preload_libraries_in_progress)
		return;
	mb_wake_init();
	mb_worker_register();
}
