--
-- upgrade.sql: a 1.0 install updated to 1.1.
--
-- Until ALTER EXTENSION msgbilling UPDATE runs, the 1.1 library refuses to
-- bill, move credits or report through 1.0's objects, with an error that
-- says what to run, and the app's INSERTs go on.  The update keeps prices,
-- statuses and the grants a DBA gave on functions 1.1 replaces; billing
-- goes on with what 1.1 fixed.  A fresh install ends up the same as an
-- updated one: the same objects, definitions and privileges.  (t/007 does
-- the same with money in it, billed by the 1.0 library itself.)
--
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Every object of the extension with what defines it (no OIDs), and
-- msgbilling's triggers on the attached table.
CREATE FUNCTION extension_objects() RETURNS TABLE (object text, definition text)
LANGUAGE sql AS $$
    SELECT pg_describe_object(d.classid, d.objid, 0),
           CASE d.classid
           WHEN 'pg_proc'::regclass THEN
               (SELECT pg_get_functiondef(p.oid) || ' acl ' || COALESCE(p.proacl::text, '-')
                  FROM pg_proc p WHERE p.oid = d.objid)
           WHEN 'pg_class'::regclass THEN
               (SELECT c.relkind::text || ' ' || COALESCE(c.relacl::text, '-') || ' '
                       || COALESCE((SELECT string_agg(a.attname || ' '
                                          || format_type(a.atttypid, a.atttypmod)
                                          || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                                          || COALESCE(' default ' || pg_get_expr(ad.adbin, ad.adrelid), ''),
                                          ', ' ORDER BY a.attnum)
                                      FROM pg_attribute a
                                      LEFT JOIN pg_attrdef ad
                                        ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                                     WHERE a.attrelid = c.oid AND a.attnum > 0
                                       AND NOT a.attisdropped), '')
                       || COALESCE((SELECT string_agg(pg_get_constraintdef(k.oid), ', '
                                                      ORDER BY pg_get_constraintdef(k.oid))
                                      FROM pg_constraint k WHERE k.conrelid = c.oid), '')
                       || COALESCE((SELECT string_agg(pg_get_indexdef(x.indexrelid), ', '
                                                      ORDER BY pg_get_indexdef(x.indexrelid))
                                      FROM pg_index x WHERE x.indrelid = c.oid), '')
                       || COALESCE((SELECT string_agg(pg_get_triggerdef(t.oid), ', '
                                                      ORDER BY t.tgname)
                                      FROM pg_trigger t WHERE t.tgrelid = c.oid), '')
                  FROM pg_class c WHERE c.oid = d.objid)
           WHEN 'pg_event_trigger'::regclass THEN
               (SELECT e.evtevent || ' ' || e.evttags::text || ' ' || e.evtfoid::regproc
                       || ' ' || e.evtenabled::text
                  FROM pg_event_trigger e WHERE e.oid = d.objid)
           ELSE '' END
      FROM pg_depend d
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
       -- from PostgreSQL 17 on, the row types of the tables are members
       -- too: the tables stand for them
       AND d.classid <> 'pg_type'::regclass
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'msgbilling')
    UNION ALL
    SELECT 'trigger ' || t.tgname, pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text
      FROM pg_trigger t WHERE t.tgrelid = to_regclass('public.messages')
       AND t.tgname LIKE 'msgbilling%'
    UNION ALL
    SELECT 'config dump', (SELECT array_agg(c::regclass::text ORDER BY c::regclass::text)::text
                             FROM unnest(e.extconfig) c)
      FROM pg_extension e WHERE e.extname = 'msgbilling'
    UNION ALL
    SELECT 'schema acl', nspacl::text FROM pg_namespace WHERE nspname = 'msgbilling'
$$;

-------------------------------------------------------------------------------
-- A 1.0 install under the 1.1 library
-------------------------------------------------------------------------------

CREATE EXTENSION msgbilling VERSION '1.0';
CREATE ROLE regress_mb_upgrade_dba;
CREATE TABLE messages (
    id bigint PRIMARY KEY,
    org_id uuid,
    tokens_used integer,
    created_at timestamptz NOT NULL
);
SELECT msgbilling.attach('messages', created_column => 'created_at');
\set a '\'aaaaaaaa-0000-0000-0000-000000000000\''
\set b '\'bbbbbbbb-0000-0000-0000-000000000000\''
INSERT INTO messages
SELECT i, CASE WHEN i % 2 = 0 THEN :a::uuid ELSE :b::uuid END, 30,
       '2024-02-01'::timestamptz + i * interval '1 minute'
  FROM generate_series(1, 20) i;
