-- check.sql — the end state's invariants, after the run and a final
-- CALL msgbilling.drain().  One line per invariant: name|t or f|detail
-- (the first violations found).  run.sh prints them as PASS/FAIL.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
\pset format unaligned
\pset fieldsep '|'
\pset tuples_only on

-- Run a query that returns one text row per violation; report the count
-- and the first five.
CREATE OR REPLACE FUNCTION pg_temp.inv(name text, violations text)
RETURNS TABLE (inv text, ok boolean, detail text)
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    first text;
BEGIN
    EXECUTE format('SELECT count(*), string_agg(v, ''; '') FILTER (WHERE rn <= 5)'
                   ' FROM (SELECT v, row_number() OVER () AS rn FROM (%s) x(v)) y',
                   violations) INTO n, first;
    RETURN QUERY SELECT name, n = 0,
        CASE WHEN n = 0 THEN '' ELSE n || ' violation(s): ' || first END;
END;
$$;

-- 1. msgbilling's own checks.
SELECT * FROM pg_temp.inv('verify_ok', $q$
    SELECT check_name || ': ' || coalesce(detail, '') FROM msgbilling.verify()
     WHERE NOT ok
$q$);

-- 2. No message charged twice: a message has one billing_ledger_id, and
-- each charge entry is exactly the messages pointing to it (count, amount,
-- org); the entries' message counts add up to the charged and refunded
-- messages, and per org the charges add up to those messages' costs.
SELECT * FROM pg_temp.inv('no_double_charge', $q$
    SELECT format('entry %s (org %s): message_count %s, amount %s; messages pointing to it: %s, costs %s, orgs %s..%s',
                  l.id, l.org_id, l.message_count, -l.amount,
                  coalesce(m.n, 0), coalesce(m.s, 0), m.omin, m.omax)
      FROM msgbilling.ledger l
      LEFT JOIN (SELECT billing_ledger_id AS id, count(*) AS n,
                        sum(cost_credits) AS s, min(org_id) AS omin,
                        max(org_id) AS omax
                   FROM messages WHERE billing_ledger_id IS NOT NULL
                  GROUP BY 1) m ON m.id = l.id
     WHERE l.kind = 'charge'
       AND (l.message_count <> coalesce(m.n, 0) OR -l.amount <> coalesce(m.s, 0)
            OR m.omin <> l.org_id OR m.omax <> l.org_id)
    UNION ALL
    SELECT format('message %s points to ledger entry %s, which is %s',
                  m.id, m.billing_ledger_id, coalesce(l.kind, 'missing'))
      FROM messages m LEFT JOIN msgbilling.ledger l ON l.id = m.billing_ledger_id
     WHERE m.billing_ledger_id IS NOT NULL AND (l.id IS NULL OR l.kind <> 'charge')
    UNION ALL
    SELECT format('charge entries count %s messages, but %s are charged or refunded', a, b)
      FROM (SELECT (SELECT coalesce(sum(message_count), 0) FROM msgbilling.ledger
                     WHERE kind = 'charge') AS a,
                   (SELECT count(*) FROM messages
                     WHERE billing_status IN ('charged', 'refunded')) AS b) t
     WHERE a <> b
    UNION ALL
    SELECT format('org %s: charge entries %s, costs of its charged and refunded messages %s',
                  coalesce(l.org, m.org), coalesce(l.s, 0), coalesce(m.s, 0))
      FROM (SELECT org_id AS org, -sum(amount) AS s FROM msgbilling.ledger
             WHERE kind = 'charge' GROUP BY 1) l
      FULL JOIN (SELECT org_id AS org, sum(cost_credits) AS s FROM messages
                  WHERE billing_status IN ('charged', 'refunded') GROUP BY 1) m
        ON m.org = l.org
     WHERE coalesce(l.s, 0) <> coalesce(m.s, 0)
$q$);

