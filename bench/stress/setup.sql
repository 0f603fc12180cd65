-- setup.sql — the stress test's database: the app's messages table attached
-- to msgbilling, prices, wallets, the side tables that record what the
-- workload did, and the wrappers pgbench calls.  Run by run.sh with
-- psql -v duration=<seconds of the run>.
\set ON_ERROR_STOP on
SET client_min_messages = warning;

CREATE EXTENSION msgbilling;

-- The app's table: bigint keys, int orgs, a model and a creation time.
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    org_id integer NOT NULL,
    content text,
    model text,
    tokens_used integer,
    created_at timestamptz NOT NULL DEFAULT now()
);
SELECT msgbilling.attach('messages', org_column => 'org_id',
                         tokens_column => 'tokens_used',
                         model_column => 'model',
                         created_column => 'created_at');

-- A default price and two model prices ('other' and NULL models use the
-- default); gpt-4o's price changes halfway through the run, so that
-- messages on either side of the change are priced by their creation time.
SELECT msgbilling.set_price(NULL, 0.000002, '2000-01-01');
SELECT msgbilling.set_price('gpt-4o', 0.00001, '2000-01-01');
SELECT msgbilling.set_price('mini', 0.0000005, '2000-01-01');
SELECT msgbilling.set_price('gpt-4o', 0.000012,
                            now() + make_interval(secs => :duration / 2.0));

-- 200 orgs: 1..180 have wallets of various sizes (some empty, every
-- seventh with an overdraft), 181..200 have none and never get one (the
-- workload tops up only orgs 1..180).
CREATE SCHEMA stress;
CREATE TABLE stress.orgs (
    org integer PRIMARY KEY,
    has_wallet boolean NOT NULL,
    start_balance numeric,          -- NULL without a wallet
    overdraft numeric
);
INSERT INTO stress.orgs
SELECT o, o <= 180,
       CASE WHEN o <= 180 THEN (ARRAY[0, 0.05, 1, 10, 100, 1000])[1 + o % 6] END,
       CASE WHEN o <= 180 THEN CASE WHEN o % 7 = 0 THEN 0.5 ELSE 0 END END
  FROM generate_series(1, 200) o;
SELECT count(msgbilling.set_overdraft(org, overdraft)) FROM stress.orgs WHERE has_wallet;
SELECT count(msgbilling.top_up(org, start_balance, 'stress: opening balance'))
  FROM stress.orgs WHERE has_wallet AND start_balance > 0;

