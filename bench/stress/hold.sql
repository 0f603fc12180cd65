-- A hold, as the app takes one before an LLM call: 4 times in 5 of a
-- hold-only org (301..305; 5% to 35% of what it has, so that a handful fit
-- and many are refused), else a few credits of any org with a wallet; a
-- short ttl (200 ms to 30 s), one time in 5 with one of 10 hold keys
-- (repeated on purpose: a key names the org's same hold while it is active).
\set r random(1, 100)
\set o random(301, 305)
\set other random(1, 180)
\set pct random(5, 35)
\set t random(1, 10)
\set kk random(1, 5)
\set k random(0, 9)
\set org CASE WHEN :r <= 80 THEN :o ELSE :other END
SELECT stress.hold(:org,
       CASE WHEN :org > 300
            THEN (SELECT round(h.hold_limit * :pct / 100.0, 6) FROM stress.hold_limit h
                   WHERE h.org = :org)
            ELSE :pct / 1000.0 END,
       (CASE WHEN :t <= 3 THEN '200 ms' WHEN :t <= 6 THEN '1 second'
             WHEN :t <= 8 THEN '2 seconds' WHEN :t = 9 THEN '5 seconds'
             ELSE '30 seconds' END)::interval,
       CASE WHEN :kk = 1 THEN 'k' || :k END, 'hold');
