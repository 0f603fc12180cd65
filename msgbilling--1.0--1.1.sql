/* msgbilling--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION msgbilling UPDATE TO '1.1'" to load this file. \quit

-- A fresh install runs msgbilling--1.0.sql and then this script, so that
-- fresh and updated installs are the same (sql/upgrade.sql compares them).

-------------------------------------------------------------------------------
-- Replacing a function keeps the grants on it
-------------------------------------------------------------------------------

-- A function this script replaces (DROP, then CREATE: an extension script
-- never replaces one in place) would lose the EXECUTE grants a DBA gave
-- on it.  _save_grants keeps them before the DROP and _restore_grants
-- gives them back after the CREATE; all three go at the end of the script.
CREATE TABLE msgbilling._saved_grants (fn text PRIMARY KEY, acl aclitem[]);

CREATE FUNCTION msgbilling._save_grants(fn regprocedure)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO msgbilling._saved_grants
    SELECT $1::pg_catalog.text, p.proacl FROM pg_catalog.pg_proc p WHERE p.oid = $1
$$;

-- saved_as: the signature the grants were saved under, when the new
-- function's differs (a new parameter).
CREATE FUNCTION msgbilling._restore_grants(fn regprocedure, saved_as text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g record;
BEGIN
    EXECUTE pg_catalog.format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', fn);
    FOR g IN SELECT a.grantee, a.privilege_type, a.is_grantable
               FROM msgbilling._saved_grants s, pg_catalog.aclexplode(s.acl) a
              WHERE s.fn = COALESCE(saved_as, _restore_grants.fn::pg_catalog.text) LOOP
        EXECUTE pg_catalog.format('GRANT %s ON ROUTINE %s TO %s%s',
            g.privilege_type, fn,
            CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                 ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END,
            CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END;
$$;

-------------------------------------------------------------------------------
-- Billing writes the app's table as the table's owner (owner.c)
-------------------------------------------------------------------------------

-- The UPDATEs of the messages table run as its owner, so that its
-- triggers and expressions never run with msgbilling's privileges.  Those
-- UPDATEs read the batch's decisions through the _decided_* functions, so
-- every table owner needs them: they answer only inside msgbilling's own
-- writes (anywhere else they raise an error) and only with what that write
-- is writing.  USAGE on the schema lets a role name them; every table and
-- every function that moves money or reads billing data stays revoked.
GRANT USAGE ON SCHEMA msgbilling TO PUBLIC;
GRANT EXECUTE ON FUNCTION msgbilling._decided_cost(tid),
    msgbilling._decided_ledger_id(tid), msgbilling._decided_error(tid)
    TO PUBLIC;

-------------------------------------------------------------------------------
-- Prices: one that no message could be billed at is refused
-------------------------------------------------------------------------------

SELECT msgbilling._save_grants('msgbilling.set_price(text, numeric, timestamptz)');
DROP FUNCTION msgbilling.set_price(text, numeric, timestamptz);

-- A message costs less than 10,000 credits (cost_credits is numeric(10,6)):
-- at a price of 10,000 or more, every message of a token or more would
-- fail with cost_out_of_range, so such a price is refused.
-- A price's or tariff's amount: given, zero or more, finite, below 10000
-- (a message costs at most 9999.999999), or a clear error naming it.
CREATE FUNCTION msgbilling._check_tariff_amount(name text, amount numeric)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF amount IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', name
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF amount < 0 OR amount >= 'Infinity' THEN
        RAISE EXCEPTION '% must be zero or more and finite, not %', name, amount
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF amount >= 10000 THEN
        -- echoed cut short: the value may have 131,072 digits
        RAISE EXCEPTION '% must be below 10000, not %', name,
                        CASE WHEN pg_catalog.length(amount::pg_catalog.text) > 40
                             THEN pg_catalog.left(amount::pg_catalog.text, 40) || '...'
                             ELSE amount::pg_catalog.text END
            USING ERRCODE = 'numeric_value_out_of_range',
                  DETAIL = 'A message costs at most 9999.999999 credits.';
    END IF;
END;
$$;

-- A new version of a model's price or tariff: effective from a finite
-- time, for a named model or the default (NULL), and new.
CREATE FUNCTION msgbilling._check_new_version(model text, effective_from timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF effective_from IS NULL OR effective_from IN ('infinity', '-infinity') THEN
        RAISE EXCEPTION 'effective_from must be finite, not %',
                        COALESCE(effective_from::pg_catalog.text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF model = '' THEN
        RAISE EXCEPTION 'model must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL to set the default price.';
    END IF;
    IF EXISTS (SELECT 1 FROM msgbilling.prices p
                WHERE p.model IS NOT DISTINCT FROM _check_new_version.model
                  AND p.effective_from = _check_new_version.effective_from) THEN
        RAISE EXCEPTION 'a price for % effective from % already exists',
                        COALESCE('model ' || pg_catalog.quote_literal(model), 'the default'),
                        effective_from
            USING ERRCODE = 'unique_violation',
                  DETAIL = 'Prices are versioned and never rewritten.',
                  HINT = 'Set the new price with a later effective_from.';
    END IF;
END;
$$;

CREATE FUNCTION msgbilling.set_price(model text, credits_per_token numeric,
                                     effective_from timestamptz DEFAULT pg_catalog.now())
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM msgbilling._check_tariff_amount('credits_per_token', credits_per_token);
    PERFORM msgbilling._check_new_version(model, effective_from);
    INSERT INTO msgbilling.prices (model, credits_per_token, effective_from)
    VALUES (model, credits_per_token, effective_from)
    RETURNING id INTO new_id;
    -- Messages that failed for want of a price may have one now.
    PERFORM msgbilling._repend_no_price();
    RETURN new_id;
END;
$$;

-- A price decides what every message costs: for the roles granted it.
SELECT msgbilling._restore_grants('msgbilling.set_price(text, numeric, timestamptz)');

-------------------------------------------------------------------------------
-- Guards: the org of a billed message, retention, and turning them off
-------------------------------------------------------------------------------

-- When the guards were found off (msgbilling._watch_guards); verify()
-- reports it until a superuser, having checked the messages, sets it back
-- to NULL.
ALTER TABLE msgbilling.config ADD COLUMN guards_off_since timestamptz;

-- The costs of billed messages the app deleted (retention, GDPR), under
-- their charge entries: verify() adds them to the messages still there
-- (src/retain.c).  A row per deleted message, or per charge entry of a
-- truncated or detached table.
CREATE TABLE msgbilling.deleted_messages (
    ledger_id bigint NOT NULL,
    charged bigint NOT NULL DEFAULT 0,
    charged_cost numeric(20,6) NOT NULL DEFAULT 0,
    refunded bigint NOT NULL DEFAULT 0,
    refunded_cost numeric(20,6) NOT NULL DEFAULT 0,
    deleted_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX deleted_messages_ledger_id ON msgbilling.deleted_messages (ledger_id);
SELECT pg_catalog.pg_extension_config_dump('msgbilling.deleted_messages', '');
-- Part of the books: nobody but the owner reads or writes it directly.
REVOKE ALL ON msgbilling.deleted_messages FROM PUBLIC;

-- DELETE and TRUNCATE of the attached table (retain.c).
CREATE FUNCTION msgbilling._retain_deleted()
RETURNS trigger
AS 'MODULE_PATHNAME', 'retain_deleted'
LANGUAGE C;
REVOKE ALL ON FUNCTION msgbilling._retain_deleted() FROM PUBLIC;

DROP FUNCTION msgbilling._create_guards(regclass);
DROP FUNCTION msgbilling._drop_guards(regclass);

-- The partitions below rel, at every level, from the catalog: unlike
-- pg_partition_tree() it takes no lock on them, so that the event trigger
-- that calls it cannot deadlock with a parallel restore's ALTER TABLEs of
-- two partitions.
CREATE FUNCTION msgbilling._partitions(rel regclass)
RETURNS SETOF pg_catalog.oid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE tree(relid) AS (
        SELECT i.inhrelid FROM pg_catalog.pg_inherits i WHERE i.inhparent = $1
        UNION ALL
        SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree t ON i.inhparent = t.relid)
    SELECT relid FROM tree
$$;
REVOKE ALL ON FUNCTION msgbilling._partitions(regclass) FROM PUBLIC;

-- Drop the guard triggers from a table and its partitions, where they are.
CREATE FUNCTION msgbilling._drop_guards(rel regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
BEGIN
    -- the cloned row triggers go with their parent's
    FOR t IN SELECT g.tgname, g.tgrelid::regclass AS tab FROM pg_catalog.pg_trigger g
              WHERE (g.tgrelid = rel OR g.tgname = 'msgbilling_guard_truncate'
                     AND g.tgrelid IN (SELECT p.relid FROM pg_catalog.pg_partition_tree(rel) p))
                AND g.tgname IN ('msgbilling_guard_insert', 'msgbilling_guard_update',
                                 'msgbilling_guard_org', 'msgbilling_guard_delete',
                                 'msgbilling_guard_truncate')
                AND g.tgparentid = 0
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', t.tgname, t.tab);
    END LOOP;
END;
$$;

-- The TRUNCATE guard on a table of the attached table's tree: statement
-- triggers are not cloned to partitions, and a partition made later gets
-- its own from _watch_guards.
CREATE FUNCTION msgbilling._create_truncate_guard(rel regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE pg_catalog.format('CREATE TRIGGER msgbilling_guard_truncate BEFORE TRUNCATE ON %s'
                              ' FOR EACH STATEMENT EXECUTE FUNCTION msgbilling._retain_deleted()',
                              rel);
END;
$$;

-- Put the guard triggers on the attached table (guard.c, retain.c).  The
-- UPDATE ones' column lists and WHEN clauses keep the app's ordinary
-- UPDATEs from calling any function.  The INSERT one has no WHEN clause:
-- an INSERT statement reads and prepares a trigger's WHEN expression each
-- time, which costs a one-row INSERT more than the function's own check.
-- The org of a charged or refunded message is its charge entry's: it may
-- not change (a refund follows the ledger either way).  A deleted billed
-- message keeps its cost in the books; an owed one may not be deleted.
CREATE FUNCTION msgbilling._create_guards(rel regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    org name := (SELECT c.org_column FROM msgbilling.config c WHERE c.messages = rel);
    part regclass;
BEGIN
    PERFORM msgbilling._drop_guards(rel);
    EXECUTE pg_catalog.format('CREATE TRIGGER msgbilling_guard_insert BEFORE INSERT ON %s'
                              ' FOR EACH ROW EXECUTE FUNCTION msgbilling._guard_messages()', rel);
    EXECUTE pg_catalog.format('CREATE TRIGGER msgbilling_guard_update BEFORE UPDATE OF'
                              ' billing_status, cost_credits, charged_at, billing_error,'
                              ' billing_ledger_id ON %s FOR EACH ROW WHEN'
                              ' (OLD.billing_status IS DISTINCT FROM NEW.billing_status'
                              ' OR OLD.cost_credits IS DISTINCT FROM NEW.cost_credits'
                              ' OR OLD.charged_at IS DISTINCT FROM NEW.charged_at'
                              ' OR OLD.billing_error IS DISTINCT FROM NEW.billing_error'
                              ' OR OLD.billing_ledger_id IS DISTINCT FROM NEW.billing_ledger_id)'
                              ' EXECUTE FUNCTION msgbilling._guard_messages()', rel);
    EXECUTE pg_catalog.format('CREATE TRIGGER msgbilling_guard_org BEFORE UPDATE OF %I'
                              ' ON %s FOR EACH ROW WHEN (OLD.%I IS DISTINCT FROM NEW.%I'
                              ' AND OLD.billing_status IN (''charged'', ''refunded''))'
                              ' EXECUTE FUNCTION msgbilling._guard_messages()',
                              org, rel, org, org);
    EXECUTE pg_catalog.format('CREATE TRIGGER msgbilling_guard_delete AFTER DELETE ON %s'
                              ' FOR EACH ROW WHEN (OLD.billing_status NOT IN (''legacy'', ''no_charge''))'
                              ' EXECUTE FUNCTION msgbilling._retain_deleted()', rel);
    PERFORM msgbilling._create_truncate_guard(rel);
    FOR part IN SELECT p.relid FROM pg_catalog.pg_partition_tree(rel) p WHERE p.level > 0 LOOP
        PERFORM msgbilling._create_truncate_guard(part);
    END LOOP;
END;
$$;

REVOKE ALL ON FUNCTION msgbilling._create_guards(regclass),
    msgbilling._drop_guards(regclass),
    msgbilling._create_truncate_guard(regclass) FROM PUBLIC;

-- The attached table gets the new guards.
SELECT msgbilling._create_guards(c.messages) FROM msgbilling.config c
 WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class r WHERE r.oid = c.messages);

-- After every CREATE TABLE, ALTER TABLE and ALTER TRIGGER:
--
-- * A partition created or attached since gets its TRUNCATE guard.
-- * A partition detached since took its messages out of the attached
--   table without a DELETE: refused (the DETACH with it) if it holds
--   pending or failed messages, else the costs of its billed ones are kept
--   in deleted_messages, as for a TRUNCATE.
-- * The table's owner may disable triggers on its table, and with the
--   guards off change billing columns unseen (mark pending messages
--   legacy, say): a guard disabled (or enabled for replicas only) or
--   renamed is recorded in config.guards_off_since, for verify() to report
--   even after they are back on.  A guard dropped outright stays missing:
--   only msgbilling can create one (EXECUTE on its function is revoked),
--   and verify() reports it as missing.  A restore creates the guards
--   after the ALTER TABLEs that add constraints: missing guards are not
--   looked at then.
CREATE FUNCTION msgbilling._watch_guards()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
    since timestamptz;
    part regclass;
    owed bigint;
    off text;
BEGIN
    SELECT c.messages, c.guards_off_since INTO rel, since FROM msgbilling.config c
     WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class r WHERE r.oid = c.messages);
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- A new partition has the clones of the row guards and lacks its own
    -- TRUNCATE guard.  A restore creates both itself, after its ALTER
    -- TABLEs, and a parallel one in several sessions at once: its sessions
    -- (which run with row_security off, as pg_dump's scripts set it) are
    -- left to do it.  A CREATE TABLE ... PARTITION OF names the partition
    -- in the event's commands, and only that one is guarded then (a
    -- restore creates its tables before the configuration row is there);
    -- an ATTACH PARTITION names only the parent.
    IF TG_TAG = 'CREATE TABLE'
       OR (pg_catalog.current_setting('row_security') <> 'off'
           AND pg_catalog.current_setting('application_name') <> 'pg_restore') THEN
        FOR part IN SELECT p.relid FROM msgbilling._partitions(rel) p(relid)
                     WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g
                                    WHERE g.tgrelid = p.relid AND g.tgname = 'msgbilling_guard_delete')
                       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g
                                        WHERE g.tgrelid = p.relid
                                          AND g.tgname = 'msgbilling_guard_truncate')
                       AND (TG_TAG <> 'CREATE TABLE'
                            OR p.relid IN (SELECT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c))
        LOOP
            BEGIN
                PERFORM msgbilling._create_truncate_guard(part);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;   -- another session made it meanwhile
            END;
        END LOOP;
    END IF;
    FOR part IN SELECT g.tgrelid FROM pg_catalog.pg_trigger g
                 WHERE g.tgname = 'msgbilling_guard_truncate' AND g.tgrelid <> rel
                   AND g.tgrelid NOT IN (SELECT p FROM msgbilling._partitions(rel) p) LOOP
        EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM ONLY %s'
                                  ' WHERE billing_status IN (''pending'', ''failed'')', part)
           INTO owed;
        IF owed > 0 THEN
            RAISE EXCEPTION '% holds % messages that are not billed: it cannot leave %', part, owed, rel
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'The charges pending and failed messages owe would be lost.',
                      HINT = 'Bill them first (CALL msgbilling.drain()), then detach it.';
        END IF;
        EXECUTE pg_catalog.format('INSERT INTO msgbilling.deleted_messages'
            ' (ledger_id, charged, charged_cost, refunded, refunded_cost)'
            ' SELECT m.billing_ledger_id,'
            ' pg_catalog.count(*) FILTER (WHERE m.billing_status = ''charged''),'
            ' COALESCE(pg_catalog.sum(m.cost_credits) FILTER (WHERE m.billing_status = ''charged''), 0),'
            ' pg_catalog.count(*) FILTER (WHERE m.billing_status = ''refunded''),'
            ' COALESCE(pg_catalog.sum(m.cost_credits) FILTER (WHERE m.billing_status = ''refunded''), 0)'
            ' FROM ONLY %s m WHERE m.billing_status IN (''charged'', ''refunded'')'
            ' GROUP BY m.billing_ledger_id', part);
        EXECUTE pg_catalog.format('DROP TRIGGER msgbilling_guard_truncate ON %s', part);
    END LOOP;
    IF since IS NOT NULL THEN
        RETURN;
    END IF;
    -- on the table and on each of its partitions, which have clones
    SELECT pg_catalog.string_agg(pg_catalog.format('%s of %s %s', g.name, r.rel::regclass,
               CASE WHEN t.oid IS NULL THEN 'is missing' ELSE 'is disabled' END),
               ', ' ORDER BY r.rel::regclass::text, g.n)
      INTO off
      FROM (SELECT rel::pg_catalog.oid
            UNION SELECT p FROM msgbilling._partitions(rel) p) r(rel)
     CROSS JOIN pg_catalog.unnest(ARRAY['msgbilling_guard_insert', 'msgbilling_guard_update',
                                        'msgbilling_guard_org', 'msgbilling_guard_delete',
                                        'msgbilling_guard_truncate']) WITH ORDINALITY g(name, n)
      LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = r.rel AND t.tgname = g.name
     WHERE t.tgenabled IN ('D', 'R') OR (t.oid IS NULL AND TG_TAG = 'ALTER TRIGGER');
    IF off IS NULL THEN
        RETURN;
    END IF;
    UPDATE msgbilling.config SET guards_off_since = pg_catalog.now();
    RAISE WARNING 'msgbilling''s guard triggers on % are off: %', rel, off
        USING DETAIL = 'While they are off, billing columns can change outside msgbilling; msgbilling.verify() reports it from now on.',
              HINT = 'Enable them again (ALTER TABLE ... ENABLE TRIGGER ...).';
END;
$$;

REVOKE ALL ON FUNCTION msgbilling._watch_guards() FROM PUBLIC;

CREATE EVENT TRIGGER msgbilling_watch_guards ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'ALTER TRIGGER')
    EXECUTE FUNCTION msgbilling._watch_guards();

-- A partition of the attached table dropped outright (its TRUNCATE guard
-- went with it, not dropped by itself) took its messages with it, without
-- a DELETE, and can no longer be read: refused (the DROP with it).  DETACH PARTITION first, which keeps the billed messages'
-- costs in the books, then DROP TABLE.  Dropping the attached table itself
-- is not refused: attach says so and replaces it.
CREATE FUNCTION msgbilling._watch_drops()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    gone text;
BEGIN
    PERFORM FROM msgbilling.config c, pg_catalog.pg_class r WHERE r.oid = c.messages;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT pg_catalog.string_agg(d.object_identity, ', ') INTO gone
      FROM pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.object_type = 'trigger' AND NOT d.original
       AND d.object_identity LIKE 'msgbilling\_guard\_truncate on %';
    IF gone IS NOT NULL THEN
        RAISE EXCEPTION 'a partition of the table attached to msgbilling cannot be dropped'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = pg_catalog.format('Its messages would leave the books unseen (%s).', gone),
                  HINT = 'ALTER TABLE ... DETACH PARTITION first, which keeps the costs of its billed messages, then DROP TABLE.';
    END IF;
END;
$$;

REVOKE ALL ON FUNCTION msgbilling._watch_drops() FROM PUBLIC;

CREATE EVENT TRIGGER msgbilling_watch_drops ON sql_drop
    EXECUTE FUNCTION msgbilling._watch_drops();

-------------------------------------------------------------------------------
-- Partitioned messages tables
-------------------------------------------------------------------------------

DROP FUNCTION msgbilling._primary_key(regclass);

-- The message key of rel, and its type.  A one-column primary key is it.
-- A partitioned table's primary key holds its partition keys (PostgreSQL
-- requires it), as in PRIMARY KEY (id, created_at) of monthly partitions:
-- the key is then the one primary key column that is no partition key, at
-- any level.  Billing identifies a message by it, so it must be unique by
-- itself (a sequence or a uuid makes it so).
CREATE FUNCTION msgbilling._primary_key(rel regclass, OUT col name,
                                        OUT typ regtype)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pk smallint[];
    parts name[];
    rest smallint[];
BEGIN
    SELECT c.conkey INTO pk FROM pg_catalog.pg_constraint c
     WHERE c.conrelid = rel AND c.contype = 'p';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % has no primary key', rel
            USING ERRCODE = 'invalid_table_definition',
                  DETAIL = 'msgbilling identifies each message by its primary key.',
                  HINT = 'Add a primary key of type bigint, integer or uuid.';
    END IF;
    -- the partition key columns of rel and of every partitioned table below
    -- it, by name (a partition's column numbers may differ from rel's)
    WITH RECURSIVE tree(relid) AS (
        SELECT rel::pg_catalog.oid
        UNION ALL
        SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree t ON i.inhparent = t.relid)
    SELECT pg_catalog.array_agg(DISTINCT a.attname) INTO parts
      FROM tree t
      JOIN pg_catalog.pg_partitioned_table p ON p.partrelid = t.relid
      JOIN pg_catalog.pg_attribute a ON a.attrelid = t.relid
       AND a.attnum = ANY (p.partattrs::smallint[]);
    SELECT pg_catalog.array_agg(a.attnum ORDER BY a.attnum) INTO rest
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = rel AND a.attnum = ANY (pk)
       AND a.attname <> ALL (COALESCE(parts, '{}'));
    IF pg_catalog.cardinality(pk) = 1 THEN
        rest := pk;
    END IF;
    IF pg_catalog.cardinality(rest) IS DISTINCT FROM 1 THEN
        RAISE EXCEPTION 'the primary key of table % has no single message key', rel
            USING ERRCODE = 'invalid_table_definition',
                  DETAIL = pg_catalog.format('Its primary key is (%s)%s.',
                               (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', '
                                                             ORDER BY pg_catalog.array_position(pk, a.attnum))
                                  FROM pg_catalog.pg_attribute a
                                 WHERE a.attrelid = rel AND a.attnum = ANY (pk)),
                               CASE WHEN parts IS NULL THEN ', and the table is not partitioned'
                                    ELSE pg_catalog.format(', with %s columns that are no partition key',
                                                           COALESCE(pg_catalog.cardinality(rest), 0)) END),
                  HINT = 'msgbilling needs a one-column primary key, or, on a partitioned table, a primary key of one id column and the partition key columns, e.g. PRIMARY KEY (id, created_at).';
    END IF;
    SELECT a.attname, a.atttypid::regtype INTO col, typ
      FROM pg_catalog.pg_attribute a WHERE a.attrelid = rel AND a.attnum = rest[1];
    PERFORM msgbilling._column_type(rel, col, 'key',
                                    '{bigint,integer,uuid}'::regtype[]);
END;
$$;

REVOKE ALL ON FUNCTION msgbilling._primary_key(regclass) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Restores: wallets loaded before the configuration row
-------------------------------------------------------------------------------

DROP FUNCTION msgbilling._set_org_type(regtype);

-- Give msgbilling's own org_id columns the type of the app's org ids.
-- Wallets and ledger entries whose org ids are text (the type a fresh
-- CREATE EXTENSION gives them) take the new type: a parallel pg_restore
-- loads their data before or after the configuration row, whose trigger
-- calls this.  Org ids of another type, or text that is no org id of the
-- new type, are refused: one org id type per database.
CREATE FUNCTION msgbilling._set_org_type(typ regtype)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tab text;
    have regtype;
BEGIN
    FOREACH tab IN ARRAY ARRAY['credits', 'ledger', 'holds', 'alert_rules',
                                'alerts', 'budgets'] LOOP
        SELECT a.atttypid::regtype INTO have FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = pg_catalog.format('msgbilling.%I', tab)::regclass
           AND a.attname = 'org_id';
        CONTINUE WHEN have = typ;
        IF have <> 'text'::regtype
           AND (EXISTS (SELECT 1 FROM msgbilling.credits)
                OR EXISTS (SELECT 1 FROM msgbilling.ledger)) THEN
            RAISE EXCEPTION 'wallets exist with org ids of type %, not %', have, typ
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'msgbilling keeps one org id type per database.',
                      HINT = 'Attach a table whose org column has the type the wallets use.';
        END IF;
        BEGIN
            EXECUTE pg_catalog.format('ALTER TABLE msgbilling.%I ALTER COLUMN org_id'
                                      ' TYPE %s USING org_id::text::%s', tab, typ, typ);
        EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
            RAISE EXCEPTION 'wallets exist with org ids that are not of type %', typ
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'msgbilling keeps one org id type per database: the wallets'' are text.',
                      HINT = 'Attach a table whose org column has the type the wallets use.';
        END;
    END LOOP;
END;
$$;

REVOKE ALL ON FUNCTION msgbilling._set_org_type(regtype) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Poolers: pace and batch size as arguments, not only session settings
-------------------------------------------------------------------------------

-- Through PgBouncer in transaction mode a session setting (SET
-- msgbilling.max_rate) stays with the server connection and paces the
-- next client's billing; arguments hold for the call alone.
SELECT msgbilling._save_grants('msgbilling.process_all_pending("any", bigint)');
SELECT msgbilling._save_grants('msgbilling.drain(integer, "any")');
DROP PROCEDURE msgbilling.drain(integer, "any");
DROP FUNCTION msgbilling.process_all_pending("any", bigint);

-- batch_size: messages per batch (default msgbilling.batch_size);
-- max_rate: messages a second at most (default msgbilling.max_rate; 0, no
-- limit).
CREATE FUNCTION msgbilling.process_all_pending(org_id "any" DEFAULT NULL,
                                               max_messages bigint DEFAULT NULL,
                                               batch_size integer DEFAULT NULL,
                                               max_rate integer DEFAULT NULL)
RETURNS TABLE (charged bigint, failed bigint, skipped bigint, credits numeric)
AS 'MODULE_PATHNAME', 'process_all_pending'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- A procedure so that it can commit after each batch; it cannot be
-- SECURITY DEFINER (that forbids transaction control), so its caller needs
-- the privileges billing needs.  max_rate as process_all_pending's.
CREATE PROCEDURE msgbilling.drain(batch_size integer DEFAULT 10000,
                                  org_id "any" DEFAULT NULL,
                                  max_rate integer DEFAULT NULL)
AS 'MODULE_PATHNAME', 'drain'
LANGUAGE C;

-- Billing moves money: only roles granted these may bill.
SELECT msgbilling._restore_grants('msgbilling.process_all_pending("any", bigint, integer, integer)',
                                  'msgbilling.process_all_pending("any",bigint)');
SELECT msgbilling._restore_grants('msgbilling.drain(integer, "any", integer)',
                                  'msgbilling.drain(integer,"any")');

-- schedule() checks the new signatures.
SELECT msgbilling._save_grants('msgbilling.schedule(text)');
DROP FUNCTION msgbilling.schedule(text);

-- Run CALL msgbilling.drain() on a cron schedule (default: every five
-- minutes) as the pg_cron job "msgbilling-drain"; returns its job id.
-- Scheduling again changes the schedule of the same job.
CREATE FUNCTION msgbilling.schedule(schedule text DEFAULT '*/5 * * * *')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    job_id bigint;
BEGIN
    IF schedule IS NULL THEN
        RAISE EXCEPTION 'schedule must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass a cron expression, for example ''*/5 * * * *'' (every five minutes).';
    END IF;
    IF pg_catalog.btrim(schedule) = '' THEN
        RAISE EXCEPTION 'schedule must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass a cron expression, for example ''*/5 * * * *'' (every five minutes).';
    END IF;

    PERFORM msgbilling._require_cron(pg_catalog.format('SELECT cron.schedule_in_database(%L, %L, %L, %L)',
                                     'msgbilling-drain', schedule,
                                     'CALL msgbilling.drain()', pg_catalog.current_database()));

    IF NOT (pg_catalog.has_function_privilege('msgbilling.drain(integer, "any", integer)', 'EXECUTE')
            AND pg_catalog.has_function_privilege(
                    'msgbilling.process_all_pending("any", bigint, integer, integer)', 'EXECUTE')) THEN
        RAISE EXCEPTION 'role "%" may not run msgbilling.drain()', current_user
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'pg_cron runs the job as the role that schedules it, so every run would fail.',
                  HINT = pg_catalog.format('GRANT EXECUTE ON PROCEDURE msgbilling.drain(integer, "any", integer) TO %1$I;'
                                           ' GRANT EXECUTE ON FUNCTION msgbilling.process_all_pending("any", bigint, integer, integer) TO %1$I;',
                                           current_user);
    END IF;

    -- pg_cron upserts a named job by (name, user); an invalid cron
    -- expression is pg_cron's error.
    EXECUTE 'SELECT cron.schedule(job_name => $1, schedule => $2, command => $3)'
       INTO job_id
      USING 'msgbilling-drain'::text, schedule, 'CALL msgbilling.drain()'::text;
    RETURN job_id;
