/*
 * resume.h
 *		Where the billing worker's next look for pending messages starts.
 */
#ifndef MB_RESUME_H
#define MB_RESUME_H

#include "postgres.h"

#include "config.h"

/* Set by the billing worker, and by drain while it runs: run peeks may resume. */
extern bool mb_peek_resumes;

/* Whether the last run peek resumed (did not look at the whole backlog). */
extern bool mb_last_peek_resumed;

extern bool mb_resume_from(const MbConfig *cfg, Datum *from);
extern void mb_resume_forget(void);
extern void mb_resume_note(const MbConfig *cfg, bool resumed, bool found,
						   Datum oldest);

#endif							/* MB_RESUME_H */
