--
-- attach.sql: msgbilling.attach() and msgbilling.detach()
--
-- Every error path of attach, three supported key/org type combinations,
-- what attach adds to the app's table, detach with and without
-- drop_columns, re-attaching onto kept columns, and DROP EXTENSION leaving
-- the app's table alone.
--
CREATE EXTENSION msgbilling;
-- Errors show ERROR, DETAIL and HINT; CONTEXT lines are left out because
-- they carry PL/pgSQL line numbers that change whenever attach is edited.
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Helpers to inspect a table: its columns, CHECK constraints and indexes.
CREATE FUNCTION attach_columns(rel regclass)
RETURNS TABLE (name name, type text, not_null boolean, "default" text)
LANGUAGE sql STABLE AS $$
    SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
           pg_get_expr(d.adbin, d.adrelid)
      FROM pg_attribute a
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY a.attnum
$$;
CREATE FUNCTION attach_checks(rel regclass)
RETURNS TABLE (name name, definition text)
LANGUAGE sql STABLE AS $$
    SELECT c.conname, pg_get_constraintdef(c.oid)
      FROM pg_constraint c
     WHERE c.conrelid = rel AND c.contype = 'c'
     ORDER BY c.conname
$$;
CREATE FUNCTION attach_indexes(rel regclass)
RETURNS TABLE (name name, definition text)
LANGUAGE sql STABLE AS $$
    SELECT i.indexname, i.indexdef
      FROM pg_indexes i
      JOIN pg_class c ON c.relname = i.tablename
      JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = i.schemaname
     WHERE c.oid = rel
     ORDER BY i.indexname
$$;
-- The type of msgbilling's own org_id columns.
CREATE FUNCTION attach_org_types()
RETURNS TABLE (tab regclass, org_id_type text)
LANGUAGE sql STABLE AS $$
    SELECT a.attrelid::regclass, format_type(a.atttypid, a.atttypmod)
      FROM pg_attribute a
     WHERE a.attrelid IN ('msgbilling.credits'::regclass,
                          'msgbilling.ledger'::regclass)
       AND a.attname = 'org_id'
     ORDER BY a.attrelid::regclass::text
$$;

-------------------------------------------------------------------------------
-- Errors: nothing is attached and nothing is changed
-------------------------------------------------------------------------------

-- NULL table
SELECT msgbilling.attach(NULL);
-- a relation that does not exist fails in the regclass cast
SELECT msgbilling.attach('no_such_table');
-- an OID that names no relation
SELECT msgbilling.attach(4294967295::oid::regclass);

-- a view is not a table
CREATE TABLE app_msgs (
    id bigint PRIMARY KEY,
    org_id uuid,
    tokens_used integer,
    model text,
    created_at timestamptz,
    -- columns of the wrong types for each role
    org_num numeric,
    tokens_txt text,
    model_int integer,
    created_day date
);
CREATE VIEW app_msgs_view AS SELECT * FROM app_msgs;
SELECT msgbilling.attach('app_msgs_view');

-- no primary key
CREATE TABLE no_pk (id bigint, org_id uuid, tokens_used integer);
SELECT msgbilling.attach('no_pk');
-- a unique constraint is not a primary key
ALTER TABLE no_pk ADD UNIQUE (id);
SELECT msgbilling.attach('no_pk');

-- composite primary key
CREATE TABLE composite_pk (
    chat_id bigint,
    seq integer,
    org_id uuid,
    tokens_used integer,
    PRIMARY KEY (chat_id, seq)
);
SELECT msgbilling.attach('composite_pk');

-- primary keys of unsupported types
CREATE TABLE text_pk (id text PRIMARY KEY, org_id uuid, tokens_used integer);
SELECT msgbilling.attach('text_pk');
CREATE TABLE numeric_pk (id numeric PRIMARY KEY, org_id uuid, tokens_used integer);
SELECT msgbilling.attach('numeric_pk');

