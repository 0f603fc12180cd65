--
-- search_path.sql: a hostile schema early in search_path changes nothing.
--
-- Schema evil holds look-alikes of msgbilling's tables, of pg_catalog
-- functions billing calls or could call (now, round, nextval, unnest,
-- count, sum, dense_rank), of the types text and timestamptz, and of the
-- operators on the types it compares and adds (bigint, uuid, text,
-- varchar, numeric).  Each look-alike says "evil ran" and misbehaves.
-- Every msgbilling function is run with evil first in search_path, then
-- with evil even before pg_catalog; the results must be exactly those of a
-- clean search_path and no "evil ran" notice may appear.
--
-- With search_path = evil, public, pg_catalog is still searched first, so
-- only evil.=(varchar, varchar) can win there (pg_catalog compares varchar
-- with text's operator, and an exact match beats a binary-coercible one);
-- with search_path = evil, pg_catalog, public every look-alike wins over
-- pg_catalog's own for unqualified names.
--
CREATE EXTENSION msgbilling;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE messages (
    id bigint PRIMARY KEY,
    org_id uuid NOT NULL,
    tokens_used bigint,
    model varchar(40),
    created_at timestamptz NOT NULL
);

-------------------------------------------------------------------------------
-- The hostile objects
-------------------------------------------------------------------------------

CREATE SCHEMA evil;
-- tables named like msgbilling's, with data that would show if read
CREATE TABLE evil.config (messages regclass, key_column name, org_column name,
                          tokens_column name, model_column name,
                          created_column name);
CREATE TABLE evil.credits (org_id uuid, balance numeric, overdraft_limit numeric);
CREATE TABLE evil.ledger (id bigint, org_id uuid, kind text, amount numeric,
                          balance_after numeric, message_count integer);
CREATE TABLE evil.prices (model text, credits_per_token numeric,
                          effective_from timestamptz);
CREATE TABLE evil.messages (id bigint PRIMARY KEY, org_id uuid,
                            tokens_used bigint);
INSERT INTO evil.credits VALUES
    ('aaaaaaaa-0000-0000-0000-000000000000', 1000000, 1000000);
INSERT INTO evil.prices VALUES (NULL, 1000, '1970-01-01');
INSERT INTO evil.messages VALUES (1, 'aaaaaaaa-0000-0000-0000-000000000000', 1);
-- and the same in pg_temp, which is searched for tables first by default
CREATE TEMP TABLE config (messages regclass);
CREATE TEMP TABLE credits (org_id uuid, balance numeric, overdraft_limit numeric);
CREATE TEMP TABLE ledger (id bigint, org_id uuid, amount numeric);
CREATE TEMP TABLE prices (model text, credits_per_token numeric,
                          effective_from timestamptz);
INSERT INTO credits VALUES
    ('aaaaaaaa-0000-0000-0000-000000000000', 2000000, 2000000);

-- functions named like pg_catalog's
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: now()'; RETURN '1999-01-01'; END $$;
CREATE FUNCTION evil.round(numeric, integer) RETURNS numeric LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: round()'; RETURN 0; END $$;
CREATE FUNCTION evil.nextval(regclass) RETURNS bigint LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: nextval()'; RETURN 1; END $$;
CREATE FUNCTION evil.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: unnest()'; RETURN; END $$;
CREATE FUNCTION evil.count_star_step(bigint) RETURNS bigint LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: count(*)'; RETURN 0; END $$;
CREATE AGGREGATE evil.count(*) (SFUNC = evil.count_star_step, STYPE = bigint,
                                INITCOND = '0');
CREATE FUNCTION evil.count_step(bigint, anyelement) RETURNS bigint
LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: count()'; RETURN 0; END $$;
CREATE AGGREGATE evil.count(anyelement) (SFUNC = evil.count_step,
                                         STYPE = bigint, INITCOND = '0');
CREATE FUNCTION evil.sum_step(numeric, numeric) RETURNS numeric
LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: sum()'; RETURN 0; END $$;
CREATE AGGREGATE evil.sum(numeric) (SFUNC = evil.sum_step, STYPE = numeric,
                                    INITCOND = '0');
-- a window function cannot be written in PL/pgSQL: row_number under the
-- name dense_rank would split an org's messages into one org per message
CREATE FUNCTION evil.dense_rank() RETURNS bigint WINDOW
LANGUAGE internal AS 'window_row_number';

-- operators on the types billing compares and adds: = is always true,
-- <> always false, + and - give a million
CREATE FUNCTION evil.eq(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: = (bigint)'; RETURN true; END $$;
CREATE OPERATOR evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.eq);
CREATE FUNCTION evil.eq(uuid, uuid) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: = (uuid)'; RETURN true; END $$;
CREATE OPERATOR evil.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = evil.eq);
CREATE FUNCTION evil.eq(text, text) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: = (text)'; RETURN true; END $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq);
CREATE FUNCTION evil.eq(character varying, character varying) RETURNS boolean
LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: = (varchar)'; RETURN true; END $$;
CREATE OPERATOR evil.= (LEFTARG = character varying,
                        RIGHTARG = character varying, FUNCTION = evil.eq);
