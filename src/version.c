/*
 * version.c
 *		Refuse to move money through objects of another version.
 *
 * A new library is in place as soon as its package is installed, but the
 * objects of each database stay at the version they were created or last
 * updated to until ALTER EXTENSION msgbilling UPDATE runs there.  This
 * library's statements name columns and tables that older versions do not
 * have, so every entry point that reads or writes msgbilling's tables first
 * checks the installed version and, if it is not this library's, stops with
 * an error that says what to run, rather than failing midway on a missing
 * column.  The guards stay out of it: they keep protecting the messages,
 * and the app's INSERTs go through (bill_on_insert warns and leaves them
 * pending).
 *
 * The answer is kept until the next relation cache invalidation: dropping
 * or updating the extension changes its tables, which sends one.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/rel.h"

#include "msgbilling.h"
#include "version.h"

static bool catalog_checked = false;

static void
forget_check(Datum arg, Oid relid)
{
	catalog_checked = false;
}

void
mb_version_init(void)
{
	CacheRegisterRelcacheCallback(forget_check, (Datum) 0);
}

/* The installed version of msgbilling in this database, or NULL. */
static char *
installed_version(void)
{
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *version = NULL;

	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("msgbilling"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/* Whether this library can update objects of that version (its scripts). */
static bool
older_version(const char *version)
{
	static const char *const older[] = {"1.0"};

	for (int i = 0; i < lengthof(older); i++)
		if (strcmp(version, older[i]) == 0)
			return true;
	return false;
}

/*
 * Stop unless the installed objects are this library's version.  Inside
 * CREATE or ALTER EXTENSION the scripts are bringing them there.
 */
void
mb_require_catalog(void)
{
	char	   *version;

	if (catalog_checked || creating_extension)
		return;
	version = installed_version();
	if (version == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"msgbilling\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION msgbilling.")));
	if (strcmp(version, MB_LIBRARY_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("msgbilling's objects in this database are at version %s, "
						"its library at version %s", version, MB_LIBRARY_VERSION),
				 errdetail("Billing, wallets and reports stay off until they match; "
						   "the guards still protect the messages, and new messages "
						   "stay pending."),
				 older_version(version) ?
				 errhint("Run ALTER EXTENSION msgbilling UPDATE in this database.") :
				 errhint("Install msgbilling's library of version %s on this server.",
						 version)));
	catalog_checked = true;
}
