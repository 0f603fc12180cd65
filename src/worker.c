/*
 * worker.c
 *		The billing background worker: one per database in
 *		msgbilling.database, registered when the library is preloaded.
 *
 * The worker sleeps on its latch for msgbilling.naptime, or until an INSERT
 * into the attached table commits (wake.c), and then drains: batches of
 * msgbilling.batch_size, each in its own transaction, through the same
 * SECURITY DEFINER process_all_pending that CALL msgbilling.drain() uses,
 * at no more than msgbilling.worker_max_rate messages a second (pace.c).
 * It bills nothing where msgbilling is not installed or no table is
 * attached, and starts only once recovery is over, so a standby never
 * bills and a promoted one does.
 *
 * A failing batch never kills the worker: the error is logged once (again
 * only when it changes), the transaction is aborted, and the worker backs
 * off, doubling its sleep up to a minute, until a batch succeeds.
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "billing.h"
#include "msgbilling.h"
#include "pace.h"
#include "resume.h"
#include "wake.h"
#include "worker.h"
#include "yield.h"

#define MB_MAX_BACKOFF_MS 60000

char	   *mb_databases = NULL;
char	   *mb_role = NULL;
int			mb_naptime_ms = 10000;
int			mb_wake_interval_ms = 100;
bool		mb_enabled = true;

PGDLLEXPORT void mb_worker_main(Datum arg);

/* What a drain cycle found. */
typedef enum CycleState
{
	CYCLE_BILLED,				/* drained what there was */
	CYCLE_NOT_INSTALLED,
	CYCLE_NOT_ATTACHED,
	CYCLE_FAILED
} CycleState;

static volatile sig_atomic_t got_sigterm = false;

/* Worker state, in worker_cxt; lives as long as the worker. */
static MemoryContext worker_cxt;
static char *last_problem = NULL;	/* last error or idle reason logged */
static int64 billed_total = 0;
static int64 backlog = -1;			/* pending at the last count, -1: unknown */
static TimestampTz backlog_counted_at = 0;
static TimestampTz last_drain_start = 0;
static long backoff_ms = 0;

/* SIGTERM: stop between batches. */
static void
worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/* Register one worker for each database named in msgbilling.database. */
void
mb_worker_register(void)
{
	char	   *raw = pstrdup(mb_databases ? mb_databases : "");
	List	   *names;
	ListCell   *lc;
	int			slot = 0;

	if (!SplitIdentifierString(raw, ',', &names))
	{
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg(MB_LOG_PREFIX "invalid list in msgbilling.database: \"%s\"",
						mb_databases),
				 errhint("List database names separated by commas.")));
		return;
	}
	foreach(lc, names)
	{
		BackgroundWorker w;

		if (slot >= MB_MAX_DATABASES)
		{
			ereport(WARNING,
					(errmsg(MB_LOG_PREFIX "msgbilling.database names more than %d databases; "
							"the rest get no worker", MB_MAX_DATABASES)));
			break;
		}
		memset(&w, 0, sizeof(w));
		w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		w.bgw_start_time = BgWorkerStart_RecoveryFinished;
		w.bgw_restart_time = 60;
		snprintf(w.bgw_library_name, BGW_MAXLEN, "msgbilling");
		snprintf(w.bgw_function_name, BGW_MAXLEN, "mb_worker_main");
		snprintf(w.bgw_name, BGW_MAXLEN, "msgbilling worker for database %s",
				 (char *) lfirst(lc));
		snprintf(w.bgw_type, BGW_MAXLEN, "msgbilling worker");
		strlcpy(w.bgw_extra, (char *) lfirst(lc), BGW_EXTRALEN);
		w.bgw_main_arg = Int32GetDatum(slot++);
		RegisterBackgroundWorker(&w);
	}
}

/* Log a problem (or its end, with NULL) once, when it changes. */
static void
note_problem(const char *problem)
{
	if (problem == NULL && last_problem != NULL)
		ereport(LOG, (errmsg(MB_LOG_PREFIX "worker: billing again")));
	else if (problem != NULL &&
			 (last_problem == NULL || strcmp(problem, last_problem) != 0))
		ereport(LOG, (errmsg(MB_LOG_PREFIX "worker: %s", problem)));
	if (last_problem)
		pfree(last_problem);
	last_problem = problem ? MemoryContextStrdup(worker_cxt, problem) : NULL;
}