-- What the workload did, for the end check: every top-up call that
-- returned (credited = whether this call wrote the ledger entry, i.e.
-- was not an idempotent replay), every refund that succeeded (with the
-- cost it gave back), and every documented error the wrappers caught.
CREATE TABLE stress.log (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,     -- top_up, refund, caught
    org integer,
    amount numeric,
    key text,
    credited boolean,
    message_id bigint,
    sqlstate text,
    fn text,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Idempotency keys k0..k50: a key always names the same org and amount,
-- as a client retrying a payment would.
CREATE FUNCTION stress.key_org(k integer) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT 1 + (k * 37) % 180 $$;
CREATE FUNCTION stress.key_amount(k integer) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$ SELECT 0.5 + k * 0.25 $$;

-- A top-up, keyed (k >= 0: key 'k<k>', its org and amount) or not.  An
-- unkeyed one to an org that is out of credits is twenty times larger (an
-- auto-recharge): orgs keep running dry, but none piles up failures for
-- long, which would make every later top-up of it re-pend them all.
CREATE FUNCTION stress.top_up(org integer, amount numeric, k integer)
RETURNS numeric
LANGUAGE plpgsql AS $$
DECLARE
    key text := CASE WHEN k >= 0 THEN 'k' || k END;
    bal numeric;
    mine boolean := true;
BEGIN
    IF key IS NOT NULL THEN
        org := stress.key_org(k);
        amount := stress.key_amount(k);
    ELSIF msgbilling.balance(org) < 0.05 THEN
        amount := amount * 20;
    END IF;
    bal := msgbilling.top_up(org, amount, 'stress', key);
    IF key IS NOT NULL THEN
        -- credited by this call iff its ledger entry is this transaction's
        SELECT count(*) = 1 INTO mine FROM msgbilling.ledger l
         WHERE l.idempotency_key = key
           AND l.xmin::text = (pg_current_xact_id()::xid)::text;
    END IF;
    INSERT INTO stress.log (kind, org, amount, key, credited)
    VALUES ('top_up', org, amount, key, mine);
    RETURN bal;
END;
$$;

-- A refund.  Refunding a message that is not charged (pending, failed,
-- already refunded) is 55000 object_not_in_prerequisite_state, and one
-- that does not exist is P0002 no_data_found: those two, with their
-- documented messages, are caught and counted; anything else is re-raised.
CREATE FUNCTION stress.refund(msg bigint)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    o integer;
    c numeric;
BEGIN
    IF msg IS NULL THEN
        RETURN 'none';
    END IF;
    BEGIN
        PERFORM msgbilling.refund(msg, 'stress');
    EXCEPTION WHEN object_not_in_prerequisite_state OR no_data_found THEN
        IF SQLERRM ~ '^message -?[0-9]+ (was already refunded|is not charged|does not exist in .*)$' THEN
            INSERT INTO stress.log (kind, message_id, sqlstate, fn)
            VALUES ('caught', msg, SQLSTATE, 'refund');
            RETURN SQLSTATE;
        END IF;
        RAISE;
    END;
    SELECT m.org_id, m.cost_credits INTO o, c FROM messages m WHERE m.id = msg;
    INSERT INTO stress.log (kind, org, amount, message_id)
    VALUES ('refund', o, c, msg);
    RETURN 'refunded';
END;
$$;

-- process_message_billing of a recent id, which may not be visible yet
-- (an INSERT not committed): P0002 no_data_found, caught and counted.
CREATE FUNCTION stress.bill_one(msg bigint)
RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    RETURN msgbilling.process_message_billing(msg);
EXCEPTION WHEN no_data_found THEN
    IF SQLERRM ~ '^message -?[0-9]+ does not exist in .*$' THEN
        INSERT INTO stress.log (kind, message_id, sqlstate, fn)
        VALUES ('caught', msg, SQLSTATE, 'process_message_billing');
        RETURN SQLSTATE;
    END IF;
    RAISE;
END;
$$;

-- Prices as intervals: a model's price from effective_from until its next
-- version.  The price of a message is its model's span around its
-- creation time, else the default's (model NULL).
CREATE VIEW stress.price_spans AS
SELECT model, credits_per_token, effective_from,
       lead(effective_from) OVER (PARTITION BY model ORDER BY effective_from) AS until
  FROM msgbilling.prices;

CREATE VIEW stress.message_price AS
SELECT m.id, coalesce(pm.credits_per_token, pd.credits_per_token) AS price
  FROM messages m
  LEFT JOIN stress.price_spans pm ON pm.model = m.model
       AND m.created_at >= pm.effective_from
       AND (pm.until IS NULL OR m.created_at < pm.until)
  LEFT JOIN stress.price_spans pd ON pd.model IS NULL
       AND m.created_at >= pd.effective_from
       AND (pd.until IS NULL OR m.created_at < pd.until);

-- Orgs whose insufficient_credits failures their wallet could pay: none of
-- them costs more than balance + overdraft.  A failure is decided while
-- the biller holds the wallet, and every later change of the wallet makes
-- the org's failures pending again in the same transaction, so no
-- committed state should show one (run.sh checks during the run too).
CREATE FUNCTION stress.price(model text, created timestamptz) RETURNS numeric
LANGUAGE sql STABLE AS $$
    SELECT p.credits_per_token FROM stress.price_spans p
     WHERE (p.model = $1 OR p.model IS NULL) AND $2 >= p.effective_from
       AND (p.until IS NULL OR $2 < p.until)
     ORDER BY p.model IS NULL LIMIT 1
$$;
CREATE VIEW stress.unpaid_but_covered AS
WITH f AS (
    SELECT m.org_id, count(*) AS n, min(m.id) AS first_id,
           max(round(m.tokens_used * stress.price(m.model, m.created_at), 6)) AS max_cost
      FROM messages m
     WHERE m.billing_status = 'failed' AND m.billing_error = 'insufficient_credits'
     GROUP BY 1)
SELECT f.org_id, f.n, f.first_id, f.max_cost, c.balance, c.overdraft_limit
  FROM f JOIN msgbilling.credits c ON c.org_id = f.org_id
 WHERE f.max_cost <= c.balance + c.overdraft_limit;

-- A backlog to start with.
INSERT INTO messages (org_id, content, model, tokens_used)
SELECT 1 + (random() * 199)::int, 'stress seed',
       (ARRAY['gpt-4o', 'mini', 'other', NULL])[1 + floor(random() * 4)::int],
       1 + (random() * 3999)::int
  FROM generate_series(1, 5000);

ANALYZE;
