-- A top-up: half the time with one of 51 idempotency keys (repeated on
-- purpose; a key always carries the same org and amount), else unkeyed:
-- a few cents to an org with a wallet, half the time a hot one, so that
-- hot orgs keep running out of credits and coming back (twenty times more
-- to an org that is out: stress.top_up).
\set keyed random(0, 1)
\set k random(0, 50)
\set org CASE WHEN random(1, 2) = 1 THEN random_zipfian(1, 180, 1.1) ELSE random(1, 180) END
\set cents random(1, 10)
SELECT stress.top_up(:org, :cents / 100.0, CASE WHEN :keyed = 1 THEN :k ELSE -1 END);