-- missing columns: the defaults org_id and tokens_used, and named ones
CREATE TABLE other_names (id bigint PRIMARY KEY, tenant uuid, tokens integer);
SELECT msgbilling.attach('other_names');
SELECT msgbilling.attach('other_names', org_column => 'tenant');
SELECT msgbilling.attach('app_msgs', org_column => 'tenant');
SELECT msgbilling.attach('app_msgs', tokens_column => 'tokens');
SELECT msgbilling.attach('app_msgs', model_column => 'model_name');
SELECT msgbilling.attach('app_msgs', created_column => 'inserted_at');
-- the required columns cannot be NULL
SELECT msgbilling.attach('app_msgs', org_column => NULL);
SELECT msgbilling.attach('app_msgs', tokens_column => NULL);

-- columns of unusable types
SELECT msgbilling.attach('app_msgs', org_column => 'org_num');
SELECT msgbilling.attach('app_msgs', tokens_column => 'tokens_txt');
SELECT msgbilling.attach('app_msgs', model_column => 'model_int');
SELECT msgbilling.attach('app_msgs', created_column => 'created_day');

-- none of that attached anything or changed the table
SELECT count(*) AS attached FROM msgbilling.config;
SELECT name FROM attach_columns('app_msgs');
SELECT * FROM attach_checks('app_msgs');
SELECT name FROM attach_indexes('app_msgs');
-- and the wallet tables keep their initial org type
SELECT * FROM attach_org_types();

DROP VIEW app_msgs_view;
DROP TABLE app_msgs, no_pk, composite_pk, text_pk, numeric_pk, other_names;

-------------------------------------------------------------------------------
-- integer keys, bigint orgs; defaults for column names, no model/created
-------------------------------------------------------------------------------

CREATE TABLE int_msgs (
    id integer PRIMARY KEY,
    org_id bigint NOT NULL,
    tokens_used integer CHECK (tokens_used >= 0),
    body text
);
INSERT INTO int_msgs VALUES (1, 100, 10, 'old one'), (2, 200, 20, 'old two');

SELECT msgbilling.attach('int_msgs');

-- the billing columns: existing rows got 'legacy', new ones default to
-- 'pending'
SELECT * FROM attach_columns('int_msgs');
SELECT * FROM attach_checks('int_msgs');
-- without a created column the backlog indexes order by the key
SELECT * FROM attach_indexes('int_msgs');
SELECT messages, key_column, org_column, tokens_column, model_column,
       created_column, index_names
  FROM msgbilling.config;
-- msgbilling's org_id columns follow the app's org type
SELECT * FROM attach_org_types();

SELECT id, org_id, billing_status, cost_credits, charged_at, billing_error,
       billing_ledger_id
  FROM int_msgs ORDER BY id;

