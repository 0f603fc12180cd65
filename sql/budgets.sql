--
-- budgets.sql: period budgets, hard and soft.
--
-- uuid message keys and text orgs.  A hard budget fails what would go past
-- it with budget_exceeded, in order, refuses holds beyond what is left,
-- and lets its failures through again when it changes or its period ends.
-- A soft one alerts once per period.
--
CREATE EXTENSION msgbilling;
\set VERBOSITY default
\set SHOW_CONTEXT never
SET timezone = 'UTC';

CREATE TABLE messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq bigserial,
    org_id text NOT NULL,
    tokens_used integer,
    -- one message after another, also within one INSERT: billing order
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
SELECT msgbilling.attach('messages', created_column => 'created_at');
SELECT msgbilling.set_price(NULL, 0.01, '2020-01-01') > 0 AS priced;
SELECT msgbilling.top_up('acme', 100), msgbilling.top_up('soft', 100);

-- the periods: a calendar day, an ISO week from Monday, a calendar month,
-- in the budget's time zone
SELECT p, msgbilling._period_start(p, 'UTC', '2026-03-04 23:30+00') AS utc,
       msgbilling._period_start(p, 'America/Sao_Paulo', '2026-03-04 23:30+00') AS sao_paulo,
       msgbilling._period_end(p, 'America/Sao_Paulo', '2026-03-04 23:30+00') AS sao_paulo_end
  FROM unnest(ARRAY['day', 'week', 'month']) p;
-- a day across a change of clocks is 23 hours long
SELECT msgbilling._period_end('day', 'Europe/Berlin', '2026-03-29 12:00+00')
     - msgbilling._period_start('day', 'Europe/Berlin', '2026-03-29 12:00+00') AS hours;

CREATE VIEW msgs AS
    SELECT seq, tokens_used, billing_status, billing_error, cost_credits
      FROM messages ORDER BY seq;

-------------------------------------------------------------------------------
-- hard: in order, like insufficient_credits
-------------------------------------------------------------------------------
SELECT msgbilling.set_budget('acme', 'day', 5);
SELECT period_start = date_trunc('day', now(), 'UTC') AS today, amount, spent,
       remaining, hard FROM msgbilling.budget_status('acme');
SELECT msgbilling.available('acme');             -- 5: the budget, not the 100
INSERT INTO messages (org_id, tokens_used) VALUES
    ('acme', 200), ('acme', 200), ('acme', 200), ('acme', 10);
SELECT * FROM msgbilling.process_all_pending();
-- 2 + 2 fit, the third would make 6; the cheap fourth fails behind it
SELECT * FROM msgs;
SELECT amount, spent, remaining FROM msgbilling.budget_status('acme');
SELECT msgbilling.available('acme');
SELECT msgbilling.hold('acme', 1.5) IS NULL AS refused,
       msgbilling.hold('acme', 1) IS NOT NULL AS held;
-- a later message that fits fails behind them, for their reason: the
-- wallet has plenty
INSERT INTO messages (org_id, tokens_used) VALUES ('acme', 5);
SELECT * FROM msgbilling.process_all_pending();
SELECT seq, billing_error FROM msgs WHERE seq > 2;
-- a top-up does not lift a budget: billed again, they fail again
SELECT msgbilling.top_up('acme', 50);
SELECT * FROM msgbilling.process_all_pending();
SELECT * FROM msgs;

-- a refund gives back to the period's spend
SELECT msgbilling.refund(id) FROM messages WHERE seq = 1;
SELECT spent, remaining FROM msgbilling.budget_status('acme');

-- a new amount lets them through, at once
SELECT msgbilling.set_budget('acme', 'day', 8);
SELECT count(*) FILTER (WHERE billing_status = 'pending') AS pending FROM messages;
SELECT * FROM msgbilling.process_all_pending();
SELECT * FROM msgs;
SELECT spent, remaining FROM msgbilling.budget_status('acme');