END;
$$;

-- A job bills every few minutes: only roles granted it may start it.
SELECT msgbilling._restore_grants('msgbilling.schedule(text)');

-------------------------------------------------------------------------------
-- A refund is once per charge, not per message id
-------------------------------------------------------------------------------

-- Ids come back after TRUNCATE ... RESTART IDENTITY: a new message 3
-- refunded after an old message 3 was met the unique index on refund
-- entries' message ids.  A refund entry now names the charge entry it
-- gives back (charge_id), once per message of that charge.
ALTER TABLE msgbilling.ledger ADD COLUMN charge_id bigint;
DROP INDEX msgbilling.ledger_one_refund;
CREATE UNIQUE INDEX ledger_one_refund ON msgbilling.ledger (charge_id, message_id)
    WHERE kind = 'refund';

-------------------------------------------------------------------------------
-- attach: a nullable created column, and attaching a large table live
-------------------------------------------------------------------------------

-- The CREATE INDEX statements of msgbilling's indexes on rel, by the names
-- given, CONCURRENTLY (live) or not.  On a partitioned table an index cannot be
-- built concurrently: each is created ON ONLY the table (fast, invalid),
-- built concurrently on each partition, and attached to it there.
CREATE FUNCTION msgbilling._index_statements(rel regclass, names text[],
                                             key_col name, org_col name,
                                             created_col name, live boolean)
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    order_cols text := CASE WHEN created_col IS NULL THEN pg_catalog.quote_ident(key_col)
                       ELSE pg_catalog.format('%I, %I', created_col, key_col) END;
    defs text[] := ARRAY[pg_catalog.format('(%s) WHERE billing_status = ''pending''', order_cols),
                         pg_catalog.format('(%I, %s) WHERE billing_status = ''pending''',
                                           org_col, order_cols),
                         pg_catalog.format('(%I) WHERE billing_status = ''failed''', org_col)];
    partitioned boolean := (SELECT c.relkind = 'p' FROM pg_catalog.pg_class c WHERE c.oid = rel);
    i integer;
    leaf regclass;
    nsp name;
    bare name;
    part_index text;