-- the guard triggers refuse any status but pending on INSERT, and any
-- change of a billing column, from the app
INSERT INTO int_msgs (id, org_id, tokens_used, billing_status)
VALUES (3, 100, 5, 'paid');
-- and any value in another billing column, even with status pending, and
-- a known status other than pending; one such row fails a multi-row INSERT
INSERT INTO int_msgs (id, org_id, tokens_used, billing_status)
VALUES (3, 100, 5, 'charged');
INSERT INTO int_msgs (id, org_id, tokens_used, cost_credits) VALUES (3, 100, 5, 1);
INSERT INTO int_msgs (id, org_id, tokens_used, charged_at) VALUES (3, 100, 5, now());
INSERT INTO int_msgs (id, org_id, tokens_used, billing_error) VALUES (3, 100, 5, '');
INSERT INTO int_msgs (id, org_id, tokens_used, billing_ledger_id) VALUES (3, 100, 5, 1);
INSERT INTO int_msgs (id, org_id, tokens_used, billing_ledger_id)
VALUES (3, 100, 5, NULL), (4, 100, 5, 1);
SELECT count(*) AS none_inserted FROM int_msgs WHERE id IN (3, 4);
UPDATE int_msgs SET billing_status = 'billed' WHERE id = 1;
UPDATE int_msgs SET cost_credits = 1 WHERE id = 1;
-- an UPDATE of other columns, or one that changes nothing, is fine
UPDATE int_msgs SET body = 'edited' WHERE id = 1;
UPDATE int_msgs SET billing_status = billing_status WHERE id = 1;
INSERT INTO int_msgs (id, org_id, tokens_used, billing_status)
VALUES (3, 100, 5, 'pending');
-- a pending message owes its charge: it may not be deleted (retention.sql)
DELETE FROM int_msgs WHERE id = 3;
-- under the superuser's repair switch it may, and the guard still rejects
-- an unknown status (attach adds no CHECK constraint, which every INSERT
-- would pay for), and lets a known one through
SET msgbilling.repair = on;
DELETE FROM int_msgs WHERE id = 3;
INSERT INTO int_msgs (id, org_id, tokens_used, billing_status)
VALUES (3, 100, 5, 'paid');
UPDATE int_msgs SET billing_status = 'billed' WHERE id = 1;
UPDATE int_msgs SET billing_status = 'Legacy' WHERE id = 1;
BEGIN;
UPDATE int_msgs SET billing_status = 'legacy' WHERE id = 1;
INSERT INTO int_msgs (id, org_id, tokens_used, billing_status, cost_credits)
VALUES (3, 100, 5, 'charged', 0.5);
SELECT id, billing_status, cost_credits FROM int_msgs WHERE id IN (1, 3) ORDER BY id;
ROLLBACK;
-- and the status cannot be NULL
UPDATE int_msgs SET billing_status = NULL WHERE id = 1;
-- statuses longer than 20 characters do not fit
UPDATE int_msgs SET billing_status = 'pending-for-a-very-long-time' WHERE id = 1;
RESET msgbilling.repair;

-- only one table per database: the error names the attached one, and the
-- same table cannot be attached twice either
CREATE TABLE second_msgs (id bigint PRIMARY KEY, org_id bigint, tokens_used integer);
SELECT msgbilling.attach('second_msgs');
SELECT msgbilling.attach('int_msgs');
-- a view is refused as "already attached" too: that check comes first
CREATE VIEW second_view AS SELECT * FROM second_msgs;
SELECT msgbilling.attach('second_view');
DROP VIEW second_view;

-- detach of a table that is not attached
SELECT msgbilling.detach('second_msgs');
SELECT msgbilling.detach('second_msgs', drop_columns => true, force => true);
-- nothing changed on either table
SELECT count(*) AS attached FROM msgbilling.config;
SELECT name FROM attach_columns('second_msgs');

-- legacy messages owe nothing: drop_columns needs no force for them
SELECT msgbilling.detach('int_msgs', drop_columns => true);
SELECT * FROM attach_columns('int_msgs');
SELECT * FROM attach_checks('int_msgs');
SELECT * FROM attach_indexes('int_msgs');
SELECT * FROM int_msgs ORDER BY id;
SELECT count(*) AS attached FROM msgbilling.config;

-- after detach, attaching another table works
SELECT msgbilling.attach('second_msgs');
SELECT messages FROM msgbilling.config;
SELECT msgbilling.detach('second_msgs', drop_columns => true);
-- detaching twice fails
SELECT msgbilling.detach('second_msgs');

DROP TABLE int_msgs, second_msgs;

-------------------------------------------------------------------------------
-- uuid keys, text orgs, timestamp created column; bill_existing => true
-------------------------------------------------------------------------------

CREATE TABLE "Chat Messages" (
    message_uuid uuid PRIMARY KEY,
    tenant text NOT NULL,
    n_tokens bigint,
    llm varchar(100),
    sent_at timestamp
);
INSERT INTO "Chat Messages" VALUES
    ('00000000-0000-0000-0000-000000000001', 'acme', 100, 'small', '2024-01-01 10:00'),
    ('00000000-0000-0000-0000-000000000002', 'acme', 200, 'large', '2024-01-01 11:00');

