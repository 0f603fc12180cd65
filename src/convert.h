/*
 * convert.h
 *		Turning the "any" arguments of the SQL API into the attached table's
 *		key and org types.
 */
#ifndef MB_CONVERT_H
#define MB_CONVERT_H

#include "postgres.h"

#include "fmgr.h"

extern void mb_require_arg(FunctionCallInfo fcinfo, int argno,
						   const char *what);
extern Datum mb_arg_as(FunctionCallInfo fcinfo, int argno, Oid target,
					   const char *what);
extern Datum mb_array_arg_as(FunctionCallInfo fcinfo, int argno, Oid elemtype,
							 const char *what);
extern char *mb_datum_text(Datum value, Oid type);
extern char *mb_brief(const char *s);
extern Datum mb_array(Datum *elems, bool *nulls, int n, Oid type);

#endif							/* MB_CONVERT_H */
