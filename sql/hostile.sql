--
-- hostile.sql: bad inputs against every function.
--
-- Each case (-- H1, -- H2, ...) must end in a clear error in PostgreSQL's
-- usual form, or in a message marked failed with its reason, and lose
-- nothing: at the end verify() is all ok, every balance is its ledger sum
-- and every message is in a known state.
--
CREATE EXTENSION msgbilling;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- A canary named like the target of the injection attempts below.
CREATE TABLE messages (canary text);
INSERT INTO messages VALUES ('still here');

-- try(sql): 'ok', or the SQLSTATE and message of the error sql raised.
CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    msg text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
    RETURN SQLSTATE || ': ' || msg;
END;
$$;

-------------------------------------------------------------------------------
-- Nothing attached yet
-------------------------------------------------------------------------------

CREATE TABLE plain (id bigint PRIMARY KEY, org_id bigint NOT NULL,
                    tokens_used integer);
-- H1: billing before attach
SELECT * FROM msgbilling.process_all_pending();
-- H2: a top-up before attach: the org id type is not known yet
SELECT msgbilling.top_up(1, 10);
-- H3: drain, stats and verify before attach; backlog() is NULL
CALL msgbilling.drain();
SELECT * FROM msgbilling.stats();
SELECT * FROM msgbilling.verify();
SELECT msgbilling.backlog() IS NULL AS no_backlog;
-- H4: attach a NULL table
SELECT msgbilling.attach(NULL);
-- H5: an injection attempt as the table name fails in the regclass cast
SELECT msgbilling.attach('x''); DROP TABLE messages; --');
-- H6: an injection attempt as a column name is just a missing column
SELECT msgbilling.attach('plain', org_column => 'org_id"; DROP TABLE messages; --');
-- H7: a NULL tokens column
SELECT msgbilling.attach('plain', tokens_column => NULL);
SELECT count(*) AS attached FROM msgbilling.config;

-------------------------------------------------------------------------------
-- Org ids of the wrong type (bigint org column)
-------------------------------------------------------------------------------

SELECT msgbilling.attach('plain');
-- H8: boolean
SELECT msgbilling.top_up(true, 1);
-- H9: json
SELECT msgbilling.top_up('{"org": 1}'::json, 1);
-- H10: uuid
SELECT msgbilling.top_up('aaaaaaaa-0000-0000-0000-000000000000'::uuid, 1);
-- H11: text that is not a number
SELECT msgbilling.top_up('one', 1);
-- H12: numeric 1.5
SELECT msgbilling.top_up(1.5, 1);
-- H13: beyond bigint
SELECT msgbilling.top_up(9223372036854775808, 1);
-- H14: an array, a timestamp, a jsonb, a boolean, across the other functions
SELECT msgbilling.balance(ARRAY[1]);
SELECT msgbilling.set_overdraft('2024-01-01'::timestamptz, 1);
SELECT msgbilling.adjust('{}'::jsonb, 1, 'x');
SELECT * FROM msgbilling.stats(true);
SELECT * FROM msgbilling.history('{"org": 1}'::jsonb);
SELECT msgbilling.retry_failed(false);
SELECT * FROM msgbilling.process_all_pending('one');
CALL msgbilling.drain(10, true);
-- none of that made a wallet or a ledger entry
SELECT count(*) AS wallets FROM msgbilling.credits;
SELECT count(*) AS entries FROM msgbilling.ledger;
SELECT msgbilling.detach('plain', drop_columns => true);
DROP TABLE plain;

-------------------------------------------------------------------------------
-- A table whose names need quoting: bigint key "order", text org "user",
-- bigint tokens "select", text model "from", created "where"
-------------------------------------------------------------------------------

CREATE SCHEMA "Sch;ema";
CREATE TABLE "Sch;ema"."Weird ""Name"" Table" (
    "order" bigint PRIMARY KEY,
    "user" text NOT NULL,
    "select" bigint,
    "from" text,
    "where" timestamptz NOT NULL
);
\set t '"Sch;ema"."Weird ""Name"" Table"'
SELECT msgbilling.attach('"Sch;ema"."Weird ""Name"" Table"',
                         org_column => 'user', tokens_column => 'select',
                         model_column => 'from', created_column => 'where');
