--
-- retention.sql: apps delete old messages (retention jobs, GDPR).
--
-- Deleting or truncating charged, refunded or legacy messages is allowed,
-- and the books still reconcile: the costs of the billed ones stay in
-- msgbilling.deleted_messages, under their charge entries, and the
-- wallets' counters keep them for stats().  Deleting or truncating pending
-- or failed messages, whose charges are owed, is refused, saying how many
-- and what to do.  With monthly partitions, old months leave by DETACH
-- PARTITION (then DROP TABLE); a partition dropped outright is refused.
--
CREATE EXTENSION msgbilling;
\set VERBOSITY default
\set SHOW_CONTEXT never

-------------------------------------------------------------------------------
-- A plain table: DELETE and TRUNCATE
-------------------------------------------------------------------------------

CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id bigint NOT NULL,
    tokens_used integer,
    created_at timestamptz NOT NULL
);
INSERT INTO messages (org_id, tokens_used, created_at)
VALUES (1, 5, '2023-01-01'), (2, 5, '2023-01-01');           -- legacy
SELECT msgbilling.attach('messages', created_column => 'created_at');
SELECT msgbilling.set_price(NULL, 0.01, '2020-01-01') > 0 AS priced;
SELECT msgbilling.top_up(1, 10);
SELECT msgbilling.top_up(2, 0.5);
INSERT INTO messages (org_id, tokens_used, created_at)
SELECT 1 + i % 2, 10 * i, '2024-01-01'::timestamptz + i * interval '1 day'
  FROM generate_series(1, 10) i;
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.refund(3);
INSERT INTO messages (org_id, tokens_used, created_at) VALUES (1, 1, '2024-06-01');
SELECT billing_status, count(*) FROM messages GROUP BY 1 ORDER BY 1;
CREATE TABLE books AS
SELECT org_id, balance, charged_messages, refunded_messages, credits_charged
  FROM msgbilling.credits;
CREATE FUNCTION books_kept() RETURNS boolean LANGUAGE sql AS $$
    SELECT NOT EXISTS (SELECT org_id, balance, charged_messages, refunded_messages,
                              credits_charged FROM msgbilling.credits
                       EXCEPT SELECT * FROM books)
$$;

-- Owed messages may not go: the whole DELETE is refused.
DELETE FROM messages WHERE created_at < '2024-01-08';
DELETE FROM messages WHERE billing_status = 'failed';
SELECT count(*) AS messages FROM messages;
-- Billed and legacy ones may, and the books reconcile without them.
DELETE FROM messages WHERE created_at < '2024-01-05'
   AND billing_status NOT IN ('pending', 'failed');
SELECT billing_status, count(*) FROM messages GROUP BY 1 ORDER BY 1;
SELECT ledger_id, charged, charged_cost, refunded, refunded_cost
  FROM msgbilling.deleted_messages ORDER BY ledger_id, charged DESC;
SELECT books_kept();
SELECT check_name, ok FROM msgbilling.verify();
-- stats() still counts the deleted charges
SELECT charged, refunded, credits_charged FROM msgbilling.stats(1);
-- A rolled-back DELETE keeps nothing.
BEGIN;
DELETE FROM messages WHERE billing_status = 'charged';
ROLLBACK;
SELECT count(*) AS kept_rows FROM msgbilling.deleted_messages;
-- TRUNCATE is refused while anything is owed...
TRUNCATE messages;
-- ...and allowed once everything is billed or given up on.
SELECT msgbilling.top_up(2, 100);
SELECT * FROM msgbilling.process_all_pending();
SELECT billing_status, count(*) FROM messages GROUP BY 1 ORDER BY 1;
TRUNCATE messages RESTART IDENTITY;
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;
-- Ids start again: a new message 3 is billed and refunded like any other,
-- though the old message 3 was refunded too.
INSERT INTO messages (org_id, tokens_used, created_at)
SELECT 1, 10, '2024-07-01'::timestamptz + i * interval '1 s' FROM generate_series(1, 3) i;
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.refund(3);
SELECT count(*) AS refunds_of_3 FROM msgbilling.ledger
 WHERE kind = 'refund' AND message_id = '3';
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;
-- A superuser's repair may delete anything; what it deletes is its own.
INSERT INTO messages (org_id, tokens_used, created_at) VALUES (1, 1, '2024-08-01');
SET msgbilling.repair = on;
DELETE FROM messages WHERE billing_status = 'pending';
RESET msgbilling.repair;
SELECT count(*) AS pending FROM messages WHERE billing_status = 'pending';

SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages, books;
DROP FUNCTION books_kept();
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
CREATE EXTENSION msgbilling;

-------------------------------------------------------------------------------
-- Monthly partitions: DELETE, TRUNCATE, DETACH and DROP of a month
-------------------------------------------------------------------------------

CREATE TABLE messages (
    id bigserial,
    org_id bigint NOT NULL,
    tokens_used integer,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE messages_2025_01 PARTITION OF messages
    FOR VALUES FROM ('2025-01-01 00:00+00') TO ('2025-02-01 00:00+00');
CREATE TABLE messages_2025_02 PARTITION OF messages
    FOR VALUES FROM ('2025-02-01 00:00+00') TO ('2025-03-01 00:00+00');
SELECT msgbilling.attach('messages', created_column => 'created_at');
-- partitions made after attach get their guards: created as a partition,
-- or attached
CREATE TABLE messages_2025_03 PARTITION OF messages
    FOR VALUES FROM ('2025-03-01 00:00+00') TO ('2025-04-01 00:00+00');
CREATE TABLE messages_2025_04 (LIKE messages INCLUDING DEFAULTS);
ALTER TABLE messages ATTACH PARTITION messages_2025_04
    FOR VALUES FROM ('2025-04-01 00:00+00') TO ('2025-05-01 00:00+00');
SELECT tgrelid::regclass AS partition, count(*) AS guards FROM pg_trigger
 WHERE tgname LIKE 'msgbilling_guard_%' GROUP BY 1 ORDER BY 1;
SELECT msgbilling.set_price(NULL, 0.01, '2020-01-01') > 0 AS priced;
SELECT msgbilling.top_up(1, 1000);
INSERT INTO messages (org_id, tokens_used, created_at)
SELECT 1, 10 * i, ('2025-0' || m || '-05 00:00+00')::timestamptz + i * interval '1 h'
  FROM generate_series(1, 4) m, generate_series(1, 5) i;
SELECT * FROM msgbilling.process_all_pending();
INSERT INTO messages (org_id, tokens_used, created_at) VALUES (1, 1, '2025-04-20 00:00+00');
SELECT msgbilling.refund(1);

-- a DELETE on a partition, and a TRUNCATE of one
DELETE FROM messages_2025_01 WHERE id = 2;
TRUNCATE messages_2025_02;
-- the oldest month leaves by DETACH, then DROP
ALTER TABLE messages DETACH PARTITION messages_2025_01;
DROP TABLE messages_2025_01;
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;
SELECT charged, refunded, credits_charged FROM msgbilling.stats(1);
-- a month dropped outright is refused, even one without messages
DROP TABLE messages_2025_03;
CREATE TABLE messages_2025_05 PARTITION OF messages
    FOR VALUES FROM ('2025-05-01 00:00+00') TO ('2025-06-01 00:00+00');
DROP TABLE messages_2025_05;
-- a month holding an owed message may be neither detached nor truncated
ALTER TABLE messages DETACH PARTITION messages_2025_04;
TRUNCATE messages_2025_04;
TRUNCATE messages;
SELECT tableoid::regclass AS partition, billing_status, count(*)
  FROM messages GROUP BY 1, 2 ORDER BY 1, 2;
-- the books reconcile after all of it
SELECT check_name, ok FROM msgbilling.verify();

SELECT msgbilling.detach('messages', drop_columns => true, force => true);
-- detached from msgbilling, the table and its partitions are the app's again
DROP TABLE messages_2025_05;
DROP TABLE messages;
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