BEGIN
    FOR i IN 1 .. 3 LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_index x
                               WHERE x.indexrelid = pg_catalog.to_regclass(names[i])
                                 AND x.indisvalid);
        SELECT c.relname INTO bare FROM pg_catalog.pg_class c
         WHERE c.oid = pg_catalog.to_regclass(names[i]);
        IF FOUND THEN
            -- a concurrent build that failed leaves an invalid index
            RETURN NEXT pg_catalog.format('DROP INDEX %s%s',
                                          CASE WHEN live AND NOT partitioned
                                               THEN 'CONCURRENTLY ' ELSE '' END, names[i]);
        END IF;
        -- the name in rel's schema, unqualified as CREATE INDEX takes it
        bare := pg_catalog.substr(names[i], pg_catalog.length(pg_catalog.quote_ident(
                    (SELECT n.nspname FROM pg_catalog.pg_class c
                       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.oid = rel))) + 2);
        IF NOT live THEN
            RETURN NEXT pg_catalog.format('CREATE INDEX %s ON %s %s', bare, rel, defs[i]);
        ELSIF NOT partitioned THEN
            RETURN NEXT pg_catalog.format('CREATE INDEX CONCURRENTLY %s ON %s %s',
                                          bare, rel, defs[i]);
        ELSE
            RETURN NEXT pg_catalog.format('CREATE INDEX %s ON ONLY %s %s', bare, rel, defs[i]);
            FOR leaf, nsp IN SELECT p.relid, n.nspname FROM pg_catalog.pg_partition_tree(rel) p
                               JOIN pg_catalog.pg_class c ON c.oid = p.relid
                               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                              WHERE p.isleaf ORDER BY p.relid::regclass::text LOOP
                part_index := 'mb_' || leaf::pg_catalog.oid || '_' || i;
                RETURN NEXT pg_catalog.format('CREATE INDEX CONCURRENTLY %I ON %s %s',
                                              part_index, leaf, defs[i]);
                RETURN NEXT pg_catalog.format('ALTER INDEX %s ATTACH PARTITION %I.%I',
                                              names[i], nsp, part_index);
            END LOOP;
        END IF;
    END LOOP;