/* The attached table, or InvalidOid; *installed says whether msgbilling is. */
static Oid
attached_table(bool *installed)
{
	bool		isnull;
	Datum		relid;

	*installed = OidIsValid(get_extension_oid("msgbilling", true));
	if (!*installed)
		return InvalidOid;
	if (SPI_execute("SELECT messages::pg_catalog.oid FROM msgbilling.config",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read msgbilling.config");
	if (SPI_processed == 0)
		return InvalidOid;
	relid = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
						  &isnull);
	return DatumGetObjectId(relid);
}

/* Count the backlog, through the SECURITY DEFINER msgbilling.backlog(). */
static int64
count_backlog(void)
{
	bool		isnull;

	if (SPI_execute("SELECT msgbilling.backlog()", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not count the backlog");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

static int	my_slot;

/* On exit: worker_status() shows the worker stopped. */
static void
worker_exit(int code, Datum arg)
{
	mb_worker_gone(DatumGetInt32(arg));
}

/* Show progress in pg_stat_activity and in worker_status(). */
static void
report_progress(BackendState bstate, const char *state)
{
	char		line[256];

	if (backlog >= 0)
		snprintf(line, sizeof(line),
				 "msgbilling worker: %s; billed " INT64_FORMAT
				 " since start; backlog " INT64_FORMAT,
				 state, billed_total, backlog);
	else
		snprintf(line, sizeof(line),
				 "msgbilling worker: %s; billed " INT64_FORMAT " since start",
				 state, billed_total);
	pgstat_report_activity(bstate, line);
	mb_worker_report(my_slot, state, billed_total, bstate == STATE_RUNNING,
					 last_problem);
}

/*
 * How many messages a batch of the worker claims: msgbilling.batch_size,
 * but, while it keeps to a rate, no more than a tenth of a second's worth.
 * A paced batch sleeps inside its transaction (pace.c), with its wallets
 * and messages locked: this bounds how long a top-up or the app's UPDATE
 * of one of them waits, to about 0.1 s.
 */
static int64
worker_batch_limit(void)
{
	if (mb_worker_max_rate <= 0)
		return mb_batch_size;
	return Max(Min(mb_batch_size, mb_worker_max_rate / 10), 1);
}

/*
 * One transaction: find the attached table and bill one batch.  Sets
 * *claimed and *skipped; the backlog is counted at the first batch of a
 * cycle, at most once a naptime.
 */
static CycleState
bill_one_batch(int slot, bool first, int64 *claimed, int64 *skipped)
{
	MbTotals	t;
	bool		installed;
	Oid			relid;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	relid = attached_table(&installed);
	mb_worker_publish(slot, relid);
	*claimed = 0;
	*skipped = 0;
	if (OidIsValid(relid))
	{
		/*
		 * Counted for worker_status() at most once a naptime: a worker woken
		 * by every commit would otherwise count at every one.
		 */
		if (first && TimestampDifferenceExceeds(backlog_counted_at,
												GetCurrentTimestamp(),
												mb_naptime_ms))
		{
			backlog = count_backlog();
			backlog_counted_at = GetCurrentTimestamp();
		}
		mb_totals_init(&t);
		*claimed = mb_drain_batch((Datum) 0, TEXTOID, true,
								  worker_batch_limit(), 0, true, &t);
		*skipped = t.skipped;
		billed_total += t.charged + t.failed + t.no_charge;
		backlog = Max(backlog - t.charged - t.failed - t.no_charge, 0);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(true);
	if (!installed)
		return CYCLE_NOT_INSTALLED;
	return OidIsValid(relid) ? CYCLE_BILLED : CYCLE_NOT_ATTACHED;
}

/* bill_one_batch, with a failure caught, logged and rolled back. */
static CycleState
bill_one_batch_guarded(int slot, bool first, int64 *claimed, int64 *skipped)
{
	CycleState	state = CYCLE_FAILED;

	PG_TRY();
	{
		state = bill_one_batch(slot, first, claimed, skipped);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(worker_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		note_problem(psprintf("billing failed: %s", edata->message));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return state;
}

/* Reload the configuration if SIGHUP asked for it. */
static void
reload_if_asked(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/*
 * Drain in batches until nothing is left, an org is busy with another
 * biller, or SIGTERM; returns how long to sleep.
 */
static long
drain_cycle(int slot)
{
	bool		first = true;

	for (;;)
	{
		int64		claimed;
		int64		skipped;
		CycleState	state;

		reload_if_asked();
		if (got_sigterm || !mb_enabled)
			return mb_naptime_ms;
		report_progress(STATE_RUNNING, "billing");
		if (mb_worker_take_look_all(slot))
			mb_resume_forget();
		state = bill_one_batch_guarded(slot, first, &claimed, &skipped);
		first = false;
		if (state == CYCLE_FAILED)
		{
			backoff_ms = Min(Max(backoff_ms * 2, 1000), MB_MAX_BACKOFF_MS);
			return backoff_ms;
		}
		backoff_ms = 0;
		note_problem(state == CYCLE_NOT_INSTALLED ?
					 "msgbilling is not installed in this database; idle" :
					 state == CYCLE_NOT_ATTACHED ?
					 "no table is attached to msgbilling; idle" : NULL);
		/*
		 * A batch bills until nothing is left or its limit: fewer means it
		 * found nothing more.
		 */
		if (state != CYCLE_BILLED || claimed < worker_batch_limit() ||
			skipped > 0)
			return mb_naptime_ms;
	}
}

/*
 * Wait out the rest of msgbilling.wake_interval since the last drain began,
 * so that a stream of commits, each of which sets the latch, is billed in
 * a transaction per interval rather than one per message.  SIGTERM and
 * SIGHUP still end the wait.
 */
static void
wait_wake_interval(void)
{
	for (;;)
	{
		long		waited = TimestampDifferenceMilliseconds(last_drain_start,
															 GetCurrentTimestamp());

		if (got_sigterm || waited >= mb_wake_interval_ms)
			return;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 mb_wake_interval_ms - waited, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		reload_if_asked();
	}
}

/* Entry point of a billing worker. */
void
mb_worker_main(Datum arg)
{
	int			slot = DatumGetInt32(arg);
	char		dbname[BGW_EXTRALEN];

	strlcpy(dbname, MyBgworkerEntry->bgw_extra, BGW_EXTRALEN);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, worker_sigterm);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(dbname,
										 (mb_role && *mb_role) ? mb_role : NULL,
										 0);
	/* its run peeks may start where the last one found messages */
	mb_peek_resumes = true;
	/*
	 * it yields its core every msgbilling.worker_yield_interval (yield.c)
	 * and keeps to msgbilling.worker_max_rate (pace.c)
	 */
	mb_in_billing_worker = true;
	/*
	 * No parallel query in the worker: its batches read by index, and the
	 * one scan a plan would run in parallel, the backlog count (a sequential
	 * scan of the whole table while the backlog is large), would take every
	 * core from the app for its duration, once a naptime.
	 */
	SetConfigOption("max_parallel_workers_per_gather", "0", PGC_USERSET,
					PGC_S_SESSION);
	worker_cxt = AllocSetContextCreate(TopMemoryContext, "msgbilling worker",
									   ALLOCSET_DEFAULT_SIZES);
	my_slot = slot;
	mb_worker_publish(slot, InvalidOid);
	before_shmem_exit(worker_exit, Int32GetDatum(slot));
	pgstat_report_appname("msgbilling worker");
	ereport(LOG, (errmsg(MB_LOG_PREFIX "worker started for database \"%s\"",
						 dbname)));
	while (!got_sigterm)
	{
		long		sleep_ms = mb_naptime_ms;

		reload_if_asked();
		if (mb_enabled && !RecoveryInProgress())
		{
			wait_wake_interval();
			last_drain_start = GetCurrentTimestamp();
			sleep_ms = drain_cycle(slot);
		}
		/*
		 * A SIGTERM that came during the waits above had its latch reset
		 * there: waiting for the latch again would sleep a whole naptime.
		 */
		if (got_sigterm)
			break;
		report_progress(STATE_IDLE, mb_enabled ? "sleeping" : "disabled");
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	ereport(LOG, (errmsg(MB_LOG_PREFIX "worker for database \"%s\" stopping",
						 dbname)));
	proc_exit(1);
}