SELECT messages, key_column, org_column, tokens_column, model_column,
       created_column
  FROM msgbilling.config;

-- org ids: injection attempts, format directives, a long one
\set inj '''x''''); DROP TABLE messages; --'''
\set bobby '''Robert''''); DROP TABLE "Sch;ema"."Weird ""Name"" Table";--'''
\set fmt '''%s%s%n%x'''
\set long 'repeat(''o'', 100000)'

-------------------------------------------------------------------------------
-- Prices
-------------------------------------------------------------------------------

-- H15: NULL price, NULL time
SELECT msgbilling.set_price(NULL, NULL);
SELECT msgbilling.set_price(NULL, 1, NULL);
-- H16: NaN, Infinity, negative prices
SELECT msgbilling.set_price(NULL, 'NaN');
SELECT msgbilling.set_price(NULL, 'Infinity');
SELECT msgbilling.set_price(NULL, '-Infinity');
SELECT msgbilling.set_price(NULL, -0.000001);
-- H17: infinite times
SELECT msgbilling.set_price(NULL, 1, 'infinity');
SELECT msgbilling.set_price(NULL, 1, '-infinity');
-- H18: an empty model name
SELECT msgbilling.set_price('', 1);
-- the prices the rest of this test bills at: a default from 2020, a zero
-- price for a model named like an injection attempt, a model whose only
-- price is in the future, and an absurdly high one
SELECT msgbilling.set_price(NULL, 0.000001, '2020-01-01') > 0 AS priced;
SELECT msgbilling.set_price(:inj, 0, '2020-01-01') > 0 AS priced;
SELECT msgbilling.set_price('future', 1, '2099-01-01') > 0 AS priced;
-- set_price refuses a price no message could be billed at; one already in
-- the table (a 1.0 install, or written by hand) fails its messages
SELECT msgbilling.set_price('absurd', 1e30, '2020-01-01') > 0 AS priced;
INSERT INTO msgbilling.prices (model, credits_per_token, effective_from)
VALUES ('absurd', 1e30, '2020-01-01');
SELECT msgbilling.set_price(:fmt, 0.5, '2020-01-01') > 0 AS priced;
-- H19: the same model and time twice
SELECT msgbilling.set_price(:fmt, 0.5, '2020-01-01');
SELECT msgbilling.set_price(NULL, 0.000001, '2020-01-01');
-- H20: price_at with NULLs and odd names: NULL model is the default price,
-- a NULL time has no price, a future-only model falls back to the default
SELECT msgbilling.price_at(NULL, '2024-01-01') AS default_price,
       msgbilling.price_at('future', '2024-01-01') AS future_now,
       msgbilling.price_at('future', '2100-01-01') AS future_then,
       msgbilling.price_at(:inj, '2024-01-01') AS injection,
       msgbilling.price_at('x', NULL) AS no_time,
       msgbilling.price_at('x', '2019-01-01') AS before_all;

-------------------------------------------------------------------------------
-- Wallets
-------------------------------------------------------------------------------

