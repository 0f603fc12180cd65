-- (a)/(b) the physical-limit reference: one set-based statement that does
-- the writes billing does (status, cost and charged_at of every message,
-- one wallet update and one ledger entry per org) with no checks at all.
-- :prices, :credits and :ledger name the schema's price, wallet and ledger
-- tables; :price_order orders a model's prices newest first.
WITH p AS (
    SELECT m.model, COALESCE(pm.credits_per_token, pd.credits_per_token) AS price
      FROM (SELECT DISTINCT model FROM messages) m
      LEFT JOIN (SELECT DISTINCT ON (model) model, credits_per_token FROM :prices
                  WHERE model IS NOT NULL ORDER BY model, :price_order) pm
        ON pm.model = m.model
     CROSS JOIN (SELECT credits_per_token FROM :prices WHERE model IS NULL
                  ORDER BY :price_order LIMIT 1) pd
), c AS (
    UPDATE messages m
       SET billing_status = 'charged',
           cost_credits = round(m.tokens_used * p.price, 6),
           charged_at = now()
      FROM p
     WHERE p.model = m.model AND m.billing_status = 'pending'
    RETURNING m.org_id, m.cost_credits
), s AS (
    SELECT org_id, sum(cost_credits) AS total, count(*) AS n FROM c GROUP BY org_id
), w AS (
    UPDATE :credits cr SET balance = cr.balance - s.total
      FROM s WHERE cr.org_id = s.org_id
    RETURNING cr.org_id, cr.balance, s.total, s.n
)
INSERT INTO :ledger (org_id, kind, amount, balance_after, message_count)
SELECT org_id, 'charge', -total, balance, n FROM w;
