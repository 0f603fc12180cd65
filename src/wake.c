/*
 * wake.c
 *		Wake-on-commit: a committed INSERT into the attached table sets the
 *		latch of its database's billing worker, so that under light load a
 *		message is charged right after its commit instead of a naptime later.
 *
 * Each worker publishes, in a small shared array, its database, the table
 * it bills and its PGPROC number.  Every backend (the library is preloaded)
 * has an ExecutorEnd hook that notes an INSERT (or COPY FROM) into the
 * published table of its database, and a transaction callback that sets
 * the worker's latch when that transaction commits.  The INSERT itself pays
 * for a few integer comparisons; nothing is written and no lock is taken.
 * A stale slot can at worst set some other process's latch: a spurious
 * wake-up, which every latch user tolerates.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parsetree.h"
#include "catalog/namespace.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "commands/dbcommands.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "report.h"
#include "wake.h"

typedef struct MbWorkerSlot
{
	Oid			dboid;			/* InvalidOid: no worker here yet */
	Oid			relid;			/* the table it bills */
	int			procno;			/* its PGPROC, for its latch */
	bool		look_all;		/* a commit made old messages pending */
	/* what msgbilling.worker_status() shows; written by the worker only */
	int			pid;			/* 0 once it exited */
	char		state[32];
	TimestampTz last_run;
	int64		billed;
	char		last_error[256];
} MbWorkerSlot;

typedef struct MbShared
{
	MbWorkerSlot slots[MB_MAX_DATABASES];
} MbShared;

bool		mb_wake_enabled = true;

static MbShared *shared = NULL;
static bool wake_at_commit = false;
static bool look_all_at_commit = false;

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ExecutorEnd_hook_type prev_ExecutorEnd = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;

/* Reserve our shared memory (PG 15 asks for it in a hook). */
static void
wake_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(MbShared)));
}

/* Attach to (or create) the shared array. */
static void
wake_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("msgbilling", sizeof(MbShared), &found);
	if (!found)
		memset(shared, 0, sizeof(MbShared));
	LWLockRelease(AddinShmemInitLock);
}

/* The worker of this database and table, or NULL. */
static MbWorkerSlot *
slot_for(Oid relid)
{
	int			i;

	if (shared == NULL || !OidIsValid(relid))
		return NULL;
	for (i = 0; i < MB_MAX_DATABASES; i++)
		if (shared->slots[i].dboid == MyDatabaseId &&
			shared->slots[i].relid == relid)
			return &shared->slots[i];
	return NULL;
}

/* At commit, wake the worker if this transaction inserted messages. */
static void
wake_xact_callback(XactEvent event, void *arg)
{
	int			i;

	if (!wake_at_commit || shared == NULL)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		for (i = 0; i < MB_MAX_DATABASES; i++)
			if (shared->slots[i].dboid == MyDatabaseId)
			{
				/* the commit is visible now: the worker's next look sees it */
				if (look_all_at_commit)
				{
					shared->slots[i].look_all = true;
					pg_memory_barrier();
				}
				SetLatch(&ProcGlobal->allProcs[shared->slots[i].procno].procLatch);
			}
	}
	/* a prepared transaction commits elsewhere: no wake-up from here */
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		wake_at_commit = look_all_at_commit = false;
}

/* Note an INSERT into a table a worker of this database bills. */
static void
wake_executor_end(QueryDesc *queryDesc)
{
	if (mb_wake_enabled && !wake_at_commit &&
		queryDesc->operation == CMD_INSERT)
	{
		ListCell   *lc;

		foreach(lc, queryDesc->plannedstmt->resultRelations)
		{
			RangeTblEntry *rte = rt_fetch(lfirst_int(lc),
										  queryDesc->plannedstmt->rtable);

			if (slot_for(rte->relid) != NULL)
				wake_at_commit = true;
		}
	}
	if (prev_ExecutorEnd)
		prev_ExecutorEnd(queryDesc);
	else
		standard_ExecutorEnd(queryDesc);
}

/* Note a COPY FROM into a table a worker of this database bills. */
static void
wake_process_utility(PlannedStmt *pstmt, const char *queryString,
					 bool readOnlyTree, ProcessUtilityContext context,
					 ParamListInfo params, QueryEnvironment *queryEnv,
					 DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
							params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
	if (mb_wake_enabled && !wake_at_commit && IsA(stmt, CopyStmt) &&
		((CopyStmt *) stmt)->is_from && ((CopyStmt *) stmt)->relation &&
		slot_for(RangeVarGetRelid(((CopyStmt *) stmt)->relation, NoLock,
								  true)) != NULL)
		wake_at_commit = true;
}