SELECT msgbilling.top_up(:inj, 10, 'payment; DROP TABLE messages; --', 'key''; --');
SELECT msgbilling.top_up(:bobby, 10);
SELECT msgbilling.top_up('big', 10000);
SELECT msgbilling.top_up(:long, 1);
SELECT msgbilling.top_up(:fmt, 5, '%n%n', '%s%s%n');
-- H21: NULL org, NULL amount
SELECT msgbilling.top_up(NULL, 1);
SELECT msgbilling.top_up('big', NULL);
-- H22: NaN and infinite amounts
SELECT msgbilling.top_up('big', 'NaN');
SELECT msgbilling.top_up('big', 'Infinity');
SELECT msgbilling.top_up('big', '-Infinity');
-- H23: zero and negative amounts
SELECT msgbilling.top_up('big', 0);
SELECT msgbilling.top_up('big', -1);
-- H24: too large for a balance
SELECT msgbilling.top_up('big', 1e30);
SELECT msgbilling.top_up('big', 99999999999999.999999 + 0.000001);
-- H25: more than 6 decimals
SELECT msgbilling.top_up('big', 0.0000001);
SELECT msgbilling.top_up('big', 1.1234567);
-- H26: an idempotency key reused for another amount, format directives
-- and all
SELECT msgbilling.top_up(:fmt, 6, NULL, '%s%s%n');
SELECT msgbilling.top_up('big', 5, NULL, 'key''; --');
-- H27: adjust: zero, NaN, too large, more decimals, no note
SELECT msgbilling.adjust('big', 0, 'zero');
SELECT msgbilling.adjust('big', 'NaN', 'nan');
SELECT msgbilling.adjust('big', -1e30, 'huge');
SELECT msgbilling.adjust('big', -0.0000001, 'tiny');
SELECT msgbilling.adjust('big', 1, NULL);
SELECT msgbilling.adjust(NULL, 1, 'no org');
-- H28: overdraft limits: negative, NaN, infinite, too large, too precise, NULL
SELECT msgbilling.set_overdraft('big', -1);
SELECT msgbilling.set_overdraft('big', 'NaN');
SELECT msgbilling.set_overdraft('big', 'Infinity');
SELECT msgbilling.set_overdraft('big', 1e30);
SELECT msgbilling.set_overdraft('big', 0.0000001);
SELECT msgbilling.set_overdraft('big', NULL);
SELECT msgbilling.set_overdraft(NULL, 1);
-- H29: balance of NULL; of an org without a wallet (NULL, not an error)
SELECT msgbilling.balance(NULL);
SELECT msgbilling.balance('nobody') IS NULL AS no_wallet;
-- H30: an org id too long to index (a 3200-character md5 chain does not
-- compress): refused, nothing written
DO $$
BEGIN
    PERFORM msgbilling.top_up((SELECT string_agg(md5(i::text), '')
                                 FROM generate_series(1, 100) i), 1);
EXCEPTION WHEN program_limit_exceeded THEN
    RAISE NOTICE 'refused: SQLSTATE %', SQLSTATE;
END;
$$;
SELECT left(org_id, 40) AS org, length(org_id) AS length, balance
  FROM msgbilling.credits ORDER BY org_id;
-- H68: idempotency keys and text org ids are limited to 255 bytes, with
-- an error that says so (a 3 KB key used to get a btree hint about MD5
-- indexes, a 10 MB one "index row requires 120056 bytes"); 255 is fine
SELECT msgbilling.top_up('big', 1, NULL, repeat('k', 3000));
SELECT msgbilling.top_up('big', 1, NULL, repeat('k', 10000000));
SELECT msgbilling.top_up('big', 1, NULL, repeat('é', 128));
SELECT msgbilling.top_up('keys', 1, NULL, repeat('k', 255)) > 0 AS topped_up;
SELECT msgbilling.top_up(repeat('o', 256), 1);
SELECT msgbilling.set_overdraft(repeat('o', 256), 1);
SELECT msgbilling.adjust(repeat('o', 256), 1, 'x');
-- H69: an amount echoed in an error is cut to 40 characters
SELECT msgbilling.top_up('big', ('1' || repeat('0', 131000))::numeric);
SELECT msgbilling.top_up('big', ('-1' || repeat('0', 131000))::numeric);
SELECT msgbilling.adjust('big', ('0.' || repeat('1', 16000))::numeric, 'x');

-------------------------------------------------------------------------------
-- Messages the app writes
-------------------------------------------------------------------------------

