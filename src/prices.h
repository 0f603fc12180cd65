/*
 * prices.h
 *		The versioned price list, loaded once per billing batch, and what a
 *		message costs.
 */
#ifndef MB_PRICES_H
#define MB_PRICES_H

#include "postgres.h"

#include "utils/timestamp.h"

typedef struct MbPrice
{
	char	   *model;			/* NULL: the default price */
	TimestampTz effective_from;
	Datum		credits_per_token;	/* numeric */
	bool		too_large;		/* a message of one token or more costs
								 * more than a numeric(10,6) holds */
	bool		scaled;			/* it is units / 10^scale, both small enough
								 * for mb_cost's integer arithmetic */
	int64		units;
	int			scale;
} MbPrice;

typedef struct MbPriceList
{
	int			count;
	MbPrice    *items;			/* by model (bytewise, NULL first), then time */
} MbPriceList;

extern MbPriceList *mb_prices_load(void);
extern const MbPrice *mb_price_at(const MbPriceList *list, const char *model,
								  TimestampTz at);
extern bool mb_cost(const MbPrice *price, int64 tokens, Datum *cost);

#endif							/* MB_PRICES_H */
