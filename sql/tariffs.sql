--
-- tariffs.sql: a fee per message, a minimum charge and the rounding of a
-- message's cost (set_tariff), versioned as set_price is, and its errors.
--
-- cost = max(per_message + tokens × input_per_token, minimum_charge),
-- rounded to a multiple of increment: 'nearest' (half away from zero),
-- 'up' or 'down'.  A table with one token column bills at the input rate.
--
CREATE EXTENSION msgbilling;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE messages (
    id bigint PRIMARY KEY,
    org_id bigint NOT NULL,
    tokens_used integer,
    model text,
    created_at timestamptz NOT NULL
);
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');
SELECT msgbilling.top_up(1, 100000);

-------------------------------------------------------------------------------
-- Bad tariffs are clear errors; nothing is added
-------------------------------------------------------------------------------
SELECT msgbilling.set_tariff('m', -1, 0);
SELECT msgbilling.set_tariff('m', 'NaN', 0);
SELECT msgbilling.set_tariff('m', 0, 'Infinity');
SELECT msgbilling.set_tariff('m', NULL, 0);
SELECT msgbilling.set_tariff('m', 0, 10000);
SELECT msgbilling.set_tariff('m', 0, 0, cached_per_token => -0.5);
SELECT msgbilling.set_tariff('m', 0, 0, per_message => 10000);
SELECT msgbilling.set_tariff('m', 0, 0, minimum_charge => 'NaN');
SELECT msgbilling.set_tariff('m', 0, 0, increment => 0);
SELECT msgbilling.set_tariff('m', 0, 0, increment => 0.0000005);
SELECT msgbilling.set_tariff('m', 0, 0, rounding => 'ceiling');
SELECT msgbilling.set_tariff('m', 0, 0, rounding => NULL);
SELECT msgbilling.set_tariff('m', 0, 0, effective_from => 'infinity');
SELECT msgbilling.set_tariff('', 0, 0);
SELECT msgbilling.set_tariff('m', 1, 1, effective_from => '2024-01-01');
SELECT msgbilling.set_tariff('m', 2, 2, effective_from => '2024-01-01');
SELECT count(*) AS tariffs FROM msgbilling.prices;

-------------------------------------------------------------------------------
-- A set_price row is the tariff with output at the same rate
-------------------------------------------------------------------------------
SELECT msgbilling.set_price(NULL, 0.000002, '2024-01-01') > 0 AS priced;
SELECT * FROM msgbilling.tariff_at('no such model', '2024-06-01');
SELECT * FROM msgbilling.tariff_at('m', '2024-06-01');
SELECT count(*) FROM msgbilling.tariff_at('m', '2023-06-01');

-------------------------------------------------------------------------------
-- Rounding to an increment of 0.01, each way, at and around one half
-------------------------------------------------------------------------------
SELECT msgbilling.set_tariff('nearest', 0.001, 0.001, increment => 0.01,
                             effective_from => '2024-01-01');
SELECT msgbilling.set_tariff('up', 0.001, 0.001, increment => 0.01, rounding => 'up',
                             effective_from => '2024-01-01');
SELECT msgbilling.set_tariff('down', 0.001, 0.001, increment => 0.01, rounding => 'down',
                             effective_from => '2024-01-01');
-- 4, 5 and 6 tokens cost 0.004, 0.005 and 0.006 before rounding
INSERT INTO messages
SELECT 10 * m.n + t, 1, t, m.model, '2024-02-01'
  FROM (VALUES (1, 'nearest'), (2, 'up'), (3, 'down')) m(n, model),
       generate_series(4, 6) t;
SELECT * FROM msgbilling.process_all_pending();
SELECT id, model, tokens_used, cost_credits FROM messages ORDER BY id;

-------------------------------------------------------------------------------
-- A fee per message and a minimum charge, below and above the raw cost
-------------------------------------------------------------------------------
SELECT msgbilling.set_tariff('fee', 0.01, 0.01, per_message => 0.5,
                             minimum_charge => 1, effective_from => '2024-01-01');
-- 0.5 + 30 × 0.01 = 0.8 is raised to 1; 0.5 + 70 × 0.01 = 1.2 stays; no
-- tokens at all costs the minimum
INSERT INTO messages VALUES (41, 1, 30, 'fee', '2024-02-01'),
                            (42, 1, 70, 'fee', '2024-02-01'),
                            (43, 1, 0, 'fee', '2024-02-01');
SELECT * FROM msgbilling.process_all_pending();
SELECT id, tokens_used, cost_credits FROM messages WHERE model = 'fee' ORDER BY id;

-------------------------------------------------------------------------------
-- The migration guide's app: at least one credit a reply, one more per
-- started thousand tokens, whole credits (the 50-token floor is implied)
-------------------------------------------------------------------------------
SELECT msgbilling.set_tariff('whatsapp', 0.001, 0.001, minimum_charge => 1,
                             increment => 1, rounding => 'up',
                             effective_from => '2024-01-01');
