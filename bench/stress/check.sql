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
-- columns it implies, and each failure for the reason its message has
-- (budget_exceeded for orgs with a hard budget).
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
            AND CASE WHEN m.tokens_used IS NULL THEN m.billing_error = 'invalid_tokens'
                     WHEN NOT o.has_wallet THEN m.billing_error = 'no_wallet'
                     -- budget_exceeded: only of orgs with a hard budget
                     ELSE m.billing_error = 'insufficient_credits'
                          OR (m.billing_error = 'budget_exceeded'
                              AND EXISTS (SELECT 1 FROM stress.budget_log b
                                           WHERE b.org = m.org_id AND b.hard)) END
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

-------------------------------------------------------------------------------
-- Spend control
-------------------------------------------------------------------------------

-- 11. Holds never promise more than an org has: for each hold-only org
-- (funded once, never billed), at every hold granted, the holds granted
-- and active then add up to no more than balance + overdraft (and its hard
-- budget).  A hold counts here from the clock after hold() returned until
-- its expiry or the clock before the first release() of it began: within
-- the time it really counted, so an excess is a real one.  Also: those
-- orgs' wallets and ledgers are as funded, they have no messages,
-- available() right after each call was never below zero, a new hold has
-- the amount asked, and a hold id belongs to one org.
SELECT * FROM pg_temp.inv('holds_within_wallet', $q$
    WITH c AS (SELECT DISTINCT ON (hold_id) hold_id, org, amount,
                      coalesce(held_amount, amount) AS held, granted_at, expires_at
                 FROM stress.hold_log
                WHERE hold_id IS NOT NULL AND org IN (SELECT org FROM stress.orgs WHERE hold_only)
                ORDER BY hold_id, id),
         iv AS (SELECT c.*, least(c.expires_at,
                                  (SELECT min(r.started_at) FROM stress.release_log r
                                    WHERE r.hold_id = c.hold_id)) AS ends
                  FROM c),
         ev AS (SELECT org, hold_id, granted_at AS ts, 1 AS ord, held AS delta
                  FROM iv WHERE ends > granted_at
                UNION ALL
                SELECT org, hold_id, ends, 0, -held FROM iv WHERE ends > granted_at),
         run AS (SELECT ev.*, sum(delta) OVER (PARTITION BY org ORDER BY ts, ord) AS active,
                        count(*) FILTER (WHERE ord = 1) OVER (PARTITION BY org ORDER BY ts, ord)
                          - count(*) FILTER (WHERE ord = 0) OVER (PARTITION BY org ORDER BY ts, ord) AS n
                   FROM ev)
    SELECT format('org %s: when hold %s was granted (%s), %s holds granted and active add up to %s, more than its %s',
                  r.org, r.hold_id, r.ts, r.n, r.active, l.hold_limit)
      FROM run r JOIN stress.hold_limit l ON l.org = r.org
     WHERE r.ord = 1 AND r.active > l.hold_limit
    UNION ALL
    SELECT format('hold-only org %s: balance %s, overdraft %s, %s ledger entries (funded with %s, %s)',
                  o.org, c.balance, c.overdraft_limit,
                  (SELECT count(*) FROM msgbilling.ledger l WHERE l.org_id = o.org),
                  o.start_balance, o.overdraft)
      FROM stress.orgs o LEFT JOIN msgbilling.credits c ON c.org_id = o.org
     WHERE o.hold_only
       AND (c.balance IS DISTINCT FROM o.start_balance
            OR c.overdraft_limit IS DISTINCT FROM o.overdraft
            OR (SELECT count(*) FROM msgbilling.ledger l WHERE l.org_id = o.org) <> 1)
    UNION ALL
    SELECT format('hold-only org %s has %s messages', org_id, count(*))
      FROM messages WHERE org_id IN (SELECT org FROM stress.orgs WHERE hold_only) GROUP BY org_id
    UNION ALL
    SELECT format('hold log %s: available(%s) was %s right after hold() (%s)',
                  id, org, available_after, coalesce(hold_id::text, 'refused'))
      FROM stress.hold_log WHERE available_after < 0
    UNION ALL
    SELECT format('hold %s (org %s): asked for %s, holds %s', hold_id, org, amount, held_amount)
      FROM (SELECT DISTINCT ON (hold_id) * FROM stress.hold_log
             WHERE hold_id IS NOT NULL ORDER BY hold_id, id) c
     WHERE held_amount IS DISTINCT FROM amount
    UNION ALL
    SELECT format('hold id %s returned for orgs %s', hold_id, string_agg(DISTINCT org::text, ','))
      FROM stress.hold_log WHERE hold_id IS NOT NULL
     GROUP BY hold_id HAVING count(DISTINCT org) > 1
$q$);

