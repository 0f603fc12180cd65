--
-- holds.sql: holds before the LLM call, on the tables apps have.
--
-- A Supabase-style app: a time-partitioned messages table with FORCEd row
-- level security, two tenants reaching the database as one role, and a
-- hold column.  hold() reserves credits, release() and billing end them,
-- available() says what is left; a tenant never holds, releases or reads
-- another tenant's credits.
--
CREATE EXTENSION msgbilling;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE ROLE regress_mb_app;
CREATE ROLE regress_mb_biller;
CREATE TABLE members (member text, org_id uuid);
GRANT SELECT ON members TO regress_mb_app;
CREATE TABLE messages (
    id bigint GENERATED ALWAYS AS IDENTITY,
    org_id uuid NOT NULL,
    tokens_used integer,
    hold_id bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE messages_old PARTITION OF messages
    FOR VALUES FROM ('2020-01-01') TO ('2026-01-01');
CREATE TABLE messages_new PARTITION OF messages
    FOR VALUES FROM ('2026-01-01') TO ('2100-01-01');
CREATE INDEX ON messages (org_id, created_at);
ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
CREATE POLICY own_org ON messages
    USING (org_id IN (SELECT m.org_id FROM members m
                       WHERE m.member = current_setting('app.member', true)))
    WITH CHECK (org_id IN (SELECT m.org_id FROM members m
                            WHERE m.member = current_setting('app.member', true)));

-- attach refuses a hold column that is not bigint
ALTER TABLE messages ADD COLUMN bad_hold integer;
SELECT msgbilling.attach('messages', created_column => 'created_at',
                         hold_column => 'bad_hold');
SELECT msgbilling.attach('messages', created_column => 'created_at',
                         hold_column => 'no_such_column');
SELECT msgbilling.attach('messages', created_column => 'created_at',
                         hold_column => 'hold_id');
SELECT hold_column FROM msgbilling.config;

-- the README's grants: the app holds and reads, the biller bills
GRANT USAGE ON SCHEMA msgbilling TO regress_mb_app, regress_mb_biller;
GRANT INSERT, SELECT ON messages TO regress_mb_app;
GRANT EXECUTE ON FUNCTION msgbilling.hold("any", numeric, interval, text),
    msgbilling.release(bigint), msgbilling.available("any"),
    msgbilling.budget_status("any"), msgbilling.balance("any")
    TO regress_mb_app;
GRANT EXECUTE ON FUNCTION msgbilling.process_all_pending("any", bigint, integer, integer),
    msgbilling.top_up("any", numeric, text, text) TO regress_mb_biller;

\set org_a '''aaaaaaaa-0000-0000-0000-000000000000'''
\set org_b '''bbbbbbbb-0000-0000-0000-000000000000'''
\set org_c '''cccccccc-0000-0000-0000-000000000000'''
INSERT INTO members VALUES ('alice', :org_a), ('bob', :org_b);
SELECT msgbilling.set_price(NULL, 0.001, '2020-01-01') > 0 AS priced;
SELECT msgbilling.top_up(:org_a, 10), msgbilling.top_up(:org_b, 5);
SELECT msgbilling.set_overdraft(:org_b, 1);
-- each tenant has a message already, so that its role may read its org
INSERT INTO messages (org_id, tokens_used, created_at)
VALUES (:org_a, 1000, '2025-06-01'), (:org_b, 1000, '2025-06-01');
SELECT * FROM msgbilling.process_all_pending();

-------------------------------------------------------------------------------
-- hold, release, available
-------------------------------------------------------------------------------
-- a role that bypasses row level security reads both orgs; the look-up it
-- leaves in this backend's plan cache is planned again for the app's role
CREATE ROLE regress_mb_support BYPASSRLS;
GRANT SELECT ON messages TO regress_mb_support;
GRANT EXECUTE ON FUNCTION msgbilling.available("any") TO regress_mb_support;
SET ROLE regress_mb_support;
SELECT msgbilling.available(:org_a) AS a, msgbilling.available(:org_b) AS b;
RESET ROLE;
SET ROLE regress_mb_app;
SET app.member = 'alice';
SELECT msgbilling.available(:org_a);               -- 9
SELECT msgbilling.hold(:org_a, 4) AS h1 \gset
SELECT msgbilling.hold(:org_a, 4) AS h2 \gset
SELECT msgbilling.hold(:org_a, 4) IS NULL AS refused;   -- 1 left
SELECT msgbilling.available(:org_a);
SELECT msgbilling.hold(:org_a, 1) IS NOT NULL AS exactly_the_rest;
SELECT msgbilling.available(:org_a);
SELECT msgbilling.hold(:org_a, 0.000001) IS NULL AS nothing_left;
SELECT msgbilling.release(:h2);
SELECT msgbilling.release(:h2) AS again;
SELECT msgbilling.release(-1) AS unknown;
SELECT msgbilling.available(:org_a);

-- a hold key names one hold while it is active
SELECT msgbilling.hold(:org_a, 2, hold_key => 'req-1') AS k1 \gset
SELECT msgbilling.hold(:org_a, 2, hold_key => 'req-1') = :k1 AS same_hold;
SELECT msgbilling.available(:org_a);               -- counted once

-- the other tenant's org: nothing available, nothing held, nothing released
SELECT msgbilling.available(:org_b);
SELECT msgbilling.hold(:org_b, 1) IS NULL AS not_yours;
SELECT msgbilling.balance(:org_b) IS NULL AS balance_hidden;
SET app.member = 'bob';
SELECT msgbilling.release(:h1) AS not_yours;
SELECT msgbilling.available(:org_b);               -- 5 + 1 overdraft - 1 charged
-- bob's key req-1 is another hold than alice's
SELECT msgbilling.hold(:org_b, 1, hold_key => 'req-1') <> :k1 AS keys_per_org;
SET app.member = 'alice';
SELECT msgbilling.release(:h1) AS mine;
RESET ROLE;
SELECT org_id = :org_a AS alice, amount, hold_key FROM msgbilling.holds ORDER BY id;

-- an org without a wallet has nothing available
SELECT msgbilling.available(:org_c), msgbilling.hold(:org_c, 1) IS NULL AS refused;

-------------------------------------------------------------------------------
-- expiry: a hold stops counting at its expiry, with no sweeper
-------------------------------------------------------------------------------
SELECT msgbilling.available(:org_a) AS before_short_hold \gset
SELECT msgbilling.hold(:org_a, 3, '200 milliseconds', 'short') AS short \gset
SELECT msgbilling.available(:org_a) = :before_short_hold - 3 AS counted;
SELECT pg_sleep(0.3);
SELECT msgbilling.available(:org_a) = :before_short_hold AS expired;
SELECT msgbilling.release(:short) AS expired_is_not_active;
-- an expired key gets a new hold
SELECT msgbilling.hold(:org_a, 1, '200 milliseconds', 'again') AS e1 \gset
SELECT pg_sleep(0.3);
SELECT msgbilling.hold(:org_a, 1, '1 hour', 'again') <> :e1 AS new_hold;

-------------------------------------------------------------------------------
-- billing a message releases the hold it names, whatever the outcome
-------------------------------------------------------------------------------
DELETE FROM msgbilling.holds;
SELECT msgbilling.hold(:org_a, 2) AS ha \gset
SELECT msgbilling.hold(:org_a, 5) AS hb \gset
SELECT msgbilling.hold(:org_b, 1) AS hc \gset
SELECT msgbilling.available(:org_a) AS a_before, msgbilling.available(:org_b) AS b_before;
-- a served message is charged whatever other holds exist: 3 credits
-- against 9 - 7 held
INSERT INTO messages (org_id, tokens_used, hold_id) VALUES (:org_a, 3000, :ha);
-- bob's message names alice's hold: it releases nothing of alice's
INSERT INTO messages (org_id, tokens_used, hold_id) VALUES (:org_b, 100, :hb);
-- a message too dear fails, and its hold goes too
INSERT INTO messages (org_id, tokens_used, hold_id) VALUES (:org_b, 99000, :hc);
SELECT * FROM msgbilling.process_all_pending();
SELECT tableoid::regclass AS part, org_id = :org_a AS alice, tokens_used,
       billing_status, billing_error, hold_id IS NOT NULL AS had_hold
  FROM messages ORDER BY id;
SELECT id = :hb AS alices_5_still_held, amount FROM msgbilling.holds ORDER BY id;
SELECT msgbilling.balance(:org_a), msgbilling.available(:org_a);   -- 6, 6 - 5
-- an aborted billing keeps the hold
SELECT msgbilling.hold(:org_a, 1) AS hd \gset
INSERT INTO messages (org_id, tokens_used, hold_id) VALUES (:org_a, 10, :hd);
BEGIN;
SELECT * FROM msgbilling.process_all_pending();
ROLLBACK;
SELECT count(*) AS still_held FROM msgbilling.holds WHERE id = :hd;
SELECT * FROM msgbilling.process_all_pending();
SELECT count(*) AS released FROM msgbilling.holds WHERE id = :hd;

-- an aborted hold never was
BEGIN;
SELECT msgbilling.hold(:org_a, 0.5) IS NOT NULL AS held;
ROLLBACK;
SELECT count(*) AS holds_of_a FROM msgbilling.holds WHERE org_id = :org_a;

-------------------------------------------------------------------------------
-- bad input
-------------------------------------------------------------------------------
SELECT msgbilling.hold(NULL::uuid, 1);
SELECT msgbilling.hold(:org_a, NULL);
SELECT msgbilling.hold(:org_a, 0);
SELECT msgbilling.hold(:org_a, -1);
SELECT msgbilling.hold(:org_a, 1.0000001);
SELECT msgbilling.hold(:org_a, 'NaN');
SELECT msgbilling.hold(:org_a, 1, NULL);
SELECT msgbilling.hold(:org_a, 1, '0 seconds');
SELECT msgbilling.hold(:org_a, 1, '-1 minute');
SELECT msgbilling.hold(:org_a, 1, hold_key => repeat('k', 300));
SELECT msgbilling.hold('not a uuid', 1);
SELECT msgbilling.release(NULL);
SELECT msgbilling.available(NULL::uuid);

-- PUBLIC may not hold
CREATE ROLE regress_mb_nobody;
SET ROLE regress_mb_nobody;
SELECT msgbilling.hold(:org_a, 1);
RESET ROLE;

-- the books are whole
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;

SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages, members;
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
DROP ROLE regress_mb_app, regress_mb_biller, regress_mb_nobody, regress_mb_support;