-------------------------------------------------------------------------------
-- a new period lets them through by itself
-------------------------------------------------------------------------------
INSERT INTO messages (org_id, tokens_used) VALUES ('acme', 400);
SELECT * FROM msgbilling.process_all_pending();
SELECT billing_error FROM msgs WHERE seq = 6;
SELECT exceeded_start = date_trunc('day', now(), 'UTC') AS noted_today
  FROM msgbilling.budgets WHERE org_id = 'acme';
-- as if it were tomorrow: the budget's spend and failures are yesterday's
UPDATE msgbilling.budgets SET period_start = period_start - interval '1 day',
       exceeded_start = exceeded_start - interval '1 day'
 WHERE org_id = 'acme';
SELECT amount, spent, remaining FROM msgbilling.budget_status('acme');
SELECT * FROM msgbilling.process_all_pending();
SELECT billing_status, cost_credits FROM msgs WHERE seq = 6;
SELECT spent, exceeded_start FROM msgbilling.budgets WHERE org_id = 'acme';

-- two periods: the one with less left decides
SELECT msgbilling.set_budget('acme', 'month', 9);
SELECT amount, spent, remaining, hard FROM msgbilling.budget_status('acme');
SELECT msgbilling.available('acme');
-- removing one
SELECT msgbilling.set_budget('acme', 'day', NULL);
SELECT amount, remaining FROM msgbilling.budget_status('acme');

-------------------------------------------------------------------------------
-- soft: one alert per period when spend reaches the amount
-------------------------------------------------------------------------------
SELECT msgbilling.set_budget('soft', 'week', 3, hard => false, time_zone => 'Asia/Tokyo');
INSERT INTO messages (org_id, tokens_used) VALUES ('soft', 200), ('soft', 200);
SELECT * FROM msgbilling.process_all_pending();
INSERT INTO messages (org_id, tokens_used) VALUES ('soft', 200);
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.refund(id) FROM messages WHERE org_id = 'soft' ORDER BY seq DESC LIMIT 1;
INSERT INTO messages (org_id, tokens_used) VALUES ('soft', 500);
SELECT * FROM msgbilling.process_all_pending();
-- charged past it (soft), alerted once
SELECT billing_status, count(*) FROM messages WHERE org_id = 'soft' GROUP BY 1;
SELECT org_id, threshold, kind, balance FROM msgbilling.alerts ORDER BY id;
SELECT msgbilling.available('soft') = msgbilling.balance('soft') AS soft_limits_nothing;
-- setting it again within the period sends nothing new
SELECT msgbilling.set_budget('soft', 'week', 2, hard => false, time_zone => 'Asia/Tokyo');
SELECT count(*) AS alerts FROM msgbilling.alerts;
-- a new soft budget already reached alerts at once
SELECT msgbilling.set_budget('soft', 'day', 1, hard => false);
SELECT org_id, threshold, kind FROM msgbilling.alerts ORDER BY id;

-------------------------------------------------------------------------------
-- bad input
-------------------------------------------------------------------------------
SELECT msgbilling.set_budget('acme', 'year', 5);
SELECT msgbilling.set_budget('acme', 'day', 5, time_zone => 'Mars/Olympus');
SELECT msgbilling.set_budget('acme', 'day', -1);
SELECT msgbilling.set_budget('acme', 'day', 1.0000001);
SELECT msgbilling.set_budget('acme', NULL, 5);
SELECT msgbilling.set_budget('acme', 'day', 5, NULL);
SELECT msgbilling.set_budget(NULL::text, 'day', 5);
SELECT msgbilling.budget_status(NULL::text);
SELECT count(*) AS none FROM msgbilling.budget_status('nobody');

-- for the billing role
CREATE ROLE regress_mb_nobody;
SET ROLE regress_mb_nobody;
SELECT msgbilling.set_budget('acme', 'day', 100);
SELECT * FROM msgbilling.budget_status('acme');
RESET ROLE;
DROP ROLE regress_mb_nobody;

SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;
DROP VIEW msgs;
SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
