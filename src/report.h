/*
 * report.h
 *		Returning rows from C functions, shared by the reporting and billing
 *		entry points.
 */
#ifndef MB_REPORT_H
#define MB_REPORT_H

#include "postgres.h"

#include "fmgr.h"
#include "utils/tuplestore.h"

extern Tuplestorestate *mb_begin_rows(FunctionCallInfo fcinfo,
									  TupleDesc *desc);
extern void mb_return_one_row(FunctionCallInfo fcinfo, Datum *values,
							  bool *nulls);

extern void mb_return_spi_rows(FunctionCallInfo fcinfo);

#endif							/* MB_REPORT_H */
