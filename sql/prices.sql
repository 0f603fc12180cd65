-- Versioned prices: set_price, price_at, and how messages are priced.
-- PL/pgSQL line numbers in CONTEXT lines would tie this file to the code.
\set SHOW_CONTEXT never
CREATE EXTENSION msgbilling;

-- Bad prices are refused.
SELECT msgbilling.set_price('gpt-4o', -0.1, '2024-01-01');
SELECT msgbilling.set_price('gpt-4o', 'NaN', '2024-01-01');
SELECT msgbilling.set_price('gpt-4o', 'Infinity', '2024-01-01');
SELECT msgbilling.set_price('gpt-4o', NULL, '2024-01-01');
SELECT msgbilling.set_price('gpt-4o', 0.1, NULL);
SELECT msgbilling.set_price('gpt-4o', 0.1, 'infinity');
SELECT msgbilling.set_price('', 0.1, '2024-01-01');

-- Versions: a default (model NULL) and per-model prices, each from a time.
SELECT msgbilling.set_price(NULL, 0.001, '2024-01-01') > 0 AS default_set;
SELECT msgbilling.set_price('gpt-4o', 0.01, '2024-01-01') > 0 AS set;
SELECT msgbilling.set_price('gpt-4o', 0.02, '2024-06-01') > 0 AS raised;
-- A zero price is allowed (a free model).
SELECT msgbilling.set_price('free-model', 0, '2024-01-01') > 0 AS free;
-- A price is never rewritten: the same model and time again is an error.
SELECT msgbilling.set_price('gpt-4o', 0.05, '2024-06-01');
SELECT msgbilling.set_price(NULL, 0.05, '2024-01-01');
-- A price in the future is stored, and applies from its time on.
SELECT msgbilling.set_price('gpt-4o', 0.03, now() + interval '1 day') > 0 AS scheduled;

SELECT model, credits_per_token FROM msgbilling.prices ORDER BY id;

-- price_at: the model's price in effect at a time, else the default's.
SELECT msgbilling.price_at('gpt-4o', '2024-03-01') AS march,
       msgbilling.price_at('gpt-4o', '2024-07-01') AS july,
       msgbilling.price_at('gpt-4o') AS now,
       msgbilling.price_at('unknown-model', '2024-03-01') AS fallback,
       msgbilling.price_at('gpt-4o', '2023-01-01') AS before_any;

-- Messages are priced at their creation time.
CREATE TABLE messages (
    id bigint PRIMARY KEY,
    org_id text NOT NULL,
    tokens_used bigint,
    model varchar(40),
    created_at timestamptz NOT NULL
);
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');
SELECT msgbilling.top_up('acme', 1000);
INSERT INTO messages (id, org_id, tokens_used, model, created_at) VALUES
    (1, 'acme', 100, 'gpt-4o', '2024-03-01'),     -- 0.01 => 1.000000
    (2, 'acme', 100, 'gpt-4o', '2024-07-01'),     -- 0.02 => 2.000000
    (3, 'acme', 100, 'other', '2024-07-01'),      -- default => 0.100000
    (4, 'acme', 100, NULL, '2024-07-01'),         -- default => 0.100000
    (5, 'acme', 100, 'free-model', '2024-07-01'), -- 0 => 0.000000, charged
    (6, 'acme', 100, 'gpt-4o', '2023-06-01');     -- no price yet => no_price
SELECT * FROM msgbilling.process_all_pending();
SELECT id, model, created_at::date, billing_status, cost_credits, billing_error
  FROM messages ORDER BY id;

