--
-- partitioned.sql: declaratively partitioned messages tables.
--
-- Monthly RANGE partitions on the created column with PRIMARY KEY (id,
-- created_at), as pg_partman makes them, and HASH partitions on the id.
-- Every partition numbers its rows from (0,1): billing writes each
-- partition's messages in that partition, so no two are confused.  Two
-- orgs at very different prices, billed by every path; each message's cost
-- is checked against its own tokens and price.
--
CREATE EXTENSION msgbilling;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Messages whose cost is not tokens × their model's price, or not charged
-- (of the table named messages when it is called).
SET check_function_bodies = off;
CREATE FUNCTION wrong_costs() RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM messages
     WHERE billing_status IS DISTINCT FROM 'charged'
        OR cost_credits IS DISTINCT FROM
           round(tokens_used * CASE model WHEN 'big' THEN 1 ELSE 0.000001 END, 6)
$$;
RESET check_function_bodies;

-------------------------------------------------------------------------------
-- Monthly RANGE partitions, PRIMARY KEY (id, created_at)
-------------------------------------------------------------------------------

CREATE TABLE messages (
    id bigserial,
    org_id uuid,
    tokens_used integer,
    model text,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE messages_2025_01 PARTITION OF messages
    FOR VALUES FROM ('2025-01-01 00:00+00') TO ('2025-02-01 00:00+00');
CREATE TABLE messages_2025_02 PARTITION OF messages
    FOR VALUES FROM ('2025-02-01 00:00+00') TO ('2025-03-01 00:00+00');
CREATE INDEX ON messages (org_id, created_at);
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');
SELECT key_column FROM msgbilling.config;
SELECT msgbilling.set_price(NULL, 0.000001, '2024-01-01') > 0 AS priced;
SELECT msgbilling.set_price('big', 1, '2024-01-01') > 0 AS priced;
\set a '''aaaaaaaa-0000-0000-0000-000000000000'''
\set b '''bbbbbbbb-0000-0000-0000-000000000000'''
SELECT msgbilling.top_up(:a, 1);
SELECT msgbilling.top_up(:b, 100000);

-- a's cheap messages and b's dear ones, alternating, in both months: the
-- rows of each partition sit at the same ctids as the other's.
CREATE FUNCTION add_messages(n integer, month text) RETURNS void LANGUAGE sql AS $$
    INSERT INTO messages (org_id, tokens_used, model, created_at)
    SELECT CASE WHEN i % 2 = 0 THEN 'aaaaaaaa-0000-0000-0000-000000000000'::uuid
                ELSE 'bbbbbbbb-0000-0000-0000-000000000000'::uuid END,
           i * 10, CASE WHEN i % 2 = 0 THEN NULL ELSE 'big' END,
           (month || '-10 00:00+00')::timestamptz + i * interval '1 minute'
      FROM generate_series(1, n) i
$$;
SELECT add_messages(6, '2025-01'), add_messages(6, '2025-02');
SELECT tableoid::regclass AS partition, ctid, id FROM messages
 WHERE ctid IN ('(0,1)', '(0,2)') ORDER BY id;

-- one message, a batch of them (with its org's older ones), one org, all
SELECT msgbilling.process_message_billing(7);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[2, 8]);
SELECT * FROM msgbilling.process_all_pending(:a);
SELECT * FROM msgbilling.process_all_pending();
SELECT wrong_costs();
-- drain over a new month's partition, created after attach
CREATE TABLE messages_2025_03 PARTITION OF messages
    FOR VALUES FROM ('2025-03-01 00:00+00') TO ('2025-04-01 00:00+00');
SELECT add_messages(6, '2025-02'), add_messages(6, '2025-03');
CALL msgbilling.drain(5);
SELECT wrong_costs();
-- the app's trigger, row by row and a statement at a time
CREATE TRIGGER bill_each AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION msgbilling.bill_on_insert();
SELECT add_messages(4, '2025-01'), add_messages(4, '2025-03');
DROP TRIGGER bill_each ON messages;
CREATE TRIGGER bill_all AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION msgbilling.bill_on_insert();
SELECT add_messages(4, '2025-02'), add_messages(4, '2025-03');
DROP TRIGGER bill_all ON messages;
SELECT wrong_costs();
SELECT tableoid::regclass AS partition, count(*), sum(cost_credits)
  FROM messages GROUP BY 1 ORDER BY 1;
SELECT org_id, balance, charged_messages, credits_charged
  FROM msgbilling.credits ORDER BY org_id;

-- A refund credits the message's own cost back, to the org that paid.
SELECT id, tableoid::regclass, org_id, cost_credits FROM messages
 WHERE id IN (1, 14) ORDER BY id;
SELECT msgbilling.refund(1);
SELECT msgbilling.refund(14);
SELECT org_id, balance FROM msgbilling.credits ORDER BY org_id;
-- The guards are on every partition, the new one too.
SELECT tgrelid::regclass AS partition, count(*) AS guards FROM pg_trigger
 WHERE tgname LIKE 'msgbilling_guard_%' GROUP BY 1 ORDER BY 1;
UPDATE messages_2025_03 SET billing_status = 'pending' WHERE id = 20;
-- one disabled on one partition shows in verify()
ALTER TABLE messages_2025_02 DISABLE TRIGGER msgbilling_guard_update;
ALTER TABLE messages_2025_02 ENABLE TRIGGER msgbilling_guard_update;
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;
UPDATE msgbilling.config SET guards_off_since = NULL;
SELECT check_name, ok FROM msgbilling.verify();

-- A superuser's restore (row_security off, as pg_dump's scripts set it)
-- loads billed messages into partitions that already have their guards (a
-- parallel pg_restore creates them while other sessions load rows); any
-- other session inserts pending messages only.
SET row_security = off;
INSERT INTO messages (org_id, tokens_used, created_at, billing_status)
VALUES (:a, 1, '2025-03-05 00:00+00', 'legacy');
CREATE ROLE regress_mb_restorer;
GRANT INSERT ON messages TO regress_mb_restorer;
GRANT USAGE ON SEQUENCE messages_id_seq TO regress_mb_restorer;
SET ROLE regress_mb_restorer;
INSERT INTO messages (org_id, tokens_used, created_at, billing_status)
VALUES (:a, 1, '2025-03-05 00:00+00', 'legacy');
RESET ROLE;
RESET row_security;
INSERT INTO messages (org_id, tokens_used, created_at, billing_status)
VALUES (:a, 1, '2025-03-05 00:00+00', 'legacy');
DELETE FROM messages WHERE billing_status = 'legacy';
REVOKE ALL ON messages, messages_id_seq FROM regress_mb_restorer;
DROP ROLE regress_mb_restorer;

