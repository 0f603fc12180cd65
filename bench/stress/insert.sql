-- The app: an INSERT of 1 to 5 pending messages of one org: 1% of the
-- time an org without a wallet (181..200), else half the time a hot org
-- (skewed towards org 1) and half the time any org with a wallet.  One in
-- a thousand has no token count (failed as invalid_tokens, for good).
\set org CASE WHEN random(1, 100) = 1 THEN random(181, 200) WHEN random(1, 2) = 1 THEN random_zipfian(1, 180, 1.1) ELSE random(1, 180) END
\set n random(1, 5)
INSERT INTO messages (org_id, content, model, tokens_used)
SELECT :org, 'stress',
       (ARRAY['gpt-4o', 'mini', 'other', NULL])[1 + floor(random() * 4)::int],
       CASE WHEN random() < 0.001 THEN NULL ELSE 1 + floor(random() * 4000)::int END
  FROM generate_series(1, :n);
