/*
 * yield.c
 *		While billing runs, it offers its core to any process waiting for
 *		one at least every msgbilling.worker_yield_interval (100 us) in a
 *		billing worker, every msgbilling.yield_interval (0: never) elsewhere.
 *
 * Why: a drain keeps a core busy for seconds, and the app's backends wake
 * up on that core all the time (for a query, at the end of a WAL flush).
 * Whether a woken backend runs at once or waits for the biller's time
 * slice to end is the kernel's choice: on the benchmark's virtual machine
 * it waited, 1-4 ms, until the next scheduler tick, even with the other
 * core idle and even with the worker at nice 19 or SCHED_IDLE; while the
 * worker kept up with the app, that wait was most of what billing added
 * to the app's INSERT latency.  A sched_yield() lets a waiting process
 * have the core at once; when nothing waits it returns at once, so it
 * costs a system call per interval.  It does cost a drain some speed (the
 * core it gives away is one it would have used): 2.5 % of a 1M drain at
 * 100 us on the dev cluster, none measurable at 500 us.  So, as autovacuum
 * has a cost delay by default and a manual VACUUM none, the background
 * worker yields by default and a session's billing (drain, process_*, a
 * pg_cron job) runs at full speed unless asked.
 *
 * The places that offer are between statements and between rows (claimed
 * or written).  None is taken while a lightweight lock is held
 * (LWLockAcquire holds off interrupts, so it shows in the holdoff count)
 * or in a critical section: a process that gave its core away while
 * holding a buffer or WAL lock would make others wait for it instead.
 */
#include "postgres.h"

#ifndef WIN32
#include <sched.h>
#endif

#include "miscadmin.h"
#include "portability/instr_time.h"

#include "pace.h"
#include "yield.h"

/* rows between two looks at the clock: a row takes a few microseconds */
#define ROWS_PER_CLOCK_READ 16

double		mb_yield_interval_ms = 0;
double		mb_worker_yield_interval_ms = 0.1;
bool		mb_in_billing_worker = false;

static instr_time last_yield;
static int	rows_since_check = 0;
static int	paced_since_check = 0;	/* of those rows, the paced visits */

/* A billing call starts: its first interval starts now. */
void
mb_yield_begin(void)
{
	INSTR_TIME_SET_CURRENT(last_yield);
	/* the rows counted since the last check stay counted, for the pace */
	mb_pace_begin();
}

/* Offer the core if an interval has passed since the last offer. */
static void
offer_core(void)
{
	double		interval = mb_in_billing_worker ?
		mb_worker_yield_interval_ms : mb_yield_interval_ms;
	instr_time	now;

	if (interval <= 0)
		return;
	INSTR_TIME_SET_CURRENT(now);
	INSTR_TIME_SUBTRACT(now, last_yield);
	if (INSTR_TIME_GET_MILLISEC(now) < interval)
		return;
	if (InterruptHoldoffCount > 0 || CritSectionCount > 0)
		return;
#ifndef WIN32
	(void) sched_yield();
#endif
	INSTR_TIME_SET_CURRENT(last_yield);
}

/* Between statements: keep to the rate (pace.c), then offer the core. */
void
mb_yield_point(void)
{
	mb_pace(0);
	offer_core();
}

/*
 * mb_yield_point for a statement's row: the clock is read every few rows.
 * paced: whether the row is one of a message's two visits that count
 * towards the rate (pace.c).
 */
void
mb_yield_row(bool paced)
{
	if (paced)
		paced_since_check++;
	if (++rows_since_check < ROWS_PER_CLOCK_READ)
		return;
	mb_pace(paced_since_check);
	rows_since_check = 0;
	paced_since_check = 0;
	offer_core();
}