-- a created column must be NOT NULL: messages are billed in its order.
-- One that holds NULLs is refused, saying which; one that holds none (the
-- common "created_at ... DEFAULT now()") is made NOT NULL by attach.
INSERT INTO "Chat Messages" VALUES
    ('00000000-0000-0000-0000-000000000009', 'acme', 1, NULL, NULL);
SELECT msgbilling.attach('"Chat Messages"', org_column => 'tenant',
                         tokens_column => 'n_tokens', model_column => 'llm',
                         created_column => 'sent_at', bill_existing => true);
SELECT count(*) AS attached FROM msgbilling.config;
DELETE FROM "Chat Messages" WHERE sent_at IS NULL;
SELECT msgbilling.attach('"Chat Messages"', org_column => 'tenant',
                         tokens_column => 'n_tokens', model_column => 'llm',
                         created_column => 'sent_at', bill_existing => true);
SELECT attnotnull FROM pg_attribute
 WHERE attrelid = '"Chat Messages"'::regclass AND attname = 'sent_at';

-- existing rows are billed too: they start 'pending'
SELECT message_uuid, tenant, billing_status FROM "Chat Messages"
 ORDER BY message_uuid;
INSERT INTO "Chat Messages" (message_uuid, tenant, n_tokens, llm, sent_at)
VALUES ('00000000-0000-0000-0000-000000000003', 'globex', 50, NULL, '2024-01-02');
SELECT message_uuid, tenant, billing_status FROM "Chat Messages"
 ORDER BY message_uuid;

SELECT * FROM attach_columns('"Chat Messages"');
SELECT * FROM attach_checks('"Chat Messages"');
-- with a created column the backlog indexes order by it, then the key;
-- index names follow the (quoted) table name
SELECT * FROM attach_indexes('"Chat Messages"');
SELECT messages, key_column, org_column, tokens_column, model_column,
       created_column, index_names
  FROM msgbilling.config;
SELECT * FROM attach_org_types();

-- pending messages block dropping the columns
SELECT msgbilling.detach('"Chat Messages"', drop_columns => true);
-- force => NULL is not force
SELECT msgbilling.detach('"Chat Messages"', drop_columns => true, force => NULL);
SELECT count(*) AS attached FROM msgbilling.config;
SELECT * FROM attach_indexes('"Chat Messages"');
-- force drops them anyway
SELECT msgbilling.detach('"Chat Messages"', drop_columns => true, force => true);
SELECT * FROM attach_columns('"Chat Messages"');
SELECT * FROM attach_checks('"Chat Messages"');
SELECT * FROM attach_indexes('"Chat Messages"');
SELECT * FROM "Chat Messages" ORDER BY message_uuid;

DROP TABLE "Chat Messages";

-------------------------------------------------------------------------------
-- bigint keys, uuid orgs, text model, timestamptz created: the full cycle
-------------------------------------------------------------------------------

CREATE TABLE messages (
    id bigint PRIMARY KEY,
    org_id uuid NOT NULL,
    tokens_used integer,
    model text,
    created_at timestamptz NOT NULL
);
INSERT INTO messages VALUES
    (1, 'aaaaaaaa-0000-0000-0000-000000000000', 100, 'm1', '2024-01-01 00:00+00'),
    (2, 'bbbbbbbb-0000-0000-0000-000000000000', 100, 'm1', '2024-01-01 00:01+00');

SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');
SELECT * FROM attach_columns('messages');
SELECT * FROM attach_indexes('messages');
SELECT messages, key_column, org_column, tokens_column, model_column,
       created_column, index_names
  FROM msgbilling.config;
SELECT * FROM attach_org_types();

-- org A has a wallet, org B has none
INSERT INTO messages (id, org_id, tokens_used, model, created_at) VALUES
    (3, 'aaaaaaaa-0000-0000-0000-000000000000', 1000, 'm1', '2024-02-01 00:00+00'),
    (4, 'bbbbbbbb-0000-0000-0000-000000000000', 1000, 'm1', '2024-02-01 00:01+00');
