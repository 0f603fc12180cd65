/*
 * prices.c
 *		Load msgbilling.prices, find the price in effect for a message, and
 *		compute its cost.
 *
 * Prices are few and read-mostly, so each billing batch loads them all
 * into memory and prices every message there, instead of joining the
 * price table once per message.
 *
 * A price row is a tariff.  cost = round(tokens * price, 6), half away
 * from zero, for a plain one (no fee, no minimum, rounded to the nearest
 * 0.000001, as every set_price row): tokens are an integer and a price is
 * a short decimal, so the cost is computed in 128-bit integers, exactly,
 * when the price's digits fit in 18; other prices (or a compiler without
 * 128-bit integers) go through numeric.  Both give the same numeric(10,6)
 * value.  Any other tariff's cost is max(per_message + tokens * price,
 * minimum_charge), rounded to a multiple of its increment: in 128-bit
 * integers too when its fee, minimum and increment have no more than six
 * decimals, else in numeric; both exact.
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
				   " per_message, minimum_charge, increment, rounding"
				   " FROM msgbilling.prices"
				   " ORDER BY model COLLATE \"C\" NULLS FIRST, effective_from");
}

/* Costs from MB_COST_LIMIT credits up do not fit a numeric(10,6). */
#define MB_COST_LIMIT_MICROS INT64CONST(10000000000)
#define MB_MAX_SCALED_DIGITS 18

/*
 * Set the price's units and scale (credits_per_token = units / 10^scale)
 * from its decimal text; false when it has more than 18 digits.  Prices
 * are finite and not negative (the table's CHECK).
 */
static bool
scale_price(MbPrice *p)
{
	char	   *text = DatumGetCString(DirectFunctionCall1(numeric_out,
														   p->credits_per_token));
	const char *c;
	int			digits = 0;
	bool		fraction = false;

	p->units = 0;
	p->scale = 0;
	for (c = text; *c; c++)
	{
		if (*c == '.')
		{
			fraction = true;
			continue;
		}
		if (*c < '0' || *c > '9' || ++digits > MB_MAX_SCALED_DIGITS)
			return false;
		p->units = p->units * 10 + (*c - '0');
		if (fraction)
			p->scale++;
	}
	return true;
}

static Datum numeric_cost_limit(void);

static bool
numeric_eq_text(Datum n, const char *text)
{
	return DatumGetBool(DirectFunctionCall2(numeric_eq, n,
											DirectFunctionCall3(numeric_in,
																CStringGetDatum(text),
																ObjectIdGetDatum(InvalidOid),
																Int32GetDatum(-1))));
}

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