INSERT INTO "Sch;ema"."Weird ""Name"" Table" ("order", "user", "select", "from", "where") VALUES
    -- priced at zero, by a model named like an injection attempt
    (1, 'x''); DROP TABLE messages; --', 1000, 'x''); DROP TABLE messages; --', '2024-01-01 00:01'),
    (2, 'Robert''); DROP TABLE "Sch;ema"."Weird ""Name"" Table";--', 1000, NULL, '2024-01-01 00:02'),
    -- tokens beyond the integer range: 3000.00
    (3, 'big', 3000000000, NULL, '2024-01-01 00:03'),
    -- 1e18 tokens are not a real message
    (4, 'big', 1000000000000000000, NULL, '2024-01-01 00:04'),
    -- 1e15 tokens cost 1e9 credits: beyond numeric(10,6)
    (5, 'big', 1000000000000000, NULL, '2024-01-01 00:05'),
    -- negative and NULL tokens
    (6, 'big', -5, NULL, '2024-01-01 00:06'),
    (7, 'big', NULL, NULL, '2024-01-01 00:07'),
    -- zero tokens cost nothing
    (8, 'big', 0, NULL, '2024-01-01 00:08'),
    -- a model whose only price is in the future: the default price
    (9, 'big', 1000, 'future', '2024-01-01 00:09'),
    -- an absurd price: out of range; with zero tokens, free
    (10, 'big', 1, 'absurd', '2024-01-01 00:10'),
    (11, 'big', 0, 'absurd', '2024-01-01 00:11'),
    -- created before any price
    (12, 'big', 1000, NULL, '2019-06-01 00:00'),
    -- format directives as org and model
    (13, '%s%s%n%x', 2, '%s%s%n%x', '2024-01-01 00:13'),
    -- a 100000-character org id
    (14, repeat('o', 100000), 1000000, NULL, '2024-01-01 00:14'),
    -- an org without a wallet
    (15, 'nobody', 1, NULL, '2024-01-01 00:15');

-- H31: process_message_billing of NULL
SELECT msgbilling.process_message_billing(NULL);
-- H32: ids of the wrong type: uuid, boolean, json, an array
SELECT msgbilling.process_message_billing('aaaaaaaa-0000-0000-0000-000000000000'::uuid);
SELECT msgbilling.process_message_billing(true);
SELECT msgbilling.process_message_billing('{"id": 1}'::json);
SELECT msgbilling.process_message_billing(ARRAY[1]);
-- H33: text that is not a number, numeric 1.5, NaN, beyond bigint
SELECT msgbilling.process_message_billing('1; DROP TABLE messages');
SELECT msgbilling.process_message_billing(1.5);
SELECT msgbilling.process_message_billing('NaN'::numeric);
SELECT msgbilling.process_message_billing(1e30);
-- H34: an id that does not exist
SELECT msgbilling.process_message_billing(999);
SELECT msgbilling.process_message_billing(-1);
-- H35: process_batch_billing of NULL, of a scalar, of arrays of the wrong
-- element type
SELECT * FROM msgbilling.process_batch_billing(NULL);
SELECT * FROM msgbilling.process_batch_billing(1);
SELECT * FROM msgbilling.process_batch_billing('{1,2}');
SELECT * FROM msgbilling.process_batch_billing(ARRAY['aaaaaaaa-0000-0000-0000-000000000000'::uuid]);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[true]);
SELECT * FROM msgbilling.process_batch_billing(ARRAY['1', 'one']);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[1.5]);
-- H36: empty arrays, arrays of NULLs, ids that do not exist: nothing billed
SELECT * FROM msgbilling.process_batch_billing(ARRAY[]::bigint[]);
SELECT * FROM msgbilling.process_batch_billing('{}'::text[]);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[NULL, NULL]::bigint[]);
SELECT * FROM msgbilling.process_batch_billing(ARRAY[998, 999, NULL]);
-- H37: an array with NULLs among real ids, repeated: each billed once
SELECT * FROM msgbilling.process_batch_billing(ARRAY[NULL, 1, 1, NULL, 2, 1]);
SELECT "order", billing_status, cost_credits FROM :t WHERE "order" IN (1, 2)
 ORDER BY 1;
-- H38: a multi-dimensional array naming message 8 four times: whether it
-- is refused or read element by element, message 8 is charged at most once
DO $$
BEGIN
    PERFORM msgbilling.process_batch_billing(ARRAY[[8, 8], [8, 8]]);
EXCEPTION WHEN OTHERS THEN
    NULL;
END;
$$;
SELECT billing_status IN ('pending', 'charged') AS known,
       (SELECT count(*) FROM msgbilling.ledger l
         WHERE l.id = m.billing_ledger_id) <= 1 AS at_most_one_entry
  FROM :t m WHERE "order" = 8;