INSERT INTO messages VALUES (51, 1, 10, 'whatsapp', '2024-02-01'),
                            (52, 1, 50, 'whatsapp', '2024-02-01'),
                            (53, 1, 1000, 'whatsapp', '2024-02-01'),
                            (54, 1, 1001, 'whatsapp', '2024-02-01'),
                            (55, 1, 2500, 'whatsapp', '2024-02-01');
SELECT * FROM msgbilling.process_all_pending();
SELECT id, tokens_used, cost_credits FROM messages WHERE model = 'whatsapp' ORDER BY id;

-------------------------------------------------------------------------------
-- Both ways of computing a tariff's cost agree with the formula in SQL:
-- 128-bit integers (a short rate), numeric (the same rate written with 21
-- digits), for 0 to 3,000 tokens, each rounding
-------------------------------------------------------------------------------
CREATE TABLE formula (model text, rate numeric, fee numeric, minimum numeric,
                      inc numeric, rounding text);
INSERT INTO formula
SELECT r || '_' || w, CASE w WHEN 'int' THEN 0.0013 ELSE 0.00130000000000000000 END,
       0.25, 1.5, CASE r WHEN 'up' THEN 1 WHEN 'down' THEN 0.5 ELSE 0.01 END, r
  FROM unnest(ARRAY['nearest', 'up', 'down']) r, unnest(ARRAY['int', 'num']) w;
SELECT count(msgbilling.set_tariff(model, rate, rate, per_message => fee,
                                   minimum_charge => minimum, increment => inc,
                                   rounding => rounding, effective_from => '2024-01-01'))
  FROM formula;
INSERT INTO messages
SELECT 1000 + 10000 * f.n + t, 1, t, f.model, '2024-02-01'
  FROM (SELECT model, row_number() OVER (ORDER BY model) AS n FROM formula) f,
       generate_series(0, 3000) t;
SELECT charged, failed FROM msgbilling.process_all_pending();
SELECT f.rounding, count(*) AS messages,
       count(*) FILTER (WHERE m.cost_credits <> CASE f.rounding
           WHEN 'nearest' THEN round(greatest(f.fee + m.tokens_used * f.rate, f.minimum) / f.inc)
           WHEN 'up' THEN ceil(greatest(f.fee + m.tokens_used * f.rate, f.minimum) / f.inc)
           ELSE floor(greatest(f.fee + m.tokens_used * f.rate, f.minimum) / f.inc) END * f.inc)
           AS not_as_the_formula,
       min(m.cost_credits), max(m.cost_credits)
  FROM messages m JOIN formula f ON f.model = m.model
 GROUP BY f.rounding ORDER BY 1;
DROP TABLE formula;

-------------------------------------------------------------------------------
-- A tariff change mid-backlog: each message at the tariff in effect when
-- it was created
-------------------------------------------------------------------------------
SELECT msgbilling.set_tariff('whatsapp', 0.002, 0.002, per_message => 2,
                             increment => 0.5, rounding => 'down',
                             effective_from => '2024-03-01');
INSERT INTO messages VALUES (61, 1, 1001, 'whatsapp', '2024-02-28 23:59:59'),
                            (62, 1, 1001, 'whatsapp', '2024-03-01 00:00:00');
SELECT * FROM msgbilling.process_all_pending();
SELECT id, created_at, cost_credits FROM messages WHERE id IN (61, 62) ORDER BY id;

-------------------------------------------------------------------------------
-- A cost past 9999.999999 fails its message alone; a refund gives back
-- the exact cost charged
-------------------------------------------------------------------------------
SELECT msgbilling.set_tariff('dear', 1, 1, per_message => 9999,
                             effective_from => '2024-01-01');
INSERT INTO messages VALUES (71, 1, 1, 'dear', '2024-02-01'),
                            (72, 1, 0, 'dear', '2024-02-01'),
                            (73, 1, 1, 'whatsapp', '2024-03-02');
SELECT * FROM msgbilling.process_all_pending();
SELECT id, billing_status, billing_error, cost_credits FROM messages
 WHERE id BETWEEN 71 AND 73 ORDER BY id;
SELECT msgbilling.balance(1) AS before_refund,
       (SELECT cost_credits FROM messages WHERE id = 55) AS cost_of_55;
SELECT msgbilling.refund(55) AS after_refund;
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;

-- tariffs are for the roles granted them
SELECT has_function_privilege('public',
           'msgbilling.set_tariff(text, numeric, numeric, numeric, numeric, numeric, numeric, text, timestamptz)',
           'EXECUTE') AS public_may_set,
       has_function_privilege('public', 'msgbilling.tariff_at(text, timestamptz)',
                              'EXECUTE') AS public_may_read;

SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