END;
$$;

-- What is left to build of msgbilling's indexes on the attached table,
-- after attach(concurrently => true): statements to run one at a time, at
-- the top level (CREATE INDEX CONCURRENTLY cannot run in a function), as
-- psql's  SELECT msgbilling.attach_index_statements() \gexec  does.
-- Billing waits for them.  None once they are built.
CREATE FUNCTION msgbilling.attach_index_statements()
RETURNS SETOF text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s FROM msgbilling.config c,
           msgbilling._index_statements(c.messages, c.index_names, c.key_column,
                                        c.org_column, c.created_column, true) s
$$;

SELECT msgbilling._save_grants('msgbilling.attach(regclass, name, name, name, name, boolean)');
DROP FUNCTION msgbilling.attach(regclass, name, name, name, name, boolean);
DROP FUNCTION msgbilling._create_indexes(regclass, name, name, name);

-- The names of msgbilling's indexes on rel, schema-qualified; those of an
-- earlier attach are dropped (DROP EXTENSION does not touch the app's
-- table), and with build, the indexes are built now.
--
-- Instead of the guide's three indexes (billing_status; org_id,
-- billing_status; charged_at), billing uses partial indexes that hold only
-- the backlog: they stay small however many messages were ever billed, and
-- a message leaves them when it is billed, and billing a message inserts
-- into none of them.  No full index on billing_status: every billed message
-- would add an entry to it.  history() reads an org's messages by the org
-- column, through the app's own index on it (most apps have one;
-- docs/reference.md says which to create otherwise).  charged_at gets none: no
-- msgbilling query filters on it.
CREATE FUNCTION msgbilling._create_indexes(rel regclass, key_col name,
                                           org_col name, created_col name,
                                           build boolean)
RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    base text := (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = rel);
    nsp name := (SELECT n.nspname FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = rel);
    names name[];
    qualified text[];
    old regclass;
    stmt text;
BEGIN
    -- The table name cut to 40 bytes (not characters: a name holds 63
    -- bytes), so that the suffixes keep the three names whole and apart.
    WHILE pg_catalog.octet_length(base) > 40 LOOP
        base := pg_catalog.left(base, -1);
    END LOOP;
    names := ARRAY[base || '_mb_pending', base || '_mb_org_pending',
                   base || '_mb_failed'];
    qualified := (SELECT pg_catalog.array_agg(pg_catalog.quote_ident(nsp) || '.'
                                              || pg_catalog.quote_ident(u.n) ORDER BY u.o)
                    FROM pg_catalog.unnest(names) WITH ORDINALITY u(n, o));
    -- drop ours, never an index of another table (an index of rel lives in
    -- rel's schema)
    FOR old IN SELECT x.indexrelid::regclass FROM pg_catalog.pg_index x
                 JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
                WHERE x.indrelid = rel AND i.relname = ANY (names) LOOP
        EXECUTE pg_catalog.format('DROP INDEX %s', old);
    END LOOP;
    IF build THEN
        FOR stmt IN SELECT msgbilling._index_statements(rel, qualified, key_col, org_col,
                                                        created_col, false) LOOP
            EXECUTE stmt;
        END LOOP;
    END IF;
    RETURN qualified;
END;
$$;

-- An org's messages are billed in order of creation: one without a
-- creation time would have no place in that order.  A nullable created
-- column that holds no NULL (the common "created_at timestamptz DEFAULT
-- now()") is made NOT NULL: a scan of the table, under its ALTER TABLE
-- lock, unless a valid CHECK (created IS NOT NULL) constraint proves it,
-- which is the only way attach(concurrently => true) takes.
CREATE FUNCTION msgbilling._require_created_not_null(rel regclass, col name,
                                                     live boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    proven boolean;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = rel AND a.attname = col AND a.attnotnull) THEN
        RETURN;
    END IF;
    proven := EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                       WHERE k.conrelid = rel AND k.contype = 'c' AND k.convalidated
                         AND pg_catalog.pg_get_constraintdef(k.oid)
                             = pg_catalog.format('CHECK ((%I IS NOT NULL))', col));
    IF live AND NOT proven THEN
        RAISE EXCEPTION 'created column "%" of table % must be NOT NULL', col, rel
            USING ERRCODE = 'invalid_table_definition',
                  DETAIL = 'Setting NOT NULL reads the whole table while it holds the app''s INSERTs.',
                  HINT = pg_catalog.format('Prove it without blocking first: ALTER TABLE %1$s ADD CONSTRAINT %2$I CHECK (%3$I IS NOT NULL) NOT VALID; ALTER TABLE %1$s VALIDATE CONSTRAINT %2$I;',
                                           rel, col || '_not_null', col);
    END IF;
    BEGIN
        EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL', rel, col);
    EXCEPTION WHEN not_null_violation THEN
        RAISE EXCEPTION 'created column "%" of table % holds NULLs', col, rel
            USING ERRCODE = 'invalid_table_definition',
                  DETAIL = 'msgbilling bills an org''s messages in order of creation.',
                  HINT = pg_catalog.format('Give those messages a creation time, then attach again: UPDATE %s SET %I = ... WHERE %I IS NULL;',
                                           rel, col, col);
    END;
    RAISE NOTICE 'created column "%" of table % is NOT NULL now', col, rel
        USING DETAIL = 'msgbilling bills an org''s messages in order of creation.';
END;
$$;

-- What a message is billed for: at least one token column, each an
-- integer column of rel, and never two of them for the same tokens.
CREATE FUNCTION msgbilling._check_token_columns(rel regclass, tokens name,
                                                input name, output name,
                                                cached name)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cols name[] := ARRAY[tokens, input, output, cached];
    roles text[] := ARRAY['tokens', 'input_tokens', 'output_tokens', 'cached_tokens'];
    i integer;
BEGIN
    IF tokens IS NULL AND input IS NULL AND output IS NULL THEN
        RAISE EXCEPTION 'no token column to bill messages by'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass tokens_column, or input_tokens_column and output_tokens_column.';
    END IF;
    IF tokens IS NOT NULL AND input IS NOT NULL THEN
        RAISE EXCEPTION 'tokens_column and input_tokens_column cannot both be set'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Both are billed at the input rate: a message''s input would be charged twice.',
                  HINT = 'Pass tokens_column => NULL with input_tokens_column and output_tokens_column.';
    END IF;
    FOR i IN 1 .. 4 LOOP
        CONTINUE WHEN cols[i] IS NULL;
        PERFORM msgbilling._column_type(rel, cols[i], roles[i], '{smallint,integer,bigint}');
        IF cols[i] = ANY (cols[i + 1 :]) THEN
            RAISE EXCEPTION 'column "%" is named twice among the token columns', cols[i]
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'Token columns are disjoint counts: each token is billed once.';
        END IF;
    END LOOP;
END;
$$;

-- concurrently: attach a large table while the app writes to it, holding
-- its INSERTs for milliseconds: only catalog changes (columns with constant
-- defaults, triggers, the configuration), no scan of the table and no
-- index built; attach_index_statements() then builds the indexes
-- CONCURRENTLY, and billing waits for them.  The existing rows are legacy.
--
-- The token columns are disjoint counts, each billed at its tariff's rate:
-- input_tokens_column (uncached input), output_tokens_column and
-- cached_tokens_column (cache-read input); tokens_column alone is billed at
-- the input rate, and is left NULL when input_tokens_column is named (both
-- would be input).  billable_column (boolean): a message whose value is
-- false is no_charge.  hold_column (bigint): the hold the app took for the
-- message, released when the message is billed.
CREATE FUNCTION msgbilling.attach(messages regclass,
                                  org_column name DEFAULT 'org_id',
                                  tokens_column name DEFAULT 'tokens_used',
                                  model_column name DEFAULT NULL,
                                  created_column name DEFAULT NULL,
                                  bill_existing boolean DEFAULT false,
                                  concurrently boolean DEFAULT false,
                                  input_tokens_column name DEFAULT NULL,
                                  output_tokens_column name DEFAULT NULL,
                                  cached_tokens_column name DEFAULT NULL,
                                  billable_column name DEFAULT NULL,
                                  hold_column name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pk record;
    org_type regtype;
    attached regclass;
    legacy bigint;
    pending bigint;
    kind "char";
    had_status boolean;
    live boolean := COALESCE(attach.concurrently, false);
BEGIN
    IF messages IS NULL THEN
        RAISE EXCEPTION 'messages table must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    LOCK TABLE msgbilling.config IN EXCLUSIVE MODE;
    SELECT c.messages INTO attached FROM msgbilling.config c;
    IF FOUND AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class r
                              WHERE r.oid = attached) THEN
        -- the attached table was dropped: its columns went with it
        RAISE NOTICE 'the previously attached table no longer exists; replacing it';
        DELETE FROM msgbilling.config;
    ELSIF FOUND THEN
        RAISE EXCEPTION 'msgbilling is already attached to table %', attached
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'msgbilling bills one messages table per database.',
                  HINT = pg_catalog.format('Call msgbilling.detach(%L) first.', attached);
    END IF;
    SELECT c.relkind INTO kind FROM pg_catalog.pg_class c WHERE c.oid = messages;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relation with OID % does not exist', messages::pg_catalog.oid
            USING ERRCODE = 'undefined_table';
    ELSIF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', messages
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF live AND bill_existing THEN
        RAISE EXCEPTION 'attach concurrently leaves the existing messages legacy'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Billing them would mark every row of the table, which holds its INSERTs.',
                  HINT = 'Attach without concurrently to bill them, or pass bill_existing => false.';
    END IF;

    pk := msgbilling._primary_key(messages);
    org_type := msgbilling._column_type(messages, org_column, 'org',
                                        '{uuid,bigint,integer,text}');
    PERFORM msgbilling._check_token_columns(messages, tokens_column,
                                            input_tokens_column,
                                            output_tokens_column,
                                            cached_tokens_column);
    IF billable_column IS NOT NULL THEN
        PERFORM msgbilling._column_type(messages, billable_column, 'billable',
                                        '{boolean}');
    END IF;
    IF hold_column IS NOT NULL THEN
        PERFORM msgbilling._column_type(messages, hold_column, 'hold', '{bigint}');
    END IF;
    IF model_column IS NOT NULL THEN
        PERFORM msgbilling._column_type(messages, model_column, 'model',
                                        '{text,character varying}');
    END IF;
    IF created_column IS NOT NULL THEN
        PERFORM msgbilling._column_type(messages, created_column, 'created',
            '{timestamp with time zone,timestamp without time zone}');
        PERFORM msgbilling._require_created_not_null(messages, created_column, live);
    END IF;

    -- Rows already in the table get the status they are added with:
    -- 'legacy' (never billed, already charged by the old system) unless
    -- bill_existing.  A constant default adds the column without rewriting
    -- the table; new rows then default to 'pending'.
    had_status := EXISTS (SELECT 1 FROM pg_catalog.pg_attribute s
                           WHERE s.attrelid = messages AND s.attname = 'billing_status'
                             AND s.attnum > 0 AND NOT s.attisdropped);
    PERFORM msgbilling._add_column(messages, 'billing_status',
        'character varying(20)',
        pg_catalog.format('NOT NULL DEFAULT %L',
                          CASE WHEN bill_existing THEN 'pending' ELSE 'legacy' END));
    IF had_status OR NOT live THEN
        -- an existing column is read whole; a new one holds its default
        PERFORM msgbilling._adopt_status(messages, bill_existing);
    ELSE
        EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN billing_status'
                                  ' SET DEFAULT ''pending''', messages);
    END IF;
    PERFORM msgbilling._add_column(messages, 'cost_credits', 'numeric(10,6)');
    PERFORM msgbilling._add_column(messages, 'charged_at',
                                   'timestamp with time zone');
    PERFORM msgbilling._add_column(messages, 'billing_error', 'text');
    PERFORM msgbilling._add_column(messages, 'billing_ledger_id', 'bigint');
    -- the config row's trigger gives the wallets and ledger the org type
    INSERT INTO msgbilling.config (messages, key_column, org_column,
                                   tokens_column, model_column,
                                   created_column, org_type,
                                   input_tokens_column, output_tokens_column,
                                   cached_tokens_column, billable_column,
                                   hold_column, index_names)
    VALUES (messages, pk.col, org_column, tokens_column, model_column,
            created_column, org_type, input_tokens_column,
            output_tokens_column, cached_tokens_column, billable_column,
            hold_column,
            msgbilling._create_indexes(messages, pk.col, org_column,
                                       created_column, NOT live));
    PERFORM msgbilling._create_guards(messages);

    PERFORM msgbilling._wake_worker();
    IF live THEN
        RAISE NOTICE 'msgbilling attached to table %; its indexes are not built yet', messages
            USING DETAIL = 'Existing messages are legacy and will not be billed; billing waits for the indexes.',
                  HINT = 'Build them without blocking the app: in psql, SELECT msgbilling.attach_index_statements() \gexec';
    ELSE
        EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %s WHERE billing_status = ''legacy''',
                                  messages) INTO legacy;
        EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %s WHERE billing_status = ''pending''',
                                  messages) INTO pending;
        RAISE NOTICE 'msgbilling attached to table %', messages
            USING DETAIL = pg_catalog.format('%s existing messages are marked legacy and will not be billed;'
                                             ' %s are pending and will be.', legacy, pending);
    END IF;
    -- history() reads an org's messages by the org column.  msgbilling adds
    -- no full index for it (each would take a write per billed message):
    -- say so when none of the app's indexes starts with that column.
    PERFORM FROM pg_catalog.pg_index x
               JOIN pg_catalog.pg_attribute a
                 ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]
     WHERE x.indrelid = messages AND x.indpred IS NULL
       AND a.attname = org_column;
    IF NOT FOUND THEN
        RAISE NOTICE 'no index on table % starts with column %', messages, org_column
            USING DETAIL = 'msgbilling.history() reads an org''s messages by that column.',
                  HINT = pg_catalog.format('Create one, e.g. CREATE INDEX ON %s (%I, %I).',
                                           messages, org_column,
                                           COALESCE(created_column, pk.col));
    END IF;