-- Billing order across partitions.  Org c can pay one dear message: its
-- January one is charged, February's fails, and a cheap one of March, which
-- would fit, fails behind it (the unpaid one is in an older partition).
-- After a top-up they are charged, oldest first.
\set c '''cccccccc-0000-0000-0000-000000000000'''
SELECT msgbilling.top_up(:c, 1.5);
INSERT INTO messages (org_id, tokens_used, model, created_at)
VALUES (:c, 1, 'big', '2025-01-20 00:00+00'), (:c, 1, 'big', '2025-02-20 00:00+00');
SELECT * FROM msgbilling.process_all_pending(:c);
INSERT INTO messages (org_id, tokens_used, model, created_at)
VALUES (:c, 1, NULL, '2025-03-20 00:00+00');
SELECT * FROM msgbilling.process_all_pending();
SELECT tableoid::regclass AS partition, billing_status, billing_error, cost_credits
  FROM messages WHERE org_id = :c ORDER BY created_at;
SELECT msgbilling.top_up(:c, 10);
SELECT * FROM msgbilling.process_all_pending();
SELECT tableoid::regclass AS partition, billing_status, cost_credits
  FROM messages WHERE org_id = :c ORDER BY created_at;
SELECT balance FROM msgbilling.credits WHERE org_id = :c;

SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;
DROP FUNCTION add_messages(integer, text);
-- a fresh ledger for the next table
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
CREATE EXTENSION msgbilling;

-------------------------------------------------------------------------------
-- HASH partitions on the id
-------------------------------------------------------------------------------