SELECT msgbilling.set_price(NULL, 0.001, '2000-01-01 00:00+00');
SELECT msgbilling.top_up('aaaaaaaa-0000-0000-0000-000000000000'::uuid, 10);
SELECT * FROM msgbilling.process_all_pending();
-- legacy messages were not billed; B's message failed
SELECT id, billing_status, cost_credits, charged_at IS NOT NULL AS charged,
       billing_error, billing_ledger_id IS NOT NULL AS has_ledger_entry
  FROM messages ORDER BY id;

-- NOT NULL dropped after attach: billing stops with the fix, bills nothing
ALTER TABLE messages ALTER COLUMN created_at DROP NOT NULL;
INSERT INTO messages (id, org_id, tokens_used, model, created_at)
VALUES (6, 'aaaaaaaa-0000-0000-0000-000000000000', 1, 'm1', NULL);
SELECT * FROM msgbilling.process_all_pending();
SET msgbilling.repair = on;   -- a pending message may not be deleted otherwise
DELETE FROM messages WHERE id = 6;
RESET msgbilling.repair;
ALTER TABLE messages ALTER COLUMN created_at SET NOT NULL;

-- a failed message blocks dropping the columns
SELECT msgbilling.detach('messages', drop_columns => true);
-- and so does a pending one
INSERT INTO messages (id, org_id, tokens_used, model, created_at)
VALUES (5, 'aaaaaaaa-0000-0000-0000-000000000000', 1000, 'm1', '2024-02-02 00:00+00');
SELECT msgbilling.detach('messages', drop_columns => true);
-- still attached, indexes still there
SELECT messages FROM msgbilling.config;
SELECT name FROM attach_indexes('messages');

-- detach without drop_columns keeps the columns, the constraint and every
-- status; only msgbilling's indexes go
SELECT msgbilling.detach('messages');
SELECT count(*) AS attached FROM msgbilling.config;
SELECT * FROM attach_columns('messages');
SELECT * FROM attach_checks('messages');
SELECT * FROM attach_indexes('messages');
SELECT id, billing_status, cost_credits, billing_error
  FROM messages ORDER BY id;
-- the wallet tables keep their org type and data
SELECT * FROM attach_org_types();
SELECT org_id, balance FROM msgbilling.credits ORDER BY org_id;

-- with nothing attached the API says so
SELECT msgbilling.top_up('aaaaaaaa-0000-0000-0000-000000000000'::uuid, 1);
SELECT msgbilling.balance('aaaaaaaa-0000-0000-0000-000000000000'::uuid);
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.process_message_billing(5);
SELECT * FROM msgbilling.stats();
SELECT msgbilling.retry_failed();
-- and detach has nothing to detach
SELECT msgbilling.detach('messages');

-- re-attach adopts the kept columns: statuses are kept as they are (the
-- failed message stays failed, the pending one pending), no row is
-- relabelled legacy, and the indexes come back
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');
SELECT id, billing_status, cost_credits, billing_error
  FROM messages ORDER BY id;
SELECT * FROM attach_columns('messages');
SELECT * FROM attach_checks('messages');
SELECT * FROM attach_indexes('messages');
SELECT * FROM msgbilling.stats();

-- billing works again on the re-attached table
SELECT * FROM msgbilling.process_all_pending();
SELECT id, billing_status, cost_credits, billing_error
  FROM messages ORDER BY id;

-- the failed message still blocks drop_columns; force drops them anyway
SELECT msgbilling.detach('messages', drop_columns => true);
SELECT msgbilling.detach('messages', drop_columns => true, force => true);
SELECT * FROM attach_columns('messages');
SELECT * FROM attach_checks('messages');
SELECT * FROM attach_indexes('messages');
SELECT * FROM messages ORDER BY id;

-------------------------------------------------------------------------------
-- a column of msgbilling's name but the wrong type blocks attach
-------------------------------------------------------------------------------