CREATE FUNCTION evil.eq(numeric, numeric) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: = (numeric)'; RETURN true; END $$;
CREATE OPERATOR evil.= (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = evil.eq);
CREATE FUNCTION evil.ne(numeric, numeric) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: <> (numeric)'; RETURN false; END $$;
CREATE OPERATOR evil.<> (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = evil.ne);
CREATE FUNCTION evil.minus(numeric, numeric) RETURNS numeric LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: - (numeric)'; RETURN 1000000; END $$;
CREATE OPERATOR evil.- (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = evil.minus);
CREATE FUNCTION evil.plus(numeric, numeric) RETURNS numeric LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: + (numeric)'; RETURN 1000000; END $$;
CREATE OPERATOR evil.+ (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = evil.plus);

-- types named like pg_catalog's (numeric and bigint are keywords that
-- always mean pg_catalog's; text and timestamptz are not)
CREATE DOMAIN evil.text AS character varying(1) CHECK (false);
CREATE DOMAIN evil.timestamptz AS timestamp with time zone
    CHECK (VALUE < '1900-01-01');

-- look-alikes of msgbilling's own functions in public
CREATE FUNCTION public.process_all_pending(org_id uuid DEFAULT NULL,
                                           max_messages bigint DEFAULT NULL)
RETURNS TABLE (charged bigint, failed bigint, skipped bigint, credits numeric)
LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: public.process_all_pending()';
         RETURN QUERY SELECT 0::bigint, 0::bigint, 0::bigint, 0::numeric; END $$;
CREATE FUNCTION public.top_up(org_id text, amount numeric,
                              note text DEFAULT NULL, idem text DEFAULT NULL)
RETURNS numeric LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: public.top_up()'; RETURN 0; END $$;
CREATE PROCEDURE public.drain(batch_size integer DEFAULT 10000)
LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: public.drain()'; END $$;
CREATE FUNCTION public.bill_on_insert() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'evil ran: public.bill_on_insert()'; RETURN NULL; END $$;

-- The look-alikes work: with evil first, an unqualified comparison of
-- varchars is evil's.
SET search_path = evil, public;
SELECT 'charged'::varchar = 'pending'::varchar AS evil_equal;
RESET search_path;

\set a '''aaaaaaaa-0000-0000-0000-000000000000'''
\set b '''bbbbbbbb-0000-0000-0000-000000000000'''
\set c '''cccccccc-0000-0000-0000-000000000000'''

-------------------------------------------------------------------------------
-- search_path = evil, public
-------------------------------------------------------------------------------

SET search_path = evil, public;
SHOW search_path;

SELECT msgbilling.attach('public.messages', model_column => 'model',
                         created_column => 'created_at');