/* The tariff's fee, minimum and rounding: columns 4 to 7 (NOT NULL). */
static void
load_tariff(MbPrice *p, HeapTuple tup, TupleDesc desc)
{
	bool		isnull;
	char	   *rounding = SPI_getvalue(tup, desc, 7);

	p->per_message = SPI_getbinval(tup, desc, 4, &isnull);
	p->minimum_charge = SPI_getbinval(tup, desc, 5, &isnull);
	p->increment = SPI_getbinval(tup, desc, 6, &isnull);
	p->rounding = strcmp(rounding, "up") == 0 ? MB_ROUND_UP :
		strcmp(rounding, "down") == 0 ? MB_ROUND_DOWN : MB_ROUND_NEAREST;
	p->tariff_scaled = numeric_micros(p->per_message, &p->fee_micros) &&
		numeric_micros(p->minimum_charge, &p->min_micros) &&
		numeric_micros(p->increment, &p->inc_micros);
	p->plain = p->rounding == MB_ROUND_NEAREST &&
		numeric_eq_text(p->per_message, "0") &&
		numeric_eq_text(p->minimum_charge, "0") &&
		numeric_eq_text(p->increment, "0.000001");
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

		p->model = SPI_getvalue(tt->vals[i], tt->tupdesc, 1);
		p->effective_from = DatumGetTimestampTz(SPI_getbinval(tt->vals[i],
															  tt->tupdesc, 2,
															  &isnull));
		p->credits_per_token = SPI_getbinval(tt->vals[i], tt->tupdesc, 3,
											 &isnull);
		p->too_large = DatumGetInt32(DirectFunctionCall2(numeric_cmp,
														 p->credits_per_token,
														 numeric_cost_limit())) >= 0;
		p->scaled = scale_price(p);
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

/* The cost in millionths of a credit, or -1 when it is out of range. */
static int64
scaled_cost_micros(const MbPrice *price, int64 tokens)
{
	/* tokens < 2^63 and units < 10^18: the product fits in 2^123 */
	int128		product = (int128) tokens * price->units;

	if (price->scale > 6)
	{
		int128		divisor = pow10_128(price->scale - 6);

		product = (product + divisor / 2) / divisor;
	}
	else if (product < MB_COST_LIMIT_MICROS)
		product *= pow10_128(6 - price->scale);
	return product < MB_COST_LIMIT_MICROS ? (int64) product : -1;
}

/*
 * The same for a tariff whose fee, minimum and increment are whole
 * millionths, exactly: at the scale of the price or of millionths,
 * whichever is finer, max(fee + tokens * price, minimum), then rounded to
 * the increment.  Below 10000 a price has fewer than 10 + scale digits, so
 * with tokens up to 10^15 every term stays below 10^34.
 */
static int64
scaled_tariff_micros(const MbPrice *price, int64 tokens)
{
	int			scale = Max(price->scale, 6);
	int128		to_scale = pow10_128(scale - 6);
	int128		raw = (int128) tokens * price->units * pow10_128(scale - price->scale) +
		price->fee_micros * to_scale;
	int128		increment = price->inc_micros * to_scale;
	int128		steps;
	int128		left;

	raw = Max(raw, price->min_micros * to_scale);
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

/* The cost of tokens at a tariff that is not plain, in numeric. */
static bool
tariff_cost(const MbPrice *price, int64 tokens, Datum *cost)
{
	Datum		raw;

	/* checked first: the product of an absurd price overflows numeric */
	if (price->too_large && tokens > 0)
		return false;
#ifdef HAVE_INT128
	if (price->scaled && price->tariff_scaled)
	{
		int64		micros = scaled_tariff_micros(price, tokens);

		if (micros < 0)
			return false;
		*cost = NumericGetDatum(int64_div_fast_to_numeric(micros, 6));
		return true;
	}
#endif
	raw = DirectFunctionCall2(numeric_mul,
							  NumericGetDatum(int64_to_numeric(tokens)),
							  price->credits_per_token);
	raw = DirectFunctionCall2(numeric_add, raw, price->per_message);
	if (num_cmp(raw, price->minimum_charge) < 0)
		raw = price->minimum_charge;
	*cost = round_to_increment(raw, price);
	return num_cmp(*cost, numeric_cost_limit()) < 0;
}

/*
 * The cost of tokens (0 or more) at price: false when it is too large for
 * a numeric(10,6).
 */
bool
mb_cost(const MbPrice *price, int64 tokens, Datum *cost)
{
	Datum		exact;

	if (!price->plain)
		return tariff_cost(price, tokens, cost);

#ifdef HAVE_INT128
	if (price->scaled)
	{
		int64		micros = scaled_cost_micros(price, tokens);

		if (micros < 0)
			return false;
		*cost = NumericGetDatum(int64_div_fast_to_numeric(micros, 6));
		return true;
	}
#endif
	/* checked first: the product of an absurd price overflows numeric */
	if (price->too_large && tokens > 0)
		return false;
	exact = DirectFunctionCall2(numeric_mul,
								NumericGetDatum(int64_to_numeric(tokens)),
								price->credits_per_token);
	*cost = DirectFunctionCall2(numeric_round, exact, Int32GetDatum(6));
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, *cost,
											 numeric_cost_limit())) < 0;
}
