-- (b) for a tariffed table: the set-based reference statement of
-- set_based.sql, computing the same tariff as msgbilling
-- (max(fee + the three counts at their rates, minimum), rounded up to the
-- increment), on msgbilling's schema, with no checks at all.
WITH t AS (
    SELECT DISTINCT ON (model) model, credits_per_token AS rin,
           COALESCE(output_per_token, credits_per_token) AS rout,
           COALESCE(cached_per_token, credits_per_token) AS rcached,
           per_message, minimum_charge, increment
      FROM msgbilling.prices ORDER BY model, effective_from DESC
), p AS (
    SELECT m.model, COALESCE(x.rin, d.rin) AS rin, COALESCE(x.rout, d.rout) AS rout,
           COALESCE(x.rcached, d.rcached) AS rcached,
           COALESCE(x.per_message, d.per_message) AS fee,
           COALESCE(x.minimum_charge, d.minimum_charge) AS minimum,
           COALESCE(x.increment, d.increment) AS inc
      FROM (SELECT DISTINCT model FROM messages) m
      LEFT JOIN t x ON x.model = m.model
     CROSS JOIN (SELECT * FROM t WHERE model IS NULL) d
), c AS (
    UPDATE messages m
       SET billing_status = 'charged',
           cost_credits = ceil(greatest(p.fee + m.input_tokens * p.rin
                                        + m.output_tokens * p.rout
                                        + m.cached_tokens * p.rcached, p.minimum) / p.inc)
                          * p.inc,
           charged_at = now()
      FROM p
     WHERE p.model = m.model AND m.billing_status = 'pending'
    RETURNING m.org_id, m.cost_credits
), s AS (
    SELECT org_id, sum(cost_credits) AS total, count(*) AS n FROM c GROUP BY org_id
), w AS (
    UPDATE msgbilling.credits cr SET balance = cr.balance - s.total
      FROM s WHERE cr.org_id = s.org_id
    RETURNING cr.org_id, cr.balance, s.total, s.n
)
INSERT INTO msgbilling.ledger (org_id, kind, amount, balance_after, message_count)
SELECT org_id, 'charge', -total, balance, n FROM w;
