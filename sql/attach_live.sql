--
-- attach_live.sql: attaching a large table while the app writes to it.
--
-- attach(concurrently => true) changes only the catalog (columns with
-- constant defaults, triggers, the configuration): no scan of the table,
-- no index built, so the app's INSERTs wait milliseconds (bench W7).  The
-- indexes are built CONCURRENTLY afterwards, by the statements
-- attach_index_statements() returns (psql's \gexec runs them); billing
-- waits for them, with an error that says so.
--
CREATE EXTENSION msgbilling;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id bigint NOT NULL,
    tokens_used integer,
    created_at timestamptz DEFAULT now()
);
CREATE INDEX ON messages (org_id);
INSERT INTO messages (org_id, tokens_used, created_at)
SELECT 1 + i % 3, i, '2024-01-01'::timestamptz + i * interval '1 s'
  FROM generate_series(1, 1000) i;

-- Existing messages cannot be billed by a live attach: marking them would
-- write every row.
SELECT msgbilling.attach('messages', created_column => 'created_at',
                         bill_existing => true, concurrently => true);
-- A nullable created column must be proven NOT NULL without a scan first.
SELECT msgbilling.attach('messages', created_column => 'created_at',
                         concurrently => true);
ALTER TABLE messages ADD CONSTRAINT created_at_not_null
    CHECK (created_at IS NOT NULL) NOT VALID;
ALTER TABLE messages VALIDATE CONSTRAINT created_at_not_null;
SELECT msgbilling.attach('messages', created_column => 'created_at',
                         concurrently => true);
-- no index of msgbilling's yet; the columns and guards are there
SELECT count(*) AS mb_indexes FROM pg_indexes
 WHERE tablename = 'messages' AND indexname LIKE '%\_mb\_%';
SELECT billing_status, count(*) FROM messages GROUP BY 1;
SELECT count(*) AS guards FROM pg_trigger
 WHERE tgrelid = 'messages'::regclass AND tgname LIKE 'msgbilling_guard_%';

-- New messages are pending; billing waits for the indexes.
SELECT msgbilling.set_price(NULL, 0.001, '2020-01-01') > 0 AS priced;
SELECT msgbilling.top_up(1, 100);
INSERT INTO messages (org_id, tokens_used, created_at) VALUES (1, 10, '2024-02-01');
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.process_message_billing(1001);
-- what is left to build
SELECT msgbilling.attach_index_statements();
SELECT msgbilling.attach_index_statements() \gexec
SELECT count(*) AS left_to_build FROM msgbilling.attach_index_statements();
SELECT * FROM msgbilling.process_all_pending();
-- a concurrent build that failed leaves an invalid index, which the
-- statements drop and build again
SELECT msgbilling.detach('messages');
SELECT msgbilling.attach('messages', created_column => 'created_at',
                         concurrently => true);
CREATE INDEX messages_mb_failed ON messages (org_id) WHERE billing_status = 'failed';
UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'messages_mb_failed'::regclass;
SELECT msgbilling.attach_index_statements();
SELECT msgbilling.attach_index_statements() \gexec
SELECT count(*) AS left_to_build FROM msgbilling.attach_index_statements();
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;
-- The org column's type cannot change under billing (the guard on it says
-- so), where it used to give a raw "operator does not exist" at the next
-- billing call; detach, change it, attach again.
ALTER TABLE messages ALTER COLUMN org_id TYPE text;
SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;

-- A partitioned table: each index is made ON ONLY the table, built
-- concurrently on each partition and attached there.
CREATE TABLE messages (
    id bigserial,
    org_id bigint NOT NULL,
    tokens_used integer,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE messages_a PARTITION OF messages
    FOR VALUES FROM ('2024-01-01 00:00+00') TO ('2024-02-01 00:00+00');
CREATE TABLE messages_b PARTITION OF messages
    FOR VALUES FROM ('2024-02-01 00:00+00') TO ('2024-03-01 00:00+00');
INSERT INTO messages (org_id, tokens_used, created_at)
SELECT 1, 1, '2024-01-15 00:00+00'::timestamptz + i * interval '1 day' FROM generate_series(1, 20) i;
SET client_min_messages = warning;
SELECT msgbilling.attach('messages', created_column => 'created_at', concurrently => true);
RESET client_min_messages;
SELECT regexp_replace(s, 'mb_[0-9]+_', 'mb_<oid>_', 'g') AS statement
  FROM msgbilling.attach_index_statements() s;
-- (the partitions' index names hold their OIDs: not echoed)
\set ECHO none
SELECT msgbilling.attach_index_statements() \gexec
\set ECHO all
SELECT count(*) AS left_to_build FROM msgbilling.attach_index_statements();
INSERT INTO messages (org_id, tokens_used, created_at) VALUES (1, 10, '2024-02-20 00:00+00');
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;

DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