SELECT msgbilling.set_price(NULL, 0.01, '2024-01-01') > 0 AS priced;
SELECT msgbilling.set_price('big', 0.1, '2024-01-01') > 0 AS priced;
SELECT msgbilling.price_at('big', '2024-06-01') AS big,
       msgbilling.price_at('other', '2024-06-01') AS other,
       msgbilling.price_at('big', '2023-06-01') AS before;
-- wallets: a is funded (the replayed key credits once), b is short with
-- an overdraft, c has none
SELECT msgbilling.top_up(:a, 10, 'first', 'pay-1');
SELECT msgbilling.top_up(:a, 10, 'first', 'pay-1');
SELECT msgbilling.top_up(:b, 1);
SELECT msgbilling.set_overdraft(:b, 0.5);
SELECT msgbilling.adjust(:a, -1, 'correction');
SELECT msgbilling.balance(:a) AS a, msgbilling.balance(:b) AS b,
       msgbilling.balance(:c) AS c;

-- the app's messages
INSERT INTO public.messages (id, org_id, tokens_used, model, created_at) VALUES
    (1, :a, 100, NULL,  '2024-02-01 00:01'),  -- 1.00
    (2, :a, 10,  'big', '2024-02-01 00:02'),  -- 1.00
    (3, :b, 100, NULL,  '2024-02-01 00:03'),  -- 1.00: b's balance 1
    (4, :b, 100, NULL,  '2024-02-01 00:04'),  -- 1.00: beyond b's overdraft
    (5, :c, 10,  NULL,  '2024-02-01 00:05'),  -- no wallet
    (6, :a, NULL, NULL, '2024-02-01 00:06'),  -- invalid tokens
    (7, :a, 50,  NULL,  '2024-02-01 00:07'),  -- 0.50
    (8, :a, 1,   'big', '2023-12-01 00:00');  -- before any price

SELECT msgbilling.process_message_billing(1);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[2, 3, 3, 999]);
SELECT * FROM msgbilling.process_all_pending(:b);
-- the oldest pending message first: 8, which has no price
SELECT * FROM msgbilling.process_all_pending(max_messages => 1);
-- batches of two: (5, 6), then (7)
CALL msgbilling.drain(2);
-- a price from before message 8 makes it pending again
SELECT msgbilling.set_price('big', 0.1, '2023-01-01') > 0 AS priced;
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.refund(1, 'bad answer');
-- c's wallet, then its failed message again
SELECT msgbilling.top_up(:c, 5);
SELECT msgbilling.retry_failed(:c);
SELECT msgbilling.process_message_billing(5);
-- a larger overdraft makes b's message pending again
SELECT msgbilling.set_overdraft(:b, 2);
SELECT * FROM msgbilling.process_all_pending();
-- the invalid one fails again
SELECT msgbilling.retry_failed();
SELECT * FROM msgbilling.process_all_pending();

-- the trigger, row level and statement level
CREATE TRIGGER bill_each AFTER INSERT ON public.messages
    FOR EACH ROW EXECUTE FUNCTION msgbilling.bill_on_insert();
INSERT INTO public.messages (id, org_id, tokens_used, model, created_at)
VALUES (10, :a, 10, NULL, '2024-02-02 00:00');
DROP TRIGGER bill_each ON public.messages;
CREATE TRIGGER bill_all AFTER INSERT ON public.messages
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION msgbilling.bill_on_insert();
INSERT INTO public.messages (id, org_id, tokens_used, model, created_at)
VALUES (11, :a, 10, NULL, '2024-02-02 00:01'),
       (12, :a, 20, 'big', '2024-02-02 00:02');
DROP TRIGGER bill_all ON public.messages;

-- reports
SELECT * FROM msgbilling.stats();
SELECT * FROM msgbilling.stats(:a);
SELECT message_id, created_at, tokens, model, cost_credits, billing_status,
       charged_at IS NOT NULL AS charged, failure_reason
  FROM msgbilling.history(:a, 4);
