--
-- token_columns.sql: a message billed for its input, output and cached
-- tokens, each at its tariff's rate, and messages that are not billable
-- (billable_column false: no_charge, cost 0, never debited).
--
-- raw = per_message + input × input_per_token + output × output_per_token
--       + cached × coalesce(cached_per_token, input_per_token)
-- cost = max(raw, minimum_charge) rounded to a multiple of increment.
--
CREATE EXTENSION msgbilling;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- The guide's chatbot: a WhatsApp message in or out, the provider's usage
-- as it reports it (OpenAI: prompt_tokens includes the cached ones), and
-- the counts msgbilling bills as generated columns.
CREATE TABLE messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id bigint NOT NULL,
    direction text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    model text,
    prompt_tokens integer,
    completion_tokens integer,
    cached_tokens integer,
    uncached_tokens integer GENERATED ALWAYS AS (prompt_tokens - cached_tokens) STORED,
    billable boolean GENERATED ALWAYS AS (direction = 'outbound') STORED,
    note text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON messages (org_id, created_at);

-------------------------------------------------------------------------------
-- attach: what a message is billed for must be clear
-------------------------------------------------------------------------------
-- no token column at all
SELECT msgbilling.attach('messages', tokens_column => NULL);
-- the tokens column and the input column would both be input
SELECT msgbilling.attach('messages', tokens_column => 'prompt_tokens',
                         input_tokens_column => 'uncached_tokens');
-- a column named twice would be billed twice
SELECT msgbilling.attach('messages', tokens_column => NULL,
                         input_tokens_column => 'prompt_tokens',
                         output_tokens_column => 'prompt_tokens');
-- each must exist and hold integers; billable is a boolean
SELECT msgbilling.attach('messages', tokens_column => NULL,
                         input_tokens_column => 'no_such_column');
SELECT msgbilling.attach('messages', tokens_column => NULL,
                         input_tokens_column => 'uncached_tokens',
                         output_tokens_column => 'model');
SELECT msgbilling.attach('messages', tokens_column => NULL,
                         output_tokens_column => 'completion_tokens',
                         cached_tokens_column => 'note');
SELECT msgbilling.attach('messages', tokens_column => NULL,
                         input_tokens_column => 'uncached_tokens',
                         billable_column => 'direction');
SELECT count(*) AS attached FROM msgbilling.config;
SELECT attname FROM pg_attribute
 WHERE attrelid = 'messages'::regclass AND attname LIKE 'billing%' AND NOT attisdropped;

SELECT msgbilling.attach('messages', tokens_column => NULL,
                         model_column => 'model', created_column => 'created_at',
                         input_tokens_column => 'uncached_tokens',
                         output_tokens_column => 'completion_tokens',
                         cached_tokens_column => 'cached_tokens',
                         billable_column => 'billable');
SELECT tokens_column, input_tokens_column, output_tokens_column,
       cached_tokens_column, billable_column FROM msgbilling.config;

-------------------------------------------------------------------------------
-- Each count at its own rate; cached NULL falls back to the input rate
-------------------------------------------------------------------------------
-- per million tokens: input 2.50, output 10.00, cached 1.25 (1 credit = $1)
SELECT msgbilling.set_tariff('gpt-4o', 0.0000025, 0.00001, 0.00000125,
                             effective_from => '2024-01-01');
-- no cached rate: cache reads at the input rate
SELECT msgbilling.set_tariff('no-cache-rate', 0.000003, 0.000015,
                             effective_from => '2024-01-01');
SELECT msgbilling.top_up(1, 100);
SELECT msgbilling.top_up(2, 100);
INSERT INTO messages (id, org_id, direction, model, prompt_tokens, completion_tokens,
                      cached_tokens, created_at) VALUES
    ('00000000-0000-0000-0000-000000000001', 1, 'outbound', 'gpt-4o', 1200, 300, 1000, '2024-02-01 10:00'),
    ('00000000-0000-0000-0000-000000000002', 1, 'outbound', 'gpt-4o', 1200, 300, 0, '2024-02-01 10:01'),
    ('00000000-0000-0000-0000-000000000003', 1, 'outbound', 'no-cache-rate', 1200, 300, 1000, '2024-02-01 10:02'),
    ('00000000-0000-0000-0000-000000000004', 1, 'outbound', 'gpt-4o', 0, 0, 0, '2024-02-01 10:03');
