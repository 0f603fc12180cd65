-- A changing budget gets a new amount (5 to 150 cents), 1 time in 10 none
-- (removed): org 4's and 29's hard day budgets, org 41's soft one.
\set pick random(0, 2)
\set cents CASE WHEN random(1, 10) = 1 THEN 0 ELSE random(5, 150) END
SELECT stress.change_budget(:pick, :cents);