SELECT message_id FROM msgbilling.history(:a, 10, '2024-02-01 00:05');
SELECT * FROM msgbilling.verify();
SELECT msgbilling.backlog();
-- pg_cron is not installed here: schedule() says so, naming the pg_cron
-- package of this server's version (NN below), and nothing of evil runs
DO $$
DECLARE
    msg text;
    hint text;
BEGIN
    PERFORM msgbilling.schedule();
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RAISE NOTICE 'refused: %', msg;
    RAISE NOTICE 'hint: %', pg_catalog.replace(hint,
        pg_catalog.format('postgresql-%s-cron',
                          pg_catalog.current_setting('server_version_num')::integer
                          OPERATOR(pg_catalog./) 10000),
        'postgresql-NN-cron');
END
$$;

RESET search_path;

-- Every result is exactly right.
SELECT id, org_id, tokens_used, model, billing_status, cost_credits,
       billing_error, charged_at IS NOT NULL AS has_charged_at,
       billing_ledger_id IS NOT NULL AS has_ledger_id
  FROM messages ORDER BY id;
SELECT org_id, balance, overdraft_limit FROM msgbilling.credits ORDER BY org_id;
SELECT id, org_id, kind, amount, balance_after, message_count, message_id,
       note, idempotency_key
  FROM msgbilling.ledger ORDER BY id;
-- one charge entry per org per batch, and each covers its messages
SELECT l.id, l.message_count, array_agg(m.id ORDER BY m.id) AS messages
  FROM msgbilling.ledger l JOIN messages m ON m.billing_ledger_id = l.id
 GROUP BY l.id ORDER BY l.id;
-- the look-alike tables were not touched
SELECT * FROM evil.credits;
SELECT * FROM evil.prices;
SELECT count(*) AS evil_config FROM evil.config;
SELECT count(*) AS evil_ledger FROM evil.ledger;
SELECT * FROM pg_temp.credits;
SELECT count(*) AS temp_ledger FROM pg_temp.ledger;

-------------------------------------------------------------------------------
-- search_path = evil, pg_catalog, public: evil shadows pg_catalog too
-------------------------------------------------------------------------------

SET search_path = evil, pg_catalog, public;
SHOW search_path;
-- the look-alikes win now
SELECT now() AS evil_now;
SELECT 1::numeric + 1::numeric AS evil_sum;
SELECT 1::bigint = 2::bigint AS evil_equal;

SELECT msgbilling.set_price('small', 0.001, '2024-01-01') > 0 AS priced;
SELECT msgbilling.price_at('small', '2024-06-01') AS small;
SELECT msgbilling.top_up(:b, 3, 'second', 'pay-2');
SELECT msgbilling.top_up(:b, 3, 'second', 'pay-2');
SELECT msgbilling.adjust(:c, 0.25, 'goodwill');
SELECT msgbilling.set_overdraft(:c, 0);
SELECT msgbilling.balance(:b) AS b, msgbilling.balance(:c) AS c;
INSERT INTO public.messages (id, org_id, tokens_used, model, created_at) VALUES
    (20, :a, 1000, 'small', '2024-03-01 00:01'),  -- 1.00
    (21, :a, 200,  NULL,    '2024-03-01 00:02'),  -- 2.00
    (22, :b, 100,  NULL,    '2024-03-01 00:03'),  -- 1.00
    (23, :b, 150,  NULL,    '2024-03-01 00:04'),  -- 1.50
    (24, :c, 10000, NULL,   '2024-03-01 00:05'),  -- 100.00: too much for c
    (25, :c, 10,   NULL,    '2024-03-01 00:06'),  -- fails behind 24
    (26, :a, 5,    'big',   '2024-03-01 00:07'),  -- 0.50
    (27, :b, 1,    NULL,    '2024-03-01 00:08');  -- 0.01