-- Rounding: cost = round(tokens * price, 6), half away from zero.
SELECT msgbilling.set_price('tiny', 0.0000005, '2024-01-01') > 0 AS set;
SELECT msgbilling.set_price('third', 0.00000033333333, '2024-01-01') > 0 AS set;
INSERT INTO messages (id, org_id, tokens_used, model, created_at) VALUES
    (10, 'acme', 1, 'tiny', '2024-07-01'),        -- 0.0000005 => 0.000001
    (11, 'acme', 3, 'tiny', '2024-07-01'),        -- 0.0000015 => 0.000002
    (12, 'acme', 1, 'third', '2024-07-01'),       -- 0.00000033 => 0.000000
    (13, 'acme', 3, 'third', '2024-07-01'),       -- 0.00000099999999 => 0.000001
    (14, 'acme', 1000000000, 'third', '2024-07-01'); -- 333.33333 => 333.333330
SELECT * FROM msgbilling.process_all_pending();
SELECT id, tokens_used, cost_credits, billing_status FROM messages
 WHERE id >= 10 ORDER BY id;
-- The charge entry is the exact sum of the rounded costs.
SELECT amount FROM msgbilling.ledger WHERE kind = 'charge' ORDER BY id DESC LIMIT 1;

-- A cost beyond numeric(10,6) fails the message instead of the batch.
INSERT INTO messages (id, org_id, tokens_used, model, created_at) VALUES
    (20, 'acme', 100000000000, 'gpt-4o', '2024-07-01'),
    (21, 'acme', 10, 'gpt-4o', '2024-07-01');
SELECT * FROM msgbilling.process_all_pending();
SELECT id, billing_status, cost_credits, billing_error FROM messages
 WHERE id >= 20 ORDER BY id;

-- A new price makes the no_price failures pending again: a retroactive
-- price (a correction) prices message 6.
SELECT msgbilling.set_price('gpt-4o', 0.005, '2023-01-01') > 0 AS set;
SELECT id, billing_status FROM messages WHERE billing_status <> 'charged' ORDER BY id;
SELECT msgbilling.retry_failed('acme');
SELECT * FROM msgbilling.process_all_pending();
SELECT id, billing_status, cost_credits, billing_error FROM messages
 WHERE id IN (6, 20) ORDER BY id;

-- Costs are computed in integers for prices of up to 18 digits and in
-- numeric for longer ones: both round half away from zero, and both fail
-- a cost that rounds to 10000 or more.
SELECT msgbilling.top_up('big', 100000);
SELECT msgbilling.set_price('edge', 0.00000099999999995, '2024-01-01') > 0 AS set;
SELECT msgbilling.set_price('edge-long', 0.000000999999999950000000001,
                            '2024-01-01') > 0 AS set;
SELECT msgbilling.set_price('long', 0.0000005000000000000000001,
                            '2024-01-01') > 0 AS set;
SELECT msgbilling.set_price('whole', 1, '2024-01-01') > 0 AS set;
INSERT INTO messages (id, org_id, tokens_used, model, created_at) VALUES
    (40, 'big', 10000000000, 'edge', '2024-07-01'),      -- 9999.9999995 => out
    (41, 'big', 9999999999, 'edge', '2024-07-01'),       -- 9999.999999
    (42, 'big', 10000000000, 'edge-long', '2024-07-01'), -- 9999.99999950… => out
    (43, 'big', 9999999999, 'edge-long', '2024-07-01'),  -- 9999.999999
    (44, 'big', 1, 'long', '2024-07-01'),                -- 0.00000050…1 => 0.000001
    (45, 'big', 3, 'long', '2024-07-01'),                -- 0.00000150…3 => 0.000002
    (46, 'big', 10000, 'whole', '2024-07-01'),           -- 10000 => out
    (47, 'big', 9999, 'whole', '2024-07-01');            -- 9999.000000
SELECT * FROM msgbilling.process_all_pending('big');
SELECT id, billing_status, cost_credits, billing_error FROM messages
 WHERE id >= 40 ORDER BY id;
SELECT msgbilling.balance('big');
SELECT check_name, ok FROM msgbilling.verify();

SELECT msgbilling.detach('messages', drop_columns => true, force => true);

