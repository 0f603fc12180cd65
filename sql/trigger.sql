-- msgbilling.bill_on_insert(): billing inside the app's INSERT.
CREATE EXTENSION msgbilling;
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id integer NOT NULL,
    tokens_used integer
);
SELECT msgbilling.attach('messages');
SELECT msgbilling.set_price(NULL, 1, '2024-01-01') > 0 AS priced;
SELECT msgbilling.top_up(1, 5);

-- Row level: each message is billed within its own INSERT's transaction.
CREATE TRIGGER bill_each AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION msgbilling.bill_on_insert();
BEGIN;
INSERT INTO messages (org_id, tokens_used) VALUES (1, 2);
SELECT id, billing_status, cost_credits FROM messages;
-- A multi-row INSERT: org 1 can pay one more, then runs short; org 2 has
-- no wallet.  The rows fail, the INSERT goes through.
INSERT INTO messages (org_id, tokens_used) VALUES (1, 2), (1, 2), (2, 1);
SELECT id, org_id, billing_status, billing_error FROM messages ORDER BY id;
COMMIT;
SELECT count(*) AS committed FROM messages;
-- A rolled-back INSERT leaves no charge behind.
BEGIN;
INSERT INTO messages (org_id, tokens_used) VALUES (1, 0);
ROLLBACK;
SELECT msgbilling.balance(1);
DROP TRIGGER bill_each ON messages;

-- Statement level: one batch for the whole INSERT.
CREATE TRIGGER bill_all AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION msgbilling.bill_on_insert();
SELECT msgbilling.top_up(1, 10);
-- the top-up made message 3 pending again: it is older than the next
-- INSERT's message, so the trigger bills it first (billing stays in order)
INSERT INTO messages (org_id, tokens_used) VALUES (1, 1);
SELECT id, billing_status FROM messages WHERE id IN (3, 6) ORDER BY id;
SELECT * FROM msgbilling.process_all_pending(1);
INSERT INTO messages (org_id, tokens_used)
SELECT 1, 1 FROM generate_series(1, 4);
SELECT id, billing_status FROM messages WHERE id > 6 ORDER BY id;
-- one charge entry for the four of them
SELECT amount, message_count FROM msgbilling.ledger
 WHERE kind = 'charge' ORDER BY id DESC LIMIT 1;

-- An error inside billing is a WARNING; the rows stay pending and the
-- INSERT commits.
ALTER TABLE messages RENAME COLUMN tokens_used TO tokens;
INSERT INTO messages (org_id, tokens) VALUES (1, 1);
SELECT billing_status FROM messages ORDER BY id DESC LIMIT 1;
ALTER TABLE messages RENAME COLUMN tokens TO tokens_used;
DROP TRIGGER bill_all ON messages;

-- Misuse is an error at the first INSERT.
CREATE TRIGGER bill_before BEFORE INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION msgbilling.bill_on_insert();
INSERT INTO messages (org_id, tokens_used) VALUES (1, 1);
DROP TRIGGER bill_before ON messages;
CREATE TRIGGER bill_update AFTER UPDATE ON messages
    FOR EACH ROW EXECUTE FUNCTION msgbilling.bill_on_insert();
UPDATE messages SET tokens_used = tokens_used WHERE id = 1;
DROP TRIGGER bill_update ON messages;
CREATE TRIGGER bill_stmt AFTER INSERT ON messages
    FOR EACH STATEMENT EXECUTE FUNCTION msgbilling.bill_on_insert();
INSERT INTO messages (org_id, tokens_used) VALUES (1, 1);
DROP TRIGGER bill_stmt ON messages;
SELECT msgbilling.bill_on_insert();
-- on a table that is not the attached one: a warning, the INSERT stands
CREATE TABLE other (id bigint PRIMARY KEY, org_id integer, tokens_used integer);
CREATE TRIGGER bill_other AFTER INSERT ON other
    FOR EACH ROW EXECUTE FUNCTION msgbilling.bill_on_insert();
INSERT INTO other VALUES (1, 1, 1);
SELECT count(*) FROM other;

-- A cancel or a timeout while the trigger bills aborts the INSERT, as it
-- would without the trigger: it is not turned into a warning.  (An app
-- trigger that sleeps in billing's write makes the billing slow.)
CREATE TRIGGER bill_each AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION msgbilling.bill_on_insert();
CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.pg_sleep(5);
    RETURN NEW;
END;
$$;
CREATE TRIGGER slow AFTER UPDATE ON messages
    FOR EACH ROW EXECUTE FUNCTION slow();
SELECT count(*) AS before FROM messages \gset
\set SHOW_CONTEXT never
SET statement_timeout = '200ms';
INSERT INTO messages (org_id, tokens_used) VALUES (1, 1);
RESET statement_timeout;
\set SHOW_CONTEXT errors
SELECT count(*) - :before AS inserted FROM messages;
DROP TRIGGER slow ON messages;
DROP FUNCTION slow();
DROP TRIGGER bill_each ON messages;

SELECT msgbilling.backlog();
SELECT check_name, ok FROM msgbilling.verify();
DROP TABLE other;
SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;
DROP EXTENSION msgbilling;