END;
$$;

-- attach and detach alter the app's table and msgbilling's own tables:
-- they are for the extension's owner (a DBA), who may grant them.
SELECT msgbilling._restore_grants('msgbilling.attach(regclass, name, name, name, name, boolean, boolean, name, name, name, name, name)',
                                  'msgbilling.attach(regclass,name,name,name,name,boolean)');
REVOKE ALL ON FUNCTION msgbilling._index_statements(regclass, text[], name, name, name, boolean),
    msgbilling._create_indexes(regclass, name, name, name, boolean),
    msgbilling._require_created_not_null(regclass, name, boolean),
    msgbilling._check_token_columns(regclass, name, name, name, name),
    msgbilling.attach_index_statements() FROM PUBLIC;

-------------------------------------------------------------------------------
-- What a message is billed for: input, output and cached token columns, and
-- a billable column; a message that is not billable is no_charge
-------------------------------------------------------------------------------

ALTER TABLE msgbilling.config
    ALTER COLUMN tokens_column DROP NOT NULL,
    ADD COLUMN input_tokens_column name,
    ADD COLUMN output_tokens_column name,
    ADD COLUMN cached_tokens_column name,
    ADD COLUMN billable_column name,
    ADD CONSTRAINT config_some_tokens
        CHECK (tokens_column IS NOT NULL OR input_tokens_column IS NOT NULL
               OR output_tokens_column IS NOT NULL);

-- no_charge messages (cost 0, never debited), counted like the charged ones
ALTER TABLE msgbilling.credits
    ADD COLUMN no_charge_messages bigint NOT NULL DEFAULT 0;

-- A re-attached table's no_charge messages stay so: they owe nothing.
DROP FUNCTION msgbilling._adopt_status(regclass, boolean);
CREATE FUNCTION msgbilling._adopt_status(rel regclass, bill_existing boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    odd text;
BEGIN
    EXECUTE pg_catalog.format('SELECT billing_status FROM %s WHERE billing_status NOT IN'
                              ' (''pending'', ''charged'', ''failed'', ''refunded'','
                              ' ''no_charge'', ''legacy'') LIMIT 1', rel) INTO odd;
    IF odd IS NOT NULL THEN
        RAISE EXCEPTION 'column billing_status of table % holds a value msgbilling does not know: %',
                        rel, pg_catalog.quote_literal(odd)
            USING ERRCODE = 'check_violation',
                  HINT = 'Map the values to pending, charged, failed, refunded, no_charge or legacy first.';
    END IF;
    EXECUTE pg_catalog.format('UPDATE %s SET billing_status = %L WHERE billing_status IS NULL',
                              rel, CASE WHEN bill_existing THEN 'pending' ELSE 'legacy' END);
    -- Messages the old system marked charged have no ledger entry here:
    -- they were paid outside msgbilling, which makes them legacy.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = rel AND a.attname = 'billing_ledger_id'
                  AND NOT a.attisdropped) THEN
        EXECUTE pg_catalog.format('UPDATE %s SET billing_status = ''legacy'''
                                  ' WHERE billing_status IN (''charged'', ''refunded'')'
                                  ' AND billing_ledger_id IS NULL', rel);
    ELSE
        EXECUTE pg_catalog.format('UPDATE %s SET billing_status = ''legacy'''
                                  ' WHERE billing_status IN (''charged'', ''refunded'')', rel);
    END IF;
    EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN billing_status SET NOT NULL,'
                              ' ALTER COLUMN billing_status SET DEFAULT ''pending''', rel);
END;
$$;
REVOKE ALL ON FUNCTION msgbilling._adopt_status(regclass, boolean) FROM PUBLIC;

