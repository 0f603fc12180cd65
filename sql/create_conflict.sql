--
-- create_conflict.sql: CREATE EXTENSION msgbilling where look-alikes of its
-- objects already exist.
--
-- msgbilling.control names the schema msgbilling: CREATE EXTENSION creates
-- it when it is missing and otherwise installs into the existing one.
--
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Earlier tests may leave the (empty) schema of a dropped msgbilling.
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS msgbilling;
RESET client_min_messages;

CREATE ROLE regress_mb_mallory;

-- The owner of an object, as shown below: the superuser running this test
-- is "(test user)", whatever its name.
CREATE FUNCTION mb_owner(oid) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN r.rolname = current_user THEN '(test user)'
                ELSE r.rolname::text END
      FROM pg_roles r WHERE r.oid = $1
$$;
-- What schema msgbilling holds, and who owns it and its objects.
CREATE FUNCTION mb_schema_contents()
RETURNS TABLE (object text, owner text)
LANGUAGE sql STABLE AS $$
    SELECT 'schema ' || n.nspname, mb_owner(n.nspowner)
      FROM pg_namespace n WHERE n.nspname = 'msgbilling'
    UNION ALL
    SELECT CASE c.relkind WHEN 'r' THEN 'table ' WHEN 'i' THEN 'index '
                          WHEN 'S' THEN 'sequence ' ELSE c.relkind::text || ' ' END
           || c.oid::regclass::text,
           mb_owner(c.relowner)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'msgbilling'
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure::text, mb_owner(p.proowner)
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'msgbilling'
    ORDER BY 1
$$;

-------------------------------------------------------------------------------
-- (a) schema msgbilling exists, owned by another role, with a look-alike
--     msgbilling.credits holding that role's data
-------------------------------------------------------------------------------

CREATE SCHEMA msgbilling AUTHORIZATION regress_mb_mallory;
SET ROLE regress_mb_mallory;
CREATE TABLE msgbilling.credits (org_id text PRIMARY KEY, balance numeric);
INSERT INTO msgbilling.credits VALUES ('mallory', 1000000);
RESET ROLE;

-- fails on the look-alike table, and is rolled back as a whole
CREATE EXTENSION msgbilling;
SELECT count(*) AS installed FROM pg_extension WHERE extname = 'msgbilling';
-- nothing of msgbilling is left: only the other role's own objects
SELECT * FROM mb_schema_contents();
SELECT * FROM msgbilling.credits;

SET client_min_messages = warning;
DROP SCHEMA msgbilling CASCADE;
RESET client_min_messages;

-------------------------------------------------------------------------------
-- (b) schema msgbilling exists, empty, owned by another role
-------------------------------------------------------------------------------

-- A schema msgbilling owned by another role: CREATE EXTENSION refuses it
-- (its owner could plant look-alike functions in it, or drop the wallets
-- and ledger with it), and leaves it as it was.
CREATE SCHEMA msgbilling AUTHORIZATION regress_mb_mallory;
CREATE EXTENSION msgbilling;
SELECT count(*) AS installed FROM pg_extension WHERE extname = 'msgbilling';
-- the schema and its owner are as they were
SELECT * FROM mb_schema_contents();
DROP SCHEMA msgbilling;

-------------------------------------------------------------------------------
-- (c) a look-alike msgbilling.top_up already exists
-------------------------------------------------------------------------------

CREATE SCHEMA msgbilling;
CREATE FUNCTION msgbilling.top_up("any", numeric, text, text) RETURNS integer
LANGUAGE internal STRICT AS 'pg_column_size';

-- fails on the look-alike function, and is rolled back as a whole
CREATE EXTENSION msgbilling;
SELECT count(*) AS installed FROM pg_extension WHERE extname = 'msgbilling';
SELECT * FROM mb_schema_contents();

DROP FUNCTION msgbilling.top_up("any", numeric, text, text);
DROP SCHEMA msgbilling;

-------------------------------------------------------------------------------
-- And with nothing in the way, it installs
-------------------------------------------------------------------------------

CREATE EXTENSION msgbilling;
SELECT mb_owner(n.nspowner) AS schema_owner
  FROM pg_namespace n WHERE n.nspname = 'msgbilling';
SELECT count(*) > 0 AS has_functions
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'msgbilling';
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;

DROP FUNCTION mb_schema_contents();
DROP FUNCTION mb_owner(oid);
DROP ROLE regress_mb_mallory;