SELECT msgbilling.process_message_billing(20);
SELECT msgbilling.process_message_billing('21');
SELECT * FROM msgbilling.process_batch_billing(ARRAY['22', '23']);
SELECT * FROM msgbilling.process_all_pending(:c);
CALL msgbilling.drain(1);
SELECT msgbilling.refund(22);
SELECT msgbilling.refund(22);
SELECT msgbilling.top_up(:c, 100);
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.retry_failed();
CREATE TRIGGER bill_each AFTER INSERT ON public.messages
    FOR EACH ROW EXECUTE FUNCTION msgbilling.bill_on_insert();
INSERT INTO public.messages (id, org_id, tokens_used, model, created_at)
VALUES (28, :b, 100, NULL, '2024-03-02 00:00');
DROP TRIGGER bill_each ON public.messages;
CREATE TRIGGER bill_all AFTER INSERT ON public.messages
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION msgbilling.bill_on_insert();
INSERT INTO public.messages (id, org_id, tokens_used, model, created_at)
VALUES (29, :b, 100, NULL, '2024-03-02 00:01'),
       (30, :b, 100, NULL, '2024-03-02 00:02');
DROP TRIGGER bill_all ON public.messages;
SELECT * FROM msgbilling.stats();
SELECT * FROM msgbilling.stats(:b);
SELECT message_id, tokens, model, cost_credits, billing_status, failure_reason
  FROM msgbilling.history(:b, 3);
SELECT * FROM msgbilling.verify();
SELECT msgbilling.backlog();
-- the qualified names are msgbilling's, never public's look-alikes
SELECT * FROM msgbilling.process_all_pending();
CALL msgbilling.drain();

RESET search_path;

SELECT id, org_id, tokens_used, model, billing_status, cost_credits,
       billing_error, charged_at IS NOT NULL AS has_charged_at,
       billing_ledger_id IS NOT NULL AS has_ledger_id
  FROM messages WHERE id >= 20 ORDER BY id;
SELECT org_id, balance, overdraft_limit FROM msgbilling.credits ORDER BY org_id;
SELECT id, org_id, kind, amount, balance_after, message_count, message_id,
       note, idempotency_key
  FROM msgbilling.ledger WHERE id > 14 ORDER BY id;
SELECT l.id, l.message_count, array_agg(m.id ORDER BY m.id) AS messages
  FROM msgbilling.ledger l JOIN messages m ON m.billing_ledger_id = l.id
 WHERE m.id >= 20
 GROUP BY l.id ORDER BY l.id;
-- balances equal ledger sums
SELECT c.org_id, c.balance, sum(l.amount) AS ledger_sum
  FROM msgbilling.credits c JOIN msgbilling.ledger l USING (org_id)
 GROUP BY c.org_id, c.balance ORDER BY c.org_id;
SELECT check_name, ok FROM msgbilling.verify();
SELECT * FROM evil.credits;
SELECT * FROM pg_temp.credits;

-- detach with evil first, too
SET search_path = evil, pg_catalog, public;
SELECT msgbilling.detach('public.messages', drop_columns => true, force => true);
RESET search_path;
SELECT count(*) AS attached FROM msgbilling.config;
SELECT count(*) AS billing_columns FROM pg_attribute
 WHERE attrelid = 'messages'::regclass AND attnum > 0 AND NOT attisdropped
   AND attname IN ('billing_status', 'cost_credits', 'charged_at',
                   'billing_error', 'billing_ledger_id');

SET client_min_messages = warning;
DROP SCHEMA evil CASCADE;
RESET client_min_messages;
DROP FUNCTION public.process_all_pending(uuid, bigint);
DROP FUNCTION public.top_up(text, numeric, text, text);
DROP PROCEDURE public.drain(integer);
DROP FUNCTION public.bill_on_insert();
DROP TABLE pg_temp.config, pg_temp.credits, pg_temp.ledger, pg_temp.prices;
DROP TABLE messages;
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
