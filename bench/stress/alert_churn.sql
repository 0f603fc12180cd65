-- Rarely (1 time in 10 of this script's transactions each), a threshold of
-- org 152 or 159 set or dropped during the run: set_alert and drop_alert
-- wait for every balance change in progress (the rules lock).  Those two
-- orgs' alerts are left out of the recomputation.
\set r random(1, 20)
\set o CASE WHEN random(1, 2) = 1 THEN 152 ELSE 159 END
\set t random(1, 3)
\if :r = 1
SELECT msgbilling.set_alert(:o, (ARRAY[0.5, 2, 8])[:t]);
\elif :r = 2
SELECT msgbilling.drop_alert(:o, (ARRAY[0.5, 2, 8])[:t]);
\else
SELECT 1;
\endif
