-- CALL msgbilling.drain(): batches, each its own transaction.
-- CONTEXT lines would tie this file to the text of internal statements.
\set SHOW_CONTEXT never
CREATE EXTENSION msgbilling;
CREATE TABLE messages (
    id bigint PRIMARY KEY,
    org_id uuid NOT NULL,
    tokens_used integer,
    created_at timestamptz NOT NULL
);
SELECT msgbilling.attach('messages', created_column => 'created_at');
SELECT msgbilling.set_price(NULL, 0.01, '2024-01-01') > 0 AS priced;
\set a '''aaaaaaaa-0000-0000-0000-000000000000'''
\set b '''bbbbbbbb-0000-0000-0000-000000000000'''
SELECT msgbilling.top_up(:a, 100);
SELECT msgbilling.top_up(:b, 100);
INSERT INTO messages
SELECT i, CASE WHEN i <= 6 THEN :a::uuid ELSE :b::uuid END, 10,
       '2024-02-01'::timestamptz + i * interval '1 minute'
  FROM generate_series(1, 9) i;

-- Bad arguments.
CALL msgbilling.drain(0);
CALL msgbilling.drain(1000001);
CALL msgbilling.drain(NULL);
CALL msgbilling.drain(10, 42);
CALL msgbilling.drain(10, 'not-a-uuid');

-- Inside a transaction block drain cannot commit: it bills in the
-- caller's transaction, and a rollback undoes all of it.
BEGIN;
CALL msgbilling.drain(2);
SELECT count(*) FILTER (WHERE billing_status = 'charged') AS charged FROM messages;
ROLLBACK;
SELECT count(*) FILTER (WHERE billing_status = 'pending') AS pending FROM messages;

-- A batch is all or nothing, and the batches before a failing one stay
-- committed: make the third batch (messages 5 and 6) fail.
CREATE FUNCTION refuse_five() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id = 5 AND NEW.billing_status = 'charged' THEN
        RAISE EXCEPTION 'simulated failure billing message 5';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_five BEFORE UPDATE ON messages
    FOR EACH ROW EXECUTE FUNCTION refuse_five();
CALL msgbilling.drain(2, :a);
SELECT id, billing_status FROM messages WHERE org_id = :a ORDER BY id;
SELECT message_count FROM msgbilling.ledger WHERE kind = 'charge' ORDER BY id;
SELECT check_name, ok FROM msgbilling.verify();
DROP TRIGGER refuse_five ON messages;

-- The org-scoped drain billed only its org; the rest goes now.
CALL msgbilling.drain(2);
SELECT org_id, count(*) AS charge_entries, sum(message_count) AS messages
  FROM msgbilling.ledger WHERE kind = 'charge' GROUP BY org_id ORDER BY org_id;
SELECT billing_status, count(*) FROM messages GROUP BY 1;
-- Order holds across batch boundaries: c can pay 1.00; its first message
-- costs 2.00 and fails, so its cheaper second one, in the next batch of
-- the same drain, fails too.
\set c '''cccccccc-0000-0000-0000-000000000000'''
SELECT msgbilling.top_up(:c, 1);
INSERT INTO messages VALUES (20, :c, 200, '2024-02-02 10:00'),
                            (21, :c, 10, '2024-02-02 10:01');
CALL msgbilling.drain(1);
SELECT id, billing_status, billing_error FROM messages WHERE id >= 20 ORDER BY id;
-- Progress on request: a NOTICE every N batches.
INSERT INTO messages SELECT 100 + i, :a::uuid, 1, '2024-03-01'::timestamptz + i * interval '1 s'
  FROM generate_series(1, 6) i;
