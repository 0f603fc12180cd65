/*
 * prices.c
 *		Load msgbilling.prices and find the price in effect for a message.
 *
 * Prices are few and read-mostly, so each billing batch loads them all
 * into memory and prices every message there, instead of joining the
 * price table once per message.
 */
#include "postgres.h"

#include "executor/spi.h"

#include "config.h"
#include "prices.h"

static char *
prices_sql(const MbConfig *cfg)
{
	return pstrdup("SELECT model, effective_from, credits_per_token"
				   " FROM msgbilling.prices"
				   " ORDER BY model COLLATE \"C\" NULLS FIRST, effective_from");
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

/* The latest price of exactly this model in effect at time at. */
static bool
model_price_at(const MbPriceList *list, const char *model, TimestampTz at,
			   Datum *price)
{
	int			i = first_of_model(list, model);
	bool		found = false;

	for (; i >= 0 && i < list->count &&
		 model_cmp(list->items[i].model, model) == 0; i++)
	{
		if (list->items[i].effective_from > at)
			break;
		*price = list->items[i].credits_per_token;
		found = true;
	}
	return found;
}

/*
 * The price for a message of model at time at: the model's own price in
 * effect then, else the default price in effect then.
 */
bool
mb_price_at(const MbPriceList *list, const char *model, TimestampTz at,
			Datum *price)
{
	if (model != NULL && model_price_at(list, model, at, price))
		return true;
	return model_price_at(list, NULL, at, price);
}