-- either way, billing it now leaves it charged once
SELECT msgbilling.process_message_billing(8);
-- H39: max_messages 0, -1 and the most negative bigint
SELECT * FROM msgbilling.process_all_pending(max_messages => 0);
SELECT * FROM msgbilling.process_all_pending(max_messages => -1);
SELECT * FROM msgbilling.process_all_pending(max_messages => -9223372036854775808);
-- H40: max_messages 2^31 as a double is not a bigint
SELECT * FROM msgbilling.process_all_pending(NULL, 2^31);
-- H41: batch sizes: 0, -1, NULL, beyond the maximum, beyond integer
CALL msgbilling.drain(0);
CALL msgbilling.drain(-1);
CALL msgbilling.drain(NULL);
CALL msgbilling.drain(1000001);
CALL msgbilling.drain(2147483647);
CALL msgbilling.drain(2147483648);
SET msgbilling.batch_size = 0;
SET msgbilling.batch_size = -1;
SET msgbilling.batch_size = 2147483648;
SET msgbilling.batch_size = 'all';
-- (how PostgreSQL words a range differs between its versions: the
-- SQLSTATE, and the setting left as it was)
\set VERBOSITY sqlstate
SET msgbilling.yield_interval = -1;
SET msgbilling.yield_interval = '2s';
\set VERBOSITY default
SHOW msgbilling.yield_interval;
SET msgbilling.yield_interval = '1 fortnight';
SET msgbilling.yield_interval = 'often';
SET msgbilling.max_rate = -1;
SET msgbilling.max_rate = 2147483648;
SET msgbilling.max_rate = 'slowly';
SET msgbilling.log_level = 'panic';
-- H42: an injection attempt as the org of process_all_pending and drain
SELECT * FROM msgbilling.process_all_pending('''; DELETE FROM msgbilling.ledger; --');
CALL msgbilling.drain(10, '''; DELETE FROM msgbilling.ledger; --');

-- The backlog, oldest first, in one batch of at most 2^31 messages, then
-- with no limit (NULL): message 12 has no price yet.
SELECT * FROM msgbilling.process_all_pending(max_messages => (2^31)::bigint);
SELECT * FROM msgbilling.process_all_pending(NULL, NULL);
SELECT "order", left("user", 12) AS org, "select" AS tokens,
       left("from", 12) AS model, billing_status, cost_credits, billing_error
  FROM :t ORDER BY "order";

-- H43: a price effective before message 12 makes it pending again; a
-- zero price bills it for nothing
SELECT msgbilling.set_price(NULL, 0, '2019-01-01') > 0 AS priced;
SELECT billing_status FROM :t WHERE "order" = 12;
CALL msgbilling.drain(1);
SELECT billing_status, cost_credits FROM :t WHERE "order" = 12;

-------------------------------------------------------------------------------
-- Refunds and retries
-------------------------------------------------------------------------------

-- H44: refund of NULL, of an unknown id, of ids of the wrong type
SELECT msgbilling.refund(NULL);
SELECT msgbilling.refund(999);
SELECT msgbilling.refund('aaaaaaaa-0000-0000-0000-000000000000'::uuid);
SELECT msgbilling.refund('3 OR true');
-- H45: refund of a failed message, of a pending one
SELECT msgbilling.refund(4);
INSERT INTO "Sch;ema"."Weird ""Name"" Table" ("order", "user", "select", "where")
VALUES (16, 'big', 1, '2024-01-02');
SELECT msgbilling.refund(16);
-- H46: refund twice, with an injection attempt as its note
SELECT msgbilling.refund(3, 'x''); DROP TABLE messages; --');
SELECT msgbilling.refund(3);
-- H47: retry_failed with an org that has no failures, an injection
-- attempt, and for everyone: the invalid ones fail again
SELECT msgbilling.retry_failed('nobody at all');
SELECT msgbilling.retry_failed(:inj);
SELECT msgbilling.retry_failed();
SELECT * FROM msgbilling.process_all_pending();

-------------------------------------------------------------------------------
-- Reports
-------------------------------------------------------------------------------

-- H48: history: NULL org, max_rows 0, -1, NULL, too many
SELECT * FROM msgbilling.history(NULL);
SELECT * FROM msgbilling.history('big', 0);
SELECT * FROM msgbilling.history('big', -1);
SELECT * FROM msgbilling.history('big', NULL);
SELECT * FROM msgbilling.history('big', 10001);
SELECT * FROM msgbilling.history('big', 2147483647);
-- H49: history paged from infinity and from -infinity
SELECT message_id FROM msgbilling.history('big', 3, 'infinity');
SELECT message_id FROM msgbilling.history('big', 3, '-infinity');
-- H50: reports of injection attempts and format directives
SELECT * FROM msgbilling.stats(:inj);
SELECT * FROM msgbilling.stats(:fmt);
SELECT message_id, tokens, model, cost_credits, billing_status, failure_reason
  FROM msgbilling.history(:bobby);
SELECT message_id, tokens, model, cost_credits, billing_status, failure_reason
  FROM msgbilling.history(:fmt);
SELECT message_id, tokens, cost_credits, billing_status
  FROM msgbilling.history(:long);

-------------------------------------------------------------------------------
-- A deleted wallet
-------------------------------------------------------------------------------

-- H51: a wallet without ledger entries (set_overdraft made it) is deleted
-- by hand: its org's messages fail with no_wallet, and verify() stays ok
SELECT msgbilling.set_overdraft('ghost', 5);
BEGIN;
SET LOCAL msgbilling.repair = on;
DELETE FROM msgbilling.credits WHERE org_id = 'ghost';
COMMIT;
INSERT INTO "Sch;ema"."Weird ""Name"" Table" ("order", "user", "select", "where")
VALUES (17, 'ghost', 1000, '2024-01-03');
SELECT msgbilling.process_message_billing(17);
SELECT billing_error FROM :t WHERE "order" = 17;
SELECT msgbilling.balance('ghost') IS NULL AS no_wallet;
-- a top-up brings the wallet back (a no_wallet failure stays failed until
-- it is retried); process_message_billing tries it again
SELECT msgbilling.top_up('ghost', 1);
SELECT billing_status, billing_error FROM :t WHERE "order" = 17;
SELECT msgbilling.process_message_billing(17);

-------------------------------------------------------------------------------
-- The trigger
-------------------------------------------------------------------------------

-- H52: bill_on_insert called as a function
SELECT msgbilling.bill_on_insert();
-- H53: as a BEFORE trigger, and FOR EACH STATEMENT without the new rows
CREATE TRIGGER bill_before BEFORE INSERT ON "Sch;ema"."Weird ""Name"" Table"
    FOR EACH ROW EXECUTE FUNCTION msgbilling.bill_on_insert();
INSERT INTO "Sch;ema"."Weird ""Name"" Table" ("order", "user", "select", "where")
VALUES (18, 'big', 1, '2024-01-04');
DROP TRIGGER bill_before ON "Sch;ema"."Weird ""Name"" Table";
CREATE TRIGGER bill_stmt AFTER INSERT ON "Sch;ema"."Weird ""Name"" Table"
    FOR EACH STATEMENT EXECUTE FUNCTION msgbilling.bill_on_insert();
INSERT INTO "Sch;ema"."Weird ""Name"" Table" ("order", "user", "select", "where")
VALUES (18, 'big', 1, '2024-01-04');
DROP TRIGGER bill_stmt ON "Sch;ema"."Weird ""Name"" Table";
-- H54: hostile rows through a row trigger: each INSERT stands, each row is
-- decided
CREATE TRIGGER bill_each AFTER INSERT ON "Sch;ema"."Weird ""Name"" Table"
    FOR EACH ROW EXECUTE FUNCTION msgbilling.bill_on_insert();
INSERT INTO "Sch;ema"."Weird ""Name"" Table" ("order", "user", "select", "from", "where")
VALUES (18, 'x''); DROP TABLE messages; --', 1000000000000000000, NULL, '2024-01-04'),
       (19, 'big', 3000000000, 'x''); DROP TABLE messages; --', '2024-01-04'),
       (20, 'nobody', 1, NULL, '2024-01-04');
SELECT "order", billing_status, cost_credits, billing_error FROM :t
 WHERE "order" >= 18 ORDER BY 1;
DROP TRIGGER bill_each ON "Sch;ema"."Weird ""Name"" Table";
-- H55: on a table that is not the attached one: a warning, the INSERT stands
CREATE TABLE other (id bigint PRIMARY KEY, org_id text, tokens_used bigint);
CREATE TRIGGER bill_other AFTER INSERT ON other
    FOR EACH ROW EXECUTE FUNCTION msgbilling.bill_on_insert();
INSERT INTO other VALUES (1, 'big', 1);
SELECT count(*) AS inserted FROM other;
DROP TABLE other;

-------------------------------------------------------------------------------
-- pg_cron scheduling
-------------------------------------------------------------------------------

-- H56: a NULL and an empty schedule
SELECT msgbilling.schedule(NULL);
SELECT msgbilling.schedule('   ');

-------------------------------------------------------------------------------
-- Columns of the attached table renamed or dropped
-------------------------------------------------------------------------------

INSERT INTO "Sch;ema"."Weird ""Name"" Table" ("order", "user", "select", "where")
VALUES (21, 'big', 1000, '2024-01-05');
-- H57: the tokens column renamed: billing refuses, in the user's terms
ALTER TABLE "Sch;ema"."Weird ""Name"" Table" RENAME "select" TO tokens;
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.process_message_billing(21);
ALTER TABLE "Sch;ema"."Weird ""Name"" Table" RENAME tokens TO "select";

-- Every function, with one configured column dropped at a time (in a
-- transaction that is rolled back).  backlog() reads billing_status only.
CREATE TABLE calls (n integer, fn text, sql text);
INSERT INTO calls VALUES
    (1, 'process_message_billing', 'SELECT msgbilling.process_message_billing(21)'),
    (2, 'process_batch_billing', 'SELECT msgbilling.process_batch_billing(ARRAY[21])'),
    (3, 'process_all_pending', 'SELECT msgbilling.process_all_pending()'),
    (4, 'drain', 'CALL msgbilling.drain()'),
    (5, 'top_up', 'SELECT msgbilling.top_up(''big'', 1)'),
    (6, 'adjust', 'SELECT msgbilling.adjust(''big'', 1, ''x'')'),
    (7, 'balance', 'SELECT msgbilling.balance(''big'')'),
    (8, 'set_overdraft', 'SELECT msgbilling.set_overdraft(''big'', 1)'),
    (9, 'refund', 'SELECT msgbilling.refund(1)'),
    (10, 'retry_failed', 'SELECT msgbilling.retry_failed()'),
    (11, 'set_price', 'SELECT msgbilling.set_price(''m'', 1)'),
    (12, 'stats', 'SELECT msgbilling.stats()'),
    (13, 'history', 'SELECT msgbilling.history(''big'')'),
    (14, 'verify', 'SELECT msgbilling.verify()'),
    (15, 'backlog', 'SELECT msgbilling.backlog()');
-- H58: tokens column dropped
BEGIN;
ALTER TABLE "Sch;ema"."Weird ""Name"" Table" DROP COLUMN "select";
SELECT try(sql) AS outcome, string_agg(fn, ', ' ORDER BY n) AS functions
  FROM calls GROUP BY 1 ORDER BY 1;
ROLLBACK;
-- H59: org column dropped (with the guard on it, which needs CASCADE)
BEGIN;
ALTER TABLE "Sch;ema"."Weird ""Name"" Table" DROP COLUMN "user";
ROLLBACK;
BEGIN;
ALTER TABLE "Sch;ema"."Weird ""Name"" Table" DROP COLUMN "user" CASCADE;
SELECT try(sql) AS outcome, string_agg(fn, ', ' ORDER BY n) AS functions
  FROM calls GROUP BY 1 ORDER BY 1;
ROLLBACK;
-- H60: model column dropped
BEGIN;
ALTER TABLE "Sch;ema"."Weird ""Name"" Table" DROP COLUMN "from";
SELECT try(sql) AS outcome, string_agg(fn, ', ' ORDER BY n) AS functions
  FROM calls GROUP BY 1 ORDER BY 1;
ROLLBACK;
-- H61: created column dropped
BEGIN;
ALTER TABLE "Sch;ema"."Weird ""Name"" Table" DROP COLUMN "where";
SELECT try(sql) AS outcome, string_agg(fn, ', ' ORDER BY n) AS functions
  FROM calls GROUP BY 1 ORDER BY 1;
ROLLBACK;
-- H62: key column dropped (and the primary key with it)
BEGIN;
ALTER TABLE "Sch;ema"."Weird ""Name"" Table" DROP COLUMN "order";
SELECT try(sql) AS outcome, string_agg(fn, ', ' ORDER BY n) AS functions
  FROM calls GROUP BY 1 ORDER BY 1;
ROLLBACK;
-- H63: the table renamed: msgbilling follows it
ALTER TABLE "Sch;ema"."Weird ""Name"" Table" RENAME TO "Renamed; Table";
SELECT msgbilling.process_message_billing(21);
ALTER TABLE "Sch;ema"."Renamed; Table" RENAME TO "Weird ""Name"" Table";

-------------------------------------------------------------------------------
-- Detached, dropped and re-attached tables
-------------------------------------------------------------------------------

-- H64: detach of NULL, of a table that is not attached, of a missing one
SELECT msgbilling.detach(NULL);
SELECT msgbilling.detach('pg_class');
SELECT msgbilling.detach('no_such_table');
-- H65: every function of a detached table
SELECT msgbilling.detach('"Sch;ema"."Weird ""Name"" Table"');
SELECT try(sql) AS outcome, string_agg(fn, ', ' ORDER BY n) AS functions
  FROM calls GROUP BY 1 ORDER BY 1;
SELECT msgbilling.detach('"Sch;ema"."Weird ""Name"" Table"');
-- H66: an attached table dropped behind msgbilling's back
CREATE TABLE doomed (id bigint PRIMARY KEY, org_id text, tokens_used integer);
SELECT msgbilling.attach('doomed');
DROP TABLE doomed;
SELECT * FROM msgbilling.process_all_pending();
SELECT msgbilling.top_up('big', 1);
SELECT msgbilling.backlog();
-- re-attaching the first table replaces the dropped one and keeps its data
SELECT msgbilling.attach('"Sch;ema"."Weird ""Name"" Table"',
                         org_column => 'user', tokens_column => 'select',
                         model_column => 'from', created_column => 'where');
SELECT msgbilling.process_message_billing(21);
-- H67: the look-ups of msgbilling's own writes, called anywhere else: by
-- hand, in a query over the table, in an app's UPDATE (which then changes
-- nothing)
SELECT try($$SELECT msgbilling._decided_cost('(0,1)')$$) AS by_hand;
SELECT try(format('SELECT msgbilling._decided_ledger_id(ctid) FROM %s', :'t'))
       AS in_query;
