--
-- null_org.sql: messages whose org column is NULL.
--
-- The guide's table has "org_id uuid" without NOT NULL, and attach accepts
-- it.  A message without an org fails alone with no_org, by every billing
-- path, and the orgs billed with it are billed as if it were not there.
-- (1.0 crashed the server on the first one; with a bigint org column it
-- took NULL as org 0 and failed the whole batch.)
--
CREATE EXTENSION msgbilling;
\set VERBOSITY default
\set SHOW_CONTEXT never

-------------------------------------------------------------------------------
-- uuid orgs, nullable, as in the guide
-------------------------------------------------------------------------------

CREATE TABLE messages (
    id uuid PRIMARY KEY,
    org_id uuid,
    tokens_used integer,
    created_at timestamptz NOT NULL
);
SELECT msgbilling.attach('messages', created_column => 'created_at');
SELECT msgbilling.set_price(NULL, 0.01, '2024-01-01') > 0 AS priced;
\set a '''aaaaaaaa-0000-0000-0000-000000000000'''
\set b '''bbbbbbbb-0000-0000-0000-000000000000'''
SELECT msgbilling.top_up(:a, 10);
SELECT msgbilling.top_up(:b, 10);

-- A run over all orgs: the NULL-org messages, oldest first among them,
-- fail with no_org; a's and b's are charged.
INSERT INTO messages VALUES
    ('00000000-0000-0000-0000-000000000001', :a, 100, '2024-02-01 10:00'),
    ('00000000-0000-0000-0000-000000000002', NULL, 100, '2024-02-01 10:01'),
    ('00000000-0000-0000-0000-000000000003', :b, 100, '2024-02-01 10:02'),
    ('00000000-0000-0000-0000-000000000004', NULL, 100, '2024-02-01 10:03'),
    ('00000000-0000-0000-0000-000000000005', :a, 100, '2024-02-01 10:04');
SELECT * FROM msgbilling.process_all_pending();
SELECT right(id::text, 1) AS id, org_id IS NULL AS no_org, billing_status,
       cost_credits, billing_error
  FROM messages ORDER BY id;
-- A run of one org never sees them.
INSERT INTO messages VALUES
    ('00000000-0000-0000-0000-000000000006', NULL, 1, '2024-02-01 10:05'),
    ('00000000-0000-0000-0000-000000000007', :a, 1, '2024-02-01 10:06');
SELECT * FROM msgbilling.process_all_pending(:a);
-- One message: its status.
SELECT msgbilling.process_message_billing('00000000-0000-0000-0000-000000000006'::uuid);
-- Given ids: the NULL-org one fails, the others are charged.
INSERT INTO messages VALUES
    ('00000000-0000-0000-0000-000000000008', NULL, 1, '2024-02-01 10:07'),
    ('00000000-0000-0000-0000-000000000009', :b, 1, '2024-02-01 10:08');
SELECT * FROM msgbilling.process_batch_billing(
    ARRAY['00000000-0000-0000-0000-000000000008',
          '00000000-0000-0000-0000-000000000009']::uuid[]);
-- Asked for again, a no_org failure fails again; once the app sets its
-- org, it is charged like any other.
SELECT msgbilling.process_message_billing('00000000-0000-0000-0000-000000000008'::uuid);
UPDATE messages SET org_id = :b WHERE id = '00000000-0000-0000-0000-000000000008';
SELECT msgbilling.process_message_billing('00000000-0000-0000-0000-000000000008'::uuid);
-- retry_failed makes the others pending again; they fail again.
SELECT msgbilling.retry_failed();
CALL msgbilling.drain();
SELECT billing_status, billing_error, count(*)
  FROM messages GROUP BY 1, 2 ORDER BY 1, 2;

-- The app's trigger: a NULL-org INSERT by the app's role goes through, its
-- message failed, and the row inserted with it is charged.
CREATE ROLE regress_mb_nullorg_app;
GRANT INSERT, SELECT ON messages TO regress_mb_nullorg_app;
CREATE TRIGGER bill_all AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION msgbilling.bill_on_insert();
SET ROLE regress_mb_nullorg_app;
INSERT INTO messages VALUES
    ('00000000-0000-0000-0000-000000000010', NULL, 1, '2024-02-01 10:09'),
    ('00000000-0000-0000-0000-000000000011', :a, 1, '2024-02-01 10:10');
RESET ROLE;
DROP TRIGGER bill_all ON messages;
CREATE TRIGGER bill_each AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION msgbilling.bill_on_insert();
SET ROLE regress_mb_nullorg_app;
INSERT INTO messages VALUES
    ('00000000-0000-0000-0000-000000000012', NULL, 1, '2024-02-01 10:11');
RESET ROLE;
DROP TRIGGER bill_each ON messages;
SELECT right(id::text, 2) AS id, org_id IS NULL AS no_org, billing_status,
       billing_error
  FROM messages WHERE id >= '00000000-0000-0000-0000-000000000010' ORDER BY id;

-- refund of a message without an org: refused, whatever its status.
SELECT msgbilling.refund('00000000-0000-0000-0000-000000000002'::uuid);
INSERT INTO messages VALUES
    ('00000000-0000-0000-0000-000000000013', NULL, 1, '2024-02-01 10:12');
SELECT msgbilling.refund('00000000-0000-0000-0000-000000000013'::uuid);
-- A charged message whose cost or ledger entry a repair set to NULL: the
-- refund says there is no charge to refund, and moves nothing.
SET msgbilling.repair = on;
UPDATE messages SET cost_credits = NULL WHERE id = '00000000-0000-0000-0000-000000000001';
UPDATE messages SET billing_ledger_id = NULL WHERE id = '00000000-0000-0000-0000-000000000005';
UPDATE messages SET billing_ledger_id = -1 WHERE id = '00000000-0000-0000-0000-000000000003';
RESET msgbilling.repair;
SELECT msgbilling.refund('00000000-0000-0000-0000-000000000001'::uuid);
SELECT msgbilling.refund('00000000-0000-0000-0000-000000000005'::uuid);
SELECT msgbilling.refund('00000000-0000-0000-0000-000000000003'::uuid);
SELECT count(*) AS refunds FROM msgbilling.ledger WHERE kind = 'refund';
-- verify() names what the repairs broke, and nothing else.
SELECT check_name FROM msgbilling.verify() WHERE NOT ok ORDER BY 1;
SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;
-- the wallets keep their uuid org ids: start again for bigint ones
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
CREATE EXTENSION msgbilling;

-------------------------------------------------------------------------------
-- bigint orgs, nullable: NULL is not org 0
-------------------------------------------------------------------------------

CREATE TABLE messages (
    id bigint PRIMARY KEY,
    org_id bigint,
    tokens_used integer
);
SELECT msgbilling.attach('messages');
SELECT msgbilling.set_price(NULL, 0.01, '2024-01-01') > 0 AS priced;
SELECT msgbilling.top_up(0, 10);
SELECT msgbilling.top_up(1, 10);
SELECT msgbilling.top_up(2, 10);
INSERT INTO messages VALUES (1, 0, 100), (2, NULL, 100), (3, 1, 100),
                            (4, 2, 100), (5, NULL, 100);
SELECT * FROM msgbilling.process_all_pending();
SELECT id, org_id, billing_status, cost_credits, billing_error
  FROM messages ORDER BY id;
SELECT org_id, balance FROM msgbilling.credits ORDER BY org_id;
SELECT check_name, ok FROM msgbilling.verify();

SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;
DROP ROLE regress_mb_nullorg_app;
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
