--
-- privileges.sql: who may move money, bill, and read billing data
--
-- Nothing that moves money or reads billing data is granted to PUBLIC: the
-- extension's owner grants the functions a role needs by name.  PUBLIC has
-- USAGE on the schema and EXECUTE on the _decided_* look-ups, which the
-- attached table's owner runs in billing's writes (owner.c) and which
-- answer nothing outside them (hostile.sql, H67).  The SECURITY DEFINER
-- functions pin their search_path, and no msgbilling table or sequence is
-- readable or writable by anyone but its owner.
--
CREATE EXTENSION msgbilling;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE messages (
    id bigint PRIMARY KEY,
    org_id bigint NOT NULL,
    tokens_used integer,
    model text,
    created_at timestamptz NOT NULL DEFAULT '2024-01-01 00:00+00'
);
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');
SELECT msgbilling.set_price(NULL, 0.001, '2000-01-01 00:00+00');
INSERT INTO messages (id, org_id, tokens_used, model) VALUES
    (1, 1, 1000, 'm'), (2, 1, 2000, 'm'), (3, 1, 3000, 'm'), (4, 2, 1000, 'm');

CREATE ROLE regress_mb_nobody;
CREATE ROLE regress_mb_biller;
CREATE ROLE regress_mb_app;

-------------------------------------------------------------------------------
-- No function or procedure of msgbilling is executable by PUBLIC, but for
-- the _decided_* look-ups and _require_cron
-------------------------------------------------------------------------------

-- Every routine in the schema: whether PUBLIC holds EXECUTE in its ACL, and
-- whether a fresh role (which has only what PUBLIC has) may run it.
SELECT p.oid::regprocedure AS routine,
       p.prokind AS kind,
       p.prosecdef AS security_definer,
       EXISTS (SELECT 1
                 FROM aclexplode(COALESCE(p.proacl,
                                          acldefault('f', p.proowner))) a
                WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
           AS public_execute,
       has_function_privilege('regress_mb_nobody', p.oid, 'EXECUTE')
           AS nobody_execute
  FROM pg_proc p
 WHERE p.pronamespace = 'msgbilling'::regnamespace
 ORDER BY p.proname, p.oid::regprocedure::text;

-- PUBLIC's USAGE on the schema lets the fresh role name them; every call
-- fails on EXECUTE.
SET ROLE regress_mb_nobody;
-- money
SELECT msgbilling.top_up(1, 10);
SELECT msgbilling.adjust(1, 10, 'free credits');
SELECT msgbilling.set_overdraft(1, 1000);
SELECT msgbilling.refund(1);
SELECT msgbilling.retry_failed();
-- billing
SELECT msgbilling.process_message_billing(1);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[1, 2]);
SELECT * FROM msgbilling.process_all_pending();
CALL msgbilling.drain();
-- prices
SELECT msgbilling.set_price(NULL, 0);
SELECT msgbilling.price_at('m');
-- the app's table
SELECT msgbilling.attach('messages');
SELECT msgbilling.detach('messages', drop_columns => true, force => true);
-- billing data
SELECT * FROM msgbilling.stats();
SELECT * FROM msgbilling.history(1);
SELECT * FROM msgbilling.verify();
SELECT msgbilling.balance(1);
-- the internal helpers of attach
SELECT msgbilling._set_org_type('text');
-- and the tables themselves
SELECT * FROM msgbilling.credits;
SELECT * FROM msgbilling.ledger;
SELECT * FROM msgbilling.prices;
SELECT * FROM msgbilling.config;
INSERT INTO msgbilling.credits (org_id, balance) VALUES (1, 1000000);
UPDATE msgbilling.credits SET balance = 1000000;
DELETE FROM msgbilling.config;
SELECT nextval('msgbilling.ledger_id_seq');
RESET ROLE;
-- none of that did anything
SELECT count(*) AS wallets FROM msgbilling.credits;
SELECT count(*) AS ledger_entries FROM msgbilling.ledger;
SELECT count(*) AS prices FROM msgbilling.prices;
SELECT messages FROM msgbilling.config;
SELECT id, billing_status FROM messages ORDER BY id;

-------------------------------------------------------------------------------
-- No msgbilling table or sequence is accessible to PUBLIC
-------------------------------------------------------------------------------