-- 3. Every org's balance = its ledger sum = opening balance + the top-ups
-- that credited + refunds − the costs of its charged and refunded
-- messages; orgs without a wallet still have none and no ledger entry.
SELECT * FROM pg_temp.inv('balances_add_up', $q$
    WITH topups AS (SELECT org, sum(amount) AS s FROM stress.log
                     WHERE kind = 'top_up' AND credited GROUP BY 1),
         refunds AS (SELECT org, sum(amount) AS s FROM stress.log
                      WHERE kind = 'refund' GROUP BY 1),
         charges AS (SELECT org_id AS org, sum(cost_credits) AS s FROM messages
                      WHERE billing_status IN ('charged', 'refunded') GROUP BY 1),
         ledger AS (SELECT org_id AS org, sum(amount) AS s, count(*) AS n
                      FROM msgbilling.ledger GROUP BY 1),
         e AS (SELECT o.org, o.has_wallet, c.balance,
                      coalesce(l.s, 0) AS ledger_sum, coalesce(l.n, 0) AS n,
                      o.start_balance + coalesce(t.s, 0) + coalesce(r.s, 0)
                          - coalesce(ch.s, 0) AS expected,
                      c.org_id IS NOT NULL AS wallet
                 FROM stress.orgs o
                 LEFT JOIN msgbilling.credits c ON c.org_id = o.org
                 LEFT JOIN ledger l ON l.org = o.org
                 LEFT JOIN topups t ON t.org = o.org
                 LEFT JOIN refunds r ON r.org = o.org
                 LEFT JOIN charges ch ON ch.org = o.org)
    SELECT format('org %s: balance %s, ledger sum %s, expected %s',
                  org, balance, ledger_sum, expected)
      FROM e WHERE has_wallet
       AND (balance IS DISTINCT FROM expected OR ledger_sum IS DISTINCT FROM expected)
    UNION ALL
    SELECT format('org %s has no wallet in the setup but has one now (%s) or ledger entries (%s)',
                  org, balance, n)
      FROM e WHERE NOT has_wallet AND (wallet OR n > 0)
    UNION ALL
    SELECT format('wallet of unknown org %s', c.org_id) FROM msgbilling.credits c
     WHERE NOT EXISTS (SELECT 1 FROM stress.orgs o WHERE o.org = c.org_id)
$q$);

-- 4. Top-ups are idempotent: every key that was used credited exactly
-- once (one call wrote its ledger entry, the others were replays), with
-- its org and amount; unkeyed top-ups each wrote one entry.
SELECT * FROM pg_temp.inv('top_ups_idempotent', $q$
    SELECT format('key %s: %s calls, %s credited', key, count(*),
                  count(*) FILTER (WHERE credited))
      FROM stress.log WHERE kind = 'top_up' AND key IS NOT NULL
     GROUP BY key HAVING count(*) FILTER (WHERE credited) <> 1
    UNION ALL
    SELECT format('key %s: %s ledger entries (orgs %s, amounts %s)', k.key,
                  count(l.id), string_agg(l.org_id::text, ','),
                  string_agg(l.amount::text, ','))
      FROM (SELECT DISTINCT key, org, amount FROM stress.log
             WHERE kind = 'top_up' AND key IS NOT NULL) k
      LEFT JOIN msgbilling.ledger l ON l.idempotency_key = k.key
     GROUP BY k.key, k.org, k.amount
    HAVING count(l.id) <> 1 OR bool_or(l.kind <> 'top_up' OR l.org_id <> k.org
                                       OR l.amount <> k.amount)
    UNION ALL
    SELECT format('ledger entry %s has key %s, which no call used', l.id, l.idempotency_key)
      FROM msgbilling.ledger l
     WHERE l.idempotency_key IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM stress.log s WHERE s.key = l.idempotency_key)
    UNION ALL
    SELECT format('%s unkeyed top-up entries in the ledger, %s opening balances + %s unkeyed calls',
                  a, b, c)
      FROM (SELECT (SELECT count(*) FROM msgbilling.ledger
                     WHERE kind = 'top_up' AND idempotency_key IS NULL) AS a,
                   (SELECT count(*) FROM stress.orgs WHERE start_balance > 0) AS b,
                   (SELECT count(*) FROM stress.log
                     WHERE kind = 'top_up' AND key IS NULL) AS c) t
     WHERE a <> b + c
$q$);

-- 5. Refunds: each refunded message was refunded by exactly one call that
-- succeeded, has exactly one refund entry in its org's ledger, and got
-- its cost back.
SELECT * FROM pg_temp.inv('refunds_once', $q$
    SELECT format('message %s (%s): %s successful refund calls, %s ledger refund entries (amounts %s), cost %s',
                  coalesce(m.id, s.message_id, l.mid), m.billing_status,
                  coalesce(s.n, 0), coalesce(l.n, 0), l.amounts, m.cost_credits)
      FROM (SELECT id, org_id, billing_status, cost_credits FROM messages
             WHERE billing_status = 'refunded') m
      FULL JOIN (SELECT message_id, count(*) AS n, sum(amount) AS amount,
                        min(org) AS org
                   FROM stress.log WHERE kind = 'refund' GROUP BY 1) s
        ON s.message_id = m.id
      FULL JOIN (SELECT message_id::bigint AS mid, count(*) AS n,
                        sum(amount) AS amount, min(org_id) AS org,
                        string_agg(amount::text, ',') AS amounts
                   FROM msgbilling.ledger WHERE kind = 'refund' GROUP BY 1) l
        ON l.mid = coalesce(m.id, s.message_id)
     WHERE m.id IS NULL OR s.n IS DISTINCT FROM 1 OR l.n IS DISTINCT FROM 1
        OR l.amount IS DISTINCT FROM m.cost_credits
        OR s.amount IS DISTINCT FROM m.cost_credits
        OR l.org IS DISTINCT FROM m.org_id OR s.org IS DISTINCT FROM m.org_id
$q$);

