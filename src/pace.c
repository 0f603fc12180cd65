/*
 * pace.c
 *		Billing paces itself to at most msgbilling.worker_max_rate messages
 *		a second in a billing worker, msgbilling.max_rate (0: no limit)
 *		elsewhere, by sleeping between rows when it runs ahead.
 *
 * Why: the yields (yield.c) give the app's backends a core at once, but the
 * app's INSERTs still slow down with the rate billing writes WAL and dirties
 * pages at: on the benchmark's machine, the app's p99 while the worker
 * drained a backlog was 2-2.7 times idle at full speed (a core's worth,
 * about 90 MB of WAL a second), 1.7 times at 50,000 messages a second,
 * 1.3 at 25,000, and 1.0-1.8 at 10,000 (bench runs 21-31, where the
 * machine's own noise is of that size); 5,000 cost the app no less than
 * 10,000, nor did sleeping a quarter or ten milliseconds at a time
 * instead of one (PACE_MIN_SLEEP_MS).  So the worker
 * keeps to msgbilling.worker_max_rate, 10,000 by default: 36 million
 * messages an hour, far above what it has to keep up with, and a backlog
 * of a million drains in under two minutes.  Autovacuum is paced by its
 * cost delay for the same reason, and a manual VACUUM is not, as a
 * session's billing (drain, process_*, a pg_cron job) is not unless
 * msgbilling.max_rate asks.
 *
 * How: every message is visited twice at a row, once when it is claimed
 * and once when it is written, so each visit is owed half of 1/rate
 * seconds.  Owing is counted from a start time; when billing is ahead of
 * what it owes by a millisecond or more it sleeps the difference.  It
 * never sleeps while it holds a lightweight lock or is in a critical
 * section.  What it falls behind within a batch (in a statement without
 * rows, by oversleeping) it makes up by not sleeping; what it fell behind
 * before a batch began (a commit, the sleep between two drains) it forgets
 * but for PACE_CREDIT_MS, so that it never bills a long burst at full
 * speed.
 *
 * The sleeps are inside the batch's transaction, with the batch's wallets
 * and messages locked: a top-up of one of those orgs waits for the batch,
 * as it waits for any batch.  So the worker, while it keeps to a rate,
 * claims at most a tenth of a second's worth of messages a batch
 * (worker.c); a session that sets msgbilling.max_rate chooses its own
 * batch size.  The app's INSERTs take none of those locks.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "portability/instr_time.h"

#include "pace.h"
#include "yield.h"

/* sleep only once at least this far ahead: shorter sleeps oversleep */
#define PACE_MIN_SLEEP_MS 1.0
/* unused time that may be spent at full speed later */
#define PACE_CREDIT_MS 10.0

int			mb_max_rate = 0;
int			mb_worker_max_rate = 10000;

static instr_time pace_start;
static double pace_owed_ms = 0;	/* owed since pace_start */
static bool pace_started = false;

static int
pace_rate(void)
{
	return mb_in_billing_worker ? mb_worker_max_rate : mb_max_rate;
}

/* Milliseconds since pace_start. */
static double
pace_elapsed_ms(void)
{
	instr_time	now;

	INSTR_TIME_SET_CURRENT(now);
	INSTR_TIME_SUBTRACT(now, pace_start);
	return INSTR_TIME_GET_MILLISEC(now);
}

/* Start owing again from now, with nothing owed. */
static void
pace_restart(void)
{
	INSTR_TIME_SET_CURRENT(pace_start);
	pace_owed_ms = 0;
	pace_started = true;
}

/*
 * A batch starts.  Lag from before it (the last batch's commit, or the sleep
 * between two drains) is forgotten beyond PACE_CREDIT_MS, so that a worker
 * that slept does not make up for it at full speed.  Lag within a batch (a
 * statement without rows, an oversleep) is kept and made up by billing its
 * next rows without sleeping, so that the rate holds.
 */
void
mb_pace_begin(void)
{
	double		ahead;

	if (pace_rate() <= 0)
		return;
	if (!pace_started)
	{
		pace_restart();
		return;
	}
	ahead = pace_owed_ms - pace_elapsed_ms();
	if (ahead < -PACE_CREDIT_MS)
		pace_owed_ms -= ahead + PACE_CREDIT_MS;
}

/*
 * Count row_visits more row visits (0 at a statement) and sleep if billing
 * is ahead of its rate.
 */
void
mb_pace(int row_visits)
{
	int			rate = pace_rate();
	double		ahead;

	if (rate <= 0)
		return;
	if (!pace_started)
		pace_restart();
	pace_owed_ms += row_visits * 500.0 / rate;
	ahead = pace_owed_ms - pace_elapsed_ms();
	if (ahead < PACE_MIN_SLEEP_MS ||
		InterruptHoldoffCount > 0 || CritSectionCount > 0)
		return;
	/*
	 * A signal (a cancel, SIGTERM) ends the sleep early; the executor's next
	 * interrupt check acts on it.  pg_stat_activity shows the sleep as an
	 * Extension wait.
	 */
	pgstat_report_wait_start(PG_WAIT_EXTENSION);
	pg_usleep((long) (ahead * 1000.0));
	pgstat_report_wait_end();
}
