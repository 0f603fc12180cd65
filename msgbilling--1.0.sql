/* msgbilling--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION msgbilling" to load this file. \quit

-- Install only into a schema of our own.  CREATE EXTENSION uses a schema
-- msgbilling that already exists; whoever owns it, or may create objects
-- in it, could plant look-alike functions that callers resolve to, or drop
-- the wallets and ledger with it.
DO $$
DECLARE
    nsp oid := 'msgbilling'::regnamespace;
BEGIN
    IF (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.oid = nsp)
           <> (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.relnamespace = nsp)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc p WHERE p.pronamespace = nsp)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_type t WHERE t.typnamespace = nsp)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n,
                         pg_catalog.aclexplode(n.nspacl) a
                   WHERE n.oid = nsp AND a.privilege_type = 'CREATE'
                     AND a.grantee <> n.nspowner) THEN
        RAISE EXCEPTION 'schema "msgbilling" already exists and is not msgbilling''s own'
            USING ERRCODE = 'duplicate_schema',
                  DETAIL = 'msgbilling installs only into an empty schema "msgbilling" owned by the installing role, in which no one else may create objects.',
                  HINT = 'Drop or rename the existing schema "msgbilling", then create the extension again.';
    END IF;
END;
$$;

-------------------------------------------------------------------------------
-- Tables
-------------------------------------------------------------------------------

-- The app's messages table msgbilling bills: one per database.
CREATE TABLE msgbilling.config (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    messages regclass NOT NULL,
    key_column name NOT NULL,
    org_column name NOT NULL,
    tokens_column name NOT NULL,
    model_column name,
    created_column name,
    org_type regtype NOT NULL,
    index_names text[] NOT NULL,  -- schema-qualified: may pass 63 bytes
    attached_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- One wallet per org.  org_id takes the type of the attached table's org
-- column at attach time.
CREATE TABLE msgbilling.credits (
    org_id text PRIMARY KEY,
    balance numeric(20,6) NOT NULL DEFAULT 0,
    overdraft_limit numeric(20,6) NOT NULL DEFAULT 0
        CHECK (overdraft_limit >= 0),
    -- what stats() reports, kept by the statements that move the money, so
    -- that stats() reads wallets instead of scanning the messages: messages
    -- charged (net of refunds), refunded, and what the charged ones cost
    charged_messages bigint NOT NULL DEFAULT 0,
    refunded_messages bigint NOT NULL DEFAULT 0,
    credits_charged numeric(20,6) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- Every balance change, append-only.  A charge entry covers the messages of
-- one org billed in one batch; each of them points to it
-- (billing_ledger_id).  For every org, balance = sum(amount).
CREATE TABLE msgbilling.ledger (
    id bigserial PRIMARY KEY,
    org_id text NOT NULL,
    kind text NOT NULL
        CHECK (kind IN ('top_up', 'charge', 'refund', 'adjustment')),
    amount numeric(20,6) NOT NULL,
    balance_after numeric(20,6) NOT NULL,
    message_count integer NOT NULL DEFAULT 0,
    message_id text,
    note text,
    idempotency_key text,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX ledger_org_id ON msgbilling.ledger (org_id, id);
CREATE UNIQUE INDEX ledger_idempotency_key ON msgbilling.ledger (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- A message is refunded at most once.
CREATE UNIQUE INDEX ledger_one_refund ON msgbilling.ledger (message_id)
    WHERE kind = 'refund';

-- Versioned prices: rows are added, never changed.  model NULL is the
-- default price for messages whose model has no price in effect.
CREATE TABLE msgbilling.prices (
    id bigserial PRIMARY KEY,
    model text CHECK (model <> ''),
    credits_per_token numeric NOT NULL
        CHECK (credits_per_token >= 0 AND credits_per_token < 'Infinity'),
    effective_from timestamptz NOT NULL
        CHECK (effective_from > '-infinity' AND effective_from < 'infinity'),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE UNIQUE INDEX prices_model_effective_from
    ON msgbilling.prices ((COALESCE(model, '')), effective_from);

-- pg_dump keeps the user data of all four.
SELECT pg_catalog.pg_extension_config_dump('msgbilling.config', '');
SELECT pg_catalog.pg_extension_config_dump('msgbilling.credits', '');
SELECT pg_catalog.pg_extension_config_dump('msgbilling.ledger', '');
SELECT pg_catalog.pg_extension_config_dump('msgbilling.ledger_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('msgbilling.prices', '');
SELECT pg_catalog.pg_extension_config_dump('msgbilling.prices_id_seq', '');

-- Money lives here: nobody but the owner reads or writes these directly.
REVOKE ALL ON msgbilling.config, msgbilling.credits, msgbilling.ledger,
    msgbilling.prices FROM PUBLIC;

-- Guards (C, guard.c): the billing columns of the attached table change
-- only through msgbilling, and the ledger is append-only, unless a
-- superuser sets msgbilling.repair.
CREATE FUNCTION msgbilling._guard_messages()
RETURNS trigger
AS 'MODULE_PATHNAME', 'guard_messages'
LANGUAGE C;

CREATE FUNCTION msgbilling._guard_ledger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'guard_ledger'
LANGUAGE C;

CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON msgbilling.ledger
    FOR EACH ROW EXECUTE FUNCTION msgbilling._guard_ledger();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON msgbilling.ledger
    FOR EACH STATEMENT EXECUTE FUNCTION msgbilling._guard_ledger();

-- Trigger functions only: no one calls them directly.
REVOKE ALL ON FUNCTION msgbilling._guard_messages(),
    msgbilling._guard_ledger() FROM PUBLIC;

-- What a billing batch decided for the message at a ctid (write.c): its
-- cost, its org's ledger entry, its failure reason.  The batch's own
-- UPDATEs read them; anywhere else they raise an error.
CREATE FUNCTION msgbilling._decided_cost(tid)
RETURNS numeric
AS 'MODULE_PATHNAME', 'decided_cost'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION msgbilling._decided_ledger_id(tid)
RETURNS bigint
AS 'MODULE_PATHNAME', 'decided_ledger_id'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION msgbilling._decided_error(tid)
RETURNS text
AS 'MODULE_PATHNAME', 'decided_error'
LANGUAGE C VOLATILE STRICT;

-- Only the billing functions (SECURITY DEFINER, run as the owner) call them.
REVOKE ALL ON FUNCTION msgbilling._decided_cost(tid),
    msgbilling._decided_ledger_id(tid), msgbilling._decided_error(tid)
    FROM PUBLIC;

-------------------------------------------------------------------------------
-- attach / detach: the migration guide's data migration and its rollback
-------------------------------------------------------------------------------

-- Wake this database's billing worker when the transaction commits (a new
-- configuration, or messages made pending again); a no-op without the
-- worker.
CREATE FUNCTION msgbilling._wake_worker()
RETURNS void
AS 'MODULE_PATHNAME', 'wake_worker'
LANGUAGE C VOLATILE;

-- Error unless column col of rel exists and has one of the allowed types;
-- returns its type.
CREATE FUNCTION msgbilling._column_type(rel regclass, col name, role text,
                                        allowed regtype[])
RETURNS regtype
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    typ regtype;
BEGIN
    IF col IS NULL THEN
        RAISE EXCEPTION '% column must not be NULL', role
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT a.atttypid::regtype INTO typ
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = rel AND a.attname = col
       AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of table % does not exist', col, rel
            USING ERRCODE = 'undefined_column',
                  HINT = pg_catalog.format('Pass the name of the %s column as %s_column.',
                                           role, role);
    END IF;
    IF typ <> ALL (allowed) THEN
        RAISE EXCEPTION '% column "%" of table % has unusable type %',
                        role, col, rel, typ
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = pg_catalog.format('msgbilling supports %s columns of type %s.',
                                             role, pg_catalog.array_to_string(allowed, ', '));
    END IF;
    RETURN typ;
END;
$$;

-- The one-column primary key of rel: its name and type.
CREATE FUNCTION msgbilling._primary_key(rel regclass, OUT col name,
                                        OUT typ regtype)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT a.attname, a.atttypid::regtype INTO col, typ
      FROM pg_catalog.pg_constraint c
      JOIN pg_catalog.pg_attribute a
        ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
     WHERE c.conrelid = rel AND c.contype = 'p'
       AND pg_catalog.cardinality(c.conkey) = 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % has no single-column primary key', rel
            USING ERRCODE = 'invalid_table_definition',
                  DETAIL = 'msgbilling identifies each message by a one-column primary key.',
                  HINT = 'Add a primary key of type bigint, integer or uuid.';
    END IF;
    PERFORM msgbilling._column_type(rel, col, 'key',
                                    '{bigint,integer,uuid}'::regtype[]);
END;
$$;

-- Add a billing column unless the table has it already with the right type
-- (re-attaching after a detach that kept the columns).
CREATE FUNCTION msgbilling._add_column(rel regclass, col name, typ text,
                                       extra text DEFAULT '')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    have text;
BEGIN
    SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) INTO have
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = rel AND a.attname = col
       AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s ADD COLUMN %I %s %s', rel, col, typ, extra);
    ELSIF have <> typ THEN
        RAISE EXCEPTION 'table % already has a column "%" of type %', rel, col, have
            USING ERRCODE = 'duplicate_column',
                  DETAIL = pg_catalog.format('msgbilling needs "%s" to be %s.', col, typ),
                  HINT = 'Rename or drop the column, then attach again.';
    END IF;
END;
$$;

-- Make an existing billing_status column fit: NULLs get the status new
-- rows of an attach get, unknown values are an error, and new rows default
-- to pending.
CREATE FUNCTION msgbilling._adopt_status(rel regclass, bill_existing boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    odd text;
BEGIN
    EXECUTE pg_catalog.format('SELECT billing_status FROM %s WHERE billing_status NOT IN'
                              ' (''pending'', ''charged'', ''failed'', ''refunded'', ''legacy'')'
                              ' LIMIT 1', rel) INTO odd;
    IF odd IS NOT NULL THEN
        RAISE EXCEPTION 'column billing_status of table % holds a value msgbilling does not know: %',
                        rel, pg_catalog.quote_literal(odd)
            USING ERRCODE = 'check_violation',
                  HINT = 'Map the values to pending, charged, failed, refunded or legacy first.';
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

-- Give msgbilling's own org_id columns the type of the app's org ids.
CREATE FUNCTION msgbilling._set_org_type(typ regtype)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tab text;
    have regtype;
BEGIN
    FOREACH tab IN ARRAY ARRAY['credits', 'ledger'] LOOP
        SELECT a.atttypid::regtype INTO have FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = pg_catalog.format('msgbilling.%I', tab)::regclass
           AND a.attname = 'org_id';
        IF have <> typ THEN
            IF EXISTS (SELECT 1 FROM msgbilling.credits)
               OR EXISTS (SELECT 1 FROM msgbilling.ledger) THEN
                RAISE EXCEPTION 'wallets exist with org ids of type %, not %', have, typ
                    USING ERRCODE = 'object_not_in_prerequisite_state',
                          DETAIL = 'msgbilling keeps one org id type per database.',
                          HINT = 'Attach a table whose org column has the type the wallets use.';
            END IF;
            EXECUTE pg_catalog.format('ALTER TABLE msgbilling.%I ALTER COLUMN org_id'
                                      ' TYPE %s USING org_id::text::%s', tab, typ, typ);
        END IF;
    END LOOP;
END;
$$;

-- The org id type follows the config row, also when pg_dump's data is
-- restored into a fresh CREATE EXTENSION (whose org_id columns are text).
CREATE FUNCTION msgbilling._config_org_type()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM msgbilling._set_org_type(NEW.org_type);
    RETURN NEW;
END;
$$;

CREATE TRIGGER config_org_type AFTER INSERT ON msgbilling.config
    FOR EACH ROW EXECUTE FUNCTION msgbilling._config_org_type();

-- Drop the guard triggers from a table, where they are.
CREATE FUNCTION msgbilling._drop_guards(rel regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trg name;
BEGIN
    FOR trg IN SELECT t.tgname FROM pg_catalog.pg_trigger t
                WHERE t.tgrelid = rel
                  AND t.tgname IN ('msgbilling_guard_insert', 'msgbilling_guard_update')
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', trg, rel);
    END LOOP;
END;
$$;

-- Put the guard triggers on the attached table (guard.c).  The UPDATE
-- one's column list and WHEN clause keep the app's ordinary UPDATEs from
-- calling any function.  The INSERT one has no WHEN clause: an INSERT
-- statement reads and prepares a trigger's WHEN expression each time,
-- which costs a one-row INSERT more than the function's own check.
CREATE FUNCTION msgbilling._create_guards(rel regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
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
END;
$$;

-- Create msgbilling's indexes on the attached table; returns their names.
--
-- Instead of the guide's three indexes (billing_status; org_id,
-- billing_status; charged_at), billing uses partial indexes that hold only
-- the backlog: they stay small however many messages were ever billed, and
-- a message leaves them when it is billed, and billing a message inserts
-- into none of them.  No full index on billing_status: every billed message
-- would add an entry to it.  history() reads an org's messages by the org
-- column, through the app's own index on it (most apps have one; the
-- README says which to create otherwise).  charged_at gets none: no
-- msgbilling query filters on it.
CREATE FUNCTION msgbilling._create_indexes(rel regclass, key_col name,
                                           org_col name, created_col name)
RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    base text := (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = rel);
    nsp name := (SELECT n.nspname FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = rel);
    order_cols text := CASE WHEN created_col IS NULL THEN pg_catalog.quote_ident(key_col)
                       ELSE pg_catalog.format('%I, %I', created_col, key_col) END;
    names name[];
    old regclass;
BEGIN
    -- The table name cut to 40 bytes (not characters: a name holds 63
    -- bytes), so that the suffixes keep the three names whole and apart.
    WHILE pg_catalog.octet_length(base) > 40 LOOP
        base := pg_catalog.left(base, -1);
    END LOOP;
    names := ARRAY[base || '_mb_pending', base || '_mb_org_pending',
                   base || '_mb_failed'];
    -- An earlier attach may have left them (DROP EXTENSION does not touch
    -- the app's table): drop ours, never an index of another table (an
    -- index of rel lives in rel's schema).
    FOR old IN SELECT x.indexrelid::regclass FROM pg_catalog.pg_index x
                 JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
                WHERE x.indrelid = rel AND i.relname = ANY (names) LOOP
        EXECUTE pg_catalog.format('DROP INDEX %s', old);
    END LOOP;
    EXECUTE pg_catalog.format('CREATE INDEX %I ON %s (%s) WHERE billing_status = ''pending''',
                              names[1], rel, order_cols);
    EXECUTE pg_catalog.format('CREATE INDEX %I ON %s (%I, %s) WHERE billing_status = ''pending''',
                              names[2], rel, org_col, order_cols);
    EXECUTE pg_catalog.format('CREATE INDEX %I ON %s (%I) WHERE billing_status = ''failed''',
                              names[3], rel, org_col);
    RETURN (SELECT pg_catalog.array_agg(pg_catalog.quote_ident(nsp) || '.' || pg_catalog.quote_ident(n))
              FROM pg_catalog.unnest(names) n);
END;
$$;

CREATE FUNCTION msgbilling.attach(messages regclass,
                                  org_column name DEFAULT 'org_id',
                                  tokens_column name DEFAULT 'tokens_used',
                                  model_column name DEFAULT NULL,
                                  created_column name DEFAULT NULL,
                                  bill_existing boolean DEFAULT false)
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

    pk := msgbilling._primary_key(messages);
    org_type := msgbilling._column_type(messages, org_column, 'org',
                                        '{uuid,bigint,integer,text}');
    PERFORM msgbilling._column_type(messages, tokens_column, 'tokens',
                                    '{smallint,integer,bigint}');
    IF model_column IS NOT NULL THEN
        PERFORM msgbilling._column_type(messages, model_column, 'model',
                                        '{text,character varying}');
    END IF;
    IF created_column IS NOT NULL THEN
        PERFORM msgbilling._column_type(messages, created_column, 'created',
            '{timestamp with time zone,timestamp without time zone}');
        -- An org's messages are billed in order of creation: one without a
        -- creation time would have no place in that order.
        PERFORM FROM pg_catalog.pg_attribute a
          WHERE a.attrelid = messages AND a.attname = created_column
            AND a.attnotnull;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'created column "%" of table % must be NOT NULL',
                            created_column, messages
                USING ERRCODE = 'invalid_table_definition',
                      DETAIL = 'msgbilling bills an org''s messages in order of creation.',
                      HINT = pg_catalog.format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL;',
                                               messages, created_column);
        END IF;
    END IF;

    -- Rows already in the table get the status they are added with:
    -- 'legacy' (never billed, already charged by the old system) unless
    -- bill_existing.  A constant default adds the column without rewriting
    -- the table; new rows then default to 'pending'.
    PERFORM msgbilling._add_column(messages, 'billing_status',
        'character varying(20)',
        pg_catalog.format('NOT NULL DEFAULT %L',
                          CASE WHEN bill_existing THEN 'pending' ELSE 'legacy' END));
    PERFORM msgbilling._adopt_status(messages, bill_existing);
    PERFORM msgbilling._add_column(messages, 'cost_credits', 'numeric(10,6)');
    PERFORM msgbilling._add_column(messages, 'charged_at',
                                   'timestamp with time zone');
    PERFORM msgbilling._add_column(messages, 'billing_error', 'text');
    PERFORM msgbilling._add_column(messages, 'billing_ledger_id', 'bigint');
    -- the config row's trigger gives the wallets and ledger the org type
    INSERT INTO msgbilling.config (messages, key_column, org_column,
                                   tokens_column, model_column,
                                   created_column, org_type, index_names)
    VALUES (messages, pk.col, org_column, tokens_column, model_column,
            created_column, org_type,
            msgbilling._create_indexes(messages, pk.col, org_column,
                                       created_column));
    PERFORM msgbilling._create_guards(messages);

    PERFORM msgbilling._wake_worker();
    EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %s WHERE billing_status = ''legacy''',
                              messages) INTO legacy;
    EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %s WHERE billing_status = ''pending''',
                              messages) INTO pending;
    RAISE NOTICE 'msgbilling attached to table %', messages
        USING DETAIL = pg_catalog.format('%s existing messages are marked legacy and will not be billed;'
                                         ' %s are pending and will be.', legacy, pending);
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

CREATE FUNCTION msgbilling.detach(messages regclass,
                                  drop_columns boolean DEFAULT false,
                                  force boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg msgbilling.config;
    pending bigint;
    failed bigint;
    idx text;
BEGIN
    IF messages IS NULL THEN
        RAISE EXCEPTION 'messages table must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    LOCK TABLE msgbilling.config IN EXCLUSIVE MODE;
    SELECT * INTO cfg FROM msgbilling.config c;
    IF NOT FOUND OR cfg.messages IS DISTINCT FROM messages THEN
        RAISE EXCEPTION 'table % is not attached to msgbilling', messages
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF drop_columns AND NOT COALESCE(force, false) THEN
        EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FILTER (WHERE billing_status = ''pending''),'
                                  ' pg_catalog.count(*) FILTER (WHERE billing_status = ''failed'') FROM %s',
                                  messages) INTO pending, failed;
        IF pending + failed > 0 THEN
            RAISE EXCEPTION 'table % has % pending and % failed messages', messages, pending, failed
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'Dropping the billing columns would lose the charges those messages owe.',
                      HINT = 'Bill them first (CALL msgbilling.drain()), or pass force => true to drop them anyway.';
        END IF;
    END IF;
    FOREACH idx IN ARRAY cfg.index_names LOOP
        EXECUTE pg_catalog.format('DROP INDEX IF EXISTS %s', idx);
    END LOOP;
    PERFORM msgbilling._drop_guards(messages);
    IF drop_columns THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s DROP COLUMN cost_credits, DROP COLUMN charged_at,'
                                  ' DROP COLUMN billing_status, DROP COLUMN billing_error,'
                                  ' DROP COLUMN billing_ledger_id', messages);
    END IF;
    DELETE FROM msgbilling.config;
END;
$$;

-- attach's and detach's helpers alter the app's table: theirs alone.
REVOKE ALL ON FUNCTION msgbilling._wake_worker(),
    msgbilling._column_type(regclass, name, text, regtype[]),
    msgbilling._primary_key(regclass),
    msgbilling._add_column(regclass, name, text, text),
    msgbilling._adopt_status(regclass, boolean),
    msgbilling._set_org_type(regtype),
    msgbilling._config_org_type(),
    msgbilling._create_guards(regclass),
    msgbilling._drop_guards(regclass),
    msgbilling._create_indexes(regclass, name, name, name) FROM PUBLIC;
-- attach and detach alter the app's table and msgbilling's own tables:
-- they are for the extension's owner (a DBA), who may grant them.
REVOKE ALL ON FUNCTION msgbilling.attach(regclass, name, name, name, name, boolean),
    msgbilling.detach(regclass, boolean, boolean) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Prices
-------------------------------------------------------------------------------

-- After a new price: no_price failures become pending again (wallet.c).
CREATE FUNCTION msgbilling._repend_no_price()
RETURNS bigint
AS 'MODULE_PATHNAME', 'repend_no_price'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
-- It puts failed messages back in line to be charged: set_price's alone.
REVOKE ALL ON FUNCTION msgbilling._repend_no_price() FROM PUBLIC;

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
    IF credits_per_token IS NULL OR effective_from IS NULL THEN
        RAISE EXCEPTION 'credits_per_token and effective_from must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF credits_per_token < 0 OR credits_per_token >= 'Infinity' THEN
        RAISE EXCEPTION 'credits_per_token must be zero or more and finite, not %',
                        credits_per_token
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF effective_from IN ('infinity', '-infinity') THEN
        RAISE EXCEPTION 'effective_from must be finite, not %', effective_from
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF model = '' THEN
        RAISE EXCEPTION 'model must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL to set the default price.';
    END IF;
    IF EXISTS (SELECT 1 FROM msgbilling.prices p
                WHERE p.model IS NOT DISTINCT FROM set_price.model
                  AND p.effective_from = set_price.effective_from) THEN
        RAISE EXCEPTION 'a price for % effective from % already exists',
                        COALESCE('model ' || pg_catalog.quote_literal(model), 'the default'),
                        effective_from
            USING ERRCODE = 'unique_violation',
                  DETAIL = 'Prices are versioned and never rewritten.',
                  HINT = 'Set the new price with a later effective_from.';
    END IF;
    INSERT INTO msgbilling.prices (model, credits_per_token, effective_from)
    VALUES (model, credits_per_token, effective_from)
    RETURNING id INTO new_id;
    -- Messages that failed for want of a price may have one now.
    PERFORM msgbilling._repend_no_price();
    RETURN new_id;
END;
$$;

-- The price a message of model created at time at is billed at, or NULL.
CREATE FUNCTION msgbilling.price_at(model text, at timestamptz DEFAULT pg_catalog.now())
RETURNS numeric
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.credits_per_token FROM msgbilling.prices p
     WHERE (p.model = $1 OR p.model IS NULL) AND p.effective_from <= $2
     ORDER BY p.model IS NULL, p.effective_from DESC
     LIMIT 1
$$;

-- A price decides what every message costs; prices are private to the
-- roles granted them.
REVOKE ALL ON FUNCTION msgbilling.set_price(text, numeric, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION msgbilling.price_at(text, timestamptz) FROM PUBLIC;

-------------------------------------------------------------------------------
-- Wallets (C, wallet.c)
-------------------------------------------------------------------------------

CREATE FUNCTION msgbilling.top_up(org_id "any", amount numeric,
                                  note text DEFAULT NULL,
                                  idempotency_key text DEFAULT NULL)
RETURNS numeric
AS 'MODULE_PATHNAME', 'top_up'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION msgbilling.adjust(org_id "any", amount numeric, note text)
RETURNS numeric
AS 'MODULE_PATHNAME', 'adjust'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION msgbilling.balance(org_id "any")
RETURNS numeric
AS 'MODULE_PATHNAME', 'balance'
LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION msgbilling.set_overdraft(org_id "any", "limit" numeric)
RETURNS void
AS 'MODULE_PATHNAME', 'set_overdraft'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION msgbilling.refund(message_id "any", note text DEFAULT NULL)
RETURNS numeric
AS 'MODULE_PATHNAME', 'refund'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION msgbilling.retry_failed(org_id "any" DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'retry_failed'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- These move money or reveal balances: callers are granted them by name.
REVOKE ALL ON FUNCTION msgbilling.top_up("any", numeric, text, text),
    msgbilling.adjust("any", numeric, text),
    msgbilling.balance("any"),
    msgbilling.set_overdraft("any", numeric),
    msgbilling.refund("any", text),
    msgbilling.retry_failed("any") FROM PUBLIC;

-------------------------------------------------------------------------------
-- Billing (C: billing_api.c; the app's trigger, trigger.c)
-------------------------------------------------------------------------------

CREATE FUNCTION msgbilling.process_message_billing(message_id "any")
RETURNS text
AS 'MODULE_PATHNAME', 'process_message_billing'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION msgbilling.process_batch_billing(message_ids "any")
RETURNS TABLE (charged bigint, failed bigint, skipped bigint, credits numeric)
AS 'MODULE_PATHNAME', 'process_batch_billing'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION msgbilling.process_all_pending(org_id "any" DEFAULT NULL,
                                               max_messages bigint DEFAULT NULL)
RETURNS TABLE (charged bigint, failed bigint, skipped bigint, credits numeric)
AS 'MODULE_PATHNAME', 'process_all_pending'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- A procedure so that it can commit after each batch; it cannot be
-- SECURITY DEFINER (that forbids transaction control), so its caller needs
-- the privileges billing needs.
CREATE PROCEDURE msgbilling.drain(batch_size integer DEFAULT 10000,
                                  org_id "any" DEFAULT NULL)
AS 'MODULE_PATHNAME', 'drain'
LANGUAGE C;

-- Billing moves money: only roles granted these may bill.
REVOKE ALL ON FUNCTION msgbilling.process_message_billing("any"),
    msgbilling.process_batch_billing("any"),
    msgbilling.process_all_pending("any", bigint) FROM PUBLIC;
REVOKE ALL ON PROCEDURE msgbilling.drain(integer, "any") FROM PUBLIC;

-- The app's trigger: bills the inserted rows inside the INSERT's own
-- transaction, row by row (FOR EACH ROW) or in one batch (FOR EACH
-- STATEMENT with REFERENCING NEW TABLE).  Never aborts the INSERT.
CREATE FUNCTION msgbilling.bill_on_insert()
RETURNS trigger
AS 'MODULE_PATHNAME', 'bill_on_insert'
LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- Creating the trigger takes EXECUTE; firing it does not.
REVOKE ALL ON FUNCTION msgbilling.bill_on_insert() FROM PUBLIC;

-------------------------------------------------------------------------------
-- Reports (C, report.c; backlog() in PL/pgSQL)
-------------------------------------------------------------------------------

-- Pending messages, through the partial index on them (cheap); NULL when
-- no table is attached.
CREATE FUNCTION msgbilling.backlog()
RETURNS bigint
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    attached regclass;
    n bigint;
BEGIN
    SELECT c.messages INTO attached FROM msgbilling.config c;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM FROM pg_catalog.pg_class r WHERE r.oid = attached;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the messages table attached to msgbilling no longer exists'
            USING ERRCODE = 'undefined_table',
                  HINT = 'Attach the app''s table with msgbilling.attach(): it replaces the dropped one.';
    END IF;
    EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %s'
                              ' WHERE billing_status OPERATOR(pg_catalog.=) ''pending''',
                              attached) INTO n;
    RETURN n;
END;
$$;

CREATE FUNCTION msgbilling.stats(org_id "any" DEFAULT NULL)
RETURNS TABLE (pending bigint, charged bigint, failed bigint, refunded bigint,
               credits_charged numeric, oldest_pending timestamptz)
AS 'MODULE_PATHNAME', 'stats'
LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION msgbilling.history(org_id "any", max_rows integer DEFAULT 50,
                                   before timestamptz DEFAULT NULL)
RETURNS TABLE (message_id text, created_at timestamptz, tokens bigint,
               model text, cost_credits numeric, billing_status text,
               charged_at timestamptz, failure_reason text)
AS 'MODULE_PATHNAME', 'history'
LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION msgbilling.verify()
RETURNS TABLE (check_name text, ok boolean, detail text)
AS 'MODULE_PATHNAME', 'verify'
LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

-- Billing data is private to the roles granted it.
REVOKE ALL ON FUNCTION msgbilling.backlog(),
    msgbilling.stats("any"),
    msgbilling.history("any", integer, timestamptz),
    msgbilling.verify() FROM PUBLIC;

-------------------------------------------------------------------------------
-- Scheduling drain with pg_cron (optional: msgbilling never requires it)
-------------------------------------------------------------------------------

-- Both functions first check that pg_cron can run jobs for this database
-- (_require_cron).  pg_cron's objects are named only in dynamic SQL
-- (EXECUTE), so msgbilling installs and runs without pg_cron.
--
-- Neither is SECURITY DEFINER, on purpose: pg_cron runs a job as the role
-- that scheduled it (the current user when cron.schedule runs), and in a
-- SECURITY DEFINER function that is the extension's owner, usually a
-- superuser.  Every role granted schedule() would then get jobs running as
-- the owner, past pg_cron's own access control (USAGE on schema cron) and
-- past the EXECUTE grants drain needs.  As invoker the job runs as the
-- caller, with the caller's privileges: the caller needs USAGE on schema
-- cron and EXECUTE on drain and process_all_pending (checked by schedule(),
-- or the job would fail at every run).  pg_cron keys named jobs by name and
-- user, so each role has its own msgbilling-drain job, and unschedule()
-- removes the caller's.

-- Error unless pg_cron can run jobs for this database: its library loaded
-- (shared_preload_libraries), cron.database_name naming this database, and
-- the extension created here.  in_cron_db: what to run in pg_cron's
-- database instead, when cron.database_name names another one.  Only
-- superusers and pg_read_all_settings may read cron.database_name; for
-- other roles an installed pg_cron is trusted (CREATE EXTENSION pg_cron
-- works only in the database cron.database_name names).  It checks and
-- raises, nothing more, and runs as its caller: PUBLIC may call it.
CREATE FUNCTION msgbilling._require_cron(in_cron_db text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    db text := pg_catalog.current_database();
    may_read boolean := pg_catalog.pg_has_role('pg_read_all_settings', 'USAGE');
    cron_db text := CASE WHEN may_read THEN
                        pg_catalog.current_setting('cron.database_name', true) END;
    installed boolean := EXISTS (SELECT 1 FROM pg_catalog.pg_extension e
                                  WHERE e.extname = 'pg_cron');
BEGIN
    IF (may_read AND cron_db IS NULL) OR (NOT may_read AND NOT installed) THEN
        RAISE EXCEPTION '%', CASE WHEN installed
                                  THEN 'pg_cron is installed but not loaded'
                                  ELSE pg_catalog.format('pg_cron is not installed in database "%s"', db) END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'msgbilling runs CALL msgbilling.drain() as a pg_cron job; pg_cron must be loaded at server start and installed in this database.',
                  HINT = pg_catalog.format('Install pg_cron (apt install postgresql-%s-cron), add it to shared_preload_libraries'
                                           ' (shared_preload_libraries = ''pg_cron'') and set cron.database_name = %L in postgresql.conf,'
                                           ' restart the server, then run CREATE EXTENSION pg_cron in database %I.',
                                           pg_catalog.current_setting('server_version_num')::integer / 10000,
                                           db, db);
    ELSIF may_read AND cron_db <> db THEN
        RAISE EXCEPTION '%', CASE WHEN installed
                                  THEN pg_catalog.format('pg_cron runs jobs from database "%s", not "%s"', cron_db, db)
                                  ELSE pg_catalog.format('pg_cron is not installed in database "%s"', db) END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = pg_catalog.format('cron.database_name is %L: pg_cron keeps its jobs in that database only.', cron_db),
                  HINT = pg_catalog.format('In database %I, run %s;'
                                           ' or set cron.database_name = %L in postgresql.conf, restart the server,'
                                           ' and run CREATE EXTENSION pg_cron in database %I.',
                                           cron_db, in_cron_db, db, db);
    ELSIF NOT installed THEN
        RAISE EXCEPTION 'pg_cron is not installed in database "%"', db
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The server has loaded pg_cron for this database, but the extension has not been created here.',
                  HINT = 'Run CREATE EXTENSION pg_cron.';
    END IF;

END;
$$;
GRANT EXECUTE ON FUNCTION msgbilling._require_cron(text) TO PUBLIC;

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

    IF NOT (pg_catalog.has_function_privilege('msgbilling.drain(integer, "any")', 'EXECUTE')
            AND pg_catalog.has_function_privilege(
                    'msgbilling.process_all_pending("any", bigint)', 'EXECUTE')) THEN
        RAISE EXCEPTION 'role "%" may not run msgbilling.drain()', current_user
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'pg_cron runs the job as the role that schedules it, so every run would fail.',
                  HINT = pg_catalog.format('GRANT EXECUTE ON PROCEDURE msgbilling.drain(integer, "any") TO %1$I;'
                                           ' GRANT EXECUTE ON FUNCTION msgbilling.process_all_pending("any", bigint) TO %1$I;',
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

-- Remove the current user's msgbilling-drain job; false when there was none.
CREATE FUNCTION msgbilling.unschedule()
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    exists_sql constant text := 'SELECT EXISTS (SELECT 1 FROM cron.job j'
                                ' WHERE j.jobname = $1 AND j.username = $2)';
    have_job boolean;
BEGIN
    PERFORM msgbilling._require_cron(pg_catalog.format('SELECT cron.unschedule(%L)', 'msgbilling-drain'));

    EXECUTE exists_sql INTO have_job
      USING 'msgbilling-drain'::name, current_user::text;
    IF NOT have_job THEN
        RETURN false;
    END IF;
    BEGIN
        EXECUTE 'SELECT cron.unschedule(job_name => $1)'
          USING 'msgbilling-drain'::text;
    EXCEPTION WHEN internal_error THEN
        -- pg_cron reports a missing job without an SQLSTATE (XX000): a
        -- concurrent unschedule() removed it after the check above.
        EXECUTE exists_sql INTO have_job
          USING 'msgbilling-drain'::name, current_user::text;
        IF have_job THEN
            RAISE;
        END IF;
        RETURN false;
    END;
    RETURN true;
END;
$$;

-- A job bills every few minutes: only roles granted these may start or stop it.
REVOKE ALL ON FUNCTION msgbilling.schedule(text), msgbilling.unschedule()
    FROM PUBLIC;

-- The billing workers, from shared memory: one row per worker that has run
-- since the server started; none when the library is not preloaded.
CREATE FUNCTION msgbilling.worker_status()
RETURNS TABLE (database name, pid integer, state text, last_run timestamptz,
               billed bigint, last_error text)
AS 'MODULE_PATHNAME', 'worker_status'
LANGUAGE C VOLATILE;
-- Operators' view: granted to whom they choose (the metrics view's reader).
REVOKE ALL ON FUNCTION msgbilling.worker_status() FROM PUBLIC;

-------------------------------------------------------------------------------
-- Monitoring: one row for an exporter (prometheus-postgres-exporter and the
-- like; examples/monitoring/queries.yaml)
-------------------------------------------------------------------------------
--
-- Everything msgbilling.metrics shows, read as the extension's owner.
--
-- Cost: the counts by status (those of stats(), plus legacy) are one
-- sequential scan of the attached table (stats() reads counters instead,
-- but has no legacy count): fine for a scrape
-- every minute or so, or cached by the exporter (cache_seconds in
-- queries.yaml), not for every second on a table of hundreds of millions of
-- rows.  backlog() counts the pending messages again through the partial
-- index: in the same snapshot it equals pending; it is the number an
-- exporter can afford to read often.  The worker columns cost nothing
-- (shared memory).
--
-- Not attached (or the attached table dropped): attached is false and the
-- billing columns are NULL; the worker columns are filled all the same.
CREATE FUNCTION msgbilling.collect_metrics(
    OUT attached boolean,
    OUT pending bigint,
    OUT charged bigint,
    OUT failed bigint,
    OUT refunded bigint,
    OUT legacy bigint,
    OUT credits_charged numeric,
    OUT oldest_pending_age_seconds double precision,
    OUT backlog bigint,
    OUT worker_running boolean,
    OUT worker_pid integer,
    OUT worker_state text,
    OUT worker_last_run timestamptz,
    OUT worker_billed bigint,
    OUT worker_last_error text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg msgbilling.config;
    oldest timestamptz;
BEGIN
    SELECT * INTO cfg FROM msgbilling.config c;
    attached := FOUND AND EXISTS (SELECT 1 FROM pg_catalog.pg_class r
                                   WHERE r.oid = cfg.messages);
    IF attached THEN
        EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FILTER (WHERE billing_status = ''pending''),'
                                  ' pg_catalog.count(*) FILTER (WHERE billing_status = ''charged''),'
                                  ' pg_catalog.count(*) FILTER (WHERE billing_status = ''failed''),'
                                  ' pg_catalog.count(*) FILTER (WHERE billing_status = ''refunded''),'
                                  ' pg_catalog.count(*) FILTER (WHERE billing_status = ''legacy''),'
                                  ' COALESCE(pg_catalog.sum(cost_credits) FILTER'
                                  ' (WHERE billing_status = ''charged''), 0)::pg_catalog.numeric,'
                                  ' pg_catalog.min(%s) FILTER (WHERE billing_status = ''pending'')'
                                  ' FROM %s',
                                  CASE WHEN cfg.created_column IS NULL
                            THEN 'NULL::pg_catalog.timestamptz'
                            ELSE pg_catalog.format('%I::pg_catalog.timestamptz', cfg.created_column) END,
                                  cfg.messages)
           INTO pending, charged, failed, refunded, legacy, credits_charged, oldest;
        -- NULL when nothing is pending, or without a created column
        oldest_pending_age_seconds :=
            pg_catalog.date_part('epoch', pg_catalog.now() - oldest);
        backlog := msgbilling.backlog();
    END IF;

    -- this database's worker; a running one first should there be several
    SELECT w.pid IS NOT NULL, w.pid, w.state, w.last_run, w.billed, w.last_error
      INTO worker_running, worker_pid, worker_state, worker_last_run,
           worker_billed, worker_last_error
      FROM msgbilling.worker_status() w
     WHERE w.database = pg_catalog.current_database()
     ORDER BY w.pid IS NULL, w.last_run DESC NULLS LAST
     LIMIT 1;
    worker_running := COALESCE(worker_running, false);
END;
$$;

-- One row, shaped for monitoring: SELECT * FROM msgbilling.metrics;
CREATE VIEW msgbilling.metrics AS
    SELECT m.attached, m.pending, m.charged, m.failed, m.refunded, m.legacy,
           m.credits_charged, m.oldest_pending_age_seconds, m.backlog,
           m.worker_running, m.worker_pid, m.worker_state, m.worker_last_run,
           m.worker_billed, m.worker_last_error
      FROM msgbilling.collect_metrics() m;

-- Counts and worker state, no money moves and no org is named: readable by
-- PostgreSQL's monitoring role (what an exporter connects as), besides the
-- owner.  A view's functions are checked against the reader, so pg_monitor
-- needs EXECUTE on collect_metrics as well as SELECT on the view.
REVOKE ALL ON FUNCTION msgbilling.collect_metrics() FROM PUBLIC;
REVOKE ALL ON msgbilling.metrics FROM PUBLIC;
GRANT USAGE ON SCHEMA msgbilling TO pg_monitor;
GRANT EXECUTE ON FUNCTION msgbilling.collect_metrics() TO pg_monitor;
GRANT SELECT ON msgbilling.metrics TO pg_monitor;