SELECT * FROM msgbilling.process_all_pending();
-- 1: 200 × 0.0000025 + 300 × 0.00001 + 1000 × 0.00000125 = 0.00475
-- 2: 1200 × 0.0000025 + 300 × 0.00001 = 0.006
-- 3: 200 × 0.000003 + 300 × 0.000015 + 1000 × 0.000003 = 0.0081
SELECT right(id::text, 1) AS id, billing_status, cost_credits
  FROM messages ORDER BY id;
SELECT right(message_id, 1) AS id, tokens, input_tokens, output_tokens, cached_tokens,
       cost_credits, billing_status FROM msgbilling.history(1) ORDER BY message_id;

-------------------------------------------------------------------------------
-- NULL or negative counts in any named column: invalid_tokens, nothing
-- charged; the org's later messages wait behind none of them
-------------------------------------------------------------------------------
INSERT INTO messages (id, org_id, direction, model, prompt_tokens, completion_tokens,
                      cached_tokens, created_at) VALUES
    ('00000000-0000-0000-0000-000000000011', 1, 'outbound', 'gpt-4o', NULL, 10, 0, '2024-02-02'),
    ('00000000-0000-0000-0000-000000000012', 1, 'outbound', 'gpt-4o', 10, NULL, 0, '2024-02-02'),
    ('00000000-0000-0000-0000-000000000013', 1, 'outbound', 'gpt-4o', 10, 10, NULL, '2024-02-02'),
    ('00000000-0000-0000-0000-000000000014', 1, 'outbound', 'gpt-4o', 10, -1, 0, '2024-02-02'),
    ('00000000-0000-0000-0000-000000000015', 1, 'outbound', 'gpt-4o', 5, 10, 10, '2024-02-02'),
    ('00000000-0000-0000-0000-000000000016', 1, 'outbound', 'gpt-4o', 100, 10, 0, '2024-02-03');
SELECT * FROM msgbilling.process_all_pending();
SELECT right(id::text, 2) AS id, uncached_tokens, completion_tokens, cached_tokens,
       billing_status, billing_error, cost_credits
  FROM messages WHERE id::text LIKE '%00001_' ORDER BY id;
SELECT msgbilling.balance(1);

-------------------------------------------------------------------------------
-- Not billable (the inbound messages): no_charge, cost 0, charged_at set,
-- no debit, no ledger amount; NULL counts as billable
-------------------------------------------------------------------------------
SELECT count(*) AS ledger_entries_before FROM msgbilling.ledger WHERE org_id = '1';
INSERT INTO messages (id, org_id, direction, model, prompt_tokens, completion_tokens,
                      cached_tokens, created_at) VALUES
    ('00000000-0000-0000-0000-000000000021', 1, 'inbound', NULL, 0, 0, 0, '2024-03-01 10:00'),
    ('00000000-0000-0000-0000-000000000022', 1, 'inbound', 'gpt-4o', NULL, NULL, NULL, '2024-03-01 10:01'),
    ('00000000-0000-0000-0000-000000000023', 1, 'outbound', 'gpt-4o', 1000, 100, 0, '2024-03-01 10:02');
SELECT * FROM msgbilling.process_all_pending();
SELECT right(id::text, 2) AS id, direction, billing_status, cost_credits,
       charged_at IS NOT NULL AS has_charged_at, billing_error, billing_ledger_id
  FROM messages WHERE id::text LIKE '%00002_' ORDER BY id;
