/*
 * prices.c
 *		Load msgbilling.prices, find the price in effect for a message, and
 *		compute its cost.
 *
 * Prices are few and read-mostly, so each billing batch loads them all
 * into memory and prices every message there, instead of joining the
 * price table once per message.
 *
 * A price row is a tariff: a rate per input, output and cached token, a
 * fee per message, a minimum and a rounding.  A message's cost is
 *
 *	max(per_message + input * input rate + output * output rate
 *		+ cached * cached rate, minimum_charge)
 *
 * rounded to a multiple of the increment (nearest: half away from zero,
 * up or down); a set_price row is input = output = cached rate, no fee, no
 * minimum, nearest 0.000001.  Token counts are integers and rates short
 * decimals, so the cost is computed exactly in 128-bit integers when every
 * rate's digits fit in 18 and the fee, minimum and increment have no more
 * than six decimals; any other tariff (or a compiler without 128-bit
 * integers) goes through numeric, as exactly.  Both give the same value.
 */
#include "postgres.h"

#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "config.h"
#include "prices.h"

static char *
prices_sql(const MbConfig *cfg)
{
	return pstrdup("SELECT model, effective_from, credits_per_token,"
				   " COALESCE(output_per_token, credits_per_token),"
				   " COALESCE(cached_per_token, credits_per_token),"
				   " per_message, minimum_charge, increment, rounding"
				   " FROM msgbilling.prices"
				   " ORDER BY model COLLATE \"C\" NULLS FIRST, effective_from");
}

/* Costs from MB_COST_LIMIT credits up do not fit a numeric(10,6). */
#define MB_COST_LIMIT_MICROS INT64CONST(10000000000)
#define MB_MAX_SCALED_DIGITS 18

/*
 * Set the rate's units and scale (value = units / 10^scale) from its
 * decimal text; false when it has more than 18 digits.  Rates are finite
 * and not negative (the table's CHECKs).
 */
static bool
scale_rate(MbRate *r)
{
	char	   *text = DatumGetCString(DirectFunctionCall1(numeric_out, r->value));
	const char *c;
	int			digits = 0;
	bool		fraction = false;

	r->units = 0;
	r->scale = 0;
	for (c = text; *c; c++)
	{
		if (*c == '.')
		{
			fraction = true;
			continue;
		}
		if (*c < '0' || *c > '9' || ++digits > MB_MAX_SCALED_DIGITS)
			return false;
		r->units = r->units * 10 + (*c - '0');
		if (fraction)
			r->scale++;
	}
	return true;
}

static Datum numeric_cost_limit(void);

/*
 * An amount of 0 to 10000 (the table's CHECKs) in millionths; false when
 * it has more than six decimals.
 */
static bool
numeric_micros(Datum amount, int64 *micros)
{
	Datum		scaled = DirectFunctionCall2(numeric_mul, amount,
											 NumericGetDatum(int64_to_numeric(1000000)));

	if (!DatumGetBool(DirectFunctionCall2(numeric_eq, scaled,
										  DirectFunctionCall2(numeric_trunc, scaled,
															  Int32GetDatum(0)))))
		return false;
	*micros = DatumGetInt64(DirectFunctionCall1(numeric_int8, scaled));
	return true;
}

/* A rate from column col of the price row. */
static void
load_rate(MbRate *r, HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;

	r->value = SPI_getbinval(tup, desc, col, &isnull);
	r->too_large = DatumGetInt32(DirectFunctionCall2(numeric_cmp, r->value,
													 numeric_cost_limit())) >= 0;
	r->scaled = scale_rate(r);
}