SET msgbilling.drain_progress = 1;
CALL msgbilling.drain(2, :a);
RESET msgbilling.drain_progress;
-- A run bills org by org, the org with the oldest message first: with d's
-- and e's messages interleaved (d's first), a batch of 4 takes d's three
-- and e's oldest, in two charge entries; e's other two come next, in one.
\set d '\'dddddddd-0000-0000-0000-000000000000\''
\set e '\'eeeeeeee-0000-0000-0000-000000000000\''
SELECT msgbilling.top_up(:d, 10), msgbilling.top_up(:e, 10);
INSERT INTO messages
SELECT 30 + i, CASE WHEN i % 2 = 0 THEN :d::uuid ELSE :e::uuid END, 1,
       '2024-04-01'::timestamptz + i * interval '1 s'
  FROM generate_series(0, 5) i;
SELECT * FROM msgbilling.process_all_pending(max_messages => 4);
SELECT id, org_id = :d AS of_d, billing_status FROM messages
 WHERE id BETWEEN 30 AND 35 ORDER BY id;
SELECT * FROM msgbilling.process_all_pending();
SELECT org_id = :d AS of_d, message_count FROM msgbilling.ledger
 WHERE kind = 'charge' AND org_id IN (:d, :e) ORDER BY id;
-- A session's billing does not offer its core to waiting processes by
-- default (the workers do, every msgbilling.worker_yield_interval).
-- Offering it at every chance (every 16 rows of a statement and before
-- every statement) bills the same: the next part runs that way.
SHOW msgbilling.yield_interval;
SET msgbilling.yield_interval = '1us';
SHOW msgbilling.yield_interval;
-- More orgs than a run peeks at (1,000 messages): 1,500 orgs of one
-- message each, none with a wallet (each fails no_wallet).  A run goes on
-- past its first batch, which saw only some of them; so does drain past a
-- commit interval it filled.
INSERT INTO messages SELECT 1000 + i, md5(i::text)::uuid, 1,
       '2024-05-01'::timestamptz + i * interval '1 s'
  FROM generate_series(1, 1500) i;
SELECT charged, failed, skipped FROM msgbilling.process_all_pending();
SELECT msgbilling.retry_failed() AS pending_again;
CALL msgbilling.drain(1200);
SELECT billing_status, billing_error, count(*) FROM messages
 WHERE id > 1000 GROUP BY 1, 2;
-- And so does never offering it, as by default.
RESET msgbilling.yield_interval;
INSERT INTO messages SELECT 3000 + i, :d::uuid, 1, '2024-06-01'::timestamptz + i * interval '1 s'
  FROM generate_series(1, 40) i;
CALL msgbilling.drain(16);
SELECT billing_status, count(*) FROM messages WHERE id > 3000 GROUP BY 1;
SELECT balance FROM msgbilling.credits WHERE org_id = :d;
-- A session's billing keeps no pace by default either (the workers keep to
-- msgbilling.worker_max_rate).  Kept to 200 messages a second, it sleeps
-- whenever it runs ahead: 60 messages (of an org with no wallet, so they
-- fail) take 0.3 s, less the 10 ms it may make up and the rows counted
-- since its last look at the clock (pace.c).
SHOW msgbilling.max_rate;
SET msgbilling.max_rate = 200;
INSERT INTO messages SELECT 4000 + i, md5('paced')::uuid, 1,
       '2024-07-01'::timestamptz + i * interval '1 s'
  FROM generate_series(1, 60) i;
SELECT clock_timestamp() AS paced_from \gset
CALL msgbilling.drain();
SELECT clock_timestamp() - :'paced_from'::timestamptz >= interval '250 ms'
       AS kept_to_its_rate;
SELECT billing_status, billing_error, count(*) FROM messages
 WHERE id > 4000 GROUP BY 1, 2;
RESET msgbilling.max_rate;
-- A pooled client (PgBouncer in transaction mode) cannot rely on a
-- session setting: the pace and the batch size are arguments too, for the
-- call alone.  drain(max_rate => 200) keeps the same pace; the setting
-- stays as it was.
INSERT INTO messages SELECT 4100 + i, md5('paced')::uuid, 1,
       '2024-07-02'::timestamptz + i * interval '1 s'
  FROM generate_series(1, 60) i;