SELECT c.oid::regclass AS relation,
       c.relkind AS kind,
       EXISTS (SELECT 1
                 FROM aclexplode(COALESCE(c.relacl,
                          acldefault(CASE WHEN c.relkind = 'S' THEN 's'
                                          ELSE 'r' END::"char",
                                     c.relowner))) a
                WHERE a.grantee = 0) AS public_has_any,
       CASE WHEN c.relkind = 'S'
            THEN has_sequence_privilege('regress_mb_nobody', c.oid,
                                        'SELECT, USAGE, UPDATE')
            ELSE has_table_privilege('regress_mb_nobody', c.oid,
                     'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
       END AS nobody_has_any
  FROM pg_class c
 WHERE c.relnamespace = 'msgbilling'::regnamespace
   AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
 ORDER BY c.relname;

-------------------------------------------------------------------------------
-- Every SECURITY DEFINER routine pins search_path
-------------------------------------------------------------------------------

SELECT p.oid::regprocedure AS routine, p.proconfig
  FROM pg_proc p
 WHERE p.pronamespace = 'msgbilling'::regnamespace AND p.prosecdef
 ORDER BY p.proname, p.oid::regprocedure::text;
-- none without it
SELECT p.oid::regprocedure AS unpinned
  FROM pg_proc p
 WHERE p.pronamespace = 'msgbilling'::regnamespace AND p.prosecdef
   AND (p.proconfig IS NULL
        OR NOT ('search_path=pg_catalog, pg_temp' = ANY (p.proconfig)));
-- and none of them is owned by a role other than the extension's owner
SELECT count(*) AS foreign_owned
  FROM pg_proc p, pg_extension e
 WHERE e.extname = 'msgbilling'
   AND p.pronamespace = 'msgbilling'::regnamespace
   AND p.proowner <> e.extowner;

-------------------------------------------------------------------------------
-- A billing role: granted the billing functions, it can bill
-------------------------------------------------------------------------------

GRANT USAGE ON SCHEMA msgbilling TO regress_mb_biller;
GRANT EXECUTE ON FUNCTION
    msgbilling.top_up("any", numeric, text, text),
    msgbilling.balance("any"),
    msgbilling.retry_failed("any"),
    msgbilling.process_message_billing("any"),
    msgbilling.process_batch_billing("any"),
    msgbilling.process_all_pending("any", bigint, integer, integer)
    TO regress_mb_biller;
SELECT has_function_privilege('regress_mb_biller',
           'msgbilling.process_all_pending("any", bigint, integer, integer)', 'EXECUTE')
           AS biller_may_bill,
       has_function_privilege('regress_mb_nobody',
           'msgbilling.process_all_pending("any", bigint, integer, integer)', 'EXECUTE')
           AS nobody_may_bill;

SET ROLE regress_mb_biller;
SELECT msgbilling.top_up(1, 4);
SELECT msgbilling.process_message_billing(1);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[2, 3]);
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.balance(1);
SELECT msgbilling.top_up(2, 5);
SELECT msgbilling.retry_failed(2);
SELECT * FROM msgbilling.process_all_pending(2);
SELECT msgbilling.balance(2);
-- billing runs as the extension's owner: the biller needs no privilege on
-- the app's table or on msgbilling's tables, and gets none
SELECT count(*) FROM messages;
SELECT * FROM msgbilling.credits;
UPDATE msgbilling.credits SET balance = 1000000;
-- nor any function it was not granted
SELECT msgbilling.adjust(1, 100, 'bonus');
SELECT msgbilling.set_price(NULL, 0);
SELECT * FROM msgbilling.stats();
RESET ROLE;
SELECT id, org_id, billing_status, cost_credits, billing_error
  FROM messages ORDER BY id;

-- drain is a procedure, not SECURITY DEFINER: a SECURITY DEFINER routine
-- cannot commit, and drain commits after every batch.  It bills each batch
-- through process_all_pending (SECURITY DEFINER, search_path pinned), so
-- its caller needs EXECUTE on both and no table privileges.
INSERT INTO messages (id, org_id, tokens_used, model) VALUES (5, 2, 1000, 'm');
GRANT EXECUTE ON PROCEDURE msgbilling.drain(integer, "any", integer) TO regress_mb_biller;
REVOKE EXECUTE ON FUNCTION msgbilling.process_all_pending("any", bigint, integer, integer)
    FROM regress_mb_biller;
SET ROLE regress_mb_biller;
CALL msgbilling.drain();
RESET ROLE;
GRANT EXECUTE ON FUNCTION msgbilling.process_all_pending("any", bigint, integer, integer)
    TO regress_mb_biller;
SET ROLE regress_mb_biller;
CALL msgbilling.drain();
RESET ROLE;
SELECT id, billing_status, cost_credits FROM messages WHERE id = 5;

-------------------------------------------------------------------------------
-- An app role: inserts messages and reads its billing, nothing else
-------------------------------------------------------------------------------

GRANT INSERT ON messages TO regress_mb_app;
GRANT USAGE ON SCHEMA msgbilling TO regress_mb_app;
GRANT EXECUTE ON FUNCTION
    msgbilling.stats("any"),
    msgbilling.history("any", integer, timestamptz)
    TO regress_mb_app;

SET ROLE regress_mb_app;
INSERT INTO messages (id, org_id, tokens_used, model, created_at)
VALUES (6, 1, 500, 'm', '2024-01-02 00:00+00');
-- it may not read the messages yet: an org's billing data is for roles
-- that may read that org's messages (sql/tenants.sql), so org 1 looks
-- empty to it
SELECT * FROM msgbilling.stats(1);
RESET ROLE;
GRANT SELECT ON messages TO regress_mb_app;
SET ROLE regress_mb_app;
-- every org's at once is for roles granted billing
SELECT * FROM msgbilling.stats();
SELECT * FROM msgbilling.stats(1);
SELECT message_id, created_at, tokens, model, cost_credits, billing_status,
       charged_at IS NOT NULL AS charged, failure_reason
  FROM msgbilling.history(1);
SELECT message_id, billing_status, failure_reason
  FROM msgbilling.history(2, 1, '2024-01-02 00:00+00');
-- but it cannot move money, bill, or read the tables behind the reports
SELECT msgbilling.top_up(1, 10);
SELECT msgbilling.balance(1);
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.process_message_billing(6);
SELECT * FROM msgbilling.verify();
SELECT * FROM msgbilling.ledger;
RESET ROLE;
SELECT id, billing_status FROM messages WHERE id = 6;

-- the books still reconcile
SELECT * FROM msgbilling.verify();

-------------------------------------------------------------------------------
-- Clean up
-------------------------------------------------------------------------------

SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages;
DROP EXTENSION msgbilling;
-- The schema was created by CREATE EXTENSION from the control file but is
-- not a member of the extension: it outlives DROP EXTENSION, with the
-- USAGE grants above, and those would block DROP ROLE.
DROP SCHEMA msgbilling;
DROP ROLE regress_mb_nobody, regress_mb_biller, regress_mb_app;