-- 12. Billing a message deletes the hold it names, with the same org: no
-- hold is left that a billed message of its org names.
SELECT * FROM pg_temp.inv('billed_holds_released', $q$
    SELECT format('hold %s (org %s, %s, expires %s) is still there, but message %s of the org is %s',
                  h.id, h.org_id, h.amount, h.expires_at, m.id, m.billing_status)
      FROM msgbilling.holds h JOIN messages m ON m.hold_id = h.id AND m.org_id = h.org_id
     WHERE m.billing_status IN ('charged', 'refunded', 'failed', 'no_charge')
$q$);

-- 13. And nothing else takes a hold away: every hold granted that is gone
-- was released (a release() that returned true), or expired before now,
-- or is named by a billed message of its own org; every hold there is was
-- granted by a logged hold() call.
SELECT * FROM pg_temp.inv('holds_gone_only_by_rule', $q$
    WITH c AS (SELECT DISTINCT ON (hold_id) hold_id, org, amount, expires_at, purpose
                 FROM stress.hold_log WHERE hold_id IS NOT NULL ORDER BY hold_id, id)
    SELECT format('hold %s (org %s, %s, %s, expires %s) is gone: not released, not expired, no billed message of its org names it%s',
                  c.hold_id, c.org, c.amount, c.purpose, c.expires_at,
                  coalesce(' (named by messages ' ||
                           (SELECT string_agg(m.id || ' of org ' || m.org_id || ' ' || m.billing_status, ', ')
                              FROM messages m WHERE m.hold_id = c.hold_id) || ')', ''))
      FROM c
     WHERE NOT EXISTS (SELECT 1 FROM msgbilling.holds h WHERE h.id = c.hold_id)
       AND c.expires_at >= clock_timestamp()
       AND NOT EXISTS (SELECT 1 FROM stress.release_log r WHERE r.hold_id = c.hold_id AND r.result)
       AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.hold_id = c.hold_id
                          AND m.org_id = c.org AND m.billing_status <> 'pending')
    UNION ALL
    SELECT format('hold %s (org %s) was never granted by a logged call', h.id, h.org_id)
      FROM msgbilling.holds h
     WHERE NOT EXISTS (SELECT 1 FROM stress.hold_log l WHERE l.hold_id = h.id)
$q$);

-- 14. Every low-balance crossing alerted exactly once.  Thresholds were set
-- in the setup only (but those of orgs 152 and 159, left out): per org the
-- thresholds in force (its own, else the defaults), the 'low' of each that
-- its balance was below when set, and per ledger entry since then each
-- threshold its balance crossed (from >= to <: low, back: recovered), with
-- the balance after it; compared with msgbilling.alerts row for row.  Per
-- org and threshold the alerts alternate, starting with 'low'.
SELECT * FROM pg_temp.inv('alerts_exact', $q$
    WITH r AS (SELECT c.org_id AS org, a.threshold FROM msgbilling.credits c
                 JOIN msgbilling.alert_rules a ON a.org_id = c.org_id
               UNION ALL
               SELECT c.org_id, a.threshold FROM msgbilling.credits c
                 JOIN msgbilling.alert_rules a ON a.org_id IS NULL
                WHERE NOT EXISTS (SELECT 1 FROM msgbilling.alert_rules o WHERE o.org_id = c.org_id)),
         rules AS (SELECT * FROM r WHERE org NOT IN (SELECT org FROM stress.alert_churn_orgs)),
         x AS (SELECT r.org, r.threshold,
                      CASE WHEN l.balance_after < r.threshold THEN 'low' ELSE 'recovered' END AS kind,
                      l.balance_after AS balance
                 FROM rules r JOIN msgbilling.ledger l ON l.org_id = r.org
                WHERE l.id > (SELECT max_ledger_id FROM stress.alert_mark) AND l.amount <> 0
                  AND ((l.balance_after - l.amount) >= r.threshold) <> (l.balance_after >= r.threshold)
               UNION ALL
               SELECT r.org, r.threshold, 'low', b.balance
                 FROM rules r JOIN stress.balance_at_rules b ON b.org_id = r.org
                WHERE b.balance < r.threshold),
         e AS (SELECT org, threshold, kind, balance, count(*) AS n FROM x GROUP BY 1, 2, 3, 4),
         a AS (SELECT org_id AS org, threshold, kind, balance, count(*) AS n FROM msgbilling.alerts
                WHERE kind IN ('low', 'recovered')
                  AND org_id NOT IN (SELECT org FROM stress.alert_churn_orgs)
                GROUP BY 1, 2, 3, 4)
    SELECT format('org %s, threshold %s, %s at balance %s: %s expected, %s alerted',
                  org, threshold, kind, balance, coalesce(e.n, 0), coalesce(a.n, 0))
      FROM e FULL JOIN a USING (org, threshold, kind, balance)
     WHERE coalesce(e.n, 0) <> coalesce(a.n, 0)
    UNION ALL
    SELECT format('org %s, threshold %s: alert %s is %s after %s', org_id, threshold, id, kind,
                  coalesce(prev, 'none'))
      FROM (SELECT a.*, lag(kind) OVER (PARTITION BY org_id, threshold ORDER BY id) AS prev
              FROM msgbilling.alerts a
             WHERE kind IN ('low', 'recovered')
               AND org_id NOT IN (SELECT org FROM stress.alert_churn_orgs)) t
     WHERE kind = coalesce(prev, 'recovered')
$q$);

