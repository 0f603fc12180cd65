-- The wallet page: an org's counts, balance and last messages.
\set org random(1, 200)
SELECT * FROM msgbilling.stats(:org);
SELECT msgbilling.balance(:org);
SELECT count(*) FROM msgbilling.history(:org, 20);