CREATE TABLE clash (
    id bigint PRIMARY KEY,
    org_id uuid,
    tokens_used integer,
    cost_credits numeric(12,2)
);
SELECT msgbilling.attach('clash');
ALTER TABLE clash DROP COLUMN cost_credits;
ALTER TABLE clash ADD COLUMN billing_status text;
SELECT msgbilling.attach('clash');
ALTER TABLE clash ALTER COLUMN billing_status TYPE varchar(50);
SELECT msgbilling.attach('clash');
ALTER TABLE clash DROP COLUMN billing_status,
    ADD COLUMN charged_at timestamp without time zone;
SELECT msgbilling.attach('clash');
ALTER TABLE clash DROP COLUMN charged_at, ADD COLUMN billing_ledger_id integer;
SELECT msgbilling.attach('clash');
-- nothing was attached and nothing was added: attach is all or nothing
SELECT count(*) AS attached FROM msgbilling.config;
SELECT * FROM attach_columns('clash');
SELECT * FROM attach_checks('clash');
SELECT * FROM attach_indexes('clash');
DROP TABLE clash;

-------------------------------------------------------------------------------
-- DROP EXTENSION leaves the app's table and its data alone
-------------------------------------------------------------------------------

SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');
INSERT INTO messages (id, org_id, tokens_used, model, created_at)
VALUES (6, 'aaaaaaaa-0000-0000-0000-000000000000', 10, 'm1', '2024-03-01 00:00+00');
-- the guard triggers depend on the extension: DROP EXTENSION alone refuses,
-- CASCADE drops them (and nothing else of the app's)
DROP EXTENSION msgbilling;
DROP EXTENSION msgbilling CASCADE;
SELECT count(*) AS extensions FROM pg_extension WHERE extname = 'msgbilling';
SELECT count(*) AS msgbilling_objects FROM pg_class
 WHERE relnamespace = 'msgbilling'::regnamespace;
SELECT name, type FROM attach_columns('messages');
SELECT id, org_id, tokens_used, model, created_at, billing_status
  FROM messages ORDER BY id;
-- the app can keep inserting
INSERT INTO messages (id, org_id, tokens_used, model, created_at)
VALUES (7, 'aaaaaaaa-0000-0000-0000-000000000000', 10, 'm1', '2024-03-02 00:00+00');
SELECT count(*) FROM messages;

-- ... and attaching it again in a new extension adopts the columns and
-- replaces the indexes the first attach left.
CREATE EXTENSION msgbilling;
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');
SELECT name FROM attach_indexes('messages');
SELECT billing_status, count(*) FROM messages GROUP BY 1 ORDER BY 1;

-------------------------------------------------------------------------------
-- Wallets keep one org id type; a dropped attached table can be replaced
-------------------------------------------------------------------------------

SELECT msgbilling.top_up('aaaaaaaa-0000-0000-0000-000000000000', 1);
SELECT msgbilling.detach('messages', drop_columns => true, force => true);
CREATE TABLE int_orgs (id bigint PRIMARY KEY, org_id bigint, tokens_used integer);
SELECT msgbilling.attach('int_orgs');
SELECT count(*) AS attached FROM msgbilling.config;
-- a table of the wallets' org type can be attached; then dropped ...
CREATE TABLE uuid_orgs (id bigint PRIMARY KEY, org_id uuid, tokens_used integer);
SELECT msgbilling.attach('uuid_orgs');
DROP TABLE uuid_orgs;
-- ... and the next attach replaces it
SELECT msgbilling.attach('messages');
SELECT messages FROM msgbilling.config;
SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE int_orgs;

-------------------------------------------------------------------------------
-- An existing billing_status column is made to fit, or refused
-------------------------------------------------------------------------------

CREATE TABLE has_status (id bigint PRIMARY KEY, org_id uuid,
                         tokens_used integer, billing_status varchar(20));
INSERT INTO has_status VALUES (1, NULL, 1, NULL), (2, NULL, 1, 'pending');
SELECT msgbilling.attach('has_status');
SELECT id, billing_status FROM has_status ORDER BY id;
SELECT name, type, not_null, "default" FROM attach_columns('has_status')
 WHERE name = 'billing_status';
SELECT msgbilling.detach('has_status', drop_columns => true, force => true);
CREATE TABLE odd_status (id bigint PRIMARY KEY, org_id uuid,
                         tokens_used integer, billing_status varchar(20));
INSERT INTO odd_status VALUES (1, NULL, 1, 'paid');
SELECT msgbilling.attach('odd_status');
SELECT count(*) AS attached FROM msgbilling.config;
SELECT msgbilling.detach(NULL);
-- The guide's own migration already ran: its columns are adopted; rows the
-- old system marked charged (no ledger entry here) become legacy, pending
-- ones stay pending and will be billed.
CREATE TABLE guide_done (id bigint PRIMARY KEY, org_id uuid, tokens_used integer,
                         cost_credits numeric(10,6), charged_at timestamptz,
                         billing_status varchar(20) DEFAULT 'pending');
INSERT INTO guide_done VALUES
    (1, NULL, 10, 0.5, '2024-01-01', 'charged'),
    (2, NULL, 10, NULL, NULL, 'pending');
SELECT msgbilling.attach('guide_done');
SELECT id, billing_status, cost_credits FROM guide_done ORDER BY id;
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;
SELECT msgbilling.detach('guide_done', drop_columns => true, force => true);
-- An app index that starts with the org column serves history(): no
-- NOTICE about it.  A partial one, or one led by another column, does not.
CREATE TABLE org_indexed (id bigint PRIMARY KEY, org_id uuid, tokens_used integer);
CREATE INDEX ON org_indexed (id, org_id);
CREATE INDEX ON org_indexed (org_id) WHERE tokens_used > 0;
SELECT msgbilling.attach('org_indexed');
SELECT msgbilling.detach('org_indexed');
CREATE INDEX ON org_indexed (org_id, id);
SELECT msgbilling.attach('org_indexed');
SELECT msgbilling.detach('org_indexed', drop_columns => true);
-- Long names: index names are cut to fit 63 bytes (counting bytes, not
-- characters), and detach finds them by their whole schema-qualified names.
CREATE SCHEMA "ein_sehr_langer_schemaname_für_die_nachrichten_der_app";
CREATE TABLE "ein_sehr_langer_schemaname_für_die_nachrichten_der_app"."Nachrichten_für_Kunden_mit_Umlauten_äöüÄÖÜß"
    (id bigint PRIMARY KEY, org_id uuid, tokens_used integer);
SELECT msgbilling.attach('"ein_sehr_langer_schemaname_für_die_nachrichten_der_app"."Nachrichten_für_Kunden_mit_Umlauten_äöüÄÖÜß"');
SELECT name, octet_length(name) AS bytes
  FROM attach_indexes('"ein_sehr_langer_schemaname_für_die_nachrichten_der_app"."Nachrichten_für_Kunden_mit_Umlauten_äöüÄÖÜß"');
SELECT idx FROM msgbilling.config, unnest(index_names) idx;
SELECT msgbilling.detach('"ein_sehr_langer_schemaname_für_die_nachrichten_der_app"."Nachrichten_für_Kunden_mit_Umlauten_äöüÄÖÜß"');
SELECT name
  FROM attach_indexes('"ein_sehr_langer_schemaname_für_die_nachrichten_der_app"."Nachrichten_für_Kunden_mit_Umlauten_äöüÄÖÜß"');
DROP SCHEMA "ein_sehr_langer_schemaname_für_die_nachrichten_der_app" CASCADE;
DROP TABLE has_status, odd_status, guide_done, org_indexed;
DROP EXTENSION msgbilling;

DROP TABLE messages;
-- CREATE EXTENSION made the schema msgbilling (the control file's schema)
-- but it is not a member of the extension, so DROP EXTENSION leaves it
DROP SCHEMA msgbilling;
DROP FUNCTION attach_columns(regclass), attach_checks(regclass),
    attach_indexes(regclass), attach_org_types();