/*
 * Wake this database's worker when the current transaction commits: it has
 * new work (messages made pending again) or a new configuration (attach).
 * Both may be older than where the worker's peeks resume (resume.c), so
 * its next peek looks at the whole backlog.  Does nothing when the library
 * is not preloaded.
 */
void
mb_wake_at_commit(void)
{
	if (shared != NULL && mb_wake_enabled)
		wake_at_commit = look_all_at_commit = true;
}

/*
 * Worker: whether a commit asked for a look at the whole backlog since the
 * last call.  Cleared before the look's snapshot is taken, so a request
 * that comes after it is kept for the next look.
 */
bool
mb_worker_take_look_all(int slot)
{
	if (shared == NULL || !shared->slots[slot].look_all)
		return false;
	shared->slots[slot].look_all = false;
	pg_memory_barrier();
	return true;
}

PG_FUNCTION_INFO_V1(wake_worker);

/* msgbilling._wake_worker(): mb_wake_at_commit for SQL callers. */
Datum
wake_worker(PG_FUNCTION_ARGS)
{
	mb_wake_at_commit();
	PG_RETURN_VOID();
}

/* Install the hooks; called from _PG_init when preloaded. */
void
mb_wake_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = wake_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = wake_shmem_startup;
	prev_ExecutorEnd = ExecutorEnd_hook;
	ExecutorEnd_hook = wake_executor_end;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = wake_process_utility;
	RegisterXactCallback(wake_xact_callback, NULL);
}

/* A worker announces itself, and the table it bills (InvalidOid: none). */
void
mb_worker_publish(int slot, Oid relid)
{
	MbWorkerSlot *s = &shared->slots[slot];

#if PG_VERSION_NUM >= 170000
	s->procno = MyProcNumber;
#else
	s->procno = MyProc->pgprocno;
#endif
	s->pid = MyProcPid;
	s->relid = relid;
	pg_write_barrier();
	s->dboid = MyDatabaseId;
}

/*
 * A worker reports its state for worker_status(): readers may see a
 * half-written line at worst, never a crash (fixed-size, terminated).
 */
void
mb_worker_report(int slot, const char *state, int64 billed, bool ran,
				 const char *error)
{
	MbWorkerSlot *s = &shared->slots[slot];

	strlcpy(s->state, state, sizeof(s->state));
	s->billed = billed;
	if (ran)
		s->last_run = GetCurrentTimestamp();
	if (error)
		strlcpy(s->last_error, error, sizeof(s->last_error));
}

/* A worker going away: it no longer runs. */
void
mb_worker_gone(int slot)
{
	MbWorkerSlot *s = &shared->slots[slot];

	s->pid = 0;
	strlcpy(s->state, "stopped", sizeof(s->state));
}

PG_FUNCTION_INFO_V1(worker_status);

/*
 * msgbilling.worker_status() -> (database, pid, state, last_run, billed,
 * last_error): one row per billing worker that has run since the server
 * started; none when the library is not preloaded.
 */
Datum
worker_status(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Tuplestorestate *store = mb_begin_rows(fcinfo, &desc);
	int			i;

	for (i = 0; shared != NULL && i < MB_MAX_DATABASES; i++)
	{
		MbWorkerSlot *s = &shared->slots[i];
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};
		char	   *db;

		if (!OidIsValid(s->dboid) || (db = get_database_name(s->dboid)) == NULL)
			continue;
		values[0] = CStringGetDatum(db);
		values[0] = DirectFunctionCall1(namein, values[0]);
		values[1] = Int32GetDatum(s->pid);
		nulls[1] = s->pid == 0;
		values[2] = CStringGetTextDatum(s->state);
		values[3] = TimestampTzGetDatum(s->last_run);
		nulls[3] = s->last_run == 0;
		values[4] = Int64GetDatum(s->billed);
		values[5] = CStringGetTextDatum(s->last_error);
		nulls[5] = s->last_error[0] == '\0';
		tuplestore_putvalues(store, desc, values, nulls);
	}
	return (Datum) 0;
}