-- the library's entry points refuse, saying what to run
SELECT msgbilling.set_price(NULL, 0.01, '2024-01-01');
SELECT msgbilling.top_up(:a, 10, 'card', 'pay_1');
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.process_message_billing(1);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[1, 2]);
CALL msgbilling.drain();
SELECT msgbilling.balance(:a);
SELECT msgbilling.refund(2);
SELECT * FROM msgbilling.stats();
SELECT * FROM msgbilling.verify();
-- objects of a version this library does not know (a newer one's): the
-- hint is to install that library (a new session checks afresh)
UPDATE pg_extension SET extversion = '1.9' WHERE extname = 'msgbilling';
\c
SELECT * FROM msgbilling.process_all_pending();
UPDATE pg_extension SET extversion = '1.0' WHERE extname = 'msgbilling';
\c
\set VERBOSITY default
\set SHOW_CONTEXT never
-- an app trigger that bills on insert warns; the message stays pending
CREATE TRIGGER bill_each AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION msgbilling.bill_on_insert();
INSERT INTO messages VALUES (23, :a, 5, '2024-02-02');
DROP TRIGGER bill_each ON messages;
-- the guards still guard
UPDATE messages SET billing_status = 'charged' WHERE id = 23;
DELETE FROM messages WHERE id = 23;
SELECT billing_status, count(*) FROM messages GROUP BY 1;
-- a grant on a function 1.1 replaces
GRANT USAGE ON SCHEMA msgbilling TO regress_mb_upgrade_dba;
GRANT EXECUTE ON FUNCTION msgbilling.set_price(text, numeric, timestamptz)
    TO regress_mb_upgrade_dba WITH GRANT OPTION;

CREATE TABLE books_before AS
SELECT (SELECT json_agg(m ORDER BY m.id) FROM
          (SELECT id, billing_status, cost_credits, billing_error, billing_ledger_id
             FROM messages) m) AS messages;

-------------------------------------------------------------------------------
-- The update
-------------------------------------------------------------------------------

ALTER EXTENSION msgbilling UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'msgbilling';

-- The messages are as they were; billing goes on.
SELECT b.messages::text = (SELECT json_agg(m ORDER BY m.id) FROM
          (SELECT id, billing_status, cost_credits, billing_error, billing_ledger_id
             FROM messages) m)::text AS messages_kept
  FROM books_before b;
SELECT msgbilling.set_price(NULL, 0.01, '2024-01-01') > 0 AS priced;
SELECT msgbilling.top_up(:a, 10, 'card', 'pay_1');
SELECT msgbilling.top_up(:b, 1);
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.refund(2, 'bad answer');
SELECT check_name, ok FROM msgbilling.verify();
-- The grant on the replaced set_price is kept, grant option and all.
SELECT has_function_privilege('regress_mb_upgrade_dba',
           'msgbilling.set_price(text, numeric, timestamptz)', 'EXECUTE WITH GRANT OPTION')
           AS grant_kept,
       has_function_privilege('public', 'msgbilling.set_price(text, numeric, timestamptz)',
                              'EXECUTE') AS public_may;
-- The attached table got the new guard, and 1.1's fixes work on it: a
-- message without an org fails alone, a refund follows the ledger, a
-- price no message could be billed at is refused.
SELECT tgname FROM pg_trigger WHERE tgrelid = 'messages'::regclass ORDER BY 1;
INSERT INTO messages VALUES (21, NULL, 10, '2024-03-01'), (22, :a, 10, '2024-03-01');
SELECT * FROM msgbilling.process_all_pending();
UPDATE messages SET org_id = :b WHERE id = 4;
SELECT msgbilling.refund(4);
SELECT msgbilling.set_price('m', 10000);
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;

-------------------------------------------------------------------------------
-- Fresh and updated installs are the same
-------------------------------------------------------------------------------

-- (the DBA's grants would differ: they are what the comparison must see)
CREATE TABLE updated_with_grants AS SELECT * FROM extension_objects();
REVOKE EXECUTE ON FUNCTION msgbilling.set_price(text, numeric, timestamptz)
    FROM regress_mb_upgrade_dba CASCADE;
REVOKE USAGE ON SCHEMA msgbilling FROM regress_mb_upgrade_dba;
CREATE TABLE updated AS SELECT * FROM extension_objects();
SELECT msgbilling.detach('messages');
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
CREATE EXTENSION msgbilling;
SELECT extversion FROM pg_extension WHERE extname = 'msgbilling';
SELECT msgbilling.attach('messages', created_column => 'created_at');
CREATE TABLE fresh AS SELECT * FROM extension_objects();
SELECT count(*) AS objects FROM fresh;
(SELECT 'only updated' AS side, * FROM updated EXCEPT SELECT 'only updated', * FROM fresh)
UNION ALL
(SELECT 'only fresh', * FROM fresh EXCEPT SELECT 'only fresh', * FROM updated)
ORDER BY 1, 2;
SELECT object FROM (SELECT * FROM updated_with_grants EXCEPT SELECT * FROM fresh) d
 ORDER BY 1;

SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages, books_before, updated, updated_with_grants, fresh;
DROP FUNCTION extension_objects();
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
DROP ROLE regress_mb_upgrade_dba;