SELECT count(*) AS ledger_entries_after FROM msgbilling.ledger WHERE org_id = '1';
SELECT pending, charged, failed, no_charge FROM msgbilling.stats(1);
SELECT pending, charged, failed, no_charge FROM msgbilling.stats();
SELECT right(message_id, 2) AS id, tokens, input_tokens, output_tokens, cached_tokens,
       cost_credits, billing_status
  FROM msgbilling.history(1, 3) ORDER BY message_id;
-- one message at a time, and through the trigger, alike
INSERT INTO messages (id, org_id, direction, prompt_tokens, completion_tokens, cached_tokens)
VALUES ('00000000-0000-0000-0000-000000000031', 1, 'inbound', 10, 0, 0);
SELECT msgbilling.process_message_billing('00000000-0000-0000-0000-000000000031'::uuid);
SELECT msgbilling.process_message_billing('00000000-0000-0000-0000-000000000031'::uuid);
CREATE TRIGGER bill_now AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION msgbilling.bill_on_insert();
INSERT INTO messages (id, org_id, direction, prompt_tokens, completion_tokens, cached_tokens)
VALUES ('00000000-0000-0000-0000-000000000032', 1, 'inbound', 10, 0, 0);
SELECT billing_status, cost_credits FROM messages
 WHERE id = '00000000-0000-0000-0000-000000000032';
DROP TRIGGER bill_now ON messages;
-- a no_charge message has nothing to refund, and the app cannot make one
SELECT msgbilling.refund('00000000-0000-0000-0000-000000000021'::uuid);
INSERT INTO messages (org_id, direction, billing_status) VALUES (1, 'inbound', 'no_charge');
UPDATE messages SET billing_status = 'pending'
 WHERE id = '00000000-0000-0000-0000-000000000021';
-- an inbound message never waits behind an unpaid reply: org 3 can pay
-- for nothing, its replies fail, its inbound messages are no_charge
SELECT msgbilling.top_up(3, 0.001);
INSERT INTO messages (org_id, direction, model, prompt_tokens, completion_tokens, cached_tokens, created_at)
VALUES (3, 'outbound', 'gpt-4o', 100000, 10000, 0, '2024-04-01 10:00'),
       (3, 'inbound', NULL, 0, 0, 0, '2024-04-01 10:01'),
       (3, 'outbound', 'gpt-4o', 1, 1, 0, '2024-04-01 10:02');
SELECT * FROM msgbilling.process_all_pending(3);
SELECT direction, billing_status, billing_error, cost_credits
  FROM messages WHERE org_id = 3 ORDER BY created_at;
-- an org without a wallet fails all its messages, as before; once it has
-- one, a retry bills its inbound ones as no_charge
INSERT INTO messages (org_id, direction, prompt_tokens, completion_tokens, cached_tokens)
VALUES (4, 'inbound', 0, 0, 0);
SELECT * FROM msgbilling.process_all_pending(4);
SELECT billing_status, billing_error FROM messages WHERE org_id = 4;
SELECT msgbilling.top_up(4, 1);
SELECT msgbilling.retry_failed(4);
SELECT * FROM msgbilling.process_all_pending(4);
SELECT billing_status, cost_credits, billing_error FROM messages WHERE org_id = 4;

-------------------------------------------------------------------------------
-- A batch of nothing but no_charge messages is work done: drain goes on
-- past it, in batches of two
-------------------------------------------------------------------------------
INSERT INTO messages (org_id, direction, prompt_tokens, completion_tokens, cached_tokens, created_at)
SELECT 2, 'inbound', 0, 0, 0, '2024-05-01'::timestamptz + i * interval '1 second'
  FROM generate_series(1, 7) i;
INSERT INTO messages (org_id, direction, model, prompt_tokens, completion_tokens, cached_tokens, created_at)
VALUES (2, 'outbound', 'gpt-4o', 1000, 0, 0, '2024-05-02');
SET client_min_messages = warning;
CALL msgbilling.drain(2);
RESET client_min_messages;
SELECT billing_status, count(*), sum(cost_credits) FROM messages WHERE org_id = 2
 GROUP BY 1 ORDER BY 1;
