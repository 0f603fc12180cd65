-- The app with holds: a hold of the call's dearest cost (tokens × the
-- highest price) for 2 s to 10 min, 1 time in 10 with one of 30 hold keys
-- (two messages may then name the same hold), then, if it was granted, the
-- message naming it (refused: no message, the app answers "out of
-- credits").  2 in 100 name a recent hold of a hold-only org instead, and
-- 1 in 100 an id that is no hold: billing must leave those alone.
\set org CASE WHEN random(1, 2) = 1 THEN random_zipfian(1, 180, 1.1) ELSE random(1, 180) END
\set tokens random(1, 4000)
\set m random(1, 4)
\set pick random(1, 100)
\set t random(1, 4)
\set kk random(1, 10)
\set k random(0, 29)
SELECT stress.hold_for_message(:org, round(:tokens * 0.000012, 6),
       (CASE :t WHEN 1 THEN '2 seconds' WHEN 2 THEN '10 seconds'
                WHEN 3 THEN '1 minute' ELSE '10 minutes' END)::interval,
       CASE WHEN :kk = 1 THEN 'm' || :k END, :pick) AS hid \gset
\if :hid != 0
INSERT INTO messages (org_id, content, model, tokens_used, hold_id)
VALUES (:org, 'stress, held', (ARRAY['gpt-4o', 'mini', 'other', NULL])[:m], :tokens, :hid);
\endif
