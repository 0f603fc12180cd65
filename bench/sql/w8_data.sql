-- W8 (the spend-control issue's "W7"): hold() + release() from many
-- clients.  After mb_schema.sql (the messages table attached, no messages):
-- :orgs funded wallets, md5(1..:orgs)::uuid as data.sql names them, each
-- with far more than the bench's concurrent holds of 1 can take, so that no
-- hold is refused; the hot org is md5('1')::uuid, one of them.
--
-- The reference (schema ref): what an app writes without msgbilling.  A
-- copy of the wallets (same columns, constraints, rows), its own holds
-- table with msgbilling.holds' columns and indexes, and ref_hold(), which
-- locks the org's wallet FOR UPDATE, sums the org's unexpired holds,
-- checks balance + overdraft - held >= amount and inserts the hold, all in
-- the caller's transaction: the wallet's row lock lasts until its commit.
\set ON_ERROR_STOP on
SELECT count(msgbilling.top_up(md5(o::text)::uuid, 1000000))
  FROM generate_series(1, :orgs) o;

CREATE SCHEMA ref;
CREATE TABLE ref.credits (LIKE msgbilling.credits INCLUDING ALL);
INSERT INTO ref.credits SELECT * FROM msgbilling.credits;
CREATE TABLE ref.holds (
    id bigserial PRIMARY KEY,
    org_id uuid NOT NULL,
    amount numeric(20,6) NOT NULL CHECK (amount > 0),
    hold_key text,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX holds_org_expiry ON ref.holds (org_id, expires_at) INCLUDE (amount);
CREATE UNIQUE INDEX holds_org_key ON ref.holds (org_id, hold_key)
    WHERE hold_key IS NOT NULL;

-- The hold's id, or NULL when the org has less than amount available (or
-- no wallet).
CREATE FUNCTION ref.ref_hold(org uuid, amount numeric,
                             ttl interval DEFAULT '10 minutes')
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    lim numeric;
    held numeric;
    hold_id bigint;
BEGIN
    SELECT c.balance + c.overdraft_limit INTO lim
      FROM ref.credits c WHERE c.org_id = org FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT coalesce(sum(h.amount), 0) INTO held
      FROM ref.holds h WHERE h.org_id = org AND h.expires_at > now();
    IF lim - held < amount THEN
        RETURN NULL;
    END IF;
    INSERT INTO ref.holds (org_id, amount, expires_at)
    VALUES (org, amount, now() + ttl) RETURNING id INTO hold_id;
    RETURN hold_id;
END $$;

-- Whether the hold was active.  (PL/pgSQL, whose plan is kept: a SQL
-- function would plan its DELETE at every call.)
CREATE FUNCTION ref.ref_release(hold_id bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    active boolean;
BEGIN
    DELETE FROM ref.holds h WHERE h.id = hold_id RETURNING h.expires_at > now() INTO active;
    RETURN coalesce(active, false);
END $$;

-- A refused hold leaves a row here (the pgbench scripts): the bench
-- checks that there are none.
CREATE TABLE w8_refused (variant text, org_id uuid, at timestamptz DEFAULT clock_timestamp());
VACUUM ANALYZE;
