/*
 * resume.c
 *		Where the billing worker's next look for pending messages starts.
 *
 * A run first peeks at the oldest pending messages, in creation order,
 * through the partial index on pending messages.  A billed message leaves
 * that index only when VACUUM removes its entry: until then every peek
 * steps over the entries of all the messages billed since, oldest first.
 * After a drain of a million messages that is a few milliseconds per peek,
 * and the worker peeks at every wake-up, ten times a second under a
 * steady stream of INSERTs.
 *
 * So the worker remembers how old the oldest message of its last peek was
 * and starts its next peek a margin before it.  A message that turns
 * pending later and older than that (its transaction was open longer than
 * the margin, its created time came from a slow clock, or a retry made an
 * old failure pending again) is not lost: once per msgbilling.naptime the
 * worker peeks at the whole backlog, and at once after a commit that made
 * old messages pending through msgbilling (retry_failed, attach: wake.c).
 *
 * drain resumes its peeks the same way, from its second batch on: with one
 * org's backlog, batch k of a drain would otherwise step over the entries
 * of the k batches before it.  Before it returns, a drain whose last batch
 * resumed bills one more batch after a look at the whole backlog
 * (billing_api.c), so nothing pending when it started is left behind.
 * Other calls from SQL always peek at the whole backlog.
 *
 * Only for tables with a created column: the key alone says nothing about
 * how late a message may still commit.
 */
#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/timestamp.h"

#include "resume.h"
#include "worker.h"

/* How far before the oldest message seen the next peek starts. */
#define MB_RESUME_MARGIN	(60 * USECS_PER_SEC)

bool		mb_peek_resumes = false;
bool		mb_last_peek_resumed = false;

/*
 * The worker's resume point, for the current configuration: config.c
 * forgets it, with the kept statements, when the attached table, its
 * created column or that column's type changes.
 */
static bool resume_valid = false;
static Timestamp resume_at;		/* timestamp or timestamptz: microseconds */
static TimestampTz last_full_peek = 0;

/*
 * Whether this peek may resume, and from which created time; false means
 * a peek at the whole backlog.
 */
bool
mb_resume_from(const MbConfig *cfg, Datum *from)
{
	TimestampTz now = GetCurrentTimestamp();

	if (!mb_peek_resumes || cfg->created_col == NULL || !resume_valid)
		return false;
	/* a clock set back would otherwise put the next whole look off */
	if (now < last_full_peek ||
		TimestampDifferenceExceeds(last_full_peek, now, mb_naptime_ms))
		return false;
	*from = TimestampGetDatum(resume_at);
	return true;
}

/* The next peek looks at the whole backlog (a new configuration, a request). */
void
mb_resume_forget(void)
{
	resume_valid = false;
}

/*
 * After a peek: note the creation time of the oldest message it saw
 * (found), or, after a whole peek that found none, that there is nothing
 * to resume from.
 */
void
mb_resume_note(const MbConfig *cfg, bool resumed, bool found, Datum oldest)
{
	Timestamp	ts;

	if (!mb_peek_resumes || cfg->created_col == NULL)
		return;
	if (!resumed)
		last_full_peek = GetCurrentTimestamp();
	if (!found)
	{
		/* a resumed peek that found none keeps its point: nothing passed it */
		if (!resumed)
			resume_valid = false;
		return;
	}
	ts = DatumGetTimestamp(oldest);
	/* -infinity, or too close to the earliest time to subtract the margin */
	if (TIMESTAMP_NOT_FINITE(ts) || ts < MIN_TIMESTAMP + MB_RESUME_MARGIN)
	{
		resume_valid = false;
		return;
	}
	resume_at = ts - MB_RESUME_MARGIN;
	resume_valid = true;
}