CREATE TABLE messages (
    id bigint PRIMARY KEY,
    org_id bigint NOT NULL,
    tokens_used integer,
    model text
) PARTITION BY HASH (id);
CREATE TABLE messages_h0 PARTITION OF messages FOR VALUES WITH (MODULUS 4, REMAINDER 0);
CREATE TABLE messages_h1 PARTITION OF messages FOR VALUES WITH (MODULUS 4, REMAINDER 1);
CREATE TABLE messages_h2 PARTITION OF messages FOR VALUES WITH (MODULUS 4, REMAINDER 2);
CREATE TABLE messages_h3 PARTITION OF messages FOR VALUES WITH (MODULUS 4, REMAINDER 3);
CREATE INDEX ON messages (org_id);
SELECT msgbilling.attach('messages', model_column => 'model');
SELECT msgbilling.set_price(NULL, 0.000001, '2024-01-01') > 0 AS priced;
SELECT msgbilling.set_price('big', 1, '2024-01-01') > 0 AS priced;
SELECT msgbilling.top_up(1, 1);
SELECT msgbilling.top_up(2, 100000);
INSERT INTO messages
SELECT i, 1 + i % 2, i * 10, CASE WHEN i % 2 = 1 THEN 'big' END
  FROM generate_series(1, 40) i;
SELECT msgbilling.process_message_billing(3);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[5, 6, 7]);
SELECT * FROM msgbilling.process_all_pending(1);
CALL msgbilling.drain(7);
SELECT wrong_costs();
SELECT msgbilling.refund(40);
SELECT org_id, balance, charged_messages, refunded_messages
  FROM msgbilling.credits ORDER BY org_id;
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;
SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;

-------------------------------------------------------------------------------
-- Shapes without one message key are refused, saying what would do
-------------------------------------------------------------------------------

-- two id columns besides the partition key
CREATE TABLE messages (id bigint, tenant bigint, org_id bigint, tokens_used integer,
                       created_at timestamptz NOT NULL,
                       PRIMARY KEY (id, tenant, created_at))
    PARTITION BY RANGE (created_at);
SELECT msgbilling.attach('messages', created_column => 'created_at');
DROP TABLE messages;
-- a plain table with a composite key
CREATE TABLE messages (id bigint, org_id bigint, tokens_used integer,
                       PRIMARY KEY (org_id, id));
SELECT msgbilling.attach('messages');
DROP TABLE messages;
-- no primary key
CREATE TABLE messages (id bigint, org_id bigint, tokens_used integer,
                       created_at timestamptz NOT NULL)
    PARTITION BY RANGE (created_at);
SELECT msgbilling.attach('messages');
DROP TABLE messages;
-- a key of the wrong type
CREATE TABLE messages (id text, org_id bigint, tokens_used integer,
                       created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at))
    PARTITION BY RANGE (created_at);
SELECT msgbilling.attach('messages');
DROP TABLE messages;

-------------------------------------------------------------------------------
-- Org id types (what a parallel restore depends on)
-------------------------------------------------------------------------------

-- Wallets of text org ids take the type of a table attached later when
-- every id is one of that type (a parallel pg_restore loads the wallets
-- before or after the configuration row), and are refused otherwise.
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
CREATE EXTENSION msgbilling;
CREATE TABLE t_text (id bigint PRIMARY KEY, org_id text NOT NULL, tokens_used integer);
CREATE TABLE t_big (id bigint PRIMARY KEY, org_id bigint NOT NULL, tokens_used integer);
SET client_min_messages = warning;
SELECT msgbilling.attach('t_text');
SELECT msgbilling.top_up('acme', 1);
SELECT msgbilling.detach('t_text');
SELECT msgbilling.attach('t_big');
SET msgbilling.repair = on;
DELETE FROM msgbilling.ledger;
DELETE FROM msgbilling.credits;
RESET msgbilling.repair;
SELECT msgbilling.attach('t_text');
SELECT msgbilling.top_up('42', 1);
SELECT msgbilling.detach('t_text');
SELECT msgbilling.attach('t_big');
RESET client_min_messages;
SELECT org_id, pg_typeof(org_id), balance FROM msgbilling.credits;
SELECT msgbilling.detach('t_big');
DROP TABLE t_text, t_big;

DROP FUNCTION wrong_costs();
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