-- 15. Soft budgets alerted once per period: replaying each soft budget's
-- calls (budget_log, in order) and its org's charge and refund entries
-- (set_budget holds the wallet: an entry up to the call's max_ledger_id
-- came before it), a 'budget' alert is due when the period's net spend
-- reaches the amount and none went out for that period yet (a new amount
-- in the same period keeps it; a removed budget forgets it).  Compared
-- with msgbilling.alerts (hard budgets never alert).
CREATE OR REPLACE FUNCTION pg_temp.budget_alerts_due()
RETURNS TABLE (org integer, threshold numeric, n bigint)
LANGUAGE plpgsql AS $$
DECLARE
    b record;
    ev record;
    amt numeric;
    alerted timestamptz;
    cur timestamptz;
    spent numeric;
    ps timestamptz;
BEGIN
    CREATE TEMP TABLE due (org integer, threshold numeric) ON COMMIT DROP;
    FOR b IN SELECT DISTINCT l.org, l.period, l.tz FROM stress.budget_log l WHERE NOT l.hard LOOP
        amt := NULL; alerted := NULL; cur := NULL; spent := 0;
        FOR ev IN
            SELECT 0 AS what, x.id AS pos, 0 AS sub, -x.amount AS delta, x.created_at,
                   NULL::numeric AS amount, NULL::timestamptz AS period_start,
                   NULL::numeric AS spent_after
              FROM msgbilling.ledger x
             WHERE x.org_id = b.org AND x.kind IN ('charge', 'refund')
            UNION ALL
            SELECT 1, coalesce(s.max_ledger_id, 0), s.id, 0, s.at, s.amount, s.period_start,
                   s.spent_after
              FROM stress.budget_log s WHERE s.org = b.org AND s.period = b.period
             ORDER BY 2, 1, 3
        LOOP
            IF ev.what = 0 THEN
                ps := date_trunc(b.period, ev.created_at, b.tz);
                IF cur IS DISTINCT FROM ps THEN
                    spent := 0; cur := ps;
                END IF;
                spent := spent + ev.delta;
                IF amt IS NOT NULL AND spent >= amt AND alerted IS DISTINCT FROM ps THEN
                    INSERT INTO due VALUES (b.org, amt);
                    alerted := ps;
                END IF;
            ELSIF ev.amount IS NULL THEN
                amt := NULL; alerted := NULL;
            ELSE
                IF amt IS NULL OR alerted IS DISTINCT FROM ev.period_start THEN
                    alerted := NULL;
                END IF;
                amt := ev.amount;
                IF ev.spent_after >= amt AND alerted IS DISTINCT FROM ev.period_start THEN
                    INSERT INTO due VALUES (b.org, amt);
                    alerted := ev.period_start;
                END IF;
            END IF;
        END LOOP;
    END LOOP;
    RETURN QUERY SELECT d.org, d.threshold, count(*) FROM due d GROUP BY 1, 2;
END;
$$;
SELECT * FROM pg_temp.inv('budget_alerts_exact', $q$
    SELECT format('org %s, budget %s: %s budget alerts due, %s sent',
                  org, threshold, coalesce(e.n, 0), coalesce(a.n, 0))
      FROM pg_temp.budget_alerts_due() e
      FULL JOIN (SELECT org_id AS org, threshold, count(*) AS n FROM msgbilling.alerts
                  WHERE kind = 'budget' GROUP BY 1, 2) a USING (org, threshold)
     WHERE coalesce(e.n, 0) <> coalesce(a.n, 0)
$q$);