-- stats() counts no_charge messages; history() shows each token count
-- (tokens is their sum).
SELECT msgbilling._save_grants('msgbilling.stats("any")');
SELECT msgbilling._save_grants('msgbilling.history("any", integer, timestamptz)');
DROP FUNCTION msgbilling.stats("any");
DROP FUNCTION msgbilling.history("any", integer, timestamptz);

CREATE FUNCTION msgbilling.stats(org_id "any" DEFAULT NULL)
RETURNS TABLE (pending bigint, charged bigint, failed bigint, refunded bigint,
               credits_charged numeric, oldest_pending timestamptz,
               no_charge bigint)
AS 'MODULE_PATHNAME', 'stats'
LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION msgbilling.history(org_id "any", max_rows integer DEFAULT 50,
                                   before timestamptz DEFAULT NULL)
RETURNS TABLE (message_id text, created_at timestamptz, tokens bigint,
               model text, cost_credits numeric, billing_status text,
               charged_at timestamptz, failure_reason text,
               input_tokens bigint, output_tokens bigint, cached_tokens bigint)
AS 'MODULE_PATHNAME', 'history'
LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

SELECT msgbilling._restore_grants('msgbilling.stats("any")');
SELECT msgbilling._restore_grants('msgbilling.history("any", integer, timestamptz)');

-------------------------------------------------------------------------------
-- Done replacing functions
-------------------------------------------------------------------------------

DROP FUNCTION msgbilling._save_grants(regprocedure),
    msgbilling._restore_grants(regprocedure, text);
DROP TABLE msgbilling._saved_grants;

-------------------------------------------------------------------------------
-- Tariffs: token rates, a fee per message, a minimum charge and how the
-- cost is rounded.  A price row is a tariff, its credits_per_token the
-- input rate; a row set_price adds means what the defaults say: output and
-- cached tokens at that rate, no fee, no minimum, rounded to the nearest
-- 0.000001 (output_per_token NULL: the input rate).
-------------------------------------------------------------------------------

ALTER TABLE msgbilling.prices
    ADD COLUMN output_per_token numeric
        CHECK (output_per_token >= 0 AND output_per_token < 10000),
    ADD COLUMN cached_per_token numeric
        CHECK (cached_per_token >= 0 AND cached_per_token < 10000),
    ADD COLUMN per_message numeric NOT NULL DEFAULT 0
        CHECK (per_message >= 0 AND per_message < 10000),
    ADD COLUMN minimum_charge numeric NOT NULL DEFAULT 0
        CHECK (minimum_charge >= 0 AND minimum_charge < 10000),
    ADD COLUMN increment numeric NOT NULL DEFAULT 0.000001
        CHECK (increment > 0 AND increment < 10000 AND increment % 0.000001 = 0),
    ADD COLUMN rounding text NOT NULL DEFAULT 'nearest'
        CHECK (rounding IN ('nearest', 'up', 'down'));

