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
    created_at timestamptz NOT NULL DEFAULT now(),
    hold_id bigint          -- the hold the app took for the message, if any
);
SELECT msgbilling.attach('messages', org_column => 'org_id',
                         tokens_column => 'tokens_used',
                         model_column => 'model',
                         created_column => 'created_at',
                         hold_column => 'hold_id');

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
    overdraft numeric,
    hold_only boolean NOT NULL DEFAULT false   -- 301..305, below
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

-------------------------------------------------------------------------------
-- Spend control (holds, alerts, budgets)
-------------------------------------------------------------------------------

-- Hold-only orgs 301..305: funded once here, never billed, never topped
-- up, no messages; only hold(), release() and expiry happen to them, under
-- heavy contention (hold.sql), so that at every moment the holds granted
-- and active must add up to no more than what the org has: balance +
-- overdraft, and no more than its hard budget (304: a day budget below its
-- balance, never changed).  hold_limit is that bound.
INSERT INTO stress.orgs (org, has_wallet, start_balance, overdraft, hold_only)
VALUES (301, true, 1, 0, true), (302, true, 2, 0.5, true), (303, true, 0.3, 0, true),
       (304, true, 5, 0, true), (305, true, 10, 1, true);
SELECT count(msgbilling.set_overdraft(org, overdraft)) FROM stress.orgs WHERE hold_only;
SELECT count(msgbilling.top_up(org, start_balance, 'stress: opening balance'))
  FROM stress.orgs WHERE hold_only;