-- 16. Hard budgets hold: no charge entry takes its org's net spend
-- (charges − refunds in the ledger) in its period past the amount of the
-- budget in force then (the last set_budget call before it: its
-- max_ledger_id is below the entry's id); a lowered budget may leave the
-- spend above it, but then no charge comes until refunds bring it back.
-- For the budgets never changed (11, 17, 23, 29's week, 304), also the
-- spend budget_status() shows now is within the amount.
SELECT * FROM pg_temp.inv('hard_budgets_respected', $q$
    WITH bo AS (SELECT DISTINCT org, period, tz FROM stress.budget_log WHERE hard),
         x AS (SELECT l.id, l.org_id, l.kind, l.amount, bo.period,
                      date_trunc(bo.period, l.created_at, bo.tz) AS ps,
                      sum(-l.amount) OVER (PARTITION BY l.org_id, bo.period,
                                                        date_trunc(bo.period, l.created_at, bo.tz)
                                           ORDER BY l.id) AS cum
                 FROM msgbilling.ledger l JOIN bo ON bo.org = l.org_id
                WHERE l.kind IN ('charge', 'refund'))
    SELECT format('org %s, %s budget %s (set by call %s): charge entry %s (%s) took the period''s net spend to %s',
                  x.org_id, x.period, b.amount, b.id, x.id, -x.amount, x.cum)
      FROM x CROSS JOIN LATERAL (
               SELECT s.id, s.amount FROM stress.budget_log s
                WHERE s.org = x.org_id AND s.period = x.period
                  AND coalesce(s.max_ledger_id, 0) < x.id
                ORDER BY s.id DESC LIMIT 1) b
     WHERE x.kind = 'charge' AND b.amount IS NOT NULL AND x.cum > b.amount
    UNION ALL
    SELECT format('org %s: %s budget_status from %s: spent %s of %s', o.org, o.period,
                  s.period_start, s.spent, s.amount)
      FROM stress.budget_orgs o, msgbilling.budget_status(o.org) s
     WHERE o.hard AND NOT o.changing AND s.hard AND s.spent > s.amount
       AND s.period_start = date_trunc(o.period, now(), o.tz)
       AND s.period_end = msgbilling._period_end(o.period, o.tz, now())
$q$);

-- 17. msgbilling.budgets.spent is the ledger's net charges in its period
-- (from period_start to the period's end), and was so right after every
-- set_budget call; the budgets are the last ones set, amount and all.
SELECT * FROM pg_temp.inv('budget_spent_matches_ledger', $q$
    SELECT format('org %s, %s budget from %s: spent %s, ledger %s', b.org_id, b.period,
                  b.period_start, b.spent, l.s)
      FROM msgbilling.budgets b CROSS JOIN LATERAL (
               SELECT coalesce(-sum(x.amount), 0) AS s FROM msgbilling.ledger x
                WHERE x.org_id = b.org_id AND x.kind IN ('charge', 'refund')
                  AND x.created_at >= b.period_start
                  AND x.created_at < msgbilling._period_end(b.period, b.time_zone, b.period_start)) l
     WHERE b.spent <> l.s
    UNION ALL
    SELECT format('set_budget call %s (org %s, %s, %s): spent %s after it, ledger %s',
                  s.id, s.org, s.period, s.amount, s.spent_after, l.s)
      FROM stress.budget_log s CROSS JOIN LATERAL (
               SELECT coalesce(-sum(x.amount), 0) AS s FROM msgbilling.ledger x
                WHERE x.org_id = s.org AND x.kind IN ('charge', 'refund')
                  AND x.id <= coalesce(s.max_ledger_id, 0)
                  AND x.created_at >= s.period_start) l
     WHERE s.amount IS NOT NULL AND s.spent_after IS DISTINCT FROM l.s
    UNION ALL
    SELECT format('org %s, %s: last set %s (hard %s), budget now %s (hard %s)',
                  coalesce(s.org, b.org_id), coalesce(s.period, b.period),
                  s.amount, s.hard, b.amount, b.hard)
      FROM (SELECT DISTINCT ON (org, period) * FROM stress.budget_log
             ORDER BY org, period, id DESC) s
      FULL JOIN msgbilling.budgets b ON b.org_id = s.org AND b.period = s.period
     WHERE s.amount IS DISTINCT FROM b.amount
        OR (s.amount IS NOT NULL AND s.hard IS DISTINCT FROM b.hard)
$q$);

-- 18. budget_exceeded failures are real: an org with such failures has one
-- that costs more than its hard budgets have left now (a budget change,
-- a top-up, a refund or a new period makes them pending again).
SELECT * FROM pg_temp.inv('budget_failures_real', $q$
    SELECT format('org %s: %s budget_exceeded failures (e.g. message %s), the dearest costs %s, but its hard budgets have %s left',
                  org_id, n, first_id, max_cost, coalesce(left_::text, 'no limit'))
      FROM stress.budget_failures_covered
$q$);
