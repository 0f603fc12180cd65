--
-- tenants.sql: one tenant never sees another's billing data.
--
-- A Supabase-style app: every user reaches the database as the role
-- "authenticated", with their user id in the request's settings; the
-- messages table has row level security, FORCEd, with a policy that shows
-- a user the messages of the orgs they are a member of.  The app role has
-- the grants docs/reference.md recommends.  stats(), history() and balance() give
-- an org's data only to a role that may read that org's messages;
-- billing still sees every row.
--
CREATE EXTENSION msgbilling;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE ROLE regress_mb_authenticated;
CREATE ROLE regress_mb_billing;
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS
$$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
GRANT USAGE ON SCHEMA auth TO regress_mb_authenticated;
CREATE TABLE memberships (user_id uuid, org_id uuid, PRIMARY KEY (user_id, org_id));
GRANT SELECT ON memberships TO regress_mb_authenticated;

CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id uuid NOT NULL,
    content text,
    model text,
    tokens_used integer,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON messages (org_id, created_at);
ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
CREATE POLICY members ON messages
    USING (org_id IN (SELECT m.org_id FROM memberships m WHERE m.user_id = auth.uid()))
    WITH CHECK (org_id IN (SELECT m.org_id FROM memberships m WHERE m.user_id = auth.uid()));
SELECT msgbilling.attach('messages', model_column => 'model',
                         created_column => 'created_at');

-- the grants of docs/reference.md: the app writes its messages and reads the wallet
-- page; the biller bills
GRANT USAGE ON SCHEMA msgbilling TO regress_mb_authenticated;
GRANT INSERT, SELECT ON messages TO regress_mb_authenticated;
GRANT USAGE ON SEQUENCE messages_id_seq TO regress_mb_authenticated;
GRANT EXECUTE ON FUNCTION msgbilling.stats("any"),
    msgbilling.history("any", integer, timestamptz),
    msgbilling.balance("any") TO regress_mb_authenticated;
GRANT USAGE ON SCHEMA msgbilling TO regress_mb_billing;
GRANT EXECUTE ON FUNCTION msgbilling.process_all_pending("any", bigint, integer, integer),
    msgbilling.stats("any"), msgbilling.history("any", integer, timestamptz),
    msgbilling.balance("any"), msgbilling.verify(),
    msgbilling.top_up("any", numeric, text, text) TO regress_mb_billing;

\set org_a '''aaaaaaaa-0000-0000-0000-000000000000'''
\set org_b '''bbbbbbbb-0000-0000-0000-000000000000'''
\set alice '''a11ce000-0000-0000-0000-000000000000'''
\set bob '''b0b00000-0000-0000-0000-000000000000'''
INSERT INTO memberships VALUES (:alice, :org_a), (:bob, :org_b);
SELECT msgbilling.set_price(NULL, 0.01, '2024-01-01') > 0 AS priced;
SET ROLE regress_mb_billing;
SELECT msgbilling.top_up(:org_a, 10);
SELECT msgbilling.top_up(:org_b, 20);
RESET ROLE;

-- Each user writes messages of their own org, through the policy.
SET ROLE regress_mb_authenticated;
SELECT set_config('request.jwt.claim.sub', :alice, false);
INSERT INTO messages (org_id, content, tokens_used) VALUES (:org_a, 'hi', 100), (:org_a, 'yo', 200);
INSERT INTO messages (org_id, content, tokens_used) VALUES (:org_b, 'not mine', 1);
SELECT set_config('request.jwt.claim.sub', :bob, false);
INSERT INTO messages (org_id, content, tokens_used) VALUES (:org_b, 'hello', 300);
RESET ROLE;

-- The biller bills every row, under FORCE ROW LEVEL SECURITY.
SET ROLE regress_mb_billing;
SELECT * FROM msgbilling.process_all_pending();
RESET ROLE;

-- Alice sees org A's billing data, and nothing of org B's: B looks like an
-- org without messages or wallet.
SET ROLE regress_mb_authenticated;
SELECT set_config('request.jwt.claim.sub', :alice, false);
SELECT msgbilling.balance(:org_a) AS a, msgbilling.balance(:org_b) AS b;
SELECT 'a' AS org, * FROM msgbilling.stats(:org_a)
UNION ALL SELECT 'b', * FROM msgbilling.stats(:org_b);
SELECT message_id, tokens, cost_credits, billing_status FROM msgbilling.history(:org_a)
 ORDER BY message_id;
SELECT count(*) AS b_history FROM msgbilling.history(:org_b);
-- nor every org's at once, nor verify(), which names every org (granted
-- it, the app still may not run it)
SELECT * FROM msgbilling.stats();
RESET ROLE;
GRANT EXECUTE ON FUNCTION msgbilling.verify() TO regress_mb_authenticated;
SET ROLE regress_mb_authenticated;
SELECT * FROM msgbilling.verify();
-- Bob, the other way round
SELECT set_config('request.jwt.claim.sub', :bob, false);
SELECT msgbilling.balance(:org_a) AS a, msgbilling.balance(:org_b) AS b;
SELECT count(*) AS a_history FROM msgbilling.history(:org_a);
SELECT count(*) AS b_history FROM msgbilling.history(:org_b);
-- A user in no org sees nothing.
SELECT set_config('request.jwt.claim.sub', '', false);
SELECT msgbilling.balance(:org_a) AS a, msgbilling.balance(:org_b) AS b;
RESET ROLE;
RESET request.jwt.claim.sub;

-- The biller (granted process_all_pending) and superusers see every org.
SET ROLE regress_mb_billing;
SELECT msgbilling.balance(:org_a) AS a, msgbilling.balance(:org_b) AS b;
SELECT charged FROM msgbilling.stats();
SELECT check_name, ok FROM msgbilling.verify() WHERE NOT ok;
RESET ROLE;
SELECT charged FROM msgbilling.stats(:org_b);

-- A role that may read the table without row level security (no policy
-- applies to it) sees every org it can read: the table's own grants
-- decide.
ALTER TABLE messages NO FORCE ROW LEVEL SECURITY;
ALTER TABLE messages DISABLE ROW LEVEL SECURITY;
SET ROLE regress_mb_authenticated;
SELECT msgbilling.balance(:org_a) AS a, msgbilling.balance(:org_b) AS b;
RESET ROLE;

SELECT msgbilling.detach('messages', drop_columns => true, force => true);
DROP TABLE messages, memberships;
DROP FUNCTION auth.uid();
DROP SCHEMA auth;
DROP EXTENSION msgbilling;
DROP SCHEMA msgbilling;
DROP ROLE regress_mb_authenticated, regress_mb_billing;