-- Every hold() call (granted or not) and every release() call, each in
-- the transaction of its call: granted_at is the clock after hold()
-- returned (the hold's row was in by then), started_at the clock before
-- release() ran (the hold counted at least until then), so that
-- [granted_at, least(expires_at, first release's started_at)) is within
-- the time each hold really counted.  expires_at and held_amount are the
-- hold's row as this transaction sees it (a keyed call may return another
-- call's hold).  available_after: available() of a hold-only org right
-- after the call.
CREATE TABLE stress.hold_log (
    id bigserial PRIMARY KEY,
    org integer NOT NULL,
    amount numeric NOT NULL,
    ttl interval NOT NULL,
    key text,
    hold_id bigint,             -- NULL: refused
    granted_at timestamptz NOT NULL,
    expires_at timestamptz,
    held_amount numeric,
    available_after numeric,
    purpose text NOT NULL       -- hold, message
);
CREATE INDEX ON stress.hold_log (org, id);
CREATE INDEX ON stress.hold_log (hold_id);
CREATE TABLE stress.release_log (
    id bigserial PRIMARY KEY,
    hold_id bigint,
    started_at timestamptz NOT NULL,
    result boolean
);
CREATE INDEX ON stress.release_log (hold_id);

CREATE FUNCTION stress.hold(o integer, amount numeric, ttl interval, k text,
                            purpose text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    hid bigint;
    t timestamptz;
    e timestamptz;
    a numeric;
    av numeric;
BEGIN
    hid := msgbilling.hold(o, amount, ttl, k);
    t := clock_timestamp();
    IF hid IS NOT NULL THEN
        SELECT h.expires_at, h.amount INTO e, a FROM msgbilling.holds h WHERE h.id = hid;
    END IF;
    IF o > 300 THEN
        av := msgbilling.available(o);
    END IF;
    INSERT INTO stress.hold_log (org, amount, ttl, key, hold_id, granted_at,
                                 expires_at, held_amount, available_after, purpose)
    VALUES (o, amount, ttl, k, hid, t, e, a, av, purpose);
    RETURN hid;
END;
$$;

-- What a hold-only org has for holds: balance + overdraft, no more than its
-- hard budget.
CREATE VIEW stress.hold_limit AS
SELECT o.org, least(o.start_balance + o.overdraft,
                    (SELECT min(b.amount) FROM msgbilling.budgets b
                      WHERE b.org_id = o.org AND b.hard)) AS hold_limit
  FROM stress.orgs o WHERE o.hold_only;

CREATE FUNCTION stress.release(id bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := clock_timestamp();
    r boolean;
BEGIN
    IF id IS NULL THEN
        RETURN NULL;
    END IF;
    r := msgbilling.release(id);
    INSERT INTO stress.release_log (hold_id, started_at, result) VALUES (id, t, r);
    RETURN r;
END;
$$;

-- Budgets, every set_budget call logged: spent_after and period_start are
-- the budget row right after it, max_ledger_id the org's last ledger entry
-- then (set_budget holds the wallet, so the org's entries up to it are
-- committed and later ones have higher ids).
CREATE TABLE stress.budget_log (
    id bigserial PRIMARY KEY,
    org integer NOT NULL,
    period text NOT NULL,
    amount numeric,             -- NULL: removed
    hard boolean NOT NULL,
    tz text NOT NULL,
    period_start timestamptz,
    spent_after numeric,
    max_ledger_id bigint,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION stress.set_budget(o integer, p text, amt numeric, hrd boolean,
                                  zone text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM msgbilling.set_budget(o, p, amt, hrd, zone);
    INSERT INTO stress.budget_log (org, period, amount, hard, tz, period_start,
                                   spent_after, max_ledger_id)
    SELECT o, p, amt, hrd, zone, b.period_start, b.spent,
           (SELECT max(l.id) FROM msgbilling.ledger l WHERE l.org_id = o)
      FROM (SELECT 1) x
      LEFT JOIN msgbilling.budgets b ON b.org_id = o AND b.period = p;
END;
$$;
-- Fixed hard day budgets (never changed): 11, 17, 23 (wallets of 1000,
-- so the budget is what stops them), and 304 (hold-only); changing hard
-- budgets (budget.sql): 4 (hot) and 29 (day, and a fixed week budget in
-- New York time); soft day budgets: 2 (hot) and 35 fixed, 41 changing.
CREATE TABLE stress.budget_orgs (org integer, period text, hard boolean,
                                 tz text, changing boolean,
                                 PRIMARY KEY (org, period));
INSERT INTO stress.budget_orgs VALUES
    (11, 'day', true, 'UTC', false), (17, 'day', true, 'UTC', false),
    (23, 'day', true, 'Europe/Berlin', false), (304, 'day', true, 'UTC', false),
    (4, 'day', true, 'UTC', true), (29, 'day', true, 'UTC', true),
    (29, 'week', true, 'America/New_York', false),
    (2, 'day', false, 'UTC', false), (35, 'day', false, 'UTC', false),
    (41, 'day', false, 'UTC', true);
SELECT count(stress.set_budget(org, period,
             CASE org WHEN 11 THEN 1.0 WHEN 17 THEN 0.3 WHEN 23 THEN 0.6
                      WHEN 304 THEN 1.5 WHEN 4 THEN 0.5
                      WHEN 29 THEN CASE period WHEN 'day' THEN 0.4 ELSE 3 END
                      WHEN 2 THEN 0.3 WHEN 35 THEN 0.5 WHEN 41 THEN 0.2 END,
             hard, tz))
  FROM stress.budget_orgs;

-- budget.sql: a new amount (or none) for a changing budget.
CREATE FUNCTION stress.change_budget(pick integer, cents integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    b stress.budget_orgs;
BEGIN
    SELECT * INTO b FROM stress.budget_orgs WHERE changing
     ORDER BY org, period OFFSET pick % 3 LIMIT 1;
    PERFORM stress.set_budget(b.org, b.period,
                              CASE WHEN cents > 0 THEN cents / 100.0 END,
                              b.hard, b.tz);
END;
$$;

-- Hard budget orgs' unpaid failures are real too: an org with
-- budget_exceeded failures has one that costs more than its hard budgets
-- have left now (a budget change, refund or top-up makes them pending).
CREATE VIEW stress.budget_left AS
SELECT b.org_id, min(b.amount - CASE WHEN b.period_start = msgbilling._period_start(b.period, b.time_zone, now())
                                     THEN b.spent ELSE 0 END) AS left_
  FROM msgbilling.budgets b WHERE b.hard GROUP BY 1;
CREATE VIEW stress.budget_failures_covered AS
WITH f AS (
    SELECT m.org_id, count(*) AS n, min(m.id) AS first_id,
           max(round(m.tokens_used * stress.price(m.model, m.created_at), 6)) AS max_cost
      FROM messages m
     WHERE m.billing_status = 'failed' AND m.billing_error = 'budget_exceeded'
     GROUP BY 1)
SELECT f.org_id, f.n, f.first_id, f.max_cost, bl.left_
  FROM f LEFT JOIN stress.budget_left bl ON bl.org_id = f.org_id
 WHERE bl.left_ IS NULL OR f.max_cost <= bl.left_;

-- Alert thresholds, set here only (none change during the run, so the end
-- check recomputes every crossing from the ledger): own ones first (an
-- org's own thresholds replace the defaults), then the defaults.  Balances
-- of the hot orgs hover around a few cents (top_up.sql).
SELECT msgbilling.set_alert(o, t)
  FROM (VALUES (1, 0.02), (1, 0.05), (1, 0.1), (1, 0.5),
               (3, 1), (3, 5), (3, 9.9),
               (6, 0.01), (6, 0.1),
               (7, 0.001), (7, 0.03), (7, 0.2),
               (14, -0.2), (14, 0.01), (14, 0.05),
               (11, 999.5), (11, 999.9),
               (303, 0.3), (305, 5),
               (152, 0.9), (159, 9)) v(o, t);
SELECT msgbilling.set_alert(NULL, t) FROM (VALUES (0.04), (0.5), (5)) v(t);
-- Orgs 152 and 159 also get thresholds set and dropped during the run
-- (alert_churn.sql, rarely: set_alert waits for every balance change in
-- progress); their alerts are not recomputed.
CREATE TABLE stress.alert_churn_orgs (org integer PRIMARY KEY);
INSERT INTO stress.alert_churn_orgs VALUES (152), (159);
-- From here on every ledger entry of the run is walked; the balances now
-- gave the 'low' alerts of the thresholds already crossed.
CREATE TABLE stress.alert_mark AS
SELECT (SELECT coalesce(max(id), 0) FROM msgbilling.ledger) AS max_ledger_id;
CREATE TABLE stress.balance_at_rules AS
SELECT org_id, balance FROM msgbilling.credits;

-- insert_held.sql: the app takes a hold for the call it is about to make
-- (of its estimated cost), then inserts the message naming it.  2 times in
-- 100 it names instead a recent hold of a hold-only org (billing must not
-- touch another org's hold), 1 in 100 an id that is no hold.
CREATE FUNCTION stress.hold_for_message(o integer, est numeric, ttl interval,
                                        k text, pick integer)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    id bigint;
BEGIN
    IF pick <= 2 THEN
        SELECT h.hold_id INTO id FROM stress.hold_log h
         WHERE h.org = 300 + pick + (o % 3) AND h.hold_id IS NOT NULL
         ORDER BY h.id DESC LIMIT 1;
        RETURN coalesce(id, -1);
    ELSIF pick = 3 THEN
        RETURN -1 - o;      -- no such hold (0 means refused: no message)
    END IF;
    RETURN coalesce(stress.hold(o, est, ttl, k, 'message'), 0);
END;
$$;

-- A backlog to start with.
INSERT INTO messages (org_id, content, model, tokens_used)
SELECT 1 + (random() * 199)::int, 'stress seed',
       (ARRAY['gpt-4o', 'mini', 'other', NULL])[1 + floor(random() * 4)::int],
       1 + (random() * 3999)::int
  FROM generate_series(1, 5000);

ANALYZE;