/* The tariff's fee, minimum and rounding: columns 6 to 9 (NOT NULL). */
static void
load_tariff(MbPrice *p, HeapTuple tup, TupleDesc desc)
{
	bool		isnull;
	char	   *rounding = SPI_getvalue(tup, desc, 9);

	p->per_message = SPI_getbinval(tup, desc, 6, &isnull);
	p->minimum_charge = SPI_getbinval(tup, desc, 7, &isnull);
	p->increment = SPI_getbinval(tup, desc, 8, &isnull);
	p->rounding = strcmp(rounding, "up") == 0 ? MB_ROUND_UP :
		strcmp(rounding, "down") == 0 ? MB_ROUND_DOWN : MB_ROUND_NEAREST;
	p->tariff_scaled = numeric_micros(p->per_message, &p->fee_micros) &&
		numeric_micros(p->minimum_charge, &p->min_micros) &&
		numeric_micros(p->increment, &p->inc_micros);
}

/* All prices, in the current memory context. */
MbPriceList *
mb_prices_load(void)
{
	SPIPlanPtr	plan = mb_plan(MB_STMT_PRICES, prices_sql, 0, NULL);
	MbPriceList *list = palloc(sizeof(MbPriceList));
	SPITupleTable *tt;
	uint64		i;

	mb_exec_plan(plan, NULL, NULL, SPI_OK_SELECT);
	tt = SPI_tuptable;
	list->count = (int) SPI_processed;
	list->items = palloc0(sizeof(MbPrice) * Max(list->count, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		MbPrice    *p = &list->items[i];
		bool		isnull;
		int			k;

		p->model = SPI_getvalue(tt->vals[i], tt->tupdesc, 1);
		p->effective_from = DatumGetTimestampTz(SPI_getbinval(tt->vals[i],
															  tt->tupdesc, 2,
															  &isnull));
		for (k = 0; k < MB_NUM_KINDS; k++)
			load_rate(&p->rates[k], tt->vals[i], tt->tupdesc, 3 + k);
		load_tariff(p, tt->vals[i], tt->tupdesc);
	}
	return list;
}

/* Bytewise order of models, NULL (the default price) first. */
static int
model_cmp(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return (a != NULL) - (b != NULL);
	return strcmp(a, b);
}

/* Index of the first price of model, or -1 when it has none. */
static int
first_of_model(const MbPriceList *list, const char *model)
{
	int			lo = 0;
	int			hi = list->count;

	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (model_cmp(list->items[mid].model, model) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < list->count && model_cmp(list->items[lo].model, model) == 0)
		return lo;
	return -1;
}

/* The latest price of exactly this model in effect at time at, or NULL. */
static const MbPrice *
model_price_at(const MbPriceList *list, const char *model, TimestampTz at)
{
	int			i = first_of_model(list, model);
	const MbPrice *found = NULL;

	for (; i >= 0 && i < list->count &&
		 model_cmp(list->items[i].model, model) == 0; i++)
	{
		if (list->items[i].effective_from > at)
			break;
		found = &list->items[i];
	}
	return found;
}

/*
 * The price for a message of model at time at: the model's own price in
 * effect then, else the default price in effect then; NULL when neither.
 */
const MbPrice *
mb_price_at(const MbPriceList *list, const char *model, TimestampTz at)
{
	const MbPrice *price = NULL;

	if (model != NULL)
		price = model_price_at(list, model, at);
	return price ? price : model_price_at(list, NULL, at);
}

#ifdef HAVE_INT128
/* 10^n for n from 0 to 36. */
static int128
pow10_128(int n)
{
	int128		p = 1;

	while (n-- > 0)
		p *= 10;
	return p;
}

/* Whether every rate and amount of the tariff suits cost_micros. */
static bool
price_scaled(const MbPrice *price)
{
	int			k;

	for (k = 0; k < MB_NUM_KINDS; k++)
		if (!price->rates[k].scaled)
			return false;
	return price->tariff_scaled;
}

/*
 * The cost in millionths of a credit, or -1 when it is out of range:
 * exactly, at the scale of the finest rate or of millionths, whichever is
 * finer, max(fee + the counts at their rates, minimum), then rounded to
 * the increment.  A rate below 10000 has fewer than 4 + scale digits and
 * a scale of 18 at most, so with counts up to 10^15 each term stays below
 * 10^37 and their sum within an int128.
 */
static int64
cost_micros(const MbPrice *price, const int64 *counts)
{
	int			scale = 6;
	int128		raw;
	int128		to_scale;
	int128		increment;
	int128		steps;
	int128		left;
	int			k;

	for (k = 0; k < MB_NUM_KINDS; k++)
		scale = Max(scale, price->rates[k].scale);
	to_scale = pow10_128(scale - 6);
	raw = price->fee_micros * to_scale;
	for (k = 0; k < MB_NUM_KINDS; k++)
		if (counts[k] > 0)
			raw += (int128) counts[k] * price->rates[k].units *
				pow10_128(scale - price->rates[k].scale);
	raw = Max(raw, price->min_micros * to_scale);
	increment = price->inc_micros * to_scale;
	steps = raw / increment;
	left = raw % increment;
	if (price->rounding == MB_ROUND_UP)
		steps += left > 0;
	else if (price->rounding == MB_ROUND_NEAREST)
		steps += 2 * left >= increment;
	steps *= price->inc_micros;
	return steps < MB_COST_LIMIT_MICROS ? (int64) steps : -1;
}
#endif

/* MB_COST_LIMIT_MICROS in credits, as numeric: built once, kept. */
static Datum
numeric_cost_limit(void)
{
	static Datum limit = (Datum) 0;

	if (limit == (Datum) 0)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		limit = DirectFunctionCall1(int8_numeric,
									Int64GetDatum(MB_COST_LIMIT_MICROS / 1000000));
		MemoryContextSwitchTo(old);
	}
	return limit;
}