CREATE FUNCTION msgbilling.set_tariff(model text, input_per_token numeric,
                                      output_per_token numeric,
                                      cached_per_token numeric DEFAULT NULL,
                                      per_message numeric DEFAULT 0,
                                      minimum_charge numeric DEFAULT 0,
                                      increment numeric DEFAULT 0.000001,
                                      rounding text DEFAULT 'nearest',
                                      effective_from timestamptz DEFAULT pg_catalog.now())
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM msgbilling._check_tariff_amount('input_per_token', input_per_token);
    PERFORM msgbilling._check_tariff_amount('output_per_token', output_per_token);
    IF cached_per_token IS NOT NULL THEN
        PERFORM msgbilling._check_tariff_amount('cached_per_token', cached_per_token);
    END IF;
    PERFORM msgbilling._check_tariff_amount('per_message', per_message);
    PERFORM msgbilling._check_tariff_amount('minimum_charge', minimum_charge);
    PERFORM msgbilling._check_tariff_amount('increment', increment);
    IF increment = 0 OR increment % 0.000001 <> 0 THEN
        RAISE EXCEPTION 'increment must be a positive multiple of 0.000001, not %', increment
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Costs are kept to six decimal places.';
    END IF;
    IF rounding IS NULL OR rounding NOT IN ('nearest', 'up', 'down') THEN
        RAISE EXCEPTION 'unknown rounding %', COALESCE(pg_catalog.quote_literal(rounding), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''nearest'' (half away from zero), ''up'' or ''down''.';
    END IF;
    PERFORM msgbilling._check_new_version(model, effective_from);
    INSERT INTO msgbilling.prices (model, credits_per_token, output_per_token,
                                   cached_per_token, per_message, minimum_charge,
                                   increment, rounding, effective_from)
    VALUES (model, input_per_token, output_per_token, cached_per_token, per_message,
            minimum_charge, increment, rounding, effective_from);
    -- Messages that failed for want of a price may have one now.
    PERFORM msgbilling._repend_no_price();
END;
$$;

-- The tariff a message of model created at time at is billed at: the
-- model's own, else the default (tariff_model NULL); no row when neither.
CREATE FUNCTION msgbilling.tariff_at(model text, at timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (tariff_model text, input_per_token numeric, output_per_token numeric,
               cached_per_token numeric, per_message numeric, minimum_charge numeric,
               increment numeric, rounding text, effective_from timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.model, p.credits_per_token, COALESCE(p.output_per_token, p.credits_per_token),
           p.cached_per_token, p.per_message, p.minimum_charge, p.increment, p.rounding,
           p.effective_from
      FROM msgbilling.prices p
     WHERE (p.model = $1 OR p.model IS NULL) AND p.effective_from <= $2
     ORDER BY p.model IS NULL, p.effective_from DESC
     LIMIT 1
$$;

-- A tariff decides what every message costs: for the roles granted it.
REVOKE ALL ON FUNCTION msgbilling._check_tariff_amount(text, numeric),
    msgbilling._check_new_version(text, timestamptz),
    msgbilling.set_tariff(text, numeric, numeric, numeric, numeric, numeric, numeric,
                          text, timestamptz),
    msgbilling.tariff_at(text, timestamptz) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Spend control: holds before the LLM call, low-balance alerts, period
-- budgets (C: hold.c, spend.c; msgbilling._ledger_added below)
-------------------------------------------------------------------------------

-- Credits reserved for in-flight LLM calls.  A hold counts until it is
-- released (release(), or billing the message that names it) or until
-- expires_at, whichever comes first; an expired row is only space, and the
-- worker deletes it.
CREATE TABLE msgbilling.holds (
    id bigserial PRIMARY KEY,
    org_id text NOT NULL,
    amount numeric(20,6) NOT NULL CHECK (amount > 0),
    hold_key text,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
-- hold() sums an org's unexpired holds from this index alone.
CREATE INDEX holds_org_expiry ON msgbilling.holds (org_id, expires_at)
    INCLUDE (amount);
-- A hold key names one hold of its org: two tenants' keys never meet.
CREATE UNIQUE INDEX holds_org_key ON msgbilling.holds (org_id, hold_key)
    WHERE hold_key IS NOT NULL;

-- Low-balance thresholds.  org_id NULL: every org that has none of its own.
CREATE TABLE msgbilling.alert_rules (
    org_id text,
    threshold numeric(20,6) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE UNIQUE INDEX alert_rules_org_threshold
    ON msgbilling.alert_rules (org_id, threshold) NULLS NOT DISTINCT;

-- One row per crossing: 'low' (the balance went below threshold),
-- 'recovered' (back to it or above), 'budget' (a soft budget's spend
-- reached its amount, threshold; once per period).  Also sent at commit
-- as NOTIFY msgbilling_alerts, with the row as JSON.
CREATE TABLE msgbilling.alerts (
    id bigserial PRIMARY KEY,
    org_id text NOT NULL,
    threshold numeric(20,6) NOT NULL,
    kind text NOT NULL CHECK (kind IN ('low', 'recovered', 'budget')),
    balance numeric(20,6) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX alerts_org_id ON msgbilling.alerts (org_id, id);

-- Spending limits per period.  spent is the net of the org's charge and
-- refund entries in the ledger since period_start (_ledger_added keeps
-- it); a charge in a later period starts it again from zero.
CREATE TABLE msgbilling.budgets (
    org_id text NOT NULL,
    period text NOT NULL CHECK (period IN ('day', 'week', 'month')),
    amount numeric(20,6) NOT NULL CHECK (amount >= 0),
    hard boolean NOT NULL,
    time_zone text NOT NULL,
    period_start timestamptz NOT NULL,
    spent numeric(20,6) NOT NULL DEFAULT 0,
    -- soft: the period whose budget alert went out
    alerted_start timestamptz,
    -- hard: the period of the org's budget_exceeded failures, which go
    -- back to pending once a later one starts
    exceeded_start timestamptz,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (org_id, period)
);
CREATE INDEX budgets_exceeded ON msgbilling.budgets (exceeded_start)
    WHERE exceeded_start IS NOT NULL;

SELECT pg_catalog.pg_extension_config_dump('msgbilling.holds', '');
SELECT pg_catalog.pg_extension_config_dump('msgbilling.holds_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('msgbilling.alert_rules', '');
SELECT pg_catalog.pg_extension_config_dump('msgbilling.alerts', '');
SELECT pg_catalog.pg_extension_config_dump('msgbilling.alerts_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('msgbilling.budgets', '');
REVOKE ALL ON msgbilling.holds, msgbilling.alert_rules, msgbilling.alerts,
    msgbilling.budgets FROM PUBLIC;

-- The start of the period of a budget that contains time at: a calendar
-- day, ISO week (from Monday) or calendar month in time zone tz.
CREATE FUNCTION msgbilling._period_start(period text, tz text, at timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.date_trunc(period, at, tz);

CREATE FUNCTION msgbilling._period_end(period text, tz text, at timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN (pg_catalog.timezone(tz, pg_catalog.date_trunc(period, at, tz))
        + pg_catalog.concat('1 ', period)::interval) AT TIME ZONE tz;

-- An alert goes out at commit as NOTIFY msgbilling_alerts, its row as JSON.
CREATE FUNCTION msgbilling._notify_alert(a msgbilling.alerts)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
SELECT pg_catalog.pg_notify('msgbilling_alerts',
           pg_catalog.json_build_object('org_id', a.org_id, 'kind', a.kind,
               'threshold', a.threshold, 'balance', a.balance)::text)
$$;

-- After msgbilling writes ledger entries (billing.c and wallet.c call it
-- in the same transaction, with their ids): the low-balance crossings, and
-- the spend of the orgs' budgets.  Every balance change has its entry
-- (balance_after, amount), made while its wallet is held, so an org's
-- entries are in order and each crossing is seen once, by the transaction
-- that made it; an aborted one sends nothing, and a restore, which writes
-- no entry through msgbilling, sends nothing again.  (A trigger on the
-- ledger would do the same for every INSERT, at 3 to 4% of a billing run:
-- its transition table costs more than this call.)
--
-- The SHARE lock on alert_rules is the rules lock: set_alert and
-- drop_alert take SHARE ROW EXCLUSIVE on it, so a threshold is never set
-- between a balance change and its check.  (set_budget holds the org's
-- wallet, which every charge of the org holds until it commits.)
CREATE FUNCTION msgbilling._ledger_added(entries bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sent bigint;
BEGIN
    LOCK TABLE msgbilling.alert_rules IN SHARE MODE;
    PERFORM FROM msgbilling.alert_rules LIMIT 1;
    IF NOT FOUND THEN
        PERFORM FROM msgbilling.budgets LIMIT 1;
        IF NOT FOUND THEN
            RETURN;
        END IF;
    END IF;
    WITH e AS (
        SELECT n.id, n.org_id, n.balance_after - n.amount AS before,
               n.balance_after AS after
          FROM msgbilling.ledger n
         WHERE n.id = ANY (entries) AND n.amount <> 0),
    r AS (
        SELECT e.*, a.threshold FROM e JOIN msgbilling.alert_rules a
            ON a.org_id = e.org_id
        UNION ALL
        SELECT e.*, a.threshold FROM e JOIN msgbilling.alert_rules a
            ON a.org_id IS NULL
         WHERE NOT EXISTS (SELECT 1 FROM msgbilling.alert_rules o
                            WHERE o.org_id = e.org_id)),
    i AS (
        INSERT INTO msgbilling.alerts AS a (org_id, threshold, kind, balance)
        SELECT r.org_id, r.threshold,
               CASE WHEN r.after < r.threshold THEN 'low' ELSE 'recovered' END,
               r.after
          FROM r
         WHERE (r.before >= r.threshold) <> (r.after >= r.threshold)
         ORDER BY r.id, r.threshold
        RETURNING a)
    SELECT pg_catalog.count(msgbilling._notify_alert(i.a)) INTO sent FROM i;
    WITH s AS (
        SELECT n.org_id, -pg_catalog.sum(n.amount) AS amount,
               (pg_catalog.array_agg(n.balance_after ORDER BY n.id DESC))[1] AS balance
          FROM msgbilling.ledger n
         WHERE n.id = ANY (entries) AND n.kind IN ('charge', 'refund')
         GROUP BY n.org_id),
    o AS (
        SELECT b.org_id, b.period, b.alerted_start AS was_alerted,
               msgbilling._period_start(b.period, b.time_zone, pg_catalog.now()) AS ps
          FROM msgbilling.budgets b JOIN s ON s.org_id = b.org_id
           FOR UPDATE OF b),
    u AS (
        UPDATE msgbilling.budgets b
           SET spent = CASE WHEN b.period_start = o.ps THEN b.spent ELSE 0 END + s.amount,
               period_start = o.ps,
               alerted_start = CASE WHEN NOT b.hard
                   AND CASE WHEN b.period_start = o.ps THEN b.spent ELSE 0 END
                       + s.amount >= b.amount
                   THEN o.ps ELSE b.alerted_start END,
               updated_at = pg_catalog.now()
          FROM o, s
         WHERE b.org_id = o.org_id AND b.period = o.period AND s.org_id = o.org_id
        RETURNING b.org_id, b.amount, b.alerted_start, o.was_alerted, s.balance),
    i AS (
        INSERT INTO msgbilling.alerts AS a (org_id, threshold, kind, balance)
        SELECT u.org_id, u.amount, 'budget', u.balance FROM u
         WHERE u.alerted_start IS DISTINCT FROM u.was_alerted
        RETURNING a)
    SELECT pg_catalog.count(msgbilling._notify_alert(i.a)) INTO sent FROM i;
END;
$$;

REVOKE ALL ON FUNCTION msgbilling._period_start(text, text, timestamptz),
    msgbilling._period_end(text, text, timestamptz),
    msgbilling._notify_alert(msgbilling.alerts),
    msgbilling._ledger_added(bigint[]) FROM PUBLIC;

ALTER TABLE msgbilling.config ADD COLUMN hold_column name;

-- hold(org_id, amount, ttl, hold_key) -> the hold's id, or NULL when the
-- org has less than amount available.  release(hold_id) -> whether it was
-- active.  available(org_id) -> what a hold may take now.  For the app's
-- role (GRANT EXECUTE), under the tenant rules of stats() and balance().
CREATE FUNCTION msgbilling.hold(org_id "any", amount numeric,
                                ttl interval DEFAULT '10 minutes',
                                hold_key text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'hold'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION msgbilling.release(hold_id bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'release'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION msgbilling.available(org_id "any")
RETURNS numeric
AS 'MODULE_PATHNAME', 'available'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- set_alert(org_id, threshold): org NULL for every org without its own.
CREATE FUNCTION msgbilling.set_alert(org_id "any", threshold numeric)
RETURNS void
AS 'MODULE_PATHNAME', 'set_alert'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION msgbilling.drop_alert(org_id "any", threshold numeric)
RETURNS boolean
AS 'MODULE_PATHNAME', 'drop_alert'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- set_budget(org_id, period, amount, hard, time_zone): amount NULL removes
-- the org's budget of that period.
CREATE FUNCTION msgbilling.set_budget(org_id "any", period text, amount numeric,
                                      hard boolean DEFAULT true,
                                      time_zone text DEFAULT 'UTC')
RETURNS void
AS 'MODULE_PATHNAME', 'set_budget'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION msgbilling.budget_status(org_id "any")
RETURNS TABLE (period_start timestamptz, period_end timestamptz,
               amount numeric, spent numeric, remaining numeric,
               hard boolean)
AS 'MODULE_PATHNAME', 'budget_status'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- Holds and budgets decide whether the app serves a call: a role granted
-- them (the app's) gets them for the orgs whose messages it may read.
-- Alerts and budgets are set by the billing role.
REVOKE ALL ON FUNCTION msgbilling.hold("any", numeric, interval, text),
    msgbilling.release(bigint),
    msgbilling.available("any"),
    msgbilling.set_alert("any", numeric),
    msgbilling.drop_alert("any", numeric),
    msgbilling.set_budget("any", text, numeric, boolean, text),
    msgbilling.budget_status("any") FROM PUBLIC;

-- An attached table's org type, for the new tables too.
SELECT msgbilling._set_org_type(c.org_type) FROM msgbilling.config c;
