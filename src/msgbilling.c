/*
 * msgbilling.c
 *		Module entry point: _PG_init and the GUCs.
 *
 * The library works without shared_preload_libraries: it is loaded on the
 * first call of one of its functions, and the GUCs are defined then.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "msgbilling.h"

#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

PG_MODULE_MAGIC;

int			mb_batch_size = 10000;
int			mb_log_level = LOG;

static const struct config_enum_entry log_level_options[] = {
	{"debug2", DEBUG2, false},
	{"debug1", DEBUG1, false},
	{"info", INFO, false},
	{"notice", NOTICE, false},
	{"log", LOG, false},
	{NULL, 0, false}
};

void		_PG_init(void);

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

	MarkGUCPrefixReserved("msgbilling");
}