static int
num_cmp(Datum a, Datum b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, a, b));
}

/*
 * raw (0 or more) as a multiple of increment, rounded as the tariff says:
 * from the whole number of increments it holds and what is left over.
 */
static Datum
round_to_increment(Datum raw, const MbPrice *price)
{
	Datum		steps = DirectFunctionCall2(numeric_div_trunc, raw, price->increment);
	Datum		left = DirectFunctionCall2(numeric_mod, raw, price->increment);
	Datum		zero = NumericGetDatum(int64_to_numeric(0));
	bool		more;

	if (price->rounding == MB_ROUND_DOWN)
		more = false;
	else if (price->rounding == MB_ROUND_UP)
		more = num_cmp(left, zero) > 0;
	else						/* half away from zero: left >= increment / 2 */
		more = num_cmp(DirectFunctionCall2(numeric_add, left, left),
					   price->increment) >= 0;
	if (more)
		steps = DirectFunctionCall2(numeric_add, steps,
									NumericGetDatum(int64_to_numeric(1)));
	return DirectFunctionCall2(numeric_mul, steps, price->increment);
}

/* The same cost in numeric, for tariffs cost_micros cannot take. */
static bool
numeric_cost(const MbPrice *price, const int64 *counts, Datum *cost)
{
	Datum		raw = price->per_message;
	int			k;

	for (k = 0; k < MB_NUM_KINDS; k++)
		if (counts[k] > 0)
			raw = DirectFunctionCall2(numeric_add, raw,
									  DirectFunctionCall2(numeric_mul,
														  NumericGetDatum(int64_to_numeric(counts[k])),
														  price->rates[k].value));
	if (num_cmp(raw, price->minimum_charge) < 0)
		raw = price->minimum_charge;
	*cost = round_to_increment(raw, price);
	return num_cmp(*cost, numeric_cost_limit()) < 0;
}

/*
 * The cost of a message with these token counts (each 0 or more, by
 * MbTokenKind) at price: false when it is too large for a numeric(10,6).
 */
bool
mb_cost(const MbPrice *price, const int64 *counts, Datum *cost)
{
	int			k;

	/* checked first: the product of an absurd rate overflows numeric */
	for (k = 0; k < MB_NUM_KINDS; k++)
		if (price->rates[k].too_large && counts[k] > 0)
			return false;
#ifdef HAVE_INT128
	if (price_scaled(price))
	{
		int64		micros = cost_micros(price, counts);

		if (micros < 0)
			return false;
		*cost = NumericGetDatum(int64_div_fast_to_numeric(micros, 6));
		return true;
	}
#endif
	return numeric_cost(price, counts, cost);
}
