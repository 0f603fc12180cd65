--
-- table_owner.sql: the attached table's owner is not a superuser.
--
-- The app's migrations create the messages table, so its owner is an
-- ordinary role, with code of its own on the table (triggers, policies).
-- Billing runs that code as the table's owner in a security-restricted
-- operation, never with msgbilling's privileges (owner.c); FORCE ROW LEVEL
-- SECURITY hides no row from billing.  The org of a billed message is its
-- charge entry's, and a refund follows the ledger.  Guards the owner turns
-- off stay visible in verify().
--
CREATE EXTENSION msgbilling;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE ROLE regress_mb_owner;
CREATE ROLE regress_mb_biller;
GRANT CREATE ON SCHEMA public TO regress_mb_owner;
GRANT EXECUTE ON FUNCTION msgbilling.process_message_billing("any"),
    msgbilling.process_batch_billing("any"),
    msgbilling.process_all_pending("any", bigint, integer, integer),
    msgbilling.refund("any", text), msgbilling.retry_failed("any"),
    msgbilling.top_up("any", numeric, text, text),
    msgbilling.set_price(text, numeric, timestamptz)
    TO regress_mb_biller;
GRANT EXECUTE ON PROCEDURE msgbilling.drain(integer, "any", integer) TO regress_mb_biller;

-- The owner's table: a trigger that records who runs it and tries to make
-- its owner a superuser, and a policy under FORCE that hides every row.
SET ROLE regress_mb_owner;
CREATE TABLE messages (
    id bigint PRIMARY KEY,
    org_id integer,
    tokens_used integer
);
CREATE TABLE trigger_log (at_status text, run_as text, escalation text);
CREATE FUNCTION log_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    outcome text := 'succeeded';
BEGIN
    BEGIN
        EXECUTE 'ALTER ROLE regress_mb_owner SUPERUSER';
    EXCEPTION WHEN OTHERS THEN
        outcome := SQLSTATE;
    END;
    -- billing runs it under search_path pg_catalog, pg_temp: qualify names
    INSERT INTO public.trigger_log VALUES (NEW.billing_status, current_user, outcome);
    RETURN NEW;
END;
$$;
ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
CREATE POLICY nobody ON messages USING (false);
RESET ROLE;
SELECT msgbilling.attach('messages');
SET ROLE regress_mb_owner;
CREATE TRIGGER log_update AFTER UPDATE ON messages
    FOR EACH ROW EXECUTE FUNCTION log_update();
RESET ROLE;
SELECT msgbilling.set_price(NULL, 1, '2024-01-01') > 0 AS priced;
SELECT msgbilling.top_up(1, 6);
SELECT msgbilling.top_up(2, 1);
ALTER TABLE messages DISABLE ROW LEVEL SECURITY;
INSERT INTO messages VALUES (1, 1, 1), (2, 1, 1), (3, 1, 1), (4, 2, 5),
    (5, 1, 1), (6, 1, 1), (7, NULL, 1);
ALTER TABLE messages ENABLE ROW LEVEL SECURITY;

-- Every billing path, called by a role granted billing.
SET ROLE regress_mb_biller;
SELECT msgbilling.process_message_billing(1);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[2, 3]);
SELECT * FROM msgbilling.process_all_pending(2);
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.refund(1);
SELECT msgbilling.top_up(2, 10);    -- org 2's failure is pending again
CALL msgbilling.drain();
SELECT * FROM msgbilling.retry_failed();
SELECT msgbilling.set_price('m', 1) > 0 AS priced;
RESET ROLE;
-- The owner is no superuser; its trigger ran as the owner each time, and
-- each attempt to escalate was refused (42501, insufficient_privilege).
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_mb_owner';
SELECT at_status, run_as, escalation, count(*)
  FROM trigger_log GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
