-- The comparators msgbilling is measured against, created in each
-- benchmark database of msgbilling's schema (the guide's schema gets only
-- the set-based statement, in set_based.sql).

-- (c) what a user writes by hand: a PL/pgSQL loop, one message at a time.
CREATE FUNCTION bench_plpgsql_loop(max_messages integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    price numeric;
    cost numeric;
    bal numeric;
    entry bigint;
    n integer := 0;
BEGIN
    FOR r IN SELECT id, org_id, tokens_used, model FROM messages
              WHERE billing_status = 'pending'
              ORDER BY created_at, id LIMIT max_messages
    LOOP
        SELECT p.credits_per_token INTO price FROM msgbilling.prices p
         WHERE p.model = r.model ORDER BY p.effective_from DESC LIMIT 1;
        IF NOT FOUND THEN
            SELECT p.credits_per_token INTO price FROM msgbilling.prices p
             WHERE p.model IS NULL ORDER BY p.effective_from DESC LIMIT 1;
        END IF;
        cost := round(r.tokens_used * price, 6);
        UPDATE msgbilling.credits SET balance = balance - cost
         WHERE org_id = r.org_id RETURNING balance INTO bal;
        INSERT INTO msgbilling.ledger (org_id, kind, amount, balance_after, message_count)
        VALUES (r.org_id, 'charge', -cost, bal, 1) RETURNING id INTO entry;
        UPDATE messages SET billing_status = 'charged', cost_credits = cost,
               charged_at = now(), billing_ledger_id = entry
         WHERE id = r.id;
        n := n + 1;
    END LOOP;
    RETURN n;
END;
$$;