-- Without a created column a message is priced at billing time: the
-- newest price, from a minute ago, over the 2024 one.
SELECT msgbilling.attach('messages', model_column => 'model');
SELECT msgbilling.set_price('gpt-4o', 0.03, now() - interval '1 minute') > 0 AS set;
INSERT INTO messages (id, org_id, tokens_used, model, created_at)
VALUES (30, 'acme', 100, 'gpt-4o', '2024-07-01');
SELECT * FROM msgbilling.process_all_pending();
SELECT id, billing_status, cost_credits FROM messages WHERE id = 30;

SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;

-- A created column of type timestamp (without time zone) is read as UTC:
-- the same message costs the same whatever the biller's TimeZone.  The
-- price changes at 2025-06-01 00:00 UTC, which is 14:00 on 31 May in
-- Pacific/Kiritimati (UTC+14) and 14:00 on 1 June in Pacific/Pago_Pago
-- (UTC-11): read in either zone, message 2 would get the other price.
CREATE TABLE messages (id bigint PRIMARY KEY, org_id text NOT NULL,
                       tokens_used integer, created_at timestamp NOT NULL);
SELECT msgbilling.attach('messages', created_column => 'created_at');
SELECT msgbilling.set_price(NULL, 1, '2025-01-01 00:00+00') > 0 AS set;
SELECT msgbilling.set_price(NULL, 2, '2025-06-01 00:00+00') > 0 AS set;
SELECT msgbilling.top_up('tz', 100);
INSERT INTO messages VALUES (1, 'tz', 1, '2025-05-31 23:59'),
                            (2, 'tz', 1, '2025-06-01 00:00'),
                            (3, 'tz', 1, '2025-05-31 23:59'),
                            (4, 'tz', 1, '2025-06-01 00:00');
SET TimeZone = 'Pacific/Kiritimati';
SELECT msgbilling.process_message_billing(1), msgbilling.process_message_billing(2);
SET TimeZone = 'Pacific/Pago_Pago';
SELECT msgbilling.process_message_billing(3), msgbilling.process_message_billing(4);
RESET TimeZone;
SELECT id, created_at, cost_credits FROM messages ORDER BY id;
-- history() shows the creation time as the UTC instant it was read as.
SET TimeZone = 'UTC';
SELECT message_id, created_at, cost_credits FROM msgbilling.history('tz')
 ORDER BY message_id;
RESET TimeZone;
SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;
-- a fresh ledger for the next part, whose books verify() checks
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
CREATE EXTENSION msgbilling;

-- Absurd prices.  set_price refuses one at which a single token costs
-- more than a message may (10,000 credits), echoing it cut short.
SELECT msgbilling.set_price('huge', 1e131071);
SELECT msgbilling.set_price('huge', 10000);
SELECT msgbilling.set_price('huge', 9999.999999) > 0 AS set;
-- One already in the table (written by hand, or by 1.0, which took it)
-- fails only its own messages, with cost_out_of_range; the batch goes on
-- and bills the rest.  With no tokens, such a message is free.
CREATE TABLE messages (id bigint PRIMARY KEY, org_id text NOT NULL,
                       tokens_used integer, model text);
SELECT msgbilling.attach('messages', model_column => 'model');
INSERT INTO msgbilling.prices (model, credits_per_token, effective_from)
VALUES ('absurd', 1e131071, '2020-01-01'),
       ('absurd-short', 1e100, '2020-01-01');
SELECT msgbilling.set_price(NULL, 1, '2020-01-01') > 0 AS set;
SELECT msgbilling.top_up('a', 100);
SELECT msgbilling.top_up('b', 100);
INSERT INTO messages VALUES (1, 'a', 1, 'absurd'), (2, 'b', 1, NULL),
                            (3, 'a', 0, 'absurd'), (4, 'b', 2, 'absurd-short'),
                            (5, 'b', 1, 'huge'), (6, 'b', 2, 'huge');
SELECT * FROM msgbilling.process_all_pending();
SELECT id, model, billing_status, cost_credits, billing_error
  FROM messages ORDER BY id;
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;
SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;
DROP EXTENSION msgbilling;