SELECT no_charge FROM msgbilling.stats(2);

-------------------------------------------------------------------------------
-- Retention deletes no_charge messages freely; the books still reconcile
-------------------------------------------------------------------------------
DELETE FROM messages WHERE billing_status = 'no_charge' AND org_id = 2;
SELECT count(*) AS kept_for_the_books FROM msgbilling.deleted_messages;
SELECT check_name, ok, detail FROM msgbilling.verify() WHERE NOT ok;
-- verify() sees a no_charge message with a cost
SET msgbilling.repair = on;
UPDATE messages SET cost_credits = 1 WHERE id = '00000000-0000-0000-0000-000000000021';
RESET msgbilling.repair;
SELECT check_name, ok, detail FROM msgbilling.verify() WHERE NOT ok;
SET msgbilling.repair = on;
UPDATE messages SET cost_credits = 0 WHERE id = '00000000-0000-0000-0000-000000000021';
RESET msgbilling.repair;

-------------------------------------------------------------------------------
-- The seed app's rule: outbound replies only, at least 50 tokens and at
-- least 1 credit, whole credits rounded up: one credit per reply plus one
-- per extra thousand tokens
-------------------------------------------------------------------------------
SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
CREATE EXTENSION msgbilling;
CREATE TABLE whatsapp_messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id bigint NOT NULL,
    direction text NOT NULL,
    tokens_used integer,
    billable boolean GENERATED ALWAYS AS (direction = 'outbound') STORED,
    created_at timestamptz NOT NULL DEFAULT now()
);
SELECT msgbilling.attach('whatsapp_messages', created_column => 'created_at',
                         billable_column => 'billable');
SELECT msgbilling.set_tariff(NULL, 0.001, 0.001, minimum_charge => 1, increment => 1,
                             rounding => 'up', effective_from => '2024-01-01');
SELECT msgbilling.top_up(10, 100);
INSERT INTO whatsapp_messages (org_id, direction, tokens_used)
SELECT 10, d, t
  FROM unnest(ARRAY['inbound', 'outbound', 'outbound', 'outbound', 'outbound',
                    'outbound', 'outbound'],
              ARRAY[1500, 0, 50, 1000, 1001, 2000, 2001]) AS u(d, t);
SELECT * FROM msgbilling.process_all_pending();
SELECT direction, tokens_used, billing_status, cost_credits
  FROM whatsapp_messages ORDER BY id;
SELECT msgbilling.balance(10);

-------------------------------------------------------------------------------
-- Both ways of computing a cost (128-bit integers; numeric, for a rate of
-- more than 18 digits) against the formula in SQL, over three counts
-------------------------------------------------------------------------------
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;
SELECT msgbilling.detach('whatsapp_messages', drop_columns => true, force => true);
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
CREATE EXTENSION msgbilling;
CREATE TABLE usage_messages (
    id bigint PRIMARY KEY,
    org_id bigint NOT NULL,
    model text,
    input_tokens bigint,
    output_tokens integer,
    cache_read_tokens smallint,
    created_at timestamp NOT NULL
);
SELECT msgbilling.attach('usage_messages', tokens_column => NULL, model_column => 'model',
                         created_column => 'created_at',
                         input_tokens_column => 'input_tokens',
                         output_tokens_column => 'output_tokens',
                         cached_tokens_column => 'cache_read_tokens');
SELECT msgbilling.top_up(20, 1000000);
CREATE TABLE formula AS
SELECT * FROM (VALUES
    ('int-nearest', 0.000003, 0.000015, 0.0000003, 0.002, 0, 0.000001, 'nearest'),
    ('int-up', 0.0000008, 0.000004, NULL, 0, 0.01, 0.01, 'up'),
    ('int-down', 0.00000015, 0.0000006, 0.000000075, 1, 0, 0.5, 'down'),
    ('num-nearest', 0.0000012345678901234567, 0.000005, 0.0000001, 0, 0, 0.000001, 'nearest'),
    ('num-up', 0.000002, 0.0000123456789012345678, NULL, 0.0000015, 0.001, 0.000003, 'up'),
    ('num-down', 0.000001, 0.000002, 0.0000000000000000000001, 0.25, 0.1, 0.01, 'down'))
    AS f(model, input_rate, output_rate, cached_rate, fee, minimum, inc, rounding);
