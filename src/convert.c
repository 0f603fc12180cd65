/*
 * convert.c
 *		Coerce "any" arguments to the attached table's key and org types.
 *
 * The SQL API takes message and org ids as "any" so that 42, '42',
 * 42::bigint and 'a0ee…'::uuid all work, whatever type the app's table
 * uses.  A value of the target type passes as is; a string, or a number for
 * a numeric target, goes through the target type's input function, which
 * gives PostgreSQL's usual error for a malformed value.  Anything else is a
 * type mismatch.
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "catalog/pg_type.h"
#include "parser/parse_coerce.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "convert.h"

/*
 * Whether a value of type source may be converted to target through text:
 * a string (or an untyped literal) for any target, and a number for a
 * numeric target.  A number, a boolean or a json value is not an org id
 * of a text column.
 */
static bool
convertible(Oid source, Oid target)
{
	char		scat = TypeCategory(source);

	if (source == UNKNOWNOID || scat == TYPCATEGORY_STRING)
		return true;
	return scat == TYPCATEGORY_NUMERIC &&
		TypeCategory(target) == TYPCATEGORY_NUMERIC;
}

/* The text form of a value of any type. */
char *
mb_datum_text(Datum value, Oid type)
{
	Oid			outfunc;
	bool		varlena;

	getTypeOutputInfo(type, &outfunc, &varlena);
	return OidOutputFunctionCall(outfunc, value);
}

/*
 * s, cut to its first 40 bytes (whole characters) with "..." after it if
 * it is longer: an error message echoes a value the user passed, and a
 * value may be megabytes long.
 */
char *
mb_brief(const char *s)
{
	int			len = strlen(s);
	int			cut;

	if (len <= 40)
		return pstrdup(s);
	cut = pg_mbcliplen(s, len, 40);
	return psprintf("%.*s...", cut, s);
}

/* Convert value from source to target through their text forms. */
static Datum
convert_value(Datum value, Oid source, Oid target)
{
	Oid			infunc;
	Oid			ioparam;

	if (source == target)
		return value;
	getTypeInputInfo(target, &infunc, &ioparam);
	return OidInputFunctionCall(infunc, mb_datum_text(value, source),
								ioparam, -1);
}

/* Reject a type that cannot name a message or an org of the target type. */
static void
check_convertible(Oid source, Oid target, const char *what)
{
	if (source == target || convertible(source, target))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_DATATYPE_MISMATCH),
			 errmsg("%s of type %s does not match the attached table's type %s",
					what, format_type_be(source), format_type_be(target)),
			 errhint("Pass a value of type %s, or its text form.",
					 format_type_be(target))));
}

/* Error for a NULL where a value is required. */
void
mb_require_arg(FunctionCallInfo fcinfo, int argno, const char *what)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", what)));
}

/*
 * Argument argno as a value of type target.  The caller has checked that it
 * is not NULL.
 */
Datum
mb_arg_as(FunctionCallInfo fcinfo, int argno, Oid target, const char *what)
{
	Oid			source = get_fn_expr_argtype(fcinfo->flinfo, argno);

	if (!OidIsValid(source))
		elog(ERROR, "could not determine the type of argument %d", argno + 1);
	check_convertible(source, target, what);
	return convert_value(PG_GETARG_DATUM(argno), source, target);
}

/*
 * Array argument argno as an array of elemtype.  Every element is converted
 * as mb_arg_as converts a scalar; NULL elements stay NULL.
 */
Datum
mb_array_arg_as(FunctionCallInfo fcinfo, int argno, Oid elemtype,
				const char *what)
{
	Oid			source = get_fn_expr_argtype(fcinfo->flinfo, argno);
	Oid			srcelem = OidIsValid(source) ? get_element_type(source) : InvalidOid;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			i;

	if (!OidIsValid(srcelem))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s must be an array, not type %s", what,
						format_type_be(source)),
				 errhint("Pass an array such as ARRAY[1, 2, 3].")));
	if (srcelem == elemtype)
		return PG_GETARG_DATUM(argno);
	check_convertible(srcelem, elemtype, what);
	arr = PG_GETARG_ARRAYTYPE_P(argno);
	get_typlenbyvalalign(srcelem, &typlen, &typbyval, &typalign);
	deconstruct_array(arr, srcelem, typlen, typbyval, typalign,
					  &elems, &nulls, &n);
	for (i = 0; i < n; i++)
		if (!nulls[i])
			elems[i] = convert_value(elems[i], srcelem, elemtype);
	return mb_array(elems, nulls, n, elemtype);
}

/*
 * A one-dimensional array of n datums of type; nulls (NULL: none) marks
 * the NULL elements.  The statements' array parameters are built with it.
 */
Datum
mb_array(Datum *elems, bool *nulls, int n, Oid type)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			lbs[1] = {1};

	if (n == 0)
		return PointerGetDatum(construct_empty_array(type));
	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(elems, nulls, 1, &n, lbs, type,
											  typlen, typbyval, typalign));
}