SELECT try(format('UPDATE %s SET "select" = 5 WHERE "order" = 21'
                  ' AND msgbilling._decided_error(ctid) IS NULL', :'t'))
       AS in_update;
SELECT "select" FROM :t WHERE "order" = 21;

-------------------------------------------------------------------------------
-- Nothing was lost
-------------------------------------------------------------------------------

SELECT check_name, ok, detail FROM msgbilling.verify();
SELECT left(c.org_id, 40) AS org, c.balance, sum(l.amount) AS ledger_sum,
       c.balance = sum(l.amount) AS equal
  FROM msgbilling.credits c JOIN msgbilling.ledger l USING (org_id)
 GROUP BY c.org_id, c.balance ORDER BY c.org_id;
-- wallets with no ledger entry have a zero balance
SELECT left(org_id, 40) AS org, balance FROM msgbilling.credits c
 WHERE NOT EXISTS (SELECT 1 FROM msgbilling.ledger l WHERE l.org_id = c.org_id);
-- every message is in a known state, every failure has its reason
SELECT billing_status, billing_error, count(*)
  FROM :t GROUP BY 1, 2 ORDER BY 1, 2;
SELECT "order", left("user", 12) AS org, billing_status, cost_credits,
       billing_error, charged_at IS NOT NULL AS has_charged_at,
       billing_ledger_id IS NOT NULL AS has_ledger_id
  FROM :t ORDER BY "order";
SELECT * FROM msgbilling.stats();
SELECT msgbilling.backlog();
-- and the canary lives
SELECT * FROM messages;

SELECT msgbilling.detach('"Sch;ema"."Weird ""Name"" Table"',
                         drop_columns => true, force => true);
DROP TABLE calls;
DROP FUNCTION try(text);
DROP TABLE messages;
DROP SCHEMA "Sch;ema" CASCADE;
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