-- 6. Every charged or refunded message cost round(tokens × price, 6) at
-- the price in effect at its creation: its model's, else the default.
SELECT * FROM pg_temp.inv('costs_priced', $q$
    SELECT format('message %s (%s, %s tokens, created %s): cost %s, expected %s',
                  m.id, coalesce(m.model, 'no model'), m.tokens_used,
                  m.created_at, m.cost_credits, round(m.tokens_used * p.price, 6))
      FROM messages m JOIN stress.message_price p ON p.id = m.id
     WHERE m.billing_status IN ('charged', 'refunded')
       AND m.cost_credits IS DISTINCT FROM round(m.tokens_used * p.price, 6)
$q$);

-- 7. No message in an unknown state: only known statuses, each with the
-- columns it implies, and each failure for the reason its message has.
SELECT * FROM pg_temp.inv('no_unknown_state', $q$
    SELECT format('message %s: status %s, cost %s, charged_at %s, ledger %s, error %s, tokens %s, org %s (wallet %s)',
                  m.id, m.billing_status, m.cost_credits, m.charged_at,
                  m.billing_ledger_id, m.billing_error, m.tokens_used,
                  m.org_id, o.has_wallet)
      FROM messages m LEFT JOIN stress.orgs o ON o.org = m.org_id
     WHERE NOT CASE m.billing_status
        WHEN 'charged' THEN m.cost_credits IS NOT NULL AND m.charged_at IS NOT NULL
            AND m.billing_ledger_id IS NOT NULL AND m.billing_error IS NULL
            AND m.tokens_used IS NOT NULL AND o.has_wallet
        WHEN 'refunded' THEN m.cost_credits IS NOT NULL AND m.charged_at IS NOT NULL
            AND m.billing_ledger_id IS NOT NULL AND m.billing_error IS NULL
            AND o.has_wallet
        WHEN 'failed' THEN m.cost_credits IS NULL AND m.charged_at IS NULL
            AND m.billing_ledger_id IS NULL
            AND m.billing_error = CASE WHEN m.tokens_used IS NULL THEN 'invalid_tokens'
                                       WHEN NOT o.has_wallet THEN 'no_wallet'
                                       ELSE 'insufficient_credits' END
        WHEN 'pending' THEN m.cost_credits IS NULL AND m.charged_at IS NULL
            AND m.billing_ledger_id IS NULL AND m.billing_error IS NULL
        ELSE false END IS TRUE
$q$);

-- 8. Billing never overdraws: no wallet, and no charge entry's balance,
-- below minus the org's overdraft limit.
SELECT * FROM pg_temp.inv('overdraft_respected', $q$
    SELECT format('org %s: balance %s, overdraft limit %s', org_id, balance, overdraft_limit)
      FROM msgbilling.credits WHERE balance < -overdraft_limit
    UNION ALL
    SELECT format('charge entry %s of org %s: balance after %s, overdraft limit %s',
                  l.id, l.org_id, l.balance_after, c.overdraft_limit)
      FROM msgbilling.ledger l JOIN msgbilling.credits c ON c.org_id = l.org_id
     WHERE l.kind = 'charge' AND l.balance_after < -c.overdraft_limit
$q$);

-- 9. insufficient_credits failures are real: an org with such failures
-- has at least one among them that does not fit its balance + overdraft
-- now (its wallet has not changed since, or they would be pending again).
SELECT * FROM pg_temp.inv('insufficient_failures_real', $q$
    SELECT format('org %s: %s insufficient_credits failures (e.g. message %s), the dearest costs %s, but balance %s + overdraft %s covers it',
                  org_id, n, first_id, max_cost, balance, overdraft_limit)
      FROM stress.unpaid_but_covered
$q$);

-- 10. The final drain left nothing pending.
SELECT * FROM pg_temp.inv('drain_leaves_no_backlog', $q$
    SELECT format('backlog() = %s, stats() pending = %s', b, p)
      FROM (SELECT msgbilling.backlog() AS b,
                   (SELECT pending FROM msgbilling.stats()) AS p) t
     WHERE b IS DISTINCT FROM 0 OR p IS DISTINCT FROM 0
$q$);