SELECT count(msgbilling.set_tariff(model, input_rate, output_rate, cached_rate,
                                   per_message => fee, minimum_charge => minimum,
                                   increment => inc, rounding => rounding,
                                   effective_from => '2024-01-01'))
  FROM formula;
INSERT INTO usage_messages
SELECT 100000 * f.n + t, 20, f.model, (t * 7919) % 200000, (t * 104729) % 5000,
       (t * 31) % 30000, '2024-02-01'
  FROM (SELECT model, row_number() OVER (ORDER BY model) AS n FROM formula) f,
       generate_series(0, 2000) t;
SELECT charged, failed FROM msgbilling.process_all_pending();
WITH raw AS (
    SELECT m.cost_credits, f.rounding, f.inc,
           greatest(f.fee + m.input_tokens * f.input_rate + m.output_tokens * f.output_rate
                    + m.cache_read_tokens * coalesce(f.cached_rate, f.input_rate),
                    f.minimum) / f.inc AS steps
      FROM usage_messages m JOIN formula f ON f.model = m.model)
SELECT rounding, count(*) AS messages,
       count(*) FILTER (WHERE cost_credits <> CASE rounding
           WHEN 'nearest' THEN round(steps) WHEN 'up' THEN ceil(steps)
           ELSE floor(steps) END * inc) AS not_as_the_formula,
       min(cost_credits), max(cost_credits)
  FROM raw GROUP BY rounding ORDER BY 1;
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;

-- a cost that does not fit numeric(10,6) fails alone
SELECT msgbilling.set_tariff('huge', 0.000001, 9999, effective_from => '2024-01-01');
INSERT INTO usage_messages VALUES (1, 20, 'huge', 1, 1, 0, '2024-03-01'),
                                  (2, 20, 'huge', 1, 2, 0, '2024-03-01'),
                                  (3, 20, 'huge', 1000000000000000, 0, 0, '2024-03-01');
SELECT * FROM msgbilling.process_all_pending();
SELECT id, billing_status, billing_error, cost_credits FROM usage_messages
 WHERE id < 10 ORDER BY id;

-- a token column renamed or retyped after attach stops billing with the fix
ALTER TABLE usage_messages RENAME COLUMN cache_read_tokens TO cache_reads;
INSERT INTO usage_messages VALUES (4, 20, 'huge', 1, 0, 0, '2024-03-01');
SELECT * FROM msgbilling.process_all_pending();
ALTER TABLE usage_messages RENAME COLUMN cache_reads TO cache_read_tokens;
ALTER TABLE usage_messages ALTER COLUMN cache_read_tokens TYPE numeric;
SELECT * FROM msgbilling.process_all_pending();
ALTER TABLE usage_messages ALTER COLUMN cache_read_tokens TYPE smallint;
SELECT billing_status, cost_credits FROM usage_messages WHERE id = 4;
SELECT * FROM msgbilling.process_all_pending();
SELECT billing_status, cost_credits FROM usage_messages WHERE id = 4;

SELECT msgbilling.detach('usage_messages', drop_columns => true, force => true);
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
CREATE EXTENSION msgbilling;