SELECT clock_timestamp() AS paced_from \gset
CALL msgbilling.drain(max_rate => 200);
SELECT clock_timestamp() - :'paced_from'::timestamptz >= interval '250 ms'
       AS kept_to_its_rate;
SHOW msgbilling.max_rate;
INSERT INTO messages SELECT 4200 + i, md5('paced')::uuid, 1,
       '2024-07-03'::timestamptz + i * interval '1 s'
  FROM generate_series(1, 60) i;
SELECT clock_timestamp() AS paced_from \gset
SELECT failed FROM msgbilling.process_all_pending(max_rate => 200);
SELECT clock_timestamp() - :'paced_from'::timestamptz >= interval '250 ms'
       AS kept_to_its_rate;
SHOW msgbilling.max_rate;
-- batch_size: 10 messages of a funded org in batches of 4 are three
-- charge entries
INSERT INTO messages SELECT 4300 + i, :d::uuid, 1,
       '2024-07-04'::timestamptz + i * interval '1 s'
  FROM generate_series(1, 10) i;
SELECT charged FROM msgbilling.process_all_pending(:d, batch_size => 4);
SELECT message_count FROM msgbilling.ledger
 WHERE kind = 'charge' AND org_id = :d ORDER BY id DESC LIMIT 3;
-- out of range
SELECT * FROM msgbilling.process_all_pending(batch_size => 0);
SELECT * FROM msgbilling.process_all_pending(batch_size => 1000001);
SELECT * FROM msgbilling.process_all_pending(max_rate => -1);
CALL msgbilling.drain(max_rate => -1);
-- The batches before the last commit without waiting for their WAL to
-- reach disk; drain waits for all of them before it returns, as the
-- session's synchronous_commit asks (t/004_crash.pl), and leaves that
-- setting as it was.
SET synchronous_commit = remote_write;
INSERT INTO messages SELECT 5000 + i, :d::uuid, 1,
       '2024-08-01'::timestamptz + i * interval '1 s'
  FROM generate_series(1, 7) i;
CALL msgbilling.drain(3);
SHOW synchronous_commit;
SELECT billing_status, count(*) FROM messages WHERE id > 5000 GROUP BY 1;
SELECT message_count FROM msgbilling.ledger
 WHERE kind = 'charge' AND org_id = :d ORDER BY id DESC LIMIT 3;
RESET synchronous_commit;
-- From its second batch on, a drain's peeks start a minute before the
-- oldest message the last one saw (batch k need not step over the entries
-- of the k batches billed before it).  A message that turns pending later
-- and older than that is billed by one more batch, after a look at the
-- whole backlog, before drain returns.  Here the app's own trigger adds
-- one, an hour older than the rest, when f's first message is charged.
\set f '''ffffffff-0000-0000-0000-000000000000'''
\set g '''99999999-0000-0000-0000-000000000000'''
SELECT msgbilling.top_up(:f, 10), msgbilling.top_up(:g, 10);
INSERT INTO messages SELECT 6000 + i, :f::uuid, 1,
       '2024-09-01'::timestamptz + i * interval '1 minute'
  FROM generate_series(1, 6) i;
CREATE FUNCTION late_old_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.messages VALUES (6100, '99999999-0000-0000-0000-000000000000',
                                        1, '2024-08-31 23:00');
    RETURN NULL;
END $$;
CREATE TRIGGER late_old_message AFTER UPDATE ON messages FOR EACH ROW
  WHEN (NEW.id = 6001 AND OLD.billing_status = 'pending'
        AND NEW.billing_status = 'charged')
  EXECUTE FUNCTION late_old_message();
CALL msgbilling.drain(2);
SELECT id, org_id = :g AS of_g, billing_status FROM messages
 WHERE id > 6000 ORDER BY id;
DROP TRIGGER late_old_message ON messages;
DROP FUNCTION late_old_message();
-- Nothing left: drain returns at once.
CALL msgbilling.drain();
SELECT check_name, ok FROM msgbilling.verify();

SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;
DROP FUNCTION refuse_five();
DROP EXTENSION msgbilling;
