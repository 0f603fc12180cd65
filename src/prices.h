/*
 * prices.h
 *		The versioned price list, loaded once per billing batch.
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
} MbPrice;

typedef struct MbPriceList
{
	int			count;
	MbPrice    *items;			/* by model (bytewise, NULL first), then time */
} MbPriceList;

extern MbPriceList *mb_prices_load(void);
extern bool mb_price_at(const MbPriceList *list, const char *model,
						TimestampTz at, Datum *price);

#endif							/* MB_PRICES_H */
