/*
 * prices.h
 *		The versioned price list, loaded once per billing batch, and what a
 *		message costs.
 */
#ifndef MB_PRICES_H
#define MB_PRICES_H

#include "postgres.h"

#include "utils/timestamp.h"

#include "config.h"

/* How a tariff rounds a cost to a multiple of its increment. */
typedef enum MbRounding
{
	MB_ROUND_NEAREST,			/* half away from zero */
	MB_ROUND_UP,
	MB_ROUND_DOWN
} MbRounding;

/* A rate in credits per token. */
typedef struct MbRate
{
	Datum		value;			/* numeric */
	bool		too_large;		/* one token costs more than a numeric(10,6)
								 * holds */
	bool		scaled;			/* it is units / 10^scale, with no more than
								 * 18 digits: mb_cost's integer arithmetic */
	int64		units;
	int			scale;
} MbRate;

typedef struct MbPrice
{
	char	   *model;			/* NULL: the default price */
	TimestampTz effective_from;
	MbRate		rates[MB_NUM_KINDS];	/* output and cached default to input */
	/* the rest of the tariff */
	Datum		per_message;	/* numeric */
	Datum		minimum_charge; /* numeric */
	Datum		increment;		/* numeric */
	MbRounding	rounding;
	/* the three in millionths, when they have no more than six decimals */
	bool		tariff_scaled;
	int64		fee_micros;
	int64		min_micros;
	int64		inc_micros;
} MbPrice;

typedef struct MbPriceList
{
	int			count;
	MbPrice    *items;			/* by model (bytewise, NULL first), then time */
} MbPriceList;

extern MbPriceList *mb_prices_load(void);
extern const MbPrice *mb_price_at(const MbPriceList *list, const char *model,
								  TimestampTz at);
extern bool mb_cost(const MbPrice *price, const int64 *counts, Datum *cost);

#endif							/* MB_PRICES_H */