-- Under FORCE ROW LEVEL SECURITY and a policy that hides every row,
-- billing billed every message.
ALTER TABLE messages DISABLE ROW LEVEL SECURITY;
SELECT id, org_id, billing_status, cost_credits, billing_error
  FROM messages ORDER BY id;
ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
SELECT check_name, ok FROM msgbilling.verify();
-- (a superuser's own UPDATE would run the trap as a superuser: gone now)
SET ROLE regress_mb_owner;
DROP TRIGGER log_update ON messages;
RESET ROLE;

-- The guards let billing's own write through, not what the owner's code
-- does inside it: a trigger that, as billing charges a message, marks the
-- org's other pending messages legacy (never to be billed) is refused.
SET ROLE regress_mb_owner;
CREATE FUNCTION hide_others() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        UPDATE public.messages SET billing_status = 'legacy'
         WHERE billing_status = 'pending' AND id <> NEW.id;
        INSERT INTO public.trigger_log VALUES ('hide_others', current_user, 'succeeded');
    EXCEPTION WHEN OTHERS THEN
        INSERT INTO public.trigger_log VALUES ('hide_others', current_user, SQLSTATE);
    END;
    RETURN NEW;
END;
$$;
CREATE TRIGGER hide_others AFTER UPDATE OF billing_status ON messages
    FOR EACH ROW WHEN (NEW.billing_status = 'charged') EXECUTE FUNCTION hide_others();
RESET ROLE;
ALTER TABLE messages DISABLE ROW LEVEL SECURITY;
INSERT INTO messages VALUES (11, 2, 1), (12, 2, 1);
ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
SELECT msgbilling.process_message_billing(11);
SELECT at_status, escalation FROM trigger_log WHERE at_status = 'hide_others';
ALTER TABLE messages DISABLE ROW LEVEL SECURITY;
SELECT id, billing_status FROM messages WHERE id IN (11, 12) ORDER BY id;
SET msgbilling.repair = on;   -- a pending message may not be deleted otherwise
DELETE FROM messages WHERE id = 12;
RESET msgbilling.repair;
ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
SET ROLE regress_mb_owner;
DROP TRIGGER hide_others ON messages;
DROP FUNCTION hide_others();
RESET ROLE;

-- A setting the owner's code changes during billing does not outlive the
-- billing call (owner.c undoes it for the worker, which has no function's
-- SET clause to do it).
SET ROLE regress_mb_owner;
CREATE FUNCTION set_work_mem() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.set_config('work_mem', '64kB', false);
    RETURN NEW;
END;
$$;
CREATE TRIGGER set_work_mem AFTER UPDATE ON messages
    FOR EACH ROW EXECUTE FUNCTION set_work_mem();
RESET ROLE;
ALTER TABLE messages DISABLE ROW LEVEL SECURITY;
INSERT INTO messages VALUES (8, 1, 1);
ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
SET work_mem = '4MB';
SELECT msgbilling.process_message_billing(8);
SHOW work_mem;
SET ROLE regress_mb_owner;
DROP TRIGGER set_work_mem ON messages;
DROP FUNCTION set_work_mem();
RESET ROLE;
-- the rest of this file does not need row level security
ALTER TABLE messages DISABLE ROW LEVEL SECURITY;

-------------------------------------------------------------------------------
-- The org of a billed message; refunds follow the ledger
-------------------------------------------------------------------------------

-- The app may move pending and failed messages, not charged or refunded
-- ones.
INSERT INTO messages VALUES (9, 1, 1), (10, 1, 1);
UPDATE messages SET org_id = 2 WHERE id = 9;
UPDATE messages SET org_id = 2 WHERE id = 7;
UPDATE messages SET org_id = 2 WHERE id = 2;
UPDATE messages SET org_id = 2 WHERE id = 1;
UPDATE messages SET org_id = org_id, tokens_used = 9 WHERE id = 2;
SELECT msgbilling.process_message_billing(10);
-- A superuser's repair can move one; its refund still credits org 1,
-- whose wallet paid, not org 2.
SET msgbilling.repair = on;
UPDATE messages SET org_id = 2 WHERE id = 10;
RESET msgbilling.repair;
SELECT msgbilling.balance(1) AS org_1, msgbilling.balance(2) AS org_2;
SELECT msgbilling.refund(10);
SELECT msgbilling.balance(1) AS org_1, msgbilling.balance(2) AS org_2;
SELECT org_id, kind, amount FROM msgbilling.ledger
 WHERE message_id = '10';
SET msgbilling.repair = on;
UPDATE messages SET org_id = 1 WHERE id = 10;
RESET msgbilling.repair;
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;

-------------------------------------------------------------------------------
-- Guards the owner turns off
-------------------------------------------------------------------------------

-- Disabling a guard warns, and verify() reports it even after it is
-- enabled again, until a superuser who checked the messages clears it.
SET ROLE regress_mb_owner;
ALTER TABLE messages DISABLE TRIGGER msgbilling_guard_update;
UPDATE messages SET billing_status = 'legacy' WHERE id = 9;
ALTER TABLE messages ENABLE TRIGGER msgbilling_guard_update;
RESET ROLE;
SELECT check_name, ok, detail LIKE 'trigger%' AS now,
       detail LIKE '%the guards were off at%' AS since
  FROM msgbilling.verify() WHERE NOT ok;
-- the owner cannot clear it
SET ROLE regress_mb_owner;
UPDATE msgbilling.config SET guards_off_since = NULL;
RESET ROLE;
UPDATE msgbilling.config SET guards_off_since = NULL;
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;
-- The same for a guard enabled for replicas only (it then never fires),
-- for all of them at once, and for a renamed one.
SET ROLE regress_mb_owner;
ALTER TABLE messages ENABLE REPLICA TRIGGER msgbilling_guard_insert;
RESET ROLE;
SELECT check_name, detail LIKE '2 offending%' AS now_and_since
  FROM msgbilling.verify() WHERE NOT ok;
UPDATE msgbilling.config SET guards_off_since = NULL;
SET ROLE regress_mb_owner;
ALTER TABLE messages ENABLE TRIGGER msgbilling_guard_insert;
ALTER TABLE messages DISABLE TRIGGER USER;
ALTER TABLE messages ENABLE TRIGGER USER;
RESET ROLE;
SELECT check_name FROM msgbilling.verify() WHERE NOT ok;
UPDATE msgbilling.config SET guards_off_since = NULL;
SET ROLE regress_mb_owner;
ALTER TRIGGER msgbilling_guard_org ON messages RENAME TO other_name;
ALTER TRIGGER other_name ON messages RENAME TO msgbilling_guard_org;
RESET ROLE;
SELECT check_name FROM msgbilling.verify() WHERE NOT ok;
UPDATE msgbilling.config SET guards_off_since = NULL;
-- A dropped guard cannot be put back by the owner: it stays missing.
SET ROLE regress_mb_owner;
DROP TRIGGER msgbilling_guard_org ON messages;
CREATE TRIGGER msgbilling_guard_org BEFORE UPDATE ON messages
    FOR EACH ROW EXECUTE FUNCTION msgbilling._guard_messages();
RESET ROLE;
SELECT check_name, detail FROM msgbilling.verify() WHERE NOT ok;
-- Other tables' ALTER TABLEs and triggers are not looked at.
CREATE TABLE public.other (x int);
CREATE FUNCTION public.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER t BEFORE INSERT ON other FOR EACH ROW EXECUTE FUNCTION noop();
ALTER TABLE other DISABLE TRIGGER t;
DROP TABLE other;
DROP FUNCTION noop();
SELECT detail FROM msgbilling.verify() WHERE NOT ok;

-- A re-attach puts the guards back, and starts with a clean record.
SELECT msgbilling.detach('messages');
SELECT msgbilling.attach('messages');
SELECT check_name, ok FROM msgbilling.verify() WHERE check_name = 'guards_in_place';

SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages, trigger_log;
DROP FUNCTION log_update();
REVOKE CREATE ON SCHEMA public FROM regress_mb_owner;
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
DROP ROLE regress_mb_owner, regress_mb_biller;