-------------------------------------------------------------------------------
-- A time-partitioned table under forced row level security, two tenants:
-- the biller bills every partition; each tenant's history() shows its own
-- messages, with their counts, and nothing of the other's
-------------------------------------------------------------------------------
CREATE ROLE regress_mb_tenant_app;
CREATE ROLE regress_mb_tenant_biller;
CREATE TABLE chat (
    id bigint GENERATED ALWAYS AS IDENTITY,
    org_id bigint NOT NULL,
    direction text NOT NULL,
    input_tokens integer NOT NULL DEFAULT 0,
    output_tokens integer NOT NULL DEFAULT 0,
    cache_read_tokens integer NOT NULL DEFAULT 0,
    outbound boolean GENERATED ALWAYS AS (direction = 'outbound') STORED,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE chat_2024_01 PARTITION OF chat FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE chat_2024_02 PARTITION OF chat FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE INDEX ON chat (org_id, created_at);
ALTER TABLE chat ENABLE ROW LEVEL SECURITY;
ALTER TABLE chat FORCE ROW LEVEL SECURITY;
CREATE POLICY own_org ON chat
    USING (org_id = nullif(current_setting('app.org_id', true), '')::bigint)
    WITH CHECK (org_id = nullif(current_setting('app.org_id', true), '')::bigint);
SELECT msgbilling.attach('chat', tokens_column => NULL, created_column => 'created_at',
                         input_tokens_column => 'input_tokens',
                         output_tokens_column => 'output_tokens',
                         cached_tokens_column => 'cache_read_tokens',
                         billable_column => 'outbound');
GRANT USAGE ON SCHEMA msgbilling TO regress_mb_tenant_app, regress_mb_tenant_biller;
GRANT INSERT, SELECT ON chat TO regress_mb_tenant_app;
GRANT EXECUTE ON FUNCTION msgbilling.history("any", integer, timestamptz),
    msgbilling.stats("any") TO regress_mb_tenant_app;
GRANT EXECUTE ON FUNCTION msgbilling.process_all_pending("any", bigint, integer, integer),
    msgbilling.stats("any") TO regress_mb_tenant_biller;
-- Claude-style rates: input 3, output 15, cache reads 0.30 per million
SELECT msgbilling.set_tariff(NULL, 0.000003, 0.000015, 0.0000003, per_message => 0.001,
                             effective_from => '2023-01-01');
SELECT msgbilling.top_up(1, 10), msgbilling.top_up(2, 10);
SET ROLE regress_mb_tenant_app;
SELECT set_config('app.org_id', '1', false);
INSERT INTO chat (org_id, direction, input_tokens, output_tokens, cache_read_tokens, created_at)
VALUES (1, 'inbound', 0, 0, 0, '2024-01-31 23:59'),
       (1, 'outbound', 1000, 500, 20000, '2024-02-01 00:00');
SELECT set_config('app.org_id', '2', false);
INSERT INTO chat (org_id, direction, input_tokens, output_tokens, cache_read_tokens, created_at)
VALUES (2, 'outbound', 10, 10, 0, '2024-01-15');
RESET ROLE;
SET ROLE regress_mb_tenant_biller;
SELECT * FROM msgbilling.process_all_pending();
SELECT org, s.charged, s.no_charge FROM unnest(ARRAY[1, 2]) org, msgbilling.stats(org) s;
RESET ROLE;
SET ROLE regress_mb_tenant_app;
SELECT set_config('app.org_id', '1', false);
-- 0.001 + 1000 × 0.000003 + 500 × 0.000015 + 20000 × 0.0000003 = 0.0175
SELECT tokens, input_tokens, output_tokens, cached_tokens, cost_credits, billing_status
  FROM msgbilling.history(1) ORDER BY created_at;
SELECT count(*) AS rows_of_org_2 FROM msgbilling.history(2);
SELECT no_charge, charged FROM msgbilling.stats(2);
RESET ROLE;
SELECT tableoid::regclass AS partition, billing_status, cost_credits FROM chat ORDER BY created_at;
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;
SELECT msgbilling.detach('chat', drop_columns => true, force => true);
DROP TABLE chat;
DROP TABLE messages, whatsapp_messages, usage_messages, formula;
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
DROP ROLE regress_mb_tenant_app, regress_mb_tenant_biller;
